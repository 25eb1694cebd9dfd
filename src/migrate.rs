//! Migration from Amazon API Gateway: the JSON that the AWS CLI prints, saved one command per
//! file, becomes a plangate configuration that decides as AWS did (docs/migrating.md).
//!
//! ```text
//! DIR/get-rest-apis.json                     aws apigateway get-rest-apis
//! DIR/get-usage-plans.json                   aws apigateway get-usage-plans
//! DIR/get-api-keys.json                      aws apigateway get-api-keys --include-values
//! DIR/get-usage-plan-keys/<usagePlanId>.json aws apigateway get-usage-plan-keys --usage-plan-id ID
//! DIR/get-stages/<restApiId>.json            aws apigateway get-stages --rest-api-id ID
//! DIR/get-resources/<restApiId>.json         aws apigateway get-resources --rest-api-id ID --embed methods
//! ```
//!
//! The first three are required; a missing per-API or per-plan file is a warning (no stages file:
//! no stage throttles; no resources file: the stage allows every method; no plan keys file: the
//! plan has no keys). A reference to something the export does not hold (a plan's API or stage, a
//! plan key) is an error naming the file and the JSON path. Key values are written only as
//! SHA-256 digests. The output is checked by the configuration loader before it is returned.

use std::path::{Path, PathBuf};

use indexmap::IndexMap;
use serde_json::Value as Json;
use serde_yaml_ng::{Mapping, Value as Yaml};

use crate::snapshot::responses::ResponseType;

/// A configuration imported from an AWS export.
#[derive(Debug)]
pub struct Imported {
    /// The configuration file's text (YAML).
    pub yaml: String,
    /// What was left out or assumed, one sentence each.
    pub warnings: Vec<String>,
    /// Counts for a summary line: APIs, stages, usage plans, keys.
    pub counts: (usize, usize, usize, usize),
}

/// A problem with the export.
#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    #[error("{}: cannot read: {source}", file.display())]
    Read {
        file: PathBuf,
        source: std::io::Error,
    },
    #[error("{}: not valid JSON: {message}", file.display())]
    Json { file: PathBuf, message: String },
    #[error("{}: {at}: {message}", file.display())]
    Invalid {
        file: PathBuf,
        at: String,
        message: String,
    },
    #[error(
        "the imported configuration does not validate (a plangate bug, please report it):\n{0}"
    )]
    Output(String),
}

/// A JSON value with where it came from, for errors.
#[derive(Clone, Copy)]
struct At<'a> {
    file: &'a Path,
    path: &'a str,
    v: &'a Json,
}

/// Reads an export directory. Every problem found is returned, not only the first.
pub fn import_aws(dir: &Path) -> Result<Imported, Vec<ImportError>> {
    let mut cx = Cx {
        dir,
        errors: Vec::new(),
        warnings: Vec::new(),
    };
    let out = cx.run();
    match out {
        Some(i) if cx.errors.is_empty() => Ok(i),
        _ => Err(cx.errors),
    }
}

struct Cx<'d> {
    dir: &'d Path,
    errors: Vec<ImportError>,
    warnings: Vec<String>,
}

/// A throttle: (rate per second, burst); either may be absent, as in AWS.
type Throttle = (Option<f64>, Option<i64>);

/// A method: (API key required, throttle).
type Method = (Option<bool>, Option<Throttle>);

/// A stage being built.
#[derive(Default)]
struct Stage {
    throttle: Option<Throttle>,
    /// `/pets/GET` → (api key required, throttle).
    methods: IndexMap<String, Method>,
    /// Whether the API's resources were exported (then unlisted methods are forbidden, as AWS
    /// answers them: Missing Authentication Token).
    resources_known: bool,
}

struct Api {
    id: String,
    stages: IndexMap<String, Stage>,
    /// Whether the API's stages were exported (then a plan may only name those).
    stages_known: bool,
    /// The API's methods (`/pets/GET` → api key required), which every stage gets.
    methods: IndexMap<String, Option<bool>>,
    /// Whether the API's resources were exported.
    resources_known: bool,
    /// Customised gateway responses (from get-gateway-responses), as configuration.
    gateway_responses: Mapping,
}

impl Api {
    /// A stage with the API's methods and no throttles.
    fn new_stage(&self) -> Stage {
        Stage {
            methods: self
                .methods
                .iter()
                .map(|(k, r)| (k.clone(), (*r, None)))
                .collect(),
            resources_known: self.resources_known,
            ..Stage::default()
        }
    }
}

impl Cx<'_> {
    fn invalid(&mut self, file: &Path, at: impl Into<String>, message: impl Into<String>) {
        self.errors.push(ImportError::Invalid {
            file: file.to_path_buf(),
            at: at.into(),
            message: message.into(),
        });
    }

    /// The JSON of `rel`; `None` (with an error, or a warning when `optional`) when it cannot
    /// be read.
    fn read(&mut self, rel: &str, optional: Option<&str>) -> Option<(PathBuf, Json)> {
        // Ids from the export name files: one that is not a plain name (`../x`, `a/b`) would
        // read outside the export.
        let plain = rel.split('/').all(|part| {
            !part.is_empty()
                && !part.starts_with('.')
                && part
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
        });
        if !plain {
            self.invalid(
                self.dir,
                rel,
                "an id in the export is not a plain name (letters, digits, `-`, `_`); refused rather than read outside the export",
            );
            return None;
        }
        let file = self.dir.join(rel);
        let text = match read_export_file(&file) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && optional.is_some() => {
                let why = optional?;
                if !why.is_empty() {
                    self.warnings
                        .push(format!("{} is missing: {why}", file.display()));
                }
                return None;
            }
            Err(source) => {
                self.errors.push(ImportError::Read { file, source });
                return None;
            }
        };
        match serde_json::from_str(text.trim_start_matches('\u{feff}')) {
            Ok(v) => Some((file, v)),
            Err(e) => {
                self.errors.push(ImportError::Json {
                    file,
                    message: e.to_string(),
                });
                None
            }
        }
    }

    /// The array under `key` (AWS lists are `items`, stages `item`); a missing key is empty.
    fn list<'a>(&mut self, at: At<'a>, key: &str) -> Vec<(String, &'a Json)> {
        match at.v.get(key) {
            None | Some(Json::Null) => Vec::new(),
            Some(Json::Array(a)) => a
                .iter()
                .enumerate()
                .map(|(i, v)| (format!("{}.{key}[{i}]", at.path), v))
                .collect(),
            Some(_) => {
                self.invalid(at.file, format!("{}.{key}", at.path), "is not a list");
                Vec::new()
            }
        }
    }

    /// A required string field.
    fn string(&mut self, file: &Path, path: &str, v: &Json, key: &str) -> Option<String> {
        match v.get(key) {
            Some(Json::String(s)) if !s.is_empty() => Some(s.clone()),
            Some(Json::String(_)) | None | Some(Json::Null) => {
                self.invalid(file, format!("{path}.{key}"), "is missing");
                None
            }
            Some(_) => {
                self.invalid(file, format!("{path}.{key}"), "is not a string");
                None
            }
        }
    }

    /// An optional string field.
    fn opt_string(&mut self, file: &Path, path: &str, v: &Json, key: &str) -> Option<String> {
        match v.get(key) {
            Some(Json::String(s)) => Some(s.clone()),
            None | Some(Json::Null) => None,
            Some(_) => {
                self.invalid(file, format!("{path}.{key}"), "is not a string");
                None
            }
        }
    }

    /// A throttle from `rate_key`/`burst_key` (AWS `ThrottleSettings` or method settings);
    /// either may be absent (plangate fills it in as docs/config.md says); negative values
    /// (AWS: not set) count as absent.
    fn throttle(
        &mut self,
        file: &Path,
        path: &str,
        v: &Json,
        (rate_key, burst_key): (&str, &str),
    ) -> Option<Throttle> {
        let rate = match v.get(rate_key) {
            None | Some(Json::Null) => None,
            Some(r) => match r.as_f64() {
                Some(r) => (r >= 0.0).then_some(r),
                None => {
                    self.invalid(file, format!("{path}.{rate_key}"), "is not a number");
                    return None;
                }
            },
        };
        let burst = match v.get(burst_key) {
            None | Some(Json::Null) => None,
            Some(b) => match b.as_i64() {
                Some(b) => (b >= 0).then_some(b),
                None => {
                    self.invalid(file, format!("{path}.{burst_key}"), "is not a whole number");
                    return None;
                }
            },
        };
        (rate.is_some() || burst.is_some()).then_some((rate, burst))
    }

    fn run(&mut self) -> Option<Imported> {
        let apis_json = self.read("get-rest-apis.json", None);
        let plans_json = self.read("get-usage-plans.json", None);
        let keys_json = self.read("get-api-keys.json", None);
        let (apis_file, apis_json) = apis_json?;
        let (plans_file, plans_json) = plans_json?;
        let (keys_file, keys_json) = keys_json?;

        // APIs, their stages and methods.
        let mut apis: Vec<Api> = Vec::new();
        let root = At {
            file: &apis_file,
            path: "$",
            v: &apis_json,
        };
        for (path, a) in self.list(root, "items") {
            let Some(id) = self.string(&apis_file, &path, a, "id") else {
                continue;
            };
            if let Some(src) = self.opt_string(&apis_file, &path, a, "apiKeySource")
                && src != "HEADER"
            {
                self.warnings.push(format!(
                    "API {id} reads keys from {src}: plangate reads the `x-api-key` header; with an authorizer, set `apis.{id}.api_key_source: {{ metadata: … }}` in plans.yaml to where Envoy puts the key"
                ));
            }
            let api = self.api(&id);
            apis.push(api);
        }

        // Usage plans.
        let mut plans = Mapping::new();
        let mut plan_ids: Vec<String> = Vec::new();
        let root = At {
            file: &plans_file,
            path: "$",
            v: &plans_json,
        };
        for (path, p) in self.list(root, "items") {
            let Some(id) = self.string(&plans_file, &path, p, "id") else {
                continue;
            };
            let mut plan = Mapping::new();
            if let Some(n) = self.opt_string(&plans_file, &path, p, "name") {
                plan.insert("name".into(), n.into());
            }
            if let Some(d) = self.opt_string(&plans_file, &path, p, "description") {
                plan.insert("description".into(), d.into());
            }
            if let Some(t) = p.get("throttle").filter(|t| !t.is_null()) {
                let tp = format!("{path}.throttle");
                if let Some(t) = self.throttle(&plans_file, &tp, t, ("rateLimit", "burstLimit")) {
                    plan.insert("throttle".into(), throttle_yaml(t));
                }
            }
            if let Some(q) = p.get("quota").filter(|q| !q.is_null()) {
                let qp = format!("{path}.quota");
                let limit = q.get("limit").and_then(Json::as_i64);
                let period = q.get("period").and_then(Json::as_str);
                match (limit, period) {
                    (Some(limit), Some(period @ ("DAY" | "WEEK" | "MONTH"))) => {
                        let mut quota = Mapping::new();
                        quota.insert("limit".into(), limit.into());
                        quota.insert("period".into(), period.into());
                        if let Some(offset) = q.get("offset").and_then(Json::as_i64)
                            && offset != 0
                        {
                            self.warnings.push(format!(
                                "usage plan {id}: quota offset {offset} not imported (AWS subtracts it in the plan's initial period, which is over for a plan that runs on AWS; for a plan still in its first period, add `offset` with that period's first day as `starts_at`)"
                            ));
                        }
                        plan.insert("quota".into(), Yaml::Mapping(quota));
                    }
                    _ => self.invalid(
                        &plans_file,
                        qp,
                        "needs `limit` (a whole number) and `period` (DAY, WEEK or MONTH)",
                    ),
                }
            }
            let mut stages = Vec::new();
            let stages_json = self.list(
                At {
                    file: &plans_file,
                    path: &path,
                    v: p,
                },
                "apiStages",
            );
            for (sp, s) in stages_json {
                let (Some(api_id), Some(stage)) = (
                    self.string(&plans_file, &sp, s, "apiId"),
                    self.string(&plans_file, &sp, s, "stage"),
                ) else {
                    continue;
                };
                let Some(api) = apis.iter_mut().find(|a| a.id == api_id) else {
                    self.invalid(
                        &plans_file,
                        format!("{sp}.apiId"),
                        format!("API `{api_id}` is not in get-rest-apis.json"),
                    );
                    continue;
                };
                if !api.stages.contains_key(&stage) {
                    if api.stages_known {
                        self.invalid(
                            &plans_file,
                            format!("{sp}.stage"),
                            format!("stage `{stage}` is not in get-stages/{api_id}.json"),
                        );
                        continue;
                    }
                    let new = api.new_stage();
                    api.stages.insert(stage.clone(), new);
                }
                let mut entry = Mapping::new();
                entry.insert("api".into(), api_id.clone().into());
                entry.insert("stage".into(), stage.clone().into());
                let mut fine = Mapping::new();
                if let Some(Json::Object(m)) = s.get("throttle") {
                    for (method, t) in m {
                        let mp = format!("{sp}.throttle[\"{method}\"]");
                        let Some(t) =
                            self.throttle(&plans_file, &mp, t, ("rateLimit", "burstLimit"))
                        else {
                            continue;
                        };
                        let st = api.stages.get_mut(&stage)?;
                        if !st.methods.contains_key(method) {
                            if st.resources_known {
                                self.invalid(
                                    &plans_file,
                                    mp,
                                    format!(
                                        "method `{method}` is not in get-resources/{api_id}.json"
                                    ),
                                );
                                continue;
                            }
                            st.methods.insert(method.clone(), (None, None));
                        }
                        fine.insert(method.clone().into(), throttle_yaml(t));
                    }
                }
                if !fine.is_empty() {
                    entry.insert("throttle".into(), Yaml::Mapping(fine));
                }
                stages.push(Yaml::Mapping(entry));
            }
            plan.insert("api_stages".into(), Yaml::Sequence(stages));
            plans.insert(id.clone().into(), Yaml::Mapping(plan));
            plan_ids.push(id);
        }

        // Keys, and the plans each belongs to.
        let mut members: IndexMap<String, Vec<String>> = IndexMap::new();
        for plan in &plan_ids {
            let rel = format!("get-usage-plan-keys/{plan}.json");
            let Some((file, v)) = self.read(&rel, Some(&format!("usage plan {plan} gets no keys")))
            else {
                continue;
            };
            let root = At {
                file: &file,
                path: "$",
                v: &v,
            };
            for (path, k) in self.list(root, "items") {
                if let Some(id) = self.string(&file, &path, k, "id") {
                    members.entry(id).or_default().push(plan.clone());
                }
            }
        }
        let mut keys = Vec::new();
        let mut key_ids = std::collections::HashSet::new();
        let root = At {
            file: &keys_file,
            path: "$",
            v: &keys_json,
        };
        for (path, k) in self.list(root, "items") {
            let Some(id) = self.string(&keys_file, &path, k, "id") else {
                continue;
            };
            let value = match k.get("value") {
                Some(Json::String(v)) if !v.is_empty() => v,
                _ => {
                    self.invalid(
                        &keys_file,
                        format!("{path}.value"),
                        "is missing: export the keys with `aws apigateway get-api-keys --include-values`",
                    );
                    continue;
                }
            };
            let mut key = Mapping::new();
            key.insert("id".into(), id.clone().into());
            if let Some(n) = self.opt_string(&keys_file, &path, k, "name") {
                key.insert("name".into(), n.into());
            }
            if let Some(d) = self.opt_string(&keys_file, &path, k, "description") {
                key.insert("description".into(), d.into());
            }
            if let Some(c) = self.opt_string(&keys_file, &path, k, "customerId") {
                key.insert("customer_id".into(), c.into());
            }
            match k.get("enabled") {
                None | Some(Json::Null) | Some(Json::Bool(true)) => {}
                Some(Json::Bool(false)) => {
                    key.insert("enabled".into(), false.into());
                }
                Some(_) => self.invalid(
                    &keys_file,
                    format!("{path}.enabled"),
                    "is not true or false",
                ),
            }
            key.insert(
                "value_sha256".into(),
                hex::encode(crate::snapshot::hash_key(value)).into(),
            );
            let in_plans: Vec<Yaml> = members
                .get(&id)
                .map(|p| p.iter().map(|p| Yaml::from(p.clone())).collect())
                .unwrap_or_default();
            key.insert("usage_plans".into(), Yaml::Sequence(in_plans));
            key_ids.insert(id);
            keys.push(Yaml::Mapping(key));
        }
        for (id, in_plans) in &members {
            if !key_ids.contains(id) {
                let plan = &in_plans[0];
                self.invalid(
                    &self.dir.join(format!("get-usage-plan-keys/{plan}.json")),
                    "$.items",
                    format!("key `{id}` is not in get-api-keys.json"),
                );
            }
        }

        let counts = (
            apis.len(),
            apis.iter().map(|a| a.stages.len()).sum(),
            plan_ids.len(),
            keys.len(),
        );
        let mut doc = Mapping::new();
        doc.insert("version".into(), 1.into());
        let mut apis_yaml = Mapping::new();
        for a in &apis {
            let mut stages = Mapping::new();
            for (name, s) in &a.stages {
                stages.insert(name.clone().into(), Yaml::Mapping(stage_yaml(s)));
            }
            let mut api = Mapping::new();
            if !a.gateway_responses.is_empty() {
                api.insert(
                    "gateway_responses".into(),
                    Yaml::Mapping(a.gateway_responses.clone()),
                );
            }
            api.insert("stages".into(), Yaml::Mapping(stages));
            apis_yaml.insert(a.id.clone().into(), Yaml::Mapping(api));
        }
        doc.insert("apis".into(), Yaml::Mapping(apis_yaml));
        doc.insert("usage_plans".into(), Yaml::Mapping(plans));
        doc.insert("api_keys".into(), Yaml::Sequence(keys));
        if !self.errors.is_empty() {
            return None;
        }
        let body = match serde_yaml_ng::to_string(&Yaml::Mapping(doc)) {
            Ok(b) => b,
            Err(e) => {
                self.errors.push(ImportError::Output(e.to_string()));
                return None;
            }
        };
        let yaml = format!(
            "# Imported from an Amazon API Gateway export by `plangate import-aws` (docs/migrating.md).\n# Key values are stored as SHA-256 digests only.\n{body}"
        );
        if let Err(e) = crate::config::load_str(&yaml, None, self.dir) {
            self.errors.push(ImportError::Output(e.to_string()));
            return None;
        }
        Some(Imported {
            yaml,
            warnings: std::mem::take(&mut self.warnings),
            counts,
        })
    }

    /// One API: its stages (from get-stages) and methods (from get-resources).
    fn api(&mut self, id: &str) -> Api {
        let mut api = Api {
            id: id.to_owned(),
            stages: IndexMap::new(),
            stages_known: false,
            methods: IndexMap::new(),
            resources_known: false,
            gateway_responses: Mapping::new(),
        };
        self.gateway_responses(&mut api);
        // Methods first: every stage gets them.
        let resources = self.read(
            &format!("get-resources/{id}.json"),
            Some(&format!(
                "API {id}'s methods are unknown: its stages allow every method (`unknown_methods: allow`)"
            )),
        );
        if let Some((file, v)) = resources {
            api.resources_known = true;
            let root = At {
                file: &file,
                path: "$",
                v: &v,
            };
            // Methods whose settings are not in the export: the first one's place, and how many.
            let mut unembedded: Option<(String, usize)> = None;
            for (path, r) in self.list(root, "items") {
                let Some(rpath) = self.string(&file, &path, r, "path") else {
                    continue;
                };
                let Some(Json::Object(verbs)) = r.get("resourceMethods") else {
                    continue;
                };
                for (verb, m) in verbs {
                    let required = match m.get("apiKeyRequired") {
                        Some(Json::Bool(b)) => *b,
                        // Without `--embed methods` the methods are empty objects. Guessing
                        // "no key" would open methods AWS guards: refuse instead.
                        _ => {
                            let n = unembedded.get_or_insert_with(|| {
                                (format!("{path}.resourceMethods.{verb}"), 0)
                            });
                            n.1 += 1;
                            continue;
                        }
                    };
                    api.methods.insert(method_key(&rpath, verb), Some(required));
                }
            }
            if let Some((at, n)) = unembedded {
                self.invalid(
                    &file,
                    at,
                    format!(
                        "{n} method(s) without their settings (`apiKeyRequired`): export them with \
                         `aws apigateway get-resources --rest-api-id {id} --embed methods`; \
                         without them plangate cannot tell which methods need a key"
                    ),
                );
            }
        }
        let stages = self.read(
            &format!("get-stages/{id}.json"),
            Some(&format!(
                "API {id}'s stages are unknown: the stages its usage plans name are created without throttles"
            )),
        );
        let Some((file, v)) = stages else {
            return api;
        };
        api.stages_known = true;
        let root = At {
            file: &file,
            path: "$",
            v: &v,
        };
        for (path, s) in self.list(root, "item") {
            let Some(name) = self.string(&file, &path, s, "stageName") else {
                continue;
            };
            let mut stage = api.new_stage();
            if let Some(Json::Object(settings)) = s.get("methodSettings") {
                for (key, ms) in settings {
                    let mp = format!("{path}.methodSettings[\"{key}\"]");
                    let t = self.throttle(
                        &file,
                        &mp,
                        ms,
                        ("throttlingRateLimit", "throttlingBurstLimit"),
                    );
                    if key == "*/*" {
                        stage.throttle = t;
                        continue;
                    }
                    let Some(method) = settings_key(key) else {
                        self.invalid(&file, mp, "is not `*/*` or `<resource path>/<VERB>`");
                        continue;
                    };
                    // The resource's `ANY` method, when the setting names a verb it serves.
                    let any = method
                        .rsplit_once('/')
                        .map(|(resource, _)| format!("{resource}/ANY"))
                        .filter(|a| *a != method)
                        .and_then(|a| stage.methods.get(&a).map(|m| m.0));
                    match (stage.methods.get_mut(&method), any) {
                        (Some(m), _) => m.1 = t,
                        (None, _) if !api.resources_known => {
                            stage.methods.insert(method, (None, t));
                        }
                        // A per-verb setting on an `ANY`-only resource (what
                        // serverless-api-gateway-throttling writes): that verb of `ANY` gets the
                        // setting, as a method of its own with ANY's key requirement — the
                        // stricter reading, never the stage default.
                        (None, Some(required)) => {
                            self.warnings.push(format!(
                                "{}: {mp}: `{method}` is served by the resource's ANY method; \
                                 its throttle applies to that verb (a method of its own)",
                                file.display()
                            ));
                            stage.methods.insert(method, (required, t));
                        }
                        (None, None) => self.warnings.push(format!(
                            "{}: {mp}: method `{method}` is not in get-resources/{id}.json (a setting left behind by a deleted method?); skipped",
                            file.display()
                        )),
                    }
                }
            }
            api.stages.insert(name, stage);
        }
        api
    }
}

impl Cx<'_> {
    /// The API's customised gateway responses, from `get-gateway-responses/<api>.json` when the
    /// export has it (optional, no warning when missing).
    fn gateway_responses(&mut self, api: &mut Api) {
        let Some((file, v)) =
            self.read(&format!("get-gateway-responses/{}.json", api.id), Some(""))
        else {
            return;
        };
        let root = At {
            file: &file,
            path: "$",
            v: &v,
        };
        for (path, r) in self.list(root, "items") {
            // AWS lists every type; those never customised say `defaultResponse: true`.
            if r.get("defaultResponse").and_then(Json::as_bool) == Some(true) {
                continue;
            }
            let Some(t) = self.string(&file, &path, r, "responseType") else {
                continue;
            };
            if ResponseType::parse(&t).is_none() {
                self.warnings.push(format!(
                    "{}: {path}: gateway response {t} is not one plangate answers with; skipped",
                    file.display()
                ));
                continue;
            }
            let mut out = Mapping::new();
            if let Some(code) = self.opt_string(&file, &path, r, "statusCode") {
                match code.parse::<i64>() {
                    Ok(c) => {
                        out.insert("status".into(), c.into());
                    }
                    Err(_) => {
                        self.invalid(&file, format!("{path}.statusCode"), "is not a status code")
                    }
                }
            }
            let mut headers = Mapping::new();
            if let Some(Json::Object(params)) = r.get("responseParameters") {
                for (k, v) in params {
                    let Some(name) = k.strip_prefix("gatewayresponse.header.") else {
                        continue;
                    };
                    // Static values are single-quoted; mappings from the request are not
                    // imported.
                    match v.as_str().and_then(|v| v.strip_prefix('\'')?.strip_suffix('\'')) {
                        Some(value) => {
                            headers.insert(name.into(), value.into());
                        }
                        None => self.warnings.push(format!(
                            "{}: {path}.responseParameters[\"{k}\"]: only static ('quoted') header values are imported; skipped",
                            file.display()
                        )),
                    }
                }
            }
            if !headers.is_empty() {
                out.insert("headers".into(), Yaml::Mapping(headers));
            }
            if let Some(Json::Object(templates)) = r.get("responseTemplates") {
                let body = templates
                    .get("application/json")
                    .or_else(|| templates.values().next())
                    .and_then(Json::as_str);
                match body.map(|b| (b, crate::snapshot::responses::unsupported_variable(b))) {
                    Some((b, None)) => {
                        out.insert("body".into(), b.into());
                    }
                    // A template plangate cannot fill in is left out (the built-in body
                    // answers), never sent with its variables as written.
                    Some((_, Some(v))) => self.warnings.push(format!(
                        "{}: {path}.responseTemplates: `{v}` is not a variable plangate fills in; the body is not imported (plangate's built-in body answers)",
                        file.display()
                    )),
                    None => {}
                }
            }
            api.gateway_responses.insert(t.into(), Yaml::Mapping(out));
        }
    }
}

/// `/pets` + `GET` → `/pets/GET`; the root `/` + `GET` → `//GET`.
fn method_key(path: &str, verb: &str) -> String {
    if path == "/" {
        format!("//{verb}")
    } else {
        format!("{}/{verb}", path.trim_end_matches('/'))
    }
}

/// A `methodSettings` key (`~1pets~1{petId}/GET`, the resource path with `/` written `~1` and
/// `~` written `~0`) as a method key (`/pets/{petId}/GET`).
fn settings_key(key: &str) -> Option<String> {
    let (resource, verb) = key.rsplit_once('/')?;
    if resource.is_empty() || verb.is_empty() || resource == "*" {
        return None;
    }
    let path = resource.replace("~1", "/").replace("~0", "~");
    if !path.starts_with('/') {
        return None;
    }
    Some(method_key(&path, verb))
}

fn throttle_yaml((rate, burst): Throttle) -> Yaml {
    let mut t = Mapping::new();
    if let Some(rate) = rate {
        // Whole rates are written as whole numbers (`rate: 10`, not `rate: 10.0`).
        if rate.fract() == 0.0 && rate.abs() < 1e15 {
            t.insert("rate".into(), (rate as i64).into());
        } else {
            t.insert("rate".into(), rate.into());
        }
    }
    if let Some(burst) = burst {
        t.insert("burst".into(), burst.into());
    }
    Yaml::Mapping(t)
}

fn stage_yaml(s: &Stage) -> Mapping {
    let mut m = Mapping::new();
    if let Some(t) = s.throttle {
        m.insert("throttle".into(), throttle_yaml(t));
    }
    if s.resources_known {
        // AWS answers a resource or verb that does not exist with Missing Authentication Token.
        m.insert("unknown_methods".into(), "forbid".into());
    }
    let mut methods = Mapping::new();
    for (k, (required, t)) in &s.methods {
        let mut method = Mapping::new();
        if let Some(r) = required {
            method.insert("api_key_required".into(), (*r).into());
        }
        if let Some(t) = t {
            method.insert("throttle".into(), throttle_yaml(*t));
        }
        methods.insert(k.clone().into(), Yaml::Mapping(method));
    }
    if !methods.is_empty() {
        m.insert("methods".into(), Yaml::Mapping(methods));
    }
    m
}

/// The largest export file read (AWS's list of a million keys is some 300 MB).
const MAX_EXPORT_BYTES: u64 = 1 << 30;

/// An export file's text: a regular file (not a FIFO or a device, which would hang or never
/// end), at most [`MAX_EXPORT_BYTES`], in UTF-8 (UTF-16, as PowerShell's `>` writes, is named).
fn read_export_file(file: &Path) -> std::io::Result<String> {
    use std::io::{Error, ErrorKind, Read};
    let meta = std::fs::metadata(file)?;
    if !meta.is_file() {
        return Err(Error::new(
            ErrorKind::InvalidInput,
            "not a regular file (a FIFO, a device or a directory?)",
        ));
    }
    if meta.len() > MAX_EXPORT_BYTES {
        return Err(Error::new(
            ErrorKind::InvalidInput,
            format!(
                "{} bytes; an export file may have at most {MAX_EXPORT_BYTES}",
                meta.len()
            ),
        ));
    }
    let mut bytes = Vec::new();
    std::fs::File::open(file)?
        .take(MAX_EXPORT_BYTES + 1)
        .read_to_end(&mut bytes)?;
    if bytes.len() as u64 > MAX_EXPORT_BYTES {
        return Err(Error::new(
            ErrorKind::InvalidInput,
            "grew past the size bound while read",
        ));
    }
    let utf16 = bytes.starts_with(&[0xFF, 0xFE])
        || bytes.starts_with(&[0xFE, 0xFF])
        || bytes.len() >= 4 && (bytes[1] == 0 && bytes[3] == 0 || bytes[0] == 0 && bytes[2] == 0);
    if utf16 {
        return Err(Error::new(
            ErrorKind::InvalidData,
            "UTF-16 text (PowerShell's `>` writes it): export again as UTF-8, e.g. `aws … | Out-File -Encoding utf8 FILE`",
        ));
    }
    String::from_utf8(bytes)
        .map_err(|e| Error::new(ErrorKind::InvalidData, format!("not UTF-8: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn method_settings_keys_are_resource_paths() {
        assert_eq!(settings_key("~1pets/GET").as_deref(), Some("/pets/GET"));
        assert_eq!(
            settings_key("~1pets~1{petId}/POST").as_deref(),
            Some("/pets/{petId}/POST")
        );
        assert_eq!(settings_key("~1/GET").as_deref(), Some("//GET"));
        assert_eq!(settings_key("~1a~0b/GET").as_deref(), Some("/a~b/GET"));
        assert_eq!(settings_key("*/*"), None);
        assert_eq!(settings_key("pets/GET"), None);
        assert_eq!(method_key("/", "ANY"), "//ANY");
        assert_eq!(method_key("/pets/{proxy+}", "ANY"), "/pets/{proxy+}/ANY");
    }
}
