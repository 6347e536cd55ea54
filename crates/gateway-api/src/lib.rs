//! The gateway's HTTP face: REST v1 (devices, tags, values, commands, history, system),
//! the WebSocket `/ws` for live values, `/metrics` for Prometheus, the OpenAPI
//! document at `/api/openapi.json`, and the operator's web UI at `/` ([`ui`]).
//!
//! [`router`] builds everything from an [`AppState`] without a socket, so
//! tests call it with `tower::ServiceExt::oneshot`; [`serve`] runs it behind
//! the bounded accept loop of [`server`], over TLS if configured ([`tls`]).
//! Every request passes the [`guard`] first (host allow-list, origin, sizes).
//! Every error body is `{"error": {"code", "message"}}`; internal details go to
//! the log, never into a response.

pub mod alarms;
pub mod auth;
pub mod cache;
pub mod command_audit;
pub mod config;
pub mod devices;
pub mod error;
pub mod guard;
pub mod history;
pub mod loaded;
pub mod metrics;
pub mod process;
pub mod routes;
pub mod server;
pub mod tls;
pub mod ui;
pub mod ws;

use std::sync::Arc;
use std::time::Instant;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::routing::{delete, get, post};
use gateway_bus::Bus;
use gateway_store::{History, Store};
use prometheus_client::registry::Registry;

pub use auth::{Auth, AuthConfig, Principal};
pub use cache::LatestCache;
pub use config::ApiConfig;
pub use devices::Devices;
pub use error::ApiError;
pub use loaded::LoadedConfig;
pub use metrics::ApiMetrics;
pub use server::{Server, serve};
pub use tls::TlsConfig;
pub use ws::WsHub;

/// The OpenAPI 3.1 description of the API.
pub const OPENAPI: &str = include_str!("../openapi.json");

struct Inner {
    bus: Bus,
    cache: Arc<LatestCache>,
    devices: Arc<Devices>,
    store: Store,
    registry: Arc<Registry>,
    metrics: Arc<ApiMetrics>,
    ws: WsHub,
    cfg: ApiConfig,
    auth: Arc<Auth>,
    history: Option<History>,
    alarms: Option<Arc<alarms::Alarms>>,
    reload: Option<ReloadHook>,
    loaded: LoadedConfig,
    started: Instant,
    preset: String,
}

/// What the handlers share. Cheap to clone.
#[derive(Clone)]
pub struct AppState {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for AppState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppState").finish_non_exhaustive()
    }
}

/// What `POST /api/v1/system/reload` runs: re-reads and applies the
/// configuration (the binary knows how); the answer says what changed.
#[derive(Clone)]
#[allow(clippy::type_complexity)]
pub struct ReloadHook(
    pub  Arc<
        dyn Fn() -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<serde_json::Value, ApiError>> + Send>>
            + Send
            + Sync,
    >,
);

impl std::fmt::Debug for ReloadHook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ReloadHook")
    }
}

/// The parts an [`AppState`] is made of.
#[derive(Debug)]
pub struct Parts {
    /// The running bus: commands go out on it, health and info read its stats.
    pub bus: Bus,
    /// The newest reading of every tag, which `/values` answers from.
    pub cache: Arc<LatestCache>,
    /// The configured devices, which the device and tag routes change.
    pub devices: Arc<Devices>,
    /// The metadata store, for the health check; device changes go through
    /// `devices`.
    pub store: Store,
    /// All metrics (rendered at `/metrics`).
    pub registry: Arc<Registry>,
    /// The API's own metrics.
    pub metrics: Arc<ApiMetrics>,
    /// The hub that feeds every `/ws` connection.
    pub ws: WsHub,
    /// The `[api]` section: limits and timeouts the handlers apply.
    pub cfg: ApiConfig,
    /// Users, tokens and sessions, and the audit trail.
    pub auth: Arc<Auth>,
    /// Name of the bus preset, for `/system/info`.
    pub preset: String,
    /// The history store the history routes read (None: history is off,
    /// they answer 404 `history_disabled`).
    pub history: Option<History>,
    /// Alarm rules and the alarm service (None: `[alarms] enabled = false`,
    /// the alarm routes answer 503 `alarms_disabled`).
    pub alarms: Option<Arc<alarms::Alarms>>,
    /// Live reconfiguration (None: `/api/v1/system/reload` answers 503).
    pub reload: Option<ReloadHook>,
    /// The configuration as loaded, secrets masked, for
    /// `/api/v1/system/config` (left empty, the route answers 503).
    pub loaded: LoadedConfig,
}

impl AppState {
    /// The state over `p`; the uptime in `/system/info` counts from here.
    pub fn new(p: Parts) -> Self {
        AppState {
            inner: Arc::new(Inner {
                bus: p.bus,
                cache: p.cache,
                devices: p.devices,
                store: p.store,
                registry: p.registry,
                metrics: p.metrics,
                ws: p.ws,
                cfg: p.cfg,
                auth: p.auth,
                history: p.history,
                alarms: p.alarms,
                reload: p.reload,
                loaded: p.loaded,
                started: Instant::now(),
                preset: p.preset,
            }),
        }
    }

    pub(crate) fn bus(&self) -> &Bus {
        &self.inner.bus
    }
    pub(crate) fn cache(&self) -> &LatestCache {
        &self.inner.cache
    }
    pub(crate) fn devices(&self) -> &Devices {
        &self.inner.devices
    }
    /// The devices, shared (for work that must outlive a request).
    pub(crate) fn devices_arc(&self) -> Arc<Devices> {
        self.inner.devices.clone()
    }
    pub(crate) fn store(&self) -> &Store {
        &self.inner.store
    }
    pub(crate) fn registry(&self) -> &Registry {
        &self.inner.registry
    }
    /// The API's own metrics (requests, WebSocket connections and drops), as
    /// given in [`Parts::metrics`].
    pub fn metrics(&self) -> &ApiMetrics {
        &self.inner.metrics
    }
    pub(crate) fn metrics_arc(&self) -> Arc<ApiMetrics> {
        self.inner.metrics.clone()
    }
    /// The hub behind `/ws`, for its connection count.
    pub fn ws(&self) -> &WsHub {
        &self.inner.ws
    }
    pub(crate) fn cfg(&self) -> &ApiConfig {
        &self.inner.cfg
    }
    /// When [`AppState::new`] ran; `/system/info` reports the uptime from it.
    /// Authentication and the audit trail.
    pub fn auth(&self) -> &Auth {
        &self.inner.auth
    }
    /// The same, shared (for work that must outlive a request).
    pub(crate) fn auth_arc(&self) -> Arc<Auth> {
        self.inner.auth.clone()
    }
    pub(crate) fn started(&self) -> Instant {
        self.inner.started
    }
    pub(crate) fn preset(&self) -> &str {
        &self.inner.preset
    }
    /// The history store, if history is recorded.
    pub(crate) fn history(&self) -> Option<&History> {
        self.inner.history.as_ref()
    }
    /// The reload hook, if the binary gave one.
    pub(crate) fn reload_hook(&self) -> Option<&ReloadHook> {
        self.inner.reload.as_ref()
    }
    /// The configuration as loaded, secrets masked.
    pub(crate) fn loaded(&self) -> &LoadedConfig {
        &self.inner.loaded
    }
    /// The alarms, if they are on.
    pub(crate) fn alarms(&self) -> Option<&Arc<alarms::Alarms>> {
        self.inner.alarms.as_ref()
    }
}

/// Every route, as (method, path) — the OpenAPI document must describe each.
pub const ROUTES: &[(&str, &str)] = &[
    ("get", "/api/v1/system/health"),
    ("get", "/api/v1/system/info"),
    ("post", "/api/v1/system/reload"),
    ("get", "/api/v1/system/config"),
    ("get", "/api/v1/devices"),
    ("post", "/api/v1/devices"),
    ("get", "/api/v1/devices/{name}"),
    ("put", "/api/v1/devices/{name}"),
    ("delete", "/api/v1/devices/{name}"),
    ("get", "/api/v1/devices/{name}/tags"),
    ("post", "/api/v1/devices/{name}/tags"),
    ("get", "/api/v1/devices/{name}/tags/{tag}"),
    ("put", "/api/v1/devices/{name}/tags/{tag}"),
    ("delete", "/api/v1/devices/{name}/tags/{tag}"),
    ("get", "/api/v1/devices/{name}/browse"),
    ("post", "/api/v1/devices/{name}/import"),
    ("get", "/api/v1/values"),
    ("get", "/api/v1/values/{tag}"),
    ("post", "/api/v1/commands"),
    ("get", "/metrics"),
    ("get", "/ws"),
    ("get", "/api/openapi.json"),
    ("post", "/api/v1/auth/login"),
    ("post", "/api/v1/auth/logout"),
    ("get", "/api/v1/auth/me"),
    ("post", "/api/v1/auth/password"),
    ("get", "/api/v1/users"),
    ("post", "/api/v1/users"),
    ("get", "/api/v1/users/{name}"),
    ("put", "/api/v1/users/{name}"),
    ("delete", "/api/v1/users/{name}"),
    ("get", "/api/v1/tokens"),
    ("post", "/api/v1/tokens"),
    ("delete", "/api/v1/tokens/{name}"),
    ("get", "/api/v1/audit"),
    ("get", "/api/v1/history"),
    ("get", "/api/v1/history/{tag}/latest"),
    ("get", "/api/v1/alarms"),
    ("get", "/api/v1/alarms/active"),
    ("post", "/api/v1/alarms/ack"),
    ("get", "/api/v1/alarms/rules"),
    ("post", "/api/v1/alarms/rules"),
    ("get", "/api/v1/alarms/rules/{name}"),
    ("put", "/api/v1/alarms/rules/{name}"),
    ("delete", "/api/v1/alarms/rules/{name}"),
    ("get", "/api/v1/alarms/{id}"),
    ("post", "/api/v1/alarms/{id}/ack"),
    ("post", "/api/v1/alarms/{id}/shelve"),
    ("post", "/api/v1/alarms/{id}/unshelve"),
    ("get", "/api/v1/alarms/events"),
];

/// Every route of [`ROUTES`] plus `/` and `/ui/{*path}` (the web UI's static
/// files, which the OpenAPI document does not describe), with the body limit,
/// the [`guard`] (in front of everything but the request metrics) and request
/// metrics applied; unknown paths and methods get JSON errors.
pub fn router(state: AppState) -> Router {
    use routes::*;
    let limit = state.cfg().max_request_size;
    let guard = Arc::new(guard::Guard::new(state.cfg()));
    Router::new()
        .route("/", get(ui::index))
        .route("/ui/{*path}", get(ui::file))
        .route("/api/v1/system/health", get(health))
        .route("/api/v1/system/info", get(info))
        .route("/api/v1/system/reload", post(reload))
        .route("/api/v1/system/config", get(loaded_config))
        .route("/api/v1/devices", get(list_devices).post(create_device))
        .route("/api/v1/devices/{name}", get(get_device).put(put_device).delete(delete_device))
        .route("/api/v1/devices/{name}/tags", get(list_tags).post(create_tag))
        .route("/api/v1/devices/{name}/tags/{tag}", get(get_tag).put(put_tag).delete(delete_tag))
        .route("/api/v1/devices/{name}/browse", get(browse))
        .route("/api/v1/devices/{name}/import", post(import))
        .route("/api/v1/values", get(values))
        .route("/api/v1/values/{tag}", get(value))
        .route("/api/v1/commands", post(command))
        .route("/api/openapi.json", get(openapi))
        .route("/metrics", get(metrics))
        .route("/ws", get(ws))
        .route("/api/v1/auth/login", post(auth::handlers::login))
        .route("/api/v1/auth/logout", post(auth::handlers::logout))
        .route("/api/v1/auth/me", get(auth::handlers::me))
        .route("/api/v1/auth/password", post(auth::handlers::change_password))
        .route("/api/v1/users", get(auth::handlers::list_users).post(auth::handlers::create_user))
        .route(
            "/api/v1/users/{name}",
            get(auth::handlers::get_user).put(auth::handlers::update_user).delete(auth::handlers::delete_user),
        )
        .route("/api/v1/tokens", get(auth::handlers::list_tokens).post(auth::handlers::create_token))
        .route("/api/v1/tokens/{name}", delete(auth::handlers::revoke_token))
        .route("/api/v1/audit", get(auth::handlers::audit))
        .route("/api/v1/history", get(history::query))
        .route("/api/v1/history/{tag}/latest", get(history::latest))
        .route("/api/v1/alarms", get(alarms::list))
        .route("/api/v1/alarms/active", get(alarms::active))
        .route("/api/v1/alarms/ack", post(alarms::ack_many))
        .route("/api/v1/alarms/rules", get(alarms::list_rules).post(alarms::create_rule))
        .route(
            "/api/v1/alarms/rules/{name}",
            get(alarms::get_rule).put(alarms::replace_rule).delete(alarms::delete_rule),
        )
        .route("/api/v1/alarms/{id}", get(alarms::get))
        .route("/api/v1/alarms/{id}/ack", post(alarms::ack_one))
        .route("/api/v1/alarms/{id}/shelve", post(alarms::shelve))
        .route("/api/v1/alarms/{id}/unshelve", post(alarms::unshelve))
        .route("/api/v1/alarms/events", get(history::alarm_events))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(limit))
        // Inner to outer: who may (so refusals are counted), the Host/Origin guard in front of
        // everything else, then the metrics and the request timeout.
        .layer(axum::middleware::from_fn_with_state(state.clone(), auth::authorize))
        .layer(axum::middleware::from_fn_with_state(guard, guard::check))
        .layer(axum::middleware::from_fn_with_state(state.clone(), metrics::track))
        .with_state(state)
}
