-- History (PostgreSQL): every stored reading, the tag names they refer to,
-- summaries per tag and time bucket, and where the writer is on the bus.
--
-- Times are nanoseconds since the Unix epoch (UTC). history_raw is
-- partitioned by day on ts (partitions `history_raw_pYYYYMMDD`, made and
-- dropped by the gateway), so retention drops whole days at once. Rows
-- arrive by COPY; nothing makes (tag_id, ts) unique (a unique index would
-- make COPY fail on a reading repeated by its source), the writer's position
-- stored with the rows keeps every reading exactly once.

CREATE TABLE history_tags (
    id   INTEGER NOT NULL PRIMARY KEY,
    name TEXT    NOT NULL UNIQUE
);

-- Columns in an order that wastes no alignment padding. `v` is the numeric
-- value (f64, and bool/i64/u64 as float8) for summaries; `vi` the exact
-- integer of bool/i64/u64 (u64 above i64::MAX as its two's complement); `vs`
-- the text of a string (bytes as base64). `k`: 0 f64, 1 bool, 2 i64, 3 u64,
-- 4 string, 5 bytes. `q`: quality, level << 16 | reason, 0 for good.
CREATE TABLE history_raw (
    ts     BIGINT           NOT NULL,
    v      DOUBLE PRECISION,
    vi     BIGINT,
    tag_id INTEGER          NOT NULL,
    q      INTEGER          NOT NULL,
    k      SMALLINT         NOT NULL,
    vs     TEXT
) PARTITION BY RANGE (ts);

CREATE INDEX history_raw_tag_ts ON history_raw (tag_id, ts);
-- Rows arrive in about time order, so a block range index finds a time
-- range for the summaries at almost no cost per insert.
CREATE INDEX history_raw_ts ON history_raw USING brin (ts);

CREATE TABLE history_rollups (
    width_s  BIGINT           NOT NULL,
    tag_id   INTEGER          NOT NULL,
    bucket   BIGINT           NOT NULL,
    n        BIGINT           NOT NULL,
    min      DOUBLE PRECISION NOT NULL,
    max      DOUBLE PRECISION NOT NULL,
    sum      DOUBLE PRECISION NOT NULL,
    first_ts BIGINT           NOT NULL,
    first    DOUBLE PRECISION NOT NULL,
    last_ts  BIGINT           NOT NULL,
    last     DOUBLE PRECISION NOT NULL,
    PRIMARY KEY (width_s, tag_id, bucket)
);

-- Buckets to summarise again after a late reading; see the SQLite schema.
CREATE TABLE history_rollup_dirty (
    width_s BIGINT  NOT NULL,
    tag_id  INTEGER NOT NULL,
    bucket  BIGINT  NOT NULL,
    gen     BIGINT  NOT NULL,
    PRIMARY KEY (width_s, tag_id, bucket)
);

CREATE TABLE history_state (
    name  TEXT   NOT NULL PRIMARY KEY,
    value BIGINT NOT NULL
);
