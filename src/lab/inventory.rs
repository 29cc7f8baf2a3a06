//! The lab's kubeasz-format (3.x) inventory: the same groups and `[all:vars]` names an operator's
//! `clusters/<name>/hosts` uses, pointed at the lab's nodes, key, etcd and mirror.

use super::state::Lab;
use std::fmt::Write;

/// Render the inventory text of a lab.
pub fn render(lab: &Lab) -> String {
    let mut out = String::new();
    let ssh_args = format!(
        "-o UserKnownHostsFile={} -o StrictHostKeyChecking=yes",
        lab.known_hosts_path.display()
    );
    // writing to a String cannot fail
    let _ = write!(
        out,
        "\
# kubeasz-format inventory of the installer lab {name:?} (lab index {index}).
# Written by `installer lab up`; `installer lab down --name {name}` removes it with the lab.
# The hosts are network namespaces on this machine, reachable from here on {node_cidr}.

# etcd members: one, on the first node (plain HTTP in the lab)
[etcd]
",
        name = lab.name,
        index = lab.index,
        node_cidr = lab.node_cidr,
    );
    for node in lab.nodes.iter().filter(|n| n.in_group("etcd")) {
        let _ = writeln!(out, "{}", node.ip);
    }
    out.push_str("\n# control-plane hosts\n[kube_master]\n");
    for node in lab.nodes.iter().filter(|n| n.in_group("kube_master")) {
        let _ = writeln!(out, "{} k8s_nodename={}", node.ip, node.name);
    }
    out.push_str("\n# worker hosts (a host may also be in [kube_master])\n[kube_node]\n");
    for node in lab.nodes.iter().filter(|n| n.in_group("kube_node")) {
        let _ = writeln!(out, "{} k8s_nodename={}", node.ip, node.name);
    }
    let _ = write!(
        out,
        "
[all:vars]
# --- connection: root with the lab's own key; host keys are pinned in the lab's known_hosts
ansible_user=root
ansible_ssh_private_key_file={key}
ansible_ssh_common_args=\"{ssh_args}\"
LAB_NAME=\"{name}\"
LAB_KNOWN_HOSTS=\"{known_hosts}\"

# --- network: flannel with its etcd datastore (the lab runs no API server)
CLUSTER_NETWORK=\"flannel\"
FLANNEL_DATASTORE=\"etcd\"
FLANNEL_BACKEND=\"vxlan\"
ETCD_ENDPOINTS=\"{etcd}\"
# pods: this lab's own block of 198.19.0.0/16; services: 198.18.(200+index).0/24
CLUSTER_CIDR=\"{cluster_cidr}\"
SERVICE_CIDR=\"{service_cidr}\"
NODE_CIDR_LEN=24

# --- paths (base_dir is inside the lab's state directory)
bin_dir=\"/opt/kube/bin\"
base_dir=\"{base_dir}\"
cluster_dir=\"{{{{ base_dir }}}}/clusters/{name}\"

# --- artifacts: CNI plugins from the lab's mirror (the .sha256 side file sits beside the tarball)
CNI_VERSION=\"{cni_version}\"
CNI_DOWNLOAD_URLS=[\"{cni_url}\"]
",
        key = lab.key_path.display(),
        name = lab.name,
        known_hosts = lab.known_hosts_path.display(),
        etcd = lab.etcd_endpoint,
        cluster_cidr = lab.cluster_cidr,
        service_cidr = lab.service_cidr,
        base_dir = lab.state_dir.join("kubeasz").display(),
        cni_version = lab.cni_version,
        cni_url = lab.cni_tarball_url,
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lab::up::describe_lab;

    fn section<'a>(text: &'a str, header: &str) -> Vec<&'a str> {
        text.lines()
            .skip_while(|l| *l != header)
            .skip(1)
            .take_while(|l| !l.starts_with('['))
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
            .collect()
    }

    #[test]
    fn groups_and_vars() {
        let lab = describe_lab("demo", 2, 3, (4, 1), "v1.1.1-debian");
        let text = render(&lab);
        assert_eq!(section(&text, "[etcd]"), ["198.18.2.11"]);
        assert_eq!(
            section(&text, "[kube_master]"),
            ["198.18.2.11 k8s_nodename=lab2-node1"]
        );
        assert_eq!(
            section(&text, "[kube_node]"),
            [
                "198.18.2.11 k8s_nodename=lab2-node1",
                "198.18.2.12 k8s_nodename=lab2-node2",
                "198.18.2.13 k8s_nodename=lab2-node3"
            ]
        );
        let vars = section(&text, "[all:vars]");
        for expected in [
            "ansible_user=root",
            "ansible_ssh_private_key_file=/run/installer-lab/demo/id_ed25519",
            "CLUSTER_NETWORK=\"flannel\"",
            "FLANNEL_DATASTORE=\"etcd\"",
            "FLANNEL_BACKEND=\"vxlan\"",
            "CLUSTER_CIDR=\"198.19.64.0/20\"",
            "SERVICE_CIDR=\"198.18.202.0/24\"",
            "NODE_CIDR_LEN=24",
            "bin_dir=\"/opt/kube/bin\"",
            "base_dir=\"/run/installer-lab/demo/kubeasz\"",
            "cluster_dir=\"{{ base_dir }}/clusters/demo\"",
            "CNI_VERSION=\"v1.1.1-debian\"",
            "CNI_DOWNLOAD_URLS=[\"http://198.18.2.1:8080/cni-plugins-linux-amd64-v1.1.1-debian.tgz\"]",
            "ETCD_ENDPOINTS=\"http://198.18.2.11:2379\"",
            "LAB_NAME=\"demo\"",
        ] {
            let expected = expected.replace("amd64", crate::lab::mirror::cni_arch());
            assert!(
                vars.contains(&expected.as_str()),
                "missing {expected} in\n{text}"
            );
        }
    }
}
