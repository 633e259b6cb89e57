//! Text frames: `builtin::<json>` control frames and `<rule_id>::<content>` rule messages.

use crate::{BUILTIN_RULE, SEPARATOR};
use std::fmt;

/// One inbound text frame, split but not yet interpreted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Frame<'a> {
    /// `builtin::` followed by the JSON envelope text (not yet parsed).
    Builtin(&'a str),
    /// A rule message: the rule id is everything before the first `::`, the content everything
    /// after it (it may itself contain `::`).
    Rule { rule_id: &'a str, content: &'a str },
}

/// Why a text frame is not a valid frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FrameError {
    /// There is no `::` in the frame.
    NoSeparator,
    /// The frame starts with `::`.
    EmptyRuleId,
}

impl fmt::Display for FrameError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FrameError::NoSeparator => {
                f.write_str("frame has no '::' separator (expected rule_id::content)")
            }
            FrameError::EmptyRuleId => f.write_str("frame has an empty rule id"),
        }
    }
}

impl std::error::Error for FrameError {}

/// Split a text frame at its first `::`.
pub fn parse(text: &str) -> Result<Frame<'_>, FrameError> {
    let (rule_id, content) = text.split_once(SEPARATOR).ok_or(FrameError::NoSeparator)?;
    if rule_id.is_empty() {
        return Err(FrameError::EmptyRuleId);
    }
    if rule_id == BUILTIN_RULE {
        return Ok(Frame::Builtin(content));
    }
    Ok(Frame::Rule { rule_id, content })
}

/// Encode a rule message as sent on the wire: `<rule_id>::<content>`.
pub fn encode_rule(rule_id: &str, content: &str) -> String {
    let mut out = String::with_capacity(rule_id.len() + SEPARATOR.len() + content.len());
    out.push_str(rule_id);
    out.push_str(SEPARATOR);
    out.push_str(content);
    out
}

/// The host's rewrite of a rule message from `sender`: `<rule_id>::<sender>::<content>`.
pub fn rewrite_with_sender(rule_id: &str, sender: &str, content: &str) -> String {
    let mut out =
        String::with_capacity(rule_id.len() + sender.len() + content.len() + 2 * SEPARATOR.len());
    out.push_str(rule_id);
    out.push_str(SEPARATOR);
    out.push_str(sender);
    out.push_str(SEPARATOR);
    out.push_str(content);
    out
}

/// Split a rewritten message `<rule_id>::<sender>::<content>` back into its three parts.
pub fn parse_rewritten(text: &str) -> Option<(&str, &str, &str)> {
    let (rule_id, rest) = text.split_once(SEPARATOR)?;
    let (sender, content) = rest.split_once(SEPARATOR)?;
    Some((rule_id, sender, content))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn splits_at_first_separator_only() {
        assert_eq!(
            parse("relay::beta::hi::there"),
            Ok(Frame::Rule {
                rule_id: "relay",
                content: "beta::hi::there"
            })
        );
        assert_eq!(
            parse("echo::"),
            Ok(Frame::Rule {
                rule_id: "echo",
                content: ""
            })
        );
        assert_eq!(parse("builtin::{}"), Ok(Frame::Builtin("{}")));
        assert_eq!(parse("no separator"), Err(FrameError::NoSeparator));
        assert_eq!(parse("::x"), Err(FrameError::EmptyRuleId));
        assert_eq!(parse("a:b:c"), Err(FrameError::NoSeparator));
    }

    #[test]
    fn rewrite_injects_sender() {
        assert_eq!(
            rewrite_with_sender("echo", "alpha", "a::b"),
            "echo::alpha::a::b"
        );
        assert_eq!(
            parse_rewritten("echo::alpha::a::b"),
            Some(("echo", "alpha", "a::b"))
        );
    }

    proptest! {
        #[test]
        fn rule_round_trip(rule in "[^:\\s][^:]{0,20}", content in "\\PC*") {
            prop_assume!(rule != BUILTIN_RULE);
            let text = encode_rule(&rule, &content);
            prop_assert_eq!(parse(&text), Ok(Frame::Rule { rule_id: &rule, content: &content }));
        }

        #[test]
        fn rewrite_round_trip(rule in "[a-z_]{1,12}", sender in "[a-z0-9_-]{1,16}", content in "\\PC*") {
            let text = rewrite_with_sender(&rule, &sender, &content);
            prop_assert_eq!(parse_rewritten(&text), Some((rule.as_str(), sender.as_str(), content.as_str())));
        }

        #[test]
        fn parse_never_panics(text in "\\PC*") {
            let _ = parse(&text);
        }
    }
}
