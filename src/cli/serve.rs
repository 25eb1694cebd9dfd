//! `plangate serve`: flags → [`ServeOptions`], then the library's server until SIGTERM/SIGINT.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use plangate::engine::{DEFAULT_USAGE_RETENTION_DAYS, FailurePolicy};
use plangate::grpc::rls::{DEFAULT_MAX_DESCRIPTOR_ENTRIES, DEFAULT_MAX_DESCRIPTORS};
use plangate::server::{self, DEFAULT_MAX_REQUEST_BYTES, RequestLimits, ServeError, ServeOptions};
use plangate::store::{RedisOptions, RedisTls, SharedBuckets, StoreOptions};
use plangate::transport::TlsFiles;

use super::error::CliError;
use super::runtime;

/// Arguments of `plangate serve`. Every flag can also be set by its `PLANGATE_*` environment
/// variable (shown in `--help`); a flag on the command line wins.
#[derive(clap::Args)]
pub struct Args {
    #[arg(long, env = "PLANGATE_CONFIG")]
    config: PathBuf,
    /// gRPC listen address.
    #[arg(long, env = "PLANGATE_GRPC_ADDR", default_value = "0.0.0.0:50051")]
    grpc_addr: SocketAddr,
    /// Admin HTTP listen address (`/healthz`, `/readyz`, `/metrics`, `/v1/*`).
    #[arg(long, env = "PLANGATE_ADMIN_ADDR", default_value = "127.0.0.1:9090")]
    admin_addr: SocketAddr,
    /// Serve the consumer usage page on this address (off when not set): API consumers
    /// present their key and see their own plans, remaining quota and last 30 days of usage.
    /// Plain HTTP: put it behind a TLS-terminating proxy or ingress.
    #[arg(long, env = "PLANGATE_CONSUMER_ADDR")]
    consumer_addr: Option<SocketAddr>,
    /// Bearer token for the admin `/v1/*` endpoints (or PLANGATE_ADMIN_TOKEN).
    #[arg(long, env = "PLANGATE_ADMIN_TOKEN", hide_env_values = true)]
    admin_token: Option<String>,
    /// Serve the admin `/v1/*` endpoints and the management API without a token. Without this
    /// flag plangate refuses to start with an empty token, or with no token on an admin
    /// address other than loopback.
    #[arg(long, env = "PLANGATE_ADMIN_UNAUTHENTICATED")]
    admin_unauthenticated: bool,
    /// Access keys AWS clients (the AWS CLI, boto3) sign the REST control plane's calls with: a
    /// CSV file with the header `access_key_id,secret_access_key,role` (role `read` or `admin`),
    /// read again when it changes.
    #[arg(long, env = "PLANGATE_AWS_CREDENTIALS")]
    aws_credentials: Option<std::path::PathBuf>,
    /// The most WatchDecisions streams (`plangate watch`) served at once; more are refused
    /// with RESOURCE_EXHAUSTED. Each costs every decision a copy.
    #[arg(long, env = "PLANGATE_MAX_WATCHERS", default_value_t = plangate::management::DEFAULT_MAX_WATCHERS)]
    max_watchers: usize,
    /// Do not watch the configuration files (reload on SIGHUP or POST /v1/reload only).
    #[arg(long, env = "PLANGATE_NO_WATCH")]
    no_watch: bool,
    /// Seconds file events settle before a reload.
    #[arg(long, env = "PLANGATE_WATCH_DEBOUNCE", default_value_t = 1.0)]
    watch_debounce: f64,
    /// Where counters live: `memory` (default), `redis://host:port[/db]` to share them
    /// between replicas, or a Redis Cluster: `redis-cluster://host:port,host:port,…` (`rediss…`
    /// for TLS). A URL with a password is better given as PLANGATE_STORE, which keeps it out of
    /// `ps`.
    #[arg(
        long,
        env = "PLANGATE_STORE",
        hide_env_values = true,
        default_value = "memory"
    )]
    store: String,
    /// Read the --store value from this file (e.g. a mounted Secret holding a Redis URL with its
    /// password), instead of the command line or the environment.
    #[arg(long, env = "PLANGATE_STORE_FILE", conflicts_with = "store")]
    store_file: Option<PathBuf>,
    /// Redis key prefix (and Cluster hash tag).
    #[arg(long, env = "PLANGATE_STORE_PREFIX", default_value = "plangate")]
    store_prefix: String,
    /// Redis: how the shared buckets (account, stage methods) are kept — `exact` (in each
    /// decision's script; one node only) or `leased` (batches of tokens spent locally; never
    /// more admitted than the bucket allows, possibly fewer). A cluster always leases.
    #[arg(
        long,
        env = "PLANGATE_STORE_SHARED",
        value_enum,
        default_value = "exact"
    )]
    store_shared: StoreShared,
    /// Redis: how many plangate replicas share the store (sizes the leases of shared buckets:
    /// a batch is at most burst / (2 × replicas)).
    #[arg(long, env = "PLANGATE_STORE_REPLICAS", default_value_t = 2)]
    store_replicas: u32,
    /// Bound on one Redis operation, in milliseconds.
    #[arg(long, env = "PLANGATE_STORE_TIMEOUT_MS", default_value_t = 50)]
    store_timeout_ms: u64,
    /// When the store fails: `open` admits without limits, `closed` refuses with 503.
    #[arg(
        long,
        env = "PLANGATE_STORE_FAILURE",
        value_enum,
        default_value = "open"
    )]
    store_failure: StoreFailure,
    /// Shadow mode for every API and plan: requests are decided and charged as if enforced,
    /// refusals are logged and counted (`shadow="true"`) and let through, with
    /// `x-plangate-shadow-outcome` to the upstream. Per stage or plan: `enforce: false`.
    #[arg(long, env = "PLANGATE_SHADOW")]
    shadow: bool,
    /// Log this share of admitted decisions at info (0 to 1; `0.01` is one in a hundred),
    /// besides every refusal. `PLANGATE_LOG=plangate=debug` logs them all.
    #[arg(long, env = "PLANGATE_LOG_ADMITTED_SAMPLE", default_value_t = 0.0)]
    log_admitted_sample: f64,
    /// Seconds one configuration reload may take; a slower one is abandoned and the
    /// configuration in force is kept.
    #[arg(long, env = "PLANGATE_RELOAD_TIMEOUT", default_value = "60")]
    reload_timeout: f64,
    /// Seconds the first configuration load may take; a slower one refuses to start (a hung
    /// file system, a pathological file).
    #[arg(long, env = "PLANGATE_START_TIMEOUT", default_value = "300")]
    start_timeout: f64,
    /// Export OpenTelemetry traces over OTLP/gRPC to this collector (`http://otel:4317`): one
    /// span per decision, continuing the caller's `traceparent`. Off when not given.
    #[arg(long, env = "PLANGATE_OTLP_ENDPOINT")]
    otlp_endpoint: Option<String>,
    /// Memory store: where quota counters and daily usage are persisted.
    #[arg(long, env = "PLANGATE_DATA_DIR", default_value = "data")]
    data_dir: PathBuf,
    /// Memory store: if the counters file cannot be read, move it aside and start with empty
    /// counters (loudly), instead of refusing to start.
    #[arg(long, env = "PLANGATE_DATA_RECOVER")]
    data_recover: bool,
    /// Memory store: keep counters in memory only (a restart forgets them).
    #[arg(long, env = "PLANGATE_NO_PERSIST")]
    no_persist: bool,
    /// Seconds between writes of the persisted counters: the most a crash can lose.
    #[arg(long, env = "PLANGATE_FLUSH_INTERVAL", default_value_t = 1.0)]
    flush_interval: f64,
    /// Days of daily usage kept for usage reports.
    #[arg(long, env = "PLANGATE_USAGE_RETENTION_DAYS", default_value_t = DEFAULT_USAGE_RETENTION_DAYS)]
    usage_retention_days: u32,
    /// Largest gRPC request accepted on the data plane, in bytes (refused before decoding).
    /// Envoy's request headers are at most 60 KiB by default; raise it if Envoy sends request
    /// bodies to ext_authz.
    #[arg(long, env = "PLANGATE_MAX_REQUEST_BYTES", default_value_t = DEFAULT_MAX_REQUEST_BYTES)]
    max_request_bytes: usize,
    /// The most data-plane (gRPC) connections at once; fewer when the process may not open that
    /// many files. At the bound, new connections wait in the kernel's backlog.
    #[arg(long, env = "PLANGATE_MAX_CONNECTIONS", default_value_t = server::DEFAULT_MAX_CONNECTIONS)]
    max_connections: usize,
    /// The most calls at once on one data-plane connection (HTTP/2
    /// SETTINGS_MAX_CONCURRENT_STREAMS); Envoy opens more connections when one is full.
    #[arg(long, env = "PLANGATE_MAX_CONCURRENT_STREAMS", default_value_t = server::DEFAULT_MAX_CONCURRENT_STREAMS)]
    max_concurrent_streams: u32,
    /// The longest one data-plane call may take, in seconds (less when Envoy's `grpc-timeout`
    /// says so): then it is answered CANCELLED ("Timeout expired") and its work dropped.
    #[arg(long, env = "PLANGATE_CALL_TIMEOUT", default_value_t = server::DEFAULT_CALL_TIMEOUT.as_secs_f64())]
    call_timeout: f64,
    /// Most descriptors in one RLS request.
    #[arg(long, env = "PLANGATE_MAX_DESCRIPTORS", default_value_t = DEFAULT_MAX_DESCRIPTORS)]
    max_descriptors: usize,
    /// Most entries in one RLS descriptor.
    #[arg(long, env = "PLANGATE_MAX_DESCRIPTOR_ENTRIES", default_value_t = DEFAULT_MAX_DESCRIPTOR_ENTRIES)]
    max_descriptor_entries: usize,
    /// Seconds to keep serving after SIGTERM/SIGINT while gRPC health and /readyz already say
    /// not ready, so that load balancers stop sending requests first (e.g. 5 on Kubernetes).
    #[arg(long, env = "PLANGATE_DRAIN_DELAY", default_value_t = 0.0)]
    drain_delay: f64,
    /// Seconds in-flight calls get to finish after SIGTERM/SIGINT (after the drain).
    #[arg(long, env = "PLANGATE_SHUTDOWN_GRACE", default_value_t = 5.0)]
    shutdown_grace: f64,
    /// TLS for the gRPC listener: the certificate chain (PEM). Files are read again every 2 s
    /// and a changed, valid set is used for new connections (no restart).
    #[arg(long, env = "PLANGATE_GRPC_TLS_CERT", requires = "grpc_tls_key")]
    grpc_tls_cert: Option<PathBuf>,
    /// The private key (PEM) of --grpc-tls-cert.
    #[arg(long, env = "PLANGATE_GRPC_TLS_KEY", requires = "grpc_tls_cert")]
    grpc_tls_key: Option<PathBuf>,
    /// mTLS on the gRPC listener: clients must present a certificate issued by a CA in this
    /// PEM file.
    #[arg(long, env = "PLANGATE_GRPC_TLS_CLIENT_CA", requires = "grpc_tls_cert")]
    grpc_tls_client_ca: Option<PathBuf>,
    /// TLS for the admin listener (HTTP and the management API): the certificate chain (PEM).
    #[arg(long, env = "PLANGATE_ADMIN_TLS_CERT", requires = "admin_tls_key")]
    admin_tls_cert: Option<PathBuf>,
    /// The private key (PEM) of --admin-tls-cert.
    #[arg(long, env = "PLANGATE_ADMIN_TLS_KEY", requires = "admin_tls_cert")]
    admin_tls_key: Option<PathBuf>,
    /// mTLS on the admin listener: clients must present a certificate issued by a CA in this
    /// PEM file.
    #[arg(
        long,
        env = "PLANGATE_ADMIN_TLS_CLIENT_CA",
        requires = "admin_tls_cert"
    )]
    admin_tls_client_ca: Option<PathBuf>,
    /// `rediss://` only: the CA certificates (PEM) that verify Redis's certificate, instead of
    /// the system's roots.
    #[arg(long, env = "PLANGATE_STORE_TLS_CA")]
    store_tls_ca: Option<PathBuf>,
    /// `rediss://` only: a client certificate (PEM) for Redis servers that ask for one
    /// (`tls-auth-clients yes`).
    #[arg(long, env = "PLANGATE_STORE_TLS_CERT", requires = "store_tls_key")]
    store_tls_cert: Option<PathBuf>,
    /// The private key (PEM) of --store-tls-cert.
    #[arg(long, env = "PLANGATE_STORE_TLS_KEY", requires = "store_tls_cert")]
    store_tls_key: Option<PathBuf>,
}

fn tls_files(cert: Option<PathBuf>, key: Option<PathBuf>, ca: Option<PathBuf>) -> Option<TlsFiles> {
    Some(TlsFiles {
        cert: cert?,
        key: key?,
        client_ca: ca,
    })
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum StoreShared {
    Exact,
    Leased,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum StoreFailure {
    Open,
    Closed,
}

/// Runs `plangate serve`.
/// The counter store the flags name (`--store` or `--store-file`, with the `--store-*` flags).
fn store_options(a: &Args) -> Result<StoreOptions, CliError> {
    let store_value = match &a.store_file {
        Some(path) => std::fs::read_to_string(path)
            .map_err(|e| CliError::Flag {
                flag: "--store-file",
                reason: format!("{}: {e}", path.display()),
            })?
            .trim()
            .to_owned(),
        None => a.store.clone(),
    };
    if store_value.to_ascii_lowercase().contains("replace-me") {
        return Err(CliError::Flag {
            flag: "--store",
            reason: "the store URL is the example's placeholder (`replace-me…`): put your Redis \
                     Cluster's URL there, e.g. `redis-cluster://:PASSWORD@host1:6379,host2:6379` \
                     (on Kubernetes, the `url` of the Secret plangate-store)"
                .to_owned(),
        });
    }
    let store = StoreOptions::parse(
        &store_value,
        (!a.no_persist).then_some(a.data_dir.clone()),
        &a.store_prefix,
        std::time::Duration::from_millis(a.store_timeout_ms),
    )
    .map_err(|e| CliError::Flag {
        flag: "--store",
        reason: e.message().to_owned(),
    })?;
    let store_tls = RedisTls {
        ca: a.store_tls_ca.clone(),
        cert: a.store_tls_cert.clone(),
        key: a.store_tls_key.clone(),
    };
    Ok(match store {
        StoreOptions::Memory { .. } if store_tls.is_set() => {
            return Err(CliError::Flag {
                flag: "--store-tls-ca",
                reason: "the --store-tls-* files are for a rediss:// store".into(),
            });
        }
        StoreOptions::Memory { data_dir, .. } => StoreOptions::Memory {
            data_dir,
            recover: a.data_recover,
        },
        StoreOptions::Redis(r) => StoreOptions::Redis(RedisOptions {
            tls: store_tls,
            shared: match a.store_shared {
                StoreShared::Exact => SharedBuckets::Exact,
                StoreShared::Leased => SharedBuckets::Leased,
            },
            replicas: a.store_replicas.max(1),
            ..r
        }),
    })
}

pub fn run(a: Args) -> Result<ExitCode, CliError> {
    let store = store_options(&a)?;
    let opts = ServeOptions {
        config: a.config,
        grpc_addr: a.grpc_addr,
        admin_addr: a.admin_addr,
        admin_token: a.admin_token,
        admin_unauthenticated: a.admin_unauthenticated,
        aws_credentials: a.aws_credentials,
        max_watchers: a.max_watchers,
        watch: !a.no_watch,
        watch_debounce: runtime::seconds("--watch-debounce", a.watch_debounce)?,
        store,
        shadow: a.shadow,
        reload_timeout: runtime::seconds("--reload-timeout", a.reload_timeout)?,
        start_timeout: runtime::seconds("--start-timeout", a.start_timeout)?,
        otlp_endpoint: a.otlp_endpoint.filter(|e| !e.is_empty()),
        log_admitted_sample: if (0.0..=1.0).contains(&a.log_admitted_sample) {
            a.log_admitted_sample
        } else {
            return Err(CliError::Flag {
                flag: "--log-admitted-sample",
                reason: format!("{} is not a share from 0 to 1", a.log_admitted_sample),
            });
        },
        store_failure: match a.store_failure {
            StoreFailure::Open => FailurePolicy::Open,
            StoreFailure::Closed => FailurePolicy::Closed,
        },
        flush_interval: runtime::seconds("--flush-interval", a.flush_interval)?,
        usage_retention_days: a.usage_retention_days,
        limits: RequestLimits {
            max_connections: a.max_connections.max(1),
            max_concurrent_streams: a.max_concurrent_streams.max(1),
            max_request_bytes: a.max_request_bytes,
            max_descriptors: a.max_descriptors,
            max_descriptor_entries: a.max_descriptor_entries,
            call_timeout: runtime::seconds("--call-timeout", a.call_timeout)?,
        },
        shutdown_grace: runtime::seconds("--shutdown-grace", a.shutdown_grace)?,
        drain_delay: runtime::seconds("--drain-delay", a.drain_delay)?,
        grpc_tls: tls_files(a.grpc_tls_cert, a.grpc_tls_key, a.grpc_tls_client_ca),
        admin_tls: tls_files(a.admin_tls_cert, a.admin_tls_key, a.admin_tls_client_ca),
        consumer_addr: a.consumer_addr,
    };
    let rt = runtime::multi_thread()?;
    let served = rt.block_on(server::serve(opts));
    // A configuration load abandoned past its budget may still be blocked in a read (a hung
    // file system, a FIFO): the stop does not wait for it.
    rt.shutdown_timeout(std::time::Duration::from_millis(200));
    match served {
        Ok(()) => Ok(ExitCode::SUCCESS),
        Err(ServeError::Config(errors)) => {
            eprintln!("{errors}");
            Ok(ExitCode::FAILURE)
        }
        Err(e) => Err(e.into()),
    }
}
