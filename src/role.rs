//! Roles: the templates and variable files of one install step (flannel first).
//!
//! Built-in roles are embedded in the binary from `templates/<role>/`. An operator's kubeasz role
//! folder (`--role-dir DIR` holding `defaults/main.yml`, `vars/main.yml`, `templates/*.j2`) is
//! layered over the built-in one: its defaults override ours key by key, its `vars/main.yml` becomes
//! the role-vars layer, and each of its templates replaces the built-in template of the same name.

use crate::vars::yaml_mapping;
use indexmap::IndexMap;
use serde_json::Value as Json;
use std::fmt;
use std::path::{Path, PathBuf};

/// One embedded file of a built-in role.
struct EmbeddedFile {
    name: &'static str,
    text: &'static str,
}

macro_rules! embed {
    ($role:literal, [$($file:literal),* $(,)?]) => {
        &[$(EmbeddedFile { name: $file, text: include_str!(concat!("../templates/", $role, "/", $file)) }),*]
    };
}

/// The built-in roles, by name.
const BUILTIN: &[(&str, &[EmbeddedFile])] = &[(
    "flannel",
    embed!(
        "flannel",
        [
            "defaults.yml",
            "kube-flannel.yaml.j2",
            "10-flannel.conflist.j2",
            "net-conf.json.j2",
            "agent.json.j2",
            "flannel-agent.service.j2",
        ]
    ),
)];

/// Names of the roles built into this binary.
pub fn builtin_names() -> Vec<&'static str> {
    BUILTIN.iter().map(|(n, _)| *n).collect()
}

/// Where a template's text came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    /// Embedded in the binary.
    BuiltIn,
    /// Read from an operator's role folder.
    File(PathBuf),
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Origin::BuiltIn => write!(f, "built-in"),
            Origin::File(p) => write!(f, "{}", p.display()),
        }
    }
}

/// A template of a role.
#[derive(Debug, Clone)]
pub struct RoleTemplate {
    /// Template text.
    pub source: String,
    /// Where it came from.
    pub origin: Origin,
}

/// A role's variable layers and templates, ready to render.
#[derive(Debug, Clone)]
pub struct Role {
    /// Role name (`flannel`).
    pub name: String,
    /// Role defaults (lowest precedence).
    pub defaults: IndexMap<String, Json>,
    /// Role vars (above the inventory, below `-e`).
    pub vars: IndexMap<String, Json>,
    /// Templates by file name (`kube-flannel.yaml.j2`).
    pub templates: IndexMap<String, RoleTemplate>,
}

/// Errors loading a role.
#[derive(Debug, thiserror::Error)]
pub enum RoleError {
    /// No built-in role of that name.
    #[error("no built-in role '{name}' (available: {})", available.join(", "))]
    Unknown {
        /// The name asked for.
        name: String,
        /// What exists.
        available: Vec<String>,
    },
    /// The role folder cannot be read.
    #[error("role folder {path}: {message}")]
    Folder {
        /// The folder or file.
        path: PathBuf,
        /// What went wrong.
        message: String,
    },
    /// A YAML variable file is invalid.
    #[error("{0}")]
    Yaml(String),
}

impl Role {
    /// Load a built-in role, with an operator's kubeasz-style role folder layered over it.
    pub fn load(name: &str, role_dir: Option<&Path>) -> Result<Role, RoleError> {
        let mut role = Role::builtin(name)?;
        if let Some(dir) = role_dir {
            role.overlay(dir)?;
        }
        Ok(role)
    }

    /// The built-in role only.
    pub fn builtin(name: &str) -> Result<Role, RoleError> {
        let files = BUILTIN
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, f)| *f)
            .ok_or_else(|| RoleError::Unknown {
                name: name.to_string(),
                available: builtin_names().iter().map(|s| s.to_string()).collect(),
            })?;
        let mut role = Role {
            name: name.to_string(),
            defaults: IndexMap::new(),
            vars: IndexMap::new(),
            templates: IndexMap::new(),
        };
        for file in files {
            if file.name == "defaults.yml" {
                let path = PathBuf::from(format!("<built-in>/templates/{name}/defaults.yml"));
                role.defaults = yaml_mapping(file.text, &path).map_err(RoleError::Yaml)?;
            } else {
                role.templates.insert(
                    file.name.to_string(),
                    RoleTemplate {
                        source: file.text.to_string(),
                        origin: Origin::BuiltIn,
                    },
                );
            }
        }
        Ok(role)
    }

    /// Layer a kubeasz role folder over this role.
    pub fn overlay(&mut self, dir: &Path) -> Result<(), RoleError> {
        let folder_err = |path: &Path, message: String| RoleError::Folder {
            path: path.to_path_buf(),
            message,
        };
        if !dir.is_dir() {
            return Err(folder_err(
                dir,
                "not a directory (expected a kubeasz role folder with defaults/, vars/, templates/)"
                    .into(),
            ));
        }
        for (sub, is_vars) in [("defaults/main.yml", false), ("vars/main.yml", true)] {
            let path = dir.join(sub);
            if !path.exists() {
                continue;
            }
            let text =
                std::fs::read_to_string(&path).map_err(|e| folder_err(&path, e.to_string()))?;
            let map = yaml_mapping(&text, &path).map_err(RoleError::Yaml)?;
            if is_vars {
                self.vars.extend(map);
            } else {
                self.defaults.extend(map);
            }
        }
        let tdir = dir.join("templates");
        if tdir.is_dir() {
            let mut entries: Vec<PathBuf> = std::fs::read_dir(&tdir)
                .map_err(|e| folder_err(&tdir, e.to_string()))?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.is_file())
                .collect();
            entries.sort();
            for path in entries {
                let Some(file_name) = path.file_name().and_then(|n| n.to_str()) else {
                    continue;
                };
                let source =
                    std::fs::read_to_string(&path).map_err(|e| folder_err(&path, e.to_string()))?;
                self.templates.insert(
                    file_name.to_string(),
                    RoleTemplate {
                        source,
                        origin: Origin::File(path.clone()),
                    },
                );
            }
        }
        Ok(())
    }
}
