//! `[[plugins]]`: rule handlers, their files, rules, tuning and own config table.
//!
//! Keys are `plugins[i].field`; every message about an entry whose name is known starts with
//! `plugin '<name>':`, and a missing file says where a relative path was looked for.

use super::error::Invalid;
use super::paths::Paths;
use serde::Deserialize;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use yonexus_protocol::validate;

/// One `[[plugins]]` entry.
#[derive(Debug, Clone, PartialEq)]
pub struct PluginConfig {
    pub name: String,
    /// Absolute when the config file's path is (resolved against its folder, normalised).
    pub path: PathBuf,
    pub rules: Vec<String>,
    /// The `[plugins.config]` table as JSON.
    pub config: serde_json::Value,
    /// Messages that may wait for the plugin's worker before senders get `HANDLER_BUSY`.
    pub queue_capacity: usize,
    /// A call running longer than this is logged and counted.
    pub call_deadline_ms: u64,
    /// Panics within `panic_window_secs` that disable the plugin's rules (0 = never).
    pub panic_limit: u32,
    pub panic_window_secs: u64,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawPlugin {
    name: String,
    path: PathBuf,
    #[serde(default)]
    rules: Vec<String>,
    #[serde(default)]
    config: toml::Table,
    #[serde(default = "default_queue_capacity")]
    queue_capacity: usize,
    #[serde(default = "default_call_deadline_ms")]
    call_deadline_ms: u64,
    #[serde(default = "default_panic_limit")]
    panic_limit: u32,
    #[serde(default = "default_panic_window_secs")]
    panic_window_secs: u64,
}

impl RawPlugin {
    /// The path as written in the config.
    pub(super) fn path(&self) -> &Path {
        &self.path
    }
}

fn default_queue_capacity() -> usize {
    1024
}
fn default_call_deadline_ms() -> u64 {
    1000
}
fn default_panic_limit() -> u32 {
    5
}
fn default_panic_window_secs() -> u64 {
    60
}

/// Validate every entry and the rules they claim together (a rule belongs to one plugin).
pub(super) fn validate(raw: Vec<RawPlugin>, paths: &Paths) -> Result<Vec<PluginConfig>, Invalid> {
    let mut plugins = Vec::with_capacity(raw.len());
    let mut names: HashMap<String, usize> = HashMap::new();
    let mut owners: HashMap<String, (usize, String)> = HashMap::new();
    for (i, rp) in raw.into_iter().enumerate() {
        let key = format!("plugins[{i}]");
        if rp.name.trim().is_empty() {
            return Err(Invalid::new(format!("{key}.name"), "must not be empty"));
        }
        if let Some(prev) = names.insert(rp.name.clone(), i) {
            return Err(Invalid::new(
                format!("{key}.name"),
                format!(
                    "plugin name '{}' is already used by plugins[{prev}]",
                    rp.name
                ),
            ));
        }
        let name = rp.name.clone();
        let invalid = |field: &str, message: String| {
            Invalid::new(
                format!("{key}.{field}"),
                format!("plugin '{name}': {message}"),
            )
        };
        let path = paths.resolve(&rp.path);
        if !path.is_file() {
            return Err(invalid(
                "path",
                format!(
                    "plugin file '{}' does not exist{}",
                    path.display(),
                    paths.relative_hint(&rp.path)
                ),
            ));
        }
        if rp.rules.is_empty() {
            return Err(invalid(
                "rules",
                "routes no rules (add e.g. rules = [\"echo\"])".into(),
            ));
        }
        for (j, rule) in rp.rules.iter().enumerate() {
            let field = format!("rules[{j}]");
            validate::rule_id(rule).map_err(|e| invalid(&field, format!("{rule:?}: {e}")))?;
            if let Some((other, other_name)) = owners.insert(rule.clone(), (i, name.clone())) {
                return Err(invalid(
                    &field,
                    if other == i {
                        format!("rule '{rule}' is listed twice")
                    } else {
                        format!("rule '{rule}' is claimed by both plugin '{other_name}' (plugins[{other}]) and plugin '{name}' (plugins[{i}])")
                    },
                ));
            }
        }
        let config = serde_json::to_value(&rp.config)
            .map_err(|e| invalid("config", format!("cannot be converted to JSON: {e}")))?;
        if !(1..=1_000_000).contains(&rp.queue_capacity) {
            return Err(invalid(
                "queue_capacity",
                format!("{} is out of range (1..=1000000)", rp.queue_capacity),
            ));
        }
        if rp.call_deadline_ms == 0 {
            return Err(invalid("call_deadline_ms", "must be positive".into()));
        }
        if rp.panic_window_secs == 0 {
            return Err(invalid("panic_window_secs", "must be positive".into()));
        }
        plugins.push(PluginConfig {
            name: rp.name,
            path,
            rules: rp.rules,
            config,
            queue_capacity: rp.queue_capacity,
            call_deadline_ms: rp.call_deadline_ms,
            panic_limit: rp.panic_limit,
            panic_window_secs: rp.panic_window_secs,
        });
    }
    Ok(plugins)
}
