//! Checks before a backup run starts: free space at a local repository.
//! (Each source's own `check` runs right before its backup: see
//! [`HookedSource`](crate::hooks::HookedSource).)

use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

/// Parses a size: a number with an optional unit `B`, `KB`/`MB`/`GB`/`TB`
/// (powers of 1000) or `KiB`/`MiB`/`GiB`/`TiB` (powers of 1024).
pub fn parse_size(text: &str) -> Result<u64, SizeError> {
    let t = text.trim();
    let split = t
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: f64 = num
        .parse()
        .map_err(|_| SizeError::NotASize(text.to_string()))?;
    let mult: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "kb" | "k" => 1000,
        "mb" | "m" => 1_000_000,
        "gb" | "g" => 1_000_000_000,
        "tb" | "t" => 1_000_000_000_000,
        "kib" => 1 << 10,
        "mib" => 1 << 20,
        "gib" => 1 << 30,
        "tib" => 1 << 40,
        other => {
            return Err(SizeError::UnknownUnit {
                text: text.to_string(),
                unit: other.to_string(),
            })
        }
    };
    Ok((n * mult as f64) as u64)
}

/// A size that does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SizeError {
    /// No number where one was expected.
    #[error("`{0}`: expected a size like \"5GiB\" or \"500MB\"")]
    NotASize(String),
    /// A number with a unit that is none of the known ones.
    #[error("`{text}`: unknown unit `{unit}` (B, KB, MB, GB, TB, KiB, MiB, GiB, TiB)")]
    UnknownUnit {
        /// The whole text.
        text: String,
        /// The unit.
        unit: String,
    },
}

/// Why a backup may not start: the disk of a local repository.
#[derive(Debug, thiserror::Error)]
pub enum SpaceError {
    /// `min_free_space` does not parse.
    #[error("min_free_space: {0}")]
    Size(#[from] SizeError),
    /// The free space could not be measured.
    #[error("cannot measure the free space at {url}: {source}")]
    Measure {
        /// The repository.
        url: String,
        /// Why.
        source: std::io::Error,
    },
    /// Less is free than configured.
    #[error("only {} free at {url}, below min_free_space = {}; nothing was backed up", crate::units::size(*free), crate::units::size(*min))]
    Low {
        /// The repository.
        url: String,
        /// Free bytes.
        free: u64,
        /// The configured minimum.
        min: u64,
    },
}

/// Free bytes (for unprivileged users) on the file system holding `path`, or
/// its nearest existing parent.
pub fn free_space(path: &Path) -> std::io::Result<u64> {
    let mut p = path;
    while !p.exists() {
        p = p.parent().unwrap_or(Path::new("/"));
    }
    let c = CString::new(p.as_os_str().as_bytes())
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
    // SAFETY: statvfs writes into the zeroed struct; c is a valid C string.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    if unsafe { libc::statvfs(c.as_ptr(), &mut st) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(st.f_bavail as u64 * st.f_frsize as u64)
}

/// Fails when a local repository's disk has less than `min_free_space`.
pub fn check_free_space(url: &str, min_free_space: Option<&str>) -> Result<(), SpaceError> {
    let Some(min) = min_free_space else {
        return Ok(());
    };
    let min = parse_size(min)?;
    if url.contains("://") {
        return Ok(()); // object stores have no disk to fill
    }
    let free = free_space(Path::new(url)).map_err(|source| SpaceError::Measure {
        url: url.to_string(),
        source,
    })?;
    if free < min {
        return Err(SpaceError::Low {
            url: url.to_string(),
            free,
            min,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("5GiB").unwrap(), 5 << 30);
        assert_eq!(parse_size("500MB").unwrap(), 500_000_000);
        assert_eq!(parse_size("1.5 KiB").unwrap(), 1536);
        assert_eq!(parse_size("42").unwrap(), 42);
        assert!(parse_size("5 parsecs").is_err());
        assert!(parse_size("GiB").is_err());
    }

    #[test]
    fn free_space_is_checked() {
        let dir = tempfile::tempdir().unwrap();
        let url = dir.path().join("not/yet/created");
        let url = url.to_str().unwrap();
        assert!(check_free_space(url, Some("1B")).is_ok());
        let e = check_free_space(url, Some("1000TiB"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("below min_free_space"), "{e}");
        assert!(check_free_space("s3://b/p", Some("1000TiB")).is_ok());
    }
}
