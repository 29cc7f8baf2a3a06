//! installer: kubeasz-style Kubernetes network installs (flannel first) without Ansible.
//!
//! See `docs/architecture.md` for how the modules fit together.

pub mod agent;
pub mod artifact;
pub mod cli;
pub mod cluster;
pub mod cni;
pub mod etcd_gateway;
pub mod inventory;
pub mod kube_setup;
pub mod kubeapi;
pub mod lab;
pub mod network;
pub mod node_cli;
pub mod remote;
pub mod render;
pub mod role;
pub mod setup;
pub mod supervise;
pub mod template;
pub mod vars;
pub mod verify;
