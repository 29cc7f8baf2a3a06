//! Loading a node's CNI network configuration as containerd (go-cni + libcni) does.
//!
//! The conf dir's files ending in `.conf`, `.conflist` or `.json` are sorted by name and the
//! first one is the network (containerd's `max_conf_num = 1`, kubeasz's setting). A `.conflist`
//! is a list of plugins; a single-plugin `.conf`/`.json` is wrapped into a one-plugin list.
//! A broken first file is an error, not skipped, because containerd fails the same way.

use serde_json::{Map, Value};
use std::path::{Path, PathBuf};

/// A network: an ordered chain of plugin configs sharing a name and spec version.
#[derive(Debug, Clone, PartialEq)]
pub struct NetworkList {
    /// Network name (injected into every plugin config; part of cache file names).
    pub name: String,
    /// Spec version (injected into every plugin config).
    pub cni_version: String,
    /// `disableCheck`: CHECK succeeds without running plugins.
    pub disable_check: bool,
    /// The plugins, in ADD order.
    pub plugins: Vec<PluginConf>,
    /// The list's JSON text (stored in the result cache).
    pub bytes: Vec<u8>,
    /// The file it came from, if any.
    pub source: Option<PathBuf>,
}

/// One plugin's config inside a list.
#[derive(Debug, Clone, PartialEq)]
pub struct PluginConf {
    /// `type`: the binary to run.
    pub plugin_type: String,
    /// `name` as written in the plugin config (usually absent inside a list).
    pub name: String,
    /// Capabilities declared `true` (which runtime arguments it receives as `runtimeConfig`).
    pub capabilities: Vec<String>,
    /// The config object as written.
    pub conf: Map<String, Value>,
}

impl PluginConf {
    /// `type="flannel" name="cbr0"`, for messages (libcni's plugin description).
    pub fn describe(&self, list_name: &str) -> String {
        let name = if self.name.is_empty() {
            list_name
        } else {
            &self.name
        };
        if name.is_empty() {
            format!("type={:?}", self.plugin_type)
        } else {
            format!("type={:?} name={name:?}", self.plugin_type)
        }
    }
}

/// Why no usable network configuration was found.
#[derive(Debug, thiserror::Error)]
pub enum ConfError {
    /// The directory could not be listed.
    #[error("cannot list CNI config dir {dir}: {error}", dir = .dir.display())]
    ReadDir {
        /// The conf dir.
        dir: PathBuf,
        /// What the OS said.
        error: std::io::Error,
    },
    /// Nothing to load (containerd reports "cni plugin not initialized" then).
    #[error(
        "no CNI network configuration (*.conf, *.conflist, *.json) in {dir}: the network plugin is not installed on this node yet", dir = .dir.display()
    )]
    NoConfig {
        /// The conf dir.
        dir: PathBuf,
    },
    /// The chosen file could not be read.
    #[error("cannot read CNI config {path}: {error}", path = .path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// What the OS said.
        error: std::io::Error,
    },
    /// The chosen file is not a valid config.
    #[error("invalid CNI config {path}: {reason}", path = .path.display())]
    Invalid {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
}

/// Config files in `dir` with a CNI extension, sorted by name (libcni `ConfFiles` + sort).
pub fn conf_files(dir: &Path) -> Result<Vec<PathBuf>, ConfError> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(error) => {
            return Err(ConfError::ReadDir {
                dir: dir.to_path_buf(),
                error,
            });
        }
    };
    let mut files: Vec<PathBuf> = entries
        .filter_map(Result::ok)
        .filter(|e| e.file_type().is_ok_and(|t| !t.is_dir()))
        .map(|e| e.path())
        .filter(|p| has_extension(p, &["conf", "conflist", "json"]))
        .collect();
    files.sort();
    Ok(files)
}

/// Go's `filepath.Ext` semantics: a file named `.conf` has the extension `.conf`.
fn has_extension(path: &Path, wanted: &[&str]) -> bool {
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
    name.rfind('.')
        .is_some_and(|dot| wanted.contains(&&name[dot + 1..]))
}

/// The network containerd would use: the first config file in `dir`.
pub fn load_dir(dir: &Path) -> Result<NetworkList, ConfError> {
    let files = conf_files(dir)?;
    let first = files.first().ok_or_else(|| ConfError::NoConfig {
        dir: dir.to_path_buf(),
    })?;
    load_file(first)
}

/// Load one `.conflist` (list) or `.conf`/`.json` (single plugin) file.
pub fn load_file(path: &Path) -> Result<NetworkList, ConfError> {
    let bytes = std::fs::read(path).map_err(|error| ConfError::Read {
        path: path.to_path_buf(),
        error,
    })?;
    let invalid = |reason: String| ConfError::Invalid {
        path: path.to_path_buf(),
        reason,
    };
    let mut list = if has_extension(path, &["conflist"]) {
        let (mut list, inline_only) = list_from_bytes(&bytes).map_err(invalid)?;
        if !inline_only {
            let extra = path
                .parent()
                .map(|dir| plugins_from_dir(&dir.join(&list.name)))
                .transpose()
                .map_err(invalid)?
                .unwrap_or_default();
            list.plugins.extend(extra);
        }
        if list.plugins.is_empty() {
            return Err(invalid("no plugin configs found".into()));
        }
        list
    } else {
        list_from_plugin_bytes(&bytes).map_err(invalid)?
    };
    list.source = Some(path.to_path_buf());
    Ok(list)
}

/// Extra plugin configs in `<confdir>/<network name>/*.conf` (libcni ≥1.3 for lists without
/// `loadOnlyInlinedPlugins`).
fn plugins_from_dir(dir: &Path) -> Result<Vec<PluginConf>, String> {
    let mut out = Vec::new();
    for path in conf_files(dir).map_err(|e| e.to_string())? {
        if !has_extension(&path, &["conf"]) {
            continue;
        }
        let bytes =
            std::fs::read(&path).map_err(|e| format!("error reading {}: {e}", path.display()))?;
        out.push(plugin_from_bytes(&bytes)?);
    }
    Ok(out)
}

fn object(bytes: &[u8], what: &str) -> Result<Map<String, Value>, String> {
    match serde_json::from_slice::<Value>(bytes) {
        Ok(Value::Object(map)) => Ok(map),
        Ok(_) => Err(format!("error parsing {what}: not a JSON object")),
        Err(e) => Err(format!("error parsing {what}: {e}")),
    }
}

/// Parse one plugin config; it must have a string `type`.
pub fn plugin_from_bytes(bytes: &[u8]) -> Result<PluginConf, String> {
    plugin_from_map(object(bytes, "configuration")?)
}

fn plugin_from_map(conf: Map<String, Value>) -> Result<PluginConf, String> {
    let text = |key: &str| -> Result<String, String> {
        match conf.get(key) {
            None | Some(Value::Null) => Ok(String::new()),
            Some(Value::String(s)) => Ok(s.clone()),
            Some(_) => Err(format!(
                "error parsing configuration: {key:?} must be a string"
            )),
        }
    };
    let plugin_type = text("type")?;
    if plugin_type.is_empty() {
        return Err("error parsing configuration: missing 'type'".into());
    }
    let name = text("name")?;
    text("cniVersion")?;
    let capabilities = match conf.get("capabilities") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Object(caps)) => {
            let mut out = Vec::new();
            for (key, value) in caps {
                match value {
                    Value::Bool(true) => out.push(key.clone()),
                    Value::Bool(false) => {}
                    _ => {
                        return Err(format!(
                            "error parsing configuration: capability {key:?} must be true or false"
                        ));
                    }
                }
            }
            out
        }
        Some(_) => {
            return Err("error parsing configuration: \"capabilities\" must be an object".into());
        }
    };
    Ok(PluginConf {
        plugin_type,
        name,
        capabilities,
        conf,
    })
}

/// Parse a `.conflist`; the flag says whether only inline plugins count
/// (`loadOnlyInlinedPlugins`).
pub fn list_from_bytes(bytes: &[u8]) -> Result<(NetworkList, bool), String> {
    let raw = object(bytes, "configuration list")?;
    let fail = |what: String| format!("error parsing configuration list: {what}");
    let name = match raw.get("name") {
        None => return Err(fail("no name".into())),
        Some(Value::String(s)) => s.clone(),
        Some(other) => return Err(fail(format!("invalid name type {other}"))),
    };
    let mut cni_version = match raw.get("cniVersion") {
        None => String::new(),
        Some(Value::String(s)) => s.clone(),
        Some(other) => return Err(fail(format!("invalid cniVersion type {other}"))),
    };
    if let Some(versions) = raw.get("cniVersions") {
        cni_version = pick_version(versions, &cni_version).map_err(fail)?;
    }
    let read_bool = |key: &str| -> Result<bool, String> {
        match raw.get(key) {
            None => Ok(false),
            Some(Value::Bool(b)) => Ok(*b),
            Some(Value::String(s)) => match s.to_lowercase().as_str() {
                "true" => Ok(true),
                "false" => Ok(false),
                other => Err(fail(format!("invalid value {other:?} for {key}"))),
            },
            Some(other) => Err(fail(format!("invalid type {other} for {key}"))),
        }
    };
    let disable_check = read_bool("disableCheck")?;
    read_bool("disableGC")?;
    let inline_only = read_bool("loadOnlyInlinedPlugins")?;
    let mut plugins = Vec::new();
    match raw.get("plugins") {
        None if inline_only => {
            return Err(fail(
                "`loadOnlyInlinedPlugins` is true, and no 'plugins' key".into(),
            ));
        }
        None => {}
        Some(Value::Array(items)) => {
            if items.is_empty() {
                return Err(fail("no plugins in list".into()));
            }
            for (i, item) in items.iter().enumerate() {
                let map = item
                    .as_object()
                    .cloned()
                    .ok_or_else(|| format!("failed to parse plugin config {i}: not an object"))?;
                plugins.push(
                    plugin_from_map(map)
                        .map_err(|e| format!("failed to parse plugin config {i}: {e}"))?,
                );
            }
        }
        Some(other) => return Err(fail(format!("invalid 'plugins' type {other}"))),
    }
    Ok((
        NetworkList {
            name,
            cni_version,
            disable_check,
            plugins,
            bytes: bytes.to_vec(),
            source: None,
        },
        inline_only,
    ))
}

/// `cniVersions`: the highest listed version (or `cniVersion`) we support.
fn pick_version(versions: &Value, declared: &str) -> Result<String, String> {
    use crate::cni::version;
    let items = versions.as_array().ok_or("invalid type for cniVersions")?;
    let mut usable = Vec::new();
    for (i, item) in items.iter().enumerate() {
        let v = item
            .as_str()
            .ok_or_else(|| format!("invalid type for cniVersions index {i}"))?;
        let too_new = version::greater_than(v, version::CURRENT)
            .map_err(|e| format!("invalid cniVersions entry {v} at index {i}: {e}"))?;
        if !too_new {
            usable.push(v.to_string());
        }
    }
    if !declared.is_empty() && !version::greater_than(declared, version::CURRENT)? {
        usable.push(declared.to_string());
    }
    let mut best = declared.to_string();
    for v in usable {
        if best.is_empty() || version::greater_than(&v, &best)? {
            best = v;
        }
    }
    Ok(best)
}

/// Wrap a single-plugin config into a list named after it (libcni `ConfListFromConf`).
pub fn list_from_plugin_bytes(bytes: &[u8]) -> Result<NetworkList, String> {
    let plugin = plugin_from_bytes(bytes)?;
    let cni_version = plugin
        .conf
        .get("cniVersion")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    let list = serde_json::json!({
        "cniVersion": cni_version,
        "name": plugin.name,
        "plugins": [Value::Object(plugin.conf.clone())],
    });
    Ok(NetworkList {
        name: plugin.name.clone(),
        cni_version,
        disable_check: false,
        bytes: crate::cni::gojson::to_compact(&list).into_bytes(),
        plugins: vec![plugin],
        source: None,
    })
}

/// The loopback network containerd sets up for `lo` in every pod before the real one.
pub fn loopback() -> NetworkList {
    let bytes = br#"{"cniVersion":"0.3.1","name":"cni-loopback","plugins":[{"type":"loopback"}]}"#;
    let (list, _) = list_from_bytes(bytes).unwrap_or_else(|_| {
        (
            NetworkList {
                name: "cni-loopback".into(),
                cni_version: "0.3.1".into(),
                disable_check: false,
                plugins: Vec::new(),
                bytes: bytes.to_vec(),
                source: None,
            },
            true,
        )
    });
    list
}

#[cfg(test)]
mod tests {
    use super::*;

    const KUBEASZ: &str = r#"{"name":"cbr0","cniVersion":"0.3.1","plugins":[{"type":"flannel","delegate":{"hairpinMode":true,"isDefaultGateway":true}},{"type":"portmap","capabilities":{"portMappings":true}}]}"#;

    #[test]
    fn first_file_by_name_wins() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("10-flannel.conflist"), KUBEASZ).unwrap();
        std::fs::write(dir.path().join("99-other.conf"), "broken").unwrap();
        std::fs::write(dir.path().join("00-readme.txt"), "ignored").unwrap();
        std::fs::create_dir(dir.path().join("05-dir.conf")).unwrap();
        let list = load_dir(dir.path()).unwrap();
        assert_eq!(list.name, "cbr0");
        assert_eq!(list.cni_version, "0.3.1");
        let types: Vec<&str> = list
            .plugins
            .iter()
            .map(|p| p.plugin_type.as_str())
            .collect();
        assert_eq!(types, ["flannel", "portmap"]);
        assert_eq!(list.plugins[1].capabilities, ["portMappings"]);
        assert_eq!(
            list.plugins[0].describe(&list.name),
            "type=\"flannel\" name=\"cbr0\""
        );

        // 10-default.conf sorts before 10-flannel.conflist: kubeasz deletes it for this reason
        std::fs::write(
            dir.path().join("10-default.conf"),
            r#"{"cniVersion":"0.3.1","name":"mynet","type":"bridge","bridge":"mynet0"}"#,
        )
        .unwrap();
        let list = load_dir(dir.path()).unwrap();
        assert_eq!(list.name, "mynet");
        assert_eq!(list.plugins.len(), 1);
        let wrapped: Value = serde_json::from_slice(&list.bytes).unwrap();
        assert_eq!(wrapped["plugins"][0]["bridge"], "mynet0");
    }

    #[test]
    fn empty_or_broken_dirs_are_errors() {
        let dir = tempfile::tempdir().unwrap();
        assert!(matches!(
            load_dir(dir.path()),
            Err(ConfError::NoConfig { .. })
        ));
        assert!(matches!(
            load_dir(&dir.path().join("missing")),
            Err(ConfError::NoConfig { .. })
        ));
        std::fs::write(
            dir.path().join("10-x.conflist"),
            r#"{"name":"x","plugins":[]}"#,
        )
        .unwrap();
        let e = load_dir(dir.path()).unwrap_err().to_string();
        assert!(
            e.ends_with("error parsing configuration list: no plugins in list"),
            "{e}"
        );
        std::fs::write(
            dir.path().join("10-x.conflist"),
            r#"{"name":"x","plugins":[{"a":1}]}"#,
        )
        .unwrap();
        let e = load_dir(dir.path()).unwrap_err().to_string();
        assert!(
            e.contains(
                "failed to parse plugin config 0: error parsing configuration: missing 'type'"
            ),
            "{e}"
        );
    }

    #[test]
    fn plugins_may_come_from_a_subdirectory() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("10-x.conflist"),
            r#"{"name":"x","cniVersion":"1.0.0"}"#,
        )
        .unwrap();
        std::fs::create_dir(dir.path().join("x")).unwrap();
        std::fs::write(dir.path().join("x/b.conf"), r#"{"type":"b"}"#).unwrap();
        std::fs::write(dir.path().join("x/a.conf"), r#"{"type":"a"}"#).unwrap();
        let list = load_dir(dir.path()).unwrap();
        let types: Vec<&str> = list
            .plugins
            .iter()
            .map(|p| p.plugin_type.as_str())
            .collect();
        assert_eq!(types, ["a", "b"]);
    }

    #[test]
    fn cni_versions_picks_the_highest_supported() {
        let (list, _) = list_from_bytes(
            br#"{"name":"x","cniVersion":"0.3.1","cniVersions":["1.0.0","9.0.0","0.4.0"],"plugins":[{"type":"a"}]}"#,
        )
        .unwrap();
        assert_eq!(list.cni_version, "1.0.0");
    }

    #[test]
    fn loopback_list_is_valid() {
        let list = loopback();
        assert_eq!(list.plugins[0].plugin_type, "loopback");
        assert_eq!(list.name, "cni-loopback");
    }
}
