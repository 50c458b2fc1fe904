//! Where a key path is written in a configuration file, found with the TOML
//! parser's own spans: every nesting level, arrays of tables, inline tables,
//! dotted keys, and `[env.NAME]` overlays reported with their own path.

use toml_edit::{Array, ArrayOfTables, ImDocument, InlineTable, Item, Table, Value};

/// A key path located in the file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Located {
    /// 1-based line of the deepest part of the path that is written in the
    /// file: the key itself, else its table's header or key.
    pub line: Option<usize>,
    /// The path as the file writes it: `notify[1].url`,
    /// `env.staging.repository.urll`.
    pub path: String,
}

/// Locates key paths in one configuration text.
pub struct Locator<'a> {
    text: &'a str,
    doc: Option<ImDocument<&'a str>>,
}

/// How far a path got in the document.
struct Walk {
    /// Segments of the path found in the document.
    depth: usize,
    /// Byte offset of the deepest one found.
    offset: Option<usize>,
    /// The found segments, rendered (`[i]` for array elements).
    rendered: String,
}

impl<'a> Locator<'a> {
    /// A locator for `text` (which has parsed as TOML already; if it has
    /// not, every path is reported without a line).
    pub fn new(text: &'a str) -> Locator<'a> {
        Locator {
            text,
            doc: ImDocument::parse(text).ok(),
        }
    }

    /// Where `keys` (a path in the configuration after `[env.<env>]` was
    /// applied) is written. When the environment's table writes the path at
    /// least as far as the base file does, and writes all of it or further
    /// than the base, it is reported there, with its `env.NAME.` prefix.
    pub fn locate(&self, keys: &[String], env: Option<&str>) -> Located {
        let base = self.walk(keys);
        let chosen = match env {
            Some(name) if keys.first().map(String::as_str) != Some("env") => {
                let mut prefixed = vec!["env".to_string(), name.to_string()];
                prefixed.extend(keys.iter().cloned());
                let over = self.walk(&prefixed);
                let over_depth = over.depth.saturating_sub(2);
                let overlay_wins = over.depth > 2
                    && (over_depth > base.depth
                        || (over_depth == keys.len() && base.depth == keys.len()));
                if overlay_wins {
                    (over, prefixed)
                } else {
                    (base, keys.to_vec())
                }
            }
            _ => (base, keys.to_vec()),
        };
        let (walk, keys) = chosen;
        let mut path = walk.rendered;
        for k in &keys[walk.depth..] {
            if !path.is_empty() {
                path.push('.');
            }
            path.push_str(k);
        }
        Located {
            line: walk.offset.map(|o| self.line_of(o)),
            path,
        }
    }

    fn line_of(&self, offset: usize) -> usize {
        self.text[..offset.min(self.text.len())]
            .matches('\n')
            .count()
            + 1
    }

    fn walk(&self, keys: &[String]) -> Walk {
        let mut walk = Walk {
            depth: 0,
            offset: None,
            rendered: String::new(),
        };
        let Some(doc) = &self.doc else {
            return walk;
        };
        let mut node = Node::of_item(doc.as_item());
        for key in keys {
            let (next, offset, index) = match node.step(key) {
                Some(found) => found,
                None => break,
            };
            if index {
                walk.rendered.push_str(&format!("[{key}]"));
            } else {
                if !walk.rendered.is_empty() {
                    walk.rendered.push('.');
                }
                walk.rendered.push_str(key);
            }
            walk.depth += 1;
            if offset.is_some() {
                walk.offset = offset;
            }
            node = next;
        }
        walk
    }
}

/// A place in the document that a path can go through.
#[derive(Clone, Copy)]
enum Node<'d> {
    Table(&'d Table),
    Inline(&'d InlineTable),
    Tables(&'d ArrayOfTables),
    Array(&'d Array),
    Leaf,
}

impl<'d> Node<'d> {
    fn of_item(item: &'d Item) -> Node<'d> {
        match item {
            Item::Table(t) => Node::Table(t),
            Item::ArrayOfTables(a) => Node::Tables(a),
            Item::Value(v) => Node::of_value(v),
            Item::None => Node::Leaf,
        }
    }

    fn of_value(value: &'d Value) -> Node<'d> {
        match value {
            Value::InlineTable(t) => Node::Inline(t),
            Value::Array(a) => Node::Array(a),
            _ => Node::Leaf,
        }
    }

    /// One step down: the child, the offset where it is written (its key;
    /// a table's header; an element's own start) and whether it is an
    /// array element.
    fn step(self, key: &str) -> Option<(Node<'d>, Option<usize>, bool)> {
        let index = || key.parse::<usize>().ok();
        match self {
            Node::Table(t) => {
                let (k, child) = t.get_key_value(key)?;
                let at = match child {
                    // A table's header line, else (dotted or implicit) its key.
                    Item::Table(inner) => inner.span().or_else(|| k.span()),
                    _ => k.span(),
                };
                Some((Node::of_item(child), at.map(|r| r.start), false))
            }
            Node::Inline(t) => {
                let (k, child) = t.get_key_value(key)?;
                Some((Node::of_item(child), k.span().map(|r| r.start), false))
            }
            Node::Tables(a) => {
                let t = a.get(index()?)?;
                Some((Node::Table(t), t.span().map(|r| r.start), true))
            }
            Node::Array(a) => {
                let v = a.get(index()?)?;
                Some((Node::of_value(v), v.span().map(|r| r.start), true))
            }
            Node::Leaf => None,
        }
    }
}
