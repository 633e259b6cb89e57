//! Real external services for the end-to-end tests, each private to the test that starts it:
//!
//! - [`Postgres`]: a PostgreSQL server made by `initdb` in a temporary directory, listening on
//!   an ephemeral port on 127.0.0.1, with one database and a password-authenticated superuser.
//! - [`Nats`]: `nats-server` on an ephemeral port on 127.0.0.1 (optionally with JetStream).
//!
//! Both can be stopped, killed (SIGKILL, as a crash) and started again on the same port and
//! data directory, and are stopped (their directory removed) on drop. Starting blocks the
//! calling thread (as [`crate::HostProc::start`] does) for up to [`START_TIMEOUT`].
//!
//! The binaries are found on this machine ([`pg_bindir`], [`nats_server_bin`]); when one is
//! missing the error names the Debian package to install. The tests are not optional: `.ci/run`
//! installs `postgresql` and `nats-server`.

use anyhow::{anyhow, bail, Context, Result};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How long a service may take to become ready (generous: CI machines are busy).
pub const START_TIMEOUT: Duration = Duration::from_secs(90);
/// How long a clean shutdown may take before the service is killed.
const STOP_TIMEOUT: Duration = Duration::from_secs(30);

/// The PostgreSQL role every [`Postgres`] creates (a superuser).
pub const PG_USER: &str = "yonexus";
/// The database every [`Postgres`] creates.
pub const PG_DATABASE: &str = "yonexus";

// ---------------------------------------------------------------------------------------------
// Finding the binaries

/// The directory holding PostgreSQL's server binaries (`initdb`, `postgres`): `$YONEXUS_PG_BINDIR`,
/// else the newest `/usr/lib/postgresql/<version>/bin` (Debian's layout), else a `PATH` entry.
pub fn pg_bindir() -> Result<PathBuf> {
    let mut candidates = Vec::new();
    if let Some(dir) = std::env::var_os("YONEXUS_PG_BINDIR") {
        candidates.push(PathBuf::from(dir));
    }
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .map(|entries| {
            entries
                .filter_map(|e| e.ok())
                .filter_map(|e| {
                    let version = e.file_name().to_str()?.parse::<u32>().ok()?;
                    Some((version, e.path().join("bin")))
                })
                .collect()
        })
        .unwrap_or_default();
    versions.sort_by_key(|v| std::cmp::Reverse(v.0));
    candidates.extend(versions.into_iter().map(|(_, dir)| dir));
    candidates.extend(path_dirs());
    candidates
        .into_iter()
        .find(|dir| is_executable(&dir.join("initdb")) && is_executable(&dir.join("postgres")))
        .ok_or_else(|| {
            anyhow!(
                "PostgreSQL's server binaries (initdb, postgres) are not in $YONEXUS_PG_BINDIR, \
                 /usr/lib/postgresql/*/bin or on PATH: install the Debian package `postgresql` \
                 (`apt-get install -y postgresql`, as .ci/run does)"
            )
        })
}

/// `psql`: next to the server binaries, else on `PATH`.
pub fn psql_bin() -> Result<PathBuf> {
    let beside = pg_bindir().map(|d| d.join("psql")).ok();
    beside
        .filter(|p| is_executable(p))
        .or_else(|| find_on_path("psql"))
        .ok_or_else(|| {
            anyhow!(
                "psql is not next to PostgreSQL's server binaries nor on PATH: install the Debian \
                 package `postgresql-client` (the `postgresql` package depends on it)"
            )
        })
}

/// `nats-server`: `$YONEXUS_NATS_SERVER`, else on `PATH`, else in `/usr/sbin` (where Debian puts
/// it; not on a normal user's `PATH`).
pub fn nats_server_bin() -> Result<PathBuf> {
    std::env::var_os("YONEXUS_NATS_SERVER")
        .map(PathBuf::from)
        .filter(|p| is_executable(p))
        .or_else(|| find_on_path("nats-server"))
        .or_else(|| {
            let debian = PathBuf::from("/usr/sbin/nats-server");
            is_executable(&debian).then_some(debian)
        })
        .ok_or_else(|| {
            anyhow!(
                "nats-server is not on PATH nor in /usr/sbin: install the Debian package `nats-server` \
                 (`apt-get install -y nats-server`, as .ci/run does), or set YONEXUS_NATS_SERVER"
            )
        })
}

fn path_dirs() -> Vec<PathBuf> {
    std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect())
        .unwrap_or_default()
}

fn find_on_path(name: &str) -> Option<PathBuf> {
    path_dirs()
        .into_iter()
        .map(|d| d.join(name))
        .find(|p| is_executable(p))
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

// ---------------------------------------------------------------------------------------------
// Processes

/// A free TCP port on 127.0.0.1 (free when asked; a server that then fails to bind it retries
/// with another on its first start).
pub fn free_port() -> Result<u16> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").context("binding 127.0.0.1:0")?;
    Ok(listener.local_addr()?.port())
}

/// Whether something accepts TCP connections on 127.0.0.1:`port`.
pub fn port_accepts(port: u16) -> bool {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    TcpStream::connect_timeout(&addr, Duration::from_secs(2)).is_ok()
}

/// A running service process whose stderr lines are collected into a log shared across restarts.
struct Proc {
    child: Child,
    /// Index in the log of this process's first line.
    first_line: usize,
}

/// Captured output lines of one service, across all its starts.
type Log = Arc<Mutex<Vec<String>>>;

fn spawn(mut cmd: Command, label: &'static str, log: &Log) -> Result<Proc> {
    let first_line = log.lock().map(|l| l.len()).unwrap_or(0);
    let program = cmd.get_program().to_owned();
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    // Shared by many tests: started from a thread that outlives them all, and killed by the
    // kernel with the test binary however it ends.
    let mut child = crate::spawn_for_the_process(cmd)
        .with_context(|| format!("spawning {label} ({program:?})"))?;
    let outputs: [Option<Box<dyn Read + Send>>; 2] = [
        child
            .stdout
            .take()
            .map(|s| Box::new(s) as Box<dyn Read + Send>),
        child
            .stderr
            .take()
            .map(|s| Box::new(s) as Box<dyn Read + Send>),
    ];
    for out in outputs.into_iter().flatten() {
        let sink = Arc::clone(log);
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                if std::env::var_os("YONEXUS_TEST_ECHO_LOGS").is_some() {
                    eprintln!("{label}: {line}");
                }
                sink.lock().map(|mut l| l.push(line)).ok();
            }
        });
    }
    Ok(Proc { child, first_line })
}

impl Proc {
    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Wait until a line of this process contains `needle`; fails when it exits first.
    fn wait_for_line(&mut self, log: &Log, needle: &str, what: &str) -> Result<()> {
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            let found = log
                .lock()
                .map(|l| {
                    l.iter()
                        .skip(self.first_line)
                        .any(|line| line.contains(needle))
                })
                .unwrap_or(false);
            if found {
                return Ok(());
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                // Let the reader threads catch the last lines.
                std::thread::sleep(Duration::from_millis(100));
                bail!(
                    "{what} exited ({status}) before it was ready:\n{}",
                    self.tail(log)
                );
            }
            if Instant::now() > deadline {
                bail!(
                    "{what} was not ready within {} s:\n{}",
                    START_TIMEOUT.as_secs(),
                    self.tail(log)
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn tail(&self, log: &Log) -> String {
        let lines = log.lock().map(|l| l.clone()).unwrap_or_default();
        let mine = lines.get(self.first_line..).unwrap_or_default();
        mine[mine.len().saturating_sub(30)..].join("\n")
    }

    fn said(&self, log: &Log, needle: &str) -> bool {
        log.lock()
            .map(|l| {
                l.iter()
                    .skip(self.first_line)
                    .any(|line| line.to_ascii_lowercase().contains(needle))
            })
            .unwrap_or(false)
    }

    /// Send `signal`, wait up to `timeout` for the exit; true when it exited.
    fn signal_and_wait(&mut self, signal: i32, timeout: Duration) -> bool {
        send_signal(self.pid(), signal);
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if !self.running() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        false
    }

    /// SIGKILL this process and every child it has (as a crash of the whole service would),
    /// then wait until they are all gone.
    fn kill_tree(&mut self) {
        let children = children_of(self.pid());
        send_signal(self.pid(), libc::SIGKILL);
        for pid in &children {
            send_signal(*pid, libc::SIGKILL);
        }
        let _ = self.child.wait();
        let deadline = Instant::now() + Duration::from_secs(15);
        while children.iter().any(|p| alive(*p)) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// What `Postgres` and `Nats` do with their (maybe stopped) server process.
trait ServerProc {
    fn is_up(&mut self) -> bool;
    fn up_pid(&mut self) -> Option<u32>;
    /// SIGINT (each server's clean, fast shutdown), then SIGKILL to the whole tree after
    /// `timeout`.
    fn shut_down(&mut self, timeout: Duration);
    /// SIGKILL to the whole tree, as a crash.
    fn crash(&mut self);
}

impl ServerProc for Option<Proc> {
    fn is_up(&mut self) -> bool {
        self.as_mut().is_some_and(Proc::running)
    }

    fn up_pid(&mut self) -> Option<u32> {
        self.is_up().then(|| self.as_ref().map(Proc::pid)).flatten()
    }

    fn shut_down(&mut self, timeout: Duration) {
        if let Some(mut proc) = self.take() {
            if proc.running() && !proc.signal_and_wait(libc::SIGINT, timeout) {
                proc.kill_tree();
            }
        }
    }

    fn crash(&mut self) {
        if let Some(mut proc) = self.take() {
            proc.kill_tree();
        }
    }
}

fn send_signal(pid: u32, signal: i32) {
    if let Ok(pid) = libc::pid_t::try_from(pid) {
        // SAFETY: kill(2) has no memory-safety preconditions.
        unsafe { libc::kill(pid, signal) };
    }
}

/// The state letter and parent pid of `pid`, from `/proc/<pid>/stat`.
fn proc_stat(pid: u32) -> Option<(char, u32)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // "pid (comm) S ppid ...": comm may hold spaces and parentheses, so split after the last ')'.
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace();
    let state = fields.next()?.chars().next()?;
    let ppid = fields.next()?.parse().ok()?;
    Some((state, ppid))
}

fn alive(pid: u32) -> bool {
    proc_stat(pid).is_some_and(|(state, _)| state != 'Z' && state != 'X')
}

fn children_of(parent: u32) -> Vec<u32> {
    std::fs::read_dir("/proc")
        .map(|entries| {
            entries
                .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
                .filter(|pid| proc_stat(*pid).is_some_and(|(_, ppid)| ppid == parent))
                .collect()
        })
        .unwrap_or_default()
}

fn is_root() -> bool {
    // SAFETY: geteuid(2) cannot fail and has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// Remove `PG*` variables (PGDATA, PGPORT, PGHOST, …) a developer's shell may have set.
fn clean_pg_env(cmd: &mut Command) -> &mut Command {
    for (key, _) in std::env::vars_os() {
        if key.to_str().is_some_and(|k| k.starts_with("PG")) {
            cmd.env_remove(key);
        }
    }
    cmd
}

/// An unprivileged account (uid, gid, name) from `/etc/passwd`: the first of `names` that exists.
fn account(names: &[&str]) -> Option<(u32, u32, String)> {
    let passwd = std::fs::read_to_string("/etc/passwd").ok()?;
    names.iter().find_map(|want| {
        passwd.lines().find_map(|line| {
            let mut f = line.split(':');
            let name = f.next()?;
            if name != *want {
                return None;
            }
            let uid = f.nth(1)?.parse().ok()?;
            let gid = f.next()?.parse().ok()?;
            Some((uid, gid, name.to_owned()))
        })
    })
}

fn random_hex(bytes: usize) -> Result<String> {
    let mut buf = vec![0u8; bytes];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut buf))
        .context("reading /dev/urandom")?;
    Ok(buf.iter().map(|b| format!("{b:02x}")).collect())
}

// ---------------------------------------------------------------------------------------------
// PostgreSQL

/// A private PostgreSQL server.
///
/// - Made by `initdb` in a fresh temporary directory (`data/` for the cluster, `s/` for the
///   Unix socket), as the current user — or, when running as root (CI does; initdb and postgres
///   refuse root), as the `postgres` account (else `nobody`), which then owns the directory.
/// - Listens on 127.0.0.1 only, on an ephemeral port kept across [`Postgres::restart`].
/// - Authentication: TCP connections need the password (`scram-sha-256`) of the superuser
///   [`PG_USER`], a random one per server ([`Postgres::url`] carries it, so never log a URL);
///   the Unix socket, in a directory only the server's account (and root) can enter, trusts
///   local connections — [`Postgres::psql`] uses it for test setup and inspection.
/// - `fsync = off`: a killed server (even SIGKILL) loses nothing, since its writes are in the
///   kernel's page cache; only a crash of the whole machine would, which no test simulates.
///   Commits are still synchronous (`synchronous_commit` stays on).
pub struct Postgres {
    dir: tempfile::TempDir,
    bindir: PathBuf,
    port: u16,
    password: String,
    run_as: Option<(u32, u32)>,
    proc: Option<Proc>,
    log: Log,
}

impl Postgres {
    /// initdb, start, and create the database [`PG_DATABASE`].
    pub fn start() -> Result<Postgres> {
        let bindir = pg_bindir()?;
        let run_as = if is_root() {
            let (uid, gid, _) = account(&["postgres", "nobody"]).ok_or_else(|| {
                anyhow!(
                    "running as root, and PostgreSQL refuses to run as root, but there is no \
                     `postgres` or `nobody` account to run it as: create one (`useradd postgres`)"
                )
            })?;
            Some((uid, gid))
        } else {
            None
        };
        // As root, under /tmp: the service's account must be able to reach the directory, and
        // $TMPDIR may be inside root's home.
        let mut builder = tempfile::Builder::new();
        builder.prefix("yonexus-pg-");
        let dir = if run_as.is_some() {
            builder.tempdir_in("/tmp")
        } else {
            builder.tempdir()
        }
        .context("creating a temporary directory for PostgreSQL")?;
        let mut pg = Postgres {
            dir,
            bindir,
            port: 0,
            password: random_hex(16)?,
            run_as,
            proc: None,
            log: Arc::default(),
        };
        pg.init()?;
        for attempt in 0.. {
            pg.port = free_port()?;
            match pg.launch() {
                Ok(()) => break,
                Err(_) if attempt < 5 && pg.port_was_taken() => continue,
                Err(e) => return Err(e),
            }
        }
        pg.psql(
            "postgres",
            &format!("CREATE DATABASE {PG_DATABASE} OWNER {PG_USER}"),
        )
        .context("creating the test database")?;
        Ok(pg)
    }

    /// The server's temporary directory (`data/`, `s/`), removed on drop.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The cluster's data directory.
    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// The directory of the Unix socket (`.s.PGSQL.<port>`).
    pub fn socket_dir(&self) -> PathBuf {
        self.dir.path().join("s")
    }

    fn as_service_user<'c>(&self, cmd: &'c mut Command) -> &'c mut Command {
        if let Some((uid, gid)) = self.run_as {
            // std drops supplementary groups when it changes the uid as root.
            cmd.uid(uid).gid(gid);
        }
        clean_pg_env(cmd).current_dir(self.dir.path())
    }

    fn init(&mut self) -> Result<()> {
        let root = self.dir.path();
        let sockets = self.socket_dir();
        std::fs::create_dir(&sockets).context("creating the socket directory")?;
        let pwfile = root.join("pw");
        {
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&pwfile)
                .context("writing the initdb password file")?;
            writeln!(f, "{}", self.password)?;
        }
        if let Some((uid, gid)) = self.run_as {
            for path in [root, sockets.as_path(), pwfile.as_path()] {
                std::os::unix::fs::chown(path, Some(uid), Some(gid))
                    .with_context(|| format!("chown {} to uid {uid}", path.display()))?;
            }
        }
        let mut cmd = Command::new(self.bindir.join("initdb"));
        cmd.arg("-D")
            .arg(self.data_dir())
            .args(["-U", PG_USER, "--pwfile"])
            .arg(&pwfile)
            .args([
                "--auth-local=trust",
                "--auth-host=scram-sha-256",
                "-E",
                "UTF8",
                "--locale=C",
                "--no-sync",
            ]);
        let out = self
            .as_service_user(&mut cmd)
            .output()
            .context("running initdb")?;
        let _ = std::fs::remove_file(&pwfile);
        if !out.status.success() {
            bail!(
                "initdb failed ({}):\n{}{}",
                out.status,
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(())
    }

    /// Start `postgres` on `self.port` and wait until it accepts connections.
    fn launch(&mut self) -> Result<()> {
        let mut cmd = Command::new(self.bindir.join("postgres"));
        cmd.arg("-D")
            .arg(self.data_dir())
            .arg("-p")
            .arg(self.port.to_string())
            .args(["-h", "127.0.0.1", "-k"])
            .arg(self.socket_dir())
            .args([
                "-c",
                "fsync=off",
                "-c",
                "shared_buffers=32MB",
                "-c",
                "max_connections=200",
                "-c",
                "lc_messages=C",
            ]);
        self.as_service_user(&mut cmd);
        let mut proc = spawn(cmd, "postgres", &self.log)?;
        let ready = proc.wait_for_line(
            &self.log,
            "database system is ready to accept connections",
            "postgres",
        );
        match ready {
            Ok(()) => {
                self.proc = Some(proc);
                Ok(())
            }
            Err(e) => {
                proc.kill_tree();
                self.proc = Some(proc);
                Err(e)
            }
        }
    }

    fn port_was_taken(&self) -> bool {
        self.proc
            .as_ref()
            .is_some_and(|p| p.said(&self.log, "address already in use"))
    }

    /// The port it listens on (127.0.0.1), the same across restarts.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `postgres://yonexus:<password>@127.0.0.1:<port>/yonexus`. Holds the password: never log it.
    pub fn url(&self) -> String {
        self.url_for(PG_DATABASE)
    }

    /// The URL of another database on this server (see [`Postgres::create_database`]).
    pub fn url_for(&self, database: &str) -> String {
        format!(
            "postgres://{PG_USER}:{}@127.0.0.1:{}/{database}",
            self.password, self.port
        )
    }

    /// The superuser's password.
    pub fn password(&self) -> &str {
        &self.password
    }

    /// Create another database (a name of `[a-z0-9_]`); returns its URL.
    pub fn create_database(&self, name: &str) -> Result<String> {
        if name.is_empty()
            || !name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
        {
            bail!("database name {name:?}: use only a-z, 0-9 and _");
        }
        self.psql(
            "postgres",
            &format!("CREATE DATABASE {name} OWNER {PG_USER}"),
        )?;
        Ok(self.url_for(name))
    }

    /// Run `sql` on `database` as the superuser over the Unix socket with `psql`; returns its
    /// unaligned, tuples-only output (`|` between columns, one row a line), trimmed.
    pub fn psql(&self, database: &str, sql: &str) -> Result<String> {
        let mut cmd = Command::new(psql_bin()?);
        cmd.args(["-X", "-A", "-t", "-q", "-v", "ON_ERROR_STOP=1", "-h"])
            .arg(self.socket_dir())
            .arg("-p")
            .arg(self.port.to_string())
            .args(["-U", PG_USER, "-d", database, "-c", sql]);
        let out = clean_pg_env(&mut cmd).output().context("running psql")?;
        if !out.status.success() {
            bail!(
                "psql on {database} failed ({}): {}",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
    }

    /// Whether the server process is running.
    pub fn is_running(&mut self) -> bool {
        self.proc.is_up()
    }

    /// The postmaster's pid, while running.
    pub fn pid(&mut self) -> Option<u32> {
        self.proc.up_pid()
    }

    /// Fast shutdown (SIGINT: roll back open transactions, disconnect clients, checkpoint);
    /// killed if that takes longer than 30 s.
    pub fn stop(&mut self) {
        self.proc.shut_down(STOP_TIMEOUT);
    }

    /// SIGKILL the server and all its backends at once, as a crash would. The next
    /// [`Postgres::restart`] runs crash recovery.
    pub fn kill(&mut self) {
        self.proc.crash();
    }

    /// Start it again (stopping it first if it runs) on the same port and data directory.
    pub fn restart(&mut self) -> Result<()> {
        self.stop();
        self.launch().map_err(|e| {
            if self.port_was_taken() {
                anyhow!(
                    "PostgreSQL could not listen on its port {} again: another process took it \
                     while it was stopped: {e}",
                    self.port
                )
            } else {
                e
            }
        })
    }

    /// Every line the server printed, across restarts.
    pub fn logs(&self) -> Vec<String> {
        self.log.lock().map(|l| l.clone()).unwrap_or_default()
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        self.proc.shut_down(Duration::from_secs(10));
        // The TempDir field then removes the directory (root may remove the service
        // account's files).
    }
}

// ---------------------------------------------------------------------------------------------
// NATS

/// A private `nats-server` on 127.0.0.1 with no authentication.
pub struct Nats {
    dir: tempfile::TempDir,
    bin: PathBuf,
    port: u16,
    jetstream: bool,
    proc: Option<Proc>,
    log: Log,
}

impl Nats {
    /// Core NATS (no persistence).
    pub fn start() -> Result<Nats> {
        Nats::start_inner(false)
    }

    /// With JetStream, storing in the server's temporary directory (kept across restarts).
    pub fn start_with_jetstream() -> Result<Nats> {
        Nats::start_inner(true)
    }

    fn start_inner(jetstream: bool) -> Result<Nats> {
        let dir = tempfile::Builder::new()
            .prefix("yonexus-nats-")
            .tempdir()
            .context("creating a temporary directory for nats-server")?;
        let mut nats = Nats {
            dir,
            bin: nats_server_bin()?,
            port: 0,
            jetstream,
            proc: None,
            log: Arc::default(),
        };
        for attempt in 0.. {
            nats.port = free_port()?;
            match nats.launch() {
                Ok(()) => break,
                Err(_) if attempt < 5 && nats.port_was_taken() => continue,
                Err(e) => return Err(e),
            }
        }
        Ok(nats)
    }

    fn launch(&mut self) -> Result<()> {
        let mut cmd = Command::new(&self.bin);
        cmd.args(["-a", "127.0.0.1", "-p"])
            .arg(self.port.to_string())
            .args(["-n", "yonexus-test"])
            .current_dir(self.dir.path());
        if self.jetstream {
            cmd.arg("-js").arg("-sd").arg(self.dir.path().join("js"));
        }
        let mut proc = spawn(cmd, "nats-server", &self.log)?;
        match proc.wait_for_line(&self.log, "Server is ready", "nats-server") {
            Ok(()) => {
                self.proc = Some(proc);
                Ok(())
            }
            Err(e) => {
                proc.kill_tree();
                self.proc = Some(proc);
                Err(e)
            }
        }
    }

    fn port_was_taken(&self) -> bool {
        self.proc
            .as_ref()
            .is_some_and(|p| p.said(&self.log, "address already in use"))
    }

    /// The port it listens on (127.0.0.1), the same across restarts.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The server's temporary directory (its working directory and JetStream store), removed
    /// on drop.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// `nats://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// Whether the server process is running.
    pub fn is_running(&mut self) -> bool {
        self.proc.is_up()
    }

    /// The server's pid, while running.
    pub fn pid(&mut self) -> Option<u32> {
        self.proc.up_pid()
    }

    /// Clean shutdown (SIGINT: clients see their connection close); killed after 30 s.
    pub fn stop(&mut self) {
        self.proc.shut_down(STOP_TIMEOUT);
    }

    /// SIGKILL, as a crash.
    pub fn kill(&mut self) {
        self.proc.crash();
    }

    /// Start it again (stopping it first if it runs) on the same port (and JetStream store).
    pub fn restart(&mut self) -> Result<()> {
        self.stop();
        self.launch().map_err(|e| {
            if self.port_was_taken() {
                anyhow!(
                    "nats-server could not listen on its port {} again: another process took it \
                     while it was stopped: {e}",
                    self.port
                )
            } else {
                e
            }
        })
    }

    /// Every line the server printed, across restarts.
    pub fn logs(&self) -> Vec<String> {
        self.log.lock().map(|l| l.clone()).unwrap_or_default()
    }
}

impl Drop for Nats {
    fn drop(&mut self) {
        self.proc.shut_down(Duration::from_secs(10));
    }
}
