//! Bus configuration in its two forms: [`BusConfig`], the `[bus]` section as
//! written (a preset plus any field, explicit fields winning), and
//! [`BusSettings`], what the bus runs with once the preset and the overrides
//! are resolved and validated. The four presets carry the original gateway's
//! values; every error names the bad field.

use std::path::{Path, PathBuf};
use std::time::Duration;

use gateway_model::FieldError;
use serde::{Deserialize, Serialize};

fn err<T>(field: &'static str, reason: impl std::fmt::Display) -> Result<T, FieldError> {
    Err(FieldError::new(field, reason))
}

/// Where published frames are kept.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Persistence {
    /// Every batch is appended to the write-ahead log before subscribers see it.
    Wal,
    /// Memory only: nothing survives a restart. For tests and for users who ask for it.
    Memory,
}

/// When a WAL append counts as durable.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WalDurability {
    /// Group commit every `wal_flush_ms`.
    Interval,
    /// `fdatasync` as soon as possible after each append (concurrent appends share syncs).
    Always,
    /// Never sync while running; survives a process crash, not a power loss.
    None,
}

/// What happens when the WAL reaches `wal_max_bytes`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WalOverflow {
    /// Publishers wait until consumers acknowledge.
    Block,
    /// The oldest unread data is deleted and counted.
    DropOldest,
}

/// Per-record WAL compression (`wal_compression`); records written with one
/// setting stay readable under the other.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WalCompression {
    /// Off (the default: the codec is already compact).
    None,
    /// LZ4 for records of 128 bytes or more, kept only where it saves space.
    Lz4,
}

/// Batching of frames published one at a time (see [`crate::Batcher`]).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BatchSettings {
    /// A batcher publishes as soon as it holds this many frames; 1 to half the
    /// ring, default 2000.
    pub max_batch_size: usize,
    /// A batch is published at the latest this long after its first frame.
    pub flush_interval: Duration,
    /// Bytes a batcher may hold before it publishes early.
    pub max_memory_bytes: usize,
}

impl Default for BatchSettings {
    fn default() -> Self {
        BatchSettings { max_batch_size: 2000, flush_interval: Duration::from_millis(1), max_memory_bytes: 8 << 20 }
    }
}

/// What the bus runs with: a preset's values with the explicit fields of
/// `[bus]` applied ([`BusConfig::resolve`]), or a preset's values as they are
/// ([`Preset::settings`]).
#[derive(Clone, Debug, PartialEq)]
pub struct BusSettings {
    /// The preset these values started from (explicit fields may have changed some).
    pub preset: Preset,
    /// The ring holds at most `2^ring_pow` frames.
    pub ring_pow: u8,
    /// Ring usage (fraction of capacity held for lossless subscribers) above
    /// which publishers pause.
    pub pause_hi: f64,
    /// Usage below which paused publishers resume.
    pub resume_lo: f64,
    /// Directory of the write-ahead log.
    pub wal_dir: PathBuf,
    /// Group commit interval in milliseconds under `wal_durability = interval`
    /// (at most 60000); other durabilities ignore it.
    pub wal_flush_ms: u64,
    /// Cap on the WAL's size on disk.
    pub wal_max_bytes: u64,
    /// Frames that may wait to be written to the WAL; also how far behind the
    /// head a durable subscriber may be before it reads from the WAL instead
    /// of holding frames in the ring.
    pub async_write_queue_size: usize,
    /// Fraction of `async_write_queue_size` at which publishers pause
    /// (they resume below `resume_lo` of it).
    pub backpressure_threshold: f64,
    /// Pre-allocate and pre-fault the ring's slot array at start (one slot,
    /// 16 bytes, per 16 frames of ring capacity), so the hot path does not
    /// allocate or page-fault; off, the array grows on demand.
    pub high_performance_mode: bool,
    /// How a [`crate::Batcher`] groups frames published one at a time.
    pub batch: BatchSettings,
    /// Whether batches go through the WAL (default) or stay in memory only.
    pub persistence: Persistence,
    /// When a WAL append counts as durable; default `interval`.
    pub wal_durability: WalDurability,
    /// What happens when the WAL reaches `wal_max_bytes`; default `drop_oldest`.
    pub wal_overflow: WalOverflow,
    /// Per-record WAL compression; default `none`.
    pub wal_compression: WalCompression,
    /// WAL segment size; `None` picks `min(64 MiB, wal_max_bytes / 8)`.
    pub wal_segment_bytes: Option<u64>,
}

const GIB: u64 = 1 << 30;

impl Default for BusSettings {
    fn default() -> Self {
        Self::default_preset()
    }
}

/// The named sets of values a `[bus]` section starts from (`preset = "..."`);
/// explicit fields override them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Preset {
    /// Balanced: ring 2^20, 10 ms group commit, 8 GiB WAL.
    #[default]
    Default,
    /// Ring 2^21, 5 ms group commit, 16 GiB WAL.
    HighThroughput,
    /// Ring 2^19, 1 ms group commit, 4 GiB WAL.
    LowLatency,
    /// Ring 2^17, 20 ms group commit, 2 GiB WAL, nothing pre-allocated.
    MemoryOptimized,
}

impl Preset {
    /// All presets, in the order the documentation lists them.
    pub const ALL: [Preset; 4] = [Preset::Default, Preset::HighThroughput, Preset::LowLatency, Preset::MemoryOptimized];

    /// The preset's name in configuration files.
    pub fn name(self) -> &'static str {
        match self {
            Preset::Default => "default",
            Preset::HighThroughput => "high_throughput",
            Preset::LowLatency => "low_latency",
            Preset::MemoryOptimized => "memory_optimized",
        }
    }

    /// The preset's values: the original gateway's, as its performance budget lists them.
    pub fn settings(self) -> BusSettings {
        let base = BusSettings {
            preset: self,
            ring_pow: 20,
            pause_hi: 0.85,
            resume_lo: 0.70,
            wal_dir: PathBuf::from("wal"),
            wal_flush_ms: 10,
            wal_max_bytes: 8 * GIB,
            async_write_queue_size: 50_000,
            backpressure_threshold: 0.90,
            high_performance_mode: true,
            batch: BatchSettings::default(),
            persistence: Persistence::Wal,
            wal_durability: WalDurability::Interval,
            wal_overflow: WalOverflow::DropOldest,
            wal_compression: WalCompression::None,
            wal_segment_bytes: None,
        };
        match self {
            Preset::Default => base,
            Preset::HighThroughput => BusSettings {
                ring_pow: 21,
                pause_hi: 0.90,
                resume_lo: 0.75,
                wal_flush_ms: 5,
                wal_max_bytes: 16 * GIB,
                async_write_queue_size: 100_000,
                backpressure_threshold: 0.95,
                ..base
            },
            Preset::LowLatency => BusSettings {
                ring_pow: 19,
                pause_hi: 0.80,
                resume_lo: 0.60,
                wal_flush_ms: 1,
                wal_max_bytes: 4 * GIB,
                async_write_queue_size: 20_000,
                backpressure_threshold: 0.85,
                ..base
            },
            Preset::MemoryOptimized => BusSettings {
                ring_pow: 17,
                pause_hi: 0.75,
                resume_lo: 0.50,
                wal_flush_ms: 20,
                wal_max_bytes: 2 * GIB,
                async_write_queue_size: 5_000,
                backpressure_threshold: 0.80,
                high_performance_mode: false,
                ..base
            },
        }
    }
}

impl std::fmt::Display for Preset {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl BusSettings {
    /// The `default` preset.
    pub fn default_preset() -> Self {
        Preset::Default.settings()
    }
    /// The `high_throughput` preset.
    pub fn high_throughput() -> Self {
        Preset::HighThroughput.settings()
    }
    /// The `low_latency` preset.
    pub fn low_latency() -> Self {
        Preset::LowLatency.settings()
    }
    /// The `memory_optimized` preset.
    pub fn memory_optimized() -> Self {
        Preset::MemoryOptimized.settings()
    }

    /// Frames the ring holds at most.
    pub fn capacity(&self) -> u64 {
        1u64 << self.ring_pow
    }

    /// The WAL segment size in bytes: `wal_segment_bytes` if set, else
    /// `min(64 MiB, wal_max_bytes / 8)` but at least 64 KiB.
    pub fn segment_bytes(&self) -> u64 {
        self.wal_segment_bytes.unwrap_or_else(|| (64 << 20).min(self.wal_max_bytes / 8).max(64 << 10))
    }

    /// Checks every field; the error names the first bad one.
    pub fn validate(&self) -> Result<(), FieldError> {
        if !(10..=25).contains(&self.ring_pow) {
            return err("ring_pow", format!("must be between 10 and 25 (2^10 to 2^25 frames), got {}", self.ring_pow));
        }
        let frac = |v: f64| v.is_finite() && v > 0.0 && v <= 1.0;
        if !frac(self.pause_hi) {
            return err("pause_hi", format!("must be in (0, 1], got {}", self.pause_hi));
        }
        if !(self.resume_lo.is_finite() && self.resume_lo >= 0.0 && self.resume_lo < self.pause_hi) {
            return err(
                "resume_lo",
                format!("must be at least 0 and below pause_hi ({}), got {}", self.pause_hi, self.resume_lo),
            );
        }
        if !frac(self.backpressure_threshold) {
            return err("backpressure_threshold", format!("must be in (0, 1], got {}", self.backpressure_threshold));
        }
        if self.backpressure_threshold <= self.resume_lo {
            return err(
                "backpressure_threshold",
                format!("must be above resume_lo ({}), got {}", self.resume_lo, self.backpressure_threshold),
            );
        }
        let half = self.capacity() / 2;
        if self.async_write_queue_size == 0 || self.async_write_queue_size as u64 > half {
            return err(
                "async_write_queue_size",
                format!("must be between 1 and half the ring ({half} frames), got {}", self.async_write_queue_size),
            );
        }
        if self.wal_flush_ms > 60_000 {
            return err("wal_flush_ms", format!("must be at most 60000, got {}", self.wal_flush_ms));
        }
        if self.wal_max_bytes < 1 << 20 {
            return err("wal_max_bytes", format!("must be at least 1 MiB, got {}", self.wal_max_bytes));
        }
        if let Some(s) = self.wal_segment_bytes
            && (s < 64 << 10 || s.saturating_mul(2) > self.wal_max_bytes)
        {
            return err(
                "wal_segment_bytes",
                format!("must be at least 64 KiB and at most half of wal_max_bytes ({}), got {s}", self.wal_max_bytes),
            );
        }
        if self.persistence == Persistence::Wal && self.wal_dir.as_os_str().is_empty() {
            return err("wal_dir", "must not be empty when persistence is wal");
        }
        let b = &self.batch;
        if b.max_batch_size == 0 || b.max_batch_size as u64 > half {
            return err(
                "batch.max_batch_size",
                format!("must be between 1 and half the ring ({half} frames), got {}", b.max_batch_size),
            );
        }
        if b.flush_interval > Duration::from_secs(10) {
            return err(
                "batch.flush_interval_ms",
                format!("must be at most 10000, got {}", b.flush_interval.as_millis()),
            );
        }
        if b.max_memory_bytes < 64 << 10 {
            return err("batch.max_memory_bytes", format!("must be at least 65536, got {}", b.max_memory_bytes));
        }
        Ok(())
    }
}

/// `[bus.batch]` in the configuration file: any field overrides the preset's.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BatchConfig {
    /// Frames per batch at most (default 2000).
    pub max_batch_size: Option<usize>,
    /// Milliseconds after its first frame by which a batch is published (default 1).
    pub flush_interval_ms: Option<u64>,
    /// Bytes a batcher may hold before publishing early (default 8 MiB).
    pub max_memory_bytes: Option<usize>,
}

/// `[bus]` in the configuration file: a preset plus any field, explicit fields winning.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BusConfig {
    /// `default`, `high_throughput`, `low_latency` or `memory_optimized`.
    #[serde(default)]
    pub preset: Preset,
    /// Ring capacity as a power of two, in frames (10..=25).
    pub ring_pow: Option<u8>,
    /// Ring usage fraction that pauses publishers.
    pub pause_hi: Option<f64>,
    /// Ring usage fraction that resumes them.
    pub resume_lo: Option<f64>,
    /// WAL directory; relative paths are inside the data directory.
    pub wal_dir: Option<PathBuf>,
    /// WAL group commit interval in milliseconds.
    pub wal_flush_ms: Option<u64>,
    /// WAL size cap in bytes (at least 1 MiB); what happens there is `wal_overflow`.
    pub wal_max_bytes: Option<u64>,
    /// Frames that may wait for the WAL before publishers pause.
    pub async_write_queue_size: Option<usize>,
    /// Fraction of that queue at which publishers pause.
    pub backpressure_threshold: Option<f64>,
    /// Pre-allocate the ring at start.
    pub high_performance_mode: Option<bool>,
    /// `wal` (default) or `memory`.
    pub persistence: Option<Persistence>,
    /// `interval` (default), `always` or `none`.
    pub wal_durability: Option<WalDurability>,
    /// `drop_oldest` (default) or `block`.
    pub wal_overflow: Option<WalOverflow>,
    /// `none` (default) or `lz4`.
    pub wal_compression: Option<WalCompression>,
    /// WAL segment size in bytes (default: min(64 MiB, wal_max_bytes / 8)).
    pub wal_segment_bytes: Option<u64>,
    /// `[bus.batch]`: how frames published one at a time are grouped.
    #[serde(default)]
    pub batch: BatchConfig,
}

impl BusConfig {
    /// The preset with the explicit fields applied, `wal_dir` resolved against
    /// `data_dir`, validated.
    pub fn resolve(&self, data_dir: &Path) -> Result<BusSettings, FieldError> {
        let mut c = self.preset.settings();
        macro_rules! set {
            ($($f:ident),*) => { $(if let Some(v) = self.$f.clone() { c.$f = v; })* };
        }
        set!(
            ring_pow,
            pause_hi,
            resume_lo,
            wal_dir,
            wal_flush_ms,
            wal_max_bytes,
            async_write_queue_size,
            backpressure_threshold,
            high_performance_mode,
            persistence,
            wal_durability,
            wal_overflow,
            wal_compression
        );
        if self.wal_segment_bytes.is_some() {
            c.wal_segment_bytes = self.wal_segment_bytes;
        }
        if let Some(v) = self.batch.max_batch_size {
            c.batch.max_batch_size = v;
        }
        if let Some(v) = self.batch.flush_interval_ms {
            c.batch.flush_interval = Duration::from_millis(v);
        }
        if let Some(v) = self.batch.max_memory_bytes {
            c.batch.max_memory_bytes = v;
        }
        if c.wal_dir.is_relative() {
            c.wal_dir = data_dir.join(&c.wal_dir);
        }
        c.validate()?;
        Ok(c)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn presets_carry_the_original_values() {
        let t: Vec<_> = Preset::ALL
            .iter()
            .map(|p| {
                let c = p.settings();
                (
                    c.ring_pow,
                    c.wal_flush_ms,
                    c.wal_max_bytes / GIB,
                    c.async_write_queue_size,
                    (c.backpressure_threshold * 100.0).round() as u32,
                    c.pause_hi,
                    c.resume_lo,
                    c.high_performance_mode,
                )
            })
            .collect();
        assert_eq!(
            t,
            vec![
                (20, 10, 8, 50_000, 90, 0.85, 0.70, true),
                (21, 5, 16, 100_000, 95, 0.90, 0.75, true),
                (19, 1, 4, 20_000, 85, 0.80, 0.60, true),
                (17, 20, 2, 5_000, 80, 0.75, 0.50, false),
            ]
        );
        for p in Preset::ALL {
            p.settings().validate().unwrap();
        }
        let b = BatchSettings::default();
        assert_eq!((b.max_batch_size, b.flush_interval, b.max_memory_bytes), (2000, Duration::from_millis(1), 8 << 20));
    }

    #[test]
    fn validation_names_the_bad_field() {
        let bad = |f: fn(&mut BusSettings)| {
            let mut c = BusSettings::default();
            f(&mut c);
            c.validate().unwrap_err().path
        };
        assert_eq!(bad(|c| c.ring_pow = 9), "ring_pow");
        assert_eq!(bad(|c| c.ring_pow = 26), "ring_pow");
        assert_eq!(bad(|c| c.pause_hi = 1.5), "pause_hi");
        assert_eq!(bad(|c| c.resume_lo = 0.9), "resume_lo");
        assert_eq!(bad(|c| c.backpressure_threshold = 0.0), "backpressure_threshold");
        assert_eq!(bad(|c| c.async_write_queue_size = 0), "async_write_queue_size");
        assert_eq!(bad(|c| c.async_write_queue_size = 1 << 20), "async_write_queue_size");
        assert_eq!(bad(|c| c.wal_flush_ms = 100_000), "wal_flush_ms");
        assert_eq!(bad(|c| c.wal_segment_bytes = Some(1)), "wal_segment_bytes");
        assert_eq!(bad(|c| c.batch.max_batch_size = 0), "batch.max_batch_size");
        assert_eq!(bad(|c| c.batch.max_memory_bytes = 10), "batch.max_memory_bytes");
        let e = BusSettings { pause_hi: 0.5, resume_lo: 0.6, ..BusSettings::default() }.validate().unwrap_err();
        assert_eq!(e.to_string(), "resume_lo: must be at least 0 and below pause_hi (0.5), got 0.6");
    }

    #[test]
    fn explicit_fields_override_the_preset() {
        let f: BusConfig = toml::from_str(
            "preset = \"low_latency\"\nwal_flush_ms = 3\nwal_dir = \"/var/wal\"\n[batch]\nmax_batch_size = 100\n",
        )
        .unwrap();
        let c = f.resolve(Path::new("/data")).unwrap();
        assert_eq!(c.ring_pow, 19);
        assert_eq!(c.wal_flush_ms, 3);
        assert_eq!(c.wal_dir, PathBuf::from("/var/wal"));
        assert_eq!(c.batch.max_batch_size, 100);
        let f: BusConfig = toml::from_str("").unwrap();
        assert_eq!(f.resolve(Path::new("/data")).unwrap().wal_dir, PathBuf::from("/data/wal"));
        let e = toml::from_str::<BusConfig>("rign_pow = 3").unwrap_err();
        assert!(e.to_string().contains("unknown field `rign_pow`"), "{e}");
        let e = toml::from_str::<BusConfig>("preset = \"fast\"").unwrap_err();
        assert!(e.to_string().contains("unknown variant `fast`"), "{e}");
        let e = BusConfig { ring_pow: Some(30), ..Default::default() }.resolve(Path::new("/")).unwrap_err();
        assert_eq!(e.path, "ring_pow");
    }
}
