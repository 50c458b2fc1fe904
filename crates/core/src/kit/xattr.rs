//! Extended attributes (`user.*`, `security.*` such as file capabilities,
//! `trusted.*` as root, and POSIX ACLs, which Linux keeps as
//! `system.posix_acl_access` / `system.posix_acl_default`), read and
//! written without following symlinks.

use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use base64::Engine as _;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// One extended attribute of a tree entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Xattr {
    /// Its name, e.g. `user.comment`.
    pub name: String,
    /// Its value (any bytes).
    pub value: Vec<u8>,
}

#[derive(Serialize, Deserialize)]
struct Repr {
    name: String,
    value: String,
}

impl Serialize for Xattr {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        Repr {
            name: self.name.clone(),
            value: base64::engine::general_purpose::STANDARD.encode(&self.value),
        }
        .serialize(s)
    }
}

impl<'de> Deserialize<'de> for Xattr {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let r = Repr::deserialize(d)?;
        let value = base64::engine::general_purpose::STANDARD
            .decode(r.value)
            .map_err(serde::de::Error::custom)?;
        Ok(Xattr {
            name: r.name,
            value,
        })
    }
}

fn c_path(path: &Path) -> std::io::Result<CString> {
    CString::new(path.as_os_str().as_bytes())
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::InvalidInput, "path with NUL"))
}

/// Whether an error means "this filesystem or entry has no extended
/// attributes" rather than a failure.
fn unsupported(e: &std::io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::ENOTSUP) | Some(libc::ENODATA) | Some(libc::EPERM)
    )
}

/// The extended attributes of `path` (not followed if a symlink), sorted by
/// name; none where the filesystem has none.
pub fn read(path: &Path) -> std::io::Result<Vec<Xattr>> {
    let c = c_path(path)?;
    let mut names = vec![0u8; 1024];
    let len = loop {
        // SAFETY: `c` is NUL-terminated and `names` is valid for its length.
        let n = unsafe { libc::llistxattr(c.as_ptr(), names.as_mut_ptr().cast(), names.len()) };
        if n >= 0 {
            break n as usize;
        }
        let e = std::io::Error::last_os_error();
        if e.raw_os_error() == Some(libc::ERANGE) {
            names.resize(names.len() * 4, 0);
            continue;
        }
        if unsupported(&e) {
            return Ok(Vec::new());
        }
        return Err(e);
    };
    let mut out = Vec::new();
    for name in names[..len].split(|&b| b == 0).filter(|n| !n.is_empty()) {
        let cname = CString::new(name).expect("split at NUL");
        let mut value = vec![0u8; 256];
        let vlen = loop {
            // SAFETY: both strings are NUL-terminated; `value` is valid.
            let n = unsafe {
                libc::lgetxattr(
                    c.as_ptr(),
                    cname.as_ptr(),
                    value.as_mut_ptr().cast(),
                    value.len(),
                )
            };
            if n >= 0 {
                break Some(n as usize);
            }
            let e = std::io::Error::last_os_error();
            if e.raw_os_error() == Some(libc::ERANGE) {
                value.resize(value.len() * 4, 0);
                continue;
            }
            if unsupported(&e) {
                break None; // removed meanwhile, or not readable by us
            }
            return Err(e);
        };
        if let Some(n) = vlen {
            value.truncate(n);
            out.push(Xattr {
                name: String::from_utf8_lossy(name).into_owned(),
                value,
            });
        }
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(out)
}

/// Sets `attrs` on `path` (not followed if a symlink). Returns a warning per
/// attribute that could not be set (e.g. `trusted.*` when not root, or a
/// filesystem without extended attributes).
pub fn write(path: &Path, attrs: &[Xattr]) -> Vec<String> {
    let Ok(c) = c_path(path) else {
        return vec![format!("{}: path with NUL", path.display())];
    };
    let mut warnings = Vec::new();
    for a in attrs {
        let Ok(name) = CString::new(a.name.as_bytes()) else {
            continue;
        };
        // SAFETY: both strings are NUL-terminated; `value` is valid.
        let rc = unsafe {
            libc::lsetxattr(
                c.as_ptr(),
                name.as_ptr(),
                a.value.as_ptr().cast(),
                a.value.len(),
                0,
            )
        };
        if rc != 0 {
            warnings.push(format!(
                "{}: cannot set extended attribute {}: {}",
                path.display(),
                a.name,
                std::io::Error::last_os_error()
            ));
        }
    }
    warnings
}
