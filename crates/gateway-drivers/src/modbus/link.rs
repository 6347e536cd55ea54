//! The way to a device: a TCP connection of its own, or a turn on a shared
//! serial line ([`super::line`]). Both give the device task the same calls
//! (connect, one request with a timeout, disconnect) and the same errors,
//! sorted into those that end one request (an exception, a malformed
//! response) and those that say the device is unreachable (timeout, lost
//! connection), after which the device task backs off.

use std::io;
use std::time::{Duration, Instant};

use gateway_model::Reason;
use tokio::net::TcpStream;
use tokio_modbus::client::{Client, Context};
use tokio_modbus::{Request, Response, Slave};

use super::line::RtuLink;

/// Why a request (or the connection it needed) failed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub(crate) enum CallError {
    /// No answer within the device's `timeout_ms`, which the variant holds;
    /// the device is treated as unreachable.
    #[error("no answer within {0} ms")]
    Timeout(u64),
    /// The connection or serial line failed during the request (reset, closed,
    /// I/O error); the device is treated as unreachable.
    #[error("connection lost: {0}")]
    ConnectionLost(String),
    /// There is no connection (the connect failed, or the serial port cannot be opened).
    #[error("not connected: {0}")]
    NotConnected(String),
    /// The device answered with a Modbus exception.
    #[error("Modbus exception {code} ({})", exception_name(*code))]
    Exception {
        /// The code as the device sent it, 1 to 255; [`exception_name`] gives
        /// its meaning.
        code: u8,
    },
    /// The answer was not a valid response to the request.
    #[error("malformed response: {0}")]
    Malformed(String),
    /// The configuration cannot work (e.g. one serial port with two settings).
    #[error("{0}")]
    Config(String),
}

/// The name the Modbus specification gives an exception code.
pub(crate) fn exception_name(code: u8) -> &'static str {
    match code {
        1 => "illegal function",
        2 => "illegal data address",
        3 => "illegal data value",
        4 => "server device failure",
        5 => "acknowledge",
        6 => "server device busy",
        8 => "memory parity error",
        10 => "gateway path unavailable",
        11 => "gateway target device failed to respond",
        _ => "unknown exception",
    }
}

impl CallError {
    /// The quality reason of the tags this failure leaves without a value.
    pub fn reason(&self) -> Reason {
        match self {
            CallError::Timeout(_) => Reason::TIMEOUT,
            CallError::ConnectionLost(_) => Reason::CONNECTION_LOST,
            CallError::NotConnected(_) => Reason::NOT_CONNECTED,
            CallError::Exception { code } => Reason::device_exception(*code),
            CallError::Malformed(_) => Reason::MALFORMED_RESPONSE,
            CallError::Config(_) => Reason::CONFIG_ERROR,
        }
    }

    /// Whether the device as a whole is unreachable, so the rest of the poll
    /// is skipped and the device is retried after a backoff. Exceptions and
    /// malformed answers end one request only; a gateway's "target device
    /// failed to respond" (11) and "path unavailable" (10) are a dead slave
    /// behind it, so they count as unreachable.
    pub fn is_device_level(&self) -> bool {
        match self {
            CallError::Timeout(_)
            | CallError::ConnectionLost(_)
            | CallError::NotConnected(_)
            | CallError::Config(_) => true,
            CallError::Exception { code } => matches!(code, 10 | 11),
            CallError::Malformed(_) => false,
        }
    }

    /// Sorts what tokio-modbus returned.
    pub fn from_modbus(e: tokio_modbus::Error) -> CallError {
        match e {
            tokio_modbus::Error::Protocol(p) => CallError::Malformed(p.to_string()),
            tokio_modbus::Error::Transport(io) => CallError::from_io(&io),
        }
    }

    /// Sorts an I/O error met during a request: undecodable bytes are a
    /// malformed response, anything else a lost connection.
    pub fn from_io(e: &io::Error) -> CallError {
        if e.kind() == io::ErrorKind::InvalidData {
            CallError::Malformed(e.to_string())
        } else {
            CallError::ConnectionLost(e.to_string())
        }
    }
}

/// Runs one tokio-modbus call under `timeout` and sorts its outcome.
pub(crate) async fn call_with_timeout(
    ctx: &mut Context,
    req: Request<'static>,
    timeout: Duration,
) -> Result<Response, CallError> {
    match tokio::time::timeout(timeout, ctx.call(req)).await {
        Err(_) => Err(CallError::Timeout(timeout.as_millis().try_into().unwrap_or(u64::MAX))),
        Ok(Err(e)) => Err(CallError::from_modbus(e)),
        Ok(Ok(Err(code))) => Err(CallError::Exception { code: code.into() }),
        Ok(Ok(Ok(rsp))) => Ok(rsp),
    }
}

/// A Modbus TCP connection to one device.
pub(crate) struct TcpLink {
    address: String,
    unit: u8,
    timeout: Duration,
    ctx: Option<Context>,
}

impl TcpLink {
    pub fn new(address: String, unit: u8, timeout: Duration) -> Self {
        TcpLink { address, unit, timeout, ctx: None }
    }

    async fn connect(&mut self) -> Result<(), CallError> {
        self.ctx = None;
        let deadline = Instant::now() + self.timeout;
        let ms = self.timeout.as_millis();
        let addrs = tokio::time::timeout(self.timeout, tokio::net::lookup_host(self.address.as_str()))
            .await
            .map_err(|_| CallError::NotConnected(format!("resolving {} took over {ms} ms", self.address)))?
            .map_err(|e| CallError::NotConnected(format!("cannot resolve {}: {e}", self.address)))?;
        let mut last = format!("{} resolves to no address", self.address);
        // Every address the name resolves to, in turn, within one timeout.
        for addr in addrs {
            let left = deadline.saturating_duration_since(Instant::now());
            match tokio::time::timeout(left, TcpStream::connect(addr)).await {
                Ok(Ok(stream)) => {
                    // Requests are small and strictly alternate with responses:
                    // Nagle's algorithm would only add delay.
                    let _ = stream.set_nodelay(true);
                    self.ctx = Some(tokio_modbus::client::tcp::attach_slave(stream, Slave(self.unit)));
                    return Ok(());
                }
                Ok(Err(e)) => last = format!("{addr}: {e}"),
                Err(_) => {
                    last = format!("{addr}: no connection within {ms} ms");
                    break;
                }
            }
        }
        Err(CallError::NotConnected(last))
    }

    async fn call(&mut self, req: Request<'static>) -> Result<Response, CallError> {
        let Some(ctx) = self.ctx.as_mut() else {
            return Err(CallError::NotConnected("not connected".into()));
        };
        let r = call_with_timeout(ctx, req, self.timeout).await;
        if let Err(e) = &r
            && !matches!(e, CallError::Exception { .. })
        {
            // After a timeout a late answer may still arrive, and after a
            // malformed one the stream is out of step: only a new
            // connection is certain to pair the next answer with its request.
            self.ctx = None;
        }
        r
    }
}

/// A device's way to its device.
pub(crate) enum Link {
    /// `modbus_tcp`: a TCP connection of the device's own, dropped and
    /// reopened after a failure.
    Tcp(TcpLink),
    /// `modbus_rtu`: requests queued on the serial line the device shares
    /// with the other slaves on its port.
    Rtu(RtuLink),
}

impl Link {
    /// Whether requests can be sent without connecting first.
    pub fn is_connected(&self) -> bool {
        match self {
            Link::Tcp(t) => t.ctx.is_some(),
            Link::Rtu(r) => r.is_connected(),
        }
    }

    /// Connects (TCP) or joins the serial line (RTU).
    pub async fn connect(&mut self) -> Result<(), CallError> {
        match self {
            Link::Tcp(t) => t.connect().await,
            Link::Rtu(r) => r.connect(),
        }
    }

    /// One request, with the device's timeout.
    pub async fn call(&mut self, req: Request<'static>) -> Result<Response, CallError> {
        match self {
            Link::Tcp(t) => t.call(req).await,
            Link::Rtu(r) => r.call(req).await,
        }
    }

    /// Drops the connection (TCP) or marks the slave as to be probed again (RTU).
    pub fn disconnect(&mut self) {
        match self {
            Link::Tcp(t) => t.ctx = None,
            Link::Rtu(r) => r.disconnect(),
        }
    }

    /// A short description for logs: `tcp 10.0.0.5:502 unit 1`.
    pub fn describe(&self) -> String {
        match self {
            Link::Tcp(t) => format!("tcp {} unit {}", t.address, t.unit),
            Link::Rtu(r) => r.describe(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_map_to_quality_reasons_and_to_how_far_they_reach() {
        assert_eq!(CallError::Timeout(5).reason(), Reason::TIMEOUT);
        assert_eq!(CallError::Exception { code: 2 }.reason(), Reason::device_exception(2));
        assert_eq!(CallError::Exception { code: 2 }.to_string(), "Modbus exception 2 (illegal data address)");
        assert!(!CallError::Exception { code: 2 }.is_device_level());
        assert!(CallError::Exception { code: 11 }.is_device_level());
        assert!(!CallError::Malformed("x".into()).is_device_level());
        assert!(CallError::Timeout(5).is_device_level());
        let bad = io::Error::new(io::ErrorKind::InvalidData, "bad crc");
        assert_eq!(CallError::from_io(&bad).reason(), Reason::MALFORMED_RESPONSE);
        let gone = io::Error::from(io::ErrorKind::BrokenPipe);
        assert_eq!(CallError::from_io(&gone).reason(), Reason::CONNECTION_LOST);
    }
}
