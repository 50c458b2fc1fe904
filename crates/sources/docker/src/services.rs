//! Containers stopped around a restore (`[sources.NAME.restore]
//! stop_containers`): chosen by name, by label or by Compose project and
//! service, stopped before the restore and always started again — also on
//! an error, a signal or a panic (the same guard the driver's own copies
//! use).

use std::collections::HashMap;
use std::time::Duration;

use bollard::query_parameters::ListContainersOptions;

use crate::engine::connect;
use crate::guard::Quiesced;
use crate::DockerError;

/// Running containers stopped until [`StoppedContainers::start`] (or until
/// dropped, which starts them too).
#[derive(Debug)]
pub struct StoppedContainers {
    held: Option<Quiesced>,
    names: Vec<String>,
}

impl StoppedContainers {
    /// The containers that were stopped, by name, in order.
    pub fn names(&self) -> &[String] {
        &self.names
    }

    /// Starts them again, in reverse order; every one is tried. Returns
    /// their names.
    pub async fn start(mut self) -> Result<Vec<String>, DockerError> {
        match self.held.take() {
            Some(q) => q.release().await,
            None => Ok(Vec::new()),
        }
    }
}

/// Stops the running containers that `selectors` name, in order: a
/// container name, `label:KEY=VALUE` (or `label:KEY`), `compose:PROJECT`
/// (every container of a Compose project) or `compose:PROJECT/SERVICE`. A
/// selector that matches no running container is not an error (the service
/// may be down already). Each container gets `stop_timeout` to stop.
pub async fn stop_containers(
    selectors: &[String],
    stop_timeout: Duration,
) -> Result<StoppedContainers, DockerError> {
    if selectors.is_empty() {
        return Ok(StoppedContainers {
            held: None,
            names: Vec::new(),
        });
    }
    let docker = connect()?;
    let mut found: Vec<(String, String)> = Vec::new();
    for sel in selectors {
        let labels: Vec<String> = if let Some(l) = sel.strip_prefix("label:") {
            vec![l.to_string()]
        } else if let Some(c) = sel.strip_prefix("compose:") {
            match c.split_once('/') {
                Some((p, s)) => vec![
                    format!("com.docker.compose.project={p}"),
                    format!("com.docker.compose.service={s}"),
                ],
                None => vec![format!("com.docker.compose.project={c}")],
            }
        } else {
            Vec::new()
        };
        let mut filters = HashMap::from([("status".to_string(), vec!["running".to_string()])]);
        if labels.is_empty() {
            filters.insert("name".to_string(), vec![format!("^/{sel}$")]);
        } else {
            filters.insert("label".to_string(), labels);
        }
        let opts = ListContainersOptions {
            filters: Some(filters),
            ..Default::default()
        };
        let list = docker
            .list_containers(Some(opts))
            .await
            .map_err(|e| DockerError::api(format!("listing containers for `{sel}`"), e))?;
        for c in list {
            let Some(id) = c.id else { continue };
            if found.iter().any(|(i, _)| *i == id) {
                continue;
            }
            let name = c
                .names
                .and_then(|n| n.into_iter().next())
                .map(|n| n.trim_start_matches('/').to_string())
                .unwrap_or_else(|| id.chars().take(12).collect());
            found.push((id, name));
        }
    }
    let names: Vec<String> = found.iter().map(|(_, n)| n.clone()).collect();
    let held = Quiesced::new(&docker, found, false, stop_timeout).await?;
    Ok(StoppedContainers {
        held: Some(held),
        names,
    })
}
