//! API keys as written, before cross-checks: entries from the YAML `api_keys` list and from CSV
//! key files in AWS's import format, each with its origin (for errors), and the checks of a key
//! value, a hash and an id. `compile` cross-checks the entries against plans and each other.
//!
//! CSV files: `Name,Key,Description,Enabled,UsagePlanIds`, plus optional `Id` and `CustomerId`
//! columns. Headers are case-insensitive; `UsagePlanIds` may hold several ids, comma-separated
//! inside quotes. Records are read as plain strings (not through serde) so that no error message
//! can quote a field: the `Key` column holds secrets.

use std::path::Path as FsPath;
use std::sync::Arc;

use super::error::{ConfigError, ErrorKind};
use super::file::ConfigFile;
use super::location::{LineCol, Path};
use crate::snapshot::{KEY_MAX_CHARS, KEY_MIN_CHARS, KeyHash, hash_key};

/// One API key from the YAML file or a CSV file, before checks.
pub(crate) struct KeyEntry {
    pub id: String,
    pub name: Option<String>,
    pub hash: Result<KeyHash, String>,
    pub enabled: bool,
    pub customer_id: Option<String>,
    pub plans: Vec<String>,
    pub origin: Origin,
}

/// Where a key was written.
#[derive(Debug, Clone)]
pub(crate) enum Origin {
    Yaml(usize),
    Csv {
        file: Arc<std::path::PathBuf>,
        line: u64,
    },
}

impl Origin {
    pub(crate) fn describe(&self) -> String {
        match self {
            Origin::Yaml(i) => format!("api_keys[{i}]"),
            Origin::Csv { file, line } => format!("{}:{line}", file.display()),
        }
    }

    /// An error about this key; `sub` is the field and index within a YAML key (`usage_plans`, 2).
    pub(crate) fn error(&self, sub: Option<(&str, Option<usize>)>, kind: ErrorKind) -> ConfigError {
        match self {
            Origin::Yaml(i) => {
                let mut p = Path::root().key("api_keys").index(*i);
                if let Some((field, index)) = sub {
                    p = p.key(field);
                    if let Some(j) = index {
                        p = p.index(j);
                    }
                }
                ConfigError::new(p, kind)
            }
            Origin::Csv { file, line } => ConfigError {
                file: Some(file.to_path_buf()),
                at: Some(LineCol {
                    line: usize::try_from(*line).unwrap_or(usize::MAX),
                    col: 1,
                }),
                path: Path::root(),
                kind,
            },
        }
    }
}

/// The keys of the YAML `api_keys` list, and the ids of those given as plain-text `value`.
pub(crate) fn yaml_entries(file: &ConfigFile) -> (Vec<KeyEntry>, Vec<String>) {
    let mut entries = Vec::with_capacity(file.api_keys.len());
    let mut plain = Vec::new();
    for (i, k) in file.api_keys.iter().enumerate() {
        let hash = match (&k.value, &k.value_sha256) {
            (Some(_), Some(_)) => Err("has both `value` and `value_sha256`; give one".to_owned()),
            (None, None) => Err("has neither `value` nor `value_sha256`".to_owned()),
            (Some(v), None) => {
                plain.push(k.id.clone());
                check_value(v.expose()).map(|()| hash_key(v.expose()))
            }
            (None, Some(h)) => parse_sha256(h),
        };
        entries.push(KeyEntry {
            id: k.id.clone(),
            name: k.name.clone(),
            hash,
            enabled: k.enabled,
            customer_id: k.customer_id.clone(),
            plans: k.usage_plans.clone(),
            origin: Origin::Yaml(i),
        });
    }
    (entries, plain)
}

/// Checks a plain-text key value's length (never quoting it).
pub(crate) fn check_value(v: &str) -> Result<(), String> {
    let n = v.chars().count();
    if !(KEY_MIN_CHARS..=KEY_MAX_CHARS).contains(&n) {
        return Err(format!(
            "key value has {n} characters; {KEY_MIN_CHARS} to {KEY_MAX_CHARS} are required"
        ));
    }
    if v.chars().any(|c| c.is_control()) {
        return Err("key value contains control characters".to_owned());
    }
    Ok(())
}

fn parse_sha256(h: &str) -> Result<KeyHash, String> {
    let mut out = [0u8; 32];
    if h.len() != 64 {
        return Err(format!(
            "`value_sha256` must be 64 hex digits, found {} characters",
            h.len()
        ));
    }
    hex::decode_to_slice(h, &mut out)
        .map_err(|_| "`value_sha256` must be 64 hex digits".to_owned())?;
    Ok(out)
}

/// Key ids: like names, plus `:` and `@` (customer-style ids).
pub(crate) fn check_key_id(id: &str) -> Result<(), String> {
    if id.is_empty() || id.len() > 128 {
        return Err("key id must be 1 to 128 characters".to_owned());
    }
    if let Some(c) = id
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | ':' | '@')))
    {
        return Err(format!(
            "key id `{id}` contains `{c}`; use letters, digits, `-`, `_`, `.`, `:` and `@`"
        ));
    }
    Ok(())
}

#[derive(Default)]
struct Columns {
    name: Option<usize>,
    key: Option<usize>,
    description: Option<usize>,
    enabled: Option<usize>,
    plans: Option<usize>,
    id: Option<usize>,
    customer: Option<usize>,
}

/// Reads one key file: the keys it could read and the errors (with file and line) it found.
pub(crate) fn read_csv(path: &FsPath) -> (Vec<KeyEntry>, Vec<ConfigError>) {
    match read_inner(path) {
        Ok(r) => r,
        Err(errors) => (Vec::new(), errors),
    }
}

#[allow(clippy::type_complexity)]
fn read_inner(path: &FsPath) -> Result<(Vec<KeyEntry>, Vec<ConfigError>), Vec<ConfigError>> {
    let file = Arc::new(path.to_path_buf());
    let io_err = |reason: String| {
        vec![ConfigError::new(
            Path::root(),
            ErrorKind::Io {
                file: path.display().to_string(),
                reason,
            },
        )]
    };
    let data = std::fs::read(path).map_err(|e| io_err(e.to_string()))?;
    // A UTF-8 byte order mark (spreadsheets write one) is not part of the first column's name.
    let data = data.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(&data);
    let mut rdr = csv::ReaderBuilder::new()
        .has_headers(true)
        .flexible(false)
        .trim(csv::Trim::All)
        .from_reader(data);
    let at = |line: u64, kind: ErrorKind| ConfigError {
        file: Some(path.to_path_buf()),
        at: Some(LineCol {
            line: usize::try_from(line).unwrap_or(usize::MAX),
            col: 1,
        }),
        path: Path::root(),
        kind,
    };
    let invalid = |reason: String| ErrorKind::Invalid {
        what: "API key file",
        reason,
    };

    let headers = rdr
        .headers()
        .map_err(|e| vec![at(1, invalid(csv_reason(&e)))])?
        .clone();
    let mut cols = Columns::default();
    let mut errors = Vec::new();
    for (i, h) in headers.iter().enumerate() {
        let slot = match h.to_ascii_lowercase().as_str() {
            "name" => &mut cols.name,
            "key" => &mut cols.key,
            "description" => &mut cols.description,
            "enabled" => &mut cols.enabled,
            "usageplanids" => &mut cols.plans,
            "id" => &mut cols.id,
            "customerid" => &mut cols.customer,
            // The cell is not quoted: in a file without a header line, the first line is a
            // key row, and its "header" cells are key values.
            _ => {
                let mut e = at(
                    1,
                    invalid(format!(
                        "column {} of the header line is not one of Name, Key, Description, Enabled, UsagePlanIds, Id, CustomerId (is the header line missing?)",
                        i + 1
                    )),
                );
                if let Some(at) = &mut e.at {
                    at.col = i + 1;
                }
                errors.push(e);
                continue;
            }
        };
        if slot.is_some() {
            errors.push(at(1, invalid(format!("column `{h}` appears twice"))));
        }
        *slot = Some(i);
    }
    let Some(key_col) = cols.key else {
        errors.push(at(1, invalid("no `Key` column".to_owned())));
        return Err(errors);
    };

    let mut out = Vec::new();
    let mut record = csv::StringRecord::new();
    loop {
        match rdr.read_record(&mut record) {
            Ok(false) => break,
            Ok(true) => {}
            Err(e) => {
                let line = e.position().map_or(0, |p| p.line());
                errors.push(at(line, invalid(csv_reason(&e))));
                // A malformed record may leave the reader unable to continue.
                if !matches!(e.kind(), csv::ErrorKind::UnequalLengths { .. }) {
                    break;
                }
                continue;
            }
        }
        let line = record.position().map_or(0, |p| p.line());
        let get = |c: Option<usize>| c.and_then(|i| record.get(i)).filter(|s| !s.is_empty());
        let value = record.get(key_col).unwrap_or("");
        let hash = check_value(value).map(|()| hash_key(value));
        let id = match get(cols.id) {
            Some(id) => id.to_owned(),
            None => match &hash {
                Ok(h) => format!("k-{}", &hex::encode(h)[..12]),
                Err(_) => format!("line-{line}"),
            },
        };
        let enabled = match get(cols.enabled).map(str::to_ascii_lowercase).as_deref() {
            None | Some("true") => true,
            Some("false") => false,
            Some(_) => {
                errors.push(at(
                    line,
                    invalid("the Enabled column must be TRUE or FALSE".to_owned()),
                ));
                true
            }
        };
        let plans = get(cols.plans)
            .map(|s| {
                s.split(',')
                    .map(str::trim)
                    .filter(|p| !p.is_empty())
                    .map(str::to_owned)
                    .collect()
            })
            .unwrap_or_default();
        let _ = get(cols.description);
        out.push(KeyEntry {
            id,
            name: get(cols.name).map(str::to_owned),
            hash,
            enabled,
            customer_id: get(cols.customer).map(str::to_owned),
            plans,
            origin: Origin::Csv {
                file: file.clone(),
                line,
            },
        });
    }
    Ok((out, errors))
}

/// A CSV error's description without any field content.
fn csv_reason(e: &csv::Error) -> String {
    match e.kind() {
        csv::ErrorKind::Utf8 { .. } => "a field is not valid UTF-8".to_owned(),
        csv::ErrorKind::UnequalLengths {
            expected_len, len, ..
        } => format!("record has {len} fields, the header has {expected_len}"),
        csv::ErrorKind::Io(err) => err.to_string(),
        _ => "malformed CSV".to_owned(),
    }
}
