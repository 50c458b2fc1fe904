//! Named profiles of the AWS shared files, read the way the AWS CLI reads
//! them: keys from `~/.aws/credentials` (`$AWS_SHARED_CREDENTIALS_FILE`),
//! the region from `~/.aws/config` (`$AWS_CONFIG_FILE`, section
//! `[profile NAME]`, or `[default]`). `object_store` reads only the
//! environment variables, so profiles are resolved here.

use crate::ObjectStoreError;
use std::collections::BTreeMap;
use std::path::PathBuf;

/// Keys (and region) of one profile.
#[derive(Clone, PartialEq, Eq)]
pub struct ProfileKeys {
    /// `aws_access_key_id`.
    pub access_key_id: String,
    /// `aws_secret_access_key`.
    pub secret_access_key: String,
    /// `aws_session_token`, for temporary credentials.
    pub session_token: Option<String>,
    /// `region` from the config file, if it names one.
    pub region: Option<String>,
}

impl std::fmt::Debug for ProfileKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProfileKeys")
            .field("access_key_id", &self.access_key_id)
            .field("secret_access_key", &"***")
            .field("region", &self.region)
            .finish_non_exhaustive()
    }
}

/// Sections of an INI file: name → key → value (keys lower-cased).
fn sections(text: &str) -> BTreeMap<String, BTreeMap<String, String>> {
    let mut out: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
    let mut current: Option<String> = None;
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            let name = name.trim().to_string();
            out.entry(name.clone()).or_default();
            current = Some(name);
        } else if let (Some(section), Some((k, v))) = (&current, line.split_once('=')) {
            out.entry(section.clone())
                .or_default()
                .insert(k.trim().to_ascii_lowercase(), v.trim().to_string());
        }
    }
    out
}

fn home_file(var: &str, default: &str) -> Option<PathBuf> {
    std::env::var_os(var)
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(default)))
}

/// The profile `name` from the shared files. `Ok(None)` when the credentials
/// file or the section does not exist; an error when the section exists but
/// lacks a key, or a file cannot be read.
pub fn load(name: &str) -> Result<Option<ProfileKeys>, ObjectStoreError> {
    let Some(cred_path) = home_file("AWS_SHARED_CREDENTIALS_FILE", ".aws/credentials") else {
        return Ok(None);
    };
    let text = match std::fs::read_to_string(&cred_path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => {
            return Err(ObjectStoreError::Config(format!(
                "cannot read {}: {e}",
                cred_path.display()
            )))
        }
    };
    let creds = sections(&text);
    let Some(section) = creds.get(name) else {
        return Ok(None);
    };
    let key = |k: &str| {
        section
            .get(k)
            .filter(|v| !v.is_empty())
            .cloned()
            .ok_or_else(|| {
                ObjectStoreError::Config(format!(
                    "profile `{name}` in {} has no `{k}`",
                    cred_path.display()
                ))
            })
    };
    let region = match home_file("AWS_CONFIG_FILE", ".aws/config")
        .and_then(|p| std::fs::read_to_string(p).ok())
    {
        Some(text) => {
            let config = sections(&text);
            let header = if name == "default" {
                "default".to_string()
            } else {
                format!("profile {name}")
            };
            config
                .get(&header)
                .and_then(|s| s.get("region"))
                .filter(|r| !r.is_empty())
                .cloned()
        }
        None => None,
    };
    Ok(Some(ProfileKeys {
        access_key_id: key("aws_access_key_id")?,
        secret_access_key: key("aws_secret_access_key")?,
        session_token: section.get("aws_session_token").cloned(),
        region,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_sections_comments_and_spacing() {
        let s = sections(
            "# comment\n[default]\naws_access_key_id = A\n\n[ backup ]\nAWS_Secret_Access_Key=S = x\n; other\n",
        );
        assert_eq!(s["default"]["aws_access_key_id"], "A");
        assert_eq!(s["backup"]["aws_secret_access_key"], "S = x");
    }
}
