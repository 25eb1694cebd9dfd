//! The compiled, immutable plans: what the engine reads on every request — the model that the
//! configuration file is compiled into, and whose types the file format borrows.
//!
//! Built by `config::compile`, swapped whole by reload. Keys are indexed by the SHA-256 of their
//! value; no plaintext value survives compilation. Each stage has a method matcher (matchit) that
//! picks the most specific template: literal segments, then `{param}`, then `{proxy+}`.

pub mod responses;
pub mod seen;

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

/// With custom domain names, what a host none of them claims gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum UnknownHosts {
    /// 403 `Forbidden` (reason `unknown_domain`).
    #[default]
    Refuse,
    /// The `defaults` API stage.
    Defaults,
}

/// What is done with `;` parameters in a request path's segments.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum PathParameters {
    /// Removed from each segment before matching (`/admin;x=1/y` is `/admin/y`).
    #[default]
    Strip,
    /// A path with any is refused (403, reason `path_parameters`).
    Refuse,
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
    /// Top-level gateway responses (an API's own come first).
    pub gateway_responses: responses::GatewayResponses,
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
    /// Custom domain names: host and base path → stage.
    pub domains: Domains,
    /// With domain names, whether a host none claims takes the defaults.
    pub unknown_hosts: UnknownHosts,
    /// Workload identity (`destination.principal`) → stage.
    pub workloads: HashMap<String, Arc<Stage>>,
    pub path_parameters: PathParameters,
    pub plans: Vec<Plan>,
    pub plan_index: HashMap<String, u32>,
    pub keys: Vec<ApiKey>,
    pub key_index: FastMap<KeyHash, u32>,
    /// Indices of `keys`, in the order of their ids (lookups and pages by id).
    pub key_order: Vec<u32>,
    /// Indices of `keys` by (name, id) and by (customer id, id), of the keys that have one:
    /// built on first use (the console's searches), not at every reload.
    pub key_search: std::sync::OnceLock<KeySearch>,
    /// The configuration file this was compiled from (empty: text without a file, such as the
    /// embedded default): what the control plane names when it refuses to change what the
    /// file defines.
    pub source: String,
}

/// The file's keys in the orders the console searches them in.
#[derive(Debug, Default)]
pub struct KeySearch {
    /// Keys with a name, by (name, id).
    pub by_name: Vec<u32>,
    /// Keys with a customer id, by (customer id, id).
    pub by_customer: Vec<u32>,
    /// Per plan (by plan index): its keys, by id.
    pub by_plan: Vec<Vec<u32>>,
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
    pub host: String,
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
            host: "host".into(),
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
    /// Shared with the custom domain names that lead to them.
    pub stages: FastMap<String, Arc<Stage>>,
    /// This API's own key source, when it has one (else the snapshot's `key_source`).
    pub key_source: Option<KeySource>,
    /// This API's gateway responses (before the top-level ones).
    pub gateway_responses: responses::GatewayResponses,
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
    /// `false`: shadow mode (refusals are answered OK, and reported).
    pub enforce: bool,
    pub methods: Vec<Method>,
    resources: Vec<Resource>,
    /// Template → resource, so that verbs of one template share a resource.
    templates: HashMap<String, usize>,
    matcher: matchit::Router<usize>,
    /// Every resource a template implies whose last segment is literal (`/parent/{id}/GET`
    /// implies `/parent`): what a greedy sibling does not take (see [`Stage::match_method`]).
    literal_resources: std::collections::HashSet<String>,
}

/// The methods of one path template, by verb.
#[derive(Debug, Default)]
struct Resource {
    verbs: Vec<(String, usize)>,
    any: Option<usize>,
    /// For a greedy template (`/files/{proxy+}`): the template before the greedy segment
    /// (`/files`) and that segment's index in the path's `/`-separated parts (2).
    greedy: Option<(String, usize)>,
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
    /// `false`: shadow mode (refusals are answered OK, and reported).
    pub enforce: bool,
}

#[derive(Debug)]
pub struct ApiKey {
    pub id: Arc<str>,
    pub name: Option<Box<str>>,
    pub enabled: bool,
    pub customer_id: Option<Arc<str>>,
    /// Plan indices, inline for one or two plans (most keys): no separate allocation to read
    /// on every request.
    pub plans: smallvec::SmallVec<[u32; 2]>,
}

/// Custom domain names (AWS `DomainName` + `BasePathMapping`): a host and the leading segments of
/// a path lead to a stage. Hosts compare case-insensitively, without a port; an exact domain
/// beats a wildcard, and a longer wildcard a shorter one; then the longest base path made of
/// whole leading segments wins, and `(none)` takes what no base path matches.
#[derive(Debug, Default)]
pub struct Domains {
    exact: FastMap<String, Domain>,
    /// `*.tenants.example.net` as `.tenants.example.net`, longest first.
    wildcards: Vec<(String, Domain)>,
}

/// One custom domain name's base path mappings.
#[derive(Debug, Default)]
pub struct Domain {
    /// (base path without slashes at the ends, stage), longest first; `(none)` is "" and comes
    /// last. The stage itself, not its name: resolving a host costs one lookup, not three.
    mappings: Vec<(String, Arc<Stage>)>,
}

/// Where a host and a path lead.
#[derive(Debug, Clone, Copy)]
pub enum HostMatch<'s, 'p> {
    /// No custom domain name for this host.
    NoDomain,
    /// A domain, but none of its base paths (and no `(none)`) matches the path.
    NoBasePath,
    /// A stage, and the path with the base path stripped (what the stage's methods match).
    Stage { stage: &'s Stage, path: &'p str },
}

impl Domain {
    /// Adds a mapping; `false` if the base path is mapped already.
    pub(crate) fn add(&mut self, base_path: &str, stage: Arc<Stage>) -> bool {
        if self.mappings.iter().any(|(b, _)| b == base_path) {
            return false;
        }
        self.mappings.push((base_path.to_owned(), stage));
        // Longest first: the first match is the longest.
        self.mappings.sort_by_key(|m| std::cmp::Reverse(m.0.len()));
        true
    }

    fn resolve<'p>(&self, path: &'p str) -> HostMatch<'_, 'p> {
        for (base, stage) in &self.mappings {
            if let Some(rest) = strip_base_path(path, base) {
                return HostMatch::Stage { stage, path: rest };
            }
        }
        HostMatch::NoBasePath
    }
}

/// `path` without the base path `base` (whole leading segments), or `None` if it does not
/// start with them: `/v1/pets` less `v1` is `/pets`, `/v1` less `v1` is `/`, `/v1x` keeps
/// no match.
fn strip_base_path<'p>(path: &'p str, base: &str) -> Option<&'p str> {
    if base.is_empty() {
        return Some(path);
    }
    let rest = path.strip_prefix('/')?.strip_prefix(base)?;
    if rest.is_empty() {
        Some("/")
    } else if rest.starts_with('/') {
        Some(rest)
    } else {
        None
    }
}

/// A host as domains compare it: no port, no trailing dot, lower case (allocating only when
/// the host has upper-case letters).
pub fn normalize_host(host: &str) -> std::borrow::Cow<'_, str> {
    let host = match host.strip_prefix('[') {
        // An IPv6 literal, `[::1]:8080`.
        Some(_) => host.find(']').map_or(host, |i| &host[..=i]),
        None => match host.rsplit_once(':') {
            Some((h, port)) if port.bytes().all(|b| b.is_ascii_digit()) => h,
            _ => host,
        },
    };
    let host = host.strip_suffix('.').unwrap_or(host);
    if host.bytes().any(|b| b.is_ascii_uppercase()) {
        std::borrow::Cow::Owned(host.to_ascii_lowercase())
    } else {
        std::borrow::Cow::Borrowed(host)
    }
}

impl Domains {
    pub fn is_empty(&self) -> bool {
        self.exact.is_empty() && self.wildcards.is_empty()
    }

    /// The domain named `name` (lower case; `*.` for a wildcard), created if new.
    pub(crate) fn entry(&mut self, name: &str) -> &mut Domain {
        match name.strip_prefix('*') {
            Some(suffix) => {
                let i = match self.wildcards.iter().position(|(s, _)| s == suffix) {
                    Some(i) => i,
                    None => {
                        self.wildcards.push((suffix.to_owned(), Domain::default()));
                        self.wildcards.sort_by_key(|w| std::cmp::Reverse(w.0.len()));
                        self.wildcards
                            .iter()
                            .position(|(s, _)| s == suffix)
                            .unwrap_or(0)
                    }
                };
                &mut self.wildcards[i].1
            }
            None => self.exact.entry(name.to_owned()).or_default(),
        }
    }

    /// Where `host` and `path` lead.
    pub fn resolve<'p>(&self, host: &str, path: &'p str) -> HostMatch<'_, 'p> {
        let host = normalize_host(host);
        if let Some(d) = self.exact.get(host.as_ref()) {
            return d.resolve(path);
        }
        for (suffix, d) in &self.wildcards {
            // `*.example.net` covers `a.example.net` and `a.b.example.net`, not `example.net`.
            if host.len() > suffix.len() && host.ends_with(suffix.as_str()) {
                return d.resolve(path);
            }
        }
        HostMatch::NoDomain
    }

    /// The domains, for reports: (name, base paths with their stages).
    pub fn list(&self) -> Vec<(String, Vec<(&str, &Stage)>)> {
        fn mapped(d: &Domain) -> Vec<(&str, &Stage)> {
            d.mappings.iter().map(|(b, s)| (b.as_str(), &**s)).collect()
        }
        let mut out: Vec<(String, Vec<(&str, &Stage)>)> = self
            .exact
            .iter()
            .map(|(n, d)| (n.clone(), mapped(d)))
            .chain(
                self.wildcards
                    .iter()
                    .map(|(s, d)| (format!("*{s}"), mapped(d))),
            )
            .collect();
        out.sort_by(|a, b| a.0.cmp(&b.0));
        out
    }
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
            enforce: true,
            methods: Vec::new(),
            resources: Vec::new(),
            templates: HashMap::new(),
            matcher: matchit::Router::new(),
            literal_resources: Default::default(),
        }
    }

    /// Adds a method. `template` is validated already (see `config::compile`); `verb` is an
    /// upper-case verb, or `ANY` or `*` for every verb. Errors name a conflicting template.
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
                let parts: Vec<&str> = template.split('/').collect();
                let mut resource = Resource::default();
                for (i, seg) in parts.iter().enumerate().skip(1) {
                    if seg.is_empty() {
                        continue;
                    }
                    if seg.ends_with("+}") {
                        resource.greedy = Some((parts[..i].join("/"), i));
                    } else if !seg.starts_with('{') {
                        self.literal_resources.insert(parts[..=i].join("/"));
                    }
                }
                self.resources.push(resource);
                r
            }
        };
        let r = &mut self.resources[resource];
        if is_any_verb(verb) {
            if r.any.is_some() {
                return Err(format!(
                    "`ANY` and `*` both name every verb of `{template}`; keep one"
                ));
            }
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
    ///
    /// A greedy `{proxy+}` does not take the subtree of a literal sibling resource: with
    /// `/parent` configured, `/{proxy+}` leaves `/parent` and everything under it (AWS, "Set up
    /// a method request"), so `/parent/7/x` with no resource of its own is an unknown method.
    pub fn match_method(&self, verb: &str, path: &str) -> MethodMatch {
        let path = normalize_path(path);
        let Ok(m) = self.matcher.at(path) else {
            return MethodMatch::Unknown;
        };
        let r = &self.resources[*m.value];
        if let Some((prefix, at)) = &r.greedy
            && let Some(seg) = path.split('/').nth(*at)
            && !self.literal_resources.is_empty()
            && self.literal_resources.contains(&format!("{prefix}/{seg}"))
        {
            return MethodMatch::Unknown;
        }
        // HTTP methods are case-sensitive (RFC 9110 §9.1), and AWS matches them so: `get` is
        // not `GET`.
        for (v, i) in &r.verbs {
            if v == verb {
                return MethodMatch::Known(*i);
            }
        }
        match r.any {
            Some(i) if ANY_VERBS.contains(&verb) => MethodMatch::Known(i),
            _ => MethodMatch::Unknown,
        }
    }

    /// The index of a method by its configured name (`/pets/GET`).
    pub fn method_by_name(&self, name: &str) -> Option<usize> {
        self.methods.iter().position(|m| &*m.name == name)
    }
}

/// The verbs `ANY` stands for: "all supported methods: DELETE, GET, HEAD, OPTIONS, PATCH, POST,
/// and PUT" (AWS, "Set up a proxy integration with a proxy resource"). Others (`TRACE`,
/// `CONNECT`, made-up verbs) match no `ANY` method.
pub const ANY_VERBS: [&str; 7] = ["DELETE", "GET", "HEAD", "OPTIONS", "PATCH", "POST", "PUT"];

/// `ANY` (AWS's name) and `*` (plangate's) both mean every verb of [`ANY_VERBS`].
pub(crate) fn is_any_verb(verb: &str) -> bool {
    verb == "ANY" || verb == "*"
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
        self.apis.get(api)?.stages.get(stage).map(|s| &**s)
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

    /// The key with id `id`.
    pub fn key_by_id(&self, id: &str) -> Option<&ApiKey> {
        let i = self
            .key_order
            .binary_search_by(|&i| (*self.keys[i as usize].id).cmp(id))
            .ok()?;
        Some(&self.keys[self.key_order[i] as usize])
    }

    /// The file's keys by name and by customer id (sorted on first use).
    pub fn key_search(&self) -> &KeySearch {
        self.key_search.get_or_init(|| {
            let keys = &self.keys;
            let mut by_name: Vec<u32> = (0..keys.len() as u32)
                .filter(|&i| keys[i as usize].name.is_some())
                .collect();
            by_name.sort_unstable_by(|&a, &b| {
                let (a, b) = (&keys[a as usize], &keys[b as usize]);
                (&a.name, &a.id).cmp(&(&b.name, &b.id))
            });
            let mut by_customer: Vec<u32> = (0..keys.len() as u32)
                .filter(|&i| keys[i as usize].customer_id.is_some())
                .collect();
            by_customer.sort_unstable_by(|&a, &b| {
                let (a, b) = (&keys[a as usize], &keys[b as usize]);
                (&a.customer_id, &a.id).cmp(&(&b.customer_id, &b.id))
            });
            let mut by_plan = vec![Vec::new(); self.plans.len()];
            for &i in &self.key_order {
                for &p in &keys[i as usize].plans {
                    if let Some(list) = by_plan.get_mut(p as usize) {
                        list.push(i);
                    }
                }
            }
            KeySearch {
                by_name,
                by_customer,
                by_plan,
            }
        })
    }

    /// The keys with ids from `from` on, in the order of their ids.
    pub fn keys_from<'s>(&'s self, from: &str) -> impl Iterator<Item = &'s ApiKey> + 's {
        let start = self
            .key_order
            .partition_point(|&i| *self.keys[i as usize].id < *from);
        self.key_order[start..]
            .iter()
            .map(|&i| &self.keys[i as usize])
    }

    /// The plan with id `id`.
    pub fn plan_by_id(&self, id: &str) -> Option<&Plan> {
        self.plan_index.get(id).map(|&i| &self.plans[i as usize])
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

    fn st(id: u32) -> Arc<Stage> {
        Arc::new(Stage::new(
            id,
            "a".into(),
            "s".into(),
            None,
            true,
            UnknownMethods::Allow,
        ))
    }

    fn domains() -> Domains {
        let mut d = Domains::default();
        let api = d.entry("api.example.com");
        assert!(api.add("v1", st(1)));
        assert!(api.add("", st(2)));
        assert!(api.add("orders/v1/items", st(3)));
        assert!(!api.add("v1", st(9)), "a base path twice");
        assert!(d.entry("*.tenants.example.net").add("", st(4)));
        assert!(d.entry("*.example.net").add("", st(5)));
        d
    }

    /// (stage id, stripped path), or `Err` with what refused.
    fn at<'p>(d: &Domains, host: &str, path: &'p str) -> Result<(u32, &'p str), &'static str> {
        match d.resolve(host, path) {
            HostMatch::Stage { stage, path } => Ok((stage.id, path)),
            HostMatch::NoDomain => Err("no domain"),
            HostMatch::NoBasePath => Err("no base path"),
        }
    }

    #[test]
    fn hosts_and_base_paths_lead_to_stages() {
        let d = domains();
        let at = |host, path| at(&d, host, path);
        assert_eq!(at("api.example.com", "/v1/pets"), Ok((1, "/pets")));
        assert_eq!(at("api.example.com", "/v1"), Ok((1, "/")));
        assert_eq!(at("api.example.com", "/v1/"), Ok((1, "/")));
        // Whole segments only: `/v10` is not under `v1`; it goes to (none), unstripped.
        assert_eq!(at("api.example.com", "/v10/pets"), Ok((2, "/v10/pets")));
        assert_eq!(at("api.example.com", "/pets"), Ok((2, "/pets")));
        // The longest base path wins.
        assert_eq!(at("api.example.com", "/orders/v1/items/7"), Ok((3, "/7")));
        assert_eq!(at("api.example.com", "/orders/v1"), Ok((2, "/orders/v1")));
        // Hosts: any case, a port, a trailing dot.
        assert_eq!(at("API.Example.COM:8443", "/v1/x"), Ok((1, "/x")));
        assert_eq!(at("api.example.com.", "/v1/x"), Ok((1, "/x")));
        // Wildcards: any depth below, the longest suffix first; not the bare domain.
        assert_eq!(at("acme.tenants.example.net", "/p"), Ok((4, "/p")));
        assert_eq!(at("a.b.tenants.example.net", "/p"), Ok((4, "/p")));
        assert_eq!(at("other.example.net", "/p"), Ok((5, "/p")));
        assert_eq!(at("tenants.example.net", "/p"), Ok((5, "/p")));
        assert_eq!(at("example.net", "/p"), Err("no domain"));
        assert_eq!(at("nope.example.org", "/p"), Err("no domain"));
    }

    #[test]
    fn a_domain_without_none_refuses_other_paths() {
        let mut d = Domains::default();
        assert!(d.entry("api.example.com").add("v1", st(1)));
        assert_eq!(at(&d, "api.example.com", "/v2/x"), Err("no base path"));
        assert_eq!(at(&d, "api.example.com", "/"), Err("no base path"));
        assert!(!d.is_empty());
        assert!(Domains::default().is_empty());
    }

    #[test]
    fn host_normalization() {
        assert_eq!(normalize_host("a.b:80"), "a.b");
        assert_eq!(normalize_host("[::1]:8080"), "[::1]");
        assert_eq!(normalize_host("A.B."), "a.b");
        assert!(matches!(
            normalize_host("a.b"),
            std::borrow::Cow::Borrowed(_)
        ));
        // Not a port: kept (and then matches no domain).
        assert_eq!(normalize_host("a.b:x"), "a.b:x");
    }

    #[test]
    fn hash_is_sha256() {
        assert_eq!(
            hex::encode(hash_key("abc")),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }
}
