//! HTTPS on `ingress.listen` (rustls), the certificate swapped on SIGHUP without dropping open
//! connections, stalled handshakes cut off within the header-read timeout, unusable files as
//! config errors, and `ingress.metrics_listen` moving `/metrics` off the public listener.
//!
//! The client is tokio-rustls with hyper's connection API rather than reqwest: one explicit
//! connection per value, so a test knows which connection a request used and which
//! certificate that connection was given.

use crate::support::{
    Broker, Process, TestConfig, field_of, signed_headers, start_with, wait_for_status,
};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use rustls::pki_types::{CertificateDer, ServerName};
use sha2::Digest;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// The name every test certificate is issued for, and the name clients ask for.
const HOST: &str = "localhost";

const AISLE_BODY: &str = r#"{"id":"tls-1","event":"ticket_created","data":{}}"#;

/// A self-signed certificate and its key, as PEM text and as what a client sees.
#[derive(Clone)]
struct Identity {
    cert_pem: String,
    key_pem: String,
    der: CertificateDer<'static>,
}

impl Identity {
    /// A fresh key and a certificate for [`HOST`] whose subject is `common_name`.
    fn new(common_name: &str) -> Self {
        let mut params = rcgen::CertificateParams::new(vec![HOST.to_owned()]).unwrap();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, common_name);
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = params.self_signed(&key).unwrap();
        Self {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
            der: cert.der().clone(),
        }
    }

    fn write(&self, cert: &Path, key: &Path) {
        std::fs::write(cert, &self.cert_pem).unwrap();
        std::fs::write(key, &self.key_pem).unwrap();
    }

    /// What hookline logs for it: SHA-256 of the DER, hex.
    fn sha256(&self) -> String {
        hex::encode(sha2::Sha256::digest(self.der.as_ref()))
    }
}

/// One HTTPS connection: requests sent on it reuse it (HTTP/1.1 keep-alive).
struct Https {
    sender: SendRequest<Full<Bytes>>,
    /// The leaf certificate the server presented in this connection's handshake.
    peer_cert: CertificateDer<'static>,
    alpn: Option<Vec<u8>>,
}

fn client_config(trusted: &[&Identity]) -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    for identity in trusted {
        roots.add(identity.der.clone()).unwrap();
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Arc::new(config)
}

/// Opens a connection to `address` trusting only `trusted`; the error says why it failed.
async fn connect(address: &str, trusted: &[&Identity]) -> Result<Https, String> {
    let tcp = TcpStream::connect(address)
        .await
        .map_err(|e| e.to_string())?;
    let connector = tokio_rustls::TlsConnector::from(client_config(trusted));
    let tls = connector
        .connect(ServerName::try_from(HOST).unwrap(), tcp)
        .await
        .map_err(|e| format!("handshake: {e}"))?;
    let (_, session) = tls.get_ref();
    let peer_cert = session
        .peer_certificates()
        .and_then(|chain| chain.first())
        .expect("the server presents a certificate")
        .clone()
        .into_owned();
    let alpn = session.alpn_protocol().map(<[u8]>::to_vec);
    let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
        .await
        .map_err(|e| e.to_string())?;
    tokio::spawn(connection);
    Ok(Https {
        sender,
        peer_cert,
        alpn,
    })
}

impl Https {
    async fn send(&mut self, request: hyper::Request<Full<Bytes>>) -> (u16, String) {
        self.sender.ready().await.expect("the connection is open");
        let response = self
            .sender
            .send_request(request)
            .await
            .expect("an answer on this connection");
        let status = response.status().as_u16();
        let body = response.into_body().collect().await.unwrap().to_bytes();
        (status, String::from_utf8_lossy(&body).into_owned())
    }

    async fn get(&mut self, path: &str) -> (u16, String) {
        let request = hyper::Request::get(path)
            .header("host", HOST)
            .body(Full::default())
            .unwrap();
        self.send(request).await
    }

    /// POSTs `body` to `/webhooks/aisle`, signed as aisle signs.
    async fn post_aisle(&mut self, body: &str) -> (u16, String) {
        let mut request = hyper::Request::post("/webhooks/aisle")
            .header("host", HOST)
            .header("content-type", "application/json");
        for (name, value) in signed_headers("aisle", body.as_bytes()) {
            request = request.header(name, value);
        }
        self.send(
            request
                .body(Full::new(Bytes::from(body.to_owned())))
                .unwrap(),
        )
        .await
    }
}

/// Polls `GET /readyz` over HTTPS until 200 (10 s at most); each try is a new connection,
/// closed before this returns.
async fn wait_ready(address: &str, trusted: &[&Identity]) {
    let started = Instant::now();
    loop {
        if let Ok(mut https) = connect(address, trusted).await
            && https.get("/readyz").await.0 == 200
        {
            return;
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "https://{address}/readyz never answered 200"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A config whose ingress serves HTTPS with the files `cert.pem` and `key.pem` in `dir`
/// (returned too), written from `identity`.
fn tls_config(
    dir: &Path,
    identity: &Identity,
) -> (TestConfig, std::path::PathBuf, std::path::PathBuf) {
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    identity.write(&cert, &key);
    let mut config = TestConfig::new(dir);
    config.ingress_extra = format!(
        "tls_cert = \"{}\"\ntls_key = \"{}\"\n",
        cert.display(),
        key.display()
    );
    (config, cert, key)
}

const RELOADED: &str = "TLS certificate reloaded; new connections use it.";
const NOT_RELOADED: &str = "TLS certificate not reloaded; still serving the previous one.";

#[tokio::test]
async fn https_and_a_sighup_reload_that_keeps_open_connections() {
    let dir = tempfile::tempdir().unwrap();
    let first = Identity::new("hookline-first");
    let second = Identity::new("hookline-second");
    let (config, cert, key) = tls_config(dir.path(), &first);
    let mut hookline = Process::start(&config.write(), "ingress");
    let address = hookline.bound("ingress.listen").await;
    wait_ready(&address, &[&first]).await;

    // A signed delivery over HTTPS, on a connection kept open across the reload below.
    let mut before = connect(&address, &[&first, &second]).await.unwrap();
    assert_eq!(before.peer_cert, first.der);
    assert_eq!(before.alpn.as_deref(), Some(&b"http/1.1"[..]));
    let (status, text) = before.post_aisle(AISLE_BODY).await;
    assert_eq!(status, 200, "{text}");
    assert!(text.contains(r#""accepted":true"#), "{text}");

    // Plain HTTP on the HTTPS port gets no HTTP answer.
    let plain = reqwest::Client::new()
        .get(format!("http://{address}/healthz"))
        .send()
        .await;
    assert!(plain.is_err(), "plain HTTP was answered: {plain:?}");

    // New files, SIGHUP: new connections get the new certificate, the open one goes on.
    second.write(&cert, &key);
    hookline.send_signal("HUP");
    let reloaded = hookline.logged("message", RELOADED, 1).await;
    assert_eq!(reloaded.len(), 1, "one INFO line per reload");
    assert_eq!(
        field_of(&reloaded[0], "level").and_then(|l| l.as_str()),
        Some("INFO")
    );
    assert_eq!(
        field_of(&reloaded[0], "sha256").and_then(|v| v.as_str()),
        Some(second.sha256().as_str())
    );
    assert_eq!(before.get("/healthz").await, (200, "ok".to_owned()));
    let mut after = connect(&address, &[&first, &second]).await.unwrap();
    assert_eq!(
        after.peer_cert, second.der,
        "a new connection gets the new certificate"
    );
    let (status, text) = after
        .post_aisle(r#"{"id":"tls-2","event":"ticket_created","data":{}}"#)
        .await;
    assert_eq!(status, 200, "{text}");
    let refused = connect(&address, &[&first])
        .await
        .err()
        .expect("a client trusting only the old certificate is refused");
    assert!(
        refused.to_lowercase().contains("certificate"),
        "refused for its certificate: {refused}"
    );
    assert!(hookline.exited().is_none(), "SIGHUP ended the process");

    // A bad certificate file: an ERROR naming it, and the second certificate still served.
    std::fs::write(&cert, "not a certificate\n").unwrap();
    hookline.send_signal("HUP");
    let failed = hookline.logged("message", NOT_RELOADED, 1).await;
    assert_eq!(failed.len(), 1, "the failed reload is logged");
    assert_eq!(
        field_of(&failed[0], "level").and_then(|l| l.as_str()),
        Some("ERROR")
    );
    assert_eq!(
        field_of(&failed[0], "file").and_then(|f| f.as_str()),
        Some(cert.to_str().unwrap())
    );
    let mut kept = connect(&address, &[&second]).await.unwrap();
    assert_eq!(kept.peer_cert, second.der);
    assert_eq!(kept.get("/healthz").await.0, 200);
    assert_eq!(before.get("/healthz").await.0, 200);
    assert_eq!(after.get("/healthz").await.0, 200);
    assert_eq!(hookline.log_lines_with("message", RELOADED).len(), 1);
    assert!(hookline.exited().is_none(), "SIGHUP ended the process");

    let (status, took) = hookline.terminate();
    assert!(status.success(), "{status:?}");
    assert!(took < Duration::from_secs(10), "shutdown took {took:?}");
    Broker::connect(&config.prefix).await.cleanup(&[]).await;
}

/// Waits until the server closes `stream` (EOF or reset); returns how long after `since`.
async fn closed_after(mut stream: TcpStream, since: Instant) -> Duration {
    let mut buf = [0u8; 1024];
    loop {
        match tokio::time::timeout(Duration::from_secs(20), stream.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return since.elapsed(),
            Ok(Ok(_)) => continue, // an alert, then the close
            Err(_) => panic!("the server kept a stalled TLS connection open for 20 s"),
        }
    }
}

/// There is no config key for the header-read timeout (10 s), so this waits for it; it runs
/// beside the other tests and adds about 10 s of wall time to the suite, not more.
#[tokio::test]
async fn stalled_handshakes_are_cut_off_and_hold_their_connection_slot() {
    let dir = tempfile::tempdir().unwrap();
    let identity = Identity::new("hookline-stall");
    let (mut config, _, _) = tls_config(dir.path(), &identity);
    config.ingress_extra += "max_connections = 2\n";
    let hookline = Process::start(&config.write(), "ingress");
    let address = hookline.bound("ingress.listen").await;
    wait_ready(&address, &[&identity]).await;
    // The readiness probe's connection may still be closing on the server's side.
    tokio::time::sleep(Duration::from_millis(300)).await;

    let started = Instant::now();
    // One client sends nothing; the other starts a ClientHello and stops.
    let silent = TcpStream::connect(&address).await.unwrap();
    let mut partial = TcpStream::connect(&address).await.unwrap();
    partial
        .write_all(&[0x16, 0x03, 0x01, 0x02, 0x00])
        .await
        .unwrap();
    // Both connection slots are taken: a real client waits until one is freed.
    let patient = {
        let address = address.clone();
        let trusted = identity.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(200)).await;
            let mut https = connect(&address, &[&trusted]).await.unwrap();
            let status = https.get("/healthz").await.0;
            (status, started.elapsed())
        })
    };
    let (silent, partial) = tokio::join!(
        closed_after(silent, started),
        closed_after(partial, started)
    );
    for (what, took) in [("silent", silent), ("partial ClientHello", partial)] {
        assert!(
            took >= Duration::from_secs(8) && took <= Duration::from_secs(12),
            "{what} client cut off after {took:?}, expected the 10 s header-read timeout"
        );
    }
    let (status, took) = patient.await.unwrap();
    assert_eq!(status, 200);
    assert!(
        took >= Duration::from_secs(8),
        "the third connection was served after {took:?}: the stalled ones did not hold their slots"
    );
    Broker::connect(&config.prefix).await.cleanup(&[]).await;
}

fn check_config(config: &Path) -> (i32, String) {
    crate::support::run(&["--config", config.to_str().unwrap(), "check-config"], &[])
}

#[test]
fn unusable_tls_files_are_config_errors_naming_key_and_file() {
    let dir = tempfile::tempdir().unwrap();
    let identity = Identity::new("hookline-config");
    let (mut config, cert, key) = tls_config(dir.path(), &identity);
    assert_eq!(check_config(&config.write()).0, 0);

    let other = dir.path().join("other-key.pem");
    std::fs::write(&other, Identity::new("other").key_pem).unwrap();
    let missing = dir.path().join("missing.pem");
    let cases = [
        (
            format!("tls_cert = \"{}\"\n", cert.display()),
            "ingress.tls_key",
            None,
        ),
        (
            format!(
                "tls_cert = \"{}\"\ntls_key = \"{}\"\n",
                missing.display(),
                key.display()
            ),
            "ingress.tls_cert",
            Some(&missing),
        ),
        (
            format!(
                "tls_cert = \"{}\"\ntls_key = \"{}\"\n",
                cert.display(),
                cert.display()
            ),
            "ingress.tls_key",
            Some(&cert),
        ),
        (
            format!(
                "tls_cert = \"{}\"\ntls_key = \"{}\"\n",
                cert.display(),
                other.display()
            ),
            "ingress.tls_key",
            Some(&other),
        ),
    ];
    for (extra, config_key, file) in cases {
        config.ingress_extra = extra.clone();
        let path = config.write();
        let (code, text) = check_config(&path);
        assert_eq!(code, 2, "{extra}: {text}");
        assert!(
            text.contains(path.to_str().unwrap()) && text.contains(config_key),
            "{extra}: {text}"
        );
        if let Some(file) = file {
            assert!(text.contains(file.to_str().unwrap()), "{extra}: {text}");
        }
    }
    // The ingress refuses to start the same way, before it binds or connects to anything.
    let path = config.write();
    let (code, text) = crate::support::run(&["--config", path.to_str().unwrap(), "ingress"], &[]);
    assert_eq!(code, 2, "{text}");
}

#[tokio::test]
async fn metrics_listen_moves_metrics_off_the_public_listener() {
    let (config, mut hookline, base) = start_with("ingress", |config| {
        config.ingress_extra = "metrics_listen = \"127.0.0.1:0\"\n".into();
    })
    .await;
    let private = format!("http://{}", hookline.bound("ingress.metrics_listen").await);
    let client = reqwest::Client::new();
    let get = |url: String| {
        let client = client.clone();
        async move {
            let response = client.get(url).send().await.unwrap();
            (response.status().as_u16(), response.text().await.unwrap())
        }
    };
    assert_eq!(get(format!("{base}/metrics")).await.0, 404);
    let (status, text) = get(format!("{private}/metrics")).await;
    assert_eq!(status, 200);
    assert!(text.contains("hookline_ingress_ready"), "{text}");
    assert_eq!(get(format!("{private}/healthz")).await.0, 200);
    assert_eq!(get(format!("{private}/readyz")).await.0, 404);
    assert_eq!(get(format!("{base}/healthz")).await.0, 200);

    // Without TLS, SIGHUP has nothing to reload and does not end the process.
    hookline.send_signal("HUP");
    let lines = hookline.logged("signal", "SIGHUP", 1).await;
    assert_eq!(lines.len(), 1, "SIGHUP is logged");
    assert!(hookline.exited().is_none(), "SIGHUP ended the process");
    assert_eq!(get(format!("{base}/healthz")).await.0, 200);
    Broker::connect(&config.prefix).await.cleanup(&[]).await;
}

#[tokio::test]
async fn run_serves_ingress_and_worker_metrics_on_their_own_listeners() {
    let (config, hookline, base) = start_with("run", |config| {
        config.ingress_extra = "metrics_listen = \"127.0.0.1:0\"\n".into();
    })
    .await;
    let ingress_metrics = format!("http://{}", hookline.bound("ingress.metrics_listen").await);
    let worker_metrics = hookline.metrics_base().await;
    assert_ne!(ingress_metrics, worker_metrics);
    wait_for_status(&format!("{ingress_metrics}/metrics"), 200).await;
    wait_for_status(&format!("{worker_metrics}/metrics"), 200).await;
    wait_for_status(&format!("{worker_metrics}/healthz"), 200).await;
    wait_for_status(&format!("{base}/metrics"), 404).await;
    Broker::connect(&config.prefix).await.cleanup(&[]).await;
}
