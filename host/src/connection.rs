//! One follower's connection, as one task that owns its socket, its session and its outbound
//! queue (the mini-redis way): it reads frames, hands them to the session, and writes what the
//! queue holds — replies, plugin messages, broadcasts — in batches (one vectored write and one
//! flush for everything queued since the last wake). Control messages that wait (on the
//! trust store, or a deliberately slowed answer) run as the session's pending operation:
//! meanwhile the task keeps writing, pinging, and honouring shutdown and the authentication
//! deadline, and reads nothing more from that peer. Slower work (the admin's pairing
//! notification, releasing a session claim) is spawned and never waited for here. Shutdown
//! closes the connection through its outbound side ([`crate::open`]), so nothing shared is
//! polled on every wake.
//!
//! Memory: nothing is buffered while the connection is idle. Reads go through a stack buffer;
//! only a frame split across reads is kept on the heap, until it is complete.

use crate::admission::Ticket;
use crate::hub::Hub;
use crate::metrics::{self, ConnectionState};
use crate::outbound::{Close, Peer};
use crate::session::{Flow, Session, Step};
use crate::ws::codec::{self, Decoded, Decoder};
use crate::ws::handshake;
use bytes::Bytes;
use governor::{Quota, RateLimiter};
use std::collections::VecDeque;
use std::future::Future;
use std::io::IoSlice;
use std::mem::MaybeUninit;
use std::net::SocketAddr;
use std::num::NonZeroU32;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::time::Instant;
use yonexus_protocol::envelope::ErrorCode;

/// Frames a connection may send before it authenticates: a burst, then a steady rate. A
/// follower sends a handful (hello, auth_request; while a pairing is awaited, up to
/// `pairing.max_attempts` codes and a pong or ping every half minute); a peer over the budget
/// is closed (1008) without an answer, so a stranger cannot make the host answer pings or
/// errors at the network's speed.
const UNAUTHENTICATED_FRAME_BURST: NonZeroU32 = non_zero(32);
const UNAUTHENTICATED_FRAMES_PER_SEC: NonZeroU32 = non_zero(4);

/// `n` as a `NonZeroU32` (0 becomes 1).
const fn non_zero(n: u32) -> NonZeroU32 {
    match NonZeroU32::new(n) {
        Some(n) => n,
        None => NonZeroU32::MIN,
    }
}
/// How long a closing connection may take to flush its last frames and see the peer's close.
const CLOSE_GRACE: Duration = Duration::from_secs(2);
/// Bytes read per read call (on the stack, never held while idle).
const READ_CHUNK: usize = 4096;
/// Frames written per vectored write.
const MAX_IOV: usize = 64;

/// What the socket side produced.
enum Io {
    /// Complete messages from the peer, in order.
    Messages(Vec<codec::Message>),
    /// A close was asked for (said once; the close frame may not be out yet): start the close
    /// grace.
    Closing,
    /// Our close frame is written and flushed.
    Closed,
    /// The peer closed the TCP connection.
    Eof,
    /// The peer broke the WebSocket protocol (answer with this close code).
    Protocol(codec::Error),
    /// The socket failed.
    Failed,
}

/// The socket and the buffers only the connection task touches.
struct Socket<S> {
    io: S,
    peer: Arc<Peer>,
    decoder: Decoder,
    /// A frame split across reads (empty, unallocated, otherwise).
    inbuf: Vec<u8>,
    /// Frames taken from the queue, being written; `written` bytes of the front one are out.
    out: VecDeque<Bytes>,
    written: usize,
    unflushed: bool,
    /// Our close frame is in `out` (or out already).
    close_queued: bool,
    /// A close was asked for (queued here, or waiting in the outbound queue behind frames the
    /// socket has not taken yet), and whether the loop was told ([`Io::Closing`]).
    closing: bool,
    closing_announced: bool,
    /// The largest message accepted right now.
    limit: usize,
    /// Stop reading (a close was requested or the peer sent its close).
    read_closed: bool,
}

impl<S: AsyncRead + AsyncWrite + Unpin> Socket<S> {
    fn queue_close(&mut self, close: Close) {
        if close.abort {
            // Keep a frame that is half written; drop the rest.
            let keep = usize::from(self.written > 0);
            self.out.truncate(keep);
        }
        self.out.push_back(codec::close(close.code, &close.reason));
        self.close_queued = true;
        self.closing = true;
        self.read_closed = true;
    }

    /// Take from the queue (frames only when the last batch is out) and write.
    fn poll_write(&mut self, cx: &mut Context<'_>) -> Result<(), ()> {
        for _ in 0..4 {
            if !self.close_queued {
                let batch = self.peer.take(cx, self.out.is_empty());
                self.closing |= batch.closing;
                if !batch.frames.is_empty() {
                    metrics::frames_out(
                        batch.frames.len(),
                        batch.frames.iter().map(Bytes::len).sum(),
                    );
                    if self.out.is_empty() {
                        self.out = batch.frames;
                    } else {
                        self.out.extend(batch.frames);
                    }
                }
                if let Some(close) = batch.close {
                    self.queue_close(close);
                }
            }
            if self.out.is_empty() {
                break;
            }
            while !self.out.is_empty() {
                let mut slices = [IoSlice::new(&[]); MAX_IOV];
                let mut n = 0;
                for (i, frame) in self.out.iter().take(MAX_IOV).enumerate() {
                    slices[i] = IoSlice::new(if i == 0 {
                        &frame[self.written..]
                    } else {
                        frame
                    });
                    n = i + 1;
                }
                match Pin::new(&mut self.io).poll_write_vectored(cx, &slices[..n]) {
                    Poll::Pending => return Ok(()),
                    Poll::Ready(Err(_)) | Poll::Ready(Ok(0)) => return Err(()),
                    Poll::Ready(Ok(mut wrote)) => {
                        self.unflushed = true;
                        while wrote > 0 {
                            let Some(front) = self.out.front() else { break };
                            let left = front.len() - self.written;
                            if wrote >= left {
                                wrote -= left;
                                self.written = 0;
                                self.out.pop_front();
                            } else {
                                self.written += wrote;
                                wrote = 0;
                            }
                        }
                    }
                }
            }
            // Release the batch's buffer: nothing is held while idle.
            self.out = VecDeque::new();
        }
        if self.unflushed {
            match Pin::new(&mut self.io).poll_flush(cx) {
                Poll::Ready(Ok(())) => self.unflushed = false,
                Poll::Ready(Err(_)) => return Err(()),
                Poll::Pending => {}
            }
        }
        Ok(())
    }

    /// Decode complete frames from `buf`; returns how many bytes were consumed.
    fn decode(
        decoder: &mut Decoder,
        buf: &mut [u8],
        limit: usize,
        out: &mut Vec<codec::Message>,
    ) -> Result<(usize, Option<usize>), codec::Error> {
        let mut at = 0;
        while at < buf.len() {
            match decoder.decode(&mut buf[at..], limit)? {
                Decoded::Frame { consumed, message } => {
                    at += consumed;
                    out.extend(message);
                }
                Decoded::Need(n) => return Ok((at, Some(n))),
            }
        }
        Ok((at, None))
    }

    fn poll_read(&mut self, cx: &mut Context<'_>) -> Poll<Io> {
        let mut messages = Vec::new();
        for _ in 0..8 {
            let result = if self.inbuf.is_empty() {
                // Left uninitialised: the read fills what is used (zeroing 4 KiB on every
                // poll was 1 % of the host's CPU at one message in flight).
                let mut stack = [MaybeUninit::<u8>::uninit(); READ_CHUNK];
                let mut rb = ReadBuf::uninit(&mut stack);
                match Pin::new(&mut self.io).poll_read(cx, &mut rb) {
                    Poll::Pending => break,
                    Poll::Ready(Err(_)) => return Poll::Ready(Io::Failed),
                    Poll::Ready(Ok(())) => {}
                }
                let read = rb.filled_mut();
                let n = read.len();
                if n == 0 {
                    return Poll::Ready(Io::Eof);
                }
                match Self::decode(&mut self.decoder, read, self.limit, &mut messages) {
                    Err(e) => Err(e),
                    Ok((used, need)) => {
                        if used < n {
                            self.inbuf.reserve_exact(need.unwrap_or(0).max(n - used));
                            self.inbuf.extend_from_slice(&read[used..]);
                        }
                        Ok(())
                    }
                }
            } else {
                // Part of a frame is here: read straight behind it.
                if self.inbuf.capacity() - self.inbuf.len() < READ_CHUNK / 4 {
                    self.inbuf.reserve(READ_CHUNK);
                }
                let len = self.inbuf.len();
                let spare = self.inbuf.spare_capacity_mut();
                let mut rb = ReadBuf::uninit(spare);
                match Pin::new(&mut self.io).poll_read(cx, &mut rb) {
                    Poll::Pending => break,
                    Poll::Ready(Err(_)) => return Poll::Ready(Io::Failed),
                    Poll::Ready(Ok(())) => {}
                }
                let n = rb.filled().len();
                if n == 0 {
                    return Poll::Ready(Io::Eof);
                }
                // SAFETY: `poll_read` initialised `n` bytes of the spare capacity.
                unsafe { self.inbuf.set_len(len + n) };
                match Self::decode(
                    &mut self.decoder,
                    &mut self.inbuf,
                    self.limit,
                    &mut messages,
                ) {
                    Err(e) => Err(e),
                    Ok((used, need)) => {
                        self.inbuf.drain(..used);
                        if self.inbuf.is_empty() {
                            self.inbuf = Vec::new();
                        } else if let Some(need) = need {
                            self.inbuf
                                .reserve_exact(need.saturating_sub(self.inbuf.len()));
                        }
                        Ok(())
                    }
                }
            };
            if let Err(e) = result {
                self.inbuf = Vec::new();
                return Poll::Ready(Io::Protocol(e));
            }
            if !messages.is_empty() {
                break;
            }
        }
        if messages.is_empty() {
            Poll::Pending
        } else {
            Poll::Ready(Io::Messages(messages))
        }
    }

    /// Drive the socket: write what is queued, then (when `read`) read.
    fn poll_io(&mut self, cx: &mut Context<'_>, read: bool) -> Poll<Io> {
        if self.poll_write(cx).is_err() {
            return Poll::Ready(Io::Failed);
        }
        if self.close_queued && self.out.is_empty() && !self.unflushed {
            return Poll::Ready(Io::Closed);
        }
        if self.closing && !self.closing_announced {
            // The close waits for the socket (a peer that does not read): the loop starts the
            // grace that bounds that wait, whoever asked for the close and whenever.
            self.closing_announced = true;
            return Poll::Ready(Io::Closing);
        }
        if read && !self.read_closed {
            return self.poll_read(cx);
        }
        Poll::Pending
    }
}

type Operation = Pin<Box<dyn Future<Output = (Session, Flow)> + Send>>;

/// After our close frame: end our side of the stream and read (and drop) what the peer still
/// sends — until its own close frame, the end of the stream, half a second or 64 KiB — so our
/// close is not lost to a connection reset.
async fn linger<S: AsyncRead + AsyncWrite + Unpin>(io: &mut S) {
    use tokio::io::AsyncReadExt;
    let _ = tokio::time::timeout(Duration::from_millis(500), async {
        let _ = io.shutdown().await;
        let mut sink = [0u8; 1024];
        let mut total = 0;
        while total < 64 * 1024 {
            match io.read(&mut sink).await {
                Ok(0) | Err(_) => break,
                // A close frame starts a read (masked, FIN + opcode 8): the peer is done.
                Ok(_) if sink[0] == 0x88 => break,
                Ok(n) => total += n,
            }
        }
    })
    .await;
}

/// Write an HTTP answer to a refused upgrade (bounded), then let the client read it.
async fn refuse<S: AsyncRead + AsyncWrite + Unpin>(io: &mut S, response: &[u8]) {
    let _ = tokio::time::timeout(Duration::from_secs(1), async {
        io.write_all(response).await?;
        io.flush().await?;
        io.shutdown().await
    })
    .await;
}

/// Serve one accepted connection (plain TCP or TLS, after the TLS handshake) until it closes or
/// the host shuts down: the WebSocket upgrade (by `deadline`), then frames. `ticket` counts it
/// against the unauthenticated caps until it authenticates.
pub async fn run<S>(
    hub: Arc<Hub>,
    mut io: S,
    remote: SocketAddr,
    ticket: Ticket,
    handshake_permit: tokio::sync::OwnedSemaphorePermit,
    deadline: Instant,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let settings = hub.settings();
    let path = settings.path.clone();
    drop(settings);
    // Boxed: the handshake's buffers are not part of every connection's state for its life.
    let upgrade =
        tokio::time::timeout_at(deadline, Box::pin(handshake::read(&mut io, &path))).await;
    let early = match upgrade {
        Err(_) => {
            metrics::connection_rejected("upgrade_timeout");
            tracing::debug!(remote = %remote, "WebSocket upgrade deadline passed");
            return;
        }
        Ok(Err(refusal)) => {
            tracing::debug!(remote = %remote, reason = %refusal, "WebSocket upgrade refused");
            if let Some(response) = refusal.response() {
                refuse(&mut io, &response).await;
            }
            return;
        }
        Ok(Ok((upgrade, early))) => {
            let accepted = io.write_all(&handshake::accept(&upgrade.key)).await;
            if accepted.is_err() {
                return;
            }
            early
        }
    };
    drop(path);
    drop(handshake_permit);
    serve(hub, io, remote, ticket, early).await;
}

async fn serve<S>(hub: Arc<Hub>, io: S, remote: SocketAddr, ticket: Ticket, early: Vec<u8>)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let settings = hub.settings();
    let limits = settings.limits;
    let conn_id = hub.next_conn_id();
    let peer = Arc::new(Peer::new(
        conn_id,
        remote,
        hub.now(),
        settings.queue_limits(),
    ));
    drop(settings);
    // Shutdown closes the connection through its outbound side, like any other close.
    let _open = hub.open.join(&peer);
    metrics::connection_opened();
    metrics::connection_state(None, Some(ConnectionState::Unauthenticated));
    tracing::debug!(remote = %remote, conn = conn_id, "connection opened");

    let mut sock = Socket {
        io,
        peer: Arc::clone(&peer),
        decoder: Decoder::default(),
        inbuf: Vec::new(),
        out: VecDeque::new(),
        written: 0,
        unflushed: false,
        close_queued: false,
        closing: false,
        closing_announced: false,
        limit: limits.max_unauthenticated_message,
        read_closed: false,
    };
    let mut ticket = Some(ticket);
    let mut session = Some(Session::new(Arc::clone(&peer)));
    let mut op: Option<Operation> = None;
    let mut backlog: VecDeque<codec::Message> = VecDeque::new();
    let mut authenticated = false;
    // Until authenticated: the connection's deadline, or the later one its session grants
    // (while a pairing is awaited, and for the authentication right after it).
    let auth_timeout = Duration::from_secs(limits.auth_timeout_secs);
    let mut auth_deadline = Instant::now() + auth_timeout;

    let burst = non_zero(limits.rate_burst);
    let rate = non_zero(limits.rate_per_sec);
    let limiter = RateLimiter::direct(Quota::per_second(rate).allow_burst(burst));
    let mut limited_in_a_row = 0u32;
    let unauthenticated_budget = RateLimiter::direct(
        Quota::per_second(UNAUTHENTICATED_FRAMES_PER_SEC).allow_burst(UNAUTHENTICATED_FRAME_BURST),
    );

    let opened = Instant::now();
    let ping_every = Duration::from_secs(limits.ping_interval_secs);
    let mut next_ping = opened + ping_every;
    let mut last_heard = opened;
    let mut closing_since: Option<Instant> = None;
    let timer = tokio::time::sleep_until(opened + ping_every);
    tokio::pin!(timer);

    // Bytes the client sent right behind its upgrade request are its first frames.
    if !early.is_empty() {
        let mut early = early;
        let mut messages = Vec::new();
        match Socket::<S>::decode(&mut sock.decoder, &mut early, sock.limit, &mut messages) {
            Ok((used, _)) => {
                if used < early.len() {
                    sock.inbuf = early.split_off(used);
                }
                backlog.extend(messages);
            }
            Err(e) => peer.abort(e.close_code(), e.close_reason()),
        }
    }

    loop {
        if op.is_none() && !backlog.is_empty() {
            // Replies to what is handled now are taken further down in this same poll: queuing
            // them need not wake this task (a wake while it runs would poll it once more, for
            // nothing, after every other ready task).
            peer.quiet_wakes();
        }
        // Hand queued messages to the session while no operation is pending.
        while op.is_none() {
            let Some(message) = backlog.pop_front() else {
                break;
            };
            let Some(mut s) = session.take() else { break };
            // Every frame but a close counts: before authentication against a small fixed
            // budget (a stranger gets no answers to flood with), after it against the
            // connection's rate limit. Asked of the session, not of `authenticated`: frames
            // that arrived in one read with the auth_request are handled after it succeeded.
            let pre_auth = s.authenticated_as().is_none();
            let over = match &message {
                codec::Message::Close(_) => false,
                _ if pre_auth => unauthenticated_budget.check().is_err(),
                _ => limiter.check().is_err(),
            };
            let flow = if over {
                metrics::rate_limited();
                limited_in_a_row += 1;
                if pre_auth {
                    metrics::abuser_closed("frames");
                    if hub.may_log_refusal() {
                        tracing::warn!(remote = %remote, conn = conn_id, "more frames before authentication than a follower sends: closing");
                    }
                    Flow::Close {
                        code: 1008,
                        reason: "rate limit exceeded".into(),
                    }
                } else if limited_in_a_row >= limits.rate_abuse_close_after {
                    tracing::warn!(remote = %remote, conn = conn_id, identifier = peer.identity().map_or("-", |i| &**i), "persistent rate-limit abuse: closing");
                    Flow::Close {
                        code: 1008,
                        reason: "rate limit exceeded".into(),
                    }
                } else if matches!(message, codec::Message::Text(_)) {
                    let _ = peer.send(crate::reply::error(
                        ErrorCode::RateLimited,
                        format!(
                            "more than {} messages per second; message dropped",
                            limits.rate_per_sec
                        ),
                        hub.now(),
                        None,
                    ));
                    Flow::Continue
                } else {
                    // A ping, pong or binary frame over the limit: dropped unanswered.
                    Flow::Continue
                }
            } else {
                limited_in_a_row = 0;
                match message {
                    codec::Message::Text(text) => match s.on_text_now(&hub, text) {
                        Step::Done(flow) => flow,
                        Step::Control(env) => {
                            let hub = Arc::clone(&hub);
                            op = Some(Box::pin(async move {
                                let flow = s.on_control(&hub, env).await;
                                (s, flow)
                            }));
                            break;
                        }
                    },
                    codec::Message::Binary(len) => s.on_binary(&hub, len),
                    codec::Message::Ping(payload) => {
                        let _ = peer.send(codec::pong(&payload));
                        Flow::Continue
                    }
                    codec::Message::Pong => Flow::Continue,
                    codec::Message::Close(frame) => {
                        // Answer the peer's close with its code, then end.
                        let code = frame.map_or(1000, |(c, _)| c);
                        sock.read_closed = true;
                        Flow::Close {
                            code,
                            reason: "".into(),
                        }
                    }
                }
            };
            session = Some(s);
            if let Flow::Close { code, reason } = flow {
                // Released before the peer can see the close, so a reconnect is admitted.
                ticket = None;
                peer.close(code, &reason);
                backlog.clear();
            }
        }

        // Authenticated now? Raise the size limit, release the unauthenticated slot.
        if !authenticated {
            if let Some(s) = &session {
                auth_deadline = s
                    .deadline()
                    .map_or(opened + auth_timeout, |d| d.max(opened + auth_timeout));
                if s.authenticated_as().is_some() {
                    authenticated = true;
                    ticket = None;
                    sock.limit = limits.max_message_size;
                    metrics::connection_state(
                        Some(ConnectionState::Unauthenticated),
                        Some(ConnectionState::Authenticated),
                    );
                }
            }
        }
        // A close is known to the socket once it took it or saw it pending (`Io::Closing`).
        if closing_since.is_none() && sock.closing {
            closing_since = Some(Instant::now());
            sock.read_closed = true;
            // Released before the peer can see the close, so a reconnect is admitted.
            ticket = None;
        }

        // The next timer: closing grace, authentication deadline, or the next ping.
        let wake = match closing_since {
            Some(since) => since + CLOSE_GRACE,
            None if !authenticated => next_ping.min(auth_deadline),
            None => next_ping,
        };
        if timer.deadline() != wake {
            timer.as_mut().reset(wake);
        }

        let reading = op.is_none() && backlog.is_empty();
        tokio::select! {
            biased;
            done = async { match op.as_mut() { Some(f) => f.await, None => std::future::pending().await } }, if op.is_some() => {
                op = None;
                // Nothing was read meanwhile (on purpose): the peer's silence does not count.
                last_heard = Instant::now();
                let (s, flow) = done;
                session = Some(s);
                if let Flow::Close { code, reason } = flow {
                    ticket = None;
                    peer.close(code, &reason);
                    backlog.clear();
                }
            }
            io = std::future::poll_fn(|cx| sock.poll_io(cx, reading)) => match io {
                Io::Messages(messages) => {
                    last_heard = Instant::now();
                    backlog.extend(messages);
                }
                // The loop's top sees the close and starts its grace.
                Io::Closing => {}
                Io::Closed => {
                    // Our close frame is out: let the peer read it before the socket goes
                    // (closing with unread input would reset the connection and lose it).
                    Box::pin(linger(&mut sock.io)).await;
                    break;
                }
                Io::Eof | Io::Failed => break,
                Io::Protocol(e) => {
                    if matches!(e, codec::Error::TooBig { .. }) {
                        metrics::message_too_large();
                    }
                    if hub.may_log_refusal() {
                        tracing::info!(remote = %remote, conn = conn_id, error = %e, "closing a connection that broke the WebSocket protocol");
                    }
                    ticket = None;
                    peer.abort(e.close_code(), e.close_reason());
                }
            },
            _ = &mut timer => {
                let now = Instant::now();
                if let Some(since) = closing_since {
                    if now >= since + CLOSE_GRACE {
                        break;
                    }
                } else if !authenticated && now >= auth_deadline {
                    metrics::connection_rejected("auth_timeout");
                    if hub.may_log_refusal() {
                        tracing::info!(remote = %remote, conn = conn_id, "authentication deadline passed: closing");
                    }
                    ticket = None;
                    peer.close(1008, "authentication timeout");
                } else if now >= next_ping {
                    next_ping = now + ping_every;
                    if last_heard.elapsed() >= ping_every * 2 {
                        tracing::info!(remote = %remote, conn = conn_id, identifier = peer.identity().map_or("-", |i| &**i), "peer silent for two ping intervals: dropping the connection");
                        peer.abort(1001, "ping timeout");
                    } else {
                        let _ = peer.send(codec::ping());
                    }
                }
            }
        }
    }
    drop(op);
    drop(ticket);
    crate::lifecycle::connection_closed(&hub, &peer);
    metrics::connection_state(
        Some(if authenticated {
            ConnectionState::Authenticated
        } else {
            ConnectionState::Unauthenticated
        }),
        None,
    );
    metrics::connection_closed();
    tracing::debug!(remote = %remote, conn = conn_id, "connection closed");
}

#[cfg(test)]
mod tests {
    /// Every connection's task holds its whole future for its life: large locals held across an
    /// await (a read buffer, say) would cost every idle follower. Keep it small.
    #[tokio::test]
    async fn a_connection_task_stays_small() {
        use std::sync::Arc;
        let config = crate::config::Config::parse(std::path::Path::new("/x/y.toml"), "").unwrap();
        let hub = Arc::new(crate::hub::Hub::new(
            crate::hub::Settings::from_config(&config),
            crate::notify::Notifier::from_config(&crate::notify::NotifierConfig::Log).unwrap(),
            crate::store::Store::memory(),
            Arc::new(crate::router::Router::default()),
            Arc::new(crate::clock::SystemClock),
        ));
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let s = tokio::net::TcpStream::connect(addr).await.unwrap();
        let admission = Arc::new(crate::admission::Admission::default());
        let t = admission
            .try_admit(
                crate::guard::AddressKey::of(addr.ip()),
                true,
                std::time::Instant::now(),
                crate::admission::ConnectionRate::from_limits(&config.limits),
                10,
                10,
            )
            .unwrap();
        let f = super::serve(hub, s, addr, t, Vec::new());
        let task = std::mem::size_of_val(&f);
        let session = std::mem::size_of::<crate::session::Session>();
        let peer = std::mem::size_of::<crate::outbound::Peer>();
        println!("connection task {task} B, session {session} B, outbound side {peer} B");
        assert!(task < 4096, "the connection task grew to {task} bytes");
        assert!(session + peer < 1024);
    }
}
