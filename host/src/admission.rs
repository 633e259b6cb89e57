//! Admission of connections, decided at TCP accept, before any TLS or WebSocket handshake
//! (plain connections get a fixed HTTP 503, TLS ones are closed):
//! - a cap on unauthenticated connections, in total and per remote address (an IPv4 address or
//!   an IPv6 /64, see [`AddressKey`]): a connection holds a [`Ticket`] from its accept until it
//!   authenticates (or closes);
//! - a rate of new connections per address (a token bucket), so one address cannot make the
//!   host accept, upgrade and close connections as fast as the network carries them. Loopback
//!   addresses are exempt unless the operator says otherwise: behind a local reverse proxy every
//!   follower arrives from one of them.

use crate::guard::{make_room, AddressKey};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// New connections per address: a rate per second and the burst allowed above it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ConnectionRate {
    pub per_sec: u32,
    pub burst: u32,
    /// Whether loopback addresses (127.0.0.0/8, ::1) are limited too.
    pub loopback: bool,
}

impl ConnectionRate {
    /// The rate `[limits]` sets.
    pub fn from_limits(limits: &crate::config::LimitsConfig) -> ConnectionRate {
        ConnectionRate {
            per_sec: limits.new_connections_per_ip_per_sec,
            burst: limits.new_connections_burst_per_ip,
            loopback: limits.new_connections_limit_loopback,
        }
    }
}

/// One address's bucket of new-connection tokens.
#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

impl Bucket {
    /// Refill for the time since the last look, then take a token if there is one.
    fn take(&mut self, now: Instant, rate: ConnectionRate) -> bool {
        let elapsed = now.saturating_duration_since(self.at).as_secs_f64();
        self.tokens = (self.tokens + elapsed * f64::from(rate.per_sec)).min(f64::from(rate.burst));
        self.at = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }

    /// Refilled to the burst by `now`: the same as no bucket at all.
    fn full(&self, now: Instant, rate: ConnectionRate) -> bool {
        let refill =
            Duration::from_secs_f64(f64::from(rate.burst) / f64::from(rate.per_sec.max(1)));
        now.saturating_duration_since(self.at) >= refill
    }
}

#[derive(Debug, Default)]
struct Counts {
    total: usize,
    per_ip: HashMap<AddressKey, usize>,
    /// New-connection buckets, at most [`crate::guard::MAX_ADDRESSES`].
    arrivals: HashMap<AddressKey, Bucket>,
}

/// Counts unauthenticated connections and new connections per address.
#[derive(Debug, Default)]
pub struct Admission {
    counts: Mutex<Counts>,
}

/// Why a connection was not admitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    TooManyUnauthenticated,
    PerIpLimit,
    /// The address opened connections faster than `limits.new_connections_per_ip_per_sec`.
    ConnectionRate,
    /// TLS and WebSocket handshakes in flight are at their cap.
    TooManyHandshakes,
}

impl Refusal {
    pub fn as_str(self) -> &'static str {
        match self {
            Refusal::TooManyUnauthenticated => "too_many_unauthenticated",
            Refusal::PerIpLimit => "per_ip_limit",
            Refusal::ConnectionRate => "connection_rate",
            Refusal::TooManyHandshakes => "too_many_handshakes",
        }
    }
}

/// One admitted unauthenticated connection; released on drop.
#[derive(Debug)]
pub struct Ticket {
    admission: Arc<Admission>,
    ip: AddressKey,
}

impl Drop for Ticket {
    fn drop(&mut self) {
        let mut c = self
            .admission
            .counts
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        c.total = c.total.saturating_sub(1);
        if let Some(n) = c.per_ip.get_mut(&self.ip) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                c.per_ip.remove(&self.ip);
            }
        }
    }
}

impl Admission {
    /// Admit a connection from `ip` (`loopback`: the address is a loopback one) at `now` if
    /// its address's connection rate and both caps allow it. Every connection accepted takes a
    /// token, admitted or refused by a cap; one refused for its rate takes none.
    pub fn try_admit(
        self: &Arc<Self>,
        ip: AddressKey,
        loopback: bool,
        now: Instant,
        rate: ConnectionRate,
        max_total: usize,
        max_per_ip: usize,
    ) -> Result<Ticket, Refusal> {
        let mut c = self.counts.lock().unwrap_or_else(|p| p.into_inner());
        if rate.loopback || !loopback {
            make_room(&mut c.arrivals, ip, |b| b.full(now, rate), |b| b.at);
            let bucket = c.arrivals.entry(ip).or_insert(Bucket {
                tokens: f64::from(rate.burst),
                at: now,
            });
            if !bucket.take(now, rate) {
                return Err(Refusal::ConnectionRate);
            }
        }
        if c.total >= max_total {
            return Err(Refusal::TooManyUnauthenticated);
        }
        let n = c.per_ip.entry(ip).or_insert(0);
        if *n >= max_per_ip {
            return Err(Refusal::PerIpLimit);
        }
        *n += 1;
        c.total += 1;
        Ok(Ticket {
            admission: Arc::clone(self),
            ip,
        })
    }

    /// Unauthenticated connections right now.
    pub fn unauthenticated(&self) -> usize {
        self.counts.lock().unwrap_or_else(|p| p.into_inner()).total
    }

    /// Forget the buckets that have refilled (called by the periodic sweep).
    pub fn sweep(&self, now: Instant, rate: ConnectionRate) {
        self.counts
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .arrivals
            .retain(|_, b| !b.full(now, rate));
    }

    /// Addresses with a bucket right now.
    #[cfg(test)]
    fn remembered(&self) -> usize {
        self.counts
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .arrivals
            .len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const fn rate(per_sec: u32, burst: u32, loopback: bool) -> ConnectionRate {
        ConnectionRate {
            per_sec,
            burst,
            loopback,
        }
    }

    /// No connection rate to speak of: the caps alone decide.
    const UNLIMITED: ConnectionRate = rate(u32::MAX, u32::MAX, true);

    fn admit(
        a: &Arc<Admission>,
        ip: AddressKey,
        total: usize,
        per_ip: usize,
    ) -> Result<Ticket, Refusal> {
        a.try_admit(ip, false, Instant::now(), UNLIMITED, total, per_ip)
    }

    #[test]
    fn a_burst_then_the_rate_per_address() {
        let a = Arc::new(Admission::default());
        let rate = rate(10, 5, false);
        let ip = AddressKey::of("192.0.2.1".parse().unwrap());
        let other = AddressKey::of("192.0.2.2".parse().unwrap());
        let t0 = Instant::now();
        let try_at = |ip, at| a.try_admit(ip, false, at, rate, 1_000, 1_000).map(drop);
        for _ in 0..5 {
            try_at(ip, t0).unwrap();
        }
        assert_eq!(try_at(ip, t0), Err(Refusal::ConnectionRate));
        // Another address has its own bucket.
        try_at(other, t0).unwrap();
        // 10 per second: one token back after 100 ms, not before.
        assert_eq!(
            try_at(ip, t0 + Duration::from_millis(50)),
            Err(Refusal::ConnectionRate)
        );
        try_at(ip, t0 + Duration::from_millis(110)).unwrap();
        assert_eq!(
            try_at(ip, t0 + Duration::from_millis(120)),
            Err(Refusal::ConnectionRate)
        );
        // A long pause refills up to the burst, no further.
        let later = t0 + Duration::from_secs(60);
        for _ in 0..5 {
            try_at(ip, later).unwrap();
        }
        assert_eq!(try_at(ip, later), Err(Refusal::ConnectionRate));
    }

    #[test]
    fn a_refusal_for_the_rate_takes_no_token_and_a_cap_refusal_does() {
        let a = Arc::new(Admission::default());
        let rate = rate(1, 2, false);
        let ip = AddressKey::of("192.0.2.1".parse().unwrap());
        let t0 = Instant::now();
        let held = a.try_admit(ip, false, t0, rate, 1_000, 1).unwrap();
        // Over the per-address cap: refused, and the token is spent.
        assert_eq!(
            a.try_admit(ip, false, t0, rate, 1_000, 1).unwrap_err(),
            Refusal::PerIpLimit
        );
        drop(held);
        assert_eq!(
            a.try_admit(ip, false, t0, rate, 1_000, 1).unwrap_err(),
            Refusal::ConnectionRate
        );
        // However often it is refused for its rate, the next token comes a second later.
        for ms in [100, 300, 600, 900] {
            let at = t0 + Duration::from_millis(ms);
            assert_eq!(
                a.try_admit(ip, false, at, rate, 1_000, 1).unwrap_err(),
                Refusal::ConnectionRate
            );
        }
        assert!(a
            .try_admit(ip, false, t0 + Duration::from_millis(1_010), rate, 1_000, 1)
            .is_ok());
    }

    #[test]
    fn loopback_is_exempt_unless_configured() {
        let a = Arc::new(Admission::default());
        let mut rate = rate(1, 1, false);
        let lo = AddressKey::of("127.0.0.1".parse().unwrap());
        let t0 = Instant::now();
        for _ in 0..10 {
            a.try_admit(lo, true, t0, rate, 1_000, 1_000).unwrap();
        }
        assert_eq!(
            a.remembered(),
            0,
            "nothing remembered for an exempt address"
        );
        rate.loopback = true;
        a.try_admit(lo, true, t0, rate, 1_000, 1_000).unwrap();
        assert_eq!(
            a.try_admit(lo, true, t0, rate, 1_000, 1_000).unwrap_err(),
            Refusal::ConnectionRate
        );
    }

    #[test]
    fn a_flood_of_addresses_stays_bounded_and_refilled_buckets_are_forgotten() {
        let a = Arc::new(Admission::default());
        let rate = rate(20, 100, false);
        let t0 = Instant::now();
        let n = crate::guard::MAX_ADDRESSES as u32 + 1_000;
        for i in 0..n {
            let ip = AddressKey::of(std::net::Ipv4Addr::from(0x0a00_0000 + i).into());
            a.try_admit(ip, false, t0, rate, usize::MAX, usize::MAX)
                .map(drop)
                .unwrap();
        }
        assert!(a.remembered() <= crate::guard::MAX_ADDRESSES);
        // 100 tokens at 20 per second: refilled after 5 s.
        a.sweep(t0 + Duration::from_secs(4), rate);
        assert!(a.remembered() > 0);
        a.sweep(t0 + Duration::from_secs(5), rate);
        assert_eq!(a.remembered(), 0);
    }

    #[test]
    fn caps_in_total_and_per_ip() {
        let a = Arc::new(Admission::default());
        let ip1 = AddressKey::of("127.0.0.1".parse().unwrap());
        let ip2 = AddressKey::of("127.0.0.2".parse().unwrap());
        let t1 = admit(&a, ip1, 3, 2).unwrap();
        let _t2 = admit(&a, ip1, 3, 2).unwrap();
        assert_eq!(admit(&a, ip1, 3, 2).unwrap_err(), Refusal::PerIpLimit);
        let _t3 = admit(&a, ip2, 3, 2).unwrap();
        assert_eq!(
            admit(&a, ip2, 3, 2).unwrap_err(),
            Refusal::TooManyUnauthenticated
        );
        drop(t1);
        assert_eq!(a.unauthenticated(), 2);
        assert!(admit(&a, ip1, 3, 2).is_ok());
        // One IPv6 /64 is one address.
        let b = Arc::new(Admission::default());
        let v6 = |s: &str| AddressKey::of(s.parse().unwrap());
        let _x = admit(&b, v6("2001:db8::1"), 10, 1).unwrap();
        assert_eq!(
            admit(&b, v6("2001:db8::2"), 10, 1).unwrap_err(),
            Refusal::PerIpLimit
        );
        assert!(admit(&b, v6("2001:db8:0:1::1"), 10, 1).is_ok());
    }
}
