//! Talking to the Docker Engine: where it is (`$DOCKER_HOST`), its errors,
//! and commands run inside containers.

use bollard::Docker;
use futures::StreamExt;

use crate::DockerError;

pub(crate) fn docker_host() -> String {
    std::env::var("DOCKER_HOST").unwrap_or_else(|_| "unix:///var/run/docker.sock".into())
}

/// A client for the engine named by `DOCKER_HOST` (default: the local socket).
pub(crate) fn connect() -> Result<Docker, DockerError> {
    Docker::connect_with_defaults().map_err(|source| DockerError::Unreachable {
        host: docker_host(),
        source,
    })
}

pub(crate) fn is_404(e: &bollard::errors::Error) -> bool {
    matches!(
        e,
        bollard::errors::Error::DockerResponseServerError {
            status_code: 404,
            ..
        }
    )
}

/// Runs `argv` inside a running container; fails unless it exits 0.
pub(crate) async fn run_exec(
    docker: &Docker,
    container: &str,
    argv: &[String],
) -> Result<(), DockerError> {
    use bollard::exec::{CreateExecOptions, StartExecResults};
    let what = || format!("running `{}` in container {container}", argv.join(" "));
    let opts = CreateExecOptions {
        cmd: Some(argv.to_vec()),
        attach_stdout: Some(true),
        attach_stderr: Some(true),
        ..Default::default()
    };
    let exec = docker
        .create_exec(container, opts)
        .await
        .map_err(|e| DockerError::api(what(), e))?
        .id;
    let mut tail = Vec::new();
    if let StartExecResults::Attached { mut output, .. } = docker
        .start_exec(&exec, None)
        .await
        .map_err(|e| DockerError::api(what(), e))?
    {
        while let Some(chunk) = output.next().await {
            tail.extend_from_slice(&chunk.map_err(|e| DockerError::api(what(), e))?.into_bytes());
            if tail.len() > 4096 {
                tail.drain(..tail.len() - 4096);
            }
        }
    }
    let code = docker
        .inspect_exec(&exec)
        .await
        .map_err(|e| DockerError::api(what(), e))?
        .exit_code
        .unwrap_or(-1);
    if code != 0 {
        return Err(DockerError::Hook {
            container: container.to_string(),
            command: argv.join(" "),
            code,
            output: String::from_utf8_lossy(&tail).trim().to_string(),
        });
    }
    Ok(())
}
