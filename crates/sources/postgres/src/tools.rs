//! The PostgreSQL client programs: finding them, checking their version
//! against the server's, and preparing their command lines.

use std::path::{Path, PathBuf};

use respaldo_core::kit::process::find_program;
use tokio::process::Command;

use crate::{Endpoint, PgError};

/// The client programs, located.
#[derive(Debug, Clone)]
pub struct Tools {
    bin_dir: Option<PathBuf>,
}

impl Tools {
    /// Uses `bin_dir` when set, else `PATH`.
    pub fn find(bin_dir: Option<&Path>) -> Result<Self, PgError> {
        let t = Tools {
            bin_dir: bin_dir.map(Path::to_path_buf),
        };
        t.path("pg_dump")?;
        Ok(t)
    }

    fn path(&self, program: &str) -> Result<PathBuf, PgError> {
        let found = match &self.bin_dir {
            Some(d) => find_program(&d.join(program).to_string_lossy()),
            None => find_program(program),
        };
        found.ok_or_else(|| {
            PgError::NotFound(match &self.bin_dir {
                Some(d) => d.join(program).display().to_string(),
                None => program.to_string(),
            })
        })
    }

    /// A command for `program` that connects to no server (`pg_restore
    /// --list`, `pg_restore --file=-`).
    pub fn offline(&self, program: &str) -> Result<Command, PgError> {
        let mut cmd = Command::new(self.path(program)?);
        cmd.env_remove("PGPASSWORD");
        Ok(cmd)
    }

    /// A command for `program` against `ep`, with the password in the
    /// environment (never on the command line) and no prompting.
    pub fn command(
        &self,
        program: &str,
        ep: &Endpoint,
        password: Option<&str>,
    ) -> Result<Command, PgError> {
        let mut cmd = Command::new(self.path(program)?);
        cmd.arg("--no-password")
            .arg(format!("--dbname={}", ep.conninfo()))
            .env("PGAPPNAME", "respaldo")
            .env_remove("PGPASSWORD");
        if let Some(p) = password {
            cmd.env("PGPASSWORD", p);
        }
        Ok(cmd)
    }

    /// Fails when pg_dump's major version is older than the server's.
    pub async fn check_version(&self, server_major: u32, server: &str) -> Result<(), PgError> {
        let path = self.path("pg_dump")?;
        let out = Command::new(&path)
            .arg("--version")
            .output()
            .await
            .map_err(|e| PgError::Config(format!("cannot run {}: {e}", path.display())))?;
        let text = String::from_utf8_lossy(&out.stdout);
        let client = parse_major(&text).ok_or_else(|| {
            PgError::Config(format!(
                "cannot read the version of {} from `{}`",
                path.display(),
                text.trim()
            ))
        })?;
        if client < server_major {
            return Err(PgError::TooOld {
                program: path.display().to_string(),
                client,
                server: server.to_string(),
                server_version: server_major,
            });
        }
        Ok(())
    }
}

/// `pg_dump (PostgreSQL) 15.18 (Debian …)` → 15; `9.6.24` → 9 (good enough:
/// servers older than 10 are not supported anyway).
fn parse_major(text: &str) -> Option<u32> {
    let after = text.split(')').nth(1)?.trim_start();
    let num: String = after.chars().take_while(char::is_ascii_digit).collect();
    num.parse().ok()
}

#[cfg(test)]
mod tests {
    #[test]
    fn versions() {
        assert_eq!(
            super::parse_major("pg_dump (PostgreSQL) 15.18 (Debian 15.18-0+deb12u1)\n"),
            Some(15)
        );
        assert_eq!(super::parse_major("pg_dump (PostgreSQL) 17beta1"), Some(17));
        assert_eq!(super::parse_major("garbage"), None);
    }
}
