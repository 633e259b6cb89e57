//! Durable trust records (PROTOCOL.md §7) and the small enums they hold. A leaf module: every
//! other module that reads or changes trust uses these types; nothing here does I/O.

use serde::{Deserialize, Serialize};
use std::fmt;

yonexus_protocol::wire_enum! {
    /// `pairingStatus`.
    PairingStatus {
        Unpaired = "unpaired",
        Pending = "pending",
        Paired = "paired",
        Revoked = "revoked",
    }
}

#[allow(clippy::derivable_impls)] // the enum comes from a macro
impl Default for PairingStatus {
    fn default() -> Self {
        PairingStatus::Unpaired
    }
}

yonexus_protocol::wire_enum! {
    /// `pairingNotifyStatus`: whether the admin was told the pending code.
    NotifyStatus { Pending = "pending", Sent = "sent", Failed = "failed" }
}

yonexus_protocol::wire_enum! {
    /// A follower's liveness (`status` in its record, `heartbeat_ack`, `status_update`).
    Liveness { Online = "online", Unstable = "unstable", Offline = "offline" }
}

#[allow(clippy::derivable_impls)] // the enum comes from a macro
impl Default for Liveness {
    fn default() -> Self {
        Liveness::Offline
    }
}

/// One follower's durable trust record.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TrustRecord {
    pub identifier: String,
    /// The paired Ed25519 key, canonical standard base64 of the 32 raw bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub public_key: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret: Option<String>,
    #[serde(default)]
    pub pairing_status: PairingStatus,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pairing_code: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pairing_expires_at: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pairing_notified_at: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pairing_notify_status: Option<NotifyStatus>,
    /// Wrong codes entered against the current pending pairing (all connections together);
    /// drives the per-identifier backoff. Wrong codes never cancel a pairing.
    #[serde(default)]
    pub pairing_attempts: u32,
    /// Unix seconds of the last wrong code (for the operator reading the record; the delays
    /// themselves come from `pairing_attempts`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pairing_last_failure_at: Option<i64>,
    /// Read from files written by earlier versions and dropped: only the connection that
    /// confirms the code binds its key now.
    #[serde(default, skip_serializing)]
    pub pending_public_key: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub paired_at: Option<i64>,
    #[serde(default)]
    pub status: Liveness,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_heartbeat_at: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_authenticated_at: Option<i64>,
    pub created_at: i64,
    pub updated_at: i64,
}

impl fmt::Debug for TrustRecord {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Secrets and codes never reach logs, not even through Debug.
        f.debug_struct("TrustRecord")
            .field("identifier", &self.identifier)
            .field("pairing_status", &self.pairing_status)
            .field("has_secret", &self.secret.is_some())
            .field("has_pairing_code", &self.pairing_code.is_some())
            .field("pairing_expires_at", &self.pairing_expires_at)
            .field("status", &self.status)
            .field("last_heartbeat_at", &self.last_heartbeat_at)
            .finish_non_exhaustive()
    }
}

impl TrustRecord {
    pub fn new(identifier: &str, now: i64) -> Self {
        TrustRecord {
            identifier: identifier.to_owned(),
            public_key: None,
            secret: None,
            pairing_status: PairingStatus::Unpaired,
            pairing_code: None,
            pairing_expires_at: None,
            pairing_notified_at: None,
            pairing_notify_status: None,
            pairing_attempts: 0,
            pairing_last_failure_at: None,
            pending_public_key: None,
            paired_at: None,
            status: Liveness::Offline,
            last_heartbeat_at: None,
            last_authenticated_at: None,
            created_at: now,
            updated_at: now,
        }
    }

    /// Paired: has a secret (the public key may be bound at first authentication).
    pub fn is_paired(&self) -> bool {
        self.pairing_status == PairingStatus::Paired && self.secret.is_some()
    }

    /// Paired, or a pairing under way: what a revocation takes away.
    pub fn has_trust_to_revoke(&self) -> bool {
        matches!(
            self.pairing_status,
            PairingStatus::Paired | PairingStatus::Pending
        )
    }

    /// A pending pairing that has not expired at `now`.
    pub fn live_pending(&self, now: i64) -> bool {
        self.pairing_status == PairingStatus::Pending
            && self.pairing_code.is_some()
            && self.pairing_expires_at.is_some_and(|e| now < e)
    }

    /// Forget trust: drop secret, key and any pairing; mark revoked.
    pub fn revoke(&mut self, now: i64) {
        self.secret = None;
        self.public_key = None;
        self.clear_pairing();
        self.pairing_status = PairingStatus::Revoked;
        self.status = Liveness::Offline;
        self.updated_at = now;
    }

    /// Drop the pending pairing fields (code, expiry, notification, attempts).
    pub fn clear_pairing(&mut self) {
        self.pairing_code = None;
        self.pairing_expires_at = None;
        self.pairing_notified_at = None;
        self.pairing_notify_status = None;
        self.pairing_attempts = 0;
        self.pairing_last_failure_at = None;
        self.pending_public_key = None;
    }
}
