//! `[followers]`: the allowlist.

use super::error::Invalid;
use serde::Deserialize;
use std::collections::BTreeSet;
use yonexus_protocol::validate;

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub(super) struct RawFollowers {
    allow: Vec<String>,
}

impl RawFollowers {
    /// The allowlist: valid identifiers, each listed once.
    pub(super) fn validate(self) -> Result<BTreeSet<String>, Invalid> {
        let mut allow = BTreeSet::new();
        for (i, id) in self.allow.into_iter().enumerate() {
            let key = format!("followers.allow[{i}]");
            validate::identifier(&id).map_err(|e| Invalid::new(&key, format!("{id:?}: {e}")))?;
            if allow.contains(&id) {
                return Err(Invalid::new(key, format!("{id:?} is listed twice")));
            }
            allow.insert(id);
        }
        Ok(allow)
    }
}
