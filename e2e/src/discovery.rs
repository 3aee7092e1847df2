//! A discovery service process (`discovery-k8s`, `discovery-lambda`, ...) started against a
//! test's gloo-core, with its own token file, metrics port and log.
use std::{
    net::SocketAddr,
    path::PathBuf,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use crate::{bin, free_port, http_get, Core};

pub struct Discovery {
    name: String,
    dir: tempfile::TempDir,
    pub metrics: SocketAddr,
    storage: String,
    token: String,
    args: Vec<String>,
    child: Option<Child>,
}

impl Discovery {
    /// Starts binary `name` with `token`, pointed at `core`, plus `args`; does not wait for
    /// readiness (see [`Discovery::wait_ready`]).
    pub fn start(name: &str, core: &Core, token: &str, args: &[&str]) -> Discovery {
        Discovery::start_at(name, &core.url(), token, args)
    }

    /// Like [`Discovery::start`] with an explicit storage URL (e.g. of a gloo-core not yet up).
    pub fn start_at(name: &str, storage: &str, token: &str, args: &[&str]) -> Discovery {
        let mut d = Discovery {
            name: name.into(),
            dir: tempfile::tempdir().expect("tempdir"),
            metrics: SocketAddr::from(([127, 0, 0, 1], free_port())),
            storage: storage.into(),
            token: token.into(),
            args: args.iter().map(|s| s.to_string()).collect(),
            child: None,
        };
        d.spawn();
        d
    }

    fn token_file(&self) -> PathBuf {
        self.dir.path().join("token")
    }

    fn log_file(&self) -> PathBuf {
        self.dir.path().join(format!("{}.log", self.name))
    }

    fn spawn(&mut self) {
        std::fs::write(self.token_file(), &self.token).expect("writing token file");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_file())
            .expect("log file");
        let child = Command::new(bin(&self.name))
            .arg("--storage")
            .arg(&self.storage)
            .arg("--token-file")
            .arg(self.token_file())
            .arg("--metrics-listen")
            .arg(self.metrics.to_string())
            .args(&self.args)
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("starting {}: {e}", self.name));
        self.child = Some(child);
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_file()).unwrap_or_default()
    }

    /// The process id, while it runs (benchmarks read its memory and CPU from /proc).
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Whether the process is still running.
    pub fn running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| c.try_wait().ok().flatten().is_none())
    }

    /// Waits until /readyz answers 200 (the first Sync succeeded).
    pub fn wait_ready(&mut self, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            assert!(self.running(), "{} exited; log:\n{}", self.name, self.log());
            if http_get(self.metrics, "/readyz").is_some_and(|(code, _)| code == 200) {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!(
            "{} not ready after {timeout:?}; log:\n{}",
            self.name,
            self.log()
        );
    }

    /// The /metrics text.
    pub fn metrics_text(&self) -> String {
        http_get(self.metrics, "/metrics")
            .map(|(_, body)| body)
            .unwrap_or_default()
    }

    /// The sum of every sample of metric `name` whose labels contain all of `labels`
    /// (e.g. `metric("discovery_writes_total", &[("op", "created")])`); 0 when absent.
    pub fn metric(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        metric_value(&self.metrics_text(), name, labels)
    }

    /// SIGTERM; waits for the exit and returns its code.
    pub fn terminate(&mut self) -> Option<i32> {
        let mut c = self.child.take()?;
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(c.id().to_string())
            .status();
        c.wait().ok().and_then(|s| s.code())
    }

    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    pub fn restart(&mut self) {
        self.kill9();
        self.spawn();
    }
}

impl Drop for Discovery {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// The sum of the samples of `name` in Prometheus/OpenMetrics text whose label set contains
/// every pair in `labels`.
pub fn metric_value(text: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    let mut sum = 0.0;
    for line in text.lines() {
        if line.starts_with('#') {
            continue;
        }
        let (series, value) = match line.rsplit_once(' ') {
            Some(x) => x,
            None => continue,
        };
        let (metric, label_text) = match series.split_once('{') {
            Some((m, rest)) => (m, rest.trim_end_matches('}')),
            None => (series, ""),
        };
        if metric != name {
            continue;
        }
        let has = |k: &str, v: &str| label_text.contains(&format!("{k}=\"{v}\""));
        if labels.iter().all(|(k, v)| has(k, v)) {
            sum += value.parse::<f64>().unwrap_or(0.0);
        }
    }
    sum
}

#[cfg(test)]
mod tests {
    #[test]
    fn metric_value_sums_matching_series() {
        let text = "# TYPE x counter\nx_total{op=\"created\"} 3\nx_total{op=\"deleted\"} 1\ny 2\n";
        assert_eq!(super::metric_value(text, "x_total", &[]), 4.0);
        assert_eq!(
            super::metric_value(text, "x_total", &[("op", "created")]),
            3.0
        );
        assert_eq!(super::metric_value(text, "y", &[]), 2.0);
        assert_eq!(super::metric_value(text, "z", &[]), 0.0);
    }
}
