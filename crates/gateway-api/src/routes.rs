//! REST v1 handlers. Each handler validates its input, calls one service,
//! and maps the outcome to a status and a JSON body.

use std::time::Duration;

use axum::Json;
use axum::extract::{Extension, Path, Query, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use gateway_drivers::{BrowseError, DeviceConfig, TagConfig};
use gateway_model::{CmdStatus, TagId, TagPattern, Value};
use gateway_store::{NewAuditEntry, Source};
use serde::Deserialize;
use serde_json::{Value as JsonValue, json};

use crate::error::{ApiError, ApiJson};
use crate::{AppState, Principal};

type ApiResult<T> = Result<T, ApiError>;

/// Runs a device change to completion even if the request is cancelled (the
/// client went away, or the request timeout fired): stopping half-way would
/// leave the store, the device list and the running drivers out of step. The
/// change is audited when it ends, however it ends, by the same task.
async fn change<T: Send + 'static>(
    s: &AppState,
    who: &Principal,
    action: &str,
    target: &str,
    detail: JsonValue,
    f: impl std::future::Future<Output = ApiResult<T>> + Send + 'static,
) -> ApiResult<T> {
    let auth = s.auth_arc();
    let entry = who.audit(action, target, "", detail.to_string());
    tokio::spawn(async move {
        let r = f.await;
        let outcome = match &r {
            Ok(_) => "ok".to_owned(),
            Err(e) => format!("refused ({}): {}", e.status.as_u16(), e.message),
        };
        auth.audit(NewAuditEntry { outcome, ..entry }).await;
        r
    })
    .await
    .map_err(ApiError::internal)?
}

/// A PUT's body names what the path names: fills `name` in from the path
/// when the body leaves it out, and refuses a body that names something else.
pub(crate) fn name_from_path(body: &mut JsonValue, name: &str, what: &str) -> ApiResult<()> {
    if let JsonValue::Object(m) = body {
        match m.get("name").and_then(JsonValue::as_str) {
            None => {
                m.insert("name".into(), name.into());
            }
            Some(n) if n != name => {
                return Err(ApiError::bad_request(
                    "name_mismatch",
                    format!("the body names {what} {n:?}, the path {name:?}"),
                ));
            }
            Some(_) => {}
        }
    }
    Ok(())
}

/// What the audit trail keeps of a device: its driver and size, not its
/// fields (which may one day hold credentials).
fn device_detail(dev: &DeviceConfig) -> JsonValue {
    json!({ "driver": dev.driver(), "enabled": dev.enabled, "tags": dev.tags.len() })
}

/// `GET /api/v1/system/health`: 200 when the bus, the WAL, the store (reads
/// and writes) and every started driver work, else 503.
pub async fn health(State(s): State<AppState>) -> Response {
    let bus_ok = !s.bus().is_closed();
    let wal = s.bus().wal().map(|w| w.stats());
    let wal_error = wal.as_ref().and_then(|w| w.last_error.clone());
    let store = s.store().health().await;
    let failed: Vec<String> = s.devices().manager().failed().into_iter().map(|(name, _)| name).collect();
    // None: history is off. Failing writes only delay history (the WAL keeps
    // the data), but an operator must know, so they degrade the status.
    let history = s.history().map(|h| h.health());
    let ok = bus_ok && wal_error.is_none() && store.is_ok() && failed.is_empty() && !matches!(history, Some(Err(_)));
    let body = json!({
        "status": if ok { "ok" } else { "degraded" },
        "checks": {
            "bus": if bus_ok { "ok" } else { "closed" },
            "wal": match (&wal, &wal_error) {
                (None, _) => "memory".to_string(),
                (Some(_), None) => "ok".to_string(),
                // The error itself (paths, OS messages) goes to the log, not to clients.
                (Some(w), Some(_)) if w.disk_full => "failing (disk full; see the gateway log)".to_string(),
                (Some(_), Some(_)) => "failing (see the gateway log)".to_string(),
            },
            "store": match &store {
                Ok(()) => "ok",
                Err(gateway_store::StoreError::Full(_)) => "failing (disk full)",
                Err(_) => "failing",
            },
            // The reasons are in each device's status and in the log.
            "drivers": if failed.is_empty() { "ok".to_string() } else { format!("failed: {}", failed.join(", ")) },
            "history": match &history {
                None => "off",
                Some(Ok(())) => "ok",
                // The database's own message (which may name hosts) is in the log.
                Some(Err(_)) => "failing (writes wait for the database; see the gateway log)",
            },
        }
    });
    if let Some(Err(e)) = &history {
        tracing::error!(error = %e, "History writes are failing.");
    }
    if let Err(e) = store {
        tracing::error!(error = %e, "Store health check failed.");
    }
    if let Some(e) = wal_error {
        tracing::error!(error = %e, "The WAL is failing.");
    }
    let status = if ok { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    (status, Json(body)).into_response()
}

/// `POST /api/v1/system/reload` (admin): re-reads the configuration file
/// and applies what changed; 400 `invalid_config` naming the field if the
/// file is wrong (nothing changes then). Audited.
pub async fn reload(State(s): State<AppState>, Extension(who): Extension<Principal>) -> ApiResult<Json<JsonValue>> {
    let hook = s.reload_hook().cloned().ok_or_else(|| {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "reload_unavailable",
            "this gateway cannot reload its configuration",
        )
    })?;
    // Runs to the end even if the client goes away: a reload half applied
    // would leave the running parts out of step with the file.
    let r = tokio::spawn((hook.0)()).await.map_err(ApiError::internal)?;
    let outcome = match &r {
        Ok(_) => "ok".to_owned(),
        Err(e) => format!("refused ({}): {}", e.status.as_u16(), e.message),
    };
    let detail = r.as_ref().map(|v| v.to_string()).unwrap_or_default();
    s.auth().audit(who.audit("system.reload", "config", outcome, detail)).await;
    r.map(Json)
}

/// `GET /api/v1/system/config` (admin): the configuration as loaded (after
/// the last reload), every secret shown as `***`; 503 `config_unavailable`
/// when the binary gave none.
pub async fn loaded_config(State(s): State<AppState>) -> ApiResult<Response> {
    let json = HeaderValue::from_static("application/json");
    s.loaded().text().map(|t| ([(header::CONTENT_TYPE, json)], t.to_string()).into_response()).ok_or_else(|| {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "config_unavailable",
            "this gateway does not show its configuration",
        )
    })
}

/// `GET /api/v1/system/info`.
pub async fn info(State(s): State<AppState>) -> Json<JsonValue> {
    let bus = s.bus().stats();
    let wal = bus.wal.as_ref().map(|w| {
        json!({
            "first_seq": w.first_seq, "next_seq": w.next_seq, "durable_seq": w.durable_seq,
            "segments": w.segments, "disk_bytes": w.disk_bytes, "pending_bytes": w.pending_bytes,
            "dropped_seqs": w.dropped_seqs, "io_errors": w.io_errors, "failing": w.last_error.is_some(),
        })
    });
    Json(json!({
        "version": env!("CARGO_PKG_VERSION"),
        "uptime_s": s.started().elapsed().as_secs(),
        "preset": s.preset(),
        "persistence": s.bus().settings().persistence,
        "bus": bus,
        "wal": wal,
        "devices": s.devices().len(),
        "tags_with_values": s.cache().len(),
        "ws_connections": s.ws().connections(),
    }))
}

fn device_json(s: &AppState, dev: &DeviceConfig, source: Source) -> JsonValue {
    // Passwords and the like are `***`; a PUT that sends `***` back keeps them.
    let mut v = dev.to_public_json();
    if let JsonValue::Object(m) = &mut v {
        m.insert("source".into(), json!(source));
        let status = s.devices().manager().status(&dev.name).map(|st| st.snapshot());
        m.insert("status".into(), json!(status));
    }
    v
}

fn parse_device(body: JsonValue) -> ApiResult<DeviceConfig> {
    DeviceConfig::from_json(body).map_err(|e| ApiError::bad_request("invalid_field", e.to_string()))
}

/// `GET /api/v1/devices`.
pub async fn list_devices(State(s): State<AppState>) -> Json<JsonValue> {
    let devices: Vec<JsonValue> = s.devices().list().iter().map(|(d, src)| device_json(&s, d, *src)).collect();
    Json(json!({ "devices": devices }))
}

/// `POST /api/v1/devices`: 201 with a `Location`.
pub async fn create_device(
    State(s): State<AppState>,
    Extension(who): Extension<Principal>,
    ApiJson(body): ApiJson<JsonValue>,
) -> ApiResult<Response> {
    let dev = parse_device(body)?;
    let name = dev.name.clone();
    let (devices, d) = (s.devices_arc(), dev.clone());
    change(&s, &who, "device.create", &name, device_detail(&dev), async move { devices.create(d).await }).await?;
    let mut resp = (StatusCode::CREATED, Json(device_json(&s, &dev, Source::Api))).into_response();
    if let Ok(loc) = HeaderValue::from_str(&format!("/api/v1/devices/{name}")) {
        resp.headers_mut().insert(header::LOCATION, loc);
    }
    Ok(resp)
}

/// `GET /api/v1/devices/{name}`.
pub async fn get_device(State(s): State<AppState>, Path(name): Path<String>) -> ApiResult<Json<JsonValue>> {
    let (d, src) = s.devices().get(&name).ok_or_else(|| ApiError::not_found("device", &name))?;
    Ok(Json(device_json(&s, &d, src)))
}

/// `PUT /api/v1/devices/{name}`: replaces (or creates) the device.
pub async fn put_device(
    State(s): State<AppState>,
    Extension(who): Extension<Principal>,
    Path(name): Path<String>,
    ApiJson(mut body): ApiJson<JsonValue>,
) -> ApiResult<Response> {
    name_from_path(&mut body, &name, "device")?;
    if let Some((old, _)) = s.devices().get(&name) {
        old.restore_secrets(&mut body);
    }
    let dev = parse_device(body)?;
    let (devices, d) = (s.devices_arc(), dev.clone());
    let detail = device_detail(&dev);
    let created = change(&s, &who, "device.replace", &name, detail, async move { devices.replace(d).await }).await?;
    let status = if created { StatusCode::CREATED } else { StatusCode::OK };
    Ok((status, Json(device_json(&s, &dev, Source::Api))).into_response())
}

/// `DELETE /api/v1/devices/{name}`: 204.
pub async fn delete_device(
    State(s): State<AppState>,
    Extension(who): Extension<Principal>,
    Path(name): Path<String>,
) -> ApiResult<StatusCode> {
    let devices = s.devices_arc();
    let target = name.clone();
    change(&s, &who, "device.delete", &target, json!({}), async move { devices.delete(&name).await }).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `GET /api/v1/devices/{name}/tags`.
pub async fn list_tags(State(s): State<AppState>, Path(name): Path<String>) -> ApiResult<Json<JsonValue>> {
    let (d, _) = s.devices().get(&name).ok_or_else(|| ApiError::not_found("device", &name))?;
    Ok(Json(json!({ "tags": d.tags.iter().map(TagConfig::to_json).collect::<Vec<_>>() })))
}

fn parse_tag(s: &AppState, device: &str, body: JsonValue) -> ApiResult<TagConfig> {
    let (d, _) = s.devices().get(device).ok_or_else(|| ApiError::not_found("device", device))?;
    TagConfig::from_json(&d.params, body).map_err(|e| ApiError::bad_request("invalid_field", e.to_string()))
}

/// `POST /api/v1/devices/{name}/tags`: 201; 409 if the tag exists.
pub async fn create_tag(
    State(s): State<AppState>,
    Extension(who): Extension<Principal>,
    Path(name): Path<String>,
    ApiJson(body): ApiJson<JsonValue>,
) -> ApiResult<Response> {
    let tag = parse_tag(&s, &name, body)?;
    let json = tag.to_json();
    let devices = s.devices_arc();
    let target = format!("{name}.{}", tag.name);
    change(&s, &who, "tag.create", &target, json!({}), async move { devices.create_tag(&name, tag).await }).await?;
    Ok((StatusCode::CREATED, Json(json)).into_response())
}

/// `GET /api/v1/devices/{name}/tags/{tag}`.
pub async fn get_tag(
    State(s): State<AppState>,
    Path((name, tag)): Path<(String, String)>,
) -> ApiResult<Json<JsonValue>> {
    let (d, _) = s.devices().get(&name).ok_or_else(|| ApiError::not_found("device", &name))?;
    let t = d.tag(&tag).ok_or_else(|| ApiError::not_found("tag", &format!("{name}.{tag}")))?;
    Ok(Json(t.to_json()))
}

/// `PUT /api/v1/devices/{name}/tags/{tag}`.
pub async fn put_tag(
    State(s): State<AppState>,
    Extension(who): Extension<Principal>,
    Path((name, tag)): Path<(String, String)>,
    ApiJson(mut body): ApiJson<JsonValue>,
) -> ApiResult<Response> {
    name_from_path(&mut body, &tag, "tag")?;
    let t = parse_tag(&s, &name, body)?;
    let json = t.to_json();
    let devices = s.devices_arc();
    let target = format!("{name}.{}", t.name);
    let created =
        change(&s, &who, "tag.replace", &target, json!({}), async move { devices.upsert_tag(&name, t).await }).await?;
    Ok((if created { StatusCode::CREATED } else { StatusCode::OK }, Json(json)).into_response())
}

/// `DELETE /api/v1/devices/{name}/tags/{tag}`: 204.
pub async fn delete_tag(
    State(s): State<AppState>,
    Extension(who): Extension<Principal>,
    Path((name, tag)): Path<(String, String)>,
) -> ApiResult<StatusCode> {
    let devices = s.devices_arc();
    let target = format!("{name}.{tag}");
    change(&s, &who, "tag.delete", &target, json!({}), async move { devices.delete_tag(&name, &tag).await }).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Query of `GET /api/v1/devices/{name}/browse`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BrowseQuery {
    /// The node whose children to list, in the driver's notation (default:
    /// where the driver starts, the Objects folder for OPC UA).
    node: Option<String>,
}

fn browse_error(e: BrowseError) -> ApiError {
    match e {
        BrowseError::Invalid(m) => ApiError::bad_request("invalid_node", m),
        BrowseError::NotFound(m) => ApiError::new(StatusCode::NOT_FOUND, "not_found", m),
        BrowseError::Device(m) => ApiError::new(StatusCode::BAD_GATEWAY, "device_error", m),
    }
}

fn not_supported(dev: &DeviceConfig, what: &str) -> ApiError {
    ApiError::bad_request("not_supported", format!("driver {:?} of device {:?} cannot {what}", dev.driver(), dev.name))
}

/// `GET /api/v1/devices/{name}/browse?node=...`: the children of a node of
/// the device, asked of the device over a connection of its own. 400
/// `not_supported` for a driver that cannot browse; 502 if the device
/// cannot be reached.
pub async fn browse(
    State(s): State<AppState>,
    Path(name): Path<String>,
    q: Result<Query<BrowseQuery>, axum::extract::rejection::QueryRejection>,
) -> ApiResult<Json<JsonValue>> {
    let Query(q) = q.map_err(|e| ApiError::bad_request("invalid_query", e.body_text()))?;
    let (dev, _) = s.devices().get(&name).ok_or_else(|| ApiError::not_found("device", &name))?;
    let env = s.devices().manager().env();
    let fut = dev.params.browse(dev.clone(), q.node, env).ok_or_else(|| not_supported(&dev, "browse"))?;
    Ok(Json(fut.await.map_err(browse_error)?))
}

/// Body of `POST /api/v1/devices/{name}/import`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ImportBody {
    /// The points to import, in the driver's form (OPC UA:
    /// `{"node_id", "name"?, "writable"?}`).
    nodes: Vec<JsonValue>,
}

/// `POST /api/v1/devices/{name}/import`: turns chosen points of the device
/// (from a browse) into tags, asking the device what it must know of each,
/// and adds them to the device (its driver restarts). 201 with the tags; 409
/// if a tag of that name exists.
pub async fn import(
    State(s): State<AppState>,
    Extension(who): Extension<Principal>,
    Path(name): Path<String>,
    ApiJson(body): ApiJson<ImportBody>,
) -> ApiResult<Response> {
    let (dev, _) = s.devices().get(&name).ok_or_else(|| ApiError::not_found("device", &name))?;
    s.devices().owned_by_file(&name)?;
    let env = s.devices().manager().env();
    let fut = dev.params.import(dev.clone(), body.nodes, env).ok_or_else(|| not_supported(&dev, "import"))?;
    let found = fut.await.map_err(browse_error)?;
    let tags = found
        .into_iter()
        .enumerate()
        .map(|(i, t)| {
            TagConfig::from_json(&dev.params, t)
                .map_err(|e| ApiError::bad_request("invalid_field", e.under(&format!("nodes[{i}]")).to_string()))
        })
        .collect::<ApiResult<Vec<TagConfig>>>()?;
    let json: Vec<JsonValue> = tags.iter().map(TagConfig::to_json).collect();
    let devices = s.devices_arc();
    let detail = json!({ "tags": tags.iter().map(|t| t.name.clone()).collect::<Vec<_>>() });
    let target = name.clone();
    change(&s, &who, "device.import", &target, detail, async move { devices.import_tags(&name, tags).await }).await?;
    Ok((StatusCode::CREATED, Json(json!({ "tags": json }))).into_response())
}

/// Query of `GET /api/v1/values`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ValuesQuery {
    /// Tag pattern (default `*`).
    pattern: Option<String>,
}

/// `GET /api/v1/values?pattern=line1.*`.
pub async fn values(
    State(s): State<AppState>,
    q: Result<Query<ValuesQuery>, axum::extract::rejection::QueryRejection>,
) -> ApiResult<Json<JsonValue>> {
    let Query(q) = q.map_err(|e| ApiError::bad_request("invalid_query", e.body_text()))?;
    let pattern = match q.pattern.as_deref() {
        None | Some("") => TagPattern::all(),
        Some(p) => TagPattern::new(p).map_err(|e| ApiError::bad_request("invalid_pattern", e.to_string()))?,
    };
    let values = s.cache().matching(&pattern);
    Ok(Json(json!({ "count": values.len(), "values": values })))
}

/// `GET /api/v1/values/{tag}`: `{"tag","value","quality","ts"}`.
pub async fn value(State(s): State<AppState>, Path(tag): Path<String>) -> ApiResult<Json<JsonValue>> {
    let id = TagId::new(&tag).map_err(|e| ApiError::bad_request("invalid_tag", e.to_string()))?;
    match s.cache().get(id.as_str()) {
        Some(f) => Ok(Json(json!(f))),
        None if s.devices().tag(&id).is_some() => Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "no_value",
            format!("tag {tag:?} exists but has no value yet (is its device running?)"),
        )),
        None => Err(ApiError::not_found("tag", &tag)),
    }
}

/// Body of `POST /api/v1/commands`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CommandBody {
    /// The tag to write, `device.point`; it must be configured and writable.
    tag: String,
    /// The value to write; the driver converts it to the tag's type or the
    /// command is refused with 400.
    value: Value,
    /// How long to wait for the device (default 5000 ms, at most the request timeout).
    timeout_ms: Option<u64>,
}

/// `POST /api/v1/commands`: waits for the driver's acknowledgement. 200 when
/// the device took the value; 404 unknown tag; 409 not writable; 504 no answer
/// in time; 400 the driver refused the value; 502 the device reported an
/// error; 503 the device's driver is not running.
pub async fn command(
    State(s): State<AppState>,
    Extension(who): Extension<Principal>,
    ApiJson(body): ApiJson<CommandBody>,
) -> ApiResult<Response> {
    let id = TagId::new(&body.tag).map_err(|e| ApiError::bad_request("invalid_tag", e.to_string()))?;
    let tag = s.devices().tag(&id).ok_or_else(|| ApiError::not_found("tag", &body.tag))?;
    if !tag.writable {
        return Err(ApiError::conflict("not_writable", format!("tag {:?} is not writable", body.tag)));
    }
    let limit = s.cfg().request_timeout_s.saturating_mul(1000).saturating_sub(500).max(1);
    let timeout = Duration::from_millis(body.timeout_ms.unwrap_or(5000).clamp(1, limit));
    // The origin names who asked and from where; the command audit records it.
    let origin = format!("{}@{}", who.actor, who.source);
    let ack = s.bus().command(id, body.value, &origin, timeout).await;
    let detail = |status: StatusCode, code: &'static str| {
        let msg = if ack.message.is_empty() {
            format!("command {} on {}: {:?}", ack.id, ack.tag, ack.status)
        } else {
            ack.message.to_string()
        };
        ApiError::new(status, code, msg)
    };
    match ack.status {
        CmdStatus::Ok => Ok((StatusCode::OK, Json(json!(ack))).into_response()),
        CmdStatus::Timeout => Err(detail(StatusCode::GATEWAY_TIMEOUT, "timeout")),
        CmdStatus::Rejected => Err(detail(StatusCode::BAD_REQUEST, "rejected")),
        CmdStatus::Failed => Err(detail(StatusCode::BAD_GATEWAY, "device_error")),
        CmdStatus::NoRoute => Err(detail(StatusCode::SERVICE_UNAVAILABLE, "device_unavailable")),
    }
}

/// `GET /metrics`: OpenMetrics text to a scraper that asks for it (as
/// Prometheus does), the classic Prometheus text format (0.0.4) to any other
/// client (older scrapers, `promtool check metrics`, `curl`).
pub async fn metrics(State(s): State<AppState>, headers: axum::http::HeaderMap) -> Response {
    s.bus().refresh_gauges();
    s.metrics().refresh_process();
    let mut text = String::with_capacity(16 << 10);
    if let Err(e) = prometheus_client::encoding::text::encode(&mut text, s.registry()) {
        return ApiError::internal(e).into_response();
    }
    let openmetrics = headers
        .get(header::ACCEPT)
        .and_then(|a| a.to_str().ok())
        .is_some_and(|a| a.contains("application/openmetrics-text"));
    if openmetrics {
        ([(header::CONTENT_TYPE, "application/openmetrics-text; version=1.0.0; charset=utf-8")], text).into_response()
    } else {
        (
            [(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")],
            crate::metrics::to_prometheus_text(&text),
        )
            .into_response()
    }
}

/// `GET /api/openapi.json`.
pub async fn openapi() -> Response {
    ([(header::CONTENT_TYPE, "application/json")], crate::OPENAPI).into_response()
}

/// Read buffer per WebSocket connection. Clients send subscriptions of a
/// few hundred bytes; a larger message is read in more than one piece (the
/// buffer grows for it, up to [`WS_MAX_MESSAGE`]), so every idle connection
/// need not hold 4 KiB for the rare one.
pub(crate) const WS_READ_BUFFER: usize = 1024;
/// Largest message a WebSocket client may send (a subscription with
/// hundreds of patterns still fits).
pub const WS_MAX_MESSAGE: usize = 64 * 1024;

/// `GET /ws`: upgrades (RFC 6455 §4.2), or 503 at `ws_max_connections`.
/// The handshake is done here rather than by axum's extractor so that the
/// hub gets hyper's upgraded connection itself and, on plain TCP, the socket
/// under it (see `ws::Outbox`).
pub async fn ws(State(s): State<AppState>, mut req: axum::extract::Request) -> Response {
    let headers = req.headers();
    let has_token = |name: header::HeaderName, token: &str| {
        headers
            .get_all(name)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .any(|t| t.trim().eq_ignore_ascii_case(token))
    };
    let refuse = |why: &str| ApiError::bad_request("not_websocket", why.to_owned()).into_response();
    if !has_token(header::CONNECTION, "upgrade") {
        return refuse("Connection header did not include 'upgrade'");
    }
    if !has_token(header::UPGRADE, "websocket") {
        return refuse("`Upgrade` header did not include 'websocket'");
    }
    if headers.get(header::SEC_WEBSOCKET_VERSION).is_none_or(|v| v.as_bytes() != b"13") {
        return refuse("`Sec-WebSocket-Version` header did not include '13'");
    }
    let Some(key) = headers.get(header::SEC_WEBSOCKET_KEY) else {
        return refuse("`Sec-WebSocket-Key` header missing");
    };
    let accept = tokio_tungstenite::tungstenite::handshake::derive_accept_key(key.as_bytes());
    // A browser that offered subprotocols (the web UI: `egw` and `bearer.TOKEN`) fails
    // the handshake unless one is selected; `egw` is, so the token is never echoed.
    let egw = has_token(header::SEC_WEBSOCKET_PROTOCOL, "egw");
    let Some(on_upgrade) = req.extensions_mut().remove::<hyper::upgrade::OnUpgrade>() else {
        return refuse("the connection cannot be upgraded");
    };
    let Some(slot) = s.ws().try_acquire() else {
        let mut r = ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "too_many_connections",
            format!(
                "the gateway serves at most {} WebSocket connections (ws_max_connections)",
                s.cfg().ws_max_connections
            ),
        )
        .into_response();
        r.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from_static("5"));
        return r;
    };
    let hub = s.ws().clone();
    tokio::spawn(async move {
        match on_upgrade.await {
            Ok(upgraded) => hub.serve_upgraded(upgraded, slot).await,
            Err(e) => tracing::debug!(error = %e, "WebSocket upgrade failed."),
        }
    });
    let mut r = StatusCode::SWITCHING_PROTOCOLS.into_response();
    let h = r.headers_mut();
    h.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    if let Ok(v) = HeaderValue::from_str(&accept) {
        h.insert(header::SEC_WEBSOCKET_ACCEPT, v);
    }
    if egw {
        h.insert(header::SEC_WEBSOCKET_PROTOCOL, HeaderValue::from_static("egw"));
    }
    r
}

/// Unknown route: 404 JSON.
pub async fn not_found() -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, "not_found", "no such endpoint; see /api/openapi.json")
}

/// Known route, wrong method: 405 JSON.
pub async fn method_not_allowed() -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        "this endpoint does not take that method; see /api/openapi.json",
    )
}
