//! The compiled, immutable plans: what the engine reads on every request — the model that the
//! configuration file is compiled into, and whose types the file format borrows.
//!
//! Built by `config::compile`, swapped whole by reload. Keys are indexed by the SHA-256 of their
//! value; no plaintext value survives compilation. Each stage has a method matcher (matchit) that
//! picks the most specific template: literal segments, then `{param}`, then `{proxy+}`.

use std::collections::HashMap;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::limit::{BucketSpec, FastMap, Quota};

/// SHA-256 of a key value.
pub type KeyHash = [u8; 32];

/// Key values shorter or longer than this, in characters, are refused (AWS's bounds).
pub const KEY_MIN_CHARS: usize = 20;
pub const KEY_MAX_CHARS: usize = 128;
/// The longest presented key value worth hashing, in bytes (the longest key in UTF-8).
pub const MAX_KEY_BYTES: usize = KEY_MAX_CHARS * 4;

/// What happens to a request for a method the stage does not list.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum UnknownMethods {
    /// Stage defaults apply to methods the stage does not list.
    #[default]
    Allow,
    /// 403 Missing Authentication Token, as AWS answers for a resource that does not exist.
    Forbid,
}

impl UnknownMethods {
    /// As the config file spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            UnknownMethods::Allow => "allow",
            UnknownMethods::Forbid => "forbid",
        }
    }
}

/// A weekday as the config file spells it (`quota_week_start: MONDAY`).
pub fn weekday_name(day: chrono::Weekday) -> &'static str {
    match day {
        chrono::Weekday::Mon => "MONDAY",
        chrono::Weekday::Tue => "TUESDAY",
        chrono::Weekday::Wed => "WEDNESDAY",
        chrono::Weekday::Thu => "THURSDAY",
        chrono::Weekday::Fri => "FRIDAY",
        chrono::Weekday::Sat => "SATURDAY",
        chrono::Weekday::Sun => "SUNDAY",
    }
}

/// Which rate-limit headers answers carry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum RateLimitHeaders {
    /// `RateLimit-Policy` and `RateLimit` (IETF draft).
    #[default]
    Ietf,
    /// `X-RateLimit-Limit`, `X-RateLimit-Remaining`, `X-RateLimit-Reset`.
    XRatelimit,
    None,
}

impl RateLimitHeaders {
    /// As the config file spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            RateLimitHeaders::Ietf => "ietf",
            RateLimitHeaders::XRatelimit => "x-ratelimit",
            RateLimitHeaders::None => "none",
        }
    }
}

/// Hashes a presented key value.
pub fn hash_key(value: &str) -> KeyHash {
    Sha256::digest(value.as_bytes()).into()
}

/// Everything the engine needs, compiled.
#[derive(Debug)]
pub struct Snapshot {
    /// Increases by one at every successful (re)load.
    pub generation: u64,
    pub account: Option<Throttle>,
    pub key_source: KeySource,
    pub week_start: chrono::Weekday,
    pub default_api: Option<String>,
    pub default_stage: Option<String>,
    pub rate_limit_headers: RateLimitHeaders,
    pub forward_api_key: bool,
    pub dynamic_metadata: bool,
    pub rls: RlsSettings,
    pub apis: FastMap<String, Api>,
    /// Stage id → (API name, stage name).
    pub stage_names: Vec<(Arc<str>, Arc<str>)>,
    pub plans: Vec<Plan>,
    pub plan_index: HashMap<String, u32>,
    pub keys: Vec<ApiKey>,
    pub key_index: FastMap<KeyHash, u32>,
}

/// A token bucket's parameters, with the rate as written (for reports).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Throttle {
    pub rate: f64,
    pub spec: BucketSpec,
}

/// How RLS requests are read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RlsSettings {
    pub domain: String,
    pub api: String,
    pub stage: String,
    pub api_key: String,
    pub method: String,
    pub path: String,
}

impl Default for RlsSettings {
    fn default() -> Self {
        RlsSettings {
            domain: "plangate".into(),
            api: "api".into(),
            stage: "stage".into(),
            api_key: "api_key".into(),
            method: "method".into(),
            path: "path".into(),
        }
    }
}

/// Where the API key is read from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeySource {
    /// A request header (lower-case name).
    Header(String),
    /// Envoy dynamic metadata: a namespace and a path of struct fields.
    Metadata {
        namespace: String,
        path: Vec<String>,
    },
}

#[derive(Debug)]
pub struct Api {
    pub stages: FastMap<String, Stage>,
}

#[derive(Debug)]
pub struct Stage {
    /// Dense id over all stages of all APIs, used by plans.
    pub id: u32,
    pub api: Arc<str>,
    pub name: Arc<str>,
    pub throttle: Option<Throttle>,
    pub api_key_required: bool,
    pub unknown_methods: UnknownMethods,
    pub methods: Vec<Method>,
    resources: Vec<Resource>,
    /// Template → resource, so that verbs of one template share a resource.
    templates: HashMap<String, usize>,
    matcher: matchit::Router<usize>,
}

/// The methods of one path template, by verb.
#[derive(Debug, Default)]
struct Resource {
    verbs: Vec<(String, usize)>,
    any: Option<usize>,
}

/// A configured method of a stage.
#[derive(Debug)]
pub struct Method {
    /// As written in the file: `/pets/{petId}/GET`.
    pub name: Arc<str>,
    /// Counter name, unique over the config: `petstore/prod /pets/{petId}/GET`.
    pub counter: Arc<str>,
    /// The method's throttle, or the stage default. `None`: no stage-level limit.
    pub throttle: Option<Throttle>,
    pub api_key_required: bool,
}

#[derive(Debug)]
pub struct Plan {
    pub id: Arc<str>,
    pub name: Option<String>,
    pub description: Option<String>,
    pub throttle: Option<Throttle>,
    pub quota: Option<Quota>,
    /// Stage id → per-method throttles of this plan on that stage (by method index).
    pub stages: Vec<(u32, Vec<(usize, Throttle)>)>,
}

#[derive(Debug)]
pub struct ApiKey {
    pub id: Arc<str>,
    pub name: Option<Box<str>>,
    pub enabled: bool,
    pub customer_id: Option<Arc<str>>,
    /// Plan indices.
    pub plans: Vec<u32>,
}

/// The result of matching a request's method against a stage.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MethodMatch {
    /// A configured method (index into `Stage::methods`).
    Known(usize),
    /// No configured method matches.
    Unknown,
}

impl Stage {
    pub(crate) fn new(
        id: u32,
        api: Arc<str>,
        name: Arc<str>,
        throttle: Option<Throttle>,
        api_key_required: bool,
        unknown_methods: UnknownMethods,
    ) -> Self {
        Stage {
            id,
            api,
            name,
            throttle,
            api_key_required,
            unknown_methods,
            methods: Vec::new(),
            resources: Vec::new(),
            templates: HashMap::new(),
            matcher: matchit::Router::new(),
        }
    }

    /// Adds a method. `template` is validated already (see `config::compile`); `verb` is an
    /// upper-case verb or `*`. Errors name a conflicting template.
    pub(crate) fn add_method(
        &mut self,
        template: &str,
        verb: &str,
        method: Method,
    ) -> Result<(), String> {
        let index = self.methods.len();
        let resource = match self.templates.get(template) {
            Some(&r) => r,
            None => {
                let r = self.resources.len();
                self.matcher
                    .insert(matchit_route(template), r)
                    .map_err(|e| match e {
                        matchit::InsertError::Conflict { with } => format!(
                            "conflicts with `{}`: a path position takes one parameter name",
                            aws_template(&with)
                        ),
                        other => other.to_string(),
                    })?;
                self.templates.insert(template.to_owned(), r);
                self.resources.push(Resource::default());
                r
            }
        };
        let r = &mut self.resources[resource];
        if verb == "*" {
            r.any = Some(index);
        } else {
            r.verbs.push((verb.to_owned(), index));
        }
        self.methods.push(method);
        Ok(())
    }

    /// Finds the method for a verb and a path (without query string). The most specific
    /// template wins, then an exact verb beats `*`. Like AWS, a path whose most specific
    /// resource lacks the verb is an unknown method (no fallback to a less specific resource).
    pub fn match_method(&self, verb: &str, path: &str) -> MethodMatch {
        let path = normalize_path(path);
        let Ok(m) = self.matcher.at(path) else {
            return MethodMatch::Unknown;
        };
        let r = &self.resources[*m.value];
        for (v, i) in &r.verbs {
            if v.eq_ignore_ascii_case(verb) {
                return MethodMatch::Known(*i);
            }
        }
        match r.any {
            Some(i) => MethodMatch::Known(i),
            None => MethodMatch::Unknown,
        }
    }

    /// The index of a method by its configured name (`/pets/GET`).
    pub fn method_by_name(&self, name: &str) -> Option<usize> {
        self.methods.iter().position(|m| &*m.name == name)
    }
}

/// `/pets/{id}` stays; `{proxy+}` becomes matchit's catch-all `{*proxy}`.
fn matchit_route(template: &str) -> String {
    let mut out = String::with_capacity(template.len() + 1);
    for (i, seg) in template.split('/').enumerate() {
        if i > 0 {
            out.push('/');
        }
        match seg.strip_prefix('{').and_then(|s| s.strip_suffix("+}")) {
            Some(name) => {
                out.push_str("{*");
                out.push_str(name);
                out.push('}');
            }
            None => out.push_str(seg),
        }
    }
    out
}

/// matchit's route back in AWS form: `{*proxy}` → `{proxy+}`.
fn aws_template(route: &str) -> String {
    route
        .split('/')
        .map(|seg| match seg.strip_prefix("{*") {
            Some(rest) => format!("{{{}+}}", rest.trim_end_matches('}')),
            None => seg.to_owned(),
        })
        .collect::<Vec<_>>()
        .join("/")
}

/// Strips a trailing slash (AWS treats `/pets/` as `/pets`); an empty path is the root.
pub fn normalize_path(path: &str) -> &str {
    if path.is_empty() {
        return "/";
    }
    match path.strip_suffix('/') {
        Some("") | None => path,
        Some(p) => p,
    }
}

impl Snapshot {
    /// The stage `api`/`stage`, if configured.
    pub fn stage(&self, api: &str, stage: &str) -> Option<&Stage> {
        self.apis.get(api)?.stages.get(stage)
    }

    /// The stage with id `id`.
    pub fn stage_by_id(&self, id: u32) -> Option<&Stage> {
        let (api, stage) = self.stage_names.get(id as usize)?;
        self.stage(api, stage)
    }

    /// The key whose value hashes to `hash`.
    pub fn key_by_hash(&self, hash: &KeyHash) -> Option<&ApiKey> {
        self.key_index.get(hash).map(|&i| &self.keys[i as usize])
    }

    /// The plan of `key` that grants `stage`, with that plan's per-method throttles there.
    pub fn plan_for(&self, key: &ApiKey, stage: u32) -> Option<(&Plan, &[(usize, Throttle)])> {
        key.plans.iter().find_map(|&p| {
            let plan = &self.plans[p as usize];
            plan.stages
                .iter()
                .find(|(s, _)| *s == stage)
                .map(|(_, m)| (plan, m.as_slice()))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn method(name: &str) -> Method {
        Method {
            name: name.into(),
            counter: name.into(),
            throttle: None,
            api_key_required: true,
        }
    }

    fn stage(methods: &[&str]) -> Stage {
        let mut s = Stage::new(0, "a".into(), "s".into(), None, true, UnknownMethods::Allow);
        for m in methods {
            let (t, v) = m.rsplit_once('/').unwrap();
            let t = if t.is_empty() { "/" } else { t };
            s.add_method(t, v, method(m)).unwrap();
        }
        s
    }

    fn name(s: &Stage, verb: &str, path: &str) -> Option<String> {
        match s.match_method(verb, path) {
            MethodMatch::Known(i) => Some(s.methods[i].name.to_string()),
            MethodMatch::Unknown => None,
        }
    }

    #[test]
    fn most_specific_template_wins() {
        let s = stage(&[
            "/pets/GET",
            "/pets/{petId}/GET",
            "/pets/{petId}/*",
            "/pets/mine/GET",
            "/admin/{proxy+}/*",
            "//GET",
        ]);
        assert_eq!(name(&s, "GET", "/pets").as_deref(), Some("/pets/GET"));
        assert_eq!(name(&s, "GET", "/pets/").as_deref(), Some("/pets/GET"));
        assert_eq!(
            name(&s, "GET", "/pets/42").as_deref(),
            Some("/pets/{petId}/GET")
        );
        assert_eq!(
            name(&s, "DELETE", "/pets/42").as_deref(),
            Some("/pets/{petId}/*")
        );
        assert_eq!(
            name(&s, "GET", "/pets/mine").as_deref(),
            Some("/pets/mine/GET")
        );
        // The most specific resource lacks the verb: unknown (no fallback to {petId}).
        assert_eq!(name(&s, "POST", "/pets/mine"), None);
        assert_eq!(name(&s, "POST", "/pets"), None);
        assert_eq!(
            name(&s, "GET", "/admin/a/b/c").as_deref(),
            Some("/admin/{proxy+}/*")
        );
        // {proxy+} needs at least one segment.
        assert_eq!(name(&s, "GET", "/admin"), None);
        assert_eq!(name(&s, "GET", "/").as_deref(), Some("//GET"));
        assert_eq!(name(&s, "GET", "").as_deref(), Some("//GET"));
        assert_eq!(name(&s, "GET", "/nope"), None);
    }

    #[test]
    fn conflicting_parameter_names_are_refused() {
        let mut s = stage(&["/pets/{petId}/GET"]);
        assert!(
            s.add_method("/pets/{id}", "PUT", method("/pets/{id}/PUT"))
                .is_err()
        );
        // Same template, another verb: fine.
        s.add_method("/pets/{petId}", "PUT", method("/pets/{petId}/PUT"))
            .unwrap();
        assert_eq!(
            name(&s, "PUT", "/pets/1").as_deref(),
            Some("/pets/{petId}/PUT")
        );
    }

    #[test]
    fn hash_is_sha256() {
        assert_eq!(
            hex::encode(hash_key("abc")),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }
}
