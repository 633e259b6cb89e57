//! What a follower signs to authenticate, and the encodings of keys and signatures.
//!
//! The signed bytes are exactly `{"secret":"<secret>","nonce":"<nonce>","timestamp":<ts>}`: keys
//! in that order, no whitespace, strings escaped as JSON does. Keys and signatures travel as
//! standard padded base64 of the raw bytes; decoding also accepts unpadded base64url, hex, and
//! (for public keys) PEM or base64 of the SPKI DER form.

use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD};
use base64::Engine;
use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};
use std::fmt;

/// DER prefix of an Ed25519 SubjectPublicKeyInfo (RFC 8410); the raw key follows.
const SPKI_ED25519_PREFIX: [u8; 12] = [
    0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x03, 0x21, 0x00,
];

/// The exact bytes a follower signs (as a UTF-8 string).
pub fn signing_input(secret: &str, nonce: &str, timestamp: i64) -> String {
    // serde_json's string encoding is the JSON escaping the protocol asks for; encoding a &str
    // cannot fail.
    let secret = serde_json::to_string(secret).unwrap_or_default();
    let nonce = serde_json::to_string(nonce).unwrap_or_default();
    format!("{{\"secret\":{secret},\"nonce\":{nonce},\"timestamp\":{timestamp}}}")
}

/// A key or signature that could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EncodingError(pub &'static str);

impl fmt::Display for EncodingError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0)
    }
}

impl std::error::Error for EncodingError {}

fn decode_hex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) || !s.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

/// Decode base64 (standard or url-safe, padded or not) or hex, whichever yields `len` bytes.
fn decode_bytes(s: &str, len: usize) -> Option<Vec<u8>> {
    let s = s.trim();
    if s.len() == len * 2 {
        if let Some(b) = decode_hex(s) {
            return Some(b);
        }
    }
    for engine in [&STANDARD, &STANDARD_NO_PAD, &URL_SAFE, &URL_SAFE_NO_PAD] {
        if let Ok(b) = engine.decode(s) {
            return Some(b);
        }
    }
    None
}

fn der_to_raw_key(der: &[u8]) -> Option<[u8; 32]> {
    if der.len() == 32 {
        return der.try_into().ok();
    }
    if der.len() == 44 && der[..12] == SPKI_ED25519_PREFIX {
        return der[12..].try_into().ok();
    }
    None
}

/// Decode a public key in any accepted encoding to its 32 raw bytes.
pub fn decode_public_key(text: &str) -> Result<[u8; 32], EncodingError> {
    let text = text.trim();
    if text.len() > 4096 {
        return Err(EncodingError("public key is too long"));
    }
    let bytes = if text.starts_with("-----BEGIN") {
        let body: String = text
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with("-----"))
            .collect();
        STANDARD
            .decode(body)
            .map_err(|_| EncodingError("public key PEM body is not base64"))?
    } else {
        decode_bytes(text, 32).ok_or(EncodingError("public key is not base64 or hex"))?
    };
    der_to_raw_key(&bytes).ok_or(EncodingError(
        "public key is not a 32-byte Ed25519 key or its SPKI form",
    ))
}

/// Decode a signature in any accepted encoding to its 64 raw bytes.
pub fn decode_signature(text: &str) -> Result<[u8; 64], EncodingError> {
    if text.len() > 512 {
        return Err(EncodingError("signature is too long"));
    }
    let bytes = decode_bytes(text, 64).ok_or(EncodingError("signature is not base64 or hex"))?;
    bytes
        .as_slice()
        .try_into()
        .map_err(|_| EncodingError("signature is not 64 bytes"))
}

/// Standard padded base64, the encoding this project sends keys and signatures in.
pub fn encode_base64(bytes: &[u8]) -> String {
    STANDARD.encode(bytes)
}

/// Verify `signature` over the signing input with a raw public key. Uses strict verification,
/// which rejects weak keys and non-canonical signatures that honest signers never produce.
pub fn verify(
    public_key: &[u8; 32],
    secret: &str,
    nonce: &str,
    timestamp: i64,
    signature: &[u8; 64],
) -> bool {
    verifying_key(public_key)
        .is_some_and(|key| verify_with(&key, secret, nonce, timestamp, signature))
}

/// The key for 32 raw bytes, decompressed (about a fifth of a verification's cost); `None`
/// when the bytes are not a curve point. A verifier that sees the same key again can keep it
/// and call [`verify_with`].
pub fn verifying_key(public_key: &[u8; 32]) -> Option<VerifyingKey> {
    VerifyingKey::from_bytes(public_key).ok()
}

/// [`verify`] with a key already decompressed by [`verifying_key`].
pub fn verify_with(
    key: &VerifyingKey,
    secret: &str,
    nonce: &str,
    timestamp: i64,
    signature: &[u8; 64],
) -> bool {
    let sig = Signature::from_bytes(signature);
    key.verify_strict(signing_input(secret, nonce, timestamp).as_bytes(), &sig)
        .is_ok()
}

/// Sign the signing input; returns the standard base64 signature (follower side).
pub fn sign(key: &SigningKey, secret: &str, nonce: &str, timestamp: i64) -> String {
    encode_base64(
        &key.sign(signing_input(secret, nonce, timestamp).as_bytes())
            .to_bytes(),
    )
}

/// Generate a fresh Ed25519 keypair from the OS random source.
pub fn generate_signing_key() -> SigningKey {
    SigningKey::generate(&mut rand::rngs::OsRng)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signing_input_is_exact() {
        assert_eq!(
            signing_input("s3cr\"et", "abc", 1_700_000_000),
            r#"{"secret":"s3cr\"et","nonce":"abc","timestamp":1700000000}"#
        );
    }

    #[test]
    fn sign_and_verify_in_every_encoding() {
        let key = generate_signing_key();
        let raw = key.verifying_key().to_bytes();
        let sig_b64 = sign(&key, "sec", "n", 42);
        let sig = decode_signature(&sig_b64).unwrap();
        assert!(verify(&raw, "sec", "n", 42, &sig));
        assert!(!verify(&raw, "sec", "n", 43, &sig));
        assert!(!verify(&raw, "other", "n", 42, &sig));

        let hex: String = raw.iter().map(|b| format!("{b:02x}")).collect();
        let mut spki = SPKI_ED25519_PREFIX.to_vec();
        spki.extend_from_slice(&raw);
        let pem = format!(
            "-----BEGIN PUBLIC KEY-----\n{}\n-----END PUBLIC KEY-----\n",
            STANDARD.encode(&spki)
        );
        for text in [
            STANDARD.encode(raw),
            URL_SAFE_NO_PAD.encode(raw),
            hex,
            STANDARD.encode(&spki),
            pem,
        ] {
            assert_eq!(decode_public_key(&text).unwrap(), raw, "{text}");
        }
        let sig_hex: String = sig.iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(decode_signature(&sig_hex).unwrap(), sig);
        assert_eq!(decode_signature(&URL_SAFE_NO_PAD.encode(sig)).unwrap(), sig);
    }

    #[test]
    fn rejects_bad_encodings() {
        assert!(decode_public_key("not a key!").is_err());
        assert!(decode_public_key(&STANDARD.encode([1u8; 31])).is_err());
        assert!(
            decode_public_key("-----BEGIN PUBLIC KEY-----\n!!!\n-----END PUBLIC KEY-----").is_err()
        );
        assert!(decode_signature(&STANDARD.encode([1u8; 63])).is_err());
        assert!(decode_signature("zz").is_err());
    }
}
