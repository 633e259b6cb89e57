//! What strangers can make the host remember, and how failures slow them down (SECURITY.md).
//!
//! Only evidence that needs the secret or the pairing code changes trust. Everything else a
//! stranger can send — junk proofs, replayed proofs, wrong codes — is refused, counted and
//! answered more slowly, and never revokes, cancels or grows memory without bound:
//! - per remote address (IPv4 address, IPv6 /64): failures within a window; past a free
//!   allowance each further failure is answered after a delay that doubles up to a cap. A valid
//!   proof is never delayed, so followers behind one NAT keep working while a neighbour fails.
//! - per identifier (allowlisted identifiers only — the caller checks the allowlist first):
//!   the nonces of accepted proofs (a replay is refused) and recent successful
//!   authentications (a follower that reconnects too fast is slowed, not revoked).
//!
//! Both maps are bounded: entries expire with their window, empty ones are removed by
//! [`Guard::sweep`], and a full address map forgets its older half first.

use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Most remote addresses remembered at once.
pub const MAX_ADDRESSES: usize = 65_536;
/// `|proofTimestamp − now|` must be below this (PROTOCOL.md §4.5).
pub const FRESHNESS_SECS: i64 = 10;
/// Accepted nonces are remembered this long: past it the proof is stale anyway.
pub const NONCE_MEMORY_SECS: i64 = 2 * FRESHNESS_SECS + 1;
// The shared store (PostgreSQL) must remember them at least as long.
const _: () = assert!(crate::store::postgres::NONCE_KEEP_SECS >= NONCE_MEMORY_SECS);

/// The tunable part of the policy (`[limits]`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Policy {
    /// Failures per address within `window_secs` answered without delay.
    pub free_failures_per_address: u32,
    /// Successful authentications per identifier within `window_secs` answered without delay.
    pub free_logins_per_identifier: u32,
    pub window_secs: i64,
    /// The first delay past the allowance; doubles per further failure.
    pub base_delay: Duration,
    /// The longest delay.
    pub max_delay: Duration,
}

impl Policy {
    /// The policy `[limits]` sets.
    pub fn from_limits(limits: &crate::config::LimitsConfig) -> Policy {
        Policy {
            free_failures_per_address: limits.free_failures_per_address,
            free_logins_per_identifier: limits.free_logins_per_identifier,
            window_secs: i64::try_from(limits.failure_window_secs).unwrap_or(i64::MAX),
            base_delay: Duration::from_millis(250)
                .min(Duration::from_millis(limits.max_failure_delay_ms)),
            max_delay: Duration::from_millis(limits.max_failure_delay_ms),
        }
    }
}

impl Default for Policy {
    fn default() -> Self {
        Policy {
            free_failures_per_address: 10,
            free_logins_per_identifier: 10,
            window_secs: 60,
            base_delay: Duration::from_millis(250),
            max_delay: Duration::from_secs(5),
        }
    }
}

impl Policy {
    /// The delay for the `n`-th event in a window when `free` are allowed without one.
    pub fn delay(&self, n: u32, free: u32) -> Duration {
        if n <= free {
            return Duration::ZERO;
        }
        let doublings = (n - free - 1).min(20);
        self.base_delay
            .saturating_mul(1u32 << doublings)
            .min(self.max_delay)
    }
}

/// A remote address as the limits see it: IPv4 exactly, IPv6 by its /64 (one customer network).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AddressKey {
    V4(u32),
    V6Net(u64),
}

impl AddressKey {
    pub fn of(ip: IpAddr) -> AddressKey {
        match ip {
            IpAddr::V4(v4) => AddressKey::V4(u32::from(v4)),
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => AddressKey::V4(u32::from(v4)),
                None => AddressKey::V6Net((u128::from(v6) >> 64) as u64),
            },
        }
    }
}

impl std::fmt::Display for AddressKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            AddressKey::V4(a) => write!(f, "{}", std::net::Ipv4Addr::from(*a)),
            AddressKey::V6Net(n) => {
                let net = std::net::Ipv6Addr::from(u128::from(*n) << 64);
                write!(f, "{net}/64")
            }
        }
    }
}

/// Before `addr` is added to a per-address map: if the map is at [`MAX_ADDRESSES`] and `addr`
/// is new, forget the entries `expired` says hold nothing, and if it is still full of live
/// ones, the older half by `since` in one pass — so a full map costs one pass per many new
/// addresses, not one per event, and a flood of addresses never grows it.
pub fn make_room<V, T: Ord + Copy>(
    map: &mut HashMap<AddressKey, V>,
    addr: AddressKey,
    expired: impl Fn(&V) -> bool,
    since: impl Fn(&V) -> T,
) {
    if map.len() < MAX_ADDRESSES || map.contains_key(&addr) {
        return;
    }
    map.retain(|_, v| !expired(v));
    if map.len() >= MAX_ADDRESSES {
        let mut ages: Vec<T> = map.values().map(&since).collect();
        let mid = ages.len() / 2;
        let (_, &mut cut, _) = ages.select_nth_unstable(mid);
        map.retain(|_, v| since(v) > cut);
    }
}

#[derive(Debug, Clone, Copy)]
struct Window {
    start: i64,
    count: u32,
}

impl Window {
    /// Count one event at `now`; returns the count within the current window.
    fn hit(&mut self, now: i64, window: i64) -> u32 {
        if now - self.start >= window || now < self.start {
            self.start = now;
            self.count = 0;
        }
        self.count = self.count.saturating_add(1);
        self.count
    }

    fn expired(&self, now: i64, window: i64) -> bool {
        now - self.start >= window
    }
}

#[derive(Debug, Default)]
struct Identity {
    /// (nonce, accepted at) of accepted proofs, oldest first.
    nonces: VecDeque<(Box<str>, i64)>,
    logins: Option<Window>,
}

impl Identity {
    fn prune(&mut self, now: i64, window: i64) {
        while self
            .nonces
            .front()
            .is_some_and(|(_, at)| now - at > NONCE_MEMORY_SECS)
        {
            self.nonces.pop_front();
        }
        if self.logins.is_some_and(|w| w.expired(now, window)) {
            self.logins = None;
        }
    }

    fn is_empty(&self) -> bool {
        self.nonces.is_empty() && self.logins.is_none()
    }
}

/// The guard's state.
#[derive(Debug)]
pub struct Guard {
    policy: Mutex<Policy>,
    addresses: Mutex<HashMap<AddressKey, Window>>,
    identities: Mutex<HashMap<Arc<str>, Identity>>,
}

impl Default for Guard {
    fn default() -> Self {
        Self::new(Policy::default())
    }
}

impl Guard {
    pub fn new(policy: Policy) -> Self {
        Guard {
            policy: Mutex::new(policy),
            addresses: Mutex::new(HashMap::new()),
            identities: Mutex::new(HashMap::new()),
        }
    }

    pub fn policy(&self) -> Policy {
        *self.policy.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn set_policy(&self, policy: Policy) {
        *self.policy.lock().unwrap_or_else(|p| p.into_inner()) = policy;
    }

    /// Record a failure (refused proof, wrong code, request without a session) from `addr`;
    /// returns how long to wait before answering it (counted on this host; see
    /// [`Guard::failure_anywhere`] for a cluster).
    pub fn failure(&self, addr: AddressKey, now: i64) -> Duration {
        let policy = self.policy();
        let mut map = self.addresses.lock().unwrap_or_else(|p| p.into_inner());
        make_room(
            &mut map,
            addr,
            |w| w.expired(now, policy.window_secs),
            |w| w.start,
        );
        let n = map
            .entry(addr)
            .or_insert(Window {
                start: now,
                count: 0,
            })
            .hit(now, policy.window_secs);
        policy.delay(n, policy.free_failures_per_address)
    }

    /// Like [`Guard::failure`], with the count shared by every host when the store keeps shared
    /// counts (PostgreSQL): the larger of the two counts decides.
    pub async fn failure_anywhere(
        &self,
        store: &crate::store::Store,
        addr: AddressKey,
        now: i64,
    ) -> Duration {
        let local = self.failure(addr, now);
        let policy = self.policy();
        match store
            .count_event(&format!("addr:{addr}"), now, policy.window_secs)
            .await
        {
            Ok(Some(n)) => local.max(policy.delay(n, policy.free_failures_per_address)),
            _ => local,
        }
    }

    /// Accept the nonce of a verified proof for `identifier`, on this host and (PostgreSQL) for
    /// every host, and count the login: `Ok(None)` when the nonce was already accepted (a
    /// replay, also one racing on another connection), else how long to wait before answering
    /// (non-zero only for a follower reconnecting too fast; the larger of this host's and the
    /// shared count decides).
    pub async fn accept_proof(
        &self,
        store: &crate::store::Store,
        identifier: &Arc<str>,
        nonce: &str,
        now: i64,
    ) -> Result<Option<Duration>, crate::store::StoreError> {
        let Some(local) = self.accepted(identifier, nonce, now) else {
            return Ok(None);
        };
        if !store.accept_nonce(identifier, nonce, now).await? {
            return Ok(None);
        }
        let policy = self.policy();
        match store
            .count_event(&format!("login:{identifier}"), now, policy.window_secs)
            .await
        {
            Ok(Some(n)) => Ok(Some(
                local.max(policy.delay(n, policy.free_logins_per_identifier)),
            )),
            _ => Ok(Some(local)),
        }
    }

    /// Whether `nonce` was accepted for `identifier` recently (a replay): a cheap early refusal
    /// before the signature is checked. [`Guard::accepted`] decides, atomically.
    pub fn replayed(&self, identifier: &str, nonce: &str, now: i64) -> bool {
        let policy = self.policy();
        let mut map = self.identities.lock().unwrap_or_else(|p| p.into_inner());
        let Some(id) = map.get_mut(identifier) else {
            return false;
        };
        id.prune(now, policy.window_secs);
        id.nonces.iter().any(|(n, _)| &**n == nonce)
    }

    /// Record a successful authentication of `identifier` with `nonce`, checking and recording
    /// the nonce in one step: `None` when it was already accepted (a replay), else how long to
    /// wait before answering (non-zero only for a follower reconnecting too fast).
    pub fn accepted(&self, identifier: &Arc<str>, nonce: &str, now: i64) -> Option<Duration> {
        let policy = self.policy();
        let mut map = self.identities.lock().unwrap_or_else(|p| p.into_inner());
        let id = map.entry(Arc::clone(identifier)).or_default();
        id.prune(now, policy.window_secs);
        if id.nonces.iter().any(|(n, _)| &**n == nonce) {
            return None;
        }
        id.nonces.push_back((nonce.into(), now));
        let n = id
            .logins
            .get_or_insert(Window {
                start: now,
                count: 0,
            })
            .hit(now, policy.window_secs);
        Some(policy.delay(n, policy.free_logins_per_identifier))
    }

    /// Forget everything about `identifier` (paired anew, revoked).
    pub fn forget(&self, identifier: &str) {
        self.identities
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(identifier);
    }

    /// Drop expired windows and empty entries.
    pub fn sweep(&self, now: i64) {
        let policy = self.policy();
        self.addresses
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .retain(|_, w| !w.expired(now, policy.window_secs));
        self.identities
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .retain(|_, id| {
                id.prune(now, policy.window_secs);
                !id.is_empty()
            });
    }

    /// (addresses, identities) remembered right now.
    pub fn sizes(&self) -> (usize, usize) {
        (
            self.addresses
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .len(),
            self.identities
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .len(),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn address_keys_group_ipv6_by_64() {
        let a = AddressKey::of("2001:db8:1:2::1".parse().unwrap());
        let b = AddressKey::of("2001:db8:1:2:ffff::9".parse().unwrap());
        let c = AddressKey::of("2001:db8:1:3::1".parse().unwrap());
        assert_eq!(a, b);
        assert_ne!(a, c);
        assert_eq!(
            AddressKey::of("::ffff:10.0.0.1".parse().unwrap()),
            AddressKey::of("10.0.0.1".parse().unwrap())
        );
        assert_eq!(a.to_string(), "2001:db8:1:2::/64");
        assert_eq!(
            AddressKey::of("10.0.0.1".parse().unwrap()).to_string(),
            "10.0.0.1"
        );
    }

    #[test]
    fn failures_are_free_then_slowed_and_forgotten() {
        let g = Guard::default();
        let addr = AddressKey::of("10.0.0.1".parse().unwrap());
        for _ in 0..10 {
            assert_eq!(g.failure(addr, 100), Duration::ZERO);
        }
        assert_eq!(g.failure(addr, 100), Duration::from_millis(250));
        assert_eq!(g.failure(addr, 101), Duration::from_millis(500));
        for _ in 0..30 {
            g.failure(addr, 102);
        }
        assert_eq!(g.failure(addr, 103), Duration::from_secs(5), "capped");
        // Another address is not affected; a new window starts clean.
        let other = AddressKey::of("10.0.0.2".parse().unwrap());
        assert_eq!(g.failure(other, 103), Duration::ZERO);
        assert_eq!(g.failure(addr, 160), Duration::ZERO);
        g.sweep(1000);
        assert_eq!(g.sizes(), (0, 0));
    }

    #[test]
    fn nonces_and_logins_per_identifier() {
        let g = Guard::default();
        let alpha: Arc<str> = "alpha".into();
        assert!(!g.replayed("alpha", "n1", 100));
        assert_eq!(g.accepted(&alpha, "n1", 100), Some(Duration::ZERO));
        assert!(g.replayed("alpha", "n1", 105));
        assert_eq!(g.accepted(&alpha, "n1", 105), None, "accepted once");
        assert!(!g.replayed("alpha", "n1", 100 + NONCE_MEMORY_SECS + 1));
        for i in 0..9 {
            assert_eq!(
                g.accepted(&alpha, &format!("x{i}"), 110),
                Some(Duration::ZERO)
            );
        }
        assert!(
            g.accepted(&alpha, "y", 110) > Some(Duration::ZERO),
            "too fast"
        );
        g.sweep(110 + 3600);
        assert_eq!(g.sizes(), (0, 0));
    }

    #[test]
    fn the_address_map_is_bounded() {
        let g = Guard::default();
        for i in 0..(MAX_ADDRESSES as u32 + 10) {
            g.failure(AddressKey::V4(i), 100 + i64::from(i / 1000));
        }
        let kept = g.sizes().0;
        assert!(
            kept <= MAX_ADDRESSES && kept > MAX_ADDRESSES / 4,
            "{kept} addresses kept"
        );
        // The newest addresses are the ones kept.
        let newest = AddressKey::V4(MAX_ADDRESSES as u32 + 9);
        assert!(g.addresses.lock().unwrap().contains_key(&newest));
    }
}
