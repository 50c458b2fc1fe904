//! # respaldo-testing
//!
//! Test support shared by respaldo's crates: the [`conformance`] suite that
//! every [`Sink`](respaldo_core::Sink) must pass, [`MemorySink`] (a
//! repository in memory), the [`harness`] that drives a source in-process
//! (backup → plan → restore → test-restore), [`FaultySink`] and
//! [`CrashSink`], wrappers that inject failures, and the throwaway servers
//! the tests run against ([`docker`], [`moto`], [`s3proxy`]) and the
//! container [`image`]s of the image and example-stack tests.
#![deny(missing_docs)]

pub mod conformance;
mod crash;
pub mod data;
pub mod docker;
mod faulty;
pub mod harness;
pub mod image;
mod memory;
pub mod moto;
pub mod s3proxy;
pub mod servers;

pub use crash::CrashSink;
pub use faulty::{Fault, FaultySink};
pub use memory::MemorySink;

/// Whether the tests run as root (some fixtures then drop privileges, as
/// PostgreSQL's `initdb` requires).
pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}
