//! Optional basic auth and TLS for the HTTP listener.
//!
//! Basic auth is a middleware applied to the whole router after every route is added, so any
//! route (today's `/metrics` and `/`, and whatever is added later) needs the credentials; only
//! `/healthz` and `/readyz` stay open: they carry no data, and orchestrators' probes (a kubelet's)
//! should not need the password. TLS wraps the
//! TCP listener: each handshake runs in its own task with a timeout, so a slow or silent client
//! never holds up the others.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Router;
use prometheus::{IntCounterVec, Opts, Registry};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;

/// The paths that answer without credentials: the probes.
pub const OPEN_PATHS: [&str; 2] = ["/healthz", "/readyz"];

/// How long a client may take for its TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// A TLS or basic-auth setting could not be used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SecurityError {
    /// A certificate or key file could not be read or parsed.
    #[error("{what} {path}: {detail}")]
    File {
        /// Which file (certificate chain, private key).
        what: &'static str,
        /// Its path.
        path: String,
        /// What went wrong.
        detail: String,
    },
    /// rustls refused the certificate and key.
    #[error("TLS: {0}")]
    Tls(#[from] rustls::Error),
    /// Registering the auth metrics failed.
    #[error("registering HTTP metrics: {0}")]
    Metrics(#[from] prometheus::Error),
}

/// One user allowed in by basic auth. `Debug` never shows the password.
#[derive(Clone)]
pub struct BasicAuth {
    username: String,
    /// The whole expected `Authorization` header value, `Basic base64(user:password)`.
    expected: Vec<u8>,
}

impl BasicAuth {
    /// Allows `username` with `password`.
    pub fn new(username: &str, password: &str) -> BasicAuth {
        let encoded = base64(format!("{username}:{password}").as_bytes());
        BasicAuth { username: username.to_owned(), expected: format!("Basic {encoded}").into_bytes() }
    }

    /// Whether an `Authorization` header value carries these credentials (compared in time that
    /// does not depend on where they differ).
    pub fn allows(&self, authorization: Option<&[u8]>) -> bool {
        let Some(given) = authorization else { return false };
        if given.len() != self.expected.len() {
            return false;
        }
        given.iter().zip(&self.expected).fold(0u8, |diff, (a, b)| diff | (a ^ b)) == 0
    }
}

impl std::fmt::Debug for BasicAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BasicAuth").field("username", &self.username).field("password", &"<redacted>").finish()
    }
}

/// How the listener is protected; the default is neither auth nor TLS.
#[derive(Clone, Default)]
pub struct HttpSecurity {
    /// Credentials every route but the probes (`/healthz`, `/readyz`) requires.
    pub basic_auth: Option<BasicAuth>,
    /// Serve HTTPS with this configuration.
    pub tls: Option<Arc<rustls::ServerConfig>>,
}

impl std::fmt::Debug for HttpSecurity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpSecurity").field("basic_auth", &self.basic_auth).field("tls", &self.tls.is_some()).finish()
    }
}

/// A TLS server configuration from a PEM certificate chain and a PEM private key.
pub fn tls_config(cert_file: &Path, key_file: &Path) -> Result<Arc<rustls::ServerConfig>, SecurityError> {
    fn file_error<'a>(
        what: &'static str,
        path: &'a Path,
    ) -> impl Fn(rustls::pki_types::pem::Error) -> SecurityError + 'a {
        move |error| SecurityError::File { what, path: path.display().to_string(), detail: error.to_string() }
    }
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert_file)
        .map_err(file_error("certificate chain", cert_file))?
        .collect::<Result<_, _>>()
        .map_err(file_error("certificate chain", cert_file))?;
    if certs.is_empty() {
        return Err(SecurityError::File {
            what: "certificate chain",
            path: cert_file.display().to_string(),
            detail: "no certificate in the file".into(),
        });
    }
    let key = PrivateKeyDer::from_pem_file(key_file).map_err(file_error("private key", key_file))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(certs, key)?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// Counts refused requests and logs them at a rate limit.
#[derive(Clone)]
pub(crate) struct Guard {
    auth: Option<BasicAuth>,
    refused: IntCounterVec,
    log: Arc<parking_lot::Mutex<Option<std::time::Instant>>>,
}

impl Guard {
    pub(crate) fn new(security: &HttpSecurity, registry: &Registry) -> Result<Guard, SecurityError> {
        let refused = IntCounterVec::new(
            Opts::new(
                "salespulse_http_auth_failures_total",
                "HTTP requests refused for missing or wrong basic-auth credentials, and failed TLS handshakes.",
            ),
            &["reason"],
        )?;
        for reason in ["missing", "wrong", "tls_handshake"] {
            refused.with_label_values(&[reason]);
        }
        registry.register(Box::new(refused.clone()))?;
        Ok(Guard { auth: security.basic_auth.clone(), refused, log: Default::default() })
    }

    fn refuse(&self, reason: &str, detail: &dyn std::fmt::Display) {
        self.refused.with_label_values(&[reason]).inc();
        let mut last = self.log.lock();
        if last.is_none_or(|at| at.elapsed() > Duration::from_secs(10)) {
            *last = Some(std::time::Instant::now());
            tracing::warn!(reason, "HTTP request refused: {detail} (logged at most every 10 s)");
        }
    }
}

/// `router` with basic auth on every route but [`OPEN_PATHS`], when auth is configured. Call it on
/// the finished router: routes added after it are not covered.
pub(crate) fn protect(router: Router, guard: &Guard) -> Router {
    if guard.auth.is_none() {
        return router;
    }
    router.layer(axum::middleware::from_fn_with_state(guard.clone(), require_auth))
}

async fn require_auth(State(guard): State<Guard>, request: Request, next: Next) -> Response {
    let Some(auth) = &guard.auth else { return next.run(request).await };
    if OPEN_PATHS.contains(&request.uri().path()) {
        return next.run(request).await;
    }
    let given = request.headers().get(header::AUTHORIZATION).map(|value| value.as_bytes());
    if auth.allows(given) {
        return next.run(request).await;
    }
    let reason = if given.is_some() { "wrong" } else { "missing" };
    guard.refuse(reason, &format_args!("{reason} credentials for {}", request.uri().path()));
    (
        StatusCode::UNAUTHORIZED,
        [(header::WWW_AUTHENTICATE, "Basic realm=\"salespulse\", charset=\"UTF-8\"")],
        "unauthorized\n",
    )
        .into_response()
}

/// A TCP listener whose connections are TLS streams; handshakes happen off the accept loop.
pub(crate) struct TlsListener {
    local: SocketAddr,
    ready: tokio::sync::mpsc::Receiver<(TlsStream<TcpStream>, SocketAddr)>,
}

impl TlsListener {
    pub(crate) fn new(listener: TcpListener, config: Arc<rustls::ServerConfig>, guard: Guard) -> std::io::Result<Self> {
        let local = listener.local_addr()?;
        let (sender, ready) = tokio::sync::mpsc::channel(64);
        let acceptor = TlsAcceptor::from(config);
        tokio::spawn(async move {
            loop {
                let accepted = tokio::select! {
                    accepted = listener.accept() => accepted,
                    // The server stopped and dropped its listener.
                    () = sender.closed() => return,
                };
                let (stream, peer) = match accepted {
                    Ok(pair) => pair,
                    Err(error) => {
                        // Out of file descriptors, say: wait a little instead of spinning.
                        tracing::warn!(%error, "accepting a connection failed");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                };
                let (acceptor, sender, guard) = (acceptor.clone(), sender.clone(), guard.clone());
                tokio::spawn(async move {
                    match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                        Ok(Ok(tls)) => {
                            let _ = sender.send((tls, peer)).await;
                        }
                        Ok(Err(error)) => {
                            guard.refuse("tls_handshake", &format_args!("TLS handshake from {peer}: {error}"))
                        }
                        Err(_) => guard.refuse("tls_handshake", &format_args!("TLS handshake from {peer} timed out")),
                    }
                });
            }
        });
        Ok(TlsListener { local, ready })
    }
}

impl axum::serve::Listener for TlsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.ready.recv().await {
            Some(connection) => connection,
            // The accept task only ends once this receiver is gone.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        Ok(self.local)
    }
}

/// Standard base64 with padding (RFC 4648), for the expected `Authorization` value.
fn base64(input: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(input.len().div_ceil(3) * 4);
    for chunk in input.chunks(3) {
        let bytes = [chunk[0], chunk.get(1).copied().unwrap_or(0), chunk.get(2).copied().unwrap_or(0)];
        let n = u32::from(bytes[0]) << 16 | u32::from(bytes[1]) << 8 | u32::from(bytes[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_matches_rfc_4648_and_credentials_compare_exactly() {
        for (input, expected) in
            [("", ""), ("f", "Zg=="), ("fo", "Zm8="), ("foo", "Zm9v"), ("foob", "Zm9vYg=="), ("fooba", "Zm9vYmE=")]
        {
            assert_eq!(base64(input.as_bytes()), expected);
        }
        // RFC 7617's example.
        let auth = BasicAuth::new("Aladdin", "open sesame");
        assert!(auth.allows(Some(b"Basic QWxhZGRpbjpvcGVuIHNlc2FtZQ==")));
        assert!(!auth.allows(Some(b"Basic QWxhZGRpbjpvcGVuIHNlc2FtZR==")));
        assert!(!auth.allows(Some(b"Basic QWxhZGRpbjpvcGVu")));
        assert!(!auth.allows(None));
        assert!(!format!("{auth:?}").contains("sesame"));
    }
}
