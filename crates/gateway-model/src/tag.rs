//! Tag names: `device.point`, validated once when created and then shared as an
//! `Arc<str>`, so cloning a tag on the hot path is one atomic increment.

use std::borrow::Borrow;
use std::fmt;
use std::sync::Arc;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// The longest tag name accepted, in bytes. Long enough for OPC UA browse paths,
/// short enough that a corrupt record cannot make us allocate much.
pub const MAX_TAG_LEN: usize = 256;

/// Why a string is not a valid tag name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TagError {
    /// The name was `""`: a tag needs both a device and a point.
    #[error("tag name is empty")]
    Empty,
    /// The name was longer than [`MAX_TAG_LEN`].
    #[error("tag name is {0} bytes long, the limit is {MAX_TAG_LEN}")]
    TooLong(usize),
    /// There was no `.` between the device and the point.
    #[error("tag name {0:?} has no '.' between device and point (expected device.point)")]
    NoDevice(String),
    /// The device or point part was empty.
    #[error("tag name {0:?} has an empty device or point part")]
    EmptyPart(String),
    /// A character outside `A-Z a-z 0-9 _ - .` (device) or also `/ : #` (point).
    #[error(
        "tag name {name:?} contains {ch:?}; allowed are letters, digits, '_', '-', '.' and, in the point, '/', ':', '#'"
    )]
    BadChar {
        /// The whole name as given, so the message shows where `ch` sits.
        name: String,
        /// The first character that is not allowed.
        ch: char,
    },
}

/// A tag name of the form `device.point`.
///
/// The device is everything before the first `.`; the point may itself contain
/// dots (`line1.motor.speed` is point `motor.speed` of device `line1`).
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TagId(Arc<str>);

impl TagId {
    /// Validate and create a tag name.
    pub fn new(name: &str) -> Result<Self, TagError> {
        validate(name)?;
        Ok(TagId(Arc::from(name)))
    }

    /// Build `device.point` from its parts.
    pub fn from_parts(device: &str, point: &str) -> Result<Self, TagError> {
        Self::new(&format!("{device}.{point}"))
    }

    /// The whole name, `device.point`, exactly as it was validated.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The shared name itself, to keep without copying it.
    pub fn as_arc(&self) -> &Arc<str> {
        &self.0
    }

    /// The device part, before the first `.`.
    pub fn device(&self) -> &str {
        // Validation guarantees the dot exists.
        self.0.split_once('.').map_or(&self.0, |(d, _)| d)
    }

    /// The point part (after the first `.`).
    pub fn point(&self) -> &str {
        self.0.split_once('.').map_or("", |(_, p)| p)
    }

    /// Whether two handles share one allocation (used by the codec's dictionary).
    pub fn ptr_eq(a: &TagId, b: &TagId) -> bool {
        Arc::ptr_eq(&a.0, &b.0)
    }

    /// Address of the shared string, a cheap identity for hashing.
    pub(crate) fn addr(&self) -> usize {
        Arc::as_ptr(&self.0) as *const u8 as usize
    }
}

fn validate(name: &str) -> Result<(), TagError> {
    if name.is_empty() {
        return Err(TagError::Empty);
    }
    if name.len() > MAX_TAG_LEN {
        return Err(TagError::TooLong(name.len()));
    }
    let Some((device, point)) = name.split_once('.') else {
        return Err(TagError::NoDevice(name.to_owned()));
    };
    if device.is_empty() || point.is_empty() {
        return Err(TagError::EmptyPart(name.to_owned()));
    }
    let device_ok = |c: char| c.is_ascii_alphanumeric() || c == '_' || c == '-';
    let point_ok = |c: char| device_ok(c) || matches!(c, '.' | '/' | ':' | '#');
    if let Some(ch) = device.chars().find(|&c| !device_ok(c)) {
        return Err(TagError::BadChar { name: name.to_owned(), ch });
    }
    if let Some(ch) = point.chars().find(|&c| !point_ok(c)) {
        return Err(TagError::BadChar { name: name.to_owned(), ch });
    }
    if point.starts_with('.') || point.ends_with('.') || point.contains("..") {
        return Err(TagError::EmptyPart(name.to_owned()));
    }
    Ok(())
}

impl fmt::Debug for TagId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&*self.0, f)
    }
}

impl fmt::Display for TagId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl AsRef<str> for TagId {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl Borrow<str> for TagId {
    fn borrow(&self) -> &str {
        &self.0
    }
}

impl std::str::FromStr for TagId {
    type Err = TagError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        TagId::new(s)
    }
}

impl Serialize for TagId {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for TagId {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        TagId::new(&s).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_device_and_point_at_the_first_dot() {
        let t = TagId::new("line1.motor.speed").unwrap();
        assert_eq!(t.device(), "line1");
        assert_eq!(t.point(), "motor.speed");
        assert_eq!(t.to_string(), "line1.motor.speed");
    }

    #[test]
    fn rejects_names_that_are_not_device_dot_point() {
        assert_eq!(TagId::new(""), Err(TagError::Empty));
        assert!(matches!(TagId::new("nodot"), Err(TagError::NoDevice(_))));
        assert!(matches!(TagId::new(".x"), Err(TagError::EmptyPart(_))));
        assert!(matches!(TagId::new("x."), Err(TagError::EmptyPart(_))));
        assert!(matches!(TagId::new("a.b..c"), Err(TagError::EmptyPart(_))));
        assert!(matches!(TagId::new("a b.c"), Err(TagError::BadChar { ch: ' ', .. })));
        assert!(matches!(TagId::new("a/b.c"), Err(TagError::BadChar { ch: '/', .. })));
        assert!(TagId::new("plc-1.ns=2;s=x").is_err());
        assert!(TagId::new("plc-1.Objects/Boiler:Temp#2").is_ok());
        assert!(matches!(TagId::new(&format!("a.{}", "x".repeat(300))), Err(TagError::TooLong(_))));
    }

    #[test]
    fn json_form_is_a_plain_string_and_is_validated() {
        let t: TagId = serde_json::from_str("\"a.b\"").unwrap();
        assert_eq!(serde_json::to_string(&t).unwrap(), "\"a.b\"");
        let err = serde_json::from_str::<TagId>("\"ab\"").unwrap_err();
        assert!(err.to_string().contains("no '.'"), "{err}");
    }
}
