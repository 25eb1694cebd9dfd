//! The configuration file as users write it (docs/config.md), deserialized as-is.
//!
//! Every type denies unknown fields so that a typo fails loudly. Numbers stay wide (`f64`, `i64`)
//! here and are range-checked in `compile`, which can then report *every* bad value with its
//! position instead of stopping at the first one. Enumerations that the compiled model keeps
//! (`Period`, `UnknownMethods`, `RateLimitHeaders`) are the model's own types: the file sits at
//! the edge and borrows them; nothing downstream reads this module.

use std::fmt;

use indexmap::IndexMap;
use serde::{Deserialize, Deserializer, Serialize};

pub use crate::limit::Period;
pub use crate::snapshot::{RateLimitHeaders, UnknownMethods};

/// The whole file.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ConfigFile {
    pub version: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub account: Option<AccountFile>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_key_source: Option<ApiKeySourceFile>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quota_week_start: Option<Weekday>,
    /// The API and stage used when a request does not name them (Envoy `context_extensions`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub defaults: Option<DefaultsFile>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub responses: Option<ResponsesFile>,
    /// How Envoy's RateLimitService requests name a request.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_limit_service: Option<RateLimitServiceFile>,
    #[serde(
        default,
        deserialize_with = "unique_keys",
        skip_serializing_if = "IndexMap::is_empty"
    )]
    pub apis: IndexMap<String, ApiFile>,
    /// Custom domain names (AWS `DomainName`): which API stage a host and base path lead to.
    #[serde(
        default,
        deserialize_with = "unique_keys",
        skip_serializing_if = "IndexMap::is_empty"
    )]
    pub domain_names: IndexMap<String, DomainNameFile>,
    /// With `domain_names`: what a host no domain name claims gets — `refuse` (403, the
    /// default) or `defaults` (the `defaults` API stage).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unknown_hosts: Option<UnknownHosts>,
    /// Sidecars: the workload's own identity (Envoy's `destination.principal`, a SPIFFE id from
    /// the mesh certificate) → the API stage it serves. A client cannot choose it, as it can
    /// choose a Host header.
    #[serde(
        default,
        deserialize_with = "unique_keys",
        skip_serializing_if = "IndexMap::is_empty"
    )]
    pub workloads: IndexMap<String, WorkloadFile>,
    /// Path parameters (`/admin;jsessionid=1/x`): `strip` them from each segment before
    /// matching (the default: servlet containers serve `/admin/x`), or `refuse` the request.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path_parameters: Option<PathParameters>,
    #[serde(
        default,
        deserialize_with = "unique_keys",
        skip_serializing_if = "IndexMap::is_empty"
    )]
    pub usage_plans: IndexMap<String, UsagePlanFile>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub api_keys: Vec<ApiKeyFile>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub api_keys_files: Vec<String>,
    /// Customised refusals (AWS `GatewayResponse`), by response type (`THROTTLED`, …).
    #[serde(
        default,
        deserialize_with = "unique_keys",
        skip_serializing_if = "IndexMap::is_empty"
    )]
    pub gateway_responses: IndexMap<String, GatewayResponseFile>,
}

/// One customised refusal: status (ext_authz only), headers, body.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct GatewayResponseFile {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<i64>,
    #[serde(
        default,
        deserialize_with = "unique_keys",
        skip_serializing_if = "IndexMap::is_empty"
    )]
    pub headers: IndexMap<String, String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct AccountFile {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub throttle: Option<ThrottleFile>,
}

/// Token bucket: `rate` requests per second refill (fractions allowed), `burst` capacity. Both
/// are optional, as in AWS's `ThrottleSettings`; `compile` fills in a missing one.
#[derive(Debug, Clone, Copy, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ThrottleFile {
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        serialize_with = "whole_rate"
    )]
    pub rate: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub burst: Option<i64>,
}

/// Where the API key comes from: a request header (AWS `HEADER`) or Envoy dynamic metadata set by
/// an earlier filter such as `jwt_authn` (AWS `AUTHORIZER`). Exactly one of the two.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ApiKeySourceFile {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub header: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<MetadataSourceFile>,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct MetadataSourceFile {
    pub namespace: String,
    pub path: Vec<String>,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct DefaultsFile {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stage: Option<String>,
}

/// What the answers carry besides the decision itself.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ResponsesFile {
    /// Rate-limit headers on answers: `ietf` (`RateLimit-Policy` + `RateLimit`), `x-ratelimit`
    /// (`X-RateLimit-Limit/Remaining/Reset`) or `none`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_limit_headers: Option<RateLimitHeaders>,
    /// Forward the client's API key header to the upstream (AWS does). Default true.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub forward_api_key: Option<bool>,
    /// Attach dynamic metadata (key id, plan, outcome, …) to ext_authz answers for Envoy's
    /// access logs. Default true.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dynamic_metadata: Option<bool>,
}

/// RLS settings: the domain plangate answers, and the descriptor entry keys it reads.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimitServiceFile {
    /// Default `plangate`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub domain: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub descriptor_keys: Option<DescriptorKeysFile>,
}

/// The descriptor entry keys that carry each part of a request (defaults: the field names).
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct DescriptorKeysFile {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stage: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_key: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub method: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// The host (`:authority`), for custom domain names; used when `api`/`stage` are absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ApiFile {
    #[serde(
        default,
        deserialize_with = "unique_keys",
        skip_serializing_if = "IndexMap::is_empty"
    )]
    pub stages: IndexMap<String, StageFile>,
    /// Where this API's requests carry their key (AWS `apiKeySource` is a property of each
    /// API); the top-level `api_key_source` when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_key_source: Option<ApiKeySourceFile>,
    /// This API's customised refusals, before the top-level `gateway_responses`.
    #[serde(
        default,
        deserialize_with = "unique_keys",
        skip_serializing_if = "IndexMap::is_empty"
    )]
    pub gateway_responses: IndexMap<String, GatewayResponseFile>,
}

/// The API stage a workload identity serves.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct WorkloadFile {
    pub api: String,
    pub stage: String,
}

pub use crate::snapshot::{PathParameters, UnknownHosts};

/// A custom domain name: its base path mappings (AWS `BasePathMapping`).
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct DomainNameFile {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub base_path_mappings: Vec<BasePathMappingFile>,
}

/// `https://{domain}/{base_path}/…` → an API stage, the base path stripped before matching.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct BasePathMappingFile {
    /// Leading path segment(s) without slashes at the ends (`v1`, `orders/v1`); `(none)`, empty
    /// or absent: the mapping of every path no other base path matches.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base_path: Option<String>,
    pub api: String,
    pub stage: String,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct StageFile {
    /// Default throttle of each method of the stage (one bucket per method, shared by all callers).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub throttle: Option<ThrottleFile>,
    /// Keyed by `<path template>/<VERB>`, e.g. `/pets/{petId}/GET`, `//GET` for the root, `*` verb.
    #[serde(
        default,
        deserialize_with = "unique_keys",
        skip_serializing_if = "IndexMap::is_empty"
    )]
    pub methods: IndexMap<String, MethodFile>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_key_required: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unknown_methods: Option<UnknownMethods>,
    /// `false`: shadow mode for this stage — decide and charge, answer OK.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enforce: Option<bool>,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct MethodFile {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub throttle: Option<ThrottleFile>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_key_required: Option<bool>,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct UsagePlanFile {
    /// `false`: shadow mode for this plan — decide and charge, answer OK.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enforce: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub throttle: Option<ThrottleFile>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quota: Option<QuotaFile>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub api_stages: Vec<ApiStageFile>,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct QuotaFile {
    pub limit: i64,
    pub period: Period,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub offset: i64,
    /// The day the plan's first quota period is counted from; `offset` applies to the period that
    /// contains it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub starts_at: Option<chrono::NaiveDate>,
}

/// The first day of a WEEK quota.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum Weekday {
    #[default]
    Monday,
    Tuesday,
    Wednesday,
    Thursday,
    Friday,
    Saturday,
    Sunday,
}

/// The file's spelling of each day and chrono's, both ways (compile reads, render writes).
const WEEKDAYS: [(Weekday, chrono::Weekday); 7] = [
    (Weekday::Monday, chrono::Weekday::Mon),
    (Weekday::Tuesday, chrono::Weekday::Tue),
    (Weekday::Wednesday, chrono::Weekday::Wed),
    (Weekday::Thursday, chrono::Weekday::Thu),
    (Weekday::Friday, chrono::Weekday::Fri),
    (Weekday::Saturday, chrono::Weekday::Sat),
    (Weekday::Sunday, chrono::Weekday::Sun),
];

impl From<Weekday> for chrono::Weekday {
    fn from(day: Weekday) -> Self {
        WEEKDAYS[day as usize].1
    }
}

impl From<chrono::Weekday> for Weekday {
    fn from(day: chrono::Weekday) -> Self {
        WEEKDAYS[day.num_days_from_monday() as usize].0
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ApiStageFile {
    pub api: String,
    pub stage: String,
    /// Per-method throttles of this plan on this stage, keyed like the stage's `methods`.
    #[serde(
        default,
        deserialize_with = "unique_keys",
        skip_serializing_if = "IndexMap::is_empty"
    )]
    pub throttle: IndexMap<String, ThrottleFile>,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ApiKeyFile {
    pub id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<Secret>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value_sha256: Option<String>,
    #[serde(default = "default_true", skip_serializing_if = "is_true")]
    pub enabled: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub customer_id: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub usage_plans: Vec<String>,
}

fn default_true() -> bool {
    true
}

fn is_true(b: &bool) -> bool {
    *b
}

fn is_zero(n: &i64) -> bool {
    *n == 0
}

/// Whole rates as whole numbers (`rate: 10`, not `rate: 10.0`).
fn whole_rate<S: serde::Serializer>(rate: &Option<f64>, s: S) -> Result<S::Ok, S::Error> {
    match rate {
        Some(r) if r.fract() == 0.0 && r.abs() < 1e15 => s.serialize_i64(*r as i64),
        Some(r) => s.serialize_f64(*r),
        None => s.serialize_none(),
    }
}

/// A secret string (an API key value). Its `Debug` is redacted and its deserialization errors
/// never quote it, so it cannot leak through an error message or a log line.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

impl Serialize for Secret {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str("<redacted>")
    }
}

impl<'de> Deserialize<'de> for Secret {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = Secret;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a key value as a string")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Secret, E> {
                Ok(Secret(v.to_owned()))
            }
            // YAML reads an all-digit key as a number; take it as the text it was.
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<Secret, E> {
                Ok(Secret(v.to_string()))
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<Secret, E> {
                Ok(Secret(v.to_string()))
            }
            fn visit_u128<E: serde::de::Error>(self, v: u128) -> Result<Secret, E> {
                Ok(Secret(v.to_string()))
            }
            fn visit_i128<E: serde::de::Error>(self, v: i128) -> Result<Secret, E> {
                Ok(Secret(v.to_string()))
            }
            // Anything else is refused without quoting it (serde's default message would).
            fn visit_f64<E: serde::de::Error>(self, _: f64) -> Result<Secret, E> {
                Err(E::custom("a key value must be a string (quote it)"))
            }
            fn visit_bool<E: serde::de::Error>(self, _: bool) -> Result<Secret, E> {
                Err(E::custom("a key value must be a string (quote it)"))
            }
        }
        deserializer.deserialize_any(V)
    }
}

/// A mapping whose keys must be unique: YAML itself does not forbid `gold:` twice, and a silent
/// last-one-wins would drop a plan.
fn unique_keys<'de, D, V>(deserializer: D) -> Result<IndexMap<String, V>, D::Error>
where
    D: Deserializer<'de>,
    V: Deserialize<'de>,
{
    struct Visit<V>(std::marker::PhantomData<V>);
    impl<'de, V: Deserialize<'de>> serde::de::Visitor<'de> for Visit<V> {
        type Value = IndexMap<String, V>;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a mapping")
        }
        fn visit_unit<E: serde::de::Error>(self) -> Result<Self::Value, E> {
            Ok(IndexMap::new())
        }
        fn visit_map<A: serde::de::MapAccess<'de>>(
            self,
            mut map: A,
        ) -> Result<Self::Value, A::Error> {
            let mut out = IndexMap::with_capacity(map.size_hint().unwrap_or(0));
            while let Some(k) = map.next_key::<String>()? {
                if out.contains_key(&k) {
                    return Err(serde::de::Error::custom(format!("duplicate entry `{k}`")));
                }
                let v = map.next_value()?;
                out.insert(k, v);
            }
            Ok(out)
        }
    }
    deserializer.deserialize_map(Visit(std::marker::PhantomData))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn weekdays_convert_both_ways() {
        for (file, chrono) in WEEKDAYS {
            assert_eq!(chrono::Weekday::from(file), chrono);
            assert_eq!(Weekday::from(chrono), file);
        }
        assert_eq!(chrono::Weekday::from(Weekday::Sunday), chrono::Weekday::Sun);
    }
}
