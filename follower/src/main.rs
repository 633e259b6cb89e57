//! `yonexus-follower`: connect to a Yonexus host, send stdin lines as rule messages, print the
//! rule messages received on stdout.

use clap::{Parser, ValueEnum};
use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;
use tokio::sync::oneshot;
use yonexus_follower::line::parse_line;
use yonexus_follower::{
    spawn, CodeProvider, Config, Event, FollowerError, FollowerHandle, PairingPrompt,
};
use yonexus_protocol::validate::normalize_pairing_code;

/// How long to wait, after stdin ends, for queued messages to reach the host.
const FLUSH_WAIT: Duration = Duration::from_secs(5);

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

/// A Yonexus follower.
///
/// Connects to a Yonexus host, pairs (once) and authenticates, then:
/// every line typed on stdin as `rule::content` is sent to the host as a rule message, and every
/// rule message the host sends is printed on stdout as `rule_id::content`, one per line.
/// Status, events and errors go to stderr. End of stdin sends what is still queued and exits.
///
/// On first start a keypair is generated and stored in the state directory; the secret obtained
/// by pairing is stored there too (file mode 0600). When pairing is needed and no --pairing-code
/// is given (or it was refused), the next line on stdin is taken as the code.
#[derive(Debug, Parser)]
#[command(name = "yonexus-follower", version, verbatim_doc_comment)]
struct Args {
    /// WebSocket URL of the host, e.g. ws://127.0.0.1:8787/
    #[arg(long, value_name = "URL")]
    url: String,

    /// This follower's identifier (must be on the host's allowlist)
    #[arg(long = "id", value_name = "IDENTIFIER")]
    id: String,

    /// Directory holding the follower's identity (<IDENTIFIER>.json)
    #[arg(
        long = "state",
        value_name = "DIR",
        default_value = "./yonexus-follower-state"
    )]
    state: PathBuf,

    /// Pairing code the admin received; used for the first pairing attempt (stdin is asked
    /// if it is refused)
    #[arg(long, value_name = "CODE")]
    pairing_code: Option<String>,

    /// Seconds between heartbeats once authenticated
    #[arg(long, value_name = "N", default_value_t = 60,
          value_parser = clap::value_parser!(u64).range(1..))]
    heartbeat_secs: u64,

    /// Extra CA certificate(s) (PEM) to trust for a wss:// host with a private or self-signed
    /// certificate (the public web roots are always trusted)
    #[arg(long, value_name = "FILE")]
    ca_file: Option<PathBuf>,

    /// Format of the log lines written to stderr (filter with RUST_LOG, default "warn")
    #[arg(long, value_enum, value_name = "FORMAT", default_value_t = LogFormat::Text)]
    log_format: LogFormat,
}

/// Pairing codes for the library: the --pairing-code once, then the next stdin line.
struct Prompter {
    preset: Mutex<Option<String>>,
    pending: Mutex<Option<oneshot::Sender<String>>>,
    stdin_closed: AtomicBool,
}

impl Prompter {
    /// The prompt still waiting for a code, if any (one the library stopped waiting for, e.g.
    /// because the connection dropped, does not swallow a line).
    fn take_pending(&self) -> Option<oneshot::Sender<String>> {
        self.pending
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
            .filter(|tx| !tx.is_closed())
    }

    async fn code(&self, prompt: PairingPrompt) -> Option<String> {
        if !prompt.retry {
            let preset = self
                .preset
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .take();
            if let Some(code) = preset {
                eprintln!("using the pairing code given with --pairing-code");
                return Some(normalize_pairing_code(&code));
            }
        }
        if self.stdin_closed.load(Ordering::SeqCst) {
            eprintln!("pairing code needed but stdin is closed");
            return None;
        }
        let (tx, rx) = oneshot::channel();
        *self.pending.lock().unwrap_or_else(PoisonError::into_inner) = Some(tx);
        if prompt.retry {
            eprintln!("that pairing code was not accepted");
        }
        if let Some(ttl) = prompt.ttl_seconds {
            eprintln!("the pairing code expires in {ttl} s");
        }
        eprintln!(
            "Enter the pairing code the admin received for '{}':",
            prompt.identifier
        );
        match rx.await {
            Ok(code) => Some(normalize_pairing_code(&code)),
            Err(_) => None,
        }
    }
}

fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

fn print_event(event: Event, url: &str) {
    match event {
        Event::Rule { rule_id, content } => {
            let mut out = std::io::stdout().lock();
            let _ = writeln!(out, "{rule_id}::{content}");
            let _ = out.flush();
        }
        Event::Connected => eprintln!("connected to {url}"),
        Event::PairingRequired {
            admin_notification, ..
        } => {
            eprintln!("pairing required");
            if admin_notification.as_deref() == Some("failed") {
                eprintln!("warning: the host could not notify the admin of the pairing code");
            }
        }
        Event::Paired => eprintln!("paired"),
        Event::Authenticated => eprintln!("authenticated"),
        Event::HostError { code, message } => eprintln!("host error {code}: {message}"),
        Event::PairFailed { reason } => eprintln!("pairing failed: {reason}"),
        Event::AuthFailed { reason } => eprintln!("authentication failed: {reason}"),
        Event::RePairRequired { reason } => eprintln!("re-pairing required: {reason}"),
        Event::StatusUpdate { status, reason } => eprintln!("status: {status} ({reason})"),
        Event::Disconnected { reason } => eprintln!("disconnected: {reason}"),
    }
}

/// Read stdin on a plain thread (blocking reads), handing raw lines to the async side. The
/// channel closes at end of input.
fn stdin_lines() -> tokio::sync::mpsc::Receiver<Vec<u8>> {
    let (tx, rx) = tokio::sync::mpsc::channel(64);
    let spawned = std::thread::Builder::new()
        .name("stdin".into())
        .spawn(move || {
            let mut stdin = std::io::stdin().lock();
            loop {
                let mut buf = Vec::new();
                match std::io::BufRead::read_until(&mut stdin, b'\n', &mut buf) {
                    Ok(0) => break,
                    Ok(_) => {
                        if tx.blocking_send(buf).is_err() {
                            break;
                        }
                    }
                    Err(e) => {
                        eprintln!("error reading stdin: {e}");
                        break;
                    }
                }
            }
        });
    if let Err(e) = spawned {
        eprintln!("error: cannot start the stdin reader: {e}");
    }
    rx
}

/// Handle stdin lines: answer a pending pairing prompt, or send `rule::content`.
async fn read_stdin(handle: FollowerHandle, prompter: Arc<Prompter>) {
    let mut lines = stdin_lines();
    while let Some(buf) = lines.recv().await {
        let text = String::from_utf8_lossy(&buf);
        let line = text.trim_end_matches(['\n', '\r']);
        if let Some(tx) = prompter.take_pending() {
            let _ = tx.send(line.to_string());
            continue;
        }
        if line.trim().is_empty() {
            continue;
        }
        match parse_line(line) {
            Ok((rule_id, content)) => {
                if let Err(e) = handle.send(rule_id, content) {
                    eprintln!("not sent: {e}");
                }
            }
            Err(why) => eprintln!("skipped line: {why}"),
        }
    }
    prompter.stdin_closed.store(true, Ordering::SeqCst);
    // Dropping a pending prompt's sender tells the library no code is coming.
    drop(prompter.take_pending());
}

async fn terminate_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

fn parse_args() -> Result<Args, ExitCode> {
    match Args::try_parse() {
        Ok(args) => Ok(args),
        Err(e) => {
            use clap::error::ErrorKind;
            if matches!(e.kind(), ErrorKind::DisplayHelp | ErrorKind::DisplayVersion) {
                let _ = e.print();
                return Err(ExitCode::SUCCESS);
            }
            let rendered = e.to_string();
            // clap's message is several lines (the error, the usage, a hint): keep it to one.
            let first: Vec<&str> = rendered
                .lines()
                .map(str::trim)
                .take_while(|l| !l.is_empty() && !l.starts_with("Usage:"))
                .collect();
            let first = if first.is_empty() {
                "error: invalid arguments".to_string()
            } else {
                first.join(" ")
            };
            eprintln!("{first} (see --help)");
            Err(ExitCode::from(2))
        }
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(a) => a,
        Err(code) => return code,
    };
    init_logging(args.log_format);

    let mut config = Config::new(args.url.clone(), args.id.clone(), args.state.clone());
    config.heartbeat_interval = Duration::from_secs(args.heartbeat_secs);
    config.ca_file = args.ca_file.clone();

    let prompter = Arc::new(Prompter {
        preset: Mutex::new(args.pairing_code.clone()),
        pending: Mutex::new(None),
        stdin_closed: AtomicBool::new(false),
    });
    let provider_prompter = prompter.clone();
    let codes: CodeProvider = Arc::new(move |prompt: PairingPrompt| {
        let p = provider_prompter.clone();
        Box::pin(async move { p.code(prompt).await })
    });

    let (handle, mut events) = match spawn(config, codes) {
        Ok(x) => x,
        Err(e @ FollowerError::InvalidConfig(_)) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    };

    let url = args.url.clone();
    let mut printer = tokio::spawn(async move {
        while let Some(event) = events.recv().await {
            print_event(event, &url);
        }
    });
    let mut stdin_task = tokio::spawn(read_stdin(handle.clone(), prompter));

    let code = tokio::select! {
        _ = &mut stdin_task => {
            if !handle.wait_flushed(FLUSH_WAIT).await {
                eprintln!("warning: {} queued message(s) not delivered", handle.queued());
            }
            ExitCode::SUCCESS
        }
        _ = terminate_signal() => ExitCode::SUCCESS,
        _ = &mut printer => {
            eprintln!("error: the connection task ended unexpectedly");
            ExitCode::FAILURE
        }
    };
    handle.shutdown().await;
    let _ = tokio::time::timeout(Duration::from_secs(2), printer).await;
    code
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cli_definition_is_consistent() {
        use clap::CommandFactory;
        Args::command().debug_assert();
    }

    #[test]
    fn parses_arguments_with_defaults() {
        let a = Args::try_parse_from(["yonexus-follower", "--url", "ws://h:1/", "--id", "alpha"])
            .unwrap();
        assert_eq!(a.state, PathBuf::from("./yonexus-follower-state"));
        assert_eq!(a.heartbeat_secs, 60);
        assert_eq!(a.log_format, LogFormat::Text);
        assert!(a.pairing_code.is_none());
        assert!(Args::try_parse_from(["yonexus-follower", "--url", "ws://h:1/"]).is_err());
        assert!(Args::try_parse_from([
            "yonexus-follower",
            "--url",
            "ws://h:1/",
            "--id",
            "a",
            "--heartbeat-secs",
            "0"
        ])
        .is_err());
    }
}
