//! How bytes reach one WebSocket client: its bounded [`Outbox`] of whole,
//! already framed server frames, written to the socket at once by whoever
//! queues them on plain TCP, or by the connection's [`Writer`] when the
//! socket is full (and always over TLS). What tungstenite writes itself
//! (pongs, the reply to a close) goes through the same queue ([`WsIo`]).

use std::collections::VecDeque;
use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, ready};

use bytes::{Buf, Bytes};
use serde_json::json;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::sync::Notify;

use super::lock;
use crate::server::RawConn;

/// Replies, pings and close frames waiting for a client at most.
const CONTROL_QUEUE: usize = 16;

/// The opcodes of the frames the hub writes (RFC 6455 §5.2).
const OP_TEXT: u8 = 0x1;
pub(super) const OP_CLOSE: u8 = 0x8;
pub(super) const OP_PING: u8 = 0x9;

/// One whole server frame: FIN, the opcode, the length and the payload.
/// A server never masks, so the same bytes serve every client: an update is
/// framed once per push and only its reference count is touched per client.
pub(super) fn frame(opcode: u8, payload: &[u8]) -> Bytes {
    let len = payload.len();
    let mut b = Vec::with_capacity(len + 10);
    b.push(0x80 | opcode);
    match u16::try_from(len) {
        Ok(l) if l < 126 => b.push(l as u8),
        Ok(l) => {
            b.push(126);
            b.extend_from_slice(&l.to_be_bytes());
        }
        Err(_) => {
            b.push(127);
            b.extend_from_slice(&(len as u64).to_be_bytes());
        }
    }
    b.extend_from_slice(payload);
    Bytes::from(b)
}

pub(super) fn text(s: &str) -> Bytes {
    frame(OP_TEXT, s.as_bytes())
}

/// One frame waiting for a client (the front one may be partly written).
struct Queued {
    bytes: Bytes,
    update: bool,
}

#[derive(Default)]
pub(super) struct OutState {
    queue: VecDeque<Queued>,
    /// Updates in `queue`, at most `ws_queue`.
    updates: usize,
    /// Other frames in `queue`, at most [`CONTROL_QUEUE`].
    controls: usize,
    /// Updates dropped for this client, and how many of them it was told of.
    dropped: u64,
    reported: u64,
    /// The socket did not take everything: the connection's writer is waiting
    /// for it to drain, and sends what is queued in the meantime too.
    waiting: bool,
    /// The connection is ending (or its socket failed): nothing more is
    /// queued but its close frame.
    pub(super) closed: bool,
}

/// What goes out to one client, in order. Whoever has something for the
/// client queues it here; on plain TCP the frame is written to the socket
/// at once by that same caller (the hub's push, the reader's reply), so a
/// client whose socket has room costs one `write` per update and no task
/// wake-up. What the socket does not take waits for the connection's writer,
/// which also bounds how long it may wait (`ws_send_timeout_s`). Over TLS
/// the writer sends everything (the bytes must go through the TLS stream).
pub(super) struct Outbox {
    pub(super) state: Mutex<OutState>,
    /// Wakes the connection's writer.
    pub(super) ready: Notify,
    raw: Option<Arc<RawConn>>,
    /// `ws_queue`.
    cap: usize,
}

/// What became of an offered update.
pub(super) enum Offer {
    /// Out: written to the socket whole (over TLS: handed to the writer).
    Sent,
    /// Waiting for the socket to take it (the writer counts it once out).
    Queued,
    /// The client already has `ws_queue` updates waiting: lost (it is told).
    Dropped,
    /// The connection is ending.
    Closed,
}

impl Outbox {
    pub(super) fn new(raw: Option<Arc<RawConn>>, cap: usize) -> Self {
        Outbox { state: Mutex::new(OutState::default()), ready: Notify::new(), raw, cap }
    }

    /// Queues an update of `values` values and sends it if it can.
    pub(super) fn offer_update(&self, bytes: &Bytes, values: u64) -> Offer {
        let mut st = lock(&self.state);
        if st.closed {
            return Offer::Closed;
        }
        if st.updates >= self.cap {
            st.dropped += values;
            return Offer::Dropped;
        }
        if st.dropped > st.reported {
            let note = text(&json!({"type": "dropped", "updates": st.dropped - st.reported}).to_string());
            st.reported = st.dropped;
            st.queue.push_back(Queued { bytes: note, update: false });
        }
        st.queue.push_back(Queued { bytes: bytes.clone(), update: true });
        st.updates += 1;
        let done = self.kick(&mut st);
        if done > 0 || self.raw.is_none() { Offer::Sent } else { Offer::Queued }
    }

    /// Queues a reply, a ping or the library's own frames (pongs, the close
    /// reply); `Err` when [`CONTROL_QUEUE`] of them wait already.
    pub(super) fn offer_control(&self, bytes: Bytes) -> Result<(), ()> {
        let mut st = lock(&self.state);
        if st.closed {
            return Ok(());
        }
        if st.controls >= CONTROL_QUEUE {
            return Err(());
        }
        st.queue.push_back(Queued { bytes, update: false });
        st.controls += 1;
        let _ = self.kick(&mut st);
        Ok(())
    }

    /// Ends the queue: only `last` (a close frame) may still go out.
    pub(super) fn close(&self, last: Option<Bytes>) {
        let mut st = lock(&self.state);
        st.closed = true;
        if let Some(bytes) = last {
            st.queue.push_back(Queued { bytes, update: false });
            st.controls += 1;
        }
    }

    /// Something was queued: on plain TCP, writes what the socket takes now
    /// (unless the writer is already waiting for it); otherwise, or if some
    /// is left, wakes the writer.
    /// Returns the updates written whole (on plain TCP).
    fn kick(&self, st: &mut OutState) -> u64 {
        match &self.raw {
            Some(_) if st.waiting => 0,
            Some(raw) => match write_now(raw, st) {
                Ok(done) => {
                    if !st.queue.is_empty() {
                        st.waiting = true;
                        self.ready.notify_one();
                    }
                    done
                }
                Err(_) => {
                    st.closed = true;
                    st.queue.clear();
                    self.ready.notify_one();
                    0
                }
            },
            None => {
                self.ready.notify_one();
                0
            }
        }
    }
}

/// Writes queued frames to the socket until it would block; frames leave
/// the queue only once written whole. Returns the updates written whole.
fn write_now(raw: &RawConn, st: &mut OutState) -> io::Result<u64> {
    let mut done = 0;
    while let Some(front) = st.queue.front_mut() {
        match raw.tcp().try_write(&front.bytes) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) if n < front.bytes.len() => front.bytes.advance(n),
            Ok(_) => {
                if front.update {
                    st.updates -= 1;
                    done += 1;
                } else {
                    st.controls -= 1;
                }
                st.queue.pop_front();
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(done),
            Err(e) => return Err(e),
        }
    }
    Ok(done)
}

/// Who writes what a connection's [`Outbox`] holds.
pub(super) enum Writer<W> {
    /// Plain TCP: the frames go straight to the socket when it has room.
    Raw(Arc<RawConn>),
    /// Anything else (TLS): through the stream.
    Io(W),
}

impl<W: AsyncWrite + Unpin> Writer<W> {
    /// Sends everything queued, waiting as long as it takes: `Err` when the
    /// connection broke. Returns the updates written on plain TCP (over TLS
    /// they were counted when queued).
    pub(super) async fn drain(&mut self, out: &Outbox) -> io::Result<u64> {
        match self {
            Writer::Raw(raw) => {
                let mut written = 0;
                std::future::poll_fn(|cx| {
                    loop {
                        {
                            let mut st = lock(&out.state);
                            written += write_now(raw, &mut st)?;
                            if st.queue.is_empty() {
                                st.waiting = false;
                                return Poll::Ready(Ok(written));
                            }
                        }
                        ready!(raw.tcp().poll_write_ready(cx))?;
                    }
                })
                .await
            }
            Writer::Io(w) => {
                let mut batch = VecDeque::new();
                loop {
                    {
                        let mut st = lock(&out.state);
                        if st.queue.is_empty() {
                            break;
                        }
                        std::mem::swap(&mut batch, &mut st.queue);
                        st.updates = 0;
                        st.controls = 0;
                    }
                    for q in batch.drain(..) {
                        w.write_all(&q.bytes).await?;
                    }
                    w.flush().await?;
                }
                Ok(0)
            }
        }
    }
}

/// The stream tungstenite reads the client's frames from. What tungstenite
/// writes itself (the pong to a client's ping, the reply to its close) is
/// queued in the client's [`Outbox`] like any other frame, in one piece.
pub(super) struct WsIo<R> {
    pub(super) read: R,
    pub(super) out: Arc<Outbox>,
}

impl<R: AsyncRead + Unpin> AsyncRead for WsIo<R> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.read).poll_read(cx, buf)
    }
}

impl<R: Unpin> AsyncWrite for WsIo<R> {
    fn poll_write(self: Pin<&mut Self>, _: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        match self.out.offer_control(Bytes::copy_from_slice(buf)) {
            Ok(()) => Poll::Ready(Ok(buf.len())),
            Err(()) => Poll::Ready(Err(io::Error::other("too many unread replies"))),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

/// The read side of a plain-TCP client (the hub may write to it meanwhile).
pub(super) struct RawRead(pub(super) Arc<RawConn>);

impl AsyncRead for RawRead {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let tcp = self.0.tcp();
        loop {
            ready!(tcp.poll_read_ready(cx))?;
            match tcp.try_read(buf.initialize_unfilled()) {
                Ok(n) => {
                    buf.advance(n);
                    return Poll::Ready(Ok(()));
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => return Poll::Ready(Err(e)),
            }
        }
    }
}
