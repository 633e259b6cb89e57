//! The CLI's `rule::content` input lines.

use std::fmt;
use yonexus_protocol::validate::{self, RuleIdError};
use yonexus_protocol::SEPARATOR;

/// Why an input line cannot be sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LineError {
    /// The line has no `::`.
    NoSeparator,
    /// The part before the first `::` is not a valid rule id.
    RuleId(RuleIdError),
}

impl fmt::Display for LineError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LineError::NoSeparator => f.write_str("expected 'rule::content' (no '::' in the line)"),
            LineError::RuleId(e) => e.fmt(f),
        }
    }
}

impl std::error::Error for LineError {}

/// Split an input line `rule::content` at its first `::` (a trailing `\r`/`\n` is dropped; the
/// content may contain further `::`). The rule id must pass [`validate::rule_id`].
pub fn parse_line(line: &str) -> Result<(&str, &str), LineError> {
    let line = line.trim_end_matches(['\n', '\r']);
    let (rule_id, content) = line.split_once(SEPARATOR).ok_or(LineError::NoSeparator)?;
    validate::rule_id(rule_id).map_err(LineError::RuleId)?;
    Ok((rule_id, content))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_lines() {
        assert_eq!(parse_line("echo::hi"), Ok(("echo", "hi")));
        assert_eq!(parse_line("echo::a::b\r\n"), Ok(("echo", "a::b")));
        assert_eq!(parse_line("echo::"), Ok(("echo", "")));
        assert_eq!(parse_line("no separator"), Err(LineError::NoSeparator));
        assert_eq!(
            parse_line("::content"),
            Err(LineError::RuleId(RuleIdError::Empty))
        );
        assert_eq!(
            parse_line("builtin::{}"),
            Err(LineError::RuleId(RuleIdError::Reserved))
        );
        assert!(parse_line("").is_err());
        assert!(parse_line("a:b").is_err());
        assert_eq!(
            parse_line("two words::x"),
            Err(LineError::RuleId(RuleIdError::ContainsWhitespace))
        );
        assert!(parse_line(&format!("{}::x", "r".repeat(129))).is_err());
    }
}
