//! A throwaway `prometheus` (Debian's package) scraping given targets every
//! second, its query API, and `promtool` checks. The test's own process
//! owns it: killed on drop, data in a temporary directory.

use std::net::SocketAddr;
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;
use tokio::process::{Child, Command};

pub struct PrometheusServer {
    port: u16,
    _child: Child,
    _dir: tempfile::TempDir,
    http: reqwest::Client,
}

impl PrometheusServer {
    /// Start one that scrapes `targets` (job `edge`) every second.
    pub async fn start(targets: &[SocketAddr]) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let list = targets
            .iter()
            .map(|t| format!("'{t}'"))
            .collect::<Vec<_>>()
            .join(", ");
        let config = format!(
            "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\nscrape_configs:\n  - job_name: edge\n    static_configs:\n      - targets: [{list}]\n"
        );
        let config_path = dir.path().join("prometheus.yml");
        std::fs::write(&config_path, config).unwrap();
        let port = crate::procs::free_port();
        let child = Command::new("prometheus")
            .arg(format!("--config.file={}", config_path.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("prometheus (Debian's prometheus package) must be installed");
        let server = Self {
            port,
            _child: child,
            _dir: dir,
            http: reqwest::Client::builder().no_proxy().build().unwrap(),
        };
        crate::within("prometheus ready", async {
            loop {
                let ready = server
                    .http
                    .get(server.url("/-/ready"))
                    .send()
                    .await
                    .is_ok_and(|r| r.status().is_success());
                if ready {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
        .await;
        server
    }

    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    /// The sum of an instant query's sample values (`None`: no sample).
    pub async fn query(&self, promql: &str) -> Option<f64> {
        let res: serde_json::Value = self
            .http
            .get(self.url(&format!(
                "/api/v1/query?query={}",
                crate::browser::urlencode(promql)
            )))
            .send()
            .await
            .ok()?
            .json()
            .await
            .ok()?;
        assert_eq!(res["status"], "success", "query {promql}: {res}");
        let samples = res["data"]["result"].as_array()?;
        if samples.is_empty() {
            return None;
        }
        Some(
            samples
                .iter()
                .filter_map(|s| s["value"][1].as_str()?.parse::<f64>().ok())
                .sum(),
        )
    }

    /// Wait until `promql` has a sample of at least `min`.
    pub async fn wait_at_least(&self, promql: &str, min: f64) -> f64 {
        crate::within(&format!("prometheus sees {promql} >= {min}"), async {
            loop {
                if let Some(v) = self.query(promql).await {
                    if v >= min {
                        return v;
                    }
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        })
        .await
    }
}

/// `promtool check metrics` on an exposition; returns its verdict.
pub async fn check_metrics(text: &str) -> Result<(), String> {
    use tokio::io::AsyncWriteExt;
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool (Debian's prometheus package) must be installed");
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(text.as_bytes()).await.unwrap();
    drop(stdin);
    let out = child.wait_with_output().await.unwrap();
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

/// `promtool check rules` on a rules file; returns its verdict.
pub async fn check_rules(path: &Path) -> Result<String, String> {
    let out = Command::new("promtool")
        .args(["check", "rules"])
        .arg(path)
        .output()
        .await
        .expect("promtool (Debian's prometheus package) must be installed");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    if out.status.success() {
        Ok(text)
    } else {
        Err(text)
    }
}
