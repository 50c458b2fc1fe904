//! A protocol fake of the InfluxDB 2.x HTTP API, for the 2.x path of the
//! `influxdb` source: no 2.x server can be installed here. It is a real HTTP
//! server on a free port of this process, built from the public API
//! documentation, implementing only what the driver uses:
//!
//! * token authentication (`Authorization: Token …`, 401 otherwise);
//! * `GET /api/v2/orgs?org=`;
//! * `GET/POST /api/v2/buckets`, `PATCH/DELETE /api/v2/buckets/{id}`
//!   (names, descriptions, retention rules);
//! * `POST /api/v2/write` (gzip'd line protocol, `precision=ns`), parsed
//!   here independently of the driver, points merged as InfluxDB does;
//! * `POST /api/v2/delete` over a time range;
//! * `POST /api/v2/query`: the Flux query shapes the driver sends
//!   (`from |> range`, then `pivot` on `_field`, `filter` on measurement and
//!   field plus empty strings, or `limit(n: 1)`), answered in annotated CSV
//!   (one table per series, or per series and field when unpivoted, a new
//!   annotation block whenever the columns change, `\r\n` line ends, RFC 4180
//!   quoting, null cells empty); an unknown shape is a 400.
//!
//! Points live in memory; tests read them back to compare.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use serde_json::{json, Value};

/// A field value.
#[derive(Debug, Clone, PartialEq)]
pub enum FVal {
    /// A float field.
    F(f64),
    /// An integer field.
    I(i64),
    /// An unsigned integer field.
    U(u64),
    /// A string field.
    S(String),
    /// A boolean field.
    B(bool),
}

impl FVal {
    fn datatype(&self) -> &'static str {
        match self {
            FVal::F(_) => "double",
            FVal::I(_) => "long",
            FVal::U(_) => "unsignedLong",
            FVal::S(_) => "string",
            FVal::B(_) => "boolean",
        }
    }

    fn csv(&self) -> String {
        match self {
            // Go's strconv.FormatFloat(f, 'f', -1, 64): shortest, no exponent.
            FVal::F(f) => format!("{f}"),
            FVal::I(i) => i.to_string(),
            FVal::U(u) => u.to_string(),
            FVal::S(s) => s.clone(),
            FVal::B(b) => b.to_string(),
        }
    }
}

/// Measurement and sorted tags.
pub type SeriesKey = (String, Vec<(String, String)>);
/// Series → time → field → value.
pub type Points = BTreeMap<SeriesKey, BTreeMap<i64, BTreeMap<String, FVal>>>;

/// A bucket.
#[derive(Debug, Clone)]
pub struct FBucket {
    /// Bucket id.
    pub id: String,
    /// Its organization's id.
    pub org_id: String,
    /// Bucket name.
    pub name: String,
    /// `user` or `system`.
    pub kind: String,
    /// The bucket's description.
    pub description: Option<String>,
    /// Retention rules, as the API returns them.
    pub retention_rules: Value,
    /// The points written to it.
    pub points: Points,
}

#[derive(Debug, Default)]
struct State {
    token: String,
    orgs: Vec<(String, String)>,
    buckets: BTreeMap<String, FBucket>,
    next_id: u64,
    /// Writes to answer with 503 before accepting them.
    fail_writes: u32,
    /// Drop every n-th point written (a lossy server), when set.
    drop_every: Option<u64>,
    written: u64,
    write_requests: u64,
    max_lines_per_write: usize,
    queries: Vec<String>,
}

/// The fake server; stops when dropped.
pub struct Fake2 {
    /// `http://127.0.0.1:PORT`.
    pub url: String,
    state: Arc<Mutex<State>>,
    stop: Arc<AtomicBool>,
    addr: std::net::SocketAddr,
}

impl Drop for Fake2 {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(self.addr);
    }
}

impl Fake2 {
    /// Starts a server accepting `token`, with organization `org`.
    pub fn start(token: &str, org: &str) -> Fake2 {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        let state = Arc::new(Mutex::new(State {
            token: token.into(),
            ..Default::default()
        }));
        let stop = Arc::new(AtomicBool::new(false));
        let f = Fake2 {
            url: format!("http://{addr}"),
            state: state.clone(),
            stop: stop.clone(),
            addr,
        };
        let org_id = f.add_org(org);
        // The system buckets every organization has.
        for name in ["_monitoring", "_tasks"] {
            f.create_bucket_kind(&org_id, name, "system", 604_800, None);
        }
        std::thread::spawn(move || {
            for s in l.incoming() {
                if stop.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(s) = s else { continue };
                let st = state.clone();
                std::thread::spawn(move || serve(s, st));
            }
        });
        f
    }

    fn add_org(&self, name: &str) -> String {
        let mut st = self.state.lock().unwrap();
        st.next_id += 1;
        let id = format!("{:016x}", 0x0a00 + st.next_id);
        st.orgs.push((id.clone(), name.into()));
        id
    }

    /// The id of organization `name`.
    pub fn org_id(&self, name: &str) -> String {
        let st = self.state.lock().unwrap();
        st.orgs.iter().find(|o| o.1 == name).unwrap().0.clone()
    }

    fn create_bucket_kind(
        &self,
        org_id: &str,
        name: &str,
        kind: &str,
        every: i64,
        description: Option<&str>,
    ) -> String {
        let mut st = self.state.lock().unwrap();
        st.next_id += 1;
        let id = format!("{:016x}", 0xb000 + st.next_id);
        let rules = if every == 0 {
            json!([])
        } else {
            json!([{"type": "expire", "everySeconds": every, "shardGroupDurationSeconds": 86_400}])
        };
        st.buckets.insert(
            id.clone(),
            FBucket {
                id: id.clone(),
                org_id: org_id.into(),
                name: name.into(),
                kind: kind.into(),
                description: description.map(str::to_string),
                retention_rules: rules,
                points: Points::new(),
            },
        );
        id
    }

    /// Creates a user bucket in `org` with a retention of `every` seconds
    /// (0 = forever).
    pub fn create_bucket(&self, org: &str, name: &str, every: i64, description: Option<&str>) {
        let org_id = self.org_id(org);
        self.create_bucket_kind(&org_id, name, "user", every, description);
    }

    /// Writes line protocol into a bucket (as `/api/v2/write` would).
    pub fn write(&self, bucket: &str, lp: &str) {
        let mut st = self.state.lock().unwrap();
        let b = st
            .buckets
            .values_mut()
            .find(|b| b.name == bucket)
            .expect("bucket");
        for (k, t, fields) in parse_lp(lp).unwrap() {
            let p = b.points.entry(k).or_default().entry(t).or_default();
            p.extend(fields);
        }
    }

    /// A copy of a bucket (None if it does not exist).
    pub fn bucket(&self, name: &str) -> Option<FBucket> {
        let st = self.state.lock().unwrap();
        st.buckets.values().find(|b| b.name == name).cloned()
    }

    /// The bucket names, sorted.
    pub fn bucket_names(&self) -> Vec<String> {
        let st = self.state.lock().unwrap();
        let mut v: Vec<String> = st.buckets.values().map(|b| b.name.clone()).collect();
        v.sort();
        v
    }

    /// Answer the next `n` writes with 503.
    pub fn fail_writes(&self, n: u32) {
        self.state.lock().unwrap().fail_writes = n;
    }

    /// Silently drop every `n`-th point written (None: keep all).
    pub fn drop_every(&self, n: Option<u64>) {
        self.state.lock().unwrap().drop_every = n;
    }

    /// Write requests received (including failed ones) and the most lines
    /// one held.
    pub fn write_stats(&self) -> (u64, usize) {
        let st = self.state.lock().unwrap();
        (st.write_requests, st.max_lines_per_write)
    }

    /// The Flux queries received.
    pub fn queries(&self) -> Vec<String> {
        self.state.lock().unwrap().queries.clone()
    }
}

/// Points per measurement: distinct (series, time).
pub fn point_counts(p: &Points) -> BTreeMap<String, u64> {
    let mut out = BTreeMap::new();
    for ((m, _), times) in p {
        *out.entry(m.clone()).or_insert(0) += times.len() as u64;
    }
    out
}

struct Request {
    method: String,
    path: String,
    query: BTreeMap<String, String>,
    headers: BTreeMap<String, String>,
    body: Vec<u8>,
}

fn url_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < b.len() => {
                let h = std::str::from_utf8(&b[i + 1..i + 3]).unwrap();
                out.push(u8::from_str_radix(h, 16).unwrap());
                i += 2;
            }
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8(out).unwrap()
}

fn read_request(r: &mut BufReader<TcpStream>) -> Option<Request> {
    let mut line = String::new();
    if r.read_line(&mut line).ok()? == 0 {
        return None;
    }
    let mut parts = line.split_whitespace();
    let method = parts.next()?.to_string();
    let target = parts.next()?.to_string();
    let mut headers = BTreeMap::new();
    loop {
        let mut h = String::new();
        r.read_line(&mut h).ok()?;
        let h = h.trim_end();
        if h.is_empty() {
            break;
        }
        let (k, v) = h.split_once(':')?;
        headers.insert(k.trim().to_lowercase(), v.trim().to_string());
    }
    assert!(
        !headers.contains_key("transfer-encoding"),
        "the fake reads Content-Length bodies only"
    );
    let len: usize = headers
        .get("content-length")
        .map(|v| v.parse().unwrap())
        .unwrap_or(0);
    let mut body = vec![0; len];
    r.read_exact(&mut body).ok()?;
    let (path, qs) = target.split_once('?').unwrap_or((&target, ""));
    let query = qs
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (url_decode(k), url_decode(v))
        })
        .collect();
    Some(Request {
        method,
        path: path.to_string(),
        query,
        headers,
        body,
    })
}

fn respond(s: &mut TcpStream, status: u16, ctype: &str, body: &[u8]) -> std::io::Result<()> {
    let reason = match status {
        200 => "OK",
        201 => "Created",
        204 => "No Content",
        400 => "Bad Request",
        401 => "Unauthorized",
        404 => "Not Found",
        422 => "Unprocessable Entity",
        503 => "Service Unavailable",
        _ => "Error",
    };
    let head = format!(
        "HTTP/1.1 {status} {reason}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    s.write_all(head.as_bytes())?;
    s.write_all(body)?;
    s.flush()
}

fn serve(s: TcpStream, st: Arc<Mutex<State>>) {
    let mut w = s.try_clone().unwrap();
    let mut r = BufReader::new(s);
    while let Some(req) = read_request(&mut r) {
        let (status, ctype, body) = handle(&req, &st);
        if respond(&mut w, status, ctype, &body).is_err() {
            return;
        }
    }
}

fn err(status: u16, code: &str, message: &str) -> (u16, &'static str, Vec<u8>) {
    (
        status,
        "application/json; charset=utf-8",
        json!({"code": code, "message": message})
            .to_string()
            .into_bytes(),
    )
}

fn ok_json(status: u16, v: Value) -> (u16, &'static str, Vec<u8>) {
    (
        status,
        "application/json; charset=utf-8",
        v.to_string().into_bytes(),
    )
}

fn bucket_json(b: &FBucket) -> Value {
    json!({
        "id": b.id,
        "orgID": b.org_id,
        "type": b.kind,
        "name": b.name,
        "description": b.description,
        "retentionRules": b.retention_rules,
        "createdAt": "2024-01-01T00:00:00Z",
        "updatedAt": "2024-01-01T00:00:00Z",
        "links": {"self": format!("/api/v2/buckets/{}", b.id)},
        "labels": [],
    })
}

/// The organization id a request names (`orgID=` or `org=` by name or id).
fn req_org(req: &Request, st: &State) -> Option<String> {
    if let Some(id) = req.query.get("orgID") {
        return st.orgs.iter().find(|o| &o.0 == id).map(|o| o.0.clone());
    }
    let o = req.query.get("org")?;
    st.orgs
        .iter()
        .find(|x| &x.1 == o || &x.0 == o)
        .map(|x| x.0.clone())
}

fn handle(req: &Request, st: &Mutex<State>) -> (u16, &'static str, Vec<u8>) {
    let mut st = st.lock().unwrap();
    let want = format!("Token {}", st.token);
    if req.headers.get("authorization") != Some(&want) {
        return err(401, "unauthorized", "unauthorized access");
    }
    let path = req.path.as_str();
    match (req.method.as_str(), path) {
        ("GET", "/api/v2/orgs") => {
            let name = req.query.get("org").cloned().unwrap_or_default();
            let found: Vec<Value> = st
                .orgs
                .iter()
                .filter(|o| name.is_empty() || o.1 == name)
                .map(|o| json!({"id": o.0, "name": o.1}))
                .collect();
            if found.is_empty() {
                return err(
                    404,
                    "not found",
                    &format!("organization name \"{name}\" not found"),
                );
            }
            ok_json(200, json!({"orgs": found}))
        }
        ("GET", "/api/v2/buckets") => {
            let org = req_org(req, &st);
            let name = req.query.get("name");
            let mut list: Vec<&FBucket> = st
                .buckets
                .values()
                .filter(|b| org.as_ref().is_none_or(|o| &b.org_id == o))
                .filter(|b| name.is_none_or(|n| &b.name == n))
                .collect();
            list.sort_by(|a, b| a.name.cmp(&b.name));
            if let Some(n) = name {
                if list.is_empty() {
                    return err(404, "not found", &format!("bucket \"{n}\" not found"));
                }
            }
            let offset: usize = req.query.get("offset").map_or(0, |v| v.parse().unwrap());
            let limit: usize = req.query.get("limit").map_or(20, |v| v.parse().unwrap());
            let page: Vec<Value> = list
                .into_iter()
                .skip(offset)
                .take(limit)
                .map(bucket_json)
                .collect();
            ok_json(200, json!({"buckets": page, "links": {}}))
        }
        ("POST", "/api/v2/buckets") => {
            let v: Value = serde_json::from_slice(&req.body).unwrap();
            let org_id = v["orgID"].as_str().unwrap_or_default().to_string();
            let name = v["name"].as_str().unwrap_or_default().to_string();
            if !st.orgs.iter().any(|o| o.0 == org_id) {
                return err(404, "not found", "organization not found");
            }
            if st
                .buckets
                .values()
                .any(|b| b.name == name && b.org_id == org_id)
            {
                return err(
                    422,
                    "conflict",
                    &format!("bucket with name {name} already exists"),
                );
            }
            st.next_id += 1;
            let id = format!("{:016x}", 0xb000 + st.next_id);
            let b = FBucket {
                id: id.clone(),
                org_id,
                name,
                kind: "user".into(),
                description: v["description"].as_str().map(str::to_string),
                retention_rules: v.get("retentionRules").cloned().unwrap_or(json!([])),
                points: Points::new(),
            };
            let out = bucket_json(&b);
            st.buckets.insert(id, b);
            ok_json(201, out)
        }
        ("POST", "/api/v2/write") => write(req, &mut st),
        ("POST", "/api/v2/delete") => {
            let org = req_org(req, &st);
            let id = req.query.get("bucketID").cloned().or_else(|| {
                let n = req.query.get("bucket")?;
                st.buckets
                    .values()
                    .find(|b| &b.name == n)
                    .map(|b| b.id.clone())
            });
            let Some(b) = id.and_then(|id| st.buckets.get_mut(&id)) else {
                return err(404, "not found", "bucket not found");
            };
            if org.as_ref() != Some(&b.org_id) {
                return err(404, "not found", "organization not found");
            }
            let v: Value = serde_json::from_slice(&req.body).unwrap();
            assert!(
                v.get("predicate").is_none_or(|p| p == ""),
                "the fake deletes whole ranges only"
            );
            let start = rfc3339(v["start"].as_str().unwrap());
            let stop = rfc3339(v["stop"].as_str().unwrap());
            for times in b.points.values_mut() {
                times.retain(|t, _| *t < start || *t > stop);
            }
            b.points.retain(|_, t| !t.is_empty());
            (204, "text/plain", Vec::new())
        }
        ("POST", "/api/v2/query") => query(req, &mut st),
        (m, p) if p.starts_with("/api/v2/buckets/") => {
            let id = &p["/api/v2/buckets/".len()..];
            if !st.buckets.contains_key(id) {
                return err(404, "not found", "bucket not found");
            }
            match m {
                "DELETE" => {
                    st.buckets.remove(id);
                    (204, "text/plain", Vec::new())
                }
                "PATCH" => {
                    let v: Value = serde_json::from_slice(&req.body).unwrap();
                    let b = st.buckets.get_mut(id).unwrap();
                    if let Some(d) = v.get("description").and_then(Value::as_str) {
                        b.description = Some(d.into());
                    }
                    // An empty list means "no change" (the API's rule).
                    if let Some(r) = v.get("retentionRules").and_then(Value::as_array) {
                        if !r.is_empty() {
                            let forever = r.iter().all(|x| x["everySeconds"] == 0);
                            b.retention_rules = if forever { json!([]) } else { json!(r) };
                        }
                    }
                    ok_json(200, bucket_json(b))
                }
                _ => err(405, "method not allowed", "method not allowed"),
            }
        }
        _ => err(404, "not found", &format!("path {path} not found")),
    }
}

fn write(req: &Request, st: &mut State) -> (u16, &'static str, Vec<u8>) {
    st.write_requests += 1;
    if st.fail_writes > 0 {
        st.fail_writes -= 1;
        return err(503, "unavailable", "the fake is unavailable for a moment");
    }
    assert_eq!(req.query.get("precision").map(String::as_str), Some("ns"));
    let Some(org) = req_org(req, st) else {
        return err(404, "not found", "organization not found");
    };
    let name = req.query.get("bucket").cloned().unwrap_or_default();
    let body = if req.headers.get("content-encoding").map(String::as_str) == Some("gzip") {
        let mut out = String::new();
        flate2::read::GzDecoder::new(&req.body[..])
            .read_to_string(&mut out)
            .unwrap();
        out
    } else {
        String::from_utf8(req.body.clone()).unwrap()
    };
    let points = match parse_lp(&body) {
        Ok(p) => p,
        Err(e) => return err(400, "invalid", &format!("unable to parse points: {e}")),
    };
    st.max_lines_per_write = st.max_lines_per_write.max(points.len());
    let drop_every = st.drop_every;
    let mut written = st.written;
    let Some(b) = st
        .buckets
        .values_mut()
        .find(|b| b.name == name && b.org_id == org)
    else {
        return err(404, "not found", &format!("bucket \"{name}\" not found"));
    };
    for (k, t, fields) in points {
        written += 1;
        if drop_every.is_some_and(|n| written % n == 0) {
            continue;
        }
        b.points
            .entry(k)
            .or_default()
            .entry(t)
            .or_default()
            .extend(fields);
    }
    st.written = written;
    (204, "text/plain", Vec::new())
}

/// Parses `"…"` at the start of `s` (a Flux string literal); returns the
/// value and the rest.
fn flux_string(s: &str) -> Option<(String, &str)> {
    let s = s.strip_prefix('"')?;
    let mut out = String::new();
    let mut it = s.char_indices();
    while let Some((i, c)) = it.next() {
        match c {
            '"' => return Some((out, &s[i + 1..])),
            '\\' => {
                let (_, e) = it.next()?;
                out.push(match e {
                    'n' => '\n',
                    'r' => '\r',
                    't' => '\t',
                    e => e,
                });
            }
            c => out.push(c),
        }
    }
    None
}

enum Shape {
    Pivot,
    EmptyStrings(String, String),
    Limit1,
}

/// Understands the query shapes the driver sends.
fn parse_flux(q: &str) -> Option<(String, i64, i64, Shape)> {
    let rest = q.strip_prefix("from(bucket: ")?;
    let (bucket, rest) = flux_string(rest)?;
    let rest = rest.strip_prefix(") |> range(start: time(v: ")?;
    let (start, rest) = rest.split_once("), stop: time(v: ")?;
    let (stop, rest) = rest.split_once("))")?;
    let (start, stop) = (start.parse().ok()?, stop.parse().ok()?);
    let shape = if rest
        == " |> pivot(rowKey: [\"_time\"], columnKey: [\"_field\"], valueColumn: \"_value\")"
    {
        Shape::Pivot
    } else if rest == " |> limit(n: 1)" {
        Shape::Limit1
    } else {
        let r = rest.strip_prefix(" |> filter(fn: (r) => r._measurement == ")?;
        let (m, r) = flux_string(r)?;
        let r = r.strip_prefix(" and r._field == ")?;
        let (f, r) = flux_string(r)?;
        if r != ") |> filter(fn: (r) => string(v: r._value) == \"\")" {
            return None;
        }
        Shape::EmptyStrings(m, f)
    };
    Some((bucket, start, stop, shape))
}

fn csv_cell(s: &str) -> String {
    if s.contains([',', '"', '\n', '\r']) || s.starts_with(' ') {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}

fn rfc3339(s: &str) -> i64 {
    chrono::DateTime::parse_from_rfc3339(s)
        .unwrap()
        .timestamp_nanos_opt()
        .unwrap()
}

fn time_str(ns: i64) -> String {
    chrono::DateTime::from_timestamp_nanos(ns).to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true)
}

/// Writes annotated CSV tables; a new annotation block when the columns
/// (names and types) change.
#[derive(Default)]
struct CsvOut {
    out: String,
    last: Option<(Vec<String>, Vec<String>, Vec<bool>)>,
    table: u64,
}

impl CsvOut {
    fn table(
        &mut self,
        names: Vec<String>,
        types: Vec<String>,
        groups: Vec<bool>,
        rows: Vec<Vec<String>>,
    ) {
        let schema = (names.clone(), types.clone(), groups.clone());
        if self.last.as_ref() != Some(&schema) {
            if self.last.is_some() {
                self.out.push_str("\r\n");
            }
            self.out
                .push_str(&format!("#datatype,string,long,{}\r\n", types.join(",")));
            let g: Vec<&str> = groups
                .iter()
                .map(|g| if *g { "true" } else { "false" })
                .collect();
            self.out
                .push_str(&format!("#group,false,false,{}\r\n", g.join(",")));
            self.out
                .push_str(&format!("#default,_result,{}\r\n", ",".repeat(names.len())));
            let n: Vec<String> = names.iter().map(|n| csv_cell(n)).collect();
            self.out
                .push_str(&format!(",result,table,{}\r\n", n.join(",")));
            self.last = Some(schema);
        }
        for r in rows {
            let cells: Vec<String> = r.iter().map(|c| csv_cell(c)).collect();
            self.out
                .push_str(&format!(",,{},{}\r\n", self.table, cells.join(",")));
        }
        self.table += 1;
    }
}

fn query(req: &Request, st: &mut State) -> (u16, &'static str, Vec<u8>) {
    let Some(org) = req_org(req, st) else {
        return err(404, "not found", "organization not found");
    };
    let v: Value = serde_json::from_slice(&req.body).unwrap();
    assert_eq!(v["type"], "flux");
    assert_eq!(
        v["dialect"]["annotations"],
        json!(["datatype", "group", "default"])
    );
    let q = v["query"].as_str().unwrap().to_string();
    st.queries.push(q.clone());
    let Some((bucket, start, stop, shape)) = parse_flux(&q) else {
        return err(
            400,
            "invalid",
            &format!("the fake does not understand: {q}"),
        );
    };
    let Some(b) = st
        .buckets
        .values()
        .find(|b| b.name == bucket && b.org_id == org)
    else {
        return err(
            404,
            "not found",
            &format!("failed to initialize execute state: could not find bucket \"{bucket}\""),
        );
    };
    let (s, e) = (time_str(start), time_str(stop));
    let mut out = CsvOut::default();
    for ((m, tags), times) in &b.points {
        let times: Vec<(&i64, &BTreeMap<String, FVal>)> = times.range(start..stop).collect();
        if times.is_empty() {
            continue;
        }
        let tag_names: Vec<String> = tags.iter().map(|t| t.0.clone()).collect();
        let tag_vals: Vec<String> = tags.iter().map(|t| t.1.clone()).collect();
        match &shape {
            Shape::Pivot => {
                let mut fields: BTreeMap<&String, &'static str> = BTreeMap::new();
                for (_, f) in &times {
                    for (k, v) in *f {
                        fields.insert(k, v.datatype());
                    }
                }
                let mut names = vec!["_start", "_stop", "_time", "_measurement"]
                    .into_iter()
                    .map(String::from)
                    .collect::<Vec<_>>();
                names.extend(tag_names.clone());
                names.extend(fields.keys().map(|k| k.to_string()));
                let mut types: Vec<String> = ["dateTime:RFC3339"; 3]
                    .iter()
                    .map(|s| s.to_string())
                    .collect();
                types.push("string".into());
                types.extend(tag_names.iter().map(|_| "string".to_string()));
                types.extend(fields.values().map(|t| t.to_string()));
                let mut groups = vec![true, true, false, true];
                groups.extend(tag_names.iter().map(|_| true));
                groups.extend(fields.keys().map(|_| false));
                let rows = times
                    .iter()
                    .map(|(t, f)| {
                        let mut r = vec![s.clone(), e.clone(), time_str(**t), m.clone()];
                        r.extend(tag_vals.clone());
                        r.extend(
                            fields
                                .keys()
                                .map(|k| f.get(*k).map(FVal::csv).unwrap_or_default()),
                        );
                        r
                    })
                    .collect();
                out.table(names, types, groups, rows);
            }
            Shape::Limit1 | Shape::EmptyStrings(..) => {
                let mut by_field: BTreeMap<&String, Vec<(i64, &FVal)>> = BTreeMap::new();
                for (t, f) in &times {
                    for (k, v) in *f {
                        by_field.entry(k).or_default().push((**t, v));
                    }
                }
                for (field, mut vals) in by_field {
                    if let Shape::EmptyStrings(fm, ff) = &shape {
                        if fm != m || ff != field {
                            continue;
                        }
                        vals.retain(|(_, v)| **v == FVal::S(String::new()));
                    } else {
                        vals.truncate(1);
                    }
                    if vals.is_empty() {
                        continue;
                    }
                    let mut names: Vec<String> = [
                        "_start",
                        "_stop",
                        "_time",
                        "_value",
                        "_field",
                        "_measurement",
                    ]
                    .iter()
                    .map(|s| s.to_string())
                    .collect();
                    names.extend(tag_names.clone());
                    let mut types: Vec<String> = ["dateTime:RFC3339"; 3]
                        .iter()
                        .map(|s| s.to_string())
                        .collect();
                    types.push(vals[0].1.datatype().into());
                    types.push("string".into());
                    types.push("string".into());
                    types.extend(tag_names.iter().map(|_| "string".to_string()));
                    let mut groups = vec![true, true, false, false, true, true];
                    groups.extend(tag_names.iter().map(|_| true));
                    let rows = vals
                        .iter()
                        .map(|(t, v)| {
                            let mut r = vec![
                                s.clone(),
                                e.clone(),
                                time_str(*t),
                                v.csv(),
                                field.clone(),
                                m.clone(),
                            ];
                            r.extend(tag_vals.clone());
                            r
                        })
                        .collect();
                    out.table(names, types, groups, rows);
                }
            }
        }
    }
    if out.out.is_empty() {
        out.out.push_str("\r\n");
    }
    (200, "text/csv; charset=utf-8", out.out.into_bytes())
}

/// Reads an escaped name up to one of `stops` (unescaped); returns it and
/// the position of the stop.
fn read_name(s: &[u8], mut i: usize, stops: &[u8], escapes: &[u8]) -> (String, usize) {
    let mut out = Vec::new();
    while i < s.len() && !stops.contains(&s[i]) {
        if s[i] == b'\\' && i + 1 < s.len() && escapes.contains(&s[i + 1]) {
            out.push(s[i + 1]);
            i += 2;
        } else {
            out.push(s[i]);
            i += 1;
        }
    }
    (String::from_utf8(out).unwrap(), i)
}

/// Parses line protocol (nanosecond timestamps) independently of the driver.
/// One parsed line: its series, timestamp and fields.
pub type Line = (SeriesKey, i64, Vec<(String, FVal)>);

/// Parses line protocol into lines (measurement, tags, fields, time).
pub fn parse_lp(text: &str) -> Result<Vec<Line>, String> {
    let s = text.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < s.len() {
        // Blank lines and comments.
        if s[i] == b'\n' || s[i] == b'\r' {
            i += 1;
            continue;
        }
        if s[i] == b'#' {
            while i < s.len() && s[i] != b'\n' {
                i += 1;
            }
            continue;
        }
        let (m, j) = read_name(s, i, b", \n", b", ");
        i = j;
        let mut tags = Vec::new();
        while i < s.len() && s[i] == b',' {
            let (k, j) = read_name(s, i + 1, b"=", b",= ");
            let (v, j) = read_name(s, j + 1, b", \n", b",= ");
            tags.push((k, v));
            i = j;
        }
        if i >= s.len() || s[i] != b' ' {
            return Err(format!("no fields for `{m}`"));
        }
        i += 1;
        let mut fields = Vec::new();
        loop {
            let (k, j) = read_name(s, i, b"=", b",= ");
            i = j + 1;
            if i >= s.len() {
                return Err(format!("field `{k}` without a value"));
            }
            let v = if s[i] == b'"' {
                i += 1;
                let mut v = Vec::new();
                while i < s.len() && s[i] != b'"' {
                    if s[i] == b'\\' && i + 1 < s.len() && (s[i + 1] == b'"' || s[i + 1] == b'\\') {
                        v.push(s[i + 1]);
                        i += 2;
                    } else {
                        v.push(s[i]);
                        i += 1;
                    }
                }
                i += 1;
                FVal::S(String::from_utf8(v).unwrap())
            } else {
                let st = i;
                while i < s.len() && !b", \n".contains(&s[i]) {
                    i += 1;
                }
                let raw = std::str::from_utf8(&s[st..i]).unwrap();
                if let Some(n) = raw.strip_suffix('i') {
                    FVal::I(n.parse().map_err(|_| format!("bad integer {raw}"))?)
                } else if let Some(n) = raw.strip_suffix('u') {
                    FVal::U(n.parse().map_err(|_| format!("bad unsigned {raw}"))?)
                } else {
                    match raw {
                        "t" | "T" | "true" | "True" | "TRUE" => FVal::B(true),
                        "f" | "F" | "false" | "False" | "FALSE" => FVal::B(false),
                        _ => FVal::F(raw.parse().map_err(|_| format!("bad float {raw}"))?),
                    }
                }
            };
            fields.push((k, v));
            if i < s.len() && s[i] == b',' {
                i += 1;
                continue;
            }
            break;
        }
        let t = if i < s.len() && s[i] == b' ' {
            let st = i + 1;
            i = st;
            while i < s.len() && s[i] != b'\n' && s[i] != b'\r' {
                i += 1;
            }
            std::str::from_utf8(&s[st..i])
                .unwrap()
                .parse::<i64>()
                .map_err(|e| format!("bad timestamp: {e}"))?
        } else {
            return Err("a point without a timestamp".into());
        };
        tags.sort();
        out.push(((m, tags), t, fields));
    }
    Ok(out)
}
