//! A target's I/O loop: receive a bus delivery, send each alarm event in it
//! that passes the target's minimum priority, acknowledge the cursor past
//! what was delivered or given up. The loop must never acknowledge an event
//! it neither delivered nor gave up, and never wait for anything but its own
//! webhook and the stop signal.

use std::sync::Arc;
use std::time::Duration;

use gateway_bus::{BusError, Shutdown, Subscriber};
use gateway_model::{AlarmInfo, EventFrame, now_ns};
use hyper::header::{HeaderName, HeaderValue};
use ring::hmac;
use ring::rand::{SecureRandom, SystemRandom};

use super::config::NotifyConfig;
use super::http::Client;
use super::metrics::{DropLabel, NotifyMetrics, TargetLabel};
use super::payload::{self, Backoff, Outcome};
use crate::rule::Priority;

const DELIVERY: HeaderName = HeaderName::from_static("x-edge-gateway-delivery");
const TIMESTAMP: HeaderName = HeaderName::from_static("x-edge-gateway-timestamp");
const SIGNATURE: HeaderName = HeaderName::from_static("x-edge-gateway-signature");

pub(crate) struct Worker {
    label: TargetLabel,
    gateway: Arc<str>,
    min: Priority,
    key: Option<hmac::Key>,
    max_age_ns: u64,
    client: Client,
    backoff: Backoff,
    metrics: Arc<NotifyMetrics>,
    rng: SystemRandom,
}

/// Whether the loop goes on after an event.
enum Next {
    Continue,
    Stop,
}

impl Worker {
    pub(crate) fn new(cfg: &NotifyConfig, client: Client, metrics: Arc<NotifyMetrics>, gateway: &str) -> Self {
        Worker {
            label: TargetLabel { target: cfg.name.clone() },
            gateway: gateway.into(),
            min: cfg.min_priority,
            key: cfg.secret.as_ref().map(|s| hmac::Key::new(hmac::HMAC_SHA256, s.expose().as_bytes())),
            max_age_ns: cfg.max_age.as_nanos(),
            client,
            backoff: Backoff::new(cfg.retry_initial.duration(), cfg.retry_max.duration()),
            metrics,
            rng: SystemRandom::new(),
        }
    }

    pub(crate) async fn run(mut self, mut sub: Subscriber, mut shutdown: Shutdown) {
        tracing::info!(target_name = %self.label.target, "Alarm notifications started.");
        let mut errors = Backoff::new(Duration::from_secs(1), Duration::from_secs(60));
        loop {
            self.report_backlog(&sub);
            let d = tokio::select! {
                _ = shutdown.wait() => break,
                d = sub.recv() => d,
            };
            let d = match d {
                Ok(d) => d,
                Err(BusError::Closed) => break,
                Err(e) => {
                    // A WAL read error: nothing was skipped, so wait and read again.
                    tracing::error!(target_name = %self.label.target, error = %e, "Alarm notifications cannot read the bus.");
                    let wait = errors.next_wait(self.jitter());
                    tokio::select! {
                        _ = shutdown.wait() => break,
                        _ = tokio::time::sleep(wait) => continue,
                    }
                }
            };
            errors.reset();
            for (seq, frame) in d.frames() {
                let Some((ev, info)) = payload::select(frame, self.min) else { continue };
                if let Next::Stop = self.deliver(seq, ev, info, &sub, &mut shutdown).await {
                    tracing::info!(target_name = %self.label.target, "Alarm notifications stopped.");
                    return;
                }
                // Past each event at once: a restart during a later retry
                // must not send this one again.
                self.ack(&mut sub, seq + 1);
            }
            self.ack(&mut sub, d.end_seq());
        }
        tracing::info!(target_name = %self.label.target, "Alarm notifications stopped.");
    }

    /// Sends one event until it is delivered, rejected or expired, or the
    /// target is stopped.
    async fn deliver(
        &mut self,
        seq: u64,
        ev: &EventFrame,
        info: &AlarmInfo,
        sub: &Subscriber,
        shutdown: &mut Shutdown,
    ) -> Next {
        let body = payload::body(&self.gateway, ev, info);
        let signature = self.key.as_ref().map(|k| payload::sign(k, &body));
        self.backoff.reset();
        let mut attempt = 0u32;
        loop {
            if now_ns().saturating_sub(ev.ts_ns) > self.max_age_ns {
                tracing::warn!(
                    target_name = %self.label.target, alarm = %info.id, event = %ev.code, seq, attempts = attempt,
                    "Alarm notification given up: older than max_age."
                );
                self.count_drop("expired");
                return Next::Continue;
            }
            attempt += 1;
            match self.client.post(body.clone(), &self.headers(seq, signature.as_deref())).await {
                Ok(a) => match Outcome::of(a.status) {
                    Outcome::Delivered => {
                        self.metrics.sent.get_or_create(&self.label).inc();
                        return Next::Continue;
                    }
                    Outcome::Rejected => {
                        self.metrics.failed.get_or_create(&self.label).inc();
                        tracing::warn!(
                            target_name = %self.label.target, alarm = %info.id, event = %ev.code, seq,
                            status = a.status.as_u16(), response = %a.text,
                            "Alarm notification rejected by the webhook; skipped."
                        );
                        self.count_drop("rejected");
                        return Next::Continue;
                    }
                    Outcome::Retry => {
                        self.metrics.failed.get_or_create(&self.label).inc();
                        tracing::warn!(
                            target_name = %self.label.target, alarm = %info.id, seq, attempt, status = a.status.as_u16(),
                            "Alarm notification failed; will retry."
                        );
                    }
                },
                Err(e) => {
                    self.metrics.failed.get_or_create(&self.label).inc();
                    tracing::warn!(
                        target_name = %self.label.target, alarm = %info.id, seq, attempt, error = %e,
                        "Alarm notification failed; will retry."
                    );
                }
            }
            self.report_backlog(sub);
            let wait = self.backoff.next_wait(self.jitter());
            tokio::select! {
                _ = shutdown.wait() => return Next::Stop,
                _ = tokio::time::sleep(wait) => {}
            }
        }
    }

    fn headers(&self, seq: u64, signature: Option<&str>) -> Vec<(HeaderName, HeaderValue)> {
        let mut h = Vec::with_capacity(3);
        h.push((DELIVERY, HeaderValue::from(seq)));
        h.push((TIMESTAMP, HeaderValue::from(now_ns() / 1_000_000_000)));
        if let Some(s) = signature
            && let Ok(v) = HeaderValue::from_str(s)
        {
            h.push((SIGNATURE, v));
        }
        h
    }

    fn count_drop(&self, reason: &str) {
        let label = DropLabel { target: self.label.target.clone(), reason: reason.to_owned() };
        self.metrics.dropped.get_or_create(&label).inc();
    }

    fn ack(&self, sub: &mut Subscriber, end: u64) {
        if let Err(e) = sub.ack(end) {
            tracing::warn!(target_name = %self.label.target, error = %e, "Alarm notifications could not move their cursor.");
        }
    }

    fn report_backlog(&self, sub: &Subscriber) {
        let backlog = sub.backlog();
        self.metrics.backlog.get_or_create(&self.label).set(i64::try_from(backlog).unwrap_or(i64::MAX));
    }

    /// A uniform number in `[0, 1)` for the backoff's jitter.
    fn jitter(&self) -> f64 {
        let mut b = [0u8; 4];
        // The system's random source does not fail on Linux; no jitter is a safe fallback.
        if self.rng.fill(&mut b).is_err() {
            return 1.0;
        }
        f64::from(u32::from_le_bytes(b)) / (f64::from(u32::MAX) + 1.0)
    }
}
