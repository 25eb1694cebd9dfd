//! The catalog's operations on a small configuration, without a server: AWS's rules, patch
//! paths, imports, and what a write leaves for decisions.

use std::sync::Arc;

use super::ops::{self, CreateApiKey, CreateUsagePlan, Patch, PatchOperation};
use super::records::{ApiStage, QuotaSettings, ThrottleSettings};
use super::{Catalog, ErrorKind};
use crate::snapshot::{Snapshot, hash_key};
use crate::store::MemoryStore;

const CONFIG: &str = r#"
version: 1
apis:
  petstore:
    stages:
      prod: { methods: { "/pets/GET": {}, "/pets/{petId}/GET": {} } }
      beta: {}
usage_plans:
  gold: { api_stages: [{ api: petstore, stage: prod }] }
api_keys:
  - { id: f1, value: file-key-0123456789abcdef, usage_plans: [gold] }
  - { id: f2, value: file-key-2123456789abcdef, name: acme-file, customer_id: acme }
"#;

fn snapshot() -> Snapshot {
    let mut c = crate::config::load_str(CONFIG, None, std::path::Path::new(".")).unwrap();
    c.snapshot.source = "plans.yaml".into();
    c.snapshot
}

fn catalog() -> Catalog {
    Catalog::new(Arc::new(MemoryStore::new()))
}

fn stage(api: &str, stage: &str) -> ApiStage {
    ApiStage {
        api_id: api.into(),
        stage: stage.into(),
        throttle: Default::default(),
    }
}

fn replace(path: &str, value: &str) -> PatchOperation {
    PatchOperation {
        op: "replace".into(),
        path: path.into(),
        value: Some(value.into()),
        from: None,
    }
}

async fn plan_on(c: &Catalog, snap: &Snapshot, stages: Vec<ApiStage>) -> String {
    let input = CreateUsagePlan {
        name: Some("p".into()),
        api_stages: stages,
        throttle: Some(ThrottleSettings {
            rate_limit: Some(10.0),
            burst_limit: Some(10),
        }),
        ..Default::default()
    };
    c.write(|st| ops::create_usage_plan(st, snap, &input, 0))
        .await
        .unwrap()
        .id
}

async fn key(c: &Catalog, snap: &Snapshot, value: Option<&str>) -> (String, String) {
    let input = CreateApiKey {
        enabled: true,
        value: value.map(str::to_owned),
        ..Default::default()
    };
    let k = c
        .write(|st| ops::create_api_key(st, snap, &input, 0))
        .await
        .unwrap();
    (k.record.id, k.value)
}

#[tokio::test]
async fn a_key_is_decided_from_the_catalog_once_written() {
    let (snap, c) = (snapshot(), catalog());
    let plan = plan_on(&c, &snap, vec![stage("petstore", "prod")]).await;
    let (id, value) = key(&c, &snap, None).await;
    assert_eq!(value.len(), 40);
    let plans = |c: &Catalog| {
        c.with_key(&hash_key(&value), |k| {
            k.plans().map(|p| p.to_string()).collect::<Vec<_>>()
        })
    };
    assert_eq!(plans(&c), Some(vec![]), "indexed by its hash");
    c.write(|st| ops::create_usage_plan_key(st, &snap, &plan, &id, Some("API_KEY")))
        .await
        .unwrap();
    assert_eq!(plans(&c), Some(vec![plan.clone()]));
    let rp = c.plan(&plan).unwrap();
    assert!(rp.on_stage("petstore", "prod").is_some());
    assert!(rp.on_stage("petstore", "beta").is_none());
    // Deleted: gone from decisions, and out of its plan.
    c.write(|st| ops::delete_api_key(st, &snap, &id))
        .await
        .unwrap();
    assert_eq!(plans(&c), None);
    assert_eq!(c.read().keys_of(&plan).count(), 0);
}

#[tokio::test]
async fn one_plan_per_stage_for_a_key() {
    let (snap, c) = (snapshot(), catalog());
    let prod = plan_on(&c, &snap, vec![stage("petstore", "prod")]).await;
    let beta = plan_on(&c, &snap, vec![stage("petstore", "beta")]).await;
    let (id, _) = key(&c, &snap, None).await;
    for p in [&prod, &beta] {
        c.write(|st| ops::create_usage_plan_key(st, &snap, p, &id, None))
            .await
            .unwrap();
    }
    // The file's plan covers prod too.
    let e = c
        .write(|st| ops::create_usage_plan_key(st, &snap, "gold", &id, None))
        .await
        .unwrap_err();
    assert_eq!(e.kind, ErrorKind::Conflict, "{e}");
    assert!(e.message.contains(&prod), "{e}");
    // beta's plan may not take prod on.
    let add = Patch {
        patch_operations: vec![PatchOperation {
            op: "add".into(),
            path: "/apiStages".into(),
            value: Some("petstore:prod".into()),
            from: None,
        }],
    };
    let e = c
        .write(|st| ops::update_usage_plan(st, &snap, &beta, &add, 0))
        .await
        .unwrap_err();
    assert_eq!(e.kind, ErrorKind::Conflict, "{e}");
    // A file key's plans are the file's; the file's plan is read-only, naming the file.
    let e = c
        .write(|st| ops::create_usage_plan_key(st, &snap, &beta, "f1", None))
        .await
        .unwrap_err();
    assert_eq!(e.kind, ErrorKind::Conflict);
    assert!(e.message.contains("plans.yaml"), "{e}");
    let e = c
        .write(|st| ops::delete_usage_plan(st, &snap, "gold"))
        .await
        .unwrap_err();
    assert!(e.message.contains("plans.yaml"), "{e}");
}

#[tokio::test]
async fn per_method_throttles_by_aws_patch_paths() {
    let (snap, c) = (snapshot(), catalog());
    let plan = plan_on(&c, &snap, vec![stage("petstore", "prod")]).await;
    let patch = Patch {
        patch_operations: vec![
            replace(
                "/apiStages/petstore:prod/throttle/~1pets~1{petId}/GET/rateLimit",
                "2.5",
            ),
            replace(
                "/apiStages/petstore:prod/throttle/~1pets~1{petId}/GET/burstLimit",
                "5",
            ),
            // The resource path unescaped works too.
            replace("/apiStages/petstore:prod/throttle/pets/GET/burstLimit", "7"),
            replace("/quota/limit", "100"),
            replace("/quota/period", "WEEK"),
        ],
    };
    let p = c
        .write(|st| ops::update_usage_plan(st, &snap, &plan, &patch, 0))
        .await
        .unwrap();
    let t = &p.api_stages[0].throttle;
    assert_eq!(t["/pets/{petId}/GET"].rate_limit, Some(2.5));
    assert_eq!(t["/pets/{petId}/GET"].burst_limit, Some(5));
    assert_eq!(t["/pets/GET"].burst_limit, Some(7));
    assert_eq!(
        p.quota,
        Some(QuotaSettings {
            limit: 100,
            offset: 0,
            period: "WEEK".into()
        })
    );
    let rp = c.plan(&plan).unwrap();
    let on = rp.on_stage("petstore", "prod").unwrap();
    assert_eq!(on.methods.len(), 2);
    // All or nothing: a bad operation after a good one changes nothing.
    let bad = Patch {
        patch_operations: vec![
            replace("/name", "renamed"),
            replace("/quota/period", "YEAR"),
        ],
    };
    assert!(
        c.write(|st| ops::update_usage_plan(st, &snap, &plan, &bad, 0))
            .await
            .is_err()
    );
    assert_eq!(c.read().plans[&plan].name, "p");
    // A method the stage does not have.
    let unknown = Patch {
        patch_operations: vec![replace(
            "/apiStages/petstore:prod/throttle/~1nope/GET/rateLimit",
            "1",
        )],
    };
    let e = c
        .write(|st| ops::update_usage_plan(st, &snap, &plan, &unknown, 0))
        .await
        .unwrap_err();
    assert_eq!(e.kind, ErrorKind::BadRequest, "{e}");
}

#[tokio::test]
async fn imports_keep_the_last_row_of_a_value_and_report_lines() {
    let (snap, c) = (snapshot(), catalog());
    let csv = "key,NAME,enabled\n\
               imported-value-0123456789a,first,true\n\
               short,bad,true\n\
               imported-value-0123456789a,second,false\n\
               file-key-0123456789abcdef,taken,true\n";
    let out = c
        .write(|st| ops::import_api_keys(st, &snap, csv, false, 0))
        .await
        .unwrap();
    assert_eq!(out.ids.len(), 1);
    assert_eq!(out.warnings.len(), 2, "{:?}", out.warnings);
    assert!(out.warnings[0].starts_with("line 3:"), "{:?}", out.warnings);
    {
        let state = c.read();
        let k = &state.keys[&out.ids[0]];
        assert_eq!(k.name.as_deref(), Some("second"));
        assert!(!k.enabled);
    }
    // No Name column: refused whole.
    let e = c
        .write(|st| ops::import_api_keys(st, &snap, "key\nimported-value-0123456789b\n", false, 0))
        .await
        .unwrap_err();
    assert_eq!(e.kind, ErrorKind::BadRequest);
}

#[test]
fn random_values_use_the_whole_alphabet_and_nothing_else() {
    let v = ops::random_text(4000, b"ab0").unwrap();
    assert_eq!(v.len(), 4000);
    for c in ['a', 'b', '0'] {
        let n = v.chars().filter(|&x| x == c).count();
        assert!((1000..1700).contains(&n), "{c}: {n}");
    }
}

#[tokio::test]
async fn every_plan_lists_both_sources_by_id_unpaged() {
    let (snap, c) = (snapshot(), catalog());
    for _ in 0..3 {
        plan_on(&c, &snap, vec![stage("petstore", "beta")]).await;
    }
    let all = super::views::every_plan(&c.read(), &snap);
    assert_eq!(all.len(), 4);
    assert!(all.iter().any(|p| p.id == "gold"));
    assert!(all.windows(2).all(|w| w[0].id < w[1].id), "by id");
}

#[tokio::test]
async fn the_console_searches_both_sources_by_name_and_customer_a_page_at_a_time() {
    let (snap, c) = (snapshot(), catalog());
    let mut made = Vec::new();
    for (name, customer) in [
        ("acme-a", "acme"),
        ("acme-b", "other"),
        ("acme-c", "acme"),
        ("zeta", "acme"),
    ] {
        let input = CreateApiKey {
            enabled: true,
            name: Some(name.into()),
            customer_id: Some(customer.into()),
            ..Default::default()
        };
        let k = c
            .write(|st| ops::create_api_key(st, &snap, &input, 0))
            .await
            .unwrap();
        made.push(k.record.id);
    }
    let page = |position: Option<String>| super::views::Page {
        limit: Some(2),
        position,
    };
    let names = |list: &[super::records::ApiKeyRecord]| {
        list.iter()
            .map(|k| k.name.clone().unwrap_or_default())
            .collect::<Vec<_>>()
    };
    // By name prefix, in name order, the file's key among the runtime ones, paged.
    {
        let state = c.read();
        let (first, next) =
            super::views::search_keys(&state, &snap, Some("acme"), None, &page(None)).unwrap();
        assert_eq!(names(&first), ["acme-a", "acme-b"]);
        let (second, next) =
            super::views::search_keys(&state, &snap, Some("acme"), None, &page(next)).unwrap();
        assert_eq!(names(&second), ["acme-c", "acme-file"]);
        assert!(next.is_none());
        // By customer, in id order; with a name too, both.
        let (of_acme, _) = super::views::search_keys(
            &state,
            &snap,
            None,
            Some("acme"),
            &super::views::Page::default(),
        )
        .unwrap();
        assert_eq!(of_acme.len(), 4);
        assert!(of_acme.windows(2).all(|w| w[0].id < w[1].id));
        let (both, _) = super::views::search_keys(
            &state,
            &snap,
            Some("acme-"),
            Some("acme"),
            &super::views::Page::default(),
        )
        .unwrap();
        assert_eq!(names(&both), ["acme-a", "acme-c", "acme-file"]);
    }
    // A renamed key moves in the index; a deleted one leaves it.
    let rename = Patch {
        patch_operations: vec![replace("/name", "omega")],
    };
    c.write(|st| ops::update_api_key(st, &snap, &made[0], &rename, 0))
        .await
        .unwrap();
    c.write(|st| ops::delete_api_key(st, &snap, &made[2]))
        .await
        .unwrap();
    let state = c.read();
    let (left, _) = super::views::search_keys(
        &state,
        &snap,
        Some("acme"),
        None,
        &super::views::Page::default(),
    )
    .unwrap();
    assert_eq!(names(&left), ["acme-b", "acme-file"]);
    assert_eq!(state.by_name.len(), 3);
}
