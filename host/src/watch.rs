//! Watching the config file and plugin files, and turning their changes into reloads.
//!
//! Parent directories are watched (not the files: editors and cargo replace files by rename,
//! which ends a watch on the file itself). Events are filtered by file name, debounced (no event
//! for `reload.debounce_ms`), and a reload starts only once every watched file has stopped
//! changing (same size and mtime across two looks), so a half-written build is never loaded.

use crate::reload::Reloader;
use fs_notify::{EventKind, RecommendedWatcher, RecursiveMode, Watcher};
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// The directory to watch for `file` and the name to look for in it.
fn split(file: &Path) -> Option<(PathBuf, std::ffi::OsString)> {
    let name = file.file_name()?.to_owned();
    let parent = file
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let dir = parent.canonicalize().ok()?;
    Some((dir, name))
}

/// (size, mtime) of each file; missing files count as `None`.
fn fingerprint(files: &[PathBuf]) -> Vec<Option<(u64, SystemTime)>> {
    files
        .iter()
        .map(|f| {
            std::fs::metadata(f)
                .ok()
                .map(|m| (m.len(), m.modified().unwrap_or(SystemTime::UNIX_EPOCH)))
        })
        .collect()
}

/// Start watching; returns when shutdown is requested. Errors starting the OS watcher are
/// logged and disable watching (SIGHUP and `yonexus reload` still work).
pub async fn run(reloader: Arc<Reloader>, debounce: Duration, shutdown: CancellationToken) {
    let (tx, mut rx) = mpsc::unbounded_channel::<PathBuf>();
    let handler = move |res: fs_notify::Result<fs_notify::Event>| {
        if let Ok(event) = res {
            if matches!(event.kind, EventKind::Access(_)) {
                return;
            }
            for path in event.paths {
                let _ = tx.send(path);
            }
        }
    };
    let mut watcher = match RecommendedWatcher::new(handler, fs_notify::Config::default()) {
        Ok(w) => w,
        Err(e) => {
            tracing::error!(error = %e, "cannot start the file watcher; reload with SIGHUP or `yonexus reload`");
            return;
        }
    };
    let mut dirs: BTreeSet<PathBuf> = BTreeSet::new();
    let mut interest: BTreeSet<(PathBuf, std::ffi::OsString)> = BTreeSet::new();
    let refresh = |watcher: &mut RecommendedWatcher,
                   dirs: &mut BTreeSet<PathBuf>,
                   interest: &mut BTreeSet<(PathBuf, std::ffi::OsString)>| {
        let files = reloader.watched_files();
        *interest = files.iter().filter_map(|f| split(f)).collect();
        let wanted: BTreeSet<PathBuf> = interest.iter().map(|(d, _)| d.clone()).collect();
        for gone in dirs.difference(&wanted) {
            let _ = watcher.unwatch(gone);
        }
        for dir in wanted.difference(dirs) {
            if let Err(e) = watcher.watch(dir, RecursiveMode::NonRecursive) {
                tracing::warn!(dir = %dir.display(), error = %e, "cannot watch directory");
            }
        }
        *dirs = wanted;
    };
    refresh(&mut watcher, &mut dirs, &mut interest);
    let relevant = |path: &Path, interest: &BTreeSet<(PathBuf, std::ffi::OsString)>| {
        let (Some(name), Some(parent)) = (path.file_name(), path.parent()) else {
            return false;
        };
        let parent = parent.canonicalize().unwrap_or_else(|_| parent.to_owned());
        interest.contains(&(parent, name.to_owned()))
    };
    loop {
        let first = tokio::select! {
            _ = shutdown.cancelled() => return,
            p = rx.recv() => p,
        };
        let Some(first) = first else { return };
        if !relevant(&first, &interest) {
            continue;
        }
        // Debounce (only events about watched files count), then wait until the files stop
        // changing.
        loop {
            let mut deadline = tokio::time::Instant::now() + debounce;
            loop {
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = tokio::time::sleep_until(deadline) => break,
                    more = rx.recv() => match more {
                        Some(p) if relevant(&p, &interest) => {
                            deadline = tokio::time::Instant::now() + debounce;
                        }
                        Some(_) => {}
                        None => return,
                    },
                }
            }
            let files = reloader.watched_files();
            let before = fingerprint(&files);
            tokio::time::sleep(debounce / 2).await;
            if fingerprint(&files) == before {
                break;
            }
        }
        let _ = reloader.reload(crate::reload::FILE_CHANGE).await;
        refresh(&mut watcher, &mut dirs, &mut interest);
    }
}
