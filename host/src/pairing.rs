//! Pairing (PROTOCOL.md §4.3–4.4): what `hello` leads to, starting a pending pairing, and
//! checking a `pair_confirm` in constant time against the attempt limit and TTL.
//!
//! These are plain functions over a [`TrustRecord`]; the session applies them inside the store
//! lock and persists before replying.

use crate::store::{NotifyStatus, PairingStatus, TrustRecord};
use subtle::ConstantTimeEq;
use yonexus_protocol::envelope::{NextAction, PairFailReason};
use yonexus_protocol::validate;

/// What a `hello` from an allowed identifier leads to.
pub fn next_action(record: Option<&TrustRecord>, now: i64) -> NextAction {
    match record {
        Some(r) if r.is_paired() => NextAction::AuthRequired,
        Some(r) if r.live_pending(now) => NextAction::WaitingPairConfirm,
        _ => NextAction::PairRequired,
    }
}

/// Start a new pending pairing on `record` with a fresh code. Returns the expiry.
pub fn start(record: &mut TrustRecord, now: i64, ttl_secs: i64, public_key: Option<String>) -> i64 {
    record.clear_pairing();
    record.secret = None;
    record.pairing_status = PairingStatus::Pending;
    record.pairing_code = Some(validate::generate_pairing_code());
    record.pairing_expires_at = Some(now + ttl_secs);
    record.pairing_notify_status = Some(NotifyStatus::Pending);
    record.pending_public_key = public_key;
    record.updated_at = now;
    now + ttl_secs
}

/// Remember the public key a follower announced while its pairing is pending.
pub fn note_public_key(record: &mut TrustRecord, public_key: Option<String>) {
    if public_key.is_some() {
        record.pending_public_key = public_key;
    }
}

/// The result of a `pair_confirm`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConfirmOutcome {
    /// Paired; the record holds the new secret (durable only after persist).
    Paired {
        secret: String,
        paired_at: i64,
    },
    Failed(PairFailReason),
}

/// Check a `pair_confirm` code against `record` and apply the result to it.
pub fn confirm(
    record: &mut TrustRecord,
    code: &str,
    public_key: Option<String>,
    now: i64,
    max_attempts: u32,
) -> ConfirmOutcome {
    if record.is_paired() {
        // A second confirm after success is refused; trust is kept.
        return ConfirmOutcome::Failed(PairFailReason::InvalidCode);
    }
    let (Some(expected), Some(expires_at)) =
        (record.pairing_code.clone(), record.pairing_expires_at)
    else {
        return ConfirmOutcome::Failed(PairFailReason::Expired);
    };
    if record.pairing_status != PairingStatus::Pending {
        return ConfirmOutcome::Failed(PairFailReason::Expired);
    }
    if now >= expires_at {
        record.clear_pairing();
        record.pairing_status = PairingStatus::Unpaired;
        record.updated_at = now;
        return ConfirmOutcome::Failed(PairFailReason::Expired);
    }
    let given = validate::normalize_pairing_code(code);
    let matches: bool = given.as_bytes().ct_eq(expected.as_bytes()).into();
    if !matches {
        record.pairing_attempts += 1;
        if record.pairing_attempts >= max_attempts {
            record.clear_pairing();
            record.pairing_status = PairingStatus::Unpaired;
        }
        record.updated_at = now;
        return ConfirmOutcome::Failed(PairFailReason::InvalidCode);
    }
    let secret = validate::generate_secret();
    let key = public_key.or_else(|| record.pending_public_key.clone());
    record.clear_pairing();
    record.secret = Some(secret.clone());
    record.public_key = key;
    record.pairing_status = PairingStatus::Paired;
    record.paired_at = Some(now);
    record.updated_at = now;
    ConfirmOutcome::Paired {
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
        let exp = start(&mut r, 100, 300, Some("key".into()));
        assert_eq!(exp, 400);
        assert_eq!(next_action(Some(&r), 399), NextAction::WaitingPairConfirm);
        assert_eq!(next_action(Some(&r), 400), NextAction::PairRequired);
        let code = r.pairing_code.clone().unwrap();
        assert_eq!(
            confirm(&mut r, "WRONGCOD", None, 150, 5),
            ConfirmOutcome::Failed(PairFailReason::InvalidCode)
        );
        assert!(r.live_pending(150), "a wrong code keeps the pairing");
        let out = confirm(&mut r, &code.to_lowercase(), None, 160, 5);
        assert!(matches!(out, ConfirmOutcome::Paired { paired_at: 160, .. }));
        assert!(r.is_paired());
        assert_eq!(r.public_key.as_deref(), Some("key"));
        assert!(r.pairing_code.is_none());
        assert_eq!(next_action(Some(&r), 170), NextAction::AuthRequired);
        let secret = r.secret.clone();
        assert_eq!(
            confirm(&mut r, &code, None, 170, 5),
            ConfirmOutcome::Failed(PairFailReason::InvalidCode)
        );
        assert_eq!(r.secret, secret, "trust kept");
    }

    #[test]
    fn expiry_and_attempt_limit() {
        let mut r = TrustRecord::new("alpha", 0);
        start(&mut r, 0, 300, None);
        let code = r.pairing_code.clone().unwrap();
        assert_eq!(
            confirm(&mut r, &code, None, 300, 5),
            ConfirmOutcome::Failed(PairFailReason::Expired)
        );
        assert_eq!(
            confirm(&mut r, &code, None, 301, 5),
            ConfirmOutcome::Failed(PairFailReason::Expired)
        );

        start(&mut r, 0, 300, None);
        let code = r.pairing_code.clone().unwrap();
        for _ in 0..3 {
            assert_eq!(
                confirm(&mut r, "x", None, 1, 3),
                ConfirmOutcome::Failed(PairFailReason::InvalidCode)
            );
        }
        assert_eq!(
            confirm(&mut r, &code, None, 2, 3),
            ConfirmOutcome::Failed(PairFailReason::Expired),
            "cancelled after the limit"
        );
    }
}
