//! `/api/v1/alarms`: the alarms needing attention, acknowledging and
//! shelving them (operators), and the rules (admins). Rules come from three
//! places: the config file (read-only here), the built-in system rules
//! (read-only, thresholds in `[alarms.system]`) and the API (kept in the
//! database). [`Alarms`] merges them and hands the whole set to the service
//! whenever one changes. Every write is audited.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::extract::{Extension, Path, Query, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use gateway_alarms::{AlarmService, EngineError, Priority, RuleConfig, ServiceError};
use gateway_model::{AlarmState, Span, TagPattern};
use gateway_store::{NewAuditEntry, Store};
use serde::Deserialize;
use serde_json::{Value as JsonValue, json};
use tokio::sync::Mutex;

use crate::error::{ApiError, ApiJson};
use crate::{AppState, Principal};

type ApiResult<T> = Result<T, ApiError>;

/// Rule names starting with this are the gateway's own.
pub const SYSTEM_PREFIX: &str = "system.";
/// The longest an alarm may be shelved in one go.
pub const MAX_SHELVE: Duration = Duration::from_secs(7 * 86_400);
/// Most ids one bulk acknowledgement takes.
pub const MAX_ACK_IDS: usize = 1000;
/// Most rules the API keeps (besides the file's).
pub const MAX_API_RULES: usize = 10_000;

/// Where a rule comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RuleSource {
    /// `[[alarms.rules]]`.
    Config,
    /// Built in (`[alarms.system]`).
    System,
    /// Made over the API, kept in the database.
    Api,
}

/// The rules and the running service.
pub struct Alarms {
    service: AlarmService,
    store: Store,
    /// The file's and the built-in rules; replaced by a reload.
    fixed: std::sync::RwLock<Arc<Vec<(RuleConfig, RuleSource)>>>,
    api: Mutex<BTreeMap<String, RuleConfig>>,
}

impl std::fmt::Debug for Alarms {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Alarms").field("fixed", &self.fixed().len()).finish_non_exhaustive()
    }
}

fn stopped(e: ServiceError) -> ApiError {
    ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "alarms_stopped", e.to_string())
}

fn engine_error(e: EngineError) -> ApiError {
    match e {
        EngineError::NotFound(id) => ApiError::not_found("alarm", &id),
        EngineError::Refused(a) => ApiError::conflict("wrong_state", a.to_string()),
    }
}

impl Alarms {
    /// Loads the API's rules from `store` (a stored rule that no longer
    /// checks, or clashes with a file rule, is reported and skipped) and
    /// gives the service the whole set.
    pub async fn load(
        service: AlarmService,
        store: Store,
        file_rules: Vec<RuleConfig>,
        system_rules: Vec<RuleConfig>,
    ) -> Result<Arc<Alarms>, gateway_store::StoreError> {
        let mut fixed: Vec<(RuleConfig, RuleSource)> =
            file_rules.into_iter().map(|r| (r, RuleSource::Config)).collect();
        fixed.extend(system_rules.into_iter().map(|r| (r, RuleSource::System)));
        let mut api = BTreeMap::new();
        for (name, body) in store.list_alarm_rules().await? {
            match serde_json::from_str::<RuleConfig>(&body).map_err(|e| e.to_string()).and_then(|r| {
                r.validate().map_err(|e| e.to_string())?;
                Ok(r)
            }) {
                Ok(r) if fixed.iter().any(|(f, _)| f.name == r.name) => tracing::warn!(
                    rule = %name,
                    "An alarm rule made over the API has the name of a rule in the config file; the file's rule wins."
                ),
                Ok(r) => {
                    api.insert(name, r);
                }
                Err(e) => {
                    tracing::error!(rule = %name, error = %e, "A stored alarm rule cannot be read; it is skipped.")
                }
            }
        }
        let a =
            Arc::new(Alarms { service, store, fixed: std::sync::RwLock::new(Arc::new(fixed)), api: Mutex::new(api) });
        let api = a.api.lock().await;
        a.apply(&api).await.map_err(|e| gateway_store::StoreError::Unavailable(e.message))?;
        drop(api);
        Ok(a)
    }

    /// The service.
    pub fn service(&self) -> &AlarmService {
        &self.service
    }

    fn fixed(&self) -> Arc<Vec<(RuleConfig, RuleSource)>> {
        self.fixed.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// A reload: the file's rules and the built-in ones as they are now.
    /// Alarms of rules that remain keep their state; an API rule now named in
    /// the file gives way to it (as at start). Returns the names of the file
    /// rules added and removed.
    pub async fn reload_fixed(
        &self,
        file_rules: Vec<RuleConfig>,
        system_rules: Vec<RuleConfig>,
    ) -> ApiResult<(Vec<String>, Vec<String>)> {
        let api = self.api.lock().await;
        let old = self.fixed();
        let mut fixed: Vec<(RuleConfig, RuleSource)> =
            file_rules.into_iter().map(|r| (r, RuleSource::Config)).collect();
        fixed.extend(system_rules.into_iter().map(|r| (r, RuleSource::System)));
        let names = |v: &[(RuleConfig, RuleSource)]| -> Vec<String> {
            v.iter().filter(|(_, s)| *s == RuleSource::Config).map(|(r, _)| r.name.clone()).collect()
        };
        let (before, after) = (names(&old), names(&fixed));
        let added = after.iter().filter(|n| !before.contains(n)).cloned().collect();
        let removed = before.iter().filter(|n| !after.contains(n)).cloned().collect();
        *self.fixed.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(fixed);
        self.apply(&api).await?;
        Ok((added, removed))
    }

    async fn apply(&self, api: &BTreeMap<String, RuleConfig>) -> ApiResult<()> {
        let fixed = self.fixed();
        let mut rules = Vec::with_capacity(fixed.len() + api.len());
        // An API rule named like a file rule gives way to it.
        let shadowed = |r: &RuleConfig| fixed.iter().any(|(f, _)| f.name == r.name);
        for r in fixed.iter().map(|(r, _)| r).chain(api.values().filter(|r| !shadowed(r))) {
            // Checked when they were accepted; a failure here is a bug.
            rules.push(r.compile().map_err(|e| ApiError::internal(format!("rule {}: {e}", r.name)))?);
        }
        self.service.set_rules(rules).await.map_err(stopped)
    }

    fn rules_json(&self, api: &BTreeMap<String, RuleConfig>) -> Vec<JsonValue> {
        self.fixed()
            .iter()
            .map(|(r, s)| (r, *s))
            .chain(api.values().map(|r| (r, RuleSource::Api)))
            .map(|(r, s)| rule_json(r, s))
            .collect()
    }
}

fn rule_json(r: &RuleConfig, source: RuleSource) -> JsonValue {
    let mut v = json!(r);
    if let JsonValue::Object(m) = &mut v {
        m.insert("source".into(), json!(source));
    }
    v
}

fn alarms(s: &AppState) -> ApiResult<Arc<Alarms>> {
    s.alarms().cloned().ok_or_else(|| {
        ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "alarms_disabled", "alarms are off ([alarms] enabled = false)")
    })
}

async fn audit(s: &AppState, who: &Principal, action: &str, target: &str, outcome: String, detail: JsonValue) {
    let entry: NewAuditEntry = who.audit(action, target, outcome, detail.to_string());
    s.auth().audit(entry).await;
}

fn outcome<T>(r: &ApiResult<T>) -> String {
    match r {
        Ok(_) => "ok".into(),
        Err(e) => format!("refused ({}): {}", e.status.as_u16(), e.message),
    }
}

/// `GET /api/v1/alarms/active`: the alarms needing attention, highest
/// priority first, newest first. Served from a list the service keeps
/// ready, without a round trip to it.
pub async fn active(State(s): State<AppState>) -> ApiResult<Response> {
    let a = alarms(&s)?;
    let list = a.service().active();
    Ok(([(header::CONTENT_TYPE, "application/json")], list.json.clone()).into_response())
}

/// Query of `GET /api/v1/alarms`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    /// Only alarms in this state.
    state: Option<AlarmState>,
    /// Only alarms of at least this priority.
    priority: Option<Priority>,
    /// Only alarms whose tag matches.
    tag: Option<String>,
}

/// `GET /api/v1/alarms?state&priority&tag`: every alarm (normal ones too).
pub async fn list(
    State(s): State<AppState>,
    q: Result<Query<ListQuery>, axum::extract::rejection::QueryRejection>,
) -> ApiResult<Json<JsonValue>> {
    let Query(q) = q.map_err(|e| ApiError::bad_request("invalid_query", e.body_text()))?;
    let pattern = match q.tag.as_deref() {
        None | Some("") => None,
        Some(p) => Some(TagPattern::new(p).map_err(|e| ApiError::bad_request("invalid_pattern", e.to_string()))?),
    };
    let a = alarms(&s)?;
    let all = a.service().query(|e| e.all()).await.map_err(stopped)?;
    let list: Vec<_> = all
        .into_iter()
        .filter(|v| q.state.is_none_or(|st| v.state == st))
        .filter(|v| q.priority.is_none_or(|p| v.priority >= p))
        .filter(|v| pattern.as_ref().is_none_or(|p| p.matches(&v.tag)))
        .collect();
    Ok(Json(json!({ "count": list.len(), "alarms": list })))
}

/// `GET /api/v1/alarms/{id}`.
pub async fn get(State(s): State<AppState>, Path(id): Path<String>) -> ApiResult<Json<JsonValue>> {
    let a = alarms(&s)?;
    let key = id.clone();
    let v = a.service().query(move |e| e.get(&key)).await.map_err(stopped)?;
    v.map(|v| Json(json!(v))).ok_or_else(|| ApiError::not_found("alarm", &id))
}

/// Body of an acknowledgement or an unshelving.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CommentBody {
    /// Why, for the journal (at most 1,000 bytes).
    #[serde(default)]
    comment: Option<String>,
}

/// Body of `POST /api/v1/alarms/ack`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AckBody {
    /// The alarms to acknowledge (at most 1,000).
    ids: Vec<String>,
    /// Why, for the journal.
    #[serde(default)]
    comment: Option<String>,
}

const MAX_COMMENT: usize = 1000;

/// The body of an acknowledgement or an unshelving is optional: none, or
/// `{"comment": "..."}`.
fn comment_body(bytes: &[u8]) -> ApiResult<CommentBody> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(CommentBody::default());
    }
    serde_json::from_slice(bytes).map_err(|e| ApiError::bad_request("invalid_json", e.to_string()))
}

fn check_comment(c: &Option<String>, field: &str) -> ApiResult<()> {
    match c {
        Some(c) if c.len() > MAX_COMMENT => Err(ApiError::bad_request(
            "invalid_field",
            format!("{field}: is {} bytes long, the limit is {MAX_COMMENT}", c.len()),
        )),
        _ => Ok(()),
    }
}

/// Who did it, as the journal shows it: `user:alice`, `token:scada`.
fn user(who: &Principal) -> &str {
    &who.actor
}

/// `POST /api/v1/alarms/{id}/ack`: 200; 404 unknown; 409 nothing to acknowledge.
pub async fn ack_one(
    State(s): State<AppState>,
    Extension(who): Extension<Principal>,
    Path(id): Path<String>,
    body: axum::body::Bytes,
) -> ApiResult<Json<JsonValue>> {
    let body = comment_body(&body)?;
    check_comment(&body.comment, "comment")?;
    let a = alarms(&s)?;
    let r = a
        .service()
        .ack(vec![id.clone()], user(&who), body.comment.as_deref())
        .await
        .map_err(stopped)
        .and_then(|mut v| v.pop().unwrap_or(Err(EngineError::NotFound(id.clone()))).map_err(engine_error));
    audit(&s, &who, "alarm.ack", &id, outcome(&r), json!({ "comment": body.comment })).await;
    r?;
    let view = a.service().query(move |e| e.get(&id)).await.map_err(stopped)?;
    Ok(Json(json!(view)))
}

/// `POST /api/v1/alarms/ack` `{"ids":[...],"comment"}`: acknowledges many;
/// 200 with one outcome per id (those that could not be are listed with why).
pub async fn ack_many(
    State(s): State<AppState>,
    Extension(who): Extension<Principal>,
    ApiJson(body): ApiJson<AckBody>,
) -> ApiResult<Json<JsonValue>> {
    check_comment(&body.comment, "comment")?;
    if body.ids.is_empty() || body.ids.len() > MAX_ACK_IDS {
        return Err(ApiError::bad_request("invalid_field", format!("ids: give 1 to {MAX_ACK_IDS} alarm ids")));
    }
    let a = alarms(&s)?;
    let results = a.service().ack(body.ids.clone(), user(&who), body.comment.as_deref()).await.map_err(stopped)?;
    let mut acked = Vec::new();
    let mut refused = Vec::new();
    for (id, r) in body.ids.iter().zip(results) {
        match r {
            Ok(()) => acked.push(id.clone()),
            Err(e) => refused.push(json!({ "id": id, "error": engine_error(e).message })),
        }
    }
    let outcome = format!("ok: {} acknowledged, {} refused", acked.len(), refused.len());
    audit(
        &s,
        &who,
        "alarm.ack",
        &format!("{} alarms", body.ids.len()),
        outcome,
        json!({ "ids": body.ids, "comment": body.comment }),
    )
    .await;
    Ok(Json(json!({ "acked": acked, "refused": refused })))
}

/// Body of `POST /api/v1/alarms/{id}/shelve`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ShelveBody {
    /// How long (`30m`, `8h`; at most 7d).
    duration: Span,
    /// Why (required).
    reason: String,
}

/// `POST /api/v1/alarms/{id}/shelve`: 200; 400 no reason or too long; 404; 409 already shelved.
pub async fn shelve(
    State(s): State<AppState>,
    Extension(who): Extension<Principal>,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<ShelveBody>,
) -> ApiResult<Json<JsonValue>> {
    if body.reason.trim().is_empty() {
        return Err(ApiError::bad_request("invalid_field", "reason: say why the alarm is shelved"));
    }
    check_comment(&Some(body.reason.clone()), "reason")?;
    let d = body.duration.duration();
    if d.is_zero() || d > MAX_SHELVE {
        return Err(ApiError::bad_request("invalid_field", "duration: must be above 0 and at most 7d"));
    }
    let a = alarms(&s)?;
    let r = a
        .service()
        .shelve(id.clone(), user(&who), &body.reason, d)
        .await
        .map_err(stopped)
        .and_then(|r| r.map_err(engine_error));
    let detail = json!({ "duration": body.duration, "reason": body.reason });
    audit(&s, &who, "alarm.shelve", &id, outcome(&r), detail).await;
    r?;
    let view = a.service().query(move |e| e.get(&id)).await.map_err(stopped)?;
    Ok(Json(json!(view)))
}

/// `POST /api/v1/alarms/{id}/unshelve`: 200; 404; 409 not shelved.
pub async fn unshelve(
    State(s): State<AppState>,
    Extension(who): Extension<Principal>,
    Path(id): Path<String>,
    body: axum::body::Bytes,
) -> ApiResult<Json<JsonValue>> {
    let body = comment_body(&body)?;
    check_comment(&body.comment, "comment")?;
    let a = alarms(&s)?;
    let r = a
        .service()
        .unshelve(id.clone(), user(&who), body.comment.as_deref())
        .await
        .map_err(stopped)
        .and_then(|r| r.map_err(engine_error));
    audit(&s, &who, "alarm.unshelve", &id, outcome(&r), json!({ "comment": body.comment })).await;
    r?;
    let view = a.service().query(move |e| e.get(&id)).await.map_err(stopped)?;
    Ok(Json(json!(view)))
}

/// `GET /api/v1/alarms/rules`: every rule with its `source` (`config`, `system`, `api`).
pub async fn list_rules(State(s): State<AppState>) -> ApiResult<Json<JsonValue>> {
    let a = alarms(&s)?;
    let api = a.api.lock().await;
    Ok(Json(json!({ "rules": a.rules_json(&api) })))
}

/// `GET /api/v1/alarms/rules/{name}`.
pub async fn get_rule(State(s): State<AppState>, Path(name): Path<String>) -> ApiResult<Json<JsonValue>> {
    let a = alarms(&s)?;
    if let Some((r, src)) = a.fixed().iter().find(|(r, _)| r.name == name) {
        return Ok(Json(rule_json(r, *src)));
    }
    let api = a.api.lock().await;
    api.get(&name).map(|r| Json(rule_json(r, RuleSource::Api))).ok_or_else(|| ApiError::not_found("alarm rule", &name))
}

fn parse_rule(body: JsonValue) -> ApiResult<RuleConfig> {
    let r: RuleConfig = serde_path_to_error::deserialize(body).map_err(|e| {
        let path = e.path().to_string();
        ApiError::bad_request(
            "invalid_field",
            if path == "." { e.into_inner().to_string() } else { format!("{path}: {}", e.into_inner()) },
        )
    })?;
    r.validate().map_err(|e| ApiError::bad_request("invalid_field", e.to_string()))?;
    if r.name.starts_with(SYSTEM_PREFIX) {
        return Err(ApiError::bad_request(
            "invalid_field",
            "name: names starting with \"system.\" are the gateway's own rules",
        ));
    }
    Ok(r)
}

/// Stores and applies `rule`; `create`: refuse if it exists. Returns whether it was created.
async fn put_rule(s: &AppState, who: &Principal, rule: RuleConfig, create: bool) -> ApiResult<bool> {
    let a = alarms(s)?;
    let name = rule.name.clone();
    let action = if create { "alarm_rule.create" } else { "alarm_rule.replace" };
    let r = async {
        if a.fixed().iter().any(|(r, _)| r.name == name) {
            return Err(ApiError::conflict(
                "read_only",
                format!("alarm rule {name:?} comes from the config file or is built in; change it there"),
            ));
        }
        let mut api = a.api.lock().await;
        let exists = api.contains_key(&name);
        if create && exists {
            return Err(ApiError::conflict("exists", format!("alarm rule {name:?} exists; PUT replaces it")));
        }
        if !exists && api.len() >= MAX_API_RULES {
            return Err(ApiError::conflict(
                "too_many_rules",
                format!("the API keeps at most {MAX_API_RULES} alarm rules"),
            ));
        }
        let body = serde_json::to_string(&rule).map_err(ApiError::internal)?;
        let created = a.store.upsert_alarm_rule(&name, &body).await?;
        api.insert(name.clone(), rule.clone());
        a.apply(&api).await?;
        Ok(created)
    }
    .await;
    audit(s, who, action, &name, outcome(&r), json!({ "kind": rule.kind.as_str(), "tag": rule.tag })).await;
    r
}

/// `POST /api/v1/alarms/rules`: 201 with a `Location`; 409 if it exists.
pub async fn create_rule(
    State(s): State<AppState>,
    Extension(who): Extension<Principal>,
    ApiJson(body): ApiJson<JsonValue>,
) -> ApiResult<Response> {
    let rule = parse_rule(body)?;
    let name = rule.name.clone();
    put_rule(&s, &who, rule.clone(), true).await?;
    let mut resp = (StatusCode::CREATED, Json(rule_json(&rule, RuleSource::Api))).into_response();
    if let Ok(loc) = HeaderValue::from_str(&format!("/api/v1/alarms/rules/{name}")) {
        resp.headers_mut().insert(header::LOCATION, loc);
    }
    Ok(resp)
}

/// `PUT /api/v1/alarms/rules/{name}`: replaces or creates (201).
pub async fn replace_rule(
    State(s): State<AppState>,
    Extension(who): Extension<Principal>,
    Path(name): Path<String>,
    ApiJson(mut body): ApiJson<JsonValue>,
) -> ApiResult<Response> {
    crate::routes::name_from_path(&mut body, &name, "rule")?;
    let rule = parse_rule(body)?;
    let created = put_rule(&s, &who, rule.clone(), false).await?;
    let status = if created { StatusCode::CREATED } else { StatusCode::OK };
    Ok((status, Json(rule_json(&rule, RuleSource::Api))).into_response())
}

/// `DELETE /api/v1/alarms/rules/{name}`: 204; its alarms go with it.
pub async fn delete_rule(
    State(s): State<AppState>,
    Extension(who): Extension<Principal>,
    Path(name): Path<String>,
) -> ApiResult<StatusCode> {
    let a = alarms(&s)?;
    let r = async {
        if a.fixed().iter().any(|(r, _)| r.name == name) {
            return Err(ApiError::conflict(
                "read_only",
                format!("alarm rule {name:?} comes from the config file or is built in"),
            ));
        }
        let mut api = a.api.lock().await;
        if !api.contains_key(&name) {
            return Err(ApiError::not_found("alarm rule", &name));
        }
        a.store.delete_alarm_rule(&name).await?;
        api.remove(&name);
        a.apply(&api).await
    }
    .await;
    audit(&s, &who, "alarm_rule.delete", &name, outcome(&r), json!({})).await;
    r.map(|()| StatusCode::NO_CONTENT)
}
