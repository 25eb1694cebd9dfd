//! Accepted connections: plain TCP or TLS (optionally mutual), for the gRPC listener and the
//! admin listener alike.
//!
//! TLS uses rustls (with the `ring` provider, the one the Redis client uses too). Certificates
//! are files in PEM; they are read again every [`RELOAD_INTERVAL`] and, when their bytes change
//! and the new set is valid, new connections get the new set: a certificate renewed by
//! cert-manager (a Secret volume's symlink swap) or by hand is picked up without a restart.
//! An invalid new set is logged and the set in force is kept.
//!
//! Handshakes run in their own tasks with a time bound, so a client that connects and says
//! nothing holds nothing but its socket; a failed handshake is logged at debug and counted.

use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use arc_swap::ArcSwap;
use parking_lot::Mutex;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;

/// How often certificate files are read again for changes.
pub const RELOAD_INTERVAL: Duration = Duration::from_secs(2);
/// The most a TLS handshake may take.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// The most a plain-text connection may wait before its first byte (an HTTP/2 preface, an
/// HTTP/1 request line): a client that connects and says nothing holds a descriptor only
/// this long.
pub const FIRST_BYTE_TIMEOUT: Duration = Duration::from_secs(10);
/// The most one reading of the certificate files may take.
pub const CERT_READ_TIMEOUT: Duration = Duration::from_secs(10);

/// The files of a TLS listener.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    /// The certificate chain (PEM), leaf first.
    pub cert: PathBuf,
    /// Its private key (PEM: PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
    /// When set, clients must present a certificate issued by one of these CAs (mTLS).
    pub client_ca: Option<PathBuf>,
}

/// A TLS file set that cannot be used, naming the file.
#[derive(Debug, thiserror::Error)]
#[error("{}: {reason}", path.display())]
pub struct TlsError {
    pub path: PathBuf,
    pub reason: String,
}

fn err(path: &Path, reason: impl std::fmt::Display) -> TlsError {
    TlsError {
        path: path.to_owned(),
        reason: reason.to_string(),
    }
}

/// The largest certificate or key file read (a certificate chain is a few KiB).
const MAX_PEM_BYTES: u64 = 1 << 20;

fn read_pem(path: &Path) -> Result<Vec<u8>, TlsError> {
    use std::io::Read;
    // Only a regular file (through links, as a Secret volume mounts them): opening a FIFO or a
    // device would block the reload for good.
    let meta = std::fs::metadata(path).map_err(|e| err(path, e))?;
    if !meta.is_file() {
        return Err(err(
            path,
            "not a regular file (a FIFO, a device or a directory?)",
        ));
    }
    let file = std::fs::File::open(path).map_err(|e| err(path, e))?;
    let mut bytes = Vec::new();
    file.take(MAX_PEM_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| err(path, e))?;
    if bytes.len() as u64 > MAX_PEM_BYTES {
        return Err(err(path, "larger than 1 MiB: not a PEM file"));
    }
    Ok(bytes)
}

fn certs(path: &Path, pem: &[u8]) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| err(path, format!("not a PEM certificate file: {e}")))?;
    if certs.is_empty() {
        return Err(err(
            path,
            "no certificate (`BEGIN CERTIFICATE`) in the file",
        ));
    }
    Ok(certs)
}

/// The bytes of a file set, to tell whether anything changed.
#[derive(PartialEq, Eq)]
struct Contents {
    cert: Vec<u8>,
    key: Vec<u8>,
    client_ca: Option<Vec<u8>>,
}

impl Contents {
    fn read(files: &TlsFiles) -> Result<Contents, TlsError> {
        Ok(Contents {
            cert: read_pem(&files.cert)?,
            key: read_pem(&files.key)?,
            client_ca: files.client_ca.as_deref().map(read_pem).transpose()?,
        })
    }

    fn server_config(
        &self,
        files: &TlsFiles,
        alpn: &[&[u8]],
    ) -> Result<rustls::ServerConfig, TlsError> {
        let chain = certs(&files.cert, &self.cert)?;
        let key = PrivateKeyDer::from_pem_slice(&self.key)
            .map_err(|e| err(&files.key, format!("no usable private key: {e}")))?;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| err(&files.cert, e))?;
        let builder = match (&files.client_ca, &self.client_ca) {
            (Some(path), Some(pem)) => {
                let mut roots = rustls::RootCertStore::empty();
                for ca in certs(path, pem)? {
                    roots
                        .add(ca)
                        .map_err(|e| err(path, format!("not a usable CA certificate: {e}")))?;
                }
                let verifier =
                    WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                        .build()
                        .map_err(|e| err(path, e))?;
                builder.with_client_cert_verifier(verifier)
            }
            _ => builder.with_no_client_auth(),
        };
        let mut config = builder
            .with_single_cert(chain, key)
            .map_err(|e| err(&files.key, format!("does not match the certificate: {e}")))?;
        config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        Ok(config)
    }
}

/// A TLS server configuration that follows its files.
pub struct ReloadingTls {
    files: TlsFiles,
    alpn: Vec<&'static [u8]>,
    current: ArcSwap<rustls::ServerConfig>,
    contents: Mutex<Contents>,
    /// Certificate sets taken since start, and rejected (kept the old one).
    pub reloads: AtomicU64,
    pub reload_failures: AtomicU64,
    /// Handshakes that failed or timed out.
    pub handshake_failures: AtomicU64,
}

impl std::fmt::Debug for ReloadingTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReloadingTls")
            .field("files", &self.files)
            .finish_non_exhaustive()
    }
}

impl ReloadingTls {
    /// Reads and checks the files; `alpn` is what the listener offers (`h2` for gRPC).
    pub fn load(files: TlsFiles, alpn: &[&'static [u8]]) -> Result<Arc<ReloadingTls>, TlsError> {
        let contents = Contents::read(&files)?;
        let config = contents.server_config(&files, alpn)?;
        Ok(Arc::new(ReloadingTls {
            files,
            alpn: alpn.to_vec(),
            current: ArcSwap::from_pointee(config),
            contents: Mutex::new(contents),
            reloads: AtomicU64::new(0),
            reload_failures: AtomicU64::new(0),
            handshake_failures: AtomicU64::new(0),
        }))
    }

    /// Reads the files again; when they changed and are valid, new connections use them.
    /// `Ok(true)`: a new set is in force; `Ok(false)`: nothing changed; an error: the set in
    /// force is kept.
    pub fn reload_if_changed(&self) -> Result<bool, TlsError> {
        let contents = Contents::read(&self.files)?;
        let mut current = self.contents.lock();
        if *current == contents {
            return Ok(false);
        }
        let config = contents.server_config(&self.files, &self.alpn)?;
        self.current.store(Arc::new(config));
        *current = contents;
        Ok(true)
    }

    /// Reads the files every `interval` until the returned task is aborted. A rejected set is
    /// logged once per distinct error.
    pub fn watch(
        self: &Arc<Self>,
        what: &'static str,
        interval: Duration,
    ) -> tokio::task::JoinHandle<()> {
        let tls = self.clone();
        tokio::spawn(async move {
            let mut last_error = String::new();
            // A read that hangs (a hung file system) is given up on after a bound and the loop
            // goes on; no other read starts until it ends.
            let mut hung: Option<tokio::task::JoinHandle<Result<bool, TlsError>>> = None;
            loop {
                tokio::time::sleep(interval).await;
                if hung.as_ref().is_some_and(|h| !h.is_finished()) {
                    continue;
                }
                let t = tls.clone();
                let mut task = tokio::task::spawn_blocking(move || t.reload_if_changed());
                let Ok(result) = tokio::time::timeout(CERT_READ_TIMEOUT, &mut task).await else {
                    tls.reload_failures.fetch_add(1, Ordering::Relaxed);
                    tracing::error!(listener = what, cert = %tls.files.cert.display(), "reading the TLS files takes longer than {CERT_READ_TIMEOUT:?}; the certificates in force are kept");
                    hung = Some(task);
                    continue;
                };
                hung = None;
                match result {
                    Ok(Ok(true)) => {
                        tls.reloads.fetch_add(1, Ordering::Relaxed);
                        last_error.clear();
                        tracing::info!(listener = what, cert = %tls.files.cert.display(), "TLS certificates reloaded");
                    }
                    Ok(Ok(false)) => last_error.clear(),
                    Ok(Err(e)) => {
                        let e = e.to_string();
                        if e != last_error {
                            tls.reload_failures.fetch_add(1, Ordering::Relaxed);
                            tracing::error!(listener = what, error = %e, "new TLS certificates rejected; the ones in force are kept");
                            last_error = e;
                        }
                    }
                    Err(e) => {
                        tracing::error!(listener = what, error = %e, "TLS reload task failed")
                    }
                }
            }
        })
    }

    fn acceptor(&self) -> tokio_rustls::TlsAcceptor {
        tokio_rustls::TlsAcceptor::from(self.current.load_full())
    }
}

/// An accepted connection: TCP with Nagle's algorithm off, maybe under TLS. Declines vectored
/// writes (see [`Conn::is_write_vectored`]). Holds its place among the listener's connections
/// (see [`Limits`]) until dropped.
#[derive(Debug)]
pub struct Conn {
    io: Io,
    _place: tokio::sync::OwnedSemaphorePermit,
}

#[derive(Debug)]
enum Io {
    Plain(TcpStream),
    Tls(Box<tokio_rustls::server::TlsStream<TcpStream>>),
}

/// Bounds on a listener's connections.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// The most connections open at once; at the bound, no more are accepted (they wait in the
    /// kernel's backlog) until one closes.
    pub max_connections: usize,
}

impl Limits {
    /// `max` connections, or fewer when the process may not open that many descriptors (the
    /// soft `RLIMIT_NOFILE` less a reserve for files, Redis and the other listener).
    pub fn for_descriptors(max: usize, share: f64) -> Limits {
        let open_files = std::fs::read_to_string("/proc/self/limits")
            .ok()
            .and_then(|l| {
                l.lines()
                    .find(|l| l.starts_with("Max open files"))
                    .and_then(|l| l.split_whitespace().nth(3)?.parse::<usize>().ok())
            });
        let max = match open_files {
            Some(n) => max.min(((n.saturating_sub(128)) as f64 * share) as usize),
            None => max,
        };
        Limits {
            max_connections: max.max(1),
        }
    }
}

impl Conn {
    fn tcp(&self) -> &TcpStream {
        match &self.io {
            Io::Plain(s) => s,
            Io::Tls(s) => s.get_ref().0,
        }
    }
}

impl AsyncRead for Conn {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        match &mut self.get_mut().io {
            Io::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Conn {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        match &mut self.get_mut().io {
            Io::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match &mut self.get_mut().io {
            Io::Plain(s) => Pin::new(s).poll_flush(cx),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match &mut self.get_mut().io {
            Io::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }

    /// Why not: h2 copies a DATA frame into its write buffer only when the payload is at most
    /// 256 bytes on a vectored writer (1,024 bytes otherwise); a larger one is chained and must
    /// be flushed before the next frame can be buffered. plangate's answers are 300–600 bytes,
    /// so on a plain `TcpStream` every answer took two `writev` calls (headers + data, then the
    /// trailers), and on loopback each send also pays the receiver's TCP work: measured 2.0
    /// system calls per Check against the empty handler's 0.95 (docs/benchmarks.md). Declining
    /// vectored I/O costs one copy of a few hundred bytes and saves a system call per answer.
    fn is_write_vectored(&self) -> bool {
        false
    }
}

impl tonic::transport::server::Connected for Conn {
    type ConnectInfo = tonic::transport::server::TcpConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.tcp().connect_info()
    }
}

/// Accepts connections on `listener` (TLS handshakes done, each in its own task) until the
/// receiver is dropped, at most `limits.max_connections` open at once. A plain connection is
/// handed on once its first byte arrives, within [`FIRST_BYTE_TIMEOUT`] (a TLS one once its
/// handshake is done, within [`HANDSHAKE_TIMEOUT`]): a silent client is closed. Errors of
/// `accept` (out of file descriptors) are logged and retried after a pause; they never end the
/// listener.
pub fn accept(
    listener: TcpListener,
    tls: Option<Arc<ReloadingTls>>,
    limits: Limits,
) -> mpsc::Receiver<Conn> {
    let (tx, rx) = mpsc::channel(64);
    let places = Arc::new(tokio::sync::Semaphore::new(limits.max_connections));
    // Connections still waiting for their first byte (or handshake), oldest first. They may hold
    // a quarter of the places: a new one past that closes the oldest, so silent clients cannot
    // keep the places from clients that speak at once (a health probe, a new Envoy).
    let max_pending = (limits.max_connections / 4).max(1);
    // Owned by the accept loop alone: (the task, whether it is past its first byte).
    let mut pending: std::collections::VecDeque<(
        tokio::task::AbortHandle,
        Arc<std::sync::atomic::AtomicBool>,
    )> = std::collections::VecDeque::new();
    tokio::spawn(async move {
        loop {
            // A place first: at the bound, connections wait in the backlog, not in descriptors.
            let place = tokio::select! {
                p = places.clone().acquire_owned() => match p {
                    Ok(p) => p,
                    Err(_) => return,
                },
                () = tx.closed() => return,
            };
            let stream = tokio::select! {
                accepted = listener.accept() => match accepted {
                    Ok((stream, _)) => stream,
                    Err(e) => {
                        tracing::warn!(error = %e, "accepting a connection failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                },
                () = tx.closed() => return,
            };
            let _ = stream.set_nodelay(true);
            let (tls, tx) = (tls.clone(), tx.clone());
            let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
            let spoke = done.clone();
            let task = tokio::spawn(async move {
                // Off the pending list however this ends.
                let _off = Off(spoke);
                let peer = stream.peer_addr().ok();
                let io = match &tls {
                    None => {
                        // A byte really there (readiness alone may be reported early).
                        let mut first = [0u8; 1];
                        match tokio::time::timeout(FIRST_BYTE_TIMEOUT, stream.peek(&mut first))
                            .await
                        {
                            Ok(Ok(n)) if n > 0 => Io::Plain(stream),
                            Ok(_) => return,
                            Err(_) => {
                                tracing::debug!(?peer, "no first byte in time; closed");
                                return;
                            }
                        }
                    }
                    Some(tls) => {
                        let handshake =
                            tokio::time::timeout(HANDSHAKE_TIMEOUT, tls.acceptor().accept(stream))
                                .await;
                        match handshake {
                            Ok(Ok(s)) => Io::Tls(Box::new(s)),
                            Ok(Err(e)) => {
                                tls.handshake_failures.fetch_add(1, Ordering::Relaxed);
                                tracing::debug!(?peer, error = %e, "TLS handshake failed");
                                return;
                            }
                            Err(_) => {
                                tls.handshake_failures.fetch_add(1, Ordering::Relaxed);
                                tracing::debug!(?peer, "TLS handshake timed out");
                                return;
                            }
                        }
                    }
                };
                drop(_off);
                let _ = tx.send(Conn { io, _place: place }).await;
            });
            if pending.len() >= max_pending {
                pending.retain(|(_, done)| !done.load(Ordering::Acquire));
                if pending.len() >= max_pending
                    && let Some((oldest, _)) = pending.pop_front()
                {
                    tracing::debug!("the oldest silent connection closed for a new one");
                    oldest.abort();
                }
            }
            pending.push_back((task.abort_handle(), done));
        }
    });
    rx
}

/// Marks a connection as no longer pending when dropped.
struct Off(Arc<std::sync::atomic::AtomicBool>);

impl Drop for Off {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Release);
    }
}

/// [`accept`]'s connections as a stream (for tonic).
pub fn incoming(
    listener: TcpListener,
    tls: Option<Arc<ReloadingTls>>,
    limits: Limits,
) -> impl tokio_stream::Stream<Item = std::io::Result<Conn>> {
    use tokio_stream::StreamExt;
    tokio_stream::wrappers::ReceiverStream::new(accept(listener, tls, limits)).map(Ok)
}

/// [`accept`]'s connections as an axum listener.
pub struct Listener {
    rx: mpsc::Receiver<Conn>,
    addr: std::net::SocketAddr,
}

impl Listener {
    pub fn new(
        listener: TcpListener,
        tls: Option<Arc<ReloadingTls>>,
        limits: Limits,
    ) -> std::io::Result<Self> {
        let addr = listener.local_addr()?;
        Ok(Listener {
            rx: accept(listener, tls, limits),
            addr,
        })
    }
}

/// A client's address, as the admin address's handlers see it (`ConnectInfo<ClientAddr>`).
#[derive(Debug, Clone, Copy)]
pub struct ClientAddr(pub std::net::SocketAddr);

impl axum::extract::connect_info::Connected<axum::serve::IncomingStream<'_, Listener>>
    for ClientAddr
{
    fn connect_info(stream: axum::serve::IncomingStream<'_, Listener>) -> Self {
        ClientAddr(*stream.remote_addr())
    }
}

impl axum::serve::Listener for Listener {
    type Io = Conn;
    type Addr = std::net::SocketAddr;

    async fn accept(&mut self) -> (Conn, std::net::SocketAddr) {
        loop {
            match self.rx.recv().await {
                Some(conn) => match conn.tcp().peer_addr() {
                    Ok(peer) => return (conn, peer),
                    // Gone before it was served.
                    Err(_) => continue,
                },
                // The accept task ended (only when this listener is dropped): nothing more.
                None => std::future::pending().await,
            }
        }
    }

    fn local_addr(&self) -> std::io::Result<std::net::SocketAddr> {
        Ok(self.addr)
    }
}
