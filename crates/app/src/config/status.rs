//! `[status]`: the recovery point objective and where the run history is.

use std::path::{Path, PathBuf};
use std::time::Duration;

use respaldo_core::kit::duration::parse_duration;
use serde::Deserialize;

use super::error::KeyError;
use crate::history::History;

/// `[status]`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StatusConfig {
    /// The recovery point objective of every source (`"26h"`): a source
    /// whose last good backup is older is stale. A source's own `rpo`
    /// wins. Default: derived from `[schedule]` — the longest gap between
    /// two runs of the most frequent backup entry covering the source, plus
    /// half of it (at most one hour) for the run itself.
    #[serde(default)]
    pub rpo: Option<String>,
    /// Where the run history is kept (relative paths: from the
    /// configuration's folder). Default: `$RESPALDO_STATE_DIR`, else
    /// `/var/lib/respaldo` for root, else `$XDG_STATE_HOME/respaldo` or
    /// `~/.local/state/respaldo`. One file per repository.
    #[serde(default)]
    pub state_dir: Option<PathBuf>,
}

/// Validated `[status]`.
#[derive(Debug, Clone)]
pub struct StatusSettings {
    /// The global objective.
    pub rpo: Option<Duration>,
    /// The run history.
    pub history: History,
}

impl StatusSettings {
    /// Validates `[status]` for the repository at `url`.
    pub fn new(c: StatusConfig, base: &Path, url: &str) -> Result<StatusSettings, KeyError> {
        let rpo = c
            .rpo
            .as_deref()
            .map(parse_duration)
            .transpose()
            .map_err(|m| (vec!["rpo".to_string()], m.to_string()))?;
        let dir = match c.state_dir {
            Some(d) => base.join(d),
            None => crate::history::default_state_dir(),
        };
        Ok(StatusSettings {
            rpo,
            history: History::new(&dir, url),
        })
    }
}
