//! `[reload]`: file watching and plugin hand-over timing.

use super::error::Invalid;
use serde::Deserialize;

/// `[reload]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReloadConfig {
    /// Watch the config file and plugin files and reload on change.
    pub watch: bool,
    /// Quiet time after the last file event before a reload starts.
    pub debounce_ms: u64,
    /// How long a replaced plugin instance may take to finish its queued messages.
    pub drain_timeout_ms: u64,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct RawReload {
    watch: bool,
    debounce_ms: u64,
    drain_timeout_ms: u64,
}

impl Default for RawReload {
    fn default() -> Self {
        RawReload {
            watch: true,
            debounce_ms: 500,
            drain_timeout_ms: 5000,
        }
    }
}

impl RawReload {
    pub(super) fn validate(self) -> Result<ReloadConfig, Invalid> {
        if !(10..=60_000).contains(&self.debounce_ms) {
            return Err(Invalid::new(
                "reload.debounce_ms",
                format!("{} is out of range (10..=60000)", self.debounce_ms),
            ));
        }
        if !(1..=600_000).contains(&self.drain_timeout_ms) {
            return Err(Invalid::new(
                "reload.drain_timeout_ms",
                format!("{} is out of range (1..=600000)", self.drain_timeout_ms),
            ));
        }
        Ok(ReloadConfig {
            watch: self.watch,
            debounce_ms: self.debounce_ms,
            drain_timeout_ms: self.drain_timeout_ms,
        })
    }
}
