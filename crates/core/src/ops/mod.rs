//! The operations on a repository: [`backup`] (every source into one
//! snapshot), [`browse`] (tree listings and differences without restoring),
//! [`verify`], [`retention`] (which snapshots a policy keeps),
//! [`maintenance`] (forget), [`prune`] (beside running backups), [`copy`]
//! between repositories and
//! [`repair`]. Each is a function over an open
//! [`Repository`](crate::Repository) that returns a report; the caller takes
//! the locks.

pub mod backup;
pub mod browse;
pub mod copy;
pub mod maintenance;
pub mod prune;
pub mod repair;
pub mod retention;
pub mod verify;
