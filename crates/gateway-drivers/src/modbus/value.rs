//! Turning registers and bits into tag values and back: data types, byte
//! orders, bits inside registers, strings, and `scale`/`offset` (applied
//! inversely on writes). Pure functions, so every rule is unit-tested here
//! and nothing a device sends can make them panic.

use std::sync::Arc;

use gateway_model::Value;

use super::config::{DataType, ModbusTagConfig};

/// Why registers could not become a value, or a value registers.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub(crate) enum RegisterValueError {
    /// The response held fewer registers or bits than the tag needs.
    #[error("the response is {got} long, the tag needs {need}")]
    Short { got: usize, need: usize },
    /// A write to a coil or bool tag got a value that is neither a bool nor
    /// 0/1; holds the value's type name. The command is rejected.
    #[error("expected a boolean (true/false or 0/1), got {0}")]
    NotABool(&'static str),
    /// A write to a numeric tag got a string or bytes; holds the type name.
    #[error("expected a number, got {0}")]
    NotANumber(&'static str),
    /// A write to an unscaled integer tag got a number with a fraction
    /// (scaled tags round to the nearest step instead).
    #[error("expected a whole number for {ty}, got {value}")]
    NotAnInteger { ty: &'static str, value: String },
    /// The number does not fit the data type.
    #[error("{value} does not fit in {ty}")]
    OutOfRange { ty: &'static str, value: String },
    /// A string tag was written with something else; holds that value's type name.
    #[error("expected a string, got {0}")]
    NotAString(&'static str),
    /// The string is longer than the tag's registers hold.
    #[error("the string is {len} bytes, the tag holds at most {max}")]
    TooLong { len: usize, max: usize },
}

/// What a write puts on the wire.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Encoded {
    /// The new state of a coil: FC 5, or FC 15 for devices that take only
    /// multiple writes.
    Coil(bool),
    /// One bit of a holding register (read-modify-write).
    Bit(bool),
    /// Whole registers, in wire order.
    Words(Vec<u16>),
}

/// Bytes of a value in big-endian order (`ABCD...`) from its registers in
/// the tag's byte order. `out` must hold `2 * words.len()` bytes.
fn to_canonical(words: &[u16], p: &ModbusTagConfig, word_swap: bool, out: &mut [u8]) {
    let n = words.len();
    for (i, w) in words.iter().enumerate() {
        let src = if word_swap && p.byte_order.swap_words() { n - 1 - i } else { i };
        let [hi, lo] = w.to_be_bytes();
        let (a, b) = if p.byte_order.swap_bytes() { (lo, hi) } else { (hi, lo) };
        out[2 * src] = a;
        out[2 * src + 1] = b;
    }
}

/// Registers in the tag's byte order from big-endian bytes (inverse of [`to_canonical`]).
fn from_canonical(bytes: &[u8], p: &ModbusTagConfig, word_swap: bool) -> Vec<u16> {
    let n = bytes.len() / 2;
    (0..n)
        .map(|i| {
            let src = if word_swap && p.byte_order.swap_words() { n - 1 - i } else { i };
            let (hi, lo) = (bytes[2 * src], bytes[2 * src + 1]);
            if p.byte_order.swap_bytes() { u16::from_be_bytes([lo, hi]) } else { u16::from_be_bytes([hi, lo]) }
        })
        .collect()
}

/// One register as the tag reads it (bytes swapped for `BADC`/`DCBA`).
pub(crate) fn logical_word(w: u16, p: &ModbusTagConfig) -> u16 {
    if p.byte_order.swap_bytes() { w.swap_bytes() } else { w }
}

fn scaled(p: &ModbusTagConfig, raw: Value) -> Value {
    if !p.is_scaled() {
        return raw;
    }
    match raw.as_f64() {
        Some(x) => Value::F64(x * p.scale + p.offset),
        None => raw,
    }
}

/// The value of a coil or discrete input from the bits of a read, starting at the tag.
pub(crate) fn decode_bits(bits: &[bool]) -> Result<Value, RegisterValueError> {
    bits.first().map(|b| Value::Bool(*b)).ok_or(RegisterValueError::Short { got: 0, need: 1 })
}

/// The value of tag `p` from the registers of a read, starting at the tag.
pub(crate) fn decode_words(p: &ModbusTagConfig, words: &[u16]) -> Result<Value, RegisterValueError> {
    let ty = p.data_type();
    let need = usize::from(ty.registers(p.length));
    if words.len() < need {
        return Err(RegisterValueError::Short { got: words.len(), need });
    }
    let words = &words[..need];
    if ty == DataType::String {
        let mut bytes = vec![0u8; need * 2];
        to_canonical(words, p, false, &mut bytes);
        let end = bytes.iter().position(|b| *b == 0).unwrap_or(bytes.len());
        return Ok(Value::Str(Arc::from(String::from_utf8_lossy(&bytes[..end]).as_ref())));
    }
    let mut b = [0u8; 8];
    to_canonical(words, p, true, &mut b[..need * 2]);
    let raw = match ty {
        DataType::Bool => {
            let w = u16::from_be_bytes([b[0], b[1]]);
            Value::Bool(match p.bit {
                Some(bit) => (w >> (bit & 15)) & 1 == 1,
                None => w != 0,
            })
        }
        DataType::I16 => Value::I64(i64::from(i16::from_be_bytes([b[0], b[1]]))),
        DataType::U16 => Value::U64(u64::from(u16::from_be_bytes([b[0], b[1]]))),
        DataType::I32 => Value::I64(i64::from(i32::from_be_bytes([b[0], b[1], b[2], b[3]]))),
        DataType::U32 => Value::U64(u64::from(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))),
        DataType::F32 => Value::F64(f64::from(f32::from_be_bytes([b[0], b[1], b[2], b[3]]))),
        DataType::I64 => Value::I64(i64::from_be_bytes(b)),
        DataType::U64 => Value::U64(u64::from_be_bytes(b)),
        DataType::F64 => Value::F64(f64::from_be_bytes(b)),
        DataType::String => return Err(RegisterValueError::NotAString("registers")),
    };
    Ok(scaled(p, raw))
}

/// A value of the tag's type with nothing in it (false, 0, ""), published
/// with a bad quality when a tag was never read.
pub(crate) fn neutral(p: &ModbusTagConfig) -> Value {
    let ty = p.data_type();
    if p.is_scaled() {
        return Value::F64(0.0);
    }
    match ty {
        DataType::Bool => Value::Bool(false),
        DataType::I16 | DataType::I32 | DataType::I64 => Value::I64(0),
        DataType::U16 | DataType::U32 | DataType::U64 => Value::U64(0),
        DataType::F32 | DataType::F64 => Value::F64(0.0),
        DataType::String => Value::Str(Arc::from("")),
    }
}

fn range_of(ty: DataType) -> (i128, i128) {
    match ty {
        DataType::I16 => (i128::from(i16::MIN), i128::from(i16::MAX)),
        DataType::U16 => (0, i128::from(u16::MAX)),
        DataType::I32 => (i128::from(i32::MIN), i128::from(i32::MAX)),
        DataType::U32 => (0, i128::from(u32::MAX)),
        DataType::I64 => (i128::from(i64::MIN), i128::from(i64::MAX)),
        DataType::U64 => (0, i128::from(u64::MAX)),
        _ => (0, 0),
    }
}

/// The raw integer to write for `v`: exact without scaling, rounded to the
/// nearest step with it (a scaled tag's raw value is necessarily a step).
fn raw_integer(p: &ModbusTagConfig, ty: DataType, v: &Value) -> Result<i128, RegisterValueError> {
    let name = ty.name();
    let raw = if p.is_scaled() {
        let x = v.as_f64().ok_or(RegisterValueError::NotANumber(v.type_name()))?;
        let r = ((x - p.offset) / p.scale).round();
        if !r.is_finite() || r.abs() > 1.0e20 {
            return Err(RegisterValueError::OutOfRange { ty: name, value: v.to_string() });
        }
        r as i128
    } else {
        match *v {
            Value::Bool(b) => i128::from(b),
            Value::I64(x) => i128::from(x),
            Value::U64(x) => i128::from(x),
            Value::F64(x) if x.is_finite() && x.fract() == 0.0 && x.abs() < 1.0e20 => x as i128,
            Value::F64(x) => return Err(RegisterValueError::NotAnInteger { ty: name, value: x.to_string() }),
            Value::Str(_) | Value::Bytes(_) => return Err(RegisterValueError::NotANumber(v.type_name())),
        }
    };
    let (lo, hi) = range_of(ty);
    if raw < lo || raw > hi {
        let shown = if p.is_scaled() { format!("{v} (raw {raw})") } else { v.to_string() };
        return Err(RegisterValueError::OutOfRange { ty: name, value: shown });
    }
    Ok(raw)
}

/// What to write to tag `p` for the commanded value `v`, or why it cannot be.
pub(crate) fn encode(p: &ModbusTagConfig, v: &Value) -> Result<Encoded, RegisterValueError> {
    let ty = p.data_type();
    if ty == DataType::Bool {
        let b = v.as_bool().ok_or(RegisterValueError::NotABool(v.type_name()))?;
        return Ok(if p.area.is_bits() {
            Encoded::Coil(b)
        } else if p.bit.is_some() {
            Encoded::Bit(b)
        } else {
            Encoded::Words(vec![logical_word(u16::from(b), p)])
        });
    }
    if ty == DataType::String {
        let Value::Str(s) = v else { return Err(RegisterValueError::NotAString(v.type_name())) };
        let max = usize::from(p.length.unwrap_or(0)) * 2;
        if s.len() > max {
            return Err(RegisterValueError::TooLong { len: s.len(), max });
        }
        let mut bytes = s.as_bytes().to_vec();
        bytes.resize(max, 0);
        return Ok(Encoded::Words(from_canonical(&bytes, p, false)));
    }
    let bytes: Vec<u8> = match ty {
        DataType::F32 | DataType::F64 => {
            let x = v.as_f64().ok_or(RegisterValueError::NotANumber(v.type_name()))?;
            let x = if p.is_scaled() { (x - p.offset) / p.scale } else { x };
            // Writing NaN or infinity to a set-point is never what an operator meant.
            if !x.is_finite() {
                return Err(RegisterValueError::OutOfRange { ty: ty.name(), value: v.to_string() });
            }
            if ty == DataType::F32 {
                if x.abs() > f64::from(f32::MAX) {
                    return Err(RegisterValueError::OutOfRange { ty: ty.name(), value: v.to_string() });
                }
                (x as f32).to_be_bytes().to_vec()
            } else {
                x.to_be_bytes().to_vec()
            }
        }
        _ => {
            let raw = raw_integer(p, ty, v)?;
            let all = raw.to_be_bytes();
            let n = usize::from(ty.registers(None)) * 2;
            all[16 - n..].to_vec()
        }
    };
    Ok(Encoded::Words(from_canonical(&bytes, p, true)))
}

#[cfg(test)]
mod tests {
    use super::super::config::{Area, ByteOrder};
    use super::*;

    fn reg(ty: DataType, order: ByteOrder) -> ModbusTagConfig {
        ModbusTagConfig { byte_order: order, ..ModbusTagConfig::new(Area::HoldingRegister, 0, ty) }
    }

    #[test]
    fn a_32_bit_value_reads_the_same_in_each_byte_order() {
        // 0x41200000 is 10.0f32; bytes A=41 B=20 C=00 D=00.
        let cases = [
            (ByteOrder::Abcd, [0x4120, 0x0000]),
            (ByteOrder::Badc, [0x2041, 0x0000]),
            (ByteOrder::Cdab, [0x0000, 0x4120]),
            (ByteOrder::Dcba, [0x0000, 0x2041]),
        ];
        for (order, words) in cases {
            let p = reg(DataType::F32, order);
            assert_eq!(decode_words(&p, &words), Ok(Value::F64(10.0)), "{order:?}");
            assert_eq!(encode(&p, &Value::F64(10.0)), Ok(Encoded::Words(words.to_vec())), "{order:?}");
        }
        let p = reg(DataType::U32, ByteOrder::Cdab);
        assert_eq!(decode_words(&p, &[0xCCDD, 0xAABB]), Ok(Value::U64(0xAABB_CCDD)));
        let p = reg(DataType::I32, ByteOrder::Dcba);
        assert_eq!(decode_words(&p, &[0xDDCC, 0xBBAA]), Ok(Value::I64(i64::from(0xAABB_CCDDu32 as i32))));
    }

    #[test]
    fn a_64_bit_value_with_swapped_words_has_its_four_registers_reversed() {
        let p = reg(DataType::U64, ByteOrder::Cdab);
        assert_eq!(decode_words(&p, &[0x7788, 0x5566, 0x3344, 0x1122]), Ok(Value::U64(0x1122_3344_5566_7788)));
        let p = reg(DataType::U64, ByteOrder::Badc);
        assert_eq!(decode_words(&p, &[0x2211, 0x4433, 0x6655, 0x8877]), Ok(Value::U64(0x1122_3344_5566_7788)));
        let p = reg(DataType::I64, ByteOrder::Dcba);
        assert_eq!(decode_words(&p, &[0x8877, 0x6655, 0x4433, 0x2211]), Ok(Value::I64(0x1122_3344_5566_7788)));
    }

    #[test]
    fn every_type_and_order_round_trips_through_encode_and_decode() {
        let values = [
            (DataType::I16, Value::I64(-12345)),
            (DataType::U16, Value::U64(54321)),
            (DataType::I32, Value::I64(-2_000_000_123)),
            (DataType::U32, Value::U64(4_000_000_123)),
            (DataType::I64, Value::I64(-9_000_000_000_000_000_123)),
            (DataType::U64, Value::U64(18_000_000_000_000_000_123)),
            (DataType::F32, Value::F64(f64::from(-1.5e-3f32))),
            (DataType::F64, Value::F64(6.02214076e23)),
            (DataType::Bool, Value::Bool(true)),
        ];
        for order in [ByteOrder::Abcd, ByteOrder::Badc, ByteOrder::Cdab, ByteOrder::Dcba] {
            for (ty, v) in &values {
                let p = reg(*ty, order);
                let Ok(Encoded::Words(w)) = encode(&p, v) else { panic!("{ty:?} {order:?}") };
                assert_eq!(w.len(), usize::from(ty.registers(None)));
                assert_eq!(decode_words(&p, &w).as_ref(), Ok(v), "{ty:?} {order:?}");
            }
        }
    }

    #[test]
    fn strings_end_at_the_first_nul_and_swap_only_bytes() {
        let mut p = reg(DataType::String, ByteOrder::Abcd);
        p.length = Some(3);
        assert_eq!(decode_words(&p, &[0x4142, 0x4300, 0x4444]), Ok(Value::from("ABC")));
        assert_eq!(encode(&p, &Value::from("ABC")), Ok(Encoded::Words(vec![0x4142, 0x4300, 0])));
        assert_eq!(decode_words(&p, &[0x4142, 0x4344, 0x4546]), Ok(Value::from("ABCDEF")));
        p.byte_order = ByteOrder::Dcba;
        assert_eq!(decode_words(&p, &[0x4241, 0x0043, 0]), Ok(Value::from("ABC")));
        assert_eq!(encode(&p, &Value::from("ABC")), Ok(Encoded::Words(vec![0x4241, 0x0043, 0])));
        assert_eq!(encode(&p, &Value::from("ABCDEFG")), Err(RegisterValueError::TooLong { len: 7, max: 6 }));
        assert_eq!(decode_words(&p, &[0xFFFF, 0, 0]), Ok(Value::from("\u{fffd}\u{fffd}")), "invalid UTF-8 is replaced");
    }

    #[test]
    fn bits_are_counted_from_the_least_significant_end() {
        let mut p = reg(DataType::Bool, ByteOrder::Abcd);
        p.bit = Some(0);
        assert_eq!(decode_words(&p, &[0x0001]), Ok(Value::Bool(true)));
        p.bit = Some(15);
        assert_eq!(decode_words(&p, &[0x8000]), Ok(Value::Bool(true)));
        assert_eq!(decode_words(&p, &[0x7FFF]), Ok(Value::Bool(false)));
        assert_eq!(encode(&p, &Value::Bool(true)), Ok(Encoded::Bit(true)));
        p.bit = None;
        assert_eq!(decode_words(&p, &[0x0100]), Ok(Value::Bool(true)), "a register is true when non-zero");
        let coil = ModbusTagConfig::new(Area::Coil, 0, DataType::Bool);
        assert_eq!(encode(&coil, &Value::I64(1)), Ok(Encoded::Coil(true)));
        assert_eq!(encode(&coil, &Value::I64(2)), Err(RegisterValueError::NotABool("i64")));
        assert_eq!(decode_bits(&[true, false]), Ok(Value::Bool(true)));
        assert!(decode_bits(&[]).is_err());
    }

    #[test]
    fn scale_and_offset_apply_on_read_and_inversely_on_write() {
        let mut p = reg(DataType::I16, ByteOrder::Abcd);
        p.scale = 0.1;
        p.offset = -40.0;
        assert_eq!(decode_words(&p, &[650]), Ok(Value::F64(650.0 * 0.1 - 40.0)));
        assert_eq!(encode(&p, &Value::F64(25.0)), Ok(Encoded::Words(vec![650])));
        assert_eq!(encode(&p, &Value::F64(25.04)), Ok(Encoded::Words(vec![650])), "rounded to the nearest step");
        assert!(matches!(encode(&p, &Value::F64(4000.0)), Err(RegisterValueError::OutOfRange { .. })));
        assert_eq!(neutral(&p), Value::F64(0.0));
        let mut f = reg(DataType::F32, ByteOrder::Abcd);
        f.scale = 2.0;
        assert_eq!(encode(&f, &Value::F64(20.0)), encode(&reg(DataType::F32, ByteOrder::Abcd), &Value::F64(10.0)));
    }

    #[test]
    fn values_that_do_not_fit_the_type_are_refused() {
        let u16t = reg(DataType::U16, ByteOrder::Abcd);
        assert!(matches!(encode(&u16t, &Value::I64(65536)), Err(RegisterValueError::OutOfRange { .. })));
        assert!(matches!(encode(&u16t, &Value::I64(-1)), Err(RegisterValueError::OutOfRange { .. })));
        assert!(matches!(encode(&u16t, &Value::F64(1.5)), Err(RegisterValueError::NotAnInteger { .. })));
        assert_eq!(encode(&u16t, &Value::F64(7.0)), Ok(Encoded::Words(vec![7])));
        assert_eq!(encode(&u16t, &Value::from("7")), Err(RegisterValueError::NotANumber("string")));
        let u64t = reg(DataType::U64, ByteOrder::Abcd);
        assert_eq!(encode(&u64t, &Value::U64(u64::MAX)), Ok(Encoded::Words(vec![0xFFFF; 4])));
        let i16t = reg(DataType::I16, ByteOrder::Badc);
        assert_eq!(encode(&i16t, &Value::I64(-2)), Ok(Encoded::Words(vec![0xFEFF])));
        let f32t = reg(DataType::F32, ByteOrder::Abcd);
        assert!(matches!(encode(&f32t, &Value::F64(1e39)), Err(RegisterValueError::OutOfRange { .. })));
        assert!(matches!(encode(&f32t, &Value::F64(f64::NAN)), Err(RegisterValueError::OutOfRange { .. })));
        assert_eq!(
            encode(&reg(DataType::String, ByteOrder::Abcd), &Value::I64(1)),
            Err(RegisterValueError::NotAString("i64"))
        );
    }

    #[test]
    fn short_responses_are_errors_not_panics() {
        for ty in [DataType::U16, DataType::F32, DataType::F64] {
            assert!(matches!(decode_words(&reg(ty, ByteOrder::Cdab), &[]), Err(RegisterValueError::Short { .. })));
        }
        let mut s = reg(DataType::String, ByteOrder::Abcd);
        s.length = Some(10);
        assert_eq!(decode_words(&s, &[0x4141]), Err(RegisterValueError::Short { got: 1, need: 10 }));
    }
}
