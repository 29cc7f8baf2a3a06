//! Reading `/run/flannel/subnet.env` the way the flannel CNI plugin does (spec §8).
//!
//! Lines are split at the first `=`; only the six `FLANNEL_*` keys below matter and anything
//! else is ignored. CIDRs are reduced to their network address (`10.1.17.1/24` → `10.1.17.0/24`)
//! and repeated networks in a comma list are dropped. A key that appears twice: the last wins.

use ipnet::IpNet;
use std::path::{Path, PathBuf};

/// What the plugin takes from subnet.env.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubnetEnv {
    /// `FLANNEL_NETWORK`: the cluster network(s), de-duplicated, in file order.
    pub networks: Vec<IpNet>,
    /// `FLANNEL_SUBNET` as a network (`10.1.17.0/24`).
    pub subnet: Option<IpNet>,
    /// `FLANNEL_IPV6_NETWORK`.
    pub ipv6_networks: Vec<IpNet>,
    /// `FLANNEL_IPV6_SUBNET` as a network.
    pub ipv6_subnet: Option<IpNet>,
    /// `FLANNEL_MTU`.
    pub mtu: u32,
    /// `FLANNEL_IPMASQ`: true only for the literal text `true`.
    pub ipmasq: bool,
}

/// Why subnet.env could not be used; the texts match the Go plugin's.
#[derive(Debug, thiserror::Error)]
pub enum SubnetEnvError {
    /// The file could not be opened or read.
    #[error("{op} {path}: {reason}", path = .path.display(), reason = super::errno_text(.error))]
    Io {
        /// "open" or "read".
        op: &'static str,
        /// The file.
        path: PathBuf,
        /// The OS error.
        error: std::io::Error,
    },
    /// A network or subnet value is not a CIDR.
    #[error("invalid CIDR address: {0}")]
    Cidr(String),
    /// `FLANNEL_MTU` is not an unsigned 32-bit number.
    #[error("strconv.ParseUint: parsing {value:?}: {reason}")]
    Mtu {
        /// The text found.
        value: String,
        /// "invalid syntax" or "value out of range".
        reason: &'static str,
    },
    /// Required keys are absent.
    #[error("{path} is missing {keys}", path = .path.display())]
    Missing {
        /// The file.
        path: PathBuf,
        /// Comma-separated key names.
        keys: String,
    },
}

impl SubnetEnv {
    /// Read and parse the file at `path`.
    pub fn load(path: &Path) -> Result<SubnetEnv, SubnetEnvError> {
        use std::io::Read;
        let io = |op, error| SubnetEnvError::Io {
            op,
            path: path.to_path_buf(),
            error,
        };
        let mut file = std::fs::File::open(path).map_err(|e| io("open", e))?;
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes).map_err(|e| io("read", e))?;
        SubnetEnv::parse(&String::from_utf8_lossy(&bytes), path)
    }

    /// Parse file contents; `path` is only used in the "is missing" message.
    pub fn parse(text: &str, path: &Path) -> Result<SubnetEnv, SubnetEnvError> {
        let mut networks = None;
        let mut subnet = None;
        let mut ipv6_networks = None;
        let mut ipv6_subnet = None;
        let mut mtu = None;
        let mut ipmasq = None;
        for line in text.lines() {
            let (key, value) = line.split_once('=').unwrap_or((line, ""));
            match key {
                "FLANNEL_NETWORK" => networks = Some(parse_network_list(value)?),
                "FLANNEL_SUBNET" => subnet = Some(parse_cidr(value)?),
                "FLANNEL_IPV6_NETWORK" => ipv6_networks = Some(parse_network_list(value)?),
                "FLANNEL_IPV6_SUBNET" => ipv6_subnet = Some(parse_cidr(value)?),
                "FLANNEL_MTU" => mtu = Some(parse_mtu(value)?),
                "FLANNEL_IPMASQ" => ipmasq = Some(value == "true"),
                _ => {}
            }
        }
        let networks = networks.unwrap_or_default();
        let ipv6_networks = ipv6_networks.unwrap_or_default();
        let mut missing = Vec::new();
        if networks.is_empty() && ipv6_networks.is_empty() {
            missing.extend(["FLANNEL_NETWORK", "FLANNEL_IPV6_NETWORK"]);
        }
        if subnet.is_none() && ipv6_subnet.is_none() {
            missing.extend(["FLANNEL_SUBNET", "FLANNEL_IPV6_SUBNET"]);
        }
        if mtu.is_none() {
            missing.push("FLANNEL_MTU");
        }
        if ipmasq.is_none() {
            missing.push("FLANNEL_IPMASQ");
        }
        match (mtu, ipmasq) {
            (Some(mtu), Some(ipmasq)) if missing.is_empty() => Ok(SubnetEnv {
                networks,
                subnet,
                ipv6_networks,
                ipv6_subnet,
                mtu,
                ipmasq,
            }),
            _ => Err(SubnetEnvError::Missing {
                path: path.to_path_buf(),
                keys: missing.join(", "),
            }),
        }
    }
}

/// A CIDR reduced to its network address, as Go's `net.ParseCIDR` returns it.
fn parse_cidr(text: &str) -> Result<IpNet, SubnetEnvError> {
    text.parse::<IpNet>()
        .map(|net| net.trunc())
        .map_err(|_| SubnetEnvError::Cidr(text.to_string()))
}

fn parse_network_list(text: &str) -> Result<Vec<IpNet>, SubnetEnvError> {
    let mut out: Vec<IpNet> = Vec::new();
    for part in text.split(',') {
        let net = parse_cidr(part)?;
        if !out.contains(&net) {
            out.push(net);
        }
    }
    Ok(out)
}

fn parse_mtu(text: &str) -> Result<u32, SubnetEnvError> {
    let err = |reason| SubnetEnvError::Mtu {
        value: text.to_string(),
        reason,
    };
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return Err(err("invalid syntax"));
    }
    text.parse::<u32>().map_err(|_| err("value out of range"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<SubnetEnv, SubnetEnvError> {
        SubnetEnv::parse(text, Path::new("/run/flannel/subnet.env"))
    }

    #[test]
    fn reads_the_flanneld_file() {
        let env = parse(
            "FLANNEL_NETWORK=10.1.0.0/16\nFLANNEL_SUBNET=10.1.17.1/24\nFLANNEL_MTU=1450\nFLANNEL_IPMASQ=true\n",
        )
        .unwrap();
        assert_eq!(env.networks, vec!["10.1.0.0/16".parse::<IpNet>().unwrap()]);
        assert_eq!(env.subnet, Some("10.1.17.0/24".parse().unwrap()));
        assert_eq!(env.mtu, 1450);
        assert!(env.ipmasq);
        assert!(env.ipv6_networks.is_empty() && env.ipv6_subnet.is_none());
    }

    #[test]
    fn masks_host_bits_and_dedups_networks() {
        let env = parse(
            "X=1\r\nFLANNEL_NETWORK=10.1.2.3/16,10.1.0.0/16,10.2.0.0/16\r\nFLANNEL_SUBNET=10.1.17.9/24\nFLANNEL_MTU=1400\nFLANNEL_IPMASQ=True\n",
        )
        .unwrap();
        let nets: Vec<String> = env.networks.iter().map(|n| n.to_string()).collect();
        assert_eq!(nets, ["10.1.0.0/16", "10.2.0.0/16"]);
        assert_eq!(env.subnet.unwrap().to_string(), "10.1.17.0/24");
        assert!(!env.ipmasq, "only the literal 'true' enables ipmasq");
    }

    #[test]
    fn ipv6_only_is_enough() {
        let env = parse(
            "FLANNEL_IPV6_NETWORK=2001:cafe:42::/56\nFLANNEL_IPV6_SUBNET=2001:cafe:42::1/64\nFLANNEL_MTU=1450\nFLANNEL_IPMASQ=false\n",
        )
        .unwrap();
        assert_eq!(env.ipv6_subnet.unwrap().to_string(), "2001:cafe:42::/64");
        assert!(env.networks.is_empty() && env.subnet.is_none());
    }

    #[test]
    fn lists_only_the_missing_keys() {
        let e = parse("FLANNEL_NETWORK=10.1.0.0/16\nFLANNEL_IPMASQ=true\n").unwrap_err();
        assert_eq!(
            e.to_string(),
            "/run/flannel/subnet.env is missing FLANNEL_SUBNET, FLANNEL_IPV6_SUBNET, FLANNEL_MTU"
        );
        let e = parse("").unwrap_err();
        assert_eq!(
            e.to_string(),
            "/run/flannel/subnet.env is missing FLANNEL_NETWORK, FLANNEL_IPV6_NETWORK, FLANNEL_SUBNET, FLANNEL_IPV6_SUBNET, FLANNEL_MTU, FLANNEL_IPMASQ"
        );
    }

    #[test]
    fn bad_values_use_go_error_texts() {
        let e = parse("FLANNEL_SUBNET=10.1.17.1\n").unwrap_err();
        assert_eq!(e.to_string(), "invalid CIDR address: 10.1.17.1");
        let e = parse("FLANNEL_MTU=+1450\n").unwrap_err();
        assert_eq!(
            e.to_string(),
            "strconv.ParseUint: parsing \"+1450\": invalid syntax"
        );
        let e = parse("FLANNEL_MTU=99999999999\n").unwrap_err();
        assert!(e.to_string().ends_with("value out of range"));
    }

    #[test]
    fn missing_file_reads_like_go() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("subnet.env");
        let e = SubnetEnv::load(&path).unwrap_err();
        assert_eq!(
            e.to_string(),
            format!("open {}: no such file or directory", path.display())
        );
        let e = SubnetEnv::load(dir.path()).unwrap_err();
        assert_eq!(
            e.to_string(),
            format!("read {}: is a directory", dir.path().display())
        );
    }
}
