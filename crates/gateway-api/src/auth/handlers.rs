//! The REST face of [`Auth`](super::Auth): logging in and out, who am I,
//! changing one's own password, and, for admins, users, tokens and the audit
//! trail. Every change is audited with who, from where and how it ended;
//! secrets appear in a response only when they are made (a login's session,
//! a new token) and never in the audit trail or the log.

use axum::Json;
use axum::extract::{Extension, Path, Query, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use gateway_store::{AuditQuery, Role};
use serde::Deserialize;
use serde_json::{Value as JsonValue, json};

use super::{LoginError, Principal, UserError};
use crate::AppState;
use crate::error::{ApiError, ApiJson};

type ApiResult<T> = Result<T, ApiError>;

/// Body of `POST /api/v1/auth/login`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LoginBody {
    /// The user's name.
    pub user: String,
    /// The user's password.
    pub password: String,
}

fn outcome<T>(r: &Result<T, UserError>) -> String {
    match r {
        Ok(_) => "ok".into(),
        Err(e) => format!("refused: {e}"),
    }
}

/// `POST /api/v1/auth/login`: a session for `Authorization: Bearer`; 401 for
/// a wrong user or password (not saying which), 429 after too many failures.
pub async fn login(
    State(s): State<AppState>,
    Extension(who): Extension<Principal>,
    ApiJson(body): ApiJson<LoginBody>,
) -> ApiResult<Response> {
    let auth = s.auth();
    let detail = json!({ "user": body.user }).to_string();
    match auth.login(&body.user, &body.password, &who.source).await {
        Ok(login) => {
            let entry = who.audit("auth.login", &body.user, "ok", detail);
            auth.audit(gateway_store::NewAuditEntry { actor: format!("user:{}", login.user), ..entry }).await;
            Ok(Json(login).into_response())
        }
        Err(LoginError::Invalid) => {
            auth.audit_denied(who.audit("auth.login", &body.user, "failed: wrong user or password", detail)).await;
            Err(ApiError::new(StatusCode::UNAUTHORIZED, "invalid_credentials", "wrong user name or password"))
        }
        Err(LoginError::Limited(wait)) => {
            auth.audit_denied(who.audit("auth.login", &body.user, "refused: too many failed logins", detail)).await;
            let secs = wait.as_secs().max(1);
            let mut r = ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                "too_many_failed_logins",
                format!("too many failed logins from this address or for this user; try again in {secs} s"),
            )
            .into_response();
            r.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(secs));
            Ok(r)
        }
        Err(LoginError::Store(e)) => Err(e.into()),
    }
}

/// `POST /api/v1/auth/logout`: ends the session the request carries; 204.
pub async fn logout(State(s): State<AppState>, Extension(who): Extension<Principal>) -> ApiResult<StatusCode> {
    let Some(digest) = &who.session else {
        return Err(ApiError::bad_request("not_a_session", "only a login session can log out; revoke a token instead"));
    };
    s.auth().store().delete_session(digest).await?;
    s.auth().forget_digest(digest);
    s.auth().audit(who.audit("auth.logout", who.user().unwrap_or(""), "ok", String::new())).await;
    Ok(StatusCode::NO_CONTENT)
}

/// `GET /api/v1/auth/me`: who the credentials belong to and their role.
pub async fn me(Extension(who): Extension<Principal>) -> Json<JsonValue> {
    Json(json!({ "actor": who.actor, "role": who.role, "source": who.source }))
}

/// Body of `POST /api/v1/auth/password`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PasswordBody {
    /// The password now.
    pub current: String,
    /// The new one.
    pub new: String,
}

/// `POST /api/v1/auth/password`: a user changes its own password (every
/// session of the user ends, this one too); 204.
pub async fn change_password(
    State(s): State<AppState>,
    Extension(who): Extension<Principal>,
    ApiJson(body): ApiJson<PasswordBody>,
) -> ApiResult<StatusCode> {
    let Some(user) = who.user() else {
        return Err(ApiError::bad_request("not_a_user", "tokens have no password"));
    };
    match s.auth().login(user, &body.current, &who.source).await {
        Ok(_) => {}
        Err(LoginError::Store(e)) => return Err(e.into()),
        Err(_) => {
            return Err(ApiError::new(StatusCode::FORBIDDEN, "invalid_credentials", "the current password is wrong"));
        }
    }
    let r = s.auth().update_user(user, None, Some(&body.new)).await;
    s.auth().audit(who.audit("user.password", user, outcome(&r), String::new())).await;
    r?;
    Ok(StatusCode::NO_CONTENT)
}

fn user_json(u: &gateway_store::UserRecord) -> JsonValue {
    json!({
        "name": u.name,
        "role": u.role,
        "created": gateway_model::format_rfc3339_ns(u.created_at_ms.max(0) as u64 * 1_000_000),
        "updated": gateway_model::format_rfc3339_ns(u.updated_at_ms.max(0) as u64 * 1_000_000),
    })
}

/// `GET /api/v1/users`.
pub async fn list_users(State(s): State<AppState>) -> ApiResult<Json<JsonValue>> {
    let users = s.auth().store().list_users().await?;
    Ok(Json(json!({ "users": users.iter().map(user_json).collect::<Vec<_>>() })))
}

/// `GET /api/v1/users/{name}`.
pub async fn get_user(State(s): State<AppState>, Path(name): Path<String>) -> ApiResult<Json<JsonValue>> {
    let u = s.auth().store().get_user(&name).await?.ok_or_else(|| ApiError::not_found("user", &name))?;
    Ok(Json(user_json(&u)))
}

/// Body of `POST /api/v1/users`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewUser {
    /// 1-64 of `A-Z a-z 0-9 _ - . @`.
    pub name: String,
    /// `viewer`, `operator` or `admin`.
    pub role: Role,
    /// At least 12 characters.
    pub password: String,
}

/// `POST /api/v1/users`: 201; 409 if the name is taken.
pub async fn create_user(
    State(s): State<AppState>,
    Extension(who): Extension<Principal>,
    ApiJson(body): ApiJson<NewUser>,
) -> ApiResult<Response> {
    let r = s.auth().create_user(&body.name, body.role, &body.password).await;
    let detail = json!({ "role": body.role }).to_string();
    s.auth().audit(who.audit("user.create", &body.name, outcome(&r), detail)).await;
    r?;
    Ok((StatusCode::CREATED, Json(json!({ "name": body.name, "role": body.role })).into_response()).into_response())
}

/// Body of `PUT /api/v1/users/{name}`: what to change.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UserChange {
    /// A new role.
    pub role: Option<Role>,
    /// A new password (ends the user's sessions).
    pub password: Option<String>,
}

/// `PUT /api/v1/users/{name}`: 200; 409 `last_admin` for demoting the last admin.
pub async fn update_user(
    State(s): State<AppState>,
    Extension(who): Extension<Principal>,
    Path(name): Path<String>,
    ApiJson(body): ApiJson<UserChange>,
) -> ApiResult<Json<JsonValue>> {
    let r = s.auth().update_user(&name, body.role, body.password.as_deref()).await;
    let detail = json!({ "role": body.role, "password_changed": body.password.is_some() }).to_string();
    s.auth().audit(who.audit("user.update", &name, outcome(&r), detail)).await;
    r?;
    get_user(State(s), Path(name)).await
}

/// `DELETE /api/v1/users/{name}`: 204; 409 `last_admin` for the last admin.
pub async fn delete_user(
    State(s): State<AppState>,
    Extension(who): Extension<Principal>,
    Path(name): Path<String>,
) -> ApiResult<StatusCode> {
    let r = s.auth().delete_user(&name).await;
    s.auth().audit(who.audit("user.delete", &name, outcome(&r), String::new())).await;
    r?;
    Ok(StatusCode::NO_CONTENT)
}

/// `GET /api/v1/tokens`: names, roles and creation times; never the secrets.
pub async fn list_tokens(State(s): State<AppState>) -> ApiResult<Json<JsonValue>> {
    let tokens = s.auth().store().list_tokens().await?;
    let list: Vec<JsonValue> = tokens
        .iter()
        .map(|t| {
            json!({
                "name": t.name, "role": t.role,
                "created": gateway_model::format_rfc3339_ns(t.created_at_ms.max(0) as u64 * 1_000_000),
            })
        })
        .collect();
    Ok(Json(json!({ "tokens": list })))
}

/// Body of `POST /api/v1/tokens`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewToken {
    /// 1-64 of `A-Z a-z 0-9 _ - . @`, saying what uses it.
    pub name: String,
    /// `viewer`, `operator` or `admin`.
    pub role: Role,
}

/// `POST /api/v1/tokens`: 201 with the token's secret, shown this once.
pub async fn create_token(
    State(s): State<AppState>,
    Extension(who): Extension<Principal>,
    ApiJson(body): ApiJson<NewToken>,
) -> ApiResult<Response> {
    let r = s.auth().create_token(&body.name, body.role).await;
    let detail = json!({ "role": body.role }).to_string();
    s.auth().audit(who.audit("token.create", &body.name, outcome(&r), detail)).await;
    let token = r?;
    let body = json!({ "name": body.name, "role": body.role, "token": token });
    Ok((StatusCode::CREATED, Json(body)).into_response())
}

/// `DELETE /api/v1/tokens/{name}`: 204; the token stops working at once.
pub async fn revoke_token(
    State(s): State<AppState>,
    Extension(who): Extension<Principal>,
    Path(name): Path<String>,
) -> ApiResult<StatusCode> {
    let r = s.auth().revoke_token(&name).await;
    s.auth().audit(who.audit("token.revoke", &name, outcome(&r), String::new())).await;
    r?;
    Ok(StatusCode::NO_CONTENT)
}

/// Query of `GET /api/v1/audit`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditParams {
    /// RFC 3339; default: the beginning.
    pub from: Option<String>,
    /// RFC 3339, exclusive; default: now and later.
    pub to: Option<String>,
    /// The `next` of the previous page.
    pub after: Option<i64>,
    /// Entries per page, 1 to 1000 (default 100).
    pub limit: Option<u32>,
}

fn time_param(name: &str, v: Option<&str>, default: i64) -> ApiResult<i64> {
    match v {
        None => Ok(default),
        Some(t) => gateway_model::parse_rfc3339_ns(t)
            .map(|ns| (ns / 1_000_000) as i64)
            .ok_or_else(|| ApiError::bad_request("invalid_query", format!("{name}: {t:?} is not an RFC 3339 time"))),
    }
}

/// `GET /api/v1/audit?from&to&after&limit`: entries oldest first, with
/// `next` (the `after` of the following page) while more may follow.
pub async fn audit(
    State(s): State<AppState>,
    q: Result<Query<AuditParams>, axum::extract::rejection::QueryRejection>,
) -> ApiResult<Json<JsonValue>> {
    let Query(q) = q.map_err(|e| ApiError::bad_request("invalid_query", e.body_text()))?;
    let limit = q.limit.unwrap_or(100);
    if !(1..=1000).contains(&limit) {
        return Err(ApiError::bad_request("invalid_query", format!("limit: must be 1 to 1000, got {limit}")));
    }
    let query = AuditQuery {
        from_ms: time_param("from", q.from.as_deref(), 0)?,
        to_ms: time_param("to", q.to.as_deref(), i64::MAX)?,
        after_id: q.after.unwrap_or(0),
        limit,
    };
    let entries = s.auth().store().list_audit(query).await?;
    let next = (entries.len() == limit as usize).then(|| entries.last().map(|e| e.id)).flatten();
    let list: Vec<JsonValue> = entries
        .iter()
        .map(|e| {
            json!({
                "id": e.id,
                "ts": gateway_model::format_rfc3339_ns(e.ts_ms.max(0) as u64 * 1_000_000),
                "actor": e.actor, "source": e.source, "action": e.action, "target": e.target,
                "outcome": e.outcome,
                "detail": serde_json::from_str::<JsonValue>(&e.detail).unwrap_or(JsonValue::String(e.detail.clone())),
            })
        })
        .collect();
    Ok(Json(json!({ "entries": list, "next": next })))
}
