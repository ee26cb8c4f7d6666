//! Secret values that cannot be printed: `Debug` and `Display` show a mask,
//! and the only way to the bytes is an explicit `expose()`.

use rand::RngCore;
use sha2::{Digest, Sha256};
use std::fmt;

/// A secret string (token, shared secret, client secret).
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The secret itself; call sites are easy to audit.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// Constant-time comparison.
    pub fn ct_eq(&self, other: &str) -> bool {
        use subtle::ConstantTimeEq;
        self.0.as_bytes().ct_eq(other.as_bytes()).into()
    }

    /// Random secret of `bytes` bytes from the OS CSPRNG, hex encoded.
    pub fn random(bytes: usize) -> Self {
        let mut buf = vec![0u8; bytes];
        rand::rngs::OsRng.fill_bytes(&mut buf);
        Self(hex::encode(buf))
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

/// A device credential: 256 random bits. Only its SHA-256 hash is stored.
#[derive(Clone, PartialEq, Eq)]
pub struct DeviceToken(Secret);

/// Prefix that makes a device token recognisable in a leak scanner.
pub const DEVICE_TOKEN_PREFIX: &str = "edt_";

impl DeviceToken {
    pub fn generate() -> Self {
        Self(Secret::new(format!(
            "{DEVICE_TOKEN_PREFIX}{}",
            Secret::random(32).expose()
        )))
    }

    pub fn from_secret(secret: Secret) -> Self {
        Self(secret)
    }

    pub fn expose(&self) -> &str {
        self.0.expose()
    }

    /// The hash the store keeps (hex SHA-256 of the whole token).
    pub fn hash(&self) -> String {
        sha256_hex(self.0.expose().as_bytes())
    }
}

impl fmt::Debug for DeviceToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("DeviceToken(***)")
    }
}

/// Hex SHA-256 of some bytes.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_and_display_mask_the_value() {
        let s = Secret::new("hunter2");
        assert_eq!(format!("{s:?}"), "Secret(***)");
        assert_eq!(format!("{s}"), "***");
        let t = DeviceToken::generate();
        assert!(!format!("{t:?}").contains(t.expose()));
    }

    #[test]
    fn device_tokens_carry_256_bits_and_differ() {
        let a = DeviceToken::generate();
        let b = DeviceToken::generate();
        assert_ne!(a, b);
        assert_eq!(a.expose().len(), DEVICE_TOKEN_PREFIX.len() + 64);
        assert_eq!(a.hash().len(), 64);
        assert_ne!(a.hash(), a.expose());
    }

    #[test]
    fn constant_time_compare_matches_equality() {
        let s = Secret::new("abc");
        assert!(s.ct_eq("abc"));
        assert!(!s.ct_eq("abd"));
        assert!(!s.ct_eq("ab"));
    }
}

/// The relay's internal-API secret: `EDGE_INTERNAL_SECRET` when set,
/// otherwise the file at `path` (created on first use), so an api-server and
/// a relay sharing a data directory agree with no configuration.
pub fn internal_secret(path: &std::path::Path) -> std::io::Result<Secret> {
    let secret = match std::env::var("EDGE_INTERNAL_SECRET") {
        Ok(s) if !s.is_empty() => Secret::new(s),
        _ => load_or_create_file(path)?,
    };
    if secret.expose().len() < MIN_INTERNAL_SECRET_BYTES {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("the internal secret must be at least {MIN_INTERNAL_SECRET_BYTES} bytes"),
        ));
    }
    Ok(secret)
}

/// Shortest internal-port secret either server accepts.
pub const MIN_INTERNAL_SECRET_BYTES: usize = 32;

/// Read a secret from `path`, creating it (mode 0600, 256 random bits) when
/// it does not exist yet. Two processes racing to create it read one value,
/// and nobody reads a file half written: the secret is written and synced
/// in a temporary file first, then hard-linked to `path` (which fails when
/// `path` exists, and then the existing secret is read).
pub fn load_or_create_file(path: &std::path::Path) -> std::io::Result<Secret> {
    match std::fs::read_to_string(path) {
        Ok(text) => return non_empty(text, path),
        Err(err) if err.kind() != std::io::ErrorKind::NotFound => return Err(err),
        Err(_) => {}
    }
    let secret = Secret::random(32);
    let tmp = write_private_temp(path, secret.expose())?;
    let linked = std::fs::hard_link(&tmp, path);
    let _ = std::fs::remove_file(&tmp);
    match linked {
        Ok(()) => Ok(secret),
        Err(err) if err.kind() == std::io::ErrorKind::AlreadyExists => {
            non_empty(std::fs::read_to_string(path)?, path)
        }
        Err(err) => Err(err),
    }
}

/// Write `secret` to `path` atomically (a 0600 temporary file renamed over
/// the target), creating the directory when missing.
pub fn write_file_atomic(path: &std::path::Path, secret: &str) -> std::io::Result<()> {
    let tmp = write_private_temp(path, secret)?;
    std::fs::rename(&tmp, path).inspect_err(|_| {
        let _ = std::fs::remove_file(&tmp);
    })
}

/// A new file beside `path` (its directory created when missing), mode
/// 0600 and named for this process and a random number, holding
/// `contents` synced to disk; its path.
fn write_private_temp(
    path: &std::path::Path,
    contents: &str,
) -> std::io::Result<std::path::PathBuf> {
    use std::io::Write;
    if let Some(dir) = path.parent() {
        if !dir.as_os_str().is_empty() {
            std::fs::create_dir_all(dir)?;
        }
    }
    let tmp = path.with_extension(format!(
        "new{}-{:016x}",
        std::process::id(),
        rand::random::<u64>()
    ));
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    let mut file = opts.open(&tmp)?;
    if let Err(err) = file
        .write_all(contents.as_bytes())
        .and_then(|()| file.sync_all())
    {
        let _ = std::fs::remove_file(&tmp);
        return Err(err);
    }
    Ok(tmp)
}

/// Read a secret from an existing file (surrounding whitespace trimmed).
pub fn read_file(path: &std::path::Path) -> std::io::Result<Secret> {
    non_empty(std::fs::read_to_string(path)?, path)
}

fn non_empty(text: String, path: &std::path::Path) -> std::io::Result<Secret> {
    let trimmed = text.trim();
    if trimmed.is_empty() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("secret file {} is empty", path.display()),
        ));
    }
    Ok(Secret::new(trimmed))
}

#[cfg(test)]
mod file_tests {
    use super::*;

    #[test]
    fn an_internal_secret_shorter_than_32_bytes_is_refused() {
        let dir = std::env::temp_dir().join(format!("edge-secret-{}", uuid::Uuid::new_v4()));
        let _ = std::fs::create_dir_all(&dir);
        let short = dir.join("short");
        let _ = std::fs::write(&short, "only-31-bytes-of-secret-here-xx");
        let err = internal_secret(&short).err().map(|e| e.to_string());
        assert!(
            err.as_deref()
                .is_some_and(|e| e.contains("at least 32 bytes")),
            "{err:?}"
        );
        let long = dir.join("long");
        let _ = std::fs::write(&long, "a-secret-of-exactly-32-bytes-xyz");
        assert_eq!(
            internal_secret(&long).ok().map(|s| s.expose().len()),
            Some(32)
        );
        let made = internal_secret(&dir.join("made")).ok();
        assert!(
            made.is_some_and(|s| s.expose().len() >= 32),
            "generated secrets pass"
        );
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn creates_once_then_reads_the_same_value() {
        let dir = std::env::temp_dir().join(format!("edge-secret-{}", uuid::Uuid::new_v4()));
        let path = dir.join("s");
        let a = load_or_create_file(&path).ok();
        let b = load_or_create_file(&path).ok();
        assert!(a.is_some());
        assert_eq!(a, b);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path)
                .map(|m| m.permissions().mode() & 0o777)
                .ok();
            assert_eq!(mode, Some(0o600));
        }
        let _ = std::fs::remove_dir_all(dir);
    }

    /// Racing creators and readers all get the one secret: none reads the
    /// file between its creation and its content (a test helper did, when
    /// it read the key of an api-server that had just bound its port).
    #[test]
    fn racing_creators_and_readers_all_read_one_full_secret() {
        let dir = std::env::temp_dir().join(format!("edge-secret-{}", uuid::Uuid::new_v4()));
        for round in 0..50 {
            let path = dir.join(format!("s{round}"));
            let barrier = std::sync::Arc::new(std::sync::Barrier::new(6));
            let racers: Vec<_> = (0..6)
                .map(|_| {
                    let (path, barrier) = (path.clone(), barrier.clone());
                    std::thread::spawn(move || {
                        barrier.wait();
                        load_or_create_file(&path).map_err(|e| e.to_string())
                    })
                })
                .collect();
            let got: Vec<_> = racers
                .into_iter()
                .map(|t| t.join().expect("racer panicked"))
                .collect();
            let first = got[0].clone().expect("first racer");
            for g in &got {
                assert_eq!(g.as_ref().ok(), Some(&first), "round {round}: {got:?}");
            }
        }
        let leftovers = std::fs::read_dir(&dir).map_or(0, |d| d.count());
        assert_eq!(leftovers, 50, "temporary files were left behind");
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn atomic_write_replaces_with_a_private_file() {
        let dir = std::env::temp_dir().join(format!("edge-secret-{}", uuid::Uuid::new_v4()));
        let path = dir.join("nested/credential");
        write_file_atomic(&path, "one").unwrap_or_else(|e| panic!("{e}"));
        write_file_atomic(&path, "two").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            read_file(&path).ok().map(|s| s.expose().to_owned()),
            Some("two".into())
        );
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path)
                .map(|m| m.permissions().mode() & 0o777)
                .ok();
            assert_eq!(mode, Some(0o600));
        }
        assert_eq!(
            std::fs::read_dir(path.parent().unwrap_or(&dir))
                .map(|d| d.count())
                .ok(),
            Some(1),
            "no temp file left"
        );
        let _ = std::fs::remove_dir_all(dir);
    }
}
