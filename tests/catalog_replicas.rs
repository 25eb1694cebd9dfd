//! The runtime catalog shared by replicas: keys and plans made through the control plane on
//! one replica are decided by the others, stay exact across them, survive restarts, and
//! concurrent changes apply in one order everywhere — on one Redis, on a Redis Cluster, and
//! in the embedded store's file.

mod common;

use serde_json::{Value, json};

use common::{Plangate, RedisCluster, RedisServer, authz_client, check_status};

fn config() -> String {
    common::petstore(
        common::FAST_ACCOUNT,
        &[("prod", "{}")],
        &[("gold", "quota: { limit: 1000000, period: MONTH }")],
        &[("f1", "file-key-0123456789abcdef", "usage_plans: [gold]")],
    )
}

/// A call of the REST face (unsigned: no token, no credentials): status and JSON body.
fn rest(admin: u16, method: &str, path: &str, body: Value) -> (u16, Value) {
    let text = if body.is_null() {
        String::new()
    } else {
        body.to_string()
    };
    let r = common::http_with_body(
        admin,
        method,
        path,
        &[("content-type", "application/json")],
        &text,
    );
    let v = serde_json::from_str(&r.body).unwrap_or(Value::Null);
    (r.status, v)
}

#[track_caller]
fn ok(admin: u16, method: &str, path: &str, body: Value) -> Value {
    let (status, v) = rest(admin, method, path, body);
    assert!(
        (200..300).contains(&status),
        "{method} {path}: {status} {v}"
    );
    v
}

type Authz = envoy_types::pb::envoy::service::auth::v3::authorization_client::AuthorizationClient<
    tonic::transport::Channel,
>;

async fn prod(c: &mut Authz, key: &str) -> i32 {
    let r = c
        .check(common::check_request_to(key, "/pets", "petstore", "prod"))
        .await
        .unwrap();
    check_status(&r.into_inner())
}

/// A plan on petstore/prod with `settings` (AWS's CreateUsagePlan fields), a key in it:
/// (plan id, key id, key value).
fn plan_and_key(admin: u16, settings: Value) -> (String, String, String) {
    let mut body =
        json!({ "name": "runtime", "apiStages": [{ "apiId": "petstore", "stage": "prod" }] });
    for (k, v) in settings.as_object().unwrap() {
        body[k] = v.clone();
    }
    let plan = ok(admin, "POST", "/usageplans", body);
    let key = ok(
        admin,
        "POST",
        "/apikeys",
        json!({ "name": "customer", "enabled": true }),
    );
    let (plan_id, key_id) = (
        plan["id"].as_str().unwrap().to_owned(),
        key["id"].as_str().unwrap().to_owned(),
    );
    ok(
        admin,
        "POST",
        &format!("/usageplans/{plan_id}/keys"),
        json!({ "keyId": key_id, "keyType": "API_KEY" }),
    );
    (plan_id, key_id, key["value"].as_str().unwrap().to_owned())
}

async fn wait_for_status(c: &mut Authz, key: &str, want: i32, what: &str) {
    let waited = plangate::clock::Stopwatch::start();
    loop {
        let got = prod(c, key).await;
        if got == want {
            return;
        }
        assert!(
            waited.elapsed() < std::time::Duration::from_secs(20),
            "{what}: still {got}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

/// 200 concurrent clients over the replicas, 10 attempts each with `key`: how many admitted.
async fn admitted_across(replicas: &[Plangate], key: &str) -> u64 {
    let ports: Vec<u16> = replicas.iter().map(|r| r.grpc).collect();
    let key = key.to_owned();
    common::admitted_by_200_clients(&ports, move || {
        common::check_request_to(&key, "/pets", "petstore", "prod")
    })
    .await
}

/// Two replicas on the store `url`: a key made on A is decided by B; a throttle changed on B is
/// enforced by A; a quota of 1,000 is exact over both; two replicas patching one key at once
/// both apply, in one order everywhere; a restart of both keeps everything.
async fn shared_by_two_replicas(url: &str) {
    let (dir, path) = common::plans_dir(config());
    let start = |i: usize| {
        Plangate::start(
            &path,
            &[
                "--store",
                url,
                "--store-timeout-ms",
                "5000",
                "--store-failure",
                "closed",
            ],
            dir.path().join(format!("plangate-{i}.log")),
        )
    };
    let (a, b) = (start(0), start(1));
    let mut ca = authz_client(a.grpc).await;
    let mut cb = authz_client(b.grpc).await;

    // Made on A, decided by B.
    let (plan, key_id, key) = plan_and_key(
        a.admin,
        json!({ "throttle": { "rateLimit": 10000.0, "burstLimit": 10000 }, "quota": { "limit": 1000, "period": "MONTH" } }),
    );
    wait_for_status(&mut cb, &key, 200, "B admits a key made on A").await;
    // Exact over both.
    let replicas = [a, b];
    let admitted = admitted_across(&replicas, &key).await;
    // One unit went to the wait above.
    assert_eq!(admitted, 999, "a quota of 1000 over two replicas");
    let [a, b] = replicas;

    // A throttle changed on B, enforced by A: 3 tokens, none refilled during the test.
    let (plan2, _, key2) = plan_and_key(
        a.admin,
        json!({ "throttle": { "rateLimit": 1000.0, "burstLimit": 1000 } }),
    );
    wait_for_status(&mut cb, &key2, 200, "B admits the second key").await;
    ok(
        b.admin,
        "PATCH",
        &format!("/usageplans/{plan2}"),
        json!({ "patchOperations": [
            { "op": "replace", "path": "/throttle/rateLimit", "value": "0.000001" },
            { "op": "replace", "path": "/throttle/burstLimit", "value": "3" },
        ]}),
    );
    let waited = plangate::clock::Stopwatch::start();
    loop {
        let (_, p) = rest(a.admin, "GET", &format!("/usageplans/{plan2}"), Value::Null);
        if p["throttle"]["burstLimit"] == 3 {
            break;
        }
        assert!(waited.elapsed() < std::time::Duration::from_secs(20), "{p}");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let mut statuses = Vec::new();
    for _ in 0..5 {
        statuses.push(prod(&mut ca, &key2).await);
    }
    assert_eq!(statuses, [200, 200, 200, 429, 429], "B's throttle on A");

    // Both replicas patch one key at once: every patch applies, in one order, the same on both.
    let mut writers = Vec::new();
    for (r, admin) in [(0, a.admin), (1, b.admin)] {
        let key_id = key_id.clone();
        writers.push(tokio::task::spawn_blocking(move || {
            for i in 0..20 {
                ok(
                    admin,
                    "PATCH",
                    &format!("/apikeys/{key_id}"),
                    json!({ "patchOperations": [{ "op": "replace", "path": "/description", "value": format!("r{r}-{i}") }] }),
                );
            }
        }));
    }
    for w in writers {
        w.await.unwrap();
    }
    let settled = |admin: u16| ok(admin, "GET", &format!("/apikeys/{key_id}"), Value::Null);
    let waited = plangate::clock::Stopwatch::start();
    let (on_a, on_b) = loop {
        let (x, y) = (settled(a.admin), settled(b.admin));
        if x == y {
            break (x, y);
        }
        assert!(
            waited.elapsed() < std::time::Duration::from_secs(20),
            "{x} / {y}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    };
    let last = on_a["description"].as_str().unwrap();
    assert!(
        last.ends_with("-19"),
        "the last write of one writer wins: {on_a} {on_b}"
    );

    // Restart both: the catalog is all there.
    drop((a, b));
    let (a, b) = (start(2), start(3));
    let mut ca = authz_client(a.grpc).await;
    let mut cb = authz_client(b.grpc).await;
    assert_eq!(
        prod(&mut ca, &key).await,
        429,
        "the quota is spent, and the key known"
    );
    assert_eq!(prod(&mut cb, &key2).await, 429, "the throttle is B's");
    let listed = ok(
        b.admin,
        "GET",
        &format!("/usageplans/{plan}/keys"),
        Value::Null,
    );
    assert_eq!(listed["item"][0]["id"], key_id.as_str(), "{listed}");
    // A file key still decides as before.
    assert_eq!(prod(&mut ca, "file-key-0123456789abcdef").await, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_share_the_catalog_on_one_redis() {
    let redis = RedisServer::start();
    shared_by_two_replicas(&redis.url()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_share_the_catalog_on_a_redis_cluster() {
    let cluster = RedisCluster::start(3, 0);
    shared_by_two_replicas(&cluster.url()).await;
}

/// The embedded store: what the API made is in the counters file, and a restart reads it back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_embedded_store_keeps_the_catalog_across_a_restart() {
    let (dir, path) = common::plans_dir(config());
    let data = dir.path().join("data");
    let args = ["--data-dir", data.to_str().unwrap()];
    let p = Plangate::start(&path, &args, dir.path().join("plangate-0.log"));
    let (plan, key_id, key) = plan_and_key(
        p.admin,
        json!({ "quota": { "limit": 2, "period": "DAY" }, "throttle": { "rateLimit": 100.0, "burstLimit": 100 } }),
    );
    let mut c = authz_client(p.grpc).await;
    assert_eq!(prod(&mut c, &key).await, 200);
    stop(p);
    let p = Plangate::start(&path, &args, dir.path().join("plangate-1.log"));
    let mut c = authz_client(p.grpc).await;
    assert_eq!(prod(&mut c, &key).await, 200, "the key and its plan, back");
    assert_eq!(prod(&mut c, &key).await, 429, "and its count");
    let got = ok(p.admin, "GET", &format!("/usageplans/{plan}"), Value::Null);
    assert_eq!(got["quota"]["limit"], 2, "{got}");
    let k = ok(p.admin, "GET", &format!("/apikeys/{key_id}"), Value::Null);
    assert_eq!(k["name"], "customer", "{k}");
}

/// Stops plangate as an orchestrator does (SIGTERM), and waits for its end.
fn stop(mut p: Plangate) {
    std::process::Command::new("kill")
        .args(["-TERM", &p.pid().to_string()])
        .status()
        .unwrap();
    assert!(p.wait().success());
}

/// Redis goes away and comes back (its data kept, as a Redis with an append-only file keeps
/// it): a change asked for meanwhile is refused with AWS's 503 and made nowhere; after, both
/// replicas follow the log again and nothing made before is lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_follow_again_after_a_redis_outage() {
    let mut redis = RedisServer::start_with(&["--appendonly", "yes", "--appendfsync", "always"]);
    let url = redis.url();
    let (dir, path) = common::plans_dir(config());
    let args = ["--store", url.as_str(), "--store-timeout-ms", "2000"];
    let a = Plangate::start(&path, &args, dir.path().join("a.log"));
    let b = Plangate::start(&path, &args, dir.path().join("b.log"));
    let (_, _, key) = plan_and_key(a.admin, json!({}));
    let mut cb = authz_client(b.grpc).await;
    wait_for_status(&mut cb, &key, 200, "B admits the key").await;

    redis.stop();
    let (status, _) = rest(a.admin, "POST", "/apikeys", json!({ "name": "during" }));
    assert_eq!(status, 503, "a change while the store is away");
    let r = common::http_with_body(a.admin, "POST", "/apikeys", &[], "{}");
    assert_eq!(
        r.header("x-amzn-errortype"),
        Some("ServiceUnavailableException")
    );
    redis.restart();

    // A's connection comes back by itself; a change made then reaches B.
    let waited = plangate::clock::Stopwatch::start();
    let made = loop {
        let (status, v) = rest(
            a.admin,
            "POST",
            "/apikeys",
            json!({ "name": "after", "enabled": true }),
        );
        if status == 201 {
            break v;
        }
        assert!(
            waited.elapsed() < std::time::Duration::from_secs(20),
            "{status} {v}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    };
    let id = made["id"].as_str().unwrap();
    common::wait_until("B knows the key made after the outage", || {
        rest(b.admin, "GET", &format!("/apikeys/{id}"), Value::Null).0 == 200
    });
    assert_eq!(prod(&mut cb, &key).await, 200, "the key made before");
    let names: Vec<Value> = ok(b.admin, "GET", "/apikeys?name=during", Value::Null)["item"]
        .as_array()
        .unwrap()
        .clone();
    assert!(names.is_empty(), "a refused change was made: {names:?}");
}
