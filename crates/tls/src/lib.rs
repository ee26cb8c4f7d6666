//! TLS for every hop, on rustls with the `ring` provider: client configs
//! that trust the webpki roots plus, optionally, a private CA from a PEM
//! file; and a server certificate read from PEM files that can be reloaded
//! (on SIGHUP or when the files change) without dropping connections:
//! handshakes after a reload use the new certificate, established
//! connections keep theirs.

use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
pub use rustls::ClientConfig;
use rustls::{RootCertStore, ServerConfig};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, SystemTime};
use tokio_util::sync::CancellationToken;

pub use tokio_rustls::{TlsAcceptor, TlsConnector};

/// Why TLS material could not be used. Never includes key bytes.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read {0}: {1}")]
    Read(PathBuf, std::io::Error),
    #[error("{0} holds no PEM certificate")]
    NoCertificate(PathBuf),
    #[error("{0} holds no PEM private key")]
    NoKey(PathBuf),
    #[error("TLS: {0}")]
    Rustls(#[from] rustls::Error),
}

/// The one crypto provider of the platform.
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Make [`provider`] the process default, for code that builds TLS
/// clients without a config of ours (a plain `reqwest::Client`). Safe to
/// call any number of times.
pub fn install_default_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// Every certificate in a PEM file.
pub fn read_certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let pem = std::fs::read(path).map_err(|e| TlsError::Read(path.to_owned(), e))?;
    let certs: Vec<_> = CertificateDer::pem_slice_iter(&pem)
        .filter_map(Result::ok)
        .collect();
    if certs.is_empty() {
        return Err(TlsError::NoCertificate(path.to_owned()));
    }
    Ok(certs)
}

/// The first private key (PKCS#8, PKCS#1 or SEC1) in a PEM file.
pub fn read_private_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    let pem = std::fs::read(path).map_err(|e| TlsError::Read(path.to_owned(), e))?;
    PrivateKeyDer::from_pem_slice(&pem).map_err(|_| TlsError::NoKey(path.to_owned()))
}

/// A client config trusting the webpki roots and, when given, the
/// certificates in `ca_file` (a private CA).
pub fn client_config(ca_file: Option<&Path>) -> Result<Arc<ClientConfig>, TlsError> {
    install_default_provider();
    let mut roots = RootCertStore {
        roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
    };
    if let Some(path) = ca_file {
        for cert in read_certificates(path)? {
            roots.add(cert)?;
        }
    }
    let config = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

/// A server certificate and key from PEM files, swappable at run time.
#[derive(Debug)]
pub struct ReloadingCert {
    cert_path: PathBuf,
    key_path: PathBuf,
    current: RwLock<Arc<CertifiedKey>>,
    /// Modification times of the files when last loaded.
    stamp: Mutex<Option<(SystemTime, SystemTime)>>,
}

fn modified(path: &Path) -> Option<SystemTime> {
    std::fs::metadata(path).and_then(|m| m.modified()).ok()
}

fn certified_key(cert: &Path, key: &Path) -> Result<CertifiedKey, TlsError> {
    let chain = read_certificates(cert)?;
    let key = read_private_key(key)?;
    let ck = CertifiedKey::from_der(chain, key, &provider())?;
    Ok(ck)
}

impl ReloadingCert {
    /// Load `cert` (a PEM chain, leaf first) and `key`.
    pub fn load(cert: &Path, key: &Path) -> Result<Arc<Self>, TlsError> {
        let stamp = modified(cert).zip(modified(key));
        let ck = certified_key(cert, key)?;
        Ok(Arc::new(Self {
            cert_path: cert.to_owned(),
            key_path: key.to_owned(),
            current: RwLock::new(Arc::new(ck)),
            stamp: Mutex::new(stamp),
        }))
    }

    /// Read the files again; on any error the current certificate stays.
    pub fn reload(&self) -> Result<(), TlsError> {
        let stamp = modified(&self.cert_path).zip(modified(&self.key_path));
        let ck = certified_key(&self.cert_path, &self.key_path)?;
        *self.current.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(ck);
        *self.stamp.lock().unwrap_or_else(|p| p.into_inner()) = stamp;
        Ok(())
    }

    fn changed_on_disk(&self) -> bool {
        let now = modified(&self.cert_path).zip(modified(&self.key_path));
        now.is_some() && now != *self.stamp.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The leaf certificate served now (DER).
    pub fn leaf(&self) -> Option<CertificateDer<'static>> {
        self.current
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .cert
            .first()
            .cloned()
    }

    /// An acceptor for HTTP/1.1 that always serves the current certificate.
    pub fn acceptor(self: &Arc<Self>) -> Result<TlsAcceptor, TlsError> {
        let mut config = ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()?
            .with_no_client_auth()
            .with_cert_resolver(self.clone());
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(TlsAcceptor::from(Arc::new(config)))
    }

    /// Reload on SIGHUP, and when either file's modification time changes
    /// (checked every `every`), until `shutdown`. Failures are logged and
    /// the previous certificate stays in use.
    pub async fn watch(self: Arc<Self>, every: Duration, shutdown: CancellationToken) {
        let mut hangup =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok();
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let why = tokio::select! {
                _ = shutdown.cancelled() => return,
                Some(()) = async { match hangup.as_mut() { Some(h) => h.recv().await, None => None } } => "SIGHUP",
                _ = tick.tick() => {
                    if !self.changed_on_disk() {
                        continue;
                    }
                    "file change"
                }
            };
            match self.reload() {
                Ok(()) => {
                    tracing::info!(cert = %self.cert_path.display(), reason = why, "TLS certificate reloaded")
                }
                Err(err) => {
                    tracing::warn!(error = %err, reason = why, "TLS certificate reload failed; keeping the current one")
                }
            }
        }
    }
}

impl ResolvesServerCert for ReloadingCert {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(
            self.current
                .read()
                .unwrap_or_else(|p| p.into_inner())
                .clone(),
        )
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn self_signed(dir: &Path, name: &str) -> (PathBuf, PathBuf) {
        let cert = rcgen::generate_simple_self_signed(vec![name.to_owned()]).unwrap();
        let (c, k) = (dir.join("cert.pem"), dir.join("key.pem"));
        std::fs::write(&c, cert.cert.pem()).unwrap();
        std::fs::write(&k, cert.signing_key.serialize_pem()).unwrap();
        (c, k)
    }

    #[test]
    fn certificates_load_reload_and_bad_files_keep_the_old_one() {
        let dir = tempfile::tempdir().unwrap();
        let (c, k) = self_signed(dir.path(), "one.test");
        let r = ReloadingCert::load(&c, &k).unwrap();
        let first = r.leaf().unwrap();
        assert!(!r.changed_on_disk());
        self_signed(dir.path(), "two.test");
        r.reload().unwrap();
        assert_ne!(r.leaf().unwrap(), first);
        std::fs::write(&k, "not a key").unwrap();
        assert!(matches!(r.reload(), Err(TlsError::NoKey(_))));
        assert!(r.leaf().is_some(), "the previous certificate stays");
        assert!(client_config(Some(&c)).is_ok());
        assert!(matches!(
            client_config(Some(&k)),
            Err(TlsError::NoCertificate(_))
        ));
    }
}
