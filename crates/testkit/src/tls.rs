//! Test certificates, made by the tests themselves (rcgen): a private CA
//! and leaf certificates it signs, written as PEM files into a temporary
//! directory. No private key is ever committed.

use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair};
use std::path::{Path, PathBuf};

/// A throwaway certificate authority.
pub struct TestCa {
    issuer: CertifiedIssuer<'static, KeyPair>,
    dir: tempfile::TempDir,
    /// The CA certificate (PEM), for `--ca-file` options.
    pub cert_path: PathBuf,
}

/// A leaf certificate's files.
#[derive(Debug, Clone)]
pub struct Leaf {
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl TestCa {
    pub fn new(name: &str) -> Self {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(DnType::CommonName, format!("{name} test CA"));
        let issuer = CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let cert_path = dir.path().join("ca.pem");
        std::fs::write(&cert_path, issuer.pem()).unwrap();
        Self {
            issuer,
            dir,
            cert_path,
        }
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// A leaf for `names` (DNS names or IP addresses) written as
    /// `<file>.pem` and `<file>.key`.
    pub fn issue(&self, file: &str, names: &[&str]) -> Leaf {
        let leaf = Leaf {
            cert: self.dir.path().join(format!("{file}.pem")),
            key: self.dir.path().join(format!("{file}.key")),
        };
        self.issue_to(&leaf, names);
        leaf
    }

    /// Write a fresh certificate for `names` over `leaf`'s files.
    pub fn issue_to(&self, leaf: &Leaf, names: &[&str]) {
        let names: Vec<String> = names.iter().map(|n| (*n).to_owned()).collect();
        let mut params = CertificateParams::new(names).unwrap();
        params
            .distinguished_name
            .push(DnType::CommonName, "edge test server");
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        // Key first, then the certificate: a watcher that sees the new
        // certificate finds its key already there.
        write_private(&leaf.key, &key.serialize_pem());
        std::fs::write(&leaf.cert, cert.pem()).unwrap();
    }
}

fn write_private(path: &Path, pem: &str) {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .unwrap();
    f.write_all(pem.as_bytes()).unwrap();
}
