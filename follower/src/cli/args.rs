//! The command line: one clap definition, also the source of the shell completions and the man
//! page (`--completions SHELL`, `--man`).

use clap::{Parser, ValueEnum};
use std::path::PathBuf;

/// Exit status when every host refused the identifier (not on the allowlist): permanent, so a
/// service manager should not restart the follower (`RestartPreventExitStatus=3`).
pub const EXIT_NOT_ALLOWED: u8 = 3;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

/// A Yonexus follower.
///
/// Connects to a Yonexus host, pairs (once) and authenticates, then:
/// every line typed on stdin as `rule::content` is sent to the host as a rule message, and every
/// rule message the host sends is printed on stdout as `rule_id::content`, one per line (or
/// handed to a program with --exec). Status, events and errors go to stderr. End of stdin sends
/// what is still queued and exits.
///
/// Unattended (stdin is /dev/null, as under systemd, or --no-stdin): stdin is not read; the
/// follower stays connected, heartbeats and reconnects until SIGTERM or SIGINT.
///
/// On first start a keypair is generated and stored in the state directory; the secret obtained
/// by pairing is stored there too (file mode 0600). When pairing is needed the code comes from
/// --pairing-code (or YONEXUS_PAIRING_CODE) until the host refuses it, then from
/// --pairing-code-file (re-read whenever a code is needed, so an admin can drop it in later), or
/// else from the next line on stdin.
///
/// With several --url, the follower moves to the next host when one is unreachable or drops the
/// connection (hosts of one cluster share their trust, so no new pairing is needed).
///
/// Exit status: 0 after end of stdin or a signal, 2 for bad arguments or configuration (or a
/// state file that cannot be used),
/// 3 when every host refused the identifier (ask the admin to add it to the allowlist),
/// 1 for other errors.
#[derive(Debug, Parser)]
#[command(name = "yonexus-follower", version, verbatim_doc_comment)]
pub struct Args {
    /// WebSocket URL of a host, e.g. ws://127.0.0.1:8787/ (repeat, or separate with commas,
    /// for several hosts of one cluster: tried in turn, starting from the last one that worked)
    #[arg(
        long,
        value_name = "URL",
        env = "YONEXUS_URL",
        value_delimiter = ',',
        required_unless_present_any = ["completions", "man"]
    )]
    pub url: Vec<String>,

    /// This follower's identifier (must be on the host's allowlist)
    #[arg(
        long = "id",
        value_name = "IDENTIFIER",
        required_unless_present_any = ["completions", "man"]
    )]
    pub id: Option<String>,

    /// Directory holding the follower's identity (<IDENTIFIER>.json)
    #[arg(
        long = "state",
        value_name = "DIR",
        default_value = "./yonexus-follower-state"
    )]
    pub state: PathBuf,

    /// Pairing code the admin received; used until the host refuses it
    #[arg(
        long,
        value_name = "CODE",
        env = "YONEXUS_PAIRING_CODE",
        hide_env_values = true
    )]
    pub pairing_code: Option<String>,

    /// File holding the pairing code, read whenever a code is needed (the follower waits for
    /// the admin to write it, and for a new one when the host refused it); stdin is then not
    /// asked for codes
    #[arg(long, value_name = "PATH", env = "YONEXUS_PAIRING_CODE_FILE")]
    pub pairing_code_file: Option<PathBuf>,

    /// Seconds between heartbeats once authenticated
    #[arg(long, value_name = "N", default_value_t = 60,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub heartbeat_secs: u64,

    /// Seconds the host may stay silent (nothing received, not even a ping or a
    /// heartbeat_ack) before the connection is taken as lost and the next --url is tried; the
    /// follower pings the host halfway through [default: twice the longer of --heartbeat-secs
    /// and 30 s, the host's ping interval]
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    pub liveness_timeout_secs: Option<u64>,

    /// Extra CA certificate(s) (PEM) to trust for a wss:// host with a private or self-signed
    /// certificate (the public web roots are always trusted)
    #[arg(long, value_name = "FILE", env = "YONEXUS_CA_FILE")]
    pub ca_file: Option<PathBuf>,

    /// Do not read stdin (no messages to send, codes from --pairing-code or
    /// --pairing-code-file); run until SIGTERM. Implied when stdin is /dev/null
    #[arg(long)]
    pub no_stdin: bool,

    /// Hand each received rule message to PROG instead of printing it: one process per message,
    /// `rule_id::content` and a newline on its stdin, YONEXUS_RULE_ID and YONEXUS_IDENTIFIER in
    /// its environment. Everything after --exec is PROG and its arguments (put it last, or end
    /// them with ';')
    #[arg(
        long,
        value_name = "PROG [ARGS]",
        num_args = 1..,
        allow_hyphen_values = true,
        value_terminator = ";"
    )]
    pub exec: Vec<String>,

    /// Most --exec processes running at once. With 1 (the default) the program gets the
    /// messages one at a time, in the order they arrived; with more, processes start in order
    /// but may finish in any order
    #[arg(long, value_name = "N", default_value_t = 1,
          value_parser = clap::value_parser!(u32).range(1..=1024))]
    pub exec_concurrency: u32,

    /// Most received messages waiting for a free --exec slot (and 64 MiB); when one more
    /// arrives the oldest waiting message is dropped, with a warning and a count. The
    /// connection to the host never waits for the program
    #[arg(long, value_name = "N", default_value_t = 1024,
          value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    pub exec_queue: u64,

    /// Seconds an --exec process may run before it is killed
    #[arg(long, value_name = "SECS", default_value_t = 30,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub exec_timeout_secs: u64,

    /// Format of the log lines written to stderr (filter with RUST_LOG, default "warn")
    #[arg(long, value_enum, value_name = "FORMAT", default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,

    /// Print a completion script for SHELL on stdout and exit
    #[arg(long, value_enum, value_name = "SHELL")]
    pub completions: Option<clap_complete::Shell>,

    /// Print the man page (roff) on stdout and exit
    #[arg(long)]
    pub man: bool,
}

/// Parse the command line; on an error print one line (clap's is several) and return the exit
/// code.
pub fn parse() -> Result<Args, std::process::ExitCode> {
    use std::process::ExitCode;
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

/// Write the completion script for `shell` to `out`.
pub fn completions(shell: clap_complete::Shell, out: &mut dyn std::io::Write) {
    use clap::CommandFactory;
    let mut cmd = Args::command();
    clap_complete::generate(shell, &mut cmd, "yonexus-follower", out);
}

/// Write the man page (roff) to `out`.
pub fn man(out: &mut dyn std::io::Write) -> std::io::Result<()> {
    use clap::CommandFactory;
    clap_mangen::Man::new(Args::command()).render(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Args, clap::Error> {
        let mut all = vec!["yonexus-follower"];
        all.extend_from_slice(args);
        Args::try_parse_from(all)
    }

    #[test]
    fn cli_definition_is_consistent() {
        use clap::CommandFactory;
        Args::command().debug_assert();
    }

    #[test]
    fn parses_arguments_with_defaults() {
        let a = parse(&["--url", "ws://h:1/", "--id", "alpha"]).unwrap();
        assert_eq!(a.url, vec!["ws://h:1/".to_string()]);
        assert_eq!(a.state, PathBuf::from("./yonexus-follower-state"));
        assert_eq!(a.heartbeat_secs, 60);
        assert_eq!(a.liveness_timeout_secs, None);
        assert_eq!(a.log_format, LogFormat::Text);
        assert!(a.pairing_code.is_none());
        assert!(a.exec.is_empty());
        assert_eq!(a.exec_concurrency, 1);
        assert_eq!(a.exec_queue, 1024);
        assert!(!a.no_stdin);
        assert!(parse(&["--url", "ws://h:1/"]).is_err());
        assert!(parse(&["--url", "ws://h:1/", "--id", "a", "--heartbeat-secs", "0"]).is_err());
        let a = parse(&[
            "--url",
            "ws://h:1/",
            "--id",
            "a",
            "--liveness-timeout-secs",
            "45",
        ]);
        assert_eq!(a.unwrap().liveness_timeout_secs, Some(45));
        assert!(parse(&[
            "--url",
            "ws://h:1/",
            "--id",
            "a",
            "--liveness-timeout-secs",
            "0"
        ])
        .is_err());
    }

    #[test]
    fn several_urls_repeated_or_comma_separated() {
        let a = parse(&["--url", "ws://a/", "--url", "ws://b/,ws://c/", "--id", "x"]).unwrap();
        assert_eq!(a.url, vec!["ws://a/", "ws://b/", "ws://c/"]);
    }

    #[test]
    fn exec_takes_the_rest_or_up_to_a_semicolon() {
        let a = parse(&[
            "--id", "x", "--url", "ws://a/", "--exec", "sh", "-c", "cat >> f",
        ])
        .unwrap();
        assert_eq!(a.exec, vec!["sh", "-c", "cat >> f"]);
        let a = parse(&["--exec", "prog", "-v", ";", "--id", "x", "--url", "ws://a/"]).unwrap();
        assert_eq!(a.exec, vec!["prog", "-v"]);
        assert_eq!(a.id.as_deref(), Some("x"));
    }

    #[test]
    fn completions_and_man_need_no_url_or_id() {
        let a = parse(&["--completions", "bash"]).unwrap();
        assert_eq!(a.completions, Some(clap_complete::Shell::Bash));
        assert!(parse(&["--man"]).unwrap().man);
        let mut out = Vec::new();
        completions(clap_complete::Shell::Zsh, &mut out);
        let text = String::from_utf8(out).unwrap();
        assert!(text.contains("--pairing-code-file"), "{text}");
        let mut out = Vec::new();
        man(&mut out).unwrap();
        let text = String::from_utf8(out).unwrap();
        assert!(text.starts_with(".ie") || text.contains(".TH"), "{text}");
        assert!(text.contains("pairing\\-code\\-file"), "{text}");
    }
}
