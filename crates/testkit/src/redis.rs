//! A throwaway `redis-server` (Debian's) on a free loopback port, with no
//! persistence, for tests of the multi-node mode; killed on drop. Tests
//! that need it carry `#[cfg_attr(not(any(has_redis, require_interop)),
//! ignore = …)]`.

use std::process::Stdio;
use std::time::Duration;
use tokio::process::{Child, Command};

/// A running redis-server.
pub struct RedisServer {
    pub port: u16,
    child: Option<Child>,
}

impl RedisServer {
    /// Start one on a free port and wait until it answers.
    pub async fn start() -> Self {
        let port = crate::procs::free_port();
        let mut server = Self { port, child: None };
        server.restart().await;
        server
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    /// Kill it (as a crash would); its data is gone.
    pub async fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill().await;
        }
    }

    /// Start it again on the same port.
    pub async fn restart(&mut self) {
        self.kill().await;
        let child = Command::new("redis-server")
            .args([
                "--port",
                &self.port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("redis-server (Debian's redis-server package) must be installed");
        self.child = Some(child);
        let client = redis::Client::open(self.url()).unwrap();
        crate::within("redis-server answers", async {
            loop {
                if let Ok(mut c) = client.get_multiplexed_async_connection().await {
                    let pong: Result<String, _> = redis::cmd("PING").query_async(&mut c).await;
                    if pong.is_ok() {
                        return;
                    }
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
        .await;
    }

    /// The node each device's lease names (`None`: no lease), in order.
    pub async fn lease_nodes(&self, devices: &[edge_core::DeviceId]) -> Vec<Option<String>> {
        let keys: Vec<String> = devices
            .iter()
            .map(|d| directory::leases::lease_key(*d))
            .collect();
        let values: Vec<Option<String>> = redis::cmd("MGET")
            .arg(&keys)
            .query_async(&mut self.conn().await)
            .await
            .unwrap();
        values
            .into_iter()
            .map(|v| v.and_then(|v| v.split(' ').next().map(str::to_owned)))
            .collect()
    }

    /// A plain connection for assertions.
    pub async fn conn(&self) -> redis::aio::MultiplexedConnection {
        redis::Client::open(self.url())
            .unwrap()
            .get_multiplexed_async_connection()
            .await
            .unwrap()
    }
}
