//! Admission of unauthenticated connections: a cap in total and per remote IP. A connection
//! holds a [`Ticket`] from its upgrade until it authenticates (or closes); over either cap the
//! upgrade is refused with HTTP 503.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

#[derive(Debug, Default)]
struct Counts {
    total: usize,
    per_ip: HashMap<IpAddr, usize>,
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
}

impl Refusal {
    pub fn as_str(self) -> &'static str {
        match self {
            Refusal::TooManyUnauthenticated => "too_many_unauthenticated",
            Refusal::PerIpLimit => "per_ip_limit",
        }
    }
}

/// One admitted unauthenticated connection; released on drop.
#[derive(Debug)]
pub struct Ticket {
    admission: Arc<Admission>,
    ip: IpAddr,
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
        ip: IpAddr,
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
        let ip1: IpAddr = "127.0.0.1".parse().unwrap();
        let ip2: IpAddr = "127.0.0.2".parse().unwrap();
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
    }
}
