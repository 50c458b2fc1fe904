//! Line protocol: escaping, turning `SELECT *` rows into lines, and finding
//! where a line ends in a stream (a string field may hold a newline).

use serde_json::Value;

/// How a column of `SELECT *` is written back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Column {
    /// The timestamp (epoch nanoseconds).
    Time,
    /// A tag.
    Tag,
    /// A float field.
    Float,
    /// An integer field (`i` suffix).
    Integer,
    /// A string field (quoted).
    String,
    /// A boolean field.
    Boolean,
}

impl Column {
    /// The column kind of a `SHOW FIELD KEYS` type name.
    pub fn from_field_type(t: &str) -> Option<Column> {
        match t {
            "float" => Some(Column::Float),
            "integer" => Some(Column::Integer),
            "string" => Some(Column::String),
            "boolean" => Some(Column::Boolean),
            _ => None,
        }
    }
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
        match kind {
            Column::Float => {
                let f = v.as_f64().ok_or_else(|| bad("a number"))?;
                out.extend_from_slice(format!("{f:?}").as_bytes());
            }
            Column::Integer => {
                let n = v.as_i64().ok_or_else(|| bad("an integer"))?;
                out.extend_from_slice(format!("{n}i").as_bytes());
            }
            Column::String => push_string(out, v.as_str().ok_or_else(|| bad("a string"))?),
            Column::Boolean => {
                let b = v.as_bool().ok_or_else(|| bad("a boolean"))?;
                out.extend_from_slice(if b { b"true" } else { b"false" });
            }
            Column::Time | Column::Tag => unreachable!("skipped above"),
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
            Column::Boolean,
            Column::Float,
            Column::Tag,
            Column::Integer,
            Column::String,
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
}
