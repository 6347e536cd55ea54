//! TLS client configuration of the connectors, read from PEM files when the
//! configuration is checked, so `edge-gateway config check` refuses a
//! missing or unreadable CA, certificate or key file with its field
//! (`ca_file`, `client_cert_file`, `client_key_file`). rustls with ring only:
//! aws-lc must never slip in.

use std::path::Path;
use std::sync::Arc;

use gateway_model::FieldError;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

/// The CA bundle trusted when `ca_file` is not set (Debian's path).
pub(crate) const SYSTEM_CA_BUNDLE: &str = "/etc/ssl/certs/ca-certificates.crt";

/// A client configuration trusting `ca_file` (default the system bundle),
/// presenting `client_cert_file` with `client_key_file` when both are given.
pub(crate) fn client_config(
    ca_file: Option<&Path>,
    client_cert_file: Option<&Path>,
    client_key_file: Option<&Path>,
) -> Result<rustls::ClientConfig, FieldError> {
    let roots = match ca_file {
        Some(ca) => read_roots(ca).map_err(|e| FieldError::new("ca_file", e))?,
        None => read_roots(Path::new(SYSTEM_CA_BUNDLE))
            .map_err(|e| FieldError::new("ca_file", format!("{e}; set ca_file to the server's CA")))?,
    };
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| FieldError::new("ca_file", format!("no TLS version to offer: {e}")))?
        .with_root_certificates(roots);
    Ok(match (client_cert_file, client_key_file) {
        (Some(cert), Some(key)) => {
            let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
                .map_err(|e| FieldError::new("client_cert_file", format!("cannot read {}: {e}", cert.display())))?
                .collect::<Result<_, _>>()
                .map_err(|e| {
                    FieldError::new("client_cert_file", format!("bad certificate in {}: {e}", cert.display()))
                })?;
            if chain.is_empty() {
                return Err(FieldError::new("client_cert_file", format!("no certificate in {}", cert.display())));
            }
            let key = PrivateKeyDer::from_pem_file(key)
                .map_err(|e| FieldError::new("client_key_file", format!("cannot read {}: {e}", key.display())))?;
            builder
                .with_client_auth_cert(chain, key)
                .map_err(|e| FieldError::new("client_key_file", format!("does not go with client_cert_file: {e}")))?
        }
        _ => builder.with_no_client_auth(),
    })
}

fn read_roots(ca: &Path) -> Result<rustls::RootCertStore, String> {
    let mut roots = rustls::RootCertStore::empty();
    let certs = CertificateDer::pem_file_iter(ca).map_err(|e| format!("cannot read {}: {e}", ca.display()))?;
    for c in certs {
        let c = c.map_err(|e| format!("bad certificate in {}: {e}", ca.display()))?;
        roots.add(c).map_err(|e| format!("unusable CA certificate in {}: {e}", ca.display()))?;
    }
    if roots.is_empty() {
        return Err(format!("no certificate in {}", ca.display()));
    }
    Ok(roots)
}
