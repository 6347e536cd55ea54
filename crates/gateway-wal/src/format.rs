//! The on-disk layout: segment headers, record headers, cursor files, and the
//! scanner that finds valid records in arbitrary bytes. The layout itself is
//! documented in the crate docs; this module is its single implementation.
//!
//! Do not reorder fields or change offsets: files written by earlier builds must
//! stay readable. A change of layout is a new `FORMAT_VERSION`.

use crate::error::Corruption;

/// First eight bytes of every segment.
pub const SEGMENT_MAGIC: [u8; 8] = *b"EGWALSG1";
/// Version of the segment and record layout.
pub const FORMAT_VERSION: u32 = 1;
/// Bytes before the first record of a segment.
pub const SEGMENT_HEADER_LEN: u64 = 32;
/// Bytes before a record's payload.
pub const RECORD_HEADER_LEN: usize = 28;
/// Largest payload accepted; a header that claims more is corrupt.
pub const MAX_RECORD_PAYLOAD: u32 = 64 << 20;
/// Codec byte of a record whose payload is stored uncompressed.
pub const CODEC_RAW: u8 = 0;
/// Payload compressed as one LZ4 block.
pub const CODEC_LZ4: u8 = 1;

/// First eight bytes of a cursor file.
pub const CURSOR_MAGIC: [u8; 8] = *b"EGWALCR1";
/// Magic of the reservation file (same layout as a cursor file).
pub const RESERVE_MAGIC: [u8; 8] = *b"EGWALRS1";
/// Size of a cursor file: magic, position (u64 LE), 4 reserved bytes, CRC32C.
pub const CURSOR_FILE_LEN: usize = 24;

fn u32_at(b: &[u8], at: usize) -> u32 {
    let mut a = [0u8; 4];
    a.copy_from_slice(&b[at..at + 4]);
    u32::from_le_bytes(a)
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(a)
}

/// Bytes of a segment header for a segment whose first record is `base_seq`.
pub fn segment_header(base_seq: u64) -> [u8; SEGMENT_HEADER_LEN as usize] {
    segment_header_with(base_seq, 0)
}

/// Segment flag: the log skipped the sequence numbers before this segment's
/// base on purpose (it was opened with a cursor ahead of the data, which the
/// recovery report said then), so a gap before it is not a new loss. Readers
/// that predate the flag ignore it.
pub const FLAG_AFTER_GAP: u32 = 1;

/// Segment flag: the sequence numbers just before this segment's base were
/// reserved by an earlier run that crashed and were never given to data
/// (see `WalOptions::reserve_seqs`); how many is in header bytes 24..28.
/// Readers pass over them without reporting a gap. Set with
/// [`FLAG_AFTER_GAP`], so that readers that predate it report a gap, as
/// before, and recovery does not count a loss.
pub const FLAG_AFTER_SKIP: u32 = 2;

/// A segment header with `flags` ([`FLAG_AFTER_GAP`]).
pub fn segment_header_with(base_seq: u64, flags: u32) -> [u8; SEGMENT_HEADER_LEN as usize] {
    segment_header_skip(base_seq, flags, 0)
}

/// A segment header with `flags` and, for [`FLAG_AFTER_SKIP`], the count of
/// sequence numbers skipped before `base_seq`.
pub fn segment_header_skip(base_seq: u64, flags: u32, skipped: u32) -> [u8; SEGMENT_HEADER_LEN as usize] {
    let mut h = [0u8; SEGMENT_HEADER_LEN as usize];
    h[0..8].copy_from_slice(&SEGMENT_MAGIC);
    h[8..12].copy_from_slice(&FORMAT_VERSION.to_le_bytes());
    h[12..16].copy_from_slice(&flags.to_le_bytes());
    h[16..24].copy_from_slice(&base_seq.to_le_bytes());
    // 24..28: zero, or the skip's length with FLAG_AFTER_SKIP.
    h[24..28].copy_from_slice(&skipped.to_le_bytes());
    let crc = crc32c::crc32c(&h[0..28]);
    h[28..32].copy_from_slice(&crc.to_le_bytes());
    h
}

/// Parses a segment header; returns its base sequence number.
pub fn parse_segment_header(h: &[u8]) -> Result<u64, Corruption> {
    if h.len() < SEGMENT_HEADER_LEN as usize {
        return Err(Corruption::ShortSegmentHeader(h.len()));
    }
    if h[0..8] != SEGMENT_MAGIC {
        return Err(Corruption::BadSegmentMagic);
    }
    if crc32c::crc32c(&h[0..28]) != u32_at(h, 28) {
        return Err(Corruption::SegmentHeaderChecksum);
    }
    let version = u32_at(h, 8);
    if version != FORMAT_VERSION {
        return Err(Corruption::UnsupportedVersion(version));
    }
    Ok(u64_at(h, 16))
}

/// The flags of a header that [`parse_segment_header`] accepted.
pub fn segment_flags(h: &[u8]) -> u32 {
    u32_at(h, 12)
}

/// Sequence numbers skipped on purpose before the base of a header that
/// [`parse_segment_header`] accepted ([`FLAG_AFTER_SKIP`]); 0 without it.
pub fn segment_skipped(h: &[u8]) -> u64 {
    if segment_flags(h) & FLAG_AFTER_SKIP != 0 { u64::from(u32_at(h, 24)) } else { 0 }
}

/// A record header as read from disk.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RecordHeader {
    /// CRC32C of the stored payload followed by bytes 4..28 of the header.
    pub crc: u32,
    /// Stored payload length (after compression).
    pub stored_len: u32,
    /// First sequence number of the record.
    pub first_seq: u64,
    /// Sequence numbers the record covers (at least 1).
    pub count: u32,
    /// [`CODEC_RAW`] or [`CODEC_LZ4`].
    pub codec: u8,
    /// Payload length before compression.
    pub raw_len: u32,
}

impl RecordHeader {
    /// Header bytes, with the checksum computed from `payload_crc`
    /// (the CRC32C of the stored payload, which callers compute outside locks).
    pub fn encode(&self, payload_crc: u32) -> [u8; RECORD_HEADER_LEN] {
        let mut h = [0u8; RECORD_HEADER_LEN];
        h[4..8].copy_from_slice(&self.stored_len.to_le_bytes());
        h[8..16].copy_from_slice(&self.first_seq.to_le_bytes());
        h[16..20].copy_from_slice(&self.count.to_le_bytes());
        h[20] = self.codec;
        // 21..24 reserved, zero.
        h[24..28].copy_from_slice(&self.raw_len.to_le_bytes());
        // The payload's CRC is computed outside the append lock; extending it
        // with the 24 header bytes is all that happens inside. (Combining CRCs
        // the other way round costs microseconds of GF(2) matrix work.)
        let crc = crc32c::crc32c_append(payload_crc, &h[4..28]);
        h[0..4].copy_from_slice(&crc.to_le_bytes());
        h
    }

    /// Parses and sanity-checks a header (not the checksum, which needs the payload).
    pub fn parse(h: &[u8]) -> Option<RecordHeader> {
        if h.len() < RECORD_HEADER_LEN {
            return None;
        }
        let r = RecordHeader {
            crc: u32_at(h, 0),
            stored_len: u32_at(h, 4),
            first_seq: u64_at(h, 8),
            count: u32_at(h, 16),
            codec: h[20],
            raw_len: u32_at(h, 24),
        };
        let plausible = r.count >= 1
            && h[21..24] == [0, 0, 0]
            && r.stored_len <= MAX_RECORD_PAYLOAD
            && r.raw_len <= MAX_RECORD_PAYLOAD
            && match r.codec {
                CODEC_RAW => r.raw_len == r.stored_len,
                CODEC_LZ4 => true,
                _ => false,
            }
            && r.first_seq.checked_add(u64::from(r.count)).is_some();
        plausible.then_some(r)
    }

    /// Whether `payload` (exactly `stored_len` bytes) matches the checksum.
    pub fn verify(&self, header_bytes: &[u8], payload: &[u8]) -> bool {
        let c = crc32c::crc32c_append(crc32c::crc32c(payload), &header_bytes[4..RECORD_HEADER_LEN]);
        c == self.crc
    }

    /// Sequence number after the record.
    pub fn end_seq(&self) -> u64 {
        self.first_seq + u64::from(self.count)
    }

    /// Bytes the record occupies on disk.
    pub fn disk_len(&self) -> u64 {
        RECORD_HEADER_LEN as u64 + u64::from(self.stored_len)
    }
}

/// What the scanner found at an offset of a buffer.
#[derive(Debug, PartialEq, Eq)]
pub enum Scan {
    /// A whole record starts here and its checksums hold.
    Record(RecordHeader),
    /// The buffer ends before a whole record does: read more, or it is a torn tail.
    NeedMore,
    /// No record starts here: the header or payload fails its checks, or its
    /// sequence numbers are below `min_seq`.
    Invalid,
}

/// Checks for a valid record at `buf[at..]` whose sequence numbers start at or
/// after `min_seq`.
pub fn scan_at(buf: &[u8], at: usize, min_seq: u64) -> Scan {
    let rest = &buf[at.min(buf.len())..];
    if rest.len() < RECORD_HEADER_LEN {
        return Scan::NeedMore;
    }
    let Some(h) = RecordHeader::parse(rest) else {
        return Scan::Invalid;
    };
    if h.first_seq < min_seq {
        return Scan::Invalid;
    }
    let total = h.disk_len() as usize;
    if rest.len() < total {
        return Scan::NeedMore;
    }
    if h.verify(rest, &rest[RECORD_HEADER_LEN..total]) { Scan::Record(h) } else { Scan::Invalid }
}

/// Bytes of a cursor file holding `position`.
pub fn cursor_file(position: u64) -> [u8; CURSOR_FILE_LEN] {
    small_file(CURSOR_MAGIC, position)
}

/// Parses a cursor file; `None` if it is not a valid one.
pub fn parse_cursor_file(b: &[u8]) -> Option<u64> {
    parse_small_file(CURSOR_MAGIC, b)
}

/// The bytes of the reservation file holding `end` (see [`crate::WalOptions::reserve_seqs`]).
pub fn reserve_file(end: u64) -> [u8; CURSOR_FILE_LEN] {
    small_file(RESERVE_MAGIC, end)
}

/// Parses a reservation file; `None` if it is not a valid one.
pub fn parse_reserve_file(b: &[u8]) -> Option<u64> {
    parse_small_file(RESERVE_MAGIC, b)
}

/// `magic`, a little-endian `u64`, four reserved zero bytes, a CRC32C.
fn small_file(magic: [u8; 8], value: u64) -> [u8; CURSOR_FILE_LEN] {
    let mut b = [0u8; CURSOR_FILE_LEN];
    b[0..8].copy_from_slice(&magic);
    b[8..16].copy_from_slice(&value.to_le_bytes());
    // 16..20 reserved, zero.
    let crc = crc32c::crc32c(&b[0..20]);
    b[20..24].copy_from_slice(&crc.to_le_bytes());
    b
}

fn parse_small_file(magic: [u8; 8], b: &[u8]) -> Option<u64> {
    (b.len() == CURSOR_FILE_LEN && b[0..8] == magic && crc32c::crc32c(&b[0..20]) == u32_at(b, 20)).then(|| u64_at(b, 8))
}

/// File name of the segment starting at `base_seq`.
pub fn segment_name(base_seq: u64) -> String {
    format!("{base_seq:020}.seg")
}

/// Base sequence number from a segment file name.
pub fn parse_segment_name(name: &str) -> Option<u64> {
    let digits = name.strip_suffix(".seg")?;
    (digits.len() == 20 && digits.bytes().all(|c| c.is_ascii_digit())).then(|| digits.parse().ok()).flatten()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(first_seq: u64, count: u32, payload: &[u8]) -> Vec<u8> {
        let h = RecordHeader {
            crc: 0,
            stored_len: payload.len() as u32,
            first_seq,
            count,
            codec: CODEC_RAW,
            raw_len: payload.len() as u32,
        };
        let mut v = h.encode(crc32c::crc32c(payload)).to_vec();
        v.extend_from_slice(payload);
        v
    }

    #[test]
    fn record_checksum_covers_header_and_payload() {
        let r = record(5, 3, b"hello");
        assert!(matches!(scan_at(&r, 0, 0), Scan::Record(h) if h.first_seq == 5 && h.count == 3));
        for i in 0..r.len() {
            for bit in 0..8 {
                let mut bad = r.clone();
                bad[i] ^= 1 << bit;
                assert!(!matches!(scan_at(&bad, 0, 0), Scan::Record(_)), "flip of byte {i} bit {bit} went unnoticed");
            }
        }
    }

    #[test]
    fn short_input_asks_for_more_and_zeros_are_invalid() {
        let r = record(0, 1, b"abc");
        for n in 0..r.len() {
            assert_eq!(scan_at(&r[..n], 0, 0), Scan::NeedMore, "{n}");
        }
        assert_eq!(scan_at(&[0u8; 64], 0, 0), Scan::Invalid);
        assert_eq!(scan_at(&r, 0, 1), Scan::Invalid, "sequence below the minimum");
    }

    #[test]
    fn segment_header_and_names_round_trip() {
        let h = segment_header(42);
        assert_eq!(parse_segment_header(&h), Ok(42));
        let mut bad = h;
        bad[17] ^= 1;
        assert_eq!(parse_segment_header(&bad), Err(Corruption::SegmentHeaderChecksum));
        assert_eq!(parse_segment_header(&h[..10]), Err(Corruption::ShortSegmentHeader(10)));
        assert_eq!(parse_segment_name(&segment_name(7)), Some(7));
        assert_eq!(parse_segment_name("7.seg"), None);
        assert_eq!(parse_segment_name("0000000000000000000x.seg"), None);
    }

    #[test]
    fn cursor_files_are_checksummed() {
        assert_eq!(parse_reserve_file(&reserve_file(7)), Some(7));
        assert_eq!(parse_cursor_file(&reserve_file(7)), None, "a reservation is not a cursor");
        let b = cursor_file(99);
        assert_eq!(parse_cursor_file(&b), Some(99));
        let mut bad = b;
        bad[9] ^= 4;
        assert_eq!(parse_cursor_file(&bad), None);
        assert_eq!(parse_cursor_file(&b[..20]), None);
    }
}
