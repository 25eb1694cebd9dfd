//! Where things are in a YAML file: a map from a node's path (`apis.petstore.stages.prod`) to its
//! line and column, built from yaml-rust2's marked events.
//!
//! serde's data model has no spans, so compile errors (dangling references, duplicates) are found
//! on the deserialized structs by path, and this index turns the path back into a position. It is
//! built only when there is an error to report; the happy path never pays for it.

use std::collections::HashMap;

use yaml_rust2::parser::{Event, MarkedEventReceiver, Parser};
use yaml_rust2::scanner::Marker;

/// One step of a path into the document.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Seg {
    Key(String),
    Index(usize),
}

/// A path into the document, e.g. `api_keys[3].usage_plans[0]`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct Path(pub Vec<Seg>);

impl Path {
    pub fn root() -> Self {
        Path(Vec::new())
    }

    pub fn key(&self, k: impl Into<String>) -> Self {
        let mut p = self.clone();
        p.0.push(Seg::Key(k.into()));
        p
    }

    pub fn index(&self, i: usize) -> Self {
        let mut p = self.clone();
        p.0.push(Seg::Index(i));
        p
    }

    /// Appends a path as serde_yaml_ng prints it (`a.b[2].c`), as far as it can be read.
    pub(crate) fn join_dotted(&self, dotted: &str) -> Self {
        let mut p = self.clone();
        for part in dotted.split('.') {
            let (name, mut rest) = match part.find('[') {
                Some(i) => (&part[..i], &part[i..]),
                None => (part, ""),
            };
            if !name.is_empty() {
                p.0.push(Seg::Key(name.to_owned()));
            }
            while let Some(stripped) = rest.strip_prefix('[') {
                let Some(end) = stripped.find(']') else { break };
                match stripped[..end].parse() {
                    Ok(i) => p.0.push(Seg::Index(i)),
                    Err(_) => break,
                }
                rest = &stripped[end + 1..];
            }
        }
        p
    }
}

impl std::fmt::Display for Path {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut first = true;
        for seg in &self.0 {
            match seg {
                Seg::Key(k) => {
                    if !first {
                        f.write_str(".")?;
                    }
                    // Method keys contain slashes and braces; quote anything unusual.
                    if k.chars()
                        .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
                    {
                        f.write_str(k)?;
                    } else {
                        write!(f, "\"{k}\"")?;
                    }
                }
                Seg::Index(i) => write!(f, "[{i}]")?,
            }
            first = false;
        }
        if first {
            f.write_str("(top level)")?;
        }
        Ok(())
    }
}

/// Line and column, both 1-based.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct LineCol {
    pub line: usize,
    pub col: usize,
}

/// Path → position of every node of a document.
#[derive(Debug, Default)]
pub struct LocationIndex {
    marks: HashMap<Path, LineCol>,
}

impl LocationIndex {
    /// Indexes `text`. A document the YAML parser cannot read yields an empty index (the syntax
    /// error itself is reported by serde_yaml_ng, with its position).
    pub fn build(text: &str) -> Self {
        let mut builder = Builder::default();
        let _ = Parser::new_from_str(text).load(&mut builder, false);
        LocationIndex {
            marks: builder.marks,
        }
    }

    /// The position of `path`, or of its nearest ancestor that has one.
    pub fn find(&self, path: &Path) -> Option<LineCol> {
        let mut p = path.0.as_slice();
        loop {
            if let Some(lc) = self.marks.get(&Path(p.to_vec())) {
                return Some(*lc);
            }
            if p.is_empty() {
                return None;
            }
            p = &p[..p.len() - 1];
        }
    }
}

enum Frame {
    Map { key: Option<String> },
    Seq { next: usize },
}

#[derive(Default)]
struct Builder {
    stack: Vec<Frame>,
    path: Vec<Seg>,
    marks: HashMap<Path, LineCol>,
    /// A sequence item whose position is still unknown: yaml-rust2 marks a block mapping's start
    /// oddly, so an item takes the position of its first scalar.
    pending_item: Option<Path>,
}

impl Builder {
    fn record(&mut self, path: Path, mark: Marker) {
        self.marks.entry(path).or_insert(LineCol {
            line: mark.line(),
            col: mark.col() + 1,
        });
    }

    /// A node starts at `mark`; returns whether it was a mapping key (not a value).
    fn node(&mut self, ev: &Event, mark: Marker) -> bool {
        if let Some(item) = self.pending_item.take() {
            if matches!(ev, Event::Scalar(..) | Event::Alias(..)) {
                self.record(item, mark);
            } else {
                self.pending_item = Some(item);
            }
        }
        match self.stack.last_mut() {
            Some(Frame::Map { key }) if key.is_none() => {
                let name = match ev {
                    Event::Scalar(s, ..) => s.clone(),
                    _ => "?".to_owned(),
                };
                *key = Some(name.clone());
                let mut p = self.path.clone();
                p.push(Seg::Key(name));
                self.record(Path(p), mark);
                true
            }
            Some(Frame::Map { key }) => {
                let name = key.clone().unwrap_or_default();
                self.path.push(Seg::Key(name));
                false
            }
            Some(Frame::Seq { next }) => {
                let i = *next;
                *next += 1;
                self.path.push(Seg::Index(i));
                let p = Path(self.path.clone());
                if matches!(ev, Event::Scalar(..) | Event::Alias(..)) {
                    self.record(p, mark);
                } else {
                    self.pending_item = Some(p);
                }
                false
            }
            None => false,
        }
    }

    /// The value at the top of the path is complete.
    fn value_done(&mut self) {
        match self.stack.last_mut() {
            Some(Frame::Map { key }) => {
                *key = None;
                self.path.pop();
            }
            Some(Frame::Seq { .. }) => {
                self.path.pop();
            }
            None => {}
        }
    }
}

impl MarkedEventReceiver for Builder {
    fn on_event(&mut self, ev: Event, mark: Marker) {
        match ev {
            Event::Scalar(..) | Event::Alias(..) => {
                let was_key = self.node(&ev, mark);
                if !was_key {
                    self.value_done();
                }
            }
            Event::MappingStart(..) | Event::SequenceStart(..) => {
                let was_key = self.node(&ev, mark);
                if was_key {
                    // A complex key: not something plangate's files contain; index nothing below.
                    self.path.push(Seg::Key("?".to_owned()));
                }
                self.stack.push(match ev {
                    Event::MappingStart(..) => Frame::Map { key: None },
                    _ => Frame::Seq { next: 0 },
                });
            }
            Event::MappingEnd | Event::SequenceEnd => {
                self.stack.pop();
                self.value_done();
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_keys_and_items() {
        let text = "a:\n  x:\n    rate: 1\n    burst: foo\nb:\n  - rate: 2\n    burst: 3\n  - q\n";
        let idx = LocationIndex::build(text);
        let root = Path::root();
        assert_eq!(
            idx.find(&root.key("a").key("x").key("burst")),
            Some(LineCol { line: 4, col: 5 })
        );
        assert_eq!(
            idx.find(&root.key("b").index(0)),
            Some(LineCol { line: 6, col: 5 })
        );
        assert_eq!(
            idx.find(&root.key("b").index(1)),
            Some(LineCol { line: 8, col: 5 })
        );
        assert_eq!(
            idx.find(&root.key("b").index(0).key("burst")),
            Some(LineCol { line: 7, col: 5 })
        );
        // Unknown child: falls back to the nearest ancestor.
        assert_eq!(
            idx.find(&root.key("a").key("x").key("nope")),
            Some(LineCol { line: 2, col: 3 })
        );
    }

    #[test]
    fn dotted_paths() {
        let p = Path::root()
            .key("apis")
            .join_dotted("stages.prod.methods[2].x");
        assert_eq!(p.to_string(), "apis.stages.prod.methods[2].x");
    }
}
