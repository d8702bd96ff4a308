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

/// A request as the handlers see it: method, path and the whole body.
pub struct Req {
    pub method: hyper::Method,
    pub path: String,
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

/// Serve `handler` on `listener` until the task is dropped, each connection in its own task.
pub async fn serve<H, F>(listener: TcpListener, tls: Option<TlsAcceptor>, handler: H)
where
    H: Fn(Req) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = Resp> + Send + 'static,
{
    loop {
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
            let service = hyper::service::service_fn(move |req: Request<Incoming>| {
                let handler = handler.clone();
                async move { Ok::<_, std::convert::Infallible>(handle(req, handler).await) }
            });
            let result = match tls {
                Some(acceptor) => match acceptor.accept(stream).await {
                    Ok(s) => {
                        hyper::server::conn::http1::Builder::new()
                            .serve_connection(TokioIo::new(s), service)
                            .await
                    }
                    Err(e) => {
                        tracing::debug!(%peer, error = %e, "TLS handshake failed");
                        return;
                    }
                },
                None => {
                    hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await
                }
            };
            if let Err(e) = result {
                tracing::debug!(%peer, error = %e, "connection ended with an error");
            }
        });
    }
}

async fn handle<H, F>(req: Request<Incoming>, handler: H) -> Response<Full<Bytes>>
where
    H: Fn(Req) -> F,
    F: Future<Output = Resp>,
{
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    let resp = match Limited::new(req.into_body(), MAX_BODY).collect().await {
        Ok(b) => {
            handler(Req {
                method,
                path,
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
