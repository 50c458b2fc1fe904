//! TLS client settings shared by the drivers that speak TLS themselves
//! (PostgreSQL's own connection, Redis): a rustls [`ClientConfig`] built
//! from a CA file or the system's roots, an optional client certificate, or
//! (only when asked for by name) no certificate check at all.
//!
//! Behind the `tls` feature, so a driver without TLS does not compile rustls.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, SignatureScheme};

/// How the server's certificate is checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verify {
    /// The chain must lead to a root of `ca_file` (PEM), or of the system's
    /// store when `None`, and name the host connected to.
    Full {
        /// The CA certificates to trust instead of the system's.
        ca_file: Option<PathBuf>,
    },
    /// Encrypted, but the certificate is not checked (libpq's `require`, or
    /// an option that says it is insecure).
    Nothing,
}

/// A client certificate and its key (PEM files).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientCert {
    /// The certificate (chain), PEM.
    pub cert_file: PathBuf,
    /// Its private key (PKCS#8, PKCS#1 or SEC1), PEM.
    pub key_file: PathBuf,
}

/// Why TLS settings could not be built. Names the file and what is wrong;
/// never a key's content.
#[derive(Debug, thiserror::Error)]
#[error("{what} {path}: {message}")]
pub struct TlsError {
    /// Which setting (`CA file`, `client certificate`, `client key`).
    pub what: &'static str,
    /// The file.
    pub path: String,
    /// What is wrong.
    pub message: String,
}

fn read(what: &'static str, path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|e| TlsError {
        what,
        path: path.display().to_string(),
        message: e.to_string(),
    })
}

/// The certificates of a PEM file (an error if there are none).
pub fn pem_certs(
    what: &'static str,
    path: &Path,
) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let pem = read(what, path)?;
    let certs: Vec<_> = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<_, _>>()
        .map_err(|e| TlsError {
            what,
            path: path.display().to_string(),
            message: format!("not a PEM certificate file: {e}"),
        })?;
    if certs.is_empty() {
        return Err(TlsError {
            what,
            path: path.display().to_string(),
            message: "no certificate in it".into(),
        });
    }
    Ok(certs)
}

/// The rustls client settings for `verify` and an optional client
/// certificate.
pub fn client_config(
    verify: &Verify,
    client: Option<&ClientCert>,
) -> Result<ClientConfig, TlsError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError {
            what: "TLS",
            path: String::new(),
            message: e.to_string(),
        })?;
    let builder = match verify {
        Verify::Full { ca_file } => {
            let mut roots = rustls::RootCertStore::empty();
            match ca_file {
                Some(path) => {
                    for cert in pem_certs("CA file", path)? {
                        roots.add(cert).map_err(|e| TlsError {
                            what: "CA file",
                            path: path.display().to_string(),
                            message: e.to_string(),
                        })?;
                    }
                }
                None => {
                    for cert in rustls_native_certs::load_native_certs().certs {
                        let _ = roots.add(cert);
                    }
                }
            }
            builder.with_root_certificates(roots)
        }
        Verify::Nothing => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(NoVerification(provider))),
    };
    match client {
        None => Ok(builder.with_no_client_auth()),
        Some(c) => {
            let certs = pem_certs("client certificate", &c.cert_file)?;
            let key_pem = read("client key", &c.key_file)?;
            let key = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|_| TlsError {
                what: "client key",
                path: c.key_file.display().to_string(),
                message: "no PEM private key in it".into(),
            })?;
            builder
                .with_client_auth_cert(certs, key)
                .map_err(|e| TlsError {
                    what: "client certificate",
                    path: c.cert_file.display().to_string(),
                    message: e.to_string(),
                })
        }
    }
}

/// The name a certificate must carry for `host` (a DNS name or an IP
/// address).
pub fn server_name(host: &str) -> Result<ServerName<'static>, TlsError> {
    ServerName::try_from(
        host.trim_start_matches('[')
            .trim_end_matches(']')
            .to_string(),
    )
    .map_err(|e| TlsError {
        what: "server name",
        path: host.to_string(),
        message: e.to_string(),
    })
}

/// Accepts any certificate (the signatures are still checked, so the
/// session is encrypted to whoever holds the key).
#[derive(Debug)]
struct NoVerification(Arc<rustls::crypto::CryptoProvider>);

impl ServerCertVerifier for NoVerification {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_and_empty_files_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let e = client_config(
            &Verify::Full {
                ca_file: Some(dir.path().join("nope.pem")),
            },
            None,
        )
        .unwrap_err();
        assert!(e.to_string().starts_with("CA file "), "{e}");
        assert!(e.to_string().contains("nope.pem"), "{e}");
        let empty = dir.path().join("empty.pem");
        std::fs::write(&empty, "").unwrap();
        let e = client_config(
            &Verify::Full {
                ca_file: Some(empty),
            },
            None,
        )
        .unwrap_err();
        assert!(e.to_string().contains("no certificate"), "{e}");
        assert!(client_config(&Verify::Nothing, None).is_ok());
        assert!(client_config(&Verify::Full { ca_file: None }, None).is_ok());
        assert!(server_name("127.0.0.1").is_ok());
        assert!(server_name("[::1]").is_ok());
        assert!(server_name("redis.example").is_ok());
    }
}
