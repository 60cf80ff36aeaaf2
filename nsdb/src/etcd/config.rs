//! How to reach etcd: endpoints, key prefix, credentials and TLS, from
//! flags or an `etcd://` URL.

use std::path::PathBuf;
use std::time::Duration;

use etcd_client as ec;

use crate::error::StoreError;

/// The key prefix used when none is configured.
pub const DEFAULT_PREFIX: &str = "/plexus/";

/// Where system CA bundles usually live (used for `etcds://` without a CA file).
const SYSTEM_CA_BUNDLES: [&str; 3] = [
    "/etc/ssl/certs/ca-certificates.crt",
    "/etc/pki/tls/certs/ca-bundle.crt",
    "/etc/ssl/cert.pem",
];

/// How to reach an etcd cluster and where in its keyspace Plexus lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EtcdConfig {
    /// Client endpoints, `http(s)://host:port` (or `host:port`).
    pub endpoints: Vec<String>,
    /// Key prefix of every Plexus key; starts and ends with '/'.
    pub prefix: String,
    /// User name for etcd authentication.
    pub user: Option<String>,
    /// Password for etcd authentication.
    pub password: Option<String>,
    /// PEM file of the CA that signed the server certificates (enables TLS).
    pub ca_file: Option<PathBuf>,
    /// PEM client certificate for mutual TLS (needs `key_file`).
    pub cert_file: Option<PathBuf>,
    /// PEM private key of `cert_file`.
    pub key_file: Option<PathBuf>,
    /// How long to wait for a connection to an endpoint.
    pub connect_timeout: Duration,
}

impl Default for EtcdConfig {
    fn default() -> Self {
        EtcdConfig {
            endpoints: vec!["http://127.0.0.1:2379".to_string()],
            prefix: DEFAULT_PREFIX.to_string(),
            user: None,
            password: None,
            ca_file: None,
            cert_file: None,
            key_file: None,
            connect_timeout: Duration::from_secs(5),
        }
    }
}

impl EtcdConfig {
    /// Parses `etcd://HOST:PORT[,HOST:PORT...][/PREFIX]` (`etcds://` for TLS).
    pub fn from_url(url: &str) -> Result<EtcdConfig, StoreError> {
        let bad = |why: String| StoreError::Config(format!("bad etcd URL '{url}': {why}"));
        let (scheme, rest) = match url.split_once("://") {
            Some(("etcd", rest)) => ("http", rest),
            Some(("etcds", rest)) => ("https", rest),
            _ => return Err(bad("expected etcd[s]://HOST:PORT[,...][/PREFIX]".into())),
        };
        let (hosts, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
        let mut endpoints = Vec::new();
        for host in hosts.split(',') {
            let (name, port) = host.rsplit_once(':').unwrap_or((host, ""));
            let bad_char = |c: char| c.is_whitespace() || "@?#".contains(c);
            if name.is_empty() || name.contains(bad_char) {
                return Err(bad(format!("endpoint '{host}' needs a valid HOST:PORT")));
            }
            if !matches!(port.parse::<u16>(), Ok(p) if p > 0) {
                return Err(bad(format!("endpoint '{host}' has no valid port")));
            }
            endpoints.push(format!("{scheme}://{host}"));
        }
        if path.contains(|c: char| c.is_whitespace() || "?#".contains(c)) {
            return Err(bad("no '?', '#' or whitespace in the prefix".into()));
        }
        let trimmed = path.trim_matches('/');
        let prefix = match trimmed {
            "" => DEFAULT_PREFIX.to_string(),
            _ => format!("/{trimmed}/"),
        };
        Ok(EtcdConfig {
            endpoints,
            prefix,
            ..EtcdConfig::default()
        })
    }

    /// Builds the TLS options, or `None` when TLS is not in use.
    pub(super) fn tls_options(&self) -> Result<Option<ec::TlsOptions>, StoreError> {
        let https = self.endpoints.iter().any(|e| e.starts_with("https://"));
        if !https && self.ca_file.is_none() && self.cert_file.is_none() {
            return Ok(None);
        }
        let config = |m: String| StoreError::Config(m);
        if self.endpoints.iter().any(|e| e.starts_with("http://")) {
            return Err(config("TLS is on but an etcd endpoint is http://".into()));
        }
        let read = |path: &PathBuf| {
            std::fs::read(path).map_err(|e| config(format!("cannot read {}: {e}", path.display())))
        };
        let mut tls = ec::TlsOptions::new();
        let ca = match &self.ca_file {
            Some(path) => Some(read(path)?),
            None => SYSTEM_CA_BUNDLES
                .iter()
                .find_map(|path| std::fs::read(path).ok()),
        };
        if let Some(pem) = ca {
            tls = tls.ca_certificate(ec::Certificate::from_pem(pem));
        }
        match (&self.cert_file, &self.key_file) {
            (Some(cert), Some(key)) => {
                tls = tls.identity(ec::Identity::from_pem(read(cert)?, read(key)?));
            }
            (None, None) => {}
            _ => return Err(config("etcd cert_file and key_file go together".into())),
        }
        Ok(Some(tls))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(url: &str) -> (Vec<String>, String) {
        let config = EtcdConfig::from_url(url).unwrap();
        (config.endpoints, config.prefix)
    }

    #[test]
    fn urls_parse() {
        let plain = vec!["http://127.0.0.1:2379".to_string()];
        assert_eq!(
            parse("etcd://127.0.0.1:2379"),
            (plain.clone(), DEFAULT_PREFIX.into())
        );
        assert_eq!(
            parse("etcd://127.0.0.1:2379/"),
            (plain, DEFAULT_PREFIX.into())
        );
        let (endpoints, prefix) = parse("etcds://a:2379,b.example:2380/x/y");
        assert_eq!(endpoints, ["https://a:2379", "https://b.example:2380"]);
        assert_eq!(prefix, "/x/y/");
        assert_eq!(parse("etcd://a:1/p/").1, "/p/");
        assert_eq!(parse("etcd://[::1]:1//p").1, "/p/");
    }

    #[test]
    fn bad_urls_are_config_errors() {
        for url in [
            "http://a:1",
            "etcd://",
            "etcd:///p",
            "etcd://a",
            "etcd://a:x",
            "etcd://a:0",
            "etcd://a:70000",
            "etcd://a:1,,b:2",
            "etcd://:1",
            "etcd://u@a:1",
            "etcd://a:1/p?x",
        ] {
            match EtcdConfig::from_url(url) {
                Err(StoreError::Config(m)) => assert!(m.contains(url), "{m}"),
                other => panic!("{url}: {other:?}"),
            }
        }
    }
}
