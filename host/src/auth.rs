//! Authentication of a paired follower (PROTOCOL.md §4.5): the ordered checks, and the
//! in-memory nonce and attempt windows kept per identifier.

use crate::store::TrustRecord;
use std::collections::VecDeque;
use yonexus_protocol::envelope::{AuthFailReason, AuthRequest, RePairReason};
use yonexus_protocol::{signing, validate};

/// How many accepted nonces are remembered per identifier.
pub const NONCE_WINDOW: usize = 10;
/// Attempts allowed within [`ATTEMPT_WINDOW_SECS`] before trust is revoked.
pub const ATTEMPT_LIMIT: usize = 10;
pub const ATTEMPT_WINDOW_SECS: i64 = 10;
/// `|proofTimestamp - now|` must be below this.
pub const FRESHNESS_SECS: i64 = 10;

/// Per-identifier memory of recent nonces and attempts (never persisted).
#[derive(Debug, Default, Clone)]
pub struct AuthWindows {
    nonces: VecDeque<String>,
    attempts: VecDeque<i64>,
}

impl AuthWindows {
    /// Record an attempt at `now`; true when this makes [`ATTEMPT_LIMIT`] or more within the window.
    fn record_attempt(&mut self, now: i64) -> bool {
        while self
            .attempts
            .front()
            .is_some_and(|&t| now - t >= ATTEMPT_WINDOW_SECS)
        {
            self.attempts.pop_front();
        }
        self.attempts.push_back(now);
        if self.attempts.len() > ATTEMPT_LIMIT {
            self.attempts.pop_front();
        }
        self.attempts.len() >= ATTEMPT_LIMIT
    }

    fn seen(&self, nonce: &str) -> bool {
        self.nonces.iter().any(|n| n == nonce)
    }

    fn remember(&mut self, nonce: &str) {
        self.nonces.push_back(nonce.to_owned());
        while self.nonces.len() > NONCE_WINDOW {
            self.nonces.pop_front();
        }
    }
}

/// The result of an `auth_request`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuthOutcome {
    /// Authenticated. `bind_key` is set when the record had no public key yet (paired without
    /// one) and the request's key must now be stored.
    Accepted {
        bind_key: Option<String>,
    },
    Failed(AuthFailReason),
    /// Trust must be revoked; the follower pairs again.
    RePair(RePairReason),
}

/// Run the checks in protocol order.
///
/// `allowed`: identifier on the allowlist. `record`: its trust record. `has_session`: this
/// connection said `hello` for this identifier.
pub fn check(
    allowed: bool,
    record: Option<&TrustRecord>,
    has_session: bool,
    windows: &mut AuthWindows,
    req: &AuthRequest,
    now: i64,
) -> AuthOutcome {
    use AuthFailReason::*;
    if !allowed {
        return AuthOutcome::Failed(UnknownIdentifier);
    }
    let Some(record) = record.filter(|r| r.is_paired() && has_session) else {
        return AuthOutcome::Failed(NotPaired);
    };
    let Some(secret) = record.secret.as_deref() else {
        return AuthOutcome::Failed(NotPaired);
    };
    if windows.record_attempt(now) {
        return AuthOutcome::RePair(RePairReason::RateLimited);
    }
    if !validate::nonce(&req.nonce) {
        return AuthOutcome::Failed(InvalidSignature);
    }
    let skew = req.proof_timestamp.saturating_sub(now);
    if skew <= -FRESHNESS_SECS {
        return AuthOutcome::Failed(StaleTimestamp);
    }
    if skew >= FRESHNESS_SECS {
        return AuthOutcome::Failed(FutureTimestamp);
    }
    if windows.seen(&req.nonce) {
        return AuthOutcome::RePair(RePairReason::NonceCollision);
    }
    let request_key = match req.public_key.as_deref().map(signing::decode_public_key) {
        Some(Ok(k)) => Some(k),
        Some(Err(_)) => return AuthOutcome::Failed(InvalidSignature),
        None => None,
    };
    let paired_key = match record.public_key.as_deref().map(signing::decode_public_key) {
        Some(Ok(k)) => Some(k),
        Some(Err(_)) => return AuthOutcome::Failed(InvalidSignature),
        None => None,
    };
    let (key, bind_key) = match (paired_key, request_key) {
        (Some(p), Some(r)) if p != r => return AuthOutcome::Failed(InvalidSignature),
        (Some(p), _) => (p, None),
        (None, Some(r)) => (r, Some(signing::encode_base64(&r))),
        (None, None) => return AuthOutcome::Failed(InvalidSignature),
    };
    let Ok(signature) = signing::decode_signature(&req.signature) else {
        return AuthOutcome::Failed(InvalidSignature);
    };
    if !signing::verify(&key, secret, &req.nonce, req.proof_timestamp, &signature) {
        return AuthOutcome::Failed(InvalidSignature);
    }
    windows.remember(&req.nonce);
    AuthOutcome::Accepted { bind_key }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::PairingStatus;
    use ed25519_dalek::SigningKey;

    const NOW: i64 = 1_700_000_000;

    fn paired(key: &SigningKey) -> TrustRecord {
        let mut r = TrustRecord::new("alpha", NOW);
        r.secret = Some("secret".into());
        r.public_key = Some(signing::encode_base64(&key.verifying_key().to_bytes()));
        r.pairing_status = PairingStatus::Paired;
        r
    }

    fn request(key: &SigningKey, nonce: &str, ts: i64) -> AuthRequest {
        AuthRequest {
            identifier: "alpha".into(),
            nonce: nonce.into(),
            proof_timestamp: ts,
            signature: signing::sign(key, "secret", nonce, ts),
            public_key: Some(signing::encode_base64(&key.verifying_key().to_bytes())),
        }
    }

    #[test]
    fn checks_in_protocol_order() {
        let key = signing::generate_signing_key();
        let rec = paired(&key);
        let mut w = AuthWindows::default();
        let n = |i: u8| format!("{:0>24}", i);
        let ok = AuthOutcome::Accepted { bind_key: None };
        assert_eq!(
            check(
                false,
                Some(&rec),
                true,
                &mut w,
                &request(&key, &n(1), NOW),
                NOW
            ),
            AuthOutcome::Failed(AuthFailReason::UnknownIdentifier)
        );
        assert_eq!(
            check(
                true,
                Some(&rec),
                false,
                &mut w,
                &request(&key, &n(1), NOW),
                NOW
            ),
            AuthOutcome::Failed(AuthFailReason::NotPaired)
        );
        assert_eq!(
            check(true, None, true, &mut w, &request(&key, &n(1), NOW), NOW),
            AuthOutcome::Failed(AuthFailReason::NotPaired)
        );
        assert_eq!(
            check(
                true,
                Some(&rec),
                true,
                &mut w,
                &request(&key, "short", NOW),
                NOW
            ),
            AuthOutcome::Failed(AuthFailReason::InvalidSignature)
        );
        assert_eq!(
            check(
                true,
                Some(&rec),
                true,
                &mut w,
                &request(&key, &n(1), NOW - 10),
                NOW
            ),
            AuthOutcome::Failed(AuthFailReason::StaleTimestamp)
        );
        assert_eq!(
            check(
                true,
                Some(&rec),
                true,
                &mut w,
                &request(&key, &n(1), NOW + 10),
                NOW
            ),
            AuthOutcome::Failed(AuthFailReason::FutureTimestamp)
        );
        let mut w = AuthWindows::default();
        assert_eq!(
            check(
                true,
                Some(&rec),
                true,
                &mut w,
                &request(&key, &n(1), NOW - 9),
                NOW
            ),
            ok
        );
        assert_eq!(
            check(
                true,
                Some(&rec),
                true,
                &mut w,
                &request(&key, &n(1), NOW + 20),
                NOW + 20
            ),
            AuthOutcome::RePair(RePairReason::NonceCollision)
        );
        let other = signing::generate_signing_key();
        assert_eq!(
            check(
                true,
                Some(&rec),
                true,
                &mut w,
                &request(&other, &n(2), NOW + 40),
                NOW + 40
            ),
            AuthOutcome::Failed(AuthFailReason::InvalidSignature)
        );
        let mut bad = request(&key, &n(3), NOW + 60);
        bad.signature = signing::sign(&key, "wrong-secret", &n(3), NOW + 60);
        assert_eq!(
            check(true, Some(&rec), true, &mut w, &bad, NOW + 60),
            AuthOutcome::Failed(AuthFailReason::InvalidSignature)
        );
    }

    #[test]
    fn ten_attempts_in_ten_seconds_force_a_re_pair() {
        let key = signing::generate_signing_key();
        let rec = paired(&key);
        let mut w = AuthWindows::default();
        for i in 0..9 {
            let out = check(
                true,
                Some(&rec),
                true,
                &mut w,
                &request(&key, "bad", NOW),
                NOW + i / 2,
            );
            assert_eq!(out, AuthOutcome::Failed(AuthFailReason::InvalidSignature));
        }
        let out = check(
            true,
            Some(&rec),
            true,
            &mut w,
            &request(&key, "bad", NOW),
            NOW + 5,
        );
        assert_eq!(out, AuthOutcome::RePair(RePairReason::RateLimited));
        // Spread out, attempts never pile up.
        let mut w = AuthWindows::default();
        for i in 0..30 {
            let out = check(
                true,
                Some(&rec),
                true,
                &mut w,
                &request(&key, "bad", NOW),
                NOW + i * 2,
            );
            assert_eq!(out, AuthOutcome::Failed(AuthFailReason::InvalidSignature));
        }
    }

    #[test]
    fn key_is_bound_on_first_auth_when_paired_without_one() {
        let key = signing::generate_signing_key();
        let mut rec = paired(&key);
        rec.public_key = None;
        let mut w = AuthWindows::default();
        let out = check(
            true,
            Some(&rec),
            true,
            &mut w,
            &request(&key, &format!("{:0>24}", 7), NOW),
            NOW,
        );
        assert!(matches!(out, AuthOutcome::Accepted { bind_key: Some(_) }));
    }
}
