//! A small HTTP/1.1 server (hyper), plain or over rustls, for the webhooks, `/metrics` and
//! `/healthz`.

use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Bytes;
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

/// Largest request body read (an AdmissionReview carries the object twice on UPDATE; a
/// ConfigMap-sized source is at most 1 MiB).
pub const MAX_BODY: usize = 8 << 20;
/// A client gets this long for its TLS handshake, and for each request's headers (an idle
/// keep-alive connection included): connections that send nothing cannot pile up.
pub const HANDSHAKE_AND_HEADER_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);
/// A connection is closed after this long whatever it does (the API server opens another).
pub const CONNECTION_LIFETIME: std::time::Duration = std::time::Duration::from_secs(60);
/// Connections served at once; more wait to be accepted. With the timeouts above a flood of idle
/// connections holds a slot for seconds at most.
pub const MAX_CONNECTIONS: usize = 2048;

/// A request as the handlers see it: method, path, headers and the whole body.
pub struct Req {
    pub method: hyper::Method,
    pub path: String,
    pub headers: hyper::HeaderMap,
    pub body: Bytes,
}

/// A response: status, content type, body.
pub struct Resp {
    pub status: StatusCode,
    pub content_type: &'static str,
    pub body: Vec<u8>,
}

impl Resp {
    pub fn text(status: StatusCode, body: impl Into<String>) -> Resp {
        Resp {
            status,
            content_type: "text/plain; charset=utf-8",
            body: body.into().into_bytes(),
        }
    }
    pub fn json(body: Vec<u8>) -> Resp {
        Resp {
            status: StatusCode::OK,
            content_type: "application/json",
            body,
        }
    }
}

/// Serve `handler` on `listener` until the task is dropped, each connection in its own task,
/// with the timeouts and the connection limit above.
pub async fn serve<H, F>(listener: TcpListener, tls: Option<TlsAcceptor>, handler: H)
where
    H: Fn(Req) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = Resp> + Send + 'static,
{
    raise_open_files_limit();
    let slots = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    loop {
        let Ok(slot) = slots.clone().acquire_owned().await else {
            return;
        };
        let (stream, peer) = match listener.accept().await {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                continue;
            }
        };
        let handler = handler.clone();
        let tls = tls.clone();
        tokio::spawn(async move {
            let _slot = slot;
            let service = hyper::service::service_fn(move |req: Request<Incoming>| {
                let handler = handler.clone();
                async move { Ok::<_, std::convert::Infallible>(handle(req, handler).await) }
            });
            let mut http = hyper::server::conn::http1::Builder::new();
            http.timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(HANDSHAKE_AND_HEADER_TIMEOUT);
            let served = async {
                match tls {
                    Some(acceptor) => {
                        match tokio::time::timeout(HANDSHAKE_AND_HEADER_TIMEOUT, acceptor.accept(stream)).await {
                            Ok(Ok(s)) => http.serve_connection(TokioIo::new(s), service).await,
                            Ok(Err(e)) => {
                                tracing::debug!(%peer, error = %e, "TLS handshake failed");
                                Ok(())
                            }
                            Err(_) => {
                                tracing::debug!(%peer, "no TLS handshake in time: closed");
                                Ok(())
                            }
                        }
                    }
                    None => http.serve_connection(TokioIo::new(stream), service).await,
                }
            };
            match tokio::time::timeout(CONNECTION_LIFETIME, served).await {
                Ok(Err(e)) => tracing::debug!(%peer, error = %e, "connection ended with an error"),
                Err(_) => tracing::debug!(%peer, "connection open too long: closed"),
                Ok(Ok(())) => {}
            }
        });
    }
}

/// Lets the process hold as many connections as the limit allows (the soft limit of open
/// files is often 1024, the hard one much higher).
fn raise_open_files_limit() {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: reads and sets this process's own limit through a local struct.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) == 0 && limit.rlim_cur < limit.rlim_max {
            limit.rlim_cur = limit.rlim_max.min(65536);
            libc::setrlimit(libc::RLIMIT_NOFILE, &limit);
        }
    }
}

async fn handle<H, F>(req: Request<Incoming>, handler: H) -> Response<Full<Bytes>>
where
    H: Fn(Req) -> F,
    F: Future<Output = Resp>,
{
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    let headers = req.headers().clone();
    let resp = match Limited::new(req.into_body(), MAX_BODY).collect().await {
        Ok(b) => {
            handler(Req {
                method,
                path,
                headers,
                body: b.to_bytes(),
            })
            .await
        }
        Err(e) => Resp::text(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("cannot read the request body: {e}"),
        ),
    };
    Response::builder()
        .status(resp.status)
        .header("content-type", resp.content_type)
        .body(Full::new(Bytes::from(resp.body)))
        .unwrap_or_else(|_| Response::new(Full::new(Bytes::new())))
}

/// Bind, saying which address failed.
pub async fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    TcpListener::bind(addr)
        .await
        .map_err(|e| std::io::Error::new(e.kind(), format!("cannot listen on {addr}: {e}")))
}

/// A rustls server configuration from PEM files (certificate chain, private key). The files
/// are read again when they change (a renewed Secret mounted into the Pod), at the next
/// handshake; a pair that does not load keeps the previous one in service.
pub fn tls_acceptor(cert: &std::path::Path, key: &std::path::Path) -> Result<TlsAcceptor, String> {
    let resolver = ReloadingCert::new(cert, key)?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_no_client_auth()
        .with_cert_resolver(Arc::new(resolver));
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(config)))
}

type Loaded = (
    Option<std::time::SystemTime>,
    Option<std::time::SystemTime>,
    Arc<rustls::sign::CertifiedKey>,
);

#[derive(Debug)]
struct ReloadingCert {
    cert: std::path::PathBuf,
    key: std::path::PathBuf,
    current: std::sync::Mutex<Loaded>,
}

fn mtime(p: &std::path::Path) -> Option<std::time::SystemTime> {
    std::fs::metadata(p).and_then(|m| m.modified()).ok()
}

fn load_certified_key(cert: &std::path::Path, key: &std::path::Path) -> Result<rustls::sign::CertifiedKey, String> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .and_then(|i| i.collect::<Result<Vec<_>, _>>())
        .map_err(|e| format!("cannot read the certificate {}: {e}", cert.display()))?;
    if certs.is_empty() {
        return Err(format!("{} holds no PEM certificate", cert.display()));
    }
    let der =
        PrivateKeyDer::from_pem_file(key).map_err(|e| format!("cannot read the private key {}: {e}", key.display()))?;
    let signing = rustls::crypto::ring::sign::any_supported_type(&der)
        .map_err(|e| format!("the private key {} is not usable: {e}", key.display()))?;
    let ck = rustls::sign::CertifiedKey::new(certs, signing);
    ck.keys_match()
        .map_err(|e| format!("the certificate and key do not make a TLS identity: {e}"))?;
    Ok(ck)
}

impl ReloadingCert {
    fn new(cert: &std::path::Path, key: &std::path::Path) -> Result<ReloadingCert, String> {
        let (mc, mk) = (mtime(cert), mtime(key));
        let ck = load_certified_key(cert, key)?;
        Ok(ReloadingCert {
            cert: cert.into(),
            key: key.into(),
            current: std::sync::Mutex::new((mc, mk, Arc::new(ck))),
        })
    }
}

impl rustls::server::ResolvesServerCert for ReloadingCert {
    fn resolve(&self, _hello: rustls::server::ClientHello<'_>) -> Option<Arc<rustls::sign::CertifiedKey>> {
        let mut cur = self.current.lock().unwrap_or_else(|p| p.into_inner());
        let (mc, mk) = (mtime(&self.cert), mtime(&self.key));
        if (mc, mk) != (cur.0, cur.1) {
            match load_certified_key(&self.cert, &self.key) {
                Ok(ck) => {
                    tracing::info!(cert = %self.cert.display(), "webhook certificate reloaded");
                    *cur = (mc, mk, Arc::new(ck));
                }
                Err(e) => {
                    // Not again until the files change once more.
                    tracing::warn!(error = %e, "keeping the previous webhook certificate");
                    (cur.0, cur.1) = (mc, mk);
                }
            }
        }
        Some(cur.2.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::time::{Duration, Instant};

    /// A flood of connections that send nothing neither delays a real request nor stays open.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn idle_connections_cannot_starve_the_server() {
        raise_open_files_limit();
        let listener = bind("127.0.0.1:0".parse().unwrap()).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(serve(listener, None, |_req: Req| async {
            Resp::text(StatusCode::OK, "ok")
        }));
        let idle: Vec<std::net::TcpStream> = (0..1000).map(|_| std::net::TcpStream::connect(addr).unwrap()).collect();
        let answered = tokio::task::spawn_blocking(move || {
            let t = Instant::now();
            let mut s = std::net::TcpStream::connect(addr).unwrap();
            s.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                .unwrap();
            let mut reply = String::new();
            s.read_to_string(&mut reply).unwrap();
            (t.elapsed(), reply)
        })
        .await
        .unwrap();
        assert!(answered.1.starts_with("HTTP/1.1 200"), "{}", answered.1);
        eprintln!("answered in {:?} with 1,000 idle connections open", answered.0);
        // Answered while the idle connections were still open: not after the server dropped
        // them (which their header timeout does).
        assert!(
            answered.0 < HANDSHAKE_AND_HEADER_TIMEOUT,
            "answered only after {:?}, when the idle connections were being closed",
            answered.0
        );
        // Each idle connection is closed once the header timeout has passed.
        let closed = tokio::task::spawn_blocking(move || {
            idle.into_iter()
                .filter(|s| {
                    let mut s = s;
                    s.set_read_timeout(Some(HANDSHAKE_AND_HEADER_TIMEOUT + Duration::from_secs(5)))
                        .unwrap();
                    let mut buf = [0u8; 1];
                    // Closed by the server: end of stream (a read timeout is an error, not this).
                    match s.read(&mut buf) {
                        Ok(0) => true,
                        Err(e) => e.kind() == std::io::ErrorKind::ConnectionReset,
                        Ok(_) => false,
                    }
                })
                .count()
        })
        .await
        .unwrap();
        assert_eq!(closed, 1000);
        server.abort();
    }
}
