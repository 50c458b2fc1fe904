//! Reading a mariadb-dump/mysqldump stream as it passes, with bounded
//! memory: the rows of every table counted from its `INSERT` statements
//! (so the counts describe exactly the data dumped, in the dump's own
//! consistent snapshot), the tables and views it defines, whether it ended
//! (`-- Dump completed`), and, on restore, a filter that keeps only some
//! tables' sections (definition, rows, triggers) or drops the rows.
//!
//! The dump is read line by line from the first bytes of each line (at most
//! [`PREFIX`] are held); an `INSERT` statement is followed to its closing
//! `;` through quoted strings and escapes, across lines. Bodies of
//! triggers, routines and events (between `DELIMITER ;;` and `DELIMITER ;`)
//! are never taken for statements.

use std::collections::{BTreeMap, BTreeSet};

/// How many bytes of a line decide what it is.
const PREFIX: usize = 1024;

/// What a restore keeps of a dump.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Keep {
    /// Only these tables' sections (with the header and trailer that set
    /// and reset the session); `None` keeps every section.
    pub tables: Option<BTreeSet<String>>,
    /// Drop the rows (`INSERT` statements): definitions only.
    pub schema_only: bool,
}

impl Keep {
    /// Everything, unchanged.
    pub fn all() -> Keep {
        Keep::default()
    }
}

/// The part of a dump a line belongs to.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Section {
    /// Session settings before the first object.
    Header,
    /// A table's definition, rows and triggers.
    Table(String),
    /// A view's placeholder or definition.
    View,
    /// Routines and events.
    Other,
    /// Session settings restored at the end.
    Trailer,
}

/// Follows one `INSERT … VALUES (…),(…);` counting its row tuples.
#[derive(Debug, Default)]
struct Tuples {
    table: String,
    depth: u32,
    quote: Option<u8>,
    escaped: bool,
    count: u64,
}

impl Tuples {
    /// Consumes `input` up to and including the statement's `;`: how many
    /// bytes it used, and whether the statement ended.
    fn feed(&mut self, input: &[u8]) -> (usize, bool) {
        let mut i = 0;
        while i < input.len() {
            if let Some(q) = self.quote {
                if self.escaped {
                    self.escaped = false;
                    i += 1;
                    continue;
                }
                // Most of a dump is inside strings: skip to the next quote
                // or backslash at once.
                match memchr::memchr2(q, b'\\', &input[i..]) {
                    None => return (input.len(), false),
                    Some(j) => {
                        i += j;
                        if input[i] == b'\\' {
                            self.escaped = true;
                        } else {
                            self.quote = None;
                        }
                        i += 1;
                    }
                }
                continue;
            }
            match input[i] {
                b'\'' | b'"' => self.quote = Some(input[i]),
                b'(' => {
                    if self.depth == 0 {
                        self.count += 1;
                    }
                    self.depth += 1;
                }
                b')' => self.depth = self.depth.saturating_sub(1),
                b';' if self.depth == 0 => return (i + 1, true),
                _ => {}
            }
            i += 1;
        }
        (input.len(), false)
    }
}

/// A dump being read (and, on restore, filtered).
#[derive(Debug)]
pub struct DumpReader {
    keep: Keep,
    emit: bool,
    line: Vec<u8>,
    /// Whether the rest of the current line is kept, once decided.
    decided: Option<bool>,
    insert: Option<(Tuples, bool)>,
    delimited: bool,
    section: Section,
    /// Rows per table, counted from the dump (tables without rows at 0).
    pub rows: BTreeMap<String, u64>,
    /// The views the dump defines.
    pub views: BTreeSet<String>,
    /// Whether the dump's last line (`-- Dump completed`) was seen.
    pub completed: bool,
}

impl DumpReader {
    /// A reader that only counts (backup).
    pub fn scanner() -> DumpReader {
        DumpReader::new(Keep::all(), false)
    }

    /// A reader that writes what `keep` keeps (restore).
    pub fn filter(keep: Keep) -> DumpReader {
        DumpReader::new(keep, true)
    }

    fn new(keep: Keep, emit: bool) -> DumpReader {
        DumpReader {
            keep,
            emit,
            line: Vec::with_capacity(PREFIX),
            decided: None,
            insert: None,
            delimited: false,
            section: Section::Header,
            rows: BTreeMap::new(),
            views: BTreeSet::new(),
            completed: false,
        }
    }

    /// Reads the next bytes; what is kept is appended to `out`.
    pub fn feed(&mut self, mut input: &[u8], out: &mut Vec<u8>) {
        while !input.is_empty() {
            if let Some((t, keep)) = &mut self.insert {
                let (used, ended) = t.feed(input);
                if *keep && self.emit {
                    out.extend_from_slice(&input[..used]);
                }
                input = &input[used..];
                if ended {
                    let (t, keep) = self.insert.take().expect("in a statement");
                    *self.rows.entry(t.table).or_insert(0) += t.count;
                    self.decided = Some(keep);
                }
                continue;
            }
            if let Some(keep) = self.decided {
                let end = memchr::memchr(b'\n', input).map_or(input.len(), |i| i + 1);
                if keep && self.emit {
                    out.extend_from_slice(&input[..end]);
                }
                if input[end - 1] == b'\n' {
                    self.decided = None;
                }
                input = &input[end..];
                continue;
            }
            let room = PREFIX - self.line.len();
            let window = &input[..room.min(input.len())];
            let newline = memchr::memchr(b'\n', window);
            let take = newline.map_or(window.len(), |i| i + 1);
            self.line.extend_from_slice(&window[..take]);
            input = &input[take..];
            if newline.is_some() || self.line.len() == PREFIX {
                self.classify(out);
            }
        }
    }

    /// The end of the dump: a last line without a newline is decided.
    pub fn finish(&mut self, out: &mut Vec<u8>) {
        if !self.line.is_empty() {
            self.classify(out);
        }
    }

    fn selected(&self) -> bool {
        match (&self.section, &self.keep.tables) {
            (_, None) | (Section::Header | Section::Trailer, _) => true,
            (Section::Table(t), Some(set)) => set.contains(t),
            (Section::View | Section::Other, Some(_)) => false,
        }
    }

    /// Decides what the line held in `self.line` is, then replays it.
    fn classify(&mut self, out: &mut Vec<u8>) {
        let line = std::mem::take(&mut self.line);
        let mut insert_at = None;
        if self.delimited {
            if line.starts_with(b"DELIMITER ;") && !line.starts_with(b"DELIMITER ;;") {
                self.delimited = false;
            }
        } else if line.starts_with(b"DELIMITER ;;") {
            self.delimited = true;
        } else if let Some(t) = marker(&line, b"-- Table structure for table `")
            .or_else(|| marker(&line, b"-- Dumping data for table `"))
        {
            self.section = Section::Table(t);
        } else if let Some(v) = marker(&line, b"-- Temporary table structure for view `")
            .or_else(|| marker(&line, b"-- Temporary view structure for view `"))
            .or_else(|| marker(&line, b"-- Final view structure for view `"))
        {
            self.views.insert(v);
            self.section = Section::View;
        } else if line.starts_with(b"-- Dumping events for database")
            || line.starts_with(b"-- Dumping routines for database")
        {
            self.section = Section::Other;
        } else if line.starts_with(b"/*!40103 SET TIME_ZONE=@OLD_TIME_ZONE */;") {
            self.section = Section::Trailer;
        } else if line.starts_with(b"-- Dump completed") {
            self.completed = true;
        } else if let Some(t) = marker(&line, b"CREATE TABLE `") {
            self.rows.entry(t).or_insert(0);
        } else if let Some((t, at)) = name_after(&line, b"INSERT INTO `") {
            insert_at = Some((t, at));
        }
        let keep = self.selected();
        match insert_at {
            Some((table, at)) => {
                let keep = keep && !self.keep.schema_only;
                if keep && self.emit {
                    out.extend_from_slice(&line[..at]);
                }
                self.insert = Some((
                    Tuples {
                        table,
                        ..Default::default()
                    },
                    keep,
                ));
                self.feed(&line[at..], out);
            }
            None => {
                self.decided = Some(keep);
                self.feed(&line, out);
            }
        }
    }
}

/// The backquoted name that follows `prefix` at the start of `line`.
fn marker(line: &[u8], prefix: &[u8]) -> Option<String> {
    name_after(line, prefix).map(|(n, _)| n)
}

/// The backquoted name after `prefix` (which ends with the opening
/// backquote), and where it ends; a doubled backquote is one backquote.
fn name_after(line: &[u8], prefix: &[u8]) -> Option<(String, usize)> {
    let rest = line.strip_prefix(prefix)?;
    let mut name = Vec::new();
    let mut i = 0;
    while i < rest.len() {
        if rest[i] == b'`' {
            if rest.get(i + 1) == Some(&b'`') {
                name.push(b'`');
                i += 2;
                continue;
            }
            return Some((
                String::from_utf8_lossy(&name).into_owned(),
                prefix.len() + i + 1,
            ));
        }
        name.push(rest[i]);
        i += 1;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    const DUMP: &str = "/*M!999999\\- enable the sandbox mode */ \n\
-- MariaDB dump 10.19  Distrib 10.11.19-MariaDB\n\
/*!40101 SET NAMES utf8mb4 */;\n\
\n\
--\n\
-- Table structure for table `a`\n\
--\n\
\n\
DROP TABLE IF EXISTS `a`;\n\
CREATE TABLE `a` (\n  `id` int(11) NOT NULL,\n  PRIMARY KEY (`id`)\n) ENGINE=InnoDB;\n\
--\n\
-- Dumping data for table `a`\n\
--\n\
LOCK TABLES `a` WRITE;\n\
INSERT INTO `a` VALUES\n(1,'x\\'y (z);',0x00FF),\n(2,NULL,'\\\\');\n\
INSERT INTO `a` VALUES (3,'\\n)(;',NULL);\n\
UNLOCK TABLES;\n\
DELIMITER ;;\n\
/*!50003 CREATE*/ /*!50003 TRIGGER tr BEFORE INSERT ON a FOR EACH ROW\n\
INSERT INTO `b` VALUES (9) */;;\n\
DELIMITER ;\n\
\n\
--\n\
-- Table structure for table `b``q`\n\
--\n\
CREATE TABLE `b``q` (`id` int);\n\
\n\
--\n\
-- Table structure for table `c`\n\
--\n\
CREATE TABLE `c` (`id` int);\n\
INSERT INTO `c` VALUES (1),(2);\n\
\n\
--\n\
-- Temporary table structure for view `v`\n\
--\n\
/*!50001 CREATE VIEW `v` AS SELECT 1 AS `id` */;\n\
--\n\
-- Dumping routines for database 'shop'\n\
--\n\
DELIMITER ;;\n\
CREATE PROCEDURE p() BEGIN\nINSERT INTO `a` VALUES (7);\nEND ;;\n\
DELIMITER ;\n\
--\n\
-- Final view structure for view `v`\n\
--\n\
/*!50001 VIEW `v` AS select `a`.`id` AS `id` from `a` */;\n\
/*!40103 SET TIME_ZONE=@OLD_TIME_ZONE */;\n\
/*!40101 SET SQL_MODE=@OLD_SQL_MODE */;\n\
\n\
-- Dump completed\n";

    fn run(keep: Option<Keep>, piece: usize) -> (DumpReader, String) {
        let mut r = match keep {
            Some(k) => DumpReader::filter(k),
            None => DumpReader::scanner(),
        };
        let mut out = Vec::new();
        for c in DUMP.as_bytes().chunks(piece) {
            r.feed(c, &mut out);
        }
        r.finish(&mut out);
        (r, String::from_utf8(out).unwrap())
    }

    #[test]
    fn rows_are_counted_per_table_whatever_the_chunking() {
        for piece in [1, 2, 3, 7, 64, 4096] {
            let (r, out) = run(None, piece);
            assert!(out.is_empty());
            let want: BTreeMap<String, u64> =
                [("a".into(), 3), ("b`q".into(), 0), ("c".into(), 2)].into();
            assert_eq!(r.rows, want, "piece {piece}");
            assert_eq!(r.views, ["v".to_string()].into());
            assert!(r.completed);
        }
    }

    #[test]
    fn an_unfiltered_restore_passes_every_byte() {
        for piece in [1, 5, 4096] {
            assert_eq!(run(Some(Keep::all()), piece).1, DUMP);
        }
    }

    #[test]
    fn one_table_keeps_its_section_with_the_header_and_trailer() {
        let keep = Keep {
            tables: Some(["a".to_string()].into()),
            schema_only: false,
        };
        for piece in [1, 3, 4096] {
            let (_, out) = run(Some(keep.clone()), piece);
            assert!(out.starts_with("/*M!999999"), "{out}");
            assert!(out.contains("CREATE TABLE `a`") && out.contains("(3,'\\n)(;',NULL);"));
            assert!(
                out.contains("TRIGGER tr"),
                "the table's triggers come with it"
            );
            assert!(!out.contains("CREATE TABLE `c`") && !out.contains("CREATE TABLE `b"));
            assert!(!out.contains("VIEW") && !out.contains("PROCEDURE"));
            assert!(
                out.contains("SET TIME_ZONE=@OLD_TIME_ZONE")
                    && out.ends_with("-- Dump completed\n")
            );
        }
    }

    #[test]
    fn schema_only_drops_rows_and_nothing_else() {
        let keep = Keep {
            tables: None,
            schema_only: true,
        };
        let (_, out) = run(Some(keep), 2);
        assert!(!out.contains("INSERT INTO `a` VALUES\n") && !out.contains("(3,"));
        assert!(!out.contains("INSERT INTO `c`"));
        assert!(
            out.contains("INSERT INTO `b` VALUES (9)"),
            "a trigger body is kept whole"
        );
        assert!(
            out.contains("INSERT INTO `a` VALUES (7)"),
            "a procedure body is kept whole"
        );
        assert!(out.contains("CREATE TABLE `c`") && out.contains("VIEW `v`"));
    }

    #[test]
    fn a_dump_cut_short_is_not_completed() {
        let mut r = DumpReader::scanner();
        r.feed(&DUMP.as_bytes()[..DUMP.len() / 2], &mut Vec::new());
        r.finish(&mut Vec::new());
        assert!(!r.completed);
    }

    /// Random values (quotes, escapes, parentheses, semicolons, newlines),
    /// escaped as mariadb-dump escapes them, in random chunks: every row
    /// is counted. The seed is printed; `RESPALDO_SEED` replays one.
    #[test]
    fn random_rows_are_counted_exactly() {
        let seed: u64 = std::env::var("RESPALDO_SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| {
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .unwrap()
                    .as_nanos() as u64
            });
        println!("seed {seed} (RESPALDO_SEED={seed} replays it)");
        let mut x = seed | 1;
        let mut next = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        for _ in 0..50 {
            let mut dump =
                String::from("-- Table structure for table `t`\nCREATE TABLE `t` (`v` text);\n");
            let mut want = 0u64;
            for _ in 0..(next() % 5) {
                let rows = 1 + next() % 6;
                dump.push_str("INSERT INTO `t` VALUES\n");
                for r in 0..rows {
                    let len = next() % 12;
                    let v: String = (0..len)
                        .map(|_| match next() % 9 {
                            0 => "\\'".to_string(),
                            1 => "\\\\".to_string(),
                            2 => "(".into(),
                            3 => ")".into(),
                            4 => ";".into(),
                            5 => "\\n".into(),
                            6 => "\"".into(),
                            _ => "z".into(),
                        })
                        .collect();
                    dump.push_str(&format!("({r},'{v}',NULL)"));
                    dump.push_str(if r + 1 < rows { ",\n" } else { ";\n" });
                }
                want += rows;
            }
            dump.push_str("-- Dump completed\n");
            let mut reader = DumpReader::scanner();
            let bytes = dump.as_bytes();
            let mut i = 0;
            while i < bytes.len() {
                let n = (1 + next() % 40) as usize;
                let end = (i + n).min(bytes.len());
                reader.feed(&bytes[i..end], &mut Vec::new());
                i = end;
            }
            reader.finish(&mut Vec::new());
            assert_eq!(reader.rows.get("t"), Some(&want), "seed {seed}\n{dump}");
            assert!(reader.completed, "seed {seed}");
        }
    }
}
