//! The API's own metrics (HTTP requests by route and status, their latency,
//! connections, WebSocket connections and drops) and the process's (resident
//! memory, CPU time, threads, open files), read from /proc when metrics are
//! scraped.
//!
//! No label takes a value a client chooses: the method is one of the
//! standard ones or `other`, the route a template of the router or
//! `unmatched`, the status one the gateway sent; so a client cannot grow the
//! label sets (and every scrape) by sending odd methods or paths.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::http::Method;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue, LabelValueEncoder};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::{Registry, Unit};

use crate::AppState;
use crate::error::ApiError;

/// Labels of `gateway_http_requests`: one counter per method, route and status.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    /// The request's method, as [`method_label`] names it.
    pub method: String,
    /// Route template (`/api/v1/devices/{name}`), or `unmatched`.
    pub route: String,
    /// The status sent back, 503 when `request_timeout_s` ran out.
    pub status: u16,
}

/// Labels of `gateway_http_request_duration`: one histogram per method and
/// route, whatever the status.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RouteLabels {
    /// The request's method, as [`method_label`] names it.
    pub method: String,
    /// Route template, as in [`RequestLabels::route`]; path parameters never
    /// become labels, so their number stays bounded.
    pub route: String,
}

/// Why the server closed a connection before the client did, the label of
/// `gateway_http_connection_timeouts`.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
pub enum TimeoutKind {
    /// The TLS handshake did not finish within `header_read_timeout_s`.
    TlsHandshake,
    /// A request's headers did not arrive within `header_read_timeout_s`
    /// (this includes an idle keep-alive connection).
    Header,
    /// No byte moved for `idle_timeout_s` while no request was handled.
    Idle,
}

impl EncodeLabelValue for TimeoutKind {
    fn encode(&self, encoder: &mut LabelValueEncoder<'_>) -> std::fmt::Result {
        use std::fmt::Write;
        encoder.write_str(match self {
            TimeoutKind::TlsHandshake => "tls_handshake",
            TimeoutKind::Header => "header",
            TimeoutKind::Idle => "idle",
        })
    }
}

/// Labels of `gateway_http_connection_timeouts`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TimeoutLabels {
    /// Which timeout closed the connection.
    pub kind: TimeoutKind,
}

/// The metrics label of an HTTP method: the standard methods as they are
/// spelled, anything else `other`.
///
/// ```
/// use axum::http::Method;
/// use gateway_api::metrics::method_label;
///
/// assert_eq!(method_label(&Method::POST), "POST");
/// assert_eq!(method_label(&Method::from_bytes(b"XYZZY").unwrap()), "other");
/// ```
pub fn method_label(m: &Method) -> &'static str {
    match *m {
        Method::GET => "GET",
        Method::HEAD => "HEAD",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::DELETE => "DELETE",
        Method::PATCH => "PATCH",
        Method::OPTIONS => "OPTIONS",
        Method::CONNECT => "CONNECT",
        Method::TRACE => "TRACE",
        _ => "other",
    }
}

fn latency_histogram() -> Histogram {
    Histogram::new([0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0])
}

/// Metrics of the API and the process.
#[derive(Debug)]
pub struct ApiMetrics {
    /// Requests by method, route and status.
    pub requests: Family<RequestLabels, Counter>,
    /// Request latency by method and route.
    pub duration: Family<RouteLabels, Histogram, fn() -> Histogram>,
    /// WebSocket connections open now; moves with every connect and close.
    pub ws_connections: Gauge,
    /// WebSocket connections refused at the limit.
    pub ws_refused: Counter,
    /// Value updates not delivered to slow WebSocket clients.
    pub ws_dropped: Counter,
    /// Messages sent to WebSocket clients.
    pub ws_messages: Counter,
    /// Connections open now (HTTP and WebSocket), at most the effective
    /// connection cap.
    pub http_connections: Gauge,
    /// The effective connection cap: `max_connections`, or lower to stay
    /// below the open-files limit.
    pub http_connection_limit: Gauge,
    /// Connections the server closed because a timeout ran out, by kind.
    pub http_connection_timeouts: Family<TimeoutLabels, Counter>,
    /// TLS handshakes that failed (no client certificate, a bad one, not TLS).
    pub http_tls_failures: Counter,
    /// Failed accepts (such as out of file descriptors), each followed by a
    /// short pause.
    pub http_accept_errors: Counter,
    rss: Gauge,
    cpu: Counter<f64, AtomicU64>,
    cpu_seen: AtomicU64,
    threads: Gauge,
    open_fds: Gauge,
}

impl ApiMetrics {
    /// The metrics, registered in `registry` under `gateway_http_`, `gateway_ws_`
    /// and `process_`.
    pub fn new(registry: &mut Registry) -> Self {
        let m = ApiMetrics {
            requests: Family::default(),
            duration: Family::new_with_constructor(latency_histogram),
            ws_connections: Gauge::default(),
            ws_refused: Counter::default(),
            ws_dropped: Counter::default(),
            ws_messages: Counter::default(),
            http_connections: Gauge::default(),
            http_connection_limit: Gauge::default(),
            http_connection_timeouts: Family::default(),
            http_tls_failures: Counter::default(),
            http_accept_errors: Counter::default(),
            rss: Gauge::default(),
            cpu: Counter::default(),
            cpu_seen: AtomicU64::new(0),
            threads: Gauge::default(),
            open_fds: Gauge::default(),
        };
        let http = registry.sub_registry_with_prefix("gateway_http");
        http.register("requests", "HTTP requests by method, route and status", m.requests.clone());
        http.register_with_unit("request_duration", "HTTP request latency", Unit::Seconds, m.duration.clone());
        http.register("connections", "Open connections, HTTP and WebSocket", m.http_connections.clone());
        http.register("connection_limit", "The effective cap on open connections", m.http_connection_limit.clone());
        http.register(
            "connection_timeouts",
            "Connections closed by the server because a timeout ran out",
            m.http_connection_timeouts.clone(),
        );
        http.register("tls_failures", "Failed TLS handshakes", m.http_tls_failures.clone());
        http.register("accept_errors", "Failed accepts, such as out of file descriptors", m.http_accept_errors.clone());
        let ws = registry.sub_registry_with_prefix("gateway_ws");
        ws.register("connections", "Open WebSocket connections", m.ws_connections.clone());
        ws.register("refused", "WebSocket connections refused at ws_max_connections", m.ws_refused.clone());
        ws.register("dropped_updates", "Value updates not delivered to slow WebSocket clients", m.ws_dropped.clone());
        ws.register("messages", "Messages sent to WebSocket clients", m.ws_messages.clone());
        let p = registry.sub_registry_with_prefix("process");
        p.register_with_unit("resident_memory", "Resident set size", Unit::Bytes, m.rss.clone());
        p.register_with_unit("cpu", "User and system CPU time", Unit::Seconds, m.cpu.clone());
        p.register("threads", "Threads", m.threads.clone());
        p.register("open_fds", "Open file descriptors", m.open_fds.clone());
        m
    }

    /// Reads the process figures from /proc.
    pub fn refresh_process(&self) {
        let p = crate::process::read(None);
        self.rss.set(p.rss as i64);
        self.threads.set(p.threads as i64);
        let prev = self.cpu_seen.swap(p.cpu_ticks, Ordering::Relaxed);
        if p.cpu_ticks > prev {
            self.cpu.inc_by((p.cpu_ticks - prev) as f64 / crate::process::TICKS_PER_S);
        }
        if let Ok(dir) = std::fs::read_dir("/proc/self/fd") {
            self.open_fds.set(dir.count() as i64);
        }
    }
}

/// Middleware: request timeout, and counts and latency by route and status.
pub async fn track(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let started = Instant::now();
    let method = method_label(req.method()).to_owned();
    let route = req.extensions().get::<MatchedPath>().map_or("unmatched", |p| p.as_str()).to_owned();
    let timeout = std::time::Duration::from_secs(state.cfg().request_timeout_s);
    let resp = match tokio::time::timeout(timeout, next.run(req)).await {
        Ok(r) => r,
        Err(_) => ApiError::new(
            axum::http::StatusCode::SERVICE_UNAVAILABLE,
            "request_timeout",
            format!("the request took longer than request_timeout_s ({} s)", timeout.as_secs()),
        )
        .into_response(),
    };
    let m = state.metrics();
    m.requests
        .get_or_create(&RequestLabels { method: method.clone(), route: route.clone(), status: resp.status().as_u16() })
        .inc();
    m.duration.get_or_create(&RouteLabels { method, route }).observe(started.elapsed().as_secs_f64());
    resp
}

/// OpenMetrics text as the classic Prometheus text format (0.0.4): a
/// counter family's `# HELP` and `# TYPE` name its samples (`x_total`), and
/// what that format lacks (`# UNIT`, `_created` samples, `# EOF`) is left
/// out. The samples themselves are the same lines.
pub fn to_prometheus_text(openmetrics: &str) -> String {
    let mut counters = std::collections::HashSet::new();
    for line in openmetrics.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ")
            && let Some(name) = rest.strip_suffix(" counter")
        {
            counters.insert(name.to_owned());
        }
    }
    let mut out = String::with_capacity(openmetrics.len());
    for line in openmetrics.lines() {
        if line.starts_with("# UNIT ") || line == "# EOF" {
            continue;
        }
        let meta = line
            .strip_prefix("# HELP ")
            .map(|r| ("# HELP ", r))
            .or(line.strip_prefix("# TYPE ").map(|r| ("# TYPE ", r)));
        if let Some((kind, rest)) = meta {
            let (name, tail) = rest.split_once(' ').unwrap_or((rest, ""));
            if counters.contains(name) {
                out.push_str(&format!("{kind}{name}_total {tail}\n"));
                continue;
            }
        } else if let Some(name) = line.split(['{', ' ']).next()
            && name.ends_with("_created")
            && counters.contains(name.trim_end_matches("_created"))
        {
            continue;
        }
        out.push_str(line);
        out.push('\n');
    }
    out
}
