//! # respaldo
//!
//! Back up and restore whole application stacks — PostgreSQL, Redis, InfluxDB,
//! Docker volumes, plain files, any command's output — from one `backup.toml`,
//! into one deduplicated, verifiable repository.
//!
//! Exit codes: 0 success, 1 the operation failed, 2 usage or configuration
//! error, 3 partial (some sources failed, others succeeded), 10 no repository,
//! 11 repository locked, 12 wrong or missing key or identity, 130 interrupted.

use std::process::ExitCode;

use clap::Parser;

use args::Cli;

mod args;
mod cmd;
mod ctx;
mod exit;
mod output;
mod terminal;

fn main() -> ExitCode {
    // glibc gives every thread that allocates its own arena, which on a busy
    // pipeline (worker and blocking threads passing chunk buffers around)
    // grows resident memory by tens of MiB without need: two arenas are
    // plenty and keep the budget.
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only sets an allocator tunable; no threads exist yet.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 2);
    }
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            let code = if e.use_stderr() { 2 } else { 0 };
            let _ = e.print();
            return ExitCode::from(code);
        }
    };
    let level = if cli.quiet {
        "error"
    } else {
        match cli.verbose {
            0 => "warn",
            1 => "info",
            _ => "debug",
        }
    };
    terminal::quiet_on_closed_stdout();
    terminal::init_logging(level, cli.log_format);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return ExitCode::from(1);
        }
    };
    let result = runtime.block_on(cmd::run(&cli));
    match result {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprintln!("error: {}", exit::describe(&e));
            ExitCode::from(exit::exit_code(&e))
        }
    }
}
