//! Notifications (`[[notify]]`): a webhook with a JSON body (or a template for
//! Slack/Discord-style payloads), healthchecks-style pings, SMTP email, or a
//! command. They carry the source, the error and a log tail, with secrets
//! masked. A notifier that fails is logged; it never fails the run.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use chrono::{DateTime, Utc};
use respaldo_core::kit::duration::parse_duration;
use respaldo_core::kit::process::{self, RunOptions};
use respaldo_core::kit::secret::Secret;
use serde::{Deserialize, Serialize};

use crate::config::error::{typed, KeyError};
use crate::mask::Masker;

/// How long one notification may take by default.
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

/// What happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EventKind {
    /// A run started.
    Start,
    /// A run succeeded.
    Success,
    /// A run failed (one of its sources, a hook, a check, the repository).
    Failure,
    /// A source's last good backup is older than its objective (`rpo`).
    Stale,
    /// A backup succeeded but needs attention: a source's backup or the
    /// repository grew past `max_backup_size` / `max_repository_size`.
    Warning,
}

impl EventKind {
    fn as_str(self) -> &'static str {
        match self {
            EventKind::Start => "start",
            EventKind::Success => "success",
            EventKind::Failure => "failure",
            EventKind::Stale => "stale",
            EventKind::Warning => "warning",
        }
    }
}

/// One source in an event.
#[derive(Debug, Clone, Serialize)]
pub struct SourceEvent {
    /// The source's name.
    pub name: String,
    /// Whether it is fine.
    pub ok: bool,
    /// What is wrong.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// What a notification says; the webhook's default JSON body.
#[derive(Debug, Clone, Serialize)]
pub struct Event {
    /// `start`, `success`, `failure` or `stale`.
    pub event: EventKind,
    /// `backup`, `verify`, `test-restore`, `forget`, `prune`, `status`.
    pub action: String,
    /// The `[schedule]` entry, if scheduled.
    pub trigger: Option<String>,
    /// This host.
    pub host: String,
    /// The configuration file.
    pub config: String,
    /// The repository.
    pub repository: String,
    /// When.
    pub time: DateTime<Utc>,
    /// The sources that failed or are stale, comma-separated (empty when none).
    pub source: String,
    /// Every source involved.
    pub sources: Vec<SourceEvent>,
    /// The error, if any.
    pub error: Option<String>,
    /// The snapshot written, if any.
    pub snapshot: Option<String>,
    /// What needs attention although the run succeeded (`warning`).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
    /// One line for humans.
    pub summary: String,
    /// The last lines of respaldo's log.
    pub log_tail: String,
}

impl Event {
    /// Masks every secret in the event's text.
    pub fn masked(mut self, m: &Masker) -> Event {
        self.repository = m.mask(&self.repository);
        self.error = self.error.map(|e| m.mask(&e));
        self.summary = m.mask(&self.summary);
        self.warnings = self.warnings.iter().map(|w| m.mask(w)).collect();
        self.log_tail = m.mask(&self.log_tail);
        for s in &mut self.sources {
            s.error = s.error.as_ref().map(|e| m.mask(e));
        }
        self
    }

    fn field(&self, name: &str) -> Option<String> {
        Some(match name {
            "event" => self.event.as_str().to_string(),
            "action" => self.action.clone(),
            "trigger" => self.trigger.clone().unwrap_or_default(),
            "host" => self.host.clone(),
            "config" => self.config.clone(),
            "repository" => self.repository.clone(),
            "time" => self.time.to_rfc3339(),
            "source" => self.source.clone(),
            "error" => self.error.clone().unwrap_or_default(),
            "snapshot" => self.snapshot.clone().unwrap_or_default(),
            "summary" => self.summary.clone(),
            "warnings" => self.warnings.join("; "),
            "log_tail" => self.log_tail.clone(),
            _ => return None,
        })
    }
}

/// Placeholders a template may use.
const FIELDS: [&str; 13] = [
    "event",
    "action",
    "trigger",
    "host",
    "config",
    "repository",
    "time",
    "source",
    "error",
    "snapshot",
    "summary",
    "warnings",
    "log_tail",
];

/// Renders a template: each `{{field}}` becomes the field's text, escaped
/// for a JSON string (the template supplies the quotes).
fn render(template: &str, event: &Event) -> String {
    let mut out = String::with_capacity(template.len());
    let mut rest = template;
    while let Some(i) = rest.find("{{") {
        out.push_str(&rest[..i]);
        let after = &rest[i + 2..];
        match after.find("}}") {
            Some(end) => {
                let name = after[..end].trim();
                match event.field(name) {
                    Some(v) => {
                        let quoted = serde_json::Value::String(v).to_string();
                        out.push_str(&quoted[1..quoted.len() - 1]);
                    }
                    None => out.push_str(&rest[i..i + 2 + end + 2]),
                }
                rest = &after[end + 2..];
            }
            None => {
                out.push_str(&rest[i..]);
                rest = "";
            }
        }
    }
    out.push_str(rest);
    out
}

/// Why a webhook template or URL is refused.
#[derive(Debug, thiserror::Error)]
enum NotifierError {
    #[error("unclosed `{{{{`")]
    Unclosed,
    #[error("unknown placeholder `{{{{{0}}}}}` (known: {known})", known = FIELDS.join(", "))]
    UnknownPlaceholder(String),
    #[error("must be an http:// or https:// URL")]
    NotHttp,
}

fn check_template(t: &str) -> Result<(), NotifierError> {
    let mut rest = t;
    while let Some(i) = rest.find("{{") {
        let after = &rest[i + 2..];
        let end = after.find("}}").ok_or(NotifierError::Unclosed)?;
        let name = after[..end].trim();
        if !FIELDS.contains(&name) {
            return Err(NotifierError::UnknownPlaceholder(name.to_string()));
        }
        rest = &after[end + 2..];
    }
    Ok(())
}

/// Keys every notifier accepts.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CommonKeys {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    on: Option<Vec<EventKind>>,
    #[serde(default)]
    timeout: Option<String>,
    #[serde(default)]
    retries: Option<u32>,
    #[serde(default)]
    retry_delay: Option<String>,
}

const COMMON_KEYS: [&str; 5] = ["type", "on", "timeout", "retries", "retry_delay"];

/// Attempts after a first failed one, unless `retries` says otherwise.
const DEFAULT_RETRIES: u32 = 2;
/// The wait before the first retry (doubled before each next one).
const DEFAULT_RETRY_DELAY: Duration = Duration::from_secs(2);

/// `type = "webhook"`: an HTTP POST.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct WebhookConfig {
    /// Where to POST. Tokens in it are secrets: use `${VAR}`.
    url: String,
    /// Extra headers, values by reference like any secret
    /// (`Authorization = "${HOOK_TOKEN}"`).
    #[serde(default)]
    headers: BTreeMap<String, Secret>,
    /// The body instead of the event's JSON, with `{{summary}}`, `{{source}}`,
    /// `{{error}}`, `{{log_tail}}`, … placeholders (escaped for a JSON string),
    /// e.g. `'{"text": "respaldo: {{summary}}"}'` for Slack.
    #[serde(default)]
    template: Option<String>,
}

/// `type = "healthchecks"`: pings `URL/start`, `URL` (success) and
/// `URL/fail` (failure, stale), the log tail as the body.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct HealthchecksConfig {
    /// The check's ping URL (`https://hc-ping.com/UUID`); use `${VAR}`.
    url: String,
}

/// `type = "email"`: a message through an SMTP server.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct EmailConfig {
    /// The SMTP server's host name.
    smtp_host: String,
    /// Its port; default 587 (`starttls`), 465 (`tls`) or 25 (`none`).
    #[serde(default)]
    smtp_port: Option<u16>,
    /// `starttls` (default), `tls` (implicit TLS) or `none` (plain; local relays only).
    #[serde(default = "default_tls")]
    tls: String,
    /// User name for SMTP AUTH.
    #[serde(default)]
    username: Option<String>,
    /// Password for SMTP AUTH, by reference.
    #[serde(default)]
    password: Option<Secret>,
    /// The sender address.
    from: String,
    /// Recipients.
    to: Vec<String>,
}

fn default_tls() -> String {
    "starttls".into()
}

/// `type = "command"`: runs a program with the event in its environment
/// (`RESPALDO_EVENT`, `RESPALDO_SOURCE`, `RESPALDO_ERROR`, `RESPALDO_SUMMARY`,
/// `RESPALDO_LOG_TAIL`, and the whole event as JSON in `RESPALDO_EVENT_JSON`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct CommandConfig {
    /// The program and its arguments (no shell; use `["sh", "-c", "…"]`).
    command: Vec<String>,
}

#[derive(Debug, Clone)]
enum Channel {
    Webhook(WebhookConfig),
    Healthchecks(HealthchecksConfig),
    Email(EmailConfig),
    Command(CommandConfig),
}

/// One configured notifier.
#[derive(Debug, Clone)]
pub struct Notifier {
    channel: Channel,
    on: Vec<EventKind>,
    timeout: Duration,
    retries: u32,
    retry_delay: Duration,
    /// `webhook #1`, for messages.
    label: String,
}

/// Parses the `[[notify]]` array.
pub fn parse(raw: Vec<toml::Value>, base: &Path) -> Result<Vec<Notifier>, KeyError> {
    let mut out = Vec::new();
    for (i, v) in raw.into_iter().enumerate() {
        let keys = vec!["notify".to_string(), i.to_string()];
        let at = |k: &str, m: String| {
            let mut p = keys.clone();
            p.push(k.to_string());
            (p, m)
        };
        let toml::Value::Table(mut table) = v else {
            return Err((keys, "must be a table".into()));
        };
        let mut common = toml::Table::new();
        for k in COMMON_KEYS {
            if let Some(v) = table.remove(k) {
                common.insert(k.to_string(), v);
            }
        }
        if !common.contains_key("type") {
            return Err(at(
                "type",
                "missing `type` (webhook, healthchecks, email or command)".into(),
            ));
        }
        let c: CommonKeys = typed(toml::Value::Table(common), &keys)?;
        let rest = toml::Value::Table(table);
        let (channel, default_on) = match c.kind.as_str() {
            "webhook" => {
                let w: WebhookConfig = typed(rest, &keys)?;
                if let Some(t) = &w.template {
                    check_template(t).map_err(|m| at("template", m.to_string()))?;
                }
                check_url(&w.url).map_err(|m| at("url", m.to_string()))?;
                (
                    Channel::Webhook(w),
                    vec![EventKind::Failure, EventKind::Stale, EventKind::Warning],
                )
            }
            "healthchecks" => {
                let h: HealthchecksConfig = typed(rest, &keys)?;
                check_url(&h.url).map_err(|m| at("url", m.to_string()))?;
                (
                    Channel::Healthchecks(h),
                    vec![
                        EventKind::Start,
                        EventKind::Success,
                        EventKind::Failure,
                        EventKind::Stale,
                    ],
                )
            }
            "email" => {
                let mut e: EmailConfig = typed(rest, &keys)?;
                if !["starttls", "tls", "none"].contains(&e.tls.as_str()) {
                    return Err(at("tls", format!("`{}`: use starttls, tls or none", e.tls)));
                }
                for a in e.to.iter().chain(std::iter::once(&e.from)) {
                    a.parse::<lettre::message::Mailbox>().map_err(|err| {
                        at(
                            if a == &e.from { "from" } else { "to" },
                            format!("`{a}`: {err}"),
                        )
                    })?;
                }
                if e.to.is_empty() {
                    return Err(at("to", "needs at least one recipient".into()));
                }
                if let Some(p) = &mut e.password {
                    p.rebase(base);
                }
                (
                    Channel::Email(e),
                    vec![EventKind::Failure, EventKind::Stale, EventKind::Warning],
                )
            }
            "command" => {
                let c: CommandConfig = typed(rest, &keys)?;
                if c.command.is_empty() {
                    return Err(at("command", "is empty".into()));
                }
                (
                    Channel::Command(c),
                    vec![EventKind::Failure, EventKind::Stale, EventKind::Warning],
                )
            }
            other => {
                return Err(at(
                    "type",
                    format!(
                        "unknown notifier type `{other}` (webhook, healthchecks, email or command)"
                    ),
                ))
            }
        };
        let timeout = match &c.timeout {
            Some(t) => parse_duration(t)
                .map_err(|respaldo_core::kit::duration::DurationError(m)| at("timeout", m))?,
            None => DEFAULT_TIMEOUT,
        };
        let retry_delay = match &c.retry_delay {
            Some(t) => parse_duration(t)
                .map_err(|respaldo_core::kit::duration::DurationError(m)| at("retry_delay", m))?,
            None => DEFAULT_RETRY_DELAY,
        };
        out.push(Notifier {
            label: format!("notify #{} ({})", i + 1, c.kind),
            channel,
            on: c.on.unwrap_or(default_on),
            timeout,
            retries: c.retries.unwrap_or(DEFAULT_RETRIES),
            retry_delay,
        });
    }
    Ok(out)
}

fn check_url(url: &str) -> Result<(), NotifierError> {
    if url.starts_with("http://") || url.starts_with("https://") {
        Ok(())
    } else {
        Err(NotifierError::NotHttp)
    }
}

/// Whether any notifier wants `kind`.
pub fn wants(notifiers: &[Notifier], kind: EventKind) -> bool {
    notifiers.iter().any(|n| n.on.contains(&kind))
}

/// Sends `event` (already masked) to every notifier that wants it, at once.
/// A failure that may pass (a timeout, an unreachable server, a 5xx or 429
/// answer, a failed command or SMTP exchange) is retried `retries` times,
/// waiting `retry_delay`, then twice as long each time. Failures are
/// logged (each attempt, then the giving up), never returned.
pub async fn send(notifiers: &[Notifier], event: &Event) {
    let sends = notifiers
        .iter()
        .filter(|n| n.on.contains(&event.event))
        .map(|n| async move {
            let mut delay = n.retry_delay;
            for attempt in 0..=n.retries {
                let r = tokio::time::timeout(n.timeout, deliver(n, event))
                    .await
                    .unwrap_or(Err(DeliveryError::TimedOut(n.timeout)));
                let Err(e) = r else { return };
                let kind = event.event.as_str();
                if attempt < n.retries && e.may_pass() {
                    tracing::warn!(
                        "{} could not send the {kind} notification (attempt {} of {}): {e}; retrying in {}s",
                        n.label,
                        attempt + 1,
                        n.retries + 1,
                        delay.as_secs_f64()
                    );
                    tokio::time::sleep(delay).await;
                    delay *= 2;
                } else {
                    tracing::warn!("{} could not send the {kind} notification: {e}", n.label);
                    return;
                }
            }
        });
    futures::future::join_all(sends).await;
}

/// Why a notification was not delivered (messages name the host only:
/// webhook URLs often hold tokens).
#[derive(Debug, thiserror::Error)]
pub enum DeliveryError {
    /// No answer within the notifier's `timeout`.
    #[error("timed out after {}s", .0.as_secs_f64())]
    TimedOut(Duration),
    /// The server could not be reached.
    #[error("cannot reach {host}: {message}")]
    Unreachable {
        /// The server's host name.
        host: String,
        /// Why.
        message: String,
    },
    /// The server answered with an error status.
    #[error("{host} answered {status}")]
    Answered {
        /// The server's host name.
        host: String,
        /// The HTTP status.
        status: reqwest::StatusCode,
    },
    /// The SMTP server refused or failed.
    #[error("SMTP server {host}: {message}")]
    Smtp {
        /// The SMTP server.
        host: String,
        /// Why.
        message: String,
    },
    /// The notify command failed.
    #[error("{0}")]
    Command(String),
    /// The notification could not be made (a secret, an address, the
    /// body): sending it again would fail the same way.
    #[error("{0}")]
    Message(String),
}

impl DeliveryError {
    /// Whether sending again may work.
    pub fn may_pass(&self) -> bool {
        match self {
            DeliveryError::Answered { status, .. } => {
                status.is_server_error() || *status == reqwest::StatusCode::TOO_MANY_REQUESTS
            }
            DeliveryError::Message(_) => false,
            _ => true,
        }
    }
}

async fn deliver(n: &Notifier, event: &Event) -> Result<(), DeliveryError> {
    let message = |e: &dyn std::fmt::Display| DeliveryError::Message(e.to_string());
    match &n.channel {
        Channel::Webhook(w) => {
            let body = match &w.template {
                Some(t) => render(t, event),
                None => serde_json::to_string(event).map_err(|e| message(&e))?,
            };
            let mut req = client()?
                .post(&w.url)
                .header("content-type", "application/json")
                .body(body);
            for (k, v) in &w.headers {
                req = req.header(k, v.resolve().await.map_err(|e| message(&e))?.expose());
            }
            check_response(req.send().await)
        }
        Channel::Healthchecks(h) => {
            let url = h.url.trim_end_matches('/');
            let url = match event.event {
                EventKind::Start => format!("{url}/start"),
                EventKind::Success => url.to_string(),
                EventKind::Failure | EventKind::Stale => format!("{url}/fail"),
                // Logged in the check's history without changing its state.
                EventKind::Warning => format!("{url}/log"),
            };
            let body = format!("{}\n\n{}", event.summary, event.log_tail);
            check_response(client()?.post(url).body(body).send().await)
        }
        Channel::Email(e) => send_email(e, event).await,
        Channel::Command(c) => {
            let json = serde_json::to_string(event).map_err(|e| message(&e))?;
            let env = vec![
                (
                    "RESPALDO_EVENT".to_string(),
                    event.event.as_str().to_string(),
                ),
                ("RESPALDO_SOURCE".into(), event.source.clone()),
                (
                    "RESPALDO_ERROR".into(),
                    event.error.clone().unwrap_or_default(),
                ),
                ("RESPALDO_SUMMARY".into(), event.summary.clone()),
                ("RESPALDO_LOG_TAIL".into(), event.log_tail.clone()),
                ("RESPALDO_EVENT_JSON".into(), json),
            ];
            process::run_with(
                &c.command,
                &RunOptions {
                    env,
                    dir: None,
                    timeout: Some(n.timeout),
                },
            )
            .await
            .map_err(|e| DeliveryError::Command(e.to_string()))
        }
    }
}

fn client() -> Result<reqwest::Client, DeliveryError> {
    reqwest::Client::builder()
        .user_agent(concat!("respaldo/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(|e| DeliveryError::Message(e.to_string()))
}

/// An error that names the host only: webhook URLs often hold tokens.
fn check_response(r: reqwest::Result<reqwest::Response>) -> Result<(), DeliveryError> {
    let host = |e: &reqwest::Error| {
        e.url()
            .and_then(|u| u.host_str().map(str::to_string))
            .unwrap_or_default()
    };
    match r {
        Ok(resp) if resp.status().is_success() => Ok(()),
        Ok(resp) => Err(DeliveryError::Answered {
            host: resp.url().host_str().unwrap_or("").to_string(),
            status: resp.status(),
        }),
        Err(e) => Err(DeliveryError::Unreachable {
            host: host(&e),
            message: e.without_url().to_string(),
        }),
    }
}

async fn send_email(e: &EmailConfig, event: &Event) -> Result<(), DeliveryError> {
    use lettre::message::Mailbox;
    use lettre::transport::smtp::authentication::Credentials;
    use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
    let parse = |a: &str| {
        a.parse::<Mailbox>()
            .map_err(|err| DeliveryError::Message(format!("`{a}`: {err}")))
    };
    let smtp = |err: &dyn std::fmt::Display| DeliveryError::Smtp {
        host: e.smtp_host.clone(),
        message: err.to_string(),
    };
    let mut msg = Message::builder()
        .from(parse(&e.from)?)
        .subject(format!("[respaldo] {}", event.summary));
    for to in &e.to {
        msg = msg.to(parse(to)?);
    }
    let body = format!(
        "{}\n\nhost: {}\nconfiguration: {}\nrepository: {}\nsource: {}\nerror: {}\n\nlog:\n{}\n",
        event.summary,
        event.host,
        event.config,
        event.repository,
        event.source,
        event.error.as_deref().unwrap_or("-"),
        event.log_tail
    );
    let msg = msg
        .body(body)
        .map_err(|err| DeliveryError::Message(err.to_string()))?;
    let mut transport = match e.tls.as_str() {
        "tls" => AsyncSmtpTransport::<Tokio1Executor>::relay(&e.smtp_host),
        "none" => Ok(AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(
            &e.smtp_host,
        )),
        _ => AsyncSmtpTransport::<Tokio1Executor>::starttls_relay(&e.smtp_host),
    }
    .map_err(|err| smtp(&err))?;
    if let Some(port) = e.smtp_port {
        transport = transport.port(port);
    }
    if let (Some(user), Some(pw)) = (&e.username, &e.password) {
        transport = transport.credentials(Credentials::new(
            user.clone(),
            pw.resolve()
                .await
                .map_err(|e| DeliveryError::Message(e.to_string()))?
                .expose()
                .to_string(),
        ));
    }
    transport
        .build()
        .send(msg)
        .await
        .map(|_| ())
        .map_err(|err| smtp(&err))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event() -> Event {
        Event {
            event: EventKind::Failure,
            action: "backup".into(),
            trigger: None,
            host: "h".into(),
            config: "/c".into(),
            repository: "/r".into(),
            time: Utc::now(),
            source: "db".into(),
            sources: vec![],
            error: Some("said \"no\"\nthen quit".into()),
            snapshot: None,
            warnings: Vec::new(),
            summary: "backup failed: db".into(),
            log_tail: String::new(),
        }
    }

    #[test]
    fn templates_escape_for_json() {
        let t = r#"{"text": "{{summary}}: {{error}} {{unknown}}"}"#;
        let out = render(t, &event());
        assert_eq!(
            out,
            r#"{"text": "backup failed: db: said \"no\"\nthen quit {{unknown}}"}"#
        );
        assert!(check_template(t).is_err());
        assert!(check_template(r#"{"text": "{{ summary }}"}"#).is_ok());
    }

    #[test]
    fn parse_validates_per_type() {
        let parse_one = |t: &str| {
            let v: toml::Table = toml::from_str(t).unwrap();
            parse(vec![toml::Value::Table(v)], Path::new("/"))
        };
        let n = parse_one("type = \"webhook\"\nurl = \"http://x/\"\n").unwrap();
        assert_eq!(
            n[0].on,
            [EventKind::Failure, EventKind::Stale, EventKind::Warning]
        );
        let e =
            parse_one("type = \"webhook\"\nurl = \"http://x/\"\ncommand = [\"x\"]\n").unwrap_err();
        assert_eq!(e.0, ["notify", "0", "command"]);
        let e = parse_one("type = \"pager\"\n").unwrap_err();
        assert_eq!(e.0, ["notify", "0", "type"]);
        let e = parse_one("type = \"webhook\"\nurl = \"http://x/\"\non = [\"sometimes\"]\n")
            .unwrap_err();
        assert_eq!(e.0[..3], ["notify", "0", "on"]);
        let e =
            parse_one("type = \"email\"\nsmtp_host = \"m\"\nfrom = \"nope\"\nto = [\"a@b.c\"]\n")
                .unwrap_err();
        assert_eq!(e.0, ["notify", "0", "from"]);
    }
}
