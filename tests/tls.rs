//! TLS everywhere plangate talks: the gRPC listener (TLS and mTLS, certificates reloaded without a
//! restart), the admin listener, `rediss://` to a real redis-server with TLS, and real Envoy
//! calling ext_authz over mutual TLS (envoy/ext_authz_tls.yaml). Certificates are made by
//! `openssl` for each test.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use plangate::clock::Stopwatch;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use common::{Plangate, RedisServer, Succeeds, check_request, check_status};

const KEY: &str = "tls-key-0123456789abcdefghij";

fn config() -> String {
    common::petstore(
        common::DEFAULTS,
        &[("prod", "{}")],
        &[("two", "quota: { limit: 2, period: DAY }")],
        &[("k", KEY, "usage_plans: [two]")],
    )
}

fn openssl(dir: &Path, args: &[&str]) {
    Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .succeeds();
}

/// Test certificates in one directory: `ca` (signs the others), `server` (names 127.0.0.1,
/// localhost and plangate.plangate.svc), `server2` (the same names, a new key: a renewal),
/// `client` (client auth, by `ca`), and `other-ca` with `stranger` (a client it signed).
struct Certs {
    dir: tempfile::TempDir,
}

impl Certs {
    fn new() -> Certs {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let ec = [
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
        ];
        for ca in ["ca", "other-ca"] {
            let mut args = vec!["req", "-x509"];
            args.extend(ec);
            let (key, crt, subj) = (
                format!("{ca}.key"),
                format!("{ca}.crt"),
                format!("/CN=plangate test {ca}"),
            );
            args.extend(["-keyout", &key, "-out", &crt, "-days", "2", "-subj", &subj]);
            openssl(d, &args);
        }
        std::fs::write(
            d.join("server.ext"),
            "subjectAltName=IP:127.0.0.1,DNS:localhost,DNS:plangate.plangate.svc\n\
             extendedKeyUsage=serverAuth\n",
        )
        .unwrap();
        std::fs::write(d.join("client.ext"), "extendedKeyUsage=clientAuth\n").unwrap();
        for (name, ca, ext) in [
            ("server", "ca", "server.ext"),
            ("server2", "ca", "server.ext"),
            ("client", "ca", "client.ext"),
            ("stranger", "other-ca", "client.ext"),
        ] {
            let (key, csr, crt, subj) = (
                format!("{name}.key"),
                format!("{name}.csr"),
                format!("{name}.crt"),
                format!("/CN={name}"),
            );
            let mut args = vec!["req"];
            args.extend(ec);
            args.extend(["-keyout", &key, "-out", &csr, "-subj", &subj]);
            openssl(d, &args);
            let (ca_crt, ca_key) = (format!("{ca}.crt"), format!("{ca}.key"));
            openssl(
                d,
                &[
                    "x509",
                    "-req",
                    "-in",
                    &csr,
                    "-CA",
                    &ca_crt,
                    "-CAkey",
                    &ca_key,
                    "-CAcreateserial",
                    "-out",
                    &crt,
                    "-days",
                    "2",
                    "-extfile",
                    ext,
                ],
            );
        }
        Certs { dir }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn arg(&self, name: &str) -> String {
        self.path(name).display().to_string()
    }

    /// `plangate serve` flags for mTLS on the gRPC listener with `server` and `ca`.
    fn grpc_mtls_flags(&self) -> Vec<String> {
        [
            ("--grpc-tls-cert", "server.crt"),
            ("--grpc-tls-key", "server.key"),
            ("--grpc-tls-client-ca", "ca.crt"),
        ]
        .into_iter()
        .flat_map(|(flag, file)| [flag.to_owned(), self.arg(file)])
        .collect()
    }

    fn der(&self, name: &str) -> CertificateDer<'static> {
        CertificateDer::from_pem_file(self.path(name)).unwrap()
    }

    /// A client configuration trusting `ca.crt`, with `client` (a name: `client`, `stranger`)
    /// as its certificate if given, offering h2.
    fn client(&self, client: Option<&str>) -> Arc<rustls::ClientConfig> {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(self.der("ca.crt")).unwrap();
        let builder = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots);
        let mut config = match client {
            Some(name) => builder
                .with_client_auth_cert(
                    vec![self.der(&format!("{name}.crt"))],
                    PrivateKeyDer::from_pem_file(self.path(&format!("{name}.key"))).unwrap(),
                )
                .unwrap(),
            None => builder.with_no_client_auth(),
        };
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Arc::new(config)
    }
}

type Tls = tokio_rustls::client::TlsStream<tokio::net::TcpStream>;

/// A TLS connection to 127.0.0.1:`port` with `config`.
async fn tls_connect(port: u16, config: Arc<rustls::ClientConfig>) -> std::io::Result<Tls> {
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
    let name = ServerName::try_from("127.0.0.1").unwrap();
    tokio_rustls::TlsConnector::from(config)
        .connect(name, tcp)
        .await
}

/// The certificate the server on `port` presents.
async fn served_certificate(port: u16, certs: &Certs) -> CertificateDer<'static> {
    let tls = tls_connect(port, certs.client(None)).await.unwrap();
    tls.get_ref().1.peer_certificates().unwrap()[0].clone()
}

/// One Check over TLS; `Err` when the connection or the call fails.
async fn check_over_tls(
    port: u16,
    config: Arc<rustls::ClientConfig>,
    key: &str,
) -> Result<i32, String> {
    use envoy_types::pb::envoy::service::auth::v3::authorization_client::AuthorizationClient;
    let connector = tower::service_fn(move |_: tonic::transport::Uri| {
        let config = config.clone();
        async move {
            let tls = tls_connect(port, config).await?;
            Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(tls))
        }
    });
    let channel = tonic::transport::Endpoint::from_static("http://127.0.0.1")
        .connect_timeout(Duration::from_secs(5))
        .connect_with_connector(connector)
        .await
        .map_err(|e| format!("connect: {e:?}"))?;
    let r = AuthorizationClient::new(channel)
        .check(check_request(key, "/pets"))
        .await
        .map_err(|e| format!("call: {e}"))?;
    Ok(check_status(&r.into_inner()))
}

fn start(extra: &[String]) -> (tempfile::TempDir, Plangate) {
    let (dir, path) = common::plans_dir(config());
    let args: Vec<&str> = extra.iter().map(String::as_str).collect();
    let p = Plangate::start(&path, &args, dir.path().join("plangate.log"));
    (dir, p)
}

/// `plangate serve` with `args` that must refuse to start: its stderr.
fn serve_refused(args: &[&std::ffi::OsStr]) -> String {
    let (_dir, path) = common::plans_dir(config());
    let mut child = Command::new(env!("CARGO_BIN_EXE_plangate"))
        .args(["serve", "--no-watch", "--no-persist", "--config"])
        .arg(&path)
        .args(["--grpc-addr", "127.0.0.1:0", "--admin-addr", "127.0.0.1:0"])
        .args(args)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Refusing takes moments; serving (unready, waiting for a store) would never end.
    let waited = plangate::clock::Stopwatch::start();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if waited.elapsed() > Duration::from_secs(30) {
            let _ = child.kill();
            panic!("plangate kept running with {args:?} instead of refusing to start");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(!status.success(), "started with {args:?}");
    let mut err = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut err).unwrap();
    err
}

#[tokio::test]
async fn grpc_mtls_admits_only_clients_of_the_ca() {
    let certs = Certs::new();
    let (_dir, p) = start(&certs.grpc_mtls_flags());
    // A client of the CA is served: the quota of 2 holds over TLS as over plain text.
    let waited = Stopwatch::start();
    let first = loop {
        match check_over_tls(p.grpc, certs.client(Some("client")), KEY).await {
            Ok(s) => break s,
            Err(e) if waited.elapsed() > Duration::from_secs(20) => panic!("{e}"),
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    };
    assert_eq!(first, 200);
    assert_eq!(
        check_over_tls(p.grpc, certs.client(Some("client")), KEY).await,
        Ok(200)
    );
    assert_eq!(
        check_over_tls(p.grpc, certs.client(Some("client")), KEY).await,
        Ok(429)
    );
    // Refused at the handshake: no client certificate, a certificate of another CA.
    for (who, config) in [
        ("no certificate", certs.client(None)),
        ("another CA", certs.client(Some("stranger"))),
    ] {
        let r = check_over_tls(p.grpc, config, KEY).await;
        assert!(r.is_err(), "{who}: {r:?}");
    }
    // A plain-text client gets nothing.
    let endpoint =
        tonic::transport::Endpoint::from_shared(format!("http://127.0.0.1:{}", p.grpc)).unwrap();
    let plain = async {
        let channel = endpoint.connect().await.map_err(|e| e.to_string())?;
        envoy_types::pb::envoy::service::auth::v3::authorization_client::AuthorizationClient::new(
            channel,
        )
        .check(check_request(KEY, "/pets"))
        .await
        .map_err(|e| e.to_string())
    };
    let plain = tokio::time::timeout(Duration::from_secs(15), plain).await;
    assert!(
        !matches!(plain, Ok(Ok(_))),
        "a plain-text call was answered"
    );
    // Each refusal is counted.
    let failures = p
        .metric("plangate_tls_handshake_failures_total{listener=\"grpc\"}")
        .unwrap();
    assert!(failures >= 3.0, "handshake failures counted: {failures}");
}

/// A renewal: the key and the certificate in `live` replaced by renames (as a Secret volume
/// swaps them) with `server2.*`.
fn renew(live: &Path, certs: &Certs, key: &Path, crt: &Path) {
    for (from, to) in [("server2.key", key), ("server2.crt", crt)] {
        let tmp = live.join("tmp");
        std::fs::copy(certs.path(from), &tmp).unwrap();
        std::fs::rename(&tmp, to).unwrap();
    }
}

/// Waits (20 s at most) until the gRPC listener serves certificate `name`.
async fn served_within_seconds(p: &Plangate, certs: &Certs, name: &str) {
    let waited = Stopwatch::start();
    while served_certificate(p.grpc, certs).await != certs.der(name) {
        assert!(
            waited.elapsed() < Duration::from_secs(20),
            "{name} was not taken"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Waits (20 s at most) until a rejected certificate reload of the gRPC listener is counted.
async fn reload_error_counted(p: &Plangate, what: &str) {
    let waited = Stopwatch::start();
    while p
        .metric("plangate_tls_reloads_total{listener=\"grpc\",result=\"error\"}")
        .unwrap_or(0.0)
        < 1.0
    {
        assert!(waited.elapsed() < Duration::from_secs(20), "{what}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test]
async fn certificates_are_reloaded_without_a_restart_and_a_bad_set_is_refused() {
    let certs = Certs::new();
    // The files plangate reads, replaced as a renewal would.
    let live = tempfile::tempdir().unwrap();
    let (crt, key) = (live.path().join("tls.crt"), live.path().join("tls.key"));
    std::fs::copy(certs.path("server.crt"), &crt).unwrap();
    std::fs::copy(certs.path("server.key"), &key).unwrap();
    let (_dir, p) = start(&[
        "--grpc-tls-cert".into(),
        crt.display().to_string(),
        "--grpc-tls-key".into(),
        key.display().to_string(),
    ]);
    assert_eq!(
        served_certificate(p.grpc, &certs).await,
        certs.der("server.crt")
    );
    // A renewal: both files replaced by renames (as a Secret volume swaps them).
    renew(live.path(), &certs, &key, &crt);
    served_within_seconds(&p, &certs, "server2.crt").await;
    // A Check over a connection made after the renewal works.
    assert_eq!(
        check_over_tls(p.grpc, certs.client(None), KEY).await,
        Ok(200)
    );
    // A broken set (a certificate that is not PEM) is refused; the renewed set stays in force.
    std::fs::write(&crt, "not a certificate").unwrap();
    reload_error_counted(&p, "the broken set was not reported").await;
    assert_eq!(
        served_certificate(p.grpc, &certs).await,
        certs.der("server2.crt")
    );
    let log = std::fs::read_to_string(&p.log).unwrap();
    assert!(
        log.contains("new TLS certificates rejected") && log.contains("tls.crt"),
        "the rejection names the file:\n{log}"
    );
    assert!(
        p.metric("plangate_tls_reloads_total{listener=\"grpc\",result=\"success\"}")
            .is_some_and(|n| n >= 1.0)
    );
}

/// A FIFO (or a hung file system) at a certificate path wedged the reload loop for good
/// (issue 25, item 16): a read is bounded, refused, and the loop keeps going — the renewal
/// after it is taken.
#[tokio::test]
async fn a_fifo_at_the_certificate_path_does_not_stop_reloading() {
    let certs = Certs::new();
    let live = tempfile::tempdir().unwrap();
    let (crt, key) = (live.path().join("tls.crt"), live.path().join("tls.key"));
    std::fs::copy(certs.path("server.crt"), &crt).unwrap();
    std::fs::copy(certs.path("server.key"), &key).unwrap();
    let (_dir, p) = start(&[
        "--grpc-tls-cert".into(),
        crt.display().to_string(),
        "--grpc-tls-key".into(),
        key.display().to_string(),
    ]);
    std::fs::remove_file(&crt).unwrap();
    assert!(
        std::process::Command::new("mkfifo")
            .arg(&crt)
            .status()
            .unwrap()
            .success()
    );
    reload_error_counted(&p, "the FIFO was not refused").await;
    // The certificate in force still serves; then a renewal replaces the FIFO and is taken.
    assert_eq!(
        served_certificate(p.grpc, &certs).await,
        certs.der("server.crt")
    );
    renew(live.path(), &certs, &key, &crt);
    served_within_seconds(&p, &certs, "server2.crt").await;
}

#[tokio::test]
async fn admin_listener_over_tls() {
    let certs = Certs::new();
    let (_dir, p) = start(&[
        "--admin-tls-cert".into(),
        certs.arg("server.crt"),
        "--admin-tls-key".into(),
        certs.arg("server.key"),
    ]);
    // HTTP/1.1 (offered both, the server would pick h2, its first).
    let mut config = (*certs.client(None)).clone();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    let mut tls = tls_connect(p.admin, Arc::new(config)).await.unwrap();
    tls.write_all(b"GET /healthz HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut answer = String::new();
    tls.read_to_string(&mut answer).await.unwrap_or_default();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    // Plain HTTP is not served on a TLS admin port.
    let plain = std::thread::spawn({
        let port = p.admin;
        move || {
            let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
            s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
            std::io::Write::write_all(&mut s, b"GET /healthz HTTP/1.1\r\nhost: x\r\n\r\n").unwrap();
            let mut out = Vec::new();
            let _ = std::io::Read::read_to_end(&mut s, &mut out);
            String::from_utf8_lossy(&out).into_owned()
        }
    })
    .join()
    .unwrap();
    assert!(!plain.contains("200 OK"), "{plain}");
}

#[tokio::test]
async fn rediss_with_a_client_certificate() {
    let certs = Certs::new();
    let tls_port = common::free_port().to_string();
    let redis = RedisServer::start_with(&[
        "--tls-port",
        &tls_port,
        "--tls-cert-file",
        &certs.arg("server.crt"),
        "--tls-key-file",
        &certs.arg("server.key"),
        "--tls-ca-cert-file",
        &certs.arg("ca.crt"),
        "--tls-auth-clients",
        "yes",
    ]);
    let url = format!("rediss://127.0.0.1:{tls_port}");
    let (_dir, p) = start(&[
        "--store".into(),
        url.clone(),
        "--store-timeout-ms".into(),
        "2000".into(),
        "--store-failure".into(),
        "closed".into(),
        "--store-tls-ca".into(),
        certs.arg("ca.crt"),
        "--store-tls-cert".into(),
        certs.arg("client.crt"),
        "--store-tls-key".into(),
        certs.arg("client.key"),
    ]);
    let mut client = common::authz_client(p.grpc).await;
    let mut seen = Vec::new();
    for _ in 0..3 {
        let r = client.check(check_request(KEY, "/pets")).await.unwrap();
        seen.push(check_status(&r.into_inner()));
    }
    // Counted in Redis (failing closed would answer 503): the quota of 2 holds.
    assert_eq!(seen, [200, 200, 429]);
    let keys = redis.command(&["KEYS", "*"]);
    assert!(keys.contains("plangate"), "no counter in Redis: {keys}");
    // Without the client certificate, Redis refuses the connection: plangate does not start,
    // and says why.
    let ca = certs.arg("ca.crt");
    let err = serve_refused(&["--store", &url, "--store-tls-ca", &ca].map(std::ffi::OsStr::new));
    assert!(err.contains("counter store"), "{err}");
}

#[test]
fn envoy_calls_ext_authz_over_mutual_tls() {
    let certs = Certs::new();
    let dir = format!("{}/", certs.dir.path().display());
    let stack = common::Stack::start_custom(
        &config(),
        "ext_authz_tls.yaml",
        &certs.grpc_mtls_flags(),
        &[("/etc/plangate/tls/".into(), dir)],
    );
    let statuses: Vec<u16> = (0..3)
        .map(|_| stack.get("GET", "/pets", &[("x-api-key", KEY)]).status)
        .collect();
    assert_eq!(statuses, [200, 200, 429], "{}", stack.log("envoy.log"));
    assert_eq!(stack.get("GET", "/pets", &[]).status, 403);
    // Envoy's side: its connections to plangate were TLS handshakes it completed.
    let stats = common::http(
        stack.admin,
        "GET",
        "/stats?filter=^cluster.plangate.ssl",
        &[],
    )
    .body;
    let handshakes = stats
        .lines()
        .find_map(|l| l.strip_prefix("cluster.plangate.ssl.handshake: "))
        .and_then(|n| n.trim().parse::<u64>().ok());
    assert!(handshakes.is_some_and(|n| n >= 1), "{stats}");
}

#[test]
fn a_missing_or_bad_certificate_refuses_to_start_naming_the_file() {
    let certs = Certs::new();
    let dir = tempfile::tempdir().unwrap();
    let garbage = dir.path().join("garbage.crt");
    std::fs::write(&garbage, "-----BEGIN CERTIFICATE-----\nnot base64 at all\n").unwrap();
    for (cert, key, expect) in [
        (
            dir.path().join("nope.crt"),
            certs.path("server.key"),
            "nope.crt",
        ),
        (garbage.clone(), certs.path("server.key"), "garbage.crt"),
        // A key that is not the certificate's.
        (
            certs.path("server.crt"),
            certs.path("client.key"),
            "client.key",
        ),
    ] {
        let err = serve_refused(&[
            "--grpc-tls-cert".as_ref(),
            cert.as_os_str(),
            "--grpc-tls-key".as_ref(),
            key.as_os_str(),
        ]);
        assert!(
            err.contains("TLS for the gRPC listener") && err.contains(expect),
            "{expect}: {err}"
        );
    }
}

/// The CLI's commands against an admin listener with TLS, and with mTLS: `health`, `usage`,
/// `explain` and `watch` reach it through the one admin client (`--admin https://…`,
/// `--admin-ca`, `--admin-cert/--admin-key`); without the CA, or without the client certificate
/// under mTLS, they fail, saying why.
#[test]
fn every_admin_command_works_over_tls_and_mtls() {
    let certs = Certs::new();
    for mtls in [false, true] {
        let mut args = vec![
            "--admin-tls-cert".to_owned(),
            certs.arg("server.crt"),
            "--admin-tls-key".to_owned(),
            certs.arg("server.key"),
            "--admin-token".to_owned(),
            "cli-tls-token-0123456789".to_owned(),
        ];
        if mtls {
            args.extend(["--admin-tls-client-ca".to_owned(), certs.arg("ca.crt")]);
        }
        let (_dir, p) = start(&args);
        // A decision, for usage and watch to show.
        let rt = tokio::runtime::Runtime::new().unwrap();
        let decide = || {
            rt.block_on(async {
                let mut c = common::authz_client(p.grpc).await;
                let r = c.check(check_request(KEY, "/pets")).await.unwrap();
                check_status(&r.into_inner())
            })
        };
        assert_eq!(decide(), 200);
        let cli = |extra: &[&str]| {
            let mut c = Command::new(env!("CARGO_BIN_EXE_plangate"));
            c.args(extra)
                .env("PLANGATE_ADMIN", format!("https://localhost:{}", p.admin))
                .env("PLANGATE_ADMIN_CA", certs.path("ca.crt"))
                .env("PLANGATE_ADMIN_TOKEN", "cli-tls-token-0123456789")
                .env_remove("PLANGATE_ADMIN_ADDR");
            if mtls {
                c.env("PLANGATE_ADMIN_CERT", certs.path("client.crt"))
                    .env("PLANGATE_ADMIN_KEY", certs.path("client.key"));
            }
            c
        };
        let run = |extra: &[&str]| {
            let out = cli(extra).output().unwrap();
            (
                out.status.success(),
                String::from_utf8_lossy(&out.stdout).into_owned(),
                String::from_utf8_lossy(&out.stderr).into_owned(),
            )
        };
        let (ok, out, err) = run(&["health", "--ready"]);
        assert!(ok && out.starts_with("ready"), "mtls={mtls}: {out}{err}");
        let today = chrono::DateTime::from_timestamp_nanos(plangate::clock::Clock::now(
            &plangate::clock::SystemClock,
        ))
        .date_naive()
        .to_string();
        let (ok, out, err) = run(&["usage", "--plan", "two", "--start", &today, "--end", &today]);
        assert!(
            ok && out
                .lines()
                .any(|l| l.split_whitespace().next() == Some("k")),
            "usage, mtls={mtls}: {out}{err}"
        );
        let (ok, out, err) = run(&["explain", "--key", KEY, "--path", "/pets"]);
        assert!(
            ok && out.contains("admitted"),
            "explain, mtls={mtls}: {out}{err}"
        );
        // watch: the next decision, as a line.
        let mut watch = cli(&["watch"])
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let stdout = watch.stdout.take().unwrap();
        let first = std::thread::spawn(move || {
            let mut line = String::new();
            std::io::BufRead::read_line(&mut std::io::BufReader::new(stdout), &mut line).ok();
            line
        });
        let mut seen = String::new();
        for _ in 0..50 {
            decide();
            if first.is_finished() {
                seen = first.join().unwrap();
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = watch.kill();
        let _ = watch.wait();
        assert!(seen.contains("\"k\""), "watch, mtls={mtls}: {seen:?}");
        // Without the CA: the certificate is not trusted, and the error says so.
        let (ok, _, err) = run(&["health"]);
        assert!(ok, "{err}");
        let out = cli(&["health"])
            .env_remove("PLANGATE_ADMIN_CA")
            .output()
            .unwrap();
        assert!(!out.status.success());
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.to_lowercase().contains("certificate"), "{err}");
        if mtls {
            // Under mTLS, without a client certificate: refused.
            let out = cli(&["health"])
                .env_remove("PLANGATE_ADMIN_CERT")
                .env_remove("PLANGATE_ADMIN_KEY")
                .output()
                .unwrap();
            assert!(!out.status.success(), "no client certificate, admitted");
        }
    }
}

/// Envoy Gateway's shape (envoy/envoy-gateway/ext_authz.yaml, what it renders for
/// deploy/envoy-gateway/) through a real Envoy, with plangate over mutual TLS: the policy's
/// ext_authz filter disabled in the chain and enabled per route, no context extensions (the API
/// stage comes from the host and base path), the extauth cluster with the BackendTLSPolicy's SNI
/// and CA and the EnvoyProxy's client certificate. Admitted, throttled, over quota, unknown key;
/// a route the policy does not target is not checked.
#[test]
fn envoy_gateway_shaped_ext_authz_over_mutual_tls() {
    const GOOD: &str = "eg-good-key-0123456789abcdef";
    const TIGHT: &str = "eg-tight-key-0123456789abcde";
    const QUOTA: &str = "eg-quota-key-0123456789abcde";
    let certs = Certs::new();
    let dir = format!("{}/", certs.dir.path().display());
    let plans = common::petstore(
        r#"domain_names:
  api.example.com:
    base_path_mappings:
      - { base_path: v1, api: petstore, stage: prod }
      - { base_path: "(none)", api: petstore, stage: beta }"#,
        &[("prod", "{}"), ("beta", "{}")],
        &[
            (
                "gold",
                "api_stages: [{ api: petstore, stage: prod }, { api: petstore, stage: beta }]",
            ),
            ("tight", "throttle: { rate: 0.01, burst: 2 }"),
            ("small", "quota: { limit: 3, period: DAY }"),
        ],
        &[
            ("good-1", GOOD, "usage_plans: [gold]"),
            ("tight-1", TIGHT, "usage_plans: [tight]"),
            ("quota-1", QUOTA, "usage_plans: [small]"),
        ],
    );
    let stack = common::Stack::start_custom(
        &plans,
        "envoy-gateway/ext_authz.yaml",
        &certs.grpc_mtls_flags(),
        &[("/etc/plangate/tls/".into(), dir)],
    );
    let get = |host: &str, path: &str, key: Option<&str>| {
        let mut headers = vec![("host", host)];
        if let Some(k) = key {
            headers.push(("x-api-key", k));
        }
        stack.get("GET", path, &headers).status
    };
    let api = "api.example.com";
    // Admitted, on both mappings (v1 → prod, the rest → beta).
    assert_eq!(
        get(api, "/v1/pets", Some(GOOD)),
        200,
        "{}",
        stack.log("envoy.log")
    );
    assert_eq!(get(api, "/pets", Some(GOOD)), 200);
    // Throttled: a burst of 2.
    let tight: Vec<u16> = (0..3).map(|_| get(api, "/v1/pets", Some(TIGHT))).collect();
    assert_eq!(tight, [200, 200, 429]);
    // Over quota: 3 a day.
    let quota: Vec<u16> = (0..4).map(|_| get(api, "/v1/pets", Some(QUOTA))).collect();
    assert_eq!(quota, [200, 200, 200, 429]);
    // An unknown key, and none: 403.
    assert_eq!(
        get(api, "/v1/pets", Some("eg-unknown-key-0123456789ab")),
        403
    );
    assert_eq!(get(api, "/v1/pets", None), 403);
    // A route of another HTTPRoute, which the policy does not target: no Check.
    assert_eq!(get("status.example.com", "/pets", None), 200);
    // Every Check went over TLS that Envoy completed with plangate's certificate.
    let stats = common::http(stack.admin, "GET", "/stats?filter=securitypolicy", &[]).body;
    let handshakes = stats
        .lines()
        .find(|l| l.contains("extauth/0.ssl.handshake:"))
        .and_then(|l| l.rsplit(": ").next())
        .and_then(|n| n.trim().parse::<u64>().ok());
    assert!(handshakes.is_some_and(|n| n >= 1), "{stats}");
}
