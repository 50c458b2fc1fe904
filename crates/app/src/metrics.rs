//! Prometheus text for the sources' state: what the daemon's `/metrics`
//! serves and `status --prometheus FILE` writes for node exporter's
//! textfile collector (timer and cron users, who run no daemon).

use std::fmt::Write as _;
use std::path::Path;

use respaldo_core::Repository;

use crate::config::Config;
use crate::status::SourceState;

/// A label value escaped for the text format.
pub fn label(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// Appends one metric family: its `HELP` and `TYPE` lines, then a sample
/// per `(labels, value)` row.
pub fn family(out: &mut String, name: &str, kind: &str, help: &str, rows: Vec<(String, f64)>) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
    for (labels, v) in rows {
        let _ = writeln!(out, "{name}{labels} {v}");
    }
}

/// The families of every source's state and the repository's size.
pub fn render(sources: &[SourceState], repository_size: Option<u64>) -> String {
    let mut out = String::new();
    let mut family = |name: &str, kind: &str, help: &str, rows: Vec<(String, f64)>| {
        family(&mut out, name, kind, help, rows)
    };
    let per_source = |f: &dyn Fn(&SourceState) -> Option<f64>| -> Vec<(String, f64)> {
        sources
            .iter()
            .filter_map(|s| f(s).map(|v| (format!("{{source=\"{}\"}}", label(&s.name)), v)))
            .collect()
    };
    family(
        "respaldo_source_last_success_timestamp_seconds",
        "gauge",
        "Start time of the source's last good backup (Unix seconds).",
        per_source(&|s| s.good.as_ref().map(|g| g.time.timestamp() as f64)),
    );
    family(
        "respaldo_source_last_success_duration_seconds",
        "gauge",
        "How long the source's last good backup took.",
        per_source(&|s| s.good.as_ref().map(|g| g.duration_ms as f64 / 1000.0)),
    );
    family(
        "respaldo_source_last_success_bytes_added",
        "gauge",
        "Bytes the source's last good backup added to the repository.",
        per_source(&|s| s.good.as_ref().map(|g| g.bytes_added as f64)),
    );
    family(
        "respaldo_source_size_bytes",
        "gauge",
        "Plaintext size of the source's last good backup.",
        per_source(&|s| s.good.as_ref().map(|g| g.size as f64)),
    );
    family(
        "respaldo_source_failures_total",
        "counter",
        "Failed backup runs of the source in the run history.",
        per_source(&|s| Some(s.failures as f64)),
    );
    family(
        "respaldo_source_last_run_success",
        "gauge",
        "1 when the source's last backup run succeeded.",
        per_source(&|s| s.last_run.as_ref().map(|r| if r.ok { 1.0 } else { 0.0 })),
    );
    family(
        "respaldo_source_stale",
        "gauge",
        "1 when the source has no good backup within its objective (rpo).",
        per_source(&|s| Some(if s.stale { 1.0 } else { 0.0 })),
    );
    family(
        "respaldo_source_rpo_seconds",
        "gauge",
        "The source's recovery point objective.",
        per_source(&|s| s.rpo.map(|r| r.0.as_secs_f64())),
    );
    family(
        "respaldo_repository_size_bytes",
        "gauge",
        "Bytes stored in the repository.",
        repository_size
            .map(|v| vec![(String::new(), v as f64)])
            .unwrap_or_default(),
    );
    family(
        "respaldo_source_rto_seconds",
        "gauge",
        "The source's recovery time objective.",
        per_source(&|s| s.rto.map(|r| r.0.as_secs_f64())),
    );
    family(
        "respaldo_source_last_drill_rto_seconds",
        "gauge",
        "The restore time the source's last good test-restore estimated.",
        per_source(&|s| {
            s.drill
                .as_ref()
                .filter(|d| d.ok)
                .map(|d| d.rto.as_secs_f64())
        }),
    );
    family(
        "respaldo_source_rto_missed",
        "gauge",
        "1 when the source has an objective (rto) and no drill within it.",
        per_source(&|s| s.rto.map(|_| if s.rto_missed { 1.0 } else { 0.0 })),
    );
    out
}

/// Writes the state of `sources` and the size of `repo` to `path` for the
/// textfile collector (`status --prometheus`), masked, with the time it
/// was written.
pub async fn write_status(
    config: &Config,
    repo: &Repository,
    sources: &[SourceState],
    path: &Path,
) -> std::io::Result<()> {
    let mut text = render(sources, crate::status::repository_size(repo).await);
    family(
        &mut text,
        "respaldo_status_timestamp_seconds",
        "gauge",
        "When `respaldo status` wrote this file (Unix seconds).",
        vec![(String::new(), chrono::Utc::now().timestamp() as f64)],
    );
    write_textfile(path, &config.masker.mask(&text))
}

/// Writes `text` to `path` the way the textfile collector needs: into a
/// temporary file in the same folder, then renamed over `path`, so the
/// collector never reads half a file.
pub fn write_textfile(path: &Path, text: &str) -> std::io::Result<()> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let mut tmp = tempfile::NamedTempFile::new_in(dir)?;
    std::io::Write::write_all(&mut tmp, text.as_bytes())?;
    tmp.as_file().sync_all()?;
    // Readable by the collector, which often runs as another user.
    std::fs::set_permissions(
        tmp.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o644),
    )?;
    tmp.persist(path).map_err(|e| e.error)?;
    Ok(())
}
