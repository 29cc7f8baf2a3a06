//! Keep a long-running service up on a host: a systemd unit where the host runs systemd,
//! otherwise `installer supervise` detached with a pid file and a log (the lab's hosts).

use super::ops::{Input, OpResult, OpStatus, Remote, RemoteError};

/// A service to run on a host.
#[derive(Debug, Clone)]
pub struct ServiceSpec<'a> {
    /// systemd unit name (`flannel-agent`); its unit file must already be in place.
    pub unit: &'a str,
    /// The node binary (`/opt/kube/bin/installer`), used to supervise without systemd.
    pub binary: &'a str,
    /// The command the service runs (argv, first word the program).
    pub command: &'a [&'a str],
    /// Supervisor pid file (hosts without systemd).
    pub pidfile: &'a str,
    /// Log file (hosts without systemd; systemd hosts log to the journal).
    pub log: &'a str,
    /// Restart even if running (its binary or configuration changed).
    pub restart: bool,
    /// Run `systemctl daemon-reload` first (the unit file changed).
    pub reload: bool,
}

/// Args: UNIT BINARY PIDFILE LOG RESTART(0|1) RELOAD(0|1) -- COMMAND…
/// Prints `systemd running|started|restarted` or `supervise running|started|restarted`.
const ENSURE: &str = r#"unit=$1 bin=$2 pidfile=$3 log=$4 restart=$5 reload=$6; shift 7
alive() {
  [ -f "$pidfile" ] || return 1
  pid=$(cat "$pidfile" 2>/dev/null) || return 1
  [ -n "$pid" ] && [ -r "/proc/$pid/cmdline" ] && tr '\0' ' ' < "/proc/$pid/cmdline" | grep -q ' supervise '
}
if [ -d /run/systemd/system ]; then
  [ "$reload" = 1 ] && { systemctl daemon-reload || exit 1; }
  systemctl enable "$unit" >/dev/null 2>&1 || true
  if [ "$restart" = 1 ]; then systemctl restart "$unit" || exit 1; echo "systemd restarted"
  elif systemctl is-active --quiet "$unit"; then echo "systemd running"
  else systemctl start "$unit" || exit 1; echo "systemd started"; fi
  exit 0
fi
state=started
if alive; then
  if [ "$restart" != 1 ]; then echo "supervise running"; exit 0; fi
  kill "$pid" 2>/dev/null
  i=0; while alive && [ $i -lt 100 ]; do sleep 0.1; i=$((i+1)); done
  if alive; then echo "supervisor $pid does not stop" >&2; exit 1; fi
  state=restarted
fi
mkdir -p "$(dirname "$pidfile")" "$(dirname "$log")" || exit 1
setsid "$bin" supervise --pidfile "$pidfile" --log "$log" -- "$@" </dev/null >/dev/null 2>&1 &
i=0; while ! alive && [ $i -lt 50 ]; do sleep 0.1; i=$((i+1)); done
alive || { echo "the supervisor did not start; see $log" >&2; tail -n 20 "$log" >&2; exit 1; }
echo "supervise $state""#;

/// Args: UNIT PIDFILE — stops the service (systemd or supervisor); prints `stopped` or `absent`.
const STOP: &str = r#"unit=$1 pidfile=$2
if [ -d /run/systemd/system ] && systemctl cat "$unit" >/dev/null 2>&1; then
  if systemctl is-active --quiet "$unit"; then systemctl disable --now "$unit" >/dev/null 2>&1 || exit 1; echo stopped
  else systemctl disable "$unit" >/dev/null 2>&1; echo absent; fi
  exit 0
fi
if [ -f "$pidfile" ]; then
  pid=$(cat "$pidfile")
  if [ -n "$pid" ] && [ -r "/proc/$pid/cmdline" ] && tr '\0' ' ' < "/proc/$pid/cmdline" | grep -q ' supervise '; then
    kill "$pid"; i=0
    while [ -r "/proc/$pid/cmdline" ] && [ $i -lt 100 ]; do sleep 0.1; i=$((i+1)); done
    [ -r "/proc/$pid/cmdline" ] && { kill -9 "$pid"; }
    rm -f "$pidfile"; echo stopped; exit 0
  fi
  rm -f "$pidfile"
fi
echo absent"#;

/// Args: TIMEOUT_TENTHS BINARY URL SUBNET_FILE LOG UNIT — waits until the URL answers 200 and
/// the subnet file exists; on timeout prints the last log lines to stderr and exits 1.
const WAIT_READY: &str = r#"n=$1 bin=$2 url=$3 subnet=$4 log=$5 unit=$6 i=0
while [ $i -lt "$n" ]; do
  if [ -s "$subnet" ] && "$bin" probe-http "$url" >/dev/null 2>&1; then echo ready; exit 0; fi
  sleep 0.1; i=$((i+1))
done
echo "not ready after $((n/10))s: $subnet $( [ -s "$subnet" ] && echo present || echo missing ), $url not answering 200" >&2
if [ -d /run/systemd/system ]; then journalctl -u "$unit" -n 20 --no-pager >&2 2>/dev/null; else tail -n 20 "$log" >&2 2>/dev/null; fi
exit 1"#;

impl Remote {
    /// Make sure the service runs (started, restarted when asked, or left running).
    pub fn ensure_service(&self, spec: &ServiceSpec<'_>) -> OpResult {
        let target = spec.unit.to_string();
        if self.check_mode() {
            let what = if spec.restart {
                "restarted"
            } else {
                "started if not running"
            };
            return OpResult::new(
                "service",
                target,
                OpStatus::Changed,
                format!("would be {what}"),
            );
        }
        let flag = |b: bool| if b { "1" } else { "0" };
        let mut args: Vec<&str> = vec![
            spec.unit,
            spec.binary,
            spec.pidfile,
            spec.log,
            flag(spec.restart),
            flag(spec.reload),
            "--",
        ];
        args.extend(spec.command);
        match self.exec(ENSURE, &args, true, Input::None) {
            Ok(out) if out.success() => {
                let text = out.stdout_text().trim().to_string();
                let status = if text.ends_with("running") {
                    OpStatus::Ok
                } else {
                    OpStatus::Changed
                };
                OpResult::new("service", target, status, text)
            }
            Ok(out) => OpResult::failed("service", target, out.describe_failure()),
            Err(e) => OpResult::failed("service", target, e.to_string()),
        }
    }

    /// Stop and disable the service, whichever way it runs.
    pub fn stop_service(&self, unit: &str, pidfile: &str) -> OpResult {
        if self.check_mode() {
            return OpResult::new("service", unit, OpStatus::Changed, "would be stopped");
        }
        match self.exec(STOP, &[unit, pidfile], true, Input::None) {
            Ok(out) if out.success() => {
                let status = if out.stdout_text().trim() == "absent" {
                    OpStatus::Ok
                } else {
                    OpStatus::Changed
                };
                OpResult::new(
                    "service",
                    unit,
                    status,
                    out.stdout_text().trim().to_string(),
                )
            }
            Ok(out) => OpResult::failed("service", unit, out.describe_failure()),
            Err(e) => OpResult::failed("service", unit, e.to_string()),
        }
    }

    /// Wait up to `timeout` until `url` answers 200 (probed on the host with `binary
    /// probe-http`) and `subnet_file` exists; on timeout the result carries the last log lines.
    pub fn wait_ready(
        &self,
        binary: &str,
        url: &str,
        subnet_file: &str,
        log: &str,
        unit: &str,
        timeout: std::time::Duration,
    ) -> Result<OpResult, RemoteError> {
        if self.check_mode() {
            return Ok(OpResult::new(
                "wait",
                unit,
                OpStatus::Ok,
                "skipped in check mode",
            ));
        }
        let tenths = (timeout.as_millis() / 100).max(1).to_string();
        let out = self.exec(
            WAIT_READY,
            &[&tenths, binary, url, subnet_file, log, unit],
            true,
            Input::None,
        )?;
        Ok(if out.success() {
            OpResult::new("wait", unit, OpStatus::Ok, "ready")
        } else {
            OpResult::failed("wait", unit, out.stderr_text().trim().to_string())
        })
    }
}
