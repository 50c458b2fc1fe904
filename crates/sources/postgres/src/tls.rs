//! TLS for the driver's own connection, following libpq's `sslmode`:
//! `disable` never, `allow`/`prefer` when the server offers it, `require`
//! always but without checking the certificate (as libpq does without a root
//! certificate), `verify-ca`/`verify-full` always, checking the certificate
//! against `sslrootcert` (a PEM file) or the system's roots, and the host name.

use respaldo_core::kit::tls::{client_config, Verify};
use tokio_postgres_rustls::MakeRustlsConnect;

use crate::PgError;

/// What the URL asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SslMode {
    /// No TLS.
    Disable,
    /// TLS if offered, certificate not checked.
    Prefer,
    /// TLS, certificate not checked.
    Require,
    /// TLS, certificate and host name checked.
    Verify,
}

impl SslMode {
    /// From the `sslmode` parameter (default `prefer`, as libpq).
    pub fn parse(v: Option<&str>) -> Result<Self, PgError> {
        Ok(match v.unwrap_or("prefer") {
            "disable" => SslMode::Disable,
            "allow" | "prefer" => SslMode::Prefer,
            "require" => SslMode::Require,
            "verify-ca" | "verify-full" => SslMode::Verify,
            other => {
                return Err(PgError::Config(format!(
                    "unknown sslmode `{other}` (disable, allow, prefer, require, verify-ca, verify-full)"
                )))
            }
        })
    }

    /// The mode tokio-postgres understands.
    pub fn client_mode(self) -> tokio_postgres::config::SslMode {
        match self {
            SslMode::Disable => tokio_postgres::config::SslMode::Disable,
            SslMode::Prefer => tokio_postgres::config::SslMode::Prefer,
            SslMode::Require | SslMode::Verify => tokio_postgres::config::SslMode::Require,
        }
    }
}

/// The TLS connector for `mode` (the rustls settings are built by
/// `respaldo_core::kit::tls`, shared with the other drivers).
pub fn connector(mode: SslMode, root_cert: Option<&str>) -> Result<MakeRustlsConnect, PgError> {
    let verify = if mode == SslMode::Verify {
        Verify::Full {
            ca_file: root_cert.map(Into::into),
        }
    } else {
        // libpq's `require` (and `prefer`): encrypted, certificate not checked.
        Verify::Nothing
    };
    let config =
        client_config(&verify, None).map_err(|e| PgError::Config(format!("sslrootcert: {e}")))?;
    Ok(MakeRustlsConnect::new(config))
}
