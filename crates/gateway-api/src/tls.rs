//! `[api.tls]`: HTTPS for the REST, WebSocket and metrics endpoints, with
//! rustls (the `ring` provider, TLS 1.2 and 1.3 only, HTTP/1.1 by ALPN), and
//! mutual TLS when `client_ca_file` is set: a client must then present a
//! certificate signed by that CA or the handshake fails.
//!
//! The files are read when the configuration is validated (so `edge-gateway
//! config check` refuses a missing or bad file and names the field) and again
//! when the server starts. A message never quotes a key; it names the file.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use gateway_model::FieldError;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use serde::{Deserialize, Serialize};

/// The `[api.tls]` section: with it the API speaks HTTPS only.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// PEM file with the server certificate, then any intermediates (the
    /// chain the clients need to reach their trusted root).
    pub cert_file: PathBuf,
    /// PEM file with the certificate's private key (PKCS#8, PKCS#1 or SEC1);
    /// it should be readable by the gateway's user only.
    pub key_file: PathBuf,
    /// PEM file with the CA certificates that sign client certificates. When
    /// set, every client must present one (mutual TLS); when absent, clients
    /// are not asked for a certificate.
    #[serde(default)]
    pub client_ca_file: Option<PathBuf>,
}

fn read_certs(path: &Path, field: &str) -> Result<Vec<CertificateDer<'static>>, FieldError> {
    let bad = |m: String| FieldError::new(field, m);
    std::fs::metadata(path).map_err(|e| bad(format!("cannot read {}: {e}", path.display())))?;
    let certs = CertificateDer::pem_file_iter(path)
        .and_then(|it| it.collect::<Result<Vec<_>, _>>())
        .map_err(|e| bad(format!("{} is not a PEM certificate file: {e}", path.display())))?;
    if certs.is_empty() {
        return Err(bad(format!("{} holds no PEM certificate (-----BEGIN CERTIFICATE-----)", path.display())));
    }
    Ok(certs)
}

fn read_key(path: &Path) -> Result<PrivateKeyDer<'static>, FieldError> {
    let bad = |m: String| FieldError::new("key_file", m);
    let meta = std::fs::metadata(path).map_err(|e| bad(format!("cannot read {}: {e}", path.display())))?;
    // Refusing would break keys mounted by container runtimes; a warning is
    // what sshd's users would expect at least.
    if std::os::unix::fs::PermissionsExt::mode(&meta.permissions()) & 0o077 != 0 {
        tracing::warn!(
            file = %path.display(),
            "The TLS private key is readable by other users; restrict it (chmod 600)."
        );
    }
    PrivateKeyDer::from_pem_file(path)
        .map_err(|e| bad(format!("{} holds no usable PEM private key: {e}", path.display())))
}

impl TlsConfig {
    /// Reads the files and builds the server's TLS settings; the error names
    /// the field (`cert_file`, `key_file`, `client_ca_file`) whose file is
    /// missing or wrong, or `key_file` when the key does not match the
    /// certificate.
    pub fn load(&self) -> Result<Arc<rustls::ServerConfig>, FieldError> {
        let certs = read_certs(&self.cert_file, "cert_file")?;
        let key = read_key(&self.key_file)?;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| FieldError::new("", format!("TLS settings: {e}")))?;
        let builder = match &self.client_ca_file {
            None => builder.with_no_client_auth(),
            Some(path) => {
                let mut roots = rustls::RootCertStore::empty();
                for cert in read_certs(path, "client_ca_file")? {
                    roots.add(cert).map_err(|e| {
                        FieldError::new(
                            "client_ca_file",
                            format!("{}: not a usable CA certificate: {e}", path.display()),
                        )
                    })?;
                }
                let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                    .build()
                    .map_err(|e| FieldError::new("client_ca_file", format!("{}: {e}", path.display())))?;
                builder.with_client_cert_verifier(verifier)
            }
        };
        let mut cfg = builder.with_single_cert(certs, key).map_err(|e| {
            FieldError::new(
                "key_file",
                format!(
                    "{} does not go with the certificate in {}: {e}",
                    self.key_file.display(),
                    self.cert_file.display()
                ),
            )
        })?;
        cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Arc::new(cfg))
    }
}
