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

use crate::config::file::{
    ApiFile, ApiKeyFile, ApiStageFile, ConfigFile, GatewayResponseFile, MethodFile, QuotaFile,
    StageFile, ThrottleFile, UsagePlanFile,
};

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

/// A stage being built.
#[derive(Default)]
struct Stage {
    throttle: Option<ThrottleFile>,
    /// `/pets/GET` → its key requirement and throttle.
    methods: IndexMap<String, MethodFile>,
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
    gateway_responses: IndexMap<String, GatewayResponseFile>,
}

impl Api {
    /// A stage with the API's methods and no throttles.
    fn new_stage(&self) -> Stage {
        Stage {
            methods: self
                .methods
                .iter()
                .map(|(k, r)| {
                    let m = MethodFile {
                        api_key_required: *r,
                        throttle: None,
                    };
                    (k.clone(), m)
                })
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

    /// The array under `key` of a file's top level (`$`).
    fn top<'a>(&mut self, file: &'a Path, json: &'a Json, key: &str) -> Vec<(String, &'a Json)> {
        self.list(
            At {
                file,
                path: "$",
                v: json,
            },
            key,
        )
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
    ) -> Option<ThrottleFile> {
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
        (rate.is_some() || burst.is_some()).then_some(ThrottleFile { rate, burst })
    }

    fn run(&mut self) -> Option<Imported> {
        let apis_json = self.read("get-rest-apis.json", None);
        let plans_json = self.read("get-usage-plans.json", None);
        let keys_json = self.read("get-api-keys.json", None);
        let (apis_file, apis_json) = apis_json?;
        let (plans_file, plans_json) = plans_json?;
        let (keys_file, keys_json) = keys_json?;
        let mut apis = self.apis(&apis_file, &apis_json);
        let plans = self.plans(&plans_file, &plans_json, &mut apis);
        let keys = self.keys(&keys_file, &keys_json, &plans);
        let counts = (
            apis.len(),
            apis.iter().map(|a| a.stages.len()).sum(),
            plans.len(),
            keys.len(),
        );
        let doc = ConfigFile {
            version: 1,
            apis: apis
                .iter()
                .map(|a| {
                    let api = ApiFile {
                        stages: a
                            .stages
                            .iter()
                            .map(|(n, s)| (n.clone(), stage_file(s)))
                            .collect(),
                        gateway_responses: a.gateway_responses.clone(),
                        ..ApiFile::default()
                    };
                    (a.id.clone(), api)
                })
                .collect(),
            usage_plans: plans,
            api_keys: keys,
            ..ConfigFile::default()
        };
        if !self.errors.is_empty() {
            return None;
        }
        self.write(doc, counts)
    }

    /// The configuration as text, checked by the loader.
    fn write(&mut self, doc: ConfigFile, counts: (usize, usize, usize, usize)) -> Option<Imported> {
        let body = match serde_yaml_ng::to_string(&doc) {
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

    /// The APIs, with their stages and methods.
    fn apis(&mut self, file: &Path, json: &Json) -> Vec<Api> {
        let mut apis = Vec::new();
        for (path, a) in self.top(file, json, "items") {
            let Some(id) = self.string(file, &path, a, "id") else {
                continue;
            };
            if let Some(src) = self.opt_string(file, &path, a, "apiKeySource")
                && src != "HEADER"
            {
                self.warnings.push(format!(
                    "API {id} reads keys from {src}: plangate reads the `x-api-key` header; with an authorizer, set `apis.{id}.api_key_source: {{ metadata: … }}` in plans.yaml to where Envoy puts the key"
                ));
            }
            let api = self.api(&id);
            apis.push(api);
        }
        apis
    }

    /// The usage plans, by id. A stage a plan names that the export does not list is created
    /// in `apis` (when the API's stages were not exported).
    fn plans(
        &mut self,
        file: &Path,
        json: &Json,
        apis: &mut [Api],
    ) -> IndexMap<String, UsagePlanFile> {
        let mut plans = IndexMap::new();
        for (path, p) in self.top(file, json, "items") {
            let Some(id) = self.string(file, &path, p, "id") else {
                continue;
            };
            let at = At {
                file,
                path: &path,
                v: p,
            };
            let plan = UsagePlanFile {
                enforce: None,
                name: self.opt_string(file, &path, p, "name"),
                description: self.opt_string(file, &path, p, "description"),
                throttle: p.get("throttle").filter(|t| !t.is_null()).and_then(|t| {
                    let tp = format!("{path}.throttle");
                    self.throttle(file, &tp, t, ("rateLimit", "burstLimit"))
                }),
                quota: self.quota(at, &id),
                api_stages: self.plan_stages(at, apis),
            };
            plans.insert(id, plan);
        }
        plans
    }

    /// A plan's quota; AWS's `offset` is not imported (a warning says why).
    fn quota(&mut self, plan: At<'_>, id: &str) -> Option<QuotaFile> {
        let q = plan.v.get("quota").filter(|q| !q.is_null())?;
        let limit = q.get("limit").and_then(Json::as_i64);
        let period = q.get("period").and_then(Json::as_str);
        let period = match (limit, period) {
            (Some(_), Some("DAY")) => crate::limit::Period::Day,
            (Some(_), Some("WEEK")) => crate::limit::Period::Week,
            (Some(_), Some("MONTH")) => crate::limit::Period::Month,
            _ => {
                self.invalid(
                    plan.file,
                    format!("{}.quota", plan.path),
                    "needs `limit` (a whole number) and `period` (DAY, WEEK or MONTH)",
                );
                return None;
            }
        };
        if let Some(offset) = q.get("offset").and_then(Json::as_i64)
            && offset != 0
        {
            self.warnings.push(format!(
                "usage plan {id}: quota offset {offset} not imported (AWS subtracts it in the plan's initial period, which is over for a plan that runs on AWS; for a plan still in its first period, add `offset` with that period's first day as `starts_at`)"
            ));
        }
        Some(QuotaFile {
            limit: limit?,
            period,
            offset: 0,
            starts_at: None,
        })
    }

    /// A plan's API stages, with their per-method throttles.
    fn plan_stages(&mut self, plan: At<'_>, apis: &mut [Api]) -> Vec<ApiStageFile> {
        let file = plan.file;
        let mut stages = Vec::new();
        for (sp, s) in self.list(plan, "apiStages") {
            let (Some(api_id), Some(stage)) = (
                self.string(file, &sp, s, "apiId"),
                self.string(file, &sp, s, "stage"),
            ) else {
                continue;
            };
            let Some(api) = apis.iter_mut().find(|a| a.id == api_id) else {
                self.invalid(
                    file,
                    format!("{sp}.apiId"),
                    format!("API `{api_id}` is not in get-rest-apis.json"),
                );
                continue;
            };
            if !api.stages.contains_key(&stage) {
                if api.stages_known {
                    self.invalid(
                        file,
                        format!("{sp}.stage"),
                        format!("stage `{stage}` is not in get-stages/{api_id}.json"),
                    );
                    continue;
                }
                let new = api.new_stage();
                api.stages.insert(stage.clone(), new);
            }
            let mut throttle = IndexMap::new();
            if let Some(Json::Object(m)) = s.get("throttle") {
                for (method, t) in m {
                    let mp = format!("{sp}.throttle[\"{method}\"]");
                    let Some(t) = self.throttle(file, &mp, t, ("rateLimit", "burstLimit")) else {
                        continue;
                    };
                    let Some(st) = api.stages.get_mut(&stage) else {
                        continue;
                    };
                    if !st.methods.contains_key(method) {
                        if st.resources_known {
                            self.invalid(
                                file,
                                mp,
                                format!("method `{method}` is not in get-resources/{api_id}.json"),
                            );
                            continue;
                        }
                        st.methods.insert(method.clone(), MethodFile::default());
                    }
                    throttle.insert(method.clone(), t);
                }
            }
            stages.push(ApiStageFile {
                api: api_id,
                stage,
                throttle,
            });
        }
        stages
    }

    /// The keys, each with the plans it belongs to (from get-usage-plan-keys).
    fn keys(
        &mut self,
        file: &Path,
        json: &Json,
        plans: &IndexMap<String, UsagePlanFile>,
    ) -> Vec<ApiKeyFile> {
        let mut members: IndexMap<String, Vec<String>> = IndexMap::new();
        for plan in plans.keys() {
            let rel = format!("get-usage-plan-keys/{plan}.json");
            let Some((pfile, v)) =
                self.read(&rel, Some(&format!("usage plan {plan} gets no keys")))
            else {
                continue;
            };
            for (path, k) in self.top(&pfile, &v, "items") {
                if let Some(id) = self.string(&pfile, &path, k, "id") {
                    members.entry(id).or_default().push(plan.clone());
                }
            }
        }
        let mut keys = Vec::new();
        for (path, k) in self.top(file, json, "items") {
            if let Some(key) = self.key(file, &path, k, &members) {
                keys.push(key);
            }
        }
        let ids: std::collections::HashSet<&str> = keys.iter().map(|k| k.id.as_str()).collect();
        for (id, in_plans) in &members {
            if !ids.contains(id.as_str()) {
                self.invalid(
                    &self
                        .dir
                        .join(format!("get-usage-plan-keys/{}.json", in_plans[0])),
                    "$.items",
                    format!("key `{id}` is not in get-api-keys.json"),
                );
            }
        }
        keys
    }

    /// One key of get-api-keys.json, its value as a digest.
    fn key(
        &mut self,
        file: &Path,
        path: &str,
        k: &Json,
        members: &IndexMap<String, Vec<String>>,
    ) -> Option<ApiKeyFile> {
        let id = self.string(file, path, k, "id")?;
        let value = match k.get("value") {
            Some(Json::String(v)) if !v.is_empty() => v,
            _ => {
                self.invalid(
                    file,
                    format!("{path}.value"),
                    "is missing: export the keys with `aws apigateway get-api-keys --include-values`",
                );
                return None;
            }
        };
        let enabled = match k.get("enabled") {
            None | Some(Json::Null) | Some(Json::Bool(true)) => true,
            Some(Json::Bool(false)) => false,
            Some(_) => {
                self.invalid(file, format!("{path}.enabled"), "is not true or false");
                true
            }
        };
        Some(ApiKeyFile {
            name: self.opt_string(file, path, k, "name"),
            description: self.opt_string(file, path, k, "description"),
            customer_id: self.opt_string(file, path, k, "customerId"),
            value: None,
            value_sha256: Some(hex::encode(crate::snapshot::hash_key(value))),
            enabled,
            usage_plans: members.get(&id).cloned().unwrap_or_default(),
            id,
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
            gateway_responses: IndexMap::new(),
        };
        self.gateway_responses(&mut api);
        // Methods first: every stage gets them.
        self.methods(&mut api);
        self.stages(&mut api);
        api
    }

    /// The API's methods and whether each needs a key, from get-resources (embedded methods).
    fn methods(&mut self, api: &mut Api) {
        let id = api.id.clone();
        let resources = self.read(
            &format!("get-resources/{id}.json"),
            Some(&format!(
                "API {id}'s methods are unknown: its stages allow every method (`unknown_methods: allow`)"
            )),
        );
        if let Some((file, v)) = resources {
            api.resources_known = true;
            // Methods whose settings are not in the export: the first one's place, and how many.
            let mut unembedded: Option<(String, usize)> = None;
            for (path, r) in self.top(&file, &v, "items") {
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
    }

    /// The API's stages with their throttles, from get-stages.
    fn stages(&mut self, api: &mut Api) {
        let id = api.id.clone();
        let stages = self.read(
            &format!("get-stages/{id}.json"),
            Some(&format!(
                "API {id}'s stages are unknown: the stages its usage plans name are created without throttles"
            )),
        );
        let Some((file, v)) = stages else {
            return;
        };
        api.stages_known = true;
        for (path, s) in self.top(&file, &v, "item") {
            let Some(name) = self.string(&file, &path, s, "stageName") else {
                continue;
            };
            let mut stage = api.new_stage();
            self.method_settings(api, &mut stage, &file, &path, s);
            api.stages.insert(name, stage);
        }
    }

    /// A stage's `methodSettings`: the stage throttle (`*/*`) and per-method throttles.
    fn method_settings(&mut self, api: &Api, stage: &mut Stage, file: &Path, path: &str, s: &Json) {
        let id = &api.id;
        let Some(Json::Object(settings)) = s.get("methodSettings") else {
            return;
        };
        for (key, ms) in settings {
            let mp = format!("{path}.methodSettings[\"{key}\"]");
            let t = self.throttle(
                file,
                &mp,
                ms,
                ("throttlingRateLimit", "throttlingBurstLimit"),
            );
            if key == "*/*" {
                stage.throttle = t;
                continue;
            }
            let Some(method) = settings_key(key) else {
                self.invalid(file, mp, "is not `*/*` or `<resource path>/<VERB>`");
                continue;
            };
            // The resource's `ANY` method, when the setting names a verb it serves.
            let any = method
                .rsplit_once('/')
                .map(|(resource, _)| format!("{resource}/ANY"))
                .filter(|a| *a != method)
                .and_then(|a| stage.methods.get(&a).map(|m| m.api_key_required));
            match (stage.methods.get_mut(&method), any) {
                        (Some(m), _) => m.throttle = t,
                        (None, _) if !api.resources_known => {
                            let m = MethodFile {
                                api_key_required: None,
                                throttle: t,
                            };
                            stage.methods.insert(method, m);
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
                            let m = MethodFile {
                                api_key_required: required,
                                throttle: t,
                            };
                            stage.methods.insert(method, m);
                        }
                        (None, None) => self.warnings.push(format!(
                            "{}: {mp}: method `{method}` is not in get-resources/{id}.json (a setting left behind by a deleted method?); skipped",
                            file.display()
                        )),
                    }
        }
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
        for (path, r) in self.top(&file, &v, "items") {
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
            let mut out = GatewayResponseFile::default();
            if let Some(code) = self.opt_string(&file, &path, r, "statusCode") {
                match code.parse::<i64>() {
                    Ok(c) => out.status = Some(c),
                    Err(_) => {
                        self.invalid(&file, format!("{path}.statusCode"), "is not a status code")
                    }
                }
            }
            if let Some(Json::Object(params)) = r.get("responseParameters") {
                for (k, v) in params {
                    let Some(name) = k.strip_prefix("gatewayresponse.header.") else {
                        continue;
                    };
                    // Static values are single-quoted; mappings from the request are not
                    // imported.
                    match v.as_str().and_then(|v| v.strip_prefix('\'')?.strip_suffix('\'')) {
                        Some(value) => {
                            out.headers.insert(name.to_owned(), value.to_owned());
                        }
                        None => self.warnings.push(format!(
                            "{}: {path}.responseParameters[\"{k}\"]: only static ('quoted') header values are imported; skipped",
                            file.display()
                        )),
                    }
                }
            }
            if let Some(Json::Object(templates)) = r.get("responseTemplates") {
                let body = templates
                    .get("application/json")
                    .or_else(|| templates.values().next())
                    .and_then(Json::as_str);
                match body.map(|b| (b, crate::snapshot::responses::unsupported_variable(b))) {
                    Some((b, None)) => out.body = Some(b.to_owned()),
                    // A template plangate cannot fill in is left out (the built-in body
                    // answers), never sent with its variables as written.
                    Some((_, Some(v))) => self.warnings.push(format!(
                        "{}: {path}.responseTemplates: `{v}` is not a variable plangate fills in; the body is not imported (plangate's built-in body answers)",
                        file.display()
                    )),
                    None => {}
                }
            }
            api.gateway_responses.insert(t, out);
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

/// A method key (`/pets/{petId}/GET`, `//GET` for the root) as AWS's `methodSettings` key
/// (`~1pets~1{petId}/GET`, `~1/GET`): [`settings_key`] the other way.
pub fn aws_settings_key(method: &str) -> Option<String> {
    let (path, verb) = method.rsplit_once('/')?;
    let path = if path.is_empty() { "/" } else { path };
    Some(format!(
        "{}/{verb}",
        path.replace('~', "~0").replace('/', "~1")
    ))
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

fn stage_file(s: &Stage) -> StageFile {
    StageFile {
        throttle: s.throttle,
        methods: s.methods.clone(),
        // AWS answers a resource or verb that does not exist with Missing Authentication Token.
        unknown_methods: s
            .resources_known
            .then_some(crate::snapshot::UnknownMethods::Forbid),
        ..StageFile::default()
    }
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

/// `plangate export`: the configuration in force and the runtime catalog as one configuration
/// file — the file's objects as they are, then the runtime plans and keys (AWS's shapes in the
/// file's types; key values as SHA-256 only) — checked by the loader. A team that moves from
/// the API to files starts from it.
pub fn export(
    snap: &crate::snapshot::Snapshot,
    catalog: &crate::catalog::State,
) -> Result<String, String> {
    use crate::config::file::{ApiKeyFile, ApiStageFile, QuotaFile, ThrottleFile, UsagePlanFile};
    let mut doc = crate::config::render::with_hashes(snap);
    let throttle = |t: &crate::catalog::records::ThrottleSettings| ThrottleFile {
        rate: t.rate_limit,
        burst: t.burst_limit,
    };
    for p in catalog.plans.values() {
        let quota = match &p.quota {
            None => None,
            Some(q) => Some(QuotaFile {
                limit: q.limit,
                period: crate::catalog::period_of(&q.period)
                    .ok_or_else(|| format!("plan {}: quota period `{}`", p.id, q.period))?,
                offset: q.offset,
                starts_at: p.initial_period.filter(|_| q.offset != 0),
            }),
        };
        let plan = UsagePlanFile {
            enforce: None,
            name: Some(p.name.clone()),
            description: p.description.clone(),
            throttle: p.throttle.as_ref().map(throttle),
            quota,
            api_stages: p
                .api_stages
                .iter()
                .map(|s| ApiStageFile {
                    api: s.api_id.clone(),
                    stage: s.stage.clone(),
                    throttle: s
                        .throttle
                        .iter()
                        .map(|(m, t)| (m.clone(), throttle(t)))
                        .collect(),
                })
                .collect(),
        };
        doc.usage_plans.insert(p.id.clone(), plan);
    }
    for k in catalog.keys.values() {
        doc.api_keys.push(ApiKeyFile {
            id: k.id.clone(),
            name: k.name.clone(),
            description: k.description.clone(),
            value: None,
            value_sha256: Some(hex::encode(k.value_sha256)),
            enabled: k.enabled,
            customer_id: k.customer_id.clone(),
            usage_plans: catalog.plans_of(&k.id).map(str::to_owned).collect(),
        });
    }
    let body = serde_yaml_ng::to_string(&doc).map_err(|e| e.to_string())?;
    let yaml = format!(
        "# Exported by `plangate export` (docs/control-plane.md): the configuration in force and the\n# runtime catalog. Key values are stored as SHA-256 digests only.\n{body}"
    );
    crate::config::load_str(&yaml, None, std::path::Path::new("."))
        .map_err(|e| format!("the export does not load: {e}"))?;
    Ok(yaml)
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
        // And back, for the control plane's GetStages.
        for method in ["/pets/GET", "/pets/{petId}/POST", "//GET", "/a~b/GET"] {
            let aws = aws_settings_key(method).unwrap();
            assert_eq!(settings_key(&aws).as_deref(), Some(method), "{aws}");
        }
        assert_eq!(settings_key("*/*"), None);
        assert_eq!(settings_key("pets/GET"), None);
        assert_eq!(method_key("/", "ANY"), "//ANY");
        assert_eq!(method_key("/pets/{proxy+}", "ANY"), "/pets/{proxy+}/ANY");
    }
}
