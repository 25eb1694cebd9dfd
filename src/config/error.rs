//! Configuration errors: what is wrong, where (path, and line/column when known), in which file.
//!
//! No variant carries an API key value: keys are named by id (or by their position in a file).

use std::fmt;
use std::path::PathBuf;

use super::location::{LineCol, Path};

/// One problem in a configuration file.
#[derive(Debug, Clone)]
pub struct ConfigError {
    pub file: Option<PathBuf>,
    pub at: Option<LineCol>,
    pub path: Path,
    pub kind: ErrorKind,
}

/// All problems of a file, in file order. A file with any error is rejected whole.
#[derive(Debug, Clone)]
pub struct ConfigErrors(pub Vec<ConfigError>);

#[derive(Debug, Clone, thiserror::Error)]
pub enum ErrorKind {
    #[error("cannot read {file}: {reason}")]
    Io { file: String, reason: String },
    #[error("{0}")]
    Parse(String),
    #[error("unknown field `{0}`")]
    UnknownField(String),
    #[error("unsupported version {0} (this plangate reads version 1)")]
    Version(u32),
    #[error("{what}: {reason}")]
    Invalid { what: &'static str, reason: String },
    #[error("duplicate {what} `{id}` (first at {first})")]
    Duplicate {
        what: &'static str,
        id: String,
        first: String,
    },
    #[error("usage plan `{plan}` names unknown API `{api}`")]
    UnknownApi { plan: String, api: String },
    #[error("usage plan `{plan}` names unknown stage `{stage}` of API `{api}`")]
    UnknownStage {
        plan: String,
        api: String,
        stage: String,
    },
    #[error(
        "usage plan `{plan}` throttles `{method}`, which stage {api}/{stage} does not list under `methods`"
    )]
    UnknownPlanMethod {
        plan: String,
        api: String,
        stage: String,
        method: String,
    },
    #[error("usage plan `{plan}` lists stage {api}/{stage} twice")]
    DuplicatePlanStage {
        plan: String,
        api: String,
        stage: String,
    },
    #[error("API key `{key}` names unknown usage plan `{plan}`")]
    UnknownPlan { key: String, plan: String },
    #[error(
        "API key `{key}` is in usage plans `{first}` and `{second}`, which both grant {api}/{stage}; a key may be in at most one plan per API stage"
    )]
    KeyInTwoPlans {
        key: String,
        api: String,
        stage: String,
        first: String,
        second: String,
    },
    #[error("API key `{key}` has the same value as API key `{other}`")]
    DuplicateValue { key: String, other: String },
    #[error("API key `{key}`: {reason}")]
    KeyValue { key: String, reason: String },
    #[error("`defaults` names unknown {what} `{name}`")]
    UnknownDefault { what: &'static str, name: String },
}

impl ConfigError {
    pub fn new(path: Path, kind: ErrorKind) -> Self {
        ConfigError {
            file: None,
            at: None,
            path,
            kind,
        }
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(file) = &self.file {
            write!(f, "{}:", file.display())?;
        }
        if let Some(at) = self.at {
            write!(f, "{}:{}:", at.line, at.col)?;
        }
        if self.file.is_some() || self.at.is_some() {
            f.write_str(" ")?;
        }
        if !self.path.0.is_empty() {
            write!(f, "{}: ", self.path)?;
        }
        write!(f, "{}", self.kind)
    }
}

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

/// serde's messages quote the offending input (`invalid type: string "…"`, ``integer `…` ``); the
/// input may be a key value typed into the wrong field, so quoted input is cut out of every parser
/// message.
pub(crate) fn scrub(message: &str) -> String {
    const QUOTED: &[(&str, char, &str)] = &[
        ("string \"", '"', "a string"),
        ("integer `", '`', "an integer"),
        ("floating point `", '`', "a number"),
    ];
    let mut out = String::with_capacity(message.len());
    let mut rest = message;
    loop {
        let next = QUOTED
            .iter()
            .filter_map(|q| rest.find(q.0).map(|i| (i, q)))
            .min_by_key(|(i, _)| *i);
        let Some((i, (open, close, replacement))) = next else {
            break;
        };
        out.push_str(&rest[..i]);
        out.push_str(replacement);
        let after = &rest[i + open.len()..];
        let mut escaped = false;
        let mut end = after.len();
        for (j, c) in after.char_indices() {
            if c == '\\' && !escaped {
                escaped = true;
            } else if c == *close && !escaped {
                end = j + c.len_utf8();
                break;
            } else {
                escaped = false;
            }
        }
        rest = &after[end..];
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scrub_removes_quoted_strings() {
        assert_eq!(
            scrub(r#"x: invalid type: string "sec\"ret", expected i64 at line 1"#),
            "x: invalid type: a string, expected i64 at line 1"
        );
        assert_eq!(scrub("unknown field `zz`"), "unknown field `zz`");
        assert_eq!(
            scrub("invalid type: integer `1234`, expected a boolean"),
            "invalid type: an integer, expected a boolean"
        );
    }
}
