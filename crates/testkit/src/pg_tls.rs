//! A throwaway PostgreSQL cluster with `ssl = on`, for the store's TLS
//! test and the database-outage fault test (it can be halted and resumed): `initdb` and `pg_ctl` from the installed PostgreSQL, a free
//! loopback port, a server certificate from a test CA for `localhost`. As
//! root the server runs as the `postgres` user (initdb refuses root).
//! Missing binaries skip the test unless `REQUIRE_INTEROP=1`.

use crate::tls::TestCa;
use std::path::{Path, PathBuf};
use std::process::Command;

/// A running cluster; stopped (immediate) when dropped.
pub struct PgTls {
    pub port: u16,
    bin: PathBuf,
    data: PathBuf,
    as_postgres: bool,
    _dir: tempfile::TempDir,
}

fn bin_dir() -> Option<PathBuf> {
    let mut dirs: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .filter_map(Result::ok)
        .map(|e| e.path().join("bin"))
        .filter(|b| b.join("initdb").is_file() && b.join("pg_ctl").is_file())
        .collect();
    dirs.sort();
    dirs.pop()
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

fn uid_gid(user: &str) -> Option<(u32, u32)> {
    let id = |flag: &str| -> Option<u32> {
        let out = Command::new("id").args([flag, user]).output().ok()?;
        String::from_utf8_lossy(&out.stdout).trim().parse().ok()
    };
    Some((id("-u")?, id("-g")?))
}

/// Where the binaries are, or `None` (skip) when PostgreSQL is absent and
/// interop is not required.
pub fn available() -> Option<PathBuf> {
    match bin_dir() {
        Some(b) => Some(b),
        None if crate::interop_required() => {
            panic!("PostgreSQL TLS test required but initdb/pg_ctl are not installed")
        }
        None => {
            eprintln!(
                "skipping PostgreSQL TLS test: initdb/pg_ctl not found under /usr/lib/postgresql"
            );
            None
        }
    }
}

impl PgTls {
    fn run(&self, program: &str, args: &[&str]) -> std::process::Output {
        let exe = self.bin.join(program);
        let mut cmd = if self.as_postgres {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(exe);
            c
        } else {
            Command::new(exe)
        };
        cmd.args(args)
            .output()
            .unwrap_or_else(|e| panic!("cannot run {program}: {e}"))
    }

    /// Start a cluster whose certificate (from `ca`) names `localhost`.
    pub fn start(bin: PathBuf, ca: &TestCa) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let as_postgres = is_root();
        let owner = as_postgres.then(|| uid_gid("postgres").expect("a postgres user"));
        let chown = |p: &Path| {
            if let Some((u, g)) = owner {
                std::os::unix::fs::chown(p, Some(u), Some(g)).unwrap();
            }
        };
        chown(dir.path());
        let data = dir.path().join("data");
        let port = crate::procs::free_port();
        let pg = Self {
            port,
            bin,
            data: data.clone(),
            as_postgres,
            _dir: dir,
        };
        let out = pg.run(
            "initdb",
            &[
                "-D",
                data.to_str().unwrap(),
                "-A",
                "trust",
                "-U",
                "postgres",
                "--no-sync",
            ],
        );
        assert!(
            out.status.success(),
            "initdb: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let leaf = ca.issue("postgres", &["localhost"]);
        for (from, to) in [(&leaf.cert, "server.crt"), (&leaf.key, "server.key")] {
            let target = data.join(to);
            std::fs::copy(from, &target).unwrap();
            chown(&target);
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&target, std::fs::Permissions::from_mode(0o600)).unwrap();
        }
        let conf = format!(
            "\nport = {port}\nlisten_addresses = '127.0.0.1'\nunix_socket_directories = '{}'\n\
             ssl = on\nssl_cert_file = 'server.crt'\nssl_key_file = 'server.key'\nfsync = off\n",
            data.display()
        );
        let mut existing = std::fs::read_to_string(data.join("postgresql.conf")).unwrap();
        existing.push_str(&conf);
        std::fs::write(data.join("postgresql.conf"), existing).unwrap();
        pg.resume();
        pg
    }

    /// Start the (stopped) server again; returns once it accepts.
    pub fn resume(&self) {
        let data = self.data.to_str().unwrap();
        let log = self.data.join("server.log");
        let out = self.run(
            "pg_ctl",
            &[
                "-D",
                data,
                "-l",
                log.to_str().unwrap(),
                "-w",
                "-t",
                "60",
                "start",
            ],
        );
        assert!(
            out.status.success(),
            "pg_ctl start: {}{}",
            String::from_utf8_lossy(&out.stderr),
            std::fs::read_to_string(&log).unwrap_or_default()
        );
    }

    /// Stop the server at once (`immediate`: as a crash or a lost host
    /// looks to its clients); [`resume`](Self::resume) starts it again.
    pub fn halt(&self) {
        let data = self.data.to_str().unwrap();
        let out = self.run("pg_ctl", &["-D", data, "-m", "immediate", "-w", "stop"]);
        assert!(
            out.status.success(),
            "pg_ctl stop: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// A URL to the `postgres` database on `host` with `params`.
    pub fn url(&self, host: &str, params: &str) -> String {
        format!("postgres://postgres@{host}:{}/postgres?{params}", self.port)
    }
}

impl Drop for PgTls {
    fn drop(&mut self) {
        let data = self.data.to_str().unwrap_or_default().to_owned();
        let _ = self.run("pg_ctl", &["-D", &data, "-m", "immediate", "stop"]);
    }
}
