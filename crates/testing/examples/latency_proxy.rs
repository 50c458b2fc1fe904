//! An HTTP proxy in front of an S3-compatible server that holds every
//! request for a fixed latency before passing it on, to stand for a real
//! object store in `bench/s3.sh`. Prints its port, then logs one line per
//! request (`METHOD TARGET`) to LOG until killed.
//!
//! `cargo run --release -p respaldo-testing --example latency_proxy -- UPSTREAM_PORT DELAY_MS LOG`

use std::io::Write;
use std::sync::Mutex;
use std::time::Duration;

use respaldo_testing::s3proxy::{FaultProxy, HttpFault};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let [_, upstream, delay, log] = args.as_slice() else {
        eprintln!("usage: latency_proxy UPSTREAM_PORT DELAY_MS LOG");
        std::process::exit(2);
    };
    let upstream: u16 = upstream.parse().expect("UPSTREAM_PORT: a port");
    let delay = Duration::from_millis(delay.parse().expect("DELAY_MS: a number"));
    let log = Mutex::new(std::fs::File::create(log).expect("LOG: a writable file"));
    let proxy = FaultProxy::start(upstream, move |r| {
        let _ = writeln!(log.lock().expect("log"), "{} {}", r.method, r.target);
        std::thread::sleep(delay);
        HttpFault::Pass
    });
    println!("{}", proxy.port);
    std::io::stdout().flush().expect("stdout");
    loop {
        std::thread::park();
    }
}
