//! Image mode's wait: the flannel DaemonSet is rolled out when desired == updated == ready for
//! its current generation. When the deadline passes, each node whose pod is not ready is
//! explained by the pod's state, its events and the last lines of its log — what an operator
//! would otherwise dig out with three kubectl commands.

use super::session::{KubeApiError, KubeSession};
use k8s_openapi::api::apps::v1::DaemonSet;
use k8s_openapi::api::core::v1::{Event, Pod};
use kube::api::{Api, ListParams, LogParams};
use std::time::{Duration, Instant};

/// The rollout counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Rollout {
    /// `desiredNumberScheduled`.
    pub desired: i32,
    /// `updatedNumberScheduled`.
    pub updated: i32,
    /// `numberReady`.
    pub ready: i32,
    /// The status is for the current spec.
    pub observed: bool,
}

impl Rollout {
    /// Read from the object.
    pub fn of(ds: &DaemonSet) -> Rollout {
        let generation = ds.metadata.generation.unwrap_or(0);
        match &ds.status {
            Some(s) => Rollout {
                desired: s.desired_number_scheduled,
                updated: s.updated_number_scheduled.unwrap_or(0),
                ready: s.number_ready,
                observed: s.observed_generation.unwrap_or(0) >= generation,
            },
            None => Rollout::default(),
        }
    }

    /// Done: every scheduled pod is updated and ready.
    pub fn done(&self) -> bool {
        self.observed
            && self.desired > 0
            && self.updated == self.desired
            && self.ready == self.desired
    }
}

/// A node whose flannel pod is not ready, explained.
#[derive(Debug, Clone)]
pub struct PodDiagnosis {
    /// Node name (or `?` for an unscheduled pod).
    pub node: String,
    /// Pod name.
    pub pod: String,
    /// Phase and container waiting/terminated reasons.
    pub state: String,
    /// Recent events, oldest first (`reason: message`).
    pub events: Vec<String>,
    /// Last log lines of the flannel container.
    pub log_tail: Vec<String>,
}

/// Poll the DaemonSet until rolled out or the deadline; returns the last counters.
pub fn wait_rollout(
    session: &KubeSession,
    namespace: &str,
    name: &str,
    timeout: Duration,
) -> Result<Rollout, KubeApiError> {
    let api: Api<DaemonSet> = Api::namespaced(session.client(), namespace);
    let deadline = Instant::now() + timeout;
    loop {
        let ds = session
            .block_on(api.get(name))
            .map_err(|e| session.error(format!("get DaemonSet {namespace}/{name}"), e))?;
        let r = Rollout::of(&ds);
        if r.done() || Instant::now() >= deadline {
            return Ok(r);
        }
        session.sleep(Duration::from_secs(1));
    }
}

fn pod_ready(p: &Pod) -> bool {
    p.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

fn pod_state(p: &Pod) -> String {
    let Some(s) = &p.status else {
        return "no status".into();
    };
    let mut parts = vec![s.phase.clone().unwrap_or_else(|| "Unknown".into())];
    let containers = s
        .init_container_statuses
        .iter()
        .flatten()
        .chain(s.container_statuses.iter().flatten());
    for c in containers {
        let st = c.state.as_ref();
        if let Some(w) = st.and_then(|st| st.waiting.as_ref()) {
            parts.push(format!(
                "{}: {}{}",
                c.name,
                w.reason.as_deref().unwrap_or("Waiting"),
                w.message
                    .as_deref()
                    .map(|m| format!(" ({m})"))
                    .unwrap_or_default()
            ));
        } else if let Some(t) = st.and_then(|st| st.terminated.as_ref())
            && t.exit_code != 0
        {
            parts.push(format!(
                "{}: exited {} {}",
                c.name,
                t.exit_code,
                t.reason.as_deref().unwrap_or("")
            ));
        }
        if c.restart_count > 0 {
            parts.push(format!("{} restarted {} times", c.name, c.restart_count));
        }
    }
    parts.join(", ")
}

/// Explain every pod of the DaemonSet (selected by `selector`) that is not ready, and every
/// node in `expected_nodes` that has no pod at all.
pub fn diagnose(
    session: &KubeSession,
    namespace: &str,
    selector: &str,
    container: &str,
    expected_nodes: &[String],
) -> Result<Vec<PodDiagnosis>, KubeApiError> {
    let pods: Api<Pod> = Api::namespaced(session.client(), namespace);
    let events: Api<Event> = Api::namespaced(session.client(), namespace);
    let list = session
        .block_on(pods.list(&ListParams::default().labels(selector)))
        .map_err(|e| session.error(format!("list pods -l {selector}"), e))?;
    let mut out = Vec::new();
    for node in expected_nodes {
        let has_pod = list
            .items
            .iter()
            .any(|p| p.spec.as_ref().and_then(|s| s.node_name.as_deref()) == Some(node.as_str()));
        if !has_pod {
            out.push(PodDiagnosis {
                node: node.clone(),
                pod: String::new(),
                state: "no flannel pod on this node (taints, nodeSelector, or the node is not registered)".into(),
                events: Vec::new(),
                log_tail: Vec::new(),
            });
        }
    }
    for pod in list.items.iter().filter(|p| !pod_ready(p)) {
        let name = pod.metadata.name.clone().unwrap_or_default();
        let node = pod
            .spec
            .as_ref()
            .and_then(|s| s.node_name.clone())
            .unwrap_or_else(|| "?".into());
        let fields = format!("involvedObject.name={name},involvedObject.kind=Pod");
        let evs = session
            .block_on(events.list(&ListParams::default().fields(&fields)))
            .map(|l| {
                let mut items = l.items;
                items.sort_by_key(|e| e.last_timestamp.clone().map(|t| t.0));
                items
                    .iter()
                    .rev()
                    .take(5)
                    .rev()
                    .map(|e| {
                        format!(
                            "{}: {}",
                            e.reason.as_deref().unwrap_or(""),
                            e.message.as_deref().unwrap_or("").trim()
                        )
                    })
                    .collect()
            })
            .unwrap_or_else(|e| {
                vec![format!(
                    "(events unavailable: {})",
                    session.error("list events", e)
                )]
            });
        let params = LogParams {
            container: Some(container.to_string()),
            tail_lines: Some(10),
            ..LogParams::default()
        };
        let log_tail = session
            .block_on(pods.logs(&name, &params))
            .map(|t| t.lines().map(str::to_string).collect())
            .unwrap_or_else(|e| {
                vec![format!(
                    "(log unavailable: {})",
                    session.error("read log", e)
                )]
            });
        out.push(PodDiagnosis {
            node,
            pod: name,
            state: pod_state(pod),
            events: evs,
            log_tail,
        });
    }
    Ok(out)
}
