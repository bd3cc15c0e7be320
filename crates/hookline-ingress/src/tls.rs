//! HTTPS on `ingress.listen`: rustls with the ring provider, HTTP/1.1 only, the certificate
//! and key read from PEM files and swapped for new handshakes when the files are reloaded.

use rustls::ServerConfig;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::{self, PemObject};
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};
use std::sync::{Arc, PoisonError, RwLock};
use tokio_rustls::TlsAcceptor;
use tracing::{error, info};

/// Config key of the certificate file, as errors name it.
pub const CERT_KEY: &str = "ingress.tls_cert";
/// Config key of the private key file, as errors name it.
pub const KEY_KEY: &str = "ingress.tls_key";

/// A certificate or key file that cannot be used, and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}: {message}", path.display())]
pub struct TlsError {
    /// The config key that names the file ([`CERT_KEY`] or [`KEY_KEY`]).
    pub key: &'static str,
    /// The file at fault.
    pub path: PathBuf,
    /// What is wrong with it.
    pub message: String,
}

/// The ingress's TLS server: one rustls config for the life of the process (so session
/// resumption survives a reload) whose certificate can be replaced while it serves.
#[derive(Debug, Clone)]
pub struct Tls {
    cert_path: PathBuf,
    key_path: PathBuf,
    provider: Arc<CryptoProvider>,
    current: Arc<Current>,
    config: Arc<ServerConfig>,
}

/// The certificate new handshakes get. A lock rather than a new `ServerConfig` per reload:
/// connections already open keep the key they negotiated with, and nothing else changes.
#[derive(Debug)]
struct Current(RwLock<Arc<CertifiedKey>>);

impl ResolvesServerCert for Current {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        // A panic while holding the lock cannot leave a half-written Arc behind.
        Some(
            self.0
                .read()
                .unwrap_or_else(PoisonError::into_inner)
                .clone(),
        )
    }
}

impl Tls {
    /// Reads and checks the certificate chain and private key (PEM), ready to serve.
    pub fn load(cert: &Path, key: &Path) -> Result<Self, TlsError> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let certified = load_pair(cert, key, &provider)?;
        let current = Arc::new(Current(RwLock::new(certified)));
        let mut config = ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .expect("the ring provider supports TLS 1.2 and 1.3")
            .with_no_client_auth()
            .with_cert_resolver(current.clone());
        // hyper serves HTTP/1.1 only here; a client that offers only h2 is refused in the
        // handshake rather than misunderstood after it.
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Self {
            cert_path: cert.to_owned(),
            key_path: key.to_owned(),
            provider,
            current,
            config: Arc::new(config),
        })
    }

    /// Reads the files again and, if they are usable, serves the new certificate to every
    /// handshake from now on; otherwise keeps the old one. Logs and counts either outcome.
    pub fn reload(&self) -> Result<(), TlsError> {
        match load_pair(&self.cert_path, &self.key_path, &self.provider) {
            Ok(certified) => {
                let sha256 = fingerprint(&certified);
                *self
                    .current
                    .0
                    .write()
                    .unwrap_or_else(PoisonError::into_inner) = certified;
                metrics::counter!("hookline_ingress_tls_reloads_total", "outcome" => "ok")
                    .increment(1);
                info!(
                    cert = %self.cert_path.display(),
                    key = %self.key_path.display(),
                    sha256,
                    "TLS certificate reloaded; new connections use it."
                );
                Ok(())
            }
            Err(problem) => {
                metrics::counter!("hookline_ingress_tls_reloads_total", "outcome" => "failed")
                    .increment(1);
                error!(
                    file = %problem.path.display(),
                    config_key = problem.key,
                    error = %problem.message,
                    sha256 = fingerprint(&self.current()),
                    "TLS certificate not reloaded; still serving the previous one."
                );
                Err(problem)
            }
        }
    }

    /// SHA-256 of the leaf certificate served now (hex), as operators compare it with
    /// `openssl x509 -fingerprint -sha256`.
    pub fn fingerprint(&self) -> String {
        fingerprint(&self.current())
    }

    /// The certificate file.
    pub fn cert_path(&self) -> &Path {
        &self.cert_path
    }

    pub(crate) fn acceptor(&self) -> TlsAcceptor {
        TlsAcceptor::from(self.config.clone())
    }

    fn current(&self) -> Arc<CertifiedKey> {
        self.current
            .0
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

fn fingerprint(certified: &CertifiedKey) -> String {
    certified
        .cert
        .first()
        .map(|leaf| hex::encode(Sha256::digest(leaf.as_ref())))
        .unwrap_or_default()
}

fn load_pair(
    cert: &Path,
    key: &Path,
    provider: &CryptoProvider,
) -> Result<Arc<CertifiedKey>, TlsError> {
    let cert_error = |message: String| TlsError {
        key: CERT_KEY,
        path: cert.to_owned(),
        message,
    };
    let key_error = |message: String| TlsError {
        key: KEY_KEY,
        path: key.to_owned(),
        message,
    };
    let text = std::fs::read(cert).map_err(|e| cert_error(format!("cannot read it: {e}")))?;
    let chain = CertificateDer::pem_slice_iter(&text)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| cert_error(format!("not valid PEM: {e}")))?;
    if chain.is_empty() {
        return Err(cert_error(
            "no certificate in it (expected PEM `-----BEGIN CERTIFICATE-----` blocks, the server's first)".into(),
        ));
    }
    let text = std::fs::read(key).map_err(|e| key_error(format!("cannot read it: {e}")))?;
    let private = PrivateKeyDer::from_pem_slice(&text).map_err(|e| match e {
        pem::Error::NoItemsFound => key_error(
            "no private key in it (expected an unencrypted PEM PKCS#8, RSA or EC private key)"
                .into(),
        ),
        e => key_error(format!("not valid PEM: {e}")),
    })?;
    let certified = CertifiedKey::from_der(chain, private, provider).map_err(|e| match e {
        rustls::Error::InconsistentKeys(_) => key_error(format!(
            "this private key does not belong to the certificate in {}",
            cert.display()
        )),
        rustls::Error::InvalidCertificate(e) => {
            cert_error(format!("the first certificate is not valid X.509: {e}"))
        }
        e => key_error(format!("unusable private key: {e}")),
    })?;
    Ok(Arc::new(certified))
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Files {
        dir: tempfile::TempDir,
    }

    impl Files {
        fn new() -> Self {
            Self {
                dir: tempfile::tempdir().unwrap(),
            }
        }

        fn write(&self, name: &str, text: &str) -> PathBuf {
            let path = self.dir.path().join(name);
            std::fs::write(&path, text).unwrap();
            path
        }
    }

    fn self_signed(name: &str) -> rcgen::CertifiedKey<rcgen::KeyPair> {
        rcgen::generate_simple_self_signed(vec![name.to_owned()]).unwrap()
    }

    fn message(result: Result<Tls, TlsError>) -> (String, &'static str, PathBuf) {
        let error = result.unwrap_err();
        (error.to_string(), error.key, error.path)
    }

    #[test]
    fn loads_a_pair_and_reloads_a_new_one() {
        let files = Files::new();
        let first = self_signed("first.test");
        let cert = files.write("cert.pem", &first.cert.pem());
        let key = files.write("key.pem", &first.signing_key.serialize_pem());
        let tls = Tls::load(&cert, &key).unwrap();
        let before = tls.fingerprint();
        assert_eq!(before, hex::encode(Sha256::digest(first.cert.der())));

        let second = self_signed("second.test");
        files.write("cert.pem", &second.cert.pem());
        files.write("key.pem", &second.signing_key.serialize_pem());
        tls.reload().unwrap();
        assert_eq!(
            tls.fingerprint(),
            hex::encode(Sha256::digest(second.cert.der()))
        );

        // A bad file keeps the certificate in use.
        files.write("cert.pem", "garbage");
        let error = tls.reload().unwrap_err();
        assert_eq!(
            (error.key, error.path.as_path()),
            (CERT_KEY, cert.as_path())
        );
        assert_eq!(
            tls.fingerprint(),
            hex::encode(Sha256::digest(second.cert.der()))
        );
    }

    #[test]
    fn each_problem_names_the_file_and_what_is_wrong() {
        let files = Files::new();
        let pair = self_signed("a.test");
        let other = self_signed("b.test");
        let cert = files.write("cert.pem", &pair.cert.pem());
        let key = files.write("key.pem", &pair.signing_key.serialize_pem());
        let other_key = files.write("other-key.pem", &other.signing_key.serialize_pem());
        let missing = files.dir.path().join("missing.pem");
        let empty = files.write("empty.pem", "");
        let unterminated = files.write("unterminated.pem", "-----BEGIN CERTIFICATE-----\nMIIB\n");
        let not_der = files.write(
            "not-der.pem",
            "-----BEGIN CERTIFICATE-----\naGVsbG8=\n-----END CERTIFICATE-----\n",
        );
        let encrypted = files.write(
            "encrypted.pem",
            "-----BEGIN ENCRYPTED PRIVATE KEY-----\naGVsbG8=\n-----END ENCRYPTED PRIVATE KEY-----\n",
        );
        let bad_key = files.write(
            "bad-key.pem",
            "-----BEGIN PRIVATE KEY-----\naGVsbG8=\n-----END PRIVATE KEY-----\n",
        );
        let cases = [
            (&missing, &key, CERT_KEY, &missing, "cannot read it: "),
            (&cert, &missing, KEY_KEY, &missing, "cannot read it: "),
            (&empty, &key, CERT_KEY, &empty, "no certificate in it"),
            (&key, &key, CERT_KEY, &key, "no certificate in it"),
            (
                &unterminated,
                &key,
                CERT_KEY,
                &unterminated,
                "not valid PEM",
            ),
            (&cert, &empty, KEY_KEY, &empty, "no private key in it"),
            (&cert, &cert, KEY_KEY, &cert, "no private key in it"),
            (
                &cert,
                &encrypted,
                KEY_KEY,
                &encrypted,
                "no private key in it",
            ),
            (&cert, &bad_key, KEY_KEY, &bad_key, "unusable private key"),
            (
                &cert,
                &other_key,
                KEY_KEY,
                &other_key,
                "does not belong to the certificate in",
            ),
            (&not_der, &key, CERT_KEY, &not_der, "not valid X.509"),
        ];
        for (cert, key, config_key, at_fault, needle) in cases {
            let (text, found_key, path) = message(Tls::load(cert, key));
            assert_eq!(
                (found_key, path.as_path()),
                (config_key, at_fault.as_path()),
                "{text}"
            );
            assert!(
                text.starts_with(&format!("{}: ", at_fault.display())) && text.contains(needle),
                "expected {needle:?} about {}, got {text:?}",
                at_fault.display()
            );
        }
    }
}
