//! Reloading the configuration without a restart: on a change of the files (watched), on SIGHUP,
//! and on `POST /v1/reload`.
//!
//! A reload compiles the new snapshot on a blocking thread (never on the request path) and swaps
//! it in whole; requests in flight finish on the snapshot they started with. Counters live in the
//! store, not the snapshot, so they survive. A file with errors keeps the old snapshot serving.
//!
//! Watching: the *directories* of the config and key files are watched (editors and Kubernetes
//! replace files rather than write them: a ConfigMap update swaps the `..data` symlink). Events
//! are debounced, then a fingerprint of the files' content is compared with the last load's, so
//! only a real change reloads. Any reload whose content equals the configuration in force is
//! `Unchanged` and keeps its generation: generations count changes, and replicas serving the same
//! files export the same `plangate_config_fingerprint`.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use notify::{RecursiveMode, Watcher};
use parking_lot::Mutex;
use sha2::{Digest, Sha256};

use crate::clock::{Clock, SystemClock};
use crate::config::{self, Compiled, ConfigErrors};
use crate::engine::Engine;
use crate::metrics::Metrics;

/// Why a reload did not put a new configuration in force. The configuration in force keeps
/// serving in every case.
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    /// The files do not make a valid configuration: every error, with its place.
    #[error("the configuration was rejected: {0}")]
    Rejected(ConfigErrors),
    /// A load abandoned past its time budget has not ended yet.
    #[error(
        "a load abandoned past --reload-timeout is still running (a hung file system?); no other load starts until it ends, and the configuration in force is kept"
    )]
    StillRunning,
    /// Loading took longer than the time budget (`--reload-timeout`).
    #[error(
        "loading took longer than {0:?} (--reload-timeout); the configuration in force is kept"
    )]
    TimedOut(Duration),
    /// The loading task panicked or was cancelled.
    #[error("the reload task failed: {0}")]
    TaskFailed(#[source] tokio::task::JoinError),
    /// The counter store did not answer what the new configuration needs (quota offsets' initial
    /// periods).
    #[error(
        "reading the initial periods of quota offsets from the counter store failed: {0}; the configuration in force is kept"
    )]
    Store(#[source] crate::store::StoreError),
}

impl ReloadError {
    /// One line per problem: each configuration error, or the one reason.
    pub fn messages(&self) -> Vec<String> {
        match self {
            ReloadError::Rejected(errors) => errors.0.iter().map(|e| e.to_string()).collect(),
            other => vec![other.to_string()],
        }
    }
}

/// SHA-256 over the content of each source file, in load order. Paths are left out: a
/// Kubernetes ConfigMap mount resolves to a per-pod timestamped directory, and replicas serving
/// the same content must agree.
pub type Fingerprint = [u8; 32];

/// A configuration loaded from its file, with the fingerprint of the files it was built from.
#[derive(Debug)]
pub struct Loaded {
    pub compiled: Compiled,
    pub fingerprint: Fingerprint,
}

/// Loads `path` and fingerprints its sources, in one step. Reads files: call it off the async
/// workers (`spawn_blocking`), as `serve` and reloads do.
pub fn load(path: &Path) -> Result<Loaded, ConfigErrors> {
    let compiled = config::load_file(path)?;
    let fingerprint = fingerprint(&compiled.sources);
    Ok(Loaded {
        compiled,
        fingerprint,
    })
}

/// The default time budget of one reload.
pub const DEFAULT_RELOAD_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(60);

/// Reloads one configuration file into one engine.
pub struct Reloader {
    path: PathBuf,
    engine: Arc<Engine>,
    metrics: Arc<Metrics>,
    /// The most one reload may take.
    timeout: std::time::Duration,
    state: tokio::sync::Mutex<State>,
    watcher: Mutex<Option<notify::RecommendedWatcher>>,
}

/// What a load's blocking task gives back: the sources' fingerprint, and the load unless the
/// fingerprint showed nothing to do.
type LoadTask = tokio::task::JoinHandle<(Fingerprint, Option<Result<Loaded, ConfigErrors>>)>;

struct State {
    /// A load abandoned past its time budget whose thread has not finished: no other load
    /// starts until it has (one load at a time, always).
    abandoned: Option<LoadTask>,
    sources: Vec<PathBuf>,
    /// The files last looked at, loaded or rejected: the watcher's "changed since".
    seen: Fingerprint,
    /// The files the configuration in force was built from.
    serving: Fingerprint,
    watched: Vec<PathBuf>,
}

/// The outcome of a reload.
#[derive(Debug)]
pub enum Reloaded {
    /// The new snapshot is in force.
    Swapped { generation: u64 },
    /// The files are as last looked at (watch), or their content is the configuration in force
    /// (any trigger): nothing swapped, the generation kept.
    Unchanged,
}

impl Reloader {
    /// `sources`: the files the current snapshot was built from; `fingerprint`: theirs when it
    /// was built (see [`load`]). Reads no file.
    pub fn new(
        path: PathBuf,
        engine: Arc<Engine>,
        metrics: Arc<Metrics>,
        sources: Vec<PathBuf>,
        fingerprint: Fingerprint,
    ) -> Self {
        Reloader {
            path,
            engine,
            metrics,
            timeout: DEFAULT_RELOAD_TIMEOUT,
            state: tokio::sync::Mutex::new(State {
                abandoned: None,
                sources,
                seen: fingerprint,
                serving: fingerprint,
                watched: Vec::new(),
            }),
            watcher: Mutex::new(None),
        }
    }

    /// Sets the time budget of one reload (`--reload-timeout`).
    pub fn with_timeout(mut self, timeout: std::time::Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// The fingerprint of the files the configuration in force was built from.
    pub async fn fingerprint(&self) -> Fingerprint {
        self.state.lock().await.serving
    }

    /// Reloads now (SIGHUP, the admin API). `trigger` is for the log.
    pub async fn reload(&self, trigger: &str) -> Result<Reloaded, ReloadError> {
        self.reload_inner(trigger, false).await
    }

    /// Reloads if the files changed since the last load (the watcher).
    pub async fn reload_if_changed(&self) -> Result<Reloaded, ReloadError> {
        self.reload_inner("watch", true).await
    }

    async fn reload_inner(
        &self,
        trigger: &str,
        only_if_changed: bool,
    ) -> Result<Reloaded, ReloadError> {
        let result = self.try_reload(trigger, only_if_changed).await;
        match &result {
            Ok(_) => {}
            Err(ReloadError::Rejected(errors)) => {
                tracing::error!(
                    trigger,
                    errors = errors.0.len(),
                    "configuration rejected; the previous one keeps serving"
                );
                for e in &errors.0 {
                    tracing::error!("{e}");
                }
            }
            Err(e) => tracing::error!(trigger, error = %e, "configuration not reloaded"),
        }
        if result.is_err() {
            self.metrics.reload_failed();
        }
        result
    }

    async fn try_reload(
        &self,
        trigger: &str,
        only_if_changed: bool,
    ) -> Result<Reloaded, ReloadError> {
        // One reload at a time; requests never wait on this lock.
        let mut state = self.state.lock().await;
        // Nor does a load start while an abandoned one still runs: each would hold a whole
        // configuration in memory.
        if state.abandoned.as_ref().is_some_and(|t| !t.is_finished()) {
            return Err(ReloadError::StillRunning);
        }
        state.abandoned = None;
        let sources = state.sources.clone();
        // Files whose content is what was last looked at (watch) or what is in force (any
        // trigger) cost a hash, not a parse.
        let (last, serving) = (state.seen, state.serving);
        let path = self.path.clone();
        // Fingerprint and compile off the async workers: a large key file takes seconds.
        let mut task: LoadTask = tokio::task::spawn_blocking(move || {
            let now_print = fingerprint(&sources);
            if now_print == serving || only_if_changed && now_print == last {
                return (now_print, None);
            }
            (now_print, Some(load(&path)))
        });
        // A time budget: a load that takes longer is abandoned (its thread finishes on its own
        // and its result is dropped), and the configuration in force stays.
        let Ok(joined) = tokio::time::timeout(self.timeout, &mut task).await else {
            state.abandoned = Some(task);
            return Err(ReloadError::TimedOut(self.timeout));
        };
        let (now_print, loaded) = joined.map_err(ReloadError::TaskFailed)?;
        match loaded {
            // The same content as in force (a no-op `POST /v1/reload`, a ConfigMap update that
            // changed nothing): no swap, no new generation.
            None => {
                state.seen = now_print;
                tracing::debug!(trigger, "configuration unchanged");
                Ok(Reloaded::Unchanged)
            }
            Some(Ok(Loaded { fingerprint, .. })) if fingerprint == state.serving => {
                state.seen = fingerprint;
                tracing::debug!(trigger, "configuration unchanged");
                Ok(Reloaded::Unchanged)
            }
            Some(Ok(loaded)) => self.install(&mut state, loaded, trigger).await,
            Some(Err(errors)) => {
                // Remember this version too, so that a watcher does not retry it in a loop.
                state.seen = now_print;
                Err(ReloadError::Rejected(errors))
            }
        }
    }

    /// Puts a loaded configuration in force, as the next generation.
    async fn install(
        &self,
        state: &mut State,
        Loaded {
            compiled,
            fingerprint,
        }: Loaded,
        trigger: &str,
    ) -> Result<Reloaded, ReloadError> {
        for w in &compiled.warnings {
            tracing::warn!("{w}");
        }
        let mut snapshot = compiled.snapshot;
        snapshot.generation = self.engine.snapshot().generation + 1;
        self.engine
            .install(snapshot)
            .await
            .map_err(ReloadError::Store)?;
        // Counted once installed (reloads run one at a time, so this is the new one).
        let snap = self.engine.snapshot();
        let generation = snap.generation;
        self.metrics.reloaded(&snap, &fingerprint, unix_seconds());
        tracing::info!(
            trigger,
            generation,
            api_keys = snap.keys.len(),
            usage_plans = snap.plans.len(),
            "configuration reloaded"
        );
        state.seen = fingerprint;
        state.serving = fingerprint;
        state.sources = compiled.sources;
        self.watch_new_dirs(state);
        Ok(Reloaded::Swapped { generation })
    }

    /// Starts watching the files' directories; changes reload after `debounce`. The watch ends
    /// when the reloader is dropped.
    pub async fn watch(self: &Arc<Self>, debounce: Duration) -> Result<(), notify::Error> {
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<()>();
        let watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
            if event.is_ok_and(|e| completes_a_write(&e.kind)) {
                let _ = tx.send(());
            }
        })?;
        *self.watcher.lock() = Some(watcher);
        {
            let mut state = self.state.lock().await;
            self.watch_new_dirs(&mut state);
        }
        let me = Arc::downgrade(self);
        // The debounce: wait `debounce` after a completed write, then take every event that came
        // meanwhile as one. notify-debouncer-full would add rename stitching and a file-id cache
        // (and a thread); they buy nothing here, since any completed write leads to comparing
        // the files' content, not to interpreting the events.
        tokio::spawn(async move {
            while rx.recv().await.is_some() {
                tokio::time::sleep(debounce).await;
                while rx.try_recv().is_ok() {}
                let Some(reloader) = me.upgrade() else { break };
                // Errors are logged and counted inside.
                let _ = reloader.reload_if_changed().await;
            }
        });
        Ok(())
    }

    fn watch_new_dirs(&self, state: &mut State) {
        let mut guard = self.watcher.lock();
        let Some(watcher) = guard.as_mut() else {
            return;
        };
        for src in &state.sources {
            let dir = config::base_dir(src);
            if state.watched.contains(&dir) {
                continue;
            }
            match watcher.watch(&dir, RecursiveMode::NonRecursive) {
                Ok(()) => {
                    tracing::info!(dir = %dir.display(), "watching for configuration changes");
                    state.watched.push(dir);
                }
                Err(e) => tracing::warn!(dir = %dir.display(), error = %e, "cannot watch"),
            }
        }
    }
}

/// Whether a file event means a file is complete: closed after writing, or moved or renamed into
/// place (editors writing a temporary file, the kubelet swapping a ConfigMap's `..data` link),
/// or deleted. Not every modification: a writer that truncates a file and writes it in pieces
/// would otherwise have its first half loaded (and served) when the debounce ends mid-write.
fn completes_a_write(kind: &notify::EventKind) -> bool {
    use notify::EventKind;
    use notify::event::{AccessKind, AccessMode, ModifyKind};
    match kind {
        EventKind::Access(AccessKind::Close(AccessMode::Write)) => true,
        EventKind::Modify(ModifyKind::Name(_)) | EventKind::Remove(_) => true,
        // A new symbolic link is complete once created (the kubelet's `..data_tmp` link).
        EventKind::Create(notify::event::CreateKind::Other) => true,
        // Backends that cannot say more (not inotify) report plain modifications.
        EventKind::Modify(ModifyKind::Any) | EventKind::Any => !cfg!(target_os = "linux"),
        _ => false,
    }
}

/// SHA-256 over the number of source files and each one's content, in load order (paths are
/// left out, see [`Fingerprint`]): a touch without change is no change. Reads the files.
pub fn fingerprint(sources: &[PathBuf]) -> Fingerprint {
    let mut h = Sha256::new();
    h.update((sources.len() as u64).to_le_bytes());
    for src in sources {
        match std::fs::read(src) {
            Ok(bytes) => {
                h.update([1]);
                h.update((bytes.len() as u64).to_le_bytes());
                h.update(&bytes);
            }
            Err(_) => h.update([0]),
        }
    }
    h.finalize().into()
}

fn unix_seconds() -> f64 {
    SystemClock.now() as f64 / 1e9
}
