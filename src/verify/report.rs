//! Printing a ping-mesh [`Outcome`]: two matrices (pod → pod, node → pod) with the mean RTT
//! of passing pairs, the failing pairs with their causes, routes on request, a summary and what
//! the cleanup left; or one JSON document for machines.

use super::diagnose::Cause;
use super::mesh::{Endpoint, From, Outcome, Pair, describe_leftover};
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::fmt::Write as _;

/// Counts for the summary line.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Summary {
    /// Pairs in all.
    pub pairs: usize,
    /// Pairs that passed both passes.
    pub passed: usize,
    /// Failing pairs per cause kind.
    pub by_cause: BTreeMap<&'static str, usize>,
    /// Probes removed cleanly / probes attempted.
    pub removed: usize,
    /// Probes attempted.
    pub probes: usize,
}

/// Count what the outcome holds.
pub fn summarize(o: &Outcome) -> Summary {
    let mut s = Summary {
        pairs: o.pairs.len(),
        ..Default::default()
    };
    for p in &o.pairs {
        match &p.cause {
            None => s.passed += 1,
            Some(c) => *s.by_cause.entry(c.kind()).or_default() += 1,
        }
    }
    s.probes = o.cleanup.len();
    s.removed = o.cleanup.iter().filter(|c| c.clean()).count();
    s
}

fn endpoint_label(o: &Outcome, index: usize) -> String {
    if o.mode == "probes" {
        format!("[{}]", o.endpoints[index].node + 1)
    } else {
        format!("p{}", index + 1)
    }
}

fn cell(p: Option<&Pair>) -> String {
    let Some(p) = p else { return "-".into() };
    match &p.cause {
        None => p
            .reach
            .as_ref()
            .and_then(|r| r.rtt_avg_ms)
            .map_or_else(|| "ok".into(), |ms| format!("{ms:.2}")),
        Some(Cause::Mtu { .. }) => "MTU".into(),
        Some(Cause::NotTested { .. }) => "?".into(),
        Some(_) => "FAIL".into(),
    }
}

fn matrix(
    out: &mut String,
    o: &Outcome,
    rows: &[(String, From)],
    pair_of: &BTreeMap<(From, usize), &Pair>,
) {
    let cols: Vec<String> = (0..o.endpoints.len())
        .map(|i| endpoint_label(o, i))
        .collect();
    let width = cols
        .iter()
        .map(String::len)
        .chain(rows.iter().map(|(l, _)| l.len()))
        .max()
        .unwrap_or(4)
        .max(6)
        + 2;
    let _ = write!(out, "{:>width$}", "to →");
    for c in &cols {
        let _ = write!(out, "{c:>width$}");
    }
    out.push('\n');
    for (label, from) in rows {
        let _ = write!(out, "{label:>width$}");
        for to in 0..cols.len() {
            let _ = write!(out, "{:>width$}", cell(pair_of.get(&(*from, to)).copied()));
        }
        out.push('\n');
    }
}

fn describe_source(o: &Outcome, from: From) -> String {
    match from {
        From::Pod(e) => {
            let ep = &o.endpoints[e];
            format!(
                "{} {} {} on {}",
                endpoint_label(o, e),
                if ep.owned { "probe" } else { ep.name.as_str() },
                ep.info.ip,
                o.nodes[ep.node].host
            )
        }
        From::Host(n) => format!("[{}] node {}", n + 1, o.nodes[n].host),
    }
}

fn describe_target(o: &Outcome, to: usize) -> String {
    let ep: &Endpoint = &o.endpoints[to];
    format!(
        "{} {} {} on {}",
        endpoint_label(o, to),
        if ep.owned { "probe" } else { ep.name.as_str() },
        ep.info.ip,
        o.nodes[ep.node].host
    )
}

/// The human report.
pub fn text(o: &Outcome) -> String {
    let mut out = String::new();
    let what = if o.mode == "probes" {
        "a probe pod per node through its own CNI configuration"
    } else {
        "existing pods"
    };
    let _ = writeln!(
        out,
        "ping-mesh: {} node(s), backend {}, {what}",
        o.nodes.len(),
        o.backend
    );
    for (i, n) in o.nodes.iter().enumerate() {
        let _ = write!(out, "  [{}] {}", i + 1, n.host);
        if o.mode == "probes"
            && let Some(ep) = o.endpoints.iter().find(|e| e.node == i)
        {
            let _ = write!(
                out,
                "  probe {}/{} mtu {} (netns {})",
                ep.info.ip, ep.info.prefix_len, ep.info.mtu, ep.info.netns
            );
        }
        if let Some(e) = &n.error {
            let _ = write!(out, "  ERROR: {e}");
        }
        out.push('\n');
    }
    if o.mode != "probes" {
        for (i, ep) in o.endpoints.iter().enumerate() {
            let _ = writeln!(
                out,
                "  {} {} {}/{} mtu {} (netns {}) on [{}]",
                endpoint_label(o, i),
                ep.name,
                ep.info.ip,
                ep.info.prefix_len,
                ep.info.mtu,
                ep.info.netns,
                ep.node + 1
            );
        }
    }
    for note in &o.notes {
        let _ = writeln!(out, "  note: {note}");
    }
    if !o.endpoints.is_empty() && !o.pairs.is_empty() {
        let pair_of: BTreeMap<(From, usize), &Pair> =
            o.pairs.iter().map(|p| ((p.from, p.to), p)).collect();
        let pod_rows: Vec<(String, From)> = (0..o.endpoints.len())
            .map(|i| (endpoint_label(o, i), From::Pod(i)))
            .collect();
        let _ = writeln!(
            out,
            "\npod → pod (mean RTT in ms of {} pings; then the MTU pass: largest payload the pod MTU allows, DF set)",
            o.count
        );
        matrix(&mut out, o, &pod_rows, &pair_of);
        let host_rows: Vec<(String, From)> = (0..o.nodes.len())
            .filter(|n| o.pairs.iter().any(|p| p.from == From::Host(*n)))
            .map(|n| (format!("[{}]", n + 1), From::Host(n)))
            .collect();
        let _ = writeln!(out, "\nnode → pod");
        matrix(&mut out, o, &host_rows, &pair_of);
        let _ = writeln!(
            out,
            "(FAIL: small pings lost; MTU: small pings pass, MTU-sized ones do not; ?: not tested)"
        );
    }
    let failing: Vec<&Pair> = o.pairs.iter().filter(|p| !p.ok()).collect();
    if !failing.is_empty() {
        let _ = writeln!(out, "\nfailing pairs:");
        for p in failing {
            let loss = match (&p.cause, &p.reach, &p.mtu) {
                (Some(Cause::Mtu { .. }), _, Some(m)) => {
                    format!("{}-byte pings with DF: {:.0}% loss", m.size, m.loss_pct())
                }
                (_, Some(r), _) => format!(
                    "{:.0}% loss ({} sent, {} received)",
                    r.loss_pct(),
                    r.sent,
                    r.received
                ),
                _ => "not run".into(),
            };
            let _ = writeln!(
                out,
                "  {} → {}: {loss}",
                describe_source(o, p.from),
                describe_target(o, p.to)
            );
            if let Some(c) = &p.cause {
                let _ = writeln!(out, "      {c}");
            }
        }
    }
    if o.nodes.iter().any(|n| n.routes.is_some()) {
        let _ = writeln!(out, "\nroutes:");
        for (i, n) in o.nodes.iter().enumerate() {
            if let Some(r) = &n.routes {
                let _ = writeln!(out, "  [{}] {}:", i + 1, n.host);
                for line in r.lines() {
                    let _ = writeln!(out, "    {line}");
                }
            }
        }
    }
    let s = summarize(o);
    let failed = s.pairs - s.passed;
    let _ = write!(
        out,
        "\nsummary: {} pair(s): {} passed, {failed} failed",
        s.pairs, s.passed
    );
    if !s.by_cause.is_empty() {
        let causes: Vec<String> = s.by_cause.iter().map(|(k, n)| format!("{k} {n}")).collect();
        let _ = write!(out, " ({})", causes.join(", "));
    }
    let bad_nodes = o.nodes.iter().filter(|n| n.error.is_some()).count();
    if bad_nodes > 0 {
        let _ = write!(out, "; {bad_nodes} node(s) could not take part");
    }
    let phases: Vec<String> = o
        .phases
        .iter()
        .map(|(name, secs)| format!("{name} {secs:.1}s"))
        .collect();
    let _ = writeln!(
        out,
        "; {:.1}s ({})",
        o.duration.as_secs_f64(),
        phases.join(", ")
    );
    if o.interrupted {
        let _ = writeln!(out, "interrupted: the remaining checks were skipped");
    }
    if s.probes > 0 {
        if s.removed == s.probes {
            let _ = writeln!(out, "cleanup: {} probe(s) removed, nothing left", s.probes);
        } else {
            let _ = writeln!(
                out,
                "cleanup: {} of {} probe(s) removed cleanly",
                s.removed, s.probes
            );
            for e in o.cleanup.iter().filter(|e| !e.clean()) {
                let _ = writeln!(out, "  {}", describe_leftover(e));
            }
        }
    }
    let _ = writeln!(out, "result: {}", if o.success() { "PASS" } else { "FAIL" });
    out
}

/// The machine report: the outcome plus `summary`, `success` and each cause's message.
pub fn json(o: &Outcome) -> Value {
    let mut v = serde_json::to_value(o).unwrap_or(Value::Null);
    if let Some(pairs) = v.get_mut("pairs").and_then(Value::as_array_mut) {
        for (p, pair) in pairs.iter_mut().zip(&o.pairs) {
            p["ok"] = json!(pair.ok());
            p["from_node"] = json!(match pair.from {
                From::Pod(e) => o.nodes[o.endpoints[e].node].host.clone(),
                From::Host(n) => o.nodes[n].host.clone(),
            });
            p["to_node"] = json!(o.nodes[o.endpoints[pair.to].node].host);
            p["target"] = json!(o.endpoints[pair.to].info.ip);
            if let Some(c) = &pair.cause {
                p["cause"]["message"] = json!(c.to_string());
            }
        }
    }
    let s = summarize(o);
    v["summary"] = json!({
        "pairs": s.pairs,
        "passed": s.passed,
        "failed": s.pairs - s.passed,
        "by_cause": s.by_cause,
        "probes": s.probes,
        "probes_removed": s.removed,
    });
    v["success"] = json!(o.success());
    v
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::verify::mesh::{CleanupEntry, NodeOutcome};
    use crate::verify::model::{DelReport, Pass, PingResult, PingSource, ProbeInfo};
    use std::time::Duration;

    fn probe(n: u8) -> ProbeInfo {
        ProbeInfo {
            id: format!("iv1-{n}"),
            netns: format!("installer-probe-iv1-{n}"),
            ifname: "eth0".into(),
            ip: format!("198.19.{}.2", 64 + n).parse().unwrap(),
            prefix_len: 24,
            gateway: None,
            mtu: 1500,
            network: "cbr0".into(),
            host_interfaces: vec!["cni0".into()],
            host_addrs: vec![format!("198.18.0.{}", 10 + n).parse().unwrap()],
        }
    }

    fn result(pass: Pass, ok: bool, rtt: f64) -> PingResult {
        PingResult {
            source: PingSource::Host,
            target: "198.19.65.2".parse().unwrap(),
            pass,
            size: 56,
            df: pass == Pass::Mtu,
            sent: 3,
            received: if ok { 3 } else { 0 },
            rtt_min_ms: None,
            rtt_avg_ms: ok.then_some(rtt),
            rtt_max_ms: None,
            errors: vec![],
            path_mtu: None,
        }
    }

    fn outcome() -> Outcome {
        let nodes = (1..=2)
            .map(|n| NodeOutcome {
                host: format!("198.18.0.{}", 10 + n),
                address: format!("198.18.0.{}", 10 + n),
                error: None,
                net: None,
                routes: None,
            })
            .collect();
        let endpoints = (1..=2)
            .map(|n| Endpoint {
                node: usize::from(n - 1),
                name: "probe".into(),
                info: probe(n),
                owned: true,
            })
            .collect();
        let pair = |from, to, reach: bool, mtu: bool, cause| Pair {
            from,
            to,
            reach: Some(result(Pass::Reach, reach, 0.123)),
            mtu: Some(result(Pass::Mtu, mtu, 0.2)),
            cause,
        };
        let mtu_cause = Cause::Mtu {
            packet: 1500,
            pod_mtu: 1500,
            path_mtu: None,
        };
        let unknown = Cause::Unknown { detail: "x".into() };
        Outcome {
            mode: "probes",
            backend: "host-gw",
            nodes,
            endpoints,
            pairs: vec![
                pair(From::Pod(0), 1, true, true, None),
                pair(From::Pod(1), 0, true, false, Some(mtu_cause)),
                pair(From::Host(0), 0, true, true, None),
                pair(From::Host(0), 1, false, false, Some(unknown)),
                pair(From::Host(1), 0, true, true, None),
                pair(From::Host(1), 1, true, true, None),
            ],
            cleanup: vec![
                CleanupEntry {
                    node: "198.18.0.11".into(),
                    probe: "iv1-1".into(),
                    report: Some(DelReport::default()),
                    error: None,
                },
                CleanupEntry {
                    node: "198.18.0.12".into(),
                    probe: "iv1-2".into(),
                    report: Some(DelReport {
                        leftovers: vec!["netns installer-probe-iv1-2".into()],
                        ..Default::default()
                    }),
                    error: None,
                },
            ],
            notes: vec![],
            interrupted: false,
            duration: Duration::from_millis(1500),
            count: 3,
            phases: indexmap::IndexMap::from([("connect", 0.1), ("ping", 0.5)]),
        }
    }

    #[test]
    fn matrices_failures_summary_and_leftovers() {
        let o = outcome();
        let t = text(&o);
        let lines: Vec<&str> = t.lines().collect();
        let pod = lines
            .iter()
            .position(|l| l.starts_with("pod → pod"))
            .unwrap();
        assert_eq!(
            lines[pod + 1].split_whitespace().collect::<Vec<_>>(),
            ["to", "→", "[1]", "[2]"]
        );
        assert_eq!(
            lines[pod + 2].split_whitespace().collect::<Vec<_>>(),
            ["[1]", "-", "0.12"]
        );
        assert_eq!(
            lines[pod + 3].split_whitespace().collect::<Vec<_>>(),
            ["[2]", "MTU", "-"]
        );
        let host = lines.iter().position(|l| *l == "node → pod").unwrap();
        assert_eq!(
            lines[host + 2].split_whitespace().collect::<Vec<_>>(),
            ["[1]", "0.12", "FAIL"]
        );
        assert!(t.contains("[1] node 198.18.0.11 → [2] probe 198.19.66.2 on 198.18.0.12: 100% loss (3 sent, 0 received)\n      unknown: x"), "{t}");
        assert!(t.contains("summary: 6 pair(s): 4 passed, 2 failed (mtu 1, unknown 1); 1.5s (connect 0.1s, ping 0.5s)"), "{t}");
        assert!(t.contains("cleanup: 1 of 2 probe(s) removed cleanly\n  198.18.0.12: probe iv1-2 not removed cleanly: still there: netns installer-probe-iv1-2"), "{t}");
        assert!(t.ends_with("result: FAIL\n"), "{t}");

        let j = json(&o);
        assert_eq!(j["success"], false);
        assert_eq!(j["summary"]["failed"], 2);
        assert_eq!(j["summary"]["by_cause"]["mtu"], 1);
        assert_eq!(j["pairs"][1]["cause"]["kind"], "mtu");
        assert_eq!(j["pairs"][1]["from_node"], "198.18.0.12");
        assert_eq!(j["pairs"][1]["target"], "198.19.65.2");
        assert!(
            j["pairs"][1]["cause"]["message"]
                .as_str()
                .unwrap()
                .contains("black hole")
        );
        assert_eq!(j["pairs"][0]["ok"], true);
        assert_eq!(j["phases"]["ping"], 0.5);
        assert_eq!(j["duration"], 1.5);
    }
}
