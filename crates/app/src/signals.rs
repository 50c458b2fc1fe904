//! SIGTERM and SIGINT for a program built on the application: the first
//! asks the running operation to stop cleanly (a backup writes no snapshot
//! and releases its lock; the daemon stops its run and exits), a second one
//! exits at once.

use std::sync::OnceLock;

use tokio::signal::unix::{signal, SignalKind};
use tokio_util::sync::CancellationToken;

/// The token cancelled by the first SIGTERM or SIGINT. The first call
/// installs the handlers (inside the runtime).
pub fn shutdown() -> CancellationToken {
    static TOKEN: OnceLock<CancellationToken> = OnceLock::new();
    TOKEN
        .get_or_init(|| {
            let token = CancellationToken::new();
            // Drivers' guards clean up when the cancelled operation drops
            // them; their own emergency handlers stand aside.
            respaldo_core::kit::interrupt::application_handles_signals();
            let (mut term, mut int) = match (
                signal(SignalKind::terminate()),
                signal(SignalKind::interrupt()),
            ) {
                (Ok(t), Ok(i)) => (t, i),
                (Err(e), _) | (_, Err(e)) => {
                    tracing::warn!("cannot handle SIGTERM/SIGINT: {e}");
                    return token;
                }
            };
            let t = token.clone();
            tokio::spawn(async move {
                let name = tokio::select! {
                    _ = term.recv() => "SIGTERM",
                    _ = int.recv() => "SIGINT",
                };
                tracing::warn!("{name} received: stopping (again to stop at once)");
                t.cancel();
                tokio::select! {
                    _ = term.recv() => {},
                    _ = int.recv() => {},
                }
                std::process::exit(130);
            });
            token
        })
        .clone()
}
