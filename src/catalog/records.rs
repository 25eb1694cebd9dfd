//! The catalog's objects as they are stored, in the JSON shapes of Amazon API Gateway's REST
//! API (`ApiKey`, `UsagePlan`), so that the control plane answers them as they are — with
//! plangate's own fields (a key's value hash, a quota's initial period) taken off first.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// AWS's `ThrottleSettings`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct ThrottleSettings {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub burst_limit: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_limit: Option<f64>,
}

/// AWS's `QuotaSettings`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct QuotaSettings {
    pub limit: i64,
    #[serde(default)]
    pub offset: i64,
    pub period: String,
}

/// AWS's `ApiStage`: a stage of an API, with per-method throttles keyed `/resource/METHOD`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ApiStage {
    pub api_id: String,
    pub stage: String,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub throttle: BTreeMap<String, ThrottleSettings>,
}

/// A key made at runtime: AWS's `ApiKey` without its value (kept as SHA-256 only).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ApiKeyRecord {
    pub id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    pub enabled: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub customer_id: Option<String>,
    /// Seconds since the epoch, as AWS's REST API sends dates.
    pub created_date: i64,
    pub last_updated_date: i64,
    #[serde(default)]
    pub stage_keys: Vec<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub tags: BTreeMap<String, String>,
    /// plangate's: the SHA-256 of the value (in hex in JSON).
    #[serde(with = "hex_hash")]
    pub value_sha256: crate::snapshot::KeyHash,
}

/// A key hash as 64 hex digits.
mod hex_hash {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(h: &crate::snapshot::KeyHash, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&hex::encode(h))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<crate::snapshot::KeyHash, D::Error> {
        let text = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        let mut out = [0u8; 32];
        hex::decode_to_slice(&*text, &mut out)
            .map_err(|e| serde::de::Error::custom(format!("valueSha256: {e}")))?;
        Ok(out)
    }
}

/// A plan made at runtime: AWS's `UsagePlan`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct UsagePlanRecord {
    pub id: String,
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    #[serde(default)]
    pub api_stages: Vec<ApiStage>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub throttle: Option<ThrottleSettings>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quota: Option<QuotaSettings>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub product_code: Option<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub tags: BTreeMap<String, String>,
    /// plangate's: the first day of the quota's initial period (where `offset` applies), fixed
    /// when the quota was set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub initial_period: Option<chrono::NaiveDate>,
}

/// Record names: `key/<id>`, `plan/<id>`, `member/<plan id>/<key id>` (a runtime key's id has
/// no `/`).
pub fn key_name(id: &str) -> String {
    format!("key/{id}")
}

pub fn plan_name(id: &str) -> String {
    format!("plan/{id}")
}

pub fn member_name(plan: &str, key: &str) -> String {
    format!("member/{plan}/{key}")
}

/// What a record name names.
#[derive(Debug, PartialEq, Eq)]
pub enum Named<'a> {
    Key(&'a str),
    Plan(&'a str),
    Member { plan: &'a str, key: &'a str },
    Other,
}

pub fn parse_name(name: &str) -> Named<'_> {
    if let Some(id) = name.strip_prefix("key/") {
        Named::Key(id)
    } else if let Some(id) = name.strip_prefix("plan/") {
        Named::Plan(id)
    } else if let Some((plan, key)) = name
        .strip_prefix("member/")
        .and_then(|m| m.rsplit_once('/'))
    {
        Named::Member { plan, key }
    } else {
        Named::Other
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        assert_eq!(parse_name(&key_name("ab12")), Named::Key("ab12"));
        assert_eq!(parse_name(&plan_name("gold")), Named::Plan("gold"));
        assert_eq!(
            parse_name(&member_name("tiers/gold", "k1")),
            Named::Member {
                plan: "tiers/gold",
                key: "k1"
            }
        );
        assert_eq!(parse_name("x/1"), Named::Other);
    }
}
