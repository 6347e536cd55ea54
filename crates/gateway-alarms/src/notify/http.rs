//! The webhook's HTTP/1 client: one keep-alive connection per target (a
//! target sends one notification at a time, in order, so a pool would buy
//! nothing), over TCP or rustls with ring, every attempt (connect, TLS,
//! request, response) under one timeout. It never follows redirects and
//! never reads more than [`MAX_RESPONSE`] bytes of a response: a receiver
//! cannot make the notifier hold more memory than that.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use gateway_model::FieldError;
use http_body_util::{BodyExt, Full, Limited};
use hyper::client::conn::http1::{self, SendRequest};
use hyper::header::{CONTENT_TYPE, HOST, HeaderName, HeaderValue, USER_AGENT};
use hyper::{Method, Request, StatusCode};
use hyper_util::rt::TokioIo;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::net::TcpStream;

use super::config::Endpoint;

/// The CA bundle trusted when `ca_file` is not set (Debian's path).
const SYSTEM_CA_BUNDLE: &str = "/etc/ssl/certs/ca-certificates.crt";

/// The most bytes of a response body read: enough for an error message to
/// log, and the connection is dropped rather than drained beyond it.
pub(crate) const MAX_RESPONSE: usize = 4096;

/// Why an attempt failed before the receiver answered.
#[derive(Debug, thiserror::Error)]
pub(crate) enum AttemptError {
    /// TCP connect or TLS handshake failed.
    #[error("cannot connect: {0}")]
    Connect(std::io::Error),
    /// The HTTP exchange failed (reset, malformed response, closed early).
    #[error("HTTP: {0}")]
    Http(#[from] hyper::Error),
    /// No complete answer within the target's `timeout`.
    #[error("no answer within {0:?}")]
    Timeout(Duration),
}

/// The receiver's answer.
#[derive(Debug)]
pub(crate) struct Answer {
    pub status: StatusCode,
    /// The start of the body, lossily decoded, for the log of a rejection.
    pub text: String,
}

/// A target's connection and how to make it again.
pub(crate) struct Client {
    ep: Arc<Endpoint>,
    tls: Option<(tokio_rustls::TlsConnector, ServerName<'static>)>,
    timeout: Duration,
    conn: Option<SendRequest<Full<Bytes>>>,
}

impl Client {
    /// A client for `ep`; for `https://` it reads `ca_file` (default the
    /// system bundle) now, so a missing CA fails at start, not at the first alarm.
    pub(crate) fn new(ep: Arc<Endpoint>, ca_file: Option<&Path>, timeout: Duration) -> Result<Self, FieldError> {
        let tls = if ep.tls {
            let ca = ca_file.unwrap_or(Path::new(SYSTEM_CA_BUNDLE));
            let roots = read_roots(ca).map_err(|e| FieldError::new("ca_file", e))?;
            let provider = Arc::new(rustls::crypto::ring::default_provider());
            let cfg = rustls::ClientConfig::builder_with_provider(provider)
                .with_safe_default_protocol_versions()
                .map_err(|e| FieldError::new("ca_file", format!("no TLS version to offer: {e}")))?
                .with_root_certificates(roots)
                .with_no_client_auth();
            let name = ServerName::try_from(ep.host.clone())
                .map_err(|e| FieldError::new("url", format!("{:?} is not a TLS server name: {e}", ep.host)))?;
            Some((tokio_rustls::TlsConnector::from(Arc::new(cfg)), name))
        } else {
            None
        };
        Ok(Client { ep, tls, timeout, conn: None })
    }

    /// POSTs `body` as JSON with the target's headers and `extra`. A failed
    /// or timed-out attempt drops the connection: the next one starts afresh.
    pub(crate) async fn post(
        &mut self,
        body: Bytes,
        extra: &[(HeaderName, HeaderValue)],
    ) -> Result<Answer, AttemptError> {
        let mut req = Request::builder().method(Method::POST).uri(self.ep.path.as_str());
        if let Some(h) = req.headers_mut() {
            // Checked when the config was: these cannot fail to parse.
            if let Ok(host) = HeaderValue::from_str(&self.ep.authority) {
                h.insert(HOST, host);
            }
            h.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
            h.insert(USER_AGENT, HeaderValue::from_static(concat!("edge-gateway/", env!("CARGO_PKG_VERSION"))));
            for (k, v) in self.ep.headers.iter().chain(extra) {
                h.insert(k.clone(), v.clone());
            }
        }
        // The parts were checked above and at config time; a failure here is a bug
        // worth a clear error rather than a panic in a background task.
        let req = req.body(Full::new(body)).map_err(|e| AttemptError::Connect(std::io::Error::other(e)))?;
        match tokio::time::timeout(self.timeout, self.attempt(req)).await {
            Ok(Ok(a)) => Ok(a),
            Ok(Err(e)) => {
                self.conn = None;
                Err(e)
            }
            Err(_) => {
                self.conn = None;
                Err(AttemptError::Timeout(self.timeout))
            }
        }
    }

    async fn attempt(&mut self, req: Request<Full<Bytes>>) -> Result<Answer, AttemptError> {
        let mut sender = match self.conn.take() {
            // A keep-alive connection the server closed while idle is not ready.
            Some(mut s) => match s.ready().await {
                Ok(()) => s,
                Err(_) => self.connect().await?,
            },
            None => self.connect().await?,
        };
        let resp = sender.send_request(req).await?;
        let status = resp.status();
        let keep_alive =
            resp.headers().get(hyper::header::CONNECTION).is_none_or(|v| !v.as_bytes().eq_ignore_ascii_case(b"close"));
        // A body larger than the limit (or one that fails) still leaves a
        // status to act on; only the connection is not reused.
        let text = match Limited::new(resp.into_body(), MAX_RESPONSE).collect().await {
            Ok(b) => {
                if keep_alive {
                    self.conn = Some(sender);
                }
                let b = b.to_bytes();
                String::from_utf8_lossy(&b[..b.len().min(512)]).into_owned()
            }
            Err(_) => String::new(),
        };
        Ok(Answer { status, text })
    }

    async fn connect(&self) -> Result<SendRequest<Full<Bytes>>, AttemptError> {
        let tcp = TcpStream::connect((self.ep.host.as_str(), self.ep.port)).await.map_err(AttemptError::Connect)?;
        // Alarm notifications are small and latency matters more than packing.
        let _ = tcp.set_nodelay(true);
        match &self.tls {
            None => handshake(TokioIo::new(tcp)).await,
            Some((connector, name)) => {
                let stream = connector.connect(name.clone(), tcp).await.map_err(AttemptError::Connect)?;
                handshake(TokioIo::new(stream)).await
            }
        }
    }
}

async fn handshake<T>(io: T) -> Result<SendRequest<Full<Bytes>>, AttemptError>
where
    T: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let (sender, conn) = http1::handshake(io).await?;
    // The connection task ends when the sender is dropped or the peer closes.
    tokio::spawn(async move {
        if let Err(e) = conn.await {
            tracing::debug!(error = %e, "Webhook connection ended.");
        }
    });
    Ok(sender)
}

/// The CA certificates in the PEM file `ca`; at least one.
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
