//! The agent's settings: `--config FILE` (JSON written by setup from
//! `templates/flannel/agent.json.j2`) overlaid with flanneld-style flags (and their `FLANNELD_*`
//! environment variables), which win.

use super::datastore::etcd::{DEFAULT_ENDPOINTS, DEFAULT_PREFIX, DEFAULT_TTL, EtcdSettings};
use clap::Args;
use serde::Deserialize;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;
use thiserror::Error;

/// Default subnet file.
pub const DEFAULT_SUBNET_FILE: &str = "/run/flannel/subnet.env";
/// Default network config file (kubernetes datastore).
pub const DEFAULT_NET_CONF: &str = "/etc/kube-flannel/net-conf.json";

/// Settings that cannot be used.
#[derive(Debug, Error)]
pub enum SettingsError {
    /// The config file cannot be read.
    #[error("cannot read agent config {path}: {error}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        error: std::io::Error,
    },
    /// The config file is not valid.
    #[error("agent config {path} is not valid: {error}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// The JSON error (line and column).
        error: serde_json::Error,
    },
    /// A value is wrong.
    #[error("{0}")]
    Invalid(String),
}

/// flanneld-style options of `installer agent` (flags override the config file).
#[derive(Debug, Clone, Default, Args)]
pub struct AgentOptions {
    /// Agent config file (JSON, written by setup).
    #[arg(long, value_name = "FILE", global = true)]
    pub config: Option<PathBuf>,
    /// Interface (name or IPv4 address) to use; repeatable, tried in order.
    #[arg(long, value_name = "IFACE", env = "FLANNELD_IFACE", global = true)]
    pub iface: Vec<String>,
    /// Regex matched against interface addresses, then names; repeatable.
    #[arg(
        long,
        value_name = "REGEX",
        env = "FLANNELD_IFACE_REGEX",
        global = true
    )]
    pub iface_regex: Vec<String>,
    /// Address advertised to peers (default: the interface address).
    #[arg(long, value_name = "IP", env = "FLANNELD_PUBLIC_IP", global = true)]
    pub public_ip: Option<Ipv4Addr>,
    /// Install masquerade rules for traffic leaving the pod network.
    #[arg(long, value_name = "BOOL", num_args = 0..=1, default_missing_value = "true",
          env = "FLANNELD_IP_MASQ", global = true)]
    pub ip_masq: Option<bool>,
    /// Install the FLANNEL-FWD accept rules (default true).
    #[arg(long, value_name = "BOOL", num_args = 0..=1, default_missing_value = "true",
          env = "FLANNELD_IPTABLES_FORWARD_RULES", global = true)]
    pub iptables_forward_rules: Option<bool>,
    /// etcd endpoints, comma separated.
    #[arg(
        long,
        value_name = "URLS",
        env = "FLANNELD_ETCD_ENDPOINTS",
        global = true
    )]
    pub etcd_endpoints: Option<String>,
    /// etcd key prefix.
    #[arg(
        long,
        value_name = "PREFIX",
        env = "FLANNELD_ETCD_PREFIX",
        global = true
    )]
    pub etcd_prefix: Option<String>,
    /// etcd CA file.
    #[arg(long, value_name = "FILE", env = "FLANNELD_ETCD_CAFILE", global = true)]
    pub etcd_cafile: Option<PathBuf>,
    /// etcd client certificate.
    #[arg(
        long,
        value_name = "FILE",
        env = "FLANNELD_ETCD_CERTFILE",
        global = true
    )]
    pub etcd_certfile: Option<PathBuf>,
    /// etcd client key.
    #[arg(
        long,
        value_name = "FILE",
        env = "FLANNELD_ETCD_KEYFILE",
        global = true
    )]
    pub etcd_keyfile: Option<PathBuf>,
    /// etcd user name.
    #[arg(
        long,
        value_name = "USER",
        env = "FLANNELD_ETCD_USERNAME",
        global = true
    )]
    pub etcd_username: Option<String>,
    /// etcd password.
    #[arg(
        long,
        value_name = "PASSWORD",
        env = "FLANNELD_ETCD_PASSWORD",
        global = true
    )]
    pub etcd_password: Option<String>,
    /// Use the Kubernetes API as datastore (node podCIDR) instead of etcd.
    #[arg(long, global = true)]
    pub kube_subnet_mgr: bool,
    /// kubeconfig for the Kubernetes datastore.
    #[arg(
        long,
        value_name = "FILE",
        env = "FLANNELD_KUBECONFIG_FILE",
        global = true
    )]
    pub kubeconfig_file: Option<PathBuf>,
    /// Network config file (Kubernetes datastore).
    #[arg(
        long,
        value_name = "FILE",
        env = "FLANNELD_NET_CONFIG_PATH",
        global = true
    )]
    pub net_config_path: Option<PathBuf>,
    /// Where to write subnet.env.
    #[arg(long, value_name = "FILE", env = "FLANNELD_SUBNET_FILE", global = true)]
    pub subnet_file: Option<PathBuf>,
    /// Address (IP:PORT) of /healthz and /readyz; empty = off.
    #[arg(long, value_name = "ADDR", global = true)]
    pub healthz_addr: Option<String>,
    /// Renew the lease this many minutes before it expires (1..1439).
    #[arg(
        long,
        value_name = "MINUTES",
        env = "FLANNELD_SUBNET_LEASE_RENEW_MARGIN",
        global = true
    )]
    pub subnet_lease_renew_margin: Option<u64>,
    /// Seconds between iptables rule checks.
    #[arg(
        long,
        value_name = "SECONDS",
        env = "FLANNELD_IPTABLES_RESYNC",
        global = true
    )]
    pub iptables_resync: Option<u64>,
    /// Directory for the agent's log file (in addition to stderr).
    #[arg(long, value_name = "DIR", global = true)]
    pub log_dir: Option<PathBuf>,
    /// Lease TTL in seconds (tests; flannel uses 86400).
    #[arg(long, value_name = "SECONDS", hide = true, global = true)]
    pub lease_ttl: Option<u64>,
}

/// The config file, as `agent.json.j2` writes it. Unknown keys are ignored; empty strings mean
/// "not set".
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct AgentFile {
    /// Kubernetes node name.
    pub node_name: String,
    /// The node's inventory address (an IP or a resolvable name).
    pub node_address: String,
    /// Advertised address override.
    pub public_ip: String,
    /// `--iface` values.
    pub iface: Vec<String>,
    /// `--iface-regex` values.
    pub iface_regex: Vec<String>,
    /// `etcd` or `kubernetes`.
    pub datastore: String,
    /// etcd connection.
    pub etcd: Option<EtcdFile>,
    /// kubeconfig (kubernetes datastore).
    pub kubeconfig: Option<String>,
    /// Network config file (kubernetes datastore).
    pub net_conf_path: Option<String>,
    /// subnet.env path.
    pub subnet_file: Option<String>,
    /// `--ip-masq`.
    pub ip_masq: Option<bool>,
    /// healthz address (IP:PORT).
    pub healthz: Option<String>,
    /// Log directory.
    pub log_dir: Option<String>,
}

/// `etcd` section of the config file.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct EtcdFile {
    /// Client URLs.
    pub endpoints: Vec<String>,
    /// Key prefix.
    pub prefix: Option<String>,
    /// CA file.
    pub cafile: Option<String>,
    /// Client certificate.
    pub certfile: Option<String>,
    /// Client key.
    pub keyfile: Option<String>,
}

/// Which datastore.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DatastoreKind {
    /// etcd v3 (flannel's default mode).
    Etcd,
    /// The Kubernetes API (`--kube-subnet-mgr`).
    Kubernetes,
}

/// Everything the agent runs with.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Node name.
    pub node_name: String,
    /// Inventory address of the node (picks the interface).
    pub node_address: Option<String>,
    /// Advertised address override.
    pub public_ip: Option<Ipv4Addr>,
    /// `--iface`.
    pub ifaces: Vec<String>,
    /// `--iface-regex`.
    pub iface_regex: Vec<String>,
    /// Datastore.
    pub datastore: DatastoreKind,
    /// etcd connection.
    pub etcd: EtcdSettings,
    /// kubeconfig.
    pub kubeconfig: Option<PathBuf>,
    /// Network config file (kubernetes datastore).
    pub net_conf_path: PathBuf,
    /// subnet.env path.
    pub subnet_file: PathBuf,
    /// Masquerade.
    pub ip_masq: bool,
    /// Forward rules.
    pub forward_rules: bool,
    /// healthz address.
    pub healthz: Option<SocketAddr>,
    /// Log directory.
    pub log_dir: Option<PathBuf>,
    /// Renew margin.
    pub renew_margin: Duration,
    /// iptables resync period.
    pub iptables_resync: Duration,
    /// Lease TTL.
    pub lease_ttl: Duration,
}

fn nonempty(s: Option<String>) -> Option<String> {
    s.filter(|v| !v.trim().is_empty())
}

/// Read the config file.
pub fn read_file(path: &Path) -> Result<AgentFile, SettingsError> {
    let text = std::fs::read(path).map_err(|error| SettingsError::Read {
        path: path.to_path_buf(),
        error,
    })?;
    serde_json::from_slice(&text).map_err(|error| SettingsError::Parse {
        path: path.to_path_buf(),
        error,
    })
}

impl Settings {
    /// Merge flags over the config file (when given) over flannel's defaults.
    pub fn resolve(opts: &AgentOptions) -> Result<Settings, SettingsError> {
        let file = match &opts.config {
            Some(p) => read_file(p)?,
            None => AgentFile::default(),
        };
        Self::merge(opts, file)
    }

    /// [`Settings::resolve`] with the file already read.
    pub fn merge(opts: &AgentOptions, file: AgentFile) -> Result<Settings, SettingsError> {
        let public_ip = match (opts.public_ip, nonempty(Some(file.public_ip.clone()))) {
            (Some(ip), _) => Some(ip),
            (None, Some(s)) => Some(s.trim().parse().map_err(|_| {
                SettingsError::Invalid(format!(
                    "public_ip {s:?} in the agent config is not an IPv4 address"
                ))
            })?),
            (None, None) => None,
        };
        let datastore = if opts.kube_subnet_mgr {
            DatastoreKind::Kubernetes
        } else {
            match file.datastore.trim() {
                "" | "etcd" => DatastoreKind::Etcd,
                "kubernetes" => DatastoreKind::Kubernetes,
                other => {
                    return Err(SettingsError::Invalid(format!(
                        "datastore {other:?} in the agent config is not \"etcd\" or \"kubernetes\""
                    )));
                }
            }
        };
        let fe = file.etcd.unwrap_or_default();
        let path = |flag: &Option<PathBuf>, file: Option<String>| {
            flag.clone().or_else(|| nonempty(file).map(PathBuf::from))
        };
        let endpoints: Vec<String> = match &opts.etcd_endpoints {
            Some(list) => list
                .split(',')
                .map(|s| s.trim().to_string())
                .filter(|s| !s.is_empty())
                .collect(),
            None if !fe.endpoints.is_empty() => fe.endpoints.clone(),
            None => DEFAULT_ENDPOINTS.iter().map(|s| s.to_string()).collect(),
        };
        let etcd = EtcdSettings {
            endpoints,
            prefix: opts
                .etcd_prefix
                .clone()
                .or(nonempty(fe.prefix))
                .unwrap_or_else(|| DEFAULT_PREFIX.into()),
            cafile: path(&opts.etcd_cafile, fe.cafile),
            certfile: path(&opts.etcd_certfile, fe.certfile),
            keyfile: path(&opts.etcd_keyfile, fe.keyfile),
            username: opts.etcd_username.clone(),
            password: opts.etcd_password.clone(),
        };
        let healthz_text = opts.healthz_addr.clone().or(file.healthz);
        let healthz = match nonempty(healthz_text) {
            None => None,
            Some(s) => Some(s.trim().parse::<SocketAddr>().map_err(|_| {
                SettingsError::Invalid(format!(
                    "healthz address {s:?} is not IP:PORT (e.g. 127.0.0.1:9402)"
                ))
            })?),
        };
        let margin = opts.subnet_lease_renew_margin.unwrap_or(60);
        if !(1..=1439).contains(&margin) {
            return Err(SettingsError::Invalid(format!(
                "--subnet-lease-renew-margin {margin} is out of range: use 1..1439 minutes"
            )));
        }
        let resync = opts.iptables_resync.unwrap_or(5);
        if resync == 0 {
            return Err(SettingsError::Invalid(
                "--iptables-resync must be at least 1 second".into(),
            ));
        }
        let ttl = opts
            .lease_ttl
            .map(Duration::from_secs)
            .unwrap_or(DEFAULT_TTL);
        if ttl < Duration::from_secs(2) {
            return Err(SettingsError::Invalid(
                "--lease-ttl must be at least 2 seconds".into(),
            ));
        }
        Ok(Settings {
            node_name: nonempty(Some(file.node_name)).unwrap_or_default(),
            node_address: nonempty(Some(file.node_address)),
            public_ip,
            ifaces: if opts.iface.is_empty() {
                file.iface.into_iter().filter(|s| !s.is_empty()).collect()
            } else {
                opts.iface.clone()
            },
            iface_regex: if opts.iface_regex.is_empty() {
                file.iface_regex
                    .into_iter()
                    .filter(|s| !s.is_empty())
                    .collect()
            } else {
                opts.iface_regex.clone()
            },
            datastore,
            etcd,
            kubeconfig: path(&opts.kubeconfig_file, file.kubeconfig),
            net_conf_path: path(&opts.net_config_path, file.net_conf_path)
                .unwrap_or_else(|| DEFAULT_NET_CONF.into()),
            subnet_file: path(&opts.subnet_file, file.subnet_file)
                .unwrap_or_else(|| DEFAULT_SUBNET_FILE.into()),
            ip_masq: opts.ip_masq.or(file.ip_masq).unwrap_or(false),
            forward_rules: opts.iptables_forward_rules.unwrap_or(true),
            healthz,
            log_dir: path(&opts.log_dir, file.log_dir),
            renew_margin: Duration::from_secs(margin * 60),
            iptables_resync: Duration::from_secs(resync),
            lease_ttl: ttl,
        })
    }

    /// The node address resolved to IPv4 addresses (an IP, or a name looked up now).
    pub fn node_addresses(&self) -> Vec<Ipv4Addr> {
        let Some(addr) = &self.node_address else {
            return Vec::new();
        };
        if let Ok(ip) = addr.parse::<Ipv4Addr>() {
            return vec![ip];
        }
        use std::net::ToSocketAddrs;
        (addr.as_str(), 0)
            .to_socket_addrs()
            .map(|it| {
                it.filter_map(|sa| match sa.ip() {
                    std::net::IpAddr::V4(v4) => Some(v4),
                    _ => None,
                })
                .collect()
            })
            .unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ETCD_FILE: &str = r#"{
      "node_name": "lab0-node1",
      "node_address": "198.18.0.11",
      "public_ip": "",
      "iface": [],
      "iface_regex": [],
      "datastore": "etcd",
      "etcd": {
        "endpoints": ["https://198.18.0.11:2379"],
        "prefix": "/coreos.com/network",
        "cafile": "/etc/kubernetes/ssl/ca.pem",
        "certfile": "/etc/kubernetes/ssl/etcd.pem",
        "keyfile": "/etc/kubernetes/ssl/etcd-key.pem"
      },
      "net_conf_path": "/etc/kube-flannel/net-conf.json",
      "subnet_file": "/run/flannel/subnet.env",
      "ip_masq": true,
      "healthz": "127.0.0.1:9402",
      "log_dir": "/var/log/installer"
    }"#;

    fn file(text: &str) -> AgentFile {
        serde_json::from_str(text).unwrap()
    }

    #[test]
    fn template_shaped_file_resolves() {
        let s = Settings::merge(&AgentOptions::default(), file(ETCD_FILE)).unwrap();
        assert_eq!(s.node_name, "lab0-node1");
        assert_eq!(s.node_addresses(), vec![Ipv4Addr::new(198, 18, 0, 11)]);
        assert_eq!(s.public_ip, None);
        assert_eq!(s.datastore, DatastoreKind::Etcd);
        assert_eq!(s.etcd.endpoints, ["https://198.18.0.11:2379"]);
        assert_eq!(
            s.etcd.cafile.as_deref(),
            Some(Path::new("/etc/kubernetes/ssl/ca.pem"))
        );
        assert!(s.ip_masq);
        assert_eq!(s.healthz, Some("127.0.0.1:9402".parse().unwrap()));
        assert_eq!(s.renew_margin, Duration::from_secs(3600));
        assert_eq!(s.iptables_resync, Duration::from_secs(5));
        assert_eq!(s.lease_ttl, Duration::from_secs(86400));
        assert!(s.forward_rules);
    }

    #[test]
    fn flags_override_the_file() {
        let opts = AgentOptions {
            iface: vec!["eth1".into()],
            public_ip: Some(Ipv4Addr::new(203, 0, 113, 5)),
            ip_masq: Some(false),
            etcd_endpoints: Some("http://a:2379, http://b:2379".into()),
            etcd_prefix: Some("/x".into()),
            subnet_file: Some("/tmp/s.env".into()),
            healthz_addr: Some(String::new()),
            subnet_lease_renew_margin: Some(5),
            iptables_resync: Some(2),
            lease_ttl: Some(10),
            ..Default::default()
        };
        let s = Settings::merge(&opts, file(ETCD_FILE)).unwrap();
        assert_eq!(s.ifaces, ["eth1"]);
        assert_eq!(s.public_ip, Some(Ipv4Addr::new(203, 0, 113, 5)));
        assert!(!s.ip_masq);
        assert_eq!(s.etcd.endpoints, ["http://a:2379", "http://b:2379"]);
        assert_eq!(s.etcd.prefix, "/x");
        assert_eq!(s.subnet_file, PathBuf::from("/tmp/s.env"));
        assert_eq!(s.healthz, None, "an empty flag turns healthz off");
        assert_eq!(s.renew_margin, Duration::from_secs(300));
        assert_eq!(s.lease_ttl, Duration::from_secs(10));
    }

    #[test]
    fn flannel_defaults_without_a_file() {
        let s = Settings::merge(&AgentOptions::default(), AgentFile::default()).unwrap();
        assert_eq!(s.etcd.endpoints, DEFAULT_ENDPOINTS);
        assert_eq!(s.etcd.prefix, "/coreos.com/network");
        assert_eq!(s.subnet_file, PathBuf::from("/run/flannel/subnet.env"));
        assert!(!s.ip_masq);
        assert_eq!(s.healthz, None);
    }

    #[test]
    fn bad_values_are_named() {
        let e = Settings::merge(
            &AgentOptions {
                subnet_lease_renew_margin: Some(1440),
                ..Default::default()
            },
            AgentFile::default(),
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("1..1439"), "{e}");
        let mut f = file(ETCD_FILE);
        f.datastore = "consul".into();
        let e = Settings::merge(&AgentOptions::default(), f)
            .unwrap_err()
            .to_string();
        assert!(e.contains("\"consul\""), "{e}");
        let mut f = file(ETCD_FILE);
        f.public_ip = "nat.example".into();
        assert!(Settings::merge(&AgentOptions::default(), f).is_err());
        let mut f = file(ETCD_FILE);
        f.healthz = Some("9402".into());
        assert!(Settings::merge(&AgentOptions::default(), f).is_err());
    }

    #[test]
    fn kubernetes_file_shape() {
        let f = file(
            r#"{"node_name":"n1","node_address":"10.0.0.1","datastore":"kubernetes",
                "kubeconfig":"/etc/kube-flannel/kubeconfig","ip_masq":false,"healthz":"127.0.0.1:9402"}"#,
        );
        let s = Settings::merge(&AgentOptions::default(), f).unwrap();
        assert_eq!(s.datastore, DatastoreKind::Kubernetes);
        assert_eq!(
            s.kubeconfig.as_deref(),
            Some(Path::new("/etc/kube-flannel/kubeconfig"))
        );
        assert_eq!(s.net_conf_path, PathBuf::from(DEFAULT_NET_CONF));
    }
}
