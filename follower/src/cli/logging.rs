//! Log output on stderr (RUST_LOG filter, text or JSON), with the crates that log whole
//! WebSocket frames silenced at every level.
//!
//! tungstenite and tokio-tungstenite log each frame (with its payload: a `pair_confirm` carries
//! the pairing code, a `pair_success` the secret) at `trace` through the `log` crate, which
//! tracing-subscriber forwards. Their targets are dropped before any other filter, so not even
//! `RUST_LOG=trace` or `RUST_LOG=tungstenite=trace` shows them. The follower's own logs never
//! contain a code or a secret.

use crate::cli::args::LogFormat;
use std::io::IsTerminal;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{filter, fmt, EnvFilter};

/// Targets (and their submodules) whose records never reach the output.
const SILENCED: &[&str] = &["tungstenite", "tokio_tungstenite"];

/// Whether records of `target` are dropped.
pub fn silenced(target: &str) -> bool {
    SILENCED.iter().any(|s| {
        target
            .strip_prefix(s)
            .is_some_and(|rest| rest.is_empty() || rest.starts_with("::"))
    })
}

/// Install the global subscriber (and the `log` bridge).
pub fn init(format: LogFormat) {
    let env = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("warn"));
    let frames = filter::filter_fn(|meta| !silenced(meta.target()));
    // An unwritable line (stderr closed) is dropped: reporting it would panic in the task
    // that logged (see the host's `init_logging`).
    let layer = fmt::layer()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .log_internal_errors(false);
    let registry = tracing_subscriber::registry().with(frames).with(env);
    let installed = match format {
        LogFormat::Text => registry.with(layer).try_init(),
        LogFormat::Json => registry.with(layer.json()).try_init(),
    };
    if let Err(e) = installed {
        eprintln!("warning: logging is not available: {e}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frame_loggers_are_silenced_and_nothing_else() {
        assert!(silenced("tungstenite"));
        assert!(silenced("tungstenite::protocol"));
        assert!(silenced("tokio_tungstenite::compat"));
        assert!(!silenced("tungstenite_other"));
        assert!(!silenced("yonexus_follower::session"));
        assert!(!silenced("rustls::client"));
    }
}
