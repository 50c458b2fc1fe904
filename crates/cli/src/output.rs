//! Human output: a progress line on terminals (sizes, times and tables
//! come from respaldo-app's `units`, shared with the reports it renders).

use std::io::IsTerminal;
use std::sync::Arc;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressStyle};
pub use respaldo_app::units::{duration, size, table, time};
use respaldo_core::kit::progress::Progress;

/// The terminal as the operations' observer: messages and warnings on
/// stderr (not with `--quiet`), a progress line when stderr is a terminal.
pub struct Terminal {
    /// `--quiet`.
    pub quiet: bool,
    /// Whether to draw progress (not quiet, not JSON).
    pub progress: bool,
}

impl respaldo_app::Observer for Terminal {
    fn say(&self, line: &str) {
        if !self.quiet {
            eprintln!("{line}");
        }
    }
    fn warn(&self, line: &str) {
        if !self.quiet {
            eprintln!("warning: {line}");
        }
    }
    fn progress(&self, verb: &'static str, progress: &Arc<Progress>) -> Box<dyn Send> {
        Box::new(ProgressView::start(progress.clone(), self.progress, verb))
    }
}

/// A progress line on stderr, when it is a terminal and output is not
/// quiet; removed when dropped.
pub struct ProgressView {
    bar: Option<ProgressBar>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl ProgressView {
    /// Starts drawing `progress` if `enabled` and stderr is a terminal.
    pub fn start(progress: Arc<Progress>, enabled: bool, verb: &'static str) -> Self {
        if !enabled || !std::io::stderr().is_terminal() {
            return ProgressView {
                bar: None,
                task: None,
            };
        }
        let bar = ProgressBar::new(0);
        bar.set_style(
            ProgressStyle::with_template("{spinner} {msg}")
                .unwrap_or_else(|_| ProgressStyle::default_spinner()),
        );
        let b = bar.clone();
        let task = tokio::spawn(async move {
            let start = std::time::Instant::now();
            loop {
                let bytes = Progress::get(&progress.bytes);
                let total = Progress::get(&progress.total);
                let items = Progress::get(&progress.items);
                let secs = start.elapsed().as_secs_f64().max(0.001);
                let rate = bytes as f64 / secs;
                let mut msg = format!(
                    "{verb} {} items, {} ({}/s)",
                    items,
                    size(bytes),
                    size(rate as u64)
                );
                if total > bytes && rate > 0.0 {
                    let eta = (total - bytes) as f64 / rate;
                    msg.push_str(&format!(
                        " of {}, ETA {}",
                        size(total),
                        duration((eta * 1000.0) as u64)
                    ));
                }
                let cur = progress.current();
                if !cur.is_empty() {
                    let short: String = cur
                        .chars()
                        .rev()
                        .take(40)
                        .collect::<Vec<_>>()
                        .into_iter()
                        .rev()
                        .collect();
                    msg.push_str(&format!("  {short}"));
                }
                b.set_message(msg);
                b.tick();
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        });
        ProgressView {
            bar: Some(bar),
            task: Some(task),
        }
    }
}

impl Drop for ProgressView {
    fn drop(&mut self) {
        if let Some(t) = self.task.take() {
            t.abort();
        }
        if let Some(b) = self.bar.take() {
            b.finish_and_clear();
        }
    }
}

/// Prints a report: as one JSON document with `--json`, else as its text.
pub(crate) fn render(
    json: bool,
    report: &(impl serde::Serialize + std::fmt::Display),
) -> anyhow::Result<u8> {
    match json {
        true => println!("{}", serde_json::to_value(report)?),
        false => print!("{report}"),
    }
    Ok(crate::exit::OK)
}
