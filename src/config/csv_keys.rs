//! API keys from CSV files in AWS's import format (`Name,Key,Description,Enabled,UsagePlanIds`),
//! plus optional `Id` and `CustomerId` columns. Headers are case-insensitive; `UsagePlanIds` may
//! hold several ids, comma-separated inside quotes.
//!
//! Records are read as plain strings (not through serde) so that no error message can quote a
//! field: the `Key` column holds secrets.

use std::path::Path as FsPath;
use std::sync::Arc;

use super::compile::{KeyEntry, Origin, check_value};
use super::error::{ConfigError, ErrorKind};
use super::location::{LineCol, Path};
use crate::snapshot::hash_key;

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
pub(crate) fn read(path: &FsPath) -> (Vec<KeyEntry>, Vec<ConfigError>) {
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
    let mut rdr = csv::ReaderBuilder::new()
        .has_headers(true)
        .flexible(false)
        .trim(csv::Trim::All)
        .from_reader(data.as_slice());
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
            _ => {
                errors.push(at(1, ErrorKind::UnknownField(h.to_owned())));
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
            Some(other) => {
                errors.push(at(
                    line,
                    invalid(format!("Enabled is `{other}`; use TRUE or FALSE")),
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
