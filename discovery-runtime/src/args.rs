//! The flags every discovery service takes. Each binary flattens [`CommonArgs`] into its own
//! clap parser and adds the flags of its source.
use std::{net::SocketAddr, path::PathBuf, time::Duration};

use crate::client::ConnectOptions;

#[derive(clap::Args, Clone, Debug)]
pub struct CommonArgs {
    /// gloo-core's storage API: http://HOST:PORT, or https:// with --ca-file.
    #[arg(long, env = "GLOO_STORAGE", default_value = "http://127.0.0.1:9980")]
    pub storage: String,

    /// File holding this service's bearer token (a `discovery` token in gloo-core's tokens
    /// file). The GLOO_TOKEN environment variable is used when no file is given.
    #[arg(long, env = "GLOO_TOKEN_FILE")]
    pub token_file: Option<PathBuf>,

    /// PEM CA bundle to verify an https:// storage address with.
    #[arg(long)]
    pub ca_file: Option<PathBuf>,

    /// The owner name written objects carry; must match the token's owner. Defaults to the
    /// service's own name (e.g. discovery-k8s).
    #[arg(long)]
    pub owner: Option<String>,

    /// How often the source is read again when it cannot be watched, or re-listed when it can
    /// (e.g. 30s, 5m).
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    pub interval: Duration,

    /// Where /healthz, /readyz and /metrics are served.
    #[arg(long, default_value = "127.0.0.1:9092")]
    pub metrics_listen: SocketAddr,

    /// Only discover in these namespaces (repeat or comma-separate). Default: all.
    #[arg(long = "namespace", value_delimiter = ',')]
    pub namespaces: Vec<String>,

    /// Never discover in these namespaces (repeat or comma-separate).
    #[arg(long = "exclude-namespace", value_delimiter = ',')]
    pub exclude_namespaces: Vec<String>,

    /// Only discover objects whose labels match, e.g. "app=petstore,tier!=db,team".
    #[arg(long, short = 'l')]
    pub selector: Option<String>,

    /// Log filter (tracing's EnvFilter syntax), e.g. info or discovery_k8s=debug.
    #[arg(long, env = "RUST_LOG", default_value = "info")]
    pub log: String,
}

impl CommonArgs {
    pub fn token(&self) -> anyhow::Result<String> {
        if let Some(path) = &self.token_file {
            let t = std::fs::read_to_string(path)
                .map_err(|e| anyhow::anyhow!("reading --token-file {}: {e}", path.display()))?;
            let t = t.trim().to_string();
            anyhow::ensure!(!t.is_empty(), "--token-file {} is empty", path.display());
            return Ok(t);
        }
        match std::env::var("GLOO_TOKEN") {
            Ok(t) if !t.trim().is_empty() => Ok(t.trim().to_string()),
            _ => anyhow::bail!("no token: pass --token-file or set GLOO_TOKEN"),
        }
    }

    pub fn connect_options(&self) -> anyhow::Result<ConnectOptions> {
        Ok(ConnectOptions {
            server: self.storage.clone(),
            token: self.token()?,
            ca_file: self.ca_file.clone(),
            max_message_bytes: Some(256 << 20),
            connect_timeout: Some(Duration::from_secs(5)),
        })
    }

    /// Whether objects in `namespace` are to be discovered.
    pub fn namespace_selected(&self, namespace: &str) -> bool {
        (self.namespaces.is_empty() || self.namespaces.iter().any(|n| n == namespace))
            && !self.exclude_namespaces.iter().any(|n| n == namespace)
    }

    pub fn label_selector(&self) -> anyhow::Result<crate::selector::Selector> {
        match &self.selector {
            None => Ok(crate::selector::Selector::default()),
            Some(s) => s
                .parse()
                .map_err(|e| anyhow::anyhow!("--selector {s:?}: {e}")),
        }
    }
}

/// `500ms`, `30s`, `5m`, `1h`, or a bare number of seconds.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let (num, unit) = match s.find(|c: char| !c.is_ascii_digit() && c != '.') {
        Some(i) => (&s[..i], &s[i..]),
        None => (s, "s"),
    };
    let n: f64 = num
        .parse()
        .map_err(|_| format!("{s:?} is not a duration (e.g. 500ms, 30s, 5m)"))?;
    let secs = match unit {
        "ms" => n / 1000.0,
        "s" => n,
        "m" => n * 60.0,
        "h" => n * 3600.0,
        _ => return Err(format!("{s:?}: unknown unit {unit:?} (use ms, s, m or h)")),
    };
    Ok(Duration::from_secs_f64(secs))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(parse_duration("30s").unwrap(), Duration::from_secs(30));
        assert_eq!(parse_duration("5m").unwrap(), Duration::from_secs(300));
        assert_eq!(parse_duration("2").unwrap(), Duration::from_secs(2));
        assert!(parse_duration("5 parsecs").is_err());
        assert!(parse_duration("x").is_err());
    }
}
