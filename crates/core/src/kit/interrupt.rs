//! Who answers SIGINT and SIGTERM.
//!
//! An application that answers them itself — by cancelling the running
//! operation, so that every future in it is dropped and every guard in it
//! cleans up before the operation returns — says so with
//! [`application_handles_signals`]. Drivers that hold something outside the
//! process (a stopped container, a helper container) then leave the signal
//! to the application and rely on their guards' `Drop`; without it they
//! install an emergency handler of their own that cleans up and ends the
//! process, so that a library user who never thought about signals does not
//! leave a production container stopped.

use std::sync::atomic::{AtomicBool, Ordering};

static APPLICATION: AtomicBool = AtomicBool::new(false);

/// Declares that the application answers SIGINT and SIGTERM by cancelling
/// running operations (see the module documentation).
pub fn application_handles_signals() {
    APPLICATION.store(true, Ordering::SeqCst);
}

/// Whether [`application_handles_signals`] was called.
pub fn signals_handled_by_application() -> bool {
    APPLICATION.load(Ordering::SeqCst)
}
