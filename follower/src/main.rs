//! `yonexus-follower`: connect to a Yonexus host, send stdin lines as rule messages, print the
//! rule messages received on stdout (or hand them to `--exec`). Run unattended (stdin
//! `/dev/null`, e.g. under systemd) it stays connected until SIGTERM. See `cli/` for the pieces.

mod cli;

use cli::args::{self, Args, EXIT_NOT_ALLOWED};
use cli::codes::Codes;
use cli::exec::Exec;
use cli::output::{not_allowed_message, say, Printer};
use cli::stdin::{self as stdin_lines, Mode};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;
use yonexus_follower::{spawn, CodeProvider, Config, FollowerError, PairingPrompt, StopReason};

/// How long to wait, after stdin ends, for queued messages to reach the host.
const FLUSH_WAIT: Duration = Duration::from_secs(5);
/// Longest wait at exit for `--exec` to handle the messages it has (queued and running).
const EXEC_GRACE: Duration = Duration::from_secs(10);

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

/// `--completions` and `--man`: print and exit.
fn generated_output(args: &Args) -> Option<ExitCode> {
    let mut out = std::io::stdout().lock();
    if let Some(shell) = args.completions {
        args::completions(shell, &mut out);
        return Some(ExitCode::SUCCESS);
    }
    if args.man {
        return Some(match args::man(&mut out) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("error: cannot write the man page: {e}");
                ExitCode::FAILURE
            }
        });
    }
    None
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> ExitCode {
    let args = match args::parse() {
        Ok(a) => a,
        Err(code) => return code,
    };
    if let Some(code) = generated_output(&args) {
        return code;
    }
    cli::logging::init(args.log_format);
    let Some(id) = args.id.clone() else {
        // clap requires --id unless --completions or --man is given.
        eprintln!("error: --id is required (see --help)");
        return ExitCode::from(2);
    };

    let mut config = Config::with_urls(args.url.clone(), id.clone(), args.state.clone());
    config.heartbeat_interval = Duration::from_secs(args.heartbeat_secs);
    config.liveness_timeout = args.liveness_timeout_secs.map(Duration::from_secs);
    config.ca_file = args.ca_file.clone();
    let hosts = config.urls.len();
    let state_file = yonexus_follower::state::state_path(&args.state, &id)
        .display()
        .to_string();

    let mode = stdin_lines::mode(args.no_stdin);
    let codes = Arc::new(Codes::new(
        args.pairing_code.clone(),
        args.pairing_code_file.clone(),
        mode == Mode::Lines && args.pairing_code_file.is_none(),
    ));
    let provider_codes = codes.clone();
    let provider: CodeProvider = Arc::new(move |prompt: PairingPrompt| {
        let codes = provider_codes.clone();
        Box::pin(async move { codes.code(prompt).await })
    });

    let (handle, events) = match spawn(config, provider) {
        Ok(x) => x,
        // Needs a person (a bad setting, a state file to repair or move away): exit 2, which
        // the unit's RestartPreventExitStatus keeps from restarting in a loop.
        Err(e @ (FollowerError::InvalidConfig(_) | FollowerError::StateCorrupt { .. })) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    };

    let exec = Exec::new(
        &args.exec,
        &id,
        args.exec_concurrency,
        usize::try_from(args.exec_queue).unwrap_or(usize::MAX),
        Duration::from_secs(args.exec_timeout_secs),
    );
    let printer = Printer::new(id.clone(), state_file, codes.clone(), exec.clone());
    let mut printer = tokio::spawn(printer.run(events));
    let mut stdin_task = match mode {
        Mode::Lines => Some(tokio::spawn(stdin_lines::read(handle.clone(), codes))),
        Mode::Ignore => None,
    };
    let stdin_done = async {
        match stdin_task.as_mut() {
            Some(task) => {
                let _ = task.await;
            }
            None => std::future::pending().await,
        }
    };

    let mut printer_done = false;
    let code = tokio::select! {
        _ = stdin_done => {
            if !handle.wait_flushed(FLUSH_WAIT).await {
                say(&format!("warning: {} queued message(s) not delivered", handle.queued()));
            }
            ExitCode::SUCCESS
        }
        _ = terminate_signal() => ExitCode::SUCCESS,
        _ = &mut printer => {
            printer_done = true;
            match handle.stop_reason() {
                Some(StopReason::IdentifierNotAllowed) => {
                    say(&not_allowed_message(&id, hosts));
                    ExitCode::from(EXIT_NOT_ALLOWED)
                }
                _ => {
                    say("error: the connection task ended unexpectedly");
                    ExitCode::FAILURE
                }
            }
        }
    };
    handle.shutdown().await;
    if !printer_done {
        let _ = tokio::time::timeout(Duration::from_secs(2), printer).await;
    }
    if let Some(exec) = exec {
        if let Err((waiting, running)) = exec.wait_idle(EXEC_GRACE).await {
            say(&format!(
                "warning: at exit, {waiting} message(s) still waiting for --exec were dropped and \
                 {running} --exec process(es) still running were killed"
            ));
        }
    }
    code
}
