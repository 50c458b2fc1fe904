//! `stats`: how big the repository is against what it holds, and which
//! sources grow — from the snapshots' own counters and one listing of the
//! stored objects (no data is read).

use std::collections::BTreeMap;

use serde::Serialize;

use crate::error::Result;
use crate::stack::Stack;
use crate::units;

/// One source's size and growth.
#[derive(Debug, Clone, Serialize)]
pub struct SourceGrowth {
    /// The source.
    pub name: String,
    /// Its driver.
    #[serde(rename = "type")]
    pub kind: String,
    /// Good backups of it.
    pub snapshots: usize,
    /// Plaintext bytes in its newest good backup.
    pub size: u64,
    /// Its size then minus its size in the oldest of the last `last` good
    /// backups.
    pub growth: i128,
    /// Bytes its last `last` backups added to the repository (after
    /// deduplication and compression).
    pub added: u64,
}

/// What `stats` found.
#[derive(Debug, Clone, Serialize)]
pub struct StatsReport {
    /// Snapshots from the selected hosts.
    pub snapshots: usize,
    /// Bytes the repository stores (packs, index, snapshots).
    pub stored: u64,
    /// Plaintext bytes of every good backup of every snapshot: what
    /// restoring all of them would write.
    pub raw: u64,
    /// `raw / stored`: what deduplication and compression save.
    pub ratio: f64,
    /// How many of each source's newest good backups growth is measured over.
    pub last: usize,
    /// Per source, largest growth first.
    pub sources: Vec<SourceGrowth>,
}

/// A source's type and its good backups, newest first, as (size, added).
type Runs<'a> = (&'a str, Vec<(u64, u64)>);

/// `stats [--last N]`.
pub async fn stats(ctx: &Stack, last: usize) -> Result<StatsReport> {
    let repo = ctx.repo().await?;
    let mut list = ctx.snapshots(&repo).await?;
    let hosts = ctx.hosts();
    list.retain(|s| hosts.matches(&s.snapshot.host) && s.is_regular());
    list.sort_by_key(|s| std::cmp::Reverse((s.snapshot.time, s.id)));
    let stored = repo.total_size().await?;
    let mut raw = 0u64;
    let mut per: BTreeMap<&str, Runs<'_>> = BTreeMap::new();
    for s in &list {
        for (name, e) in s.snapshot.sources.iter().filter(|(_, e)| e.is_ok()) {
            raw += e.stats.bytes_total;
            let slot = per.entry(name).or_insert((&e.kind, Vec::new()));
            slot.1.push((e.stats.bytes_total, e.stats.bytes_added));
        }
    }
    let last = last.max(1);
    let mut sources: Vec<SourceGrowth> = per
        .into_iter()
        .map(|(name, (kind, runs))| {
            let window = &runs[..runs.len().min(last)];
            let (newest, oldest) = (window[0].0, window[window.len() - 1].0);
            SourceGrowth {
                name: name.to_string(),
                kind: kind.to_string(),
                snapshots: runs.len(),
                size: newest,
                growth: i128::from(newest) - i128::from(oldest),
                added: window.iter().map(|r| r.1).sum(),
            }
        })
        .collect();
    sources.sort_by(|a, b| b.growth.cmp(&a.growth).then_with(|| a.name.cmp(&b.name)));
    Ok(StatsReport {
        snapshots: list.len(),
        stored,
        raw,
        ratio: if stored == 0 {
            0.0
        } else {
            raw as f64 / stored as f64
        },
        last,
        sources,
    })
}

impl std::fmt::Display for StatsReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let (stored, raw) = (units::size(self.stored), units::size(self.raw));
        writeln!(f, "snapshots  {}\nstored     {stored}", self.snapshots)?;
        writeln!(f, "raw        {raw} ({:.1}× what is stored)", self.ratio)?;
        let rows: Vec<Vec<String>> = self
            .sources
            .iter()
            .map(|s| {
                let growth = units::size(s.growth.unsigned_abs() as u64);
                let sign = if s.growth < 0 { "-" } else { "+" };
                vec![
                    s.name.clone(),
                    s.kind.clone(),
                    s.snapshots.to_string(),
                    units::size(s.size),
                    format!("{sign}{growth}"),
                    units::size(s.added),
                ]
            })
            .collect();
        let growth = format!("GROWTH (last {})", self.last);
        let header = ["SOURCE", "TYPE", "BACKUPS", "SIZE", &growth, "ADDED"];
        write!(f, "{}", units::table(&header, &rows))
    }
}
