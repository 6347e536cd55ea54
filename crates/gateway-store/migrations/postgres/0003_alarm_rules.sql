-- Alarm rules made over the API (rules in the config file are not stored).
-- `body` is the rule as JSON, exactly as `POST /api/v1/alarms/rules` took
-- it after checking; the gateway checks it again when it loads it, so a
-- rule a newer version refuses is reported and skipped, not fatal.
CREATE TABLE alarm_rules (
    name          TEXT NOT NULL PRIMARY KEY,
    body          TEXT NOT NULL,
    created_at_ms BIGINT NOT NULL,
    updated_at_ms BIGINT NOT NULL
);
