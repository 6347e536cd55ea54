//! The latest-value cache: the newest reading of every tag, fed by a lossy
//! bus subscriber and read by the REST API and the WebSocket snapshots. It
//! takes one write lock per batch, not per frame; readers copy what they need.
//! If it falls behind the bus it skips frames (newer ones follow), so it never
//! slows publishers.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use gateway_bus::{Bus, BusError, SubscribeOptions};
use gateway_model::{DataFrame, Frame, FrameKind, TagId, TagPattern};

/// The newest reading of every tag seen since start, whatever its quality;
/// what `/values` answers from. It is not persisted: after a restart a tag
/// is absent until its driver publishes again.
#[derive(Debug, Default)]
pub struct LatestCache {
    map: RwLock<HashMap<TagId, DataFrame, foldhash::fast::RandomState>>,
}

impl LatestCache {
    /// A cache fed from `bus` by a background task (stops when the bus closes).
    pub fn spawn(bus: &Bus) -> Result<Arc<Self>, BusError> {
        let cache = Arc::new(LatestCache::default());
        let filter = gateway_bus::Filter::all().kinds([FrameKind::Data]);
        let mut sub = bus.subscribe(SubscribeOptions::lossy("latest-cache", 1 << 20).filter(filter))?;
        let c = cache.clone();
        tokio::spawn(async move {
            while let Ok(d) = sub.recv().await {
                let mut map = c.map.write().unwrap_or_else(|e| e.into_inner());
                for (_, f) in d.frames() {
                    if let Frame::Data(df) = f {
                        // A tag seen before keeps its key: one lookup, no key clone.
                        match map.get_mut(&df.tag) {
                            Some(slot) => slot.clone_from(df),
                            None => {
                                map.insert(df.tag.clone(), df.clone());
                            }
                        }
                    }
                }
            }
        });
        Ok(cache)
    }

    /// The newest reading of `tag`.
    pub fn get(&self, tag: &str) -> Option<DataFrame> {
        self.map.read().unwrap_or_else(|e| e.into_inner()).get(tag).cloned()
    }

    /// Readings of tags matching `pattern`, sorted by tag.
    pub fn matching(&self, pattern: &TagPattern) -> Vec<DataFrame> {
        self.matching_any(std::slice::from_ref(pattern))
    }

    /// Readings of tags matching any of `patterns`, each tag once, sorted by
    /// tag: one pass under one read lock, however many patterns overlap.
    pub fn matching_any(&self, patterns: &[TagPattern]) -> Vec<DataFrame> {
        let mut v: Vec<DataFrame> = self
            .map
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .filter(|f| patterns.iter().any(|p| p.matches(f.tag.as_str())))
            .cloned()
            .collect();
        v.sort_by(|a, b| a.tag.cmp(&b.tag));
        v
    }

    /// Forgets the readings of a device (it was deleted or its tags changed).
    pub fn forget_device(&self, device: &str) {
        self.map.write().unwrap_or_else(|e| e.into_inner()).retain(|t, _| t.device() != device);
    }

    /// How many tags have a reading (`tags_with_values` in `/system/info`).
    pub fn len(&self) -> usize {
        self.map.read().unwrap_or_else(|e| e.into_inner()).len()
    }

    /// Whether no tag has a reading yet, as right after start.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}
