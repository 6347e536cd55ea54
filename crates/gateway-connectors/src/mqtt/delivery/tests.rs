//! The delivery rules as specifications: no broker, no bus, no clock.

use std::collections::{BTreeSet, HashMap, VecDeque};

use super::*;

const MIN: Duration = Duration::from_millis(100);
const MAX: Duration = Duration::from_millis(400);

fn state(max_inflight: u16) -> DeliveryState {
    let mut s = DeliveryState::new(max_inflight, (MIN, MAX));
    assert_eq!(s.connected(false), Session::New);
    s
}

fn msg(topic: &str, kind: Kind) -> Outgoing {
    Outgoing { topic: topic.into(), payload: Bytes::new(), qos: 1, kind, values: 1, retain: false }
}

fn data(topic: &str) -> Outgoing {
    msg(topic, Kind::Data)
}

/// Queues one-message deliveries, given as (end, topic).
fn readings(s: &mut DeliveryState, deliveries: &[(u64, &str)]) {
    for &(end, topic) in deliveries {
        s.queue_delivery(end, vec![data(topic)]);
    }
}

/// Hands everything the window allows; returns the topics handed, in order.
fn hand(s: &mut DeliveryState, now: Instant) -> Vec<String> {
    let mut topics = Vec::new();
    s.hand_over(now, |m| {
        topics.push(m.topic.clone());
        true
    });
    topics
}

/// Hands and writes everything the window allows, giving packet ids from `first`.
fn send(s: &mut DeliveryState, now: Instant, first: u16) -> Vec<String> {
    let topics = hand(s, now);
    for i in 0..topics.len() {
        assert_eq!(s.written(first + i as u16), None);
    }
    topics
}

fn ack(c: Option<Confirmed>) -> Option<u64> {
    c.expect("a confirmation").ack
}

#[test]
fn the_cursor_moves_only_when_every_earlier_message_is_confirmed() {
    let now = Instant::now();
    let mut s = state(8);
    readings(&mut s, &[(10, "a"), (20, "b"), (30, "c")]);
    assert_eq!(send(&mut s, now, 1), ["a", "b", "c"]);
    assert_eq!(ack(s.confirmed(3)), None, "c is confirmed, a and b are not");
    assert_eq!(ack(s.confirmed(2)), None, "a is not");
    assert_eq!(ack(s.confirmed(1)), Some(30), "the gap filled: one ack to the furthest complete delivery");
}

#[test]
fn a_delivery_split_into_several_messages_moves_the_cursor_only_when_all_are_confirmed() {
    let now = Instant::now();
    let mut s = state(8);
    s.queue_delivery(100, vec![data("a1"), data("a2"), data("a3")]);
    send(&mut s, now, 1);
    assert_eq!(ack(s.confirmed(1)), None);
    assert_eq!(ack(s.confirmed(3)), None);
    assert_eq!(ack(s.confirmed(2)), Some(100));
}

#[test]
fn a_delivery_without_messages_moves_the_cursor_once_everything_before_it_is() {
    let now = Instant::now();
    let mut s = state(8);
    assert_eq!(s.queue_delivery(5, vec![]), Some(5), "nothing to wait for");
    s.queue_delivery(10, vec![data("a")]);
    assert_eq!(s.queue_delivery(15, vec![]), None, "waits for a");
    send(&mut s, now, 1);
    assert_eq!(ack(s.confirmed(1)), Some(15));
}

#[test]
fn a_duplicate_confirmation_changes_nothing() {
    let now = Instant::now();
    let mut s = state(8);
    readings(&mut s, &[(10, "a"), (20, "b")]);
    send(&mut s, now, 1);
    assert_eq!(ack(s.confirmed(2)), None);
    assert_eq!(s.confirmed(2), None, "b again");
    assert_eq!(s.written(2), None, "a resend of b after a resumed session is not a new message");
    assert_eq!(s.confirmed(2), None);
    assert_eq!(ack(s.confirmed(1)), Some(20));
    assert_eq!(s.confirmed(1), None);
}

#[test]
fn a_confirmation_for_a_packet_id_of_a_lost_session_changes_nothing() {
    let now = Instant::now();
    let mut s = state(8);
    readings(&mut s, &[(10, "a"), (20, "b")]);
    send(&mut s, now, 1);
    s.down();
    assert_eq!(s.connected(false), Session::New);
    // The subscriber rewound: `a` and `b` come again.
    readings(&mut s, &[(10, "a"), (20, "b")]);
    assert_eq!(send(&mut s, now, 5), ["a", "b"]);
    assert_eq!(s.confirmed(2), None, "b of the old session");
    assert_eq!(s.confirmed(1), None, "a of the old session");
    assert_eq!(ack(s.confirmed(6)), None, "never past the unconfirmed a");
    assert_eq!(ack(s.confirmed(5)), Some(20));
}

#[test]
fn a_lost_session_forgets_unconfirmed_readings_so_they_are_read_again_from_the_cursor() {
    let now = Instant::now();
    let mut s = state(8);
    readings(&mut s, &[(10, "a"), (20, "b"), (30, "c")]);
    send(&mut s, now, 1);
    assert_eq!(ack(s.confirmed(1)), Some(10), "the last confirmed point");
    s.queue_delivery(40, vec![data("d")]);
    s.queue(vec![msg("live", Kind::Live), msg("dbirth", Kind::Birth)]);
    s.down();
    assert_eq!(hand(&mut s, now), Vec::<String>::new(), "nothing goes out while disconnected");
    assert_eq!(s.connected(false), Session::New, "rewind to 10");
    assert_eq!(s.window(), 0);
    assert_eq!(hand(&mut s, now), Vec::<String>::new(), "b, c, d, the live value and the birth are gone");
    s.queue_delivery(20, vec![data("b")]);
    send(&mut s, now, 9);
    assert_eq!(ack(s.confirmed(9)), Some(20));
}

#[test]
fn a_lost_session_keeps_command_acks_queued_handed_or_in_flight_in_their_order() {
    let now = Instant::now();
    let mut s = state(8);
    s.queue_ahead(vec![msg("ack1", Kind::CommandAck)]);
    s.queue_delivery(10, vec![data("a")]);
    s.queue_ahead(vec![msg("ack2", Kind::CommandAck)]);
    assert_eq!(hand(&mut s, now), ["ack1", "ack2", "a"]);
    assert_eq!(s.written(1), None, "ack1 in flight; ack2 and a only handed");
    s.queue_ahead(vec![msg("ack3", Kind::CommandAck)]);
    s.down();
    assert_eq!(s.connected(false), Session::New);
    s.queue_ahead(vec![msg("nbirth", Kind::Birth)]);
    assert_eq!(hand(&mut s, now), ["ack1", "ack2", "ack3", "nbirth"]);
}

#[test]
fn a_resumed_session_keeps_everything_in_flight() {
    let now = Instant::now();
    let mut s = state(8);
    readings(&mut s, &[(10, "a"), (20, "b")]);
    send(&mut s, now, 1);
    s.down();
    assert_eq!(s.connected(true), Session::Resumed);
    assert_eq!(s.written(1), None, "the client resends a and b with their packet ids");
    assert_eq!(s.written(2), None);
    assert_eq!(ack(s.confirmed(1)), Some(10));
    assert_eq!(ack(s.confirmed(2)), Some(20));
}

#[test]
fn a_refused_reading_is_sent_again_in_order_with_the_readings_after_it() {
    let now = Instant::now();
    let mut s = state(8);
    readings(&mut s, &[(10, "a"), (20, "b"), (30, "c"), (40, "d")]);
    assert_eq!(send(&mut s, now, 1), ["a", "b", "c", "d"]);
    assert_eq!(ack(s.confirmed(1)), Some(10));
    assert_eq!(s.refused(2, now), Refusal::Restart { pause: MIN }, "b refused: rewind to 10");
    assert_eq!(s.confirmed(3), None, "c was given up: its confirmation changes nothing");
    assert_eq!(s.refused(4, now), Refusal::Ignored, "d was given up too: no second restart");
    assert_eq!(hand(&mut s, now), Vec::<String>::new(), "sending pauses");
    // The subscriber rewound to 10: b, c and d come again, in order.
    readings(&mut s, &[(20, "b"), (30, "c"), (40, "d")]);
    let later = now + MIN;
    assert_eq!(send(&mut s, later, 5), ["b"], "b alone first");
    assert_eq!(ack(s.confirmed(5)), Some(20));
    assert_eq!(send(&mut s, later, 6), ["c", "d"], "then the window opens");
    assert_eq!(ack(s.confirmed(7)), None);
    assert_eq!(ack(s.confirmed(6)), Some(40));
}

#[test]
fn messages_given_up_stay_in_the_window_until_the_client_is_done_with_them() {
    let now = Instant::now();
    let mut s = state(2);
    readings(&mut s, &[(10, "a"), (20, "b")]);
    assert_eq!(hand(&mut s, now), ["a", "b"]);
    assert_eq!(s.written(1), None);
    assert!(matches!(s.refused(1, now), Refusal::Restart { .. }));
    s.queue_delivery(10, vec![data("a")]);
    assert_eq!(hand(&mut s, now + MIN), Vec::<String>::new(), "b is still with the client");
    assert_eq!(s.written(2), None, "b written: its packet id is matched, not a's");
    assert_eq!(s.confirmed(2), None);
    assert_eq!(send(&mut s, now + MIN, 3), ["a"]);
    assert_eq!(ack(s.confirmed(3)), Some(10));
}

#[test]
fn a_refused_command_ack_is_retried_before_anything_that_follows_it() {
    let now = Instant::now();
    let mut s = state(8);
    s.queue_ahead(vec![msg("ack1", Kind::CommandAck)]);
    s.queue_delivery(10, vec![data("a")]);
    assert_eq!(send(&mut s, now, 1), ["ack1", "a"]);
    s.queue_ahead(vec![msg("ack2", Kind::CommandAck)]);
    s.queue_delivery(20, vec![data("b")]);
    assert_eq!(s.refused(1, now), Refusal::Retry { pause: MIN });
    assert_eq!(ack(s.confirmed(2)), Some(10), "a was not given up");
    assert_eq!(send(&mut s, now + MIN, 3), ["ack1"], "ack1 alone");
    assert!(s.confirmed(3).is_some());
    assert_eq!(send(&mut s, now + MIN, 4), ["ack2", "b"]);
}

#[test]
fn a_refused_live_value_is_dropped_without_a_pause() {
    let now = Instant::now();
    let mut s = state(8);
    s.queue(vec![msg("live", Kind::Live)]);
    send(&mut s, now, 1);
    assert_eq!(s.refused(1, now), Refusal::Dropped);
    s.queue_delivery(10, vec![data("a")]);
    assert_eq!(hand(&mut s, now), ["a"]);
}

#[test]
fn a_refused_birth_restarts_like_a_refused_reading() {
    let now = Instant::now();
    let mut s = state(8);
    s.queue_delivery(10, vec![msg("dbirth", Kind::Birth), data("ddata")]);
    send(&mut s, now, 1);
    assert_eq!(s.refused(1, now), Refusal::Restart { pause: MIN });
    assert_eq!(s.confirmed(2), None, "the DDATA after the refused DBIRTH is given up");
}

#[test]
fn refusals_in_a_row_pause_longer_each_time_until_a_message_gets_through() {
    let mut now = Instant::now();
    let mut s = state(8);
    let mut pkid = 1;
    let mut pauses = Vec::new();
    for _ in 0..4 {
        s.queue_delivery(10, vec![data("a")]);
        send(&mut s, now, pkid);
        let Refusal::Restart { pause } = s.refused(pkid, now) else { panic!("a restart") };
        pauses.push(pause);
        now += pause;
        pkid += 1;
    }
    assert_eq!(pauses, [MIN, MIN * 2, MAX, MAX]);
    s.queue_delivery(10, vec![data("a")]);
    send(&mut s, now, pkid);
    assert_eq!(ack(s.confirmed(pkid)), Some(10));
    s.queue_delivery(20, vec![data("b")]);
    send(&mut s, now, pkid + 1);
    assert_eq!(s.refused(pkid + 1, now), Refusal::Restart { pause: MIN }, "through once: the pause starts over");
}

#[test]
fn qos_0_messages_count_as_confirmed_when_written() {
    let now = Instant::now();
    let mut s = state(8);
    s.queue_delivery(10, vec![Outgoing { qos: 0, ..data("a") }]);
    assert_eq!(hand(&mut s, now), ["a"]);
    let c = s.written(0).expect("confirmed when written");
    assert_eq!((c.values, c.handed_at, c.ack), (1, now, Some(10)));
    assert_eq!(s.window(), 0);
}

#[test]
fn the_window_never_exceeds_max_inflight() {
    let now = Instant::now();
    let mut s = state(3);
    s.queue_ahead(vec![msg("ack", Kind::CommandAck)]);
    for end in 1..=10 {
        s.queue_delivery(end, vec![data("x")]);
    }
    assert_eq!(send(&mut s, now, 1).len(), 3);
    assert_eq!(hand(&mut s, now).len(), 0);
    assert!(!s.wants_readings());
    assert!(s.confirmed(2).is_some());
    assert_eq!(send(&mut s, now, 4).len(), 1);
    assert_eq!(s.window(), 3);
}

#[test]
fn a_full_client_queue_keeps_the_message_for_the_next_try() {
    let now = Instant::now();
    let mut s = state(8);
    s.queue_delivery(10, vec![data("a"), data("b")]);
    let mut room = 1;
    let done = s.hand_over(now, |_| {
        room -= 1;
        room >= 0
    });
    assert_eq!(done, HandedOver { messages: 1, values: 1 });
    assert_eq!(hand(&mut s, now), ["b"]);
}

/// A tiny xorshift generator: the same sequence on every run.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

/// Moves the model's cursor, checking that the broker has every reading below the new position.
fn check_ack(seed: u64, ack: Option<u64>, cursor: &mut u64, at_broker: &BTreeSet<u64>) {
    if let Some(a) = ack {
        assert!(a > *cursor, "seed {seed}: the cursor goes back from {cursor} to {a}");
        assert!((*cursor..a).all(|q| at_broker.contains(&q)), "seed {seed}: ack {a} passes a reading");
        *cursor = a;
    }
}

/// A client and a broker that write, confirm in any order, refuse now and
/// then and lose the connection (and sometimes the session), driven against
/// the state. Whenever the state says "ack to N", every reading below N must
/// have been confirmed by the broker at least once; at the end every reading
/// is confirmed and the cursor is at the end; the window never exceeds its bound.
#[test]
fn under_random_confirmations_refusals_and_session_losses_the_cursor_never_passes_an_unconfirmed_reading() {
    const READINGS: u64 = 2_000;
    const MAX_INFLIGHT: u16 = 16;
    for seed in 1..=20u64 {
        let mut rng = Rng(0x9E37_79B9_7F4A_7C15 ^ seed);
        let mut now = Instant::now();
        let mut s = DeliveryState::new(MAX_INFLIGHT, (Duration::from_millis(1), Duration::from_millis(8)));
        // The bus: the subscriber's position and its acknowledged cursor.
        let (mut position, mut cursor) = (0u64, 0u64);
        // The client: handed (not written) and on the wire by packet id.
        let mut channel: VecDeque<Outgoing> = VecDeque::new();
        let mut wire: HashMap<u16, Outgoing> = HashMap::new();
        let mut next_pkid = 1u16;
        let mut connected = false;
        let mut at_broker: BTreeSet<u64> = BTreeSet::new();
        let mut steps = 0;
        while cursor < READINGS {
            steps += 1;
            assert!(steps < 1_000_000, "seed {seed}: no progress at cursor {cursor}");
            now += Duration::from_millis(1);
            match rng.below(10) {
                _ if !connected => {
                    let resumed = rng.below(2) == 0;
                    if !resumed {
                        channel.clear();
                        wire.clear();
                    }
                    connected = true;
                    if s.connected(resumed) == Session::New {
                        position = cursor;
                    }
                    for (&pkid, _) in wire.iter() {
                        assert_eq!(s.written(pkid), None, "seed {seed}: a resend is not new");
                    }
                }
                0..=2 if s.wants_readings() && position < READINGS => {
                    // A delivery of 1 to 4 readings, in 1 or 2 messages; each topic names its readings.
                    let n = 1 + rng.below(4).min(READINGS - position - 1);
                    let split = if n > 1 && rng.below(2) == 0 { position + n / 2 } else { position + n };
                    let mut messages = vec![data(&format!("{position}-{split}"))];
                    if split < position + n {
                        messages.push(data(&format!("{split}-{}", position + n)));
                    }
                    position += n;
                    let ack = s.queue_delivery(position, messages);
                    check_ack(seed, ack, &mut cursor, &at_broker);
                }
                3 => {
                    s.hand_over(now, |m| {
                        channel.push_back(m.clone());
                        true
                    });
                    assert!(s.window() <= usize::from(MAX_INFLIGHT), "seed {seed}: window {}", s.window());
                }
                4..=5 => {
                    if let Some(m) = channel.pop_front() {
                        let pkid = next_pkid;
                        next_pkid = next_pkid % 60_000 + 1;
                        wire.insert(pkid, m);
                        assert_eq!(s.written(pkid), None);
                    }
                }
                6..=7 if !wire.is_empty() => {
                    let pkids: Vec<u16> = wire.keys().copied().collect();
                    let pkid = pkids[rng.below(pkids.len() as u64) as usize];
                    let m = wire.remove(&pkid).unwrap();
                    if rng.below(20) == 0 {
                        if let Refusal::Restart { .. } = s.refused(pkid, now) {
                            // The subscriber rewinds to its last acknowledgement.
                            position = cursor;
                        }
                        assert_eq!(s.refused(pkid, now), Refusal::Ignored, "seed {seed}: refused once");
                    } else {
                        let (from, to) = m.topic.split_once('-').unwrap();
                        at_broker.extend(from.parse::<u64>().unwrap()..to.parse::<u64>().unwrap());
                        if let Some(c) = s.confirmed(pkid) {
                            check_ack(seed, c.ack, &mut cursor, &at_broker);
                        }
                    }
                }
                8 if rng.below(50) == 0 => {
                    connected = false;
                    s.down();
                }
                _ => {}
            }
        }
        assert_eq!(cursor, READINGS);
    }
}
