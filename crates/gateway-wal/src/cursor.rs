//! Named consumer positions: a [`Cursor`] acknowledges what its consumer
//! has handled; the flusher persists it.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use crate::error::{Result, WalError};
use crate::reader::Reader;
use crate::wal::{Shared, lock};

pub(crate) fn validate_cursor_name(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && !name.starts_with('.')
        && name.bytes().all(|c| c.is_ascii_alphanumeric() || matches!(c, b'_' | b'-' | b'.'));
    if ok { Ok(()) } else { Err(WalError::CursorName(name.to_owned())) }
}

/// A named consumer position, persisted crash-safely. The position is the
/// next sequence number the consumer needs; everything below it is acknowledged.
#[derive(Clone)]
pub struct Cursor {
    pub(crate) shared: Arc<Shared>,
    pub(crate) name: Arc<str>,
}

impl fmt::Debug for Cursor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Cursor").field("name", &self.name).field("position", &self.position()).finish()
    }
}

impl Cursor {
    /// The cursor's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Next sequence number the consumer needs.
    pub fn position(&self) -> u64 {
        lock(&self.shared.cursors).map.get(&*self.name).map_or(0, |c| c.position)
    }

    /// Acknowledges everything below `position`. Moving backwards is ignored;
    /// moving past the end of the log is an error. Persisted by the flusher
    /// within about a second (`CURSOR_PERSIST_EVERY` in `flusher.rs`), or at once by [`crate::Wal::flush`].
    pub fn commit(&self, position: u64) -> Result<()> {
        let end = self.shared.next_hint.load(Ordering::Acquire);
        if position > end {
            return Err(WalError::CursorBeyondEnd { name: self.name.to_string(), to: position, end });
        }
        let mut c = lock(&self.shared.cursors);
        let Some(state) = c.map.get_mut(&*self.name) else {
            return Err(WalError::CursorName(format!("{} (removed)", self.name)));
        };
        if position > state.position {
            state.position = position;
        }
        drop(c);
        if position >= self.shared.retention_hint.load(Ordering::Relaxed) {
            self.shared.kick(|g| g.maintenance = true);
        }
        Ok(())
    }

    /// A reader from the cursor's position.
    pub fn reader(&self) -> Reader {
        Reader::new(self.shared.clone(), self.position())
    }
}
