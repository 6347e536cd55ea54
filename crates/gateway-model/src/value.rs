//! Values a tag can hold. Kept to 24 bytes (strings and byte strings are
//! reference counted) so that a frame stays small in the bus ring.

use std::fmt;
use std::sync::Arc;

use serde::de::{self, MapAccess, Visitor};
use serde::ser::SerializeMap;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// The value of a reading or of a command.
///
/// JSON form: booleans, numbers and strings as themselves; bytes as
/// `{"base64": "..."}`. Non-finite floats become `null` in JSON (JSON has no
/// NaN), but round-trip exactly through the binary codec.
#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    /// A boolean (coil, discrete input, a bit of a register).
    Bool(bool),
    /// A signed integer; JSON integers that fit in `i64` read as this.
    I64(i64),
    /// An unsigned integer (counters that may pass `i64::MAX`).
    U64(u64),
    /// A 64-bit float; may be NaN or infinite, which JSON shows as `null`.
    F64(f64),
    /// Text; shared, so cloning a frame does not copy it.
    Str(Arc<str>),
    /// Opaque bytes, as `{"base64": "..."}` in JSON; shared like `Str`.
    Bytes(Arc<[u8]>),
}

impl Value {
    /// A short name of the variant: `bool`, `i64`, `u64`, `f64`, `string`, `bytes`.
    pub fn type_name(&self) -> &'static str {
        match self {
            Value::Bool(_) => "bool",
            Value::I64(_) => "i64",
            Value::U64(_) => "u64",
            Value::F64(_) => "f64",
            Value::Str(_) => "string",
            Value::Bytes(_) => "bytes",
        }
    }

    /// The value as a float, if it is numeric or boolean (true = 1).
    pub fn as_f64(&self) -> Option<f64> {
        match *self {
            Value::Bool(b) => Some(if b { 1.0 } else { 0.0 }),
            Value::I64(v) => Some(v as f64),
            Value::U64(v) => Some(v as f64),
            Value::F64(v) => Some(v),
            Value::Str(_) | Value::Bytes(_) => None,
        }
    }

    /// The value as a signed integer, if it is an integer or bool that fits, or a
    /// float with no fractional part that fits.
    pub fn as_i64(&self) -> Option<i64> {
        match *self {
            Value::Bool(b) => Some(i64::from(b)),
            Value::I64(v) => Some(v),
            Value::U64(v) => i64::try_from(v).ok(),
            Value::F64(v) if v.fract() == 0.0 && v >= i64::MIN as f64 && v < i64::MAX as f64 => Some(v as i64),
            _ => None,
        }
    }

    /// The value as a boolean: bools, and integers 0 and 1.
    pub fn as_bool(&self) -> Option<bool> {
        match *self {
            Value::Bool(b) => Some(b),
            Value::I64(0) | Value::U64(0) => Some(false),
            Value::I64(1) | Value::U64(1) => Some(true),
            Value::F64(0.0) => Some(false),
            Value::F64(1.0) => Some(true),
            _ => None,
        }
    }

    /// Bit-exact equality: unlike `==`, NaN equals NaN with the same bits.
    pub fn same(&self, other: &Value) -> bool {
        match (self, other) {
            (Value::F64(a), Value::F64(b)) => a.to_bits() == b.to_bits(),
            _ => self == other,
        }
    }
}

impl fmt::Display for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Value::Bool(v) => write!(f, "{v}"),
            Value::I64(v) => write!(f, "{v}"),
            Value::U64(v) => write!(f, "{v}"),
            Value::F64(v) => write!(f, "{v}"),
            Value::Str(v) => write!(f, "{v:?}"),
            Value::Bytes(v) => write!(f, "<{} bytes>", v.len()),
        }
    }
}

impl From<bool> for Value {
    fn from(v: bool) -> Self {
        Value::Bool(v)
    }
}
impl From<i64> for Value {
    fn from(v: i64) -> Self {
        Value::I64(v)
    }
}
impl From<u64> for Value {
    fn from(v: u64) -> Self {
        Value::U64(v)
    }
}
impl From<f64> for Value {
    fn from(v: f64) -> Self {
        Value::F64(v)
    }
}
impl From<&str> for Value {
    fn from(v: &str) -> Self {
        Value::Str(Arc::from(v))
    }
}

impl Serialize for Value {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Value::Bool(v) => s.serialize_bool(*v),
            Value::I64(v) => s.serialize_i64(*v),
            Value::U64(v) => s.serialize_u64(*v),
            Value::F64(v) if v.is_finite() => s.serialize_f64(*v),
            Value::F64(_) => s.serialize_none(),
            Value::Str(v) => s.serialize_str(v),
            Value::Bytes(v) => {
                let mut m = s.serialize_map(Some(1))?;
                m.serialize_entry("base64", &base64_encode(v))?;
                m.end()
            }
        }
    }
}

impl<'de> Deserialize<'de> for Value {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Value;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a boolean, a number, a string or {\"base64\": \"...\"}")
            }
            fn visit_bool<E: de::Error>(self, v: bool) -> Result<Value, E> {
                Ok(Value::Bool(v))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Value, E> {
                Ok(Value::I64(v))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Value, E> {
                Ok(i64::try_from(v).map_or(Value::U64(v), Value::I64))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Value, E> {
                Ok(Value::F64(v))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Value, E> {
                Ok(Value::Str(Arc::from(v)))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut m: A) -> Result<Value, A::Error> {
                let Some(key) = m.next_key::<String>()? else {
                    return Err(de::Error::custom("expected {\"base64\": \"...\"}, found {}"));
                };
                if key != "base64" {
                    return Err(de::Error::unknown_field(&key, &["base64"]));
                }
                let text: String = m.next_value()?;
                if let Some(k) = m.next_key::<String>()? {
                    return Err(de::Error::unknown_field(&k, &["base64"]));
                }
                base64_decode(&text)
                    .map(|b| Value::Bytes(Arc::from(b)))
                    .ok_or_else(|| de::Error::custom("invalid base64 in bytes value"))
            }
        }
        d.deserialize_any(V)
    }
}

const B64: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/// Standard base64 with padding (RFC 4648), for the JSON form of byte values.
pub(crate) fn base64_encode(data: &[u8]) -> String {
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for chunk in data.chunks(3) {
        let b = [chunk[0], *chunk.get(1).unwrap_or(&0), *chunk.get(2).unwrap_or(&0)];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(B64[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// Decodes standard base64; padding optional. `None` on any invalid character.
pub(crate) fn base64_decode(text: &str) -> Option<Vec<u8>> {
    let text = text.trim_end_matches('=');
    let mut out = Vec::with_capacity(text.len() * 3 / 4);
    let mut acc = 0u32;
    let mut bits = 0;
    for c in text.bytes() {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return None,
        };
        acc = (acc << 6) | u32::from(v);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
        }
    }
    if bits >= 6 {
        return None; // a single dangling character cannot encode a byte
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn value_is_small_enough_for_the_ring() {
        assert_eq!(std::mem::size_of::<Value>(), 24);
    }

    #[test]
    fn json_numbers_keep_their_kind() {
        let v: Value = serde_json::from_str("3").unwrap();
        assert_eq!(v, Value::I64(3));
        let v: Value = serde_json::from_str("18446744073709551615").unwrap();
        assert_eq!(v, Value::U64(u64::MAX));
        let v: Value = serde_json::from_str("-2.5").unwrap();
        assert_eq!(v, Value::F64(-2.5));
        let v: Value = serde_json::from_str("true").unwrap();
        assert_eq!(v, Value::Bool(true));
        assert!(serde_json::from_str::<Value>("null").is_err());
        assert_eq!(serde_json::to_string(&Value::F64(f64::NAN)).unwrap(), "null");
    }

    #[test]
    fn bytes_travel_as_base64_in_json() {
        for len in 0..10 {
            let data: Vec<u8> = (0..len).map(|i| (i * 37 + 250) as u8).collect();
            let v = Value::Bytes(Arc::from(data.clone()));
            let json = serde_json::to_string(&v).unwrap();
            let back: Value = serde_json::from_str(&json).unwrap();
            assert_eq!(back, v, "{json}");
        }
        assert_eq!(base64_encode(b"foobar"), "Zm9vYmFy");
        assert_eq!(base64_encode(b"fo"), "Zm8=");
        assert!(serde_json::from_str::<Value>(r#"{"base64":"@@"}"#).is_err());
        assert!(serde_json::from_str::<Value>(r#"{"hex":"00"}"#).is_err());
    }

    #[test]
    fn conversions_refuse_what_does_not_fit() {
        assert_eq!(Value::U64(u64::MAX).as_i64(), None);
        assert_eq!(Value::F64(2.5).as_i64(), None);
        assert_eq!(Value::F64(2.0).as_i64(), Some(2));
        assert_eq!(Value::I64(2).as_bool(), None);
        assert_eq!(Value::I64(1).as_bool(), Some(true));
        assert_eq!(Value::from("x").as_f64(), None);
    }
}
