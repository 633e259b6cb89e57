//! Bench-only plugin `cpuwork`: replies to the sender with the content unchanged (like `echo`,
//! so `yonexus-bench echo` checks every reply), after a fixed amount of CPU work per message:
//! `rounds` passes of FNV-1a over the content (config key `rounds`, default 100; a dependent
//! multiply chain the compiler cannot vectorise or skip). It stands for a rule that does real
//! work per message (parsing, a signature check), so that the host rather than the load
//! generator is the bottleneck when comparing 1 and 2 cores. See the crate's Cargo.toml for the
//! three builds (sharded, inline, serial).

use std::hint::black_box;
use yonexus_plugin_api::{export_plugin, Config, Host, Message};

/// The plugin: how much work per message.
pub struct CpuWork {
    rounds: u32,
    /// Serial build only: state only a `&mut self` plugin may keep (messages handled).
    #[cfg(feature = "serial")]
    handled: u64,
}

/// `rounds` passes of FNV-1a (64-bit) over `data`.
pub fn work(data: &[u8], rounds: u32) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for r in 0..rounds {
        for &b in data {
            h = (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3);
        }
        h ^= u64::from(r);
    }
    h
}

fn create(config: &Config) -> Result<CpuWork, String> {
    let rounds = match config.get("rounds") {
        None => 100,
        Some(v) => v
            .as_i64()
            .and_then(|n| u32::try_from(n).ok())
            .ok_or("config key 'rounds' must be a whole number from 0 to 4294967295")?,
    };
    Ok(CpuWork {
        rounds,
        #[cfg(feature = "serial")]
        handled: 0,
    })
}

fn handle(rounds: u32, host: &Host, msg: &Message<'_>) {
    black_box(work(black_box(msg.content.as_bytes()), rounds));
    // The sender may have disconnected meanwhile; a reply to nobody is not an error.
    let _ = host.reply(msg, msg.content);
}

#[cfg(not(feature = "serial"))]
impl yonexus_plugin_api::SharedPlugin for CpuWork {
    const NAME: &'static str = "cpuwork";
    /// The `inline` build promises calls of microseconds (the work stays far below the host's
    /// 2 ms budget) so the host may run it on its async threads.
    const NON_BLOCKING: bool = cfg!(feature = "inline");
    const HANDLES_EVENTS: bool = false;

    fn create(config: &Config, _host: &Host) -> Result<Self, String> {
        create(config)
    }

    fn on_message(&self, host: &Host, msg: &Message<'_>) -> Result<(), String> {
        handle(self.rounds, host, msg);
        Ok(())
    }
}

#[cfg(feature = "serial")]
impl yonexus_plugin_api::Plugin for CpuWork {
    const NAME: &'static str = "cpuwork";
    const HANDLES_EVENTS: bool = false;

    fn create(config: &Config, _host: &Host) -> Result<Self, String> {
        create(config)
    }

    fn on_message(&mut self, host: &Host, msg: &Message<'_>) -> Result<(), String> {
        handle(self.rounds, host, msg);
        self.handled += 1;
        Ok(())
    }
}

#[cfg(not(feature = "serial"))]
export_plugin!(shared CpuWork);
#[cfg(feature = "serial")]
export_plugin!(CpuWork);

#[cfg(test)]
mod tests {
    use super::*;
    use yonexus_plugin_api::testing::{Sent, TestHost};

    #[test]
    fn replies_unchanged_and_reads_rounds() {
        let th = TestHost::new();
        th.connect("alice");
        let cfg = Config::from_json(r#"{"rounds":3}"#).unwrap();
        let p = create(&cfg).unwrap();
        assert_eq!(p.rounds, 3);
        let msg = Message {
            rule: "echo",
            sender: "alice",
            content: "1:2:xx",
        };
        handle(p.rounds, &th.host(), &msg);
        assert_eq!(
            th.take_sent(),
            vec![Sent::message("alice", "echo", "1:2:xx")]
        );
        assert_eq!(
            create(&Config::from_json("{}").unwrap()).unwrap().rounds,
            100
        );
        assert!(create(&Config::from_json(r#"{"rounds":"x"}"#).unwrap()).is_err());
    }

    #[test]
    fn work_depends_on_every_round_and_byte() {
        assert_ne!(work(b"ab", 1), work(b"ab", 2));
        assert_ne!(work(b"ab", 2), work(b"ba", 2));
        assert_eq!(work(b"", 0), 0xcbf2_9ce4_8422_2325);
    }
}
