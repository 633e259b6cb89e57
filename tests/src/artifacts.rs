//! The binaries and plugins under test: the ones cargo built for this test run, found next to
//! the test executable (`target/debug/deps/<test>-<hash>`). Nothing here builds anything.
//!
//! - `cargo test --workspace` builds every package's binaries (`yonexus`, `yonexus-follower`,
//!   …), because their packages have integration tests, into `target/debug/`.
//! - The bundled plugins are dependencies of this crate (and `cdylib` + `rlib` crates), so
//!   cargo builds their `.so` together with any of these tests, into `target/debug/deps/`.
//! - A narrower run (`cargo test -p yonexus-e2e --test e2e hub::`) does not build other packages'
//!   binaries. A missing artifact, or one older than a source file it is built from (so it
//!   would test old code), is an error naming the command that builds it.

use anyhow::{anyhow, bail, Context, Result};
use serde_json::Value;
use std::collections::{BTreeSet, HashSet};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Mutex, OnceLock};
use std::time::SystemTime;

/// The workspace root.
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_default()
}

/// The directory of the build this test belongs to (`target/debug`, or `target/release`, …):
/// the parent of the `deps/` directory the test executable runs from.
pub fn profile_dir() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let exe = std::env::current_exe().ok();
        let from_exe = exe.as_deref().and_then(|exe| {
            let deps = exe.parent()?;
            (deps.file_name()? == "deps").then(|| deps.parent().map(Path::to_path_buf))?
        });
        from_exe.unwrap_or_else(|| {
            std::env::var_os("CARGO_TARGET_DIR")
                .map(PathBuf::from)
                .unwrap_or_else(|| workspace_root().join("target"))
                .join("debug")
        })
    })
}

/// Path of a workspace binary built for this run (`yonexus`, `yonexus-follower`, …); panics
/// with the command that builds it when it is missing or stale.
pub fn bin(name: &str) -> PathBuf {
    try_bin(name).unwrap_or_else(|e| panic!("{e:#}"))
}

/// [`bin`], as a `Result`.
pub fn try_bin(name: &str) -> Result<PathBuf> {
    let ws = workspace()?;
    let package = ws.package_with_bin(name).ok_or_else(|| {
        anyhow!("no package in this workspace has a binary named `{name}` (see `cargo metadata`)")
    })?;
    let how = format!(
        "cargo build{} -p {} --bin {name}",
        profile_flag(),
        package.name
    );
    let what = format!("the `{name}` binary (package {})", package.name);
    checked(&[profile_dir().join(name)], package, ws, &what, &how)
}

/// Path of a bundled plugin library (`echo`, `relay`, `broadcast`, `presence`) built for this
/// run; panics with the command that builds it when it is missing or stale.
pub fn plugin(name: &str) -> PathBuf {
    try_plugin(name).unwrap_or_else(|e| panic!("{e:#}"))
}

/// [`plugin`], as a `Result`.
pub fn try_plugin(name: &str) -> Result<PathBuf> {
    let ws = workspace()?;
    let package_name = format!("yonexus-plugin-{name}");
    let package = ws
        .packages
        .iter()
        .find(|p| p.name == package_name)
        .ok_or_else(|| {
            anyhow!("no bundled plugin `{name}`: the workspace has no package `{package_name}`")
        })?;
    let file = format!("libyonexus_plugin_{name}.so");
    let how = format!(
        "add `{package_name}` to [dependencies] in tests/Cargo.toml (cargo then builds it with \
         these tests), or build it with `cargo build{} -p {package_name}`",
        profile_flag()
    );
    // deps/: built as a dependency of this crate; the profile dir: by `cargo build`.
    let candidates = [
        profile_dir().join("deps").join(&file),
        profile_dir().join(&file),
    ];
    let what = format!("the `{name}` plugin ({file})");
    checked(&candidates, package, ws, &what, &how)
}

fn profile_flag() -> String {
    match profile_dir().file_name().and_then(|n| n.to_str()) {
        Some("debug") | None => String::new(),
        Some("release") => " --release".into(),
        Some(other) => format!(" --profile {other}"),
    }
}

/// The first of `candidates` that exists and is not older than any source of `package` (and
/// of the workspace packages it depends on); cached per path.
fn checked(
    candidates: &[PathBuf],
    package: &Package,
    ws: &Workspace,
    what: &str,
    how: &str,
) -> Result<PathBuf> {
    static FRESH: OnceLock<Mutex<HashSet<PathBuf>>> = OnceLock::new();
    let cache = FRESH.get_or_init(Mutex::default);
    if let Some(hit) = candidates
        .iter()
        .find(|c| cache.lock().is_ok_and(|m| m.contains(*c)))
    {
        return Ok(hit.clone());
    }
    let mut stale = None;
    for path in candidates {
        let Ok(built) = std::fs::metadata(path).and_then(|m| m.modified()) else {
            continue;
        };
        match ws.newest_source(package) {
            Some((source, changed)) if changed > built => {
                stale.get_or_insert((path, source));
            }
            _ => {
                if let Ok(mut m) = cache.lock() {
                    m.insert(path.clone());
                }
                return Ok(path.clone());
            }
        }
    }
    match stale {
        Some((path, source)) => bail!(
            "{what} at {} is older than {}, so it would test old code: rebuild it with `{how}` \
             (or run the whole suite, `cargo test --workspace`, which builds everything)",
            path.display(),
            source.display()
        ),
        None => bail!(
            "{what} is not built (looked for {}): a narrow `cargo test -p yonexus-e2e` does \
             not build other packages' binaries; build it with `{how}`, or run the whole \
             suite, `cargo test --workspace`, which builds everything",
            candidates
                .iter()
                .map(|c| c.display().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}

/// A workspace package, as `cargo metadata --no-deps` describes it.
struct Package {
    name: String,
    dir: PathBuf,
    bins: Vec<String>,
    /// Directories of its normal (non-dev, non-build) path dependencies.
    path_deps: Vec<PathBuf>,
}

struct Workspace {
    packages: Vec<Package>,
}

fn workspace() -> Result<&'static Workspace> {
    static WS: OnceLock<Result<Workspace, String>> = OnceLock::new();
    WS.get_or_init(|| Workspace::load().map_err(|e| format!("{e:#}")))
        .as_ref()
        .map_err(|e| anyhow!("{e}"))
}

impl Workspace {
    fn load() -> Result<Workspace> {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let out = Command::new(&cargo)
            .args(["metadata", "--format-version", "1", "--no-deps", "--offline"])
            .current_dir(workspace_root())
            .output()
            .with_context(|| format!("running `{cargo} metadata` to find what the artifacts under test are built from"))?;
        if !out.status.success() {
            bail!(
                "`cargo metadata` failed: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        let meta: Value =
            serde_json::from_slice(&out.stdout).context("parsing `cargo metadata` output")?;
        let strings = |v: &Value| -> Vec<String> {
            v.as_array()
                .map(|a| {
                    a.iter()
                        .filter_map(|s| s.as_str().map(str::to_owned))
                        .collect()
                })
                .unwrap_or_default()
        };
        let packages = meta["packages"]
            .as_array()
            .map(|ps| {
                ps.iter()
                    .filter_map(|p| {
                        let dir = Path::new(p["manifest_path"].as_str()?).parent()?.to_owned();
                        let bins = p["targets"]
                            .as_array()?
                            .iter()
                            .filter(|t| strings(&t["kind"]).iter().any(|k| k == "bin"))
                            .filter_map(|t| t["name"].as_str().map(str::to_owned))
                            .collect();
                        let path_deps = p["dependencies"]
                            .as_array()?
                            .iter()
                            .filter(|d| d["kind"].is_null())
                            .filter_map(|d| d["path"].as_str().map(PathBuf::from))
                            .collect();
                        Some(Package {
                            name: p["name"].as_str()?.to_owned(),
                            dir,
                            bins,
                            path_deps,
                        })
                    })
                    .collect()
            })
            .unwrap_or_default();
        Ok(Workspace { packages })
    }

    fn package_with_bin(&self, bin: &str) -> Option<&Package> {
        self.packages
            .iter()
            .find(|p| p.bins.iter().any(|b| b == bin))
    }

    /// The most recently modified source file of `package` and of every path dependency it
    /// links (its `src/` trees and build scripts), with its modification time.
    fn newest_source(&self, package: &Package) -> Option<(PathBuf, SystemTime)> {
        let mut dirs = BTreeSet::new();
        let mut todo = vec![package.dir.clone()];
        while let Some(dir) = todo.pop() {
            if !dirs.insert(dir.clone()) {
                continue;
            }
            if let Some(p) = self.packages.iter().find(|p| p.dir == dir) {
                todo.extend(p.path_deps.iter().cloned());
            }
        }
        let mut newest: Option<(PathBuf, SystemTime)> = None;
        let mut consider = |path: PathBuf| {
            if let Ok(t) = std::fs::metadata(&path).and_then(|m| m.modified()) {
                if newest.as_ref().is_none_or(|(_, n)| t > *n) {
                    newest = Some((path, t));
                }
            }
        };
        for dir in dirs {
            consider(dir.join("build.rs"));
            walk(&dir.join("src"), &mut consider);
        }
        newest
    }
}

fn walk(dir: &Path, f: &mut impl FnMut(PathBuf)) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.filter_map(|e| e.ok()) {
        let name = entry.file_name();
        let name = name.to_string_lossy();
        // Editor droppings are not sources.
        if name.starts_with('.') || name.ends_with('~') || name.ends_with(".swp") {
            continue;
        }
        let path = entry.path();
        match entry.file_type() {
            Ok(t) if t.is_dir() => walk(&path, f),
            Ok(_) => f(path),
            Err(_) => {}
        }
    }
}
