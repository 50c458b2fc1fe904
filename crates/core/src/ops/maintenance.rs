//! `forget`: apply retention (`prune`, in [`crate::ops::prune`], then
//! removes the data no snapshot refers to any more).

use std::collections::HashMap;
use std::sync::Arc;

use crate::error::{Error, Result};
use crate::ops::retention::{Candidate, RetentionPolicy};
use crate::repo::id::ObjectId;
use crate::repo::snapshot::{Hosts, SnapshotRef, DAMAGED_TAG, KEEP_TAG, PRE_RESTORE_TAG};
use crate::repo::Repository;

/// One snapshot's fate.
#[derive(Debug, Clone)]
pub struct ForgetDecision {
    /// Snapshot id.
    pub id: ObjectId,
    /// When it was taken.
    pub time: chrono::DateTime<chrono::Utc>,
    /// The host that took it.
    pub host: String,
    /// Its tags.
    pub tags: Vec<String>,
    /// Kept or removed.
    pub keep: bool,
    /// Why it is kept (rule names per source), or why removed.
    pub reasons: Vec<String>,
}

/// What `forget` considers and protects.
#[derive(Debug, Clone)]
pub struct ForgetOptions {
    /// Work out and report the decisions; delete nothing.
    pub dry_run: bool,
    /// Whose snapshots: the others are neither considered nor touched.
    pub hosts: Hosts,
    /// Safety snapshots (tag `pre-restore`) younger than this are kept
    /// whatever the rules say; older ones are removed. They never take a
    /// place in a source's retention series.
    pub safety_window: chrono::TimeDelta,
    /// The time the safety window is measured from.
    pub now: chrono::DateTime<chrono::Utc>,
}

impl Default for ForgetOptions {
    fn default() -> Self {
        ForgetOptions {
            dry_run: false,
            hosts: Hosts::All,
            safety_window: DEFAULT_SAFETY_WINDOW,
            now: chrono::Utc::now(),
        }
    }
}

/// How long safety snapshots are kept by default: 7 days.
pub const DEFAULT_SAFETY_WINDOW: chrono::TimeDelta = chrono::TimeDelta::days(7);

/// Decides which of the snapshots of `opts.hosts` a policy keeps.
///
/// Each (host, source) pair's good regular backups form a series the policy
/// is applied to (per-tag rules within it); a snapshot is kept if any of its
/// sources keeps it, so two hosts with a source of the same name never
/// share a series. Snapshots tagged `keep` and damaged originals (tag
/// `damaged`) are always kept; safety snapshots (tag `pre-restore`) are kept
/// within the safety window, and longer by a `tags.pre-restore` rule
/// (counted among the safety snapshots of each host). Snapshots without any
/// good source are removed.
pub fn decide<Tz: chrono::TimeZone>(
    snapshots: &[SnapshotRef],
    policy: &RetentionPolicy,
    tz: &Tz,
    opts: &ForgetOptions,
) -> Vec<ForgetDecision> {
    let considered: Vec<&SnapshotRef> = snapshots
        .iter()
        .filter(|s| opts.hosts.matches(&s.snapshot.host))
        .collect();
    let mut reasons: HashMap<ObjectId, Vec<String>> = HashMap::new();
    let mut removed_why: HashMap<ObjectId, String> = HashMap::new();
    for s in &considered {
        let r = if s.has_tag(KEEP_TAG) {
            Some("tag keep".to_string())
        } else if s.has_tag(DAMAGED_TAG) {
            Some("damaged original replaced by `repair snapshots` (forget it by id)".to_string())
        } else if s.has_tag(PRE_RESTORE_TAG) {
            let window = opts.safety_window;
            if opts.now - s.snapshot.time < window {
                Some(format!("safety snapshot, kept for {}", human_days(window)))
            } else {
                removed_why.insert(
                    s.id,
                    format!("safety snapshot older than {}", human_days(window)),
                );
                None
            }
        } else {
            None
        };
        if let Some(r) = r {
            reasons.entry(s.id).or_default().push(r);
        }
    }
    // A rule written for the safety snapshots' own tag keeps them longer,
    // counted among themselves, per host.
    if let Some(rules) = policy.tags.get(PRE_RESTORE_TAG) {
        let own = RetentionPolicy {
            tags: [(PRE_RESTORE_TAG.to_string(), rules.clone())].into(),
            ..Default::default()
        };
        let mut hosts: Vec<&str> = considered
            .iter()
            .map(|s| s.snapshot.host.as_str())
            .collect();
        hosts.sort_unstable();
        hosts.dedup();
        for host in hosts {
            let members: Vec<(String, &SnapshotRef)> = considered
                .iter()
                .filter(|s| s.snapshot.host == host && s.has_tag(PRE_RESTORE_TAG))
                .map(|s| (s.id.to_hex(), *s))
                .collect();
            let candidates: Vec<Candidate<'_>> = members
                .iter()
                .map(|(id, s)| Candidate {
                    id,
                    time: s.snapshot.time,
                    tags: &s.snapshot.tags,
                })
                .collect();
            for d in own.apply(&candidates, tz).into_iter().filter(|d| d.keep) {
                let id: ObjectId = d.id.parse().expect("ids are hex");
                removed_why.remove(&id);
                reasons.entry(id).or_default().extend(d.reasons);
            }
        }
    }
    let mut series: Vec<(&str, &str)> = considered
        .iter()
        .filter(|s| s.is_regular())
        .flat_map(|s| {
            s.snapshot
                .sources
                .keys()
                .map(|k| (s.snapshot.host.as_str(), k.as_str()))
        })
        .collect();
    series.sort_unstable();
    series.dedup();
    for (host, source) in series {
        let members: Vec<(String, &SnapshotRef)> = considered
            .iter()
            .filter(|s| s.is_regular() && s.snapshot.host == host && s.good(source).is_some())
            .map(|s| (s.id.to_hex(), *s))
            .collect();
        let candidates: Vec<Candidate<'_>> = members
            .iter()
            .map(|(id, s)| Candidate {
                id,
                time: s.snapshot.time,
                tags: &s.snapshot.tags,
            })
            .collect();
        for d in policy.apply(&candidates, tz) {
            if d.keep {
                let id: ObjectId = d.id.parse().expect("ids are hex");
                let r = reasons.entry(id).or_default();
                r.extend(d.reasons.into_iter().map(|x| format!("{source}: {x}")));
            }
        }
    }
    let mut out: Vec<ForgetDecision> = considered
        .iter()
        .map(|s| {
            let kept = reasons.remove(&s.id);
            let keep = kept.is_some();
            ForgetDecision {
                id: s.id,
                time: s.snapshot.time,
                host: s.snapshot.host.clone(),
                tags: s.snapshot.tags.clone(),
                keep,
                reasons: kept.unwrap_or_else(|| {
                    if let Some(why) = removed_why.remove(&s.id) {
                        vec![why]
                    } else if s.snapshot.sources.values().any(|e| e.is_ok()) {
                        vec!["no rule keeps it".into()]
                    } else {
                        vec!["no good source".into()]
                    }
                }),
            }
        })
        .collect();
    out.sort_by_key(|d| std::cmp::Reverse((d.time, d.id)));
    out
}

fn human_days(d: chrono::TimeDelta) -> String {
    if d.num_hours() % 24 == 0 {
        format!("{}d", d.num_days())
    } else {
        format!("{}h", d.num_hours())
    }
}

/// Removes the snapshots of `opts.hosts` a policy does not keep. Returns the
/// decisions.
pub async fn forget<Tz: chrono::TimeZone>(
    repo: &Arc<Repository>,
    policy: &RetentionPolicy,
    tz: &Tz,
    opts: &ForgetOptions,
) -> Result<Vec<ForgetDecision>> {
    if policy.is_empty() {
        return Err(Error::Invalid(
            "no retention rule is configured ([retention] keep_*); refusing to forget every snapshot".into(),
        ));
    }
    let (snapshots, _) = repo.snapshots().await?;
    let decisions = decide(&snapshots, policy, tz, opts);
    if !opts.dry_run {
        for d in decisions.iter().filter(|d| !d.keep) {
            repo.delete_snapshot(&d.id).await?;
        }
    }
    Ok(decisions)
}

/// Removes the given snapshots (ids as resolved by the caller), whatever
/// their tags or host: an explicit `forget ID`.
pub async fn forget_ids(repo: &Arc<Repository>, ids: &[ObjectId], dry_run: bool) -> Result<()> {
    if !dry_run {
        for id in ids {
            repo.delete_snapshot(id).await?;
        }
    }
    Ok(())
}
