//! `[limits]`: protection against hostile and slow peers.

use super::error::Invalid;
use serde::Deserialize;

/// `[limits]`: protection against hostile and slow peers. Every value has a default.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsConfig {
    /// Deadline for the WebSocket upgrade after TCP accept.
    pub upgrade_timeout_ms: u64,
    /// Deadline to authenticate after the upgrade (extended by the pairing TTL while a pairing
    /// is in progress, so a human has time to relay the code).
    pub auth_timeout_secs: u64,
    /// Unauthenticated connections in total, and per remote IP; beyond them upgrades get 503.
    pub max_unauthenticated: usize,
    pub max_unauthenticated_per_ip: usize,
    /// New connections per remote address (IPv4 address, IPv6 /64) per second, and the burst
    /// allowed above that rate; more are refused at accept like those over the caps.
    pub new_connections_per_ip_per_sec: u32,
    pub new_connections_burst_per_ip: u32,
    /// Whether that rate applies to loopback addresses too (off: behind a local reverse proxy
    /// every follower arrives from loopback; the proxy limits its own clients).
    pub new_connections_limit_loopback: bool,
    /// Largest message accepted before authentication, and after it.
    pub max_unauthenticated_message: usize,
    pub max_message_size: usize,
    /// Inbound messages per second per connection, and the burst allowed above that rate.
    pub rate_per_sec: u32,
    pub rate_burst: u32,
    /// Consecutive rate-limited messages after which the connection is closed (1008).
    pub rate_abuse_close_after: u32,
    /// Outbound queue per connection, in frames and bytes; a follower whose queue is full is
    /// closed as a slow consumer (1008).
    pub outbound_queue: usize,
    pub outbound_queue_bytes: usize,
    /// WebSocket ping interval; a peer silent for two intervals is dropped.
    pub ping_interval_secs: u64,
    /// How long shutdown waits for connections and plugins to finish.
    pub shutdown_grace_ms: u64,
    /// TLS and WebSocket handshakes in flight at once; more connections are refused like those
    /// over the unauthenticated caps.
    pub max_handshakes: usize,
    /// Refused proofs (and requests without a session) one connection may send before it is
    /// closed (1008).
    pub auth_failures_per_connection: u32,
    /// Failures (refused proofs, wrong pairing codes) per remote address (IPv4 address, IPv6
    /// /64) within `failure_window_secs` answered without delay; each further one waits twice
    /// as long as the previous (250 ms, 500 ms, …) up to `max_failure_delay_ms`. A valid proof is
    /// never delayed.
    pub free_failures_per_address: u32,
    /// Successful authentications per identifier within `failure_window_secs` answered without
    /// delay (a follower reconnecting faster is slowed, never revoked).
    pub free_logins_per_identifier: u32,
    pub failure_window_secs: u64,
    pub max_failure_delay_ms: u64,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        LimitsConfig {
            upgrade_timeout_ms: 5_000,
            auth_timeout_secs: 10,
            max_unauthenticated: 1_000,
            max_unauthenticated_per_ip: 20,
            // A site of 200 followers behind one NAT reconnects at once after a host restart
            // (the per-address cap of 20 unauthenticated paces it anyway); a stranger gets 20
            // connections a second, each of which costs the host an accept, an upgrade and
            // at most 32 frames before it is closed.
            new_connections_per_ip_per_sec: 20,
            new_connections_burst_per_ip: 200,
            new_connections_limit_loopback: false,
            // Before authentication only hello, pair_confirm and auth_request arrive, each well
            // under 1 KiB. A frame held half-sent keeps up to this much per connection: at most
            // max_unauthenticated (1000) × 4 KiB = 4 MiB for a stranger to pin (64 KiB let one
            // pin about 70 MiB).
            max_unauthenticated_message: 4 * 1024,
            max_message_size: 1024 * 1024,
            rate_per_sec: 1_000,
            rate_burst: 2_000,
            rate_abuse_close_after: 1_000,
            outbound_queue: 1_024,
            outbound_queue_bytes: 4 * 1024 * 1024,
            ping_interval_secs: 30,
            shutdown_grace_ms: 5_000,
            max_handshakes: 256,
            auth_failures_per_connection: 3,
            free_failures_per_address: 10,
            free_logins_per_identifier: 10,
            failure_window_secs: 60,
            max_failure_delay_ms: 5_000,
        }
    }
}

impl LimitsConfig {
    /// Every limit positive, and the sizes consistent with each other.
    pub(super) fn validate(&self) -> Result<(), Invalid> {
        let positive: [(&str, u64); 18] = [
            ("limits.max_handshakes", self.max_handshakes as u64),
            (
                "limits.new_connections_per_ip_per_sec",
                u64::from(self.new_connections_per_ip_per_sec),
            ),
            (
                "limits.new_connections_burst_per_ip",
                u64::from(self.new_connections_burst_per_ip),
            ),
            (
                "limits.auth_failures_per_connection",
                u64::from(self.auth_failures_per_connection),
            ),
            ("limits.failure_window_secs", self.failure_window_secs),
            ("limits.max_failure_delay_ms", self.max_failure_delay_ms),
            ("limits.upgrade_timeout_ms", self.upgrade_timeout_ms),
            ("limits.auth_timeout_secs", self.auth_timeout_secs),
            (
                "limits.max_unauthenticated",
                self.max_unauthenticated as u64,
            ),
            (
                "limits.max_unauthenticated_per_ip",
                self.max_unauthenticated_per_ip as u64,
            ),
            (
                "limits.max_unauthenticated_message",
                self.max_unauthenticated_message as u64,
            ),
            ("limits.max_message_size", self.max_message_size as u64),
            ("limits.rate_per_sec", u64::from(self.rate_per_sec)),
            ("limits.rate_burst", u64::from(self.rate_burst)),
            ("limits.outbound_queue", self.outbound_queue as u64),
            (
                "limits.outbound_queue_bytes",
                self.outbound_queue_bytes as u64,
            ),
            ("limits.ping_interval_secs", self.ping_interval_secs),
            ("limits.shutdown_grace_ms", self.shutdown_grace_ms),
        ];
        for (key, value) in positive {
            if value == 0 {
                return Err(Invalid::new(key, "must be positive"));
            }
        }
        if self.max_failure_delay_ms > 60_000 {
            return Err(Invalid::new(
                "limits.max_failure_delay_ms",
                "must be at most 60000 (a minute)",
            ));
        }
        if self.max_message_size > 64 * 1024 * 1024 {
            return Err(Invalid::new(
                "limits.max_message_size",
                "must be at most 64 MiB",
            ));
        }
        if self.max_unauthenticated_message > self.max_message_size {
            return Err(Invalid::new(
                "limits.max_unauthenticated_message",
                format!(
                    "must not exceed limits.max_message_size ({})",
                    self.max_message_size
                ),
            ));
        }
        if self.outbound_queue_bytes < self.max_message_size {
            return Err(Invalid::new(
                "limits.outbound_queue_bytes",
                format!(
                    "must be at least limits.max_message_size ({})",
                    self.max_message_size
                ),
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_inconsistent_sizes_are_not() {
        LimitsConfig::default().validate().unwrap();
        let zero = LimitsConfig {
            rate_burst: 0,
            ..LimitsConfig::default()
        };
        assert_eq!(zero.validate().unwrap_err().key, "limits.rate_burst");
        let small_queue = LimitsConfig {
            outbound_queue_bytes: 1024,
            ..LimitsConfig::default()
        };
        let e = small_queue.validate().unwrap_err();
        assert_eq!(e.key, "limits.outbound_queue_bytes");
        assert!(e.message.contains("at least"), "{e:?}");
        let no_auth = LimitsConfig {
            auth_failures_per_connection: 0,
            ..LimitsConfig::default()
        };
        assert_eq!(
            no_auth.validate().unwrap_err().key,
            "limits.auth_failures_per_connection"
        );
    }
}
