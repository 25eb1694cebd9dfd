//! The catalog's operations, one implementation for every face (AWS's REST API, the typed gRPC
//! API, the CLI): each validates a change against the catalog and the configuration in force
//! and gives the records to write, or AWS's error. Run them through [`super::Catalog::write`].

use std::collections::BTreeMap;

use serde::Deserialize;

use super::State;
pub use super::error::{CatalogError, ErrorKind};
use super::records::{
    ApiKeyRecord, ApiStage, QuotaSettings, ThrottleSettings, UsagePlanRecord, key_name,
    member_name, plan_name,
};
use crate::clock::Nanos;
use crate::snapshot::{Snapshot, hash_key};
use crate::store::catalog::Record;

fn bad(message: impl Into<String>) -> CatalogError {
    CatalogError::new(ErrorKind::BadRequest, message)
}

fn conflict(message: impl Into<String>) -> CatalogError {
    CatalogError::new(ErrorKind::Conflict, message)
}

pub fn no_key(id: &str) -> CatalogError {
    CatalogError::new(
        ErrorKind::NotFound,
        format!("Invalid API Key identifier specified {id}"),
    )
}

pub fn no_plan(id: &str) -> CatalogError {
    CatalogError::new(
        ErrorKind::NotFound,
        format!("Invalid Usage Plan ID specified {id}"),
    )
}

/// The refusal of a change to what the configuration file defines.
fn in_file(snap: &Snapshot, what: &str) -> CatalogError {
    let file = if snap.source.is_empty() {
        "the configuration plangate was started with".to_owned()
    } else {
        snap.source.clone()
    };
    conflict(format!(
        "{what} is defined in {file}: change it there (objects of the configuration are read-only through the API)"
    ))
}

/// Bounds (AWS's where it states them).
pub const MAX_NAME: usize = 1024;
pub const MAX_TEXT: usize = 4096;
pub const MIN_VALUE: usize = 20;
pub const MAX_VALUE: usize = 128;
pub const MAX_TAGS: usize = 50;
/// Keys and plans in the runtime catalog (a bound, so that a loop of creates cannot exhaust
/// memory): AWS's own default quotas are far lower (10,000 keys, 300 plans per region).
pub const MAX_KEYS: usize = 10_000_000;
pub const MAX_PLANS: usize = 10_000;

fn check_text(field: &str, v: Option<&str>, max: usize) -> Result<(), CatalogError> {
    match v {
        Some(v) if v.chars().count() > max => {
            Err(bad(format!("{field} is longer than {max} characters")))
        }
        Some(v) if v.chars().any(char::is_control) => {
            Err(bad(format!("{field} contains control characters")))
        }
        _ => Ok(()),
    }
}

fn check_tags(tags: &BTreeMap<String, String>) -> Result<(), CatalogError> {
    if tags.len() > MAX_TAGS {
        return Err(bad(format!("at most {MAX_TAGS} tags")));
    }
    for (k, v) in tags {
        if k.is_empty() || k.len() > 128 || v.len() > 256 {
            return Err(bad(format!(
                "tag `{k}`: a key of 1 to 128 characters, a value of at most 256"
            )));
        }
    }
    Ok(())
}

/// Random characters from `alphabet`, from the OS's CSPRNG (uniform: bytes past the largest
/// multiple of the alphabet's size are drawn again).
pub fn random_text(len: usize, alphabet: &[u8]) -> Result<String, CatalogError> {
    let n = alphabet.len();
    let cut = 256 - 256 % n;
    let mut out = String::with_capacity(len);
    let mut buf = [0u8; 64];
    while out.len() < len {
        getrandom::fill(&mut buf).map_err(|e| {
            CatalogError::new(
                ErrorKind::Unavailable,
                format!("the OS random source failed: {e}"),
            )
        })?;
        for &b in &buf {
            if (b as usize) < cut && out.len() < len {
                out.push(alphabet[b as usize % n] as char);
            }
        }
    }
    Ok(out)
}

const ID_CHARS: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
const VALUE_CHARS: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";

/// A new id of `len` characters, taken by nothing `taken` names.
fn new_id(len: usize, taken: impl Fn(&str) -> bool) -> Result<String, CatalogError> {
    for _ in 0..32 {
        let id = random_text(len, ID_CHARS)?;
        if !taken(&id) {
            return Ok(id);
        }
    }
    Err(CatalogError::new(
        ErrorKind::Unavailable,
        "no free id found; try again",
    ))
}

fn json(v: &impl serde::Serialize) -> Option<String> {
    // The records are plain data: serializing them cannot fail.
    Some(serde_json::to_string(v).unwrap_or_default())
}

fn put(name: String, v: &impl serde::Serialize) -> Record {
    Record {
        name,
        value: json(v),
    }
}

fn remove(name: String) -> Record {
    Record { name, value: None }
}

/// AWS's `StageKey` in `CreateApiKey`.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct StageKey {
    #[serde(default)]
    pub rest_api_id: Option<String>,
    #[serde(default)]
    pub stage_name: Option<String>,
}

/// AWS's `CreateApiKey` body.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct CreateApiKey {
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub description: Option<String>,
    /// AWS's default: a new key is disabled unless asked.
    #[serde(default)]
    pub enabled: bool,
    #[serde(default)]
    pub generate_distinct_id: Option<bool>,
    #[serde(default)]
    pub value: Option<String>,
    #[serde(default)]
    pub stage_keys: Vec<StageKey>,
    #[serde(default)]
    pub customer_id: Option<String>,
    #[serde(default)]
    pub tags: BTreeMap<String, String>,
}

/// A key just made, and its value (shown once: only its hash is kept).
#[derive(Debug, Clone)]
pub struct NewKey {
    pub record: ApiKeyRecord,
    pub value: String,
}

/// Whether a key value is taken, by a file key or a runtime one.
fn value_taken(state: &State, snap: &Snapshot, hash: &crate::snapshot::KeyHash) -> bool {
    snap.key_index.contains_key(hash) || state.by_hash.contains_key(hash)
}

fn check_value(v: &str) -> Result<(), CatalogError> {
    let n = v.chars().count();
    if !(MIN_VALUE..=MAX_VALUE).contains(&n) {
        return Err(bad(format!(
            "An API key value must be between {MIN_VALUE} and {MAX_VALUE} characters"
        )));
    }
    if v.chars().any(|c| c.is_control() || c.is_whitespace()) {
        return Err(bad(
            "An API key value cannot contain spaces or control characters",
        ));
    }
    Ok(())
}

/// `CreateApiKey`.
pub fn create_api_key(
    state: &State,
    snap: &Snapshot,
    input: &CreateApiKey,
    now: Nanos,
) -> Result<(Vec<Record>, NewKey), CatalogError> {
    check_text("name", input.name.as_deref(), MAX_NAME)?;
    check_text("description", input.description.as_deref(), MAX_TEXT)?;
    check_text("customerId", input.customer_id.as_deref(), MAX_NAME)?;
    check_tags(&input.tags)?;
    if state.keys.len() >= MAX_KEYS {
        return Err(CatalogError::new(
            ErrorKind::LimitExceeded,
            format!("the runtime catalog holds {MAX_KEYS} keys, its most"),
        ));
    }
    let mut stage_keys = Vec::with_capacity(input.stage_keys.len());
    for sk in &input.stage_keys {
        let (Some(api), Some(stage)) = (&sk.rest_api_id, &sk.stage_name) else {
            return Err(bad("a stage key needs restApiId and stageName"));
        };
        if snap.stage(api, stage).is_none() {
            return Err(bad(format!(
                "Invalid stage identifier specified {api}/{stage}"
            )));
        }
        stage_keys.push(format!("{api}/{stage}"));
    }
    let value = match &input.value {
        Some(v) => {
            check_value(v)?;
            v.clone()
        }
        None => random_text(40, VALUE_CHARS)?,
    };
    let hash = hash_key(&value);
    if value_taken(state, snap, &hash) {
        return Err(conflict("An API key with this value already exists"));
    }
    let id = new_id(10, |id| {
        state.keys.contains_key(id) || snap.key_by_id(id).is_some()
    })?;
    let seconds = now.div_euclid(crate::clock::NANOS_PER_SEC);
    let record = ApiKeyRecord {
        id: id.clone(),
        name: input.name.clone(),
        description: input.description.clone(),
        enabled: input.enabled,
        customer_id: input.customer_id.clone(),
        created_date: seconds,
        last_updated_date: seconds,
        stage_keys,
        tags: input.tags.clone(),
        value_sha256: hash,
    };
    Ok((vec![put(key_name(&id), &record)], NewKey { record, value }))
}

/// AWS's `PatchOperation`.
#[derive(Debug, Clone, Deserialize, Default)]
pub struct PatchOperation {
    pub op: String,
    pub path: String,
    #[serde(default)]
    pub value: Option<String>,
    #[serde(default)]
    pub from: Option<String>,
}

/// AWS's patch body: `{"patchOperations": […]}`.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct Patch {
    #[serde(default)]
    pub patch_operations: Vec<PatchOperation>,
}

fn patch_bool(op: &PatchOperation) -> Result<bool, CatalogError> {
    match op.value.as_deref().map(str::to_ascii_lowercase).as_deref() {
        Some("true") => Ok(true),
        Some("false") => Ok(false),
        _ => Err(bad(format!(
            "Invalid value for {}: `true` or `false`",
            op.path
        ))),
    }
}

fn invalid_patch(op: &PatchOperation) -> CatalogError {
    bad(format!(
        "Invalid patch path '{}' specified for op '{}'",
        op.path, op.op
    ))
}

/// A runtime key to change, or why not.
fn runtime_key<'s>(
    state: &'s State,
    snap: &Snapshot,
    id: &str,
) -> Result<&'s ApiKeyRecord, CatalogError> {
    match state.keys.get(id) {
        Some(k) => Ok(k),
        None if snap.key_by_id(id).is_some() => Err(in_file(snap, &format!("API key {id}"))),
        None => Err(no_key(id)),
    }
}

/// `UpdateApiKey`: `replace` on `/enabled`, `/name`, `/description`, `/customerId`.
pub fn update_api_key(
    state: &State,
    snap: &Snapshot,
    id: &str,
    patch: &Patch,
    now: Nanos,
) -> Result<(Vec<Record>, ApiKeyRecord), CatalogError> {
    let mut k = runtime_key(state, snap, id)?.clone();
    for op in &patch.patch_operations {
        if op.op != "replace" {
            return Err(invalid_patch(op));
        }
        let text = || op.value.clone().filter(|v| !v.is_empty());
        match op.path.as_str() {
            "/enabled" => k.enabled = patch_bool(op)?,
            "/name" => k.name = text(),
            "/description" => k.description = text(),
            "/customerId" => k.customer_id = text(),
            _ => return Err(invalid_patch(op)),
        }
    }
    check_text("name", k.name.as_deref(), MAX_NAME)?;
    check_text("description", k.description.as_deref(), MAX_TEXT)?;
    check_text("customerId", k.customer_id.as_deref(), MAX_NAME)?;
    k.last_updated_date = now.div_euclid(crate::clock::NANOS_PER_SEC);
    Ok((vec![put(key_name(id), &k)], k))
}

/// `DeleteApiKey`: the key and its plan memberships.
pub fn delete_api_key(
    state: &State,
    snap: &Snapshot,
    id: &str,
) -> Result<(Vec<Record>, ()), CatalogError> {
    runtime_key(state, snap, id)?;
    let mut records = vec![remove(key_name(id))];
    records.extend(state.plans_of(id).map(|p| remove(member_name(p, id))));
    Ok((records, ()))
}

/// `ImportApiKeys`' answer: the ids imported, and a warning per row left out.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Imported {
    pub ids: Vec<String>,
    pub warnings: Vec<String>,
}

/// The most rows one import takes.
pub const MAX_IMPORT_ROWS: usize = 10_000;

/// `ImportApiKeys` (`format=csv`): AWS's key file — `Name` and `Key` columns (any case, any
/// order), optional `Description`, `Enabled` (default true) and `UsagePlanIds` (several:
/// comma-separated, quoted). A row that cannot be imported is a warning, and with
/// `fail_on_warnings` nothing is imported. A value already present updates that key (AWS:
/// "the most recent version overwriting the previous one").
pub fn import_api_keys(
    state: &State,
    snap: &Snapshot,
    csv_text: &str,
    fail_on_warnings: bool,
    now: Nanos,
) -> Result<(Vec<Record>, Imported), CatalogError> {
    let mut reader = csv::ReaderBuilder::new()
        .flexible(true)
        .trim(csv::Trim::All)
        .from_reader(csv_text.as_bytes());
    let headers: Vec<String> = reader
        .headers()
        .map_err(|e| bad(format!("Invalid API key file: {e}")))?
        .iter()
        .map(str::to_ascii_lowercase)
        .collect();
    let col = |name: &str| headers.iter().position(|h| h == name);
    let (Some(name_col), Some(key_col)) = (col("name"), col("key")) else {
        return Err(bad(
            "Invalid API key file: the Name and Key columns are required",
        ));
    };
    let (desc_col, enabled_col, plans_col) =
        (col("description"), col("enabled"), col("usageplanids"));
    let seconds = now.div_euclid(crate::clock::NANOS_PER_SEC);
    let mut records = Vec::new();
    let mut out = Imported::default();
    // Values and ids of this import, so that a file naming one value twice keeps the last.
    let mut made: BTreeMap<crate::snapshot::KeyHash, (String, usize)> = BTreeMap::new();
    let mut ids_taken: std::collections::HashSet<String> = std::collections::HashSet::new();
    for (i, row) in reader.records().enumerate() {
        let line = i + 2;
        if i >= MAX_IMPORT_ROWS {
            return Err(bad(format!(
                "Invalid API key file: more than {MAX_IMPORT_ROWS} rows"
            )));
        }
        let row = match row {
            Ok(r) => r,
            Err(e) => {
                out.warnings.push(format!("line {line}: {e}"));
                continue;
            }
        };
        let field = |c: Option<usize>| c.and_then(|c| row.get(c)).filter(|v| !v.is_empty());
        let Some(value) = field(Some(key_col)) else {
            out.warnings.push(format!("line {line}: no Key"));
            continue;
        };
        if let Err(e) = check_value(value) {
            out.warnings.push(format!("line {line}: {}", e.message));
            continue;
        }
        let name = field(Some(name_col)).map(str::to_owned);
        let description = field(desc_col).map(str::to_owned);
        if let Err(e) = check_text("Name", name.as_deref(), MAX_NAME)
            .and_then(|_| check_text("Description", description.as_deref(), MAX_TEXT))
        {
            out.warnings.push(format!("line {line}: {}", e.message));
            continue;
        }
        let enabled = match field(enabled_col).map(str::to_ascii_lowercase).as_deref() {
            None | Some("true") => true,
            Some("false") => false,
            Some(other) => {
                out.warnings.push(format!(
                    "line {line}: Enabled is `{other}`, not true or false"
                ));
                continue;
            }
        };
        let plans: Vec<String> = field(plans_col)
            .map(|p| {
                p.trim_matches(|c| c == '\'' || c == '"')
                    .split(',')
                    .map(|s| s.trim().to_owned())
                    .filter(|s| !s.is_empty())
                    .collect()
            })
            .unwrap_or_default();
        if let Some(p) = plans
            .iter()
            .find(|p| !state.plans.contains_key(*p) && snap.plan_by_id(p).is_none())
        {
            out.warnings
                .push(format!("line {line}: Invalid Usage Plan ID specified {p}"));
            continue;
        }
        let hash = hash_key(value);
        if snap.key_index.contains_key(&hash) {
            out.warnings.push(format!(
                "line {line}: the value is a key of the configuration file"
            ));
            continue;
        }
        // An existing runtime key with this value is updated, keeping its id.
        let existing = state
            .by_hash
            .get(&hash)
            .and_then(|k| state.keys.get(&*k.id));
        let id = match (existing, made.get(&hash)) {
            (_, Some((id, _))) => id.clone(),
            (Some(k), None) => k.id.clone(),
            (None, None) => new_id(10, |id| {
                state.keys.contains_key(id)
                    || snap.key_by_id(id).is_some()
                    || ids_taken.contains(id)
            })?,
        };
        ids_taken.insert(id.clone());
        let record = ApiKeyRecord {
            id: id.clone(),
            name,
            description,
            enabled,
            customer_id: existing.and_then(|k| k.customer_id.clone()),
            created_date: existing.map_or(seconds, |k| k.created_date),
            last_updated_date: seconds,
            stage_keys: existing.map(|k| k.stage_keys.clone()).unwrap_or_default(),
            tags: existing.map(|k| k.tags.clone()).unwrap_or_default(),
            value_sha256: hash,
        };
        if let Some((_, at)) = made.get(&hash) {
            records[*at] = put(key_name(&id), &record);
        } else {
            made.insert(hash, (id.clone(), records.len()));
            records.push(put(key_name(&id), &record));
            out.ids.push(id.clone());
        }
        for p in plans {
            if !state.members.contains(&(p.clone(), id.clone())) {
                records.push(put(member_name(&p, &id), &serde_json::json!({})));
            }
        }
    }
    if fail_on_warnings && !out.warnings.is_empty() {
        return Err(bad(format!(
            "{} warning(s), and failonwarnings is set: nothing imported. {}",
            out.warnings.len(),
            out.warnings.join("; ")
        )));
    }
    Ok((records, out))
}

/// AWS's `CreateUsagePlan` body.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct CreateUsagePlan {
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub description: Option<String>,
    #[serde(default)]
    pub api_stages: Vec<ApiStage>,
    #[serde(default)]
    pub throttle: Option<ThrottleSettings>,
    #[serde(default)]
    pub quota: Option<QuotaSettings>,
    #[serde(default)]
    pub tags: BTreeMap<String, String>,
}

/// The stages a plan covers, by (api, stage): a runtime plan's, or a file plan's.
pub fn plan_stages(state: &State, snap: &Snapshot, plan: &str) -> Option<Vec<(String, String)>> {
    if let Some(p) = state.plans.get(plan) {
        return Some(
            p.api_stages
                .iter()
                .map(|s| (s.api_id.clone(), s.stage.clone()))
                .collect(),
        );
    }
    let p = snap.plan_by_id(plan)?;
    Some(
        p.stages
            .iter()
            .filter_map(|(id, _)| snap.stage_names.get(*id as usize))
            .map(|(a, s)| (a.to_string(), s.to_string()))
            .collect(),
    )
}

/// A plan record checked whole against the configuration in force (its stages and methods
/// exist, its numbers are in bounds), with AWS's rules.
fn check_plan(snap: &Snapshot, p: &UsagePlanRecord) -> Result<(), CatalogError> {
    if p.name.is_empty() {
        return Err(bad("A usage plan needs a name"));
    }
    check_text("name", Some(&p.name), MAX_NAME)?;
    check_text("description", p.description.as_deref(), MAX_TEXT)?;
    check_tags(&p.tags)?;
    let mut seen = std::collections::HashSet::new();
    for s in &p.api_stages {
        let Some(stage) = snap.stage(&s.api_id, &s.stage) else {
            return Err(bad(format!(
                "Invalid stage identifier specified {}:{} (no such API stage in the configuration)",
                s.api_id, s.stage
            )));
        };
        if !seen.insert((&s.api_id, &s.stage)) {
            return Err(conflict(format!(
                "API stage {}:{} is in the plan twice",
                s.api_id, s.stage
            )));
        }
        if !s.throttle.is_empty() && p.throttle.is_none() {
            // AWS's own rule and words.
            return Err(bad(
                "Can not define fine grain throttling if usage plan throttle is not defined",
            ));
        }
        for m in s.throttle.keys() {
            if stage.method_by_name(m).is_none() {
                return Err(bad(format!(
                    "Invalid method {m} for API stage {}:{} (no such method in the configuration)",
                    s.api_id, s.stage
                )));
            }
        }
    }
    if let Some(q) = &p.quota {
        if super::period_of(&q.period).is_none() {
            return Err(bad(format!(
                "Invalid quota period `{}`: DAY, WEEK or MONTH",
                q.period
            )));
        }
        if q.limit < 0 || q.offset < 0 || q.offset > q.limit {
            return Err(bad("A quota needs 0 <= offset <= limit"));
        }
    }
    super::compile_plan(p).map(drop).map_err(bad)
}

/// The first day of a quota's initial period (where its offset applies): the period that
/// contains `now`.
fn initial_period(
    snap: &Snapshot,
    q: Option<&QuotaSettings>,
    now: Nanos,
) -> Option<chrono::NaiveDate> {
    let q = q?;
    let period = super::period_of(&q.period)?;
    let w = crate::limit::quota::window(period, snap.week_start, now);
    Some(chrono::DateTime::from_timestamp_nanos(w.start).date_naive())
}

/// `CreateUsagePlan`.
pub fn create_usage_plan(
    state: &State,
    snap: &Snapshot,
    input: &CreateUsagePlan,
    now: Nanos,
) -> Result<(Vec<Record>, UsagePlanRecord), CatalogError> {
    if state.plans.len() >= MAX_PLANS {
        return Err(CatalogError::new(
            ErrorKind::LimitExceeded,
            format!("the runtime catalog holds {MAX_PLANS} plans, its most"),
        ));
    }
    let id = new_id(6, |id| {
        state.plans.contains_key(id) || snap.plan_by_id(id).is_some()
    })?;
    let plan = UsagePlanRecord {
        id: id.clone(),
        name: input.name.clone().unwrap_or_default(),
        description: input.description.clone(),
        api_stages: input.api_stages.clone(),
        throttle: input.throttle,
        quota: input.quota.clone(),
        product_code: None,
        tags: input.tags.clone(),
        initial_period: initial_period(snap, input.quota.as_ref(), now),
    };
    check_plan(snap, &plan)?;
    Ok((vec![put(plan_name(&id), &plan)], plan))
}

/// The runtime plan `id`; a plan of the configuration file is refused (ConflictException naming
/// the file), an unknown one is NotFound.
pub fn runtime_plan<'s>(
    state: &'s State,
    snap: &Snapshot,
    id: &str,
) -> Result<&'s UsagePlanRecord, CatalogError> {
    match state.plans.get(id) {
        Some(p) => Ok(p),
        None if snap.plan_by_id(id).is_some() => Err(in_file(snap, &format!("Usage plan {id}"))),
        None => Err(no_plan(id)),
    }
}

/// A patch path under `/apiStages/<api>:<stage>`.
struct StagePath {
    api: String,
    stage: String,
    /// `throttle/<resource path>/<METHOD>` and the field after it (`rateLimit`, `burstLimit`),
    /// when the path goes that far; `None` for `…/throttle` (every method's).
    method: Option<(String, Option<&'static str>)>,
}

/// `/apiStages/<api>:<stage>/throttle/<resource path>/<METHOD>[/rateLimit|/burstLimit]`, the
/// resource path's `/` written `~1` (or not).
fn stage_throttle_path(path: &str) -> Option<StagePath> {
    let rest = path.strip_prefix("/apiStages/")?;
    let (stage_ref, rest) = rest.split_once('/')?;
    let (api, stage) = stage_ref.split_once(':')?;
    let method = match rest {
        "throttle" => None,
        r => {
            let m = r
                .strip_prefix("throttle/")?
                .replace("~1", "/")
                .replace("~0", "~");
            // The resource path's own leading `/` may have been taken for the separator.
            let m = if m.starts_with('/') {
                m
            } else {
                format!("/{m}")
            };
            Some(match m.rsplit_once('/') {
                Some((m, "rateLimit")) => (m.to_owned(), Some("rateLimit")),
                Some((m, "burstLimit")) => (m.to_owned(), Some("burstLimit")),
                _ => (m, None),
            })
        }
    };
    Some(StagePath {
        api: api.to_owned(),
        stage: stage.to_owned(),
        method,
    })
}

fn patch_number<T: std::str::FromStr>(op: &PatchOperation) -> Result<T, CatalogError> {
    op.value
        .as_deref()
        .and_then(|v| v.trim().parse().ok())
        .ok_or_else(|| bad(format!("Invalid value for {}: a number", op.path)))
}

/// One patch operation on a plan.
fn patch_plan(p: &mut UsagePlanRecord, op: &PatchOperation) -> Result<(), CatalogError> {
    let text = || op.value.clone().filter(|v| !v.is_empty());
    match (op.op.as_str(), op.path.as_str()) {
        ("replace", "/name") => p.name = text().unwrap_or_default(),
        ("replace", "/description") => p.description = text(),
        ("replace", "/productCode") => p.product_code = text(),
        ("replace", "/throttle/rateLimit") => {
            p.throttle.get_or_insert_default().rate_limit = Some(patch_number(op)?)
        }
        ("replace", "/throttle/burstLimit") => {
            p.throttle.get_or_insert_default().burst_limit = Some(patch_number(op)?)
        }
        ("remove", "/throttle") => p.throttle = None,
        ("replace", "/quota/limit") => quota_mut(p).limit = patch_number(op)?,
        ("replace", "/quota/offset") => quota_mut(p).offset = patch_number(op)?,
        ("replace", "/quota/period") => quota_mut(p).period = op.value.clone().unwrap_or_default(),
        ("remove", "/quota") => p.quota = None,
        ("add" | "remove", "/apiStages") => {
            let value = op.value.as_deref().unwrap_or("");
            let Some((api, stage)) = value.split_once(':') else {
                return Err(bad(format!(
                    "Invalid value for /apiStages: `apiId:stageName`, not `{value}`"
                )));
            };
            let at = p
                .api_stages
                .iter()
                .position(|s| s.api_id == api && s.stage == stage);
            match (op.op.as_str(), at) {
                ("add", None) => p.api_stages.push(ApiStage {
                    api_id: api.to_owned(),
                    stage: stage.to_owned(),
                    throttle: BTreeMap::new(),
                }),
                ("add", Some(_)) => {
                    return Err(conflict(format!(
                        "API stage {value} is already in the plan"
                    )));
                }
                (_, Some(i)) => {
                    p.api_stages.remove(i);
                }
                (_, None) => return Err(bad(format!("API stage {value} is not in the plan"))),
            }
        }
        (kind @ ("replace" | "add" | "remove"), path) if path.starts_with("/apiStages/") => {
            let Some(StagePath { api, stage, method }) = stage_throttle_path(path) else {
                return Err(invalid_patch(op));
            };
            let Some(s) = p
                .api_stages
                .iter_mut()
                .find(|s| s.api_id == api && s.stage == stage)
            else {
                return Err(bad(format!("API stage {api}:{stage} is not in the plan")));
            };
            match (kind, method) {
                ("remove", None) => s.throttle.clear(),
                ("remove", Some((m, None))) => {
                    if s.throttle.remove(&m).is_none() {
                        return Err(bad(format!("no throttle for {m} on {api}:{stage}")));
                    }
                }
                ("replace" | "add", Some((m, Some(field)))) => {
                    let t = s.throttle.entry(m).or_default();
                    if field == "rateLimit" {
                        t.rate_limit = Some(patch_number(op)?);
                    } else {
                        t.burst_limit = Some(patch_number(op)?);
                    }
                }
                _ => return Err(invalid_patch(op)),
            }
        }
        _ => return Err(invalid_patch(op)),
    }
    Ok(())
}

fn quota_mut(p: &mut UsagePlanRecord) -> &mut QuotaSettings {
    p.quota.get_or_insert_with(|| QuotaSettings {
        limit: 0,
        offset: 0,
        period: "DAY".to_owned(),
    })
}

/// Refuses a plan change that would put one of its keys in two plans on one stage.
fn check_members(state: &State, snap: &Snapshot, p: &UsagePlanRecord) -> Result<(), CatalogError> {
    for key in state.keys_of(&p.id) {
        for other in state.plans_of(key).filter(|o| *o != p.id) {
            let theirs = plan_stages(state, snap, other).unwrap_or_default();
            if let Some(s) = p.api_stages.iter().find(|s| {
                theirs
                    .iter()
                    .any(|(a, st)| *a == s.api_id && *st == s.stage)
            }) {
                return Err(conflict(format!(
                    "API key {key} of this plan is in usage plan {other}, which covers {}:{} too",
                    s.api_id, s.stage
                )));
            }
        }
    }
    Ok(())
}

/// `UpdateUsagePlan`: AWS's patch paths (`/name`, `/description`, `/productCode`,
/// `/throttle/rateLimit`, `/throttle/burstLimit`, `/quota/limit`, `/quota/offset`,
/// `/quota/period`, `remove /throttle`, `remove /quota`, `add|remove /apiStages` with
/// `apiId:stage`, and per-method throttles
/// `/apiStages/<apiId>:<stage>/throttle/<resource path>/<METHOD>/rateLimit|burstLimit`).
/// All operations apply, or none.
pub fn update_usage_plan(
    state: &State,
    snap: &Snapshot,
    id: &str,
    patch: &Patch,
    now: Nanos,
) -> Result<(Vec<Record>, UsagePlanRecord), CatalogError> {
    let old = runtime_plan(state, snap, id)?;
    let mut p = old.clone();
    for op in &patch.patch_operations {
        patch_plan(&mut p, op)?;
    }
    if p.quota != old.quota {
        p.initial_period = initial_period(snap, p.quota.as_ref(), now);
    }
    check_plan(snap, &p)?;
    check_members(state, snap, &p)?;
    Ok((vec![put(plan_name(id), &p)], p))
}

/// `DeleteUsagePlan`: the plan and its memberships (the keys stay).
pub fn delete_usage_plan(
    state: &State,
    snap: &Snapshot,
    id: &str,
) -> Result<(Vec<Record>, ()), CatalogError> {
    runtime_plan(state, snap, id)?;
    let mut records = vec![remove(plan_name(id))];
    records.extend(state.keys_of(id).map(|k| remove(member_name(id, k))));
    Ok((records, ()))
}

/// `CreateUsagePlanKey`: a runtime key joins a plan (a runtime plan or one of the file's). A
/// key may be in several plans, but not in two that cover the same API stage (AWS's rule).
pub fn create_usage_plan_key(
    state: &State,
    snap: &Snapshot,
    plan: &str,
    key: &str,
    key_type: Option<&str>,
) -> Result<(Vec<Record>, ApiKeyRecord), CatalogError> {
    if key_type.is_some_and(|t| t != "API_KEY") {
        return Err(bad("keyType must be API_KEY"));
    }
    let Some(stages) = plan_stages(state, snap, plan) else {
        return Err(no_plan(plan));
    };
    let k = runtime_key(state, snap, key)
        .map_err(|e| match e.kind {
            ErrorKind::Conflict => in_file(snap, &format!("API key {key} and its plans")),
            _ => e,
        })?
        .clone();
    if state.members.contains(&(plan.to_owned(), key.to_owned())) {
        return Err(conflict(format!(
            "Usage plan {plan} already has API key {key}"
        )));
    }
    for other in state.plans_of(key) {
        let theirs = plan_stages(state, snap, other).unwrap_or_default();
        if let Some((a, s)) = stages.iter().find(|s| theirs.contains(s)) {
            return Err(conflict(format!(
                "API key {key} is already in usage plan {other}, which covers {a}:{s} too"
            )));
        }
    }
    Ok((vec![put(member_name(plan, key), &serde_json::json!({}))], k))
}

/// `DeleteUsagePlanKey`.
pub fn delete_usage_plan_key(
    state: &State,
    snap: &Snapshot,
    plan: &str,
    key: &str,
) -> Result<(Vec<Record>, ()), CatalogError> {
    if plan_stages(state, snap, plan).is_none() {
        return Err(no_plan(plan));
    }
    if !state.members.contains(&(plan.to_owned(), key.to_owned())) {
        if snap
            .key_by_id(key)
            .is_some_and(|k| k.plans.iter().any(|&i| *snap.plans[i as usize].id == *plan))
        {
            return Err(in_file(
                snap,
                &format!("API key {key}'s place in usage plan {plan}"),
            ));
        }
        return Err(no_key(key));
    }
    Ok((vec![remove(member_name(plan, key))], ()))
}
