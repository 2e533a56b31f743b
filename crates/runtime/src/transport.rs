//! Connections in front of the HTTP and gRPC servers: optional TLS (rustls, `--tls-cert` +
//! `--tls-key`), a cap on open connections (`--max-connections`: past it we stop accepting and the
//! kernel's backlog queues new clients), and a deadline for clients that connect and then send
//! nothing or trickle their request headers (`--header-read-timeout`, the slow-loris defence; the
//! same deadline bounds the TLS handshake and idle keep-alive connections).
//!
//! The HTTP port speaks HTTP/1.1 only (what OpenAI clients and browsers use for these APIs): hyper
//! enforces the header deadline for every request on a connection, which its HTTP/2 server cannot.
//! The gRPC port speaks HTTP/2; its connections are handed to tonic only after the TLS handshake
//! and the whole 24-byte HTTP/2 preface arrived in time (hyper's HTTP/2 server has no deadline of
//! its own before the preface), and tonic's keep-alive pings close peers that stop answering.

use std::{
    io,
    net::SocketAddr,
    path::Path,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
    time::Duration,
};

use anyhow::{bail, Context as _, Result};
use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    net::{TcpListener, TcpStream},
    sync::{OwnedSemaphorePermit, Semaphore},
};
use tokio_rustls::{
    rustls::{
        self,
        pki_types::{pem::PemObject, CertificateDer, PrivateKeyDer},
    },
    TlsAcceptor,
};
use tokio_util::sync::CancellationToken;

use crate::metrics::Metrics;

/// Load a PEM certificate chain and private key into a rustls server config that offers `alpn`.
/// Errors name the file and what is wrong with it; key material never reaches the message.
pub fn server_tls_config(cert: &Path, key: &Path, alpn: &[&[u8]]) -> Result<Arc<rustls::ServerConfig>> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .with_context(|| format!("reading --tls-cert {}", cert.display()))?
        .collect::<Result<_, _>>()
        .with_context(|| format!("--tls-cert {}: not a PEM certificate chain", cert.display()))?;
    if certs.is_empty() {
        bail!("--tls-cert {}: no CERTIFICATE block found", cert.display());
    }
    let key = PrivateKeyDer::from_pem_file(key).map_err(|e| anyhow::anyhow!("--tls-key {}: no usable private key ({e})", key.display()))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .context("TLS protocol versions")?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .context("--tls-cert and --tls-key do not form a usable pair")?;
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Ok(Arc::new(config))
}

/// Count the PEM certificates in `pem` (an error when there are none or one is malformed): for CA
/// files given to clients, which would otherwise skip what they cannot parse and fail later.
pub fn count_pem_certificates(pem: &[u8]) -> Result<usize> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(pem).collect::<Result<_, _>>().context("not a PEM certificate file")?;
    if certs.is_empty() {
        bail!("no CERTIFICATE block found");
    }
    Ok(certs.len())
}

/// How connections are admitted; shared by both ports.
#[derive(Clone)]
pub struct ConnectionPolicy {
    pub tls: Option<TlsAcceptor>,
    pub header_read_timeout: Duration,
    pub slots: Arc<Semaphore>,
    pub metrics: Metrics,
}

impl ConnectionPolicy {
    pub fn new(tls: Option<Arc<rustls::ServerConfig>>, header_read_timeout: Duration, max_connections: usize, metrics: Metrics) -> Self {
        let slots = Arc::new(Semaphore::new(max_connections.clamp(1, Semaphore::MAX_PERMITS)));
        Self { tls: tls.map(TlsAcceptor::from), header_read_timeout, slots, metrics }
    }

    /// Wait for a free connection slot, then the next TCP connection (None once `stop` fires).
    pub async fn accept(&self, listener: &TcpListener, stop: &CancellationToken) -> Option<(TcpStream, SocketAddr, OwnedSemaphorePermit)> {
        let slot = tokio::select! {
            s = self.slots.clone().acquire_owned() => s.ok()?,
            _ = stop.cancelled() => return None,
        };
        loop {
            tokio::select! {
                r = listener.accept() => match r {
                    Ok((tcp, peer)) => {
                        let _ = tcp.set_nodelay(true);
                        return Some((tcp, peer, slot));
                    }
                    // EMFILE and friends: back off instead of spinning; the listener stays open.
                    Err(e) => {
                        tracing::warn!(error = %e, "accept failed; retrying");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                },
                _ = stop.cancelled() => return None,
            }
        }
    }

    /// TLS handshake (if configured) within the header deadline. With `h2_preface`, the client
    /// must also have sent the HTTP/2 connection preface by then (it is replayed to the server).
    /// None: the client was too slow, not speaking TLS or not HTTP/2; it is dropped and counted.
    pub async fn handshake(&self, tcp: TcpStream, peer: SocketAddr, slot: OwnedSemaphorePermit, h2_preface: bool) -> Option<ServerIo> {
        let local = tcp.local_addr().ok();
        let admitted = tokio::time::timeout(self.header_read_timeout, async {
            let kind = match &self.tls {
                Some(acceptor) => match acceptor.accept(tcp).await {
                    Ok(tls) => IoKind::Tls(Box::new(tls)),
                    Err(e) => {
                        self.metrics.rejected.with_label_values(&["tls_handshake"]).inc();
                        tracing::debug!(%peer, error = %e, "TLS handshake failed");
                        return None;
                    }
                },
                None => IoKind::Plain(tcp),
            };
            let mut io = ServerIo { kind, peer, local, prefix: Vec::new(), prefix_read: 0, _slot: slot };
            if h2_preface {
                let mut preface = [0u8; H2_PREFACE.len()];
                if tokio::io::AsyncReadExt::read_exact(&mut io, &mut preface).await.is_err() || preface != *H2_PREFACE {
                    self.metrics.rejected.with_label_values(&["not_http2"]).inc();
                    tracing::debug!(%peer, "no HTTP/2 preface on the gRPC port; closing");
                    return None;
                }
                io.prefix = preface.to_vec();
            }
            Some(io)
        })
        .await;
        admitted.unwrap_or_else(|_| {
            self.metrics.rejected.with_label_values(&["slow_client"]).inc();
            tracing::debug!(%peer, "handshake not finished in time; closing");
            None
        })
    }
}

enum IoKind {
    Plain(TcpStream),
    Tls(Box<tokio_rustls::server::TlsStream<TcpStream>>),
}

/// What every HTTP/2 client sends first.
const H2_PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// One accepted connection, plain or TLS, holding its `--max-connections` slot until dropped.
pub struct ServerIo {
    kind: IoKind,
    peer: SocketAddr,
    local: Option<SocketAddr>,
    /// Bytes read ahead during admission (the HTTP/2 preface), replayed before the stream's own.
    prefix: Vec<u8>,
    prefix_read: usize,
    _slot: OwnedSemaphorePermit,
}

impl ServerIo {
    pub fn peer(&self) -> SocketAddr {
        self.peer
    }
}

impl tonic::transport::server::Connected for ServerIo {
    type ConnectInfo = tonic::transport::server::TcpConnectInfo;
    fn connect_info(&self) -> Self::ConnectInfo {
        tonic::transport::server::TcpConnectInfo { local_addr: self.local, remote_addr: Some(self.peer) }
    }
}

impl AsyncRead for ServerIo {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.prefix_read < this.prefix.len() {
            let n = (this.prefix.len() - this.prefix_read).min(buf.remaining());
            buf.put_slice(&this.prefix[this.prefix_read..this.prefix_read + n]);
            this.prefix_read += n;
            return Poll::Ready(Ok(()));
        }
        match &mut this.kind {
            IoKind::Plain(s) => Pin::new(s).poll_read(cx, buf),
            IoKind::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for ServerIo {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        match &mut self.get_mut().kind {
            IoKind::Plain(s) => Pin::new(s).poll_write(cx, buf),
            IoKind::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }
    fn poll_write_vectored(self: Pin<&mut Self>, cx: &mut Context<'_>, bufs: &[io::IoSlice<'_>]) -> Poll<io::Result<usize>> {
        match &mut self.get_mut().kind {
            IoKind::Plain(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            IoKind::Tls(s) => Pin::new(s.as_mut()).poll_write_vectored(cx, bufs),
        }
    }
    fn is_write_vectored(&self) -> bool {
        match &self.kind {
            IoKind::Plain(s) => s.is_write_vectored(),
            IoKind::Tls(s) => s.is_write_vectored(),
        }
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match &mut self.get_mut().kind {
            IoKind::Plain(s) => Pin::new(s).poll_flush(cx),
            IoKind::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match &mut self.get_mut().kind {
            IoKind::Plain(s) => Pin::new(s).poll_shutdown(cx),
            IoKind::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

/// Serve an axum router over HTTP/1.1 until `stop`, then wait for open connections to finish
/// their current request (the caller bounds that wait with the grace period).
pub async fn serve_http(listener: TcpListener, app: axum::Router, policy: ConnectionPolicy, stop: CancellationToken) {
    use hyper_util::rt::{TokioIo, TokioTimer};
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    while let Some((tcp, peer, slot)) = policy.accept(&listener, &stop).await {
        let policy = policy.clone();
        let app = app.clone();
        let watcher = graceful.watcher();
        tokio::spawn(async move {
            // Plain HTTP/1 needs no first-byte wait: hyper's header deadline starts at once.
            let Some(io) = policy.handshake(tcp, peer, slot, false).await else { return };
            let service = hyper::service::service_fn(move |mut req: http::Request<hyper::body::Incoming>| {
                req.extensions_mut().insert(axum::extract::ConnectInfo(peer));
                tower::ServiceExt::oneshot(app.clone(), req)
            });
            let mut builder = hyper::server::conn::http1::Builder::new();
            builder.timer(TokioTimer::new()).header_read_timeout(policy.header_read_timeout).keep_alive(true);
            let conn = builder.serve_connection(TokioIo::new(io), service);
            if let Err(e) = watcher.watch(conn).await {
                if e.is_timeout() {
                    policy.metrics.rejected.with_label_values(&["slow_client"]).inc();
                }
                tracing::debug!(%peer, error = %e, "connection ended with an error");
            }
        });
    }
    drop(listener);
    graceful.shutdown().await;
}

/// Accepted gRPC connections for tonic's `serve_with_incoming_shutdown`: each one has passed the
/// TLS handshake and sent its first bytes within the deadline. Handshakes run concurrently, so a
/// slow client never delays the next one.
pub fn grpc_incoming(
    listener: TcpListener,
    policy: ConnectionPolicy,
    stop: CancellationToken,
) -> tokio_stream::wrappers::ReceiverStream<Result<ServerIo, io::Error>> {
    let (tx, rx) = tokio::sync::mpsc::channel(64);
    tokio::spawn(async move {
        while let Some((tcp, peer, slot)) = policy.accept(&listener, &stop).await {
            let policy = policy.clone();
            let tx = tx.clone();
            tokio::spawn(async move {
                if let Some(io) = policy.handshake(tcp, peer, slot, true).await {
                    let _ = tx.send(Ok(io)).await;
                }
            });
        }
    });
    tokio_stream::wrappers::ReceiverStream::new(rx)
}
