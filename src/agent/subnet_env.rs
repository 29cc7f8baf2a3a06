//! `/run/flannel/subnet.env` (flannel-spec §1): the exact text, an atomic 0644 write, and the
//! read-back of a previous run's values (subnet hint, §4; rule recycling, §6).

use ipnet::Ipv4Net;
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::Path;

/// The values subnet.env carries (IPv4 only).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubnetEnv {
    /// `FLANNEL_NETWORK`.
    pub network: Ipv4Net,
    /// The lease; written as `FLANNEL_SUBNET=<network+1>/<len>`.
    pub subnet: Ipv4Net,
    /// `FLANNEL_MTU`.
    pub mtu: u32,
    /// `FLANNEL_IPMASQ`.
    pub ip_masq: bool,
}

/// The first usable address of a subnet with its prefix: `10.1.17.0/24` → `10.1.17.1/24`.
pub fn gateway_cidr(subnet: Ipv4Net) -> String {
    let first = std::net::Ipv4Addr::from(u32::from(subnet.network()).wrapping_add(1));
    format!("{first}/{}", subnet.prefix_len())
}

impl SubnetEnv {
    /// The file's text, keys in flannel's order, `\n` terminated.
    pub fn render(&self) -> String {
        format!(
            "FLANNEL_NETWORK={}\nFLANNEL_SUBNET={}\nFLANNEL_MTU={}\nFLANNEL_IPMASQ={}\n",
            self.network.trunc(),
            gateway_cidr(self.subnet),
            self.mtu,
            self.ip_masq
        )
    }

    /// Write the file atomically (temp file in the same directory + rename), mode 0644 whatever
    /// the umask; parent directories are created 0755.
    pub fn write(&self, path: &Path) -> std::io::Result<()> {
        write_atomic(path, self.render().as_bytes(), 0o644)
    }
}

/// Write `contents` to `path` through a temp file in the same directory and a rename.
pub fn write_atomic(path: &Path, contents: &[u8], mode: u32) -> std::io::Result<()> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o755)
        .create(dir)?;
    let mut tmp = tempfile::Builder::new()
        .prefix(".subnet.env.")
        .tempfile_in(dir)?;
    tmp.write_all(contents)?;
    tmp.as_file().sync_all()?;
    tmp.as_file()
        .set_permissions(std::fs::Permissions::from_mode(mode))?;
    tmp.persist(path).map_err(|e| e.error)?;
    Ok(())
}

/// What a previous subnet.env says: FLANNEL_NETWORK and FLANNEL_SUBNET with host bits masked
/// (`10.1.17.1/24` → `10.1.17.0/24`). Missing file or keys give None.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PreviousEnv {
    /// `FLANNEL_NETWORK`.
    pub network: Option<Ipv4Net>,
    /// `FLANNEL_SUBNET`, as a network.
    pub subnet: Option<Ipv4Net>,
}

/// Parse dotenv-style text: `KEY=value` lines, optional quotes, `#` comments.
pub fn parse_previous(text: &str) -> PreviousEnv {
    let mut prev = PreviousEnv::default();
    for line in text.lines() {
        let line = line.trim();
        if line.starts_with('#') {
            continue;
        }
        let Some((key, value)) = line.split_once('=') else {
            continue;
        };
        let value = value.trim().trim_matches(|c| c == '"' || c == '\'');
        let net = || value.parse::<Ipv4Net>().ok().map(|n| n.trunc());
        match key.trim().trim_start_matches("export ") {
            "FLANNEL_NETWORK" => prev.network = net(),
            "FLANNEL_SUBNET" => prev.subnet = net(),
            _ => {}
        }
    }
    prev
}

/// Read a previous subnet.env (None when it does not exist or cannot be read).
pub fn read_previous(path: &Path) -> PreviousEnv {
    std::fs::read_to_string(path)
        .map(|t| parse_previous(&t))
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spec12_1_vxlan_subnet_env_bytes() {
        let env = SubnetEnv {
            network: "10.1.0.0/16".parse().unwrap(),
            subnet: "10.1.17.0/24".parse().unwrap(),
            mtu: 1450,
            ip_masq: true,
        };
        assert_eq!(
            env.render(),
            "FLANNEL_NETWORK=10.1.0.0/16\nFLANNEL_SUBNET=10.1.17.1/24\nFLANNEL_MTU=1450\nFLANNEL_IPMASQ=true\n"
        );
    }

    #[test]
    fn spec12_2_hostgw_without_masq() {
        let env = SubnetEnv {
            network: "10.1.2.3/16".parse().unwrap(),
            subnet: "10.1.18.0/24".parse().unwrap(),
            mtu: 1500,
            ip_masq: false,
        };
        assert_eq!(
            env.render(),
            "FLANNEL_NETWORK=10.1.0.0/16\nFLANNEL_SUBNET=10.1.18.1/24\nFLANNEL_MTU=1500\nFLANNEL_IPMASQ=false\n"
        );
    }

    #[test]
    fn spec1_write_is_atomic_and_0644_and_reads_back() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/dir/subnet.env");
        let env = SubnetEnv {
            network: "10.1.0.0/16".parse().unwrap(),
            subnet: "10.1.17.0/24".parse().unwrap(),
            mtu: 1450,
            ip_masq: true,
        };
        env.write(&path).unwrap();
        let meta = std::fs::metadata(&path).unwrap();
        assert_eq!(meta.permissions().mode() & 0o777, 0o644);
        assert_eq!(std::fs::read_to_string(&path).unwrap(), env.render());
        // no temp files left behind
        let names: Vec<_> = std::fs::read_dir(path.parent().unwrap())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from("subnet.env")]);
        let prev = read_previous(&path);
        assert_eq!(prev.network, Some("10.1.0.0/16".parse().unwrap()));
        assert_eq!(prev.subnet, Some("10.1.17.0/24".parse().unwrap()));
        assert_eq!(
            read_previous(&dir.path().join("missing")),
            PreviousEnv::default()
        );
    }

    #[test]
    fn previous_env_tolerates_quotes_comments_and_junk() {
        let p = parse_previous("# c\nFLANNEL_SUBNET=\"10.1.17.1/24\"\nJUNK\nFLANNEL_NETWORK=bad\n");
        assert_eq!(p.subnet, Some("10.1.17.0/24".parse().unwrap()));
        assert_eq!(p.network, None);
    }
}
