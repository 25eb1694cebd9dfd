//! The compiled model written back in the file's own types: what `GET /v1/config` and the
//! management API's `GetConfig` show (the configuration in force, every default filled in), and
//! what a file with the same meaning would say. Key values and key hashes are never written.
//!
//! One rendering: the file types' `Serialize` is the only place their spelling lives, so what
//! is shown can always be read back as a file.

use indexmap::IndexMap;

use super::file::{
    AccountFile, ApiFile, ApiKeyFile, ApiKeySourceFile, ApiStageFile, BasePathMappingFile,
    ConfigFile, DefaultsFile, DescriptorKeysFile, DomainNameFile, GatewayResponseFile,
    MetadataSourceFile, MethodFile, QuotaFile, RateLimitServiceFile, ResponsesFile, StageFile,
    ThrottleFile, WorkloadFile,
};
use crate::snapshot::responses::GatewayResponses;
use crate::snapshot::{KeySource, Snapshot, Stage, Throttle};

/// The configuration in force as JSON, with its generation, without any key value or hash.
pub fn redacted(snap: &Snapshot) -> serde_json::Value {
    let mut v = serde_json::to_value(in_force(snap)).unwrap_or_default();
    if let Some(m) = v.as_object_mut() {
        m.insert("generation".to_owned(), snap.generation.into());
    }
    v
}

/// [`in_force`] with every key's `value_sha256`: a file that decides as `snap` does (for
/// `plangate export`; never shown by the admin API).
pub fn with_hashes(snap: &Snapshot) -> ConfigFile {
    let mut file = in_force(snap);
    for (hash, &i) in &snap.key_index {
        if let Some(k) = file.api_keys.get_mut(i as usize) {
            k.value_sha256 = Some(hex::encode(hash));
        }
    }
    file
}

/// `snap` in the file's types. Maps are sorted by name; keys keep their order.
pub fn in_force(snap: &Snapshot) -> ConfigFile {
    let mut apis: Vec<(&String, _)> = snap.apis.iter().collect();
    apis.sort_by_key(|(name, _)| *name);
    let apis = apis
        .into_iter()
        .map(|(name, api)| {
            let mut stages: Vec<(&String, &std::sync::Arc<Stage>)> = api.stages.iter().collect();
            stages.sort_by_key(|(name, _)| *name);
            let file = ApiFile {
                stages: stages
                    .into_iter()
                    .map(|(n, s)| (n.clone(), stage(s)))
                    .collect(),
                api_key_source: api.key_source.as_ref().map(key_source),
                gateway_responses: responses(&api.gateway_responses),
            };
            (name.clone(), file)
        })
        .collect();
    let mut workloads: Vec<(&String, &std::sync::Arc<Stage>)> = snap.workloads.iter().collect();
    workloads.sort_by_key(|(p, _)| *p);
    ConfigFile {
        version: 1,
        account: Some(AccountFile {
            throttle: snap.account.as_ref().map(throttle),
        }),
        api_key_source: Some(key_source(&snap.key_source)),
        quota_week_start: Some(snap.week_start.into()),
        defaults: Some(DefaultsFile {
            api: snap.default_api.clone(),
            stage: snap.default_stage.clone(),
        }),
        responses: Some(ResponsesFile {
            rate_limit_headers: Some(snap.rate_limit_headers),
            forward_api_key: Some(snap.forward_api_key),
            dynamic_metadata: Some(snap.dynamic_metadata),
        }),
        rate_limit_service: Some(RateLimitServiceFile {
            domain: Some(snap.rls.domain.clone()),
            descriptor_keys: Some(DescriptorKeysFile {
                api: Some(snap.rls.api.clone()),
                stage: Some(snap.rls.stage.clone()),
                api_key: Some(snap.rls.api_key.clone()),
                method: Some(snap.rls.method.clone()),
                path: Some(snap.rls.path.clone()),
                host: Some(snap.rls.host.clone()),
            }),
        }),
        apis,
        domain_names: snap
            .domains
            .list()
            .into_iter()
            .map(|(name, mappings)| {
                let base_path_mappings = mappings
                    .into_iter()
                    .map(|(base, s)| BasePathMappingFile {
                        base_path: Some(if base.is_empty() { "(none)" } else { base }.to_owned()),
                        api: s.api.to_string(),
                        stage: s.name.to_string(),
                    })
                    .collect();
                (name, DomainNameFile { base_path_mappings })
            })
            .collect(),
        unknown_hosts: (!snap.domains.is_empty()).then_some(snap.unknown_hosts),
        workloads: workloads
            .into_iter()
            .map(|(principal, s)| {
                let w = WorkloadFile {
                    api: s.api.to_string(),
                    stage: s.name.to_string(),
                };
                (principal.clone(), w)
            })
            .collect(),
        path_parameters: Some(snap.path_parameters),
        usage_plans: plans(snap),
        api_keys: keys(snap),
        api_keys_files: Vec::new(),
        gateway_responses: responses(&snap.gateway_responses),
    }
}

fn throttle(t: &Throttle) -> ThrottleFile {
    ThrottleFile {
        rate: Some(t.rate),
        burst: i64::try_from(t.spec.burst).ok(),
    }
}

fn stage(s: &Stage) -> StageFile {
    StageFile {
        throttle: s.throttle.as_ref().map(throttle),
        methods: s
            .methods
            .iter()
            .map(|m| {
                let file = MethodFile {
                    throttle: m.throttle.as_ref().map(throttle),
                    api_key_required: Some(m.api_key_required),
                };
                (m.name.to_string(), file)
            })
            .collect(),
        api_key_required: Some(s.api_key_required),
        unknown_methods: Some(s.unknown_methods),
        enforce: Some(s.enforce),
    }
}

fn key_source(k: &KeySource) -> ApiKeySourceFile {
    match k {
        KeySource::Header(h) => ApiKeySourceFile {
            header: Some(h.clone()),
            metadata: None,
        },
        KeySource::Metadata { namespace, path } => ApiKeySourceFile {
            header: None,
            metadata: Some(MetadataSourceFile {
                namespace: namespace.clone(),
                path: path.clone(),
            }),
        },
    }
}

fn responses(r: &GatewayResponses) -> IndexMap<String, GatewayResponseFile> {
    r.list()
        .into_iter()
        .map(|(t, g)| {
            let file = GatewayResponseFile {
                status: g.status.map(i64::from),
                headers: g.headers.iter().cloned().collect(),
                body: g.body.clone(),
            };
            (t.as_str().to_owned(), file)
        })
        .collect()
}

fn plans(snap: &Snapshot) -> IndexMap<String, super::file::UsagePlanFile> {
    snap.plans
        .iter()
        .map(|p| {
            let api_stages = p
                .stages
                .iter()
                .map(|(sid, methods)| {
                    let st = snap.stage_by_id(*sid);
                    let (api, stage) = st.map_or(("", ""), |s| (&*s.api, &*s.name));
                    let throttle = methods
                        .iter()
                        .map(|(mi, t)| {
                            let name = st
                                .and_then(|s| s.methods.get(*mi))
                                .map(|m| m.name.to_string())
                                .unwrap_or_default();
                            (name, throttle(t))
                        })
                        .collect();
                    ApiStageFile {
                        api: api.to_owned(),
                        stage: stage.to_owned(),
                        throttle,
                    }
                })
                .collect();
            let plan = super::file::UsagePlanFile {
                enforce: Some(p.enforce),
                name: p.name.clone(),
                description: p.description.clone(),
                throttle: p.throttle.as_ref().map(throttle),
                quota: p.quota.map(|q| QuotaFile {
                    limit: i64::try_from(q.limit).unwrap_or(i64::MAX),
                    period: q.period,
                    offset: i64::try_from(q.offset).unwrap_or(i64::MAX),
                    starts_at: q.starts_at,
                }),
                api_stages,
            };
            (p.id.to_string(), plan)
        })
        .collect()
}

fn keys(snap: &Snapshot) -> Vec<ApiKeyFile> {
    snap.keys
        .iter()
        .map(|k| ApiKeyFile {
            id: k.id.to_string(),
            name: k.name.as_deref().map(str::to_owned),
            description: None,
            value: None,
            value_sha256: None,
            enabled: k.enabled,
            customer_id: k.customer_id.as_deref().map(str::to_owned),
            usage_plans: k
                .plans
                .iter()
                .map(|&p| snap.plans[p as usize].id.to_string())
                .collect(),
        })
        .collect()
}
