//! The harness itself: the artifacts under test are the ones cargo built for this run, and the
//! private PostgreSQL and NATS servers start, serve, crash, restart on their port, and vanish on
//! drop.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;
use yonexus_e2e::services::{self, Nats, Postgres, PG_DATABASE, PG_USER};
use yonexus_e2e::*;

/// Reads on a loaded machine may be slow; only a dead server takes this long.
const IO_TIMEOUT: Duration = Duration::from_secs(30);

#[test]
fn binaries_and_plugins_are_the_ones_built_for_this_run() {
    let host = bin("yonexus");
    assert_eq!(host.parent(), Some(profile_dir()), "{}", host.display());
    let out = Command::new(&host).arg("--version").output().unwrap();
    assert!(out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stdout).starts_with("yonexus "),
        "{out:?}"
    );
    assert!(bin("yonexus-follower").is_file());
    for name in ["echo", "relay", "broadcast", "presence"] {
        let so = plugin(name);
        assert!(so.is_file(), "{}", so.display());
    }
    // What is not there is an error that says how to get it.
    let err = format!("{:#}", try_bin("no-such-binary").unwrap_err());
    assert!(err.contains("no-such-binary"), "{err}");
    let err = format!("{:#}", try_plugin("no-such-plugin").unwrap_err());
    assert!(err.contains("yonexus-plugin-no-such-plugin"), "{err}");
}

/// `psql` over TCP with a password, as a client of the server would connect.
fn psql_tcp(pg: &Postgres, password: &str, database: &str, sql: &str) -> (bool, String) {
    let out = Command::new(services::psql_bin().unwrap())
        .args(["-X", "-w", "-A", "-t", "-h", "127.0.0.1", "-p"])
        .arg(pg.port().to_string())
        .args(["-U", PG_USER, "-d", database, "-c", sql])
        .env("PGPASSWORD", password)
        .env("PGCONNECT_TIMEOUT", "30")
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout).trim(),
        String::from_utf8_lossy(&out.stderr).trim()
    );
    (out.status.success(), text)
}

/// A raw protocol-3.0 startup over TCP; returns the authentication request code and the SASL
/// mechanisms offered (code 10).
fn startup(port: u16) -> (u8, i32, Vec<String>) {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    let mut body = 196_608i32.to_be_bytes().to_vec();
    for part in ["user", PG_USER, "database", PG_DATABASE, ""] {
        body.extend_from_slice(part.as_bytes());
        body.push(0);
    }
    let mut msg = (body.len() as i32 + 4).to_be_bytes().to_vec();
    msg.extend(body);
    s.write_all(&msg).unwrap();
    let mut head = [0u8; 5];
    s.read_exact(&mut head).unwrap();
    let len = i32::from_be_bytes([head[1], head[2], head[3], head[4]]) as usize;
    let mut rest = vec![0u8; len.saturating_sub(4)];
    s.read_exact(&mut rest).unwrap();
    let code = i32::from_be_bytes([rest[0], rest[1], rest[2], rest[3]]);
    let mechanisms = rest[4..]
        .split(|b| *b == 0)
        .filter(|m| !m.is_empty())
        .map(|m| String::from_utf8_lossy(m).into_owned())
        .collect();
    (head[0], code, mechanisms)
}

#[test]
fn postgres_is_private_needs_its_password_and_survives_a_crash_and_a_restart() {
    let mut pg = Postgres::start().unwrap();
    let port = pg.port();
    let dir: PathBuf = pg.dir().to_owned();
    assert!(pg.url().starts_with(&format!(
        "postgres://{PG_USER}:{}@127.0.0.1:{port}/{PG_DATABASE}",
        pg.password()
    )));

    // The wire: a startup over TCP is asked for SCRAM, not let in.
    let (kind, code, mechanisms) = startup(port);
    assert_eq!((kind, code), (b'R', 10), "expected AuthenticationSASL");
    assert!(
        mechanisms.iter().any(|m| m == "SCRAM-SHA-256"),
        "{mechanisms:?}"
    );
    // The password lets a client in; a wrong one does not.
    let (ok, text) = psql_tcp(
        &pg,
        pg.password(),
        PG_DATABASE,
        "select current_user || '@' || current_database()",
    );
    assert!(ok, "{text}");
    assert_eq!(text, format!("{PG_USER}@{PG_DATABASE}"));
    let (ok, text) = psql_tcp(&pg, "wrong", PG_DATABASE, "select 1");
    assert!(
        !ok && text.contains("password authentication failed"),
        "{text}"
    );
    // The URL is what a client uses.
    let out = Command::new(services::psql_bin().unwrap())
        .args(["-X", "-w", "-A", "-t", "-c", "select 7"])
        .arg(pg.url())
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "7", "{out:?}");

    // As root, the server runs as an unprivileged account.
    let pid = pg.pid().unwrap();
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let uid = status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|l| l.split_whitespace().next())
        .unwrap();
    assert_ne!(uid, "0", "postgres runs as root");

    // A committed row survives SIGKILL of the server and all its backends.
    pg.psql(
        PG_DATABASE,
        "CREATE TABLE t (x int); INSERT INTO t VALUES (42)",
    )
    .unwrap();
    pg.kill();
    assert!(!pg.is_running());
    assert!(!services::port_accepts(port), "port {port} still open");
    pg.restart().unwrap();
    assert_eq!(pg.port(), port);
    assert_eq!(pg.psql(PG_DATABASE, "SELECT x FROM t").unwrap(), "42");

    // A clean stop closes the port; a restart opens the same one.
    pg.stop();
    assert!(!services::port_accepts(port));
    assert!(pg.psql(PG_DATABASE, "SELECT 1").is_err());
    pg.restart().unwrap();
    let (ok, text) = psql_tcp(&pg, pg.password(), PG_DATABASE, "SELECT x FROM t");
    assert!(ok && text == "42", "{text}");

    // More databases, each with its URL.
    let url = pg.create_database("second").unwrap();
    assert!(url.ends_with(&format!(":{port}/second")), "{url}");
    let (ok, text) = psql_tcp(&pg, pg.password(), "second", "select current_database()");
    assert!(ok && text == "second", "{text}");
    assert!(pg.create_database("bad name; drop").is_err());

    // Gone on drop: process, port and files.
    drop(pg);
    assert!(!services::port_accepts(port));
    assert!(!dir.exists(), "{} left behind", dir.display());
}

/// A NATS client on a raw socket.
struct NatsConn {
    reader: BufReader<TcpStream>,
    writer: TcpStream,
}

impl NatsConn {
    /// Connect; returns the connection and the server's INFO.
    fn open(port: u16) -> (NatsConn, String) {
        let s = TcpStream::connect(("127.0.0.1", port)).unwrap();
        s.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
        let mut c = NatsConn {
            reader: BufReader::new(s.try_clone().unwrap()),
            writer: s,
        };
        let info = c.line();
        assert!(info.starts_with("INFO "), "{info}");
        c.send("CONNECT {\"verbose\":false,\"pedantic\":false}\r\n");
        (c, info)
    }

    fn send(&mut self, text: &str) {
        self.writer.write_all(text.as_bytes()).unwrap();
    }

    fn line(&mut self) -> String {
        let mut line = String::new();
        self.reader.read_line(&mut line).unwrap();
        line.trim_end().to_owned()
    }

    /// The next line that is not a server PING (answered).
    fn next(&mut self) -> String {
        loop {
            let line = self.line();
            if line == "PING" {
                self.send("PONG\r\n");
                continue;
            }
            return line;
        }
    }

    fn ping(&mut self) {
        self.send("PING\r\n");
        assert_eq!(self.next(), "PONG");
    }
}

#[test]
fn nats_answers_relays_a_message_and_restarts_on_its_port() {
    let mut nats = Nats::start().unwrap();
    let port = nats.port();
    let dir = nats.dir().to_owned();
    assert_eq!(nats.url(), format!("nats://127.0.0.1:{port}"));

    let (mut a, _) = NatsConn::open(port);
    a.ping();
    let (mut b, _) = NatsConn::open(port);
    b.send("SUB yonexus.test 1\r\n");
    b.ping(); // the subscription is in place once PONG comes back
    a.send("PUB yonexus.test 5\r\nhello\r\n");
    assert_eq!(b.next(), "MSG yonexus.test 1 5");
    assert_eq!(b.next(), "hello");

    // Crash: the port closes; a restart opens the same one.
    nats.kill();
    assert!(!nats.is_running());
    assert!(!services::port_accepts(port));
    nats.restart().unwrap();
    assert_eq!(nats.port(), port);
    let (mut c, _) = NatsConn::open(port);
    c.ping();
    nats.stop();
    assert!(!services::port_accepts(port));
    nats.restart().unwrap();
    NatsConn::open(port).0.ping();

    drop(nats);
    assert!(!services::port_accepts(port));
    assert!(!dir.exists(), "{} left behind", dir.display());

    // JetStream, when asked for.
    let js = Nats::start_with_jetstream().unwrap();
    let (mut d, info) = NatsConn::open(js.port());
    assert!(info.contains("\"jetstream\":true"), "{info}");
    d.ping();
}
