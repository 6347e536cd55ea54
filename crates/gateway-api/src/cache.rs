//! The latest-value cache: the newest reading of every tag, fed by a lossy
//! bus subscriber and read by the REST API and the WebSocket snapshots. It
//! takes one write lock and, for a batch shaped like the last one from its
//! driver, one hash lookup per batch, not per frame; readers copy what they need.
//! If it falls behind the bus it skips frames (newer ones follow), so it never
//! slows publishers.

use std::collections::HashMap;
use std::hash::BuildHasher;
use std::sync::{Arc, RwLock};

use hashbrown::HashTable;

use gateway_bus::{Bus, BusError, SubscribeOptions};
use gateway_model::{DataFrame, Frame, FrameKind, TagPattern};

/// The newest reading of every tag seen since start, whatever its quality;
/// what `/values` answers from. It is not persisted: after a restart a tag
/// is absent until its driver publishes again.
#[derive(Debug, Default)]
pub struct LatestCache {
    table: RwLock<Table>,
}

type Fast<K, V> = HashMap<K, V, foldhash::fast::RandomState>;

/// One slot per tag, and the shape of the batches seen: a driver publishes
/// the same tags in the same order at every poll, so a batch whose tags are
/// those of the last batch that began with the same tag (the same interned
/// names, compared by pointer first) updates its slots in order, with one
/// hash lookup per batch instead of one per reading.
///
/// The index holds slot numbers alone, found by the hash of the name in the
/// slot's reading: a map from name to slot kept a second handle of every
/// name and took 409 KB at 10,000 tags, this takes 82 KB.
#[derive(Debug, Default)]
struct Table {
    frames: Vec<DataFrame>,
    slot: HashTable<u32>,
    hasher: foldhash::fast::RandomState,
    /// By the slot of a batch's first tag: the slots of that batch's readings.
    shapes: Fast<u32, Vec<u32>>,
}

impl Table {
    /// The slot of `tag`.
    fn find(&self, tag: &str) -> Option<usize> {
        let frames = &self.frames;
        self.slot.find(self.hasher.hash_one(tag), |&i| frames[i as usize].tag.as_str() == tag).map(|&i| i as usize)
    }

    /// Indexes the last slot.
    fn index_last(&mut self) {
        let Table { frames, slot, hasher, .. } = self;
        let i = frames.len() - 1;
        slot.insert_unique(hasher.hash_one(frames[i].tag.as_str()), i as u32, |&j| {
            hasher.hash_one(frames[j as usize].tag.as_str())
        });
    }

    fn take(&mut self, batch: &[&DataFrame]) {
        let Some(first) = batch.first() else { return };
        if let Some(head) = self.find(first.tag.as_str())
            && let Some(shape) = self.shapes.get(&(head as u32))
            && shape.len() == batch.len()
            && shape.iter().zip(batch).all(|(&i, f)| self.frames[i as usize].tag == f.tag)
        {
            for (&i, f) in shape.iter().zip(batch) {
                self.frames[i as usize].update_from(f);
            }
            return;
        }
        let mut shape = Vec::with_capacity(batch.len());
        for (k, f) in batch.iter().enumerate() {
            let i = match self.find(f.tag.as_str()) {
                Some(i) => {
                    // Keep the newest handle of the name: the next batch
                    // then matches by pointer.
                    self.frames[i].clone_from(f);
                    i
                }
                None => {
                    if self.frames.len() == self.frames.capacity() {
                        // Room for the rest of this batch, and at least an
                        // eighth more. Doubling left 6,384 of 16,384 slots
                        // empty for good at 10,000 tags; an eighth still
                        // keeps the copying linear when tags arrive one by
                        // one.
                        self.frames.reserve_exact((batch.len() - k).max(self.frames.len() / 8));
                    }
                    self.frames.push((*f).clone());
                    self.index_last();
                    self.frames.len() - 1
                }
            };
            shape.push(i as u32);
        }
        if let Some(&head) = shape.first() {
            self.shapes.insert(head, shape);
        }
    }

    fn retain(&mut self, keep: impl Fn(&DataFrame) -> bool) {
        let frames: Vec<DataFrame> = std::mem::take(&mut self.frames).into_iter().filter(|f| keep(f)).collect();
        self.frames = Vec::with_capacity(frames.len());
        self.slot = HashTable::with_capacity(frames.len());
        for f in frames {
            self.frames.push(f);
            self.index_last();
        }
        self.shapes.clear();
    }
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
                // One vector per batch, none per reading.
                let readings: Vec<&DataFrame> = d
                    .frames()
                    .filter_map(|(_, f)| match f {
                        Frame::Data(df) => Some(df),
                        _ => None,
                    })
                    .collect();
                c.write().take(&readings);
            }
        });
        Ok(cache)
    }
    /// The newest reading of `tag`.
    pub fn get(&self, tag: &str) -> Option<DataFrame> {
        let t = self.read();
        t.find(tag).map(|i| t.frames[i].clone())
    }

    /// Readings of tags matching `pattern`, sorted by tag.
    pub fn matching(&self, pattern: &TagPattern) -> Vec<DataFrame> {
        self.matching_any(std::slice::from_ref(pattern))
    }

    /// Readings of tags matching any of `patterns`, each tag once, sorted by
    /// tag: one pass under one read lock, however many patterns overlap.
    pub fn matching_any(&self, patterns: &[TagPattern]) -> Vec<DataFrame> {
        let mut v: Vec<DataFrame> =
            self.read().frames.iter().filter(|f| patterns.iter().any(|p| p.matches(f.tag.as_str()))).cloned().collect();
        v.sort_by(|a, b| a.tag.cmp(&b.tag));
        v
    }

    /// Forgets the readings of a device (it was deleted or its tags changed).
    pub fn forget_device(&self, device: &str) {
        self.write().retain(|f| f.tag.device() != device);
    }

    /// How many tags have a reading (`tags_with_values` in `/system/info`).
    pub fn len(&self) -> usize {
        self.read().frames.len()
    }

    /// Whether no tag has a reading yet, as right after start.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Table> {
        self.table.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Table> {
        self.table.write().unwrap_or_else(|e| e.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use gateway_model::{Quality, TagId, Value};

    use super::*;

    fn reading(tag: &TagId, v: i64) -> DataFrame {
        DataFrame::new(tag.clone(), Value::I64(v), Quality::GOOD, v as u64)
    }

    fn value(t: &Table, tag: &str) -> Option<Value> {
        t.find(tag).map(|i| t.frames[i].value.clone())
    }

    #[test]
    fn the_slots_grow_a_device_at_a_time_and_by_an_eighth_at_least() {
        let mut t = Table::default();
        // 200 devices of 50 tags: at most an eighth left empty.
        for d in 0..200 {
            let tags: Vec<TagId> = (0..50).map(|i| TagId::new(&format!("d{d}.t{i}")).unwrap()).collect();
            let batch: Vec<DataFrame> = tags.iter().map(|tag| reading(tag, 1)).collect();
            t.take(&batch.iter().collect::<Vec<_>>());
        }
        assert_eq!(t.frames.len(), 10_000);
        // The index holds slot numbers, not names: 16,384 buckets of 5 bytes.
        assert!(t.slot.allocation_size() <= 100_000, "{} bytes of index", t.slot.allocation_size());
        assert!(t.frames.capacity() <= 11_250, "{}: doubling would have left 6,384 slots empty", t.frames.capacity());
        // Tags one by one: at most an eighth of slack, and few reallocations.
        let mut grew = 0;
        for i in 0..2_000 {
            let before = t.frames.capacity();
            t.take(&[&reading(&TagId::new(&format!("mqtt.topic{i}")).unwrap(), 1)]);
            grew += usize::from(t.frames.capacity() != before);
            assert!(t.frames.capacity() <= t.frames.len() + t.frames.len() / 8 + 1, "{}", t.frames.capacity());
        }
        assert!(grew <= 3, "{grew} reallocations for 2,000 tags one by one");
    }

    #[test]
    fn the_newest_reading_wins_whatever_the_shape_of_the_batches() {
        let tag = |s: &str| TagId::new(s).unwrap();
        let (a, b, c) = (tag("d1.a"), tag("d1.b"), tag("d2.c"));
        let mut t = Table::default();
        for round in 0..3i64 {
            let k = round * 100;
            // The usual poll, twice: the second takes the slots it learnt.
            t.take(&[&reading(&a, k + 1), &reading(&b, k + 2)]);
            t.take(&[&reading(&a, k + 3), &reading(&b, k + 4)]);
            assert_eq!((value(&t, "d1.a"), value(&t, "d1.b")), (Some(Value::I64(k + 3)), Some(Value::I64(k + 4))));
            // Another batch beginning with the same tag, shorter.
            t.take(&[&reading(&a, k + 5)]);
            assert_eq!(value(&t, "d1.a"), Some(Value::I64(k + 5)));
            // The same tags in another order, another device, a tag twice.
            t.take(&[&reading(&b, k + 6), &reading(&c, k + 7), &reading(&a, k + 8), &reading(&a, k + 9)]);
            assert_eq!(value(&t, "d1.a"), Some(Value::I64(k + 9)), "the later of two in one batch");
            assert_eq!(value(&t, "d1.b"), Some(Value::I64(k + 6)));
            assert_eq!(value(&t, "d2.c"), Some(Value::I64(k + 7)));
            // Same names, new handles (a driver restarted): matched by name.
            let (a2, b2) = (tag("d1.a"), tag("d1.b"));
            t.take(&[&reading(&a2, k + 10), &reading(&b2, k + 11)]);
            t.take(&[&reading(&a2, k + 12), &reading(&b2, k + 13)]);
            assert_eq!((value(&t, "d1.a"), value(&t, "d1.b")), (Some(Value::I64(k + 12)), Some(Value::I64(k + 13))));
        }
        assert_eq!(t.frames.len(), 3, "one slot per tag");
        t.retain(|f| f.tag.device() != "d1");
        assert_eq!((value(&t, "d1.a"), value(&t, "d2.c")), (None, Some(Value::I64(207))));
        // After forgetting, the device comes back with fresh slots.
        t.take(&[&reading(&a, 1), &reading(&b, 2)]);
        t.take(&[&reading(&a, 3), &reading(&b, 4)]);
        assert_eq!((value(&t, "d1.a"), value(&t, "d2.c")), (Some(Value::I64(3)), Some(Value::I64(207))));
        assert_eq!(t.frames.len(), 3);
    }
}
