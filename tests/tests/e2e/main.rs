//! respaldo's end-to-end tests: the binary run against real data and
//! servers (exit codes, config errors, signals, one round trip per driver,
//! the restore matrix, the drill). One test binary, one module per area, so
//! that CI links once and runs tests of every area side by side; run one
//! area with `cargo test -p respaldo-e2e --test e2e s3::`.

mod common;

mod browse;
mod config_errors;
mod daily;
mod docker;
mod drill;
mod encryption;
mod files_roundtrip;
mod image;
mod influxdb;
mod integrity;
mod layout;
mod mount;
mod mysql;
mod ops;
mod postgres;
mod redis;
mod repository;
mod restore_matrix_files;
mod restore_matrix_postgres;
mod restore_matrix_services;
mod s3;
mod unix;
