//! `installer setup flannel` and `installer fetch`: fetch the CNI plugins, render the role, and
//! put everything in place on every master and node over SSH, in parallel.
//!
//! The work is planned first (pure data: which directories, files, links and removals each host
//! needs), then applied by the fleet; `--check` runs the same plan with effects switched off.

use crate::artifact::{self, ArtifactSpec, ExtractLimits, FetchOptions, Fetched, ProgressMode};
use crate::cli::{OutputFormat, Project, SourceArgs};
use crate::cluster::{Cluster, Node};
use crate::remote::{
    Attrs, ConnDefaults, ConnectOptions, ConnectionSpec, Content, Fleet, FleetOptions, HostCtx,
    HostFailed, HostKeyPolicy, HumanReporter, JsonReporter, KnownHosts, Recap, Reporter,
};
use crate::render::{Destination, Rendered};
use anyhow::{Context, Result, bail};
use clap::Args;
use indexmap::IndexMap;
use serde_json::Value as Json;
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

/// Options of the artifact step, shared by `fetch` and `setup`.
#[derive(Debug, Clone, Args)]
pub struct FetchArgs {
    /// Where verified downloads are kept.
    #[arg(long, value_name = "DIR", default_value = "bin", global = true)]
    pub cache_dir: PathBuf,
    /// Take artifacts from an offline bundle (written by `installer fetch --bundle`); no network.
    #[arg(long, value_name = "FILE", global = true)]
    pub offline_bundle: Option<PathBuf>,
    /// Accept a download no sha256 is known for (neither pinned nor published by the mirror).
    #[arg(long, global = true)]
    pub insecure_skip_checksum: bool,
}

/// `installer fetch`.
#[derive(Debug, Args)]
pub struct FetchCmd {
    #[command(flatten)]
    pub source: SourceArgs,
    #[command(flatten)]
    pub fetch: FetchArgs,
    /// Also write an offline bundle (artifacts + digests) to FILE.
    #[arg(long, value_name = "FILE")]
    pub bundle: Option<PathBuf>,
}

/// `installer setup PLUGIN`.
#[derive(Debug, Args)]
pub struct SetupArgs {
    /// Network plugin to set up (flannel).
    pub plugin: String,
    #[command(flatten)]
    pub source: SourceArgs,
    #[command(flatten)]
    pub fetch: FetchArgs,
    /// Only hosts matching this Ansible host pattern (e.g. `kube_node:!10.0.0.5`, `@retry`).
    #[arg(short = 'l', long, value_name = "PATTERN")]
    pub limit: Option<String>,
    /// Hosts worked on at once (default: ansible.cfg forks, else 50).
    #[arg(short = 'f', long)]
    pub forks: Option<usize>,
    /// Show what would change; change nothing on any host.
    #[arg(short = 'C', long)]
    pub check: bool,
    /// Show text diffs of changed configuration files.
    #[arg(short = 'D', long)]
    pub diff: bool,
    /// More detail: -v shows unchanged operations too.
    #[arg(short = 'v', long, action = clap::ArgAction::Count)]
    pub verbose: u8,
    /// Output: human text, or one JSON event per line.
    #[arg(short = 'o', long, value_enum, default_value = "text")]
    pub output: OutputFormat,
    /// known_hosts file (default: UserKnownHostsFile from ansible_ssh_common_args, else
    /// ~/.ssh/known_hosts).
    #[arg(long, value_name = "FILE")]
    pub known_hosts: Option<PathBuf>,
    /// What to do with unknown host keys (a changed key always fails unless `off`).
    #[arg(long, value_enum)]
    pub host_key_policy: Option<HostKeyPolicy>,
    /// Binary to install on the nodes (default: `installer-node` next to this binary, else this
    /// binary itself). Needed when nodes have another CPU architecture.
    #[arg(long, value_name = "PATH")]
    pub node_binary: Option<PathBuf>,
    /// Seconds to wait for every node's agent to become ready (and, with the Kubernetes
    /// datastore, for every node's annotations or the DaemonSet's rollout).
    #[arg(long, value_name = "SECS", default_value_t = 60)]
    pub wait_timeout: u64,
    /// kubeconfig of the cluster (FLANNEL_DATASTORE=kubernetes; default: $KUBECONFIG, else
    /// ~/.kube/config).
    #[arg(long, value_name = "FILE")]
    pub kubeconfig: Option<PathBuf>,
    /// Take over fields of the applied objects that another field manager owns (server-side
    /// apply conflicts), instead of failing.
    #[arg(long)]
    pub force_conflicts: bool,
    /// Only put the files in place on the hosts: no Kubernetes API, no etcd, no agent start
    /// (stage a cluster before its API server is up).
    #[arg(long)]
    pub files_only: bool,
}

/// Everything one host needs, in order.
#[derive(Debug, Default, Clone)]
pub struct HostPlan {
    /// Directories with their mode.
    pub dirs: Vec<(String, u32)>,
    /// CNI plugin binaries: (remote path, local file).
    pub plugins: Vec<(String, PathBuf)>,
    /// The node binary: (remote path, local file).
    pub node_binary: Option<(String, PathBuf)>,
    /// Symbolic links: (path, target).
    pub links: Vec<(String, String)>,
    /// Rendered configuration files: (path, content, mode).
    pub files: Vec<(String, String, u32)>,
    /// Paths that must not exist.
    pub removals: Vec<String>,
    /// The agent to (re)start and wait for, in embedded mode.
    pub agent: Option<AgentPlan>,
    /// Image mode: an offline image tarball to push (remote path, local file) and load.
    pub image: Option<(String, PathBuf)>,
}

/// How the embedded agent runs on a host.
#[derive(Debug, Clone)]
pub struct AgentPlan {
    /// The node binary on the host.
    pub binary: String,
    /// The agent's configuration file.
    pub config: String,
    /// Files whose change means the running agent must restart.
    pub restart_on: Vec<String>,
    /// The unit file (a change means `systemctl daemon-reload`).
    pub unit_file: String,
    /// Supervisor pid file (hosts without systemd).
    pub pidfile: String,
    /// Agent log (hosts without systemd).
    pub log: String,
    /// `http://127.0.0.1:PORT/readyz`.
    pub readyz: String,
    /// flannel's subnet.env.
    pub subnet_file: String,
    /// How long to wait for readiness.
    pub timeout: std::time::Duration,
}

/// systemd unit name of the embedded agent.
pub const AGENT_UNIT: &str = "flannel-agent";
/// Supervisor pid file on hosts without systemd.
pub const AGENT_PIDFILE: &str = "/run/flannel/agent-supervisor.pid";

/// The artifact the flannel role needs, as the variables describe it.
pub fn cni_artifact(project: &Project, host: &str) -> Result<ArtifactSpec> {
    let vars = &project.vars;
    let name = vars.resolve_string(host, "cni_tarball_name")?;
    let urls = match vars.resolve_json(host, "CNI_DOWNLOAD_URLS")? {
        Json::Array(items) => items
            .into_iter()
            .map(|v| match v {
                Json::String(s) => s,
                other => other.to_string(),
            })
            .collect(),
        Json::String(s) => s
            .split(',')
            .map(|u| u.trim().to_string())
            .filter(|u| !u.is_empty())
            .collect(),
        other => bail!("CNI_DOWNLOAD_URLS must be a list of URLs, got {other}"),
    };
    let sha = vars.resolve_string(host, "CNI_SHA256")?;
    Ok(ArtifactSpec {
        name,
        urls,
        sha256: if sha.trim().is_empty() {
            None
        } else {
            Some(sha.trim().to_string())
        },
    })
}

fn fetch_options(args: &FetchArgs, json: bool) -> FetchOptions {
    let mut opts = FetchOptions::new(&args.cache_dir);
    opts.insecure_skip_checksum = args.insecure_skip_checksum;
    opts.offline_bundle = args.offline_bundle.clone();
    opts.progress = if json {
        ProgressMode::Sink(Arc::new(JsonProgress))
    } else {
        ProgressMode::Auto
    };
    opts
}

/// Prints artifact progress events as JSON lines on stdout (for `--output json`).
struct JsonProgress;

impl artifact::ProgressSink for JsonProgress {
    fn event(&self, event: &artifact::ProgressEvent) {
        if matches!(event, artifact::ProgressEvent::Advanced { .. }) {
            return;
        }
        if let Ok(line) = serde_json::to_string(event) {
            println!("{line}");
        }
    }
}

/// `installer fetch`: download and verify the CNI plugins, optionally write a bundle.
pub fn run_fetch(args: FetchCmd) -> Result<ExitCode> {
    let project = Project::load(&args.source, "flannel")?;
    let cluster = project.cluster()?;
    let spec = cni_artifact(&project, &cluster.nodes[0].host)?;
    let fetched = artifact::fetch(&spec, &fetch_options(&args.fetch, false))?;
    println!(
        "{}: {} ({} bytes, sha256 {})",
        fetched.name,
        fetched.path.display(),
        fetched.size,
        fetched.sha256
    );
    if let Some(bundle) = &args.bundle {
        let manifest = artifact::write_bundle(std::slice::from_ref(&fetched), bundle)?;
        println!(
            "bundle {} written ({} artifact(s)); use it with: installer setup flannel --offline-bundle {}",
            bundle.display(),
            manifest.artifacts.len(),
            bundle.display()
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// Nodes selected by `--limit` (all when absent), in cluster order.
pub fn selected_nodes<'c>(
    project: &Project,
    cluster: &'c Cluster,
    limit: Option<&str>,
) -> Result<Vec<&'c Node>> {
    let Some(pattern) = limit else {
        return Ok(cluster.nodes.iter().collect());
    };
    let matched: BTreeSet<String> = project.inventory.select(pattern)?.into_iter().collect();
    let nodes: Vec<&Node> = cluster
        .nodes
        .iter()
        .filter(|n| matched.contains(&n.host))
        .collect();
    if nodes.is_empty() {
        bail!("--limit {pattern:?} matches no master or node of this cluster");
    }
    Ok(nodes)
}

/// Connection settings of a host from its resolved `ansible_*` variables.
pub fn connection_spec(
    project: &Project,
    host: &str,
    defaults: &ConnDefaults,
) -> Result<ConnectionSpec> {
    let mut conn_vars: IndexMap<String, Json> = IndexMap::new();
    for name in project.vars.names(host)? {
        if name.starts_with("ansible_") {
            let value = project
                .vars
                .resolve_json(host, &name)
                .with_context(|| format!("host {host}: variable {name}"))?;
            conn_vars.insert(name, value);
        }
    }
    Ok(ConnectionSpec::from_vars(host, &conn_vars, defaults)?)
}

/// `-o Key=Value` options found in a host's `ansible_ssh_common_args` / `ansible_ssh_extra_args`.
pub fn ssh_options(project: &Project, host: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for var in ["ansible_ssh_common_args", "ansible_ssh_extra_args"] {
        let Ok(text) = project.vars.resolve_string(host, var) else {
            continue;
        };
        let words = shlex::split(&text).unwrap_or_default();
        let mut it = words.iter();
        while let Some(w) = it.next() {
            let opt = if w == "-o" {
                it.next().cloned()
            } else {
                w.strip_prefix("-o").map(str::to_string)
            };
            if let Some((k, v)) = opt.as_deref().and_then(|o| o.split_once('=')) {
                out.push((k.trim().to_ascii_lowercase(), v.trim().to_string()));
            }
        }
    }
    out
}

fn plan_host(
    project: &Project,
    node: &Node,
    plugins: &[artifact::ExtractedFile],
    node_binary: Option<&Path>,
    rendered: &[Rendered],
) -> Result<HostPlan> {
    let vars = &project.vars;
    let bin_dir = vars.resolve_string(&node.host, "bin_dir")?;
    let cni_bin_dir = vars.resolve_string(&node.host, "CNI_BIN_DIR")?;
    for (name, dir) in [("bin_dir", &bin_dir), ("CNI_BIN_DIR", &cni_bin_dir)] {
        if !dir.starts_with('/') {
            bail!(
                "host {}: {name}={dir:?} must be an absolute path",
                node.host
            );
        }
    }
    let bin_dir = bin_dir.trim_end_matches('/').to_string();
    let cni_bin_dir = cni_bin_dir.trim_end_matches('/').to_string();
    let mut plan = HostPlan::default();
    let mut dirs: Vec<String> = vec![
        bin_dir.clone(),
        cni_bin_dir.clone(),
        "/etc/cni/net.d".into(),
    ];
    for r in rendered {
        if let Destination::HostFile { host, path, mode } = &r.dest
            && *host == node.host
        {
            if let Some(parent) = Path::new(path).parent() {
                dirs.push(parent.display().to_string());
            }
            plan.files.push((path.clone(), r.content.clone(), *mode));
        }
    }
    for d in dirs {
        if !plan.dirs.iter().any(|(p, _)| *p == d) {
            plan.dirs.push((d, 0o755));
        }
    }
    for p in plugins {
        plan.plugins
            .push((format!("{cni_bin_dir}/{}", p.name), p.path.clone()));
    }
    // Image mode: the DaemonSet's init container copies its own `flannel` plugin.
    if let Some(node_binary) = node_binary {
        let binary_path = format!("{bin_dir}/installer");
        plan.node_binary = Some((binary_path.clone(), node_binary.to_path_buf()));
        let link_target = if cni_bin_dir == bin_dir {
            "installer".to_string()
        } else {
            binary_path
        };
        plan.links
            .push((format!("{cni_bin_dir}/flannel"), link_target));
    }
    plan.removals
        .push(crate::network::flannel::CNI_DEFAULT_CONF_PATH.to_string());
    Ok(plan)
}

/// The agent part of a host's plan (embedded agent only).
fn plan_agent(project: &Project, node: &Node, plan: &HostPlan, timeout: u64) -> Result<AgentPlan> {
    use crate::network::flannel::{AGENT_CONFIG_PATH, AGENT_UNIT_PATH, NET_CONF_PATH};
    let vars = &project.vars;
    let binary = plan
        .node_binary
        .as_ref()
        .map(|(p, _)| p.clone())
        .context("no node binary planned")?;
    let log_dir = vars.resolve_string(&node.host, "flannel_agent_log_dir")?;
    let port = vars.resolve_string(&node.host, "FLANNEL_HEALTHZ_PORT")?;
    Ok(AgentPlan {
        restart_on: vec![
            binary.clone(),
            AGENT_CONFIG_PATH.into(),
            NET_CONF_PATH.into(),
        ],
        binary,
        config: AGENT_CONFIG_PATH.into(),
        unit_file: AGENT_UNIT_PATH.into(),
        pidfile: AGENT_PIDFILE.into(),
        log: format!("{}/flannel-agent.log", log_dir.trim_end_matches('/')),
        readyz: format!("http://127.0.0.1:{port}/readyz"),
        subnet_file: "/run/flannel/subnet.env".into(),
        timeout: std::time::Duration::from_secs(timeout),
    })
}

/// An etcd client for the deploy host: TLS files from `ETCD_DEPLOY_*FILE` when an endpoint is
/// `https://`.
fn deploy_etcd_client(
    project: &Project,
    cluster: &Cluster,
    endpoints: &[String],
) -> Result<crate::etcd_gateway::EtcdGateway> {
    let first = &cluster.nodes[0].host;
    let file = |name: &str| -> Result<Option<PathBuf>> {
        let v = project.vars.resolve_string(first, name)?;
        Ok((!v.trim().is_empty()).then(|| PathBuf::from(v.trim())))
    };
    let tls = if endpoints.iter().any(|e| e.starts_with("https://")) {
        crate::etcd_gateway::EtcdTls {
            ca: file("ETCD_DEPLOY_CAFILE")?,
            cert: file("ETCD_DEPLOY_CERTFILE")?,
            key: file("ETCD_DEPLOY_KEYFILE")?,
        }
    } else {
        crate::etcd_gateway::EtcdTls::default()
    };
    Ok(crate::etcd_gateway::EtcdGateway::new(endpoints, &tls)?)
}

/// Write flannel's network config to etcd before the agents start; reports what it did.
fn write_etcd_config(
    project: &Project,
    cluster: &Cluster,
    rendered: &[Rendered],
    check: bool,
) -> Result<Option<String>> {
    let crate::cluster::Datastore::Etcd { endpoints, .. } = &cluster.datastore else {
        return Ok(None);
    };
    let Some((key, content)) = rendered.iter().find_map(|r| match &r.dest {
        Destination::EtcdKey { key } => Some((key.clone(), r.content.clone())),
        _ => None,
    }) else {
        return Ok(None);
    };
    let etcd = deploy_etcd_client(project, cluster, endpoints)?;
    let wanted: Json = serde_json::from_str(&content).context("network config")?;
    let current = etcd.get(&key)?;
    let same = current
        .as_deref()
        .and_then(|c| serde_json::from_str::<Json>(c).ok())
        .is_some_and(|c| c == wanted);
    let compact = wanted.to_string();
    Ok(Some(if same {
        format!("etcd {key}: ok (unchanged)")
    } else if check {
        format!("etcd {key}: would be set to {compact}")
    } else {
        etcd.put(&key, &compact)?;
        format!("etcd {key}: changed: {compact}")
    }))
}

/// A local file to upload, hashed once for all hosts.
#[derive(Debug, Clone)]
pub struct LocalFile {
    /// Path on the deploy host.
    pub path: PathBuf,
    /// sha256 (hex).
    pub sha256: String,
    /// Size in bytes.
    pub size: u64,
}

/// Apply one host's plan: one round trip for the facts of every path, one for all changes.
fn apply_plan(
    ctx: &mut HostCtx<'_>,
    plan: &HostPlan,
    locals: &IndexMap<PathBuf, LocalFile>,
) -> Result<(), HostFailed> {
    let remote = ctx.remote();
    let exec_attrs = root_attrs(0o755);
    let data_attrs = root_attrs(0o644);
    let file_attrs: Vec<Attrs> = plan.files.iter().map(|(_, _, m)| root_attrs(*m)).collect();
    let hashed: Vec<(String, u64)> = plan
        .files
        .iter()
        .map(|(_, c, _)| (artifact::sha256_bytes(c.as_bytes()), c.len() as u64))
        .collect();
    let mut items: Vec<(&'static str, crate::remote::Desired<'_>)> = Vec::new();
    for (dir, mode) in &plan.dirs {
        items.push((
            "directories",
            crate::remote::Desired::Dir {
                path: dir,
                mode: *mode,
            },
        ));
    }
    let local = |p: &Path| locals.get(p);
    for (path, src) in plan.plugins.iter().chain(plan.node_binary.iter()) {
        let Some(lf) = local(src) else {
            return Err(ctx.fail("plan", format!("{} was not hashed", src.display())));
        };
        let step = if Some(src.as_path()) == plan.node_binary.as_ref().map(|(_, p)| p.as_path()) {
            "node binary"
        } else {
            "cni plugins"
        };
        items.push((
            step,
            crate::remote::Desired::File {
                path,
                content: Content::File(&lf.path),
                sha256: &lf.sha256,
                size: lf.size,
                attrs: &exec_attrs,
            },
        ));
    }
    for (path, target) in &plan.links {
        items.push(("node binary", crate::remote::Desired::Link { path, target }));
    }
    for (i, (path, content, _)) in plan.files.iter().enumerate() {
        items.push((
            "config",
            crate::remote::Desired::File {
                path,
                content: Content::Bytes(content.as_bytes()),
                sha256: &hashed[i].0,
                size: hashed[i].1,
                attrs: &file_attrs[i],
            },
        ));
    }
    for path in &plan.removals {
        items.push(("cleanup", crate::remote::Desired::Absent { path }));
    }
    if let Some((path, src)) = &plan.image {
        let Some(lf) = local(src) else {
            return Err(ctx.fail("plan", format!("{} was not hashed", src.display())));
        };
        items.push((
            "image",
            crate::remote::Desired::File {
                path,
                content: Content::File(&lf.path),
                sha256: &lf.sha256,
                size: lf.size,
                attrs: &data_attrs,
            },
        ));
    }
    ctx.step("facts");
    let paths: Vec<&str> = items.iter().map(|(_, d)| d.path()).collect();
    let facts = remote
        .facts(&paths)
        .map_err(|e| ctx.fail("facts", e.to_string()))?;
    if let Some((_, node_binary)) = &plan.node_binary {
        check_architecture(ctx, node_binary, &facts.machine)?;
    }
    let desired: Vec<crate::remote::Desired<'_>> = items.iter().map(|(_, d)| d.clone()).collect();
    let results = remote.converge(&desired, &facts);
    let mut current = "";
    let mut changed: BTreeSet<String> = BTreeSet::new();
    for ((step, desired), result) in items.iter().zip(results) {
        if *step != current {
            ctx.step(step);
            current = step;
        }
        if ctx.record(result)? == crate::remote::OpStatus::Changed {
            changed.insert(desired.path().to_string());
        }
    }
    if let Some((path, _)) = &plan.image
        && changed.contains(path)
    {
        ctx.step("image");
        ctx.record(remote.command(&["sh", "-c", LOAD_IMAGE_SCRIPT, "load-image", path]))?;
    }
    if let Some(agent) = &plan.agent {
        ctx.step("agent");
        let command = [
            agent.binary.as_str(),
            "agent",
            "--config",
            agent.config.as_str(),
        ];
        let spec = crate::remote::ServiceSpec {
            unit: AGENT_UNIT,
            binary: &agent.binary,
            command: &command,
            pidfile: &agent.pidfile,
            log: &agent.log,
            restart: agent.restart_on.iter().any(|p| changed.contains(p)),
            reload: changed.contains(&agent.unit_file),
        };
        ctx.record(remote.ensure_service(&spec))?;
        let ready = remote
            .wait_ready(
                &agent.binary,
                &agent.readyz,
                &agent.subnet_file,
                &agent.log,
                AGENT_UNIT,
                agent.timeout,
            )
            .map_err(|e| ctx.fail("wait", e.to_string()))?;
        ctx.record(ready)?;
    }
    Ok(())
}

/// The binary pushed to nodes when `--node-binary` is not given: the node build
/// ([`crate::node_cli::NODE_BINARY_NAME`]) next to this binary when it is there, else this
/// binary (which has every node subcommand too, only more besides).
fn default_node_binary() -> Result<PathBuf> {
    let me = std::env::current_exe().context("locating this binary")?;
    let slim = me.with_file_name(crate::node_cli::NODE_BINARY_NAME);
    Ok(if slim.is_file() { slim } else { me })
}

/// Load an image tarball into the node's container runtime (containerd's k8s.io namespace, else
/// docker). A failed load removes the tarball, so the next run pushes and loads it again.
const LOAD_IMAGE_SCRIPT: &str = r#"f="$1"
PATH="$PATH:/opt/kube/bin:/usr/local/bin"
if command -v ctr >/dev/null 2>&1; then ctr -n=k8s.io images import "$f" || { rm -f "$f"; exit 1; }
elif command -v docker >/dev/null 2>&1; then docker load -i "$f" || { rm -f "$f"; exit 1; }
else rm -f "$f"; echo "no container runtime client (ctr or docker) on this host to load $f" >&2; exit 1
fi"#;

fn root_attrs(mode: u32) -> Attrs {
    Attrs {
        mode: Some(mode),
        owner: Some("root".into()),
        group: Some("root".into()),
    }
}

/// The machine name (`uname -m`) of the CPU a binary was built for, when it is this binary.
fn own_machine() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "x86_64",
        "aarch64" => "aarch64",
        other => other,
    }
}

fn check_architecture(
    ctx: &mut HostCtx<'_>,
    local: &Path,
    machine: &str,
) -> Result<(), HostFailed> {
    let is_self = std::env::current_exe()
        .ok()
        .and_then(|p| p.canonicalize().ok())
        .zip(local.canonicalize().ok())
        .is_some_and(|(a, b)| a == b);
    if is_self && machine != own_machine() {
        return Err(ctx.fail(
            "node binary",
            format!(
                "host is {machine} but this installer is built for {}; pass --node-binary PATH with a build for {machine}",
                own_machine()
            ),
        ));
    }
    Ok(())
}

/// `installer setup flannel`.
pub fn run_setup(args: SetupArgs) -> Result<ExitCode> {
    if args.plugin != "flannel" {
        bail!(
            "unknown network plugin {:?}: supported: {}",
            args.plugin,
            crate::cluster::SUPPORTED_NETWORKS.join(", ")
        );
    }
    let json = args.output == OutputFormat::Json;
    let project = Project::load(&args.source, &args.plugin)?;
    let cluster = project.cluster()?;
    let nodes = selected_nodes(&project, &cluster, args.limit.as_deref())?;
    let first = &cluster.nodes[0].host;
    // The kubeconfig is checked before anything slow happens.
    let kube_mode = cluster.datastore == crate::cluster::Datastore::Kubernetes && !args.files_only;
    let session = if kube_mode {
        Some(crate::kubeapi::KubeSession::connect(
            args.kubeconfig.as_deref(),
        )?)
    } else {
        None
    };

    // 1. Artifacts (local: cached, verified; also in check mode).
    let spec = cni_artifact(&project, first)?;
    let fetched: Fetched = artifact::fetch(&spec, &fetch_options(&args.fetch, json))?;
    let wanted: Vec<String> = match project.vars.resolve_json(first, "CNI_PLUGINS")? {
        Json::Array(items) => items
            .into_iter()
            .filter_map(|v| v.as_str().map(str::to_string))
            .collect(),
        other => bail!("CNI_PLUGINS must be a list of plugin names, got {other}"),
    };
    let wanted_refs: Vec<&str> = wanted.iter().map(String::as_str).collect();
    // Extracted once per tarball into the cache, reused while unchanged.
    let plugins = artifact::cached_plugins(
        &fetched.path,
        &fetched.sha256,
        &wanted_refs,
        &args.fetch.cache_dir,
        &ExtractLimits::default(),
    )?;

    // 2. Render everything (checked) before touching any host.
    let specs = crate::network::flannel::outputs(&cluster);
    let rendered = crate::render::render_all(&cluster, &project.vars, &specs, None)?;
    let embedded = cluster.agent == crate::cluster::AgentMode::Embedded;
    let node_binary = match &args.node_binary {
        Some(p) => p.clone(),
        None => default_node_binary()?,
    };
    if embedded && !node_binary.is_file() {
        bail!("node binary {} does not exist", node_binary.display());
    }
    let image_tarball = if embedded {
        None
    } else {
        offline_image(&project, first)?
    };

    // 3. The cluster first: objects applied (server-side), agent credentials read back.
    let printer = crate::kube_setup::Printer { json };
    let objects = crate::kube_setup::manifest_objects(&rendered);
    let mut kubeconfigs = IndexMap::new();
    if let Some(session) = &session {
        let opts = crate::kubeapi::apply::ApplyOptions {
            dry_run: args.check,
            force_conflicts: args.force_conflicts,
            diff: args.diff,
        };
        crate::kube_setup::apply_manifest(session, &objects, opts, printer)?;
        if embedded {
            kubeconfigs = crate::kube_setup::agent_kubeconfigs(
                &project, session, &objects, &nodes, args.check, printer,
            )?;
        }
    }

    // 4. Plans and connections.
    let defaults = ConnDefaults::load()?;
    let mut plans: IndexMap<String, HostPlan> = IndexMap::new();
    let mut conns = Vec::new();
    let start_agent = embedded && !args.files_only && crate::cli::has_subcommand("agent");
    for node in &nodes {
        let binary = embedded.then_some(node_binary.as_path());
        let mut plan = plan_host(&project, node, &plugins, binary, &rendered)?;
        let mut restart_on = Vec::new();
        if let Some(text) = kubeconfigs.get(&node.host) {
            let path = project
                .vars
                .resolve_string(&node.host, "FLANNEL_KUBECONFIG")?;
            if !path.starts_with('/') {
                bail!(
                    "host {}: FLANNEL_KUBECONFIG={path:?} must be an absolute path",
                    node.host
                );
            }
            if let Some(parent) = Path::new(&path).parent() {
                let parent = parent.display().to_string();
                if !plan.dirs.iter().any(|(d, _)| *d == parent) {
                    plan.dirs.push((parent, 0o755));
                }
            }
            plan.files.push((path.clone(), text.clone(), 0o600));
            restart_on.push(path);
        }
        if let Some((remote, local)) = &image_tarball {
            plan.dirs.push(("/opt/kube/images".into(), 0o755));
            plan.image = Some((remote.clone(), local.clone()));
        }
        if start_agent {
            let mut agent = plan_agent(&project, node, &plan, args.wait_timeout)?;
            agent.restart_on.extend(restart_on);
            plan.agent = Some(agent);
        }
        plans.insert(node.host.clone(), plan);
        conns.push(connection_spec(&project, &node.host, &defaults)?);
    }
    let connect = connect_options(
        &project,
        &nodes[0].host,
        &defaults,
        args.known_hosts.as_ref(),
        args.host_key_policy,
    );
    let fleet_opts = FleetOptions {
        forks: defaults.forks(args.forks),
        check: args.check,
        diff: args.diff,
        connect,
    };

    // 5. flannel's network config in etcd (the agents wait for it), and the deploy-host copy of
    //    the manifest (kubeasz keeps it in {{ cluster_dir }}/yml).
    let etcd_line = if args.files_only {
        None
    } else {
        write_etcd_config(&project, &cluster, &rendered, args.check)?
    };
    if let Some(line) = etcd_line {
        if json {
            println!("{}", serde_json::json!({ "event": "etcd", "detail": line }));
        } else {
            eprintln!("{line}");
        }
    }
    if !args.check {
        for r in &rendered {
            if let Destination::Cluster { deploy_path } = &r.dest {
                write_atomically(Path::new(deploy_path), r.content.as_bytes())?;
            }
        }
    }

    // 6. Every host in parallel.
    let human;
    let json_reporter;
    let reporter: &dyn Reporter = if json {
        json_reporter = JsonReporter::new();
        &json_reporter
    } else {
        human = HumanReporter::new(args.verbose, args.diff);
        &human
    };
    let mut locals: IndexMap<PathBuf, LocalFile> = plugins
        .iter()
        .map(|p| {
            let lf = LocalFile {
                path: p.path.clone(),
                sha256: p.sha256.clone(),
                size: p.size,
            };
            (p.path.clone(), lf)
        })
        .collect();
    let mut memo = artifact::DigestMemo::open(&args.fetch.cache_dir);
    let mut uploads: Vec<PathBuf> = Vec::new();
    if embedded {
        uploads.push(node_binary.clone());
    }
    if let Some((_, local)) = &image_tarball {
        uploads.push(local.clone());
    }
    for p in uploads {
        let (sha256, size) = memo
            .sha256(&p)
            .with_context(|| format!("reading {}", p.display()))?;
        locals.insert(
            p.clone(),
            LocalFile {
                path: p,
                sha256,
                size,
            },
        );
    }
    memo.save();
    let recap: Recap = Fleet::new(fleet_opts, reporter).run(&conns, |ctx| {
        let Some(plan) = plans.get(ctx.host()) else {
            return Err(ctx.fail("plan", "no plan for this host"));
        };
        apply_plan(ctx, plan, &locals)
    });

    // 7. The truth from the API: every node annotated by its agent, or the DaemonSet ready.
    let mut ok = recap.success();
    if let Some(session) = &session
        && ok
        && !args.check
    {
        let names = crate::kube_setup::node_names(&project, &nodes)?;
        let timeout = std::time::Duration::from_secs(args.wait_timeout);
        ok = if !embedded {
            crate::kube_setup::wait_daemonset(session, &objects, &names, timeout, printer)?
        } else if start_agent {
            let backend = match cluster.backend {
                crate::cluster::Backend::HostGw => "host-gw",
                crate::cluster::Backend::Vxlan { .. } => "vxlan",
            };
            crate::kube_setup::wait_nodes_annotated(session, &names, backend, timeout, printer)?
        } else {
            true
        };
    }
    Ok(if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(2)
    })
}

/// Image mode: the offline image tarball (`{{ base_dir }}/down/{{ flannel_offline }}`) when
/// it exists on the deploy host, with where it goes on nodes (kubeasz's /opt/kube/images).
fn offline_image(project: &Project, host: &str) -> Result<Option<(String, PathBuf)>> {
    let name = project.vars.resolve_string(host, "flannel_offline")?;
    let base = project.vars.resolve_string(host, "base_dir")?;
    let name = name.trim();
    if name.is_empty() || name.contains('/') {
        return Ok(None);
    }
    let local = Path::new(base.trim()).join("down").join(name);
    Ok(local
        .is_file()
        .then(|| (format!("/opt/kube/images/{name}"), local)))
}

/// Write a local file through a temporary name in the same directory.
fn write_atomically(path: &Path, bytes: &[u8]) -> Result<()> {
    let dir = path
        .parent()
        .with_context(|| format!("{} has no parent directory", path.display()))?;
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let mut tmp = tempfile::NamedTempFile::new_in(dir)
        .with_context(|| format!("creating a temporary file in {}", dir.display()))?;
    std::io::Write::write_all(&mut tmp, bytes)?;
    tmp.persist(path)
        .with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}

/// `installer clean PLUGIN`.
#[derive(Debug, Args)]
pub struct CleanArgs {
    /// Network plugin to remove (flannel).
    pub plugin: String,
    #[command(flatten)]
    pub source: SourceArgs,
    /// Only hosts matching this Ansible host pattern.
    #[arg(short = 'l', long, value_name = "PATTERN")]
    pub limit: Option<String>,
    /// Hosts worked on at once (default: ansible.cfg forks, else 50).
    #[arg(short = 'f', long)]
    pub forks: Option<usize>,
    /// Show what would be removed; remove nothing.
    #[arg(short = 'C', long)]
    pub check: bool,
    /// More detail: -v shows unchanged operations too.
    #[arg(short = 'v', long, action = clap::ArgAction::Count)]
    pub verbose: u8,
    /// Output: human text, or one JSON event per line.
    #[arg(short = 'o', long, value_enum, default_value = "text")]
    pub output: OutputFormat,
    /// known_hosts file (as for setup).
    #[arg(long, value_name = "FILE")]
    pub known_hosts: Option<PathBuf>,
    /// What to do with unknown host keys.
    #[arg(long, value_enum)]
    pub host_key_policy: Option<HostKeyPolicy>,
    /// kubeconfig of the cluster (FLANNEL_DATASTORE=kubernetes; default: $KUBECONFIG, else
    /// ~/.kube/config).
    #[arg(long, value_name = "FILE")]
    pub kubeconfig: Option<PathBuf>,
}

/// Connection options shared by setup, clean and verify.
pub fn connect_options(
    project: &Project,
    first_host: &str,
    defaults: &ConnDefaults,
    known_hosts: Option<&PathBuf>,
    policy: Option<HostKeyPolicy>,
) -> ConnectOptions {
    let ssh_opts = ssh_options(project, first_host);
    let opt = |key: &str| {
        ssh_opts
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.clone())
    };
    let known_hosts_file = match (known_hosts, opt("userknownhostsfile")) {
        (Some(p), _) => p.clone(),
        (None, Some(p)) => PathBuf::from(p),
        (None, None) => KnownHosts::default_user_file(&defaults.home.clone().unwrap_or_default()),
    };
    let policy = policy.or_else(|| {
        opt("stricthostkeychecking").map(|v| match v.to_ascii_lowercase().as_str() {
            "yes" => HostKeyPolicy::Strict,
            "no" | "off" => HostKeyPolicy::Off,
            _ => HostKeyPolicy::AcceptNew,
        })
    });
    ConnectOptions::new(
        Arc::new(KnownHosts::new(known_hosts_file)),
        defaults.host_key_policy(policy),
    )
}

/// `installer clean flannel`: stop the agents and remove what setup made, on every node and
/// in etcd, so that a new setup starts clean.
pub fn run_clean(args: CleanArgs) -> Result<ExitCode> {
    use crate::network::flannel::{
        AGENT_CONFIG_PATH, AGENT_UNIT_PATH, CNI_CONFLIST_PATH, NET_CONF_PATH,
    };
    if args.plugin != "flannel" {
        bail!(
            "unknown network plugin {:?}: supported: {}",
            args.plugin,
            crate::cluster::SUPPORTED_NETWORKS.join(", ")
        );
    }
    let json = args.output == OutputFormat::Json;
    let project = Project::load(&args.source, &args.plugin)?;
    let cluster = project.cluster()?;
    let nodes = selected_nodes(&project, &cluster, args.limit.as_deref())?;
    let defaults = ConnDefaults::load()?;
    struct CleanPlan {
        binary: String,
        paths: Vec<String>,
    }
    let mut plans: IndexMap<String, CleanPlan> = IndexMap::new();
    let mut conns = Vec::new();
    for node in &nodes {
        let vars = &project.vars;
        let bin_dir = vars.resolve_string(&node.host, "bin_dir")?;
        let bin_dir = bin_dir.trim_end_matches('/');
        let cni_bin_dir = vars.resolve_string(&node.host, "CNI_BIN_DIR")?;
        let cni_bin_dir = cni_bin_dir.trim_end_matches('/');
        let log_dir = vars.resolve_string(&node.host, "flannel_agent_log_dir")?;
        let mut paths: Vec<String> = vec![
            CNI_CONFLIST_PATH.into(),
            NET_CONF_PATH.into(),
            AGENT_CONFIG_PATH.into(),
            AGENT_UNIT_PATH.into(),
            "/run/flannel/subnet.env".into(),
            AGENT_PIDFILE.into(),
            "/var/lib/cni/flannel".into(),
            "/var/lib/cni/networks/cbr0".into(),
            crate::remote::converge::NODE_DIGEST_MEMO.into(),
            format!("{}/flannel-agent.log", log_dir.trim_end_matches('/')),
            format!("{cni_bin_dir}/flannel"),
        ];
        let kubeconfig = vars.resolve_string(&node.host, "FLANNEL_KUBECONFIG")?;
        if kubeconfig.starts_with('/') {
            paths.push(kubeconfig);
        }
        for plugin in crate::network::flannel::CNI_PLUGINS {
            paths.push(format!("{cni_bin_dir}/{plugin}"));
        }
        paths.push(format!("{bin_dir}/installer"));
        plans.insert(
            node.host.clone(),
            CleanPlan {
                binary: format!("{bin_dir}/installer"),
                paths,
            },
        );
        conns.push(connection_spec(&project, &node.host, &defaults)?);
    }
    let fleet_opts = FleetOptions {
        forks: defaults.forks(args.forks),
        check: args.check,
        diff: false,
        connect: connect_options(
            &project,
            &nodes[0].host,
            &defaults,
            args.known_hosts.as_ref(),
            args.host_key_policy,
        ),
    };
    let human;
    let json_reporter;
    let reporter: &dyn Reporter = if json {
        json_reporter = JsonReporter::new();
        &json_reporter
    } else {
        human = HumanReporter::new(args.verbose, false);
        &human
    };
    let agent_clean = crate::cli::has_subcommand("agent");
    let recap: Recap = Fleet::new(fleet_opts, reporter).run(&conns, |ctx| {
        let Some(plan) = plans.get(ctx.host()) else {
            return Err(ctx.fail("plan", "no plan for this host"));
        };
        let remote = ctx.remote();
        ctx.step("agent");
        ctx.record(remote.stop_service(AGENT_UNIT, AGENT_PIDFILE))?;
        let installed = remote
            .facts(&[plan.binary.as_str()])
            .map_err(|e| ctx.fail("facts", e.to_string()))?
            .exists(0);
        if agent_clean && installed && !remote.check_mode() {
            // The agent removes its datapath: device, routes, neighbours, FDB, rules, cni0.
            ctx.record(remote.command(&[
                plan.binary.as_str(),
                "agent",
                "clean",
                "--config",
                AGENT_CONFIG_PATH,
            ]))?;
        }
        ctx.step("files");
        let items: Vec<crate::remote::Desired<'_>> = plan
            .paths
            .iter()
            .map(|p| crate::remote::Desired::Absent { path: p })
            .collect();
        let paths: Vec<&str> = plan.paths.iter().map(String::as_str).collect();
        let facts = remote
            .facts(&paths)
            .map_err(|e| ctx.fail("facts", e.to_string()))?;
        for r in remote.converge(&items, &facts) {
            ctx.record(r)?;
        }
        Ok(())
    });
    // Kubernetes: the applied objects (whole cluster only) and our annotations on the nodes.
    if recap.success() && cluster.datastore == crate::cluster::Datastore::Kubernetes {
        let specs = crate::network::flannel::outputs(&cluster);
        let rendered = crate::render::render_all(&cluster, &project.vars, &specs, None)?;
        let objects = crate::kube_setup::manifest_objects(&rendered);
        let session = crate::kubeapi::KubeSession::connect(args.kubeconfig.as_deref())?;
        let names = crate::kube_setup::node_names(&project, &nodes)?;
        crate::kube_setup::clean_cluster(
            &session,
            &objects,
            &names,
            args.limit.is_none(),
            args.check,
            crate::kube_setup::Printer { json },
        )?;
    }
    // Cluster-wide: flannel's keys in etcd (config and every lease).
    if recap.success()
        && let crate::cluster::Datastore::Etcd { endpoints, prefix } = &cluster.datastore
        && args.limit.is_none()
    {
        let etcd = deploy_etcd_client(&project, &cluster, endpoints)?;
        let prefix = format!("{}/", prefix.trim_end_matches('/'));
        let line = if args.check {
            format!("etcd {prefix}*: would be deleted")
        } else {
            let n = etcd.delete_prefix(&prefix)?;
            format!("etcd {prefix}*: {n} key(s) deleted")
        };
        if json {
            println!("{}", serde_json::json!({ "event": "etcd", "detail": line }));
        } else {
            eprintln!("{line}");
        }
    }
    Ok(if recap.success() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(2)
    })
}
