//! Rendering a role's outputs: template → checked content → destination.
//!
//! Everything is rendered and checked in memory first; only then are files written, so a bad
//! template never leaves half an output directory behind. `render --dry-run` and `setup` use the
//! same code.

use crate::cluster::Cluster;
use crate::vars::{RenderError, Variables};
use k8s_openapi::api::apps::v1::DaemonSet;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Secret, ServiceAccount};
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, Role, RoleBinding};
use serde_json::Value as Json;
use std::fmt;
use std::path::{Path, PathBuf};

/// How a rendered output is checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// One JSON document.
    Json,
    /// One or more Kubernetes objects in YAML, each checked against its typed API object.
    KubeYaml,
    /// Free text (systemd units); not parsed.
    Text,
}

/// Where an output goes (with `{{ }}` allowed in paths, rendered per host).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// Kubernetes objects applied once, also kept as a file on the deploy host.
    Cluster {
        /// Path on the deploy host.
        deploy_path: String,
    },
    /// A file on every master and node.
    NodeFile {
        /// Absolute path on the node.
        path: String,
        /// File mode (owner is root:root).
        mode: u32,
    },
    /// A key in the cluster's etcd.
    EtcdKey {
        /// Full key.
        key: String,
    },
}

/// One output of a role.
#[derive(Debug, Clone)]
pub struct OutputSpec {
    /// Template file name within the role.
    pub template: &'static str,
    /// Destination.
    pub target: Target,
    /// How it is checked.
    pub format: Format,
}

/// A Kubernetes object found in a rendered manifest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KubeObject {
    /// `apiVersion`.
    pub api_version: String,
    /// `kind`.
    pub kind: String,
    /// `metadata.namespace`, if namespaced.
    pub namespace: Option<String>,
    /// `metadata.name`.
    pub name: String,
    /// The object as JSON (what server-side apply sends).
    pub body: Json,
}

impl fmt::Display for KubeObject {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.namespace {
            Some(ns) => write!(f, "{} {ns}/{}", self.kind, self.name),
            None => write!(f, "{} {}", self.kind, self.name),
        }
    }
}

/// Where one rendered output goes, fully resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Destination {
    /// Cluster objects (and the deploy-host copy).
    Cluster {
        /// Deploy-host path of the manifest.
        deploy_path: String,
    },
    /// A file on one host.
    HostFile {
        /// Inventory host name.
        host: String,
        /// Absolute path.
        path: String,
        /// File mode.
        mode: u32,
    },
    /// An etcd key.
    EtcdKey {
        /// Full key.
        key: String,
    },
}

impl fmt::Display for Destination {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Destination::Cluster { deploy_path } => {
                write!(
                    f,
                    "cluster objects (kept on the deploy host as {deploy_path})"
                )
            }
            Destination::HostFile { host, path, mode } => {
                write!(f, "{host}:{path} (root:root {mode:04o})")
            }
            Destination::EtcdKey { key } => write!(f, "etcd key {key}"),
        }
    }
}

/// One rendered, checked output.
#[derive(Debug, Clone)]
pub struct Rendered {
    /// Template it came from.
    pub template: String,
    /// Where it goes.
    pub dest: Destination,
    /// The text.
    pub content: String,
    /// Kubernetes objects in it (for `Format::KubeYaml`).
    pub objects: Vec<KubeObject>,
}

/// Rendering or checking failed.
#[derive(Debug, thiserror::Error)]
pub enum RenderFailure {
    /// The template could not be rendered.
    #[error("template {template} for {scope}: {source}")]
    Render {
        /// Template name.
        template: String,
        /// Host scope it was rendered in.
        scope: String,
        /// Why.
        source: Box<RenderError>,
    },
    /// It rendered, but the output is not what its destination needs.
    #[error("template {template} for {scope} rendered invalid {what}: {message}")]
    Invalid {
        /// Template name.
        template: String,
        /// Host scope.
        scope: String,
        /// "JSON", "Kubernetes manifest", …
        what: &'static str,
        /// Parser message.
        message: String,
    },
    /// A destination path template failed.
    #[error("destination path {path:?} for {scope}: {message}")]
    Path {
        /// The path template.
        path: String,
        /// Host scope.
        scope: String,
        /// Why.
        message: String,
    },
    /// `--host` named a host that receives no files.
    #[error("host '{0}' is not a master or node of this cluster (kube_master ∪ kube_node)")]
    NotANode(String),
    /// Writing to the output directory failed.
    #[error("writing {path}: {message}")]
    Write {
        /// File being written.
        path: PathBuf,
        /// Why.
        message: String,
    },
}

/// Render every output for the cluster. Cluster-wide outputs use the first master's scope (as
/// Ansible's run_once would); node files are rendered per node, limited to `only_host` if given.
pub fn render_all(
    cluster: &Cluster,
    vars: &Variables,
    specs: &[OutputSpec],
    only_host: Option<&str>,
) -> Result<Vec<Rendered>, RenderFailure> {
    if let Some(h) = only_host
        && cluster.node(h).is_none()
    {
        return Err(RenderFailure::NotANode(h.to_string()));
    }
    let first = &cluster.nodes[0].host;
    let mut out = Vec::new();
    // Cluster-wide outputs first, then each node's files together, in inventory order.
    for spec in specs {
        match &spec.target {
            Target::Cluster { deploy_path } => {
                let path = render_path(vars, first, deploy_path)?;
                out.push(render_one(
                    vars,
                    first,
                    spec,
                    Destination::Cluster { deploy_path: path },
                )?);
            }
            Target::EtcdKey { key } => {
                out.push(render_one(
                    vars,
                    first,
                    spec,
                    Destination::EtcdKey { key: key.clone() },
                )?);
            }
            Target::NodeFile { .. } => {}
        }
    }
    for node in &cluster.nodes {
        if only_host.is_some_and(|h| h != node.host) {
            continue;
        }
        for spec in specs {
            if let Target::NodeFile { path, mode } = &spec.target {
                let p = render_path(vars, &node.host, path)?;
                let dest = Destination::HostFile {
                    host: node.host.clone(),
                    path: p,
                    mode: *mode,
                };
                out.push(render_one(vars, &node.host, spec, dest)?);
            }
        }
    }
    Ok(out)
}

fn render_path(vars: &Variables, host: &str, path: &str) -> Result<String, RenderFailure> {
    if !crate::template::is_template(path) {
        return Ok(path.to_string());
    }
    let ctx = vars.context(host).map_err(|e| RenderFailure::Path {
        path: path.into(),
        scope: host.into(),
        message: e.to_string(),
    })?;
    vars.env()
        .render_str(path, ctx)
        .map_err(|e| RenderFailure::Path {
            path: path.into(),
            scope: host.into(),
            message: crate::template::describe_error(&e),
        })
}

fn render_one(
    vars: &Variables,
    host: &str,
    spec: &OutputSpec,
    dest: Destination,
) -> Result<Rendered, RenderFailure> {
    let content = vars
        .render_template(host, spec.template)
        .map_err(|source| RenderFailure::Render {
            template: spec.template.into(),
            scope: host.into(),
            source: Box::new(source),
        })?;
    let invalid = |what: &'static str, message: String| RenderFailure::Invalid {
        template: spec.template.into(),
        scope: host.into(),
        what,
        message,
    };
    let objects = match spec.format {
        Format::Json => {
            serde_json::from_str::<Json>(&content).map_err(|e| invalid("JSON", e.to_string()))?;
            Vec::new()
        }
        Format::KubeYaml => {
            check_manifest(&content).map_err(|m| invalid("Kubernetes manifest", m))?
        }
        Format::Text => Vec::new(),
    };
    Ok(Rendered {
        template: spec.template.into(),
        dest,
        content,
        objects,
    })
}

/// Parse a multi-document manifest and check each object against its typed Kubernetes API
/// object. ConfigMap values named `*.json` must be valid JSON too.
pub fn check_manifest(text: &str) -> Result<Vec<KubeObject>, String> {
    let docs: Vec<Json> = serde_saphyr::from_multiple(text).map_err(|e| e.to_string())?;
    let mut objects = Vec::new();
    for (i, doc) in docs.into_iter().enumerate() {
        if doc.is_null() {
            continue;
        }
        let n = i + 1;
        let field = |name: &str| doc.get(name).and_then(Json::as_str).map(str::to_string);
        let api_version = field("apiVersion").ok_or(format!("document {n}: no apiVersion"))?;
        let kind = field("kind").ok_or(format!("document {n}: no kind"))?;
        let meta = doc.get("metadata").cloned().unwrap_or(Json::Null);
        let name = meta
            .get("name")
            .and_then(Json::as_str)
            .ok_or(format!("document {n} ({kind}): no metadata.name"))?
            .to_string();
        let namespace = meta
            .get("namespace")
            .and_then(Json::as_str)
            .map(str::to_string);
        let typed = |e: serde_json::Error| format!("document {n} ({kind} {name}): {e}");
        match (api_version.as_str(), kind.as_str()) {
            ("v1", "ServiceAccount") => {
                drop(serde_json::from_value::<ServiceAccount>(doc.clone()).map_err(typed)?)
            }
            ("v1", "Secret") => drop(serde_json::from_value::<Secret>(doc.clone()).map_err(typed)?),
            ("v1", "Namespace") => {
                drop(serde_json::from_value::<Namespace>(doc.clone()).map_err(typed)?)
            }
            ("v1", "ConfigMap") => {
                let cm = serde_json::from_value::<ConfigMap>(doc.clone()).map_err(typed)?;
                for (key, value) in cm.data.iter().flatten() {
                    if key.ends_with(".json") {
                        serde_json::from_str::<Json>(value).map_err(|e| {
                            format!("document {n} (ConfigMap {name}): data[{key:?}] is not valid JSON: {e}")
                        })?;
                    }
                }
            }
            ("rbac.authorization.k8s.io/v1", "ClusterRole") => {
                drop(serde_json::from_value::<ClusterRole>(doc.clone()).map_err(typed)?)
            }
            ("rbac.authorization.k8s.io/v1", "ClusterRoleBinding") => {
                drop(serde_json::from_value::<ClusterRoleBinding>(doc.clone()).map_err(typed)?)
            }
            ("rbac.authorization.k8s.io/v1", "Role") => {
                drop(serde_json::from_value::<Role>(doc.clone()).map_err(typed)?)
            }
            ("rbac.authorization.k8s.io/v1", "RoleBinding") => {
                drop(serde_json::from_value::<RoleBinding>(doc.clone()).map_err(typed)?)
            }
            ("apps/v1", "DaemonSet") => {
                drop(serde_json::from_value::<DaemonSet>(doc.clone()).map_err(typed)?)
            }
            (api, kind) => {
                return Err(format!(
                    "document {n}: {api} {kind} is not a kind this installer knows how to check and apply"
                ));
            }
        }
        objects.push(KubeObject {
            api_version,
            kind,
            namespace,
            name,
            body: doc,
        });
    }
    Ok(objects)
}

/// Print rendered outputs as `render --dry-run` does: each preceded by where it goes.
pub fn print_dry_run(rendered: &[Rendered], out: &mut dyn std::io::Write) -> std::io::Result<()> {
    for r in rendered {
        writeln!(out, "# ==> {}  [from {}]", r.dest, r.template)?;
        for obj in &r.objects {
            writeln!(out, "#     {} ({})", obj, obj.api_version)?;
        }
        out.write_all(r.content.as_bytes())?;
        if !r.content.ends_with('\n') {
            writeln!(out)?;
        }
    }
    Ok(())
}

/// The relative path an output gets under `render -o DIR`.
pub fn output_path(dest: &Destination) -> PathBuf {
    match dest {
        Destination::Cluster { deploy_path } => {
            Path::new("cluster").join(Path::new(deploy_path).file_name().unwrap_or_default())
        }
        Destination::HostFile { host, path, .. } => Path::new("hosts")
            .join(host)
            .join(path.trim_start_matches('/')),
        Destination::EtcdKey { key } => Path::new("etcd").join(key.trim_start_matches('/')),
    }
}

/// Write every output under `dir` (created if missing). Each file is written to a temporary
/// name and renamed, so a reader never sees a partial file.
pub fn write_tree(rendered: &[Rendered], dir: &Path) -> Result<Vec<PathBuf>, RenderFailure> {
    let mut written = Vec::new();
    for r in rendered {
        let path = dir.join(output_path(&r.dest));
        let werr = |e: std::io::Error| RenderFailure::Write {
            path: path.clone(),
            message: e.to_string(),
        };
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(werr)?;
        }
        let tmp = path.with_extension("installer-tmp");
        std::fs::write(&tmp, &r.content).map_err(werr)?;
        std::fs::rename(&tmp, &path).map_err(werr)?;
        written.push(path);
    }
    Ok(written)
}
