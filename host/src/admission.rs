//! Admission of unauthenticated connections: a cap in total and per remote address (an IPv4
//! address or an IPv6 /64, see [`AddressKey`]). A connection holds a [`Ticket`] from its accept
//! until it authenticates (or closes); over either cap it is refused before any TLS or
//! WebSocket handshake (plain connections get a fixed HTTP 503, TLS ones are closed).

use crate::guard::AddressKey;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

#[derive(Debug, Default)]
struct Counts {
    total: usize,
    per_ip: HashMap<AddressKey, usize>,
}

/// Counts unauthenticated connections.
#[derive(Debug, Default)]
pub struct Admission {
    counts: Mutex<Counts>,
}

/// Why a connection was not admitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    TooManyUnauthenticated,
    PerIpLimit,
    /// TLS and WebSocket handshakes in flight are at their cap.
    TooManyHandshakes,
}

impl Refusal {
    pub fn as_str(self) -> &'static str {
        match self {
            Refusal::TooManyUnauthenticated => "too_many_unauthenticated",
            Refusal::PerIpLimit => "per_ip_limit",
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
    /// Admit a connection from `ip` if both caps allow it.
    pub fn try_admit(
        self: &Arc<Self>,
        ip: AddressKey,
        max_total: usize,
        max_per_ip: usize,
    ) -> Result<Ticket, Refusal> {
        let mut c = self.counts.lock().unwrap_or_else(|p| p.into_inner());
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
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn caps_in_total_and_per_ip() {
        let a = Arc::new(Admission::default());
        let ip1 = AddressKey::of("127.0.0.1".parse().unwrap());
        let ip2 = AddressKey::of("127.0.0.2".parse().unwrap());
        let t1 = a.try_admit(ip1, 3, 2).unwrap();
        let _t2 = a.try_admit(ip1, 3, 2).unwrap();
        assert_eq!(a.try_admit(ip1, 3, 2).unwrap_err(), Refusal::PerIpLimit);
        let _t3 = a.try_admit(ip2, 3, 2).unwrap();
        assert_eq!(
            a.try_admit(ip2, 3, 2).unwrap_err(),
            Refusal::TooManyUnauthenticated
        );
        drop(t1);
        assert_eq!(a.unauthenticated(), 2);
        assert!(a.try_admit(ip1, 3, 2).is_ok());
        // One IPv6 /64 is one address.
        let b = Arc::new(Admission::default());
        let v6 = |s: &str| AddressKey::of(s.parse().unwrap());
        let _x = b.try_admit(v6("2001:db8::1"), 10, 1).unwrap();
        assert_eq!(
            b.try_admit(v6("2001:db8::2"), 10, 1).unwrap_err(),
            Refusal::PerIpLimit
        );
        assert!(b.try_admit(v6("2001:db8:0:1::1"), 10, 1).is_ok());
    }
}
