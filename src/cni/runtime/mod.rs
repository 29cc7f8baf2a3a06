//! A small CNI runtime: run a node's network configuration for a container the way
//! containerd does through libcni, so probe pods get exactly the datapath real pods get.
//!
//! * the network is the first `.conf`/`.conflist`/`.json` in the conf dir ([`conf`]);
//! * ADD: `loopback` for `lo` first (as containerd does), then each plugin of the list in
//!   order, each getting the previous plugin's result as `prevResult`; the final result is
//!   cached under `<cache_dir>/results/` ([`cache`]);
//! * DEL: plugins in reverse order, with the cached result as `prevResult` when the list's
//!   version is ≥ 0.4.0; then the cache entry goes;
//! * CHECK: plugins in order with the cached result (version ≥ 0.4.0 only);
//! * every plugin config gets the list's `name` and `cniVersion`, and `runtimeConfig` holds
//!   only the capabilities the plugin declares and the caller supplied.
//!
//! A failed [`Runtime::add`] undoes itself with a best-effort DEL, as containerd tears the
//! sandbox's network down when setting it up failed.

pub mod cache;
pub mod conf;

use super::error::CniError;
use super::gojson;
use super::invoke::{self, DirectExec, Exec, PluginError};
use super::result::{self, CniResult};
use super::skel;
use super::version;
use conf::{ConfError, NetworkList, PluginConf};
use serde_json::{Map, Value};
use std::path::PathBuf;
use std::sync::Arc;

/// Where containerd (kubeasz) reads network configs.
pub const DEFAULT_CONF_DIR: &str = "/etc/cni/net.d";
/// Where kubeasz installs plugin binaries.
pub const DEFAULT_BIN_DIR: &str = "/opt/cni/bin";
/// libcni's cache root (results live in `results/` below it).
pub const DEFAULT_CACHE_DIR: &str = "/var/lib/cni";

/// One container's attachment to the network.
#[derive(Debug, Clone, PartialEq)]
pub struct Attachment {
    /// Container ID (`CNI_CONTAINERID`): `[a-zA-Z0-9][a-zA-Z0-9_.-]*`.
    pub container_id: String,
    /// The container's network namespace (`CNI_NETNS`); may be `None` on DEL when it is gone.
    pub netns: Option<PathBuf>,
    /// Interface name inside the container (`CNI_IFNAME`), usually `eth0`.
    pub ifname: String,
    /// `CNI_ARGS` pairs, e.g. `K8S_POD_NAME`.
    pub args: Vec<(String, String)>,
    /// Capability arguments (e.g. `portMappings`), passed only to plugins declaring them.
    pub capability_args: Map<String, Value>,
}

impl Attachment {
    /// An attachment of `container_id`'s namespace `netns` as `ifname`.
    pub fn new(
        container_id: impl Into<String>,
        netns: impl Into<PathBuf>,
        ifname: impl Into<String>,
    ) -> Attachment {
        Attachment {
            container_id: container_id.into(),
            netns: Some(netns.into()),
            ifname: ifname.into(),
            args: Vec::new(),
            capability_args: Map::new(),
        }
    }

    /// Add a `CNI_ARGS` pair.
    pub fn with_arg(mut self, key: impl Into<String>, value: impl Into<String>) -> Attachment {
        self.args.push((key.into(), value.into()));
        self
    }

    /// The `CNI_ARGS` containerd passes for a Kubernetes pod: `IgnoreUnknown=1` (so plugins
    /// that do not know the pod keys accept them), `K8S_POD_NAMESPACE`, `K8S_POD_NAME` and
    /// `K8S_POD_INFRA_CONTAINER_ID`.
    pub fn with_pod(self, namespace: impl Into<String>, name: impl Into<String>) -> Attachment {
        let id = self.container_id.clone();
        let mut out = self;
        if !out.args.iter().any(|(k, _)| k == "IgnoreUnknown") {
            out.args.insert(0, ("IgnoreUnknown".into(), "1".into()));
        }
        out.with_arg("K8S_POD_NAMESPACE", namespace)
            .with_arg("K8S_POD_NAME", name)
            .with_arg("K8S_POD_INFRA_CONTAINER_ID", id)
    }

    /// The same attachment on another interface (used for `lo`).
    fn on(&self, ifname: &str) -> Attachment {
        Attachment {
            ifname: ifname.to_string(),
            ..self.clone()
        }
    }
}

/// What went wrong running a network configuration.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    /// No usable config in the conf dir.
    #[error(transparent)]
    Conf(#[from] ConfError),
    /// The container ID, interface or network name is not acceptable to CNI.
    #[error("cannot attach container {container_id:?} as {ifname:?}: {error}")]
    Invalid {
        /// The container.
        container_id: String,
        /// The interface.
        ifname: String,
        /// The CNI validation error.
        error: CniError,
    },
    /// A plugin failed; names the plugin, the command and the plugin's CNI error.
    #[error("network {network:?}: plugin {plugin} failed ({command}): {error}")]
    Plugin {
        /// Network name.
        network: String,
        /// `type="…" name="…"`.
        plugin: String,
        /// "add", "delete" or "check".
        command: &'static str,
        /// What the plugin reported.
        error: PluginError,
    },
    /// The list's `cniVersion` is unusable for this command.
    #[error("network {network:?}: {reason}")]
    Version {
        /// Network name.
        network: String,
        /// e.g. configuration version "0.3.1" does not support the CHECK command.
        reason: String,
    },
    /// The result cache could not be written or read.
    #[error("network {network:?}: result cache: {reason}")]
    Cache {
        /// Network name.
        network: String,
        /// What failed.
        reason: String,
    },
    /// The final ADD result is not a valid CNI result.
    #[error("network {network:?}: {reason}")]
    Result {
        /// Network name.
        network: String,
        /// What is wrong with it.
        reason: String,
    },
}

/// Runs CNI configurations; see the module docs.
#[derive(Clone)]
pub struct Runtime {
    /// Directory holding the network config (containerd's `conf_dir`).
    pub conf_dir: PathBuf,
    /// Directories searched for plugin binaries, in order (`CNI_PATH`).
    pub bin_dirs: Vec<PathBuf>,
    /// Cache root; results go to `<cache_dir>/results/`.
    pub cache_dir: PathBuf,
    /// Set up `lo` with the `loopback` plugin before the network (containerd does).
    pub loopback: bool,
    /// How plugin processes are started.
    pub exec: Arc<dyn Exec>,
}

impl std::fmt::Debug for Runtime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Runtime")
            .field("conf_dir", &self.conf_dir)
            .field("bin_dirs", &self.bin_dirs)
            .field("cache_dir", &self.cache_dir)
            .field("loopback", &self.loopback)
            .finish_non_exhaustive()
    }
}

impl Default for Runtime {
    /// containerd's defaults under kubeasz: `/etc/cni/net.d`, `/opt/cni/bin`, `/var/lib/cni`.
    fn default() -> Self {
        Runtime::new(
            DEFAULT_CONF_DIR,
            vec![DEFAULT_BIN_DIR.into()],
            DEFAULT_CACHE_DIR,
        )
    }
}

impl Runtime {
    /// A runtime over these directories, starting plugins directly, with loopback on.
    pub fn new(
        conf_dir: impl Into<PathBuf>,
        bin_dirs: Vec<PathBuf>,
        cache_dir: impl Into<PathBuf>,
    ) -> Runtime {
        Runtime {
            conf_dir: conf_dir.into(),
            bin_dirs,
            cache_dir: cache_dir.into(),
            loopback: true,
            exec: Arc::new(DirectExec),
        }
    }

    /// Start plugins through `exec` instead (e.g. inside another network namespace).
    pub fn with_exec(mut self, exec: impl Exec + 'static) -> Runtime {
        self.exec = Arc::new(exec);
        self
    }

    /// The network that ADD would use now.
    pub fn network(&self) -> Result<NetworkList, RuntimeError> {
        Ok(conf::load_dir(&self.conf_dir)?)
    }

    /// Attach the container: loopback (if enabled), then the network. Returns the network's
    /// final result. On failure everything attempted is deleted again (best effort).
    pub fn add(&self, attachment: &Attachment) -> Result<CniResult, RuntimeError> {
        let list = self.network()?;
        let outcome = self.add_all(&list, attachment);
        if outcome.is_err() {
            let _ = self.del_list(&list, attachment);
            if self.loopback {
                let _ = self.del_list(&conf::loopback(), &attachment.on("lo"));
            }
        }
        let raw = outcome?;
        CniResult::from_value(raw).map_err(|reason| RuntimeError::Result {
            network: list.name.clone(),
            reason,
        })
    }

    fn add_all(&self, list: &NetworkList, attachment: &Attachment) -> Result<Value, RuntimeError> {
        if self.loopback {
            self.add_list(&conf::loopback(), &attachment.on("lo"))?;
        }
        self.add_list(list, attachment)
    }

    /// Detach the container: the network's plugins in reverse order, then loopback.
    /// Succeeds when there is nothing left to remove.
    pub fn del(&self, attachment: &Attachment) -> Result<(), RuntimeError> {
        let list = self.network()?;
        self.del_list(&list, attachment)?;
        if self.loopback {
            self.del_list(&conf::loopback(), &attachment.on("lo"))?;
        }
        Ok(())
    }

    /// Ask every plugin whether the attachment is still as ADD made it (spec ≥ 0.4.0).
    pub fn check(&self, attachment: &Attachment) -> Result<(), RuntimeError> {
        let list = self.network()?;
        self.check_list(&list, attachment)
    }

    /// ADD one list; returns the last plugin's result and caches it.
    pub fn add_list(
        &self,
        list: &NetworkList,
        attachment: &Attachment,
    ) -> Result<Value, RuntimeError> {
        self.validate(list, attachment)?;
        let mut prev: Option<Value> = None;
        for plugin in &list.plugins {
            let config = self.plugin_config(list, plugin, prev.as_ref(), attachment);
            let stdout = self
                .exec_plugin("ADD", plugin, &config, attachment)
                .and_then(|out| invoke::parse_result(&out, &config))
                .map_err(|error| self.plugin_error(list, plugin, "add", error))?;
            prev = Some(stdout);
        }
        let result = prev.unwrap_or_else(|| Value::Object(Map::new()));
        cache::write(&self.cache_dir, list, attachment, &result).map_err(|reason| {
            RuntimeError::Cache {
                network: list.name.clone(),
                reason,
            }
        })?;
        Ok(result)
    }

    /// DEL one list, plugins in reverse order.
    pub fn del_list(
        &self,
        list: &NetworkList,
        attachment: &Attachment,
    ) -> Result<(), RuntimeError> {
        self.validate(list, attachment)?;
        let mut cached = None;
        if self.version_at_least(list, "0.4.0")? {
            match cache::read_result(&self.cache_dir, &list.name, attachment).and_then(|r| {
                r.map(|r| result::convert(&r, &list.cni_version))
                    .transpose()
            }) {
                Ok(result) => cached = result,
                Err(_) => cache::remove(&self.cache_dir, &list.name, attachment),
            }
        }
        for plugin in list.plugins.iter().rev() {
            let config = self.plugin_config(list, plugin, cached.as_ref(), attachment);
            self.exec_plugin("DEL", plugin, &config, attachment)
                .map_err(|error| self.plugin_error(list, plugin, "delete", error))?;
        }
        cache::remove(&self.cache_dir, &list.name, attachment);
        Ok(())
    }

    /// CHECK one list, plugins in order, each with the cached result.
    pub fn check_list(
        &self,
        list: &NetworkList,
        attachment: &Attachment,
    ) -> Result<(), RuntimeError> {
        if !self.version_at_least(list, "0.4.0")? {
            return Err(RuntimeError::Version {
                network: list.name.clone(),
                reason: format!(
                    "configuration version {:?} does not support the CHECK command",
                    list.cni_version
                ),
            });
        }
        if list.disable_check {
            return Ok(());
        }
        self.validate(list, attachment)?;
        let cache_error = |reason| RuntimeError::Cache {
            network: list.name.clone(),
            reason,
        };
        let cached = cache::read_result(&self.cache_dir, &list.name, attachment)
            .map_err(cache_error)?
            .map(|r| result::convert(&r, &list.cni_version))
            .transpose()
            .map_err(cache_error)?;
        for plugin in &list.plugins {
            let config = self.plugin_config(list, plugin, cached.as_ref(), attachment);
            self.exec_plugin("CHECK", plugin, &config, attachment)
                .map_err(|error| self.plugin_error(list, plugin, "check", error))?;
        }
        Ok(())
    }

    fn version_at_least(&self, list: &NetworkList, min: &str) -> Result<bool, RuntimeError> {
        version::at_least(&list.cni_version, min).map_err(|reason| RuntimeError::Version {
            network: list.name.clone(),
            reason,
        })
    }

    fn validate(&self, list: &NetworkList, attachment: &Attachment) -> Result<(), RuntimeError> {
        skel::validate_container_id(&attachment.container_id)
            .and_then(|_| skel::validate_network_name(&list.name))
            .and_then(|_| skel::validate_interface_name(&attachment.ifname))
            .map_err(|error| RuntimeError::Invalid {
                container_id: attachment.container_id.clone(),
                ifname: attachment.ifname.clone(),
                error,
            })
    }

    /// The config one plugin receives: its own keys plus `name`, `cniVersion`, `prevResult`
    /// and `runtimeConfig` (declared capabilities only), keys sorted as libcni writes them.
    fn plugin_config(
        &self,
        list: &NetworkList,
        plugin: &PluginConf,
        prev: Option<&Value>,
        attachment: &Attachment,
    ) -> Vec<u8> {
        let mut conf = plugin.conf.clone();
        conf.insert("name".into(), Value::String(list.name.clone()));
        conf.insert("cniVersion".into(), Value::String(list.cni_version.clone()));
        let runtime_config: Map<String, Value> = plugin
            .capabilities
            .iter()
            .filter_map(|cap| {
                attachment
                    .capability_args
                    .get(cap)
                    .map(|v| (cap.clone(), v.clone()))
            })
            .collect();
        if !runtime_config.is_empty() {
            conf.insert("runtimeConfig".into(), Value::Object(runtime_config));
        }
        let mut value = Value::Object(conf);
        gojson::sort_map_keys(&mut value);
        if let (Some(prev), Value::Object(map)) = (prev, &mut value) {
            map.insert("prevResult".into(), prev.clone());
            map.sort_keys();
        }
        gojson::to_compact(&value).into_bytes()
    }

    fn exec_plugin(
        &self,
        command: &str,
        plugin: &PluginConf,
        config: &[u8],
        attachment: &Attachment,
    ) -> Result<Vec<u8>, PluginError> {
        let path = invoke::find_in_path(&plugin.plugin_type, &self.bin_dirs)?;
        let args: Vec<String> = attachment
            .args
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        let bin_path: Vec<String> = self
            .bin_dirs
            .iter()
            .map(|d| d.display().to_string())
            .collect();
        let netns = attachment
            .netns
            .as_ref()
            .map(|p| p.display().to_string())
            .unwrap_or_default();
        let env = [
            ("CNI_COMMAND", command.to_string()),
            ("CNI_CONTAINERID", attachment.container_id.clone()),
            ("CNI_NETNS", netns),
            ("CNI_ARGS", args.join(";")),
            ("CNI_IFNAME", attachment.ifname.clone()),
            ("CNI_PATH", bin_path.join(":")),
        ]
        .map(|(k, v)| (k.to_string(), v));
        invoke::exec_plugin(self.exec.as_ref(), &path, &env, config, false)
    }

    fn plugin_error(
        &self,
        list: &NetworkList,
        plugin: &PluginConf,
        command: &'static str,
        error: PluginError,
    ) -> RuntimeError {
        RuntimeError::Plugin {
            network: list.name.clone(),
            plugin: plugin.describe(&list.name),
            command,
            error,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;
    use std::path::Path;

    /// A shell "plugin" that logs each call and echoes prevResult (or a fixed result).
    fn fake_plugin(bin: &Path, name: &str, log: &Path) {
        let script = format!(
            "#!/bin/sh\nconf=$(cat)\necho \"{name} $CNI_COMMAND $CNI_IFNAME $conf\" >> {log}\n\
             if [ \"$CNI_COMMAND\" = ADD ]; then\n\
               case \"$conf\" in\n\
                 *prevResult*) echo \"$conf\" | python3 -c 'import json,sys; print(json.dumps(json.load(sys.stdin)[\"prevResult\"]))' ;;\n\
                 *) echo '{{\"cniVersion\":\"1.0.0\",\"interfaces\":[{{\"name\":\"eth0\",\"sandbox\":\"/x\"}}],\"ips\":[{{\"interface\":0,\"address\":\"198.19.9.2/24\",\"gateway\":\"198.19.9.1\"}}]}}' ;;\n\
               esac\n\
             fi\n",
            log = log.display()
        );
        let path = bin.join(name);
        std::fs::write(&path, script).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    }

    #[test]
    fn chains_prev_result_and_deletes_in_reverse() {
        let dir = tempfile::tempdir().unwrap();
        let (bin, confd, cache) = (
            dir.path().join("bin"),
            dir.path().join("net.d"),
            dir.path().join("cache"),
        );
        std::fs::create_dir_all(&bin).unwrap();
        std::fs::create_dir_all(&confd).unwrap();
        let log = dir.path().join("log");
        for name in ["first", "second", "loopback"] {
            fake_plugin(&bin, name, &log);
        }
        std::fs::write(
            confd.join("10-t.conflist"),
            r#"{"cniVersion":"1.0.0","name":"t","plugins":[{"type":"first","z":1,"a":2},{"type":"second","capabilities":{"portMappings":true,"bandwidth":true}}]}"#,
        )
        .unwrap();
        let rt = Runtime::new(&confd, vec![bin.clone()], &cache);
        let mut att =
            Attachment::new("c1", "/run/netns/none", "eth0").with_arg("K8S_POD_NAME", "p");
        att.capability_args
            .insert("portMappings".into(), serde_json::json!([]));
        let result = rt.add(&att).unwrap();
        assert_eq!(result.container_addresses()[0].to_string(), "198.19.9.2/24");
        assert!(cache.join("results/t-c1-eth0").exists());
        rt.del(&att).unwrap();
        assert!(!cache.join("results/t-c1-eth0").exists());

        let log = std::fs::read_to_string(&log).unwrap();
        let calls: Vec<&str> = log
            .lines()
            .map(|l| l.splitn(4, ' ').take(3).collect::<Vec<_>>().join(" "))
            .map(|s| Box::leak(s.into_boxed_str()) as &str)
            .collect();
        assert_eq!(
            calls,
            [
                "loopback ADD lo",
                "first ADD eth0",
                "second ADD eth0",
                "second DEL eth0",
                "first DEL eth0",
                "loopback DEL lo"
            ]
        );
        let lines: Vec<&str> = log.lines().collect();
        assert!(
            lines[1].ends_with(r#"{"a":2,"cniVersion":"1.0.0","name":"t","type":"first","z":1}"#),
            "{}",
            lines[1]
        );
        assert!(
            lines[2].contains(r#""prevResult":{"cniVersion":"1.0.0""#),
            "{}",
            lines[2]
        );
        assert!(
            lines[2].contains(r#""runtimeConfig":{"portMappings":[]}"#),
            "{}",
            lines[2]
        );
        assert!(
            !lines[2].contains("bandwidth\":["),
            "undeclared args are not passed"
        );
        assert!(
            lines[3].contains("prevResult"),
            "DEL gets the cached result at >= 0.4.0"
        );
        assert!(
            !lines[5].contains("prevResult"),
            "loopback is 0.3.1: no prevResult on DEL"
        );
    }

    #[test]
    fn failures_name_the_plugin_and_roll_back() {
        let dir = tempfile::tempdir().unwrap();
        let (bin, confd) = (dir.path().join("bin"), dir.path().join("net.d"));
        std::fs::create_dir_all(&bin).unwrap();
        std::fs::create_dir_all(&confd).unwrap();
        let log = dir.path().join("log");
        fake_plugin(&bin, "loopback", &log);
        let failing = bin.join("bad");
        std::fs::write(&failing, "#!/bin/sh\necho \"bad $CNI_COMMAND\" >> ".to_string() + &log.display().to_string() + "\n[ \"$CNI_COMMAND\" = DEL ] && exit 0\necho '{\"code\":11,\"msg\":\"busy\"}'; exit 1\n").unwrap();
        std::fs::set_permissions(&failing, std::fs::Permissions::from_mode(0o755)).unwrap();
        std::fs::write(
            confd.join("a.conf"),
            r#"{"cniVersion":"0.3.1","name":"n","type":"bad"}"#,
        )
        .unwrap();
        let rt = Runtime::new(&confd, vec![bin], dir.path().join("cache"));
        let e = rt.add(&Attachment::new("c1", "/x", "eth0")).unwrap_err();
        assert_eq!(
            e.to_string(),
            "network \"n\": plugin type=\"bad\" name=\"n\" failed (add): CNI error code 11: busy"
        );
        let log = std::fs::read_to_string(&log).unwrap();
        assert!(log.contains("bad DEL"), "rolled back: {log}");
        assert!(log.contains("loopback DEL"), "rolled back: {log}");

        let e = rt.add(&Attachment::new("c/1", "/x", "eth0")).unwrap_err();
        assert!(
            e.to_string().contains("invalid characters in containerID"),
            "{e}"
        );
        let e = rt.check(&Attachment::new("c1", "/x", "eth0")).unwrap_err();
        assert_eq!(
            e.to_string(),
            "network \"n\": configuration version \"0.3.1\" does not support the CHECK command"
        );
        let missing = Runtime::new(
            &confd,
            vec![dir.path().join("none")],
            dir.path().join("cache"),
        );
        let e = missing
            .add(&Attachment::new("c1", "/x", "eth0"))
            .unwrap_err();
        assert!(
            e.to_string()
                .contains("failed to find plugin \"loopback\" in path ["),
            "{e}"
        );
    }
}
