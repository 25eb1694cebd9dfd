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

/// The values decide.lua packs as little-endian doubles, by name and in order: the one
/// definition of each layout. decide.lua declares the same (its `-- layout:` lines), and a test
/// holds the two together.
pub mod values {
    /// A bucket's stored value (a shared bucket, a per-method throttle). Only the script reads
    /// and writes it; declared here so that the test holds its layout too.
    #[allow(dead_code)]
    pub const BUCKET: [&str; 4] = ["level", "s", "ns", "unit"];
    /// A bucket stored before its unit was (read in the unit of the request that reads it).
    #[allow(dead_code)]
    pub const BUCKET_V1: [&str; 3] = first(&BUCKET);
    /// A bucket entry's parameters (kind `b`).
    pub const BUCKET_PARAMS: [&str; 4] = ["unit", "refill", "capacity", "units"];
    /// A plan's record of one key (field `r|<plan>`).
    pub const RECORD: [&str; 8] = [
        "level",
        "s",
        "ns",
        "used",
        "window_start",
        "used_today",
        "day",
        "unit",
    ];
    /// A record stored before its throttle's unit was: the same, without `unit`.
    pub const RECORD_V1: [&str; 7] = first(&RECORD);

    /// The first `N` names of a layout: an earlier version of it.
    const fn first<const N: usize>(layout: &[&'static str]) -> [&'static str; N] {
        let mut out = [""; N];
        let mut i = 0;
        while i < N {
            out[i] = layout[i];
            i += 1;
        }
        out
    }
    /// A record entry's parameters (kind `r`).
    pub const RECORD_PARAMS: [&str; 12] = [
        "unit",
        "refill",
        "capacity",
        "bucket_units",
        "limit",
        "window_start",
        "window_end",
        "quota_units",
        "quota_legacy",
        "day",
        "usage_units",
        "usage_legacy",
    ];

    /// A lease's parameters: a shared bucket, the units wanted and the units given back.
    pub const LEASE_PARAMS: [&str; 5] = ["unit", "refill", "capacity", "want", "give"];

    /// `layout`'s values packed, each given by name (`pack_named!(BUCKET_PARAMS; unit: d, …)`):
    /// names resolved to positions at compile time, every value of the layout given.
    macro_rules! pack_named {
        ($layout:expr; $($name:ident: $value:expr),+ $(,)?) => {{
            use $crate::store::redis::layout::values::{at, pack};
            const { assert!([$(stringify!($name)),+].len() == $layout.len()) };
            let mut v = [0.0f64; $layout.len()];
            $( v[const { at(&$layout, stringify!($name)) }] = $value; )+
            pack(&v)
        }};
    }
    pub(crate) use pack_named;

    /// Doubles packed as decide.lua's `struct.unpack("<d…")` reads them.
    pub fn pack(values: &[f64]) -> Vec<u8> {
        values.iter().flat_map(|v| v.to_le_bytes()).collect()
    }

    /// The `i`th double of a packed value (0 when it is too short).
    pub fn nth(packed: &[u8], i: usize) -> f64 {
        packed
            .get(i * 8..i * 8 + 8)
            .and_then(|b| b.try_into().ok())
            .map_or(0.0, f64::from_le_bytes)
    }

    /// The index of `name` in `layout`: a constant, resolved at compile time where it is used
    /// in a `const`.
    pub const fn at(layout: &[&str], name: &str) -> usize {
        let mut i = 0;
        while i < layout.len() {
            if eq(layout[i], name) {
                return i;
            }
            i += 1;
        }
        panic!("no such value in the layout")
    }

    const fn eq(a: &str, b: &str) -> bool {
        let (a, b) = (a.as_bytes(), b.as_bytes());
        if a.len() != b.len() {
            return false;
        }
        let mut i = 0;
        while i < a.len() {
            if a[i] != b[i] {
                return false;
            }
            i += 1;
        }
        true
    }
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

    /// decide.lua declares every packed layout as Rust does, and packs and unpacks each with as
    /// many doubles as it names.
    #[test]
    fn decide_lua_declares_the_same_layouts() {
        let lua = include_str!("decide.lua");
        let declared = |name: &str| -> Vec<String> {
            let line = lua
                .lines()
                .find_map(|l| l.strip_prefix(&format!("-- layout: {name} = ")))
                .unwrap_or_else(|| panic!("decide.lua declares no `{name}` layout"));
            line.split(',').map(|v| v.trim().to_owned()).collect()
        };
        for (name, rust) in [
            ("bucket", &values::BUCKET[..]),
            ("bucket_v1", &values::BUCKET_V1[..]),
            ("record_v1", &values::RECORD_V1[..]),
            ("bucket_params", &values::BUCKET_PARAMS[..]),
            ("record", &values::RECORD[..]),
            ("record_params", &values::RECORD_PARAMS[..]),
            ("lease_params", &values::LEASE_PARAMS[..]),
        ] {
            assert_eq!(declared(name), rust, "the `{name}` layout");
            // `local BUCKET = "<ddd"`: the format string has one `d` per value.
            let format = lua
                .lines()
                .find_map(|l| l.strip_prefix(&format!("local {} = \"<", name.to_uppercase())))
                .unwrap_or_else(|| panic!("decide.lua has no {} format", name.to_uppercase()));
            assert_eq!(
                format.matches('d').count(),
                rust.len(),
                "the `{name}` format"
            );
        }
        // Nowhere else does the script spell a format of its own.
        assert_eq!(
            lua.matches("\"<d").count(),
            7,
            "a layout spelled outside its declaration"
        );
        assert_eq!(values::at(&values::RECORD, "day"), 6);
        let packed = values::pack(&[1.0, 2.5]);
        assert_eq!(
            (values::nth(&packed, 1), values::nth(&packed, 2)),
            (2.5, 0.0)
        );
    }
}
