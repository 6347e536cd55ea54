//! Batching frames that are produced one at a time: a [`Batcher`] collects
//! them and publishes a batch when it reaches `max_batch_size` frames,
//! `max_memory_bytes`, or `flush_interval` after its first frame.

use std::sync::Arc;
use std::time::Instant;

use gateway_model::{Batch, Frame};
use gateway_wal::SeqRange;

use crate::bus::Bus;
use crate::config::BatchSettings;
use crate::error::BusError;

/// Collects frames into batches for one producer (a driver task).
#[derive(Debug)]
pub struct Batcher {
    bus: Bus,
    cfg: BatchSettings,
    frames: Vec<Frame>,
    bytes: usize,
    first_at: Option<Instant>,
}

impl Batcher {
    /// A batcher with the bus's batching configuration.
    pub fn new(bus: &Bus) -> Self {
        Self::with_config(bus, bus.settings().batch.clone())
    }

    /// A batcher with its own configuration.
    pub fn with_config(bus: &Bus, cfg: BatchSettings) -> Self {
        Batcher {
            bus: bus.clone(),
            frames: Vec::with_capacity(cfg.max_batch_size.min(4096)),
            bytes: 0,
            first_at: None,
            cfg,
        }
    }

    /// Adds a frame; publishes (waiting under backpressure) when the batch is full.
    pub async fn push(&mut self, frame: impl Into<Frame>) -> Result<Option<SeqRange>, BusError> {
        let frame = frame.into();
        let size = frame.approx_size();
        if self.frames.is_empty() {
            self.first_at = Some(Instant::now());
        }
        self.frames.push(frame);
        self.bytes += size;
        self.bus.inner.metrics.batch_memory_usage.inc_by(size as i64);
        if self.frames.len() >= self.cfg.max_batch_size || self.bytes >= self.cfg.max_memory_bytes || self.due() {
            return self.flush().await;
        }
        Ok(None)
    }

    /// Whether the oldest frame has waited `flush_interval`.
    pub fn due(&self) -> bool {
        self.first_at.is_some_and(|t| t.elapsed() >= self.cfg.flush_interval)
    }

    /// When the batch must be published at the latest (for a producer's select loop).
    pub fn deadline(&self) -> Option<Instant> {
        self.first_at.map(|t| t + self.cfg.flush_interval)
    }

    /// Frames pushed but not yet published.
    pub fn len(&self) -> usize {
        self.frames.len()
    }

    /// Whether no frame waits, so [`Batcher::flush`] would publish nothing.
    pub fn is_empty(&self) -> bool {
        self.frames.is_empty()
    }

    /// Publishes what is waiting (if anything).
    pub async fn flush(&mut self) -> Result<Option<SeqRange>, BusError> {
        if self.frames.is_empty() {
            return Ok(None);
        }
        let m = self.bus.inner.metrics.clone();
        if let Some(t) = self.first_at.take() {
            m.batch_flush_duration.observe(t.elapsed().as_secs_f64());
        }
        let cap = self.cfg.max_batch_size.min(4096);
        let frames = std::mem::replace(&mut self.frames, Vec::with_capacity(cap));
        m.batch_memory_usage.dec_by(self.bytes as i64);
        self.bytes = 0;
        self.bus.publish(Arc::new(Batch::from(frames))).await.map(Some)
    }
}

impl Drop for Batcher {
    fn drop(&mut self) {
        if !self.frames.is_empty() {
            tracing::warn!(frames = self.frames.len(), "A batcher was dropped with unpublished frames.");
            self.bus.inner.metrics.batch_memory_usage.dec_by(self.bytes as i64);
        }
    }
}
