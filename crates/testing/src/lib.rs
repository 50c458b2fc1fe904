//! # respaldo-testing
//!
//! Test support shared by respaldo's crates: the [`conformance`] suite that
//! every [`Sink`](respaldo_core::Sink) must pass, and [`FaultySink`], a wrapper
//! that injects failures for fault-injection tests.

pub mod conformance;
mod crash;
pub mod docker;
mod faulty;
pub mod moto;
pub mod s3proxy;

pub use crash::CrashSink;
pub use faulty::{Fault, FaultySink};
