//! The audit trail: one row per state change (a set-point written and its
//! result, a device or tag created, changed or deleted, a user or token
//! added or removed, a login and a failed login), saying who, when, from
//! where, what, and how it ended. Rows are only ever appended: there is no
//! code here that changes or deletes one, and the schema's triggers refuse it
//! on both databases. Reading pages forward by id, so a page is stable while
//! rows are being added.

use serde::Serialize;
use sqlx::Row;

use crate::store::now_ms;
use crate::{Store, StoreError};

/// One state change, as it is recorded.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct AuditEntry {
    /// Position in the trail: increasing, never reused; the paging cursor.
    pub id: i64,
    /// When it happened, milliseconds since the Unix epoch.
    pub ts_ms: i64,
    /// Who: `user:NAME`, `token:NAME`, `cli`, `anonymous`, or `gateway` for the gateway itself.
    pub actor: String,
    /// From where: the client's IP address, or `cli`/`local`.
    pub source: String,
    /// What kind of change, such as `command.write`, `device.create`, `auth.login`.
    pub action: String,
    /// What it was done to: a tag id, a device or user name.
    pub target: String,
    /// How it ended: `ok`, or the failure (`denied`, `rejected: ...`, `error: ...`).
    pub outcome: String,
    /// More about it, as JSON text (the written value, the fields changed); `{}` when there is nothing more.
    pub detail: String,
}

/// A change to record; the store stamps the time and the id.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NewAuditEntry {
    /// See [`AuditEntry::actor`].
    pub actor: String,
    /// See [`AuditEntry::source`].
    pub source: String,
    /// See [`AuditEntry::action`].
    pub action: String,
    /// See [`AuditEntry::target`].
    pub target: String,
    /// See [`AuditEntry::outcome`].
    pub outcome: String,
    /// See [`AuditEntry::detail`]; empty is stored as `{}`.
    pub detail: String,
}

/// Which rows to read: a time range, and a page after an id.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AuditQuery {
    /// Rows at or after this time (milliseconds since the Unix epoch).
    pub from_ms: i64,
    /// Rows before this time.
    pub to_ms: i64,
    /// Rows with a larger id only (the `next` cursor of the previous page); 0 for the first page.
    pub after_id: i64,
    /// At most this many rows.
    pub limit: u32,
}

impl Store {
    /// Appends one entry; returns its id.
    pub async fn append_audit(&self, e: &NewAuditEntry) -> Result<i64, StoreError> {
        let detail = if e.detail.is_empty() { "{}" } else { e.detail.as_str() };
        self.write_small(async |tx| {
            let id: i64 = sqlx::query_scalar(
                "INSERT INTO audit (ts_ms, actor, source, action, target, outcome, detail) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING id",
            )
            .bind(now_ms())
            .bind(&e.actor)
            .bind(&e.source)
            .bind(&e.action)
            .bind(&e.target)
            .bind(&e.outcome)
            .bind(detail)
            .fetch_one(&mut *tx)
            .await?;
            Ok(id)
        })
        .await
    }

    /// Entries in `q`'s time range with an id above `q.after_id`, oldest first, at most `q.limit`.
    pub async fn list_audit(&self, q: AuditQuery) -> Result<Vec<AuditEntry>, StoreError> {
        let rows = sqlx::query(
            "SELECT id, ts_ms, actor, source, action, target, outcome, detail FROM audit \
             WHERE ts_ms >= $1 AND ts_ms < $2 AND id > $3 ORDER BY id LIMIT $4",
        )
        .bind(q.from_ms)
        .bind(q.to_ms)
        .bind(q.after_id)
        .bind(i64::from(q.limit))
        .fetch_all(self.pool())
        .await?;
        rows.iter()
            .map(|r| {
                Ok(AuditEntry {
                    id: r.try_get("id")?,
                    ts_ms: r.try_get("ts_ms")?,
                    actor: r.try_get("actor")?,
                    source: r.try_get("source")?,
                    action: r.try_get("action")?,
                    target: r.try_get("target")?,
                    outcome: r.try_get("outcome")?,
                    detail: r.try_get("detail")?,
                })
            })
            .collect()
    }
}
