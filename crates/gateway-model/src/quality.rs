//! Quality of a reading: good, uncertain or bad, with a reason code that says why.
//!
//! A driver that fails to read a tag must publish it as `bad` with a reason
//! (timeout, connection lost, a device exception) instead of letting an old
//! `good` value stand: a stale value that looks fresh is the worst thing a
//! gateway can show an operator.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// How far a reading can be trusted.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[repr(u8)]
pub enum QualityLevel {
    /// The value was read from the device just now.
    Good = 0,
    /// A value exists but may not reflect the process (stale, substituted, clamped).
    Uncertain = 1,
    /// No usable value: the read failed.
    Bad = 2,
}

impl QualityLevel {
    /// Lower-case name: `good`, `uncertain`, `bad`.
    pub fn as_str(self) -> &'static str {
        match self {
            QualityLevel::Good => "good",
            QualityLevel::Uncertain => "uncertain",
            QualityLevel::Bad => "bad",
        }
    }

    pub(crate) fn from_u8(v: u8) -> Option<Self> {
        match v {
            0 => Some(QualityLevel::Good),
            1 => Some(QualityLevel::Uncertain),
            2 => Some(QualityLevel::Bad),
            _ => None,
        }
    }
}

/// Why a reading is not good. Codes below 0x100 are the gateway's own;
/// `0x100 | n` is exception code `n` reported by the device's protocol (a
/// Modbus exception, for example).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Reason(pub u16);

macro_rules! reasons {
    ($($(#[$m:meta])* $name:ident = $code:expr, $text:expr;)*) => {
        impl Reason {
            $($(#[$m])* pub const $name: Reason = Reason($code);)*

            /// Stable snake_case name, used in JSON and logs.
            pub fn name(self) -> std::borrow::Cow<'static, str> {
                match self.0 {
                    $($code => std::borrow::Cow::Borrowed($text),)*
                    c @ 0x100..=0x1ff => std::borrow::Cow::Owned(format!("device_exception_{}", c & 0xff)),
                    c => std::borrow::Cow::Owned(format!("reason_{c}")),
                }
            }

            /// Inverse of [`Reason::name`].
            pub fn from_name(name: &str) -> Option<Reason> {
                match name {
                    $($text => Some(Reason($code)),)*
                    _ => {
                        if let Some(n) = name.strip_prefix("device_exception_") {
                            n.parse::<u8>().ok().map(Reason::device_exception)
                        } else if let Some(n) = name.strip_prefix("reason_") {
                            n.parse::<u16>().ok().map(Reason)
                        } else {
                            None
                        }
                    }
                }
            }
        }
    };
}

reasons! {
    /// No reason: the normal case for a good value.
    NONE = 0, "none";
    /// The device did not answer in time.
    TIMEOUT = 1, "timeout";
    /// The connection broke during the request.
    CONNECTION_LOST = 2, "connection_lost";
    /// There is no connection (yet): the device is down or being reconnected.
    NOT_CONNECTED = 3, "not_connected";
    /// The tag's configuration cannot be applied (wrong address, type, ...).
    CONFIG_ERROR = 4, "config_error";
    /// The device's answer could not be decoded as the tag's type.
    DECODE_ERROR = 5, "decode_error";
    /// The value is outside the range the tag allows.
    OUT_OF_RANGE = 6, "out_of_range";
    /// The value was not refreshed within its expected period.
    STALE = 7, "stale";
    /// The device reported a failure of its own.
    DEVICE_FAILURE = 8, "device_failure";
    /// The sensor behind the point failed.
    SENSOR_FAILURE = 9, "sensor_failure";
    /// The device does not support the requested operation.
    NOT_SUPPORTED = 10, "not_supported";
    /// The device answered with a malformed frame.
    MALFORMED_RESPONSE = 11, "malformed_response";
    /// The value is the last one known before communication failed.
    LAST_KNOWN = 12, "last_known_value";
    /// The value was substituted by an operator or a rule.
    SUBSTITUTED = 13, "substituted";
    /// No value has been read yet.
    INITIAL = 14, "initial";
    /// The driver is shutting down.
    SHUTDOWN = 15, "shutdown";
    /// The point does not exist on the device (an unknown node or object).
    NOT_FOUND = 16, "not_found";
    /// The device refuses this access to the point (not readable, not
    /// writable, or not for the user the gateway logs in as).
    ACCESS_DENIED = 17, "access_denied";
    /// The device holds the point as another type than the tag expects.
    TYPE_MISMATCH = 18, "type_mismatch";
}

impl Reason {
    /// Exception code `code` reported by the device's protocol.
    pub const fn device_exception(code: u8) -> Reason {
        Reason(0x100 | code as u16)
    }
}

impl fmt::Debug for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name())
    }
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name())
    }
}

impl Serialize for Reason {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.name())
    }
}

impl<'de> Deserialize<'de> for Reason {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        Reason::from_name(&s).ok_or_else(|| serde::de::Error::custom(format!("unknown quality reason {s:?}")))
    }
}

/// Quality of a reading: a level and the reason for it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Quality {
    /// Good, uncertain or bad.
    pub level: QualityLevel,
    /// Why; [`Reason::NONE`] for good values.
    #[serde(default = "reason_none", skip_serializing_if = "is_none")]
    pub reason: Reason,
}

const fn reason_none() -> Reason {
    Reason::NONE
}

fn is_none(r: &Reason) -> bool {
    *r == Reason::NONE
}

impl Quality {
    /// Level good with reason `none`: what a driver publishes after a read that
    /// succeeded.
    pub const GOOD: Quality = Quality { level: QualityLevel::Good, reason: Reason::NONE };

    /// A bad reading for `reason`.
    pub const fn bad(reason: Reason) -> Quality {
        Quality { level: QualityLevel::Bad, reason }
    }

    /// An uncertain reading for `reason`.
    pub const fn uncertain(reason: Reason) -> Quality {
        Quality { level: QualityLevel::Uncertain, reason }
    }

    /// Whether the level is [`QualityLevel::Good`]; the reason is not looked at.
    pub fn is_good(self) -> bool {
        self.level == QualityLevel::Good
    }
}

impl Default for Quality {
    fn default() -> Self {
        Quality::GOOD
    }
}

impl fmt::Display for Quality {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.reason == Reason::NONE {
            f.write_str(self.level.as_str())
        } else {
            write!(f, "{} ({})", self.level.as_str(), self.reason)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reason_names_round_trip() {
        for code in (0u16..20).chain(0x100..0x110).chain([0x200, 0xffff]) {
            let r = Reason(code);
            assert_eq!(Reason::from_name(&r.name()), Some(r), "{code:#x}");
        }
        assert_eq!(Reason::device_exception(2).name(), "device_exception_2");
        assert_eq!(Reason::from_name("nonsense"), None);
    }

    #[test]
    fn quality_json_omits_an_empty_reason() {
        assert_eq!(serde_json::to_string(&Quality::GOOD).unwrap(), r#"{"level":"good"}"#);
        let q = Quality::bad(Reason::TIMEOUT);
        let json = serde_json::to_string(&q).unwrap();
        assert_eq!(json, r#"{"level":"bad","reason":"timeout"}"#);
        assert_eq!(serde_json::from_str::<Quality>(&json).unwrap(), q);
        assert_eq!(q.to_string(), "bad (timeout)");
    }
}
