//! Where to connect: the `redis://` / `rediss://` URL parsed, with its
//! credentials and TLS settings.

use crate::resp::{Conn, Tls};
use crate::RedisError;

/// Where to connect, with credentials.
#[derive(Clone)]
pub(crate) struct Endpoint {
    pub(crate) host: String,
    pub(crate) addr: String,
    pub(crate) db: Option<u64>,
    pub(crate) user: Option<String>,
    pub(crate) password: Option<String>,
    /// `rediss://`: TLS.
    pub(crate) secure: bool,
    /// The TLS settings, set for a `rediss://` endpoint before connecting.
    pub(crate) tls: Option<Tls>,
}

impl std::fmt::Debug for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.name())
    }
}

/// Parses `redis[s]://[user[:password]@]host[:port][/db]`.
pub(crate) fn parse_url(url: &str) -> Result<Endpoint, RedisError> {
    let bad = |m: &str| RedisError::Config(format!("bad redis URL: {m}"));
    let (secure, rest) = match url.strip_prefix("rediss://") {
        Some(rest) => (true, rest),
        None => (
            false,
            url.strip_prefix("redis://")
                .ok_or_else(|| bad("it must start with redis:// or rediss:// (TLS)"))?,
        ),
    };
    let (auth, hostpart) = match rest.rsplit_once('@') {
        Some((a, h)) => (Some(a), h),
        None => (None, rest),
    };
    let (hostport, db) = match hostpart.split_once('/') {
        Some((h, "")) => (h, None),
        Some((h, d)) => (
            h,
            Some(
                d.parse::<u64>()
                    .map_err(|_| bad("the path must be a database number"))?,
            ),
        ),
        None => (hostpart, None),
    };
    let (host, port) = if let Some(h) = hostport.strip_prefix('[') {
        let (h, p) = h.split_once(']').ok_or_else(|| bad("unclosed ["))?;
        (h.to_string(), p.strip_prefix(':').unwrap_or(""))
    } else {
        match hostport.rsplit_once(':') {
            Some((h, p)) => (h.to_string(), p),
            None => (hostport.to_string(), ""),
        }
    };
    let host = if host.is_empty() {
        "localhost".to_string()
    } else {
        host
    };
    let port: u16 = if port.is_empty() {
        6379
    } else {
        port.parse().map_err(|_| bad("bad port"))?
    };
    let addr = if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    };
    let (user, password) = match auth {
        None => (None, None),
        Some(a) => match a.split_once(':') {
            Some((u, p)) => ((!u.is_empty()).then(|| unescape(u)), Some(unescape(p))),
            None => ((!a.is_empty()).then(|| unescape(a)), None),
        },
    };
    Ok(Endpoint {
        host,
        addr,
        db,
        user,
        password,
        secure,
        tls: None,
    })
}

/// Percent-decoding of URL user names and passwords (`%40` is `@`).
pub(crate) fn unescape(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let hex = b
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match (b[i], hex) {
            (b'%', Some(v)) => {
                out.push(v);
                i += 3;
            }
            (c, _) => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

impl Endpoint {
    /// `redis://host:port` or `rediss://host:port`, for messages.
    pub(crate) fn name(&self) -> String {
        let scheme = if self.secure { "rediss" } else { "redis" };
        format!("{scheme}://{}", self.addr)
    }

    /// Connects (with TLS for `rediss://`) and authenticates.
    pub(crate) async fn connect(&self) -> Result<Conn, RedisError> {
        let mut c = Conn::connect(&self.name(), &self.addr, self.tls.as_ref()).await?;
        let auth_err = |e: RedisError| match e {
            RedisError::Command { addr, message, .. } => RedisError::Auth { addr, message },
            e => e,
        };
        match (&self.user, &self.password) {
            (Some(u), Some(p)) => {
                c.cmd(&["AUTH", u, p]).await.map_err(auth_err)?;
            }
            (None, Some(p)) => {
                c.cmd(&["AUTH", p]).await.map_err(auth_err)?;
            }
            _ => {
                c.cmd(&["PING"]).await.map_err(auth_err)?;
            }
        }
        Ok(c)
    }

    pub(crate) fn is_local(&self) -> bool {
        matches!(self.host.as_str(), "localhost" | "127.0.0.1" | "::1")
    }
}
