//! Every driver this build has: one line each. A driver crate exposes its
//! [`Driver`] entry (type name, builder, example configuration); adding a
//! driver is its crate and one line here (see docs/drivers.md).

use respaldo_core::registry::Driver;

/// The drivers, by type name.
pub const DRIVERS: &[Driver] = &[
    respaldo_source_command::DRIVER,
    respaldo_source_docker::DRIVER,
    respaldo_source_files::DRIVER,
    respaldo_source_influxdb::DRIVER,
    respaldo_source_mysql::DRIVER,
    respaldo_source_postgres::DRIVER,
    respaldo_source_redis::DRIVER,
];

/// The driver of `kind`.
pub fn driver(kind: &str) -> Option<&'static Driver> {
    DRIVERS.iter().find(|d| d.kind == kind)
}

/// Every type name, sorted.
pub fn kinds() -> Vec<&'static str> {
    let mut k: Vec<&str> = DRIVERS.iter().map(|d| d.kind).collect();
    k.sort_unstable();
    k
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every driver's example configuration builds a source.
    #[test]
    fn every_example_configuration_parses() {
        let dir = tempfile::tempdir().unwrap();
        for d in DRIVERS {
            let text = format!(
                "[repository]\nurl = \"repo\"\n\n[sources.example]\n{}",
                d.example
            );
            std::env::set_var("PGPASSWORD", "unused");
            let c = crate::config::Config::parse(
                &text,
                &dir.path().join("backup.toml"),
                dir.path(),
                None,
            )
            .unwrap_or_else(|e| panic!("the example of `{}` does not parse: {e}\n{text}", d.kind));
            assert_eq!(c.sources[0].kind, d.kind);
        }
    }
}
