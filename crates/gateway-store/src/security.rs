//! Who may use the gateway: users (for people, with a password), API tokens
//! (for machines) and login sessions, as stored rows. This module stores and
//! finds them; it never sees a secret. Callers hash passwords (argon2id) and
//! tokens (SHA-256 of 256 random bits) before they come here, and compare
//! password hashes themselves.
//!
//! A session carries no role of its own: it takes its user's current role at
//! every lookup, so demoting or removing a user acts at once, and removing a
//! user removes its sessions (a foreign key with `ON DELETE CASCADE`).

use serde::{Deserialize, Serialize};
use sqlx::Row;
use sqlx::any::AnyRow;

use crate::store::now_ms;
use crate::{Store, StoreError};

/// What a user or token may do. Ordered: every role may do what the roles
/// before it may.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Reads values, devices, tags, metrics and live updates.
    Viewer,
    /// A viewer who may also write set-points and acknowledge alarms.
    Operator,
    /// Everything: devices, connectors, users, tokens, the audit trail.
    Admin,
}

impl Role {
    /// Every role, weakest first.
    pub const ALL: [Role; 3] = [Role::Viewer, Role::Operator, Role::Admin];

    /// The stored and written form: `viewer`, `operator` or `admin`.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Viewer => "viewer",
            Role::Operator => "operator",
            Role::Admin => "admin",
        }
    }

    /// The inverse of [`Role::as_str`]; `None` for any other text.
    pub fn parse(s: &str) -> Option<Role> {
        Role::ALL.into_iter().find(|r| r.as_str() == s)
    }
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A user as stored; `password_hash` is an argon2id PHC string.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UserRecord {
    /// Unique login name.
    pub name: String,
    /// What the user may do.
    pub role: Role,
    /// The argon2id hash of the password, in PHC form (`$argon2id$v=19$...`).
    pub password_hash: String,
    /// When the user was created, milliseconds since the Unix epoch.
    pub created_at_ms: i64,
    /// When the role or password last changed.
    pub updated_at_ms: i64,
}

/// An API token as listed: never its secret, which only its creator saw.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct TokenRecord {
    /// Unique name, saying whose machine uses it (`scada-reader`).
    pub name: String,
    /// What a request carrying the token may do.
    pub role: Role,
    /// When it was created, milliseconds since the Unix epoch.
    pub created_at_ms: i64,
}

/// Who a token or session belongs to, as found by its hash.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Holder {
    /// The user's or token's name.
    pub name: String,
    /// Its role now.
    pub role: Role,
    /// For a session: when it expires (milliseconds since the Unix epoch).
    pub expires_at_ms: Option<i64>,
}

fn role_column(row: &AnyRow) -> Result<Role, StoreError> {
    let text: String = row.try_get("role")?;
    Role::parse(&text).ok_or_else(|| StoreError::Schema(format!("a stored role is {text:?}")))
}

impl Store {
    /// Adds a user; [`StoreError::Conflict`] if the name is taken.
    pub async fn create_user(&self, name: &str, role: Role, password_hash: &str) -> Result<(), StoreError> {
        let now = now_ms();
        self.write(async |tx| {
            let done = sqlx::query(
                "INSERT INTO users (name, role, password_hash, created_at_ms, updated_at_ms) \
                 VALUES ($1, $2, $3, $4, $4) ON CONFLICT (name) DO NOTHING",
            )
            .bind(name)
            .bind(role.as_str())
            .bind(password_hash)
            .bind(now)
            .execute(&mut *tx)
            .await?;
            if done.rows_affected() == 0 {
                return Err(StoreError::Conflict { what: "user", name: name.to_owned() });
            }
            Ok(())
        })
        .await
    }

    /// The user named `name`.
    pub async fn get_user(&self, name: &str) -> Result<Option<UserRecord>, StoreError> {
        let row =
            sqlx::query("SELECT name, role, password_hash, created_at_ms, updated_at_ms FROM users WHERE name = $1")
                .bind(name)
                .fetch_optional(self.pool())
                .await?;
        row.map(|r| user(&r)).transpose()
    }

    /// Every user, by name.
    pub async fn list_users(&self) -> Result<Vec<UserRecord>, StoreError> {
        let rows =
            sqlx::query("SELECT name, role, password_hash, created_at_ms, updated_at_ms FROM users ORDER BY name")
                .fetch_all(self.pool())
                .await?;
        rows.iter().map(user).collect()
    }

    /// How many users have `role`.
    pub async fn count_users_with(&self, role: Role) -> Result<u64, StoreError> {
        let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM users WHERE role = $1")
            .bind(role.as_str())
            .fetch_one(self.pool())
            .await?;
        Ok(u64::try_from(n).unwrap_or(0))
    }

    /// Changes a user's password hash and ends its sessions (whoever knew the
    /// old password is logged out); [`StoreError::NotFound`] if there is no such user.
    pub async fn set_password(&self, name: &str, password_hash: &str) -> Result<(), StoreError> {
        self.write(async |tx| {
            let done = sqlx::query("UPDATE users SET password_hash = $2, updated_at_ms = $3 WHERE name = $1")
                .bind(name)
                .bind(password_hash)
                .bind(now_ms())
                .execute(&mut *tx)
                .await?;
            if done.rows_affected() == 0 {
                return Err(StoreError::NotFound { what: "user", name: name.to_owned() });
            }
            sqlx::query("DELETE FROM sessions WHERE user_name = $1").bind(name).execute(&mut *tx).await?;
            Ok(())
        })
        .await
    }

    /// Changes a user's role; [`StoreError::NotFound`] if there is no such user.
    pub async fn set_role(&self, name: &str, role: Role) -> Result<(), StoreError> {
        self.write(async |tx| {
            let done = sqlx::query("UPDATE users SET role = $2, updated_at_ms = $3 WHERE name = $1")
                .bind(name)
                .bind(role.as_str())
                .bind(now_ms())
                .execute(&mut *tx)
                .await?;
            if done.rows_affected() == 0 {
                return Err(StoreError::NotFound { what: "user", name: name.to_owned() });
            }
            Ok(())
        })
        .await
    }

    /// Removes a user and its sessions; returns whether it existed.
    pub async fn delete_user(&self, name: &str) -> Result<bool, StoreError> {
        self.write(async |tx| {
            let done = sqlx::query("DELETE FROM users WHERE name = $1").bind(name).execute(&mut *tx).await?;
            Ok(done.rows_affected() > 0)
        })
        .await
    }

    /// Adds an API token by the SHA-256 (hex) of its secret; [`StoreError::Conflict`] if the name is taken.
    pub async fn create_token(&self, name: &str, role: Role, token_sha256: &str) -> Result<(), StoreError> {
        self.write(async |tx| {
            let done = sqlx::query(
                "INSERT INTO api_tokens (name, role, token_sha256, created_at_ms) VALUES ($1, $2, $3, $4) \
                 ON CONFLICT (name) DO NOTHING",
            )
            .bind(name)
            .bind(role.as_str())
            .bind(token_sha256)
            .bind(now_ms())
            .execute(&mut *tx)
            .await?;
            if done.rows_affected() == 0 {
                return Err(StoreError::Conflict { what: "token", name: name.to_owned() });
            }
            Ok(())
        })
        .await
    }

    /// Every token, by name, without secrets.
    pub async fn list_tokens(&self) -> Result<Vec<TokenRecord>, StoreError> {
        let rows = sqlx::query("SELECT name, role, created_at_ms FROM api_tokens ORDER BY name")
            .fetch_all(self.pool())
            .await?;
        rows.iter()
            .map(|r| {
                Ok(TokenRecord {
                    name: r.try_get("name")?,
                    role: role_column(r)?,
                    created_at_ms: r.try_get("created_at_ms")?,
                })
            })
            .collect()
    }

    /// Revokes a token; returns whether it existed.
    pub async fn delete_token(&self, name: &str) -> Result<bool, StoreError> {
        self.write(async |tx| {
            let done = sqlx::query("DELETE FROM api_tokens WHERE name = $1").bind(name).execute(&mut *tx).await?;
            Ok(done.rows_affected() > 0)
        })
        .await
    }

    /// The token whose secret hashes to `token_sha256`, if any.
    pub async fn find_token(&self, token_sha256: &str) -> Result<Option<Holder>, StoreError> {
        let row = sqlx::query("SELECT name, role FROM api_tokens WHERE token_sha256 = $1")
            .bind(token_sha256)
            .fetch_optional(self.pool())
            .await?;
        row.map(|r| Ok(Holder { name: r.try_get("name")?, role: role_column(&r)?, expires_at_ms: None })).transpose()
    }

    /// Starts a session for `user`, identified by the SHA-256 (hex) of its secret id.
    pub async fn create_session(&self, id_sha256: &str, user: &str, expires_at_ms: i64) -> Result<(), StoreError> {
        self.write_small(async |tx| {
            sqlx::query(
                "INSERT INTO sessions (id_sha256, user_name, created_at_ms, expires_at_ms) VALUES ($1, $2, $3, $4)",
            )
            .bind(id_sha256)
            .bind(user)
            .bind(now_ms())
            .bind(expires_at_ms)
            .execute(&mut *tx)
            .await?;
            Ok(())
        })
        .await
    }

    /// The user of the unexpired session whose id hashes to `id_sha256`, with the user's current role.
    pub async fn find_session(&self, id_sha256: &str) -> Result<Option<Holder>, StoreError> {
        let row = sqlx::query(
            "SELECT u.name AS name, u.role AS role, s.expires_at_ms AS expires_at_ms FROM sessions s \
             JOIN users u ON u.name = s.user_name WHERE s.id_sha256 = $1 AND s.expires_at_ms > $2",
        )
        .bind(id_sha256)
        .bind(now_ms())
        .fetch_optional(self.pool())
        .await?;
        row.map(|r| {
            Ok(Holder {
                name: r.try_get("name")?,
                role: role_column(&r)?,
                expires_at_ms: Some(r.try_get("expires_at_ms")?),
            })
        })
        .transpose()
    }

    /// Ends a session (logout); returns whether it existed.
    pub async fn delete_session(&self, id_sha256: &str) -> Result<bool, StoreError> {
        self.write_small(async |tx| {
            let done =
                sqlx::query("DELETE FROM sessions WHERE id_sha256 = $1").bind(id_sha256).execute(&mut *tx).await?;
            Ok(done.rows_affected() > 0)
        })
        .await
    }

    /// Deletes expired sessions; returns how many.
    pub async fn purge_sessions(&self) -> Result<u64, StoreError> {
        self.write_small(async |tx| {
            let done =
                sqlx::query("DELETE FROM sessions WHERE expires_at_ms <= $1").bind(now_ms()).execute(&mut *tx).await?;
            Ok(done.rows_affected())
        })
        .await
    }
}

fn user(r: &AnyRow) -> Result<UserRecord, StoreError> {
    Ok(UserRecord {
        name: r.try_get("name")?,
        role: role_column(r)?,
        password_hash: r.try_get("password_hash")?,
        created_at_ms: r.try_get("created_at_ms")?,
        updated_at_ms: r.try_get("updated_at_ms")?,
    })
}
