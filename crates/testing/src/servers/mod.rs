//! Throwaway real servers for tests, each on a free port in a temporary
//! folder, stopped and removed on drop: PostgreSQL ([`postgres`]), Redis
//! ([`redis`]), MariaDB ([`mariadb`]), InfluxDB 1.x ([`influxdb`]), a small InfluxDB 2 HTTP API
//! ([`influx2_fake`], for fault injection and the v2 protocol), and Docker
//! volumes and containers ([`docker_objects`]). A missing server program is
//! a test failure that says what to install, never a skip.

pub mod docker_objects;
pub mod influx2_fake;
pub mod influxdb;
pub mod mariadb;
pub mod postgres;
pub mod redis;
