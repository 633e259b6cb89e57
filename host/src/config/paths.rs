//! Relative paths in the config file: resolved against the file's folder and normalised
//! lexically, so `examples/yonexus.toml` with `state_dir = "./yonexus-state"` shows
//! `examples/yonexus-state`, not `examples/./yonexus-state`.

use std::path::{Component, Path, PathBuf};

/// Resolves the paths one config file names.
#[derive(Debug, Clone)]
pub struct Paths {
    /// The config file's folder (may be empty: the current directory).
    base: PathBuf,
}

impl Paths {
    /// For paths named in `config_file`.
    pub fn for_config(config_file: &Path) -> Self {
        Paths {
            base: config_file
                .parent()
                .map(Path::to_path_buf)
                .unwrap_or_default(),
        }
    }

    /// `p` itself when absolute, else joined to the config file's folder; then normalised.
    pub fn resolve(&self, p: &Path) -> PathBuf {
        if p.is_absolute() {
            normalize(p)
        } else {
            normalize(&self.base.join(p))
        }
    }

    /// A hint for "file not found" messages about `configured` (the path as written): what the
    /// config said and what it is relative to, so a resolved path like `target/x.so` (from
    /// `../target/x.so` in `examples/`) is not mistaken for one under the config's folder.
    /// Empty for absolute paths.
    pub fn relative_hint(&self, configured: &Path) -> String {
        if configured.is_absolute() {
            return String::new();
        }
        let folder = normalize(&self.base);
        let folder = if folder.as_os_str().is_empty() || folder == Path::new(".") {
            "the current directory".to_owned()
        } else {
            format!("its folder '{}'", folder.display())
        };
        format!(
            " (the config names '{}', relative to {folder})",
            configured.display()
        )
    }
}

/// Remove `.` components and fold `name/..` pairs, without touching the file system (a `..`
/// after a symlinked folder therefore means its lexical parent). A leading `..` of a relative
/// path is kept; `/..` is `/`. An empty result is `.`.
pub fn normalize(p: &Path) -> PathBuf {
    let mut out: Vec<Component<'_>> = Vec::new();
    for c in p.components() {
        match c {
            Component::CurDir => {}
            Component::ParentDir => match out.last() {
                Some(Component::Normal(_)) => {
                    out.pop();
                }
                Some(Component::RootDir | Component::Prefix(_)) => {}
                Some(Component::ParentDir | Component::CurDir) | None => out.push(c),
            },
            other => out.push(other),
        }
    }
    if out.is_empty() {
        return PathBuf::from(".");
    }
    out.iter().collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalises_lexically() {
        for (input, want) in [
            ("examples/./yonexus-state", "examples/yonexus-state"),
            ("examples/../target/debug/x.so", "target/debug/x.so"),
            ("/etc/yonexus/./a/../b", "/etc/yonexus/b"),
            ("../a/./b", "../a/b"),
            ("../../a", "../../a"),
            ("/../a", "/a"),
            ("./", "."),
            ("", "."),
            ("a/..", "."),
        ] {
            assert_eq!(normalize(Path::new(input)), PathBuf::from(want), "{input}");
        }
    }

    #[test]
    fn resolves_against_the_config_folder() {
        let p = Paths::for_config(Path::new("examples/yonexus.toml"));
        assert_eq!(
            p.resolve(Path::new("./yonexus-state")),
            PathBuf::from("examples/yonexus-state")
        );
        assert_eq!(
            p.resolve(Path::new("../target/debug/libx.so")),
            PathBuf::from("target/debug/libx.so")
        );
        assert_eq!(p.resolve(Path::new("/abs/./x")), PathBuf::from("/abs/x"));
        let bare = Paths::for_config(Path::new("yonexus.toml"));
        assert_eq!(bare.resolve(Path::new("./state")), PathBuf::from("state"));
        assert_eq!(
            bare.relative_hint(Path::new("x")),
            " (the config names 'x', relative to the current directory)"
        );
        assert_eq!(
            p.relative_hint(Path::new("../target/debug/libx.so")),
            " (the config names '../target/debug/libx.so', relative to its folder 'examples')"
        );
        assert_eq!(bare.relative_hint(Path::new("/x")), "");
    }
}
