//! The flannel CNI meta-plugin (spec §8): turn flannel's small config plus the node's
//! `subnet.env` into a full bridge + host-local config, remember it, and run that delegate.
//!
//! ADD saves the delegate config to `<dataDir>/<CNI_CONTAINERID>` before running the delegate,
//! so DEL can undo exactly what ADD did even after subnet.env changed or vanished. DEL removes
//! the saved file only when the delegate's DEL succeeded (containernetworking/plugins v0.8
//! semantics), so a failed DEL can be retried.

use super::error::CniError;
use super::gojson;
use super::invoke::{self, DirectExec, Exec, PluginError};
use super::skel::{self, CmdArgs, Plugin};
use super::subnet_env::SubnetEnv;
use serde_json::{Map, Value, json};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

/// Where flanneld writes the node's lease (`subnetFile` default).
pub const DEFAULT_SUBNET_FILE: &str = "/run/flannel/subnet.env";
/// Where the plugin keeps one delegate config per container (`dataDir` default).
pub const DEFAULT_DATA_DIR: &str = "/var/lib/cni/flannel";

/// Entry point when this binary runs as `flannel`.
pub fn main() -> ExitCode {
    let about = format!(
        "CNI Plugin flannel version v{} (installer, {}/{})",
        env!("CARGO_PKG_VERSION"),
        std::env::consts::OS,
        std::env::consts::ARCH
    );
    skel::plugin_main(&Flannel::default(), &about)
}

/// The flannel plugin; `exec` starts the delegate (directly, by default).
pub struct Flannel {
    /// How delegate binaries are started.
    pub exec: Box<dyn Exec>,
}

impl Default for Flannel {
    fn default() -> Self {
        Flannel {
            exec: Box::new(DirectExec),
        }
    }
}

/// The plugin's own configuration (what kubeasz's conflist gives it, plus injected keys).
#[derive(Debug, Clone, PartialEq)]
pub struct NetConf {
    /// Network name (becomes the delegate's `name`).
    pub name: String,
    /// Spec version; copied to the delegate when non-empty.
    pub cni_version: String,
    /// `subnetFile`.
    pub subnet_file: PathBuf,
    /// `dataDir`.
    pub data_dir: PathBuf,
    /// `delegate`: extra keys for the delegate (e.g. `hairpinMode`, `isDefaultGateway`).
    pub delegate: Option<Map<String, Value>>,
    /// `ipam`: base for the delegate's IPAM section (ranges and routes are added).
    pub ipam: Option<Map<String, Value>>,
    /// `runtimeConfig`: copied to the delegate when present.
    pub runtime_config: Option<Map<String, Value>>,
}

impl NetConf {
    /// Parse the config from stdin, applying the defaults for `subnetFile` and `dataDir`.
    ///
    /// Typed fields must have their JSON type (`null` counts as absent), as Go's decoder
    /// demands; unknown keys are ignored.
    pub fn parse(bytes: &[u8]) -> Result<NetConf, String> {
        let fail = |what: String| format!("failed to load netconf: {what}");
        let value: Value = serde_json::from_slice(bytes).map_err(|e| fail(e.to_string()))?;
        let map = match value {
            Value::Object(map) => map,
            Value::Null => Map::new(),
            other => {
                return Err(fail(format!(
                    "the config must be a JSON object, not {}",
                    json_kind(&other)
                )));
            }
        };
        let string = |key: &str| -> Result<Option<String>, String> {
            match map.get(key) {
                None | Some(Value::Null) => Ok(None),
                Some(Value::String(s)) => Ok(Some(s.clone())),
                Some(other) => Err(fail(format!(
                    "{key:?} must be a string, not {}",
                    json_kind(other)
                ))),
            }
        };
        let object = |key: &str| -> Result<Option<Map<String, Value>>, String> {
            match map.get(key) {
                None | Some(Value::Null) => Ok(None),
                Some(Value::Object(m)) => Ok(Some(m.clone())),
                Some(other) => Err(fail(format!(
                    "{key:?} must be an object, not {}",
                    json_kind(other)
                ))),
            }
        };
        string("type")?;
        object("dns")?;
        object("prevResult")?;
        if let Some(caps) = object("capabilities")?
            && let Some((key, _)) = caps.iter().find(|(_, v)| !v.is_boolean())
        {
            return Err(fail(format!("capability {key:?} must be true or false")));
        }
        Ok(NetConf {
            name: string("name")?.unwrap_or_default(),
            cni_version: string("cniVersion")?.unwrap_or_default(),
            subnet_file: string("subnetFile")?
                .unwrap_or_else(|| DEFAULT_SUBNET_FILE.into())
                .into(),
            data_dir: string("dataDir")?
                .unwrap_or_else(|| DEFAULT_DATA_DIR.into())
                .into(),
            delegate: object("delegate")?,
            ipam: object("ipam")?,
            runtime_config: object("runtimeConfig")?,
        })
    }

    /// The delegate config ADD hands to the bridge (or other `delegate.type`) plugin.
    ///
    /// Keys are sorted the way Go encodes a map, except inside IPAM routes, which keep the
    /// field order of CNI's route type (`dst`, `gw`, `mtu`, `advmss`, `priority`, `table`,
    /// `scope`).
    pub fn delegate_config(&self, env: &SubnetEnv) -> Result<Value, String> {
        let mut delegate = self.delegate.clone().unwrap_or_default();
        if delegate.get("type").is_some_and(|t| !t.is_string()) {
            return Err(
                "'delegate' dictionary, if present, must have (string) 'type' field".into(),
            );
        }
        for key in ["name", "ipam"] {
            if delegate.contains_key(key) {
                return Err(format!(
                    "'delegate' dictionary must not have '{key}' field, it'll be set by flannel"
                ));
            }
        }
        if let Some(rc) = &self.runtime_config {
            delegate.insert("runtimeConfig".into(), Value::Object(rc.clone()));
        }
        delegate.insert("name".into(), Value::String(self.name.clone()));
        delegate
            .entry("type")
            .or_insert_with(|| Value::String("bridge".into()));
        delegate.entry("ipMasq").or_insert(Value::Bool(!env.ipmasq));
        delegate.entry("mtu").or_insert(json!(env.mtu));
        if delegate.get("type").and_then(Value::as_str) == Some("bridge") {
            delegate.entry("isGateway").or_insert(Value::Bool(true));
        }
        if !self.cni_version.is_empty() {
            delegate.insert("cniVersion".into(), Value::String(self.cni_version.clone()));
        }

        let mut ipam = self.ipam.clone().unwrap_or_default();
        ipam.entry("type")
            .or_insert_with(|| Value::String("host-local".into()));
        let ranges: Vec<Value> = [env.subnet, env.ipv6_subnet]
            .into_iter()
            .flatten()
            .map(|subnet| json!([{"subnet": subnet.to_string()}]))
            .collect();
        ipam.insert("ranges".into(), Value::Array(ranges));
        let mut routes = parse_routes(ipam.get("routes"))
            .map_err(|e| format!("failed to assemble Delegate IPAM: failed to read IPAM routes: failed to parse ipam.routes: {e}"))?;
        routes.extend(
            env.networks
                .iter()
                .chain(&env.ipv6_networks)
                .map(|net| json!({"dst": net.to_string()})),
        );
        ipam.insert("routes".into(), Value::Null);
        delegate.insert("ipam".into(), Value::Object(ipam));

        let mut delegate = Value::Object(delegate);
        gojson::sort_map_keys(&mut delegate);
        delegate["ipam"]["routes"] = Value::Array(routes);
        Ok(delegate)
    }
}

fn json_kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// Re-encode `ipam.routes` as CNI's route type does: `dst` (CIDR, host bits kept) and
/// optional `gw`, `mtu`, `advmss`, `priority` (omitted when 0), `table`, `scope`.
fn parse_routes(routes: Option<&Value>) -> Result<Vec<Value>, String> {
    let items = match routes {
        None | Some(Value::Null) => return Ok(Vec::new()),
        Some(Value::Array(items)) => items,
        Some(other) => return Err(format!("expected an array, got {}", json_kind(other))),
    };
    let mut out = Vec::with_capacity(items.len());
    for (i, item) in items.iter().enumerate() {
        let route = item
            .as_object()
            .ok_or_else(|| format!("route {i} is not an object"))?;
        let mut rendered = Map::new();
        let dst = route
            .get("dst")
            .and_then(Value::as_str)
            .ok_or_else(|| format!("route {i} has no \"dst\" string"))?;
        let net: ipnet::IpNet = dst
            .parse()
            .map_err(|_| format!("invalid CIDR address: {dst}"))?;
        rendered.insert("dst".into(), Value::String(net.to_string()));
        match route.get("gw") {
            None | Some(Value::Null) => {}
            Some(Value::String(gw)) if gw.is_empty() => {}
            Some(Value::String(gw)) => {
                let ip: std::net::IpAddr = gw
                    .parse()
                    .map_err(|_| format!("invalid IP address: {gw}"))?;
                rendered.insert("gw".into(), Value::String(ip.to_string()));
            }
            Some(other) => {
                return Err(format!(
                    "route {i} \"gw\" must be a string, not {}",
                    json_kind(other)
                ));
            }
        }
        for (key, keep_zero) in [
            ("mtu", false),
            ("advmss", false),
            ("priority", false),
            ("table", true),
            ("scope", true),
        ] {
            match route.get(key) {
                None | Some(Value::Null) => {}
                Some(Value::Number(n)) if n.as_i64().is_some() => {
                    if keep_zero || n.as_i64() != Some(0) {
                        rendered.insert(key.into(), Value::Number(n.clone()));
                    }
                }
                Some(other) => {
                    return Err(format!("route {i} {key:?} must be an integer, not {other}"));
                }
            }
        }
        out.push(Value::Object(rendered));
    }
    Ok(out)
}

/// Write `bytes` to `<data_dir>/<container_id>`: directory 0700, file 0600, fsync'd.
pub fn save_scratch(data_dir: &Path, container_id: &str, bytes: &[u8]) -> Result<(), String> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(data_dir)
        .map_err(|e| format!("mkdir {}: {}", data_dir.display(), super::errno_text(&e)))?;
    let path = data_dir.join(container_id);
    let write = || -> std::io::Result<()> {
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&path)?;
        file.write_all(bytes)?;
        file.sync_all()
    };
    write().map_err(|e| format!("open {}: {}", path.display(), super::errno_text(&e)))
}

impl Flannel {
    fn run_delegate(
        &self,
        command: &str,
        plugin_type: &str,
        config: &[u8],
        args: &CmdArgs,
    ) -> Result<Vec<u8>, PluginError> {
        let path = invoke::find_in_path(plugin_type, &invoke::split_path_list(&args.path))?;
        let env = [("CNI_COMMAND".to_string(), command.to_string())];
        invoke::exec_plugin(self.exec.as_ref(), &path, &env, config, true)
    }
}

/// A delegate failure as the Go plugin reports it: the delegate's own CNI error passes
/// through unchanged; anything else is a plain (999) error with `prefix`.
fn delegate_error(prefix: &str, error: PluginError) -> CniError {
    match error {
        PluginError::Failed(cni) => cni,
        other => CniError::internal(format!("{prefix}{other}")),
    }
}

impl Plugin for Flannel {
    fn add(&self, args: &CmdArgs) -> Result<String, CniError> {
        let conf = NetConf::parse(&args.stdin)
            .map_err(|e| CniError::internal(format!("failed to load flannel netconf file: {e}")))?;
        let env = SubnetEnv::load(&conf.subnet_file).map_err(|e| {
            CniError::internal(format!(
                "failed to load flannel 'subnet.env' file: {e}. Check the flannel pod log for this node."
            ))
        })?;
        let delegate = conf.delegate_config(&env).map_err(CniError::internal)?;
        let bytes = gojson::to_compact(&delegate);
        let plugin_type = delegate["type"].as_str().unwrap_or_default().to_string();
        let _ = writeln!(
            std::io::stderr(),
            "flannel: delegating ADD to {plugin_type:?} with {bytes}"
        );
        save_scratch(&conf.data_dir, &args.container_id, bytes.as_bytes())
            .map_err(CniError::internal)?;
        let stdout = self
            .run_delegate("ADD", &plugin_type, bytes.as_bytes(), args)
            .map_err(|e| delegate_error("failed to delegate add: ", e))?;
        let result = invoke::parse_result(&stdout, bytes.as_bytes())
            .map_err(|e| delegate_error("failed to delegate add: ", e))?;
        Ok(gojson::to_pretty(&result))
    }

    fn del(&self, args: &CmdArgs) -> Result<(), CniError> {
        let conf = NetConf::parse(&args.stdin).map_err(CniError::internal)?;
        let path = conf.data_dir.join(&args.container_id);
        let bytes = match std::fs::read(&path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => {
                return Err(CniError::internal(format!(
                    "open {}: {}",
                    path.display(),
                    super::errno_text(&e)
                )));
            }
        };
        let plugin_type = match saved_type(&bytes) {
            Ok(t) => t,
            Err(e) => {
                // Nothing sensible can be undone; the veth goes away with the namespace.
                let _ = writeln!(
                    std::io::stderr(),
                    "failed to parse netconf {}: {e}",
                    path.display()
                );
                return Ok(());
            }
        };
        self.run_delegate("DEL", &plugin_type, &bytes, args)
            .map_err(|e| delegate_error("", e))?;
        // Per spec a DEL must tolerate leftovers; a file we cannot remove is not a failure.
        let _ = std::fs::remove_file(&path);
        Ok(())
    }

    fn check(&self, _args: &CmdArgs) -> Result<(), CniError> {
        Ok(())
    }
}

/// The `type` of a saved delegate config (which must decode as a CNI network config).
fn saved_type(bytes: &[u8]) -> Result<String, String> {
    let value: Value = serde_json::from_slice(bytes).map_err(|e| e.to_string())?;
    let map = value.as_object().ok_or("not a JSON object")?;
    for key in ["name", "cniVersion", "type"] {
        if map.get(key).is_some_and(|v| !v.is_string() && !v.is_null()) {
            return Err(format!("{key:?} is not a string"));
        }
    }
    Ok(map
        .get("type")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(ipmasq: bool) -> SubnetEnv {
        let text = format!(
            "FLANNEL_NETWORK=10.1.0.0/16\nFLANNEL_SUBNET=10.1.17.1/24\nFLANNEL_MTU=1450\nFLANNEL_IPMASQ={ipmasq}\n"
        );
        SubnetEnv::parse(&text, Path::new("subnet.env")).unwrap()
    }

    fn delegate(conf: &str, env: &SubnetEnv) -> Result<String, String> {
        let conf = NetConf::parse(conf.as_bytes())?;
        conf.delegate_config(env).map(|v| gojson::to_compact(&v))
    }

    #[test]
    fn kubeasz_conflist_gives_the_spec_example() {
        let conf = r#"{"cniVersion":"0.3.1","name":"cbr0","type":"flannel","delegate":{"hairpinMode":true,"isDefaultGateway":true}}"#;
        assert_eq!(
            delegate(conf, &env(true)).unwrap(),
            r#"{"cniVersion":"0.3.1","hairpinMode":true,"ipMasq":false,"ipam":{"ranges":[[{"subnet":"10.1.17.0/24"}]],"routes":[{"dst":"10.1.0.0/16"}],"type":"host-local"},"isDefaultGateway":true,"isGateway":true,"mtu":1450,"name":"cbr0","type":"bridge"}"#
        );
    }

    #[test]
    fn defaults_yield_to_explicit_delegate_keys() {
        let conf = r#"{"name":"n","type":"flannel","delegate":{"type":"ipvlan","ipMasq":true,"mtu":1e3,"master":"eth0"},"runtimeConfig":{"portMappings":[]}}"#;
        let out = delegate(conf, &env(true)).unwrap();
        assert_eq!(
            out,
            r#"{"ipMasq":true,"ipam":{"ranges":[[{"subnet":"10.1.17.0/24"}]],"routes":[{"dst":"10.1.0.0/16"}],"type":"host-local"},"master":"eth0","mtu":1000,"name":"n","runtimeConfig":{"portMappings":[]},"type":"ipvlan"}"#,
            "no isGateway for non-bridge delegates, no cniVersion when unset"
        );
        let out = delegate(r#"{"name":"n"}"#, &env(false)).unwrap();
        assert!(out.contains(r#""ipMasq":true"#), "{out}");
    }

    #[test]
    fn own_ipam_is_the_base_and_routes_come_first() {
        let conf = r#"{"name":"n","ipam":{"type":"host-local","dataDir":"/tmp/x","ranges":"ignored","routes":[{"priority":0,"gw":"10.1.17.1","dst":"192.0.2.7/24","mtu":1400,"extra":1}]}}"#;
        let out = delegate(conf, &env(true)).unwrap();
        assert!(
            out.contains(r#""ipam":{"dataDir":"/tmp/x","ranges":[[{"subnet":"10.1.17.0/24"}]],"routes":[{"dst":"192.0.2.7/24","gw":"10.1.17.1","mtu":1400},{"dst":"10.1.0.0/16"}],"type":"host-local"}"#),
            "{out}"
        );
        let bad = r#"{"name":"n","ipam":{"routes":{"dst":"x"}}}"#;
        assert!(
            delegate(bad, &env(true))
                .unwrap_err()
                .starts_with("failed to assemble Delegate IPAM: failed to read IPAM routes: ")
        );
    }

    #[test]
    fn dual_stack_lists_both_families() {
        let text = "FLANNEL_NETWORK=10.1.0.0/16\nFLANNEL_SUBNET=10.1.17.1/24\nFLANNEL_IPV6_NETWORK=2001:cafe:42::/56\nFLANNEL_IPV6_SUBNET=2001:cafe:42::1/64\nFLANNEL_MTU=1450\nFLANNEL_IPMASQ=true\n";
        let env = SubnetEnv::parse(text, Path::new("s")).unwrap();
        let out = delegate(r#"{"name":"n"}"#, &env).unwrap();
        assert!(
            out.contains(r#""ranges":[[{"subnet":"10.1.17.0/24"}],[{"subnet":"2001:cafe:42::/64"}]],"routes":[{"dst":"10.1.0.0/16"},{"dst":"2001:cafe:42::/56"}]"#),
            "{out}"
        );
    }

    #[test]
    fn delegate_must_not_set_name_ipam_or_a_non_string_type() {
        let e = env(true);
        assert_eq!(
            delegate(r#"{"name":"n","delegate":{"name":"x"}}"#, &e).unwrap_err(),
            "'delegate' dictionary must not have 'name' field, it'll be set by flannel"
        );
        assert_eq!(
            delegate(r#"{"name":"n","delegate":{"ipam":{}}}"#, &e).unwrap_err(),
            "'delegate' dictionary must not have 'ipam' field, it'll be set by flannel"
        );
        assert_eq!(
            delegate(r#"{"name":"n","delegate":{"type":1}}"#, &e).unwrap_err(),
            "'delegate' dictionary, if present, must have (string) 'type' field"
        );
    }

    #[test]
    fn netconf_defaults_and_type_errors() {
        let conf = NetConf::parse(br#"{"name":"n","subnetFile":null}"#).unwrap();
        assert_eq!(conf.subnet_file, Path::new(DEFAULT_SUBNET_FILE));
        assert_eq!(conf.data_dir, Path::new(DEFAULT_DATA_DIR));
        let e = NetConf::parse(br#"{"name":"n","delegate":[]}"#).unwrap_err();
        assert_eq!(
            e,
            "failed to load netconf: \"delegate\" must be an object, not an array"
        );
    }

    #[test]
    fn scratch_file_is_private() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("a/b");
        save_scratch(&data, "c1", b"{}").unwrap();
        save_scratch(&data, "c1", b"{\"x\":1}").unwrap();
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&data), 0o700);
        assert_eq!(mode(&data.join("c1")), 0o600);
        assert_eq!(std::fs::read(data.join("c1")).unwrap(), b"{\"x\":1}");
    }
}
