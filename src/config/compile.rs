//! `ConfigFile` → `Snapshot`: every cross-reference and range check, every error collected.

use std::collections::HashMap;
use std::path::Path as FsPath;
use std::sync::Arc;

use indexmap::IndexMap;

use super::error::{ConfigError, ErrorKind};
use super::file::{ConfigFile, QuotaFile, ThrottleFile, UsagePlanFile};
use super::keys::{self, KeyEntry, Origin};
use super::location::Path;
use crate::limit::{BucketSpec, FastMap, Quota};
use crate::snapshot::responses::{GatewayResponse, GatewayResponses, ResponseType};
use crate::snapshot::{
    Api, ApiKey, Domains, KeyHash, KeySource, Method, Plan, RlsSettings, Snapshot, Stage, Throttle,
    UnknownMethods,
};

/// AWS's default account-level throttle (requests per second, burst).
pub const AWS_ACCOUNT_RATE: f64 = 10_000.0;
pub const AWS_ACCOUNT_BURST: u64 = 5_000;

/// The highest rate accepted, in requests per second.
const MAX_RATE: f64 = 1e9;
/// The largest quota limit: AWS's (`QuotaSettings.limit` is a 32-bit integer).
const MAX_QUOTA_LIMIT: i64 = i32::MAX as i64;

/// A compiled snapshot and the warnings its file deserves.
#[derive(Debug)]
pub struct Compiled {
    pub snapshot: Snapshot,
    pub warnings: Vec<String>,
    /// The files the snapshot was built from (the config file, when loaded from one, and the
    /// key files it names): what reload watches.
    pub sources: Vec<std::path::PathBuf>,
}

/// Compiles a parsed file. `base_dir` resolves `api_keys_files`.
pub fn compile(file: &ConfigFile, base_dir: &FsPath) -> Result<Compiled, Vec<ConfigError>> {
    let mut c = Compiler::default();
    let root = Path::root();
    if file.version != 1 {
        c.err(root.key("version"), ErrorKind::Version(file.version));
    }

    let account = match file.account.as_ref().and_then(|a| a.throttle) {
        Some(t) => c.throttle(&t, &root.key("account").key("throttle")),
        None => Some(Throttle {
            rate: AWS_ACCOUNT_RATE,
            spec: BucketSpec {
                rate_micro: (AWS_ACCOUNT_RATE * 1e6) as u64,
                burst: AWS_ACCOUNT_BURST,
            },
        }),
    };

    let key_source = c.key_source(file);
    let gateway_responses =
        c.gateway_responses(&file.gateway_responses, &root.key("gateway_responses"));
    let week_start = file.quota_week_start.unwrap_or_default().into();

    let apis = c.apis(file);
    let stage_names = stage_names(&apis);
    let domains = c.domains(file, &apis);
    let workloads = c.workloads(file, &apis);
    let (plans, plan_index) = c.plans(file, &apis);

    let sources: Vec<std::path::PathBuf> = file
        .api_keys_files
        .iter()
        .map(|f| base_dir.join(f))
        .collect();
    let (mut entries, plain) = keys::yaml_entries(file);
    let csv_warnings = c.key_files(file, base_dir, &mut entries);
    let (keys, key_index) = c.keys(entries, &plans, &plan_index, &stage_names);
    let mut key_order: Vec<u32> = (0..keys.len() as u32).collect();
    key_order.sort_unstable_by(|&a, &b| keys[a as usize].id.cmp(&keys[b as usize].id));
    let (default_api, default_stage) = c.defaults(file, &apis);
    let responses = file.responses.clone().unwrap_or_default();
    let rls = rls_settings(file, &mut c);

    // Every error of the file, in one pass.
    if !c.errors.is_empty() {
        return Err(c.errors);
    }
    let mut warnings = csv_warnings;
    if !plain.is_empty() {
        let shown: Vec<&str> = plain.iter().take(5).map(String::as_str).collect();
        warnings.push(format!(
            "{} API key(s) given as plain-text `value` ({}{}); prefer `value_sha256` (see `plangate hash-key`)",
            plain.len(),
            shown.join(", "),
            if plain.len() > shown.len() { ", …" } else { "" }
        ));
    }
    Ok(Compiled {
        snapshot: Snapshot {
            generation: 0,
            account,
            key_source,
            gateway_responses,
            week_start,
            default_api,
            default_stage,
            rate_limit_headers: responses.rate_limit_headers.unwrap_or_default(),
            forward_api_key: responses.forward_api_key.unwrap_or(true),
            dynamic_metadata: responses.dynamic_metadata.unwrap_or(true),
            rls,
            apis,
            stage_names,
            domains,
            unknown_hosts: file.unknown_hosts.unwrap_or_default(),
            workloads,
            path_parameters: file.path_parameters.unwrap_or_default(),
            plans,
            plan_index,
            keys,
            key_index,
            key_order,
            key_search: Default::default(),
            source: String::new(),
        },
        warnings,
        sources,
    })
}

impl Compiler {
    /// Appends the keys of the CSV key files (`api_keys_files`, relative to `base_dir`) to
    /// `entries`; their errors are the compiler's, their warnings returned.
    fn key_files(
        &mut self,
        file: &ConfigFile,
        base_dir: &FsPath,
        entries: &mut Vec<keys::KeyEntry>,
    ) -> Vec<String> {
        let mut warnings = Vec::new();
        for (i, name) in file.api_keys_files.iter().enumerate() {
            let mut read = keys::read_csv(&base_dir.join(name));
            entries.append(&mut read.keys);
            for e in &mut read.errors {
                if e.file.is_none() {
                    e.path = Path::root().key("api_keys_files").index(i);
                }
            }
            self.errors.append(&mut read.errors);
            warnings.append(&mut read.warnings);
        }
        warnings
    }

    /// The default API and stage (`defaults`), each checked to exist.
    fn defaults(
        &mut self,
        file: &ConfigFile,
        apis: &FastMap<String, Api>,
    ) -> (Option<String>, Option<String>) {
        let Some(d) = &file.defaults else {
            return (None, None);
        };
        let mut unknown = |what: &'static str, name: &String| {
            let at = Path::root()
                .key("defaults")
                .key(if what == "API" { "api" } else { "stage" });
            self.err(
                at,
                ErrorKind::UnknownDefault {
                    what,
                    name: name.clone(),
                },
            );
        };
        if let Some(a) = &d.api
            && !apis.contains_key(a)
        {
            unknown("API", a);
        }
        if let Some(s) = &d.stage {
            let known = match &d.api {
                Some(a) => apis.get(a).is_some_and(|api| api.stages.contains_key(s)),
                None => apis.values().any(|api| api.stages.contains_key(s)),
            };
            if !known {
                unknown("stage", s);
            }
        }
        (d.api.clone(), d.stage.clone())
    }
}

/// The RLS domain and descriptor keys: non-empty, and the keys distinct.
fn rls_settings(file: &ConfigFile, c: &mut Compiler) -> RlsSettings {
    let mut rls = RlsSettings::default();
    let Some(f) = &file.rate_limit_service else {
        return rls;
    };
    let path = Path::root().key("rate_limit_service");
    if let Some(d) = &f.domain {
        if d.is_empty() {
            c.invalid(path.key("domain"), "RLS domain", "must not be empty");
        }
        rls.domain = d.clone();
    }
    if let Some(k) = &f.descriptor_keys {
        let kp = path.key("descriptor_keys");
        for (name, given, slot) in [
            ("api", &k.api, &mut rls.api),
            ("stage", &k.stage, &mut rls.stage),
            ("api_key", &k.api_key, &mut rls.api_key),
            ("method", &k.method, &mut rls.method),
            ("path", &k.path, &mut rls.path),
            ("host", &k.host, &mut rls.host),
        ] {
            if let Some(v) = given {
                if v.is_empty() {
                    c.invalid(kp.key(name), "descriptor key", "must not be empty");
                }
                *slot = v.clone();
            }
        }
        let all = [
            ("api", &rls.api, k.api.is_some()),
            ("stage", &rls.stage, k.stage.is_some()),
            ("api_key", &rls.api_key, k.api_key.is_some()),
            ("method", &rls.method, k.method.is_some()),
            ("path", &rls.path, k.path.is_some()),
            ("host", &rls.host, k.host.is_some()),
        ];
        for (i, (name, key, given)) in all.iter().enumerate() {
            if all[..i].iter().any(|(_, k, _)| k == key) {
                // Shown where the second use is written (the mapping, if it is a default).
                let at = if *given { kp.key(*name) } else { kp.clone() };
                c.invalid(
                    at,
                    "descriptor keys",
                    format!("`{key}` names two parts of a request"),
                );
            }
        }
    }
    rls
}

/// Names of APIs, stages and plans: they appear in counter names and metric labels.
fn check_name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("must not be empty".to_owned());
    }
    if name.len() > 128 {
        return Err("must be at most 128 characters".to_owned());
    }
    if let Some(c) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.')))
    {
        return Err(format!(
            "`{name}` contains `{c}`; use letters, digits, `-`, `_` and `.`"
        ));
    }
    Ok(())
}

/// Splits a method key `/pets/{petId}/GET` into a validated template and verb.
pub(crate) fn method_key(key: &str) -> Result<(&str, &str), String> {
    let Some((template, verb)) = key.rsplit_once('/') else {
        return Err(format!(
            "`{key}` is not `<path>/<VERB>` (e.g. `/pets/GET`, `//GET` for the root)"
        ));
    };
    let template = if template.is_empty() { "/" } else { template };
    if verb != "*" && (verb.is_empty() || !verb.bytes().all(|b| b.is_ascii_uppercase())) {
        return Err(format!(
            "`{key}`: the verb `{verb}` must be upper case (GET, POST, …), or `ANY` or `*` for every verb"
        ));
    }
    if !template.starts_with('/') {
        return Err(format!("`{key}`: the path must start with `/`"));
    }
    if template != "/" {
        let segs: Vec<&str> = template[1..].split('/').collect();
        for (i, seg) in segs.iter().enumerate() {
            if seg.is_empty() {
                return Err(format!("`{key}`: empty path segment"));
            }
            if let Some(inner) = seg.strip_prefix('{') {
                let Some(name) = inner.strip_suffix('}') else {
                    return Err(format!("`{key}`: segment `{seg}` has an unclosed `{{`"));
                };
                let (name, greedy) = match name.strip_suffix('+') {
                    Some(n) => (n, true),
                    None => (name, false),
                };
                if name.is_empty()
                    || !name
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
                {
                    return Err(format!("`{key}`: bad parameter name in `{seg}`"));
                }
                if greedy && i + 1 != segs.len() {
                    return Err(format!(
                        "`{key}`: a greedy `{seg}` must be the last segment"
                    ));
                }
            } else if seg.contains(['{', '}']) {
                return Err(format!(
                    "`{key}`: segment `{seg}` mixes text and a parameter; a parameter is a whole segment"
                ));
            } else if *seg == "." || *seg == ".." {
                // Requests are matched on their canonical path, which has no dot segments: such
                // a method would never apply.
                return Err(format!(
                    "`{key}`: a `{seg}` segment never matches (request paths are matched with dot segments removed)"
                ));
            } else if let Some(c) = seg.chars().find(|c| {
                matches!(c, '%' | ';' | '?' | '#' | '\\') || c.is_whitespace() || c.is_control()
            }) {
                return Err(format!(
                    "`{key}`: segment `{seg}` contains `{}` and would never match (requests are matched with escapes decoded and `;` parameters removed): write the path as it is served",
                    c.escape_default()
                ));
            }
        }
    }
    Ok((template, verb))
}

#[derive(Default)]
struct Compiler {
    errors: Vec<ConfigError>,
}

impl Compiler {
    fn err(&mut self, path: Path, kind: ErrorKind) {
        self.errors.push(ConfigError::new(path, kind));
    }

    fn invalid(&mut self, path: Path, what: &'static str, reason: impl Into<String>) {
        self.err(
            path,
            ErrorKind::Invalid {
                what,
                reason: reason.into(),
            },
        );
    }

    fn throttle(&mut self, t: &ThrottleFile, path: &Path) -> Option<Throttle> {
        match resolve_throttle(t.rate, t.burst) {
            Ok(t) => Some(t),
            Err(errors) => {
                for (field, what, message) in errors {
                    let at = if field.is_empty() {
                        path.clone()
                    } else {
                        path.key(field)
                    };
                    self.invalid(at, what, message);
                }
                None
            }
        }
    }

    /// Customised refusals of one level (top level or an API).
    fn gateway_responses(
        &mut self,
        file: &IndexMap<String, super::file::GatewayResponseFile>,
        path: &Path,
    ) -> GatewayResponses {
        let mut out = GatewayResponses::default();
        for (name, r) in file {
            let rp = path.key(name.as_str());
            let Some(t) = ResponseType::parse(name) else {
                let known: Vec<&str> = ResponseType::ALL.iter().map(|t| t.as_str()).collect();
                self.invalid(
                    rp,
                    "gateway response type",
                    format!("`{name}` is not one of {}", known.join(", ")),
                );
                continue;
            };
            let status = match r.status {
                None => None,
                Some(s)
                    if (400..600).contains(&s)
                        && envoy_types::ext_authz::v3::pb::HttpStatusCode::try_from(s as i32)
                            .is_ok() =>
                {
                    Some(s as u16)
                }
                Some(s) => {
                    self.invalid(
                        rp.key("status"),
                        "gateway response status",
                        format!(
                            "{s} is not an HTTP error status Envoy can answer with (400 to 599)"
                        ),
                    );
                    None
                }
            };
            let mut headers = Vec::with_capacity(r.headers.len());
            for (h, v) in &r.headers {
                let name_ok = !h.is_empty()
                    && h.bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b));
                if !name_ok {
                    self.invalid(
                        rp.key("headers").key(h.as_str()),
                        "gateway response header",
                        format!("`{h}` is not a header name"),
                    );
                    continue;
                }
                if v.bytes().any(|b| b == b'\r' || b == b'\n' || b == 0) {
                    self.invalid(
                        rp.key("headers").key(h.as_str()),
                        "gateway response header",
                        "a header value cannot hold line breaks".to_owned(),
                    );
                    continue;
                }
                headers.push((h.to_ascii_lowercase(), v.clone()));
            }
            if r.body.as_ref().is_some_and(|b| b.len() > MAX_RESPONSE_BODY) {
                self.invalid(
                    rp.key("body"),
                    "gateway response body",
                    format!("longer than {MAX_RESPONSE_BODY} bytes"),
                );
            } else if let Some(v) = r
                .body
                .as_deref()
                .and_then(crate::snapshot::responses::unsupported_variable)
            {
                self.invalid(
                    rp.key("body"),
                    "gateway response body",
                    format!(
                        "`{v}` is not filled in by plangate (it would be sent as written); the variables are {}",
                        crate::snapshot::responses::TEMPLATE_VARIABLES.join(", ")
                    ),
                );
            }
            out.set(
                t,
                GatewayResponse {
                    status,
                    headers,
                    body: r.body.clone(),
                },
            );
        }
        out
    }

    fn key_source(&mut self, file: &ConfigFile) -> KeySource {
        match &file.api_key_source {
            Some(src) => self.key_source_of(src, Path::root().key("api_key_source")),
            None => KeySource::Header("x-api-key".to_owned()),
        }
    }

    /// A key source as written at `path` (top level or an API's).
    fn key_source_of(&mut self, src: &super::file::ApiKeySourceFile, path: Path) -> KeySource {
        let default = KeySource::Header("x-api-key".to_owned());
        match (&src.header, &src.metadata) {
            (Some(_), Some(_)) => {
                self.invalid(
                    path,
                    "API key source",
                    "give `header` or `metadata`, not both",
                );
                default
            }
            (Some(h), None) => {
                let valid = !h.is_empty()
                    && h.bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
                if !valid {
                    self.invalid(
                        path.key("header"),
                        "API key header",
                        format!("`{h}` is not a header name"),
                    );
                }
                KeySource::Header(h.to_ascii_lowercase())
            }
            (None, Some(m)) => {
                if m.namespace.is_empty() || m.path.is_empty() {
                    self.invalid(
                        path.key("metadata"),
                        "API key metadata",
                        "needs a `namespace` and a non-empty `path`",
                    );
                }
                KeySource::Metadata {
                    namespace: m.namespace.clone(),
                    path: m.path.clone(),
                }
            }
            (None, None) => default,
        }
    }

    fn apis(&mut self, file: &ConfigFile) -> FastMap<String, Api> {
        let mut apis = FastMap::with_capacity_and_hasher(file.apis.len(), Default::default());
        let mut stage_id = 0u32;
        for (api_name, api) in &file.apis {
            let api_path = Path::root().key("apis").key(api_name.as_str());
            if let Err(e) = check_name(api_name) {
                self.invalid(api_path.clone(), "API name", e);
            }
            let api_arc: Arc<str> = Arc::from(api_name.as_str());
            let mut stages =
                FastMap::with_capacity_and_hasher(api.stages.len(), Default::default());
            for (stage_name, st) in &api.stages {
                let sp = api_path.key("stages").key(stage_name.as_str());
                if let Err(e) = check_name(stage_name) {
                    self.invalid(sp.clone(), "stage name", e);
                }
                let throttle = st
                    .throttle
                    .as_ref()
                    .and_then(|t| self.throttle(t, &sp.key("throttle")));
                let key_required = st.api_key_required.unwrap_or(true);
                let mut stage = Stage::new(
                    stage_id,
                    api_arc.clone(),
                    Arc::from(stage_name.as_str()),
                    throttle,
                    key_required,
                    st.unknown_methods.unwrap_or(UnknownMethods::Allow),
                );
                stage.enforce = st.enforce.unwrap_or(true);
                stage_id += 1;
                for (mkey, m) in &st.methods {
                    let mp = sp.key("methods").key(mkey.as_str());
                    let (template, verb) = match method_key(mkey) {
                        Ok(tv) => tv,
                        Err(e) => {
                            self.invalid(mp, "method", e);
                            continue;
                        }
                    };
                    let own = m
                        .throttle
                        .as_ref()
                        .map(|t| self.throttle(t, &mp.key("throttle")));
                    let method = Method {
                        name: Arc::from(mkey.as_str()),
                        counter: Arc::from(format!("{api_name}/{stage_name} {mkey}")),
                        throttle: own.unwrap_or(throttle),
                        api_key_required: m.api_key_required.unwrap_or(key_required),
                    };
                    if let Err(e) = stage.add_method(template, verb, method) {
                        self.invalid(mp, "method", format!("`{mkey}`: {e}"));
                    }
                }
                stages.insert(stage_name.clone(), Arc::new(stage));
            }
            let key_source = api
                .api_key_source
                .as_ref()
                .map(|src| self.key_source_of(src, api_path.key("api_key_source")));
            let gateway_responses =
                self.gateway_responses(&api.gateway_responses, &api_path.key("gateway_responses"));
            apis.insert(
                api_name.clone(),
                Api {
                    stages,
                    key_source,
                    gateway_responses,
                },
            );
        }
        apis
    }

    /// Workload identities → stages.
    fn workloads(
        &mut self,
        file: &ConfigFile,
        apis: &FastMap<String, Api>,
    ) -> HashMap<String, Arc<crate::snapshot::Stage>> {
        let mut out = HashMap::new();
        for (principal, w) in &file.workloads {
            let wp = Path::root().key("workloads").key(principal.as_str());
            if principal.is_empty()
                || principal.len() > 2048
                || principal.contains(char::is_whitespace)
            {
                self.invalid(
                    wp.clone(),
                    "workload",
                    "a workload identity is 1 to 2,048 characters without spaces (`spiffe://cluster.local/ns/NAMESPACE/sa/ACCOUNT`)"
                        .to_owned(),
                );
                continue;
            }
            match apis.get(&w.api).and_then(|a| a.stages.get(&w.stage)) {
                Some(stage) => {
                    out.insert(principal.clone(), stage.clone());
                }
                None => self.invalid(
                    wp,
                    "workload",
                    format!(
                        "`{principal}` names unknown stage `{}` of API `{}`",
                        w.stage, w.api
                    ),
                ),
            }
        }
        out
    }

    fn domains(&mut self, file: &ConfigFile, apis: &FastMap<String, Api>) -> Domains {
        let mut domains = Domains::default();
        let mut seen: HashMap<String, String> = HashMap::new();
        for (name, d) in &file.domain_names {
            let dp = Path::root().key("domain_names").key(name.as_str());
            let lower = name.to_ascii_lowercase();
            if let Err(e) = check_domain(&lower) {
                self.invalid(dp.clone(), "domain name", e);
                continue;
            }
            if let Some(first) = seen.insert(lower.clone(), name.clone()) {
                self.invalid(
                    dp.clone(),
                    "domain name",
                    format!("`{name}` is `{first}` again (domain names ignore case)"),
                );
                continue;
            }
            let domain = domains.entry(&lower);
            for (i, m) in d.base_path_mappings.iter().enumerate() {
                let mp = dp.key("base_path_mappings").index(i);
                let base = match m.base_path.as_deref() {
                    None | Some("") | Some("(none)") => "",
                    Some(b) => b,
                };
                if let Err(e) = check_base_path(base) {
                    self.invalid(mp.key("base_path"), "base path", e);
                    continue;
                }
                let Some(api) = apis.get(&m.api) else {
                    self.invalid(
                        mp.key("api"),
                        "base path mapping",
                        format!("domain `{name}` maps to unknown API `{}`", m.api),
                    );
                    continue;
                };
                let Some(stage) = api.stages.get(&m.stage) else {
                    self.invalid(
                        mp.key("stage"),
                        "base path mapping",
                        format!(
                            "domain `{name}` maps to unknown stage `{}` of API `{}`",
                            m.stage, m.api
                        ),
                    );
                    continue;
                };
                if !domain.add(base, stage.clone()) {
                    let shown = if base.is_empty() { "(none)" } else { base };
                    self.invalid(
                        mp.key("base_path"),
                        "base path mapping",
                        format!("domain `{name}` maps base path `{shown}` twice"),
                    );
                }
            }
        }
        domains
    }

    fn plans(
        &mut self,
        file: &ConfigFile,
        apis: &FastMap<String, Api>,
    ) -> (Vec<Plan>, HashMap<String, u32>) {
        let mut plans = Vec::with_capacity(file.usage_plans.len());
        let mut index = HashMap::with_capacity(file.usage_plans.len());
        for (id, p) in &file.usage_plans {
            let pp = Path::root().key("usage_plans").key(id.as_str());
            if let Err(e) = check_name(id) {
                self.invalid(pp.clone(), "usage plan id", e);
            }
            let throttle = p
                .throttle
                .as_ref()
                .and_then(|t| self.throttle(t, &pp.key("throttle")));
            let quota = p
                .quota
                .as_ref()
                .and_then(|q| self.quota(q, &pp.key("quota")));
            let stages = self.plan_stages(id, p, &pp, apis);
            index.insert(id.clone(), plans.len() as u32);
            plans.push(Plan {
                id: Arc::from(id.as_str()),
                name: p.name.clone(),
                description: p.description.clone(),
                throttle,
                quota,
                stages,
                enforce: p.enforce.unwrap_or(true),
            });
        }
        (plans, index)
    }

    /// A plan's quota, its limit and offset within bounds.
    fn quota(&mut self, q: &QuotaFile, qp: &Path) -> Option<Quota> {
        let mut ok = true;
        if q.limit < 0 || q.limit > MAX_QUOTA_LIMIT {
            self.invalid(
                qp.key("limit"),
                "quota limit",
                format!(
                    "{} is not a whole number from 0 to {MAX_QUOTA_LIMIT} (AWS's bound)",
                    q.limit
                ),
            );
            ok = false;
        }
        if q.offset < 0 || (q.limit >= 0 && q.offset > q.limit) {
            self.invalid(
                qp.key("offset"),
                "quota offset",
                format!("{} is not between 0 and the limit", q.offset),
            );
            ok = false;
        }
        ok.then_some(Quota {
            limit: q.limit as u64,
            period: q.period,
            offset: q.offset as u64,
            starts_at: q.starts_at,
            initial: None,
        })
    }

    /// A plan's API stages, each with its per-method throttles.
    fn plan_stages(
        &mut self,
        id: &str,
        p: &UsagePlanFile,
        pp: &Path,
        apis: &FastMap<String, Api>,
    ) -> Vec<(u32, Vec<(usize, Throttle)>)> {
        let mut stages: Vec<(u32, Vec<(usize, Throttle)>)> = Vec::new();
        for (i, s) in p.api_stages.iter().enumerate() {
            let sp = pp.key("api_stages").index(i);
            let Some(api) = apis.get(&s.api) else {
                self.err(
                    sp.key("api"),
                    ErrorKind::UnknownApi {
                        plan: id.to_owned(),
                        api: s.api.clone(),
                    },
                );
                continue;
            };
            let Some(stage) = api.stages.get(&s.stage) else {
                self.err(
                    sp.key("stage"),
                    ErrorKind::UnknownStage {
                        plan: id.to_owned(),
                        api: s.api.clone(),
                        stage: s.stage.clone(),
                    },
                );
                continue;
            };
            if stages.iter().any(|(sid, _)| *sid == stage.id) {
                self.err(
                    sp,
                    ErrorKind::DuplicatePlanStage {
                        plan: id.to_owned(),
                        api: s.api.clone(),
                        stage: s.stage.clone(),
                    },
                );
                continue;
            }
            // AWS: "Can not define fine grain throttling if usage plan throttle is not
            // defined".
            if !s.throttle.is_empty() && p.throttle.is_none() {
                self.invalid(
                    sp.key("throttle"),
                    "per-method throttle",
                    format!(
                        "fine-grained (per-method) throttles need a usage plan throttle; add `usage_plans.{id}.throttle`, as AWS requires"
                    ),
                );
            }
            let mut methods = Vec::new();
            for (mkey, t) in &s.throttle {
                let mp = sp.key("throttle").key(mkey.as_str());
                let Some(mi) = stage.method_by_name(mkey) else {
                    self.err(
                        mp,
                        ErrorKind::UnknownPlanMethod {
                            plan: id.to_owned(),
                            api: s.api.clone(),
                            stage: s.stage.clone(),
                            method: mkey.clone(),
                        },
                    );
                    continue;
                };
                if let Some(t) = self.throttle(t, &mp) {
                    methods.push((mi, t));
                }
            }
            stages.push((stage.id, methods));
        }
        stages
    }

    fn keys(
        &mut self,
        entries: Vec<KeyEntry>,
        plans: &[Plan],
        plan_index: &HashMap<String, u32>,
        stage_names: &[(Arc<str>, Arc<str>)],
    ) -> (Vec<ApiKey>, FastMap<KeyHash, u32>) {
        let mut keys = Vec::with_capacity(entries.len());
        let mut by_hash: FastMap<KeyHash, u32> =
            FastMap::with_capacity_and_hasher(entries.len(), Default::default());
        let mut by_id: HashMap<String, u32> = HashMap::with_capacity(entries.len());
        let mut origins: Vec<Origin> = Vec::new();
        for e in entries {
            let n = keys.len() as u32;
            let key_plans = self.key_plans(&e, plans, plan_index, stage_names);
            if let Err(msg) = keys::check_key_id(&e.id) {
                self.errors.push(e.origin.error(
                    Some(("id", None)),
                    ErrorKind::Invalid {
                        what: "API key id",
                        reason: msg,
                    },
                ));
            }
            if let Some(Err(msg)) = e.customer_id.as_deref().map(keys::check_customer_id) {
                self.errors.push(e.origin.error(
                    Some(("customer_id", None)),
                    ErrorKind::Invalid {
                        what: "customer id",
                        reason: msg,
                    },
                ));
            }
            if let Some(&first) = by_id.get(&e.id) {
                self.errors.push(e.origin.error(
                    Some(("id", None)),
                    ErrorKind::Duplicate {
                        what: "API key id",
                        id: e.id.clone(),
                        first: origins[first as usize].describe(),
                    },
                ));
            } else {
                by_id.insert(e.id.clone(), n);
            }
            match e.hash {
                Err(reason) => self.errors.push(e.origin.error(
                    None,
                    ErrorKind::KeyValue {
                        key: e.id.clone(),
                        reason,
                    },
                )),
                Ok(h) => {
                    if let Some(&other) = by_hash.get(&h) {
                        self.errors.push(
                            e.origin.error(
                                None,
                                ErrorKind::DuplicateValue {
                                    key: e.id.clone(),
                                    other: keys
                                        .get(other as usize)
                                        .map(|k: &ApiKey| k.id.to_string())
                                        .unwrap_or_default(),
                                },
                            ),
                        );
                    } else {
                        by_hash.insert(h, n);
                    }
                }
            }
            origins.push(e.origin);
            keys.push(ApiKey {
                id: Arc::from(e.id.as_str()),
                name: e.name.map(String::into_boxed_str),
                enabled: e.enabled,
                customer_id: e.customer_id.map(|c| Arc::from(c.as_str())),
                plans: key_plans,
            });
        }
        (keys, by_hash)
    }

    /// The plans a key entry names, as indexes; an unknown plan, a plan named twice, or two
    /// plans that grant one stage (AWS refuses a key in both) is an error.
    fn key_plans(
        &mut self,
        e: &KeyEntry,
        plans: &[Plan],
        plan_index: &HashMap<String, u32>,
        stage_names: &[(Arc<str>, Arc<str>)],
    ) -> smallvec::SmallVec<[u32; 2]> {
        let mut key_plans = smallvec::SmallVec::<[u32; 2]>::with_capacity(e.plans.len());
        // Stage id → plan that grants it, to find a key in two plans for one stage.
        let mut granted: Vec<(u32, u32)> = Vec::new();
        for (j, plan_id) in e.plans.iter().enumerate() {
            let Some(&pi) = plan_index.get(plan_id) else {
                self.errors.push(e.origin.error(
                    Some(("usage_plans", Some(j))),
                    ErrorKind::UnknownPlan {
                        key: e.id.clone(),
                        plan: plan_id.clone(),
                    },
                ));
                continue;
            };
            if key_plans.contains(&pi) {
                self.errors.push(e.origin.error(
                    Some(("usage_plans", Some(j))),
                    ErrorKind::Duplicate {
                        what: "usage plan",
                        id: plan_id.clone(),
                        first: format!("usage_plans[{j}] of key `{}`", e.id),
                    },
                ));
                continue;
            }
            for (sid, _) in &plans[pi as usize].stages {
                if let Some(&(_, other)) = granted.iter().find(|(s, _)| s == sid) {
                    let (api, stage) = &stage_names[*sid as usize];
                    self.errors.push(e.origin.error(
                        Some(("usage_plans", Some(j))),
                        ErrorKind::KeyInTwoPlans {
                            key: e.id.clone(),
                            api: api.to_string(),
                            stage: stage.to_string(),
                            first: plans[other as usize].id.to_string(),
                            second: plan_id.clone(),
                        },
                    ));
                } else {
                    granted.push((*sid, pi));
                }
            }
            key_plans.push(pi);
        }
        key_plans
    }
}

/// A domain name as AWS takes it: labels of letters, digits and `-` (not at either end of a
/// label), separated by dots; `*.` first for a wildcard; no port, no scheme, no path.
fn check_domain(name: &str) -> Result<(), String> {
    if name.contains("://") || name.contains('/') {
        return Err(format!("`{name}` is not a host name (no scheme, no path)"));
    }
    if name.contains(':') {
        return Err(format!("`{name}`: a domain name has no port"));
    }
    let labels = name.strip_prefix("*.").unwrap_or(name);
    if labels.is_empty() || name.len() > 253 {
        return Err(format!("`{name}` is not 1 to 253 characters of labels"));
    }
    for label in labels.split('.') {
        let ok = !label.is_empty()
            && label.len() <= 63
            && label
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-')
            && !label.starts_with('-')
            && !label.ends_with('-');
        if !ok {
            let why = if label.contains('*') {
                "a wildcard is only allowed as the first label (`*.example.com`)".to_owned()
            } else {
                format!("label `{label}` must be 1 to 63 letters, digits or `-` (not at its ends)")
            };
            return Err(format!("`{name}`: {why}"));
        }
    }
    Ok(())
}

/// A base path: path segments without slashes at the ends (`v1`, `orders/v1`), in the
/// characters AWS allows; `""` is `(none)`.
fn check_base_path(base: &str) -> Result<(), String> {
    if base.is_empty() {
        return Ok(());
    }
    if base.starts_with('/') || base.ends_with('/') {
        return Err(format!(
            "`{base}`: write a base path without slashes at its ends (`v1`, `orders/v1`)"
        ));
    }
    for seg in base.split('/') {
        if seg.is_empty() {
            return Err(format!("`{base}` has an empty segment"));
        }
        if let Some(c) = seg
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || "$-_.+!*'()".contains(*c)))
        {
            return Err(format!("`{base}` contains `{c}`"));
        }
    }
    Ok(())
}

/// Stage id → (API name, stage name): ids are dense over all stages of all APIs.
fn stage_names(apis: &FastMap<String, Api>) -> Vec<(Arc<str>, Arc<str>)> {
    let count = apis.values().map(|a| a.stages.len()).sum();
    let mut names: Vec<(Arc<str>, Arc<str>)> = vec![(Arc::from(""), Arc::from("")); count];
    for a in apis.values() {
        for st in a.stages.values() {
            names[st.id as usize] = (st.api.clone(), st.name.clone());
        }
    }
    names
}

/// The longest gateway response body, in bytes.
const MAX_RESPONSE_BODY: usize = 64 * 1024;

/// A throttle from AWS's `ThrottleSettings` (`rate`, `burst`, either optional), within
/// plangate's bounds; or what is wrong, as (field, what, message) — field `""` for the whole.
/// AWS's ThrottleSettings has both fields optional and does not say what one alone means:
/// plangate reads `rate` alone as a bucket of one second of that rate (at least 1), and `burst`
/// alone as the whole burst refilled every second (docs/config.md). The one reading for files
/// and for the control plane.
pub fn resolve_throttle(
    rate: Option<f64>,
    burst: Option<i64>,
) -> Result<Throttle, Vec<(&'static str, &'static str, String)>> {
    let (rate, burst) = match (rate, burst) {
        (Some(r), Some(b)) => (r, b),
        (Some(r), None) => {
            let b = if r.is_finite() && r > 0.0 && r <= MAX_RATE {
                (r.ceil() as i64).max(1)
            } else {
                0
            };
            (r, b)
        }
        (None, Some(b)) => (b as f64, b),
        (None, None) => {
            return Err(vec![(
                "",
                "throttle",
                "needs `rate`, `burst` or both".to_owned(),
            )]);
        }
    };
    let mut errors = Vec::new();
    if !rate.is_finite() || !(0.0..=MAX_RATE).contains(&rate) {
        errors.push((
            "rate",
            "throttle rate",
            format!("{rate} is not a number from 0 to {MAX_RATE}"),
        ));
    }
    let rate_micro = (rate * 1e6).round();
    if errors.is_empty() && rate > 0.0 && rate_micro < 1.0 {
        errors.push((
            "rate",
            "throttle rate",
            format!("{rate} is below the smallest rate, 0.000001"),
        ));
    }
    if burst < 0 || burst as f64 > MAX_RATE {
        errors.push((
            "burst",
            "throttle burst",
            format!("{burst} is not a whole number from 0 to {MAX_RATE}"),
        ));
    }
    if !errors.is_empty() {
        return Err(errors);
    }
    Ok(Throttle {
        rate,
        spec: BucketSpec {
            rate_micro: rate_micro as u64,
            burst: burst as u64,
        },
    })
}
