//! Rule ids a follower may send, and the CLI's `rule::content` input lines.

use yonexus_protocol::{BUILTIN_RULE, SEPARATOR};

/// Check a rule id for sending: non-empty, not `builtin`, no `::`.
pub fn validate_rule_id(rule_id: &str) -> Result<(), &'static str> {
    if rule_id.is_empty() {
        return Err("rule id is empty");
    }
    if rule_id == BUILTIN_RULE {
        return Err("rule id 'builtin' is reserved for control messages");
    }
    if rule_id.contains(SEPARATOR) {
        return Err("rule id must not contain '::'");
    }
    Ok(())
}

/// Split an input line `rule::content` at its first `::` (a trailing `\r`/`\n` is dropped; the
/// content may contain further `::`).
pub fn parse_line(line: &str) -> Result<(&str, &str), &'static str> {
    let line = line.trim_end_matches(['\n', '\r']);
    let (rule_id, content) = line
        .split_once(SEPARATOR)
        .ok_or("expected 'rule::content' (no '::' in the line)")?;
    validate_rule_id(rule_id)?;
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
        assert!(parse_line("no separator").is_err());
        assert!(parse_line("::content").is_err());
        assert!(parse_line("builtin::{}").is_err());
        assert!(parse_line("").is_err());
        assert!(parse_line("a:b").is_err());
    }

    #[test]
    fn validates_rule_ids() {
        assert!(validate_rule_id("echo").is_ok());
        assert!(validate_rule_id("").is_err());
        assert!(validate_rule_id("builtin").is_err());
        assert!(validate_rule_id("a::b").is_err());
    }
}
