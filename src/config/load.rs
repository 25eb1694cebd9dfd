//! The loader: reads a file, parses it into the file types, compiles it, and reports every error
//! of the file with its line and column.
//!
//! The fast path deserializes the whole file in one go. When that fails, serde has stopped at the
//! first problem, so the loader walks the file again item by item (each API, stage, plan and key
//! on its own) to list every problem, and positions each one with a location index built from the
//! YAML events.

use std::path::{Path as FsPath, PathBuf};

use serde::de::DeserializeOwned;
use serde_yaml_ng::{Mapping, Value};

use super::compile::{Compiled, compile};
use super::error::{self, ConfigError, ConfigErrors, ErrorKind};
use super::file::{self, ConfigFile};
use super::location::{LineCol, LocationIndex, Path};

/// Reads, parses and compiles a configuration file.
pub fn load_file(path: &FsPath) -> Result<Compiled, ConfigErrors> {
    let io = |reason: String| {
        ConfigErrors(vec![ConfigError::new(
            Path::root(),
            ErrorKind::Io {
                file: path.display().to_string(),
                reason,
            },
        )])
    };
    // Sized before it is read: a huge file is refused without holding it in memory.
    let size = std::fs::metadata(path)
        .map_err(|e| io(e.to_string()))?
        .len();
    let max = max_config_bytes();
    if size > max {
        return Err(io(format!(
            "{size} bytes; a configuration file may have at most {max} (--max-config-bytes; put large key sets in CSV key files)"
        )));
    }
    let text = std::fs::read_to_string(path).map_err(|e| {
        ConfigErrors(vec![ConfigError::new(
            Path::root(),
            ErrorKind::Io {
                file: path.display().to_string(),
                reason: e.to_string(),
            },
        )])
    })?;
    let base = base_dir(path);
    let mut compiled = load_str(&text, Some(path), &base)?;
    compiled.sources.insert(0, path.to_path_buf());
    compiled.snapshot.source = path.display().to_string();
    Ok(compiled)
}

/// Parses and compiles configuration text. `origin` names the file in errors; `base_dir`
/// resolves relative `api_keys_files`.
pub fn load_str(
    text: &str,
    origin: Option<&FsPath>,
    base_dir: &FsPath,
) -> Result<Compiled, ConfigErrors> {
    // Editors on Windows start UTF-8 files with a byte order mark; it is not part of the YAML.
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    // Deep nesting costs the YAML parser superlinear time (tens of seconds for 64k levels of
    // `[`); no configuration nests more than a handful of levels, so it is refused before parsing.
    let max_depth = max_flow_depth();
    if let Some(at) = too_deep(text, max_depth) {
        let mut e = ConfigError::new(
            Path::root(),
            ErrorKind::Parse(format!(
                "collections (`[`, `{{`) nested more than {max_depth} deep (--max-config-depth); a plangate configuration needs a handful"
            )),
        );
        e.file = origin.map(FsPath::to_path_buf);
        e.at = Some(at);
        return Err(ConfigErrors(vec![e]));
    }
    // Aliases (and merge keys, `<<: [*a, *a, …]`) are replayed by the parser: nested, a few
    // hundred bytes expand into gigabytes. Their expanded size is counted from the events first.
    if let Err((at, expanded)) = alias_expansion(text) {
        let mut e = ConfigError::new(
            Path::root(),
            ErrorKind::Parse(format!(
                "aliases expand this file to more than {expanded} YAML nodes (anchors used by \
                 aliases or `<<` merge keys that nest); at most {MAX_ALIAS_NODES} nodes, or \
                 twice the file's own, may come from aliases"
            )),
        );
        e.file = origin.map(FsPath::to_path_buf);
        e.at = Some(at);
        return Err(ConfigErrors(vec![e]));
    }
    let parsed = parse(text);
    let result = match parsed {
        Ok(file) => compile(&file, base_dir),
        Err(errors) => Err(errors),
    };
    result.map_err(|mut errors| {
        // Placing an error costs a walk of the file: a file of a million broken entries is
        // told its first ones, and how many more there are.
        let more = errors.len().saturating_sub(MAX_ERRORS);
        errors.truncate(MAX_ERRORS);
        let mut placed = place(errors, text, origin);
        if more > 0 {
            let mut e = ConfigError::new(
                Path::root(),
                ErrorKind::Parse(format!("… and {more} more error(s)")),
            );
            e.file = origin.map(FsPath::to_path_buf);
            placed.push(e);
        }
        ConfigErrors(placed)
    })
}

/// The most errors of one file reported (the rest are counted).
pub const MAX_ERRORS: usize = 1_000;

/// The largest configuration file read by default, in bytes (1,000,000 keys in YAML take
/// ~121 MB; large key sets belong in CSV key files). `--max-config-bytes` changes it.
pub const DEFAULT_MAX_CONFIG_BYTES: u64 = 256 * 1024 * 1024;

/// The deepest nesting of flow collections (`[…]`, `{…}`) accepted by default.
/// `--max-config-depth` changes it.
pub const DEFAULT_MAX_FLOW_DEPTH: usize = 64;

static MAX_CONFIG_BYTES: std::sync::atomic::AtomicU64 =
    std::sync::atomic::AtomicU64::new(DEFAULT_MAX_CONFIG_BYTES);
static MAX_FLOW_DEPTH: std::sync::atomic::AtomicUsize =
    std::sync::atomic::AtomicUsize::new(DEFAULT_MAX_FLOW_DEPTH);

/// Sets the bounds every later load checks before parsing: the file's size in bytes and the
/// nesting depth of flow collections (process-wide: set once, at start).
pub fn set_bounds(max_bytes: u64, max_depth: usize) {
    MAX_CONFIG_BYTES.store(max_bytes, std::sync::atomic::Ordering::Relaxed);
    MAX_FLOW_DEPTH.store(max_depth, std::sync::atomic::Ordering::Relaxed);
}

fn max_config_bytes() -> u64 {
    MAX_CONFIG_BYTES.load(std::sync::atomic::Ordering::Relaxed)
}

fn max_flow_depth() -> usize {
    MAX_FLOW_DEPTH.load(std::sync::atomic::Ordering::Relaxed)
}

/// Where flow collections first nest deeper than `max`, found by a scan of the text (no parse):
/// a `[` or `{` counts when it opens a value (at a line's start, after `:`, `-`, `?`, `,` or
/// another opening bracket), not inside quotes, comments or plain text like `a[1]`.
fn too_deep(text: &str, max: usize) -> Option<LineCol> {
    // Every character that matters here is ASCII, so the scan reads bytes (a byte of a non-ASCII
    // character is plain text); the column is counted in characters only when it is reported.
    let b = text.as_bytes();
    let opens_value = |prev: u8| matches!(prev, b'\n' | b':' | b'-' | b'?' | b',' | b'[' | b'{');
    let space = |c: u8| matches!(c, b' ' | b'\t' | b'\n' | b'\r' | 0x0b | 0x0c);
    let (mut depth, mut line, mut line_start) = (0usize, 1usize, 0usize);
    let at = |line: usize, line_start: usize, i: usize| LineCol {
        line,
        col: text[line_start..=i].chars().count(),
    };
    // `prev`: the last byte that was not a space; `last`: the byte just before;
    // `plain`: inside plain text (`x[1]`), where brackets open nothing.
    let (mut prev, mut last, mut plain) = (b'\n', b'\n', false);
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        if c.is_ascii_alphanumeric() || c >= 0x80 {
            // A run of letters and digits (most of a large key list) only makes plain text.
            while i + 1 < b.len() && (b[i + 1].is_ascii_alphanumeric() || b[i + 1] >= 0x80) {
                i += 1;
            }
            (prev, last, plain) = (b[i], b[i], true);
            i += 1;
            continue;
        }
        match c {
            b'\n' => {
                (line, line_start, prev, last, plain) = (line + 1, i + 1, b'\n', b'\n', false);
                i += 1;
                continue;
            }
            b'#' if space(last) => {
                // A comment: to the end of the line.
                while i + 1 < b.len() && b[i + 1] != b'\n' {
                    i += 1;
                }
                i += 1;
                continue;
            }
            b'"' | b'\'' if opens_value(prev) => {
                i = skip_quoted(b, i, &mut line, &mut line_start);
                (prev, last) = (c, c);
                i += 1;
                continue;
            }
            // Inside a flow collection, `,` `[` `]` `{` `}` end plain text.
            b'[' | b']' | b'{' | b'}' | b',' if plain && depth > 0 => {
                plain = false;
                match c {
                    b'[' | b'{' if opens_value(prev) => depth += 1,
                    b']' | b'}' => depth = depth.saturating_sub(1),
                    _ => {}
                }
                if depth > max {
                    return Some(at(line, line_start, i));
                }
            }
            b'[' | b'{' if opens_value(prev) && !plain => {
                depth += 1;
                if depth > max {
                    return Some(at(line, line_start, i));
                }
            }
            b']' | b'}' if !plain => depth = depth.saturating_sub(1),
            _ => {}
        }
        if space(c) {
            plain = false;
        } else if !matches!(c, b'[' | b']' | b'{' | b'}' | b',' | b':') {
            plain = true;
        }
        if !space(c) {
            prev = c;
        }
        last = c;
        i += 1;
    }
    None
}

/// Skips the quoted scalar that opens at `b[open]` (`\"` escapes in double quotes, `''` in
/// single), counting its lines: the index of its closing quote (or the end).
fn skip_quoted(b: &[u8], open: usize, line: &mut usize, line_start: &mut usize) -> usize {
    let c = b[open];
    let mut escaped = false;
    let mut i = open + 1;
    while i < b.len() {
        let n = b[i];
        if n == b'\n' {
            (*line, *line_start) = (*line + 1, i + 1);
        }
        if c == b'"' && n == b'\\' && !escaped {
            escaped = true;
            i += 1;
            continue;
        }
        if n == c && !escaped {
            if c == b'\'' && b.get(i + 1) == Some(&b'\'') {
                i += 2;
                continue;
            }
            break;
        }
        escaped = false;
        i += 1;
    }
    i
}

/// The most YAML nodes aliases may add to a file, beyond twice the file's own nodes.
pub const MAX_ALIAS_NODES: u64 = 1_000_000;

/// Counts the nodes `text` has once every alias is replaced by what its anchor holds, from the
/// parser's events (which do not expand aliases): `Err` with where the bound was passed and the
/// count so far when aliases add more than [`MAX_ALIAS_NODES`] or twice the file's own nodes.
/// A file without anchors (`&`) has no alias to expand and is not scanned.
fn alias_expansion(text: &str) -> Result<(), (LineCol, u64)> {
    use yaml_rust2::parser::{Event, MarkedEventReceiver, Parser};
    use yaml_rust2::scanner::Marker;
    if !text.contains('&') {
        return Ok(());
    }
    #[derive(Default)]
    struct Count {
        /// Anchor id → the nodes it stands for, expanded.
        anchors: std::collections::HashMap<usize, u64>,
        /// Open collections: (anchor id, nodes so far).
        open: Vec<(usize, u64)>,
        own: u64,
        expanded: u64,
        over: Option<(LineCol, u64)>,
    }
    impl Count {
        fn add(&mut self, n: u64) {
            match self.open.last_mut() {
                Some((_, c)) => *c = c.saturating_add(n),
                None => self.expanded = self.expanded.saturating_add(n),
            }
        }
        fn total(&self) -> u64 {
            self.open
                .iter()
                .fold(self.expanded, |t, (_, c)| t.saturating_add(*c))
        }
    }
    impl MarkedEventReceiver for Count {
        fn on_event(&mut self, ev: Event, mark: Marker) {
            if self.over.is_some() {
                return;
            }
            match ev {
                Event::Scalar(_, _, anchor, _) => {
                    self.own += 1;
                    if anchor > 0 {
                        self.anchors.insert(anchor, 1);
                    }
                    self.add(1);
                }
                Event::Alias(id) => {
                    let n = self.anchors.get(&id).copied().unwrap_or(1);
                    self.add(n);
                }
                Event::SequenceStart(anchor, _) | Event::MappingStart(anchor, _) => {
                    self.own += 1;
                    self.open.push((anchor, 1));
                }
                Event::SequenceEnd | Event::MappingEnd => {
                    if let Some((anchor, n)) = self.open.pop() {
                        if anchor > 0 {
                            self.anchors.insert(anchor, n);
                        }
                        self.add(n);
                    }
                }
                _ => return,
            }
            let allowed = MAX_ALIAS_NODES.saturating_add(self.own.saturating_mul(2));
            let total = self.total();
            if total > allowed {
                self.over = Some((
                    LineCol {
                        line: mark.line(),
                        col: mark.col() + 1,
                    },
                    allowed,
                ));
            }
        }
    }
    let mut count = Count::default();
    // A file the parser refuses is reported by the parse that follows.
    let _ = Parser::new_from_str(text).load(&mut count, true);
    match count.over {
        Some(over) => Err(over),
        None => Ok(()),
    }
}

/// Parses configuration text into the file types (no cross-reference checks).
pub fn parse(text: &str) -> Result<ConfigFile, Vec<ConfigError>> {
    // A large `api_keys` list is parsed in pieces on every core (same result; errors come from
    // the whole-text parse below).
    if let Some(f) = super::split::parse(text, super::split::PIECE_ITEMS) {
        return Ok(f);
    }
    match serde_yaml_ng::from_str::<ConfigFile>(text) {
        Ok(f) => Ok(f),
        Err(first) => Err(collect(text, first)),
    }
}

/// Fills in file and position of errors that only know their path, and sorts them by position.
fn place(mut errors: Vec<ConfigError>, text: &str, origin: Option<&FsPath>) -> Vec<ConfigError> {
    let mut index: Option<LocationIndex> = None;
    for e in &mut errors {
        if e.file.is_some() {
            continue; // An error in another file (a CSV key file) carries its own position.
        }
        e.file = origin.map(FsPath::to_path_buf);
        if e.at.is_none() && !e.path.0.is_empty() {
            let idx = index.get_or_insert_with(|| LocationIndex::build(text));
            e.at = idx.find(&e.path);
        }
    }
    // Errors of the main file first, by position; then other files'.
    errors.sort_by(|a, b| {
        let ka = (a.file.as_deref() != origin, a.file.clone(), a.at);
        let kb = (b.file.as_deref() != origin, b.file.clone(), b.at);
        ka.cmp(&kb)
    });
    errors
}

/// A serde_yaml_ng error as a `ConfigError` under `base`. `located`: the error's line and column
/// refer to the file being loaded (not to a re-serialized piece of it).
fn parser_error(e: &serde_yaml_ng::Error, base: &Path, located: bool) -> ConfigError {
    let message = error::scrub(&e.to_string());
    // serde_yaml_ng ends messages with " at line L column C"; the position is kept apart.
    let message = match message.rfind(" at line ") {
        Some(i) if e.location().is_some() => message[..i].to_owned(),
        _ => message,
    };
    // …and starts them with the path of the failing node (`a.b[2].c: …`).
    let (path, message) = match message.split_once(": ") {
        Some((p, rest)) if !p.contains(' ') && !p.is_empty() => {
            (base.join_dotted(p), rest.to_owned())
        }
        _ => (base.clone(), message),
    };
    // An unknown field is best shown where it is written.
    let path = match message
        .strip_prefix("unknown field `")
        .and_then(|r| r.split_once('`'))
    {
        Some((field, _)) => path.key(field),
        None => path,
    };
    ConfigError {
        file: None,
        at: e.location().filter(|_| located).map(|l| LineCol {
            line: l.line(),
            col: l.column(),
        }),
        path,
        kind: ErrorKind::Parse(message),
    }
}

/// Lists every parse problem of a file that failed to deserialize in one go.
fn collect(text: &str, first: serde_yaml_ng::Error) -> Vec<ConfigError> {
    let value: Value = match serde_yaml_ng::from_str(text) {
        Ok(v) => v,
        // Not YAML that a `Value` can hold (a syntax error, a duplicate key, a 128-bit number):
        // the first error is all there is.
        Err(_) => return vec![parser_error(&first, &Path::root(), true)],
    };
    let root = Path::root();
    let mut errors = Vec::new();
    let Value::Mapping(map) = value else {
        return vec![parser_error(&first, &root, true)];
    };
    if !map.contains_key("version") {
        errors.push(ConfigError::new(
            root.clone(),
            ErrorKind::Parse("missing field `version` (write `version: 1`)".to_owned()),
        ));
    }
    for (k, v) in map {
        let Some(name) = k.as_str() else {
            errors.push(ConfigError::new(
                root.clone(),
                ErrorKind::Parse("top-level keys must be strings".to_owned()),
            ));
            continue;
        };
        let p = root.key(name);
        match name {
            "apis" => each_entry(v, &p, &mut errors, |_, api, p, errors| {
                let Value::Mapping(api) = api else {
                    return check::<file::ApiFile>(api, p, errors);
                };
                for (field, fv) in api {
                    match field.as_str() {
                        Some("stages") => {
                            each_entry(fv, &p.key("stages"), errors, |_, st, sp, errors| {
                                check::<file::StageFile>(st, sp, errors)
                            })
                        }
                        _ => check_field::<file::ApiFile>(field, fv, p, errors),
                    }
                }
            }),
            "domain_names" => each_entry(v, &p, &mut errors, |_, d, dp, errors| {
                check::<file::DomainNameFile>(d, dp, errors)
            }),
            "usage_plans" => each_entry(v, &p, &mut errors, |_, plan, pp, errors| {
                check::<file::UsagePlanFile>(plan, pp, errors)
            }),
            "api_keys" => match v {
                Value::Sequence(items) => {
                    for (i, item) in items.into_iter().enumerate() {
                        check::<file::ApiKeyFile>(item, &p.index(i), &mut errors);
                    }
                }
                other => check::<Vec<file::ApiKeyFile>>(other, &p, &mut errors),
            },
            // Any other field, alone in a file that has only it (and a version): the file type
            // itself says what is wrong, unknown fields included — no list here to drift.
            _ => {
                let mut alone = Mapping::new();
                if name != "version" {
                    alone.insert("version".into(), 1.into());
                }
                alone.insert(k, v);
                check::<ConfigFile>(Value::Mapping(alone), &root, &mut errors);
            }
        }
    }
    if errors.is_empty() {
        // Every piece reads on its own; the problem is the whole (e.g. a missing field).
        errors.push(parser_error(&first, &root, true));
    }
    errors
}

/// Deserializes `v` as `T`, recording a failure at `path`.
fn check<T: DeserializeOwned>(v: Value, path: &Path, errors: &mut Vec<ConfigError>) {
    let Err(e) = serde_yaml_ng::from_value::<T>(v.clone()) else {
        return;
    };
    // Errors from a `Value` carry no path; reading the piece back from text gives one (`quota.
    // period: …`), which the location index then turns into the position in the real file.
    let retried = serde_yaml_ng::to_string(&v)
        .ok()
        .and_then(|text| serde_yaml_ng::from_str::<T>(&text).err());
    errors.push(parser_error(retried.as_ref().unwrap_or(&e), path, false));
}

/// `field: v` checked as the only field of a `T`, recording a failure under `base`.
fn check_field<T: DeserializeOwned>(
    field: Value,
    v: Value,
    base: &Path,
    errors: &mut Vec<ConfigError>,
) {
    let mut alone = Mapping::new();
    alone.insert(field, v);
    check::<T>(Value::Mapping(alone), base, errors);
}

/// Calls `f` on each entry of a mapping (or records that `v` is not one).
fn each_entry(
    v: Value,
    path: &Path,
    errors: &mut Vec<ConfigError>,
    mut f: impl FnMut(&str, Value, &Path, &mut Vec<ConfigError>),
) {
    match v {
        Value::Mapping(m) => {
            for (k, item) in m {
                let name = match k.as_str() {
                    Some(s) => s.to_owned(),
                    None => format!("{k:?}"),
                };
                f(&name, item, &path.key(name.as_str()), errors);
            }
        }
        Value::Null => {}
        other => check::<indexmap::IndexMap<String, Value>>(other, path, errors),
    }
}

/// The directory to watch and resolve relative paths against, for a config path.
pub fn base_dir(path: &FsPath) -> PathBuf {
    path.parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(FsPath::new("."))
        .to_path_buf()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nesting_is_measured_without_parsing() {
        let deep = format!("apis: {}{}", "[".repeat(70), "]".repeat(70));
        assert_eq!(too_deep(&deep, 64), Some(LineCol { line: 1, col: 71 }));
        assert_eq!(too_deep(&format!("a: {}", "{".repeat(64)), 64), None);
        // Brackets that open nothing: in quotes, comments and plain text.
        let harmless = format!(
            "a: \"{0}\"\nb: '{0}'' {0}'\n# {0}\nc: x{0}\nd: x #{0}\n- {1}\n",
            "[".repeat(100),
            "[".repeat(3)
        );
        assert_eq!(too_deep(&harmless, 64), None);
        // Nested flow collections in a list item, a key, a value.
        assert_eq!(too_deep("- [[1], {a: [2]}]\n? {k: v}\n", 3), None);
        assert!(too_deep("- [[1], {a: [2]}]\n", 2).is_some());
        assert!(too_deep("- [[[1]]]\n", 2).is_some());
        // Columns count characters, not bytes.
        assert_eq!(
            too_deep("a: 1\né: [[[1]]]\n", 2),
            Some(LineCol { line: 2, col: 6 })
        );
    }
}
