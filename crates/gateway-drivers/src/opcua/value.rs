//! OPC UA values and ours: every built-in scalar type to a [`Value`] and
//! back (with range checks for writes), a node's DataType to one of our
//! [`DataType`]s, and a status code to a quality with its reason.

use std::str::FromStr;

use gateway_model::{Quality, Reason, Value, format_rfc3339_ns, now_ns, parse_rfc3339_ns};
use opcua::types::{
    ByteString, DataTypeId, DataValue, DateTime, Guid, LocalizedText, NodeId, StatusCode, SubStatusCode, UAString,
    Variant,
};

use super::config::DataType;

/// 100 ns ticks from 1601-01-01 to 1970-01-01.
const UNIX_EPOCH_TICKS: i64 = 116_444_736_000_000_000;

/// Our type for a node's DataType attribute: the built-in scalar types and
/// the standard types derived from them (`Duration` is a `Double`,
/// `UtcTime` a `DateTime`, an enumeration an `Int32`). `None` for abstract
/// types (`BaseDataType`, `Number`), structures and types of other
/// namespaces: the value's own type decides then.
pub(crate) fn builtin_of(data_type: &NodeId) -> Option<DataType> {
    if data_type.namespace != 0 {
        return None;
    }
    let id = DataTypeId::try_from(data_type.as_u32()?).ok()?;
    Some(match id {
        DataTypeId::Boolean => DataType::Boolean,
        DataTypeId::SByte => DataType::SByte,
        DataTypeId::Byte => DataType::Byte,
        DataTypeId::Int16 => DataType::Int16,
        DataTypeId::UInt16 => DataType::UInt16,
        DataTypeId::Int32 | DataTypeId::Enumeration => DataType::Int32,
        DataTypeId::UInt32 | DataTypeId::IntegerId | DataTypeId::Counter | DataTypeId::Index => DataType::UInt32,
        DataTypeId::Int64 => DataType::Int64,
        DataTypeId::UInt64 => DataType::UInt64,
        DataTypeId::Float => DataType::Float,
        DataTypeId::Double | DataTypeId::Duration => DataType::Double,
        DataTypeId::String | DataTypeId::LocaleId | DataTypeId::NormalizedString => DataType::String,
        DataTypeId::DateTime | DataTypeId::UtcTime => DataType::DateTime,
        DataTypeId::ByteString | DataTypeId::Image => DataType::ByteString,
        DataTypeId::Guid => DataType::Guid,
        DataTypeId::LocalizedText => DataType::LocalizedText,
        _ => return None,
    })
}

/// The type of a scalar value as the server sent it.
pub(crate) fn type_of(v: &Variant) -> Option<DataType> {
    Some(match v {
        Variant::Boolean(_) => DataType::Boolean,
        Variant::SByte(_) => DataType::SByte,
        Variant::Byte(_) => DataType::Byte,
        Variant::Int16(_) => DataType::Int16,
        Variant::UInt16(_) => DataType::UInt16,
        Variant::Int32(_) => DataType::Int32,
        Variant::UInt32(_) => DataType::UInt32,
        Variant::Int64(_) => DataType::Int64,
        Variant::UInt64(_) => DataType::UInt64,
        Variant::Float(_) => DataType::Float,
        Variant::Double(_) => DataType::Double,
        Variant::String(_) => DataType::String,
        Variant::DateTime(_) => DataType::DateTime,
        Variant::ByteString(_) => DataType::ByteString,
        Variant::Guid(_) => DataType::Guid,
        Variant::LocalizedText(_) => DataType::LocalizedText,
        _ => return None,
    })
}

/// The name of a value's kind, for messages (`Int32`, `array`, `ExtensionObject`).
pub(crate) fn kind_of(v: &Variant) -> String {
    match (type_of(v), v) {
        (Some(t), _) => t.name().to_owned(),
        (None, Variant::Array(a)) => format!("an array of {:?}", a.value_type),
        (None, Variant::Empty) => "no value".to_owned(),
        (None, other) => format!("{:?}", other.type_id()),
    }
}

/// A DateTime as text: RFC 3339 in UTC with nanoseconds from 1970 on.
fn date_time_text(dt: &DateTime) -> String {
    let unix_ticks = dt.ticks() - UNIX_EPOCH_TICKS;
    match u64::try_from(unix_ticks) {
        Ok(t) => format_rfc3339_ns(t.saturating_mul(100)),
        Err(_) => dt.to_rfc3339(),
    }
}

/// Our value of a scalar OPC UA value; the reason it has none otherwise.
pub(crate) fn to_value(v: &Variant) -> Result<Value, (Reason, String)> {
    Ok(match v {
        Variant::Boolean(b) => Value::Bool(*b),
        Variant::SByte(x) => Value::I64(i64::from(*x)),
        Variant::Byte(x) => Value::U64(u64::from(*x)),
        Variant::Int16(x) => Value::I64(i64::from(*x)),
        Variant::UInt16(x) => Value::U64(u64::from(*x)),
        Variant::Int32(x) => Value::I64(i64::from(*x)),
        Variant::UInt32(x) => Value::U64(u64::from(*x)),
        Variant::Int64(x) => Value::I64(*x),
        Variant::UInt64(x) => Value::U64(*x),
        Variant::Float(x) => Value::F64(f64::from(*x)),
        Variant::Double(x) => Value::F64(*x),
        Variant::String(s) => Value::Str(s.as_ref().into()),
        Variant::DateTime(dt) => Value::Str(date_time_text(dt).into()),
        Variant::ByteString(b) => Value::Bytes(b.value.as_deref().unwrap_or_default().into()),
        Variant::Guid(g) => Value::Str(g.to_string().into()),
        Variant::LocalizedText(t) => Value::Str(t.text.as_ref().into()),
        Variant::Array(_) => {
            return Err((Reason::NOT_SUPPORTED, "the node holds an array; a tag holds one scalar value".into()));
        }
        Variant::Empty => return Err((Reason::DECODE_ERROR, "the server sent no value".into())),
        other => {
            return Err((
                Reason::NOT_SUPPORTED,
                format!("the node holds a {:?}, which is not a built-in scalar type", other.type_id()),
            ));
        }
    })
}

/// The value a tag that was never read carries while bad.
pub(crate) fn neutral(ty: Option<DataType>) -> Value {
    match ty {
        Some(DataType::Boolean) => Value::Bool(false),
        Some(DataType::SByte | DataType::Int16 | DataType::Int32 | DataType::Int64) => Value::I64(0),
        Some(DataType::Byte | DataType::UInt16 | DataType::UInt32 | DataType::UInt64) => Value::U64(0),
        Some(DataType::Float | DataType::Double) | None => Value::F64(0.0),
        Some(DataType::ByteString) => Value::Bytes(Vec::new().into()),
        Some(DataType::String | DataType::DateTime | DataType::Guid | DataType::LocalizedText) => Value::Str("".into()),
    }
}

/// The value of a write of `v` to a node of type `ty`, or why it does not fit.
pub(crate) fn to_variant(ty: DataType, v: &Value) -> Result<Variant, String> {
    fn int<T: TryFrom<i64> + TryFrom<u64>>(v: &Value, name: &str) -> Result<T, String> {
        let fits = |r: Option<T>| r.ok_or_else(|| format!("{} does not fit in {name}", describe(v)));
        match v {
            Value::I64(i) => fits(T::try_from(*i).ok()),
            Value::U64(u) => fits(T::try_from(*u).ok()),
            Value::F64(f) if f.fract() == 0.0 && f.is_finite() && f.abs() < 9.2e18 => fits(T::try_from(*f as i64).ok()),
            Value::Bool(b) => fits(T::try_from(i64::from(*b)).ok()),
            _ => Err(format!("{} is not an integer for {name}", describe(v))),
        }
    }
    let text = || match v {
        Value::Str(s) => Ok(s.to_string()),
        other => Err(format!("{} is not text for {}", describe(other), ty.name())),
    };
    Ok(match ty {
        DataType::Boolean => match v {
            Value::Bool(b) => Variant::Boolean(*b),
            Value::I64(0) | Value::U64(0) => Variant::Boolean(false),
            Value::I64(1) | Value::U64(1) => Variant::Boolean(true),
            other => return Err(format!("{} is not a Boolean (true, false, 0 or 1)", describe(other))),
        },
        DataType::SByte => Variant::SByte(int(v, "SByte")?),
        DataType::Byte => Variant::Byte(int(v, "Byte")?),
        DataType::Int16 => Variant::Int16(int(v, "Int16")?),
        DataType::UInt16 => Variant::UInt16(int(v, "UInt16")?),
        DataType::Int32 => Variant::Int32(int(v, "Int32")?),
        DataType::UInt32 => Variant::UInt32(int(v, "UInt32")?),
        DataType::Int64 => Variant::Int64(int(v, "Int64")?),
        DataType::UInt64 => Variant::UInt64(int(v, "UInt64")?),
        DataType::Float | DataType::Double => {
            let f = match v {
                Value::Bool(_) | Value::Str(_) | Value::Bytes(_) => {
                    return Err(format!("{} is not a number for {}", describe(v), ty.name()));
                }
                other => other.as_f64().unwrap_or(f64::NAN),
            };
            if ty == DataType::Double {
                Variant::Double(f)
            } else if f.is_finite() && f.abs() > f64::from(f32::MAX) {
                return Err(format!("{f} does not fit in Float"));
            } else {
                Variant::Float(f as f32)
            }
        }
        DataType::String => Variant::String(UAString::from(text()?)),
        DataType::LocalizedText => Variant::LocalizedText(Box::new(LocalizedText::new("", &text()?))),
        DataType::Guid => {
            let t = text()?;
            Variant::Guid(Box::new(Guid::from_str(&t).map_err(|_| format!("{t:?} is not a GUID"))?))
        }
        DataType::DateTime => {
            let t = text()?;
            let ns =
                parse_rfc3339_ns(&t).ok_or_else(|| format!("{t:?} is not an RFC 3339 time (2024-05-01T12:00:00Z)"))?;
            let ticks = i64::try_from(ns / 100).unwrap_or(i64::MAX - UNIX_EPOCH_TICKS) + UNIX_EPOCH_TICKS;
            Variant::DateTime(Box::new(DateTime::from(ticks)))
        }
        DataType::ByteString => match v {
            Value::Bytes(b) => Variant::ByteString(ByteString::from(b.to_vec())),
            other => return Err(format!("{} is not bytes for ByteString", describe(other))),
        },
    })
}

/// A value for a message: its type and, for short ones, itself.
fn describe(v: &Value) -> String {
    match v {
        Value::Str(s) if s.len() > 40 => format!("a string of {} bytes", s.len()),
        Value::Bytes(b) => format!("{} bytes", b.len()),
        other => format!("{} {}", other.type_name(), serde_json::to_string(other).unwrap_or_default()),
    }
}

/// The quality of a value with status `status`.
pub(crate) fn quality_of(status: StatusCode) -> Quality {
    if status.is_good() {
        Quality::GOOD
    } else if status.is_uncertain() {
        Quality::uncertain(reason_of(status))
    } else {
        Quality::bad(reason_of(status))
    }
}

/// Our reason for an OPC UA status (the exact status goes to the logs and
/// to the device's status).
pub(crate) fn reason_of(status: StatusCode) -> Reason {
    use SubStatusCode as S;
    match status.sub_code() {
        S::Good => Reason::NONE,
        S::BadNodeIdUnknown | S::BadNodeIdInvalid | S::BadAttributeIdInvalid | S::BadNoMatch => Reason::NOT_FOUND,
        S::BadNotReadable
        | S::BadNotWritable
        | S::BadUserAccessDenied
        | S::BadSecurityModeInsufficient
        | S::BadIdentityTokenInvalid
        | S::BadIdentityTokenRejected => Reason::ACCESS_DENIED,
        S::BadTypeMismatch | S::BadDataTypeIdUnknown | S::BadDataEncodingInvalid => Reason::TYPE_MISMATCH,
        S::BadTimeout | S::BadRequestTimeout => Reason::TIMEOUT,
        S::BadConnectionClosed
        | S::BadCommunicationError
        | S::BadSecureChannelClosed
        | S::BadSessionClosed
        | S::BadSessionIdInvalid
        | S::BadTcpInternalError
        | S::BadConnectionRejected
        | S::BadDisconnect => Reason::CONNECTION_LOST,
        S::BadNotConnected | S::BadServerNotConnected | S::BadNoCommunication => Reason::NOT_CONNECTED,
        S::BadWaitingForInitialData | S::UncertainInitialValue => Reason::INITIAL,
        S::BadDeviceFailure | S::BadOutOfService => Reason::DEVICE_FAILURE,
        S::BadSensorFailure | S::UncertainSensorNotAccurate | S::UncertainSensorCalibration => Reason::SENSOR_FAILURE,
        S::BadOutOfRange | S::UncertainEngineeringUnitsExceeded => Reason::OUT_OF_RANGE,
        S::BadNotSupported
        | S::BadFilterNotAllowed
        | S::BadMonitoredItemFilterUnsupported
        | S::BadMonitoredItemFilterInvalid => Reason::NOT_SUPPORTED,
        S::BadConfigurationError => Reason::CONFIG_ERROR,
        S::BadShutdown | S::BadServerHalted => Reason::SHUTDOWN,
        S::BadDecodingError | S::BadEncodingError | S::BadEncodingLimitsExceeded => Reason::MALFORMED_RESPONSE,
        S::UncertainLastUsableValue | S::UncertainNoCommunicationLastUsableValue => Reason::LAST_KNOWN,
        S::UncertainSubstituteValue => Reason::SUBSTITUTED,
        _ if status.is_uncertain() => Reason::NONE,
        _ => Reason::DEVICE_FAILURE,
    }
}

/// The time of a value: its source timestamp, else the server's, else now (ns since 1970).
pub(crate) fn timestamp_ns(dv: &DataValue) -> u64 {
    dv.source_timestamp
        .as_ref()
        .or(dv.server_timestamp.as_ref())
        .and_then(|t| u64::try_from(t.ticks() - UNIX_EPOCH_TICKS).ok())
        .filter(|&t| t > 0)
        .map_or_else(now_ns, |t| t.saturating_mul(100))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_builtin_scalar_maps_to_a_value_and_writes_back_as_its_own_type() {
        let dt = DateTime::from(UNIX_EPOCH_TICKS + 17_000_000_000_000_005);
        let guid = Guid::from_str("72962b91-fa75-4ae6-8d28-b404dc7daf63").unwrap();
        let cases: Vec<(Variant, Value)> = vec![
            (Variant::Boolean(true), Value::Bool(true)),
            (Variant::SByte(-5), Value::I64(-5)),
            (Variant::Byte(250), Value::U64(250)),
            (Variant::Int16(-30000), Value::I64(-30000)),
            (Variant::UInt16(60000), Value::U64(60000)),
            (Variant::Int32(-2_000_000_000), Value::I64(-2_000_000_000)),
            (Variant::UInt32(4_000_000_000), Value::U64(4_000_000_000)),
            (Variant::Int64(i64::MIN), Value::I64(i64::MIN)),
            (Variant::UInt64(u64::MAX), Value::U64(u64::MAX)),
            (Variant::Float(1.5), Value::F64(1.5)),
            (Variant::Double(-2.25), Value::F64(-2.25)),
            (Variant::String("héllo".into()), Value::Str("héllo".into())),
            (Variant::DateTime(Box::new(dt)), Value::Str("2023-11-14T22:13:20.000000500Z".into())),
            (Variant::ByteString(ByteString::from(vec![1, 2, 3])), Value::Bytes(vec![1u8, 2, 3].into())),
            (Variant::Guid(Box::new(guid)), Value::Str("72962b91-fa75-4ae6-8d28-b404dc7daf63".into())),
            (Variant::LocalizedText(Box::new(LocalizedText::new("en", "Hi"))), Value::Str("Hi".into())),
        ];
        for (variant, value) in cases {
            assert_eq!(to_value(&variant).unwrap(), value, "{variant:?}");
            let ty = type_of(&variant).unwrap();
            let back = to_variant(ty, &value).unwrap();
            if ty == DataType::LocalizedText {
                assert_eq!(back, Variant::LocalizedText(Box::new(LocalizedText::new("", "Hi"))));
            } else {
                assert_eq!(back, variant, "{ty:?}");
            }
        }
        let arr = Variant::from(vec![1i32, 2]);
        assert_eq!(to_value(&arr).unwrap_err().0, Reason::NOT_SUPPORTED);
        assert_eq!(to_value(&Variant::Empty).unwrap_err().0, Reason::DECODE_ERROR);
    }

    #[test]
    fn writes_that_do_not_fit_the_type_are_refused_with_the_reason() {
        assert!(to_variant(DataType::Byte, &Value::I64(256)).unwrap_err().contains("does not fit in Byte"));
        assert!(to_variant(DataType::UInt32, &Value::I64(-1)).is_err());
        assert_eq!(to_variant(DataType::Int16, &Value::F64(12.0)).unwrap(), Variant::Int16(12));
        assert!(to_variant(DataType::Int16, &Value::F64(12.5)).unwrap_err().contains("not an integer"));
        assert!(to_variant(DataType::Float, &Value::F64(1e300)).unwrap_err().contains("does not fit in Float"));
        assert!(to_variant(DataType::Double, &Value::Str("1".into())).is_err());
        assert!(to_variant(DataType::Boolean, &Value::I64(2)).is_err());
        assert_eq!(to_variant(DataType::Boolean, &Value::I64(1)).unwrap(), Variant::Boolean(true));
        assert!(to_variant(DataType::DateTime, &Value::Str("yesterday".into())).unwrap_err().contains("RFC 3339"));
        assert!(to_variant(DataType::String, &Value::I64(1)).unwrap_err().contains("not text"));
    }

    #[test]
    fn status_codes_map_to_quality_with_a_reason() {
        assert_eq!(quality_of(StatusCode::Good), Quality::GOOD);
        assert_eq!(quality_of(StatusCode::BadNodeIdUnknown), Quality::bad(Reason::NOT_FOUND));
        assert_eq!(quality_of(StatusCode::BadUserAccessDenied), Quality::bad(Reason::ACCESS_DENIED));
        assert_eq!(quality_of(StatusCode::BadTypeMismatch), Quality::bad(Reason::TYPE_MISMATCH));
        assert_eq!(quality_of(StatusCode::BadSensorFailure), Quality::bad(Reason::SENSOR_FAILURE));
        assert_eq!(quality_of(StatusCode::UncertainLastUsableValue), Quality::uncertain(Reason::LAST_KNOWN));
        assert_eq!(quality_of(StatusCode::Uncertain), Quality::uncertain(Reason::NONE));
        assert_eq!(quality_of(StatusCode::BadInternalError), Quality::bad(Reason::DEVICE_FAILURE));
        assert_eq!(builtin_of(&DataTypeId::Duration.into()), Some(DataType::Double));
        assert_eq!(builtin_of(&DataTypeId::UtcTime.into()), Some(DataType::DateTime));
        assert_eq!(builtin_of(&DataTypeId::BaseDataType.into()), None);
        assert_eq!(builtin_of(&NodeId::new(2, 3003u32)), None);
    }
}
