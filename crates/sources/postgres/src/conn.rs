//! Where a server is and how to log in: URLs without passwords, the password
//! from a secret, `PGPASSWORD` or a pgpass file, and connections through
//! tokio-postgres for the driver's own queries.

use std::path::PathBuf;
use std::str::FromStr;

use respaldo_core::kit::secret::SecretValue;
use tokio_postgres::{Client, NoTls};
use url::Url;

use crate::tls::{connector, SslMode};
use crate::PgError;

/// A server and database, as a `postgres://` URL that never holds a password.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    url: Url,
}

impl Endpoint {
    /// Parses `postgres://user@host:port/db?sslmode=…`. A password in the URL
    /// is refused: passwords are given by reference.
    pub fn parse(s: &str) -> Result<Self, PgError> {
        let url = Url::parse(s)
            .map_err(|e| PgError::Config(format!("`{}` is not a URL: {e}", redact(s))))?;
        if url.scheme() != "postgres" && url.scheme() != "postgresql" {
            return Err(PgError::Config(format!(
                "`{}` must start with postgres://",
                redact(s)
            )));
        }
        if url.password().is_some() {
            return Err(PgError::Config(
                "the URL holds a password; give it by reference instead \
                 (`password = { env = \"…\" }`, `{ file = \"…\" }`, PGPASSWORD or a pgpass file)"
                    .into(),
            ));
        }
        Ok(Endpoint { url })
    }

    /// The database named in the URL's path, if any.
    pub fn database(&self) -> Option<String> {
        let p = self.url.path().trim_start_matches('/');
        (!p.is_empty()).then(|| {
            url::form_urlencoded::parse(format!("x={p}").as_bytes())
                .next()
                .map(|(_, v)| v.into_owned())
                .unwrap_or_else(|| p.to_string())
        })
    }

    /// The same server with another database.
    pub fn with_database(&self, db: &str) -> Endpoint {
        let mut url = self.url.clone();
        let enc: String = url::form_urlencoded::byte_serialize(db.as_bytes()).collect();
        url.set_path(&format!("/{}", enc.replace('+', "%20")));
        Endpoint { url }
    }

    /// The connection string handed to libpq tools (`--dbname=`).
    pub fn conninfo(&self) -> &str {
        self.url.as_str()
    }

    /// The login user: from the URL, else `PGUSER`, else the OS user.
    pub fn user(&self) -> String {
        if !self.url.username().is_empty() {
            return self.url.username().to_string();
        }
        std::env::var("PGUSER")
            .or_else(|_| std::env::var("USER"))
            .unwrap_or_else(|_| "postgres".into())
    }

    /// `host:port/db` for messages.
    pub fn display(&self) -> String {
        format!(
            "{}:{}/{}",
            self.host(),
            self.port(),
            self.database().unwrap_or_default()
        )
    }

    fn host(&self) -> String {
        self.url
            .host_str()
            .filter(|h| !h.is_empty())
            .map(str::to_string)
            .unwrap_or_else(|| std::env::var("PGHOST").unwrap_or_else(|_| "localhost".into()))
    }

    fn port(&self) -> u16 {
        self.url.port().unwrap_or(5432)
    }

    /// The password to use: the configured secret, else `PGPASSWORD`, else the
    /// first matching line of the pgpass file (`PGPASSFILE` or `~/.pgpass`).
    pub fn password(&self, configured: Option<&SecretValue>) -> Option<String> {
        if let Some(v) = configured {
            return Some(v.expose().to_string());
        }
        if let Ok(p) = std::env::var("PGPASSWORD") {
            return Some(p);
        }
        let file = std::env::var_os("PGPASSFILE")
            .map(PathBuf::from)
            .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".pgpass")))?;
        let text = std::fs::read_to_string(file).ok()?;
        pgpass_lookup(
            &text,
            &self.host(),
            self.port(),
            &self.database().unwrap_or_default(),
            &self.user(),
        )
    }

    /// Connects for the driver's own queries.
    pub async fn connect(&self, password: Option<&str>) -> Result<Client, PgError> {
        // sslmode and sslrootcert are handled here (tokio-postgres knows
        // only some modes); the rest of the URL goes to tokio-postgres.
        let param = |k: &str| {
            self.url
                .query_pairs()
                .find(|(n, _)| n == k)
                .map(|(_, v)| v.into_owned())
        };
        let mode = SslMode::parse(param("sslmode").as_deref())?;
        let mut url = self.url.clone();
        let rest: Vec<(String, String)> = self
            .url
            .query_pairs()
            .filter(|(n, _)| n != "sslmode" && n != "sslrootcert")
            .map(|(n, v)| (n.into_owned(), v.into_owned()))
            .collect();
        url.set_query(None);
        if !rest.is_empty() {
            url.query_pairs_mut().extend_pairs(rest);
        }
        let mut cfg = tokio_postgres::Config::from_str(url.as_str())
            .map_err(|e| PgError::Config(format!("cannot use `{}`: {e}", self.display())))?;
        cfg.ssl_mode(mode.client_mode());
        if cfg.get_user().is_none() {
            cfg.user(self.user());
        }
        if let Some(p) = password {
            cfg.password(p);
        }
        cfg.application_name("respaldo");
        let fail = |e: tokio_postgres::Error| PgError::Connect {
            server: self.display(),
            user: self.user(),
            message: message(&e),
        };
        if mode == SslMode::Disable {
            let (client, connection) = cfg.connect(NoTls).await.map_err(fail)?;
            tokio::spawn(async move {
                if let Err(e) = connection.await {
                    tracing::debug!("postgres connection ended: {e}");
                }
            });
            return Ok(client);
        }
        let tls = connector(mode, param("sslrootcert").as_deref())?;
        let (client, connection) = cfg.connect(tls).await.map_err(fail)?;
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::debug!("postgres connection ended: {e}");
            }
        });
        Ok(client)
    }
}

/// The text of a tokio-postgres error: the server's message when there is
/// one, else the error and its causes.
pub fn message(e: &tokio_postgres::Error) -> String {
    if let Some(db) = e.as_db_error() {
        return db.message().to_string();
    }
    let mut s = e.to_string();
    let mut cur = std::error::Error::source(e);
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

/// A failed query on `ep`, saying what the driver was doing.
pub(crate) fn query_err(ep: &Endpoint, what: &str, e: tokio_postgres::Error) -> PgError {
    PgError::Query {
        server: ep.display(),
        what: what.to_string(),
        message: message(&e),
    }
}

/// Quotes an SQL identifier.
pub fn ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// `schema.table` quoted.
pub fn qualified(schema: &str, table: &str) -> String {
    format!("{}.{}", ident(schema), ident(table))
}

/// A URL with any password replaced, for messages.
fn redact(s: &str) -> String {
    match Url::parse(s) {
        Ok(mut u) if u.password().is_some() => {
            let _ = u.set_password(Some("***"));
            u.to_string()
        }
        _ => s.to_string(),
    }
}

/// Finds the password in pgpass text (`host:port:db:user:password`, `*`
/// wildcards, `\:` and `\\` escapes).
fn pgpass_lookup(text: &str, host: &str, port: u16, db: &str, user: &str) -> Option<String> {
    let port = port.to_string();
    for line in text.lines() {
        if line.trim_start().starts_with('#') || line.trim().is_empty() {
            continue;
        }
        let mut fields = Vec::new();
        let mut cur = String::new();
        let mut chars = line.chars();
        while let Some(c) = chars.next() {
            match c {
                '\\' => cur.extend(chars.next()),
                ':' if fields.len() < 4 => fields.push(std::mem::take(&mut cur)),
                c => cur.push(c),
            }
        }
        fields.push(cur);
        if fields.len() != 5 {
            continue;
        }
        let m = |f: &str, v: &str| f == "*" || f == v;
        if m(&fields[0], host) && m(&fields[1], &port) && m(&fields[2], db) && m(&fields[3], user) {
            return Some(fields[4].clone());
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        let e = Endpoint::parse("postgres://app@db.example:6432/shop?sslmode=disable").unwrap();
        assert_eq!(e.database().as_deref(), Some("shop"));
        assert_eq!(e.display(), "db.example:6432/shop");
        let o = e.with_database("new name");
        assert_eq!(o.database().as_deref(), Some("new name"));
        assert!(o.conninfo().contains("sslmode=disable"));
        let err = Endpoint::parse("postgres://app:hunter2@h/db").unwrap_err();
        assert!(!err.to_string().contains("hunter2"));
        assert!(Endpoint::parse("mysql://h/db").is_err());
    }

    #[test]
    fn pgpass() {
        let t = "# c\nother:*:*:*:no\nh:5432:*:app:s\\:ec\\\\ret\n*:*:*:*:fallback\n";
        assert_eq!(
            pgpass_lookup(t, "h", 5432, "db", "app").as_deref(),
            Some("s:ec\\ret")
        );
        assert_eq!(
            pgpass_lookup(t, "x", 1, "db", "u").as_deref(),
            Some("fallback")
        );
    }
}
