//! Who is asking, and may they: every request passes [`authorize`], which
//! finds the caller from `Authorization: Bearer SECRET` (an API token or a
//! login session; on a WebSocket upgrade from a browser, which cannot set
//! headers, also the subprotocol `bearer.SECRET`), looks up what the route
//! needs in one [`policy`] table, and answers `401` (no or unknown
//! credentials) or `403` (a role that may not) as the usual JSON error.
//!
//! Roles: `viewer` reads; `operator` also writes set-points and acknowledges
//! alarms; `admin` does everything, including devices, users and tokens.
//! Reads without credentials are allowed only when the API is bound to a
//! loopback address and `[api.auth] anonymous_read` (default: true there)
//! says so. Writes always need credentials.
//!
//! Checking a secret costs one SHA-256 and, at most every few seconds per
//! secret, one indexed query: verified secrets are cached for
//! [`CACHE_TTL`], so a revocation made by another process (the
//! `edge-gateway token revoke` command) takes effect within that time, and
//! one made over this API at once. Passwords are checked only at login, on a
//! blocking thread, two at a time at most, and failed logins are limited per
//! client address and per user name ([`limiter`]).

pub mod handlers;
pub mod limiter;
pub mod policy;
pub mod secret;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::RwLock;
use std::time::{Duration, Instant};

use axum::extract::{ConnectInfo, MatchedPath, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use gateway_store::{Holder, NewAuditEntry, Role, Store, StoreError};
use serde::{Deserialize, Serialize};

use crate::AppState;
use crate::error::ApiError;
use limiter::FailureLimiter;
use policy::Access;

/// How long a verified secret is trusted without asking the store again.
pub const CACHE_TTL: Duration = Duration::from_secs(10);

/// Most verified secrets cached at once.
const CACHE_CAPACITY: usize = 4096;

/// Logins whose password is being checked at once; argon2 takes 19 MiB and
/// tens of milliseconds each, so a burst of logins waits here instead of
/// taking the gateway's memory and cores.
const CONCURRENT_HASHES: usize = 2;

/// Refused writes recorded per client address and minute; a flood of them is
/// logged once per minute instead, so it cannot fill the database.
const DENIED_AUDITED_PER_MINUTE: u32 = 20;

/// `[api.auth]`: who may read without credentials, how long a login lasts,
/// how failed logins are slowed down.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthConfig {
    /// Reads (values, devices, metrics, live updates) without credentials.
    /// Default: allowed when `api.bind` is a loopback address, refused
    /// otherwise; `true` with a non-loopback bind is a configuration error.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub anonymous_read: Option<bool>,
    /// How long a login session lasts, in seconds (default 43200, 12 hours).
    #[serde(default = "default_session_ttl_s")]
    pub session_ttl_s: u64,
    /// Failed logins allowed per client address, and per user name, within
    /// `failed_login_window_s`; more are refused with 429 until the window
    /// ends (default 5).
    #[serde(default = "default_max_failed_logins")]
    pub max_failed_logins: u32,
    /// The window of `max_failed_logins`, in seconds (default 300).
    #[serde(default = "default_failed_login_window_s")]
    pub failed_login_window_s: u64,
}

const fn default_session_ttl_s() -> u64 {
    12 * 3600
}

const fn default_max_failed_logins() -> u32 {
    5
}

const fn default_failed_login_window_s() -> u64 {
    300
}

impl Default for AuthConfig {
    fn default() -> Self {
        AuthConfig {
            anonymous_read: None,
            session_ttl_s: default_session_ttl_s(),
            max_failed_logins: default_max_failed_logins(),
            failed_login_window_s: default_failed_login_window_s(),
        }
    }
}

impl AuthConfig {
    /// Checks the fields against the address the API binds; paths are below `[api.auth]`.
    pub fn validate(&self, bind: SocketAddr) -> Result<(), gateway_model::FieldError> {
        use gateway_model::FieldError;
        if self.anonymous_read == Some(true) && !bind.ip().is_loopback() {
            return Err(FieldError::new(
                "anonymous_read",
                format!(
                    "anonymous reads are allowed only when api.bind is a loopback address (127.0.0.1 or [::1]); \
                     api.bind is {bind}: give clients a viewer token instead"
                ),
            ));
        }
        if !(60..=30 * 86_400).contains(&self.session_ttl_s) {
            return Err(FieldError::new(
                "session_ttl_s",
                format!("must be between 60 and 2592000 (30 days), got {}", self.session_ttl_s),
            ));
        }
        if !(1..=1000).contains(&self.max_failed_logins) {
            return Err(FieldError::new(
                "max_failed_logins",
                format!("must be between 1 and 1000, got {}", self.max_failed_logins),
            ));
        }
        if !(1..=86_400).contains(&self.failed_login_window_s) {
            return Err(FieldError::new(
                "failed_login_window_s",
                format!("must be between 1 and 86400, got {}", self.failed_login_window_s),
            ));
        }
        Ok(())
    }

    /// Whether anonymous reads are allowed on `bind`.
    pub fn anonymous_read_on(&self, bind: SocketAddr) -> bool {
        bind.ip().is_loopback() && self.anonymous_read.unwrap_or(true)
    }
}

/// Who made a request: what the handlers and the audit trail see.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Principal {
    /// `user:NAME`, `token:NAME` or `anonymous`.
    pub actor: String,
    /// The role, `None` for an anonymous reader.
    pub role: Option<Role>,
    /// The client's address (`unknown` when the server did not say).
    pub source: String,
    /// For a login session: the digest of its id (what logging out deletes).
    pub session: Option<String>,
}

impl Principal {
    /// A request without credentials from `source`.
    pub fn anonymous(source: String) -> Self {
        Principal { actor: "anonymous".into(), role: None, source, session: None }
    }

    /// The user's name, for a login session.
    pub fn user(&self) -> Option<&str> {
        self.actor.strip_prefix("user:")
    }

    /// The audit entry of `action` on `target` by this caller.
    pub fn audit(&self, action: &str, target: &str, outcome: impl Into<String>, detail: String) -> NewAuditEntry {
        NewAuditEntry {
            actor: self.actor.clone(),
            source: self.source.clone(),
            action: action.into(),
            target: target.into(),
            outcome: outcome.into(),
            detail,
        }
    }
}

#[derive(Clone, Debug)]
struct Cached {
    holder: Holder,
    session: bool,
    checked: Instant,
}

/// A successful login.
#[derive(Clone, Debug, Serialize)]
pub struct Login {
    /// The session's secret, for `Authorization: Bearer`; shown once.
    pub token: String,
    /// The user.
    pub user: String,
    /// The user's role.
    pub role: Role,
    /// When the session ends, milliseconds since the Unix epoch.
    pub expires_at_ms: i64,
}

/// Why a login failed.
#[derive(Debug)]
pub enum LoginError {
    /// Unknown user or wrong password (which one is not said).
    Invalid,
    /// Too many failures from this address or for this user; try again after this long.
    Limited(Duration),
    /// The store failed.
    Store(StoreError),
}

/// Users, tokens and sessions as the API checks them; see the module docs.
#[derive(Debug)]
pub struct Auth {
    store: Store,
    cfg: AuthConfig,
    anonymous_read: bool,
    cache: RwLock<HashMap<String, Cached>>,
    by_address: FailureLimiter,
    by_user: FailureLimiter,
    denied: FailureLimiter,
    hashing: tokio::sync::Semaphore,
    /// One user change at a time, so "never remove the last admin" holds.
    changes: tokio::sync::Mutex<()>,
}

impl Auth {
    /// Authentication for an API bound to `bind`.
    pub fn new(store: Store, cfg: AuthConfig, bind: SocketAddr) -> Self {
        let window = Duration::from_secs(cfg.failed_login_window_s);
        Auth {
            anonymous_read: cfg.anonymous_read_on(bind),
            by_address: FailureLimiter::new(cfg.max_failed_logins, window),
            by_user: FailureLimiter::new(cfg.max_failed_logins, window),
            denied: FailureLimiter::new(DENIED_AUDITED_PER_MINUTE, Duration::from_secs(60)),
            hashing: tokio::sync::Semaphore::new(CONCURRENT_HASHES),
            changes: tokio::sync::Mutex::new(()),
            cache: RwLock::new(HashMap::new()),
            store,
            cfg,
        }
    }

    /// Whether reads without credentials are allowed.
    pub fn anonymous_read(&self) -> bool {
        self.anonymous_read
    }

    /// The store holding users, tokens, sessions and the audit trail.
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// Who holds `secret` (a token or a session id), if anyone.
    pub async fn resolve(&self, secret: &str) -> Result<Option<(Holder, bool)>, StoreError> {
        let is_session = secret.starts_with(secret::SESSION_PREFIX);
        if !is_session && !secret.starts_with(secret::TOKEN_PREFIX) {
            return Ok(None);
        }
        let digest = secret::digest(secret);
        let now = Instant::now();
        if let Some(c) = self.cache.read().unwrap_or_else(|e| e.into_inner()).get(&digest)
            && now.duration_since(c.checked) < CACHE_TTL
            && c.holder.expires_at_ms.is_none_or(|t| t > now_ms())
        {
            return Ok(Some((c.holder.clone(), c.session)));
        }
        let found =
            if is_session { self.store.find_session(&digest).await? } else { self.store.find_token(&digest).await? };
        let mut cache = self.cache.write().unwrap_or_else(|e| e.into_inner());
        match &found {
            Some(h) => {
                if cache.len() >= CACHE_CAPACITY {
                    cache.retain(|_, c| now.duration_since(c.checked) < CACHE_TTL);
                    if cache.len() >= CACHE_CAPACITY {
                        cache.clear();
                    }
                }
                cache.insert(digest, Cached { holder: h.clone(), session: is_session, checked: now });
            }
            None => {
                cache.remove(&digest);
            }
        }
        Ok(found.map(|h| (h, is_session)))
    }

    /// Drops what the cache believes about a user's sessions or a token
    /// (after a change made over the API).
    pub fn forget(&self, name: &str, session: bool) {
        self.cache
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|_, c| !(c.session == session && c.holder.name == name));
    }

    /// Drops a session id from the cache (logout).
    pub fn forget_digest(&self, digest: &str) {
        self.cache.write().unwrap_or_else(|e| e.into_inner()).remove(digest);
    }

    /// Checks a user's password and starts a session.
    pub async fn login(&self, user: &str, password: &str, source: &str) -> Result<Login, LoginError> {
        let now = Instant::now();
        let wait = self.by_address.blocked(source, now).into_iter().chain(self.by_user.blocked(user, now)).max();
        if let Some(wait) = wait {
            return Err(LoginError::Limited(wait));
        }
        let record = self.store.get_user(user).await.map_err(LoginError::Store)?;
        // Hash even for an unknown user, so the time taken does not say which names exist.
        let hash = record.as_ref().map_or_else(|| secret::decoy_hash().to_owned(), |u| u.password_hash.clone());
        let password = password.to_owned();
        let ok = {
            let _permit = self.hashing.acquire().await.map_err(|_| LoginError::Invalid)?;
            tokio::task::spawn_blocking(move || secret::verify_password(&password, &hash)).await.unwrap_or(false)
        };
        let Some(record) = record.filter(|_| ok) else {
            self.by_address.failed(source, now);
            self.by_user.failed(user, now);
            return Err(LoginError::Invalid);
        };
        self.by_address.succeeded(source);
        self.by_user.succeeded(user);
        let token = secret::new_secret(secret::SESSION_PREFIX);
        let expires_at_ms = now_ms().saturating_add((self.cfg.session_ttl_s * 1000) as i64);
        self.store
            .create_session(&secret::digest(&token), &record.name, expires_at_ms)
            .await
            .map_err(LoginError::Store)?;
        // Expired sessions are deleted as new ones begin, so the table stays
        // as small as the number of live logins.
        if let Err(e) = self.store.purge_sessions().await {
            tracing::warn!(error = %e, "Cannot delete expired sessions.");
        }
        Ok(Login { token, user: record.name, role: record.role, expires_at_ms })
    }

    async fn hash(&self, password: &str) -> Result<String, UserError> {
        if let Some(problem) = secret::password_problem(password) {
            return Err(UserError::Invalid("password", problem));
        }
        let _permit = self.hashing.acquire().await.map_err(|e| UserError::Internal(e.to_string()))?;
        let p = password.to_owned();
        tokio::task::spawn_blocking(move || secret::hash_password(&p))
            .await
            .map_err(|e| UserError::Internal(e.to_string()))?
            .map_err(UserError::Internal)
    }

    /// Adds a user with a password (at least [`secret::MIN_PASSWORD_LEN`] characters).
    pub async fn create_user(&self, name: &str, role: Role, password: &str) -> Result<(), UserError> {
        check_name(name)?;
        let hash = self.hash(password).await?;
        self.store.create_user(name, role, &hash).await?;
        Ok(())
    }

    /// Changes a user's role and/or password; a new password ends the
    /// user's sessions. The last admin cannot be demoted.
    pub async fn update_user(&self, name: &str, role: Option<Role>, password: Option<&str>) -> Result<(), UserError> {
        let hash = match password {
            Some(p) => Some(self.hash(p).await?),
            None => None,
        };
        let _one = self.changes.lock().await;
        let user = self.store.get_user(name).await?.ok_or_else(|| UserError::NotFound("user", name.to_owned()))?;
        if let Some(role) = role.filter(|r| *r != user.role) {
            if user.role == Role::Admin && self.store.count_users_with(Role::Admin).await? <= 1 {
                return Err(UserError::LastAdmin);
            }
            self.store.set_role(name, role).await?;
        }
        if let Some(hash) = hash {
            self.store.set_password(name, &hash).await?;
        }
        self.forget(name, true);
        Ok(())
    }

    /// Removes a user and its sessions; the last admin cannot be removed.
    pub async fn delete_user(&self, name: &str) -> Result<(), UserError> {
        let _one = self.changes.lock().await;
        let user = self.store.get_user(name).await?.ok_or_else(|| UserError::NotFound("user", name.to_owned()))?;
        if user.role == Role::Admin && self.store.count_users_with(Role::Admin).await? <= 1 {
            return Err(UserError::LastAdmin);
        }
        self.store.delete_user(name).await?;
        self.forget(name, true);
        Ok(())
    }

    /// Creates an API token and returns its secret, which is not kept: it is
    /// shown to the caller once.
    pub async fn create_token(&self, name: &str, role: Role) -> Result<String, UserError> {
        check_name(name)?;
        let token = secret::new_secret(secret::TOKEN_PREFIX);
        self.store.create_token(name, role, &secret::digest(&token)).await?;
        Ok(token)
    }

    /// Revokes a token: requests carrying it are refused from now on.
    pub async fn revoke_token(&self, name: &str) -> Result<(), UserError> {
        if !self.store.delete_token(name).await? {
            return Err(UserError::NotFound("token", name.to_owned()));
        }
        self.forget(name, false);
        Ok(())
    }

    /// Makes sure someone can administer the gateway: with no admin user, one
    /// is created (named `admin`, or `admin-2`... if that name is taken by a
    /// weaker user) and its name and password are returned, to be shown once.
    pub async fn ensure_admin(&self) -> Result<Option<(String, String)>, StoreError> {
        if self.store.count_users_with(Role::Admin).await? > 0 {
            return Ok(None);
        }
        let password = secret::new_password();
        let p = password.clone();
        let hash = tokio::task::spawn_blocking(move || secret::hash_password(&p))
            .await
            .map_err(|e| StoreError::Schema(e.to_string()))?
            .map_err(StoreError::Schema)?;
        for n in 1..100 {
            let name = if n == 1 { "admin".to_owned() } else { format!("admin-{n}") };
            match self.store.create_user(&name, Role::Admin, &hash).await {
                Ok(()) => return Ok(Some((name, password))),
                Err(StoreError::Conflict { .. }) => continue,
                Err(e) => return Err(e),
            }
        }
        Err(StoreError::Schema("no free name for the first administrator (admin .. admin-99 are taken)".into()))
    }

    /// Records a refused write, at most [`DENIED_AUDITED_PER_MINUTE`] per client address.
    pub async fn audit_denied(&self, entry: NewAuditEntry) {
        let now = Instant::now();
        if self.denied.blocked(&entry.source, now).is_some() {
            return;
        }
        self.denied.failed(&entry.source, now);
        if self.denied.blocked(&entry.source, now).is_some() {
            tracing::warn!(source = %entry.source, "Many refused writes from one address; recording no more of them for a minute.");
        }
        self.audit(entry).await;
    }

    /// Appends to the audit trail; a failure is logged with the whole entry
    /// (so the trail is not silently short) and does not fail the caller's
    /// change, which already happened.
    pub async fn audit(&self, entry: NewAuditEntry) {
        if let Err(e) = self.store.append_audit(&entry).await {
            tracing::error!(
                error = %e, actor = %entry.actor, source = %entry.source, action = %entry.action,
                target = %entry.target, outcome = %entry.outcome, detail = %entry.detail,
                "Cannot append to the audit trail; the entry is logged here instead."
            );
        }
    }
}

/// Why a change to users or tokens was refused.
#[derive(Debug, thiserror::Error)]
pub enum UserError {
    /// A field is not acceptable: which, and why.
    #[error("{0}: {1}")]
    Invalid(&'static str, String),
    /// No user (or token) of that name: what, and the name.
    #[error("{0} {1:?} does not exist")]
    NotFound(&'static str, String),
    /// The change would leave the gateway without an administrator.
    #[error("the last admin cannot be removed or given another role; make another user admin first")]
    LastAdmin,
    /// The store refused or failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Hashing failed (out of memory, a panicked thread).
    #[error("{0}")]
    Internal(String),
}

impl From<UserError> for ApiError {
    fn from(e: UserError) -> Self {
        match e {
            UserError::Invalid(field, why) => ApiError::bad_request("invalid_field", format!("{field}: {why}")),
            UserError::NotFound(what, name) => ApiError::not_found(what, &name),
            UserError::LastAdmin => ApiError::conflict("last_admin", e.to_string()),
            UserError::Store(e) => e.into(),
            UserError::Internal(e) => ApiError::internal(e),
        }
    }
}

/// User and token names: 1-64 of `A-Z a-z 0-9 _ - . @`.
fn check_name(name: &str) -> Result<(), UserError> {
    let ok =
        !name.is_empty() && name.len() <= 64 && name.bytes().all(|c| c.is_ascii_alphanumeric() || b"_-.@".contains(&c));
    if ok { Ok(()) } else { Err(UserError::Invalid("name", format!("{name:?}: use 1-64 of A-Z a-z 0-9 _ - . @"))) }
}

fn now_ms() -> i64 {
    (gateway_model::now_ns() / 1_000_000) as i64
}

/// The credentials of a request: the bearer token, or on a WebSocket upgrade
/// the `bearer.SECRET` subprotocol a browser offers (it cannot set headers).
pub fn credentials(headers: &HeaderMap) -> Option<&str> {
    if let Some(v) = headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()) {
        let (scheme, rest) = v.split_once(' ')?;
        return scheme.eq_ignore_ascii_case("bearer").then(|| rest.trim());
    }
    headers
        .get_all(header::SEC_WEBSOCKET_PROTOCOL)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .find_map(|p| p.trim().strip_prefix("bearer."))
}

/// The client's address, as the server recorded it.
pub fn source_of(req: &Request) -> String {
    req.extensions().get::<ConnectInfo<SocketAddr>>().map_or_else(|| "unknown".to_owned(), |c| c.0.ip().to_string())
}

fn unauthorized(message: &str) -> Response {
    let mut r = ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", message).into_response();
    r.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer realm=\"edge-gateway\""));
    r
}

/// Middleware: finds the caller, checks the route's [`policy`], and hands
/// the [`Principal`] to the handler (as a request extension).
pub async fn authorize(State(state): State<AppState>, mut req: Request, next: Next) -> Response {
    let route = req.extensions().get::<MatchedPath>().map(|p| p.as_str().to_owned());
    let need = policy::required(req.method(), route.as_deref());
    let source = source_of(&req);
    let auth = state.auth();
    let principal = match credentials(req.headers()) {
        None => Principal::anonymous(source),
        Some(secret) => match auth.resolve(secret).await {
            Ok(Some((holder, session))) => Principal {
                actor: format!("{}:{}", if session { "user" } else { "token" }, holder.name),
                role: Some(holder.role),
                session: session.then(|| secret::digest(secret)),
                source,
            },
            Ok(None) => {
                return unauthorized("the token is unknown, revoked or expired; log in again or use a valid token");
            }
            Err(e) => return ApiError::from(e).into_response(),
        },
    };
    let allowed = match (need, principal.role) {
        (Access::Public, _) => true,
        (Access::Read, None) => auth.anonymous_read(),
        (Access::Read, Some(_)) | (Access::Authenticated, Some(_)) => true,
        (Access::Operate, Some(r)) => r >= Role::Operator,
        (Access::Admin, Some(r)) => r == Role::Admin,
        (Access::Authenticated | Access::Operate | Access::Admin, None) => false,
    };
    if !allowed {
        let resp = if principal.role.is_none() {
            unauthorized(
                "this needs credentials: Authorization: Bearer TOKEN (a token, or the session of POST /api/v1/auth/login)",
            )
        } else {
            let need = match need {
                Access::Operate => "operator",
                _ => "admin",
            };
            ApiError::new(StatusCode::FORBIDDEN, "forbidden", format!("this needs the {need} role")).into_response()
        };
        if *req.method() != axum::http::Method::GET && *req.method() != axum::http::Method::HEAD {
            let target = route.unwrap_or_else(|| req.uri().path().to_owned());
            let outcome = format!("denied ({})", resp.status().as_u16());
            let entry =
                principal.audit("access.denied", &target, outcome, format!("{{\"method\":\"{}\"}}", req.method()));
            auth.audit_denied(entry).await;
        }
        return resp;
    }
    req.extensions_mut().insert(principal);
    next.run(req).await
}
