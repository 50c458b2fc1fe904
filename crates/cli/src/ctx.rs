//! A command's context: the command line and the application's stack (the
//! configuration, the host selection, and the terminal as its observer).

use std::ops::Deref;
use std::sync::Arc;

use respaldo_app::config::Config;
use respaldo_app::Stack;

use crate::args::Cli;
use crate::output::Terminal;

/// A command's context.
pub(crate) struct Ctx<'a> {
    /// The command line.
    pub cli: &'a Cli,
    /// The stack the command's operation works on.
    pub stack: Stack,
}

impl<'a> Ctx<'a> {
    /// The context of `cli` with the loaded `config`.
    pub(crate) fn new(cli: &'a Cli, config: Config) -> Ctx<'a> {
        Ctx {
            cli,
            stack: Stack {
                config,
                host: cli.host.clone(),
                observer: Arc::new(Terminal {
                    quiet: cli.quiet,
                    progress: !cli.quiet && !cli.json,
                }),
            },
        }
    }

    /// Whether the output is JSON.
    pub(crate) fn json(&self) -> bool {
        self.cli.json
    }

    /// The global flags a scheduled step inherits (`-q`, `-v`).
    pub(crate) fn step_flags(&self) -> Vec<String> {
        let mut flags = Vec::new();
        if self.cli.quiet {
            flags.push("-q".to_string());
        }
        flags.extend((0..self.cli.verbose).map(|_| "-v".to_string()));
        flags
    }
}

impl Deref for Ctx<'_> {
    type Target = Stack;
    fn deref(&self) -> &Stack {
        &self.stack
    }
}
