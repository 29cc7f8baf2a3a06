//! The flannel role: which templates become which files, where, and when.

use crate::cluster::{AgentMode, Cluster, Datastore};
use crate::render::{Format, OutputSpec, Target};

/// Plugin binaries setup pushes into `bin_dir` next to this binary (as `flannel`).
pub const CNI_PLUGINS: &[&str] = &["bridge", "host-local", "loopback", "portmap"];

/// Where the CNI config goes on every node.
pub const CNI_CONFLIST_PATH: &str = "/etc/cni/net.d/10-flannel.conflist";
/// kubeasz's placeholder CNI config that sorts before ours and must go.
pub const CNI_DEFAULT_CONF_PATH: &str = "/etc/cni/net.d/10-default.conf";
/// The network config the agent reads in Kubernetes mode (flanneld's default path).
pub const NET_CONF_PATH: &str = "/etc/kube-flannel/net-conf.json";
/// The embedded agent's own configuration.
pub const AGENT_CONFIG_PATH: &str = "/etc/kube-flannel/agent.json";
/// The embedded agent's systemd unit.
pub const AGENT_UNIT_PATH: &str = "/etc/systemd/system/flannel-agent.service";

/// Every output of the flannel role for this cluster, in the order setup produces them.
pub fn outputs(cluster: &Cluster) -> Vec<OutputSpec> {
    let embedded = cluster.agent == AgentMode::Embedded;
    let mut out = Vec::new();
    if cluster.datastore == Datastore::Kubernetes || !embedded {
        out.push(OutputSpec {
            template: "kube-flannel.yaml.j2",
            target: Target::Cluster {
                deploy_path: "{{ cluster_dir }}/yml/flannel.yaml".into(),
            },
            format: Format::KubeYaml,
        });
    }
    out.push(OutputSpec {
        template: "10-flannel.conflist.j2",
        target: Target::NodeFile {
            path: CNI_CONFLIST_PATH.into(),
            mode: 0o644,
        },
        format: Format::Json,
    });
    if let Datastore::Etcd { prefix, .. } = &cluster.datastore {
        out.push(OutputSpec {
            template: "net-conf.json.j2",
            target: Target::EtcdKey {
                key: format!("{}/config", prefix.trim_end_matches('/')),
            },
            format: Format::Json,
        });
    } else if embedded {
        out.push(OutputSpec {
            template: "net-conf.json.j2",
            target: Target::NodeFile {
                path: NET_CONF_PATH.into(),
                mode: 0o644,
            },
            format: Format::Json,
        });
    }
    if embedded {
        out.push(OutputSpec {
            template: "agent.json.j2",
            target: Target::NodeFile {
                path: AGENT_CONFIG_PATH.into(),
                mode: 0o644,
            },
            format: Format::Json,
        });
        out.push(OutputSpec {
            template: "flannel-agent.service.j2",
            target: Target::NodeFile {
                path: AGENT_UNIT_PATH.into(),
                mode: 0o644,
            },
            format: Format::Text,
        });
    }
    out
}
