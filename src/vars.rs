//! Variables per host: Ansible's precedence layers and lazy, recursive resolution of `{{ }}`.
//!
//! Layers, lowest first (docs/variables.md): role defaults < inventory group vars (merged by the
//! inventory in Ansible's depth/priority/name order) < inventory host vars < role vars < `-e` extra
//! vars. Values are stored raw; a string holding Jinja is rendered only when something reads it,
//! in the scope of the host it belongs to, so `-e MASTER_IP=…` changes every value built from it.

use crate::inventory::{Inventory, VarOrigin};
use crate::template;
use indexmap::IndexMap;
use minijinja::value::{Enumerator, Object, Serde};
use minijinja::{Environment, Value};
use serde_json::Value as Json;
use std::cell::RefCell;
use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

/// Where a variable's winning value came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Layer {
    /// The role's `defaults` (built in, or `--role-dir`'s `defaults/main.yml`).
    RoleDefaults,
    /// An inventory `[group:vars]` section (or `all`).
    InventoryGroup(String),
    /// An inline `key=value` on the host's inventory line.
    InventoryHost,
    /// The role's `vars/main.yml`.
    RoleVars,
    /// `-e` / `--extra-vars`.
    ExtraVars,
    /// A magic variable Ansible defines itself (`inventory_hostname`, `groups`, …).
    Magic,
}

impl fmt::Display for Layer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Layer::RoleDefaults => write!(f, "role defaults"),
            Layer::InventoryGroup(g) => write!(f, "inventory group vars [{g}:vars]"),
            Layer::InventoryHost => write!(f, "inventory host vars"),
            Layer::RoleVars => write!(f, "role vars"),
            Layer::ExtraVars => write!(f, "extra vars (-e)"),
            Layer::Magic => write!(f, "magic variable"),
        }
    }
}

/// Errors from variable loading and resolution.
#[derive(Debug, Clone, thiserror::Error)]
pub enum VarError {
    /// The host is not in the inventory.
    #[error("host '{0}' is not in the inventory")]
    UnknownHost(String),
    /// A variable nobody defined.
    #[error("'{name}' is undefined (host {host})")]
    Undefined {
        /// Host whose scope was searched.
        host: String,
        /// The missing variable.
        name: String,
    },
    /// Variables that refer to each other in a loop.
    #[error("recursive loop detected in variable '{name}' (host {host}): {}", chain.join(" -> "))]
    Cycle {
        /// Host whose scope the loop was found in.
        host: String,
        /// The variable that closed the loop.
        name: String,
        /// The chain of variables, ending with the one seen twice.
        chain: Vec<String>,
    },
    /// A variable whose Jinja failed to render.
    #[error("variable '{name}' (host {host}, from {layer}): {message}")]
    Template {
        /// Host whose scope was used.
        host: String,
        /// The variable being resolved.
        name: String,
        /// Where its raw value came from.
        layer: String,
        /// What went wrong, naming the template and line.
        message: String,
    },
    /// A bad `-e` argument.
    #[error("extra vars '{arg}': {message}")]
    ExtraVars {
        /// The argument as given.
        arg: String,
        /// What is wrong with it.
        message: String,
    },
}

/// Parse `-e` arguments the way `ansible-playbook` does: `@file` (YAML/JSON), inline JSON/YAML
/// starting with `{` or `[`, or `k=v` pairs (values stay strings). Later arguments win.
pub fn parse_extra_vars(args: &[String]) -> Result<IndexMap<String, Json>, VarError> {
    let mut out = IndexMap::new();
    for arg in args {
        let err = |message: String| VarError::ExtraVars {
            arg: arg.clone(),
            message,
        };
        let trimmed = arg.trim();
        if let Some(path) = trimmed.strip_prefix('@') {
            let text = std::fs::read_to_string(path)
                .map_err(|e| err(format!("cannot read {path}: {e}")))?;
            let map = yaml_mapping(&text, Path::new(path)).map_err(err)?;
            out.extend(map);
        } else if trimmed.starts_with('/') || trimmed.starts_with('.') {
            return Err(err(format!(
                "looks like a file name; write -e @{trimmed} to load a file"
            )));
        } else if trimmed.starts_with('{') || trimmed.starts_with('[') {
            let value: Json = serde_saphyr::from_str(trimmed)
                .map_err(|e| err(format!("not valid JSON/YAML: {e}")))?;
            match value {
                Json::Object(map) => out.extend(map),
                _ => return Err(err("must be a mapping of names to values".into())),
            }
        } else {
            let words = shlex::split(trimmed)
                .ok_or_else(|| err("unbalanced quotes in key=value list".into()))?;
            for word in words {
                match word.split_once('=') {
                    Some((k, v)) if !k.is_empty() => {
                        out.insert(k.to_string(), Json::String(v.to_string()));
                    }
                    _ => {
                        return Err(err(format!(
                            "expected key=value, got '{word}' (use JSON or @file for other values)"
                        )));
                    }
                }
            }
        }
    }
    Ok(out)
}

/// Parse a YAML (or JSON) document that must be a mapping of variable names to values.
/// An empty document is an empty mapping.
pub fn yaml_mapping(text: &str, source: &Path) -> Result<IndexMap<String, Json>, String> {
    if text.trim().is_empty() {
        return Ok(IndexMap::new());
    }
    let value: Json =
        serde_saphyr::from_str(text).map_err(|e| format!("{}: {e}", source.display()))?;
    match value {
        Json::Object(map) => Ok(map.into_iter().collect()),
        Json::Null => Ok(IndexMap::new()),
        other => Err(format!(
            "{}: expected a mapping of variable names, found {}",
            source.display(),
            json_kind(&other)
        )),
    }
}

fn json_kind(v: &Json) -> &'static str {
    match v {
        Json::Null => "null",
        Json::Bool(_) => "a boolean",
        Json::Number(_) => "a number",
        Json::String(_) => "a string",
        Json::Array(_) => "a list",
        Json::Object(_) => "a mapping",
    }
}

/// The non-inventory layers that feed every host.
#[derive(Debug, Default, Clone)]
pub struct Layers {
    /// Role defaults (lowest).
    pub role_defaults: IndexMap<String, Json>,
    /// Role vars (above the inventory).
    pub role_vars: IndexMap<String, Json>,
    /// Extra vars (highest).
    pub extra_vars: IndexMap<String, Json>,
}

/// Raw (unrendered) variables of one host with their origin, plus its group memberships.
#[derive(Debug, Clone)]
struct HostRaw {
    vars: IndexMap<String, (Json, Layer)>,
    group_names: Vec<String>,
}

/// Every host's variables, resolved lazily against one template environment.
///
/// Cheap to clone; safe to share between threads.
#[derive(Clone)]
pub struct Variables {
    inner: Arc<Resolver>,
}

impl fmt::Debug for Variables {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Variables")
            .field("hosts", &self.inner.hosts.len())
            .finish()
    }
}

struct Resolver {
    env: Arc<Environment<'static>>,
    hosts: IndexMap<String, HostRaw>,
    groups: Value,
    inventory_file: PathBuf,
    cache: Mutex<HashMap<(String, String), Value>>,
}

thread_local! {
    /// Variables being resolved on this thread, outermost first, for loop detection.
    static STACK: RefCell<Vec<(String, String)>> = const { RefCell::new(Vec::new()) };
    /// The first resolution error raised inside a nested lookup, reported instead of the
    /// template engine's generic "undefined value".
    static PENDING: RefCell<Option<VarError>> = const { RefCell::new(None) };
    /// The last name looked up and not found, to name it in "undefined" errors.
    static MISSING: RefCell<Option<(String, String)>> = const { RefCell::new(None) };
}

impl Variables {
    /// Build the layered variables of every inventory host. `env` renders values holding Jinja
    /// (it should be the environment the role's templates live in, for `include`).
    pub fn new(inventory: &Inventory, layers: &Layers, env: Arc<Environment<'static>>) -> Self {
        let mut hosts = IndexMap::new();
        for host in inventory.hosts() {
            let mut vars: IndexMap<String, (Json, Layer)> = IndexMap::new();
            for (k, v) in &layers.role_defaults {
                vars.insert(k.clone(), (v.clone(), Layer::RoleDefaults));
            }
            for (k, (v, origin)) in inventory.host_var_origins(host) {
                let layer = match origin {
                    VarOrigin::Group(g) => Layer::InventoryGroup(g),
                    VarOrigin::Host => Layer::InventoryHost,
                };
                vars.insert(k, (v, layer));
            }
            for (k, v) in &layers.role_vars {
                vars.insert(k.clone(), (v.clone(), Layer::RoleVars));
            }
            for (k, v) in &layers.extra_vars {
                vars.insert(k.clone(), (v.clone(), Layer::ExtraVars));
            }
            let group_names = inventory.group_names(host);
            hosts.insert(host.to_string(), HostRaw { vars, group_names });
        }
        let groups = Value::from(Serde(inventory.groups_map()));
        Variables {
            inner: Arc::new(Resolver {
                env,
                hosts,
                groups,
                inventory_file: inventory.source().to_path_buf(),
                cache: Mutex::new(HashMap::new()),
            }),
        }
    }

    /// The same variables rendered with another environment (e.g. one extra template added).
    pub fn with_env(&self, env: Arc<Environment<'static>>) -> Self {
        Variables {
            inner: Arc::new(Resolver {
                env,
                hosts: self.inner.hosts.clone(),
                groups: self.inner.groups.clone(),
                inventory_file: self.inner.inventory_file.clone(),
                cache: Mutex::new(HashMap::new()),
            }),
        }
    }

    /// The template environment values are rendered with.
    pub fn env(&self) -> &Environment<'static> {
        &self.inner.env
    }

    /// Inventory host names in inventory order.
    pub fn hosts(&self) -> impl Iterator<Item = &str> {
        self.inner.hosts.keys().map(String::as_str)
    }

    /// Names of the variables a host has (without magic variables), in layer order.
    pub fn names(&self, host: &str) -> Result<Vec<String>, VarError> {
        let raw = self.inner.host(host)?;
        let mut names: Vec<String> = raw.vars.keys().cloned().collect();
        names.sort();
        Ok(names)
    }

    /// The raw (unrendered) value of a variable and the layer that set it.
    pub fn raw(&self, host: &str, name: &str) -> Result<Option<(Json, Layer)>, VarError> {
        let raw = self.inner.host(host)?;
        Ok(raw.vars.get(name).cloned())
    }

    /// Fully resolve one variable for one host.
    pub fn resolve(&self, host: &str, name: &str) -> Result<Value, VarError> {
        self.inner.host(host)?;
        PENDING.with(|p| p.borrow_mut().take());
        Resolver::resolve(&self.inner, host, name)
    }

    /// Resolve one variable as JSON (for output and typed access).
    pub fn resolve_json(&self, host: &str, name: &str) -> Result<Json, VarError> {
        let value = self.resolve(host, name)?;
        serde_json::to_value(&value).map_err(|e| VarError::Template {
            host: host.into(),
            name: name.into(),
            layer: "?".into(),
            message: format!("value cannot be represented as JSON: {e}"),
        })
    }

    /// Resolve a variable expected to be a string (numbers and booleans are printed).
    pub fn resolve_string(&self, host: &str, name: &str) -> Result<String, VarError> {
        let v = self.resolve(host, name)?;
        Ok(if v.is_none() || v.is_undefined() {
            String::new()
        } else {
            v.to_string()
        })
    }

    /// The template context for a host: every variable, resolved on demand.
    pub fn context(&self, host: &str) -> Result<Value, VarError> {
        self.inner.host(host)?;
        Ok(Value::from_object(HostScope {
            resolver: self.inner.clone(),
            host: host.to_string(),
        }))
    }

    /// Render a named template from the environment for a host, exactly as Ansible's template
    /// module would write it, mapping a failure that came from a variable to that variable's
    /// error.
    pub fn render_template(&self, host: &str, template_name: &str) -> Result<String, RenderError> {
        let ctx = self.context(host).map_err(RenderError::Var)?;
        PENDING.with(|p| p.borrow_mut().take());
        MISSING.with(|m| m.borrow_mut().take());
        let tmpl = self
            .inner
            .env
            .get_template(template_name)
            .map_err(|e| RenderError::Template(template::describe_error(&e)))?;
        template::render_str(&self.inner.env, template_name, tmpl.source(), ctx).map_err(|e| {
            Resolver::explain(&e, host).map_or_else(RenderError::Template, RenderError::Var)
        })
    }
}

/// A template that failed to render.
#[derive(Debug, Clone, thiserror::Error)]
pub enum RenderError {
    /// A variable the template read could not be resolved.
    #[error(transparent)]
    Var(VarError),
    /// The template itself failed (message names template and line).
    #[error("{0}")]
    Template(String),
}

impl Resolver {
    fn host(&self, host: &str) -> Result<&HostRaw, VarError> {
        self.hosts
            .get(host)
            .ok_or_else(|| VarError::UnknownHost(host.to_string()))
    }

    /// Turn an engine error into the most useful message: the variable error that caused it,
    /// or the template error text with the undefined name spelled out.
    fn explain(err: &template::TemplateError, host: &str) -> Result<VarError, String> {
        if let Some(pending) = PENDING.with(|p| p.borrow_mut().take()) {
            return Ok(pending);
        }
        let mut message = err.to_string();
        if err.is_undefined()
            && let Some((h, name)) = MISSING.with(|m| m.borrow_mut().take())
            && h == host
        {
            message = format!("'{name}' is undefined: {message}");
        }
        Err(message)
    }

    fn resolve(this: &Arc<Resolver>, host: &str, name: &str) -> Result<Value, VarError> {
        let key = (host.to_string(), name.to_string());
        if let Ok(cache) = this.cache.lock()
            && let Some(v) = cache.get(&key)
        {
            return Ok(v.clone());
        }
        if let Some(v) = this.magic(host, name) {
            return Ok(v);
        }
        let raw = this.host(host)?;
        let Some((value, layer)) = raw.vars.get(name) else {
            return Err(VarError::Undefined {
                host: host.into(),
                name: name.into(),
            });
        };
        // Loop detection: the same (host, name) already on this thread's stack.
        let cycle = STACK.with(|s| {
            let s = s.borrow();
            s.iter().position(|k| *k == key).map(|start| {
                let mut chain: Vec<String> = s[start..].iter().map(|(_, n)| n.clone()).collect();
                chain.push(name.to_string());
                chain
            })
        });
        if let Some(chain) = cycle {
            return Err(VarError::Cycle {
                host: host.into(),
                name: name.into(),
                chain,
            });
        }
        STACK.with(|s| s.borrow_mut().push(key.clone()));
        let result = Self::render_value(this, host, name, layer, value);
        STACK.with(|s| s.borrow_mut().pop());
        let value = result?;
        if let Ok(mut cache) = this.cache.lock() {
            cache.insert(key, value.clone());
        }
        Ok(value)
    }

    /// Render a raw value: strings holding Jinja are templated (a lone `{{ expr }}` keeps the
    /// expression's type), lists and mappings are walked, everything else is taken as is.
    fn render_value(
        this: &Arc<Resolver>,
        host: &str,
        name: &str,
        layer: &Layer,
        value: &Json,
    ) -> Result<Value, VarError> {
        match value {
            Json::String(s) if template::is_template(s) => {
                let ctx = Value::from_object(HostScope {
                    resolver: this.clone(),
                    host: host.to_string(),
                });
                MISSING.with(|m| m.borrow_mut().take());
                template::eval_native(&this.env, s, ctx).map_err(|e| {
                    match Self::explain(&e, host) {
                        Ok(inner) => inner,
                        Err(message) => VarError::Template {
                            host: host.into(),
                            name: name.into(),
                            layer: layer.to_string(),
                            message,
                        },
                    }
                })
            }
            Json::Array(items) => {
                let mut out = Vec::with_capacity(items.len());
                for item in items {
                    out.push(Self::render_value(this, host, name, layer, item)?);
                }
                Ok(Value::from(out))
            }
            Json::Object(map) => {
                let mut out = IndexMap::with_capacity(map.len());
                for (k, v) in map {
                    out.insert(k.clone(), Self::render_value(this, host, name, layer, v)?);
                }
                Ok(Value::from_iter(out))
            }
            other => Ok(Value::from(Serde(other))),
        }
    }

    /// Ansible's magic variables; they cannot be overridden.
    fn magic(self: &Arc<Resolver>, host: &str, name: &str) -> Option<Value> {
        match name {
            "inventory_hostname" => Some(Value::from(host)),
            "inventory_hostname_short" => {
                let short = if host.parse::<std::net::IpAddr>().is_ok() {
                    host
                } else {
                    host.split('.').next().unwrap_or(host)
                };
                Some(Value::from(short))
            }
            "group_names" => self
                .hosts
                .get(host)
                .map(|h| Value::from(h.group_names.clone())),
            "groups" => Some(self.groups.clone()),
            "hostvars" => Some(Value::from_object(HostVars {
                resolver: self.clone(),
            })),
            "inventory_file" => Some(Value::from(self.inventory_file.display().to_string())),
            "inventory_dir" => Some(Value::from(
                self.inventory_file
                    .parent()
                    .map(|p| p.display().to_string())
                    .unwrap_or_default(),
            )),
            "ansible_managed" if !self.hosts.get(host)?.vars.contains_key(name) => {
                Some(Value::from("Ansible managed"))
            }
            "ansible_check_mode" if !self.hosts.get(host)?.vars.contains_key(name) => {
                Some(Value::from(false))
            }
            _ => None,
        }
    }
}

/// One host's variable scope as a template context.
struct HostScope {
    resolver: Arc<Resolver>,
    host: String,
}

impl fmt::Debug for HostScope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "<vars of {}>", self.host)
    }
}

impl Object for HostScope {
    fn get_value(self: &Arc<Self>, key: &Value) -> Option<Value> {
        let name = key.as_str()?;
        match Resolver::resolve(&self.resolver, &self.host, name) {
            Ok(v) => Some(v),
            Err(VarError::Undefined { host, name }) => {
                MISSING.with(|m| *m.borrow_mut() = Some((host, name)));
                None
            }
            Err(e) => {
                PENDING.with(|p| {
                    let mut p = p.borrow_mut();
                    if p.is_none() {
                        *p = Some(e);
                    }
                });
                None
            }
        }
    }

    fn enumerate(self: &Arc<Self>) -> Enumerator {
        match self.resolver.hosts.get(&self.host) {
            Some(raw) => {
                Enumerator::Values(raw.vars.keys().map(|k| Value::from(k.as_str())).collect())
            }
            None => Enumerator::Empty,
        }
    }
}

/// The `hostvars` magic variable: every host's scope by name.
struct HostVars {
    resolver: Arc<Resolver>,
}

impl fmt::Debug for HostVars {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "<hostvars>")
    }
}

impl Object for HostVars {
    fn get_value(self: &Arc<Self>, key: &Value) -> Option<Value> {
        let host = key.as_str()?;
        if !self.resolver.hosts.contains_key(host) {
            MISSING.with(|m| *m.borrow_mut() = Some((host.to_string(), host.to_string())));
            return None;
        }
        Some(Value::from_object(HostScope {
            resolver: self.resolver.clone(),
            host: host.to_string(),
        }))
    }

    fn enumerate(self: &Arc<Self>) -> Enumerator {
        Enumerator::Values(
            self.resolver
                .hosts
                .keys()
                .map(|k| Value::from(k.as_str()))
                .collect(),
        )
    }
}
