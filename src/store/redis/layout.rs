//! Where each counter lives in Redis: which hash, which field.
//!
//! - A key's own limits are fields of one hash per key, `{<prefix>|<key id>}`: per plan, one
//!   record (`r|<plan>`: the plan's throttle, its quota with the window the count belongs to,
//!   and today's usage — seven doubles), the plan's per-method throttles (`m|<plan>|<method>`),
//!   and past days' usage (`u|<plan>|<day start>`, written when a record's day ends). The braces
//!   are the Redis Cluster hash tag: a key's hash is on one master, keys spread over all.
//! - Shared buckets — the account (`a`) and stage methods (`s|<method>`) — are fields of
//!   `{<prefix>}|shared`.
//! - Before this layout every counter was a key of its own, `{<prefix>}|<name>`
//!   ([`LimitKey::name`]): such a "legacy" quota or usage counter is read once, where the single
//!   node still has it, when its field does not exist yet.

use crate::limit::LimitKey;

/// The hash of a counter.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Home {
    /// The hash of one API key.
    Key(std::sync::Arc<str>),
    /// The hash of the shared buckets.
    Shared,
}

/// The hash and field of `key`.
pub fn place(key: &LimitKey) -> (Home, String) {
    match key {
        LimitKey::Plan { plan, key }
        | LimitKey::Quota { plan, key, .. }
        | LimitKey::Usage { plan, key, .. } => (Home::Key(key.clone()), record_field(plan)),
        LimitKey::PlanMethod { plan, key, method } => {
            (Home::Key(key.clone()), format!("m|{plan}|{method}"))
        }
        LimitKey::StageMethod { method } => (Home::Shared, format!("s|{method}")),
        LimitKey::Account => (Home::Shared, "a".to_owned()),
    }
}

/// The field of a plan's record in a key's hash: the plan's throttle, quota and today's usage.
pub fn record_field(plan: &str) -> String {
    format!("r|{plan}")
}

/// The field of a past day's usage of a plan (`day_start` in Unix seconds).
pub fn usage_field(plan: &str, day_start_secs: i64) -> String {
    format!("u|{plan}|{day_start_secs}")
}

/// Whether `key` is part of a plan's record (its throttle, quota, daily usage).
pub fn is_record(key: &LimitKey) -> bool {
    matches!(
        key,
        LimitKey::Plan { .. } | LimitKey::Quota { .. } | LimitKey::Usage { .. }
    )
}

/// Whether `key` is shared by all callers (the account and stage-method buckets).
pub fn is_shared(key: &LimitKey) -> bool {
    matches!(key, LimitKey::Account | LimitKey::StageMethod { .. })
}

/// The Redis key of a hash.
pub fn hash_name(prefix: &str, home: &Home) -> String {
    match home {
        Home::Key(id) => format!("{{{prefix}|{id}}}"),
        Home::Shared => format!("{{{prefix}}}|shared"),
    }
}

/// The key of the earlier layout that held `key`, for the kinds an upgrade must not lose
/// (quota and usage counts).
pub fn legacy_name(prefix: &str, key: &LimitKey) -> Option<String> {
    matches!(key, LimitKey::Quota { .. } | LimitKey::Usage { .. })
        .then(|| format!("{{{prefix}}}|{}", key.name()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_keys_counters_share_its_hash_and_shared_ones_do_not() {
        let k: std::sync::Arc<str> = "k1".into();
        let p: std::sync::Arc<str> = "gold".into();
        let homes = [
            place(&LimitKey::Plan {
                plan: p.clone(),
                key: k.clone(),
            }),
            place(&LimitKey::Quota {
                plan: p.clone(),
                key: k.clone(),
                window_start: 0,
            }),
            place(&LimitKey::Usage {
                plan: p.clone(),
                key: k.clone(),
                day_start: 86_400 * crate::clock::NANOS_PER_SEC,
            }),
        ];
        for (home, _) in &homes {
            assert_eq!(hash_name("pg", home), "{pg|k1}");
        }
        assert!(homes.iter().all(|(_, f)| f == "r|gold"), "one record");
        let (home, field) = place(&LimitKey::Account);
        assert_eq!(
            (hash_name("pg", &home).as_str(), field.as_str()),
            ("{pg}|shared", "a")
        );
    }
}
