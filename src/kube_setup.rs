//! The Kubernetes half of `setup flannel` and `clean flannel` (FLANNEL_DATASTORE=kubernetes):
//! apply the rendered objects before any node is touched, hand the embedded agents their
//! credentials, and afterwards wait for the truth — every node annotated by its agent, or the
//! DaemonSet rolled out — explaining each node that did not come up. `clean` deletes the
//! objects and our node annotations.

use crate::cli::Project;
use crate::cluster::Node;
use crate::kubeapi::apply::{self, ApplyOptions};
use crate::kubeapi::{KubeSession, credentials, daemonset, nodes};
use crate::render::{Destination, KubeObject, Rendered};
use anyhow::{Context, Result};
use indexmap::IndexMap;
use std::path::Path;
use std::time::Duration;

/// Where progress lines go: stderr for people, JSON events on stdout for `-o json`.
#[derive(Debug, Clone, Copy)]
pub struct Printer {
    /// JSON events instead of text.
    pub json: bool,
}

impl Printer {
    /// One line about the cluster.
    pub fn line(&self, text: &str) {
        if self.json {
            println!("{}", serde_json::json!({ "event": "kube", "detail": text }));
        } else {
            eprintln!("{text}");
        }
    }

    /// A block (diff, diagnosis) for people; one event per line in JSON.
    pub fn block(&self, text: &str) {
        if self.json {
            println!("{}", serde_json::json!({ "event": "kube", "detail": text }));
        } else {
            eprint!("{text}");
            if !text.ends_with('\n') {
                eprintln!();
            }
        }
    }
}

/// The objects of the rendered manifest.
pub fn manifest_objects(rendered: &[Rendered]) -> Vec<KubeObject> {
    rendered
        .iter()
        .filter(|r| matches!(r.dest, Destination::Cluster { .. }))
        .flat_map(|r| r.objects.iter().cloned())
        .collect()
}

/// Server-side apply every object (dry run with `check`), printing a kubectl-like line each.
pub fn apply_manifest(
    session: &KubeSession,
    objects: &[KubeObject],
    opts: ApplyOptions,
    out: Printer,
) -> Result<()> {
    let outcomes = apply::apply_all(session, objects, opts)
        .with_context(|| format!("applying the flannel manifest to {}", session.server))?;
    for o in &outcomes {
        out.line(&o.line(opts.dry_run));
        if let Some(d) = &o.diff {
            out.block(d);
        }
    }
    Ok(())
}

/// The kubeconfig text each node's agent gets (by inventory host), or an empty map in check
/// mode when the token Secret does not exist yet.
pub fn agent_kubeconfigs(
    project: &Project,
    session: &KubeSession,
    objects: &[KubeObject],
    nodes: &[&Node],
    check: bool,
    out: Printer,
) -> Result<IndexMap<String, String>> {
    let first = &nodes[0].host;
    let src = project
        .vars
        .resolve_string(first, "flannel_agent_kubeconfig_src")?;
    let mut map = IndexMap::new();
    if !src.trim().is_empty() {
        let path = Path::new(src.trim());
        let text = std::fs::read_to_string(path).with_context(|| {
            format!(
                "flannel_agent_kubeconfig_src: cannot read {} (the kubeconfig for the agents)",
                path.display()
            )
        })?;
        kube::config::Kubeconfig::from_yaml(&text).map_err(|e| {
            anyhow::anyhow!(
                "flannel_agent_kubeconfig_src: {} is not a kubeconfig: {}",
                path.display(),
                crate::kubeapi::session::error_chain(&e)
            )
        })?;
        for n in nodes {
            map.insert(n.host.clone(), text.clone());
        }
        out.line(&format!(
            "agent credentials: {} (flannel_agent_kubeconfig_src)",
            path.display()
        ));
        return Ok(map);
    }
    let Some(secret) = credentials::token_secret(objects) else {
        anyhow::bail!(
            "the embedded agents need credentials: the manifest has no Secret of type {} and \
             flannel_agent_kubeconfig_src is empty",
            credentials::TOKEN_SECRET_TYPE
        );
    };
    let timeout: u64 = project
        .vars
        .resolve_string(first, "FLANNEL_TOKEN_TIMEOUT")?
        .trim()
        .parse()
        .context("FLANNEL_TOKEN_TIMEOUT must be a number of seconds")?;
    let token = credentials::wait_token(session, &secret, Duration::from_secs(timeout))?;
    let Some(token) = token else {
        if check {
            out.line(&format!(
                "agent credentials: would be read from Secret {}/{} once it exists",
                secret.namespace, secret.name
            ));
            return Ok(map);
        }
        anyhow::bail!(
            "Secret {}/{} was applied but cannot be read back",
            secret.namespace,
            secret.name
        );
    };
    for n in nodes {
        let server = project.vars.resolve_string(&n.host, "FLANNEL_APISERVER")?;
        map.insert(
            n.host.clone(),
            credentials::agent_kubeconfig(server.trim(), &secret.service_account, &token),
        );
    }
    out.line(&format!(
        "agent credentials: ServiceAccount {}/{} token from Secret {}",
        secret.namespace, secret.service_account, secret.name
    ));
    Ok(map)
}

/// Kubernetes node names of inventory nodes (`K8S_NODENAME`).
pub fn node_names(project: &Project, nodes: &[&Node]) -> Result<Vec<String>> {
    nodes
        .iter()
        .map(|n| {
            Ok(project
                .vars
                .resolve_string(&n.host, "K8S_NODENAME")?
                .trim()
                .to_string())
        })
        .collect()
}

/// Embedded mode: wait until every node is annotated by its agent. Returns false (after
/// printing why, per node) when some never were.
pub fn wait_nodes_annotated(
    session: &KubeSession,
    names: &[String],
    backend: &str,
    timeout: Duration,
    out: Printer,
) -> Result<bool> {
    let (view, missing) = nodes::wait_up(session, names, backend, timeout)?;
    for name in names {
        match view.get(name) {
            Some(n) if !missing.contains(name) => out.line(&format!(
                "node {name}: up (podCIDR {}, {} via {})",
                n.pod_cidr.as_deref().unwrap_or("?"),
                n.backend_type.as_deref().unwrap_or("?"),
                n.public_ip.as_deref().unwrap_or("?")
            )),
            other => out.line(&format!(
                "node {name}: NOT UP after {} s: {}",
                timeout.as_secs(),
                nodes::not_up_reason(other, backend)
            )),
        }
    }
    Ok(missing.is_empty())
}

/// Image mode: wait for the DaemonSet's rollout; explain every node not ready at the deadline.
pub fn wait_daemonset(
    session: &KubeSession,
    objects: &[KubeObject],
    names: &[String],
    timeout: Duration,
    out: Printer,
) -> Result<bool> {
    let Some(ds) = objects.iter().find(|o| o.kind == "DaemonSet") else {
        return Ok(true);
    };
    let ns = ds.namespace.clone().unwrap_or_else(|| "default".into());
    let r = daemonset::wait_rollout(session, &ns, &ds.name, timeout)?;
    let line = format!(
        "daemonset {ns}/{}: desired {} updated {} ready {}",
        ds.name, r.desired, r.updated, r.ready
    );
    if r.done() {
        out.line(&format!("{line}: rolled out"));
        return Ok(true);
    }
    out.line(&format!(
        "{line}: NOT rolled out after {} s",
        timeout.as_secs()
    ));
    let selector = ds
        .body
        .pointer("/spec/selector/matchLabels")
        .and_then(|m| m.as_object())
        .map(|m| {
            m.iter()
                .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or_default()))
                .collect::<Vec<_>>()
                .join(",")
        })
        .unwrap_or_default();
    let container = ds
        .body
        .pointer("/spec/template/spec/containers/0/name")
        .and_then(|v| v.as_str())
        .unwrap_or("kube-flannel");
    for d in daemonset::diagnose(session, &ns, &selector, container, names)? {
        let mut text = format!("node {}: pod {} {}\n", d.node, d.pod, d.state);
        for e in &d.events {
            text.push_str(&format!("    event {e}\n"));
        }
        for l in &d.log_tail {
            text.push_str(&format!("    log | {l}\n"));
        }
        out.block(&text);
    }
    Ok(false)
}

/// `clean`: delete the applied objects (whole cluster only) and our annotations on `names`.
pub fn clean_cluster(
    session: &KubeSession,
    objects: &[KubeObject],
    names: &[String],
    delete_objects: bool,
    dry_run: bool,
    out: Printer,
) -> Result<()> {
    let suffix = if dry_run { " (server dry run)" } else { "" };
    if delete_objects {
        for (obj, deleted) in apply::delete_all(session, objects, dry_run)? {
            out.line(&format!(
                "{obj} {}{suffix}",
                if deleted { "deleted" } else { "already absent" }
            ));
        }
    }
    for (node, keys) in nodes::remove_annotations(session, names, dry_run)? {
        out.line(&format!(
            "node {node}: removed {} flannel annotation(s){suffix}",
            keys.len()
        ));
    }
    Ok(())
}
