//! Containers stopped (or paused) for a copy, and helper containers, with the
//! guarantee that the former run again and the latter are removed: on
//! success, on error, when the future is dropped or panics, and on
//! SIGINT/SIGTERM: an application that cancels its operations on a signal
//! (`kit::interrupt`) gets everything back through the guards' `Drop`;
//! otherwise a process-wide listener puts everything back, then lets the
//! signal terminate the process as it would have.

use std::collections::HashMap;
use std::future::Future;
use std::sync::OnceLock;
use std::time::Duration;

use std::sync::atomic::{AtomicU64, Ordering};

use bollard::models::ContainerCreateBody;
use bollard::query_parameters::{
    CreateContainerOptions, RemoveContainerOptions, StopContainerOptions,
};
use bollard::Docker;
use tokio::sync::Mutex;

use crate::engine::connect;
use crate::DockerError;

/// A container stopped or paused by respaldo.
#[derive(Debug, Clone)]
pub(crate) struct Held {
    /// Container id.
    pub id: String,
    /// Container name, for messages.
    pub name: String,
    /// Paused (else stopped).
    pub paused: bool,
}

#[derive(Default)]
struct Registry {
    next: u64,
    held: HashMap<u64, Vec<Held>>,
    helpers: HashMap<String, ()>,
    terminating: bool,
}

fn registry() -> &'static Mutex<Registry> {
    static R: OnceLock<Mutex<Registry>> = OnceLock::new();
    R.get_or_init(|| Mutex::new(Registry::default()))
}

/// Starts (once per process) the task that restores everything on SIGINT or
/// SIGTERM before the process ends.
fn ensure_listener() {
    static STARTED: OnceLock<()> = OnceLock::new();
    STARTED.get_or_init(|| {
        use tokio::signal::unix::{signal, SignalKind};
        let (Ok(mut term), Ok(mut int)) = (
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
        ) else {
            tracing::warn!("cannot listen for signals; containers are restarted on errors only");
            return;
        };
        tokio::spawn(async move {
            let sig = tokio::select! {
                _ = term.recv() => libc::SIGTERM,
                _ = int.recv() => libc::SIGINT,
            };
            if respaldo_core::kit::interrupt::signals_handled_by_application() {
                // The application cancels the operation; the guards' `Drop`
                // restarts and removes what this process holds.
                return;
            }
            let mut reg = registry().lock().await;
            reg.terminating = true;
            let held: Vec<Held> = reg.held.drain().flat_map(|(_, v)| v).collect();
            // The lock stays held until the process ends: nothing new is
            // stopped or created meanwhile.
            let helpers: Vec<String> = reg.helpers.drain().map(|(k, _)| k).collect();
            if let Ok(docker) = connect() {
                for h in held.iter().rev() {
                    match resume(&docker, h).await {
                        Ok(()) => eprintln!(
                            "respaldo: interrupted; container {} is running again",
                            h.name
                        ),
                        Err(e) => eprintln!(
                            "respaldo: interrupted; cannot restart container {}: {e}",
                            h.name
                        ),
                    }
                }
                for id in helpers {
                    if let Err(e) = remove_container(&docker, &id).await {
                        eprintln!(
                            "respaldo: interrupted; cannot remove helper container {id}: {e}"
                        );
                    }
                }
            }
            // Let the signal do what it would have done without us.
            // SAFETY: resetting a signal's disposition to the default and
            // raising it has no memory-safety preconditions.
            unsafe {
                libc::signal(sig, libc::SIG_DFL);
                libc::raise(sig);
            }
            std::process::exit(128 + sig);
        });
    });
}

/// Runs cleanup from synchronous code (a `Drop`): on a thread of its own with
/// a runtime of its own, so it works during a panic or a runtime shutdown.
fn cleanup_blocking<F, Fut>(what: String, f: F)
where
    F: FnOnce(Docker) -> Fut + Send + 'static,
    Fut: Future<Output = ()>,
{
    let t = std::thread::spawn(move || {
        let rt = match tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        {
            Ok(rt) => rt,
            Err(e) => {
                tracing::error!("cannot clean up ({what}): {e}");
                return;
            }
        };
        rt.block_on(async move {
            match connect() {
                Ok(d) => f(d).await,
                Err(e) => tracing::error!("cannot clean up ({what}): {e}"),
            }
        });
    });
    let _ = t.join();
}

async fn resume(docker: &Docker, h: &Held) -> Result<(), bollard::errors::Error> {
    if h.paused {
        match docker.unpause_container(&h.id).await {
            // 409: not paused (the pause never happened).
            Err(bollard::errors::Error::DockerResponseServerError {
                status_code: 409, ..
            }) => Ok(()),
            r => r,
        }
    } else {
        match docker.start_container(&h.id, None).await {
            // 304: already running.
            Err(bollard::errors::Error::DockerResponseServerError {
                status_code: 304, ..
            }) => Ok(()),
            r => r,
        }
    }
}

/// Removes container `id` (forcibly), waiting until it is gone. The engine
/// refuses a removal for a while after a cancelled copy — a removal already
/// in progress (409), or the container's mount still busy with the archive
/// export the client stopped reading (500) — so those are retried for up to
/// 30 seconds; a container already gone (404) is success.
async fn remove_container(docker: &Docker, id: &str) -> Result<(), bollard::errors::Error> {
    use bollard::errors::Error::DockerResponseServerError as Server;
    let opts = RemoveContainerOptions {
        force: true,
        ..Default::default()
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let r = match docker.remove_container(id, Some(opts.clone())).await {
            Ok(())
            | Err(Server {
                status_code: 404, ..
            }) => return Ok(()),
            Err(
                e @ Server {
                    status_code: 409 | 500,
                    ..
                },
            ) => e,
            Err(e) => return Err(e),
        };
        match docker.inspect_container(id, None).await {
            Err(Server {
                status_code: 404, ..
            }) => return Ok(()),
            Err(e) => return Err(e),
            Ok(_) if std::time::Instant::now() >= deadline => return Err(r),
            Ok(_) => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    }
}

/// Containers stopped or paused for as long as this value lives.
#[derive(Debug)]
pub(crate) struct Quiesced {
    docker: Docker,
    key: u64,
    held: Vec<Held>,
    released: bool,
}

impl Quiesced {
    /// Stops (or pauses) each container, in order. On failure, those already
    /// stopped are started again.
    pub async fn new(
        docker: &Docker,
        containers: Vec<(String, String)>,
        pause: bool,
        stop_timeout: Duration,
    ) -> Result<Self, DockerError> {
        ensure_listener();
        let key = {
            let mut reg = registry().lock().await;
            reg.next += 1;
            reg.next
        };
        let mut q = Quiesced {
            docker: docker.clone(),
            key,
            held: Vec::new(),
            released: false,
        };
        for (id, name) in containers {
            let h = Held {
                id,
                name,
                paused: pause,
            };
            // The lock is held across the stop so that a signal waits for it
            // and then restarts this container too.
            let mut reg = registry().lock().await;
            if reg.terminating {
                return Err(DockerError::Interrupted);
            }
            // Held before it is stopped: if this future is dropped while the
            // engine stops it (a cancelled backup), `Drop` starts it again.
            reg.held.entry(key).or_default().push(h.clone());
            q.held.push(h.clone());
            let r = if pause {
                docker.pause_container(&h.id).await
            } else {
                let opts = StopContainerOptions {
                    t: Some(stop_timeout.as_secs().try_into().unwrap_or(i32::MAX)),
                    ..Default::default()
                };
                docker.stop_container(&h.id, Some(opts)).await
            };
            if let Err(e) = r {
                drop(reg);
                let action = if pause { "pause" } else { "stop" };
                let err = DockerError::api(format!("cannot {action} container {}", h.name), e);
                if let Err(e) = q.release().await {
                    tracing::error!("{e}");
                }
                return Err(err);
            }
            tracing::info!(
                "{} container {}",
                if pause { "paused" } else { "stopped" },
                h.name
            );
        }
        Ok(q)
    }

    /// Starts (or unpauses) every held container, in reverse order; every
    /// container is tried even when one fails.
    pub async fn release(mut self) -> Result<Vec<String>, DockerError> {
        self.released = true;
        let mut reg = registry().lock().await;
        reg.held.remove(&self.key);
        let mut failed = Vec::new();
        let mut names = Vec::new();
        for h in self.held.iter().rev() {
            match resume(&self.docker, h).await {
                Ok(()) => names.push(h.name.clone()),
                Err(e) => failed.push(format!("{}: {e}", h.name)),
            }
        }
        drop(reg);
        if failed.is_empty() {
            Ok(names)
        } else {
            Err(DockerError::Restart(failed.join("; ")))
        }
    }
}

impl Drop for Quiesced {
    fn drop(&mut self) {
        if self.released || self.held.is_empty() {
            return;
        }
        let held = std::mem::take(&mut self.held);
        let key = self.key;
        cleanup_blocking("restarting containers".into(), move |docker| async move {
            registry().lock().await.held.remove(&key);
            for h in held.iter().rev() {
                if let Err(e) = resume(&docker, h).await {
                    tracing::error!("cannot restart container {}: {e}", h.name);
                }
            }
        });
    }
}

/// A helper container, removed when this value is released or dropped.
#[derive(Debug)]
pub(crate) struct Helper {
    docker: Docker,
    /// Container name.
    pub id: String,
    removed: bool,
}

impl Helper {
    /// Creates (does not start) a helper container from `body`. The
    /// registry lock is held across the creation so that a signal either
    /// comes first (nothing is created) or removes it.
    pub async fn create(docker: &Docker, body: ContainerCreateBody) -> Result<Self, DockerError> {
        static N: AtomicU64 = AtomicU64::new(0);
        ensure_listener();
        let name = format!(
            "respaldo-helper-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        );
        // Owned before it exists: if this future is dropped while the
        // engine creates it (a cancelled backup), `Drop` removes it by name.
        // Declared before the registry lock, so that it is dropped after the
        // lock is released (its `Drop` takes the lock).
        let helper = Helper {
            docker: docker.clone(),
            id: name.clone(),
            removed: false,
        };
        let mut reg = registry().lock().await;
        if reg.terminating {
            let mut helper = helper;
            helper.removed = true;
            return Err(DockerError::Interrupted);
        }
        reg.helpers.insert(name.clone(), ());
        let opts = CreateContainerOptions {
            name: Some(name),
            ..Default::default()
        };
        docker
            .create_container(Some(opts), body)
            .await
            .map_err(|e| DockerError::api("creating a helper container".into(), e))?;
        drop(reg);
        Ok(helper)
    }

    /// Removes the container.
    pub async fn remove(mut self) -> Result<(), DockerError> {
        registry().lock().await.helpers.remove(&self.id);
        // Marked removed only once it is: a removal cancelled half-way (a
        // signal) leaves `Drop` to remove it.
        let r = remove_container(&self.docker, &self.id).await;
        self.removed = r.is_ok();
        r.map_err(|e| DockerError::api("cannot remove helper container".into(), e))
    }
}

impl Drop for Helper {
    fn drop(&mut self) {
        if self.removed {
            return;
        }
        let id = self.id.clone();
        cleanup_blocking(
            "removing a helper container".into(),
            move |docker| async move {
                registry().lock().await.helpers.remove(&id);
                if let Err(e) = remove_container(&docker, &id).await {
                    tracing::error!("cannot remove helper container {id}: {e}");
                }
            },
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use respaldo_testing::docker::{busybox_image, docker, unique, BUSYBOX};

    /// A panic in the task that stopped the containers still restarts them:
    /// the guard's `Drop` runs during unwinding.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_panicking_task_still_restarts_its_containers() {
        busybox_image();
        let name = unique("panic");
        docker(&["run", "-d", "--name", &name, BUSYBOX, "sleep", "3600"]);
        let engine = Docker::connect_with_local_defaults().unwrap();
        let id = docker(&["inspect", "-f", "{{.Id}}", &name])
            .trim()
            .to_string();
        let started = docker(&["inspect", "-f", "{{.State.StartedAt}}", &name]);
        let (tx, rx) = tokio::sync::oneshot::channel();
        let task = {
            let engine = engine.clone();
            let (id, name) = (id.clone(), name.clone());
            tokio::spawn(async move {
                let _held = Quiesced::new(
                    &engine,
                    vec![(id, name.clone())],
                    false,
                    Duration::from_secs(1),
                )
                .await
                .unwrap();
                let state = docker(&["inspect", "-f", "{{.State.Running}}", &name]);
                assert_eq!(state.trim(), "false", "stopped while held");
                tx.send(()).unwrap();
                panic!("a bug while the container is stopped");
            })
        };
        rx.await.unwrap();
        assert!(task.await.unwrap_err().is_panic());
        // The restart runs on its own thread: poll for it.
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        let running = loop {
            let r = docker(&["inspect", "-f", "{{.State.Running}}", &name]);
            if r.trim() == "true" || std::time::Instant::now() > deadline {
                break r.trim() == "true";
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        let restarted = docker(&["inspect", "-f", "{{.State.StartedAt}}", &name]);
        docker(&["rm", "-f", &name]);
        assert!(
            running,
            "the container was not started again after the panic"
        );
        assert_ne!(restarted, started, "it was never stopped");
    }
}
