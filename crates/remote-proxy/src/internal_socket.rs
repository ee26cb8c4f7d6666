//! The internal API's Unix-domain socket (ADR 041): for an api-server on
//! the same host, which then reaches this node without a TCP connection.
//! Owns binding it: a socket file left by a relay that died is replaced,
//! a live one (another relay serving it) or any other kind of file is
//! refused, and the socket is made readable and writable by its owner
//! only. The internal API's shared secret is still asked of every peer.

use crate::error::RelayError;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::Path;
use tokio::net::UnixListener;

/// Bind the internal API's socket at `path`.
pub async fn bind(path: &Path) -> Result<UnixListener, RelayError> {
    let startup = |what: String| RelayError::Startup(format!("{}: {what}", path.display()));
    match std::fs::symlink_metadata(path) {
        Ok(meta) if meta.file_type().is_socket() => {
            if tokio::net::UnixStream::connect(path).await.is_ok() {
                return Err(startup("another process is serving this socket".to_owned()));
            }
            // Nobody listens: a socket file a relay that died left behind.
            std::fs::remove_file(path).map_err(|e| startup(format!("remove stale socket: {e}")))?;
        }
        Ok(_) => return Err(startup("exists and is not a socket".to_owned())),
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => {}
        Err(err) => return Err(startup(err.to_string())),
    }
    let listener = UnixListener::bind(path).map_err(|e| startup(format!("bind: {e}")))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
        .map_err(|e| startup(format!("permissions: {e}")))?;
    Ok(listener)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn binds_owner_only_and_replaces_only_a_dead_socket() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("internal.sock");

        let live = bind(&path).await.unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600, "mode {mode:o}");
        // A second relay on the same path would take the first one's peers.
        let err = bind(&path).await.unwrap_err().to_string();
        assert!(err.contains("another process"), "{err}");

        // The first relay dies, its file stays: the next one starts.
        drop(live);
        assert!(path.exists());
        let again = bind(&path).await.unwrap();
        let accepted = tokio::spawn(async move { again.accept().await.map(|_| ()) });
        tokio::net::UnixStream::connect(&path).await.unwrap();
        accepted.await.unwrap().unwrap();
    }

    #[tokio::test]
    async fn leaves_a_file_that_is_not_a_socket_alone() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.toml");
        std::fs::write(&path, "keep me").unwrap();
        let err = bind(&path).await.unwrap_err().to_string();
        assert!(err.contains("not a socket"), "{err}");
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "keep me");
    }
}
