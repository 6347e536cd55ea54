//! The cursor's gate, shared by every connector: bus deliveries read and not
//! yet passed by the durable cursor, each with the number of its messages the
//! target has yet to confirm. The cursor may pass a delivery's end only when
//! it and every delivery before it are fully confirmed; confirmations may
//! come in any order. A connector that gives up what it sent (a lost
//! session, a refusal, a failed publish) forgets every pending delivery and
//! reads them again from the cursor.
//!
//! Pure bookkeeping: no I/O, no clock. It must never say the cursor may move
//! past a message that is not confirmed.

use std::collections::VecDeque;

/// A delivery not yet passed by the cursor.
#[derive(Debug)]
struct Pending {
    end: u64,
    unconfirmed: u32,
}

/// The deliveries between the cursor and what was read; see the module docs.
#[derive(Debug, Default)]
pub(crate) struct Deliveries {
    pending: VecDeque<Pending>,
    /// Number of `pending.front()`; numbers below it are settled or given up.
    first: u64,
}

impl Deliveries {
    /// Records a delivery ending at bus sequence `end` whose cursor move waits
    /// for `messages` confirmations; returns its number, which its messages carry.
    pub fn push(&mut self, end: u64, messages: usize) -> u64 {
        let number = self.first + self.pending.len() as u64;
        self.pending.push_back(Pending { end, unconfirmed: u32::try_from(messages).unwrap_or(u32::MAX) });
        number
    }

    /// One message of delivery `number` is confirmed; a number settled or
    /// given up already changes nothing.
    pub fn confirm(&mut self, number: u64) {
        if let Some(i) = number.checked_sub(self.first)
            && let Some(p) = self.pending.get_mut(i as usize)
        {
            p.unconfirmed = p.unconfirmed.saturating_sub(1);
        }
    }

    /// Drops every fully confirmed delivery from the front; the end of the
    /// last one dropped is where the cursor may go now.
    pub fn settle(&mut self) -> Option<u64> {
        let mut end = None;
        while self.pending.front().is_some_and(|p| p.unconfirmed == 0) {
            end = self.pending.pop_front().map(|p| p.end);
            self.first += 1;
        }
        end
    }

    /// Gives up every pending delivery: their later confirmations change nothing.
    pub fn forget(&mut self) {
        self.first += self.pending.len() as u64;
        self.pending.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cursor_passes_a_delivery_only_once_it_and_all_before_it_are_confirmed() {
        let mut d = Deliveries::default();
        let (a, b) = (d.push(10, 2), d.push(20, 1));
        d.confirm(b);
        assert_eq!(d.settle(), None, "the first delivery waits for two confirmations");
        d.confirm(a);
        assert_eq!(d.settle(), None);
        d.confirm(a);
        assert_eq!(d.settle(), Some(20), "both settle at once");
        let empty = d.push(30, 0);
        assert_eq!((empty, d.settle()), (2, Some(30)), "a delivery without messages settles at once");
    }

    #[test]
    fn confirmations_of_forgotten_deliveries_change_nothing() {
        let mut d = Deliveries::default();
        let old = d.push(10, 1);
        d.forget();
        let new = d.push(10, 1);
        assert_ne!(old, new);
        d.confirm(old);
        assert_eq!(d.settle(), None, "the old number is gone");
        d.confirm(new);
        assert_eq!(d.settle(), Some(10));
    }
}
