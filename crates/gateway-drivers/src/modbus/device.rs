//! The task of one Modbus device: poll on its interval, publish one batch per
//! poll, answer commands, and reconnect with backoff. TCP and RTU devices
//! run the same loop; only their [`Link`] differs.

use std::sync::Arc;
use std::time::Duration;

use gateway_bus::CommandRequest;
use gateway_model::{Batch, CmdStatus, Frame, Reason, now_ns};
use tokio::time::Instant;
use tokio_modbus::{Request, Response};

use super::config::{Area, Common, ModbusTagConfig};
use super::link::{CallError, Link};
use super::planner::{self, Limits, Read, Span};
use super::value::{self, Encoded};
use crate::backoff::{Backoff, seed_of};
use crate::config::DeviceConfig;
use crate::driver::{DriverContext, Stop};
use crate::point::{Outcome, Point};
use crate::status::DeviceStatus;

/// A tag and what the driver remembers of it.
struct Tag {
    point: Point,
    p: ModbusTagConfig,
    writable: bool,
}

impl Tag {
    /// The frame to publish for `outcome`, if the deadband rules want one.
    fn frame(&mut self, outcome: Outcome) -> Option<Frame> {
        let p = &self.p;
        self.point.frame(outcome, p.deadband, || value::neutral(p))
    }
}

/// Everything one device task owns.
struct Device {
    name: String,
    tags: Vec<Tag>,
    spans: Vec<Span>,
    limits: Limits,
    plan: Vec<Read>,
    link: Link,
    common: Common,
    status: Arc<DeviceStatus>,
    backoff: Backoff,
    /// While unreachable: no attempt before this instant.
    retry_at: Option<Instant>,
    /// Why the device is unreachable (the reason its tags carry meanwhile).
    down_reason: Reason,
    /// Whether a connection was ever attempted (later ones count as reconnects).
    attempted: bool,
    /// Each poll's outcome per tag, kept between polls: a poll allocates
    /// only the batch it publishes (the profile of the north job showed this
    /// vector's allocation and `malloc_consolidate` in every poll).
    outcomes: Vec<Option<Outcome>>,
}

impl Device {
    fn new(dev: &DeviceConfig, common: Common, link: Link, status: Arc<DeviceStatus>) -> Self {
        let tags: Vec<Tag> = dev
            .tags_of::<ModbusTagConfig>()
            .filter_map(|(t, p)| {
                let id = dev.tag_id(&t.name)?;
                Some(Tag { point: Point::new(id), p: p.clone(), writable: t.writable })
            })
            .collect();
        let spans: Vec<Span> =
            tags.iter().map(|t| Span { area: t.p.area, start: t.p.address, width: t.p.width() }).collect();
        let limits =
            Limits { max_registers: common.max_registers, max_coils: common.max_coils, max_gap: common.max_gap };
        let plan = planner::plan(&spans, limits);
        let backoff = Backoff::new(common.reconnect_min, common.reconnect_max, seed_of(&dev.name));
        Device {
            name: dev.name.clone(),
            tags,
            spans,
            limits,
            plan,
            link,
            common,
            status,
            backoff,
            retry_at: None,
            down_reason: Reason::NOT_CONNECTED,
            attempted: false,
            outcomes: Vec::new(),
        }
    }

    /// Marks the device unreachable after `e` and schedules the next attempt.
    fn went_down(&mut self, e: &CallError) {
        let was_up = self.link.is_connected() || self.backoff.failures() == 0;
        self.link.disconnect();
        self.status.set_connected(false);
        self.status.failed(e);
        self.down_reason = e.reason();
        let delay = self.backoff.next_delay();
        self.retry_at = Some(Instant::now() + delay);
        if was_up {
            tracing::warn!(device = %self.name, link = %self.link.describe(), error = %e, "Modbus device unreachable; retrying with backoff.");
        } else {
            tracing::debug!(device = %self.name, error = %e, retry_in_ms = delay.as_millis() as u64, "Modbus device still unreachable.");
        }
    }

    /// Connects if needed and allowed now: `Err(None)` while waiting for the
    /// backoff to pass, `Err(Some(e))` when the attempt failed.
    async fn ensure_connected(&mut self, force: bool) -> Result<(), Option<CallError>> {
        if self.link.is_connected() {
            return Ok(());
        }
        if !force
            && let Some(at) = self.retry_at
            && Instant::now() < at
        {
            return Err(None);
        }
        if self.attempted {
            self.status.reconnecting();
        }
        self.attempted = true;
        match self.link.connect().await {
            Ok(()) => Ok(()),
            Err(e) => {
                self.went_down(&e);
                Err(Some(e))
            }
        }
    }

    /// The device answered: it is up.
    fn came_up(&mut self) {
        if self.retry_at.is_some() || self.backoff.failures() > 0 {
            tracing::info!(device = %self.name, link = %self.link.describe(), "Modbus device reachable again.");
        }
        self.backoff.reset();
        self.retry_at = None;
        self.status.set_connected(true);
    }

    /// One poll: every read of the plan, and the frames to publish.
    async fn poll(&mut self) -> Vec<Frame> {
        let mut outcomes = std::mem::take(&mut self.outcomes);
        outcomes.clear();
        outcomes.resize(self.tags.len(), None);
        match self.ensure_connected(false).await {
            Err(e) => {
                // Waiting for the backoff, or the connect just failed (and was
                // counted as a failure where it happened).
                let reason = e.map_or(self.down_reason, |e| e.reason());
                let ts = now_ns();
                outcomes.iter_mut().for_each(|o| *o = Some(Outcome::Bad(reason, ts)));
            }
            Ok(()) => {
                let sent = Instant::now();
                match self.read_all(&mut outcomes).await {
                    None => {
                        self.status.round_trip(sent.elapsed());
                        self.status.polled(now_ns());
                    }
                    // The device answered (with an exception): a round trip all the same.
                    Some(e) if !e.is_device_level() => {
                        self.status.round_trip(sent.elapsed());
                        self.status.failed(e);
                    }
                    // Device-level failures were counted where they happened;
                    // a timeout is no round trip.
                    Some(_) => {}
                }
            }
        }
        let mut frames = Vec::with_capacity(self.tags.len());
        for (tag, outcome) in self.tags.iter_mut().zip(outcomes.drain(..)) {
            let outcome = outcome.unwrap_or_else(|| Outcome::Bad(Reason::NOT_CONNECTED, now_ns()));
            if let Some(f) = tag.frame(outcome) {
                frames.push(f);
            }
        }
        self.outcomes = outcomes;
        self.status.produced(frames.len());
        frames
    }

    /// Every read of the plan; the first error, if any.
    async fn read_all(&mut self, outcomes: &mut [Option<Outcome>]) -> Option<CallError> {
        let mut first_error: Option<CallError> = None;
        let mut i = 0;
        let mut answered = false;
        while i < self.plan.len() {
            let (area, start, count) = (self.plan[i].area, self.plan[i].start, self.plan[i].count);
            let request = match area {
                Area::Coil => Request::ReadCoils(start, count),
                Area::DiscreteInput => Request::ReadDiscreteInputs(start, count),
                Area::HoldingRegister => Request::ReadHoldingRegisters(start, count),
                Area::InputRegister => Request::ReadInputRegisters(start, count),
            };
            let result = self.call_connected(request).await.and_then(|rsp| check_read(area, count, rsp));
            let ts = now_ns();
            let read = &self.plan[i];
            match result {
                Ok(data) => {
                    answered = true;
                    for &t in &read.tags {
                        let tag = &self.tags[t];
                        let offset = usize::from(tag.p.address.saturating_sub(start));
                        let decoded = match &data {
                            Data::Bits(bits) => value::decode_bits(bits.get(offset..).unwrap_or(&[])),
                            Data::Words(words) => value::decode_words(&tag.p, words.get(offset..).unwrap_or(&[])),
                        };
                        outcomes[t] = Some(match decoded {
                            Ok(v) => Outcome::Good(v, ts),
                            Err(e) => {
                                tracing::debug!(device = %self.name, tag = %tag.point.id, error = %e, "Cannot decode a Modbus value.");
                                Outcome::Bad(Reason::DECODE_ERROR, ts)
                            }
                        });
                    }
                }
                Err(CallError::Exception { code: 2 }) if read.tags.len() > 1 => {
                    answered = true;
                    // The device refuses part of the range (an unmapped gap,
                    // most likely): read its tags in smaller pieces, now and from now on.
                    if let Some(parts) = planner::split(read, &self.spans, self.limits) {
                        tracing::info!(
                            device = %self.name, area = area.name(), start, count, parts = parts.len(),
                            "Device refused a merged read (illegal data address); reading its tags separately."
                        );
                        self.plan.splice(i..=i, parts);
                        continue;
                    }
                    for &t in &read.tags {
                        outcomes[t] = Some(Outcome::Bad(Reason::device_exception(2), ts));
                    }
                    first_error.get_or_insert(CallError::Exception { code: 2 });
                }
                Err(e) if e.is_device_level() => {
                    // Unreachable: the remaining reads would only wait for their
                    // own timeouts, which on a shared line also delays the others.
                    for o in outcomes.iter_mut().filter(|o| o.is_none()) {
                        *o = Some(Outcome::Bad(e.reason(), ts));
                    }
                    self.went_down(&e);
                    return Some(e);
                }
                Err(e) => {
                    answered |= matches!(e, CallError::Exception { .. });
                    tracing::debug!(device = %self.name, error = %e, "Modbus read failed.");
                    for &t in &read.tags {
                        outcomes[t] = Some(Outcome::Bad(e.reason(), ts));
                    }
                    first_error.get_or_insert(e);
                }
            }
            i += 1;
        }
        if answered || self.plan.is_empty() {
            self.came_up();
        }
        first_error
    }

    /// A request on the link, reconnecting first when the link was dropped
    /// in this poll (after a malformed answer) — without backoff, since the
    /// device itself answered.
    async fn call_connected(&mut self, request: Request<'static>) -> Result<Response, CallError> {
        self.ensure_connected(true).await.map_err(|e| e.unwrap_or_else(|| CallError::NotConnected(String::new())))?;
        self.link.call(request).await
    }

    /// Carries out a command and answers it.
    async fn command(&mut self, req: CommandRequest) {
        let Some(tag) = self.tags.iter().find(|t| t.point.id == req.cmd.tag) else {
            req.reply(CmdStatus::Rejected, "unknown tag");
            return;
        };
        if !tag.writable {
            req.reply(CmdStatus::Rejected, "tag is not writable");
            return;
        }
        let encoded = match value::encode(&tag.p, &req.cmd.value) {
            Ok(e) => e,
            Err(e) => {
                req.reply(CmdStatus::Rejected, e.to_string());
                return;
            }
        };
        let p = tag.p.clone();
        match self.write(&p, encoded).await {
            Ok(()) => req.reply(CmdStatus::Ok, ""),
            Err(e) => {
                if e.is_device_level() {
                    self.went_down(&e);
                }
                req.reply(CmdStatus::Failed, e.to_string());
            }
        }
    }

    /// Writes `encoded` to the tag `p`: FC 5 (or 15) for a coil, FC 6 (or 16)
    /// for one register, FC 16 for several, and FC 3 + FC 6 (read, change
    /// the bit, write back) for a bit of a register.
    async fn write(&mut self, p: &ModbusTagConfig, encoded: Encoded) -> Result<(), CallError> {
        // A command is an operator's action: try to connect now rather than
        // wait for the backoff.
        self.ensure_connected(true).await.map_err(|e| e.unwrap_or_else(|| CallError::NotConnected(String::new())))?;
        let multiple = self.common.write_multiple_only;
        let a = p.address;
        let (request, expect) = match encoded {
            Encoded::Coil(b) if multiple => {
                (Request::WriteMultipleCoils(a, vec![b].into()), Response::WriteMultipleCoils(a, 1))
            }
            Encoded::Coil(b) => (Request::WriteSingleCoil(a, b), Response::WriteSingleCoil(a, b)),
            Encoded::Words(words) => registers_request(a, words, multiple),
            Encoded::Bit(b) => {
                let current = match self.link.call(Request::ReadHoldingRegisters(a, 1)).await? {
                    Response::ReadHoldingRegisters(w) if w.len() == 1 => w[0],
                    other => return Err(CallError::Malformed(format!("expected one holding register, got {other:?}"))),
                };
                let mask = 1u16 << p.bit.unwrap_or(0).min(15);
                let logical = value::logical_word(current, p);
                let changed = if b { logical | mask } else { logical & !mask };
                registers_request(a, vec![value::logical_word(changed, p)], multiple)
            }
        };
        let rsp = self.link.call(request).await?;
        if rsp != expect {
            return Err(CallError::Malformed(format!("the write was answered with {rsp:?}, expected {expect:?}")));
        }
        self.came_up();
        Ok(())
    }

    /// Every tag bad for `reason`, for the driver's last batch.
    fn all_bad(&mut self, reason: Reason) -> Vec<Frame> {
        let ts = now_ns();
        self.tags.iter().map(|t| t.point.bad_frame(reason, ts, || value::neutral(&t.p))).collect()
    }
}

fn registers_request(a: u16, words: Vec<u16>, multiple: bool) -> (Request<'static>, Response) {
    if words.len() == 1 && !multiple {
        (Request::WriteSingleRegister(a, words[0]), Response::WriteSingleRegister(a, words[0]))
    } else {
        let n = u16::try_from(words.len()).unwrap_or(u16::MAX);
        (Request::WriteMultipleRegisters(a, words.into()), Response::WriteMultipleRegisters(a, n))
    }
}

/// What a read returned, checked against what it asked for.
enum Data {
    Bits(Vec<bool>),
    Words(Vec<u16>),
}

/// The data of `rsp` if it answers a read of `count` from `area` exactly: the right function and
/// count (the bits of a coil read come padded to whole bytes).
fn check_read(area: Area, count: u16, rsp: Response) -> Result<Data, CallError> {
    let n = usize::from(count);
    match (area, rsp) {
        (Area::Coil, Response::ReadCoils(bits)) | (Area::DiscreteInput, Response::ReadDiscreteInputs(bits)) => {
            if bits.len() < n || bits.len() >= n + 8 {
                return Err(CallError::Malformed(format!("{} bits for a read of {n}", bits.len())));
            }
            Ok(Data::Bits(bits))
        }
        (Area::HoldingRegister, Response::ReadHoldingRegisters(words))
        | (Area::InputRegister, Response::ReadInputRegisters(words)) => {
            if words.len() != n {
                return Err(CallError::Malformed(format!("{} registers for a read of {n}", words.len())));
            }
            Ok(Data::Words(words))
        }
        (area, other) => Err(CallError::Malformed(format!("a read of {} was answered with {other:?}", area.name()))),
    }
}

/// Runs a Modbus device until its context says stop.
pub(crate) async fn run(dev: Arc<DeviceConfig>, common: Common, link: Link, mut ctx: DriverContext) {
    let mut device = Device::new(&dev, common, link, ctx.status.clone());
    tracing::info!(device = %dev.name, link = %device.link.describe(), tags = device.tags.len(), reads = device.plan.len(), "Modbus device starting.");
    let mut tick = crate::schedule::PollClock::new(Duration::from_millis(dev.poll_interval_ms));
    let mut shutdown = ctx.shutdown.clone();
    loop {
        tokio::select! {
            biased;
            _ = shutdown.wait() => break,
            req = ctx.commands.recv() => {
                let Some(req) = req else { break };
                let done = async {
                    device.command(req).await;
                    // Commands that queued meanwhile, then a poll at once so the
                    // written values are read back without waiting a full interval.
                    while let Some(req) = ctx.commands.try_recv() {
                        device.command(req).await;
                    }
                };
                tokio::select! {
                    _ = shutdown.wait() => break,
                    () = done => tick.poll_now(),
                }
            }
            _ = tick.tick() => {
                let frames = tokio::select! {
                    _ = shutdown.wait() => break,
                    f = device.poll() => f,
                };
                if !frames.is_empty() && ctx.publish(Batch::from(frames)).await == Err(Stop) {
                    break;
                }
            }
        }
    }
    device.link.disconnect();
    ctx.status.set_connected(false);
    // Consumers must not keep showing the last values as good once nobody
    // polls them. Best effort: never wait on a bus that is closing.
    let last = device.all_bad(Reason::SHUTDOWN);
    if !last.is_empty() {
        let _ = ctx.bus.try_publish(Arc::new(Batch::from(last)));
    }
    tracing::info!(device = %dev.name, "Modbus device stopped.");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn responses_of_the_wrong_length_or_kind_are_malformed() {
        let hr = Area::HoldingRegister;
        assert!(check_read(hr, 2, Response::ReadHoldingRegisters(vec![1, 2])).is_ok());
        assert!(matches!(check_read(hr, 2, Response::ReadHoldingRegisters(vec![1])), Err(CallError::Malformed(_))));
        assert!(matches!(check_read(hr, 2, Response::ReadInputRegisters(vec![1, 2])), Err(CallError::Malformed(_))));
        assert!(check_read(Area::Coil, 3, Response::ReadCoils(vec![false; 8])).is_ok(), "padded to a byte");
        assert!(check_read(Area::Coil, 3, Response::ReadCoils(vec![false; 16])).is_err());
    }
}
