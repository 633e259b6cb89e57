//! The control envelope `builtin::{"type","requestId","timestamp","payload"}` and its messages.
//!
//! Decoding is strict about what the protocol needs (a string `type`, a payload object with the
//! required fields of the right JSON type) and lenient about everything else (unknown payload
//! fields are ignored). A key repeated in any object is an error ([`crate::json`]), and so is a
//! `requestId` over [`MAX_REQUEST_ID_LEN`] bytes. Every decode failure is a [`DecodeError`] whose text is fit to send back in
//! an `error{code:"MALFORMED_MESSAGE"}` frame.

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::fmt;

/// The longest `requestId` accepted, in bytes. The protocol sets no limit; a request id is an
/// opaque tag the reply echoes (a UUID is 36 bytes), and echoing kilobytes back would let a peer
/// grow every reply to its frame limit.
pub const MAX_REQUEST_ID_LEN: usize = 128;

/// A decoded control envelope.
#[derive(Debug, Clone, PartialEq)]
pub struct Envelope {
    /// Echoed in the reply when present.
    pub request_id: Option<String>,
    /// The sender's clock, UTC unix seconds (informational).
    pub timestamp: Option<i64>,
    pub message: Message,
}

crate::wire_enum! {
    /// The `type` of a control envelope (an unknown type is a decode error, so no catch-all).
    MessageType {
        Hello = "hello",
        PairConfirm = "pair_confirm",
        AuthRequest = "auth_request",
        Heartbeat = "heartbeat",
        HelloAck = "hello_ack",
        PairRequest = "pair_request",
        PairSuccess = "pair_success",
        PairFailed = "pair_failed",
        AuthSuccess = "auth_success",
        AuthFailed = "auth_failed",
        RePairRequired = "re_pair_required",
        HeartbeatAck = "heartbeat_ack",
        StatusUpdate = "status_update",
        DisconnectNotice = "disconnect_notice",
        Error = "error",
    }
}

impl MessageType {
    /// Whether followers send this type (the rest are sent by the host).
    pub fn from_follower(self) -> bool {
        matches!(
            self,
            MessageType::Hello
                | MessageType::PairConfirm
                | MessageType::AuthRequest
                | MessageType::Heartbeat
        )
    }
}

/// Every control message type of protocol v1, follower → host and host → follower.
#[derive(Debug, Clone, PartialEq)]
pub enum Message {
    Hello(Hello),
    PairConfirm(PairConfirm),
    AuthRequest(AuthRequest),
    Heartbeat(Heartbeat),
    HelloAck(HelloAck),
    PairRequest(PairRequest),
    PairSuccess(PairSuccess),
    PairFailed(PairFailed),
    AuthSuccess(AuthSuccess),
    AuthFailed(AuthFailed),
    RePairRequired(RePairRequired),
    HeartbeatAck(HeartbeatAck),
    StatusUpdate(StatusUpdate),
    DisconnectNotice(DisconnectNotice),
    Error(ErrorPayload),
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Hello {
    pub identifier: String,
    /// The string `"1"` or the number `1`; anything else is unsupported.
    pub protocol_version: Value,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub public_key: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub has_secret: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub has_key_pair: Option<bool>,
}

impl Hello {
    /// Whether the follower speaks a protocol version this crate supports.
    pub fn version_supported(&self) -> bool {
        match &self.protocol_version {
            Value::String(s) => s.trim() == crate::PROTOCOL_VERSION,
            Value::Number(n) => n.as_u64() == Some(1),
            _ => false,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PairConfirm {
    pub identifier: String,
    pub pairing_code: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AuthRequest {
    pub identifier: String,
    pub nonce: String,
    pub proof_timestamp: i64,
    pub signature: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub public_key: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Heartbeat {
    pub identifier: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<String>,
}

crate::wire_enum! {
    /// `hello_ack.nextAction`.
    NextAction {
        PairRequired = "pair_required",
        WaitingPairConfirm = "waiting_pair_confirm",
        AuthRequired = "auth_required",
        Rejected = "rejected",
    } unknown Unknown
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HelloAck {
    pub identifier: String,
    pub next_action: NextAction,
}

crate::wire_enum! {
    /// Whether the admin was told the pairing code.
    AdminNotification { Sent = "sent", Failed = "failed" } unknown Unknown
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PairRequest {
    pub identifier: String,
    pub expires_at: i64,
    pub ttl_seconds: i64,
    pub admin_notification: AdminNotification,
    /// Always `out_of_band`: the code never travels on the socket.
    pub code_delivery: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PairSuccess {
    pub identifier: String,
    pub secret: String,
    pub paired_at: i64,
}

crate::wire_enum! {
    /// `pair_failed.reason`.
    PairFailReason {
        IdentifierNotAllowed = "identifier_not_allowed",
        InvalidCode = "invalid_code",
        Expired = "expired",
        AdminNotificationFailed = "admin_notification_failed",
        InternalError = "internal_error",
    } unknown Unknown
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PairFailed {
    pub identifier: String,
    pub reason: PairFailReason,
    /// **(ours)** With `invalid_code`: wrong codes this connection may still send before the
    /// host closes it (the pending pairing itself stays valid until it expires). Followers that
    /// do not know the field ignore it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attempts_left: Option<u32>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AuthSuccess {
    pub identifier: String,
    pub authenticated_at: i64,
    pub status: String,
}

crate::wire_enum! {
    /// `auth_failed.reason`.
    AuthFailReason {
        UnknownIdentifier = "unknown_identifier",
        NotPaired = "not_paired",
        InvalidSignature = "invalid_signature",
        InvalidSecret = "invalid_secret",
        StaleTimestamp = "stale_timestamp",
        FutureTimestamp = "future_timestamp",
    } unknown Unknown
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AuthFailed {
    pub identifier: String,
    pub reason: AuthFailReason,
}

crate::wire_enum! {
    /// `re_pair_required.reason`.
    RePairReason {
        NonceCollision = "nonce_collision",
        RateLimited = "rate_limited",
    } unknown Unknown
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RePairRequired {
    pub identifier: String,
    pub reason: RePairReason,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HeartbeatAck {
    pub identifier: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StatusUpdate {
    pub identifier: String,
    pub status: String,
    #[serde(default)]
    pub reason: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DisconnectNotice {
    pub identifier: String,
    #[serde(default)]
    pub reason: String,
}

crate::wire_enum! {
    /// Error codes of `error` frames.
    ErrorCode {
        MalformedMessage = "MALFORMED_MESSAGE",
        IdentifierNotAllowed = "IDENTIFIER_NOT_ALLOWED",
        UnsupportedProtocolVersion = "UNSUPPORTED_PROTOCOL_VERSION",
        AuthFailed = "AUTH_FAILED",
        RuleNotFound = "RULE_NOT_FOUND",
        TargetOffline = "TARGET_OFFLINE",
        HandlerBusy = "HANDLER_BUSY",
        HandlerFailed = "HANDLER_FAILED",
        RateLimited = "RATE_LIMITED",
        MessageTooLarge = "MESSAGE_TOO_LARGE",
    } unknown Unknown
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ErrorPayload {
    pub code: ErrorCode,
    pub message: String,
}

/// Why a control frame could not be decoded. The display text is sent to the peer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DecodeError {
    /// Not JSON, not an object, missing/mistyped `type`, missing or mistyped payload fields.
    Malformed(String),
    /// A well-formed envelope with a `type` this protocol does not know.
    UnsupportedType(String),
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DecodeError::Malformed(why) => f.write_str(why),
            DecodeError::UnsupportedType(t) => write!(f, "Unsupported builtin type: {t}"),
        }
    }
}

impl std::error::Error for DecodeError {}

impl Message {
    /// The kind of this message.
    pub fn kind(&self) -> MessageType {
        match self {
            Message::Hello(_) => MessageType::Hello,
            Message::PairConfirm(_) => MessageType::PairConfirm,
            Message::AuthRequest(_) => MessageType::AuthRequest,
            Message::Heartbeat(_) => MessageType::Heartbeat,
            Message::HelloAck(_) => MessageType::HelloAck,
            Message::PairRequest(_) => MessageType::PairRequest,
            Message::PairSuccess(_) => MessageType::PairSuccess,
            Message::PairFailed(_) => MessageType::PairFailed,
            Message::AuthSuccess(_) => MessageType::AuthSuccess,
            Message::AuthFailed(_) => MessageType::AuthFailed,
            Message::RePairRequired(_) => MessageType::RePairRequired,
            Message::HeartbeatAck(_) => MessageType::HeartbeatAck,
            Message::StatusUpdate(_) => MessageType::StatusUpdate,
            Message::DisconnectNotice(_) => MessageType::DisconnectNotice,
            Message::Error(_) => MessageType::Error,
        }
    }

    /// The wire `type` of this message.
    pub fn type_name(&self) -> &'static str {
        self.kind().as_str()
    }

    fn payload_value(&self) -> Result<Value, serde_json::Error> {
        match self {
            Message::Hello(p) => serde_json::to_value(p),
            Message::PairConfirm(p) => serde_json::to_value(p),
            Message::AuthRequest(p) => serde_json::to_value(p),
            Message::Heartbeat(p) => serde_json::to_value(p),
            Message::HelloAck(p) => serde_json::to_value(p),
            Message::PairRequest(p) => serde_json::to_value(p),
            Message::PairSuccess(p) => serde_json::to_value(p),
            Message::PairFailed(p) => serde_json::to_value(p),
            Message::AuthSuccess(p) => serde_json::to_value(p),
            Message::AuthFailed(p) => serde_json::to_value(p),
            Message::RePairRequired(p) => serde_json::to_value(p),
            Message::HeartbeatAck(p) => serde_json::to_value(p),
            Message::StatusUpdate(p) => serde_json::to_value(p),
            Message::DisconnectNotice(p) => serde_json::to_value(p),
            Message::Error(p) => serde_json::to_value(p),
        }
    }
}

impl Envelope {
    /// An envelope with no request id, stamped with `timestamp`.
    pub fn new(message: Message, timestamp: i64) -> Self {
        Envelope {
            request_id: None,
            timestamp: Some(timestamp),
            message,
        }
    }

    /// Encode as the JSON object (without the `builtin::` prefix).
    pub fn to_json(&self) -> String {
        let mut obj = Map::new();
        obj.insert(
            "type".into(),
            Value::String(self.message.type_name().into()),
        );
        if let Some(id) = &self.request_id {
            obj.insert("requestId".into(), Value::String(id.clone()));
        }
        if let Some(ts) = self.timestamp {
            obj.insert("timestamp".into(), Value::from(ts));
        }
        // Serialising our own plain structs into a Value cannot fail (no maps with non-string
        // keys, no custom serialisers); fall back to an empty payload rather than panic.
        let payload = self
            .message
            .payload_value()
            .unwrap_or_else(|_| Value::Object(Map::new()));
        obj.insert("payload".into(), payload);
        Value::Object(obj).to_string()
    }

    /// Encode as a complete text frame: `builtin::{...}`.
    pub fn to_frame(&self) -> String {
        let json = self.to_json();
        let mut out = String::with_capacity(json.len() + 9);
        out.push_str(crate::BUILTIN_RULE);
        out.push_str(crate::SEPARATOR);
        out.push_str(&json);
        out
    }

    /// Decode the JSON text that follows `builtin::`.
    pub fn decode(json: &str) -> Result<Envelope, DecodeError> {
        let value: Value = crate::json::parse(json).map_err(|e| {
            DecodeError::Malformed(format!("invalid JSON in builtin envelope: {e}"))
        })?;
        let Value::Object(mut obj) = value else {
            return Err(DecodeError::Malformed(
                "builtin envelope must be a JSON object".into(),
            ));
        };
        let type_name = match obj.get("type") {
            Some(Value::String(t)) => t.clone(),
            Some(_) => {
                return Err(DecodeError::Malformed(
                    "envelope field 'type' must be a string".into(),
                ))
            }
            None => {
                return Err(DecodeError::Malformed(
                    "envelope is missing field 'type'".into(),
                ))
            }
        };
        let request_id = match obj.get("requestId") {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) if s.len() <= MAX_REQUEST_ID_LEN => Some(s.clone()),
            Some(Value::String(_)) => {
                return Err(DecodeError::Malformed(format!(
                    "envelope field 'requestId' is longer than {MAX_REQUEST_ID_LEN} bytes"
                )))
            }
            Some(_) => {
                return Err(DecodeError::Malformed(
                    "envelope field 'requestId' must be a string".into(),
                ))
            }
        };
        let timestamp = match obj.get("timestamp") {
            None | Some(Value::Null) => None,
            Some(v) => Some(v.as_i64().ok_or_else(|| {
                DecodeError::Malformed(
                    "envelope field 'timestamp' must be an integer (unix seconds)".into(),
                )
            })?),
        };
        let payload = obj.remove("payload");
        let message = decode_message(&type_name, payload)?;
        Ok(Envelope {
            request_id,
            timestamp,
            message,
        })
    }
}

fn payload<T: DeserializeOwned>(type_name: &str, payload: Option<Value>) -> Result<T, DecodeError> {
    match payload {
        None | Some(Value::Null) => Err(DecodeError::Malformed(format!(
            "'{type_name}' requires a payload object"
        ))),
        Some(v @ Value::Object(_)) => serde_json::from_value(v)
            .map_err(|e| DecodeError::Malformed(format!("invalid '{type_name}' payload: {e}"))),
        Some(_) => Err(DecodeError::Malformed(format!(
            "'{type_name}' payload must be a JSON object"
        ))),
    }
}

fn decode_message(type_name: &str, p: Option<Value>) -> Result<Message, DecodeError> {
    let Some(kind) = MessageType::from_wire(type_name) else {
        // Bound what we echo back: the type came from the peer.
        let shown: String = type_name.chars().take(64).collect();
        return Err(DecodeError::UnsupportedType(shown));
    };
    let t = kind.as_str();
    Ok(match kind {
        MessageType::Hello => Message::Hello(payload(t, p)?),
        MessageType::PairConfirm => Message::PairConfirm(payload(t, p)?),
        MessageType::AuthRequest => Message::AuthRequest(payload(t, p)?),
        MessageType::Heartbeat => Message::Heartbeat(payload(t, p)?),
        MessageType::HelloAck => Message::HelloAck(payload(t, p)?),
        MessageType::PairRequest => Message::PairRequest(payload(t, p)?),
        MessageType::PairSuccess => Message::PairSuccess(payload(t, p)?),
        MessageType::PairFailed => Message::PairFailed(payload(t, p)?),
        MessageType::AuthSuccess => Message::AuthSuccess(payload(t, p)?),
        MessageType::AuthFailed => Message::AuthFailed(payload(t, p)?),
        MessageType::RePairRequired => Message::RePairRequired(payload(t, p)?),
        MessageType::HeartbeatAck => Message::HeartbeatAck(payload(t, p)?),
        MessageType::StatusUpdate => Message::StatusUpdate(payload(t, p)?),
        MessageType::DisconnectNotice => Message::DisconnectNotice(payload(t, p)?),
        MessageType::Error => Message::Error(payload(t, p)?),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn a_repeated_key_is_malformed_not_last_one_wins() {
        for text in [
            r#"{"type":"heartbeat","type":"hello","payload":{"identifier":"a","protocolVersion":"1"}}"#,
            r#"{"type":"hello","payload":{"identifier":"a","identifier":"b","protocolVersion":"1"}}"#,
            r#"{"type":"hello","requestId":"1","requestId":"2","payload":{"identifier":"a","protocolVersion":"1"}}"#,
        ] {
            match Envelope::decode(text) {
                Err(DecodeError::Malformed(why)) => {
                    assert!(why.contains("duplicate key"), "{why}")
                }
                other => panic!("{text}: {other:?}"),
            }
        }
    }

    #[test]
    fn a_request_id_is_at_most_128_bytes() {
        let with = |rid: &str| {
            Envelope::decode(&format!(
                r#"{{"type":"heartbeat","requestId":"{rid}","payload":{{"identifier":"a","status":"alive"}}}}"#
            ))
        };
        let longest = "r".repeat(MAX_REQUEST_ID_LEN);
        assert_eq!(
            with(&longest).unwrap().request_id.as_deref(),
            Some(&*longest)
        );
        match with(&"r".repeat(MAX_REQUEST_ID_LEN + 1)) {
            Err(DecodeError::Malformed(why)) => {
                assert_eq!(why, "envelope field 'requestId' is longer than 128 bytes")
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn decodes_hello_with_string_or_number_version_and_ignores_unknown_fields() {
        let e = Envelope::decode(
            r#"{"type":"hello","requestId":"r1","timestamp":1700000000,"payload":{"identifier":"alpha","protocolVersion":"1","publicKey":"k","hasSecret":false,"extra":[1,2]}}"#,
        )
        .unwrap();
        assert_eq!(e.request_id.as_deref(), Some("r1"));
        assert_eq!(e.timestamp, Some(1_700_000_000));
        let Message::Hello(h) = e.message else {
            panic!("not hello")
        };
        assert!(h.version_supported());
        assert_eq!(h.public_key.as_deref(), Some("k"));
        let e = Envelope::decode(
            r#"{"type":"hello","payload":{"identifier":"a","protocolVersion":1}}"#,
        )
        .unwrap();
        let Message::Hello(h) = e.message else {
            panic!("not hello")
        };
        assert!(h.version_supported());
        let e = Envelope::decode(
            r#"{"type":"hello","payload":{"identifier":"a","protocolVersion":"2"}}"#,
        )
        .unwrap();
        let Message::Hello(h) = e.message else {
            panic!("not hello")
        };
        assert!(!h.version_supported());
    }

    #[test]
    fn malformed_inputs_are_decode_errors() {
        for (text, needle) in [
            ("not json", "invalid JSON"),
            ("[1,2]", "must be a JSON object"),
            (r#"{"payload":{}}"#, "missing field 'type'"),
            (r#"{"type":5}"#, "'type' must be a string"),
            (r#"{"type":"hello"}"#, "requires a payload"),
            (r#"{"type":"hello","payload":"x"}"#, "must be a JSON object"),
            (
                r#"{"type":"pair_confirm","payload":{"identifier":"a","pairingCode":7}}"#,
                "invalid 'pair_confirm' payload",
            ),
            (
                r#"{"type":"auth_request","payload":{"identifier":"a","nonce":"n","proofTimestamp":1.5,"signature":"s"}}"#,
                "invalid 'auth_request' payload",
            ),
            (
                r#"{"type":"heartbeat","timestamp":"x","payload":{"identifier":"a"}}"#,
                "'timestamp' must be an integer",
            ),
        ] {
            let err = Envelope::decode(text).unwrap_err();
            assert!(matches!(err, DecodeError::Malformed(_)), "{text}");
            assert!(err.to_string().contains(needle), "{text}: {err}");
        }
        let err = Envelope::decode(r#"{"type":"bogus","payload":{}}"#).unwrap_err();
        assert_eq!(err.to_string(), "Unsupported builtin type: bogus");
    }

    #[test]
    fn encodes_wire_names() {
        let e = Envelope {
            request_id: Some("q".into()),
            timestamp: Some(5),
            message: Message::HelloAck(HelloAck {
                identifier: "a".into(),
                next_action: NextAction::WaitingPairConfirm,
            }),
        };
        let v: Value = serde_json::from_str(&e.to_json()).unwrap();
        assert_eq!(v["type"], "hello_ack");
        assert_eq!(v["requestId"], "q");
        assert_eq!(v["payload"]["nextAction"], "waiting_pair_confirm");
        let e = Envelope::new(
            Message::Error(ErrorPayload {
                code: ErrorCode::RuleNotFound,
                message: "m".into(),
            }),
            1,
        );
        assert!(e.to_frame().starts_with("builtin::{"));
        assert!(e.to_json().contains(r#""code":"RULE_NOT_FOUND""#));
    }

    fn arb_message() -> impl Strategy<Value = Message> {
        let s = "\\PC{0,20}";
        prop_oneof![
            (s, s).prop_map(
                |(identifier, pairing_code)| Message::PairConfirm(PairConfirm {
                    identifier,
                    pairing_code
                })
            ),
            (s, s, any::<i64>(), s, proptest::option::of(s)).prop_map(
                |(identifier, nonce, proof_timestamp, signature, public_key)| {
                    Message::AuthRequest(AuthRequest {
                        identifier,
                        nonce,
                        proof_timestamp,
                        signature,
                        public_key,
                    })
                }
            ),
            (s, proptest::option::of(s)).prop_map(|(identifier, status)| Message::Heartbeat(
                Heartbeat { identifier, status }
            )),
            (s, s, any::<i64>()).prop_map(|(identifier, secret, paired_at)| Message::PairSuccess(
                PairSuccess {
                    identifier,
                    secret,
                    paired_at
                }
            )),
            (s, s).prop_map(
                |(identifier, reason)| Message::DisconnectNotice(DisconnectNotice {
                    identifier,
                    reason
                })
            ),
        ]
    }

    proptest! {
        #[test]
        fn envelope_round_trip(msg in arb_message(), rid in proptest::option::of("\\PC{0,10}"), ts in proptest::option::of(any::<i64>())) {
            let env = Envelope { request_id: rid, timestamp: ts, message: msg };
            let frame = env.to_frame();
            let crate::Frame::Builtin(json) = crate::frame::parse(&frame).unwrap() else { panic!("not builtin") };
            prop_assert_eq!(Envelope::decode(json).unwrap(), env);
        }

        #[test]
        fn decode_never_panics(text in "\\PC*") {
            let _ = Envelope::decode(&text);
        }
    }
}
