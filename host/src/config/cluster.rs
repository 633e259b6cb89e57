//! `[cluster]`: several hosts acting as one hub (a unique node name and the NATS servers they
//! talk through). Needs `[store] backend = "postgres"`.

use super::error::Invalid;
use serde::Deserialize;

/// `[cluster]` (absent: this host is the whole hub).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterConfig {
    /// This host's unique name in the cluster.
    pub node: String,
    /// NATS server URLs (`nats://host:port`), tried in order.
    pub nats: Vec<String>,
}

/// `nats = "url"` or `nats = ["url", …]`.
#[derive(Deserialize)]
#[serde(untagged)]
pub(super) enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub(super) struct RawCluster {
    node: Option<String>,
    nats: Option<OneOrMany>,
}

impl RawCluster {
    pub(super) fn validate(self) -> Result<Option<ClusterConfig>, Invalid> {
        let nats = match self.nats {
            None => Vec::new(),
            Some(OneOrMany::One(u)) => vec![u],
            Some(OneOrMany::Many(v)) => v,
        };
        match (self.node, nats.is_empty()) {
            (None, true) => Ok(None),
            (None, false) => Err(Invalid::new(
                "cluster.node",
                "a cluster needs this host's unique node name (e.g. node = \"host-a\")",
            )),
            (Some(_), true) => Err(Invalid::new(
                "cluster.nats",
                "a cluster needs the NATS server(s), e.g. nats = \"nats://127.0.0.1:4222\"",
            )),
            (Some(node), false) => {
                if node.is_empty()
                    || node.len() > 64
                    || !node
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
                {
                    return Err(Invalid::new(
                        "cluster.node",
                        format!("{node:?}: 1-64 characters of letters, digits, '-' and '_'"),
                    ));
                }
                for (i, url) in nats.iter().enumerate() {
                    let ok = ["nats://", "tls://", "ws://", "wss://"]
                        .iter()
                        .any(|p| url.starts_with(p) && url.len() > p.len());
                    if !ok {
                        return Err(Invalid::new(
                            format!("cluster.nats[{i}]"),
                            format!("{:?} is not a nats:// URL", redact_url(url)),
                        ));
                    }
                }
                Ok(Some(ClusterConfig { node, nats }))
            }
        }
    }
}

/// `nats://user:pass@host:port` → `nats://host:port` (credentials never shown; also in text
/// that is not a URL at all).
pub fn redact_url(url: &str) -> String {
    let (scheme, rest) = url.split_once("://").unwrap_or(("", url));
    let host = rest.rsplit_once('@').map_or(rest, |(_, h)| h);
    if scheme.is_empty() {
        host.to_owned()
    } else {
        format!("{scheme}://{host}")
    }
}
