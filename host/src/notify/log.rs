//! The `log` notifier: prints the pairing code to stderr. Development only.
//!
//! It writes to stderr itself, not through `tracing`, on purpose: log files and collectors fed by the tracing
//! subscriber must never receive the code. A tracing warning (without the code) records that the
//! development-only notifier is in use.

use super::PairingNotice;
use crate::clock::{Clock, SystemClock};
use std::io::Write;

/// Prints the notice to stderr and warns (without the code) that this notifier is for development.
pub(crate) fn notify(notice: &PairingNotice) {
    let expires = crate::timefmt::when(Some(notice.expires_at), SystemClock.now());
    // Not `eprintln!`: it panics when stderr is closed.
    let _ = writeln!(
        std::io::stderr().lock(),
        "==== YONEXUS PAIRING CODE (log notifier: for development only; use \"command\" or \"discord\" in production) ====\n\
         identifier: {}\n\
         code:       {}\n\
         expires at: {}\n\
         ==== END YONEXUS PAIRING CODE ====",
        notice.identifier, notice.code, expires
    );
    tracing::warn!(
        identifier = %notice.identifier,
        notifier = "log",
        "pairing code printed to stderr by the log notifier, which is for development only; use \"command\" or \"discord\" in production"
    );
}
