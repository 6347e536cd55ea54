-- The alarm journal (SQLite): every alarm transition the bus carried
-- (raised, cleared, acked, shelved, ...), written in the same transaction
-- as the readings of its batch and the writer's bus position, so each is
-- stored exactly once.
--
-- `id` only orders entries of the same instant and makes the pages of a
-- query resumable; it is not the alarm's id (`alarm_id`, `rule:subject`).
-- `ts` is nanoseconds since the Unix epoch (UTC). `code` is the transition,
-- `state` the ISA-18.2 state it entered (`active_unacked`, ...), `priority`
-- 0 low, 1 medium, 2 high, 3 critical. `value_json` and `limit_json` hold
-- the value and the limit in the API's JSON form (bytes as {"base64": ...}),
-- NULL when the transition had none.
CREATE TABLE alarm_events (
    id         INTEGER NOT NULL PRIMARY KEY,
    ts         INTEGER NOT NULL,
    alarm_id   TEXT    NOT NULL,
    rule       TEXT    NOT NULL,
    tag        TEXT,
    code       TEXT    NOT NULL,
    state      TEXT    NOT NULL,
    priority   INTEGER NOT NULL,
    value_json TEXT,
    limit_json TEXT,
    user_name  TEXT,
    comment    TEXT,
    message    TEXT    NOT NULL
);

-- Time ranges (queries, newest first, and retention) and one alarm's
-- story; SQLite ends every index with the rowid (`id`), which pages use.
CREATE INDEX alarm_events_ts ON alarm_events (ts);
CREATE INDEX alarm_events_alarm_ts ON alarm_events (alarm_id, ts);
