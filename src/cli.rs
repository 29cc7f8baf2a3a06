//! Command-line interface: argument types and dispatch.

use crate::cluster::Cluster;
use crate::inventory::Inventory;
use crate::role::Role;
use crate::vars::{Layers, Variables};
use anyhow::{Context, Result, bail};
use clap::{Args, Parser, Subcommand, ValueEnum};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

/// kubeasz-style Kubernetes network installs without Ansible.
#[derive(Debug, Parser)]
#[command(name = "installer", version, about, propagate_version = true)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Top-level commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Show the inventory as Ansible reads it (same output as ansible-inventory).
    Inventory(InventoryArgs),
    /// Show a host's resolved variables and which layer set each.
    Vars(VarsArgs),
    /// Print (or write) every file and manifest setup would produce; touches nothing.
    Render(RenderArgs),
    /// Download and verify the CNI plugins into the cache (optionally an offline bundle).
    Fetch(crate::setup::FetchCmd),
    /// Install a network plugin on every master and node over SSH.
    Setup(crate::setup::SetupArgs),
    /// Stop the agents and remove everything setup made (nodes and etcd).
    Clean(crate::setup::CleanArgs),
    /// A local lab of real SSH hosts in network namespaces.
    Lab(crate::lab::LabArgs),
    /// Check the installed network: `verify ping-mesh` pings every pod-network path.
    Verify(crate::verify::VerifyArgs),
    /// Keep a command running with a pid file and log (hosts without systemd).
    #[command(hide = true)]
    Supervise(crate::supervise::SuperviseArgs),
    /// Exit 0 when an http:// URL answers 200 (readiness probe on nodes).
    #[command(hide = true)]
    ProbeHttp(crate::supervise::ProbeArgs),
    /// The node network agent (flannel-compatible); runs on the nodes.
    Agent(Box<crate::agent::AgentArgs>),
}

/// Options every command that reads the inventory shares.
#[derive(Debug, Clone, Args)]
pub struct SourceArgs {
    /// Inventory file (Ansible INI, kubeasz format).
    #[arg(
        short = 'i',
        long = "inventory",
        env = "ANSIBLE_INVENTORY",
        default_value = "/etc/ansible/hosts",
        global = true
    )]
    pub inventory: PathBuf,
    /// Extra variables, highest precedence: key=value, JSON/YAML, or @file.yml. Repeatable.
    #[arg(short = 'e', long = "extra-vars", value_name = "VARS", global = true)]
    pub extra_vars: Vec<String>,
    /// An operator's kubeasz role folder (defaults/main.yml, vars/main.yml, templates/*.j2)
    /// layered over the built-in role.
    #[arg(long, value_name = "DIR", global = true)]
    pub role_dir: Option<PathBuf>,
}

/// `installer inventory`.
#[derive(Debug, Args)]
#[command(group = clap::ArgGroup::new("action").required(true).args(["list", "graph", "host"]))]
pub struct InventoryArgs {
    /// Inventory file.
    #[arg(
        short = 'i',
        long = "inventory",
        env = "ANSIBLE_INVENTORY",
        default_value = "/etc/ansible/hosts"
    )]
    pub inventory: PathBuf,
    /// Every group and host with merged variables, as JSON.
    #[arg(long)]
    pub list: bool,
    /// The group tree (optionally from GROUP down).
    #[arg(long, value_name = "GROUP", num_args = 0..=1, default_missing_value = "all")]
    pub graph: Option<String>,
    /// One host's merged variables, as JSON.
    #[arg(long, value_name = "HOST")]
    pub host: Option<String>,
}

/// Output format for commands with a machine-readable form.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum OutputFormat {
    /// Human-readable.
    Text,
    /// JSON.
    Json,
}

/// `installer vars`.
#[derive(Debug, Args)]
pub struct VarsArgs {
    #[command(flatten)]
    pub source: SourceArgs,
    /// Host whose scope to resolve in.
    #[arg(long, value_name = "HOST")]
    pub host: String,
    /// Variables to show (default: all).
    pub names: Vec<String>,
    /// Output format.
    #[arg(short = 'o', long, value_enum, default_value = "text")]
    pub output: OutputFormat,
}

/// `installer render`.
#[derive(Debug, Args)]
pub struct RenderArgs {
    #[command(flatten)]
    pub source: SourceArgs,
    /// Network plugin (default: the inventory's CLUSTER_NETWORK).
    pub plugin: Option<String>,
    /// Print everything to stdout (the default when -o is not given).
    #[arg(long)]
    pub dry_run: bool,
    /// Write the outputs under DIR (cluster/, hosts/<host>/…, etcd/…) instead of printing.
    #[arg(
        short = 'o',
        long = "output-dir",
        value_name = "DIR",
        conflicts_with = "dry_run"
    )]
    pub output_dir: Option<PathBuf>,
    /// Only this host's per-host files (cluster-wide outputs are still shown).
    #[arg(long, value_name = "HOST")]
    pub host: Option<String>,
    /// Render one template (a .j2 path, or a role template name) for --host, with the full
    /// variable context, exactly as Ansible's template module would write it.
    #[arg(long, value_name = "FILE", requires = "host")]
    pub template: Option<String>,
}

/// Parse arguments, run the command, and turn errors into a message and exit code 1.
pub fn main() -> ExitCode {
    crate::artifact::ensure_crypto_provider();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Inventory(args) => run_inventory(args),
        Command::Vars(args) => run_vars(args),
        Command::Render(args) => run_render(args),
        Command::Fetch(args) => crate::setup::run_fetch(args),
        Command::Setup(args) => crate::setup::run_setup(args),
        Command::Clean(args) => crate::setup::run_clean(args),
        Command::Lab(args) => crate::lab::run(args),
        Command::Verify(args) => crate::verify::run(args),
        Command::Supervise(args) => crate::supervise::run(args),
        Command::ProbeHttp(args) => crate::supervise::probe_http(args),
        Command::Agent(args) => crate::agent::run(*args),
    };
    exit_code(result)
}

/// A command's exit code; an error is printed with its whole context chain and exits 1.
pub fn exit_code(result: Result<ExitCode>) -> ExitCode {
    match result {
        Ok(code) => code,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

/// Whether this build has a top-level subcommand (the node agent is optional while it is built).
pub fn has_subcommand(name: &str) -> bool {
    use clap::CommandFactory;
    Cli::command().find_subcommand(name).is_some()
}

/// Read the inventory named on the command line.
pub fn load_inventory(path: &Path) -> Result<Inventory> {
    if !path.exists() {
        bail!(
            "inventory {} does not exist: pass -i PATH (or set ANSIBLE_INVENTORY); examples are in inventory/",
            path.display()
        );
    }
    Ok(Inventory::load(path)?)
}

/// The inventory, role and variables a command works on.
pub struct Project {
    /// The parsed inventory.
    pub inventory: Inventory,
    /// The role (built-in, maybe with the operator's folder over it).
    pub role: Role,
    /// Every host's variables.
    pub vars: Variables,
}

impl Project {
    /// Load inventory, role and variable layers for `plugin`.
    pub fn load(source: &SourceArgs, plugin: &str) -> Result<Project> {
        let inventory = load_inventory(&source.inventory)?;
        let role = Role::load(plugin, source.role_dir.as_deref())?;
        let extra_vars = crate::vars::parse_extra_vars(&source.extra_vars)?;
        let mut env = crate::template::environment();
        for (name, t) in &role.templates {
            env.add_template_owned(name.clone(), t.source.clone())
                .map_err(|e| anyhow::anyhow!(crate::template::describe_error(&e)))
                .with_context(|| format!("template {name} ({})", t.origin))?;
        }
        let layers = Layers {
            role_defaults: role.defaults.clone(),
            role_vars: role.vars.clone(),
            extra_vars,
        };
        let vars = Variables::new(&inventory, &layers, Arc::new(env));
        Ok(Project {
            inventory,
            role,
            vars,
        })
    }

    /// Validate the cluster model.
    pub fn cluster(&self) -> Result<Cluster> {
        Ok(Cluster::from_vars(&self.inventory, &self.vars)?)
    }
}

fn run_inventory(args: InventoryArgs) -> Result<ExitCode> {
    let inventory = load_inventory(&args.inventory)?;
    let mut out = std::io::stdout().lock();
    if args.list {
        writeln!(
            out,
            "{}",
            serde_json::to_string_pretty(&inventory.to_list_json())?
        )?;
    } else if let Some(group) = &args.graph {
        let text = inventory
            .graph(Some(group))
            .with_context(|| format!("no group '{group}' in {}", args.inventory.display()))?;
        writeln!(out, "{text}")?;
    } else if let Some(host) = &args.host {
        let json = inventory
            .host_json(host)
            .with_context(|| format!("host '{host}' is not in {}", args.inventory.display()))?;
        writeln!(out, "{}", serde_json::to_string_pretty(&json)?)?;
    }
    Ok(ExitCode::SUCCESS)
}

fn run_vars(args: VarsArgs) -> Result<ExitCode> {
    let project = Project::load(&args.source, "flannel")?;
    let vars = &project.vars;
    let names = if args.names.is_empty() {
        vars.names(&args.host)?
    } else {
        args.names.clone()
    };
    let mut out = std::io::stdout().lock();
    let mut json = serde_json::Map::new();
    let mut failed = false;
    for name in &names {
        let layer = vars
            .raw(&args.host, name)?
            .map(|(_, l)| l.to_string())
            .unwrap_or_else(|| "magic variable".to_string());
        match vars.resolve_json(&args.host, name) {
            Ok(value) => match args.output {
                OutputFormat::Json => {
                    json.insert(
                        name.clone(),
                        serde_json::json!({ "value": value, "layer": layer }),
                    );
                }
                OutputFormat::Text => {
                    writeln!(
                        out,
                        "{name} = {}    # {layer}",
                        serde_json::to_string(&value)?
                    )?;
                }
            },
            Err(e) => {
                failed = true;
                match args.output {
                    OutputFormat::Json => {
                        json.insert(
                            name.clone(),
                            serde_json::json!({ "error": e.to_string(), "layer": layer }),
                        );
                    }
                    OutputFormat::Text => eprintln!("error: {e}"),
                }
            }
        }
    }
    if args.output == OutputFormat::Json {
        writeln!(out, "{}", serde_json::to_string_pretty(&json)?)?;
    }
    Ok(if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

fn run_render(args: RenderArgs) -> Result<ExitCode> {
    let plugin = args.plugin.clone().unwrap_or_else(|| "flannel".to_string());
    let mut project = Project::load(&args.source, &plugin)?;
    if let Some(template) = &args.template {
        let host = args.host.as_deref().unwrap_or_default();
        return render_single_template(&mut project, template, host);
    }
    let cluster = project.cluster()?;
    if args.plugin.is_some() && cluster.network_plugin != plugin {
        bail!(
            "the inventory sets CLUSTER_NETWORK={:?} but you asked to render {plugin:?}",
            cluster.network_plugin
        );
    }
    let specs = crate::network::flannel::outputs(&cluster);
    let rendered =
        crate::render::render_all(&cluster, &project.vars, &specs, args.host.as_deref())?;
    match &args.output_dir {
        Some(dir) => {
            let written = crate::render::write_tree(&rendered, dir)?;
            for p in written {
                println!("wrote {}", p.display());
            }
        }
        None => {
            let mut out = std::io::stdout().lock();
            crate::render::print_dry_run(&rendered, &mut out)?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn render_single_template(project: &mut Project, template: &str, host: &str) -> Result<ExitCode> {
    let path = Path::new(template);
    let name = if path.is_file() {
        let source = std::fs::read_to_string(path)
            .with_context(|| format!("reading template {}", path.display()))?;
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or(template)
            .to_string();
        // Re-create the environment with this template added (templates are immutable once
        // shared).
        let mut env = crate::template::environment();
        for (n, t) in &project.role.templates {
            env.add_template_owned(n.clone(), t.source.clone())
                .map_err(|e| anyhow::anyhow!(crate::template::describe_error(&e)))?;
        }
        env.add_template_owned(name.clone(), source)
            .map_err(|e| anyhow::anyhow!(crate::template::describe_error(&e)))
            .with_context(|| format!("template {}", path.display()))?;
        project.vars = project.vars.with_env(Arc::new(env));
        name
    } else if project.role.templates.contains_key(template) {
        template.to_string()
    } else {
        bail!(
            "template {template:?} is neither a file nor a template of role {} (has: {})",
            project.role.name,
            project
                .role
                .templates
                .keys()
                .cloned()
                .collect::<Vec<_>>()
                .join(", ")
        );
    };
    let text = project.vars.render_template(host, &name)?;
    print!("{text}");
    Ok(ExitCode::SUCCESS)
}
