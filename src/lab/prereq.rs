//! Prerequisites of the lab: which programs and files it needs, which Debian package provides
//! each, and one message naming every missing package. The lab never installs anything itself.

use std::ffi::OsStr;
use std::fmt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

/// What the lab needs: a command found on the search path, or a file at a fixed path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Need {
    /// An executable looked up in the search directories.
    Command(&'static str),
    /// A file at an absolute path.
    File(&'static str),
}

impl fmt::Display for Need {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Need::Command(name) | Need::File(name) => f.write_str(name),
        }
    }
}

/// One requirement and the Debian package that satisfies it.
#[derive(Debug, Clone, Copy)]
pub struct Requirement {
    /// What must exist.
    pub need: Need,
    /// The apt package that provides it.
    pub package: &'static str,
}

const fn cmd(name: &'static str, package: &'static str) -> Requirement {
    Requirement {
        need: Need::Command(name),
        package,
    }
}

const fn file(path: &'static str, package: &'static str) -> Requirement {
    Requirement {
        need: Need::File(path),
        package,
    }
}

/// The CNI plugins packed into the lab's artifact tarball.
pub const CNI_PLUGINS: [&str; 4] = ["bridge", "host-local", "loopback", "portmap"];
/// Where Debian's containernetworking-plugins puts them.
pub const CNI_DIR: &str = "/usr/lib/cni";

/// Everything the lab (and what runs on its nodes) needs, in the order messages list it.
pub const REQUIREMENTS: &[Requirement] = &[
    cmd("ip", "iproute2"),
    cmd("sshd", "openssh-server"),
    cmd("ssh-keygen", "openssh-client"),
    cmd("ssh", "openssh-client"),
    cmd("etcd", "etcd-server"),
    file("/usr/lib/cni/bridge", "containernetworking-plugins"),
    file("/usr/lib/cni/host-local", "containernetworking-plugins"),
    file("/usr/lib/cni/loopback", "containernetworking-plugins"),
    file("/usr/lib/cni/portmap", "containernetworking-plugins"),
    cmd("iptables", "iptables"),
    cmd("ping", "iputils-ping"),
    cmd("nsenter", "util-linux"),
    cmd("unshare", "util-linux"),
    cmd("setsid", "util-linux"),
    cmd("mount", "mount"),
];

/// Packages that are missing, with what was looked for; its `Display` is the one message the
/// user sees.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct MissingPrerequisites {
    /// `(what was not found, package that provides it)` in requirement order.
    pub missing: Vec<(String, &'static str)>,
}

impl MissingPrerequisites {
    /// The missing packages, each once, in requirement order.
    pub fn packages(&self) -> Vec<&'static str> {
        let mut packages: Vec<&'static str> = Vec::new();
        for (_, package) in &self.missing {
            if !packages.contains(package) {
                packages.push(package);
            }
        }
        packages
    }
}

impl fmt::Display for MissingPrerequisites {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let packages = self.packages();
        let details: Vec<String> = packages
            .iter()
            .map(|package| {
                let what: Vec<&str> = self
                    .missing
                    .iter()
                    .filter(|(_, p)| p == package)
                    .map(|(w, _)| w.as_str())
                    .collect();
                format!("{package} (for {})", what.join(", "))
            })
            .collect();
        write!(
            f,
            "the lab needs packages that are not installed: {}\ninstall them with: apt-get install -y {}",
            details.join(", "),
            packages.join(" ")
        )
    }
}

/// Absolute paths of the programs the lab runs.
#[derive(Debug, Clone)]
pub struct Tools {
    /// iproute2 `ip`.
    pub ip: PathBuf,
    /// OpenSSH server (must be run by absolute path).
    pub sshd: PathBuf,
    /// Key generator.
    pub ssh_keygen: PathBuf,
    /// etcd server.
    pub etcd: PathBuf,
    /// util-linux `nsenter`.
    pub nsenter: PathBuf,
    /// util-linux `unshare`.
    pub unshare: PathBuf,
    /// util-linux `setsid`.
    pub setsid: PathBuf,
    /// `mount`.
    pub mount: PathBuf,
    /// Directory holding the Debian CNI plugins.
    pub cni_dir: PathBuf,
}

/// Where requirements are looked up: directories for commands and a root for fixed files.
#[derive(Debug, Clone)]
pub struct Probe {
    search_dirs: Vec<PathBuf>,
    root: PathBuf,
}

/// Directories searched after `PATH`: sshd lives in sbin, which a user's PATH often lacks.
const EXTRA_DIRS: [&str; 6] = [
    "/usr/local/sbin",
    "/usr/local/bin",
    "/usr/sbin",
    "/usr/bin",
    "/sbin",
    "/bin",
];

impl Probe {
    /// The running system: `$PATH` plus the usual sbin/bin directories, files under `/`.
    pub fn system() -> Self {
        let path = std::env::var_os("PATH").unwrap_or_default();
        Self::with_path(&path, Path::new("/"))
    }

    /// A probe over a given `PATH` value and filesystem root (tests use a fake tree). The fixed
    /// sbin/bin directories are looked up under `root` too.
    pub fn with_path(path_var: &OsStr, root: &Path) -> Self {
        let mut search_dirs: Vec<PathBuf> = std::env::split_paths(path_var)
            .filter(|dir| !dir.as_os_str().is_empty())
            .collect();
        for dir in EXTRA_DIRS {
            let rebased = root.join(dir.trim_start_matches('/'));
            if !search_dirs.contains(&rebased) {
                search_dirs.push(rebased);
            }
        }
        Probe {
            search_dirs,
            root: root.to_path_buf(),
        }
    }

    /// Find one requirement; `None` when it is missing.
    pub fn locate(&self, need: Need) -> Option<PathBuf> {
        match need {
            Need::Command(name) => self
                .search_dirs
                .iter()
                .map(|dir| dir.join(name))
                .find(|candidate| is_executable(candidate)),
            Need::File(path) => {
                let candidate = self.root.join(path.trim_start_matches('/'));
                is_executable(&candidate).then_some(candidate)
            }
        }
    }

    /// Check every requirement; on success return the resolved tool paths.
    pub fn check(&self) -> Result<Tools, MissingPrerequisites> {
        let missing: Vec<(String, &'static str)> = REQUIREMENTS
            .iter()
            .filter(|req| self.locate(req.need).is_none())
            .map(|req| (req.need.to_string(), req.package))
            .collect();
        if !missing.is_empty() {
            return Err(MissingPrerequisites { missing });
        }
        let found = |name: &'static str| {
            self.locate(Need::Command(name))
                .unwrap_or_else(|| PathBuf::from(name))
        };
        Ok(Tools {
            ip: found("ip"),
            sshd: found("sshd"),
            ssh_keygen: found("ssh-keygen"),
            etcd: found("etcd"),
            nsenter: found("nsenter"),
            unshare: found("unshare"),
            setsid: found("setsid"),
            mount: found("mount"),
            cni_dir: self.root.join(CNI_DIR.trim_start_matches('/')),
        })
    }
}

fn is_executable(path: &Path) -> bool {
    std::fs::metadata(path)
        .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        .unwrap_or(false)
}

/// Whether this process runs as root (the lab needs it).
pub fn is_root() -> bool {
    rustix::process::geteuid().is_root()
}

/// Why the lab cannot run here (not root, or packages missing), or `None` when it can. Tests of
/// other modules call this to skip with a notice.
pub fn unavailable_reason() -> Option<String> {
    if !is_root() {
        return Some(super::LabError::NotRoot.to_string());
    }
    Probe::system()
        .check()
        .err()
        .map(|missing| missing.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fake_tree(skip: &[&str]) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        let bin = dir.path().join("fakebin");
        std::fs::create_dir_all(&bin).unwrap();
        std::fs::create_dir_all(dir.path().join("usr/lib/cni")).unwrap();
        for req in REQUIREMENTS {
            let name = req.need.to_string();
            if skip.contains(&name.as_str()) {
                continue;
            }
            let path = match req.need {
                Need::Command(c) => bin.join(c),
                Need::File(f) => dir.path().join(f.trim_start_matches('/')),
            };
            std::fs::write(&path, "#!/bin/sh\n").unwrap();
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        }
        dir
    }

    #[test]
    fn complete_tree_resolves_tools() {
        let dir = fake_tree(&[]);
        let probe = Probe::with_path(dir.path().join("fakebin").as_os_str(), dir.path());
        let tools = probe.check().unwrap();
        assert_eq!(tools.sshd, dir.path().join("fakebin/sshd"));
        assert_eq!(tools.cni_dir, dir.path().join("usr/lib/cni"));
    }

    #[test]
    fn missing_packages_are_named_once_with_apt_command() {
        let dir = fake_tree(&[
            "sshd",
            "etcd",
            "/usr/lib/cni/bridge",
            "/usr/lib/cni/portmap",
        ]);
        let probe = Probe::with_path(dir.path().join("fakebin").as_os_str(), dir.path());
        let err = probe.check().unwrap_err();
        assert_eq!(
            err.packages(),
            [
                "openssh-server",
                "etcd-server",
                "containernetworking-plugins"
            ]
        );
        let msg = err.to_string();
        assert!(
            msg.contains(
                "install them with: apt-get install -y openssh-server etcd-server containernetworking-plugins"
            ),
            "{msg}"
        );
        assert!(
            msg.contains(
                "containernetworking-plugins (for /usr/lib/cni/bridge, /usr/lib/cni/portmap)"
            ),
            "{msg}"
        );
        assert!(!msg.contains("iproute2"), "{msg}");
    }

    #[test]
    fn non_executable_file_counts_as_missing() {
        let dir = fake_tree(&[]);
        let ip = dir.path().join("fakebin/ip");
        std::fs::set_permissions(&ip, std::fs::Permissions::from_mode(0o644)).unwrap();
        let probe = Probe::with_path(dir.path().join("fakebin").as_os_str(), dir.path());
        assert_eq!(probe.check().unwrap_err().packages(), ["iproute2"]);
    }

    #[test]
    fn empty_path_finds_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let probe = Probe::with_path(OsStr::new(""), dir.path());
        let err = probe.check().unwrap_err();
        assert_eq!(err.missing.len(), REQUIREMENTS.len());
    }
}
