//! The agent's life (flannel-spec §7 startup order): config (retried every second) → interface
//! → backend device → lease → backend configuration → iptables rules → subnet.env (ready) →
//! event loop (peers, lease renewal, route/device checks, iptables resync) until a signal or the
//! lease's revocation. Shutdown leaves the datapath, the lease and subnet.env in place.

use super::AgentError;
use super::backend::{Backend, CHECK_INTERVAL};
use super::datastore::{AcquireRequest, Datastore, DatastoreError, WatchUpdate};
use super::health::{self, Readiness};
use super::iface::{self, ExtIface, IfaceRequest};
use super::iptables::{Iptables, RuleSet, forward_rules, masq_rules};
use super::lease::{Lease, LeaseEvent, LeaseTracker};
use super::log::{error, info, warning};
use super::netconf::NetConf;
use super::netlink::Netlink;
use super::settings::Settings;
use super::subnet_env::{self, SubnetEnv};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::signal::unix::{Signal, SignalKind, signal};
use tokio::sync::mpsc;

/// SIGTERM and SIGINT.
pub struct Signals {
    term: Signal,
    int: Signal,
}

impl Signals {
    /// Install the handlers.
    pub fn install() -> Result<Signals, AgentError> {
        let term = signal(SignalKind::terminate()).map_err(AgentError::Signals)?;
        let int = signal(SignalKind::interrupt()).map_err(AgentError::Signals)?;
        Ok(Signals { term, int })
    }

    /// Wait for either; returns its name.
    pub async fn recv(&mut self) -> &'static str {
        tokio::select! {
            _ = self.term.recv() => "SIGTERM",
            _ = self.int.recv() => "SIGINT",
        }
    }
}

/// Whether a datastore error may go away by itself (etcd or API server down, timeouts, 5xx/429,
/// a node not registered yet); auth, RBAC and config errors are fatal.
fn transient(e: &DatastoreError) -> bool {
    e.is_transient()
}

/// When to renew: `margin` before expiry, or a third of the TTL before when the margin is not
/// shorter than the TTL (short test TTLs).
pub fn renew_at(lease: &Lease, margin: Duration, ttl: Duration) -> Option<Instant> {
    let exp = lease.expiration?;
    let before = if margin < ttl { margin } else { ttl / 3 };
    Some(exp.checked_sub(before).unwrap_or(exp))
}

/// Pick the external interface and the advertised address.
pub async fn pick_interface(
    nl: &Netlink,
    settings: &Settings,
) -> Result<(ExtIface, std::net::Ipv4Addr), AgentError> {
    let links = nl.links().await?;
    let addrs = nl.addresses().await?;
    let routes = nl.routes().await?;
    let req = IfaceRequest {
        ifaces: settings.ifaces.clone(),
        regexes: settings.iface_regex.clone(),
        node_addresses: settings.node_addresses(),
        public_ip: settings.public_ip,
    };
    let ext = iface::select(&links, &addrs, &routes, &req)?;
    let public = settings.public_ip.unwrap_or(ext.addr);
    Ok((ext, public))
}

/// The rule sets for the current state.
fn rule_sets(
    settings: &Settings,
    conf: &NetConf,
    lease: &Lease,
    random_fully: bool,
) -> Vec<RuleSet> {
    let mut sets = Vec::new();
    if settings.ip_masq {
        sets.push(masq_rules(conf.network, lease.subnet, random_fully));
    }
    if settings.forward_rules {
        sets.push(forward_rules(conf.network));
    }
    sets
}

/// Run the agent with a datastore until a signal (exit 0), the lease's revocation (exit 0) or a
/// fatal error.
pub async fn run<D: Datastore>(
    ds: Arc<D>,
    settings: Settings,
    mut signals: Signals,
) -> Result<ExitCode, AgentError> {
    let ready = Readiness::default();
    if let Some(addr) = settings.healthz {
        health::serve(addr, ready.clone()).map_err(|e| AgentError::Healthz(addr, e))?;
        info!("Serving /healthz and /readyz on {addr}");
    }

    // network config, retried every second (§2)
    let conf = loop {
        tokio::select! {
            r = ds.network_config() => match r {
                Ok(c) => break c,
                // Kubernetes mode: an unreadable or invalid net-conf.json is fatal (§2)
                Err(e @ DatastoreError::NetConfFile { .. }) => return Err(e.into()),
                Err(e) => warning!("Couldn't fetch network config: {e}"),
            },
            s = signals.recv() => {
                info!("Received {s} while waiting for the network config; exiting");
                return Ok(ExitCode::SUCCESS);
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
            s = signals.recv() => {
                info!("Received {s} while waiting for the network config; exiting");
                return Ok(ExitCode::SUCCESS);
            }
        }
    };
    if settings.datastore == super::settings::DatastoreKind::Kubernetes {
        // Subnets are the nodes' podCIDRs: SubnetLen/Min/Max do not apply.
        info!(
            "Network config: Network {} backend {} (subnets: node podCIDRs)",
            conf.network,
            conf.backend.type_name()
        );
    } else {
        info!(
            "Network config: Network {} SubnetLen {} SubnetMin {} SubnetMax {} backend {}",
            conf.network,
            conf.subnet_len,
            conf.subnet_min,
            conf.subnet_max,
            conf.backend.type_name()
        );
    }

    let nl = Netlink::connect()?;
    let (ext, public_ip) = pick_interface(&nl, &settings).await?;
    info!(
        "Using interface with name {} and address {} ({})",
        ext.name, ext.addr, ext.reason
    );
    if settings.public_ip.is_some() {
        info!("Using {public_ip} as external address (--public-ip)");
    } else {
        info!("Defaulting external address to interface address ({public_ip})");
    }

    let stored = match ds.stored_lease(public_ip).await {
        Ok(l) => l,
        Err(e) => {
            warning!("Could not look up this node's previous lease: {e}");
            None
        }
    };
    let mut backend = Backend::new(
        nl.clone(),
        &conf,
        &ext,
        public_ip,
        stored.as_ref().map(|l| &l.attrs),
    )
    .await?;
    let attrs = backend.lease_attrs();
    let previous = subnet_env::read_previous(&settings.subnet_file);

    let lease = loop {
        let req = AcquireRequest {
            conf: &conf,
            attrs: &attrs,
            previous_subnet: previous.subnet,
        };
        tokio::select! {
            r = ds.acquire_lease(req) => match r {
                Ok(l) => break l,
                Err(e) if transient(&e) => warning!("Acquiring a lease failed: {e}; retrying in 1 s"),
                Err(e) => return Err(e.into()),
            },
            s = signals.recv() => {
                info!("Received {s} while acquiring a lease; exiting");
                return Ok(ExitCode::SUCCESS);
            }
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    };
    info!(
        "Lease acquired: {} (backend {}, public IP {public_ip})",
        lease.subnet,
        backend.type_name()
    );
    backend.configure(&lease).await?;

    // iptables (§6): recycle rules of a previous subnet, then install
    let ipt = Iptables::default();
    let random_fully = ipt.supports_random_fully();
    if let (Some(prev_net), Some(prev_sub)) = (previous.network, previous.subnet)
        && (prev_net != conf.network || prev_sub != lease.subnet)
    {
        info!("Recycling masquerade rules of the previous network {prev_net} / subnet {prev_sub}");
        for rule in masq_rules(prev_net, prev_sub, random_fully).rules {
            if let Err(e) = ipt.delete(&rule) {
                warning!("Deleting old rule {}: {e}", rule.restore_line("-A"));
            }
        }
    }
    let sets = rule_sets(&settings, &conf, &lease, random_fully);
    for set in &sets {
        ipt.install(set)?;
        info!(
            "Installed iptables rules in {} ({} table)",
            set.chain, set.table
        );
    }

    let env = SubnetEnv {
        network: conf.network,
        subnet: lease.subnet,
        mtu: backend.mtu(),
        ip_masq: settings.ip_masq,
    };
    match env.write(&settings.subnet_file) {
        Ok(()) => {
            ready.set_ready();
            info!(
                "Wrote subnet file to {} (FLANNEL_SUBNET={} FLANNEL_MTU={})",
                settings.subnet_file.display(),
                subnet_env::gateway_cidr(lease.subnet),
                backend.mtu()
            );
            // in the background: it retries by itself and must not delay the peers
            let ds = ds.clone();
            let lease = lease.clone();
            tokio::spawn(async move {
                if let Err(e) = ds.complete_lease(&lease).await {
                    warning!("Could not mark the lease as in use: {e}");
                }
            });
        }
        Err(e) => warning!(
            "Failed to write subnet file {}: {e}; /readyz stays 503",
            settings.subnet_file.display()
        ),
    }

    let (tx, mut rx) = mpsc::channel::<WatchUpdate>(1024);
    let watcher = {
        let ds = ds.clone();
        tokio::spawn(async move { ds.watch_leases(tx).await })
    };
    let mut tracker = LeaseTracker::new(lease.subnet);
    let mut lease = lease;
    let mut next_renew = renew_at(&lease, settings.renew_margin, settings.lease_ttl);
    let retry = (settings.lease_ttl / 10).clamp(Duration::from_secs(1), Duration::from_secs(60));
    let mut check = tokio::time::interval(CHECK_INTERVAL);
    check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    check.tick().await;
    let mut resync = tokio::time::interval(settings.iptables_resync);
    resync.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    resync.tick().await;
    info!(
        "Running backend {} for subnet {}",
        backend.type_name(),
        lease.subnet
    );

    loop {
        let renew_timer = async {
            match next_renew {
                Some(t) => tokio::time::sleep_until(t.into()).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            s = signals.recv() => {
                info!("Received {s}; exiting (routes, device, rules, lease and subnet file stay in place)");
                watcher.abort();
                return Ok(ExitCode::SUCCESS);
            }
            update = rx.recv() => {
                let Some(update) = update else {
                    return Err(AgentError::WatchEnded);
                };
                let events = match update {
                    WatchUpdate::Snapshot(all) => tracker.reset(all),
                    WatchUpdate::Put(l) => tracker.upsert(l).into_iter().collect(),
                    WatchUpdate::Delete(subnet) => tracker.remove(subnet).into_iter().collect(),
                };
                for event in events {
                    if event == LeaseEvent::Revoked {
                        error!("Lease has been revoked. Shutting down daemon.");
                        watcher.abort();
                        return Ok(ExitCode::SUCCESS);
                    }
                    backend.handle(&event).await;
                }
            }
            _ = renew_timer => {
                match ds.renew_lease(&lease).await {
                    Ok(l) => {
                        lease = l;
                        next_renew = renew_at(&lease, settings.renew_margin, settings.lease_ttl);
                        info!("Lease renewed: {}", lease.subnet);
                    }
                    Err(DatastoreError::LeaseGone { .. }) => {
                        error!("Lease has been revoked. Shutting down daemon.");
                        watcher.abort();
                        return Ok(ExitCode::SUCCESS);
                    }
                    Err(e) => {
                        error!("Error renewing lease (trying again in {retry:?}): {e}");
                        next_renew = Some(Instant::now() + retry);
                    }
                }
            }
            _ = check.tick() => backend.check().await,
            _ = resync.tick() => {
                let ipt = ipt.clone();
                let sets = sets.clone();
                let r = tokio::task::spawn_blocking(move || {
                    sets.iter()
                        .map(|set| (set.chain, ipt.ensure(set)))
                        .collect::<Vec<_>>()
                })
                .await;
                for (chain, result) in r.unwrap_or_default() {
                    match result {
                        Ok(true) => warning!("Some iptables rules of {chain} were missing; reinstalled the chain"),
                        Ok(false) => {}
                        Err(e) => error!("Checking iptables rules of {chain}: {e}"),
                    }
                }
            }
        }
    }
}
