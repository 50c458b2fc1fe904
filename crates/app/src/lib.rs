//! # respaldo-app
//!
//! The application under the `respaldo` command line, as a library: the
//! configuration as data ([`config`]: `backup.toml` parsed, validated and
//! located by key, `[env.NAME]` overlays applied by [`environments`],
//! secrets masked by [`mask`]), the one list of drivers ([`registry`]), the
//! run history ([`history`]), hooks around sources ([`hooks`]),
//! notifications ([`notify`]), the schedule ([`schedule`]), the state of
//! every source against its objectives ([`status`]) and as Prometheus
//! text ([`metrics`]), preflight checks
//! ([`precheck`]) and human units ([`units`]); the [`Stack`] an operation
//! works on (configuration, repository, lock) and the operations behind
//! the commands ([`ops`]: backup, restore, test-restore, forget, prune,
//! copy, verify, …), which return reports; the scheduler that runs them
//! ([`runner`], [`daemon`], [`install`]). It parses no command line and
//! prints nothing.
//!
//! ```
//! let dir = std::env::temp_dir();
//! let text = r#"
//! [repository]
//! url = "/var/backups/shop"
//!
//! [sources.uploads]
//! type = "files"
//! paths = ["/srv/shop/uploads"]
//! "#;
//! let config = respaldo_app::config::Config::parse(text, &dir.join("backup.toml"), &dir, None)
//!     .unwrap();
//! assert_eq!(config.sources[0].name, "uploads");
//! assert_eq!(config.sources[0].kind, "files");
//! assert!(respaldo_app::registry::kinds().contains(&"postgres"));
//!
//! // The stack operations work on: this host's snapshots, no observer.
//! let stack = respaldo_app::Stack::new(config);
//! assert!(stack.hosts().matches(&stack.config.host));
//! ```
#![deny(missing_docs)]

pub mod config;
pub mod daemon;
pub mod environments;
pub mod error;
pub mod history;
pub mod hooks;
pub mod install;
pub mod keys;
pub mod mask;
pub mod metrics;
pub mod notify;
pub mod ops;
pub mod precheck;
pub mod registry;
pub mod runner;
pub mod schedule;
pub mod signals;
pub mod stack;
pub mod status;
pub mod units;

pub use error::{Error, Result};
pub use stack::{Observer, Stack};
