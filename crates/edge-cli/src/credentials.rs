//! Where the CLI keeps its bearer session: `credentials.json` (mode 0600,
//! written atomically) in the config directory, with the server it
//! belongs to. The token never appears in a Debug print or an error.

use crate::{CliError, Global};
use edge_core::Secret;
use serde::{Deserialize, Serialize};
use std::path::PathBuf;

/// The server a fresh install talks to: the devstack's api-server.
pub const DEFAULT_SERVER: &str = "http://127.0.0.1:3721";
const FILE: &str = "credentials.json";

/// A stored bearer session.
#[derive(Debug, Clone)]
pub struct Credential {
    pub server: String,
    pub token: Secret,
    pub expires_at: i64,
}

#[derive(Serialize, Deserialize)]
struct Stored {
    server: String,
    token: String,
    expires_at: i64,
}

/// The config directory: `--config-dir`, `$XDG_CONFIG_HOME/edge`, or
/// `~/.config/edge`.
pub fn dir(g: &Global) -> Result<PathBuf, CliError> {
    if let Some(d) = &g.config_dir {
        return Ok(d.clone());
    }
    if let Some(x) = std::env::var_os("XDG_CONFIG_HOME").filter(|x| !x.is_empty()) {
        return Ok(PathBuf::from(x).join("edge"));
    }
    std::env::var_os("HOME")
        .filter(|h| !h.is_empty())
        .map(|h| PathBuf::from(h).join(".config").join("edge"))
        .ok_or_else(|| CliError::Usage("no HOME: give --config-dir".into()))
}

/// The stored credential, if any.
pub fn load(g: &Global) -> Result<Option<Credential>, CliError> {
    let path = dir(g)?.join(FILE);
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(CliError::Io(format!("cannot read {}: {e}", path.display()))),
    };
    let s: Stored = serde_json::from_str(&text)
        .map_err(|_| CliError::Io(format!("{} is damaged: run `edge login`", path.display())))?;
    Ok(Some(Credential {
        server: s.server,
        token: Secret::new(s.token),
        expires_at: s.expires_at,
    }))
}

/// Keep `c` (replacing any earlier credential).
pub fn save(g: &Global, c: &Credential) -> Result<PathBuf, CliError> {
    let dir = dir(g)?;
    create_private_dir(&dir)?;
    let path = dir.join(FILE);
    let text = serde_json::to_string(&Stored {
        server: c.server.clone(),
        token: c.token.expose().to_owned(),
        expires_at: c.expires_at,
    })
    .map_err(|e| CliError::Io(e.to_string()))?;
    edge_core::secret::write_file_atomic(&path, &text)
        .map_err(|e| CliError::Io(format!("cannot write {}: {e}", path.display())))?;
    Ok(path)
}

/// Forget the stored credential; true when there was one.
pub fn remove(g: &Global) -> Result<bool, CliError> {
    let path = dir(g)?.join(FILE);
    match std::fs::remove_file(&path) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(CliError::Io(format!(
            "cannot remove {}: {e}",
            path.display()
        ))),
    }
}

fn create_private_dir(dir: &std::path::Path) -> Result<(), CliError> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|e| CliError::Io(format!("cannot create {}: {e}", dir.display())))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn the_credential_is_private_and_round_trips() {
        let tmp = tempfile::tempdir().unwrap();
        let g = Global {
            server: None,
            config_dir: Some(tmp.path().join("edge")),
            ca_file: None,
            insecure_plaintext: false,
            client_id: None,
        };
        assert!(load(&g).unwrap().is_none());
        let c = Credential {
            server: "https://cloud.example".into(),
            token: Secret::new("edge_s_abc"),
            expires_at: 42,
        };
        let path = save(&g, &c).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let back = load(&g).unwrap().unwrap();
        assert_eq!(
            (back.server.as_str(), back.token.expose(), back.expires_at),
            ("https://cloud.example", "edge_s_abc", 42)
        );
        assert!(
            !format!("{back:?}").contains("edge_s_abc"),
            "the token is not printed"
        );
        assert!(remove(&g).unwrap());
        assert!(!remove(&g).unwrap());
    }
}
