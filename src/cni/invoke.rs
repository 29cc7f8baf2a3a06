//! Finding and executing plugin binaries, and reading what they print (libcni `pkg/invoke`).
//!
//! [`Exec`] is the seam that decides *how* a plugin process starts: [`DirectExec`] runs it
//! in the caller's namespaces; a caller can wrap it (e.g. `ip netns exec HOST`) to run the
//! plugins of a "host" that is itself a network namespace.

use super::error::CniError;
use super::version;
use serde_json::Value;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

/// Starts a plugin process and collects its output.
pub trait Exec: Send + Sync {
    /// Run the plugin at `plugin` with `env` set on top of the inherited environment and
    /// `stdin` as its standard input; return its exit status, stdout and stderr.
    fn run(&self, plugin: &Path, env: &[(String, String)], stdin: &[u8]) -> io::Result<Output>;
}

/// Runs plugins directly, in this process's namespaces.
#[derive(Debug, Clone, Copy, Default)]
pub struct DirectExec;

impl Exec for DirectExec {
    fn run(&self, plugin: &Path, env: &[(String, String)], stdin: &[u8]) -> io::Result<Output> {
        run_command(Command::new(plugin), env, stdin)
    }
}

/// Run `command` with `env` added, feeding `stdin` from a helper thread (so a plugin that
/// writes before it reads cannot dead-lock us), and capture stdout and stderr.
pub fn run_command(
    mut command: Command,
    env: &[(String, String)],
    stdin: &[u8],
) -> io::Result<Output> {
    command
        .envs(env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = command.spawn()?;
    let input = child.stdin.take();
    std::thread::scope(|scope| {
        if let Some(mut pipe) = input {
            scope.spawn(move || {
                // A plugin may exit without reading its config (VERSION); that is not an error.
                let _ = pipe.write_all(stdin);
            });
        }
        child.wait_with_output()
    })
}

/// Why a plugin could not be run or what it reported.
#[derive(Debug, thiserror::Error)]
pub enum PluginError {
    /// The binary is not in any plugin directory (libcni's wording).
    #[error("{0}")]
    NotFound(String),
    /// The binary exists but could not be started.
    #[error("cannot execute {path}: {error}", path = .path.display())]
    Spawn {
        /// The binary.
        path: PathBuf,
        /// What the OS said.
        error: io::Error,
    },
    /// The plugin exited non-zero; this is the error it printed (or a description of what it
    /// printed instead, with code 0, as libcni does).
    #[error("CNI error code {}: {}", .0.code, .0)]
    Failed(CniError),
    /// The plugin succeeded but its result is unusable.
    #[error("{0}")]
    BadResult(String),
}

/// Locate plugin `name` in `dirs` (first regular file wins, symlinks followed).
pub fn find_in_path(name: &str, dirs: &[PathBuf]) -> Result<PathBuf, PluginError> {
    if name.is_empty() {
        return Err(PluginError::NotFound("no plugin name provided".into()));
    }
    if name.contains('/') {
        return Err(PluginError::NotFound(format!(
            "invalid plugin name: {name}"
        )));
    }
    if dirs.is_empty() {
        return Err(PluginError::NotFound("no paths provided".into()));
    }
    for dir in dirs {
        let candidate = dir.join(name);
        if std::fs::metadata(&candidate).is_ok_and(|m| m.is_file()) {
            return Ok(candidate);
        }
    }
    let listed: Vec<String> = dirs.iter().map(|d| d.display().to_string()).collect();
    Err(PluginError::NotFound(format!(
        "failed to find plugin {name:?} in path [{}]",
        listed.join(" ")
    )))
}

/// Split a `CNI_PATH`-style list (`:`-separated; empty means none).
pub fn split_path_list(list: &str) -> Vec<PathBuf> {
    if list.is_empty() {
        return Vec::new();
    }
    list.split(':').map(PathBuf::from).collect()
}

/// Execute a plugin and return its stdout; a non-zero exit becomes [`PluginError::Failed`].
///
/// "Text file busy" (the binary is being replaced right now) is retried for up to 5 s.
/// On success the plugin's stderr is copied to ours when `forward_stderr` is set.
pub fn exec_plugin(
    exec: &dyn Exec,
    plugin: &Path,
    env: &[(String, String)],
    stdin: &[u8],
    forward_stderr: bool,
) -> Result<Vec<u8>, PluginError> {
    const ETXTBSY: i32 = 26;
    let mut attempt = 0;
    let output = loop {
        match exec.run(plugin, env, stdin) {
            Ok(output) => break output,
            Err(error) if error.raw_os_error() == Some(ETXTBSY) && attempt < 5 => {
                attempt += 1;
                std::thread::sleep(Duration::from_secs(1));
            }
            Err(error) => {
                return Err(PluginError::Spawn {
                    path: plugin.to_path_buf(),
                    error,
                });
            }
        }
    };
    if !output.status.success() {
        return Err(PluginError::Failed(plugin_failure(&output)));
    }
    if forward_stderr && !output.stderr.is_empty() {
        let _ = io::stderr().write_all(&output.stderr);
    }
    Ok(output.stdout)
}

/// Turn a failed plugin's output into its CNI error, as libcni does.
fn plugin_failure(output: &Output) -> CniError {
    let status = match (output.status.code(), output.status_signal()) {
        (Some(code), _) => format!("exit status {code}"),
        (None, Some(signal)) => format!("signal {signal}"),
        _ => output.status.to_string(),
    };
    if output.stdout.is_empty() {
        let stderr = String::from_utf8_lossy(&output.stderr);
        let msg = if stderr.is_empty() {
            format!("netplugin failed with no error message: {status}")
        } else {
            format!("netplugin failed: {stderr:?}")
        };
        return CniError::new(0, msg);
    }
    serde_json::from_slice::<CniError>(&output.stdout).unwrap_or_else(|e| {
        CniError::new(
            0,
            format!(
                "netplugin failed but error parsing its diagnostic message {:?}: {e}",
                String::from_utf8_lossy(&output.stdout)
            ),
        )
    })
}

trait StatusSignal {
    fn status_signal(&self) -> Option<i32>;
}

impl StatusSignal for Output {
    fn status_signal(&self) -> Option<i32> {
        std::os::unix::process::ExitStatusExt::signal(&self.status)
    }
}

/// Parse an ADD result. A result without `cniVersion` takes the config's version (libcni
/// does this for old plugins); an unknown version is an error.
pub fn parse_result(stdout: &[u8], config: &[u8]) -> Result<Value, PluginError> {
    let mut value: Value = serde_json::from_slice(stdout).map_err(|e| {
        PluginError::BadResult(format!(
            "failed to unmarshal raw result: {e} (plugin printed {:?})",
            String::from_utf8_lossy(stdout)
        ))
    })?;
    if value.is_null() {
        value = Value::Object(Default::default());
    }
    let Value::Object(map) = &mut value else {
        return Err(PluginError::BadResult(format!(
            "plugin result is not a JSON object: {}",
            String::from_utf8_lossy(stdout)
        )));
    };
    let declared = map
        .get("cniVersion")
        .and_then(Value::as_str)
        .filter(|v| !v.is_empty())
        .map(str::to_string);
    let result_version = match declared {
        Some(v) => v,
        None => {
            let v = version::decode_config_version(config).map_err(PluginError::BadResult)?;
            map.insert("cniVersion".into(), Value::String(v.clone()));
            v
        }
    };
    if !version::SUPPORTED.contains(&result_version.as_str()) {
        return Err(PluginError::BadResult(format!(
            "unsupported CNI result version {result_version:?}"
        )));
    }
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn find_reports_all_directories() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("bridge"), "").unwrap();
        std::fs::create_dir(dir.path().join("subdir")).unwrap();
        let dirs = vec![PathBuf::from("/nonexistent"), dir.path().to_path_buf()];
        assert_eq!(
            find_in_path("bridge", &dirs).unwrap(),
            dir.path().join("bridge")
        );
        let e = find_in_path("subdir", &dirs).unwrap_err();
        assert_eq!(
            e.to_string(),
            format!(
                "failed to find plugin \"subdir\" in path [/nonexistent {}]",
                dir.path().display()
            )
        );
        assert_eq!(
            find_in_path("a/b", &dirs).unwrap_err().to_string(),
            "invalid plugin name: a/b"
        );
        assert_eq!(split_path_list("/a::/b").len(), 3);
        assert!(split_path_list("").is_empty());
    }

    fn sh(script: &str) -> Result<Vec<u8>, PluginError> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("plugin");
        std::fs::write(&path, format!("#!/bin/sh\n{script}\n")).unwrap();
        std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o755))
            .unwrap();
        let env = vec![("CNI_COMMAND".to_string(), "ADD".to_string())];
        exec_plugin(&DirectExec, &path, &env, b"{\"name\":\"n\"}", false)
    }

    #[test]
    fn exec_passes_env_and_stdin() {
        let out = sh("cat; echo \" $CNI_COMMAND\"").unwrap();
        assert_eq!(String::from_utf8(out).unwrap(), "{\"name\":\"n\"} ADD\n");
    }

    #[test]
    fn failures_become_cni_errors() {
        let e = sh(r#"echo '{"code":7,"msg":"bad conf"}'; exit 1"#).unwrap_err();
        assert!(matches!(e, PluginError::Failed(ref c) if *c == CniError::new(7, "bad conf")));
        assert_eq!(e.to_string(), "CNI error code 7: bad conf");
        let e = sh("echo oops >&2; exit 3").unwrap_err();
        assert_eq!(
            e.to_string(),
            "CNI error code 0: netplugin failed: \"oops\\n\""
        );
        let e = sh("exit 2").unwrap_err();
        assert_eq!(
            e.to_string(),
            "CNI error code 0: netplugin failed with no error message: exit status 2"
        );
        let e = sh("echo garbage; exit 1").unwrap_err();
        assert!(
            e.to_string()
                .contains("error parsing its diagnostic message")
        );
    }

    #[test]
    fn results_get_the_config_version_when_they_lack_one() {
        let v = parse_result(br#"{"ips":[]}"#, br#"{"cniVersion":"0.3.1"}"#).unwrap();
        assert_eq!(v["cniVersion"], "0.3.1");
        let e = parse_result(br#"{"cniVersion":"7.0.0"}"#, b"{}").unwrap_err();
        assert!(e.to_string().contains("unsupported CNI result version"));
        assert!(parse_result(b"nope", b"{}").is_err());
    }
}
