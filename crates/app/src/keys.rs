//! Encryption keys: a new identity file (`key generate`), and the
//! recipients, identity and passphrase a repository is opened with.

use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use respaldo_core::repo::crypto::{self, KeyMaterial};

use crate::config::RepositoryConfig;
use crate::error::{Error, Result};

/// Writes a new age identity to `output` (mode 0600, never overwriting a
/// file) and returns its public recipient (`age1…`).
pub fn generate(output: &Path) -> Result<String> {
    let (identity, recipient) = crypto::generate_identity();
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(output)
        .map_err(|e| match e.kind() {
            std::io::ErrorKind::AlreadyExists => Error::usage(format!(
                "{} already exists; not overwriting an identity",
                output.display()
            )),
            _ => Error::io(format!("cannot create {}", output.display()), e),
        })?;
    let written = file
        // The mode above is filtered by the umask; make sure it is owner-only.
        .set_permissions(std::fs::Permissions::from_mode(0o600))
        .and_then(|()| {
            write!(
                file,
                "# created: {}\n# public key: {recipient}\n{identity}\n",
                chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
            )
        })
        .and_then(|()| file.sync_all());
    written.map_err(|e| Error::io(format!("cannot write {}", output.display()), e))?;
    Ok(recipient)
}

/// The keys configured for the repository: recipients, the identity file
/// (`identity_file`, else $RESPALDO_IDENTITY_FILE) and the passphrase.
pub async fn material(repo: &RepositoryConfig) -> Result<KeyMaterial> {
    let mut keys = KeyMaterial {
        recipients: repo.recipients.clone(),
        ..Default::default()
    };
    let identity_file: Option<PathBuf> = repo.identity_file.clone().or_else(|| {
        std::env::var_os("RESPALDO_IDENTITY_FILE")
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
    });
    if let Some(path) = identity_file {
        let text = std::fs::read_to_string(&path).map_err(|e| {
            Error::usage(format!("cannot read identity file {}: {e}", path.display()))
        })?;
        if let Ok(meta) = std::fs::metadata(&path) {
            if meta.permissions().mode() & 0o077 != 0 {
                tracing::warn!(
                    "identity file {} is readable by others; chmod 600 it",
                    path.display()
                );
            }
        }
        keys.identities = crypto::identities_in(&text);
        if keys.identities.is_empty() {
            return Err(Error::usage(format!(
                "identity file {} holds no age identity (AGE-SECRET-KEY-1…)",
                path.display()
            )));
        }
        for i in &keys.identities {
            crypto::recipient_of(i)
                .map_err(|e| Error::usage(format!("identity file {}: {e}", path.display())))?;
        }
    }
    if let Some(p) = &repo.passphrase {
        let value = p
            .resolve()
            .await
            .map_err(|e| Error::usage(format!("repository.passphrase: {e}")))?;
        keys.passphrase = Some(value.expose().to_string());
    }
    Ok(keys)
}
