//! The message scenarios: `echo` round trips, `relay` between follower pairs and `broadcast`
//! fan-out, each with a window of in-flight messages kept full by credits, and the hot-reload
//! swapper that runs beside `echo`.
//!
//! Every message carries `<seq>:<nanos>:<padding>`: a per-stream sequence number (checked for
//! order, gaps and duplicates) and the send time in nanoseconds since the bench started (one
//! clock for sender and receiver, both in this process). A receiver returns one credit to the
//! sender per message (for broadcast: once every receiver has it), so each sender keeps exactly
//! `window` messages in flight.

use crate::ident::Ws;
use crate::stamped::wall_nanos;
use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{SinkExt, StreamExt};
use hdrhistogram::Histogram;
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, AtomicU8, Ordering::Relaxed};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};
use tokio::sync::mpsc::{unbounded_channel, UnboundedReceiver, UnboundedSender};
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::Message;
use yonexus_protocol::envelope::Message as Msg;
use yonexus_protocol::Envelope;

pub const WARMUP: u8 = 0;
pub const MEASURE: u8 = 1;
pub const DRAIN: u8 = 2;

fn epoch() -> Instant {
    static E: OnceLock<Instant> = OnceLock::new();
    *E.get_or_init(Instant::now)
}

/// Nanoseconds since the bench started (monotonic).
pub fn nanos() -> u64 {
    epoch().elapsed().as_nanos() as u64
}

pub fn new_histogram() -> Histogram<u64> {
    // 1 ns .. 100 s at 3 significant digits; the bounds are valid constants.
    Histogram::new_with_bounds(1, 100_000_000_000, 3)
        .unwrap_or_else(|_| Histogram::new(3).unwrap_or_else(|_| unreachable!()))
}

/// Counters shared by every task of one run.
pub struct Shared {
    pub phase: AtomicU8,
    /// Messages written to the socket (all phases).
    pub sent: AtomicU64,
    /// Expected deliveries accounted for so far (delivered, mismatched, or answered with an
    /// error), for the drain.
    pub settled: AtomicU64,
    /// Deliveries one sent message stands for (broadcast: the receivers).
    pub fanout: AtomicU64,
    /// Valid deliveries (all phases).
    pub delivered: AtomicU64,
    /// Valid deliveries received while `phase == MEASURE`.
    pub measured: AtomicU64,
    /// Deliveries that were malformed, out of order or duplicated.
    pub mismatched: AtomicU64,
    /// `error` frames from the host (each one stands for a message that was not handled).
    pub errors: AtomicU64,
    pub error_codes: Mutex<BTreeMap<String, u64>>,
    pub hist: Mutex<Histogram<u64>>,
    /// Latency from the send to the reply's arrival in this machine's kernel (its packet's
    /// time stamp): the round trip without the generator's own wait to read the reply.
    pub hist_arrival: Mutex<Histogram<u64>>,
    /// Measured replies left out of `hist_arrival`: their read had no usable time stamp.
    pub unstamped: AtomicU64,
    /// Longest time between consecutive deliveries on one connection during MEASURE.
    pub max_gap_ns: AtomicU64,
    /// Readers that ended with a socket error instead of a close.
    pub dropped: AtomicU64,
}

impl Shared {
    pub fn new() -> Arc<Shared> {
        Arc::new(Shared {
            phase: AtomicU8::new(WARMUP),
            sent: AtomicU64::new(0),
            settled: AtomicU64::new(0),
            fanout: AtomicU64::new(1),
            delivered: AtomicU64::new(0),
            measured: AtomicU64::new(0),
            mismatched: AtomicU64::new(0),
            errors: AtomicU64::new(0),
            error_codes: Mutex::new(BTreeMap::new()),
            hist: Mutex::new(new_histogram()),
            hist_arrival: Mutex::new(new_histogram()),
            unstamped: AtomicU64::new(0),
            max_gap_ns: AtomicU64::new(0),
            dropped: AtomicU64::new(0),
        })
    }

    pub fn phase(&self) -> u8 {
        self.phase.load(Relaxed)
    }
}

/// What a writer is told.
pub enum Ctl {
    /// Send this many more messages.
    Credit(u32),
    /// Send a close frame and end.
    Stop,
}

/// How a writer builds its messages.
#[derive(Clone)]
pub struct SendSpec {
    /// `echo::`, `relay::<target>::` or `broadcast::`.
    pub header: String,
    /// Content length (`<seq>:<nanos>:` plus padding) so that the frame is `size` bytes.
    pub content_len: usize,
}

impl SendSpec {
    pub fn new(header: String, size: usize) -> SendSpec {
        let content_len = size.saturating_sub(header.len());
        SendSpec {
            header,
            content_len,
        }
    }
}

/// `<seq>:<nanos>:` then `x` up to `content_len`.
pub fn content(seq: u64, sent_at: u64, content_len: usize) -> String {
    let mut s = format!("{seq}:{sent_at}:");
    if s.len() < content_len {
        s.extend(std::iter::repeat_n('x', content_len - s.len()));
    }
    s
}

/// Parse and check a content built by [`content`]; returns (seq, sent_at).
pub fn check_content(c: &str, content_len: usize) -> Option<(u64, u64)> {
    let (seq, rest) = c.split_once(':')?;
    let (at, pad) = rest.split_once(':')?;
    let seq = seq.parse().ok()?;
    let at = at.parse().ok()?;
    let head = c.len() - pad.len();
    let want = content_len.max(head);
    (c.len() == want && pad.bytes().all(|b| b == b'x')).then_some((seq, at))
}

pub async fn writer(
    mut sink: SplitSink<Ws, Message>,
    mut rx: UnboundedReceiver<Ctl>,
    spec: Option<SendSpec>,
    shared: Arc<Shared>,
) {
    let mut seq = 0u64;
    'outer: while let Some(first) = rx.recv().await {
        let mut n = match first {
            Ctl::Credit(k) => u64::from(k),
            Ctl::Stop => break,
        };
        let mut stop = false;
        while let Ok(more) = rx.try_recv() {
            match more {
                Ctl::Credit(k) => n += u64::from(k),
                Ctl::Stop => {
                    stop = true;
                    break;
                }
            }
        }
        if let Some(spec) = &spec {
            if shared.phase() < DRAIN && n > 0 {
                shared.sent.fetch_add(n, Relaxed);
                for _ in 0..n {
                    seq += 1;
                    let mut text = String::with_capacity(spec.header.len() + spec.content_len);
                    text.push_str(&spec.header);
                    text.push_str(&content(seq, nanos(), spec.content_len));
                    if sink.feed(Message::text(text)).await.is_err() {
                        break 'outer;
                    }
                }
                if sink.flush().await.is_err() {
                    break;
                }
            }
        }
        if stop {
            break;
        }
    }
    let _ = sink.close().await;
}

/// Broadcast bookkeeping: a sender's credit comes back once all receivers have the message.
pub struct FanIn {
    receivers: u32,
    counts: Mutex<HashMap<u64, u32>>,
    credit: UnboundedSender<Ctl>,
}

impl FanIn {
    pub fn new(receivers: u32, credit: UnboundedSender<Ctl>) -> Arc<FanIn> {
        Arc::new(FanIn {
            receivers,
            counts: Mutex::new(HashMap::new()),
            credit,
        })
    }

    fn arrived(&self, seq: u64) {
        let mut counts = self.counts.lock().unwrap_or_else(|p| p.into_inner());
        let c = counts.entry(seq).or_insert(0);
        *c += 1;
        if *c >= self.receivers {
            counts.remove(&seq);
            let _ = self.credit.send(Ctl::Credit(1));
        }
    }
}

/// Where a delivery's credit goes.
pub enum Credit {
    /// Nowhere (no stream arrives on this connection).
    None,
    /// To one writer (echo: our own; relay: the partner's).
    To(UnboundedSender<Ctl>),
    /// Broadcast: counted across receivers.
    Fan(Arc<FanIn>),
}

/// What a reader expects.
pub struct RecvSpec {
    /// Prefix of every expected rule message (`echo::`, `relay::<sender>::`, `broadcast::<sender>::`).
    pub prefix: String,
    pub content_len: usize,
    pub credit: Credit,
    /// Credits for our own writer when the host answers one of our messages with an `error`.
    pub own: Option<UnboundedSender<Ctl>>,
}

/// Read deliveries on one connection; `arrived` is its socket's latest read time stamp
/// ([`crate::stamped::StampedTcp::arrivals`]).
pub async fn reader(
    mut stream: SplitStream<Ws>,
    spec: RecvSpec,
    arrived: Arc<AtomicU64>,
    shared: Arc<Shared>,
) {
    let mut hist = new_histogram();
    let mut hist_arrival = new_histogram();
    let mut next_seq = 1u64;
    let mut last_rx: Option<Instant> = None;
    let mut max_gap = 0u64;
    let (mut delivered, mut measured, mut mismatched, mut unstamped) = (0u64, 0u64, 0u64, 0u64);
    let mut clean = false;
    while let Some(item) = stream.next().await {
        let text = match item {
            Ok(Message::Text(t)) => t,
            Ok(Message::Close(_)) => {
                clean = true;
                break;
            }
            Ok(_) => continue,
            Err(_) => break,
        };
        let text = text.as_str();
        if let Some(json) = text.strip_prefix("builtin::") {
            if let Ok(Envelope {
                message: Msg::Error(e),
                ..
            }) = Envelope::decode(json)
            {
                shared.errors.fetch_add(1, Relaxed);
                let code = serde_json::to_value(e.code)
                    .ok()
                    .and_then(|v| v.as_str().map(str::to_owned))
                    .unwrap_or_else(|| "?".into());
                *shared
                    .error_codes
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .entry(code)
                    .or_insert(0) += 1;
                shared
                    .settled
                    .fetch_add(shared.fanout.load(Relaxed), Relaxed);
                if let Some(own) = &spec.own {
                    let _ = own.send(Ctl::Credit(1));
                }
            }
            continue;
        }
        let (now, wall) = (nanos(), wall_nanos());
        let phase = shared.phase();
        let parsed = text
            .strip_prefix(spec.prefix.as_str())
            .and_then(|c| check_content(c, spec.content_len));
        let seq = match parsed {
            Some((seq, at)) if seq == next_seq => {
                delivered += 1;
                if phase == MEASURE {
                    measured += 1;
                    let latency = now.saturating_sub(at);
                    hist.saturating_record(latency.max(1));
                    // The read that completed this frame is the latest one (tungstenite reads
                    // only when no whole frame is buffered); its stamp is its last packet's,
                    // which arrived at or after this frame's end: an upper bound. No stamp, or
                    // a clock step that puts the arrival before the send: not recorded.
                    let stamp = arrived.load(Relaxed);
                    let waited = wall.saturating_sub(stamp);
                    if stamp > 0 && waited <= latency {
                        hist_arrival.saturating_record((latency - waited).max(1));
                    } else {
                        unstamped += 1;
                    }
                    let t = Instant::now();
                    if let Some(last) = last_rx {
                        max_gap = max_gap.max(t.duration_since(last).as_nanos() as u64);
                    }
                    last_rx = Some(t);
                }
                next_seq = seq + 1;
                Some(seq)
            }
            Some((seq, _)) => {
                mismatched += 1;
                next_seq = seq + 1;
                Some(seq)
            }
            None => {
                mismatched += 1;
                None
            }
        };
        shared.settled.fetch_add(1, Relaxed);
        match &spec.credit {
            Credit::None => {}
            Credit::To(tx) => {
                let _ = tx.send(Ctl::Credit(1));
            }
            Credit::Fan(fan) => {
                if let Some(seq) = seq {
                    fan.arrived(seq);
                }
            }
        }
    }
    shared.delivered.fetch_add(delivered, Relaxed);
    shared.measured.fetch_add(measured, Relaxed);
    shared.mismatched.fetch_add(mismatched, Relaxed);
    shared.unstamped.fetch_add(unstamped, Relaxed);
    shared.max_gap_ns.fetch_max(max_gap, Relaxed);
    if !clean {
        shared.dropped.fetch_add(1, Relaxed);
    }
    let _ = shared
        .hist
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .add(&hist);
    let _ = shared
        .hist_arrival
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .add(&hist_arrival);
}

/// The wiring of one scenario: one writer and one reader per connection.
pub struct Wired {
    pub writers: Vec<UnboundedSender<Ctl>>,
    /// Writers that originate a stream (they get the initial window).
    pub senders: Vec<usize>,
    pub tasks: Vec<JoinHandle<()>>,
    /// Expected deliveries per message sent (broadcast: the receivers).
    pub fanout: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Echo,
    Relay,
    Broadcast,
}

impl Kind {
    pub fn name(self) -> &'static str {
        match self {
            Kind::Echo => "echo",
            Kind::Relay => "relay",
            Kind::Broadcast => "broadcast",
        }
    }
}

/// The URL each of `conns` connections (in [`wire`]'s order) connects to: receivers of relay
/// (odd connections) and broadcast (all but the first) go to `recv_url` when given, so senders
/// and receivers can sit on different hosts of a cluster; everything else goes to `url`.
pub fn urls(kind: Kind, conns: usize, url: &str, recv_url: Option<&str>) -> Vec<String> {
    let recv = recv_url.unwrap_or(url);
    (0..conns)
        .map(|i| {
            let receiver = match kind {
                Kind::Echo => false,
                Kind::Relay => i % 2 == 1,
                Kind::Broadcast => i > 0,
            };
            if receiver { recv } else { url }.to_owned()
        })
        .collect()
}

/// Split every connection and start its writer and reader for `kind`. `links` are
/// (identifier, socket) in order: echo uses each; relay pairs (0→1, 2→3, …); broadcast sends
/// from 0 to all the others.
pub fn wire(kind: Kind, links: Vec<(String, Ws)>, size: usize, shared: &Arc<Shared>) -> Wired {
    let ids: Vec<String> = links.iter().map(|(id, _)| id.clone()).collect();
    let n = links.len();
    let (txs, mut rxs): (Vec<_>, Vec<_>) = (0..n).map(|_| unbounded_channel::<Ctl>()).unzip();
    let fan =
        (kind == Kind::Broadcast && n > 1).then(|| FanIn::new((n - 1) as u32, txs[0].clone()));
    if kind == Kind::Broadcast {
        shared
            .fanout
            .store(n.saturating_sub(1).max(1) as u64, Relaxed);
    }
    let mut tasks = Vec::with_capacity(2 * n);
    let mut senders = Vec::new();
    for (i, (_, ws)) in links.into_iter().enumerate().rev() {
        let arrived = ws.get_ref().arrivals();
        let (sink, stream) = ws.split();
        let (send, recv) = match kind {
            Kind::Echo => {
                let s = SendSpec::new("echo::".into(), size);
                let r = RecvSpec {
                    prefix: "echo::".into(),
                    content_len: s.content_len,
                    credit: Credit::To(txs[i].clone()),
                    own: Some(txs[i].clone()),
                };
                (Some(s), r)
            }
            Kind::Relay if i % 2 == 0 && i + 1 < n => {
                let s = SendSpec::new(format!("relay::{}::", ids[i + 1]), size);
                let r = RecvSpec {
                    prefix: "\0".into(), // nothing arrives for a sender but errors
                    content_len: 0,
                    credit: Credit::None,
                    own: Some(txs[i].clone()),
                };
                (Some(s), r)
            }
            Kind::Relay if i % 2 == 1 => {
                let s = SendSpec::new(format!("relay::{}::", ids[i]), size);
                let r = RecvSpec {
                    prefix: format!("relay::{}::", ids[i - 1]),
                    content_len: s.content_len,
                    credit: Credit::To(txs[i - 1].clone()),
                    own: None,
                };
                (None, r)
            }
            Kind::Broadcast if i == 0 => {
                let s = SendSpec::new("broadcast::".into(), size);
                let r = RecvSpec {
                    prefix: "\0".into(),
                    content_len: 0,
                    credit: Credit::None,
                    own: Some(txs[0].clone()),
                };
                (Some(s), r)
            }
            Kind::Broadcast => {
                let s = SendSpec::new("broadcast::".into(), size);
                let r = RecvSpec {
                    prefix: format!("broadcast::{}::", ids[0]),
                    content_len: s.content_len,
                    credit: fan.clone().map_or(Credit::None, Credit::Fan),
                    own: None,
                };
                (None, r)
            }
            // An odd connection out in relay: connected but idle.
            Kind::Relay => (
                None,
                RecvSpec {
                    prefix: "\0".into(),
                    content_len: 0,
                    credit: Credit::None,
                    own: None,
                },
            ),
        };
        if send.is_some() {
            senders.push(i);
        }
        let rx = rxs.pop().unwrap_or_else(|| unbounded_channel().1);
        tasks.push(tokio::spawn(writer(sink, rx, send, Arc::clone(shared))));
        tasks.push(tokio::spawn(reader(
            stream,
            recv,
            arrived,
            Arc::clone(shared),
        )));
    }
    Wired {
        writers: txs,
        senders,
        tasks,
        fanout: if kind == Kind::Broadcast {
            n.saturating_sub(1) as u64
        } else {
            1
        },
    }
}

/// Hot-swap a plugin file `swaps` times, evenly over `over`: alternately install `replacement`
/// and the original (saved first), each time by copying to a temp name next to `plugin` and
/// `rename`-ing it over `plugin` (atomic for a watcher). Returns the swap times (nanos).
pub async fn swapper(
    plugin: PathBuf,
    replacement: PathBuf,
    swaps: u32,
    over: Duration,
) -> anyhow::Result<Vec<u64>> {
    use anyhow::Context;
    let dir = plugin
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."));
    let file = plugin
        .file_name()
        .map(|f| f.to_string_lossy().into_owned())
        .unwrap_or_else(|| "plugin.so".into());
    let original = dir.join(format!(".{file}.bench-original"));
    std::fs::copy(&plugin, &original)
        .with_context(|| format!("saving a copy of {}", plugin.display()))?;
    let step = over / (swaps + 1);
    let mut times = Vec::new();
    for k in 0..swaps {
        tokio::time::sleep(step).await;
        let src = if k % 2 == 0 { &replacement } else { &original };
        let tmp = dir.join(format!(".{file}.bench-swap"));
        std::fs::copy(src, &tmp).with_context(|| format!("copying {}", src.display()))?;
        std::fs::rename(&tmp, &plugin)
            .with_context(|| format!("renaming over {}", plugin.display()))?;
        times.push(nanos());
    }
    Ok(times)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_round_trips_and_pads_to_size() {
        let spec = SendSpec::new("echo::".into(), 100);
        let c = content(42, 123_456, spec.content_len);
        assert_eq!(spec.header.len() + c.len(), 100);
        assert_eq!(check_content(&c, spec.content_len), Some((42, 123_456)));
        // Too small a size: no padding, still valid.
        let c = content(7, 99, 2);
        assert_eq!(c, "7:99:");
        assert_eq!(check_content(&c, 2), Some((7, 99)));
        assert_eq!(check_content("7:99:xy", 7), None);
        assert_eq!(check_content("7:99:xx", 8), None);
        assert_eq!(check_content("nope", 8), None);
    }

    #[test]
    fn receivers_go_to_the_recv_url() {
        let u = |k, r| urls(k, 5, "ws://a/", r);
        assert_eq!(u(Kind::Echo, Some("ws://b/")), vec!["ws://a/"; 5]);
        assert_eq!(
            u(Kind::Relay, Some("ws://b/")),
            ["ws://a/", "ws://b/", "ws://a/", "ws://b/", "ws://a/"]
        );
        assert_eq!(
            u(Kind::Broadcast, Some("ws://b/")),
            ["ws://a/", "ws://b/", "ws://b/", "ws://b/", "ws://b/"]
        );
        assert_eq!(u(Kind::Relay, None), vec!["ws://a/"; 5]);
    }

    #[tokio::test]
    async fn fan_in_credits_once_all_receivers_have_it() {
        let (tx, mut rx) = unbounded_channel();
        let fan = FanIn::new(3, tx);
        fan.arrived(1);
        fan.arrived(1);
        assert!(rx.try_recv().is_err());
        fan.arrived(1);
        assert!(matches!(rx.try_recv(), Ok(Ctl::Credit(1))));
    }
}
