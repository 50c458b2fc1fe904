//! Configuration errors at every level carry the line and the path the file
//! writes: a table of cases, each checked against `Config::parse`.

use std::path::Path;

use super::Config;

/// The first two lines of every case.
const HEAD: &str = "[repository]\nurl = \"repo\"\n";
/// A valid source, for cases about other tables.
const FILES: &str = "[sources.files]\ntype = \"files\"\npaths = [\"data\"]\n";

struct Case {
    name: &'static str,
    /// Root keys, written before [`HEAD`].
    root: &'static str,
    /// The text after [`HEAD`].
    body: String,
    /// `--env`.
    env: Option<&'static str>,
    /// Expected `backup.toml:LINE: PATH:` (lines counted with the head).
    line: usize,
    path: &'static str,
    /// A fragment of the message.
    says: &'static str,
}

fn case(
    name: &'static str,
    body: impl Into<String>,
    line: usize,
    path: &'static str,
    says: &'static str,
) -> Case {
    Case {
        name,
        root: "",
        body: body.into(),
        env: None,
        line,
        path,
        says,
    }
}

/// A case whose `root` keys come first (lines counted from them).
fn rooted(
    name: &'static str,
    root: &'static str,
    line: usize,
    path: &'static str,
    says: &'static str,
) -> Case {
    Case {
        root,
        ..case(name, FILES, line, path, says)
    }
}

fn cases() -> Vec<Case> {
    let with_files = |rest: &str| format!("{FILES}{rest}");
    vec![
        rooted("unknown top-level key", "colour = \"red\"\n", 1, "colour", "unknown field"),
        case("unknown repository key", format!("{FILES}[repository.tls]\nx = 1\n"), 6, "repository.tls", ""),
        case("repository key on its line", "urll = \"x\"\n[sources.files]\ntype = \"files\"\npaths = [\"d\"]\n".replace("urll", "recipients"), 3, "repository.recipients", "invalid type"),
        case("unknown source key", with_files("pathz = []\n"), 6, "sources.files.pathz", "expected one of `paths`"),
        case("missing source type", "[sources.files]\npaths = [\"data\"]\n", 3, "sources.files", "missing `type`"),
        case("unknown source type", "[sources.db]\ntype = \"oracle\"\n", 4, "sources.db.type", "unknown source type `oracle`"),
        case("wrong value type", "[sources.files]\ntype = \"files\"\npaths = \"data\"\n", 5, "sources.files.paths", ""),
        case("source as an inline table", "[sources]\nother = 1\nfiles = { type = \"files\", paths = [\"d\"], pathz = [] }\n", 5, "sources.files.pathz", "unknown field"),
        rooted("source by dotted keys", "sources.db.type = \"files\"\nsources.db.paths = [\"d\"]\nsources.db.pathz = 1\n", 3, "sources.db.pathz", "unknown field"),
        case("source name", "[sources.\"my db\"]\ntype = \"files\"\npaths = [\"d\"]\n", 3, "sources.my db", "source names"),
        case("source compression level", with_files("compression_level = 30\n"), 6, "sources.files.compression_level", "out of range"),
        case("source rpo", with_files("rpo = \"soon\"\n"), 6, "sources.files.rpo", "soon"),
        case("source hooks", with_files("[sources.files.hooks]\nbefore_backupp = \"true\"\n"), 7, "sources.files.hooks.before_backupp", "unknown field"),
        case("source restore table", with_files("[sources.files.restore]\nhealth_checkk = []\n"), 7, "sources.files.restore.health_checkk", "unknown field"),
        case("a missing variable in an array element", "[sources.files]\ntype = \"files\"\npaths = [\n  \"a\",\n  \"${RESPALDO_TEST_UNSET_VARIABLE}\",\n]\n", 7, "sources.files.paths[1]", "RESPALDO_TEST_UNSET_VARIABLE is not set"),
        case("backup compression level", with_files("[backup]\nconcurrency = 2\ncompression_level = 0\n"), 8, "backup.compression_level", "out of range"),
        case("backup concurrency", with_files("[backup]\nconcurrency = 0\n"), 7, "backup.concurrency", "at least 1"),
        case("retention key", with_files("[retention]\nkeep_last = 3\nkeep_dayly = 7\n"), 8, "retention.keep_dayly", "unknown field"),
        case("retention tag rule in an inline table", with_files("[retention]\nkeep_last = 3\ntags.pre-restore = { keep_lastt = 2 }\n"), 8, "retention.tags.pre-restore.keep_lastt", "unknown field"),
        case("schedule table cron field", with_files("[schedule.nightly]\nsources = [\"files\"]\ncron = \"61 2 * * *\"\n"), 8, "schedule.nightly.cron", "minute"),
        case("schedule string cron field", with_files("[schedule]\nnightly = \"0 25 * * *\"\n"), 7, "schedule.nightly", "hour"),
        case("schedule unknown key", with_files("[schedule.nightly]\ncron = \"0 2 * * *\"\nactionn = \"verify\"\n"), 8, "schedule.nightly.actionn", "unknown field"),
        case("daemon key", with_files("[daemon]\nretries = 1\nretry_delayy = \"1min\"\n"), 8, "daemon.retry_delayy", "unknown field"),
        case("status duration", with_files("[status]\nrpo = \"26 hours\"\n"), 7, "status.rpo", ""),
        case("hooks key", with_files("[hooks]\nbeforee = \"true\"\n"), 7, "hooks.beforee", "unknown field"),
        case("second notify's key", with_files("[[notify]]\ntype = \"webhook\"\nurl = \"https://a.example/x\"\n\n[[notify]]\ntype = \"webhook\"\nurll = \"https://b.example/x\"\n"), 12, "notify[1].urll", "unknown field"),
        case("second notify's missing type", with_files("[[notify]]\ntype = \"webhook\"\nurl = \"https://a.example/x\"\n[[notify]]\nurl = \"https://b.example/x\"\n"), 9, "notify[1].type", "missing `type`"),
        rooted("notify as an inline array", "notify = [\n  { type = \"webhook\", url = \"https://a.example/x\" },\n  { type = \"pager\" },\n]\n", 3, "notify[1].type", "pager"),
        case("named repository", with_files("[repositories.offsite]\nurl = \"s3://b/p\"\nurll = \"x\"\n"), 8, "repositories.offsite.urll", "unknown field"),
        case("passphrase as an inline table", "passphrase = { envv = \"X\" }\n[sources.files]\ntype = \"files\"\npaths = [\"d\"]\n", 3, "repository.passphrase", ""),
        Case { env: Some("staging"), ..case("environment overlay key", with_files("[env.staging.repository]\nurll = \"/backups/staging\"\n"), 7, "env.staging.repository.urll", "unknown field") },
        Case { env: Some("staging"), ..case("environment overlay source", with_files("[env.staging.sources.files]\npaths = \"data\"\n"), 7, "env.staging.sources.files.paths", "") },
        Case { env: Some("staging"), ..case("base error with an environment", format!("{FILES}pathz = 1\n[env.staging.repository]\nurl = \"/b\"\n"), 6, "sources.files.pathz", "unknown field") },
        Case { env: Some("prod"), ..case("unknown environment", with_files("[env.staging.repository]\nurl = \"/b\"\n"), 6, "env", "no [env.prod] table") },
        case("nested environments", with_files("[env.staging.env.x]\na = 1\n"), 6, "env.staging.env", "cannot be nested"),
    ]
}

#[test]
fn every_level_reports_its_line_and_path() {
    std::env::remove_var("RESPALDO_TEST_UNSET_VARIABLE");
    let dir = Path::new("/nonexistent/config");
    let mut failures = Vec::new();
    let all = cases();
    assert!(all.len() >= 30, "the table has {} cases", all.len());
    for c in &all {
        let text = format!("{}{HEAD}{}", c.root, c.body);
        let got = match Config::parse(&text, &dir.join("backup.toml"), dir, c.env) {
            Ok(_) => {
                failures.push(format!("{}: parsed without an error", c.name));
                continue;
            }
            Err(e) => e.to_string(),
        };
        let want = format!("/nonexistent/config/backup.toml:{}: {}:", c.line, c.path);
        if !got.starts_with(&want) || !got.contains(c.says) {
            failures.push(format!(
                "{}:\n  want {want} … {}\n  got  {got}",
                c.name, c.says
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
