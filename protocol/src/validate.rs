//! Formats of identifiers, nonces, pairing codes and secrets, and their generation.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use rand::rngs::OsRng;
use rand::{Rng, RngCore};
use std::fmt;

/// Longest identifier accepted, in characters.
pub const MAX_IDENTIFIER_CHARS: usize = 128;
/// Longest rule id accepted, in characters.
pub const MAX_RULE_ID_CHARS: usize = 128;
/// Exact nonce length.
pub const NONCE_LEN: usize = 24;
/// Pairing code length.
pub const PAIRING_CODE_LEN: usize = 8;
/// Pairing code alphabet: digits and capitals without the ambiguous 0, O, 1 and I (32 symbols, so
/// 5 bits per character and 40 bits per code).
pub const PAIRING_CODE_ALPHABET: &[u8; 32] = b"23456789ABCDEFGHJKLMNPQRSTUVWXYZ";

/// Why an identifier is not acceptable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IdentifierError {
    Empty,
    TooLong,
    ContainsSeparator,
    ContainsWhitespace,
    ContainsControl,
}

impl fmt::Display for IdentifierError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            IdentifierError::Empty => "identifier is empty",
            IdentifierError::TooLong => "identifier is longer than 128 characters",
            IdentifierError::ContainsSeparator => "identifier contains '::'",
            IdentifierError::ContainsWhitespace => "identifier contains whitespace",
            IdentifierError::ContainsControl => "identifier contains a control character",
        })
    }
}

impl std::error::Error for IdentifierError {}

/// Check an identifier as written (no trimming): 1–128 characters, no `::`, whitespace or
/// control characters.
pub fn identifier(id: &str) -> Result<(), IdentifierError> {
    if id.is_empty() {
        return Err(IdentifierError::Empty);
    }
    if id.chars().count() > MAX_IDENTIFIER_CHARS {
        return Err(IdentifierError::TooLong);
    }
    if id.contains(crate::SEPARATOR) {
        return Err(IdentifierError::ContainsSeparator);
    }
    if id.chars().any(char::is_whitespace) {
        return Err(IdentifierError::ContainsWhitespace);
    }
    if id.chars().any(char::is_control) {
        return Err(IdentifierError::ContainsControl);
    }
    Ok(())
}

/// Why a rule id is not acceptable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RuleIdError {
    Empty,
    TooLong,
    /// `builtin` is the control channel.
    Reserved,
    ContainsSeparator,
    ContainsWhitespace,
    ContainsControl,
}

impl fmt::Display for RuleIdError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            RuleIdError::Empty => "rule id is empty",
            RuleIdError::TooLong => "rule id is longer than 128 characters",
            RuleIdError::Reserved => "rule id 'builtin' is reserved for the control protocol",
            RuleIdError::ContainsSeparator => "rule id contains '::'",
            RuleIdError::ContainsWhitespace => "rule id contains whitespace",
            RuleIdError::ContainsControl => "rule id contains a control character",
        })
    }
}

impl std::error::Error for RuleIdError {}

/// Check a rule id: 1–128 characters, not `builtin`, no `::`, whitespace or control characters.
/// The one rule for every place that names a rule (config, plugins, followers, the wire).
pub fn rule_id(rule: &str) -> Result<(), RuleIdError> {
    if rule.is_empty() {
        return Err(RuleIdError::Empty);
    }
    if rule == crate::BUILTIN_RULE {
        return Err(RuleIdError::Reserved);
    }
    // Byte length bounds the character count from above: only count when it could matter.
    if rule.len() > MAX_RULE_ID_CHARS && rule.chars().count() > MAX_RULE_ID_CHARS {
        return Err(RuleIdError::TooLong);
    }
    if rule.contains(crate::SEPARATOR) {
        return Err(RuleIdError::ContainsSeparator);
    }
    for c in rule.chars() {
        if c.is_whitespace() {
            return Err(RuleIdError::ContainsWhitespace);
        }
        if c.is_control() {
            return Err(RuleIdError::ContainsControl);
        }
    }
    Ok(())
}

/// A nonce is exactly 24 characters of `[A-Za-z0-9_-]`.
pub fn nonce(n: &str) -> bool {
    n.len() == NONCE_LEN
        && n.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// A fresh nonce: 18 random bytes as base64url (24 characters).
pub fn generate_nonce() -> String {
    let mut bytes = [0u8; 18];
    OsRng.fill_bytes(&mut bytes);
    URL_SAFE_NO_PAD.encode(bytes)
}

/// A fresh pairing code: 8 characters of [`PAIRING_CODE_ALPHABET`].
pub fn generate_pairing_code() -> String {
    (0..PAIRING_CODE_LEN)
        .map(|_| char::from(PAIRING_CODE_ALPHABET[OsRng.gen_range(0..PAIRING_CODE_ALPHABET.len())]))
        .collect()
}

/// Normalise a code typed by a human: trim, upper-case, drop spaces and dashes.
pub fn normalize_pairing_code(code: &str) -> String {
    code.chars()
        .filter(|c| !c.is_whitespace() && *c != '-')
        .flat_map(char::to_uppercase)
        .collect()
}

/// A fresh shared secret: 32 random bytes as base64url without padding (43 characters).
pub fn generate_secret() -> String {
    let mut bytes = [0u8; 32];
    OsRng.fill_bytes(&mut bytes);
    URL_SAFE_NO_PAD.encode(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identifiers() {
        assert!(identifier("alpha").is_ok());
        assert!(identifier("ä-ö_1.x").is_ok());
        assert_eq!(identifier(""), Err(IdentifierError::Empty));
        assert_eq!(identifier(&"a".repeat(129)), Err(IdentifierError::TooLong));
        assert!(identifier(&"é".repeat(128)).is_ok());
        assert_eq!(identifier("a::b"), Err(IdentifierError::ContainsSeparator));
        assert_eq!(identifier("a b"), Err(IdentifierError::ContainsWhitespace));
        assert_eq!(identifier("a\u{7}b"), Err(IdentifierError::ContainsControl));
    }

    #[test]
    fn rule_ids() {
        assert!(rule_id("echo").is_ok());
        assert!(rule_id(&"é".repeat(128)).is_ok());
        assert_eq!(rule_id(""), Err(RuleIdError::Empty));
        assert_eq!(rule_id("builtin"), Err(RuleIdError::Reserved));
        assert_eq!(rule_id(&"a".repeat(129)), Err(RuleIdError::TooLong));
        assert_eq!(rule_id("a::b"), Err(RuleIdError::ContainsSeparator));
        assert_eq!(rule_id("a b"), Err(RuleIdError::ContainsWhitespace));
        assert_eq!(rule_id("a\u{0}"), Err(RuleIdError::ContainsControl));
    }

    #[test]
    fn generated_values_have_their_formats() {
        for _ in 0..100 {
            assert!(nonce(&generate_nonce()));
            let code = generate_pairing_code();
            assert_eq!(code.len(), 8);
            assert!(code.bytes().all(|b| PAIRING_CODE_ALPHABET.contains(&b)));
            assert_eq!(generate_secret().len(), 43);
        }
        assert!(!nonce("short"));
        assert!(!nonce("aaaaaaaaaaaaaaaaaaaaaaa!"));
        assert_eq!(normalize_pairing_code(" abcd-efgh "), "ABCDEFGH");
    }
}
