//! The session fuzzer's driver: arbitrary sequences of frames from several connections, fed
//! into the real session state machine ([`Session`]) against a real hub (in-memory trust store,
//! a notifier that keeps codes in memory, an injected clock), checking invariants after every
//! step. `fuzz/fuzz_targets/session.rs` calls [`session_sequence`]; the regular test suite
//! replays its corpus (tests/tests/e2e/fuzz_corpus.rs).
//!
//! Invariants:
//! - nothing panics;
//! - trust (secret, bound key, paired status) changes only through a `pair_confirm` carrying the
//!   right code on a connection that said `hello` for that identifier, answered `pair_success`;
//! - nothing ever revokes (strangers cannot; there is no operator here), and a secret, once
//!   issued, is never replaced or dropped;
//! - a connection authenticates only by sending a valid proof (signed with the follower's key
//!   over its secret);
//! - at most one pairing notification per identifier per pairing window;
//! - no trust record exists for an identifier that is not allowlisted.

use crate::clock::{ManualClock, SharedClock};
use crate::config::Config;
use crate::hub::{Hub, Settings};
use crate::notify::{Notifier, PairingNotice};
use crate::outbound::{Peer, QueueLimits};
use crate::router::Router;
use crate::session::{Flow, Session};
use crate::store::Store;
use crate::trust::{PairingStatus, TrustRecord};
use ed25519_dalek::SigningKey;
use serde_json::json;
use std::path::Path;
use std::sync::{Arc, Mutex};
use yonexus_protocol::signing;

const IDS: [&str; 3] = ["alpha", "beta", "mallory"];
const T0: i64 = 1_700_000_000;
const CONNECTIONS: usize = 4;

/// Reads the fuzzer's bytes as small numbers.
struct Input<'a> {
    data: &'a [u8],
}

impl Input<'_> {
    fn byte(&mut self) -> Option<u8> {
        let (&b, rest) = self.data.split_first()?;
        self.data = rest;
        Some(b)
    }

    fn pick(&mut self, n: usize) -> usize {
        self.byte().map_or(0, |b| usize::from(b) % n.max(1))
    }

    fn text(&mut self) -> String {
        let len = self.pick(64);
        let take = len.min(self.data.len());
        let (head, rest) = self.data.split_at(take);
        self.data = rest;
        String::from_utf8_lossy(head).into_owned()
    }
}

struct Conn {
    session: Session,
    peer: Arc<Peer>,
    /// Identifiers this connection said hello for.
    greeted: Vec<usize>,
    closed: bool,
}

fn new_conn(hub: &Hub, n: u8) -> Conn {
    let remote = format!("10.0.0.{}:4000", n % 4)
        .parse()
        .unwrap_or_else(|_| std::net::SocketAddr::from(([127, 0, 0, 1], 4000)));
    let peer = Arc::new(Peer::new(
        hub.next_conn_id(),
        remote,
        hub.now(),
        QueueLimits::UNLIMITED,
    ));
    Conn {
        session: Session::new(Arc::clone(&peer)),
        peer,
        greeted: Vec::new(),
        closed: false,
    }
}

fn frame(kind: &str, payload: serde_json::Value) -> String {
    format!("builtin::{}", json!({"type": kind, "payload": payload}))
}

/// What one step may legitimately have done to trust.
#[derive(Default)]
struct Allowed {
    /// A right code was confirmed for this identifier on a connection that said hello.
    pairing: Option<usize>,
    /// A valid proof was sent for this identifier on this connection.
    auth: Option<(usize, usize)>,
}

fn trust_of(r: Option<&TrustRecord>) -> (Option<String>, Option<String>, bool) {
    match r {
        Some(r) => (
            r.secret.clone(),
            r.public_key.clone(),
            r.pairing_status == PairingStatus::Paired,
        ),
        None => (None, None, false),
    }
}

/// What a case reached (so tests can check that seeds get somewhere).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Reached {
    pub pairings: usize,
    pub authentications: usize,
}

/// Run one fuzz case. Panics when an invariant breaks.
pub fn session_sequence(data: &[u8]) -> Reached {
    let Ok(runtime) = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
    else {
        return Reached::default();
    };
    runtime.block_on(run(data))
}

async fn run(data: &[u8]) -> Reached {
    let mut reached = Reached::default();
    let mut input = Input { data };
    let config = match Config::parse(
        Path::new("/fuzz/yonexus.toml"),
        "[followers]\nallow = [\"alpha\", \"beta\"]\n[pairing]\nttl_secs = 60\nmax_attempts = 3\n",
    ) {
        Ok(c) => c,
        Err(e) => panic!("fuzz config: {e}"),
    };
    let clock = ManualClock::new(T0);
    let shared: SharedClock = Arc::new(clock.clone());
    let notices: Arc<Mutex<Vec<PairingNotice>>> = Arc::default();
    let hub = Arc::new(
        Hub::new(
            Settings::from_config(&config),
            Notifier::memory(Arc::clone(&notices)),
            Store::memory(),
            Arc::new(Router::default()),
            shared,
        )
        .without_delays(),
    );
    let keys: Vec<SigningKey> = (0..IDS.len())
        .map(|i| SigningKey::from_bytes(&[i as u8 + 1; 32]))
        .collect();
    let mut conns: Vec<Conn> = (0..CONNECTIONS as u8).map(|n| new_conn(&hub, n)).collect();
    // The last proof built: (identifier index, payload, signed correctly, nonce).
    let mut last_proof: Option<(usize, serde_json::Value, bool, String)> = None;
    let mut accepted_nonces: Vec<String> = Vec::new();
    let mut steps = 0;
    while let Some(op) = input.byte() {
        steps += 1;
        if steps > 200 {
            break;
        }
        let c = input.pick(CONNECTIONS);
        let id = input.pick(IDS.len());
        let ident = IDS[id];
        let records_before: Vec<_> = IDS.iter().map(|i| hub.store.get(i)).collect::<Vec<_>>();
        let mut before = Vec::new();
        for f in records_before {
            before.push(trust_of(f.await.ok().flatten().as_ref()));
        }
        let mut allowed = Allowed::default();
        let text = match op % 10 {
            0 => {
                let key = match input.pick(3) {
                    0 => signing::encode_base64(&keys[id].verifying_key().to_bytes()),
                    1 => input.text(),
                    _ => signing::encode_base64(
                        &keys[(id + 1) % IDS.len()].verifying_key().to_bytes(),
                    ),
                };
                frame(
                    "hello",
                    json!({"identifier": ident, "protocolVersion": "1", "publicKey": key}),
                )
            }
            1 => {
                let notice = notices
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .iter()
                    .rev()
                    .find(|n| n.identifier == ident)
                    .map(|n| n.code.clone());
                let code = match (input.pick(3), notice) {
                    (0, Some(code)) => {
                        if conns[c].greeted.contains(&id) {
                            allowed.pairing = Some(id);
                        }
                        code
                    }
                    (1, _) => "23456789".to_owned(),
                    _ => input.text(),
                };
                frame(
                    "pair_confirm",
                    json!({"identifier": ident, "pairingCode": code}),
                )
            }
            2 => {
                let record = hub.store.get(ident).await.ok().flatten();
                let secret = record
                    .as_ref()
                    .and_then(|r| r.secret.clone())
                    .unwrap_or_default();
                let bound = record.and_then(|r| r.public_key);
                let nonce = yonexus_protocol::validate::generate_nonce();
                let ts = hub.now() + i64::from(input.pick(3) as u8) - 1;
                let signer = if input.pick(4) == 0 {
                    (id + 1) % IDS.len()
                } else {
                    id
                };
                let payload = json!({"identifier": ident, "nonce": nonce, "proofTimestamp": ts,
                    "signature": signing::sign(&keys[signer], &secret, &nonce, ts),
                    "publicKey": signing::encode_base64(&keys[signer].verifying_key().to_bytes())});
                let signer_key = signing::encode_base64(&keys[signer].verifying_key().to_bytes());
                // Valid evidence: signed over the secret with the key bound at pairing (or any
                // key, which is then bound, when it paired without one).
                let valid = !secret.is_empty() && bound.as_ref().is_none_or(|b| *b == signer_key);
                if valid {
                    allowed.auth = Some((c, id));
                }
                last_proof = Some((id, payload.clone(), valid, nonce));
                frame("auth_request", payload)
            }
            3 => match &last_proof {
                // A captured proof, replayed: valid evidence only if it was never accepted.
                Some((pid, p, valid, nonce)) => {
                    if *valid && !accepted_nonces.contains(nonce) {
                        allowed.auth = Some((c, *pid));
                    }
                    frame("auth_request", p.clone())
                }
                None => String::new(),
            },
            4 => frame("heartbeat", json!({"identifier": ident})),
            5 => format!("echo::{}", input.text()),
            6 => input.text(),
            7 => {
                clock.advance(i64::from(input.byte().unwrap_or(0)) * 3);
                continue;
            }
            8 => {
                crate::lifecycle::connection_closed(&hub, &conns[c].peer);
                conns[c] = new_conn(&hub, c as u8);
                continue;
            }
            _ => frame(
                "auth_request",
                json!({"identifier": input.text(), "nonce": input.text(),
                    "proofTimestamp": hub.now(), "signature": input.text()}),
            ),
        };
        if conns[c].closed || text.is_empty() {
            continue;
        }
        let was_authenticated = conns[c].session.authenticated_as().is_some();
        let flow = conns[c].session.on_text(&hub, text).await;
        // Pairing notifications run in the background: let them finish (the notifier here
        // answers at once) before looking at what the step did.
        while !hub.background.is_empty() {
            tokio::task::yield_now().await;
        }
        if let Flow::Close { .. } = flow {
            conns[c].closed = true;
        }
        let replies = conns[c].peer.drain_texts();
        if replies.iter().any(|r| r.contains("\"pair_success\"")) {
            reached.pairings += 1;
        }
        if op % 10 == 0 && replies.iter().any(|r| r.contains("\"hello_ack\"")) {
            conns[c].greeted.push(id);
        }

        // Trust changed only where allowed, and never backwards.
        for (i, name) in IDS.iter().enumerate() {
            let after = trust_of(hub.store.get(name).await.ok().flatten().as_ref());
            let (secret0, key0, paired0) = &before[i];
            let (secret1, key1, paired1) = &after;
            if *paired0 {
                assert!(*paired1, "{name}: trust was revoked by a stranger");
                assert_eq!(secret0, secret1, "{name}: its secret changed");
                if key0 != key1 {
                    assert!(key0.is_none(), "{name}: its bound key was replaced");
                    assert_eq!(
                        allowed.auth.map(|(_, id)| id),
                        Some(i),
                        "{name}: a key was bound without a valid proof"
                    );
                }
            }
            if after != before[i] && !(*paired0) {
                assert_eq!(
                    allowed.pairing,
                    Some(i),
                    "{name}: trust changed without the right code on a greeted connection"
                );
                assert!(
                    replies.iter().any(|r| r.contains("\"pair_success\"")),
                    "{name}: paired without pair_success"
                );
            }
            if i == 2 {
                assert!(
                    after == (None, None, false),
                    "a stranger's identifier was stored"
                );
            }
        }
        // Authenticated only by a valid proof (and each proof is accepted once).
        if !was_authenticated {
            if let Some(who) = conns[c].session.authenticated_as() {
                if let (Some((_, _, _, nonce)), 2 | 3) = (&last_proof, op % 10) {
                    assert!(
                        !accepted_nonces.contains(nonce),
                        "a proof was accepted twice"
                    );
                    accepted_nonces.push(nonce.clone());
                }
                reached.authentications += 1;
                let (conn, id) = allowed.auth.unwrap_or((usize::MAX, usize::MAX));
                assert!(
                    conn == c && IDS[id] == &**who,
                    "connection {c} authenticated as {who} without a valid proof"
                );
            }
        }
    }
    // One notification per identifier per pairing window.
    let notices = notices.lock().unwrap_or_else(|p| p.into_inner()).clone();
    for name in IDS {
        let mine: Vec<&PairingNotice> = notices.iter().filter(|n| n.identifier == name).collect();
        for pair in mine.windows(2) {
            assert!(
                pair[1].expires_at - pair[0].expires_at >= 60,
                "{name} was notified twice within one pairing window"
            );
        }
    }
    for conn in &mut conns {
        crate::lifecycle::connection_closed(&hub, &conn.peer);
    }
    reached
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_few_sequences_run_clean() {
        // hello, confirm right, auth valid, heartbeat, echo: gets all the way.
        let r =
            super::session_sequence(&[0, 0, 0, 0, 1, 0, 0, 0, 2, 0, 0, 1, 1, 4, 0, 0, 5, 0, 0, 3]);
        assert_eq!((r.pairings, r.authentications), (1, 1));
        super::session_sequence(
            b"\x00\x01\x00\x00\x01\x02\x00\x00\x03\x03\x00\x02\x07\x01\x00\xff\x08\x00\x00",
        );
        super::session_sequence(&[9, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12]);
        let all: Vec<u8> = (0..=255).collect();
        super::session_sequence(&all);
    }
}
