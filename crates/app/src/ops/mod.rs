//! The operations behind the commands, one module each: they take a
//! [`Stack`](crate::stack::Stack) and a request, hold the lock they need,
//! and return a report (or a typed [`Error`](crate::error::Error)); they
//! print nothing.

pub mod backup;
pub mod browse;
pub mod diff;
pub mod find;
pub mod maintenance;
pub mod mount;
pub mod repository;
pub mod restore;
pub mod snapshots;
pub mod stats;
pub mod test_restore;
pub mod tracked;
