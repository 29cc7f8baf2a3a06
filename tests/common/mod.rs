//! Helpers shared by the CLI integration tests.
#![allow(dead_code)]

pub mod kube_sim;

use assert_cmd::Command;
use std::path::{Path, PathBuf};

/// The repository root.
pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// A path under the repository root.
pub fn repo(rel: &str) -> PathBuf {
    root().join(rel)
}

/// The installer binary, with Ansible's inventory variable cleared. `INSTALLER_TEST_BIN`
/// overrides the path (useful when several worktrees share one cargo target directory).
pub fn installer() -> Command {
    let mut cmd = match std::env::var_os("INSTALLER_TEST_BIN") {
        Some(p) => Command::new(p),
        None => Command::cargo_bin("installer").expect("binary built"),
    };
    cmd.env_remove("ANSIBLE_INVENTORY");
    cmd
}

/// Write `text` to `name` in `dir` and return the path.
pub fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).expect("mkdir");
    }
    std::fs::write(&path, text).expect("write fixture");
    path
}

/// A small valid kubeasz 3.x inventory; `extra` lines are appended to `[all:vars]`.
pub fn inventory(extra: &str) -> String {
    format!(
        "[etcd]\n10.0.0.1 NODE_NAME=etcd1\n\n[kube_master]\n10.0.0.1 k8s_nodename='m1'\n\n\
         [kube_node]\n10.0.0.2 k8s_nodename='w1'\n10.0.0.3 k8s_nodename='w2'\n\n\
         [all:vars]\nCLUSTER_NETWORK=\"flannel\"\nCLUSTER_CIDR=\"172.20.0.0/16\"\n\
         SERVICE_CIDR=\"10.68.0.0/16\"\nbin_dir=\"/opt/kube/bin\"\nbase_dir=\"/etc/kubeasz\"\n\
         cluster_dir=\"{{{{ base_dir }}}}/clusters/c1\"\n{extra}\n"
    )
}
pub mod fake_apiserver;
