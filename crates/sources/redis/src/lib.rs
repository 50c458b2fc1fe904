//! # respaldo-source-redis
//!
//! The `redis` source. **Backup** takes a consistent RDB snapshot of every
//! database and stores it as the stream artifact `dump.rdb`:
//!
//! * `transfer = "file"`: `BGSAVE` (or waiting for the one in progress),
//!   followed through `INFO persistence` until it finished, then the server's
//!   `dir`/`dbfilename` is read from this host;
//! * `transfer = "replication"`: the RDB is streamed over the replication
//!   protocol (`SYNC`, like `redis-cli --rdb`), which works for a remote
//!   server; the server forks its own snapshot for it;
//! * `transfer = "auto"` (default): the file when the server is on this host
//!   and its dump file is readable, otherwise replication.
//!
//! While it is stored, the RDB is walked: its magic, version, structure and
//! trailing CRC-64 are checked and the keys of each database are counted
//! (recorded in the snapshot with the server version).
//!
//! **Restore** (`restore --source cache [--target redis://host:port[/db]]`)
//! replays every key into a running server with pipelined
//! `RESTORE key ttl payload ABSTTL REPLACE`, the `DUMP` payload built from the
//! RDB's own value encoding; function libraries are loaded with
//! `FUNCTION RESTORE`. Without `--force` a server that holds keys is refused
//! untouched; with `--force` (and no `--keys`) it is flushed first. Keys whose
//! expiry has passed are skipped. Afterwards the keys per database are
//! compared with the counts recorded at backup. `--keys 'session:*'` restores
//! only matching keys; `/N` at the end of the target URL only database N.
//!
//! **TLS.** A `rediss://` URL (the source's, or `--target`'s) connects with
//! TLS (rustls, settings from `respaldo_core::kit::tls`): the server's
//! certificate is checked against `tls_ca_file` or the system's roots and
//! the host name (or `tls_server_name`); `tls_cert_file`/`tls_key_file`
//! present a client certificate. Every path works over it: commands,
//! `BGSAVE`, the replication stream and the pipelined restore.
//!
//! **test-restore** starts a throwaway `redis-server` on a free port, restores
//! into it, compares the counts and stops it.
//!
//! ```toml
//! [sources.cache]
//! type = "redis"
//! url = "redis://localhost:6379"          # or rediss://host:6380 for TLS
//! password = { file = "/etc/respaldo/redis.pw" }
//! # tls_ca_file = "/etc/redis/tls/ca.crt"
//! ```
#![deny(missing_docs)]

mod backup;
mod config;
mod crc64;
mod endpoint;
mod error;
mod rdb;
mod resp;
mod restore;
mod server;
mod source;
mod test_restore;

pub use config::{FileRestore, RedisConfig, Transfer};
pub use error::RedisError;
pub use source::RedisSource;

/// The driver's registry entry: what the application's one list of
/// drivers holds. It builds a source from the `[sources.NAME]` table (as
/// JSON, `type` taken out), naming the key of any error:
///
/// ```
/// use respaldo_core::registry::BuildContext;
/// let ctx = BuildContext { base: std::path::Path::new("/srv/app"), local_repository: None };
/// let table = serde_json::json!({"url": "redis://localhost:6379", "timeout": 30});
/// let source = (respaldo_source_redis::DRIVER.build)(table, &ctx).unwrap();
/// assert_eq!(source.kind(), "redis");
///
/// let bad = serde_json::json!({"no_such_key": 1});
/// let err = (respaldo_source_redis::DRIVER.build)(bad, &ctx).err().unwrap();
/// assert!(err.to_string().contains("no_such_key"), "{err}");
/// ```
pub const DRIVER: respaldo_core::registry::Driver = respaldo_core::registry::Driver {
    kind: "redis",
    build: |value, cx| respaldo_core::registry::build_with(value, |c| RedisSource::new(c, cx.base)),
    example: "type = \"redis\"\nurl = \"redis://localhost:6379\"\n",
    inventory: source::inventory,
};

#[cfg(test)]
mod tests {
    use bytes::Bytes;
    use tokio::io::AsyncRead;

    use crate::backup::UntilMark;
    use crate::endpoint::parse_url;

    /// The diskless snapshot ends at the mark wherever the reads split it,
    /// and a stream without the mark is an error.
    #[tokio::test]
    async fn until_mark_stops_at_the_mark_across_read_boundaries() {
        use tokio::io::AsyncReadExt;
        let mark = *b"0123456789abcdef0123456789abcdef01234567";
        let body: Vec<u8> = (0..200_000u32).map(|i| (i % 7) as u8).collect();
        let mut wire = body.clone();
        wire.extend_from_slice(&mark);
        wire.extend_from_slice(b"*1\r\n$4\r\nPING\r\n");
        for split in [1usize, 39, 40, 41, 4096, 65_536] {
            let mut b = tokio_test_reader(&wire, split);
            let mut got = Vec::new();
            UntilMark::new(&mut b, mark)
                .read_to_end(&mut got)
                .await
                .unwrap();
            assert_eq!(got, body, "reads of {split} bytes");
        }
        let mut cut = tokio_test_reader(&body, 4096);
        let err = UntilMark::new(&mut cut, mark)
            .read_to_end(&mut Vec::new())
            .await
            .unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::UnexpectedEof);
    }

    /// A reader over `data` that returns at most `n` bytes per read.
    fn tokio_test_reader(data: &[u8], n: usize) -> impl AsyncRead + Unpin {
        let chunks: Vec<std::io::Result<Bytes>> = data
            .chunks(n)
            .map(|c| Ok(Bytes::copy_from_slice(c)))
            .collect();
        tokio_util::io::StreamReader::new(futures::stream::iter(chunks))
    }

    #[test]
    fn urls() {
        let e = parse_url("redis://app:pw@example.org:6380/2").unwrap();
        assert_eq!(e.addr, "example.org:6380");
        assert_eq!(e.db, Some(2));
        assert_eq!(e.user.as_deref(), Some("app"));
        assert_eq!(e.password.as_deref(), Some("pw"));
        assert_eq!(format!("{e:?}"), "redis://example.org:6380");
        let e = parse_url("redis://:p%40ss%20x@h").unwrap();
        assert_eq!(e.password.as_deref(), Some("p@ss x"));
        let e = parse_url("redis://localhost").unwrap();
        assert_eq!((e.addr.as_str(), e.db), ("localhost:6379", None));
        assert!(e.is_local());
        assert_eq!(parse_url("redis://[::1]:7000").unwrap().addr, "[::1]:7000");
        assert!(parse_url("http://x").is_err());
        let e = parse_url("rediss://cache.example:6380").unwrap();
        assert!(e.secure);
        assert_eq!(e.name(), "rediss://cache.example:6380");
        assert!(parse_url("http://x").is_err());
        assert!(parse_url("redis://x/abc").is_err());
    }
}
