//! Reading keys and plans of both sources — the configuration file's and the runtime
//! catalog's — as one list in AWS's shapes, ordered by id, a page at a time. One
//! implementation for every face.

use std::collections::BTreeMap;

use super::State;
use super::ops::{CatalogError, ErrorKind, no_key, no_plan};
use super::records::{ApiKeyRecord, ApiStage, QuotaSettings, ThrottleSettings, UsagePlanRecord};
use crate::snapshot::{ApiKey, Plan, Snapshot, Throttle};

/// Where a key or plan is defined.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    File,
    Runtime,
}

/// The largest page.
pub const MAX_PAGE: usize = 500;
/// AWS's default page.
pub const DEFAULT_PAGE: usize = 25;

/// A page request: at most `limit` items from id `position` on.
#[derive(Debug, Clone, Default)]
pub struct Page {
    pub limit: Option<usize>,
    pub position: Option<String>,
}

impl Page {
    fn limit(&self) -> Result<usize, CatalogError> {
        let l = self.limit.unwrap_or(DEFAULT_PAGE);
        if !(1..=MAX_PAGE).contains(&l) {
            return Err(CatalogError::new(
                ErrorKind::BadRequest,
                format!("limit must be from 1 to {MAX_PAGE}"),
            ));
        }
        Ok(l)
    }
}

/// A file key as AWS's `ApiKey` (no dates: the file has none; no value, ever).
pub fn file_key(k: &ApiKey) -> ApiKeyRecord {
    ApiKeyRecord {
        id: k.id.to_string(),
        name: k.name.as_deref().map(str::to_owned),
        description: None,
        enabled: k.enabled,
        customer_id: k.customer_id.as_deref().map(str::to_owned),
        created_date: 0,
        last_updated_date: 0,
        stage_keys: Vec::new(),
        tags: BTreeMap::new(),
        value_sha256: [0; 32],
    }
}

fn settings(t: &Throttle) -> ThrottleSettings {
    ThrottleSettings {
        burst_limit: Some(t.spec.burst as i64),
        rate_limit: Some(t.rate),
    }
}

/// A file plan as AWS's `UsagePlan`.
pub fn file_plan(snap: &Snapshot, p: &Plan) -> UsagePlanRecord {
    let api_stages = p
        .stages
        .iter()
        .filter_map(|(id, methods)| {
            let stage = snap.stage_by_id(*id)?;
            Some(ApiStage {
                api_id: stage.api.to_string(),
                stage: stage.name.to_string(),
                throttle: methods
                    .iter()
                    .filter_map(|(mi, t)| {
                        Some((stage.methods.get(*mi)?.name.to_string(), settings(t)))
                    })
                    .collect(),
            })
        })
        .collect();
    UsagePlanRecord {
        id: p.id.to_string(),
        name: p.name.clone().unwrap_or_else(|| p.id.to_string()),
        description: p.description.clone(),
        api_stages,
        throttle: p.throttle.as_ref().map(settings),
        quota: p.quota.map(|q| QuotaSettings {
            limit: q.limit as i64,
            offset: q.offset as i64,
            period: q.period.as_str().to_owned(),
        }),
        product_code: None,
        tags: BTreeMap::new(),
        initial_period: None,
    }
}

/// Key `id`, from either source.
pub fn key(
    state: &State,
    snap: &Snapshot,
    id: &str,
) -> Result<(ApiKeyRecord, Source), CatalogError> {
    if let Some(k) = snap.key_by_id(id) {
        return Ok((file_key(k), Source::File));
    }
    state
        .keys
        .get(id)
        .map(|k| (k.clone(), Source::Runtime))
        .ok_or_else(|| no_key(id))
}

/// Plan `id`, from either source.
pub fn plan(
    state: &State,
    snap: &Snapshot,
    id: &str,
) -> Result<(UsagePlanRecord, Source), CatalogError> {
    if let Some(p) = snap.plan_by_id(id) {
        return Ok((file_plan(snap, p), Source::File));
    }
    state
        .plans
        .get(id)
        .map(|p| (p.clone(), Source::Runtime))
        .ok_or_else(|| no_plan(id))
}

/// Two id-ordered lists merged, `keep`-filtered, cut to a page: the page and where the next
/// starts.
fn merge_page<T>(
    a: impl Iterator<Item = T>,
    b: impl Iterator<Item = T>,
    id: impl Fn(&T) -> &str,
    keep: impl Fn(&T) -> bool,
    limit: usize,
) -> (Vec<T>, Option<String>) {
    let mut a = a.filter(&keep).peekable();
    let mut b = b.filter(&keep).peekable();
    let mut out = Vec::with_capacity(limit + 1);
    while out.len() <= limit {
        let next = match (a.peek(), b.peek()) {
            (Some(x), Some(y)) if id(x) <= id(y) => a.next(),
            (Some(_), Some(_)) => b.next(),
            (Some(_), None) => a.next(),
            (None, Some(_)) => b.next(),
            (None, None) => None,
        };
        match next {
            Some(item) => out.push(item),
            None => break,
        }
    }
    let position = (out.len() > limit).then(|| {
        let last = out.pop();
        last.map(|l| id(&l).to_owned()).unwrap_or_default()
    });
    (out, position)
}

/// `GetApiKeys`' filters.
#[derive(Debug, Clone, Default)]
pub struct KeyFilter {
    /// A prefix of the name (AWS's `nameQuery`).
    pub name: Option<String>,
    pub customer_id: Option<String>,
}

/// `GetApiKeys`: both sources' keys by id, a page at a time.
pub fn keys(
    state: &State,
    snap: &Snapshot,
    filter: &KeyFilter,
    page: &Page,
) -> Result<(Vec<ApiKeyRecord>, Option<String>), CatalogError> {
    let limit = page.limit()?;
    let from = page.position.clone().unwrap_or_default();
    let keep = |k: &ApiKeyRecord| {
        filter
            .name
            .as_deref()
            .is_none_or(|n| k.name.as_deref().is_some_and(|m| m.starts_with(n)))
            && (filter.customer_id.is_none() || k.customer_id == filter.customer_id)
    };
    Ok(merge_page(
        snap.keys_from(&from).map(file_key),
        state.keys.range(from.clone()..).map(|(_, k)| k.clone()),
        |k| k.id.as_str(),
        keep,
        limit,
    ))
}

/// The console's key search: keys whose name starts with `name` (by name, then id), or those
/// of customer `customer` (by id), or every key (by id) — from both sources, a page at a time,
/// through indexes, so that a page costs the same at a million keys as at ten. With a name and
/// a customer, the name's keys of that customer. `position` is the previous page's answer.
pub fn search_keys(
    state: &State,
    snap: &Snapshot,
    name: Option<&str>,
    customer: Option<&str>,
    page: &Page,
) -> Result<(Vec<ApiKeyRecord>, Option<String>), CatalogError> {
    let limit = page.limit()?;
    let from = page.position.clone().unwrap_or_default();
    // Items carry their order as a string: `name \0 id` or the id.
    let sort = |a: &str, id: &str| format!("{a}\0{id}");
    if let Some(name) = name {
        let search = snap.key_search();
        let start = if from.as_str() > name {
            from.as_str()
        } else {
            name
        };
        let file_at = search.by_name.partition_point(|&i| {
            let k = &snap.keys[i as usize];
            sort(k.name.as_deref().unwrap_or(""), &k.id).as_str() < start
        });
        let file = search.by_name[file_at..]
            .iter()
            .map(|&i| &snap.keys[i as usize])
            .take_while(|k| k.name.as_deref().is_some_and(|n| n.starts_with(name)))
            .filter(|k| customer.is_none_or(|c| k.customer_id.as_deref() == Some(c)))
            .map(|k| (sort(k.name.as_deref().unwrap_or(""), &k.id), file_key(k)));
        let (n0, i0) = start.split_once('\0').unwrap_or((start, ""));
        let runtime = state
            .by_name
            .range((n0.to_owned(), i0.to_owned())..)
            .take_while(|(n, _)| n.starts_with(name))
            .filter_map(|(n, id)| Some((sort(n, id), state.keys.get(id)?.clone())))
            .filter(|(_, k)| customer.is_none_or(|c| k.customer_id.as_deref() == Some(c)));
        let (list, next) = merge_page(file, runtime, |(s, _)| s.as_str(), |_| true, limit);
        return Ok((list.into_iter().map(|(_, k)| k).collect(), next));
    }
    if let Some(customer) = customer {
        let search = snap.key_search();
        let file_at = search.by_customer.partition_point(|&i| {
            let k = &snap.keys[i as usize];
            (k.customer_id.as_deref().unwrap_or(""), &*k.id) < (customer, from.as_str())
        });
        let file = search.by_customer[file_at..]
            .iter()
            .map(|&i| &snap.keys[i as usize])
            .take_while(|k| k.customer_id.as_deref() == Some(customer))
            .map(file_key);
        let runtime = state
            .by_customer
            .range((customer.to_owned(), from.clone())..)
            .take_while(|(c, _)| c == customer)
            .filter_map(|(_, id)| state.keys.get(id).cloned());
        return Ok(merge_page(
            file,
            runtime,
            |k| k.id.as_str(),
            |_| true,
            limit,
        ));
    }
    keys(state, snap, &KeyFilter::default(), page)
}

/// `GetUsagePlans`: both sources' plans by id (those with key `key_id`, when given).
pub fn plans(
    state: &State,
    snap: &Snapshot,
    key_id: Option<&str>,
    page: &Page,
) -> Result<(Vec<UsagePlanRecord>, Option<String>), CatalogError> {
    let limit = page.limit()?;
    let from = page.position.clone().unwrap_or_default();
    let with_key: Option<Vec<String>> = key_id.map(|k| match snap.key_by_id(k) {
        Some(fk) => fk
            .plans
            .iter()
            .map(|&i| snap.plans[i as usize].id.to_string())
            .collect(),
        None => state.plans_of(k).map(str::to_owned).collect(),
    });
    let mut file: Vec<&Plan> = snap.plans.iter().filter(|p| *p.id >= *from).collect();
    file.sort_unstable_by(|a, b| a.id.cmp(&b.id));
    Ok(merge_page(
        file.into_iter().map(|p| file_plan(snap, p)),
        state.plans.range(from.clone()..).map(|(_, p)| p.clone()),
        |p| p.id.as_str(),
        |p| with_key.as_ref().is_none_or(|w| w.contains(&p.id)),
        limit,
    ))
}

/// Every plan of both sources, by id, whole (plans are few: the file's, and at most
/// `ops::MAX_PLANS` runtime ones) — for choosers and lists that are not paged.
pub fn every_plan(state: &State, snap: &Snapshot) -> Vec<UsagePlanRecord> {
    let mut file: Vec<&Plan> = snap.plans.iter().collect();
    file.sort_unstable_by(|a, b| a.id.cmp(&b.id));
    let (out, _) = merge_page(
        file.into_iter().map(|p| file_plan(snap, p)),
        state.plans.values().cloned(),
        |p| p.id.as_str(),
        |_| true,
        snap.plans.len() + state.plans.len(),
    );
    out
}

/// AWS's `UsagePlanKey`: a key of a plan.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlanKey {
    pub id: String,
    pub name: Option<String>,
}

/// `GetUsagePlanKeys`: the keys of plan `plan` (the file's keys in it, and runtime keys), by
/// id; `name` a prefix of their names.
pub fn plan_keys(
    state: &State,
    snap: &Snapshot,
    plan: &str,
    name: Option<&str>,
    page: &Page,
) -> Result<(Vec<PlanKey>, Option<String>), CatalogError> {
    let limit = page.limit()?;
    let from = page.position.clone().unwrap_or_default();
    let index = snap.plan_index.get(plan).copied();
    if index.is_none() && !state.plans.contains_key(plan) {
        return Err(no_plan(plan));
    }
    let of_plan: &[u32] = match index {
        Some(i) => snap
            .key_search()
            .by_plan
            .get(i as usize)
            .map_or(&[], Vec::as_slice),
        None => &[],
    };
    let at = of_plan.partition_point(|&i| *snap.keys[i as usize].id < *from);
    let file = of_plan[at..]
        .iter()
        .map(|&i| &snap.keys[i as usize])
        .map(|k| PlanKey {
            id: k.id.to_string(),
            name: k.name.as_deref().map(str::to_owned),
        });
    let runtime = state
        .keys_of(plan)
        .filter(|k| *k >= from.as_str())
        .map(|k| PlanKey {
            id: k.to_owned(),
            name: state.keys.get(k).and_then(|r| r.name.clone()),
        });
    Ok(merge_page(
        file,
        runtime,
        |k| k.id.as_str(),
        |k| name.is_none_or(|n| k.name.as_deref().is_some_and(|m| m.starts_with(n))),
        limit,
    ))
}

/// `GetUsagePlanKey`: key `key` of plan `plan`.
pub fn plan_key(
    state: &State,
    snap: &Snapshot,
    plan: &str,
    key: &str,
) -> Result<PlanKey, CatalogError> {
    let (record, _) = self::plan(state, snap, plan)?;
    let in_plan = match snap.key_by_id(key) {
        Some(k) => k
            .plans
            .iter()
            .any(|&i| *snap.plans[i as usize].id == *record.id),
        None => state.members.contains(&(plan.to_owned(), key.to_owned())),
    };
    if !in_plan {
        return Err(no_key(key));
    }
    let (k, _) = self::key(state, snap, key)?;
    Ok(PlanKey {
        id: k.id,
        name: k.name,
    })
}
