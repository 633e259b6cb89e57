//! The system build tools some tests run besides cargo: a C compiler and `make` (the C example
//! plugin is built with its own Makefile). A missing tool fails the test with the Debian package
//! that provides it: the tests are not optional, and `.ci/run` installs these packages.

use std::process::Command;

/// The C compiler: `$CC`, else `cc` (Debian package `gcc`). Panics when it does not run.
pub fn c_compiler() -> String {
    tool("CC", "cc", "gcc")
}

/// `make`: `$MAKE`, else `make` (Debian package `make`). Panics when it does not run.
pub fn make() -> String {
    tool("MAKE", "make", "make")
}

/// The program named by `$var`, else `default`, checked with `--version`; panics naming the
/// Debian `package` that provides it when it does not run.
fn tool(var: &str, default: &str, package: &str) -> String {
    let program = std::env::var(var)
        .ok()
        .filter(|p| !p.trim().is_empty())
        .unwrap_or_else(|| default.to_owned());
    match Command::new(&program).arg("--version").output() {
        Ok(o) if o.status.success() => program,
        Ok(o) => panic!(
            "`{program} --version` failed ({}): this test needs a working `{default}`; install \
             the Debian package `{package}` (`apt-get install {package}`) or set {var}",
            o.status
        ),
        Err(e) => panic!(
            "cannot run `{program}` ({e}): this test needs it; install the Debian package \
             `{package}` (`apt-get install {package}`) or set {var}"
        ),
    }
}
