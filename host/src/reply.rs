//! Every control frame the host sends to a follower is built here: one helper per message
//! kind, so the wire shape of each lives in exactly one place. Each returns the encoded
//! WebSocket frame, ready for a connection's outbound queue.

use bytes::Bytes;
use yonexus_protocol::envelope::*;
use yonexus_protocol::Envelope;

fn frame(message: Message, now: i64, request_id: Option<&str>) -> Bytes {
    let text = Envelope {
        request_id: request_id.map(str::to_owned),
        timestamp: Some(now),
        message,
    }
    .to_frame();
    crate::ws::codec::text(&text)
}

/// A rule message `rule_id::content` (what plugins send), encoded once.
pub fn rule(rule_id: &str, content: &str) -> Bytes {
    crate::ws::codec::text_parts(&[rule_id, yonexus_protocol::SEPARATOR, content])
}

/// `error{code, message}`.
pub fn error(
    code: ErrorCode,
    message: impl Into<String>,
    now: i64,
    request_id: Option<&str>,
) -> Bytes {
    let mut message = message.into();
    // Messages may quote what the peer sent (a parse error names the bad value): bounded.
    if message.len() > MAX_ERROR_MESSAGE {
        let mut end = MAX_ERROR_MESSAGE;
        while !message.is_char_boundary(end) {
            end -= 1;
        }
        message.truncate(end);
        message.push('…');
    }
    frame(
        Message::Error(ErrorPayload { code, message }),
        now,
        request_id,
    )
}

/// The longest `error.message` the host sends, in bytes.
pub const MAX_ERROR_MESSAGE: usize = 240;

pub fn hello_ack(identifier: &str, next_action: NextAction, now: i64, rid: Option<&str>) -> Bytes {
    frame(
        Message::HelloAck(HelloAck {
            identifier: identifier.into(),
            next_action,
        }),
        now,
        rid,
    )
}

pub fn pair_request(
    identifier: &str,
    expires_at: i64,
    ttl_seconds: i64,
    admin_notification: AdminNotification,
    now: i64,
    rid: Option<&str>,
) -> Bytes {
    frame(
        Message::PairRequest(PairRequest {
            identifier: identifier.into(),
            expires_at,
            ttl_seconds,
            admin_notification,
            code_delivery: "out_of_band".into(),
        }),
        now,
        rid,
    )
}

pub fn pair_success(identifier: &str, secret: &str, paired_at: i64, rid: Option<&str>) -> Bytes {
    frame(
        Message::PairSuccess(PairSuccess {
            identifier: identifier.into(),
            secret: secret.into(),
            paired_at,
        }),
        paired_at,
        rid,
    )
}

pub fn pair_failed(
    identifier: &str,
    reason: PairFailReason,
    attempts_left: Option<u32>,
    now: i64,
    rid: Option<&str>,
) -> Bytes {
    frame(
        Message::PairFailed(PairFailed {
            identifier: identifier.into(),
            reason,
            attempts_left,
        }),
        now,
        rid,
    )
}

pub fn auth_success(identifier: &str, now: i64, rid: Option<&str>) -> Bytes {
    frame(
        Message::AuthSuccess(AuthSuccess {
            identifier: identifier.into(),
            authenticated_at: now,
            status: "online".into(),
        }),
        now,
        rid,
    )
}

pub fn auth_failed(identifier: &str, reason: AuthFailReason, now: i64, rid: Option<&str>) -> Bytes {
    frame(
        Message::AuthFailed(AuthFailed {
            identifier: identifier.into(),
            reason,
        }),
        now,
        rid,
    )
}

pub fn heartbeat_ack(identifier: &str, status: &str, now: i64, rid: Option<&str>) -> Bytes {
    frame(
        Message::HeartbeatAck(HeartbeatAck {
            identifier: identifier.into(),
            status: Some(status.into()),
        }),
        now,
        rid,
    )
}

pub fn status_update(identifier: &str, status: &str, reason: &str, now: i64) -> Bytes {
    frame(
        Message::StatusUpdate(StatusUpdate {
            identifier: identifier.into(),
            status: status.into(),
            reason: reason.into(),
        }),
        now,
        None,
    )
}

pub fn disconnect_notice(identifier: &str, reason: &str, now: i64) -> Bytes {
    frame(
        Message::DisconnectNotice(DisconnectNotice {
            identifier: identifier.into(),
            reason: reason.into(),
        }),
        now,
        None,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_messages_are_bounded() {
        let quoted = format!("invalid type: string \"{}\"", "é".repeat(30_000));
        let f = error(ErrorCode::MalformedMessage, quoted, 0, None);
        let text = crate::ws::codec::server_text(&f).unwrap_or_default();
        assert!(text.len() < MAX_ERROR_MESSAGE + 200, "{} bytes", text.len());
        assert!(text.contains('…'));
    }
}
