//! Authentication of a paired follower (PROTOCOL.md §4.5): the ordered checks of one
//! `auth_request`, as a plain function. What happens after a refusal (counting, slowing,
//! closing — never revoking) is the session's and the [`guard`](crate::guard)'s business.

use crate::guard::FRESHNESS_SECS;
use crate::trust::TrustRecord;
use ed25519_dalek::VerifyingKey;
use std::collections::HashMap;
use std::sync::{LazyLock, Mutex};
use yonexus_protocol::envelope::{AuthFailReason, AuthRequest};
use yonexus_protocol::{signing, validate};

/// The result of an `auth_request`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuthOutcome {
    /// Authenticated. `bind_key` is set when the record had no public key yet (paired without
    /// one) and the request's key must now be stored.
    Accepted {
        bind_key: Option<String>,
    },
    Refused(Refusal),
}

/// Why a proof was refused: the wire reason plus what kind of evidence failed (for metrics).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub reason: AuthFailReason,
    /// `unknown_identifier`, `not_paired`, `malformed_nonce`, `stale`, `future`, `replayed`,
    /// `wrong_key`, `bad_signature`.
    pub kind: &'static str,
}

fn refuse(reason: AuthFailReason, kind: &'static str) -> AuthOutcome {
    AuthOutcome::Refused(Refusal { reason, kind })
}

/// Run the checks in protocol order. `allowed`: the identifier is on the allowlist. `record`:
/// its trust record. `has_session`: this connection said `hello` for this identifier.
/// `replayed`: whether a nonce was already accepted for this identifier recently.
///
/// A replayed proof is refused as `invalid_signature` (our policy; the published protocol
/// revoked trust, which let anyone holding one captured frame force a re-pair).
pub fn check(
    allowed: bool,
    record: Option<&TrustRecord>,
    has_session: bool,
    req: &AuthRequest,
    now: i64,
    replayed: impl FnOnce(&str) -> bool,
) -> AuthOutcome {
    use AuthFailReason::*;
    if !allowed {
        return refuse(UnknownIdentifier, "unknown_identifier");
    }
    let Some(record) = record.filter(|r| r.is_paired() && has_session) else {
        return refuse(NotPaired, "not_paired");
    };
    let Some(secret) = record.secret.as_deref() else {
        return refuse(NotPaired, "not_paired");
    };
    if !validate::nonce(&req.nonce) {
        return refuse(InvalidSignature, "malformed_nonce");
    }
    let skew = req.proof_timestamp.saturating_sub(now);
    if skew <= -FRESHNESS_SECS {
        return refuse(StaleTimestamp, "stale");
    }
    if skew >= FRESHNESS_SECS {
        return refuse(FutureTimestamp, "future");
    }
    if replayed(&req.nonce) {
        return refuse(InvalidSignature, "replayed");
    }
    let request_key = match req.public_key.as_deref().map(signing::decode_public_key) {
        Some(Ok(k)) => Some(k),
        Some(Err(_)) => return refuse(InvalidSignature, "wrong_key"),
        None => None,
    };
    let paired_key = match record.public_key.as_deref().map(signing::decode_public_key) {
        Some(Ok(k)) => Some(k),
        Some(Err(_)) => return refuse(InvalidSignature, "wrong_key"),
        None => None,
    };
    let (key, bind_key) = match (paired_key, request_key) {
        (Some(p), Some(r)) if p != r => return refuse(InvalidSignature, "wrong_key"),
        (Some(p), _) => (p, None),
        (None, Some(r)) => (r, Some(signing::encode_base64(&r))),
        (None, None) => return refuse(InvalidSignature, "wrong_key"),
    };
    let Ok(signature) = signing::decode_signature(&req.signature) else {
        return refuse(InvalidSignature, "bad_signature");
    };
    // A paired key is seen at every login: decompressed once. A key being bound is not kept
    // (it may never prove anything).
    let verifying = if bind_key.is_none() {
        paired_key_point(&key)
    } else {
        signing::verifying_key(&key)
    };
    let valid = verifying.is_some_and(|k| {
        signing::verify_with(&k, secret, &req.nonce, req.proof_timestamp, &signature)
    });
    if !valid {
        return refuse(InvalidSignature, "bad_signature");
    }
    AuthOutcome::Accepted { bind_key }
}

/// Paired keys kept decompressed, at most this many (then the memo starts over).
const KEY_MEMO_CAP: usize = 65_536;

/// The decompressed point of a paired follower's key, from a process-wide memo: decompressing
/// is a square root in the field, about 5 % of the host's CPU per login. The memo maps key
/// bytes to what they always decompress to, so revocation and re-pairing need no invalidation;
/// only keys of paired records enter it (bounded by the allowlist, and by [`KEY_MEMO_CAP`]:
/// about 0.4 KiB each, 29 MiB at most).
fn paired_key_point(raw: &[u8; 32]) -> Option<VerifyingKey> {
    static MEMO: LazyLock<Mutex<HashMap<[u8; 32], VerifyingKey>>> = LazyLock::new(Mutex::default);
    let lock = || MEMO.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(k) = lock().get(raw) {
        return Some(*k);
    }
    let key = signing::verifying_key(raw)?;
    let mut memo = lock();
    if memo.len() >= KEY_MEMO_CAP {
        memo.clear();
    }
    memo.insert(*raw, key);
    Some(key)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::trust::PairingStatus;
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

    fn reason(o: AuthOutcome) -> &'static str {
        match o {
            AuthOutcome::Accepted { .. } => "accepted",
            AuthOutcome::Refused(r) => r.kind,
        }
    }

    #[test]
    fn checks_in_protocol_order() {
        let key = signing::generate_signing_key();
        let rec = paired(&key);
        let n = |i: u8| format!("{:0>24}", i);
        let fresh = |_: &str| false;
        let c = |allowed, rec: Option<&TrustRecord>, session, req: &AuthRequest, now| {
            reason(check(allowed, rec, session, req, now, fresh))
        };
        assert_eq!(
            c(false, Some(&rec), true, &request(&key, &n(1), NOW), NOW),
            "unknown_identifier"
        );
        assert_eq!(
            c(true, Some(&rec), false, &request(&key, &n(1), NOW), NOW),
            "not_paired"
        );
        assert_eq!(
            c(true, None, true, &request(&key, &n(1), NOW), NOW),
            "not_paired"
        );
        assert_eq!(
            c(true, Some(&rec), true, &request(&key, "short", NOW), NOW),
            "malformed_nonce"
        );
        assert_eq!(
            c(true, Some(&rec), true, &request(&key, &n(1), NOW - 10), NOW),
            "stale"
        );
        assert_eq!(
            c(true, Some(&rec), true, &request(&key, &n(1), NOW + 10), NOW),
            "future"
        );
        assert_eq!(
            c(true, Some(&rec), true, &request(&key, &n(1), NOW - 9), NOW),
            "accepted"
        );
        let replay = check(
            true,
            Some(&rec),
            true,
            &request(&key, &n(1), NOW),
            NOW,
            |_| true,
        );
        assert_eq!(
            replay,
            AuthOutcome::Refused(Refusal {
                reason: AuthFailReason::InvalidSignature,
                kind: "replayed"
            })
        );
        let other = signing::generate_signing_key();
        assert_eq!(
            c(true, Some(&rec), true, &request(&other, &n(2), NOW), NOW),
            "wrong_key"
        );
        let mut bad = request(&key, &n(3), NOW);
        bad.signature = signing::sign(&key, "wrong-secret", &n(3), NOW);
        assert_eq!(c(true, Some(&rec), true, &bad, NOW), "bad_signature");
    }

    #[test]
    fn key_is_bound_on_first_auth_when_paired_without_one() {
        let key = signing::generate_signing_key();
        let mut rec = paired(&key);
        rec.public_key = None;
        let out = check(
            true,
            Some(&rec),
            true,
            &request(&key, &format!("{:0>24}", 7), NOW),
            NOW,
            |_| false,
        );
        assert!(matches!(out, AuthOutcome::Accepted { bind_key: Some(_) }));
    }
}
