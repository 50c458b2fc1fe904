//! Running external programs (pg_dump, a user's command, …) for drivers:
//! locating the binary, capturing the tail of stderr for error messages, and
//! describing how a process ended.

use std::path::{Path, PathBuf};
use std::process::ExitStatus;
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncRead, AsyncReadExt};

/// How much of a child's stderr is kept for messages.
const TAIL: usize = 4096;

/// Finds `program` on `PATH` (or checks it when it contains a `/`).
pub fn find_program(program: &str) -> Option<PathBuf> {
    let is_exec = |p: &Path| {
        use std::os::unix::fs::PermissionsExt;
        p.metadata()
            .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
            .unwrap_or(false)
    };
    if program.contains('/') {
        let p = PathBuf::from(program);
        return is_exec(&p).then_some(p);
    }
    std::env::var_os("PATH")
        .into_iter()
        .flat_map(|paths| std::env::split_paths(&paths).collect::<Vec<_>>())
        .map(|dir| dir.join(program))
        .find(|p| is_exec(p))
}

/// The last few KiB a child wrote to stderr, collected in the background.
#[derive(Debug, Clone, Default)]
pub struct StderrTail(Arc<Mutex<Vec<u8>>>);

impl StderrTail {
    /// Starts draining `stderr` (so the child never blocks on a full pipe).
    pub fn capture<R: AsyncRead + Unpin + Send + 'static>(
        mut stderr: R,
    ) -> (Self, tokio::task::JoinHandle<()>) {
        let tail = StderrTail::default();
        let t = tail.clone();
        let h = tokio::spawn(async move {
            let mut buf = [0u8; 8192];
            while let Ok(n) = stderr.read(&mut buf).await {
                if n == 0 {
                    break;
                }
                if let Ok(mut v) = t.0.lock() {
                    v.extend_from_slice(&buf[..n]);
                    if v.len() > TAIL {
                        let cut = v.len() - TAIL;
                        v.drain(..cut);
                    }
                }
            }
        });
        (tail, h)
    }

    /// The captured text, trimmed, on one line per original line.
    pub fn text(&self) -> String {
        let v = self.0.lock().map(|v| v.clone()).unwrap_or_default();
        String::from_utf8_lossy(&v).trim().to_string()
    }
}

/// "exited with status 2" / "was killed by signal 9 (SIGKILL)".
pub fn describe_exit(status: &ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    if let Some(code) = status.code() {
        return format!("exited with status {code}");
    }
    match status.signal() {
        Some(sig) => {
            let name = match sig {
                libc::SIGKILL => " (SIGKILL)",
                libc::SIGTERM => " (SIGTERM)",
                libc::SIGINT => " (SIGINT)",
                libc::SIGSEGV => " (SIGSEGV)",
                libc::SIGPIPE => " (SIGPIPE)",
                _ => "",
            };
            format!("was killed by signal {sig}{name}")
        }
        None => "ended abnormally".into(),
    }
}

/// A failure message for a child: what ended how, plus its stderr tail.
pub fn failure_message(what: &str, status: &ExitStatus, tail: &StderrTail) -> String {
    let t = tail.text();
    if t.is_empty() {
        format!("{what} {}", describe_exit(status))
    } else {
        format!(
            "{what} {}: {}",
            describe_exit(status),
            t.replace('\n', " | ")
        )
    }
}

/// Errors of running a child process for a driver.
#[derive(Debug, thiserror::Error)]
pub enum ProcessError {
    /// The program could not be started.
    #[error("cannot start `{program}`: {source}")]
    Spawn {
        /// The program.
        program: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The program ended badly; the message carries its stderr tail.
    #[error("{0}")]
    Failed(String),
    /// Storing or reading the repository failed.
    #[error(transparent)]
    Core(#[from] crate::Error),
}

fn spawn(
    cmd: &mut tokio::process::Command,
    what: &str,
) -> Result<tokio::process::Child, ProcessError> {
    cmd.kill_on_drop(true)
        .spawn()
        .map_err(|source| ProcessError::Spawn {
            program: what.to_string(),
            source,
        })
}

/// Runs `cmd` and stores its standard output as the stream artifact `name`
/// of `ctx`, streamed with backpressure. Fails when the program cannot start,
/// exits non-zero or is killed (the message names `what` and carries the end
/// of its stderr), or when storing fails (the program is then killed).
pub async fn store_stdout(
    ctx: &mut crate::source::BackupContext,
    name: &str,
    cmd: tokio::process::Command,
    what: &str,
) -> Result<crate::artifact::Artifact, ProcessError> {
    store_stdout_observed(ctx, name, cmd, what, &mut |_| {}).await
}

/// Like [`store_stdout`], and shows `observe` every byte stored, in order
/// (a driver counting rows from the dump as it passes).
pub async fn store_stdout_observed(
    ctx: &mut crate::source::BackupContext,
    name: &str,
    mut cmd: tokio::process::Command,
    what: &str,
    observe: &mut (dyn FnMut(&[u8]) + Send),
) -> Result<crate::artifact::Artifact, ProcessError> {
    use std::process::Stdio;
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = spawn(&mut cmd, what)?;
    let (tail, drain) = StderrTail::capture(child.stderr.take().expect("piped"));
    widen_pipe(child.stdout.as_ref().expect("piped"));
    let stdout = Observed {
        inner: child.stdout.take().expect("piped"),
        observe,
    };
    let stored = ctx.add_stream(name, stdout).await;
    if stored.is_err() {
        let _ = child.start_kill();
    }
    let status = child.wait().await.map_err(|source| ProcessError::Spawn {
        program: what.to_string(),
        source,
    })?;
    let _ = drain.await;
    let artifact = stored?;
    if !status.success() {
        return Err(ProcessError::Failed(failure_message(what, &status, &tail)));
    }
    Ok(artifact)
}

/// Asks for a 1 MiB pipe buffer (Linux; the default 64 KiB makes a fast
/// producer and its reader take turns): fewer wake-ups per megabyte. A
/// refusal (a lower `pipe-max-size`) changes nothing.
fn widen_pipe(stdout: &tokio::process::ChildStdout) {
    #[cfg(target_os = "linux")]
    {
        use std::os::fd::AsRawFd;
        // SAFETY: the descriptor is open for as long as `stdout` lives;
        // F_SETPIPE_SZ only resizes the pipe's buffer.
        unsafe { libc::fcntl(stdout.as_raw_fd(), libc::F_SETPIPE_SZ, 1 << 20) };
    }
    #[cfg(not(target_os = "linux"))]
    let _ = stdout;
}

/// A reader that shows every byte it reads to `observe`.
struct Observed<'a, R> {
    inner: R,
    observe: &'a mut (dyn FnMut(&[u8]) + Send),
}

impl<R: AsyncRead + Unpin> AsyncRead for Observed<'_, R> {
    fn poll_read(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let r = std::pin::Pin::new(&mut this.inner).poll_read(cx, buf);
        if let std::task::Poll::Ready(Ok(())) = &r {
            (this.observe)(&buf.filled()[before..]);
        }
        r
    }
}

/// Rewrites a stream artifact on its way to a program (a restore of only
/// some tables of a dump, say).
pub trait StreamFilter: Send {
    /// Takes the next bytes, appending what passes to `out`.
    fn filter(&mut self, input: &[u8], out: &mut Vec<u8>);
    /// The end of the stream: appends what is still held back.
    fn finish(&mut self, out: &mut Vec<u8>);
}

/// Like [`feed_stdin`], with the artifact rewritten by `filter` on its way.
pub async fn feed_stdin_filtered(
    ctx: &crate::source::RestoreContext,
    artifact: &crate::artifact::Artifact,
    cmd: tokio::process::Command,
    what: &str,
    filter: &mut dyn StreamFilter,
) -> Result<u64, ProcessError> {
    feed(ctx, artifact, cmd, what, Stdout::Discard, Some(filter)).await
}

/// Runs `cmd` with the stream artifact on its standard input and waits for
/// it (its standard output is discarded). Returns the number of bytes fed.
/// A program that exits non-zero fails with the end of its stderr.
pub async fn feed_stdin(
    ctx: &crate::source::RestoreContext,
    artifact: &crate::artifact::Artifact,
    cmd: tokio::process::Command,
    what: &str,
) -> Result<u64, ProcessError> {
    feed(ctx, artifact, cmd, what, Stdout::Discard, None).await
}

/// Like [`feed_stdin`], and returns the program's standard output (at most
/// `limit` bytes are kept: for small outputs such as an archive's table of
/// contents).
pub async fn feed_stdin_capture(
    ctx: &crate::source::RestoreContext,
    artifact: &crate::artifact::Artifact,
    cmd: tokio::process::Command,
    what: &str,
    limit: usize,
) -> Result<Vec<u8>, ProcessError> {
    let out = Arc::new(Mutex::new(Vec::new()));
    feed(
        ctx,
        artifact,
        cmd,
        what,
        Stdout::Capture(out.clone(), limit),
        None,
    )
    .await?;
    let v = out.lock().map(|v| v.clone()).unwrap_or_default();
    Ok(v)
}

/// Feeds the artifact to `first` and its standard output, between
/// `prologue` and `epilogue`, to `second` (`pg_restore -f -` into `psql`,
/// wrapped in one transaction). Both must exit 0.
pub async fn feed_through(
    ctx: &crate::source::RestoreContext,
    artifact: &crate::artifact::Artifact,
    first: tokio::process::Command,
    second: tokio::process::Command,
    prologue: Vec<u8>,
    epilogue: Vec<u8>,
    what: &str,
) -> Result<u64, ProcessError> {
    feed(
        ctx,
        artifact,
        first,
        what,
        Stdout::Pipe {
            into: Box::new(second),
            prologue,
            epilogue,
        },
        None,
    )
    .await
}

enum Stdout {
    Discard,
    Capture(Arc<Mutex<Vec<u8>>>, usize),
    Pipe {
        into: Box<tokio::process::Command>,
        prologue: Vec<u8>,
        epilogue: Vec<u8>,
    },
}

async fn feed(
    ctx: &crate::source::RestoreContext,
    artifact: &crate::artifact::Artifact,
    mut cmd: tokio::process::Command,
    what: &str,
    stdout: Stdout,
    mut filter: Option<&mut dyn StreamFilter>,
) -> Result<u64, ProcessError> {
    use std::process::Stdio;
    use tokio::io::AsyncWriteExt;
    let out_mode = match &stdout {
        Stdout::Discard => Stdio::null(),
        _ => Stdio::piped(),
    };
    cmd.stdin(Stdio::piped())
        .stdout(out_mode)
        .stderr(Stdio::piped());
    let mut child = spawn(&mut cmd, what)?;
    let (tail, drain) = StderrTail::capture(child.stderr.take().expect("piped"));
    // What happens to the program's output, concurrently with the feeding.
    let sink: Option<tokio::task::JoinHandle<Result<(), ProcessError>>> = match stdout {
        Stdout::Discard => None,
        Stdout::Capture(buf, limit) => {
            let mut out = child.stdout.take().expect("piped");
            Some(tokio::spawn(async move {
                let mut chunk = vec![0u8; 64 * 1024];
                loop {
                    let n = out.read(&mut chunk).await.unwrap_or(0);
                    if n == 0 {
                        return Ok(());
                    }
                    if let Ok(mut v) = buf.lock() {
                        let room = limit.saturating_sub(v.len());
                        v.extend_from_slice(&chunk[..n.min(room)]);
                    }
                }
            }))
        }
        Stdout::Pipe {
            mut into,
            prologue,
            epilogue,
        } => {
            let mut out = child.stdout.take().expect("piped");
            into.stdin(Stdio::piped())
                .stdout(Stdio::null())
                .stderr(Stdio::piped());
            let name = format!("{what} (loader)");
            let mut second = spawn(&mut into, &name)?;
            let (tail2, drain2) = StderrTail::capture(second.stderr.take().expect("piped"));
            let mut sin = second.stdin.take().expect("piped");
            Some(tokio::spawn(async move {
                let copy = async {
                    sin.write_all(&prologue).await?;
                    tokio::io::copy(&mut out, &mut sin).await?;
                    sin.write_all(&epilogue).await?;
                    sin.shutdown().await
                }
                .await;
                drop(sin);
                let status = second.wait().await.map_err(|source| ProcessError::Spawn {
                    program: name.clone(),
                    source,
                })?;
                let _ = drain2.await;
                if !status.success() {
                    return Err(ProcessError::Failed(failure_message(
                        &name, &status, &tail2,
                    )));
                }
                copy.map_err(|e| ProcessError::Failed(format!("{name}: {e}")))
            }))
        }
    };
    let mut stdin = child.stdin.take().expect("piped");
    let mut reader = ctx.open_stream(artifact);
    // A program may stop reading once it has what it needs (pg_restore of
    // one table): a broken pipe ends the feeding, its exit status decides.
    // A repository read error kills it: it must not finish on partial input.
    let mut fed = 0u64;
    let mut read_error = None;
    let mut buf = vec![0u8; 256 * 1024];
    let mut filtered = Vec::new();
    loop {
        let n = match reader.read(&mut buf).await {
            Ok(0) => {
                if let Some(f) = filter.as_deref_mut() {
                    filtered.clear();
                    f.finish(&mut filtered);
                    let _ = stdin.write_all(&filtered).await;
                }
                break;
            }
            Ok(n) => n,
            Err(e) => {
                read_error = Some(e);
                let _ = child.start_kill();
                break;
            }
        };
        let bytes = match filter.as_deref_mut() {
            Some(f) => {
                filtered.clear();
                f.filter(&buf[..n], &mut filtered);
                &filtered[..]
            }
            None => &buf[..n],
        };
        if stdin.write_all(bytes).await.is_err() {
            break;
        }
        fed += n as u64;
    }
    let _ = stdin.shutdown().await;
    drop(stdin);
    let status = child.wait().await.map_err(|source| ProcessError::Spawn {
        program: what.to_string(),
        source,
    })?;
    let _ = drain.await;
    let sunk = match sink {
        Some(h) => h
            .await
            .unwrap_or_else(|e| Err(ProcessError::Failed(format!("{what}: {e}")))),
        None => Ok(()),
    };
    if let Some(e) = read_error {
        return Err(ProcessError::Failed(format!(
            "reading the backup for {what}: {e}"
        )));
    }
    if !status.success() {
        return Err(ProcessError::Failed(failure_message(what, &status, &tail)));
    }
    sunk?;
    Ok(fed)
}

/// Runs a prepared command (stdin closed, stdout discarded) and fails with
/// the end of its stderr unless it exits 0.
pub async fn run_command(mut cmd: tokio::process::Command, what: &str) -> Result<(), ProcessError> {
    use std::process::Stdio;
    cmd.stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let mut child = spawn(&mut cmd, what)?;
    let (tail, drain) = StderrTail::capture(child.stderr.take().expect("piped"));
    let status = child.wait().await.map_err(|source| ProcessError::Spawn {
        program: what.to_string(),
        source,
    })?;
    let _ = drain.await;
    if !status.success() {
        return Err(ProcessError::Failed(failure_message(what, &status, &tail)));
    }
    Ok(())
}

/// Options of [`run_with`].
#[derive(Debug, Clone, Default)]
pub struct RunOptions {
    /// Extra environment variables.
    pub env: Vec<(String, String)>,
    /// Working directory (default: the current one).
    pub dir: Option<PathBuf>,
    /// Kill the command, and every process it started in its process group,
    /// when it runs longer than this.
    pub timeout: Option<std::time::Duration>,
}

/// Runs a configured command (`argv`, no shell) to completion, its standard
/// output discarded. Fails when it is not found, cannot start, or exits
/// non-zero (with the end of its stderr). A daemon it starts may keep stderr
/// open: that is waited for at most a second.
pub async fn run(argv: &[String]) -> Result<(), ProcessError> {
    run_with(argv, &RunOptions::default()).await
}

/// [`run`] with an environment, a working directory and a timeout.
pub async fn run_with(argv: &[String], opts: &RunOptions) -> Result<(), ProcessError> {
    use std::process::Stdio;
    let (prog, args) = argv
        .split_first()
        .ok_or_else(|| ProcessError::Failed("empty command".into()))?;
    let path = match &opts.dir {
        Some(dir) if prog.contains('/') => find_program(&dir.join(prog).to_string_lossy()),
        _ => find_program(prog),
    }
    .ok_or_else(|| ProcessError::Failed(format!("`{prog}` not found on PATH")))?;
    let what = format!("`{prog}`");
    let mut cmd = tokio::process::Command::new(path);
    cmd.args(args)
        .envs(opts.env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    if let Some(dir) = &opts.dir {
        cmd.current_dir(dir);
    }
    if opts.timeout.is_some() {
        cmd.process_group(0);
    }
    let mut child = spawn(&mut cmd, &what)?;
    let pid = child.id();
    let (tail, drain) = StderrTail::capture(child.stderr.take().expect("piped"));
    let waited = match opts.timeout {
        Some(limit) => match tokio::time::timeout(limit, child.wait()).await {
            Ok(r) => r,
            Err(_) => {
                if let Some(pid) = pid {
                    // SAFETY: signals the process group the child leads.
                    unsafe { libc::kill(-(pid as libc::pid_t), libc::SIGKILL) };
                }
                let _ = child.wait().await;
                return Err(ProcessError::Failed(format!(
                    "{what} timed out after {}s and was killed",
                    limit.as_secs_f64()
                )));
            }
        },
        None => child.wait().await,
    };
    let status = waited.map_err(|source| ProcessError::Spawn {
        program: what.clone(),
        source,
    })?;
    let _ = tokio::time::timeout(std::time::Duration::from_secs(1), drain).await;
    if status.success() {
        Ok(())
    } else {
        Err(ProcessError::Failed(failure_message(&what, &status, &tail)))
    }
}
