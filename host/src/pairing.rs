//! Pairing (PROTOCOL.md §4.3–4.4) as plain functions over a [`TrustRecord`]: what `hello` leads
//! to, starting a pending pairing, checking a `pair_confirm` code in constant time, and issuing
//! the secret. The session runs them through the store (durable where trust changes).
//!
//! Policy (SECURITY.md): wrong codes never cancel a pending pairing. They are counted per
//! identifier (in the record, so the count survives restarts and is shared by hosts) and their
//! answers are slowed ([`wrong_code_delay`]); each connection may send `pairing.max_attempts`
//! wrong codes before it is closed. The right code is always answered at once.

use crate::trust::{NotifyStatus, PairingStatus, TrustRecord};
use std::time::Duration;
use subtle::ConstantTimeEq;
use yonexus_protocol::envelope::{NextAction, PairFailReason};
use yonexus_protocol::validate;

/// Wrong codes per identifier and pairing answered without delay.
pub const FREE_WRONG_CODES: u32 = 5;
/// Delay of the first slowed answer; doubles per wrong code up to [`MAX_WRONG_CODE_DELAY`].
pub const WRONG_CODE_BASE_DELAY: Duration = Duration::from_secs(1);
pub const MAX_WRONG_CODE_DELAY: Duration = Duration::from_secs(30);

/// What a `hello` from an allowed identifier leads to.
pub fn next_action(record: Option<&TrustRecord>, now: i64) -> NextAction {
    match record {
        Some(r) if r.is_paired() => NextAction::AuthRequired,
        Some(r) if r.live_pending(now) => NextAction::WaitingPairConfirm,
        _ => NextAction::PairRequired,
    }
}

/// A pairing just started: the code goes to the admin, never to the socket.
#[derive(Clone, PartialEq, Eq)]
pub struct Started {
    pub code: String,
    pub expires_at: i64,
}

impl std::fmt::Debug for Started {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Started")
            .field("code", &"<redacted>")
            .field("expires_at", &self.expires_at)
            .finish()
    }
}

/// Start a new pending pairing on `record` with a fresh code.
pub fn start(record: &mut TrustRecord, now: i64, ttl_secs: i64) -> Started {
    record.clear_pairing();
    record.secret = None;
    record.pairing_status = PairingStatus::Pending;
    let code = validate::generate_pairing_code();
    record.pairing_code = Some(code.clone());
    record.pairing_expires_at = Some(now + ttl_secs);
    record.pairing_notify_status = Some(NotifyStatus::Pending);
    record.updated_at = now;
    Started {
        code,
        expires_at: now + ttl_secs,
    }
}

/// The decision for a `hello`, made and applied in one step: a new pairing is created only when
/// none is pending (so concurrent hellos for one identifier create one pairing and one
/// notification).
pub fn on_hello(
    record: &mut TrustRecord,
    now: i64,
    ttl_secs: i64,
) -> (NextAction, Option<Started>) {
    match next_action(Some(record), now) {
        NextAction::PairRequired => (NextAction::PairRequired, Some(start(record, now, ttl_secs))),
        other => (other, None),
    }
}

/// The result of checking a code.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CodeCheck {
    /// The code matches the live pending pairing.
    Right,
    /// Wrong; `failures` wrong codes against this pairing so far (all connections).
    Wrong { failures: u32 },
    /// No live pending pairing (expired, never started, or already completed and revoked).
    Expired,
    /// Already paired: a second confirm is refused and trust is kept.
    AlreadyPaired,
}

fn code_matches(record: &TrustRecord, code: &str) -> bool {
    let given = validate::normalize_pairing_code(code);
    let expected = record.pairing_code.as_deref().unwrap_or("");
    !expected.is_empty() && bool::from(given.as_bytes().ct_eq(expected.as_bytes()))
}

/// Check `code` against `record`, counting a wrong one. An expired pairing is cleared.
pub fn check_code(record: &mut TrustRecord, code: &str, now: i64) -> CodeCheck {
    if record.is_paired() {
        return CodeCheck::AlreadyPaired;
    }
    if !record.live_pending(now) {
        if record.pairing_status == PairingStatus::Pending {
            record.clear_pairing();
            record.pairing_status = PairingStatus::Unpaired;
            record.updated_at = now;
        }
        return CodeCheck::Expired;
    }
    if code_matches(record, code) {
        return CodeCheck::Right;
    }
    record.pairing_attempts = record.pairing_attempts.saturating_add(1);
    record.pairing_last_failure_at = Some(now);
    CodeCheck::Wrong {
        failures: record.pairing_attempts,
    }
}

/// How long to wait before answering the `failures`-th wrong code of a pairing.
pub fn wrong_code_delay(failures: u32) -> Duration {
    if failures <= FREE_WRONG_CODES {
        return Duration::ZERO;
    }
    let doublings = (failures - FREE_WRONG_CODES - 1).min(16);
    WRONG_CODE_BASE_DELAY
        .saturating_mul(1u32 << doublings)
        .min(MAX_WRONG_CODE_DELAY)
}

/// The result of completing a pairing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Completed {
    /// Paired; the record holds the new secret (durable once the store says so).
    Paired { secret: String, paired_at: i64 },
    /// The pairing changed since the code was checked (completed elsewhere, expired).
    Lost(PairFailReason),
}

/// Issue the secret for a right `code` and bind `public_key` (the confirming connection's key
/// from its `hello`; `None` binds at first authentication). Re-checks the code, so a pairing
/// completed or expired since [`check_code`] is not completed twice.
pub fn complete(
    record: &mut TrustRecord,
    code: &str,
    public_key: Option<String>,
    now: i64,
) -> Completed {
    if record.is_paired() {
        return Completed::Lost(PairFailReason::InvalidCode);
    }
    if !record.live_pending(now) {
        return Completed::Lost(PairFailReason::Expired);
    }
    if !code_matches(record, code) {
        return Completed::Lost(PairFailReason::InvalidCode);
    }
    let secret = validate::generate_secret();
    record.clear_pairing();
    record.secret = Some(secret.clone());
    record.public_key = public_key;
    record.pairing_status = PairingStatus::Paired;
    record.paired_at = Some(now);
    record.updated_at = now;
    Completed::Paired {
        secret,
        paired_at: now,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pairing_lifecycle() {
        let mut r = TrustRecord::new("alpha", 0);
        assert_eq!(next_action(Some(&r), 0), NextAction::PairRequired);
        assert_eq!(next_action(None, 0), NextAction::PairRequired);
        let (action, started) = on_hello(&mut r, 100, 300);
        assert_eq!(action, NextAction::PairRequired);
        let started = started.unwrap();
        assert_eq!(started.expires_at, 400);
        // A second hello reuses the pending pairing.
        assert_eq!(
            on_hello(&mut r, 150, 300),
            (NextAction::WaitingPairConfirm, None)
        );
        assert_eq!(next_action(Some(&r), 400), NextAction::PairRequired);
        assert_eq!(
            check_code(&mut r, "WRONGCOD", 150),
            CodeCheck::Wrong { failures: 1 }
        );
        assert!(r.live_pending(150), "a wrong code keeps the pairing");
        let code = started.code.to_lowercase();
        assert_eq!(check_code(&mut r, &code, 160), CodeCheck::Right);
        let out = complete(&mut r, &code, Some("key".into()), 160);
        assert!(matches!(out, Completed::Paired { paired_at: 160, .. }));
        assert!(r.is_paired());
        assert_eq!(r.public_key.as_deref(), Some("key"));
        assert!(r.pairing_code.is_none());
        let secret = r.secret.clone();
        assert_eq!(check_code(&mut r, &code, 170), CodeCheck::AlreadyPaired);
        assert_eq!(
            complete(&mut r, &code, None, 170),
            Completed::Lost(PairFailReason::InvalidCode)
        );
        assert_eq!(r.secret, secret, "trust kept");
    }

    #[test]
    fn wrong_codes_never_cancel_and_expiry_clears() {
        let mut r = TrustRecord::new("alpha", 0);
        let started = start(&mut r, 0, 300);
        for i in 1..=50 {
            assert_eq!(check_code(&mut r, "x", 1), CodeCheck::Wrong { failures: i });
        }
        assert_eq!(check_code(&mut r, &started.code, 2), CodeCheck::Right);
        assert_eq!(check_code(&mut r, &started.code, 300), CodeCheck::Expired);
        assert_eq!(r.pairing_status, PairingStatus::Unpaired);
        assert_eq!(
            complete(&mut r, &started.code, None, 301),
            Completed::Lost(PairFailReason::Expired)
        );
    }

    #[test]
    fn wrong_codes_are_slowed() {
        assert_eq!(wrong_code_delay(FREE_WRONG_CODES), Duration::ZERO);
        assert_eq!(
            wrong_code_delay(FREE_WRONG_CODES + 1),
            Duration::from_secs(1)
        );
        assert_eq!(
            wrong_code_delay(FREE_WRONG_CODES + 2),
            Duration::from_secs(2)
        );
        assert_eq!(wrong_code_delay(1000), MAX_WRONG_CODE_DELAY);
    }
}
