//! Exit codes, the one place they are chosen (see `--help` and the
//! README), and the message printed for an error.

use respaldo_core::Error;

use crate::config::error::UsageError;

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
        if cause
            .downcast_ref::<crate::signals::Interrupted>()
            .is_some()
        {
            return INTERRUPTED;
        }
        if let Some(core) = cause.downcast_ref::<Error>() {
            match core {
                Error::NotInitialized(_) => return NO_REPOSITORY,
                Error::Locked(_) => return LOCKED,
                Error::KeyRequired(_) => return KEY,
                Error::Invalid(_) | Error::SnapshotNotFound(_) => return USAGE,
                Error::Interrupted => return INTERRUPTED,
                _ => {}
            }
        }
    }
    FAILED
}

/// The message for an error, each cause once.
pub fn describe(e: &anyhow::Error) -> String {
    let mut msg = String::new();
    for cause in e.chain() {
        let s = cause.to_string();
        if !msg.contains(&s) {
            if !msg.is_empty() {
                msg.push_str(": ");
            }
            msg.push_str(&s);
        }
    }
    msg
}
