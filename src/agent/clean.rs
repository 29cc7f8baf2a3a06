//! `installer agent clean`: remove what the agent set up on this node — the `flannel.*` vxlan
//! devices (their neighbours, FDB entries and routes go with them), the host-gw and
//! DirectRouting routes into the Network, the iptables chains and their jumps, subnet.env, and
//! this node's lease: the key in etcd, or the `flannel.alpha.coreos.com/*` annotations of this
//! node's Node object in Kubernetes mode. Every step runs even when an earlier one failed.

use super::datastore::Datastore;
use super::datastore::etcd::EtcdDatastore;
use super::datastore::kube::{KubeDatastore, KubeSettings};
use super::iptables::{Iptables, forward_rules, masq_rules};
use super::netlink::{Netlink, describe_route, is_vxlan};
use super::settings::{DatastoreKind, Settings};
use super::subnet_env;
use super::{daemon, netconf};
use ipnet::Ipv4Net;
use std::time::Duration;

/// What clean did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct CleanReport {
    /// Things removed (one line each).
    pub removed: Vec<String>,
    /// Things that could not be removed.
    pub errors: Vec<String>,
}

/// Route protocol of the routes the agent adds (RTPROT_STATIC, rtnetlink's default).
const OUR_ROUTE_PROTOCOL: u8 = 4;
/// How long clean waits for the datastore (etcd or the Kubernetes API).
const ETCD_WAIT: Duration = Duration::from_secs(5);

async fn with_timeout<T, E: std::fmt::Display>(
    what: &str,
    fut: impl std::future::Future<Output = Result<T, E>>,
) -> Result<T, String> {
    match tokio::time::timeout(ETCD_WAIT, fut).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(format!("{what}: {e}")),
        Err(_) => Err(format!(
            "{what}: no answer within {} s",
            ETCD_WAIT.as_secs()
        )),
    }
}

/// The bridge flannel's CNI delegate creates for pods.
pub const CNI_BRIDGE: &str = "cni0";

/// Remove everything; never stops at the first error.
pub async fn clean(settings: &Settings) -> CleanReport {
    let mut report = CleanReport::default();
    let previous = subnet_env::read_previous(&settings.subnet_file);
    let mut network: Option<Ipv4Net> = previous.network;

    // etcd: the config (for the Network) and this node's lease
    let nl = match Netlink::connect() {
        Ok(nl) => Some(nl),
        Err(e) => {
            report.errors.push(e.to_string());
            None
        }
    };
    let public_ip = match &nl {
        Some(nl) => match daemon::pick_interface(nl, settings).await {
            Ok((_, ip)) => Some(ip),
            Err(e) => {
                report
                    .errors
                    .push(format!("finding this node's public address: {e}"));
                settings.public_ip
            }
        },
        None => settings.public_ip,
    };
    if settings.datastore == DatastoreKind::Etcd {
        match EtcdDatastore::connect(&settings.etcd, settings.lease_ttl).await {
            Ok(ds) => {
                match with_timeout("reading the network config", ds.network_config()).await {
                    Ok(conf) => network = Some(conf.network),
                    Err(e) if network.is_none() => report.errors.push(e),
                    Err(_) => {}
                }
                if let Some(ip) = public_ip {
                    match with_timeout("looking up this node's lease", ds.stored_lease(ip)).await {
                        Ok(Some(lease)) => {
                            let key = ds.lease_key(lease.subnet);
                            match with_timeout("deleting the lease", ds.delete_lease(lease.subnet))
                                .await
                            {
                                Ok(()) => report.removed.push(format!("etcd key {key}")),
                                Err(e) => report.errors.push(e),
                            }
                        }
                        Ok(None) => {}
                        Err(e) => report.errors.push(e),
                    }
                }
            }
            Err(e) => report.errors.push(e.to_string()),
        }
    } else {
        if let Ok(text) = std::fs::read_to_string(&settings.net_conf_path)
            && let Ok(raw) = netconf::parse(&text)
            && let Some(n) = raw.network
        {
            network = Some(n);
        }
        match KubeDatastore::connect(&KubeSettings::from_settings(settings)).await {
            Ok(ds) => {
                let subnet = previous.subnet.unwrap_or_default();
                match with_timeout(
                    "removing this node's flannel annotations",
                    ds.delete_lease(subnet),
                )
                .await
                {
                    Ok(()) => report.removed.push(format!(
                        "annotations {}/* of node {}",
                        super::datastore::kube::ANNOTATION_PREFIX,
                        ds.node_name()
                    )),
                    Err(e) => report.errors.push(e),
                }
            }
            Err(e) => report.errors.push(e.to_string()),
        }
    }

    if let Some(nl) = &nl {
        // routes first: they may point at the device
        if let Some(network) = network {
            match nl.routes().await {
                Ok(routes) => {
                    for r in routes.iter().filter(|r| {
                        network.contains(&r.dst)
                            && r.gateway.is_some()
                            && r.protocol == OUR_ROUTE_PROTOCOL
                    }) {
                        match nl.delete_route(r).await {
                            Ok(()) => report.removed.push(format!("route {}", describe_route(r))),
                            Err(e) if e.is_not_found() => {}
                            Err(e) => report.errors.push(e.to_string()),
                        }
                    }
                }
                Err(e) => report.errors.push(e.to_string()),
            }
        }
        match nl.links().await {
            Ok(links) => {
                // flannel.<VNI>, and the pods' bridge the CNI plugin made (bridge never deletes
                // it itself; a stale cni0 address breaks the next setup, flannel #1850).
                for l in links.iter().filter(|l| {
                    (l.name.starts_with("flannel.") && is_vxlan(l)) || l.name == CNI_BRIDGE
                }) {
                    match nl.delete_link(l.index, &l.name).await {
                        Ok(()) => report.removed.push(format!(
                            "device {} (with its addresses, neighbours, FDB entries and routes)",
                            l.name
                        )),
                        Err(e) => report.errors.push(e.to_string()),
                    }
                }
            }
            Err(e) => report.errors.push(e.to_string()),
        }
    }

    // iptables: the chains and their jumps (rule bodies do not matter for removal)
    let ipt = Iptables::default();
    let any: Ipv4Net = network.unwrap_or_default();
    for set in [masq_rules(any, any, false), forward_rules(any)] {
        let chain = set.chain;
        let present = ipt.exists(&set.jump).unwrap_or(false)
            || std::process::Command::new("iptables")
                .args(["-w", "5", "-t", set.table, "-S", chain])
                .output()
                .is_ok_and(|o| o.status.success());
        match ipt.remove_chain(&set) {
            Ok(()) if present => report.removed.push(format!(
                "iptables chain {chain} ({} table) and its jump",
                set.table
            )),
            Ok(()) => {}
            Err(e) => report.errors.push(e.to_string()),
        }
    }

    match std::fs::remove_file(&settings.subnet_file) {
        Ok(()) => report
            .removed
            .push(format!("{}", settings.subnet_file.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => report
            .errors
            .push(format!("removing {}: {e}", settings.subnet_file.display())),
    }
    report
}
