//! Shared serial lines for Modbus RTU. Several slaves usually hang on one
//! RS-485 line, and a line carries one request at a time, so the devices of
//! one `port` share one *line task*, the only code that touches the port:
//!
//! * a process-wide registry maps each port path to its line (a weak
//!   reference: the line lives as long as a device uses it, and the port is
//!   closed when the last one stops); a device asking for a port that is open
//!   with other settings gets a clear configuration error;
//! * each device task stays independent: it sends its request to the line
//!   and waits for the answer; requests are served in arrival order, so
//!   devices take turns; each request carries its device's own timeout, so a
//!   dead slave costs its own request's timeout and nothing more (and its
//!   device task then backs off, probing it less and less often);
//! * before each request the line keeps the 3.5-character silence that
//!   marks a frame boundary and discards any bytes already waiting (the late
//!   answer of a slave that timed out), so they cannot be taken for the next
//!   slave's answer;
//! * when the port cannot be opened (a USB adapter unplugged) requests fail
//!   at once as "not connected" and the port is reopened with exponential
//!   backoff; a port that breaks is closed and reopened the same way.

use std::collections::HashMap;
use std::io;
use std::pin::Pin;
use std::sync::{Arc, LazyLock, Mutex, Weak};
use std::task::{Context as TaskContext, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;
use tokio_modbus::client::Context;
use tokio_modbus::slave::SlaveContext;
use tokio_modbus::{Request, Response, Slave};
use tokio_serial::{SerialPort, SerialPortBuilderExt, SerialStream};

use super::config::{ModbusRtuConfig, Parity};
use super::link::{CallError, call_with_timeout};
use crate::backoff::{Backoff, seed_of};

/// The settings of a serial line, which all its devices must share.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct LineSettings {
    /// The port path, as configured: two spellings of one port are two lines.
    port: String,
    baud_rate: u32,
    parity: Parity,
    data_bits: u8,
    stop_bits: u8,
}

impl LineSettings {
    fn of(p: &ModbusRtuConfig) -> Self {
        LineSettings {
            port: p.port.clone(),
            baud_rate: p.baud_rate,
            parity: p.parity,
            data_bits: p.data_bits,
            stop_bits: p.stop_bits,
        }
    }

    fn describe(&self) -> String {
        let parity = match self.parity {
            Parity::None => 'N',
            Parity::Even => 'E',
            Parity::Odd => 'O',
        };
        format!("{} {}{}{}", self.baud_rate, self.data_bits, parity, self.stop_bits)
    }

    /// The silence that ends a frame: 3.5 characters, or 1.75 ms above
    /// 19200 baud (the Modbus serial line specification).
    fn frame_gap(&self) -> Duration {
        if self.baud_rate > 19_200 {
            return Duration::from_micros(1750);
        }
        let bits = 1 + u64::from(self.data_bits) + u64::from(self.parity != Parity::None) + u64::from(self.stop_bits);
        Duration::from_micros(bits * 3_500_000 / u64::from(self.baud_rate.max(1)))
    }

    fn open(&self) -> Result<SerialStream, tokio_serial::Error> {
        let parity = match self.parity {
            Parity::None => tokio_serial::Parity::None,
            Parity::Even => tokio_serial::Parity::Even,
            Parity::Odd => tokio_serial::Parity::Odd,
        };
        let data_bits = match self.data_bits {
            5 => tokio_serial::DataBits::Five,
            6 => tokio_serial::DataBits::Six,
            7 => tokio_serial::DataBits::Seven,
            _ => tokio_serial::DataBits::Eight,
        };
        let stop_bits = if self.stop_bits == 2 { tokio_serial::StopBits::Two } else { tokio_serial::StopBits::One };
        tokio_serial::new(&self.port, self.baud_rate)
            .parity(parity)
            .data_bits(data_bits)
            .stop_bits(stop_bits)
            .flow_control(tokio_serial::FlowControl::None)
            .open_native_async()
    }
}

/// Why a device cannot have its line.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub(crate) enum LineError {
    /// The port is open with other settings for other devices.
    #[error("serial port {port} is in use at {open} by other devices; this device asks for {asked}")]
    Mismatch {
        /// The serial port path, as configured.
        port: String,
        /// The settings the line runs with, e.g. `9600 8E1`: those of the
        /// device that opened it first.
        open: String,
        /// This device's settings, in the same form.
        asked: String,
    },
}

/// One request for the line task.
struct Job {
    unit: u8,
    request: Request<'static>,
    timeout: Duration,
    reply: oneshot::Sender<Result<Response, CallError>>,
}

/// A serial line in use; dropping the last handle closes the port.
pub(crate) struct Line {
    settings: LineSettings,
    jobs: mpsc::Sender<Job>,
}

struct Entry {
    line: Weak<Line>,
    /// Held by the line task for as long as it may have the port open, so a
    /// new line for the same port waits for the old one to close it.
    port_lock: Arc<tokio::sync::Mutex<()>>,
}

static LINES: LazyLock<Mutex<HashMap<String, Entry>>> = LazyLock::new(|| Mutex::new(HashMap::new()));

/// The line for `settings.port`, started if no device uses it yet. Must be
/// called inside a tokio runtime.
pub(crate) fn acquire(settings: &LineSettings, reconnect: (Duration, Duration)) -> Result<Arc<Line>, LineError> {
    let mut lines = LINES.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(entry) = lines.get(&settings.port)
        && let Some(line) = entry.line.upgrade()
    {
        if line.settings != *settings {
            return Err(LineError::Mismatch {
                port: settings.port.clone(),
                open: line.settings.describe(),
                asked: settings.describe(),
            });
        }
        return Ok(line);
    }
    let port_lock = lines.get(&settings.port).map(|e| e.port_lock.clone()).unwrap_or_default();
    let (tx, rx) = mpsc::channel(64);
    let line = Arc::new(Line { settings: settings.clone(), jobs: tx });
    tokio::spawn(run_line(settings.clone(), rx, port_lock.clone(), reconnect));
    lines.insert(settings.port.clone(), Entry { line: Arc::downgrade(&line), port_lock });
    Ok(line)
}

/// The serial port, shared between the line task (which clears its input)
/// and the tokio-modbus context that reads and writes it. The lock is never
/// held across an await, and only the line task uses either side.
#[derive(Clone)]
struct SharedPort(Arc<Mutex<SerialStream>>);

impl SharedPort {
    fn lock(&self) -> std::sync::MutexGuard<'_, SerialStream> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl AsyncRead for SharedPort {
    fn poll_read(self: Pin<&mut Self>, cx: &mut TaskContext<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut *self.lock()).poll_read(cx, buf)
    }
}

impl AsyncWrite for SharedPort {
    fn poll_write(self: Pin<&mut Self>, cx: &mut TaskContext<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut *self.lock()).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut *self.lock()).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut *self.lock()).poll_shutdown(cx)
    }
}

/// An open port and the Modbus framing on it.
struct Open {
    port: SharedPort,
    ctx: Context,
}

impl Open {
    fn new(stream: SerialStream) -> Self {
        let port = SharedPort(Arc::new(Mutex::new(stream)));
        let ctx = tokio_modbus::client::rtu::attach_slave(port.clone(), Slave(1));
        Open { port, ctx }
    }

    /// Fresh framing on the same port: after a timeout or a bad frame the
    /// old framing may hold half a frame (or have given up on its stream).
    fn reframe(&mut self) {
        self.ctx = tokio_modbus::client::rtu::attach_slave(self.port.clone(), Slave(1));
    }
}

async fn run_line(
    settings: LineSettings,
    mut jobs: mpsc::Receiver<Job>,
    port_lock: Arc<tokio::sync::Mutex<()>>,
    reconnect: (Duration, Duration),
) {
    let _held = port_lock.lock_owned().await;
    let mut backoff = Backoff::new(reconnect.0, reconnect.1, seed_of(&settings.port));
    let mut open: Option<Open> = None;
    let mut retry_at = Instant::now();
    let mut open_error = String::new();
    let gap = settings.frame_gap();
    let mut quiet_since = Instant::now();
    while let Some(job) = jobs.recv().await {
        if job.reply.is_closed() {
            continue; // its device stopped waiting
        }
        if open.is_none() {
            if Instant::now() < retry_at {
                let _ = job.reply.send(Err(CallError::NotConnected(open_error.clone())));
                continue;
            }
            match settings.open() {
                Ok(stream) => {
                    tracing::info!(port = %settings.port, settings = %settings.describe(), "Serial port opened.");
                    backoff.reset();
                    open = Some(Open::new(stream));
                    quiet_since = Instant::now();
                }
                Err(e) => {
                    open_error = format!("cannot open serial port {}: {e}", settings.port);
                    let delay = backoff.next_delay();
                    if backoff.failures() == 1 {
                        tracing::warn!(port = %settings.port, error = %e, "Serial port cannot be opened; retrying with backoff.");
                    }
                    retry_at = Instant::now() + delay;
                    let _ = job.reply.send(Err(CallError::NotConnected(open_error.clone())));
                    continue;
                }
            }
        }
        let Some(o) = open.as_mut() else { continue };
        tokio::time::sleep_until(quiet_since + gap).await;
        // Whatever arrived since the last answer belongs to no request.
        let _ = o.port.lock().clear(tokio_serial::ClearBuffer::Input);
        o.ctx.set_slave(Slave(job.unit));
        let result = call_with_timeout(&mut o.ctx, job.request, job.timeout).await;
        quiet_since = Instant::now();
        match &result {
            Ok(_) | Err(CallError::Exception { .. }) => {}
            Err(CallError::ConnectionLost(e)) => {
                tracing::warn!(port = %settings.port, error = %e, "Serial port failed; reopening it.");
                open = None;
                retry_at = Instant::now();
            }
            Err(_) => o.reframe(),
        }
        let _ = job.reply.send(result);
    }
    tracing::debug!(port = %settings.port, "Serial line closed: no device uses it.");
}

/// One device's use of a shared serial line.
pub(crate) struct RtuLink {
    settings: LineSettings,
    unit: u8,
    timeout: Duration,
    reconnect: (Duration, Duration),
    line: Option<Arc<Line>>,
    /// The slave answered and was not since declared unreachable.
    up: bool,
}

impl RtuLink {
    pub fn new(p: &ModbusRtuConfig) -> Self {
        RtuLink {
            settings: LineSettings::of(p),
            unit: p.unit_id,
            timeout: Duration::from_millis(p.timeout_ms),
            reconnect: (Duration::from_millis(p.reconnect_min_ms), Duration::from_millis(p.reconnect_max_ms)),
            line: None,
            up: false,
        }
    }

    pub fn is_connected(&self) -> bool {
        self.up && self.line.is_some()
    }

    /// Joins the line (no I/O: the next request probes the slave).
    pub fn connect(&mut self) -> Result<(), CallError> {
        if self.line.is_none() {
            let line = acquire(&self.settings, self.reconnect).map_err(|e| CallError::Config(e.to_string()))?;
            self.line = Some(line);
        }
        self.up = true;
        Ok(())
    }

    pub async fn call(&mut self, request: Request<'static>) -> Result<Response, CallError> {
        let Some(line) = &self.line else {
            return Err(CallError::NotConnected("not on the serial line".into()));
        };
        let (reply, answer) = oneshot::channel();
        let job = Job { unit: self.unit, request, timeout: self.timeout, reply };
        let sent = line.jobs.send(job).await;
        let result = match sent {
            Ok(()) => answer.await.unwrap_or_else(|_| Err(CallError::NotConnected("the serial line stopped".into()))),
            Err(_) => Err(CallError::NotConnected("the serial line stopped".into())),
        };
        if matches!(&result, Err(CallError::NotConnected(_))) && line.jobs.is_closed() {
            self.line = None;
        }
        result
    }

    pub fn disconnect(&mut self) {
        self.up = false;
    }

    pub fn describe(&self) -> String {
        format!("rtu {} {} unit {}", self.settings.port, self.settings.describe(), self.unit)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(port: &str, baud: u32) -> LineSettings {
        LineSettings { port: port.into(), baud_rate: baud, parity: Parity::Even, data_bits: 8, stop_bits: 1 }
    }

    #[test]
    fn the_frame_gap_is_three_and_a_half_characters_and_fixed_above_19200_baud() {
        // 11 bits per character at 9600 baud: 3.5 × 11 / 9600 s ≈ 4.01 ms.
        assert_eq!(settings("/x", 9600).frame_gap(), Duration::from_micros(4010));
        assert_eq!(settings("/x", 115_200).frame_gap(), Duration::from_micros(1750));
    }

    #[tokio::test]
    async fn devices_on_one_port_share_its_line_and_must_agree_on_its_settings() {
        let port = "/nonexistent/edge-gateway-test-port";
        let r = (Duration::from_millis(10), Duration::from_millis(100));
        let a = acquire(&settings(port, 9600), r).unwrap();
        let b = acquire(&settings(port, 9600), r).unwrap();
        assert!(Arc::ptr_eq(&a, &b));
        let e = acquire(&settings(port, 19200), r).err().unwrap();
        assert_eq!(
            e.to_string(),
            "serial port /nonexistent/edge-gateway-test-port is in use at 9600 8E1 by other devices; this device asks for 19200 8E1"
        );
        // A port that cannot be opened fails requests at once, as "not connected".
        let (reply, answer) = oneshot::channel();
        let job = Job { unit: 1, request: Request::ReadHoldingRegisters(0, 1), timeout: Duration::from_secs(1), reply };
        a.jobs.send(job).await.unwrap();
        let got = answer.await.unwrap();
        assert!(matches!(&got, Err(CallError::NotConnected(m)) if m.contains("cannot open serial port")), "{got:?}");
        drop((a, b));
        // Once no device uses the line, other settings are welcome.
        assert!(acquire(&settings(port, 19200), r).is_ok());
    }
}
