//! Server-side apply of the rendered objects under our own field manager, reported per object
//! as kubectl does (created / configured / unchanged). `--check` sends the same requests with
//! `dryRun=All`; `--diff` shows the live object against what the API server says it would be
//! (or now is), without the fields the server maintains.

use super::resources::{self, Kind};
use super::session::{KubeApiError, KubeSession};
use crate::render::KubeObject;
use kube::api::{Api, DynamicObject, Patch, PatchParams};
use serde_json::Value as Json;

/// The field manager of every apply (visible in `metadata.managedFields`).
pub const FIELD_MANAGER: &str = "installer";

/// What an apply did to one object.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ApplyStatus {
    /// The object did not exist.
    Created,
    /// The object changed.
    Configured,
    /// Nothing changed.
    Unchanged,
}

impl ApplyStatus {
    /// kubectl's word.
    pub fn word(self) -> &'static str {
        match self {
            ApplyStatus::Created => "created",
            ApplyStatus::Configured => "configured",
            ApplyStatus::Unchanged => "unchanged",
        }
    }
}

/// One object's result.
#[derive(Debug, Clone)]
pub struct ApplyOutcome {
    /// kubectl's name for it: `configmap/kube-flannel-cfg`.
    pub object: String,
    /// Its namespace, if namespaced.
    pub namespace: Option<String>,
    /// What happened (or would happen with `dry_run`).
    pub status: ApplyStatus,
    /// Unified diff of live → applied, when asked for and not unchanged.
    pub diff: Option<String>,
}

impl ApplyOutcome {
    /// kubectl-like line: `configmap/kube-flannel-cfg configured` (with ` (dry run)`).
    pub fn line(&self, dry_run: bool) -> String {
        let ns = self
            .namespace
            .as_deref()
            .map(|n| format!(" -n {n}"))
            .unwrap_or_default();
        let suffix = if dry_run { " (server dry run)" } else { "" };
        format!("{}{ns} {}{suffix}", self.object, self.status.word())
    }
}

/// How to apply.
#[derive(Debug, Clone, Copy, Default)]
pub struct ApplyOptions {
    /// Send `dryRun=All`: the API server validates and answers, nothing is stored.
    pub dry_run: bool,
    /// Take over fields another manager owns instead of failing with a conflict.
    pub force_conflicts: bool,
    /// Compute diffs.
    pub diff: bool,
}

/// The table entry and the namespace an object is applied in.
pub fn placement(obj: &KubeObject) -> Result<(&'static Kind, Option<String>), KubeApiError> {
    let kind = resources::lookup(&obj.api_version, &obj.kind).ok_or_else(|| {
        KubeApiError::UnknownKind {
            object: obj.to_string(),
            api_version: obj.api_version.clone(),
            kind: obj.kind.clone(),
            known: resources::known(),
        }
    })?;
    let ns = kind
        .namespaced
        .then(|| obj.namespace.clone().unwrap_or_else(|| "default".into()));
    Ok((kind, ns))
}

/// The `kube` API handle for an object.
pub fn api_for(session: &KubeSession, kind: &Kind, ns: Option<&str>) -> Api<DynamicObject> {
    let ar = kind.api_resource();
    match ns {
        Some(ns) => Api::namespaced_with(session.client(), ns, &ar),
        None => Api::all_with(session.client(), &ar),
    }
}

/// Apply every object in order; stops at the first failure (objects before it stay applied,
/// and the error names the object and the API's reason).
pub fn apply_all(
    session: &KubeSession,
    objects: &[KubeObject],
    opts: ApplyOptions,
) -> Result<Vec<ApplyOutcome>, KubeApiError> {
    // Every kind is checked before anything is sent.
    let placed = objects
        .iter()
        .map(placement)
        .collect::<Result<Vec<_>, _>>()?;
    let mut out = Vec::new();
    for (obj, (kind, ns)) in objects.iter().zip(placed) {
        out.push(apply_one(session, obj, kind, ns, opts)?);
    }
    Ok(out)
}

fn apply_one(
    session: &KubeSession,
    obj: &KubeObject,
    kind: &Kind,
    ns: Option<String>,
    opts: ApplyOptions,
) -> Result<ApplyOutcome, KubeApiError> {
    let api = api_for(session, kind, ns.as_deref());
    let live = session
        .block_on(api.get_opt(&obj.name))
        .map_err(|e| session.error(format!("get {obj}"), e))?;
    let mut params = PatchParams::apply(FIELD_MANAGER);
    params.force = opts.force_conflicts;
    params.dry_run = opts.dry_run;
    let applied = session
        .block_on(api.patch(&obj.name, &params, &Patch::Apply(&obj.body)))
        .map_err(|e| {
            let mut err = session.error(format!("apply {obj}"), e);
            if let KubeApiError::Api {
                code: 409, message, ..
            } = &mut err
            {
                message.push_str(
                    " (another field manager owns these fields; re-run with --force-conflicts to take them over)",
                );
            }
            err
        })?;
    let status = match &live {
        None => ApplyStatus::Created,
        Some(l) if !opts.dry_run => {
            if l.metadata.resource_version == applied.metadata.resource_version {
                ApplyStatus::Unchanged
            } else {
                ApplyStatus::Configured
            }
        }
        Some(l) => {
            if comparable(l) == comparable(&applied) {
                ApplyStatus::Unchanged
            } else {
                ApplyStatus::Configured
            }
        }
    };
    let diff = if opts.diff && status != ApplyStatus::Unchanged {
        let before = live.as_ref().map(to_yaml).unwrap_or_default();
        crate::remote::diff::unified_diff(
            &kind.display(&obj.name),
            before.as_bytes(),
            to_yaml(&applied).as_bytes(),
        )
    } else {
        None
    };
    Ok(ApplyOutcome {
        object: kind.display(&obj.name),
        namespace: ns,
        status,
        diff,
    })
}

/// An object without what the API server maintains by itself (managed fields, resource
/// version, generation, uid, creation time), for comparison and diffs.
pub fn comparable(obj: &DynamicObject) -> Json {
    let mut v = serde_json::to_value(obj).unwrap_or(Json::Null);
    if let Some(meta) = v.get_mut("metadata").and_then(Json::as_object_mut) {
        for k in [
            "managedFields",
            "resourceVersion",
            "generation",
            "uid",
            "creationTimestamp",
        ] {
            meta.remove(k);
        }
    }
    v
}

fn to_yaml(obj: &DynamicObject) -> String {
    serde_saphyr::to_string(&comparable(obj)).unwrap_or_else(|e| format!("# not shown: {e}\n"))
}

/// Delete the objects in reverse order (bindings before roles, the DaemonSet before its
/// config). Returns (kubectl name, whether it existed); a missing object is not an error.
pub fn delete_all(
    session: &KubeSession,
    objects: &[KubeObject],
    dry_run: bool,
) -> Result<Vec<(String, bool)>, KubeApiError> {
    let placed = objects
        .iter()
        .map(placement)
        .collect::<Result<Vec<_>, _>>()?;
    let mut params = kube::api::DeleteParams::background();
    params.dry_run = dry_run;
    let mut out = Vec::new();
    for (obj, (kind, ns)) in objects.iter().zip(placed).rev() {
        let api = api_for(session, kind, ns.as_deref());
        let existed = match session.block_on(api.delete(&obj.name, &params)) {
            Ok(_) => true,
            Err(kube::Error::Api(s)) if s.code == 404 => false,
            Err(e) => return Err(session.error(format!("delete {obj}"), e)),
        };
        let name = match &ns {
            Some(ns) => format!("{} -n {ns}", kind.display(&obj.name)),
            None => kind.display(&obj.name),
        };
        out.push((name, existed));
    }
    Ok(out)
}
