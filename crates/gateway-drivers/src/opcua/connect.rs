//! Making a connection: the client's certificate and key (made on first
//! use under the data directory), the server's endpoint for the configured
//! security, trust in the server's certificate (an explicit thumbprint or
//! the `trusted/` folder, never silently), the user identity, and one
//! session whose event loop runs in a task of its own that reports what
//! happens to it. A connection never reconnects by itself: when it is lost
//! the task ends, and the device task builds a new one (see
//! [`super::supervisor`]).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use gateway_model::Reason;
use opcua::client::{
    Client, ClientBuilder, IdentityToken, Session, SessionActivity, SessionPollResult, SubscriptionActivity,
};
use opcua::crypto::{CertificateStore, SecurityPolicy as UaPolicy, X509, X509Data};
use opcua::types::{EndpointDescription, MessageSecurityMode, StatusCode};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use super::config::{OpcUaConfig, SecurityMode, SecurityPolicy};
use super::value::reason_of;

/// Why a connection could not be made or was lost: a quality reason for
/// the tags, and a message for the device's status (never a password).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Failure {
    /// What the tags say meanwhile.
    pub reason: Reason,
    /// What an operator reads in the device's status.
    pub message: String,
}

impl Failure {
    pub fn new(reason: Reason, message: impl Into<String>) -> Self {
        Failure { reason, message: message.into() }
    }

    /// A failure reported by the server or the client library as a status.
    pub fn status(what: &str, status: StatusCode) -> Self {
        Failure::new(reason_of(status), format!("{what}: {status}"))
    }
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

/// What a connection's event loop reports.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum LinkEvent {
    /// The session is created and activated.
    Connected,
    /// The session keep-alive read failed (the server may be gone).
    KeepAliveFailed(StatusCode),
    /// The connection is gone; the event loop has ended.
    Lost(StatusCode),
}

/// A connection: the session, and the task running its event loop.
pub(crate) struct Link {
    /// The session, for requests.
    pub session: Arc<Session>,
    /// What happens to the connection.
    pub events: mpsc::UnboundedReceiver<LinkEvent>,
    task: JoinHandle<()>,
}

impl Link {
    /// Closes the session (deleting its subscriptions on the server) if the
    /// server answers within `timeout`, then ends the event loop.
    pub async fn close(self, timeout: Duration) {
        let _ = tokio::time::timeout(timeout, self.session.disconnect()).await;
        self.task.abort();
    }

    /// Ends the event loop without a word to the server (it is gone).
    pub fn drop_now(self) {
        self.task.abort();
    }
}

/// The PKI folder of the OPC UA client under the gateway's data directory.
pub(crate) fn pki_dir(data_dir: &Path) -> PathBuf {
    data_dir.join("opcua").join("pki")
}

/// Only one client at a time makes the certificate (devices start together).
static MAKING_CLIENT: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// The client with its certificate store (making the certificate and key on
/// first use). Runs file I/O and maybe an RSA key generation: call it from
/// a blocking thread.
fn make_client(cfg: &OpcUaConfig, pki: &Path) -> Result<Client, Failure> {
    let _one = MAKING_CLIENT.lock().unwrap_or_else(|e| e.into_inner());
    let host = X509Data::computer_hostnames().into_iter().next().unwrap_or_else(|| "localhost".into());
    let mut b = ClientBuilder::new()
        .application_name("edge-gateway")
        .application_uri(format!("urn:{host}:edge-gateway"))
        .product_uri("urn:edge-gateway")
        .pki_dir(pki)
        .create_sample_keypair(cfg.certificate.is_none())
        .trust_server_certs(false)
        .verify_server_certs(true)
        .session_retry_limit(0)
        .request_timeout(cfg.timeout())
        .publish_timeout(cfg.timeout() + Duration::from_millis(cfg.publishing_interval_ms.saturating_mul(2)))
        .keep_alive_interval(keep_alive_interval(cfg))
        .max_failed_keep_alive_count(0)
        .min_publish_interval(Duration::from_millis(10))
        .recreate_subscriptions(false)
        .session_name("edge-gateway")
        .session_timeout(60_000);
    if let (Some(c), Some(k)) = (&cfg.certificate, &cfg.private_key) {
        b = b.certificate_path(c).private_key_path(k);
    }
    let client = b.client().map_err(|errors| Failure::new(Reason::CONFIG_ERROR, errors.join("; ")))?;
    if cfg.security_policy != SecurityPolicy::None {
        let store = CertificateStore::new(pki);
        let own = match (&cfg.certificate, &cfg.private_key) {
            (Some(c), Some(k)) => CertificateStore::read_cert(Path::new(c))
                .and_then(|_| CertificateStore::read_pkey(Path::new(k)).map(|_| ())),
            _ => store.read_own_cert().and_then(|_| store.read_own_pkey().map(|_| ())),
        };
        own.map_err(|e| {
            Failure::new(Reason::CONFIG_ERROR, format!("the client's certificate or key cannot be read: {e}"))
        })?;
    }
    Ok(client)
}

/// The session keep-alive: a read of the server's state every publishing
/// interval (subscribe) or poll interval (poll), at least every 50 ms and at
/// most every 10 s; its failure within the request timeout is how a silent
/// server is noticed.
fn keep_alive_interval(cfg: &OpcUaConfig) -> Duration {
    Duration::from_millis(cfg.publishing_interval_ms.clamp(50, 10_000))
}

fn policy(p: SecurityPolicy) -> UaPolicy {
    match p {
        SecurityPolicy::None => UaPolicy::None,
        SecurityPolicy::Basic256Sha256 => UaPolicy::Basic256Sha256,
        SecurityPolicy::Aes128Sha256RsaOaep => UaPolicy::Aes128Sha256RsaOaep,
        SecurityPolicy::Aes256Sha256RsaPss => UaPolicy::Aes256Sha256RsaPss,
    }
}

fn mode(m: SecurityMode) -> MessageSecurityMode {
    match m {
        SecurityMode::None => MessageSecurityMode::None,
        SecurityMode::Sign => MessageSecurityMode::Sign,
        SecurityMode::SignAndEncrypt => MessageSecurityMode::SignAndEncrypt,
    }
}

fn offered(endpoints: &[EndpointDescription]) -> String {
    let mut all: Vec<String> = endpoints
        .iter()
        .map(|e| {
            let p = UaPolicy::from_uri(e.security_policy_uri.as_ref());
            format!("{p}/{:?}", e.security_mode)
        })
        .collect();
    all.dedup();
    all.join(", ")
}

/// The server's endpoint for the configured security, at the configured URL.
fn choose_endpoint(cfg: &OpcUaConfig, endpoints: &[EndpointDescription]) -> Result<EndpointDescription, Failure> {
    let (p, m) = (policy(cfg.security_policy), mode(cfg.security_mode()));
    let found = Client::find_matching_endpoint(endpoints, &cfg.endpoint, p, m).or_else(|| {
        // A server behind NAT or a proxy may advertise another path: the policy and mode decide.
        endpoints
            .iter()
            .find(|e| e.security_mode == m && UaPolicy::from_uri(e.security_policy_uri.as_ref()) == p)
            .cloned()
    });
    let mut ep = found.ok_or_else(|| {
        Failure::new(
            Reason::CONFIG_ERROR,
            format!(
                "the server offers no endpoint with security {}/{}; it offers: {}",
                cfg.security_policy.name(),
                cfg.security_mode().name(),
                offered(endpoints)
            ),
        )
    })?;
    // Connect where we were told to, whatever host the server advertises.
    ep.endpoint_url = cfg.endpoint.clone().into();
    Ok(ep)
}

/// Normalises a thumbprint as written (colons, spaces, any case) to upper-case hex.
pub(crate) fn normalise_thumbprint(t: &str) -> String {
    t.chars().filter(|c| c.is_ascii_hexdigit()).collect::<String>().to_ascii_uppercase()
}

/// Trust in the server's certificate, for a secured endpoint: with a
/// configured thumbprint that matches, the certificate is put in `trusted/`
/// (and out of `rejected/`); one that does not match is refused. Without a
/// thumbprint, the certificate must already be in `trusted/` (the library
/// checks it, and puts an unknown one in `rejected/`).
fn check_trust(cfg: &OpcUaConfig, pki: &Path, ep: &EndpointDescription) -> Result<(), Failure> {
    if cfg.security_policy == SecurityPolicy::None {
        return Ok(());
    }
    let cert = X509::from_byte_string(&ep.server_certificate).map_err(|e| {
        Failure::new(Reason::MALFORMED_RESPONSE, format!("the server's certificate cannot be read: {e}"))
    })?;
    let store = CertificateStore::new(pki);
    let name = CertificateStore::cert_file_name(&cert);
    let thumb = cert.thumbprint().as_hex_string().to_ascii_uppercase();
    let trusted = store.trusted_certs_dir().join(&name);
    let rejected = store.rejected_certs_dir().join(&name);
    match &cfg.server_certificate_thumbprint {
        Some(want) if normalise_thumbprint(want) == thumb => {
            if !trusted.exists() {
                let der = cert.to_der().map_err(|e| Failure::new(Reason::CONFIG_ERROR, e.to_string()))?;
                std::fs::create_dir_all(store.trusted_certs_dir())
                    .and_then(|()| std::fs::write(&trusted, der))
                    .map_err(|e| {
                        Failure::new(Reason::CONFIG_ERROR, format!("cannot write {}: {e}", trusted.display()))
                    })?;
                tracing::info!(thumbprint = %thumb, path = %trusted.display(), "OPC UA server certificate trusted by its configured thumbprint.");
            }
            let _ = std::fs::remove_file(&rejected);
            Ok(())
        }
        Some(want) => {
            let _ = store.store_rejected_cert(&cert);
            Err(Failure::new(
                Reason::ACCESS_DENIED,
                format!(
                    "the server's certificate has thumbprint {thumb}, not the configured server_certificate_thumbprint {}; refusing it",
                    normalise_thumbprint(want)
                ),
            ))
        }
        None if trusted.exists() && !rejected.exists() => Ok(()),
        None => {
            let _ = store.store_rejected_cert(&cert);
            Err(Failure::new(
                Reason::ACCESS_DENIED,
                format!(
                    "the server's certificate (thumbprint {thumb}) is not trusted: move {} to {} or set server_certificate_thumbprint = \"{thumb}\"",
                    rejected.display(),
                    store.trusted_certs_dir().display()
                ),
            ))
        }
    }
}

/// The identity the session logs in with.
fn identity(cfg: &OpcUaConfig) -> Result<IdentityToken, Failure> {
    match (&cfg.username, &cfg.password, &cfg.user_certificate, &cfg.user_private_key) {
        (Some(u), Some(p), _, _) => Ok(IdentityToken::new_user_name(u.clone(), p.expose().to_owned())),
        (_, _, Some(c), Some(k)) => IdentityToken::new_x509_path(c, k).map_err(|e| {
            Failure::new(Reason::CONFIG_ERROR, format!("the user certificate or key cannot be read: {}", e.status()))
        }),
        _ => Ok(IdentityToken::Anonymous),
    }
}

/// How the session's login failed, in words for an operator.
fn login_failure(cfg: &OpcUaConfig, status: StatusCode) -> Failure {
    let who = match (&cfg.username, &cfg.user_certificate) {
        (Some(u), _) => format!("user {u:?}"),
        (_, Some(_)) => "the user certificate".to_owned(),
        _ => "anonymous login".to_owned(),
    };
    let hint = match status {
        StatusCode::BadUserAccessDenied
        | StatusCode::BadIdentityTokenRejected
        | StatusCode::BadIdentityTokenInvalid => " (wrong username or password, or a user the server does not know)",
        StatusCode::BadCertificateUntrusted | StatusCode::BadSecurityChecksFailed => {
            " (the server does not trust the gateway's certificate: trust it on the server)"
        }
        _ => "",
    };
    Failure::new(reason_of(status), format!("the server refused the session for {who}: {status}{hint}"))
}

/// Connects: the endpoints, trust, then a session whose event loop runs in
/// its own task; returns once the session is activated, within the timeout.
pub(crate) async fn connect(cfg: &OpcUaConfig, data_dir: Option<&Path>) -> Result<Link, Failure> {
    let data_dir = data_dir.ok_or_else(|| {
        Failure::new(Reason::CONFIG_ERROR, "the OPC UA driver needs the gateway's data directory for its certificates")
    })?;
    let pki = pki_dir(data_dir);
    let timeout = cfg.timeout();
    let client = {
        let (cfg, pki) = (cfg.clone(), pki.clone());
        tokio::task::spawn_blocking(move || make_client(&cfg, &pki))
            .await
            .map_err(|e| Failure::new(Reason::CONFIG_ERROR, format!("making the OPC UA client failed: {e}")))??
    };
    let endpoints = tokio::time::timeout(timeout, client.get_server_endpoints_from_url(cfg.endpoint.as_str()))
        .await
        .map_err(|_| {
            Failure::new(Reason::TIMEOUT, format!("no answer from {} within {} ms", cfg.endpoint, cfg.timeout_ms))
        })?
        .map_err(|e| Failure::status(&format!("cannot get the endpoints of {}", cfg.endpoint), e.status()))?;
    let ep = choose_endpoint(cfg, &endpoints)?;
    check_trust(cfg, &pki, &ep)?;
    let id = identity(cfg)?;
    let mut client = client;
    let (session, event_loop) = client
        .connect_to_endpoint_directly(ep, id)
        .map_err(|e| Failure::status("cannot make the session", e.status()))?;
    let (tx, mut events) = mpsc::unbounded_channel();
    let task = tokio::spawn(async move {
        let stream = event_loop.enter();
        tokio::pin!(stream);
        let end = loop {
            let event = match stream.next().await {
                None => break StatusCode::BadConnectionClosed,
                Some(Err(status)) => break status,
                Some(Ok(SessionPollResult::ConnectionLost(s) | SessionPollResult::ReconnectFailed(s))) => break s,
                Some(Ok(SessionPollResult::Reconnected(_))) => LinkEvent::Connected,
                Some(Ok(SessionPollResult::SessionActivity(SessionActivity::KeepAliveFailed(s)))) => {
                    LinkEvent::KeepAliveFailed(s)
                }
                Some(Ok(SessionPollResult::Subscription(SubscriptionActivity::FatalFailure(s)))) => break s,
                Some(Ok(_)) => continue,
            };
            if tx.send(event).is_err() {
                return;
            }
        };
        let _ = tx.send(LinkEvent::Lost(end));
    });
    // Channel, session, activation: the endpoint request's timeout, twice
    // (the RSA work of a secured channel takes its share).
    let first = tokio::time::timeout(timeout * 2, events.recv()).await;
    let link = Link { session, events, task };
    match first {
        Ok(Some(LinkEvent::Connected)) => Ok(link),
        Ok(Some(LinkEvent::Lost(s))) => {
            link.drop_now();
            Err(match s {
                StatusCode::BadConnectionClosed | StatusCode::BadCommunicationError | StatusCode::BadTimeout => {
                    Failure::status(&format!("cannot connect to {}", cfg.endpoint), s)
                }
                s => login_failure(cfg, s),
            })
        }
        Ok(Some(LinkEvent::KeepAliveFailed(s))) => {
            link.drop_now();
            Err(Failure::status("the session failed at once", s))
        }
        Ok(None) => {
            link.drop_now();
            Err(Failure::new(Reason::CONNECTION_LOST, "the session's event loop ended"))
        }
        Err(_) => {
            link.drop_now();
            Err(Failure::new(
                Reason::TIMEOUT,
                format!("no session with {} within {} ms", cfg.endpoint, 2 * cfg.timeout_ms),
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thumbprints_are_compared_as_hex_digits_only() {
        assert_eq!(normalise_thumbprint("ab:cd 01"), "ABCD01");
    }

    #[test]
    fn a_wrong_password_is_said_in_words_without_the_password() {
        let cfg = OpcUaConfig {
            username: Some("op".into()),
            password: Some(gateway_model::Secret::new("s3cret")),
            ..OpcUaConfig::new("opc.tcp://h:4840")
        };
        let f = login_failure(&cfg, StatusCode::BadUserAccessDenied);
        assert!(f.message.contains("user \"op\": BadUserAccessDenied (wrong username or password"), "{f}");
        assert!(!f.message.contains("s3cret") && !format!("{cfg:?}").contains("s3cret"));
        assert_eq!(f.reason, Reason::ACCESS_DENIED);
    }
}
