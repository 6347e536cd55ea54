//! The accept loop in front of the [`router`](crate::router): HTTP/1.1 over
//! hyper, optionally TLS, with the bounds a server on a control network
//! needs, so that no client (slow, stuck or hostile) can hold what others
//! and the rest of the gateway need:
//!
//! - **A cap on open connections** (`max_connections`, lowered to stay well
//!   below the open-files limit, see [`effective_cap`]). At the cap the
//!   server stops accepting: new clients wait in the kernel's queue, holding
//!   no descriptor of ours, until a connection closes. A WebSocket keeps its
//!   connection's place until it closes.
//! - **A header-read timeout** (`header_read_timeout_s`): the TLS handshake,
//!   and each request's headers, must arrive in full within it; this is also
//!   how long an idle keep-alive connection stays open.
//! - **An idle timeout** (`idle_timeout_s`): no byte moving either way while
//!   no request is being handled (a client that stopped reading its answer)
//!   closes the connection. A handler at work is bounded by
//!   `request_timeout_s` instead; after a WebSocket upgrade the hub's
//!   heartbeat and send timeout take over.
//! - **Accept errors** (out of descriptors) pause the loop briefly instead of
//!   spinning.
//! - **JSON for hyper's own answers**: hyper answers a request it cannot
//!   parse (400), a request target over 64 KiB (414) or headers over its
//!   buffer (431) by itself, with an empty body; [`HyperErrors`] replaces that
//!   answer by the API's JSON error.
//!
//! Shutdown: stop accepting, close the WebSockets (1001), let requests in
//! flight finish (at most `request_timeout_s`), then return.
//!
//! It must never read or change the handlers' state: it moves bytes,
//! counts connections and closes them.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::task::{Context, Poll, ready};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::{Request, StatusCode};
use bytes::Bytes;
use gateway_model::FieldError;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};
use tokio::time::{Instant, Sleep};
use tokio_rustls::TlsAcceptor;
use tower::ServiceExt;

use crate::AppState;
use crate::metrics::{ApiMetrics, TimeoutKind, TimeoutLabels};

/// Largest request head (request line and headers) hyper buffers; beyond it
/// hyper answers 431. It bounds the memory a connection can make the
/// gateway hold before a handler runs.
const MAX_HEAD_BYTES: usize = 96 * 1024;

/// Pause after a failed accept (such as EMFILE), so the loop does not spin
/// while descriptors are short.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// The connection cap that stays well below the open-files limit `nofile`
/// (the soft `RLIMIT_NOFILE`; `None` when unlimited): a quarter of the limit,
/// and at least 64 descriptors, are kept for the WAL, the database, the
/// drivers and the connectors.
///
/// ```
/// use gateway_api::server::effective_cap;
///
/// assert_eq!(effective_cap(1024, Some(128)), 64);
/// assert_eq!(effective_cap(1024, Some(1024)), 768);
/// assert_eq!(effective_cap(1024, Some(1 << 20)), 1024);
/// assert_eq!(effective_cap(1024, None), 1024);
/// ```
pub fn effective_cap(configured: usize, nofile: Option<u64>) -> usize {
    let Some(limit) = nofile else { return configured };
    let limit = usize::try_from(limit).unwrap_or(usize::MAX);
    let reserve = (limit / 4).max(64);
    let room = limit.saturating_sub(reserve).max(limit / 4).max(1);
    configured.min(room)
}

/// The soft open-files limit of this process; `None` when unlimited or unknown.
fn open_files_limit() -> Option<u64> {
    use nix::sys::resource::{RLIM_INFINITY, Resource, getrlimit};
    getrlimit(Resource::RLIMIT_NOFILE).ok().map(|(soft, _)| soft).filter(|&s| s != RLIM_INFINITY)
}

/// Whether an accept error concerns that one connection only (the client
/// gave up before we took it) rather than the process.
fn is_connection_error(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionRefused | io::ErrorKind::ConnectionAborted | io::ErrorKind::ConnectionReset
    )
}

/// What every connection task shares.
struct Shared {
    router: Router,
    http: http1::Builder,
    tls: Option<TlsAcceptor>,
    header_timeout: Duration,
    idle_timeout: Duration,
    metrics: Arc<ApiMetrics>,
}

/// The API server: a listener, the router over an [`AppState`], TLS if
/// configured, and the limits of the module docs.
pub struct Server {
    listener: TcpListener,
    state: AppState,
    shared: Arc<Shared>,
    cap: usize,
}

impl std::fmt::Debug for Server {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Server").field("cap", &self.cap).field("tls", &self.shared.tls.is_some()).finish()
    }
}

impl Server {
    /// Prepares to serve `state`'s router on `listener`: loads the TLS files
    /// (the error names the field under `[api]`, such as `tls.cert_file`),
    /// works out the connection cap, and warns about a plain-HTTP API on a
    /// non-loopback address and about a cap lowered by the open-files limit.
    pub fn new(listener: TcpListener, state: AppState) -> Result<Server, FieldError> {
        let cfg = state.cfg();
        let tls = match &cfg.tls {
            Some(t) => Some(TlsAcceptor::from(t.load().map_err(|e| e.under("tls"))?)),
            None => None,
        };
        let addr = listener.local_addr().map_err(|e| FieldError::new("bind", e))?;
        if tls.is_none() && !addr.ip().is_loopback() {
            tracing::warn!(
                %addr,
                "The API listens beyond this machine without TLS: passwords, tokens and set-points cross the network in clear text. Configure [api.tls] (`edge-gateway tls self-signed` makes a first certificate)."
            );
        }
        if addr.ip().is_unspecified() && cfg.allowed_hosts.is_empty() {
            tracing::warn!(
                %addr,
                "The API listens on every interface but api.allowed_hosts is empty: requests naming this machine other than as localhost are refused (421). List the names and addresses clients use."
            );
        }
        let nofile = open_files_limit();
        let cap = effective_cap(cfg.max_connections, nofile);
        if cap < cfg.max_connections {
            tracing::warn!(
                max_connections = cfg.max_connections,
                effective = cap,
                open_files_limit = nofile,
                "Connection cap lowered to keep file descriptors for the WAL, the database and the drivers; raise the open-files limit (ulimit -n, LimitNOFILE=) to allow more."
            );
        }
        state.metrics().http_connection_limit.set(cap as i64);
        let header_timeout = Duration::from_secs(cfg.header_read_timeout_s);
        let mut http = http1::Builder::new();
        http.timer(TokioTimer::new()).header_read_timeout(header_timeout).max_buf_size(MAX_HEAD_BYTES);
        let shared = Arc::new(Shared {
            router: crate::router(state.clone()),
            http,
            tls,
            header_timeout,
            idle_timeout: Duration::from_secs(cfg.idle_timeout_s),
            metrics: state.metrics_arc(),
        });
        Ok(Server { listener, state, shared, cap })
    }

    /// The connection cap in force (see [`effective_cap`]).
    pub fn connection_cap(&self) -> usize {
        self.cap
    }

    /// Serves until `shutdown` resolves, then stops accepting, closes the
    /// WebSockets and waits for the requests in flight (at most
    /// `request_timeout_s`).
    pub async fn run(self, shutdown: impl Future<Output = ()> + Send + 'static) -> io::Result<()> {
        let Server { listener, state, shared, cap } = self;
        let slots = Arc::new(Semaphore::new(cap));
        let (close_tx, close_rx) = watch::channel(false);
        let mut shutdown = std::pin::pin!(shutdown);
        let mut failing = false;
        loop {
            let permit = tokio::select! {
                p = slots.clone().acquire_owned() => p.map_err(io::Error::other)?,
                () = &mut shutdown => break,
            };
            let accepted = tokio::select! {
                r = listener.accept() => r,
                () = &mut shutdown => break,
            };
            let (tcp, peer) = match accepted {
                Ok(c) => {
                    failing = false;
                    c
                }
                Err(e) if is_connection_error(&e) => continue,
                Err(e) => {
                    shared.metrics.http_accept_errors.inc();
                    if !failing {
                        tracing::warn!(error = %e, "Cannot accept connections; pausing between tries.");
                        failing = true;
                    }
                    tokio::select! {
                        () = tokio::time::sleep(ACCEPT_BACKOFF) => continue,
                        () = &mut shutdown => break,
                    }
                }
            };
            let _ = tcp.set_nodelay(true);
            tokio::spawn(connection(tcp, peer, permit, shared.clone(), close_rx.clone()));
        }
        drop(listener);
        drop(close_rx);
        state.ws().close_all();
        let _ = close_tx.send(true);
        let grace = Duration::from_secs(state.cfg().request_timeout_s);
        if tokio::time::timeout(grace, close_tx.closed()).await.is_err() {
            tracing::warn!("Connections still busy after request_timeout_s; closing them.");
        }
        Ok(())
    }
}

/// Serves `state`'s router on `listener` until `shutdown` resolves (see
/// [`Server`]); a TLS file that cannot be loaded is an `InvalidInput` error.
pub async fn serve(
    listener: TcpListener,
    state: AppState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> io::Result<()> {
    let server = Server::new(listener, state).map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
    server.run(shutdown).await
}

async fn connection(
    tcp: TcpStream,
    peer: SocketAddr,
    permit: OwnedSemaphorePermit,
    shared: Arc<Shared>,
    close: watch::Receiver<bool>,
) {
    let activity = Arc::new(Activity::default());
    let io = Tracked::new(tcp, permit, shared.idle_timeout, activity.clone(), shared.metrics.clone());
    match &shared.tls {
        None => http(io, peer, &shared, activity, close).await,
        Some(acceptor) => match tokio::time::timeout(shared.header_timeout, acceptor.accept(io)).await {
            Ok(Ok(tls)) => http(tls, peer, &shared, activity, close).await,
            Ok(Err(e)) => {
                shared.metrics.http_tls_failures.inc();
                tracing::debug!(%peer, error = %e, "TLS handshake failed.");
            }
            Err(_) => {
                shared
                    .metrics
                    .http_connection_timeouts
                    .get_or_create(&TimeoutLabels { kind: TimeoutKind::TlsHandshake })
                    .inc();
            }
        },
    }
}

async fn http<I>(io: I, peer: SocketAddr, shared: &Shared, activity: Arc<Activity>, mut close: watch::Receiver<bool>)
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let router = shared.router.clone();
    let busy = activity.clone();
    let service = hyper::service::service_fn(move |req: Request<Incoming>| {
        let mut req = req.map(Body::new);
        req.extensions_mut().insert(ConnectInfo(peer));
        let handling = busy.handling();
        let answer = router.clone().oneshot(req);
        async move {
            let resp = answer.await;
            drop(handling);
            resp
        }
    });
    let conn = shared.http.serve_connection(TokioIo::new(HyperErrors::new(io)), service).with_upgrades();
    let mut conn = std::pin::pin!(conn);
    let mut closing = false;
    loop {
        tokio::select! {
            r = conn.as_mut() => {
                if let Err(e) = r {
                    if e.is_timeout() {
                        shared.metrics.http_connection_timeouts.get_or_create(&TimeoutLabels { kind: TimeoutKind::Header }).inc();
                    }
                    tracing::debug!(%peer, error = %e, "HTTP connection ended with an error.");
                }
                break;
            }
            r = close.wait_for(|c| *c), if !closing => {
                closing = true;
                if r.is_ok() {
                    conn.as_mut().graceful_shutdown();
                }
            }
        }
    }
    // After an upgrade the socket lives on in the WebSocket, whose heartbeat
    // and send timeout bound it from now on.
    activity.disarmed.store(true, Ordering::Release);
}

/// What a connection is doing, shared by its request handler and its socket.
#[derive(Debug, Default)]
struct Activity {
    /// Requests being handled now; the idle timeout waits while any is.
    handling: AtomicUsize,
    /// Set once the connection is no longer HTTP's (upgraded or ended).
    disarmed: AtomicBool,
}

struct Handling(Arc<Activity>);

impl Activity {
    fn handling(self: &Arc<Self>) -> Handling {
        self.handling.fetch_add(1, Ordering::AcqRel);
        Handling(self.clone())
    }
}

impl Drop for Handling {
    fn drop(&mut self) {
        self.0.handling.fetch_sub(1, Ordering::AcqRel);
    }
}

/// The socket of one connection: holds its place under the cap (the permit),
/// counts it in `gateway_http_connections`, and fails reads and writes once
/// nothing moved for the idle timeout while no request was handled.
pub(crate) struct Tracked<T> {
    io: T,
    _permit: OwnedSemaphorePermit,
    idle: Duration,
    last: Instant,
    /// Fires at `last + idle` or later; moved on only when it fires, so a
    /// busy connection does not touch the timer on every read. Dropped once
    /// the connection is disarmed: a polled timer holds the waker of the
    /// task that polled it, and with it that whole task's memory (the HTTP
    /// connection's, about 5 KB) for as long as an upgraded socket lives.
    timer: Option<Pin<Box<Sleep>>>,
    activity: Arc<Activity>,
    metrics: Arc<ApiMetrics>,
}

impl<T> Tracked<T> {
    fn new(
        io: T,
        permit: OwnedSemaphorePermit,
        idle: Duration,
        activity: Arc<Activity>,
        metrics: Arc<ApiMetrics>,
    ) -> Self {
        metrics.http_connections.inc();
        let last = Instant::now();
        Tracked {
            io,
            _permit: permit,
            idle,
            last,
            timer: Some(Box::pin(tokio::time::sleep_until(last + idle))),
            activity,
            metrics,
        }
    }

    /// Called when the socket is not ready: the error to fail with once
    /// nothing moved for the idle timeout while no request was handled.
    fn idle_expired(&mut self, cx: &mut Context<'_>) -> Option<io::Error> {
        if self.activity.disarmed.load(Ordering::Acquire) {
            self.timer = None;
            return None;
        }
        let timer = self.timer.as_mut()?;
        while timer.as_mut().poll(cx).is_ready() {
            let now = Instant::now();
            if self.activity.handling.load(Ordering::Acquire) > 0 {
                self.last = now;
            }
            let due = self.last + self.idle;
            if now < due {
                timer.as_mut().reset(due);
                continue;
            }
            self.metrics.http_connection_timeouts.get_or_create(&TimeoutLabels { kind: TimeoutKind::Idle }).inc();
            return Some(io::Error::new(io::ErrorKind::TimedOut, "connection idle past idle_timeout_s"));
        }
        None
    }

    /// A write's outcome: bytes out count as progress; not ready, the idle check.
    fn written(&mut self, cx: &mut Context<'_>, r: Poll<io::Result<usize>>) -> Poll<io::Result<usize>> {
        match r {
            Poll::Ready(r) => {
                if matches!(r, Ok(n) if n > 0) {
                    self.last = Instant::now();
                }
                Poll::Ready(r)
            }
            Poll::Pending => self.pending(cx),
        }
    }

    fn pending<R>(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<R>> {
        match self.idle_expired(cx) {
            Some(e) => Poll::Ready(Err(e)),
            None => Poll::Pending,
        }
    }
}

/// A plain-TCP connection after its upgrade to WebSocket: the WebSocket hub
/// writes to it straight from its push (see `ws::Outbox`).
pub(crate) type RawConn = Tracked<TcpStream>;

impl Tracked<TcpStream> {
    pub(crate) fn tcp(&self) -> &TcpStream {
        &self.io
    }
}

/// The plain-TCP socket under an upgraded connection, with the bytes the
/// client sent after its request that hyper read already; `Err` gives the
/// connection back when it is not plain TCP (TLS).
pub(crate) fn into_raw(upgraded: hyper::upgrade::Upgraded) -> Result<(Arc<RawConn>, Bytes), hyper::upgrade::Upgraded> {
    let parts = upgraded.downcast::<TokioIo<HyperErrors<RawConn>>>()?;
    // After a 101 hyper wrote nothing that HyperErrors replaced: its `out` is empty.
    let mut io = parts.io.into_inner().io;
    io.timer = None;
    Ok((Arc::new(io), parts.read_buf))
}

impl<T> Drop for Tracked<T> {
    fn drop(&mut self) {
        self.metrics.http_connections.dec();
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Tracked<T> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        let before = buf.filled().len();
        match Pin::new(&mut this.io).poll_read(cx, buf) {
            Poll::Ready(r) => {
                if buf.filled().len() > before {
                    this.last = Instant::now();
                }
                Poll::Ready(r)
            }
            Poll::Pending => this.pending(cx),
        }
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Tracked<T> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        let r = Pin::new(&mut this.io).poll_write(cx, buf);
        this.written(cx, r)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        let r = Pin::new(&mut this.io).poll_write_vectored(cx, bufs);
        this.written(cx, r)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        match Pin::new(&mut this.io).poll_flush(cx) {
            Poll::Ready(r) => Poll::Ready(r),
            Poll::Pending => this.pending(cx),
        }
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

/// Replaces hyper's own, empty-bodied answers to requests it could not
/// parse (400, 414, 431) by the API's JSON error (see the module docs).
///
/// hyper writes such an answer (a head alone) in one write and closes the
/// connection after it. Every error the router answers carries a JSON body
/// (the guard sees to it), so an empty-bodied 400, 414 or 431 can only be
/// hyper's. Should hyper ever split it, or send it behind a pipelined
/// answer, it passes unchanged: still correct HTTP, only without the body.
/// Other writes pass through as they come, vectored or not.
struct HyperErrors<T> {
    io: T,
    /// The replacement still to write, from `pos`.
    out: Vec<u8>,
    pos: usize,
}

impl<T> HyperErrors<T> {
    fn new(io: T) -> Self {
        HyperErrors { io, out: Vec::new(), pos: 0 }
    }
}

impl<T: AsyncWrite + Unpin> HyperErrors<T> {
    /// Takes a write of `taken` bytes by writing `answer` in its place; what
    /// does not go out now goes with the next write, flush or shutdown.
    fn replace(&mut self, cx: &mut Context<'_>, answer: Vec<u8>, taken: usize) -> Poll<io::Result<usize>> {
        self.out = answer;
        self.pos = 0;
        match self.drain(cx) {
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            _ => Poll::Ready(Ok(taken)),
        }
    }

    fn drain(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while self.pos < self.out.len() {
            let n = ready!(Pin::new(&mut self.io).poll_write(cx, &self.out[self.pos..]))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.pos += n;
        }
        self.out.clear();
        self.pos = 0;
        Poll::Ready(Ok(()))
    }
}

/// Whether a write may be one of hyper's own error answers (a cheap look at
/// its start; [`json_for_hyper_error`] decides).
fn may_be_hyper_error(first: &[u8], len: usize) -> bool {
    len <= MAX_HYPER_ERROR && first.starts_with(b"HTTP/1.1 4")
}

/// hyper's own error answers are a status line, `content-length: 0` and a
/// date: well under this.
const MAX_HYPER_ERROR: usize = 512;

/// The JSON answer that replaces `head` if it is one of hyper's own error
/// answers; `None` for anything else.
fn json_for_hyper_error(head: &[u8]) -> Option<Vec<u8>> {
    if !may_be_hyper_error(head, head.len()) || !head.ends_with(b"\r\n\r\n") {
        return None;
    }
    let text = std::str::from_utf8(head).ok()?;
    let code: u16 = text.strip_prefix("HTTP/1.1 ")?.get(..3)?.parse().ok()?;
    let detail = match code {
        400 => "the request is not valid HTTP/1.1".to_owned(),
        414 => "the request target is too long".to_owned(),
        431 => format!("the request line and headers are larger than {} KiB", MAX_HEAD_BYTES / 1024),
        _ => return None,
    };
    let lines: Vec<&str> = text.trim_end().split("\r\n").skip(1).collect();
    if !lines.iter().any(|l| l.eq_ignore_ascii_case("content-length: 0")) {
        return None;
    }
    let date = lines.iter().find(|l| l.len() > 5 && l[..5].eq_ignore_ascii_case("date:"));
    let status = StatusCode::from_u16(code).ok()?;
    let body = crate::guard::error_for_status(status, &detail).body();
    let mut out = format!(
        "HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\nx-content-type-options: nosniff\r\n",
        body.len()
    );
    if let Some(d) = date {
        out.push_str(d);
        out.push_str("\r\n");
    }
    out.push_str("\r\n");
    out.push_str(&body);
    Some(out.into_bytes())
}

impl<T: AsyncRead + Unpin> AsyncRead for HyperErrors<T> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for HyperErrors<T> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        ready!(this.drain(cx))?;
        if let Some(answer) = json_for_hyper_error(buf) {
            return this.replace(cx, answer, buf.len());
        }
        Pin::new(&mut this.io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        ready!(this.drain(cx))?;
        let len: usize = bufs.iter().map(|b| b.len()).sum();
        if bufs.first().is_some_and(|b| may_be_hyper_error(b, len))
            && let Some(answer) =
                json_for_hyper_error(&bufs.iter().flat_map(|b| b.iter().copied()).collect::<Vec<u8>>())
        {
            return this.replace(cx, answer, len);
        }
        Pin::new(&mut this.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        ready!(self.drain(cx))?;
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        ready!(self.drain(cx))?;
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cap_keeps_a_reserve_of_descriptors_below_the_open_files_limit() {
        assert_eq!(effective_cap(1024, Some(128)), 64);
        assert_eq!(effective_cap(10, Some(128)), 10);
        assert_eq!(effective_cap(1024, Some(64)), 16);
        assert_eq!(effective_cap(1024, Some(1)), 1);
        assert_eq!(effective_cap(1024, Some(4096)), 1024);
        assert_eq!(effective_cap(5000, Some(4096)), 3072);
    }

    #[test]
    fn only_hypers_own_empty_error_answers_are_replaced() {
        let hyper431 = b"HTTP/1.1 431 Request Header Fields Too Large\r\ncontent-length: 0\r\ndate: Thu, 01 Jan 2026 00:00:00 GMT\r\n\r\n";
        let out = String::from_utf8(json_for_hyper_error(hyper431).unwrap()).unwrap();
        let (head, body) = out.split_once("\r\n\r\n").unwrap();
        assert!(head.starts_with("HTTP/1.1 431 Request Header Fields Too Large\r\n"), "{head}");
        assert!(head.contains("content-type: application/json") && head.contains("date: Thu, 01 Jan 2026"), "{head}");
        assert!(head.contains(&format!("content-length: {}", body.len())), "{head}");
        let v: serde_json::Value = serde_json::from_str(body).unwrap();
        assert_eq!(v["error"]["code"], "headers_too_large");
        for other in [
            &b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n"[..],
            b"HTTP/1.1 400 Bad Request\r\ncontent-type: application/json\r\ncontent-length: 20\r\n\r\n",
            b"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\n\r\n",
            b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\n\r\n{}",
        ] {
            assert!(json_for_hyper_error(other).is_none(), "{}", String::from_utf8_lossy(other));
        }
    }
}
