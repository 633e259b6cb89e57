//! `[liveness]`: heartbeat silence thresholds and the sweep interval.

use super::error::Invalid;
use serde::Deserialize;

/// `[liveness]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LivenessConfig {
    pub unstable_after_secs: i64,
    pub offline_after_secs: i64,
    pub sweep_interval_secs: u64,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct RawLiveness {
    unstable_after_secs: i64,
    offline_after_secs: i64,
    sweep_interval_secs: u64,
}

impl Default for RawLiveness {
    fn default() -> Self {
        RawLiveness {
            unstable_after_secs: 420,
            offline_after_secs: 660,
            sweep_interval_secs: 30,
        }
    }
}

impl RawLiveness {
    pub(super) fn validate(self) -> Result<LivenessConfig, Invalid> {
        if self.unstable_after_secs <= 0 {
            return Err(Invalid::new(
                "liveness.unstable_after_secs",
                "must be positive",
            ));
        }
        if self.offline_after_secs <= self.unstable_after_secs {
            return Err(Invalid::new(
                "liveness.offline_after_secs",
                format!(
                    "{} must be greater than unstable_after_secs ({})",
                    self.offline_after_secs, self.unstable_after_secs
                ),
            ));
        }
        if self.sweep_interval_secs == 0 {
            return Err(Invalid::new(
                "liveness.sweep_interval_secs",
                "must be positive",
            ));
        }
        Ok(LivenessConfig {
            unstable_after_secs: self.unstable_after_secs,
            offline_after_secs: self.offline_after_secs,
            sweep_interval_secs: self.sweep_interval_secs,
        })
    }
}
