-- History (SQLite): every stored reading, the tag names they refer to,
-- summaries per tag and time bucket, and where the writer is on the bus.
--
-- Times are nanoseconds since the Unix epoch (UTC). A reading is identified
-- by (tag, ts): `history_raw` is clustered on it (WITHOUT ROWID), so a tag's
-- range is contiguous on disk and a second reading at the same instant is
-- not stored.

CREATE TABLE history_tags (
    id   INTEGER NOT NULL PRIMARY KEY,
    name TEXT    NOT NULL UNIQUE
);

-- `v` has no declared type, so SQLite keeps what was bound: REAL for f64,
-- INTEGER for bool, i64 and u64 (u64 above i64::MAX as its two's complement),
-- TEXT for strings, BLOB for bytes. `k` says which: 0 f64, 1 bool, 2 i64,
-- 3 u64, 4 string, 5 bytes. `q` is the quality: level << 16 | reason, 0 for
-- good. Both 0 for the common case, where SQLite stores them in no bytes.
CREATE TABLE history_raw (
    tag_id INTEGER NOT NULL,
    ts     INTEGER NOT NULL,
    v,
    q      INTEGER NOT NULL,
    k      INTEGER NOT NULL,
    PRIMARY KEY (tag_id, ts)
) WITHOUT ROWID;

-- Summaries of the good numeric values (bool as 0/1) of a tag in a bucket
-- [bucket, bucket + width_s): how many, min, max, sum, first and last with
-- their times. Derived from history_raw, so they can be rebuilt from it.
CREATE TABLE history_rollups (
    width_s  INTEGER NOT NULL,
    tag_id   INTEGER NOT NULL,
    bucket   INTEGER NOT NULL,
    n        INTEGER NOT NULL,
    min      REAL    NOT NULL,
    max      REAL    NOT NULL,
    sum      REAL    NOT NULL,
    first_ts INTEGER NOT NULL,
    first    REAL    NOT NULL,
    last_ts  INTEGER NOT NULL,
    last     REAL    NOT NULL,
    PRIMARY KEY (width_s, tag_id, bucket)
) WITHOUT ROWID;

-- Buckets summarised already that a late reading has since changed: to be
-- summarised again (and, until then, computed from history_raw by queries).
-- `gen` is the writer's bus position when it last marked the bucket, so a
-- mark made while the bucket was being summarised again is not cleared.
CREATE TABLE history_rollup_dirty (
    width_s INTEGER NOT NULL,
    tag_id  INTEGER NOT NULL,
    bucket  INTEGER NOT NULL,
    gen     INTEGER NOT NULL,
    PRIMARY KEY (width_s, tag_id, bucket)
) WITHOUT ROWID;

-- Named integers the writer keeps in the same transactions as the rows:
-- `bus_seq` (frames below it are written), `rows` (rows in history_raw),
-- `complete_ns` (every reading stamped before it has been written, as far
-- as the writer knows), `rollup_<width_s>` (buckets before it are summarised).
CREATE TABLE history_state (
    name  TEXT    NOT NULL PRIMARY KEY,
    value INTEGER NOT NULL
);
