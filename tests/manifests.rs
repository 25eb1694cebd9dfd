//! The Kubernetes and Istio manifests under deploy/. No cluster runs here, so what can be checked
//! without one is: every manifest parses; the essentials of each resource hold (probes, security
//! context, ports, no subPath); the example plans and keys are a valid plangate config; the Istio
//! resources agree with each other and with the Service; and the Envoy pieces inside the
//! EnvoyFilter, assembled into a config as istiod would patch them in, pass the real Envoy binary's
//! validation — and are the ones the Istio-shaped end-to-end test runs.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_yaml_ng::Value;

fn deploy() -> PathBuf {
    common::root().join("deploy")
}

/// Every YAML document under `dir`, with its file.
fn documents(dir: &Path) -> Vec<(PathBuf, Value)> {
    let mut files = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else if p.extension().is_some_and(|x| x == "yaml") {
                files.push(p);
            }
        }
    }
    files.sort();
    let mut docs = Vec::new();
    for f in files {
        let text = std::fs::read_to_string(&f).unwrap();
        for doc in serde_yaml_ng::Deserializer::from_str(&text) {
            let v = Value::deserialize_from(doc, &f);
            if !v.is_null() {
                docs.push((f.clone(), v));
            }
        }
    }
    docs
}

trait FromDoc {
    fn deserialize_from(doc: serde_yaml_ng::Deserializer<'_>, f: &Path) -> Value;
}

impl FromDoc for Value {
    fn deserialize_from(doc: serde_yaml_ng::Deserializer<'_>, f: &Path) -> Value {
        use serde::Deserialize;
        Value::deserialize(doc).unwrap_or_else(|e| panic!("{}: {e}", f.display()))
    }
}

fn kind_named<'a>(docs: &'a [(PathBuf, Value)], kind: &str, name: &str) -> &'a Value {
    docs.iter()
        .map(|(_, v)| v)
        .find(|v| v["kind"] == kind && v["metadata"]["name"] == name)
        .unwrap_or_else(|| panic!("no {kind} {name}"))
}

fn s(v: &Value) -> &str {
    v.as_str().unwrap_or("")
}

fn seq(v: &Value) -> &[Value] {
    v.as_sequence().map_or(&[], |s| s.as_slice())
}

#[test]
fn kubernetes_base_has_the_essentials() {
    let base = deploy().join("kubernetes/base");
    let docs = documents(&base);
    // Everything kustomize is told to read exists, and nothing else lies around unread.
    let kustomization = std::fs::read_to_string(base.join("kustomization.yaml")).unwrap();
    let k: Value = serde_yaml_ng::from_str(&kustomization).unwrap();
    for r in seq(&k["resources"]) {
        assert!(
            base.join(s(r)).is_file(),
            "kustomization names missing {}",
            s(r)
        );
    }
    for kind in [
        "Namespace",
        "ServiceAccount",
        "ConfigMap",
        "Secret",
        "Deployment",
        "Service",
        "PodDisruptionBudget",
    ] {
        assert!(docs.iter().any(|(_, v)| v["kind"] == kind), "no {kind}");
    }

    let d = kind_named(&docs, "Deployment", "plangate");
    let pod = &d["spec"]["template"]["spec"];
    assert_eq!(pod["securityContext"]["runAsNonRoot"], true);
    assert_eq!(pod["automountServiceAccountToken"], false);
    let labels = &d["spec"]["template"]["metadata"]["labels"];
    assert_eq!(&d["spec"]["selector"]["matchLabels"], labels);
    let c = &seq(&pod["containers"])[0];
    let sc = &c["securityContext"];
    assert_eq!(sc["readOnlyRootFilesystem"], true);
    assert_eq!(sc["allowPrivilegeEscalation"], false);
    assert_eq!(seq(&sc["capabilities"]["drop"]), [Value::from("ALL")]);
    assert!(!c["resources"]["requests"]["cpu"].is_null());
    assert!(!c["resources"]["requests"]["memory"].is_null());
    assert!(!c["resources"]["limits"]["memory"].is_null());
    // Probes on plangate's own endpoints, on the admin port.
    let port_named = |name: &str| {
        seq(&c["ports"])
            .iter()
            .find(|p| p["name"] == name)
            .map(|p| p["containerPort"].as_u64().unwrap())
            .unwrap_or_else(|| panic!("no container port {name}"))
    };
    assert_eq!(c["livenessProbe"]["httpGet"]["path"], "/healthz");
    assert_eq!(c["readinessProbe"]["httpGet"]["path"], "/readyz");
    let admin_port = s(&c["readinessProbe"]["httpGet"]["port"]);
    let args: Vec<&str> = seq(&c["args"]).iter().map(s).collect();
    assert_eq!(args[0], "serve");
    assert!(
        args.contains(&format!("--admin-addr=0.0.0.0:{}", port_named(admin_port)).as_str()),
        "the admin address must be reachable by the probes: {args:?}"
    );
    assert!(args.contains(&format!("--grpc-addr=0.0.0.0:{}", port_named("grpc")).as_str()));
    // The admin API is guarded by a token from a Secret.
    let token = seq(&c["env"])
        .iter()
        .find(|e| e["name"] == "PLANGATE_ADMIN_TOKEN")
        .expect("PLANGATE_ADMIN_TOKEN");
    let secret = s(&token["valueFrom"]["secretKeyRef"]["name"]);
    kind_named(&docs, "Secret", secret);
    // The config comes from the ConfigMap, as a directory.
    let config_arg = args.iter().find(|a| a.starts_with("--config=")).unwrap();
    let config_dir = Path::new(config_arg.trim_start_matches("--config="))
        .parent()
        .unwrap();
    let mount = seq(&c["volumeMounts"])
        .iter()
        .find(|m| Path::new(s(&m["mountPath"])) == config_dir)
        .expect("a mount at the config's directory");
    let volume = seq(&pod["volumes"])
        .iter()
        .find(|v| v["name"] == mount["name"])
        .unwrap();
    kind_named(&docs, "ConfigMap", s(&volume["configMap"]["name"]));

    // The Service: gRPC named and declared as such, and a port for metrics.
    let svc = kind_named(&docs, "Service", "plangate");
    let grpc = seq(&svc["spec"]["ports"])
        .iter()
        .find(|p| p["name"] == "grpc")
        .expect("a port named grpc");
    assert_eq!(grpc["appProtocol"], "grpc");
    assert!(
        seq(&svc["spec"]["ports"])
            .iter()
            .any(|p| p["targetPort"] == admin_port),
        "no Service port for /metrics"
    );
    let pdb = kind_named(&docs, "PodDisruptionBudget", "plangate");
    assert_eq!(&pdb["spec"]["selector"]["matchLabels"], labels);
}

#[test]
fn no_manifest_mounts_with_subpath() {
    // The kubelet never updates a subPath mount: a ConfigMap edit would never reach plangate.
    for (f, v) in documents(&deploy()) {
        let text = serde_yaml_ng::to_string(&v).unwrap();
        assert!(!text.contains("subPath"), "{} uses subPath", f.display());
    }
}

/// The shipped example is a valid configuration — but its placeholders cannot work: the key
/// placeholder refuses to load (naming what to put there), and so does the admin token's.
#[test]
fn the_example_plans_are_valid_and_its_placeholders_refuse_to_start() {
    let docs = documents(&deploy().join("kubernetes/base"));
    let plans =
        s(&kind_named(&docs, "ConfigMap", "plangate-plans")["data"]["plans.yaml"]).to_owned();
    let keys =
        s(&kind_named(&docs, "Secret", "plangate-keys")["stringData"]["keys.csv"]).to_owned();
    let token = s(&kind_named(&docs, "Secret", "plangate-admin")["stringData"]["token"]).to_owned();
    let dir = tempfile::tempdir().unwrap();
    let plans = plans.replace(
        "/etc/plangate-keys/keys.csv",
        &dir.path().join("keys.csv").display().to_string(),
    );
    std::fs::write(dir.path().join("plans.yaml"), &plans).unwrap();
    // As shipped: refused, saying what to put there.
    std::fs::write(dir.path().join("keys.csv"), &keys).unwrap();
    let e = plangate::config::load_file(&dir.path().join("plans.yaml"))
        .map(drop)
        .expect_err("the placeholder key refused")
        .to_string();
    assert!(
        e.contains("placeholder") && e.contains("customer's key"),
        "{e}"
    );
    // With a real key in its place: valid.
    let real = keys.replace(
        keys.lines().nth(1).unwrap().split(',').nth(1).unwrap(),
        "a-real-customer-key-0123456789",
    );
    std::fs::write(dir.path().join("keys.csv"), real).unwrap();
    let c = plangate::config::load_file(&dir.path().join("plans.yaml"))
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(c.snapshot.keys.len(), 1);
    assert!(
        !c.snapshot.domains.is_empty(),
        "the example names stages by host, for Istio"
    );
    // The admin token placeholder: plangate refuses to start.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_plangate"))
        .args([
            "serve",
            "--config",
            dir.path().join("plans.yaml").to_str().unwrap(),
        ])
        .args([
            "--grpc-addr",
            "127.0.0.1:0",
            "--admin-addr",
            "127.0.0.1:0",
            "--no-persist",
        ])
        .env("PLANGATE_ADMIN_TOKEN", &token)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("placeholder") && stderr.contains("openssl rand"),
        "{stderr}"
    );
    // The redis-cluster overlay's store URL placeholder: refused too.
    let overlay = documents(&deploy().join("kubernetes/overlays/redis-cluster"));
    let url = s(&kind_named(&overlay, "Secret", "plangate-store")["stringData"]["url"]).to_owned();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_plangate"))
        .args([
            "serve",
            "--config",
            dir.path().join("plans.yaml").to_str().unwrap(),
        ])
        .args(["--grpc-addr", "127.0.0.1:0", "--admin-addr", "127.0.0.1:0"])
        .env("PLANGATE_STORE", &url)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("placeholder") && stderr.contains("plangate-store"),
        "{stderr}"
    );
}

#[test]
fn redis_component_runs_replicas_on_redis() {
    let dir = deploy().join("kubernetes/components/redis");
    let k: Value =
        serde_yaml_ng::from_str(&std::fs::read_to_string(dir.join("kustomization.yaml")).unwrap())
            .unwrap();
    assert_eq!(k["kind"], "Component");
    for r in seq(&k["resources"]) {
        assert!(dir.join(s(r)).is_file());
    }
    // The JSON patches on plangate's Deployment.
    let ops: Vec<Value> = seq(&k["patches"])
        .iter()
        .filter(|p| p["target"]["kind"] == "Deployment")
        .flat_map(|p| serde_yaml_ng::from_str::<Vec<Value>>(s(&p["patch"])).unwrap())
        .collect();
    let op = |path: &str| {
        ops.iter()
            .find(|o| o["path"] == path)
            .unwrap_or_else(|| panic!("no patch of {path}"))
    };
    assert!(op("/spec/replicas")["value"].as_u64() >= Some(2));
    let store = op("/spec/template/spec/containers/0/args/-");
    assert_eq!(store["op"], "add");
    // Redis by its short name: the Service of whatever namespace the overlay sets.
    assert_eq!(s(&store["value"]), "--store=redis://redis:6379");
    let docs = documents(&dir);
    kind_named(&docs, "Deployment", "redis");
    let svc = kind_named(&docs, "Service", "redis");
    assert_eq!(seq(&svc["spec"]["ports"])[0]["port"], 6379);
    let m = deploy().join("kubernetes/components/monitoring");
    let docs = documents(&m);
    kind_named(&docs, "ServiceMonitor", "plangate");
    kind_named(&docs, "PrometheusRule", "plangate");
}

/// The Service's in-cluster name and gRPC port.
fn plangate_service() -> (String, u64) {
    let docs = documents(&deploy().join("kubernetes"));
    let ns = s(&kind_named(&docs, "Namespace", "plangate")["metadata"]["name"]).to_owned();
    let svc = kind_named(&docs, "Service", "plangate");
    let port = seq(&svc["spec"]["ports"])
        .iter()
        .find(|p| p["name"] == "grpc")
        .and_then(|p| p["port"].as_u64())
        .unwrap();
    (format!("plangate.{ns}.svc.cluster.local"), port)
}

#[test]
fn istio_resources_agree_with_each_other_and_the_service() {
    let docs = documents(&deploy().join("istio"));
    let (host, port) = plangate_service();
    let mesh = docs
        .iter()
        .map(|(_, v)| v)
        .find(|v| v["kind"] == "IstioOperator")
        .unwrap();
    let provider = seq(&mesh["spec"]["meshConfig"]["extensionProviders"])
        .iter()
        .find(|p| !p["envoyExtAuthzGrpc"].is_null())
        .expect("an envoyExtAuthzGrpc provider");
    assert_eq!(s(&provider["envoyExtAuthzGrpc"]["service"]), host);
    assert_eq!(provider["envoyExtAuthzGrpc"]["port"].as_u64(), Some(port));
    assert_eq!(provider["envoyExtAuthzGrpc"]["failOpen"], false);
    let policy = docs
        .iter()
        .map(|(_, v)| v)
        .find(|v| v["kind"] == "AuthorizationPolicy")
        .unwrap();
    assert_eq!(policy["spec"]["action"], "CUSTOM");
    assert_eq!(policy["spec"]["provider"]["name"], provider["name"]);

    let ef = docs
        .iter()
        .map(|(_, v)| v)
        .find(|v| v["kind"] == "EnvoyFilter")
        .unwrap();
    let patches = seq(&ef["spec"]["configPatches"]);
    let patch = |to: &str| {
        patches
            .iter()
            .find(|p| p["applyTo"] == to)
            .unwrap_or_else(|| panic!("no {to} patch"))
    };
    let filter = patch("HTTP_FILTER");
    assert_eq!(filter["patch"]["operation"], "INSERT_BEFORE");
    assert_eq!(
        filter["match"]["listener"]["filterChain"]["filter"]["subFilter"]["name"],
        "envoy.filters.http.router"
    );
    let cluster = &patch("CLUSTER")["patch"]["value"];
    let rls = &filter["patch"]["value"]["typed_config"];
    assert_eq!(
        rls["rate_limit_service"]["grpc_service"]["envoy_grpc"]["cluster_name"],
        cluster["name"]
    );
    assert_eq!(rls["domain"], "plangate", "plangate's default RLS domain");
    let address = &seq(&seq(&cluster["load_assignment"]["endpoints"])[0]["lb_endpoints"])[0]["endpoint"]
        ["address"]["socket_address"];
    assert_eq!(s(&address["address"]), host);
    assert_eq!(address["port_value"].as_u64(), Some(port));
    // The workload's API stage as fixed entries (a sidecar: never the client-chosen Host), then
    // the request's key, method and path, with plangate's default entry keys.
    let vh = patch("VIRTUAL_HOST");
    assert_eq!(vh["patch"]["operation"], "MERGE");
    let actions = seq(&seq(&vh["patch"]["value"]["rate_limits"])[0]["actions"]);
    let keys: Vec<&str> = actions
        .iter()
        .map(|a| {
            if a["generic_key"].is_null() {
                s(&a["request_headers"]["descriptor_key"])
            } else {
                s(&a["generic_key"]["descriptor_key"])
            }
        })
        .collect();
    assert_eq!(keys, ["api", "stage", "api_key", "method", "path"]);
    assert!(
        actions
            .iter()
            .all(|a| a["request_headers"]["header_name"] != ":authority"),
        "a sidecar's descriptors must not take the Host"
    );
    let key_action = actions
        .iter()
        .find(|a| a["request_headers"]["descriptor_key"] == "api_key")
        .unwrap();
    assert_eq!(key_action["request_headers"]["skip_if_absent"], true);
}

/// The Envoy config the EnvoyFilter's patches produce on a minimal sidecar listener, as istiod
/// applies them: the filter inserted before the router, the cluster added, the virtual host
/// merged.
fn assembled_ratelimit_config() -> Value {
    let docs = documents(&deploy().join("istio"));
    let ef = docs
        .iter()
        .map(|(_, v)| v)
        .find(|v| v["kind"] == "EnvoyFilter")
        .unwrap();
    let patch = |to: &str| {
        seq(&ef["spec"]["configPatches"])
            .iter()
            .find(|p| p["applyTo"] == to)
            .map(|p| p["patch"]["value"].clone())
            .unwrap()
    };
    let mut base: Value = serde_yaml_ng::from_str(
        r#"
static_resources:
  listeners:
    - name: virtualInbound
      address: { socket_address: { address: 127.0.0.1, port_value: 15006 } }
      filter_chains:
        - filters:
            - name: envoy.filters.network.http_connection_manager
              typed_config:
                "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
                stat_prefix: inbound_0.0.0.0_8080
                route_config:
                  name: inbound|8080||
                  virtual_hosts:
                    - name: inbound|http|8080
                      domains: ["*"]
                      routes: [{ match: { prefix: "/" }, route: { cluster: "inbound|8080||" } }]
                http_filters:
                  - name: envoy.filters.http.router
                    typed_config:
                      "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router
  clusters:
    - name: inbound|8080||
      type: STATIC
      load_assignment:
        cluster_name: inbound|8080||
        endpoints: [{ lb_endpoints: [{ endpoint: { address: { socket_address: { address: 127.0.0.1, port_value: 8080 } } } }] }]
"#,
    )
    .unwrap();
    let hcm = &mut base["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"];
    let filters = hcm["http_filters"].as_sequence_mut().unwrap();
    let router = filters
        .iter()
        .position(|f| f["name"] == "envoy.filters.http.router")
        .unwrap();
    filters.insert(router, patch("HTTP_FILTER"));
    let vh = hcm["route_config"]["virtual_hosts"][0]
        .as_mapping_mut()
        .unwrap();
    for (k, v) in patch("VIRTUAL_HOST").as_mapping().unwrap() {
        vh.insert(k.clone(), v.clone());
    }
    base["static_resources"]["clusters"]
        .as_sequence_mut()
        .unwrap()
        .push(patch("CLUSTER"));
    base
}

#[test]
fn the_envoyfilter_patches_make_a_config_real_envoy_accepts() {
    let config = assembled_ratelimit_config();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("assembled.yaml");
    std::fs::write(&path, serde_yaml_ng::to_string(&config).unwrap()).unwrap();
    let out = Command::new(common::envoy_bin())
        .args(["--mode", "validate", "-c"])
        .arg(&path)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "envoy refused the assembled config:\n{}\n{}",
        String::from_utf8_lossy(&out.stderr),
        serde_yaml_ng::to_string(&config).unwrap()
    );
}

#[test]
fn the_istio_shaped_e2e_config_runs_what_the_envoyfilter_ships() {
    // tests/e2e_istio.rs runs envoy/istio/ratelimit.yaml: its filter and descriptors must be the
    // EnvoyFilter's (only the cluster's address differs: loopback there).
    let assembled = assembled_ratelimit_config();
    let e2e: Value = serde_yaml_ng::from_str(
        &std::fs::read_to_string(common::root().join("envoy/istio/ratelimit.yaml")).unwrap(),
    )
    .unwrap();
    let hcm = |v: &Value| {
        v["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]
            .clone()
    };
    let (a, b) = (hcm(&assembled), hcm(&e2e));
    let rls = |h: &Value| {
        seq(&h["http_filters"])
            .iter()
            .find(|f| f["name"] == "envoy.filters.http.ratelimit")
            .cloned()
            .unwrap()
    };
    assert_eq!(rls(&a), rls(&b));
    assert_eq!(
        a["route_config"]["virtual_hosts"][0]["rate_limits"],
        b["route_config"]["virtual_hosts"][0]["rate_limits"]
    );
    let names = |v: &Value| -> Vec<String> {
        seq(&v["static_resources"]["clusters"])
            .iter()
            .map(|c| s(&c["name"]).to_owned())
            .collect()
    };
    assert!(names(&e2e).contains(&"plangate-ratelimit".to_owned()));
    assert!(names(&assembled).contains(&"plangate-ratelimit".to_owned()));
}

#[test]
fn tls_component_serves_grpc_over_mtls_from_the_certificate_secret() {
    let dir = deploy().join("kubernetes/components/tls");
    let k: Value =
        serde_yaml_ng::from_str(&std::fs::read_to_string(dir.join("kustomization.yaml")).unwrap())
            .unwrap();
    assert_eq!(k["kind"], "Component");
    let docs = documents(&dir);
    let cert = kind_named(&docs, "Certificate", "plangate-grpc");
    let secret = s(&cert["spec"]["secretName"]);
    // The names callers check are the Service's.
    let names: Vec<&str> = seq(&cert["spec"]["dnsNames"]).iter().map(s).collect();
    assert!(names.contains(&"plangate.plangate.svc"), "{names:?}");
    let envoy = std::fs::read_to_string(common::root().join("envoy/ext_authz_tls.yaml")).unwrap();
    assert!(envoy.contains("exact: plangate.plangate.svc"));
    // The patch applies to plangate's workload, a Deployment or the embedded StatefulSet.
    let ops: Vec<Value> = seq(&k["patches"])
        .iter()
        .filter(|p| p["target"]["kind"] == "(Deployment|StatefulSet)")
        .flat_map(|p| serde_yaml_ng::from_str::<Vec<Value>>(s(&p["patch"])).unwrap())
        .collect();
    let added = |path: &str| -> Vec<&Value> {
        ops.iter()
            .filter(|o| o["op"] == "add" && o["path"] == path)
            .map(|o| &o["value"])
            .collect()
    };
    // The volume is the Certificate's Secret, mounted whole where the flags point.
    let volume = added("/spec/template/spec/volumes/-")[0];
    assert_eq!(s(&volume["secret"]["secretName"]), secret);
    let mount = added("/spec/template/spec/containers/0/volumeMounts/-")[0];
    assert_eq!(mount["name"], volume["name"]);
    assert!(mount.get("subPath").is_none());
    let dir = s(&mount["mountPath"]).to_owned();
    let args: Vec<&str> = added("/spec/template/spec/containers/0/args/-")
        .into_iter()
        .map(s)
        .collect();
    // Every flag exists in `plangate serve`, and every file is in the mounted Secret.
    let help = std::process::Command::new(env!("CARGO_BIN_EXE_plangate"))
        .args(["serve", "--help"])
        .output()
        .unwrap();
    let help = String::from_utf8_lossy(&help.stdout);
    for (flag, file) in [
        ("--grpc-tls-cert", "tls.crt"),
        ("--grpc-tls-key", "tls.key"),
        ("--grpc-tls-client-ca", "ca.crt"),
    ] {
        assert!(help.contains(flag), "`plangate serve` has no {flag}");
        let arg = format!("{flag}={dir}/{file}");
        assert!(args.contains(&arg.as_str()), "{arg} not in {args:?}");
    }
}

/// The tools of scripts/k8s-venv.sh: a real kustomize (kubectl) and kubernetes-validate.
fn k8s_bin(tool: &str) -> PathBuf {
    let out = Command::new(common::root().join("scripts/k8s-venv.sh"))
        .output()
        .expect("scripts/k8s-venv.sh");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    PathBuf::from(String::from_utf8_lossy(&out.stdout).trim()).join(tool)
}

/// `kubectl kustomize DIR`: the documents it renders.
fn kustomize(dir: &Path) -> (String, Vec<Value>) {
    let out = Command::new(k8s_bin("kubectl"))
        .arg("kustomize")
        .arg(dir)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{}: {}",
        dir.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    let docs = serde_yaml_ng::Deserializer::from_str(&text)
        .map(|d| Value::deserialize_from(d, dir))
        .filter(|v| !v.is_null())
        .collect();
    (text, docs)
}

/// kubernetes-validate --strict on a rendered file: its output, and whether it passed.
fn validate(text: &str) -> (bool, String) {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("rendered.yaml");
    std::fs::write(&f, text).unwrap();
    let out = Command::new(k8s_bin("kubernetes-validate"))
        .args(["--strict", "--quiet"])
        .arg(&f)
        .output()
        .unwrap();
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

const CLUSTER_SCOPED: &[&str] = &["Namespace", "ClusterRole", "ClusterRoleBinding"];

/// Every overlay renders with a real kustomize; every namespaced object is in the namespace
/// plangate's workload is in (the Namespace object too); the store URL names a Service of that
/// namespace (or a Secret of it); the ServiceMonitor selects plangate's Service only; and the
/// Kubernetes API's own schemas (kubernetes-validate --strict) accept every object — and refuse a
/// deliberately broken copy.
#[test]
fn every_overlay_renders_into_one_namespace_and_validates() {
    let overlays = deploy().join("kubernetes/overlays");
    // Each overlay, and the redis one with the monitoring component (an overlay of it, as a
    // user would write it, under target/).
    let with_monitoring = common::root().join("target/manifests-test/redis-monitoring");
    std::fs::create_dir_all(&with_monitoring).unwrap();
    std::fs::write(
        with_monitoring.join("kustomization.yaml"),
        "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\nnamespace: plangate\n\
         resources: [../../../deploy/kubernetes/overlays/redis]\n\
         components: [../../../deploy/kubernetes/components/monitoring]\n",
    )
    .unwrap();
    let mut dirs: Vec<PathBuf> = ["embedded", "redis", "redis-cluster"]
        .iter()
        .map(|o| overlays.join(o))
        .collect();
    dirs.push(with_monitoring);
    for dir in dirs {
        let (text, docs) = kustomize(&dir);
        let workload = docs
            .iter()
            .find(|v| {
                (v["kind"] == "Deployment" || v["kind"] == "StatefulSet")
                    && v["metadata"]["name"] == "plangate"
            })
            .unwrap_or_else(|| panic!("{}: no plangate workload", dir.display()));
        let ns = s(&workload["metadata"]["namespace"]).to_owned();
        assert!(
            !ns.is_empty(),
            "{}: the workload has no namespace",
            dir.display()
        );
        for v in &docs {
            let kind = s(&v["kind"]);
            if CLUSTER_SCOPED.contains(&kind) {
                continue;
            }
            assert_eq!(
                s(&v["metadata"]["namespace"]),
                ns,
                "{}: {kind} {} is not in {ns}",
                dir.display(),
                s(&v["metadata"]["name"])
            );
        }
        assert!(
            docs.iter()
                .any(|v| v["kind"] == "Namespace" && v["metadata"]["name"] == ns.as_str())
        );
        let c = &seq(&workload["spec"]["template"]["spec"]["containers"])[0];
        let args: Vec<&str> = seq(&c["args"]).iter().map(s).collect();
        let store = args.iter().find_map(|a| a.strip_prefix("--store="));
        let store_env = seq(&c["env"])
            .iter()
            .find(|e| e["name"] == "PLANGATE_STORE");
        let services: Vec<&str> = docs
            .iter()
            .filter(|v| v["kind"] == "Service")
            .map(|v| s(&v["metadata"]["name"]))
            .collect();
        match (store, store_env) {
            (Some(url), _) => {
                // `redis://host:port`: a Service of this namespace.
                let host = url
                    .split("://")
                    .nth(1)
                    .and_then(|r| r.split([':', '/']).next())
                    .unwrap();
                let host = host
                    .strip_suffix(&format!(".{ns}.svc.cluster.local"))
                    .or_else(|| host.strip_suffix(&format!(".{ns}.svc")))
                    .unwrap_or(host);
                assert!(
                    services.contains(&host),
                    "{}: --store points at {host}, not a Service of {ns} ({services:?})",
                    dir.display()
                );
                assert!(
                    workload["spec"]["replicas"].as_u64() >= Some(2),
                    "several replicas on Redis"
                );
            }
            (None, Some(env)) => {
                let secret = s(&env["valueFrom"]["secretKeyRef"]["name"]);
                kind_named_in(&docs, "Secret", secret);
                assert!(workload["spec"]["replicas"].as_u64() >= Some(2));
            }
            (None, None) => {
                // The embedded store: one replica, the data directory on a claim of its own.
                assert_eq!(workload["kind"], "StatefulSet", "{}", dir.display());
                assert_eq!(workload["spec"]["replicas"], 1);
                let data = args
                    .iter()
                    .find_map(|a| a.strip_prefix("--data-dir="))
                    .expect("--data-dir");
                let mount = seq(&c["volumeMounts"])
                    .iter()
                    .find(|m| m["mountPath"] == data)
                    .expect("a mount at --data-dir");
                assert!(
                    seq(&workload["spec"]["volumeClaimTemplates"])
                        .iter()
                        .any(|t| t["metadata"]["name"] == mount["name"]),
                    "--data-dir on a PersistentVolumeClaim"
                );
                assert!(
                    services.contains(&s(&workload["spec"]["serviceName"])),
                    "the StatefulSet's governing Service"
                );
            }
        }
        // A ServiceMonitor, where there is one, selects plangate's Service and nothing else.
        if let Some(sm) = docs.iter().find(|v| v["kind"] == "ServiceMonitor") {
            assert_eq!(sm["metadata"]["labels"]["release"], "kube-prometheus-stack");
            let sel = &sm["spec"]["selector"]["matchLabels"];
            let picked: Vec<&str> = docs
                .iter()
                .filter(|v| v["kind"] == "Service")
                .filter(|v| {
                    sel.as_mapping()
                        .unwrap()
                        .iter()
                        .all(|(k, val)| &v["metadata"]["labels"][k] == val)
                })
                .map(|v| s(&v["metadata"]["name"]))
                .collect();
            assert_eq!(picked, ["plangate"], "{}", dir.display());
        }
        let (ok, out) = validate(&text);
        assert!(ok, "{}: {out}", dir.display());
        // A broken copy fails: a port that is not a number, a field Kubernetes does not have.
        let broken = text.replacen("containerPort: 50051", "containerPort: fifty", 1);
        assert!(!validate(&broken).0, "a broken port passed");
        let broken = text.replacen(
            "readOnlyRootFilesystem: true",
            "readOnlyRootFilesystm: true",
            1,
        );
        assert!(!validate(&broken).0, "an unknown field passed --strict");
    }
}

fn kind_named_in<'a>(docs: &'a [Value], kind: &str, name: &str) -> &'a Value {
    docs.iter()
        .find(|v| v["kind"] == kind && v["metadata"]["name"] == name)
        .unwrap_or_else(|| panic!("no {kind} {name}"))
}

/// The embedded overlay's rollout, simulated: the StatefulSet's own arguments, the same volume
/// directory, the old process stopped (SIGTERM, as the kubelet does) before the new one starts —
/// the quota used before is the quota used after.
#[test]
fn the_embedded_overlay_keeps_every_count_across_a_rollout() {
    let docs = documents(&deploy().join("kubernetes/overlays/embedded"));
    let sts = kind_named(&docs, "StatefulSet", "plangate");
    let c = &seq(&sts["spec"]["template"]["spec"]["containers"])[0];
    let args: Vec<String> = seq(&c["args"]).iter().map(|a| s(a).to_owned()).collect();
    let data_arg = args
        .iter()
        .find(|a| a.starts_with("--data-dir="))
        .expect("--data-dir")
        .clone();
    // The volume: a directory of this test, where the claim would be.
    let volume = tempfile::tempdir().unwrap();
    let plans = common::petstore(
        "",
        &[("prod", "{}")],
        &[("gold", "quota: { limit: 100, period: MONTH }")],
        &[("k1", "rollout-key-0123456789abcdef", "usage_plans: [gold]")],
    );
    let (dir, path) = common::plans_dir(plans);
    let pod_args: Vec<String> = args
        .iter()
        .filter(|a| {
            // The addresses, the config and the data directory are this test's.
            !a.starts_with("--config=")
                && !a.starts_with("--grpc-addr=")
                && !a.starts_with("--admin-addr=")
                && !a.starts_with("--data-dir=")
                && *a != "serve"
        })
        .cloned()
        .chain(["--data-dir".to_owned(), volume.path().display().to_string()])
        .collect();
    assert!(data_arg.len() > "--data-dir=".len());
    let start = || {
        let a: Vec<&str> = pod_args.iter().map(String::as_str).collect();
        common::Plangate::start(&path, &a, dir.path().join("plangate.log"))
    };
    let rt = tokio::runtime::Runtime::new().unwrap();
    let decide = |grpc: u16, n: usize| {
        rt.block_on(async {
            let mut c = common::authz_client(grpc).await;
            for _ in 0..n {
                let r = c
                    .check(common::check_request_to(
                        "rollout-key-0123456789abcdef",
                        "/pets",
                        "petstore",
                        "prod",
                    ))
                    .await
                    .unwrap();
                assert_eq!(common::check_status(&r.into_inner()), 200);
            }
        })
    };
    let remaining = |admin: u16| {
        let r = common::http(admin, "GET", "/v1/usageplans/gold/keys/k1/usage", &[]);
        let v: Value = serde_yaml_ng::from_str(&r.body).unwrap_or(Value::Null);
        (r.status, v["remaining"].as_u64())
    };
    let mut old = start();
    decide(old.grpc, 7);
    let before = remaining(old.admin);
    assert_eq!(before, (200, Some(93)), "before the rollout");
    // The kubelet's stop: SIGTERM, then the new pod once the old one is gone.
    Command::new("kill")
        .args(["-TERM", &old.pid().to_string()])
        .status()
        .unwrap();
    assert!(old.wait().success());
    let new = start();
    assert_eq!(remaining(new.admin), before, "after the rollout");
    decide(new.grpc, 1);
    assert_eq!(remaining(new.admin), (200, Some(92)));
}

/// deploy/envoy-gateway/ and the Envoy configuration it stands for (envoy/envoy-gateway/, run
/// through a real Envoy by tests/tls.rs) agree: the filter and cluster names follow the
/// SecurityPolicy's namespace and name; the policy's backend is plangate's Service and gRPC port
/// (in its namespace, with a ReferenceGrant that lets the policy's namespace refer to it); the
/// BackendTLSPolicy's hostname is the SNI and SAN Envoy checks, and the name the TLS component's
/// Certificate carries; the HTTPRoutes' hosts are the virtual hosts, and only the policy's route
/// enables the filter.
#[test]
fn envoy_gateway_resources_agree_with_the_envoy_config_they_render() {
    let (_, docs) = kustomize(&deploy().join("envoy-gateway"));
    let find = |kind: &str, name: &str| kind_named_in(&docs, kind, name);
    let policy = find("SecurityPolicy", "plangate");
    let (ns, name) = (
        s(&policy["metadata"]["namespace"]),
        s(&policy["metadata"]["name"]),
    );
    let envoy: Value = serde_yaml_ng::from_str(
        &std::fs::read_to_string(common::root().join("envoy/envoy-gateway/ext_authz.yaml"))
            .unwrap(),
    )
    .unwrap();
    let hcm =
        &seq(&seq(&seq(&envoy["static_resources"]["listeners"])[0]["filter_chains"])[0]["filters"])
            [0]["typed_config"];
    let filter_name = format!("envoy.filters.http.ext_authz/securitypolicy/{ns}/{name}");
    let filter = seq(&hcm["http_filters"])
        .iter()
        .find(|f| f["name"] == filter_name.as_str())
        .unwrap_or_else(|| panic!("no filter {filter_name}"));
    assert_eq!(filter["disabled"], true, "enabled per route only");
    let cluster_name = format!("securitypolicy/{ns}/{name}/extauth/0");
    assert_eq!(
        filter["typed_config"]["grpc_service"]["envoy_grpc"]["cluster_name"],
        cluster_name.as_str()
    );
    // failOpen is failure_mode_allow: false, refused when plangate does not answer.
    assert_eq!(
        policy["spec"]["extAuth"]["failOpen"],
        filter["typed_config"]["failure_mode_allow"]
    );
    // The backend: plangate's Service and gRPC port, across namespaces by a ReferenceGrant.
    let backend = &seq(&policy["spec"]["extAuth"]["grpc"]["backendRefs"])[0];
    let base = documents(&deploy().join("kubernetes/base"));
    let svc = kind_named(&base, "Service", s(&backend["name"]));
    let plangate_ns = s(&kind_named(&base, "Namespace", "plangate")["metadata"]["name"]);
    assert_eq!(s(&backend["namespace"]), plangate_ns);
    let grpc = seq(&svc["spec"]["ports"])
        .iter()
        .find(|p| p["name"] == "grpc")
        .unwrap();
    assert_eq!(backend["port"], grpc["port"]);
    let grant = docs
        .iter()
        .find(|v| v["kind"] == "ReferenceGrant")
        .expect("a ReferenceGrant");
    assert_eq!(s(&grant["metadata"]["namespace"]), plangate_ns);
    assert!(
        seq(&grant["spec"]["from"])
            .iter()
            .any(|f| f["kind"] == "SecurityPolicy"
                && f["namespace"] == ns
                && f["group"] == "gateway.envoyproxy.io")
    );
    assert!(
        seq(&grant["spec"]["to"])
            .iter()
            .any(|t| t["kind"] == "Service" && t["name"] == backend["name"])
    );
    // mTLS: the BackendTLSPolicy's hostname is what Envoy sends and checks, and what the TLS
    // component's Certificate names; the EnvoyProxy gives Envoy a client certificate.
    let tls_policy = find("BackendTLSPolicy", "plangate");
    let hostname = s(&tls_policy["spec"]["validation"]["hostname"]);
    assert_eq!(
        seq(&tls_policy["spec"]["targetRefs"])[0]["sectionName"],
        "grpc"
    );
    let cluster = seq(&envoy["static_resources"]["clusters"])
        .iter()
        .find(|c| c["name"] == cluster_name.as_str())
        .unwrap();
    let tls = &cluster["transport_socket"]["typed_config"];
    assert_eq!(s(&tls["sni"]), hostname);
    assert_eq!(
        s(
            &seq(&tls["common_tls_context"]["validation_context"]["match_typed_subject_alt_names"])
                [0]["matcher"]["exact"]
        ),
        hostname
    );
    assert!(!seq(&tls["common_tls_context"]["tls_certificates"]).is_empty());
    let tls_component = documents(&deploy().join("kubernetes/components/tls"));
    let cert = kind_named(&tls_component, "Certificate", "plangate-grpc");
    assert!(seq(&cert["spec"]["dnsNames"]).iter().any(|d| d == hostname));
    let proxy = find("EnvoyProxy", "eg-proxy");
    assert!(!proxy["spec"]["backendTLS"]["clientCertificateRef"]["name"].is_null());
    // The routes: the policy's HTTPRoute's host enables the filter on every route; the other
    // HTTPRoute's does not.
    let target = s(&seq(&policy["spec"]["targetRefs"])[0]["name"]);
    for route in docs.iter().filter(|v| v["kind"] == "HTTPRoute") {
        let host = s(&seq(&route["spec"]["hostnames"])[0]);
        let vhost = seq(&hcm["route_config"]["virtual_hosts"])
            .iter()
            .find(|v| seq(&v["domains"]).iter().any(|d| d == host))
            .unwrap_or_else(|| panic!("no virtual host for {host}"));
        let enabled = seq(&vhost["routes"])
            .iter()
            .all(|r| !r["typed_per_filter_config"][filter_name.as_str()].is_null());
        assert_eq!(
            enabled,
            route["metadata"]["name"] == target,
            "{host}: the filter enabled where the policy targets"
        );
        assert_eq!(
            seq(&vhost["routes"]).len(),
            seq(&route["spec"]["rules"]).len(),
            "{host}: a route per rule"
        );
    }
}

/// The custom resources — the Prometheus Operator's, cert-manager's, Istio's, Gateway API's and
/// Envoy Gateway's — validate against their CRDs' schemas (kubernetes-models' generated
/// validators, scripts/crd-validators.sh, run with Node), as rendered by every overlay with
/// each component and as shipped under deploy/istio and deploy/envoy-gateway; a broken copy
/// fails.
#[test]
fn custom_resources_validate_against_their_crd_schemas() {
    let out = Command::new(common::root().join("scripts/crd-validators.sh"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let modules = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    let work = common::root().join("target/manifests-test/crds");
    std::fs::create_dir_all(&work).unwrap();
    // Every overlay with every component, as a user's overlay would add them.
    let mut rendered = Vec::new();
    for overlay in ["embedded", "redis", "redis-cluster"] {
        let dir = work.join(overlay);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(
            dir.join("kustomization.yaml"),
            format!(
                "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\n\
                 namespace: plangate\nresources: [../../../../deploy/kubernetes/overlays/{overlay}]\n\
                 components: [../../../../deploy/kubernetes/components/monitoring, \
                 ../../../../deploy/kubernetes/components/tls]\n"
            ),
        )
        .unwrap();
        rendered.push(kustomize(&dir).0);
    }
    rendered.push(kustomize(&deploy().join("envoy-gateway")).0);
    for e in std::fs::read_dir(deploy().join("istio")).unwrap() {
        rendered.push(std::fs::read_to_string(e.unwrap().path()).unwrap());
    }
    let validate = |texts: &[String]| {
        let dir = tempfile::tempdir().unwrap();
        let files: Vec<PathBuf> = texts
            .iter()
            .enumerate()
            .map(|(i, t)| {
                let f = dir.path().join(format!("{i}.yaml"));
                std::fs::write(&f, t).unwrap();
                f
            })
            .collect();
        let out = Command::new("node")
            .arg(common::root().join("tests/fixtures/k8s/validate-crds.mjs"))
            .arg(&modules)
            .args(&files)
            .output()
            .unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
        )
    };
    let (ok, report) = validate(&rendered);
    assert!(ok, "{report}");
    // ServiceMonitor, PrometheusRule and Certificate ×3, Envoy Gateway's 7, Istio's 3.
    let checked: usize = report
        .split_whitespace()
        .nth(1)
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    assert!(checked >= 19, "{report}");
    // Broken copies fail: a port that is not a number, a boolean that is a string, a kind
    // that does not exist.
    for (from, to) in [
        ("port: 8080", "port: eighty"),
        ("failOpen: false", "failOpen: \"no\""),
        ("kind: ServiceMonitor", "kind: ServiceMonitr"),
    ] {
        let broken: Vec<String> = rendered.iter().map(|t| t.replacen(from, to, 1)).collect();
        assert!(!validate(&broken).0, "{from} → {to} passed");
    }
}
