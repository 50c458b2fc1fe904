//! `[status]`: the recovery point and time objectives and where the run
//! history is.

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
    /// The recovery time objective of every source (`"1h"`), checked
    /// against the restore time its last `test-restore` estimated (the
    /// drill, the safety snapshot, and the container and health-check
    /// steps its last real restore measured): a source with an objective
    /// and no drill, a failed one, or a longer estimate fails `status`. A
    /// source's own `rto` wins. Default: none.
    #[serde(default)]
    pub rto: Option<String>,
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
    /// The global recovery time objective.
    pub rto: Option<Duration>,
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
        let rto = c
            .rto
            .as_deref()
            .map(parse_duration)
            .transpose()
            .map_err(|m| (vec!["rto".to_string()], m.to_string()))?;
        let dir = match c.state_dir {
            Some(d) => base.join(d),
            None => crate::history::default_state_dir(),
        };
        Ok(StatusSettings {
            rpo,
            rto,
            history: History::new(&dir, url),
        })
    }
}
