//! The gateway's data model: what a reading, a command, an acknowledgement and an
//! event are, how tags are named, and how a batch of frames is written as bytes.
//!
//! Every other crate speaks these types. They are deliberately small and cheap to
//! clone: a tag name is an `Arc<str>`, string and byte values are reference
//! counted, and frames travel in shared [`Batch`]es so that the bus never copies a
//! payload after it was published.
//!
//! This crate must never do I/O and never panic on input: the [`codec`] decodes
//! arbitrary bytes into a value or a [`codec::CodecError`].
//!
//! ```
//! use gateway_model::{Batch, DataFrame, Frame, Quality, TagId, Value, codec};
//!
//! let tag = TagId::new("line1.temperature").unwrap();
//! let batch = Batch::from(vec![Frame::Data(DataFrame::new(tag, Value::F64(21.5), Quality::GOOD, 1_700_000_000_000_000_000))]);
//! let mut bytes = Vec::new();
//! codec::encode_batch(&batch, &mut bytes);
//! let back = codec::decode_batch(&bytes).unwrap();
//! assert_eq!(back, batch);
//! ```

mod field;
mod frame;
mod pattern;
mod quality;
mod secret;
mod span;
mod tag;
mod time;
mod value;

pub mod codec;

pub use field::{FieldError, parse_fields, take_field};
pub use frame::{
    AlarmInfo, AlarmState, Batch, CmdAckFrame, CmdFrame, CmdStatus, DataFrame, EventFrame, Frame, FrameKind, Severity,
};
pub use pattern::{PatternError, TagPattern};
pub use quality::{Quality, QualityLevel, Reason};
pub use secret::{Secret, redact_url};
pub use span::{Span, SpanError};
pub use tag::{TagError, TagId};
pub use time::{RFC3339_MAX_LEN, format_rfc3339_ns, now_ns, parse_rfc3339_ns, write_rfc3339_ns};
pub use value::Value;
