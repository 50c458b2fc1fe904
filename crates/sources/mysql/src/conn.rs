//! Where a server is and how to log in: URLs without passwords, the client
//! programs, a private option file carrying the password and TLS settings
//! (never the command line), and queries run through the client.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use respaldo_core::kit::process::find_program;
use url::Url;

use crate::config::Tls;
use crate::MysqlError;

/// A server (TCP or Unix socket) and maybe a database; never a password.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    user: Option<String>,
    host: String,
    port: u16,
    socket: Option<PathBuf>,
    database: Option<String>,
}

impl Endpoint {
    /// Parses `mysql://user@host:port/db` or `…?socket=/path`. A password
    /// in the URL is refused: passwords are given by reference.
    pub fn parse(s: &str) -> Result<Self, MysqlError> {
        let url =
            Url::parse(s).map_err(|e| MysqlError::Config(format!("`url` is not a URL: {e}")))?;
        if url.scheme() != "mysql" && url.scheme() != "mariadb" {
            return Err(MysqlError::Config(
                "`url` must start with mysql:// (or mariadb://)".into(),
            ));
        }
        if url.password().is_some() {
            return Err(MysqlError::Config(
                "the URL holds a password; give it by reference instead \
                 (`password = { env = \"…\" }`, `{ file = \"…\" }` or `{ command = […] }`)"
                    .into(),
            ));
        }
        let mut socket = None;
        for (k, v) in url.query_pairs() {
            match k.as_ref() {
                "socket" => socket = Some(PathBuf::from(v.into_owned())),
                other => {
                    return Err(MysqlError::Config(format!(
                        "unknown URL parameter `{other}` (known: socket; TLS is set by `tls` and `ca_file`)"
                    )))
                }
            }
        }
        let decode = |p: &str| {
            url::form_urlencoded::parse(format!("x={p}").as_bytes())
                .next()
                .map(|(_, v)| v.into_owned())
                .unwrap_or_else(|| p.to_string())
        };
        let db = url.path().trim_start_matches('/');
        Ok(Endpoint {
            user: (!url.username().is_empty()).then(|| decode(url.username())),
            host: url.host_str().unwrap_or("localhost").to_string(),
            port: url.port().unwrap_or(3306),
            socket,
            database: (!db.is_empty()).then(|| decode(db)),
        })
    }

    /// The database named in the URL, if any.
    pub fn database(&self) -> Option<&str> {
        self.database.as_deref()
    }

    /// The same server with another database.
    pub fn with_database(&self, db: &str) -> Endpoint {
        Endpoint {
            database: Some(db.to_string()),
            ..self.clone()
        }
    }

    /// The same server with another login user, when `other` names one.
    pub fn with_user_of(&self, other: &Endpoint) -> Endpoint {
        Endpoint {
            user: other.user.clone().or_else(|| self.user.clone()),
            ..other.clone()
        }
    }

    /// `host:port` (or the socket) for messages.
    pub fn server(&self) -> String {
        match &self.socket {
            Some(s) => format!("socket {}", s.display()),
            None => format!("{}:{}", self.host, self.port),
        }
    }

    /// `host:port/db` for messages.
    pub fn display(&self) -> String {
        match &self.database {
            Some(db) => format!("{}/{db}", self.server()),
            None => self.server(),
        }
    }

    /// The connection arguments every client program takes.
    fn args(&self) -> Vec<String> {
        let mut a = Vec::new();
        if let Some(u) = &self.user {
            a.push(format!("--user={u}"));
        }
        match &self.socket {
            Some(s) => a.push(format!("--socket={}", s.display())),
            None => {
                a.push(format!("--host={}", self.host));
                a.push(format!("--port={}", self.port));
                a.push("--protocol=TCP".into());
            }
        }
        a
    }
}

/// A client program and what `--version` said of it.
#[derive(Debug, Clone)]
pub struct Program {
    /// The path.
    pub path: PathBuf,
    /// `mariadb-dump`, `mysql`, …
    pub name: String,
    /// `(major, minor)` of the server release it belongs to.
    pub version: (u32, u32),
    /// Whether it is MariaDB's.
    pub mariadb: bool,
}

impl Program {
    /// Finds `configured`, else the first of `names` on `PATH`, and reads
    /// its version.
    pub fn find(configured: Option<&Path>, names: &[&str]) -> Result<Program, MysqlError> {
        let path = match configured {
            Some(p) => p.to_path_buf(),
            None => names
                .iter()
                .find_map(|n| find_program(n))
                .ok_or_else(|| MysqlError::NotFound(names.join("` or `")))?,
        };
        let out = std::process::Command::new(&path)
            .arg("--version")
            .output()
            .map_err(|_| MysqlError::NotFound(path.display().to_string()))?;
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        let version = parse_client_version(&text).ok_or_else(|| {
            MysqlError::Config(format!(
                "cannot read the version of {}: `{}`",
                path.display(),
                text.trim()
            ))
        })?;
        Ok(Program {
            name: path
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default(),
            mariadb: text.contains("MariaDB"),
            path,
            version,
        })
    }
}

/// `(major, minor)` from a client's `--version` line: MariaDB's
/// `Ver 10.19 Distrib 10.11.19-MariaDB` or `from 11.4.2-MariaDB`, MySQL's
/// `Ver 8.0.36 for Linux`.
pub fn parse_client_version(text: &str) -> Option<(u32, u32)> {
    let after = ["Distrib ", "from ", "Ver "]
        .iter()
        .find_map(|k| text.split_once(k).map(|(_, r)| r))?;
    parse_version(after)
}

/// `(major, minor)` from the start of `10.11.19-MariaDB-0+deb12u1`.
pub fn parse_version(s: &str) -> Option<(u32, u32)> {
    let mut it = s.trim().split(|c: char| !c.is_ascii_digit());
    Some((it.next()?.parse().ok()?, it.next()?.parse().ok()?))
}

/// The private option file: the password and TLS settings, readable by
/// this user only, removed when the last client using it is done.
#[derive(Debug)]
struct OptionFile(tempfile::NamedTempFile);

/// The programs, server and login of a source: runs queries and builds
/// the commands that dump and load.
#[derive(Debug, Clone)]
pub struct Client {
    /// The server (and default database).
    pub endpoint: Endpoint,
    /// The dump program.
    pub dump: Program,
    /// The client program.
    pub client: Program,
    options: Arc<OptionFile>,
}

impl Client {
    /// A client for `endpoint` logging in with `password` and `tls`.
    pub fn new(
        endpoint: Endpoint,
        dump: Program,
        client: Program,
        password: Option<&str>,
        tls: Tls,
        ca_file: Option<&Path>,
    ) -> Result<Client, MysqlError> {
        let mut text = String::from("[client]\n");
        if let Some(p) = password {
            let quoted = p.replace('\\', "\\\\").replace('"', "\\\"");
            text.push_str(&format!("password=\"{quoted}\"\n"));
        }
        let mariadb = client.mariadb;
        match (tls, mariadb) {
            (Tls::Prefer, _) => {}
            (Tls::Disable, true) => text.push_str("skip-ssl\n"),
            (Tls::Disable, false) => text.push_str("ssl-mode=DISABLED\n"),
            (Tls::Require, true) => text.push_str("ssl\nskip-ssl-verify-server-cert\n"),
            (Tls::Verify, true) => text.push_str("ssl\nssl-verify-server-cert\n"),
            (Tls::Require, false) => text.push_str("ssl-mode=REQUIRED\n"),
            (Tls::Verify, false) => text.push_str("ssl-mode=VERIFY_IDENTITY\n"),
        }
        if let Some(ca) = ca_file {
            text.push_str(&format!("ssl-ca=\"{}\"\n", ca.display()));
        }
        let mut f = tempfile::Builder::new()
            .prefix("respaldo-mysql-")
            .tempfile()
            .map_err(|e| MysqlError::Config(format!("cannot write the client option file: {e}")))?;
        f.write_all(text.as_bytes())
            .map_err(|e| MysqlError::Config(format!("cannot write the client option file: {e}")))?;
        Ok(Client {
            endpoint,
            dump,
            client,
            options: Arc::new(OptionFile(f)),
        })
    }

    /// The same login against another endpoint.
    pub fn at(&self, endpoint: Endpoint) -> Client {
        Client {
            endpoint,
            ..self.clone()
        }
    }

    /// `program` with the option file and connection arguments, then `extra`.
    pub fn command(&self, program: &Program, extra: &[String]) -> tokio::process::Command {
        let mut c = tokio::process::Command::new(&program.path);
        c.arg(format!(
            "--defaults-extra-file={}",
            self.options.0.path().display()
        ));
        c.args(self.endpoint.args());
        c.args(extra);
        c
    }

    /// The client reading SQL from standard input into `db`.
    pub fn loader(&self, db: &str) -> tokio::process::Command {
        self.command(
            &self.client,
            &[
                "--default-character-set=utf8mb4".into(),
                "--binary-mode".into(),
                format!("--database={db}"),
            ],
        )
    }

    /// Runs `sql` (in `db`, if given) and returns its rows, tab-separated
    /// fields as sent by the client's batch mode (`NULL` as `NULL`).
    pub async fn query(
        &self,
        what: &str,
        db: Option<&str>,
        sql: &str,
    ) -> Result<Vec<Vec<String>>, MysqlError> {
        let mut extra = vec![
            "--batch".to_string(),
            "--skip-column-names".into(),
            "--default-character-set=utf8mb4".into(),
        ];
        if let Some(db) = db {
            extra.push(format!("--database={db}"));
        }
        extra.push("--execute".into());
        extra.push(sql.into());
        let mut cmd = self.command(&self.client, &extra);
        cmd.stdin(std::process::Stdio::null());
        let out = cmd.output().await.map_err(|e| MysqlError::Query {
            server: self.endpoint.server(),
            what: what.into(),
            message: format!("cannot start {}: {e}", self.client.path.display()),
        })?;
        if !out.status.success() {
            let err = String::from_utf8_lossy(&out.stderr);
            let message = err
                .lines()
                .filter(|l| !l.trim().is_empty())
                .map(|l| l.trim_start_matches("ERROR ").to_string())
                .collect::<Vec<_>>()
                .join(" | ");
            return Err(MysqlError::Query {
                server: self.endpoint.server(),
                what: what.into(),
                message,
            });
        }
        Ok(String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(|l| l.split('\t').map(unescape).collect())
            .collect())
    }

    /// The server's version string (`SELECT VERSION()`).
    pub async fn server_version(&self) -> Result<String, MysqlError> {
        let rows = self
            .query("reading the server version", None, "SELECT VERSION()")
            .await?;
        Ok(rows
            .first()
            .and_then(|r| r.first())
            .cloned()
            .unwrap_or_default())
    }

    /// Refuses a dump program older than the server (same flavour).
    pub async fn check_version(&self) -> Result<String, MysqlError> {
        let server = self.server_version().await?;
        let server_mariadb = server.contains("MariaDB");
        if let Some(v) = parse_version(&server) {
            if server_mariadb == self.dump.mariadb && self.dump.version < v {
                return Err(MysqlError::TooOld {
                    program: self.dump.name.clone(),
                    client: format!("{}.{}", self.dump.version.0, self.dump.version.1),
                    server: self.endpoint.server(),
                    server_version: server,
                });
            }
        }
        Ok(server)
    }
}

/// Undoes the batch mode's escapes (`\t`, `\n`, `\\`, `\0`).
fn unescape(s: &str) -> String {
    if !s.contains('\\') {
        return s.to_string();
    }
    let mut out = String::with_capacity(s.len());
    let mut it = s.chars();
    while let Some(c) = it.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match it.next() {
            Some('t') => out.push('\t'),
            Some('n') => out.push('\n'),
            Some('0') => out.push('\0'),
            Some(o) => out.push(o),
            None => out.push('\\'),
        }
    }
    out
}

/// `name` quoted as an SQL identifier.
pub fn ident(name: &str) -> String {
    format!("`{}`", name.replace('`', "``"))
}

/// `s` quoted as an SQL string.
pub fn literal(s: &str) -> String {
    format!("'{}'", s.replace('\\', "\\\\").replace('\'', "\\'"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_parse_and_refuse_passwords() {
        let e = Endpoint::parse("mysql://backup@db.internal:3307/shop").unwrap();
        assert_eq!(e.display(), "db.internal:3307/shop");
        assert_eq!(
            e.args(),
            [
                "--user=backup",
                "--host=db.internal",
                "--port=3307",
                "--protocol=TCP"
            ]
        );
        let s =
            Endpoint::parse("mariadb://root@localhost/?socket=/run/mysqld/mysqld.sock").unwrap();
        assert_eq!(s.database(), None);
        assert_eq!(s.server(), "socket /run/mysqld/mysqld.sock");
        let err = Endpoint::parse("mysql://u:hunter2@h/db")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("by reference") && !err.contains("hunter2"),
            "{err}"
        );
        assert!(Endpoint::parse("postgres://h/db").is_err());
        assert!(Endpoint::parse("mysql://h/db?sslmode=x").is_err());
    }

    #[test]
    fn versions_are_read_from_either_flavour() {
        let m = "mariadb-dump  Ver 10.19 Distrib 10.11.19-MariaDB, for debian-linux-gnu (x86_64)";
        assert_eq!(parse_client_version(m), Some((10, 11)));
        let n = "mariadb-dump from 11.4.2-MariaDB, client 10.19 for Linux (x86_64)";
        assert_eq!(parse_client_version(n), Some((11, 4)));
        let my = "mysqldump  Ver 8.0.36 for Linux on x86_64 (MySQL Community Server - GPL)";
        assert_eq!(parse_client_version(my), Some((8, 0)));
        assert_eq!(parse_version("10.11.19-MariaDB-0+deb12u1"), Some((10, 11)));
    }

    #[test]
    fn batch_fields_are_unescaped_and_names_quoted() {
        assert_eq!(unescape(r"a\tb\\c\n"), "a\tb\\c\n");
        assert_eq!(ident("we`ird"), "`we``ird`");
        assert_eq!(literal(r"o'k\"), r"'o\'k\\'");
    }
}
