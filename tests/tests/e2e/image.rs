//! respaldo's container image and the example stacks: the Dockerfile builds
//! (its `prebuilt` stage, with the binary under test, on a Debian base made
//! here with debootstrap: no registry is reachable), the image runs as its
//! own user with the clients it drives, and seed 004's stack
//! (`examples/pos-odata`) backs up, loses its database volume and restores
//! it identical — every step inside Docker, through docker-compose. The
//! comparison is pg_dump's, run in the database container, not respaldo's.
//! Every example's compose file and the Kubernetes manifests are checked by
//! their own tools' parsers.

use crate::common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use common::*;
use respaldo_testing::docker::unique;
use respaldo_testing::image;

fn examples() -> PathBuf {
    image::repository_root().join("examples")
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// `docker-compose` (Debian's package), else `docker compose`.
fn compose_command() -> Command {
    let v1 = Command::new("docker-compose")
        .arg("version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if v1 {
        Command::new("docker-compose")
    } else {
        let mut c = Command::new("docker");
        c.arg("compose");
        c
    }
}

/// One example stack under a project name of its own, torn down (with its
/// volumes) when dropped.
struct Stack {
    project: String,
    file: PathBuf,
    env: Vec<(&'static str, String)>,
}

impl Stack {
    fn new(example: &str, env: Vec<(&'static str, String)>) -> Stack {
        Stack {
            project: unique(example).replace('.', "-"),
            file: examples().join(example).join("docker-compose.yml"),
            env,
        }
    }

    fn run(&self, args: &[&str]) -> Output {
        let mut c = compose_command();
        c.arg("-p")
            .arg(&self.project)
            .arg("-f")
            .arg(&self.file)
            .args(args)
            .envs(self.env.iter().map(|(k, v)| (*k, v.as_str())))
            .stdin(Stdio::null())
            .output()
            .expect("docker-compose (Debian package docker-compose) is needed")
    }

    fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "docker-compose {args:?} failed ({}):\n{}",
            out.status,
            text(&out)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// `respaldo ARGS` in a one-off container of the `backup` service; its
    /// stdout and stderr.
    fn respaldo(&self, args: &[&str]) -> String {
        let mut a = vec!["run", "--rm", "-T", "--no-deps", "backup"];
        a.extend_from_slice(args);
        let out = self.run(&a);
        assert!(
            out.status.success(),
            "respaldo {args:?} failed ({}):\n{}",
            out.status,
            text(&out)
        );
        text(&out)
    }

    /// Waits until the database accepts connections over TCP (after its
    /// entrypoint's initialisation).
    fn wait_for_db(&self) {
        let ready = &[
            "exec",
            "-T",
            "db",
            "pg_isready",
            "-h",
            "127.0.0.1",
            "-U",
            "pos_user",
            "-d",
            "pos_db_production",
        ];
        for _ in 0..120 {
            if self.run(ready).status.success() {
                return;
            }
            std::thread::sleep(Duration::from_secs(1));
        }
        panic!(
            "the database never became ready:\n{}",
            text(&self.run(&["logs", "db"]))
        );
    }

    fn psql(&self, sql: &str) -> Output {
        self.run(&[
            "exec",
            "-T",
            "db",
            "psql",
            "-X",
            "-v",
            "ON_ERROR_STOP=1",
            "-qAt",
            "-U",
            "pos_user",
            "-d",
            "pos_db_production",
            "-c",
            sql,
        ])
    }

    /// pg_dump of the database, run in its own container, without the
    /// per-dump random `\restrict` key.
    fn dump(&self) -> String {
        let out = self.ok(&[
            "exec",
            "-T",
            "db",
            "pg_dump",
            "-U",
            "pos_user",
            "pos_db_production",
        ]);
        out.lines()
            .filter(|l| !l.starts_with("\\restrict") && !l.starts_with("\\unrestrict"))
            .map(|l| format!("{l}\n"))
            .collect()
    }
}

impl Drop for Stack {
    fn drop(&mut self) {
        let _ = self.run(&["down", "-v", "--remove-orphans"]);
    }
}

#[test]
fn the_image_runs_as_respaldo_with_the_clients_it_drives() {
    image::respaldo_image(bin());
    let run = |entry: &str, args: &[&str]| {
        let out = Command::new("docker")
            .args(["run", "--rm", "--entrypoint", entry, image::RESPALDO])
            .args(args)
            .output()
            .unwrap();
        assert!(out.status.success(), "{entry} {args:?}: {}", text(&out));
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    assert!(run("respaldo", &["--version"]).starts_with("respaldo "));
    assert_eq!(run("id", &["-u"]).trim(), "10001", "not the respaldo user");
    let versions = run(
        "sh",
        &[
            "-c",
            "pg_dump --version && pg_restore --version && psql --version && \
             redis-server --version && mariadb-dump --version",
        ],
    );
    assert_eq!(versions.lines().count(), 5, "{versions}");
    let env = run("env", &[]);
    assert!(
        env.contains("RESPALDO_CONFIG=/etc/respaldo/backup.toml"),
        "{env}"
    );
    // The folders a volume mounts over belong to the user.
    let owners = run("stat", &["-c", "%U %n", "/backups", "/var/lib/respaldo"]);
    assert_eq!(owners, "respaldo /backups\nrespaldo /var/lib/respaldo\n");
}

#[test]
fn the_pos_example_stack_backs_up_loses_its_database_and_restores_it_in_docker() {
    image::respaldo_image(bin());
    image::postgres_image();
    let stack = Stack::new(
        "pos-odata",
        vec![
            ("POSTGRES_IMAGE", image::POSTGRES.to_string()),
            ("RESPALDO_IMAGE", image::RESPALDO.to_string()),
            ("POS_DB_PASSWORD", "pos-test-password-31".to_string()),
        ],
    );
    stack.ok(&["up", "-d", "db"]);
    stack.wait_for_db();
    let seeded = stack.psql(
        "CREATE TABLE products (id serial PRIMARY KEY, sku text UNIQUE NOT NULL, price numeric(10,2));
         CREATE TABLE sales (id bigserial PRIMARY KEY, product int REFERENCES products, qty int, at timestamptz);
         INSERT INTO products (sku, price) SELECT 'SKU-' || g, g * 1.25 FROM generate_series(1, 2000) g;
         INSERT INTO sales (product, qty, at)
           SELECT 1 + g % 2000, 1 + g % 7, '2026-01-01'::timestamptz + g * interval '1 minute'
           FROM generate_series(1, 20000) g;
         CREATE INDEX sales_at ON sales (at);
         CREATE VIEW daily AS SELECT date_trunc('day', at) AS day, sum(qty) FROM sales GROUP BY 1;",
    );
    assert!(seeded.status.success(), "{}", text(&seeded));
    let before = stack.dump();
    let checksum = "SELECT md5(string_agg(s::text, ',' ORDER BY id)) FROM sales s";
    let sum_before = stack.psql(checksum).stdout;

    stack.respaldo(&["init"]);
    let out = stack.respaldo(&["backup"]);
    assert!(out.contains("pos: ok"), "{out}");
    // No drill yet: the example's rto fails `status`.
    let status = stack.run(&["run", "--rm", "-T", "--no-deps", "backup", "status"]);
    assert_eq!(status.status.code(), Some(1), "{}", text(&status));
    assert!(text(&status).contains("never drilled"), "{}", text(&status));

    // Disaster: the database's volume is gone; a new, empty server starts.
    stack.ok(&["rm", "-s", "-f", "db"]);
    let volume = format!("{}_db-data", stack.project);
    respaldo_testing::docker::docker(&["volume", "rm", &volume]);
    stack.ok(&["up", "-d", "db"]);
    stack.wait_for_db();
    assert!(
        !stack.psql("SELECT count(*) FROM sales").status.success(),
        "the new database is not empty"
    );

    let out = stack.respaldo(&["restore", "latest", "--source", "pos"]);
    assert!(out.contains("row counts match"), "{out}");
    assert_eq!(stack.dump(), before, "pg_dump differs after the restore");
    assert_eq!(stack.psql(checksum).stdout, sum_before);

    // The weekly drill of the example works in the stack too.
    let drill = stack.respaldo(&["test-restore"]);
    assert!(drill.contains("1 of 1 sources ok"), "{drill}");
    // Backed up within its rpo, drilled within its rto: status passes.
    stack.respaldo(&["status"]);
}

/// `python3 -c` with PyYAML: every document of every manifest, as JSON.
fn yaml_documents(files: &[PathBuf]) -> Vec<serde_json::Value> {
    let out = Command::new("python3")
        .arg("-c")
        .arg(
            "import json, sys, yaml\n\
             docs = [d for f in sys.argv[1:] for d in yaml.safe_load_all(open(f)) if d]\n\
             print(json.dumps(docs))",
        )
        .args(files)
        .output()
        .expect("python3 is needed");
    assert!(out.status.success(), "PyYAML: {}", text(&out));
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn every_example_compose_file_and_the_kubernetes_manifests_are_valid() {
    let mut stacks = 0;
    for dir in std::fs::read_dir(examples()).unwrap().flatten() {
        let file = dir.path().join("docker-compose.yml");
        if !file.exists() {
            continue;
        }
        let env_file = dir.path().join(".env.example");
        assert!(
            env_file.exists(),
            "{} has no .env.example",
            dir.path().display()
        );
        let out = compose_command()
            .arg("--env-file")
            .arg(&env_file)
            .arg("-f")
            .arg(&file)
            .args(["config", "-q"])
            .output()
            .unwrap();
        assert!(out.status.success(), "{}: {}", file.display(), text(&out));
        // The sidecar mounts the example's own backup.toml (checked by
        // ops::every_example_configuration_is_valid).
        let yml = std::fs::read_to_string(&file).unwrap();
        assert!(
            yml.contains("./backup.toml:/etc/respaldo/backup.toml:ro"),
            "{}",
            file.display()
        );
        stacks += 1;
    }
    assert!(stacks >= 5, "only {stacks} example stacks");

    let k8s = examples().join("kubernetes");
    let manifests: Vec<PathBuf> = std::fs::read_dir(&k8s)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    let docs = yaml_documents(&manifests);
    let kind = |k: &str| docs.iter().filter(|d| d["kind"] == k).count();
    assert!(
        kind("CronJob") >= 4,
        "backups, maintenance and drill CronJobs"
    );
    assert!(kind("Secret") >= 1);
    assert_eq!(kind("Kustomization"), 1);
    for d in docs.iter().filter(|d| d["kind"] == "CronJob") {
        let spec = &d["spec"];
        assert_eq!(spec["concurrencyPolicy"], "Forbid", "{d}");
        let pod = &spec["jobTemplate"]["spec"]["template"]["spec"];
        assert_eq!(pod["securityContext"]["runAsNonRoot"], true, "{d}");
        let container = &pod["containers"][0];
        let env = container["env"].as_array().unwrap();
        // Pods have random names: one host for the whole history.
        assert!(env.iter().any(|e| e["name"] == "RESPALDO_HOST"), "{d}");
    }
    assert!(Path::new(&k8s.join("backup.toml")).exists());
    // One fixed host per backup job, and one job prunes every host.
    let args = |d: &serde_json::Value| -> Vec<String> {
        let c = &d["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"][0];
        let list = c["args"].as_array().unwrap();
        list.iter()
            .map(|a| a.as_str().unwrap().to_string())
            .collect()
    };
    let host = |d: &serde_json::Value| -> String {
        let c = &d["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"][0];
        let env = c["env"].as_array().unwrap();
        let h = env.iter().find(|e| e["name"] == "RESPALDO_HOST").unwrap();
        h["value"].as_str().unwrap().to_string()
    };
    let backups: Vec<&serde_json::Value> = docs
        .iter()
        .filter(|d| d["kind"] == "CronJob" && args(d).first().is_some_and(|a| a == "backup"))
        .collect();
    let hosts: std::collections::BTreeSet<String> = backups.iter().map(|d| host(d)).collect();
    assert!(
        backups.len() >= 2 && hosts.len() == backups.len(),
        "{hosts:?}"
    );
    assert!(docs
        .iter()
        .any(|d| { d["kind"] == "CronJob" && args(d) == ["--host", "*", "forget", "--prune"] }));
}
