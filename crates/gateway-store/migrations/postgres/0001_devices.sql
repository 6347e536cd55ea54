-- Devices and their tags (PostgreSQL).
--
-- Booleans are BIGINT 0/1 and driver fields are JSON objects in TEXT, as in
-- the SQLite schema, because sqlx's Any driver maps only a few column
-- types. Timestamps are milliseconds since the Unix epoch.

CREATE TABLE devices (
    name             TEXT NOT NULL PRIMARY KEY,
    driver           TEXT NOT NULL,
    enabled          BIGINT NOT NULL CHECK (enabled IN (0, 1)),
    poll_interval_ms BIGINT NOT NULL CHECK (poll_interval_ms >= 0),
    params           TEXT NOT NULL,
    source           TEXT NOT NULL CHECK (source IN ('config', 'api')),
    created_at_ms    BIGINT NOT NULL,
    updated_at_ms    BIGINT NOT NULL
);

-- `position` keeps the tags in the order they were defined; positions are
-- unique per device but may have gaps after a tag is deleted.
CREATE TABLE tags (
    device   TEXT NOT NULL REFERENCES devices (name) ON DELETE CASCADE,
    name     TEXT NOT NULL,
    position BIGINT NOT NULL,
    writable BIGINT NOT NULL CHECK (writable IN (0, 1)),
    params   TEXT NOT NULL,
    PRIMARY KEY (device, name),
    UNIQUE (device, position)
);
