//! Users, tokens, sessions and the audit trail, on both databases: what is
//! stored, what is found by a secret's digest, what a session inherits from
//! its user, and that the audit trail refuses to be rewritten.

mod common;

use common::TestDb;
use gateway_store::{AuditQuery, NewAuditEntry, Role, Store, StoreError};

fn entry(action: &str, target: &str) -> NewAuditEntry {
    NewAuditEntry {
        actor: "user:alice".into(),
        source: "10.0.0.5".into(),
        action: action.into(),
        target: target.into(),
        outcome: "ok".into(),
        detail: String::new(),
    }
}

fn all() -> AuditQuery {
    AuditQuery { from_ms: 0, to_ms: i64::MAX, after_id: 0, limit: 1000 }
}

async fn users_are_unique_and_change_role_and_password(db: TestDb) {
    let store = db.open().await;
    store.create_user("alice", Role::Operator, "$argon2id$hash-a").await.expect("create");
    assert!(matches!(
        store.create_user("alice", Role::Admin, "$argon2id$other").await,
        Err(StoreError::Conflict { what: "user", .. })
    ));
    let u = store.get_user("alice").await.expect("get").expect("exists");
    assert_eq!((u.role, u.password_hash.as_str()), (Role::Operator, "$argon2id$hash-a"));
    store.set_role("alice", Role::Admin).await.expect("role");
    store.set_password("alice", "$argon2id$hash-b").await.expect("password");
    let u = store.get_user("alice").await.expect("get").expect("exists");
    assert_eq!((u.role, u.password_hash.as_str()), (Role::Admin, "$argon2id$hash-b"));
    assert_eq!(store.count_users_with(Role::Admin).await.expect("count"), 1);
    assert!(matches!(store.set_role("bob", Role::Viewer).await, Err(StoreError::NotFound { .. })));
    assert!(matches!(store.set_password("bob", "x").await, Err(StoreError::NotFound { .. })));
    assert!(store.delete_user("alice").await.expect("delete"));
    assert!(!store.delete_user("alice").await.expect("delete again"));
    assert!(store.list_users().await.expect("list").is_empty());
}

async fn a_session_takes_its_users_current_role_and_dies_with_the_user(db: TestDb) {
    let store = db.open().await;
    store.create_user("olga", Role::Operator, "h").await.expect("create");
    let far = i64::MAX / 2;
    store.create_session("digest-1", "olga", far).await.expect("session");
    store.create_session("digest-old", "olga", 1).await.expect("expired session");
    let h = store.find_session("digest-1").await.expect("find").expect("live");
    assert_eq!((h.name.as_str(), h.role), ("olga", Role::Operator));
    assert!(store.find_session("digest-old").await.expect("find").is_none(), "an expired session is not found");
    assert_eq!(store.purge_sessions().await.expect("purge"), 1);
    store.set_role("olga", Role::Viewer).await.expect("role");
    assert_eq!(store.find_session("digest-1").await.expect("find").expect("live").role, Role::Viewer);
    // A new password ends the sessions; so does removing the user.
    store.set_password("olga", "h2").await.expect("password");
    assert!(store.find_session("digest-1").await.expect("find").is_none());
    store.create_session("digest-2", "olga", far).await.expect("session");
    assert!(store.delete_session("digest-2").await.expect("logout"));
    store.create_session("digest-3", "olga", far).await.expect("session");
    store.delete_user("olga").await.expect("delete");
    assert!(store.find_session("digest-3").await.expect("find").is_none());
    assert!(store.create_session("digest-4", "nobody", far).await.is_err(), "a session needs a user");
}

async fn tokens_are_found_by_digest_and_listed_without_it(db: TestDb) {
    let store = db.open().await;
    store.create_token("scada", Role::Viewer, "aa11").await.expect("create");
    assert!(matches!(store.create_token("scada", Role::Admin, "bb22").await, Err(StoreError::Conflict { .. })));
    assert!(store.create_token("other", Role::Admin, "aa11").await.is_err(), "a digest belongs to one token");
    let h = store.find_token("aa11").await.expect("find").expect("found");
    assert_eq!((h.name.as_str(), h.role, h.expires_at_ms), ("scada", Role::Viewer, None));
    assert!(store.find_token("cc33").await.expect("find").is_none());
    let list = store.list_tokens().await.expect("list");
    assert_eq!(list.len(), 1);
    assert!(!format!("{list:?}").contains("aa11"), "the list carries no digest");
    assert!(store.delete_token("scada").await.expect("revoke"));
    assert!(store.find_token("aa11").await.expect("find").is_none());
}

async fn the_audit_trail_pages_in_order_and_cannot_be_rewritten(db: TestDb) {
    let store = db.open().await;
    let mut ids = Vec::new();
    for i in 0..5 {
        ids.push(store.append_audit(&entry("device.create", &format!("d{i}"))).await.expect("append"));
    }
    assert!(ids.windows(2).all(|w| w[1] > w[0]));
    let page = store.list_audit(AuditQuery { limit: 2, ..all() }).await.expect("page");
    assert_eq!(page.iter().map(|e| e.target.as_str()).collect::<Vec<_>>(), ["d0", "d1"]);
    let next = store.list_audit(AuditQuery { limit: 2, after_id: page[1].id, ..all() }).await.expect("page");
    assert_eq!(next.iter().map(|e| e.target.as_str()).collect::<Vec<_>>(), ["d2", "d3"]);
    assert_eq!(next[0].detail, "{}", "an empty detail is stored as an empty JSON object");
    let future = store.list_audit(AuditQuery { from_ms: i64::MAX - 1, ..all() }).await.expect("range");
    assert!(future.is_empty());

    // Neither the gateway nor a hand-edited database can change or delete a row.
    let update = sqlx::query("UPDATE audit SET outcome = 'forged'").execute(store.pool()).await;
    assert!(update.is_err(), "an UPDATE of the audit trail was accepted");
    let delete = sqlx::query("DELETE FROM audit").execute(store.pool()).await;
    assert!(delete.is_err(), "a DELETE of the audit trail was accepted");
    let rows = store.list_audit(all()).await.expect("list");
    assert_eq!(rows.len(), 5);
    assert!(rows.iter().all(|e| e.outcome == "ok"));
    reopen_keeps_the_trail(store, &db).await;
}

async fn reopen_keeps_the_trail(store: Store, db: &TestDb) {
    store.close().await;
    let store = db.open().await;
    assert_eq!(store.list_audit(all()).await.expect("list").len(), 5, "the trail survives a restart");
}

common::suite!(
    users_are_unique_and_change_role_and_password,
    a_session_takes_its_users_current_role_and_dies_with_the_user,
    tokens_are_found_by_digest_and_listed_without_it,
    the_audit_trail_pages_in_order_and_cannot_be_rewritten,
);
