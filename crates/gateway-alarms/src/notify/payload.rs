//! What a notification is, apart from any I/O: which bus frames become one,
//! the JSON body, its signature, what an HTTP status means for the cursor,
//! and the backoff between attempts. Pure, so the rules that decide whether
//! a notification is retried, skipped or given up are tested without a server.

use std::time::Duration;

use bytes::Bytes;
use gateway_model::{AlarmInfo, EventFrame, Frame, format_rfc3339_ns};
use hyper::StatusCode;
use ring::hmac;
use serde::Serialize;

use crate::rule::Priority;

/// The alarm transition `frame` carries, if it is one at or above `min`.
pub(crate) fn select(frame: &Frame, min: Priority) -> Option<(&EventFrame, &AlarmInfo)> {
    let Frame::Event(ev) = frame else { return None };
    let info = ev.alarm.as_deref()?;
    (Priority::from_severity(ev.severity) >= min).then_some((ev, info))
}

/// The JSON body of one notification. Absent fields are `null`, never
/// missing, so a receiver's schema does not depend on the transition.
#[derive(Serialize)]
struct Body<'a> {
    gateway: &'a str,
    id: &'a str,
    rule: &'a str,
    tag: Option<&'a str>,
    event: &'a str,
    state: &'a str,
    priority: &'a str,
    value: Option<&'a gateway_model::Value>,
    limit: Option<&'a gateway_model::Value>,
    user: Option<&'a str>,
    comment: Option<&'a str>,
    message: &'a str,
    ts: String,
}

/// The exact bytes POSTed for the transition `ev` of alarm `info`.
pub(crate) fn body(gateway: &str, ev: &EventFrame, info: &AlarmInfo) -> Bytes {
    let b = Body {
        gateway,
        id: &info.id,
        rule: &info.rule,
        tag: ev.tag.as_ref().map(|t| t.as_str()),
        event: &ev.code,
        state: info.state.as_str(),
        priority: Priority::from_severity(ev.severity).as_str(),
        value: info.value.as_ref(),
        limit: info.limit.as_ref(),
        user: info.user.as_deref(),
        comment: info.comment.as_deref(),
        message: &ev.message,
        ts: format_rfc3339_ns(ev.ts_ns),
    };
    // Serialising borrowed strings and values into a Vec cannot fail.
    Bytes::from(serde_json::to_vec(&b).unwrap_or_default())
}

/// `sha256=<hex HMAC-SHA256 of body>`: the `X-Edge-Gateway-Signature` value.
pub(crate) fn sign(key: &hmac::Key, body: &[u8]) -> String {
    let tag = hmac::sign(key, body);
    let mut out = String::with_capacity(7 + 64);
    out.push_str("sha256=");
    for b in tag.as_ref() {
        out.push(char::from(HEX[usize::from(b >> 4)]));
        out.push(char::from(HEX[usize::from(b & 0xf)]));
    }
    out
}

const HEX: &[u8; 16] = b"0123456789abcdef";

/// What an attempt's result means for the notification.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// 2xx: the receiver has it; the cursor moves past it.
    Delivered,
    /// Worth another attempt: 5xx, 408, 429 (and, outside this function,
    /// connection errors and timeouts).
    Retry,
    /// The receiver refuses this notification and would refuse it again
    /// (any other 4xx, or a 1xx/3xx the client does not follow): counted as
    /// `rejected`, logged, skipped.
    Rejected,
}

impl Outcome {
    pub(crate) fn of(status: StatusCode) -> Outcome {
        if status.is_success() {
            Outcome::Delivered
        } else if status.is_server_error()
            || status == StatusCode::REQUEST_TIMEOUT
            || status == StatusCode::TOO_MANY_REQUESTS
        {
            Outcome::Retry
        } else {
            Outcome::Rejected
        }
    }
}

/// Exponential backoff: `initial`, doubled per failure up to `max`.
#[derive(Debug)]
pub(crate) struct Backoff {
    initial: Duration,
    max: Duration,
    next: Duration,
}

impl Backoff {
    pub(crate) fn new(initial: Duration, max: Duration) -> Self {
        Backoff { initial, max, next: initial }
    }

    /// The wait before the next attempt, `jitter` (in `[0, 1)`) choosing
    /// between half of the step and all of it, so a fleet of gateways that
    /// lost the same webhook does not hammer it in step when it returns.
    pub(crate) fn next_wait(&mut self, jitter: f64) -> Duration {
        let step = self.next;
        self.next = (step * 2).min(self.max);
        step.mul_f64(0.5 + 0.5 * jitter.clamp(0.0, 1.0))
    }

    /// After a success the next failure waits `initial` again.
    pub(crate) fn reset(&mut self) {
        self.next = self.initial;
    }
}

#[cfg(test)]
mod tests {
    use gateway_model::{AlarmState, DataFrame, Quality, Severity, TagId, Value};

    use super::*;

    fn event(severity: Severity, alarm: bool) -> Frame {
        Frame::Event(Box::new(EventFrame {
            source: "alarm".into(),
            code: "raised".into(),
            severity,
            message: "boiler.t is 95, above the limit 90".into(),
            tag: Some(TagId::new("boiler.t").unwrap()),
            ts_ns: 1_700_000_000_123_000_000,
            alarm: alarm.then(|| {
                Box::new(AlarmInfo {
                    id: "hot:boiler.t".into(),
                    rule: "hot".into(),
                    state: AlarmState::ActiveUnacked,
                    value: Some(Value::F64(95.0)),
                    limit: Some(Value::F64(90.0)),
                    user: None,
                    comment: None,
                })
            }),
        }))
    }

    #[test]
    fn only_alarm_events_at_or_above_the_minimum_priority_are_selected() {
        assert!(select(&event(Severity::Error, true), Priority::High).is_some());
        assert!(select(&event(Severity::Critical, true), Priority::High).is_some());
        assert!(select(&event(Severity::Warning, true), Priority::High).is_none());
        assert!(select(&event(Severity::Info, true), Priority::Low).is_some());
        assert!(select(&event(Severity::Critical, false), Priority::Low).is_none(), "not an alarm transition");
        let data = Frame::Data(DataFrame::new(TagId::new("a.b").unwrap(), Value::I64(1), Quality::GOOD, 1));
        assert!(select(&data, Priority::Low).is_none());
    }

    #[test]
    fn the_body_has_every_field_and_nulls_for_absent_ones() {
        let f = event(Severity::Error, true);
        let (ev, info) = select(&f, Priority::Low).unwrap();
        let v: serde_json::Value = serde_json::from_slice(&body("gw1", ev, info)).unwrap();
        assert_eq!(
            v,
            serde_json::json!({
                "gateway": "gw1", "id": "hot:boiler.t", "rule": "hot", "tag": "boiler.t", "event": "raised",
                "state": "active_unacked", "priority": "high", "value": 95.0, "limit": 90.0, "user": null,
                "comment": null, "message": "boiler.t is 95, above the limit 90", "ts": "2023-11-14T22:13:20.123Z"
            })
        );
    }

    #[test]
    fn the_signature_is_the_hex_hmac_sha256_of_the_body() {
        // RFC 4231, test case 2.
        let key = hmac::Key::new(hmac::HMAC_SHA256, b"Jefe");
        assert_eq!(
            sign(&key, b"what do ya want for nothing?"),
            "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    #[test]
    fn server_errors_timeouts_and_throttling_are_retried_other_client_errors_rejected() {
        for (code, want) in [
            (200, Outcome::Delivered),
            (204, Outcome::Delivered),
            (500, Outcome::Retry),
            (503, Outcome::Retry),
            (408, Outcome::Retry),
            (429, Outcome::Retry),
            (400, Outcome::Rejected),
            (401, Outcome::Rejected),
            (404, Outcome::Rejected),
            (301, Outcome::Rejected),
        ] {
            assert_eq!(Outcome::of(StatusCode::from_u16(code).unwrap()), want, "{code}");
        }
    }

    #[test]
    fn backoff_doubles_up_to_its_maximum_with_jitter_between_half_and_all() {
        let mut b = Backoff::new(Duration::from_secs(1), Duration::from_secs(5));
        assert_eq!(b.next_wait(1.0), Duration::from_secs(1));
        assert_eq!(b.next_wait(0.0), Duration::from_secs(1));
        assert_eq!(b.next_wait(1.0), Duration::from_secs(4));
        assert_eq!(b.next_wait(1.0), Duration::from_secs(5));
        assert_eq!(b.next_wait(0.5), Duration::from_millis(3750));
        b.reset();
        assert_eq!(b.next_wait(1.0), Duration::from_secs(1));
    }
}
