//! The gRPC face of the runtime catalog: `plangate.v1.Management`'s key and plan calls, each
//! the catalog operation the REST face runs (`crate::catalog::ops` and `views`), with typed
//! messages and gRPC status codes.

use std::collections::BTreeMap;

use tonic::Status;

use super::pb;
use crate::catalog::records::{
    ApiKeyRecord, ApiStage, QuotaSettings, ThrottleSettings, UsagePlanRecord,
};
use crate::catalog::views::{self, Source};
use crate::catalog::{CatalogError, ErrorKind, State, ops};
use crate::engine::Engine;
use crate::snapshot::Snapshot;

/// A catalog error as a gRPC status: AWS's kinds mapped to the nearest code (a conflict —
/// a key in two plans on a stage, an object of the configuration file — is
/// FAILED_PRECONDITION).
pub fn status(e: CatalogError) -> Status {
    match e.kind {
        ErrorKind::NotFound => Status::not_found(e.message),
        ErrorKind::BadRequest => Status::invalid_argument(e.message),
        ErrorKind::Conflict => Status::failed_precondition(e.message),
        ErrorKind::LimitExceeded => Status::resource_exhausted(e.message),
        ErrorKind::Unavailable => Status::unavailable(e.message),
    }
}

fn source(s: Source) -> i32 {
    match s {
        Source::File => pb::Source::File as i32,
        Source::Runtime => pb::Source::Runtime as i32,
    }
}

fn date(seconds: i64) -> Option<prost_types::Timestamp> {
    (seconds != 0).then_some(prost_types::Timestamp { seconds, nanos: 0 })
}

/// A key as the API shows it, with the ids of its plans.
pub fn api_key(state: &State, snap: &Snapshot, k: &ApiKeyRecord, from: Source) -> pb::ApiKey {
    let usage_plan_ids = match from {
        Source::File => snap
            .key_by_id(&k.id)
            .map(|fk| {
                fk.plans
                    .iter()
                    .map(|&p| snap.plans[p as usize].id.to_string())
                    .collect()
            })
            .unwrap_or_default(),
        Source::Runtime => state.plans_of(&k.id).map(str::to_owned).collect(),
    };
    pb::ApiKey {
        id: k.id.clone(),
        name: k.name.clone().unwrap_or_default(),
        customer_id: k.customer_id.clone().unwrap_or_default(),
        enabled: k.enabled,
        usage_plan_ids,
        description: k.description.clone().unwrap_or_default(),
        created_date: date(k.created_date),
        last_updated_date: date(k.last_updated_date),
        source: source(from),
        tags: k.tags.clone().into_iter().collect(),
    }
}

fn throttle_pb(t: &ThrottleSettings) -> pb::ThrottleSettings {
    pb::ThrottleSettings {
        rate_limit: t.rate_limit,
        burst_limit: t.burst_limit,
    }
}

fn throttle_of(t: &pb::ThrottleSettings) -> ThrottleSettings {
    ThrottleSettings {
        rate_limit: t.rate_limit,
        burst_limit: t.burst_limit,
    }
}

pub fn usage_plan(p: &UsagePlanRecord, from: Source) -> pb::UsagePlan {
    pb::UsagePlan {
        id: p.id.clone(),
        name: p.name.clone(),
        description: p.description.clone().unwrap_or_default(),
        api_stages: p
            .api_stages
            .iter()
            .map(|s| pb::ApiStage {
                api_id: s.api_id.clone(),
                stage: s.stage.clone(),
                throttle: s
                    .throttle
                    .iter()
                    .map(|(m, t)| (m.clone(), throttle_pb(t)))
                    .collect(),
            })
            .collect(),
        throttle: p.throttle.as_ref().map(throttle_pb),
        quota: p.quota.as_ref().map(|q| pb::QuotaSettings {
            limit: q.limit,
            offset: q.offset,
            period: q.period.clone(),
        }),
        tags: p.tags.clone().into_iter().collect(),
        source: source(from),
    }
}

fn patch(ops_in: &[pb::PatchOperation]) -> ops::Patch {
    ops::Patch {
        patch_operations: ops_in
            .iter()
            .map(|o| ops::PatchOperation {
                op: o.op.clone(),
                path: o.path.clone(),
                value: Some(o.value.clone()),
                from: None,
            })
            .collect(),
    }
}

fn text(s: &str) -> Option<String> {
    (!s.is_empty()).then(|| s.to_owned())
}

fn tags(t: &std::collections::HashMap<String, String>) -> BTreeMap<String, String> {
    t.iter().map(|(k, v)| (k.clone(), v.clone())).collect()
}

pub async fn get_api_key(engine: &Engine, id: &str) -> Result<pb::ApiKey, Status> {
    let snap = engine.snapshot();
    let state = engine.catalog().read();
    let (k, from) = views::key(&state, &snap, id).map_err(status)?;
    Ok(api_key(&state, &snap, &k, from))
}

pub async fn create_api_key(
    engine: &Engine,
    r: pb::CreateApiKeyRequest,
) -> Result<pb::CreateApiKeyResponse, Status> {
    let input = ops::CreateApiKey {
        name: text(&r.name),
        description: text(&r.description),
        enabled: r.enabled,
        generate_distinct_id: None,
        value: text(&r.value),
        stage_keys: Vec::new(),
        customer_id: text(&r.customer_id),
        tags: tags(&r.tags),
    };
    let new = engine
        .change(|st, snap, now| ops::create_api_key(st, snap, &input, now))
        .await
        .map_err(status)?;
    tracing::info!(key_id = %new.record.id, "API key created");
    let (snap, state) = (engine.snapshot(), engine.catalog().read());
    Ok(pb::CreateApiKeyResponse {
        api_key: Some(api_key(&state, &snap, &new.record, Source::Runtime)),
        value: new.value,
    })
}

pub async fn update_api_key(
    engine: &Engine,
    r: pb::UpdateApiKeyRequest,
) -> Result<pb::ApiKey, Status> {
    let p = patch(&r.patch_operations);
    let k = engine
        .change(|st, snap, now| ops::update_api_key(st, snap, &r.id, &p, now))
        .await
        .map_err(status)?;
    tracing::info!(key_id = %k.id, enabled = k.enabled, "API key updated");
    let (snap, state) = (engine.snapshot(), engine.catalog().read());
    Ok(api_key(&state, &snap, &k, Source::Runtime))
}

pub async fn delete_api_key(engine: &Engine, id: &str) -> Result<(), Status> {
    engine
        .change(|st, snap, _| ops::delete_api_key(st, snap, id))
        .await
        .map_err(status)?;
    tracing::info!(key_id = %id, "API key deleted");
    Ok(())
}

fn page(size: u32, token: &str) -> Result<views::Page, Status> {
    Ok(views::Page {
        limit: Some(super::paging::page_size(size, 25, views::MAX_PAGE as u32)),
        position: match token {
            "" => None,
            t => Some(super::paging::position(t)?),
        },
    })
}

pub async fn list_usage_plans(
    engine: &Engine,
    r: pb::ListUsagePlansRequest,
) -> Result<pb::ListUsagePlansResponse, Status> {
    let snap = engine.snapshot();
    let state = engine.catalog().read();
    let (plans, next) = views::plans(
        &state,
        &snap,
        text(&r.key_id).as_deref(),
        &page(r.page_size, &r.page_token)?,
    )
    .map_err(status)?;
    Ok(pb::ListUsagePlansResponse {
        usage_plans: plans
            .iter()
            .map(|p| {
                let from = if state.plans.contains_key(&p.id) {
                    Source::Runtime
                } else {
                    Source::File
                };
                usage_plan(p, from)
            })
            .collect(),
        next_page_token: next.map(|n| super::paging::token(&n)).unwrap_or_default(),
    })
}

pub async fn get_usage_plan(engine: &Engine, id: &str) -> Result<pb::UsagePlan, Status> {
    let snap = engine.snapshot();
    let state = engine.catalog().read();
    let (p, from) = views::plan(&state, &snap, id).map_err(status)?;
    Ok(usage_plan(&p, from))
}

pub async fn create_usage_plan(
    engine: &Engine,
    r: pb::CreateUsagePlanRequest,
) -> Result<pb::UsagePlan, Status> {
    let input = ops::CreateUsagePlan {
        name: text(&r.name),
        description: text(&r.description),
        api_stages: r
            .api_stages
            .iter()
            .map(|s| ApiStage {
                api_id: s.api_id.clone(),
                stage: s.stage.clone(),
                throttle: s
                    .throttle
                    .iter()
                    .map(|(m, t)| (m.clone(), throttle_of(t)))
                    .collect(),
            })
            .collect(),
        throttle: r.throttle.as_ref().map(throttle_of),
        quota: r.quota.as_ref().map(|q| QuotaSettings {
            limit: q.limit,
            offset: q.offset,
            period: q.period.clone(),
        }),
        tags: tags(&r.tags),
    };
    let p = engine
        .change(|st, snap, now| ops::create_usage_plan(st, snap, &input, now))
        .await
        .map_err(status)?;
    tracing::info!(plan = %p.id, "usage plan created");
    Ok(usage_plan(&p, Source::Runtime))
}

pub async fn update_usage_plan(
    engine: &Engine,
    r: pb::UpdateUsagePlanRequest,
) -> Result<pb::UsagePlan, Status> {
    let p = patch(&r.patch_operations);
    let plan = engine
        .change(|st, snap, now| ops::update_usage_plan(st, snap, &r.id, &p, now))
        .await
        .map_err(status)?;
    tracing::info!(plan = %plan.id, "usage plan updated");
    Ok(usage_plan(&plan, Source::Runtime))
}

pub async fn delete_usage_plan(engine: &Engine, id: &str) -> Result<(), Status> {
    engine
        .change(|st, snap, _| ops::delete_usage_plan(st, snap, id))
        .await
        .map_err(status)?;
    tracing::info!(plan = %id, "usage plan deleted");
    Ok(())
}

pub async fn list_usage_plan_keys(
    engine: &Engine,
    r: pb::ListUsagePlanKeysRequest,
) -> Result<pb::ListUsagePlanKeysResponse, Status> {
    let snap = engine.snapshot();
    let state = engine.catalog().read();
    let (keys, next) = views::plan_keys(
        &state,
        &snap,
        &r.usage_plan_id,
        text(&r.name_query).as_deref(),
        &page(r.page_size, &r.page_token)?,
    )
    .map_err(status)?;
    Ok(pb::ListUsagePlanKeysResponse {
        keys: keys
            .into_iter()
            .map(|k| pb::UsagePlanKey {
                id: k.id,
                name: k.name.unwrap_or_default(),
            })
            .collect(),
        next_page_token: next.map(|n| super::paging::token(&n)).unwrap_or_default(),
    })
}

pub async fn create_usage_plan_key(
    engine: &Engine,
    r: pb::CreateUsagePlanKeyRequest,
) -> Result<pb::UsagePlanKey, Status> {
    let k = engine
        .change(|st, snap, _| {
            ops::create_usage_plan_key(st, snap, &r.usage_plan_id, &r.key_id, None)
        })
        .await
        .map_err(status)?;
    tracing::info!(plan = %r.usage_plan_id, key_id = %k.id, "key added to usage plan");
    Ok(pb::UsagePlanKey {
        id: k.id,
        name: k.name.unwrap_or_default(),
    })
}

pub async fn delete_usage_plan_key(
    engine: &Engine,
    r: pb::DeleteUsagePlanKeyRequest,
) -> Result<(), Status> {
    engine
        .change(|st, snap, _| ops::delete_usage_plan_key(st, snap, &r.usage_plan_id, &r.key_id))
        .await
        .map_err(status)?;
    tracing::info!(plan = %r.usage_plan_id, key_id = %r.key_id, "key removed from usage plan");
    Ok(())
}

/// ListApiKeys: both sources, by id.
pub fn list_api_keys(
    engine: &Engine,
    r: &pb::ListApiKeysRequest,
) -> Result<pb::ListApiKeysResponse, Status> {
    let snap = engine.snapshot();
    let state = engine.catalog().read();
    let page = views::Page {
        limit: Some(super::paging::page_size(
            r.page_size,
            100,
            views::MAX_PAGE as u32,
        )),
        position: match r.page_token.as_str() {
            "" => None,
            t => Some(super::paging::position(t)?),
        },
    };
    let filter = views::KeyFilter {
        name: text(&r.name_query),
        customer_id: text(&r.customer_id),
    };
    let (keys, next) = views::keys(&state, &snap, &filter, &page).map_err(status)?;
    Ok(pb::ListApiKeysResponse {
        api_keys: keys
            .iter()
            .map(|k| {
                let from = if state.keys.contains_key(&k.id) {
                    Source::Runtime
                } else {
                    Source::File
                };
                api_key(&state, &snap, k, from)
            })
            .collect(),
        next_page_token: next.map(|n| super::paging::token(&n)).unwrap_or_default(),
    })
}
