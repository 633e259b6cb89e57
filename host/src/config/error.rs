//! Config errors: which file, which key, what is wrong.
//!
//! Sections report an [`Invalid`] (key and message); [`Config::parse`](super::Config::parse)
//! adds the file, giving the one-line `file: key: message` an operator reads.

use std::fmt;
use std::path::{Path, PathBuf};

/// A configuration error: which file, which key, what is wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub file: PathBuf,
    /// Dotted key (`limits.max_message_size`, `plugins[1].path`); empty for file-level errors.
    pub key: String,
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.key.is_empty() {
            write!(f, "{}: {}", self.file.display(), self.message)
        } else {
            write!(f, "{}: {}: {}", self.file.display(), self.key, self.message)
        }
    }
}

impl std::error::Error for ConfigError {}

/// What one section found wrong: the key and the message (the file is added by the caller).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invalid {
    pub key: String,
    pub message: String,
}

impl Invalid {
    pub fn new(key: impl Into<String>, message: impl Into<String>) -> Self {
        Invalid {
            key: key.into(),
            message: message.into(),
        }
    }

    /// Attach the file the key came from.
    pub fn in_file(self, file: &Path) -> ConfigError {
        ConfigError {
            file: file.to_owned(),
            key: self.key,
            message: self.message,
        }
    }
}

/// Whether `name` can name an environment variable (`[A-Za-z_][A-Za-z0-9_]*`).
pub fn is_env_var_name(name: &str) -> bool {
    let mut bytes = name.bytes();
    matches!(bytes.next(), Some(b) if b.is_ascii_alphabetic() || b == b'_')
        && bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn env_var_names() {
        for ok in ["YONEXUS_ADMIN_TOKEN", "_x", "a1"] {
            assert!(is_env_var_name(ok), "{ok}");
        }
        for bad in ["", "1A", "A-B", "A B", "A=B", "ÄB"] {
            assert!(!is_env_var_name(bad), "{bad}");
        }
    }

    #[test]
    fn display_is_file_key_message() {
        let e =
            Invalid::new("server.path", "'x' must start with '/'").in_file(Path::new("/y.toml"));
        assert_eq!(
            e.to_string(),
            "/y.toml: server.path: 'x' must start with '/'"
        );
        let e = Invalid::new("", "invalid TOML: …").in_file(Path::new("/y.toml"));
        assert_eq!(e.to_string(), "/y.toml: invalid TOML: …");
    }
}
