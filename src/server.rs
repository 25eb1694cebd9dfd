//! `plangate serve`: the gRPC server (ext_authz + RLS + gRPC health) and the admin listener over
//! one engine; reload on file change, SIGHUP and `POST /v1/reload`; graceful shutdown on SIGTERM
//! and SIGINT (in-flight calls finish, within a grace period).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tonic_health::ServingStatus;

use crate::admin::{self, AdminState};
use crate::catalog::Catalog;
use crate::clock::{Clock, Stopwatch, SystemClock};
use crate::config::ConfigErrors;
use crate::engine::{Engine, FailurePolicy};
use crate::grpc::serve::Direct;
use crate::grpc::{AuthzService, RlsService, Served};
use crate::management;
use crate::metrics::Metrics;
use crate::reload::{self, Reloader};
use crate::store::{self, Store, StoreError, StoreOptions};
use crate::transport::{self, ReloadingTls, TlsError, TlsFiles};

/// What `serve` needs.
#[derive(Debug, Clone)]
pub struct ServeOptions {
    pub config: PathBuf,
    pub grpc_addr: SocketAddr,
    /// Admin HTTP address.
    pub admin_addr: SocketAddr,
    /// Bearer token for the admin `/v1/*` endpoints.
    pub admin_token: Option<String>,
    /// The most WatchDecisions streams at once.
    pub max_watchers: usize,
    /// Serve the admin API without a token although the token is empty or the address is not
    /// loopback (see [`admin_token`]).
    pub admin_unauthenticated: bool,
    /// Access keys AWS clients sign with (`--aws-credentials`), for the REST control plane.
    pub aws_credentials: Option<PathBuf>,
    /// Watch the config and key files and reload on change.
    pub watch: bool,
    /// How long file events settle before a reload.
    pub watch_debounce: Duration,
    /// Where counters live.
    pub store: StoreOptions,
    /// What requests get when the store fails.
    pub store_failure: FailurePolicy,
    /// Shadow mode for everything: refusals are decided, charged as enforced, reported, and
    /// let through.
    pub shadow: bool,
    /// The share of admitted decisions logged at info (0 to 1).
    pub log_admitted_sample: f64,
    /// The most one configuration reload may take.
    pub reload_timeout: Duration,
    /// The most the first configuration load may take.
    pub start_timeout: Duration,
    /// Where to export OpenTelemetry traces (OTLP/gRPC), if anywhere.
    pub otlp_endpoint: Option<String>,
    /// How often persisted counters are written (the most a crash can lose).
    pub flush_interval: Duration,
    /// Days of daily usage kept for reports.
    pub usage_retention_days: u32,
    /// What one data-plane request may carry.
    pub limits: RequestLimits,
    /// After a shutdown signal, how long to keep serving while health and `/readyz` already say
    /// not ready (so that load balancers move away first).
    pub drain_delay: Duration,
    /// After a shutdown signal, how long in-flight calls may take before the remaining
    /// connections are closed. Envoy keeps its HTTP/2 connections open, so without a bound a
    /// graceful stop would never end.
    pub shutdown_grace: Duration,
    /// TLS (and mTLS) for the gRPC listener; plain text when not set.
    pub grpc_tls: Option<TlsFiles>,
    /// TLS (and mTLS) for the admin listener; plain text when not set.
    pub admin_tls: Option<TlsFiles>,
    /// Where the consumer usage page listens (off when not set).
    pub consumer_addr: Option<SocketAddr>,
}

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("configuration rejected:\n{0}")]
    Config(ConfigErrors),
    #[error("--aws-credentials: {0}")]
    Credentials(String),
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("cannot open the counter store: {0}")]
    Store(#[from] StoreError),
    #[error("{what} failed: {source}")]
    Task {
        what: &'static str,
        source: tokio::task::JoinError,
    },
    #[error("cannot watch the configuration: {0}")]
    Watch(#[from] notify::Error),
    #[error("gRPC server failed: {0}")]
    Transport(#[from] tonic::transport::Error),
    #[error("gRPC reflection: {0}")]
    Reflection(#[from] tonic_reflection::server::Error),
    #[error("TLS for the {listener} listener: {source}")]
    Tls {
        listener: &'static str,
        source: TlsError,
    },
    #[error("traces: {0}")]
    Traces(String),
    #[error("admin API: {0}")]
    AdminAuth(String),
    #[error("loading the configuration took longer than {0:?} (--start-timeout)")]
    StartTimeout(Duration),
}

/// The admin token in force, or why plangate must not start: an empty token (an unset Secret
/// key, `PLANGATE_ADMIN_TOKEN=`) would otherwise open the admin API silently, and so would an
/// admin address reachable from other hosts with no token. `--admin-unauthenticated` says so
/// on purpose.
pub fn admin_token(
    token: Option<&str>,
    addr: SocketAddr,
    unauthenticated: bool,
) -> Result<Option<Arc<str>>, ServeError> {
    match token {
        Some(t) if crate::config::is_placeholder(t) => Err(ServeError::AdminAuth(
            "the admin token is the example's placeholder (`replace-me…`): put a long random \
             token in its place (e.g. `openssl rand -hex 32`; on Kubernetes, the `token` of the \
             Secret plangate-admin)"
                .into(),
        )),
        Some(t) if !t.trim().is_empty() => Ok(Some(Arc::from(t))),
        _ if unauthenticated => Ok(None),
        Some(_) => Err(ServeError::AdminAuth(
            "the admin token (--admin-token, PLANGATE_ADMIN_TOKEN) is empty: set a token, or pass \
             --admin-unauthenticated to serve /v1/* and the management API to anyone who reaches \
             the admin address"
                .into(),
        )),
        None if !addr.ip().is_loopback() => Err(ServeError::AdminAuth(format!(
            "the admin address {addr} is reachable from other hosts and no admin token is set: \
             set --admin-token (PLANGATE_ADMIN_TOKEN), listen on loopback, or pass \
             --admin-unauthenticated"
        ))),
        None => Ok(None),
    }
}

/// The gRPC service name of ext_authz, as gRPC health reports it.
pub const AUTHZ_SERVICE: &str = "envoy.service.auth.v3.Authorization";
/// The gRPC service name of RLS.
pub const RLS_SERVICE: &str = "envoy.service.ratelimit.v3.RateLimitService";

async fn bind(addr: SocketAddr) -> Result<tokio::net::TcpListener, ServeError> {
    tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|source| ServeError::Bind { addr, source })
}

/// A listener's TLS files read and checked (off the async workers), if it has any.
async fn load_tls(
    listener: &'static str,
    files: &Option<TlsFiles>,
    alpn: &'static [&'static [u8]],
) -> Result<Option<Arc<ReloadingTls>>, ServeError> {
    let Some(files) = files.clone() else {
        return Ok(None);
    };
    let tls = tokio::task::spawn_blocking(move || ReloadingTls::load(files, alpn))
        .await
        .map_err(|source| ServeError::Task {
            what: "loading TLS certificates",
            source,
        })?
        .map_err(|source| ServeError::Tls { listener, source })?;
    Ok(Some(tls))
}

/// Loads the config and serves until SIGTERM/SIGINT.
pub async fn serve(opts: ServeOptions) -> Result<(), ServeError> {
    let access = admin_access(&opts)?;
    if let Some(endpoint) = &opts.otlp_endpoint {
        crate::traces::init(endpoint).map_err(ServeError::Traces)?;
        tracing::info!(endpoint = %endpoint, "exporting traces over OTLP");
    }
    let metrics = Arc::new(Metrics::new());
    metrics.set_admitted_sample(opts.log_admitted_sample);
    let (snapshot, sources, fingerprint) = first_load(&opts, &metrics).await?;
    // Redis that does not answer at start: serve unready and connect in the background (a
    // Redis restart during a rollout must not crash-loop the new pods). A setting that is wrong
    // (URL, password, version) still refuses to start.
    let (store, deferred): (Arc<dyn Store>, Option<Arc<store::Deferred>>) = match store::open(
        &opts.store,
        SystemClock.now(),
    )
    .await
    {
        Ok(s) => (s, None),
        Err(e)
            if e.kind() == store::StoreErrorKind::Unavailable
                && matches!(opts.store, StoreOptions::Redis(_)) =>
        {
            tracing::error!(
                error = %e,
                "the counter store does not answer: serving unready (decisions by the store failure policy) and connecting in the background"
            );
            let d = Arc::new(store::Deferred::default());
            (d.clone(), Some(d))
        }
        Err(e) => return Err(e.into()),
    };
    let catalog = Arc::new(match deferred {
        // Empty until the store answers; the follower then reads it whole.
        Some(_) => Catalog::new(store.clone()),
        None => Catalog::load(store.clone()).await?,
    });
    tracing::info!(
        keys = catalog.read().keys.len(),
        plans = catalog.read().plans.len(),
        head = catalog.head(),
        "runtime catalog loaded"
    );
    metrics.watch_catalog(catalog.clone());
    let (stop_follow, follow_stop) = tokio::sync::watch::channel(false);
    let follow_task = tokio::spawn(catalog.clone().follow(follow_stop));
    let engine = match deferred {
        // Quota offsets are resolved by the reload made once the store answers.
        Some(_) => Engine::new(snapshot, store.clone(), Arc::new(SystemClock)),
        None => Engine::start(snapshot, store.clone(), Arc::new(SystemClock)).await?,
    };
    let engine = Arc::new(
        engine
            .with_catalog(catalog)
            .with_failure_policy(opts.store_failure)
            .with_usage_retention_days(opts.usage_retention_days)
            .with_shadow(opts.shadow),
    );
    let flush_task = tokio::spawn(flush_every(
        store.clone(),
        metrics.clone(),
        opts.flush_interval,
    ));
    let reloader = Arc::new(
        Reloader::new(
            opts.config.clone(),
            engine.clone(),
            metrics.clone(),
            sources,
            fingerprint,
        )
        .with_timeout(opts.reload_timeout),
    );
    let connect_task =
        deferred.map(|d| tokio::spawn(connect_later(d, opts.store.clone(), reloader.clone())));

    let grpc_tls = load_tls("gRPC", &opts.grpc_tls, &[b"h2"]).await?;
    let admin_tls = load_tls("admin", &opts.admin_tls, &[b"h2", b"http/1.1"]).await?;
    let tls_watch: Vec<_> = [("gRPC", &grpc_tls), ("admin", &admin_tls)]
        .into_iter()
        .filter_map(|(what, tls)| Some(tls.as_ref()?.watch(what, transport::RELOAD_INTERVAL)))
        .collect();
    metrics.watch_tls(grpc_tls.clone(), admin_tls.clone());
    let hup = listen_for_sighup();
    let grpc = bind(opts.grpc_addr).await?;
    let admin_listener = bind(opts.admin_addr).await?;
    let draining = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let management =
        management::ManagementService::new(engine.clone(), metrics.clone(), Some(reloader.clone()))
            .with_max_watchers(opts.max_watchers);
    // One port, two protocols: the HTTP admin API, AWS's REST API, and the gRPC management API
    // (HTTP/2).
    let admin_router = admin::router(AdminState {
        engine: engine.clone(),
        metrics: metrics.clone(),
        reloader: Some(reloader.clone()),
        token: access.token.clone(),
        draining: draining.clone(),
    })
    .merge(management::routes(management, access.token.clone()).await?)
    .merge(crate::control::router(engine.clone(), access.clone()))
    .merge(crate::console::router(crate::console::Console {
        engine: engine.clone(),
        access,
        sessions: Default::default(),
        tls: admin_tls.is_some(),
        metrics: metrics.clone(),
        max_watchers: opts.max_watchers,
        live: Default::default(),
    }))
    .fallback(admin::not_found);
    let admin_task = spawn_admin(
        admin_listener,
        admin_tls,
        admin_router,
        opts.admin_addr,
        "admin",
    )?;
    let consumer_task = match opts.consumer_addr {
        Some(addr) => {
            let listener = bind(addr).await?;
            let router = crate::console::consumer::router(crate::console::consumer::Consumer::new(
                engine.clone(),
            ));
            Some(spawn_admin(listener, None, router, addr, "consumer page")?)
        }
        None => None,
    };
    let hup_task = tokio::spawn(reload_on_sighup(reloader.clone(), hup));
    if opts.watch {
        reloader.watch(opts.watch_debounce).await?;
    }

    let result = run_with(
        engine,
        metrics,
        GrpcListener {
            tcp: grpc,
            tls: grpc_tls,
        },
        shutdown_signal(),
        opts.shutdown_grace,
        opts.limits,
        Drain {
            delay: opts.drain_delay,
            flag: draining,
        },
    )
    .await;
    for task in tls_watch {
        task.abort();
    }
    admin_task.abort();
    if let Some(t) = connect_task {
        t.abort();
    }
    if let Some(t) = consumer_task {
        t.abort();
    }
    hup_task.abort();
    flush_task.abort();
    let _ = stop_follow.send(true);
    follow_task.abort();
    final_flush(&*store, opts.shutdown_grace).await;
    // Spans still buffered are sent (blocking: off the async workers).
    let _ = tokio::task::spawn_blocking(crate::traces::shutdown).await;
    result?;
    tracing::info!("stopped");
    Ok(())
}

/// Connects to the store that did not answer at start, every second until it does; then hands
/// it to `deferred` (decisions, the catalog's follower and `/readyz` use it from then on) and
/// reloads the configuration, which resolves the quota offsets the store records.
async fn connect_later(
    deferred: Arc<store::Deferred>,
    options: StoreOptions,
    reloader: Arc<Reloader>,
) {
    let mut last_error = String::new();
    loop {
        tokio::time::sleep(Duration::from_secs(1)).await;
        match store::open(&options, SystemClock.now()).await {
            Ok(s) => {
                deferred.set(s);
                tracing::info!("the counter store answers: ready");
                if let Err(e) = reloader.reload("store connected").await {
                    tracing::error!(error = %e, "reload after the store answered failed; the configuration in force stays");
                }
                return;
            }
            Err(e) => {
                let text = e.to_string();
                if text != last_error {
                    tracing::warn!(error = %text, "the counter store still does not answer; retrying every second");
                    last_error = text;
                }
            }
        }
    }
}

/// Serves the admin port (HTTP API and the gRPC management API) in a task of its own.
fn spawn_admin(
    admin_listener: tokio::net::TcpListener,
    admin_tls: Option<Arc<ReloadingTls>>,
    admin_router: axum::Router,
    addr: SocketAddr,
    what: &'static str,
) -> Result<tokio::task::JoinHandle<()>, ServeError> {
    // The bound address (with `:0`, the port the system chose).
    let admin_bound = admin_listener.local_addr().unwrap_or(addr);
    tracing::info!(addr = %admin_bound, tls = admin_tls.is_some(), "{what} HTTP listening");
    let admin_listener = transport::Listener::new(admin_listener, admin_tls, admin_connections())
        .map_err(|source| ServeError::Bind { addr, source })?;
    let admin_task = tokio::spawn(async move {
        // The client's address reaches handlers (the console throttles failed sign-ins by it).
        let service = admin_router.into_make_service_with_connect_info::<transport::ClientAddr>();
        if let Err(e) = axum::serve(admin_listener, service).await {
            tracing::error!(error = %e, "{what} listener failed");
        }
    });
    Ok(admin_task)
}

/// Who may use the admin address: the admin token (refused at start when it must be set and is
/// not) and the AWS access keys of `--aws-credentials`.
fn admin_access(opts: &ServeOptions) -> Result<crate::control::Access, ServeError> {
    let credentials = match &opts.aws_credentials {
        Some(path) => Some(Arc::new(
            crate::control::credentials::CredentialsFile::open(path.clone())
                .map_err(ServeError::Credentials)?,
        )),
        None => None,
    };
    let token = admin::AdminToken::new(admin_token(
        opts.admin_token.as_deref(),
        opts.admin_addr,
        opts.admin_unauthenticated,
    )?);
    Ok(crate::control::Access { token, credentials })
}

/// The configuration at start, as generation 1, within `--start-timeout`: its snapshot, source
/// files and their fingerprint.
async fn first_load(
    opts: &ServeOptions,
    metrics: &Metrics,
) -> Result<(crate::snapshot::Snapshot, Vec<PathBuf>, reload::Fingerprint), ServeError> {
    let path = opts.config.clone();
    // The first load has the reload's time budget too: a file that takes longer (a hung file
    // system, a pathological file) is a clear refusal, not a start that never ends.
    let loading = tokio::task::spawn_blocking(move || reload::load(&path));
    let loaded = tokio::time::timeout(opts.start_timeout, loading)
        .await
        .map_err(|_| ServeError::StartTimeout(opts.start_timeout))?
        .map_err(|source| ServeError::Task {
            what: "loading the configuration",
            source,
        })?
        .map_err(ServeError::Config)?;
    let compiled = loaded.compiled;
    for w in &compiled.warnings {
        tracing::warn!("{w}");
    }
    let mut snapshot = compiled.snapshot;
    snapshot.generation = 1;
    tracing::info!(
        config = %opts.config.display(),
        apis = snapshot.apis.len(),
        usage_plans = snapshot.plans.len(),
        api_keys = snapshot.keys.len(),
        "configuration loaded"
    );
    metrics.loaded(
        &snapshot,
        &loaded.fingerprint,
        SystemClock.now() as f64 / 1e9,
    );
    Ok((snapshot, compiled.sources, loaded.fingerprint))
}

/// Graceful stop: everything counted is written before exit — retried (a full disk may have
/// room again) within the shutdown grace.
async fn final_flush(store: &dyn Store, grace: Duration) {
    let final_flush = Stopwatch::start();
    loop {
        match store.flush().await {
            Ok(()) => break,
            Err(e) if final_flush.elapsed() < grace => {
                tracing::warn!(error = %e, "final flush of the counters failed; retrying");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(e) => {
                tracing::error!(
                    error = %e,
                    "final flush of the counters failed within the shutdown grace; counts since the last flush are lost"
                );
                break;
            }
        }
    }
}

/// Writes persisted counters every `interval` (a no-op for stores that need none). A failure
/// (a full disk) keeps the counts in memory; the file is reopened and written whole at the next
/// tick. Logged when it starts failing, every minute while it fails, and when it recovers.
async fn flush_every(store: Arc<dyn Store>, metrics: Arc<Metrics>, interval: Duration) {
    if !store.persists() {
        return;
    }
    let mut tick = tokio::time::interval(interval.max(Duration::from_millis(10)));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut failures = 0u64;
    loop {
        tick.tick().await;
        let now = SystemClock.now();
        match store.flush().await {
            Ok(()) => {
                if metrics.persisted(now) {
                    tracing::info!(failures, "flushing counters works again; nothing was lost");
                    failures = 0;
                }
            }
            Err(e) => {
                failures += 1;
                let first = metrics.persist_failed(now, &e.to_string());
                if first || failures.is_multiple_of(60) {
                    tracing::error!(
                        error = %e,
                        failures,
                        "flushing counters failed; the counts stay in memory and are written when a flush succeeds"
                    );
                }
            }
        }
    }
}

/// Takes SIGHUP over (its default action ends the process) — before any listener is bound, so
/// that a SIGHUP sent once plangate answers is a reload, never an exit.
#[cfg(unix)]
fn listen_for_sighup() -> Option<tokio::signal::unix::Signal> {
    let hup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup());
    if hup.is_err() {
        tracing::warn!("cannot listen for SIGHUP");
    }
    hup.ok()
}

#[cfg(not(unix))]
fn listen_for_sighup() -> Option<()> {
    None
}

#[cfg(unix)]
async fn reload_on_sighup(reloader: Arc<Reloader>, hup: Option<tokio::signal::unix::Signal>) {
    let Some(mut hup) = hup else {
        return;
    };
    while hup.recv().await.is_some() {
        // Errors are logged and counted by the reloader.
        let _ = reloader.reload("sighup").await;
    }
}

#[cfg(not(unix))]
async fn reload_on_sighup(_: Arc<Reloader>, _: Option<()>) {}

/// Serves gRPC on `listener` until `shutdown` completes, then lets in-flight calls finish for
/// at most `grace`.
pub async fn run(
    engine: Arc<Engine>,
    metrics: Arc<Metrics>,
    listener: tokio::net::TcpListener,
    shutdown: impl std::future::Future<Output = ()> + Send,
    grace: Duration,
) -> Result<(), ServeError> {
    run_with(
        engine,
        metrics,
        listener.into(),
        shutdown,
        grace,
        RequestLimits::default(),
        Drain::default(),
    )
    .await
}

/// The first step of a stop: from the shutdown signal, gRPC health answers NOT_SERVING and
/// `flag` is set (`/readyz` answers 503), while requests are still served for `delay`; then the
/// listener closes and in-flight calls get the grace period.
#[derive(Debug, Clone, Default)]
pub struct Drain {
    pub delay: Duration,
    pub flag: Arc<std::sync::atomic::AtomicBool>,
}

/// The gRPC listener: a bound socket, with TLS or not.
pub struct GrpcListener {
    pub tcp: tokio::net::TcpListener,
    pub tls: Option<Arc<ReloadingTls>>,
}

impl From<tokio::net::TcpListener> for GrpcListener {
    fn from(tcp: tokio::net::TcpListener) -> Self {
        GrpcListener { tcp, tls: None }
    }
}

/// The admin listener's connections: at most 256, and a share of the descriptors of its own, so
/// that a flood of the gRPC port leaves `/healthz` and `/metrics` answering (and the other way
/// round).
fn admin_connections() -> transport::Limits {
    transport::Limits::for_descriptors(256, 0.1)
}
/// HTTP/2 flow-control windows of the data plane: what one connection, and one stream, may have
/// sent and not yet read.
const CONNECTION_WINDOW: u32 = 4 * 1024 * 1024;
const STREAM_WINDOW: u32 = 1024 * 1024;
/// The most header bytes one gRPC call may send (its metadata, not the request message).
const MAX_HEADER_LIST: u32 = 64 * 1024;

/// The default bound on data-plane connections (lowered to fit the process's descriptors).
pub const DEFAULT_MAX_CONNECTIONS: usize = 16_384;
/// The default bound on streams at once on one data-plane connection: Envoy opens another
/// connection when one is full.
pub const DEFAULT_MAX_CONCURRENT_STREAMS: u32 = 1_024;

/// Bounds on what one gRPC request to the data plane may carry.
#[derive(Debug, Clone, Copy)]
pub struct RequestLimits {
    /// The most data-plane connections at once (fewer if the process's descriptor limit is
    /// lower): at the bound, new ones wait in the kernel's backlog.
    pub max_connections: usize,
    /// The most streams (calls) at once on one connection, advertised as HTTP/2's
    /// `SETTINGS_MAX_CONCURRENT_STREAMS`.
    pub max_concurrent_streams: u32,
    /// Largest request message, in bytes: refused (OUT_OF_RANGE) from its length prefix, before
    /// decoding. Envoy's default request headers are at most 60 KiB; raise it when Envoy sends
    /// request bodies to ext_authz (`with_request_body`).
    pub max_request_bytes: usize,
    /// Most descriptors in one RLS request, most entries in one descriptor.
    pub max_descriptors: usize,
    pub max_descriptor_entries: usize,
    /// The longest a call may take (or less, when the client's `grpc-timeout` says so): then it
    /// is answered CANCELLED ("Timeout expired") and its work dropped, so a stuck call holds
    /// nothing for long.
    pub call_timeout: Duration,
}

/// The default bound on one data-plane call: far above any decision (a Redis round trip is
/// bounded by `--store-timeout`, 50 ms by default), far below "forever".
pub const DEFAULT_CALL_TIMEOUT: Duration = Duration::from_secs(10);

/// The default request size bound: 256 KiB.
pub const DEFAULT_MAX_REQUEST_BYTES: usize = 256 * 1024;

impl Default for RequestLimits {
    fn default() -> Self {
        RequestLimits {
            max_connections: DEFAULT_MAX_CONNECTIONS,
            max_concurrent_streams: DEFAULT_MAX_CONCURRENT_STREAMS,
            max_request_bytes: DEFAULT_MAX_REQUEST_BYTES,
            max_descriptors: crate::grpc::rls::DEFAULT_MAX_DESCRIPTORS,
            max_descriptor_entries: crate::grpc::rls::DEFAULT_MAX_DESCRIPTOR_ENTRIES,
            call_timeout: DEFAULT_CALL_TIMEOUT,
        }
    }
}

/// [`run`] with explicit request bounds.
pub async fn run_with(
    engine: Arc<Engine>,
    metrics: Arc<Metrics>,
    listener: GrpcListener,
    shutdown: impl std::future::Future<Output = ()> + Send,
    grace: Duration,
    limits: RequestLimits,
    drain: Drain,
) -> Result<(), ServeError> {
    let GrpcListener { tcp: listener, tls } = listener;
    let (health, health_service) = tonic_health::server::health_reporter();
    // The config is loaded before the server starts: SERVING from the first call — unless the
    // store has not answered since start: NOT_SERVING until it does.
    let set_all = |status| {
        let health = health.clone();
        async move {
            for service in ["", AUTHZ_SERVICE, RLS_SERVICE] {
                health.set_service_status(service, status).await;
            }
        }
    };
    if engine.store().connected() {
        set_all(ServingStatus::Serving).await;
    } else {
        set_all(ServingStatus::NotServing).await;
        let engine = engine.clone();
        let flag = drain.flag.clone();
        let serving = set_all(ServingStatus::Serving);
        tokio::spawn(async move {
            while !engine.store().connected() {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            if !flag.load(std::sync::atomic::Ordering::SeqCst) {
                serving.await;
            }
        });
    }
    match listener.local_addr() {
        Ok(addr) => {
            tracing::info!(%addr, tls = tls.is_some(), "gRPC listening (ext_authz, RLS, health)")
        }
        Err(e) => tracing::info!(error = %e, "gRPC listening (ext_authz, RLS, health)"),
    }
    let incoming = transport::incoming(
        listener,
        tls,
        transport::Limits::for_descriptors(limits.max_connections, 0.85),
    );
    let stopping = Arc::new(tokio::sync::Notify::new());
    let signal = {
        let stopping = stopping.clone();
        let health = health.clone();
        async move {
            shutdown.await;
            drain.flag.store(true, std::sync::atomic::Ordering::SeqCst);
            for service in ["", AUTHZ_SERVICE, RLS_SERVICE] {
                health
                    .set_service_status(service, ServingStatus::NotServing)
                    .await;
            }
            if !drain.delay.is_zero() {
                tracing::info!(delay = ?drain.delay, "draining: not ready, still serving");
                tokio::time::sleep(drain.delay).await;
            }
            stopping.notify_one();
        }
    };
    // Reflection lists what has descriptors: gRPC health. (envoy-types ships the Envoy services'
    // generated code but not their descriptors; clients of those know the Envoy protos anyway.)
    let reflection = || {
        tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
    };
    let authz = Served::new(AuthzService::new(engine.clone(), metrics.clone()))
        .max_decoding_message_size(limits.max_request_bytes);
    let rls = Served::new(
        RlsService::new(engine, metrics)
            .with_limits(limits.max_descriptors, limits.max_descriptor_entries),
    )
    .max_decoding_message_size(limits.max_request_bytes);
    let server = tonic::transport::Server::builder()
        // Bounded per connection: streams at once (advertised in SETTINGS and enforced), and
        // the data a connection and a stream may have in flight.
        .max_concurrent_streams(limits.max_concurrent_streams)
        .timeout(limits.call_timeout)
        .initial_connection_window_size(CONNECTION_WINDOW)
        .initial_stream_window_size(STREAM_WINDOW)
        .http2_max_header_list_size(MAX_HEADER_LIST)
        // Check and ShouldRateLimit ahead of the router; their services are added too, for
        // their other (unimplemented) methods.
        .layer(Direct::new(authz.clone(), rls.clone()))
        .add_service(health_service)
        .add_service(reflection().build_v1()?)
        .add_service(reflection().build_v1alpha()?)
        .add_service(authz)
        .add_service(rls)
        .serve_with_incoming_shutdown(incoming, signal);
    tokio::select! {
        r = server => r?,
        _ = async {
            stopping.notified().await;
            tokio::time::sleep(grace).await;
        } => {
            tracing::warn!(grace = ?grace, "grace period over; closing the remaining connections");
        }
    }
    Ok(())
}

/// Completes on SIGTERM or SIGINT.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
    tracing::info!("shutdown signal received; finishing in-flight calls");
}
