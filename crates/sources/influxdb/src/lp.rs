//! Line protocol: escaping, turning `SELECT *` rows into lines, and finding
//! where a line ends in a stream (a string field may hold a newline).

use serde_json::Value;

/// The type of a field value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A float.
    Float,
    /// A signed integer (`i` suffix).
    Integer,
    /// An unsigned integer (`u` suffix).
    Unsigned,
    /// A string (quoted).
    String,
    /// A boolean.
    Boolean,
}

impl Kind {
    /// The kind of an InfluxQL `SHOW FIELD KEYS` type name (1.x).
    pub fn from_influxql_type(t: &str) -> Option<Kind> {
        match t {
            "float" => Some(Kind::Float),
            "integer" => Some(Kind::Integer),
            "unsigned" => Some(Kind::Unsigned),
            "string" => Some(Kind::String),
            "boolean" => Some(Kind::Boolean),
            _ => None,
        }
    }

    /// The kind of an annotated CSV `#datatype` (2.x).
    pub fn from_flux_type(t: &str) -> Option<Kind> {
        match t {
            "double" => Some(Kind::Float),
            "long" => Some(Kind::Integer),
            "unsignedLong" => Some(Kind::Unsigned),
            "string" => Some(Kind::String),
            "boolean" => Some(Kind::Boolean),
            _ => None,
        }
    }
}

/// How a column of `SELECT *` is written back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Column {
    /// The timestamp (epoch nanoseconds).
    Time,
    /// A tag.
    Tag,
    /// A field of this kind.
    Field(Kind),
}

fn escape_into(out: &mut Vec<u8>, s: &str, special: &[u8]) {
    for &b in s.as_bytes() {
        if special.contains(&b) {
            out.push(b'\\');
        }
        out.push(b);
    }
}

/// Appends a measurement name (commas and spaces escaped).
pub fn push_measurement(out: &mut Vec<u8>, s: &str) {
    escape_into(out, s, b", ");
}

/// Appends a tag key, tag value or field key (commas, equals signs and spaces
/// escaped).
pub fn push_key(out: &mut Vec<u8>, s: &str) {
    escape_into(out, s, b",= ");
}

/// Appends a quoted string field value (double quotes and backslashes escaped).
pub fn push_string(out: &mut Vec<u8>, s: &str) {
    out.push(b'"');
    escape_into(out, s, b"\"\\");
    out.push(b'"');
}

/// Appends a float with every digit (Rust's shortest round-trip form).
fn push_float(out: &mut Vec<u8>, f: f64) {
    out.extend_from_slice(format!("{f:?}").as_bytes());
}

/// Appends a field value given as text (an annotated CSV cell) of `kind`,
/// checking it parses as that kind.
pub fn push_text_value(out: &mut Vec<u8>, kind: Kind, v: &str) -> Result<(), ValueError> {
    let bad = |expected: &'static str| ValueError::Kind {
        expected,
        got: v.to_string(),
    };
    match kind {
        Kind::Float => {
            let f: f64 = v.parse().map_err(|_| bad("a float"))?;
            if !f.is_finite() {
                return Err(bad("a finite float"));
            }
            push_float(out, f);
        }
        Kind::Integer => {
            let n: i64 = v.parse().map_err(|_| bad("an integer"))?;
            out.extend_from_slice(format!("{n}i").as_bytes());
        }
        Kind::Unsigned => {
            let n: u64 = v.parse().map_err(|_| bad("an unsigned integer"))?;
            out.extend_from_slice(format!("{n}u").as_bytes());
        }
        Kind::String => push_string(out, v),
        Kind::Boolean => match v {
            "true" => out.extend_from_slice(b"true"),
            "false" => out.extend_from_slice(b"false"),
            _ => return Err(bad("true or false")),
        },
    }
    Ok(())
}

/// Nanoseconds since the epoch of an RFC 3339 timestamp.
pub fn rfc3339_ns(s: &str) -> Result<i64, ValueError> {
    chrono::DateTime::parse_from_rfc3339(s)
        .ok()
        .and_then(|t| t.timestamp_nanos_opt())
        .ok_or_else(|| ValueError::Timestamp(s.to_string()))
}

/// A value given as text that is not of its column's kind.
#[derive(Debug, thiserror::Error)]
pub enum ValueError {
    /// The text does not parse as the kind.
    #[error("expected {expected}, got `{got}`")]
    Kind {
        /// The kind, in words.
        expected: &'static str,
        /// The text.
        got: String,
    },
    /// The text is no timestamp InfluxDB can store.
    #[error("`{0}` is not an RFC 3339 timestamp InfluxDB can store")]
    Timestamp(String),
    /// Which field the value is of.
    #[error("field `{field}`: {error}")]
    Field {
        /// The field.
        field: String,
        /// What is wrong with its value.
        error: Box<ValueError>,
    },
}

/// The RFC 3339 form (UTC, nanoseconds) of a timestamp.
pub fn ns_rfc3339(ns: i64) -> String {
    chrono::DateTime::from_timestamp_nanos(ns).to_rfc3339_opts(chrono::SecondsFormat::Nanos, true)
}

/// A row could not be turned into a line.
#[derive(Debug, thiserror::Error)]
#[error("column `{column}`: {message}")]
pub struct RowError {
    /// The column.
    pub column: String,
    /// What was wrong.
    pub message: String,
}

/// Appends one point as a line. `head` is the escaped measurement name;
/// `columns` and `kinds` describe the row. Returns the number of field values
/// written, or 0 (and writes nothing) for a row without fields.
pub fn push_row(
    out: &mut Vec<u8>,
    head: &[u8],
    columns: &[String],
    kinds: &[Column],
    row: &[Value],
) -> Result<u64, RowError> {
    let start = out.len();
    out.extend_from_slice(head);
    let mut time = None;
    for ((name, kind), v) in columns.iter().zip(kinds).zip(row) {
        match (kind, v) {
            (Column::Time, v) => time = v.as_i64(),
            (Column::Tag, Value::String(s)) if !s.is_empty() => {
                out.push(b',');
                push_key(out, name);
                out.push(b'=');
                push_key(out, s);
            }
            _ => {}
        }
    }
    let mut fields = 0u64;
    for ((name, kind), v) in columns.iter().zip(kinds).zip(row) {
        if v.is_null() || matches!(kind, Column::Time | Column::Tag) {
            continue;
        }
        out.push(if fields == 0 { b' ' } else { b',' });
        push_key(out, name);
        out.push(b'=');
        let bad = |what: &str| RowError {
            column: name.clone(),
            message: format!("expected {what}, got {v}"),
        };
        let Column::Field(kind) = kind else {
            unreachable!("skipped above")
        };
        match kind {
            Kind::Float => {
                let f = v.as_f64().ok_or_else(|| bad("a number"))?;
                push_float(out, f);
            }
            Kind::Integer => {
                let n = v.as_i64().ok_or_else(|| bad("an integer"))?;
                out.extend_from_slice(format!("{n}i").as_bytes());
            }
            Kind::Unsigned => {
                let n = v.as_u64().ok_or_else(|| bad("an unsigned integer"))?;
                out.extend_from_slice(format!("{n}u").as_bytes());
            }
            Kind::String => push_string(out, v.as_str().ok_or_else(|| bad("a string"))?),
            Kind::Boolean => {
                let b = v.as_bool().ok_or_else(|| bad("a boolean"))?;
                out.extend_from_slice(if b { b"true" } else { b"false" });
            }
        }
        fields += 1;
    }
    if fields == 0 {
        out.truncate(start);
        return Ok(0);
    }
    let t = time.ok_or_else(|| RowError {
        column: "time".into(),
        message: "missing or not an integer (epoch=ns)".into(),
    })?;
    out.extend_from_slice(format!(" {t}\n").as_bytes());
    Ok(fields)
}

/// Finds line ends in line protocol arriving in pieces. A newline inside a
/// quoted string field value does not end the line.
#[derive(Debug, Default)]
pub struct LineScanner {
    /// Past the measurement and tags (an unescaped space was seen).
    in_fields: bool,
    /// Inside a quoted string field value.
    in_string: bool,
    /// The previous byte was an unescaped backslash.
    escaped: bool,
}

impl LineScanner {
    /// Scans `buf` from `from` and returns the index just past the next
    /// complete line's newline, if there is one. State carries over between
    /// calls, so `from` must be where the previous call stopped.
    pub fn next_end(&mut self, buf: &[u8], from: usize) -> Option<usize> {
        for (i, &b) in buf.iter().enumerate().skip(from) {
            if self.escaped {
                self.escaped = false;
                continue;
            }
            match b {
                b'\\' => self.escaped = true,
                b'"' if self.in_fields => self.in_string = !self.in_string,
                b' ' if !self.in_string => self.in_fields = true,
                b'\n' if !self.in_string => {
                    *self = LineScanner::default();
                    return Some(i + 1);
                }
                _ => {}
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn rows_become_lines() {
        let cols: Vec<String> = ["time", "b", "f", "host name", "i", "s"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let kinds = [
            Column::Time,
            Column::Field(Kind::Boolean),
            Column::Field(Kind::Float),
            Column::Tag,
            Column::Field(Kind::Integer),
            Column::Field(Kind::String),
        ];
        let mut head = Vec::new();
        push_measurement(&mut head, "cpu load,x");
        let mut out = Vec::new();
        let row = [
            json!(1_600_000_000_123_456_789i64),
            json!(true),
            json!(2),
            json!("a=b, c"),
            json!(-9_223_372_036_854_775_807i64),
            json!("say \"hi\" \\ bye\nnext"),
        ];
        assert_eq!(push_row(&mut out, &head, &cols, &kinds, &row).unwrap(), 4);
        let line = String::from_utf8(out.clone()).unwrap();
        assert_eq!(
            line,
            "cpu\\ load\\,x,host\\ name=a\\=b\\,\\ c b=true,f=2.0,i=-9223372036854775807i,\
             s=\"say \\\"hi\\\" \\\\ bye\nnext\" 1600000000123456789\n"
        );
        // The scanner does not stop at the newline inside the string.
        let mut sc = LineScanner::default();
        assert_eq!(sc.next_end(&out, 0), Some(out.len()));
        // Split in two pieces.
        let mut sc = LineScanner::default();
        assert_eq!(sc.next_end(&out[..20], 0), None);
        assert_eq!(sc.next_end(&out, 20), Some(out.len()));
        // A row with only nulls writes nothing.
        let mut out = Vec::new();
        let row = [
            json!(1),
            json!(null),
            json!(null),
            json!("x"),
            json!(null),
            json!(null),
        ];
        assert_eq!(push_row(&mut out, &head, &cols, &kinds, &row).unwrap(), 0);
        assert!(out.is_empty());
        // Floats keep every digit.
        let mut out = Vec::new();
        let row = [
            json!(5),
            json!(null),
            json!(0.1 + 0.2),
            json!(null),
            json!(null),
            json!(null),
        ];
        push_row(&mut out, b"m", &cols, &kinds, &row).unwrap();
        assert_eq!(out, b"m f=0.30000000000000004 5\n");
        // JSON floats are parsed exactly (serde_json's `float_roundtrip`).
        let v: Value = serde_json::from_str("9.428571428571427").unwrap();
        let mut out = Vec::new();
        let row = [
            json!(5),
            json!(null),
            v,
            json!(null),
            json!(null),
            json!(null),
        ];
        push_row(&mut out, b"m", &cols, &kinds, &row).unwrap();
        assert_eq!(out, b"m f=9.428571428571427 5\n");
    }

    #[test]
    fn text_values_and_times() {
        let mut out = Vec::new();
        for (k, v) in [
            (Kind::Float, "0.000001"),
            (Kind::Float, "-150000000000000000000"),
            (Kind::Integer, "-9223372036854775808"),
            (Kind::Unsigned, "18446744073709551615"),
            (Kind::Boolean, "false"),
            (Kind::String, "a\"b\\"),
        ] {
            push_text_value(&mut out, k, v).unwrap();
            out.push(b' ');
        }
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "1e-6 -1.5e20 -9223372036854775808i 18446744073709551615u false \"a\\\"b\\\\\" "
        );
        let mut out = Vec::new();
        assert!(push_text_value(&mut out, Kind::Integer, "1.5").is_err());
        assert!(push_text_value(&mut out, Kind::Boolean, "yes").is_err());
        assert!(push_text_value(&mut out, Kind::Float, "NaN").is_err());
        assert_eq!(
            rfc3339_ns("2020-09-13T12:26:40.000000001Z").unwrap(),
            1_600_000_000_000_000_001
        );
        assert_eq!(
            rfc3339_ns("1677-09-21T00:12:43.145224194Z").unwrap(),
            i64::MIN + 2
        );
        assert_eq!(ns_rfc3339(i64::MIN + 2), "1677-09-21T00:12:43.145224194Z");
        assert_eq!(rfc3339_ns(&ns_rfc3339(i64::MAX - 1)).unwrap(), i64::MAX - 1);
        assert!(rfc3339_ns("yesterday").is_err());
    }
}
