//! The delivery state: which messages wait, which the MQTT client holds,
//! which the broker has yet to confirm, and when the bus cursor may move. A
//! pure state machine in rumqtt's manner: the worker feeds it events
//! (messages to queue, "written", "confirmed", "refused", "connected",
//! "down") and carries out the decisions it returns (acknowledge the cursor
//! up to a sequence number, rewind the subscriber, pause sending). It does no
//! I/O and never reads a clock: the caller passes `now`.
//!
//! **The cursor.** Readings come from the bus in deliveries; one delivery
//! becomes one or more messages. The cursor passes a delivery's end only when
//! every message of it, and of every delivery before it, is confirmed
//! (PUBACK for QoS 1, PUBCOMP for QoS 2, written to the socket for QoS 0).
//! Confirmations may come in any order; a packet id this state does not
//! hold (a duplicate, or one from before a restart) changes nothing.
//!
//! **The window.** At most `max_inflight` messages are handed to the client
//! and not yet confirmed. The client reports packet ids only as "written", in
//! the order it was handed the messages, which is how a packet id is matched
//! to its message.
//!
//! **Kinds.** A message's [`Kind`] says what becomes of it when the broker
//! loses the session or refuses a message: readings (`Data` through the
//! cursor, `Live` alongside a replay) can be read from the bus again and are
//! forgotten; Sparkplug `Birth`s belong to one session and are forgotten
//! (the worker makes the births of the next one); a `CommandAck` exists
//! nowhere else and is never forgotten. Command acknowledgements (and the
//! births of a new session) go ahead of queued readings.
//!
//! **A lost session** (connected, and the broker did not keep the session):
//! the client dropped whatever it held, so every reading not confirmed is
//! forgotten and the subscriber rewinds to the cursor: the last confirmed
//! point. Command acknowledgements that were queued, handed or in flight are
//! queued again ahead of everything, in the order they were first queued.
//!
//! **A refused message** (an MQTT 5 reason code) is handled in order with
//! the messages after it, which may already be on their way:
//! - a reading or a birth: everything unconfirmed is given up, exactly as
//!   for a lost session, except that messages already on their way stay
//!   counted in the window until the client is done with them (their
//!   confirmations then change nothing). The subscriber rewinds to the
//!   cursor, so the refused reading and everything after it are read and
//!   encoded again, in order (Sparkplug: after new births, so the sequence
//!   numbers start over in order). A consumer therefore sees, after whatever
//!   was already on its way, the stream again from the last confirmed point,
//!   in order; every value carries its bus `seq` to drop duplicates.
//! - a command acknowledgement: queued again ahead of everything else.
//! - a live value: dropped; the replay brings it again.
//!
//! Either way sending pauses (`reconnect_min_ms`, doubling per refusal up to
//! `reconnect_max_ms`) and then the first message goes out alone: nothing
//! follows it until the broker confirmed it, so a message the broker keeps
//! refusing is retried at a growing interval without a window of duplicates
//! behind it. The pause starts over from the minimum once a message gets
//! through, and on every new connection.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use bytes::Bytes;

use crate::slots::Deliveries;

/// Most messages queued before the worker stops reading the bus.
const QUEUE_MAX: usize = 4096;

/// What a message carries, which decides its fate on a lost session or a refusal.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Kind {
    /// Readings of a delivery read through the durable cursor.
    Data,
    /// Readings sent live alongside a replay, not tied to the cursor.
    Live,
    /// A Sparkplug NBIRTH or DBIRTH.
    Birth,
    /// The answer to a command from the broker.
    CommandAck,
}

/// A message to publish.
#[derive(Clone, Debug, PartialEq)]
pub(super) struct Outgoing {
    pub topic: String,
    pub payload: Bytes,
    pub qos: u8,
    pub kind: Kind,
    /// Readings it carries (for the metrics).
    pub values: u64,
    /// Whether the broker keeps it for later subscribers (alarm states).
    pub retain: bool,
}

#[derive(Debug)]
struct Message {
    out: Outgoing,
    /// The delivery whose cursor move waits for this message (`Data` only).
    delivery: Option<u64>,
    /// Order of queueing, to put messages back in their order.
    number: u64,
    /// `false` once a refusal gave it up: its confirmation changes nothing.
    current: bool,
}

#[derive(Debug)]
struct Handed {
    message: Message,
    at: Instant,
    /// Its place in the order of handing over.
    turn: u64,
}

/// A confirmed message, for the metrics, and where the cursor may now go.
#[derive(Debug, PartialEq)]
pub(super) struct Confirmed {
    pub values: u64,
    /// When it was handed to the client (for the acknowledgement latency).
    pub handed_at: Instant,
    /// Acknowledge the bus cursor up to here.
    pub ack: Option<u64>,
}

/// Messages just handed to the client.
#[derive(Debug, Default, PartialEq, Eq)]
pub(super) struct HandedOver {
    pub messages: u64,
    pub values: u64,
}

/// What to do about a refused message.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Refusal {
    /// Not a message this state waits for: nothing to do.
    Ignored,
    /// A live value, dropped.
    Dropped,
    /// A command acknowledgement, queued again; sending pauses this long.
    Retry { pause: Duration },
    /// Readings given up: rewind the subscriber to the cursor and (Sparkplug)
    /// queue new births; sending pauses this long.
    Restart { pause: Duration },
}

/// What a connection brings.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Session {
    /// The broker kept the session: the client resends what was in flight.
    Resumed,
    /// A new session: rewind the subscriber to the cursor and (Sparkplug) queue new births.
    New,
}

/// The state; see the module docs.
#[derive(Debug)]
pub(super) struct DeliveryState {
    max_inflight: usize,
    /// Command acknowledgements and a new session's births, sent before `queued`.
    ahead: VecDeque<Message>,
    queued: VecDeque<Message>,
    /// Handed to the client, not yet written (no packet id yet), in order.
    handed: VecDeque<Handed>,
    in_flight: HashMap<u16, Handed>,
    deliveries: Deliveries,
    next_number: u64,
    /// Messages handed over so far.
    turns: u64,
    connected: bool,
    /// After a refusal: one message at a time until one handed from this
    /// turn on is confirmed.
    probe_from: Option<u64>,
    paused_until: Option<Instant>,
    pause: Duration,
    pause_min: Duration,
    pause_max: Duration,
}

impl DeliveryState {
    /// `pauses`: the first and the longest pause after a refusal.
    pub fn new(max_inflight: u16, pauses: (Duration, Duration)) -> Self {
        DeliveryState {
            max_inflight: usize::from(max_inflight.max(1)),
            ahead: VecDeque::new(),
            queued: VecDeque::new(),
            handed: VecDeque::new(),
            in_flight: HashMap::new(),
            deliveries: Deliveries::default(),
            next_number: 0,
            turns: 0,
            connected: false,
            probe_from: None,
            paused_until: None,
            pause: pauses.0,
            pause_min: pauses.0,
            pause_max: pauses.1,
        }
    }

    pub fn is_connected(&self) -> bool {
        self.connected
    }

    /// Messages handed to the client and not yet confirmed.
    pub fn window(&self) -> usize {
        self.handed.len() + self.in_flight.len()
    }

    /// Whether the worker should read more from the bus now.
    pub fn wants_readings(&self) -> bool {
        self.connected && self.window() < self.max_inflight && self.queued.len() < QUEUE_MAX
    }

    fn message(&mut self, out: Outgoing, delivery: Option<u64>) -> Message {
        self.next_number += 1;
        Message { out, delivery, number: self.next_number, current: true }
    }

    /// Queues the messages made from a bus delivery ending at `end`: its
    /// `Data` messages gate the cursor's move past `end`. Returns where the
    /// cursor may go now (a delivery without messages settles at once).
    pub fn queue_delivery(&mut self, end: u64, messages: Vec<Outgoing>) -> Option<u64> {
        let data = messages.iter().filter(|m| m.kind == Kind::Data).count();
        let number = self.deliveries.push(end, data);
        for out in messages {
            let delivery = (out.kind == Kind::Data).then_some(number);
            let m = self.message(out, delivery);
            self.queued.push_back(m);
        }
        self.deliveries.settle()
    }

    /// Queues messages behind everything queued (live values, births of a
    /// rebirth that follows the readings already queued).
    pub fn queue(&mut self, messages: Vec<Outgoing>) {
        self.queue_off_cursor(messages, false);
    }

    /// Queues messages ahead of every queued reading (command
    /// acknowledgements, births of a new session), in their order.
    pub fn queue_ahead(&mut self, messages: Vec<Outgoing>) {
        self.queue_off_cursor(messages, true);
    }

    fn queue_off_cursor(&mut self, messages: Vec<Outgoing>, ahead: bool) {
        for out in messages {
            debug_assert!(out.kind != Kind::Data, "readings of the cursor go through queue_delivery");
            let m = self.message(out, None);
            if ahead { self.ahead.push_back(m) } else { self.queued.push_back(m) }
        }
    }

    /// Hands messages to the client while the window allows and `publish`
    /// (the client's non-blocking publish) takes them.
    pub fn hand_over(&mut self, now: Instant, mut publish: impl FnMut(&Outgoing) -> bool) -> HandedOver {
        let mut done = HandedOver::default();
        if !self.connected || self.paused_until.is_some_and(|t| now < t) {
            return done;
        }
        self.paused_until = None;
        let limit = if self.probe_from.is_some() { 1 } else { self.max_inflight };
        while self.window() < limit {
            let queue = if self.ahead.is_empty() { &mut self.queued } else { &mut self.ahead };
            let Some(next) = queue.front() else { break };
            if !publish(&next.out) {
                // The client's queue is full: try again after the next event.
                break;
            }
            let Some(message) = queue.pop_front() else { break };
            done.messages += 1;
            done.values += message.out.values;
            self.handed.push_back(Handed { message, at: now, turn: self.turns });
            self.turns += 1;
        }
        done
    }

    /// The client wrote a message with packet id `pkid` (0: QoS 0, which
    /// counts as confirmed).
    pub fn written(&mut self, pkid: u16) -> Option<Confirmed> {
        if pkid != 0 && self.in_flight.contains_key(&pkid) {
            // Resent after the broker resumed the session: known already.
            return None;
        }
        let handed = self.handed.pop_front()?;
        if pkid == 0 {
            return self.confirm(handed);
        }
        self.in_flight.insert(pkid, handed);
        None
    }

    /// The broker confirmed packet `pkid`.
    pub fn confirmed(&mut self, pkid: u16) -> Option<Confirmed> {
        let handed = self.in_flight.remove(&pkid)?;
        self.confirm(handed)
    }

    fn confirm(&mut self, handed: Handed) -> Option<Confirmed> {
        let Handed { message, at, turn } = handed;
        if !message.current {
            return None;
        }
        if let Some(d) = message.delivery {
            self.deliveries.confirm(d);
        }
        if self.probe_from.is_some_and(|from| turn >= from) {
            self.probe_from = None;
            self.pause = self.pause_min;
        }
        Some(Confirmed { values: message.out.values, handed_at: at, ack: self.deliveries.settle() })
    }

    /// The broker refused packet `pkid` (MQTT 5); see the module docs.
    pub fn refused(&mut self, pkid: u16, now: Instant) -> Refusal {
        let Some(Handed { message, .. }) = self.in_flight.remove(&pkid) else { return Refusal::Ignored };
        if !message.current {
            return Refusal::Ignored;
        }
        match message.out.kind {
            Kind::Live => Refusal::Dropped,
            Kind::CommandAck => {
                self.ahead.push_front(message);
                Refusal::Retry { pause: self.pause_sending(now) }
            }
            Kind::Data | Kind::Birth => {
                self.forget_readings();
                for h in self.handed.iter_mut().chain(self.in_flight.values_mut()) {
                    h.message.current &= h.message.out.kind == Kind::CommandAck;
                }
                Refusal::Restart { pause: self.pause_sending(now) }
            }
        }
    }

    fn pause_sending(&mut self, now: Instant) -> Duration {
        let pause = self.pause;
        self.pause = (pause * 2).min(self.pause_max);
        self.paused_until = Some(now + pause);
        self.probe_from = Some(self.turns);
        pause
    }

    /// Forgets every queued reading and birth and every pending delivery.
    fn forget_readings(&mut self) {
        self.queued.retain(|m| m.out.kind == Kind::CommandAck);
        self.ahead.retain(|m| m.out.kind == Kind::CommandAck);
        self.deliveries.forget();
    }

    /// Connected; `session_present`: the broker kept the session.
    pub fn connected(&mut self, session_present: bool) -> Session {
        self.connected = true;
        self.paused_until = None;
        self.pause = self.pause_min;
        if session_present {
            return Session::Resumed;
        }
        // The client dropped everything it held for the old session.
        let mut kept: Vec<Message> = self
            .handed
            .drain(..)
            .chain(self.in_flight.drain().map(|(_, h)| h))
            .map(|h| h.message)
            .filter(|m| m.current && m.out.kind == Kind::CommandAck)
            .collect();
        kept.sort_by_key(|m| m.number);
        for m in kept.into_iter().rev() {
            self.ahead.push_front(m);
        }
        self.forget_readings();
        Session::New
    }

    /// The connection broke; everything waits for the next one.
    pub fn down(&mut self) {
        self.connected = false;
    }
}

#[cfg(test)]
mod tests;
