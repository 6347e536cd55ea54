//! How a reading becomes a row and a row a reading: the value's kind, its
//! columns in each dialect, the quality as one integer. Pure: no I/O, so the
//! round trip is tested without a database.
//!
//! It must never lose what it cannot place: a value that has no exact column
//! (a u64 above `i64::MAX`) is kept as its two's complement and its kind says
//! how to read it back.

use std::sync::Arc;

use gateway_model::{Quality, QualityLevel, Reason, Value};

/// The `k` column: which variant of [`Value`] a row holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(i16)]
pub(crate) enum Kind {
    F64 = 0,
    Bool = 1,
    I64 = 2,
    U64 = 3,
    Str = 4,
    Bytes = 5,
}

impl Kind {
    pub fn of(v: &Value) -> Kind {
        match v {
            Value::F64(_) => Kind::F64,
            Value::Bool(_) => Kind::Bool,
            Value::I64(_) => Kind::I64,
            Value::U64(_) => Kind::U64,
            Value::Str(_) => Kind::Str,
            Value::Bytes(_) => Kind::Bytes,
        }
    }

    pub fn from_code(code: i64) -> Option<Kind> {
        Some(match code {
            0 => Kind::F64,
            1 => Kind::Bool,
            2 => Kind::I64,
            3 => Kind::U64,
            4 => Kind::Str,
            5 => Kind::Bytes,
            _ => return None,
        })
    }
}

/// The `q` column: level in the high half, reason in the low 16 bits; good
/// with no reason is 0.
pub(crate) fn quality_code(q: Quality) -> i32 {
    (i32::from(q.level as u8) << 16) | i32::from(q.reason.0)
}

/// Codes below this are good readings (whatever their reason).
pub(crate) const FIRST_NOT_GOOD: i32 = 1 << 16;

/// The quality a `q` column holds; an unknown level reads as bad, so a
/// damaged row is never taken for a good reading.
pub(crate) fn quality_of(code: i64) -> Quality {
    let level = match code >> 16 {
        0 => QualityLevel::Good,
        1 => QualityLevel::Uncertain,
        _ => QualityLevel::Bad,
    };
    Quality { level, reason: Reason((code & 0xffff) as u16) }
}

/// The integer a bool, i64 or u64 is stored as (u64 as two's complement).
pub(crate) fn int_of(v: &Value) -> Option<i64> {
    match *v {
        Value::Bool(b) => Some(i64::from(b)),
        Value::I64(i) => Some(i),
        Value::U64(u) => Some(u as i64),
        _ => None,
    }
}

/// The value of `kind` stored as the integer `i`.
pub(crate) fn from_int(kind: Kind, i: i64) -> Value {
    match kind {
        Kind::Bool => Value::Bool(i != 0),
        Kind::U64 => Value::U64(i as u64),
        Kind::F64 => Value::F64(i as f64),
        _ => Value::I64(i),
    }
}

/// A string value's text, or a bytes value's base64 (PostgreSQL's `vs`).
pub(crate) fn text_of(v: &Value) -> Option<String> {
    match v {
        Value::Str(s) => Some(s.to_string()),
        // Through the model's JSON form, the one base64 the gateway has.
        Value::Bytes(_) => serde_json::to_value(v).ok()?.get("base64")?.as_str().map(str::to_owned),
        _ => None,
    }
}

/// The value a PostgreSQL `vs` column holds for `kind`.
pub(crate) fn from_text(kind: Kind, text: &str) -> Option<Value> {
    match kind {
        Kind::Str => Some(Value::Str(Arc::from(text))),
        Kind::Bytes => serde_json::from_value(serde_json::json!({ "base64": text })).ok(),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quality_codes_round_trip_and_good_is_zero() {
        assert_eq!(quality_code(Quality::GOOD), 0);
        for q in [Quality::GOOD, Quality::bad(Reason::TIMEOUT), Quality::uncertain(Reason::LAST_KNOWN)] {
            assert_eq!(quality_of(i64::from(quality_code(q))), q);
        }
        assert!(quality_code(Quality::uncertain(Reason::NONE)) >= FIRST_NOT_GOOD);
        assert_eq!(quality_of(7 << 16).level, QualityLevel::Bad, "an unknown level is not good");
    }

    #[test]
    fn every_kind_reads_back_as_it_was_written() {
        let values = [
            Value::F64(-2.5),
            Value::Bool(true),
            Value::I64(i64::MIN),
            Value::U64(u64::MAX),
            Value::from("text"),
            Value::Bytes(Arc::from(vec![0u8, 255, 7])),
        ];
        for v in values {
            let kind = Kind::of(&v);
            assert_eq!(Kind::from_code(kind as i64), Some(kind));
            let back = match (int_of(&v), text_of(&v)) {
                (Some(i), _) => from_int(kind, i),
                (None, Some(t)) => from_text(kind, &t).unwrap(),
                (None, None) => v.clone(),
            };
            assert!(back.same(&v), "{v:?} came back as {back:?}");
        }
    }
}
