//! The plugin side of the CNI protocol: environment checks, stdin, version gating, dispatch
//! and error output, with the codes and texts of libcni's `pkg/skel` (spec §8.1).
//!
//! A plugin implements [`Plugin`]; [`plugin_main`] runs it against the real process
//! environment and [`dispatch`] against anything (for tests).

use super::error::{CniError, code};
use super::version;
use std::io::{Read, Write};
use std::os::unix::fs::MetadataExt;
use std::process::ExitCode;

/// Everything a plugin gets from the runtime besides the command itself.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CmdArgs {
    /// `CNI_CONTAINERID`.
    pub container_id: String,
    /// `CNI_NETNS`: path of the container's network namespace (may be empty on DEL).
    pub netns: String,
    /// `CNI_IFNAME`: interface to create inside the container (e.g. `eth0`).
    pub ifname: String,
    /// `CNI_ARGS`: `K=V;K2=V2`.
    pub args: String,
    /// `CNI_PATH`: `:`-separated directories holding plugin binaries.
    pub path: String,
    /// `CNI_NETNS_OVERRIDE`: skip the "same namespace as the plugin" check when true/1.
    pub netns_override: String,
    /// The network configuration read from stdin (empty for VERSION).
    pub stdin: Vec<u8>,
}

/// The commands a plugin serves. GC and STATUS default to success (nothing to do), which is
/// what the Go skeleton answers for plugins that do not implement them.
pub trait Plugin {
    /// ADD: returns the result JSON to print.
    fn add(&self, args: &CmdArgs) -> Result<String, CniError>;
    /// DEL: prints nothing on success.
    fn del(&self, args: &CmdArgs) -> Result<(), CniError>;
    /// CHECK: prints nothing on success.
    fn check(&self, args: &CmdArgs) -> Result<(), CniError>;
    /// GC (spec 1.1).
    fn gc(&self, _args: &CmdArgs) -> Result<(), CniError> {
        Ok(())
    }
    /// STATUS (spec 1.1).
    fn status(&self, _args: &CmdArgs) -> Result<(), CniError> {
        Ok(())
    }
}

/// Which `CNI_*` variables each command requires, in the order they are checked.
const ENV_VARS: &[(&str, &[&str])] = &[
    ("CNI_COMMAND", &["ADD", "CHECK", "DEL", "GC", "STATUS"]),
    ("CNI_CONTAINERID", &["ADD", "CHECK", "DEL"]),
    ("CNI_NETNS", &["ADD", "CHECK"]),
    ("CNI_IFNAME", &["ADD", "CHECK", "DEL"]),
    ("CNI_ARGS", &[]),
    ("CNI_PATH", &["ADD", "CHECK", "DEL", "GC", "STATUS"]),
    ("CNI_NETNS_OVERRIDE", &[]),
];

/// Read the command and its arguments from the environment, check the required variables
/// and validate the container ID and interface name (codes 3 and 4).
pub fn cmd_args_from_env(
    getenv: &dyn Fn(&str) -> Option<String>,
) -> Result<(String, CmdArgs), CniError> {
    let command = getenv("CNI_COMMAND").unwrap_or_default();
    let mut values = Vec::with_capacity(ENV_VARS.len());
    let mut missing = Vec::new();
    for (name, required_for) in ENV_VARS {
        let value = getenv(name).unwrap_or_default();
        let required = required_for.contains(&command.as_str());
        if value.is_empty() {
            if required || *name == "CNI_COMMAND" {
                missing.push(*name);
            }
        } else if required {
            match *name {
                "CNI_CONTAINERID" => validate_container_id(&value)?,
                "CNI_IFNAME" => validate_interface_name(&value)?,
                _ => {}
            }
        }
        values.push(value);
    }
    if !missing.is_empty() {
        return Err(CniError::new(
            code::INVALID_ENV,
            format!("required env variables [{}] missing", missing.join(",")),
        ));
    }
    let mut values = values.into_iter().skip(1);
    let mut next = || values.next().unwrap_or_default();
    let args = CmdArgs {
        container_id: next(),
        netns: next(),
        ifname: next(),
        args: next(),
        path: next(),
        netns_override: next(),
        stdin: Vec::new(),
    };
    Ok((command, args))
}

fn is_cni_name(text: &str) -> bool {
    let mut chars = text.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphanumeric())
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
}

/// Container IDs: non-empty, `[a-zA-Z0-9][a-zA-Z0-9_.-]*`.
pub fn validate_container_id(id: &str) -> Result<(), CniError> {
    if id.is_empty() {
        return Err(CniError::new(
            code::UNKNOWN_CONTAINER,
            "missing containerID",
        ));
    }
    if !is_cni_name(id) {
        return Err(
            CniError::new(code::INVALID_ENV, "invalid characters in containerID").with_details(id),
        );
    }
    Ok(())
}

/// Network names: the same character set as container IDs.
pub fn validate_network_name(name: &str) -> Result<(), CniError> {
    if name.is_empty() {
        return Err(CniError::new(
            code::INVALID_NETWORK_CONFIG,
            "missing network name:",
        ));
    }
    if !is_cni_name(name) {
        return Err(CniError::new(
            code::INVALID_NETWORK_CONFIG,
            "invalid characters found in network name",
        )
        .with_details(name));
    }
    Ok(())
}

/// Interface names as the kernel accepts them: 1–15 bytes, not `.`/`..`, no `/`, `:` or space.
pub fn validate_interface_name(name: &str) -> Result<(), CniError> {
    let err = |msg: &str| CniError::new(code::INVALID_ENV, msg);
    if name.is_empty() {
        return Err(err("interface name is empty"));
    }
    if name.len() > 15 {
        return Err(err("interface name is too long")
            .with_details("interface name should be less than 16 characters"));
    }
    if name == "." || name == ".." {
        return Err(err("interface name is . or .."));
    }
    if name
        .chars()
        .any(|c| c == '/' || c == ':' || c.is_whitespace())
    {
        return Err(err(
            "interface name contains / or : or whitespace characters",
        ));
    }
    Ok(())
}

/// The config on stdin must be a JSON object with a valid `name`.
fn validate_config(stdin: &[u8]) -> Result<(), CniError> {
    let value: serde_json::Value = serde_json::from_slice(stdin).map_err(|e| {
        CniError::new(
            code::DECODING_FAILURE,
            format!("error unmarshall network config: {e}"),
        )
    })?;
    let name = match &value {
        serde_json::Value::Null => None,
        serde_json::Value::Object(map) => match map.get("name") {
            None | Some(serde_json::Value::Null) => None,
            Some(serde_json::Value::String(s)) => Some(s.as_str()),
            Some(_) => {
                return Err(CniError::new(
                    code::DECODING_FAILURE,
                    "error unmarshall network config: \"name\" is not a string",
                ));
            }
        },
        _ => {
            return Err(CniError::new(
                code::DECODING_FAILURE,
                "error unmarshall network config: the config is not a JSON object",
            ));
        }
    };
    match name {
        None | Some("") => Err(CniError::new(
            code::INVALID_NETWORK_CONFIG,
            "missing network name",
        )),
        Some(name) => validate_network_name(name),
    }
}

/// `["0.1.0" "0.2.0" …]`, the way Go's `%q` prints a string slice.
fn go_quoted_list(items: &[&str]) -> String {
    let quoted: Vec<String> = items.iter().map(|s| format!("{s:?}")).collect();
    format!("[{}]", quoted.join(" "))
}

/// The config's version must be one the plugin supports (code 1), else decoding fails (6).
fn check_version(stdin: &[u8]) -> Result<String, CniError> {
    let config_version = version::decode_config_version(stdin)
        .map_err(|e| CniError::new(code::DECODING_FAILURE, e))?;
    if !version::SUPPORTED.contains(&config_version.as_str()) {
        return Err(
            CniError::new(code::INCOMPATIBLE_VERSION, "incompatible CNI versions").with_details(
                format!(
                    "config is {config_version:?}, plugin supports {}",
                    go_quoted_list(version::SUPPORTED)
                ),
            ),
        );
    }
    Ok(config_version)
}

/// CHECK, GC and STATUS exist only from spec version `min` on.
fn check_gated_version(stdin: &[u8], command: &str, min: &str) -> Result<(), CniError> {
    let config_version = version::decode_config_version(stdin)
        .map_err(|e| CniError::new(code::DECODING_FAILURE, e))?;
    let decode = |e: String| CniError::new(code::DECODING_FAILURE, e);
    if !version::at_least(&config_version, min).map_err(decode)? {
        return Err(CniError::new(
            code::INCOMPATIBLE_VERSION,
            format!("config version does not allow {command}"),
        ));
    }
    for supported in version::SUPPORTED {
        if version::at_least(supported, &config_version).map_err(decode)? {
            check_version(stdin)?;
            return Ok(());
        }
    }
    Err(CniError::new(
        code::INCOMPATIBLE_VERSION,
        format!("plugin version does not allow {command}"),
    ))
}

/// Refuse to operate when `CNI_NETNS` is the namespace the plugin itself runs in (code 8).
///
/// The Go skeleton checks this after ADD/DEL ran; checking first avoids half-done work.
/// An unreadable path is left for the plugin to report.
fn check_netns(args: &CmdArgs) -> Result<(), CniError> {
    let over = args.netns_override.to_ascii_uppercase();
    if over == "TRUE" || over == "1" || args.netns.is_empty() {
        return Ok(());
    }
    let (Ok(target), Ok(own)) = (
        std::fs::metadata(&args.netns),
        std::fs::metadata("/proc/self/ns/net"),
    ) else {
        return Ok(());
    };
    if target.dev() == own.dev() && target.ino() == own.ino() {
        return Err(CniError::new(
            code::INVALID_NETNS,
            "plugin's netns and netns from CNI_NETNS should not be the same",
        ));
    }
    Ok(())
}

/// Run one plugin invocation: check the environment, read stdin (not for VERSION), gate on
/// the config version, call the plugin and write its output to `stdout`.
///
/// With no `CNI_COMMAND` at all, `about` and the supported versions go to `stderr` and the
/// call succeeds (a human ran the binary).
pub fn dispatch(
    plugin: &dyn Plugin,
    getenv: &dyn Fn(&str) -> Option<String>,
    stdin: &mut dyn Read,
    stdout: &mut dyn Write,
    stderr: &mut dyn Write,
    about: &str,
) -> Result<(), CniError> {
    let (command, mut args) = match cmd_args_from_env(getenv) {
        Ok(parsed) => parsed,
        Err(e)
            if e.code == code::INVALID_ENV
                && getenv("CNI_COMMAND").unwrap_or_default().is_empty() =>
        {
            let _ = writeln!(stderr, "{about}");
            let _ = writeln!(
                stderr,
                "CNI protocol versions supported: {}",
                version::SUPPORTED.join(", ")
            );
            return Ok(());
        }
        Err(e) => return Err(e),
    };
    if command != "VERSION" {
        stdin.read_to_end(&mut args.stdin).map_err(|e| {
            CniError::new(code::IO_FAILURE, format!("error reading from stdin: {e}"))
        })?;
        validate_config(&args.stdin)?;
    }
    let write = |stdout: &mut dyn Write, text: &str| {
        stdout
            .write_all(text.as_bytes())
            .and_then(|_| stdout.flush())
            .map_err(|e| CniError::new(code::IO_FAILURE, e.to_string()))
    };
    match command.as_str() {
        "ADD" => {
            check_version(&args.stdin)?;
            check_netns(&args)?;
            let result = plugin.add(&args)?;
            write(stdout, &result)
        }
        "DEL" => {
            check_version(&args.stdin)?;
            check_netns(&args)?;
            plugin.del(&args)
        }
        "CHECK" => {
            check_gated_version(&args.stdin, "CHECK", "0.4.0")?;
            plugin.check(&args)
        }
        "GC" => {
            check_gated_version(&args.stdin, "GC", "1.1.0")?;
            plugin.gc(&args)
        }
        "STATUS" => {
            check_gated_version(&args.stdin, "STATUS", "1.1.0")?;
            plugin.status(&args)
        }
        "VERSION" => write(stdout, &version::version_info_json()),
        other => Err(CniError::new(
            code::INVALID_ENV,
            format!("unknown CNI_COMMAND: {other}"),
        )),
    }
}

/// Run `plugin` as this process: real environment and stdio; on failure print the CNI error
/// JSON on stdout and exit 1.
pub fn plugin_main(plugin: &dyn Plugin, about: &str) -> ExitCode {
    let getenv = |name: &str| std::env::var(name).ok();
    let mut stdout = std::io::stdout().lock();
    let outcome = dispatch(
        plugin,
        &getenv,
        &mut std::io::stdin().lock(),
        &mut stdout,
        &mut std::io::stderr(),
        about,
    );
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            let _ = stdout.write_all(error.to_json_pretty().as_bytes());
            let _ = stdout.flush();
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    struct Echo;
    impl Plugin for Echo {
        fn add(&self, args: &CmdArgs) -> Result<String, CniError> {
            Ok(format!("added {}", args.container_id))
        }
        fn del(&self, _: &CmdArgs) -> Result<(), CniError> {
            Ok(())
        }
        fn check(&self, _: &CmdArgs) -> Result<(), CniError> {
            Ok(())
        }
    }

    fn run(env: &[(&str, &str)], stdin: &str) -> (Result<(), CniError>, String, String) {
        let env: HashMap<String, String> = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let getenv = move |name: &str| env.get(name).cloned();
        let (mut out, mut err) = (Vec::new(), Vec::new());
        let result = dispatch(
            &Echo,
            &getenv,
            &mut stdin.as_bytes(),
            &mut out,
            &mut err,
            "about line",
        );
        (
            result,
            String::from_utf8(out).unwrap(),
            String::from_utf8(err).unwrap(),
        )
    }

    const FULL: &[(&str, &str)] = &[
        ("CNI_COMMAND", "ADD"),
        ("CNI_CONTAINERID", "c1"),
        ("CNI_NETNS", "/run/netns/none"),
        ("CNI_IFNAME", "eth0"),
        ("CNI_PATH", "/opt/cni/bin"),
    ];

    fn with(overrides: &[(&'static str, &'static str)]) -> Vec<(&'static str, &'static str)> {
        let mut env: Vec<_> = FULL
            .iter()
            .filter(|(k, _)| !overrides.iter().any(|(o, _)| o == k))
            .copied()
            .collect();
        env.extend(overrides.iter().filter(|(_, v)| !v.is_empty()).copied());
        env
    }

    #[test]
    fn add_runs_with_complete_env() {
        let (r, out, _) = run(FULL, r#"{"name":"n","cniVersion":"0.3.1"}"#);
        assert_eq!(r, Ok(()));
        assert_eq!(out, "added c1");
    }

    #[test]
    fn missing_env_is_code_4_listing_every_missing_variable() {
        let (r, _, _) = run(
            &with(&[("CNI_NETNS", ""), ("CNI_PATH", "")]),
            r#"{"name":"n"}"#,
        );
        let e = r.unwrap_err();
        assert_eq!(e.code, 4);
        assert_eq!(e.msg, "required env variables [CNI_NETNS,CNI_PATH] missing");
        // DEL does not need CNI_NETNS
        let (r, _, _) = run(
            &with(&[("CNI_COMMAND", "DEL"), ("CNI_NETNS", "")]),
            r#"{"name":"n"}"#,
        );
        assert_eq!(r, Ok(()));
    }

    #[test]
    fn no_command_prints_about_and_succeeds() {
        let (r, out, err) = run(&[], "");
        assert_eq!(r, Ok(()));
        assert!(out.is_empty());
        assert!(err.starts_with("about line\nCNI protocol versions supported: 0.1.0, "));
    }

    #[test]
    fn config_problems_have_their_codes() {
        let (r, _, _) = run(FULL, r#"{"cniVersion":"0.3.1"}"#);
        assert_eq!(r.unwrap_err(), CniError::new(7, "missing network name"));
        let (r, _, _) = run(FULL, "not json");
        assert_eq!(r.unwrap_err().code, 6);
        let (r, _, _) = run(FULL, r#"{"name":"bad name"}"#);
        assert_eq!(r.unwrap_err().code, 7);
        let (r, _, _) = run(FULL, r#"{"name":"n","cniVersion":"9.9.9"}"#);
        let e = r.unwrap_err();
        assert_eq!((e.code, e.msg.as_str()), (1, "incompatible CNI versions"));
        assert_eq!(
            e.details,
            r#"config is "9.9.9", plugin supports ["0.1.0" "0.2.0" "0.3.0" "0.3.1" "0.4.0" "1.0.0" "1.1.0"]"#
        );
    }

    #[test]
    fn env_values_are_validated() {
        let (r, _, _) = run(&with(&[("CNI_CONTAINERID", "a/b")]), r#"{"name":"n"}"#);
        assert_eq!(r.unwrap_err().msg, "invalid characters in containerID");
        let (r, _, _) = run(&with(&[("CNI_IFNAME", "a-very-long-ifname")]), "{}");
        assert_eq!(r.unwrap_err().msg, "interface name is too long");
        let (r, _, _) = run(&with(&[("CNI_COMMAND", "FOO")]), r#"{"name":"n"}"#);
        assert_eq!(r.unwrap_err(), CniError::new(4, "unknown CNI_COMMAND: FOO"));
    }

    #[test]
    fn check_gc_and_status_are_version_gated() {
        let check = with(&[("CNI_COMMAND", "CHECK")]);
        let (r, _, _) = run(&check, r#"{"name":"n","cniVersion":"0.3.1"}"#);
        assert_eq!(
            r.unwrap_err(),
            CniError::new(1, "config version does not allow CHECK")
        );
        let (r, _, _) = run(&check, r#"{"name":"n","cniVersion":"1.0.0"}"#);
        assert_eq!(r, Ok(()));
        let gc = [("CNI_COMMAND", "GC"), ("CNI_PATH", "/x")];
        let (r, _, _) = run(&gc, r#"{"name":"n","cniVersion":"1.0.0"}"#);
        assert_eq!(r.unwrap_err().msg, "config version does not allow GC");
        let (r, _, _) = run(&gc, r#"{"name":"n","cniVersion":"1.1.0"}"#);
        assert_eq!(r, Ok(()));
    }

    #[test]
    fn version_needs_only_the_command() {
        let (r, out, _) = run(&[("CNI_COMMAND", "VERSION")], "ignored");
        assert_eq!(r, Ok(()));
        assert_eq!(out, version::version_info_json());
    }

    #[test]
    fn same_netns_as_plugin_is_refused() {
        let (r, _, _) = run(
            &with(&[("CNI_NETNS", "/proc/self/ns/net")]),
            r#"{"name":"n"}"#,
        );
        assert_eq!(r.unwrap_err().code, 8);
        let (r, _, _) = run(
            &with(&[
                ("CNI_NETNS", "/proc/self/ns/net"),
                ("CNI_NETNS_OVERRIDE", "1"),
            ]),
            r#"{"name":"n"}"#,
        );
        assert_eq!(r, Ok(()));
    }
}
