//! The follower's persisted identity: `<state_dir>/<identifier>.json`.
//!
//! ```json
//! {"version":1,"identifier":"alpha","privateKey":"<base64 32-byte seed>","publicKey":"<base64>","secret":"..."}
//! ```
//!
//! Writes are atomic and durable (temporary file in the same directory, write, fsync, rename,
//! fsync of the directory); the file is mode 0600 and a directory we create is mode 0700. A file
//! that cannot be parsed is an error naming the file and is never overwritten.

use crate::error::FollowerError;
use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use ed25519_dalek::SigningKey;
use serde_json::{Map, Value};
use std::fmt;
use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use yonexus_protocol::signing;

/// Current state file format version.
pub const STATE_VERSION: u64 = 1;

/// The identity of one follower: its keypair and, once paired, the shared secret.
///
/// `Debug` is implemented by hand and redacts the private key and the secret.
#[derive(Clone)]
pub struct State {
    identifier: String,
    key: SigningKey,
    secret: Option<String>,
    path: PathBuf,
}

impl fmt::Debug for State {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("State")
            .field("identifier", &self.identifier)
            .field("public_key", &self.public_key_base64())
            .field("private_key", &"<redacted>")
            .field("secret", &self.secret.as_ref().map(|_| "<redacted>"))
            .field("path", &self.path)
            .finish()
    }
}

/// Path of the state file of `identifier` in `dir`.
pub fn state_path(dir: &Path, identifier: &str) -> PathBuf {
    dir.join(format!("{identifier}.json"))
}

fn io_err(path: &Path, source: io::Error) -> FollowerError {
    FollowerError::StateIo {
        path: path.to_path_buf(),
        source,
    }
}

fn corrupt(path: &Path, reason: impl Into<String>) -> FollowerError {
    FollowerError::StateCorrupt {
        path: path.to_path_buf(),
        reason: reason.into(),
    }
}

impl State {
    /// Load the state of `identifier` from `dir`, or generate a fresh keypair and save it when the
    /// file does not exist yet.
    pub fn load_or_create(dir: &Path, identifier: &str) -> Result<State, FollowerError> {
        let path = state_path(dir, identifier);
        match fs::read(&path) {
            Ok(bytes) => State::parse(&path, identifier, &bytes),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                let state = State {
                    identifier: identifier.to_string(),
                    key: signing::generate_signing_key(),
                    secret: None,
                    path,
                };
                state.save()?;
                tracing::info!(path = %state.path.display(), "generated a new follower keypair");
                Ok(state)
            }
            Err(e) => Err(io_err(&path, e)),
        }
    }

    /// Load an existing state file (no creation).
    pub fn load(dir: &Path, identifier: &str) -> Result<State, FollowerError> {
        let path = state_path(dir, identifier);
        let bytes = fs::read(&path).map_err(|e| io_err(&path, e))?;
        State::parse(&path, identifier, &bytes)
    }

    fn parse(path: &Path, identifier: &str, bytes: &[u8]) -> Result<State, FollowerError> {
        // Parse by hand rather than with a derived Deserialize so that no error message can ever
        // echo a field value (the private key or the secret).
        let value: Value = serde_json::from_slice(bytes).map_err(|e| {
            corrupt(
                path,
                format!(
                    "not valid JSON (line {}, column {}); fix or remove the file",
                    e.line(),
                    e.column()
                ),
            )
        })?;
        let Value::Object(obj) = value else {
            return Err(corrupt(path, "not a JSON object"));
        };
        let str_field = |name: &str| -> Result<&str, FollowerError> {
            obj.get(name)
                .and_then(Value::as_str)
                .ok_or_else(|| corrupt(path, format!("field '{name}' is missing or not a string")))
        };
        match obj.get("version").and_then(Value::as_u64) {
            Some(STATE_VERSION) => {}
            Some(v) => return Err(corrupt(path, format!("unsupported version {v}"))),
            None => {
                return Err(corrupt(
                    path,
                    "field 'version' is missing or not an integer",
                ))
            }
        }
        let file_id = str_field("identifier")?;
        if file_id != identifier {
            return Err(corrupt(
                path,
                format!("belongs to identifier {file_id:?}, not {identifier:?}"),
            ));
        }
        let seed = STANDARD
            .decode(str_field("privateKey")?)
            .ok()
            .and_then(|b| <[u8; 32]>::try_from(b.as_slice()).ok())
            .ok_or_else(|| corrupt(path, "field 'privateKey' is not base64 of 32 bytes"))?;
        let key = SigningKey::from_bytes(&seed);
        let public = signing::decode_public_key(str_field("publicKey")?)
            .map_err(|e| corrupt(path, format!("field 'publicKey': {e}")))?;
        if public != key.verifying_key().to_bytes() {
            return Err(corrupt(
                path,
                "field 'publicKey' does not match 'privateKey'",
            ));
        }
        let secret = match obj.get("secret") {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) if s.is_empty() => None,
            Some(Value::String(s)) => Some(s.clone()),
            Some(_) => return Err(corrupt(path, "field 'secret' is not a string")),
        };
        warn_if_loose_permissions(path);
        Ok(State {
            identifier: identifier.to_string(),
            key,
            secret,
            path: path.to_path_buf(),
        })
    }

    /// Write the state atomically and durably.
    pub fn save(&self) -> Result<(), FollowerError> {
        let mut obj = Map::new();
        obj.insert("version".into(), Value::from(STATE_VERSION));
        obj.insert("identifier".into(), Value::from(self.identifier.clone()));
        obj.insert(
            "privateKey".into(),
            Value::from(STANDARD.encode(self.key.to_bytes())),
        );
        obj.insert("publicKey".into(), Value::from(self.public_key_base64()));
        if let Some(secret) = &self.secret {
            obj.insert("secret".into(), Value::from(secret.clone()));
        }
        let mut text = Value::Object(obj).to_string();
        text.push('\n');
        write_atomic(&self.path, text.as_bytes())
    }

    pub fn identifier(&self) -> &str {
        &self.identifier
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn signing_key(&self) -> &SigningKey {
        &self.key
    }

    /// The public key as standard padded base64 of the 32 raw bytes (as sent on the wire).
    pub fn public_key_base64(&self) -> String {
        signing::encode_base64(&self.key.verifying_key().to_bytes())
    }

    pub fn secret(&self) -> Option<&str> {
        self.secret.as_deref()
    }

    pub fn has_secret(&self) -> bool {
        self.secret.is_some()
    }

    /// Replace the secret and persist it. On failure the in-memory secret is unchanged.
    pub fn set_secret(&mut self, secret: Option<String>) -> Result<(), FollowerError> {
        let old = std::mem::replace(&mut self.secret, secret);
        if let Err(e) = self.save() {
            self.secret = old;
            return Err(e);
        }
        Ok(())
    }
}

#[cfg(unix)]
fn warn_if_loose_permissions(path: &Path) {
    use std::os::unix::fs::PermissionsExt;
    if let Ok(meta) = fs::metadata(path) {
        let mode = meta.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            tracing::warn!(path = %path.display(), mode = format!("{mode:o}"), "state file is readable by others; it should be mode 0600");
        }
    }
}

#[cfg(not(unix))]
fn warn_if_loose_permissions(_path: &Path) {}

fn create_dir(dir: &Path) -> io::Result<()> {
    let mut builder = fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt;
        builder.mode(0o700);
    }
    builder.create(dir)
}

/// Temporary file in the same directory, write, fsync, rename over `path`, fsync the directory.
fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), FollowerError> {
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    create_dir(&dir).map_err(|e| io_err(&dir, e))?;
    let mut tmp = tempfile::Builder::new()
        .prefix(".yonexus-state-")
        .suffix(".tmp")
        .tempfile_in(&dir)
        .map_err(|e| io_err(&dir, e))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        tmp.as_file()
            .set_permissions(fs::Permissions::from_mode(0o600))
            .map_err(|e| io_err(tmp.path(), e))?;
    }
    tmp.write_all(bytes).map_err(|e| io_err(path, e))?;
    tmp.as_file().sync_all().map_err(|e| io_err(path, e))?;
    tmp.persist(path).map_err(|e| io_err(path, e.error))?;
    #[cfg(unix)]
    fs::File::open(&dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| io_err(&dir, e))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn create_then_load_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let sub = dir.path().join("nested").join("state");
        let a = State::load_or_create(&sub, "alpha").unwrap();
        assert!(!a.has_secret());
        assert!(state_path(&sub, "alpha").exists());
        let b = State::load_or_create(&sub, "alpha").unwrap();
        assert_eq!(a.public_key_base64(), b.public_key_base64());
        assert_eq!(a.signing_key().to_bytes(), b.signing_key().to_bytes());

        let mut b = b;
        b.set_secret(Some("s3cret".into())).unwrap();
        let c = State::load(&sub, "alpha").unwrap();
        assert_eq!(c.secret(), Some("s3cret"));
        let text = fs::read_to_string(c.path()).unwrap();
        let v: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(v["version"], 1);
        assert_eq!(v["identifier"], "alpha");
        assert_eq!(v["publicKey"], a.public_key_base64());
        assert_eq!(
            STANDARD
                .decode(v["privateKey"].as_str().unwrap())
                .unwrap()
                .len(),
            32
        );
        let mut c = c;
        c.set_secret(None).unwrap();
        assert!(!State::load(&sub, "alpha").unwrap().has_secret());
        // No temporary files left behind.
        let names: Vec<_> = fs::read_dir(&sub)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from("alpha.json")]);
    }

    #[cfg(unix)]
    #[test]
    fn file_is_0600_and_new_dir_is_0700() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let sub = dir.path().join("fresh");
        let s = State::load_or_create(&sub, "alpha").unwrap();
        let mode = fs::metadata(s.path()).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let mode = fs::metadata(&sub).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o700);
    }

    #[test]
    fn corrupt_file_is_an_error_naming_it_and_left_untouched() {
        let dir = tempfile::tempdir().unwrap();
        let path = state_path(dir.path(), "alpha");
        for content in [
            "{not json".to_string(),
            "[]".to_string(),
            r#"{"version":2,"identifier":"alpha"}"#.to_string(),
            r#"{"version":1,"identifier":"beta","privateKey":"x","publicKey":"y"}"#.to_string(),
            r#"{"version":1,"identifier":"alpha","privateKey":"TOPSECRETVALUE","publicKey":"y"}"#
                .to_string(),
        ] {
            fs::write(&path, &content).unwrap();
            let err = State::load_or_create(dir.path(), "alpha").unwrap_err();
            let msg = err.to_string();
            assert!(matches!(err, FollowerError::StateCorrupt { .. }), "{msg}");
            assert!(msg.contains(&path.display().to_string()), "{msg}");
            assert!(!msg.contains("TOPSECRETVALUE"), "{msg}");
            assert_eq!(fs::read_to_string(&path).unwrap(), content);
        }
    }

    #[test]
    fn mismatched_public_key_is_rejected_and_debug_redacts() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = State::load_or_create(dir.path(), "alpha").unwrap();
        s.set_secret(Some("hunter2-secret".into())).unwrap();
        let dbg = format!("{s:?}");
        assert!(!dbg.contains("hunter2-secret"));
        assert!(!dbg.contains(&STANDARD.encode(s.signing_key().to_bytes())));

        let other = signing::generate_signing_key();
        let text = fs::read_to_string(s.path()).unwrap();
        let mut v: Value = serde_json::from_str(&text).unwrap();
        v["publicKey"] = Value::from(signing::encode_base64(&other.verifying_key().to_bytes()));
        fs::write(s.path(), v.to_string()).unwrap();
        let err = State::load(dir.path(), "alpha").unwrap_err();
        assert!(err.to_string().contains("does not match"), "{err}");
    }
}
