-- Users, API tokens, login sessions and the audit trail (PostgreSQL).
--
-- Secrets are never stored: `password_hash` is an argon2id PHC string, and
-- tokens and session ids are kept as the hex SHA-256 of the secret (a token
-- has 256 random bits, so a fast hash is enough to make a stolen database
-- useless for logging in). Timestamps are milliseconds since the Unix epoch.

CREATE TABLE users (
    name          TEXT NOT NULL PRIMARY KEY,
    role          TEXT NOT NULL CHECK (role IN ('viewer', 'operator', 'admin')),
    password_hash TEXT NOT NULL,
    created_at_ms BIGINT NOT NULL,
    updated_at_ms BIGINT NOT NULL
);

CREATE TABLE api_tokens (
    name          TEXT NOT NULL PRIMARY KEY,
    role          TEXT NOT NULL CHECK (role IN ('viewer', 'operator', 'admin')),
    token_sha256  TEXT NOT NULL UNIQUE,
    created_at_ms BIGINT NOT NULL
);

-- A session belongs to a user and takes the user's current role, so a role
-- change or a removal acts at once; removing a user removes its sessions.
CREATE TABLE sessions (
    id_sha256     TEXT NOT NULL PRIMARY KEY,
    user_name     TEXT NOT NULL REFERENCES users (name) ON DELETE CASCADE,
    created_at_ms BIGINT NOT NULL,
    expires_at_ms BIGINT NOT NULL
);
CREATE INDEX sessions_user ON sessions (user_name);

-- The audit trail is append-only: the trigger refuses to change or delete a
-- row, whoever asks (the gateway has no code that would, and a hand-edited
-- database is caught too). TRUNCATE is refused as well.
CREATE TABLE audit (
    id      BIGSERIAL PRIMARY KEY,
    ts_ms   BIGINT NOT NULL,
    actor   TEXT NOT NULL,
    source  TEXT NOT NULL,
    action  TEXT NOT NULL,
    target  TEXT NOT NULL,
    outcome TEXT NOT NULL,
    detail  TEXT NOT NULL
);
CREATE INDEX audit_ts ON audit (ts_ms);

CREATE FUNCTION audit_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'the audit trail is append-only';
END;
$$;

CREATE TRIGGER audit_no_change BEFORE UPDATE OR DELETE ON audit
    FOR EACH ROW EXECUTE FUNCTION audit_append_only();

CREATE TRIGGER audit_no_truncate BEFORE TRUNCATE ON audit
    FOR EACH STATEMENT EXECUTE FUNCTION audit_append_only();
