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

/// A free TCP port on 127.0.0.1.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Writes into `dir` a CA of its own (`ca.crt`, `ca.key`) and a server
/// certificate for 127.0.0.1 it signed (`server.crt`, `server.key`), for
/// the servers that speak TLS.
pub(crate) fn write_test_certificates(dir: &std::path::Path) {
    let script = "set -e
        openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj /CN=respaldo-test-ca -keyout ca.key -out ca.crt
        openssl req -newkey rsa:2048 -nodes -subj /CN=127.0.0.1 -keyout server.key -out server.csr
        printf 'subjectAltName=IP:127.0.0.1\\nbasicConstraints=CA:FALSE\\n' > ext
        openssl x509 -req -in server.csr -CA ca.crt -CAkey ca.key -CAcreateserial -days 2 -extfile ext -out server.crt";
    let out = std::process::Command::new("sh")
        .args(["-c", script])
        .current_dir(dir)
        .output()
        .expect("openssl");
    assert!(
        out.status.success(),
        "openssl: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}
