//! How respaldo behaves as a Unix tool: log lines on stderr (colour only on
//! a terminal and never with `NO_COLOR`; timestamps when stderr is not a
//! terminal, e.g. under cron or systemd; JSON lines with `--log-format
//! json`), a closed stdout ending the command quietly, and the shell
//! completions and man page generated from the command-line definition.

use std::io::IsTerminal;

use clap::CommandFactory;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::Layer;

use crate::args::{Cli, LogFormat};

/// Whether stderr gets ANSI colours: a terminal, and `NO_COLOR` unset or
/// empty (<https://no-color.org>).
pub fn colour() -> bool {
    let no_color = std::env::var_os("NO_COLOR").is_some_and(|v| !v.is_empty());
    !no_color && std::io::stderr().is_terminal()
}

/// Installs the log subscriber: stderr at `level` (`$RESPALDO_LOG`
/// overrides it; the FUSE library's own chatter only when it is an error),
/// plus the tail that failure notifications carry.
pub fn init_logging(level: &str, format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("RESPALDO_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(format!("{level},fuser=error")));
    let on_terminal = std::io::stderr().is_terminal();
    let stderr = match format {
        LogFormat::Json => tracing_subscriber::fmt::layer()
            .json()
            .with_writer(std::io::stderr)
            .with_target(false)
            .with_current_span(false)
            .boxed(),
        LogFormat::Text if on_terminal => tracing_subscriber::fmt::layer()
            .with_writer(std::io::stderr)
            .with_ansi(colour())
            .with_target(false)
            .without_time()
            .boxed(),
        // Not a terminal (cron mail, a log file, journald): each line says
        // when it happened.
        LogFormat::Text => tracing_subscriber::fmt::layer()
            .with_writer(std::io::stderr)
            .with_ansi(false)
            .with_target(false)
            .boxed(),
    };
    tracing_subscriber::registry()
        .with(stderr.with_filter(filter))
        .with(
            tracing_subscriber::fmt::layer()
                .with_writer(respaldo_app::mask::TailWriter::default)
                .with_ansi(false)
                .with_target(false)
                .with_filter(tracing_subscriber::filter::LevelFilter::INFO),
        )
        .init();
}

/// Makes a closed stdout (`respaldo snapshots | head -1`) end the command
/// quietly with exit code 0, as `grep` and `rg` do, instead of a panic: the
/// standard library's `println!` panics on EPIPE because Rust ignores
/// SIGPIPE (which keeps a child that exits early from killing respaldo).
pub fn quiet_on_closed_stdout() {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let msg = info
            .payload()
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| info.payload().downcast_ref::<&str>().copied())
            .unwrap_or("");
        if msg.starts_with("failed printing to stdout") && msg.contains("Broken pipe") {
            std::process::exit(0);
        }
        default(info);
    }));
}

/// Writes `bytes` to stdout; a reader that stopped reading is not an error.
pub fn write_stdout(bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    match out.write_all(bytes).and_then(|()| out.flush()) {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        r => r,
    }
}

/// Writes the completion script for `shell` to stdout.
pub fn completions(shell: clap_complete::Shell) -> std::io::Result<()> {
    let mut script = Vec::new();
    clap_complete::generate(shell, &mut Cli::command(), "respaldo", &mut script);
    write_stdout(&script)
}

/// Writes the man page (roff, section 1) to stdout: `respaldo man | man -l -`.
pub fn man() -> std::io::Result<()> {
    let mut page = Vec::new();
    clap_mangen::Man::new(Cli::command()).render(&mut page)?;
    write_stdout(&page)
}
