//! What drivers share: running external programs and feeding them the
//! repository's streams ([`process`]), secrets by reference ([`secret`]),
//! human durations ([`duration`]), TLS client settings (`tls`, feature
//! `tls`), health checks ([`health`]), the post-restore count check
//! ([`check`]), extended attributes ([`xattr`]), progress counters
//! ([`progress`]), who answers SIGINT and SIGTERM ([`interrupt`]) and
//! the throwaway targets of drills ([`scratch`]).

pub mod check;
pub mod duration;
pub mod health;
pub mod interrupt;
pub mod process;
pub mod progress;
pub mod scratch;
pub mod secret;
#[cfg(feature = "tls")]
pub mod tls;
pub mod xattr;
