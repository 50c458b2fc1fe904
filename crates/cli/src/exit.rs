//! Exit codes, the one place they are chosen (see `--help` and the
//! README), and the message printed for an error.

use respaldo_app::config::error::UsageError;
use respaldo_core::Error;

/// Everything went well.
pub const OK: u8 = 0;
/// The operation failed.
pub const FAILED: u8 = 1;
/// Usage or configuration error.
pub const USAGE: u8 = 2;
/// Partial: some sources failed, others succeeded.
pub const PARTIAL: u8 = 3;
/// No repository at the configured location.
pub const NO_REPOSITORY: u8 = 10;
/// The repository is locked by another command.
pub const LOCKED: u8 = 11;
/// A key, passphrase or identity is missing or wrong.
pub const KEY: u8 = 12;
/// Interrupted by SIGINT or SIGTERM.
pub const INTERRUPTED: u8 = 130;

/// The code for a run over several sources: `failed` of `total` failed.
pub fn for_sources(failed: usize, total: usize) -> u8 {
    match failed {
        0 => OK,
        f if f < total => PARTIAL,
        _ => FAILED,
    }
}

/// The exit code for an error, by the first cause that decides it.
pub fn exit_code(e: &anyhow::Error) -> u8 {
    for cause in e.chain() {
        if cause.downcast_ref::<UsageError>().is_some() {
            return USAGE;
        }
        let code = match cause.downcast_ref::<respaldo_app::Error>() {
            Some(app) => for_app(app),
            None => cause.downcast_ref::<Error>().and_then(for_core),
        };
        if let Some(code) = code {
            return code;
        }
    }
    FAILED
}

/// The code an application error decides, if any (after its context).
fn for_app(e: &respaldo_app::Error) -> Option<u8> {
    match e {
        respaldo_app::Error::Usage(_) => Some(USAGE),
        respaldo_app::Error::Core(core) => for_core(core),
        respaldo_app::Error::Context { source, .. } => for_app(source),
        _ => None,
    }
}

/// The code an engine error decides, if any.
fn for_core(e: &Error) -> Option<u8> {
    Some(match e {
        Error::NotInitialized(_) => NO_REPOSITORY,
        Error::Locked(_) => LOCKED,
        Error::KeyRequired(_) => KEY,
        Error::Invalid(_) | Error::SnapshotNotFound(_) => USAGE,
        Error::Interrupted => INTERRUPTED,
        _ => return None,
    })
}

/// The message for an error, each cause once.
pub fn describe(e: &anyhow::Error) -> String {
    respaldo_app::error::describe(e.as_ref())
}
