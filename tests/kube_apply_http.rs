//! The deploy side of the Kubernetes datastore at the HTTP level: the real `kube` client of
//! `installer::kubeapi` against a scripted API server answering with API objects shaped like
//! kube-apiserver's (tests/fixtures/kube/apply/). Checks the exact requests (paths, field
//! manager, patch types, dry run, force) and how answers become outcomes and messages.

mod common;
use common::fake_apiserver::{FakeApiServer, Recorded, Reply, fixture};
use installer::kubeapi::apply::{self, ApplyOptions, ApplyStatus};
use installer::kubeapi::{KubeSession, credentials, daemonset, nodes};
use installer::render::{KubeObject, check_manifest};
use serde_json::json;
use std::time::Duration;

const MANIFEST: &str = r#"
apiVersion: v1
kind: ServiceAccount
metadata:
  name: flannel
  namespace: kube-system
---
kind: ClusterRole
apiVersion: rbac.authorization.k8s.io/v1
metadata:
  name: flannel
rules:
  - apiGroups: [""]
    resources: ["pods"]
    verbs: ["get"]
  - apiGroups: [""]
    resources: ["nodes"]
    verbs: ["get", "list", "watch"]
  - apiGroups: [""]
    resources: ["nodes/status"]
    verbs: ["patch"]
---
apiVersion: v1
kind: Secret
metadata:
  name: flannel-token
  namespace: kube-system
  annotations:
    kubernetes.io/service-account.name: flannel
type: kubernetes.io/service-account-token
---
kind: ConfigMap
apiVersion: v1
metadata:
  name: kube-flannel-cfg
  namespace: kube-system
  labels: {app: flannel, tier: node}
data:
  cni-conf.json: "{}"
  net-conf.json: '{"Network":"172.20.0.0/16","Backend":{"Type":"vxlan"}}'
"#;

const SA: &str = "/api/v1/namespaces/kube-system/serviceaccounts/flannel";
const CR: &str = "/apis/rbac.authorization.k8s.io/v1/clusterroles/flannel";
const SECRET: &str = "/api/v1/namespaces/kube-system/secrets/flannel-token";
const CM: &str = "/api/v1/namespaces/kube-system/configmaps/kube-flannel-cfg";

fn objects() -> Vec<KubeObject> {
    check_manifest(MANIFEST).expect("manifest")
}

fn session(api: &FakeApiServer, dir: &tempfile::TempDir) -> KubeSession {
    KubeSession::connect(Some(&api.kubeconfig(dir.path()))).expect("session")
}

fn patches(api: &FakeApiServer) -> Vec<Recorded> {
    api.requests()
        .into_iter()
        .filter(|r| r.method == "PATCH")
        .collect()
}

/// SA absent → created; ClusterRole same resourceVersion → unchanged; Secret created;
/// ConfigMap new resourceVersion → configured.
fn script_first_apply(api: &FakeApiServer) {
    api.reply(
        "GET",
        SA,
        Reply::fixture(404, "kube/agent/status-404-node-a.json"),
    );
    api.reply(
        "PATCH",
        SA,
        Reply::fixture(201, "kube/apply/serviceaccount-created.json"),
    );
    api.reply(
        "GET",
        CR,
        Reply::fixture(200, "kube/apply/clusterrole-flannel.json"),
    );
    api.reply(
        "PATCH",
        CR,
        Reply::fixture(200, "kube/apply/clusterrole-flannel.json"),
    );
    api.reply(
        "GET",
        SECRET,
        Reply::fixture(404, "kube/agent/status-404-node-a.json"),
    );
    api.reply(
        "PATCH",
        SECRET,
        Reply::fixture(201, "kube/apply/secret-token-pending.json"),
    );
    api.reply(
        "GET",
        CM,
        Reply::fixture(200, "kube/apply/configmap-live.json"),
    );
    api.reply(
        "PATCH",
        CM,
        Reply::fixture(200, "kube/apply/configmap-applied.json"),
    );
}

#[test]
fn apply_sends_server_side_apply_and_reports_like_kubectl() {
    let api = FakeApiServer::start();
    let dir = tempfile::tempdir().unwrap();
    script_first_apply(&api);
    let s = session(&api, &dir);
    let objs = objects();
    let out = apply::apply_all(&s, &objs, ApplyOptions::default()).expect("apply");
    let lines: Vec<String> = out.iter().map(|o| o.line(false)).collect();
    assert_eq!(
        lines,
        [
            "serviceaccount/flannel -n kube-system created",
            "clusterrole.rbac.authorization.k8s.io/flannel unchanged",
            "secret/flannel-token -n kube-system created",
            "configmap/kube-flannel-cfg -n kube-system configured",
        ]
    );
    let p = patches(&api);
    assert_eq!(
        p.iter().map(|r| r.path.as_str()).collect::<Vec<_>>(),
        [SA, CR, SECRET, CM]
    );
    for (r, obj) in p.iter().zip(&objs) {
        assert_eq!(
            r.content_type.as_deref(),
            Some("application/apply-patch+yaml")
        );
        assert_eq!(r.query_param("fieldManager").as_deref(), Some("installer"));
        assert_eq!(
            r.query_param("force"),
            None,
            "no force without --force-conflicts"
        );
        assert_eq!(r.query_param("dryRun"), None);
        assert_eq!(r.json(), obj.body, "the rendered object is sent as is");
        assert_eq!(r.authorization.as_deref(), Some("Bearer fake-token"));
    }
}

#[test]
fn check_mode_uses_server_dry_run_and_diff_shows_the_change() {
    let api = FakeApiServer::start();
    let dir = tempfile::tempdir().unwrap();
    script_first_apply(&api);
    let s = session(&api, &dir);
    let opts = ApplyOptions {
        dry_run: true,
        diff: true,
        ..ApplyOptions::default()
    };
    let out = apply::apply_all(&s, &objects(), opts).expect("dry run");
    let words: Vec<ApplyStatus> = out.iter().map(|o| o.status).collect();
    assert_eq!(
        words,
        [
            ApplyStatus::Created,
            ApplyStatus::Unchanged,
            ApplyStatus::Created,
            ApplyStatus::Configured
        ]
    );
    for r in patches(&api) {
        assert_eq!(r.query_param("dryRun").as_deref(), Some("All"), "{r:?}");
    }
    let cm = out[3]
        .diff
        .as_deref()
        .expect("diff for the configured ConfigMap");
    assert!(cm.contains("host-gw") && cm.contains("vxlan"), "{cm}");
    assert!(
        !cm.contains("resourceVersion"),
        "server-maintained fields left out: {cm}"
    );
    assert!(!cm.contains("managedFields"), "{cm}");
    assert!(out[1].diff.is_none(), "no diff for an unchanged object");
    assert!(out[3].line(true).ends_with("configured (server dry run)"));
}

#[test]
fn conflict_names_the_field_and_the_way_out_and_force_takes_over() {
    let api = FakeApiServer::start();
    let dir = tempfile::tempdir().unwrap();
    api.reply(
        "GET",
        CM,
        Reply::fixture(200, "kube/apply/configmap-live.json"),
    );
    api.reply(
        "PATCH",
        CM,
        Reply::fixture(409, "kube/apply/status-409-apply-conflict.json"),
    );
    let s = session(&api, &dir);
    let cm: Vec<KubeObject> = objects()
        .into_iter()
        .filter(|o| o.kind == "ConfigMap")
        .collect();
    let err = apply::apply_all(&s, &cm, ApplyOptions::default())
        .expect_err("conflict")
        .to_string();
    for part in [
        "apply ConfigMap kube-system/kube-flannel-cfg",
        "409 Conflict",
        "kubectl-edit",
        ".data.net-conf.json",
        "--force-conflicts",
    ] {
        assert!(err.contains(part), "{part:?} missing in: {err}");
    }
    let api2 = FakeApiServer::start();
    api2.reply(
        "GET",
        CM,
        Reply::fixture(200, "kube/apply/configmap-live.json"),
    );
    api2.reply(
        "PATCH",
        CM,
        Reply::fixture(200, "kube/apply/configmap-applied.json"),
    );
    let s2 = session(&api2, &dir);
    let forced = ApplyOptions {
        force_conflicts: true,
        ..ApplyOptions::default()
    };
    apply::apply_all(&s2, &cm, forced).expect("forced apply");
    assert_eq!(
        patches(&api2)[0].query_param("force").as_deref(),
        Some("true")
    );
}

#[test]
fn forbidden_apply_stops_with_the_api_message() {
    let api = FakeApiServer::start();
    let dir = tempfile::tempdir().unwrap();
    api.reply(
        "GET",
        SA,
        Reply::fixture(200, "kube/apply/serviceaccount-created.json"),
    );
    api.reply(
        "PATCH",
        SA,
        Reply::fixture(200, "kube/apply/serviceaccount-created.json"),
    );
    api.reply(
        "GET",
        CR,
        Reply::fixture(403, "kube/apply/status-403-apply-forbidden.json"),
    );
    let s = session(&api, &dir);
    let err = apply::apply_all(&s, &objects(), ApplyOptions::default())
        .expect_err("forbidden")
        .to_string();
    assert!(
        err.contains("get ClusterRole flannel: 403 Forbidden"),
        "{err}"
    );
    assert!(
        err.contains("cannot patch resource \"clusterroles\""),
        "{err}"
    );
    assert!(
        !api.requests().iter().any(|r| r.path == SECRET),
        "nothing after the failing object is sent"
    );
}

#[test]
fn unknown_kind_is_refused_before_any_request() {
    let api = FakeApiServer::start();
    let dir = tempfile::tempdir().unwrap();
    let s = session(&api, &dir);
    let mut objs = objects();
    objs.push(KubeObject {
        api_version: "v1".into(),
        kind: "Pod".into(),
        namespace: Some("kube-system".into()),
        name: "x".into(),
        body: json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "x"}}),
    });
    let err = apply::apply_all(&s, &objs, ApplyOptions::default())
        .expect_err("unknown kind")
        .to_string();
    assert!(
        err.contains("Pod kube-system/x") && err.contains("not one installer applies"),
        "{err}"
    );
    assert!(api.requests().is_empty(), "{:?}", api.requests());
}

#[test]
fn unreachable_api_server_names_the_server() {
    let dir = tempfile::tempdir().unwrap();
    let (url, kubeconfig) = {
        let api = FakeApiServer::start();
        (api.url(), api.kubeconfig(dir.path()))
    }; // stopped: nothing listens there any more
    let s = KubeSession::connect(Some(&kubeconfig)).expect("session");
    let err = apply::apply_all(&s, &objects(), ApplyOptions::default())
        .expect_err("unreachable")
        .to_string();
    assert!(
        err.contains("get ServiceAccount kube-system/flannel"),
        "{err}"
    );
    assert!(
        err.contains(&format!("cannot talk to the API server {url}")),
        "{err}"
    );
}

#[test]
fn delete_goes_in_reverse_order_and_tolerates_absent_objects() {
    let api = FakeApiServer::start();
    let dir = tempfile::tempdir().unwrap();
    api.reply(
        "DELETE",
        CM,
        Reply::fixture(200, "kube/apply/configmap-live.json"),
    );
    api.reply(
        "DELETE",
        SECRET,
        Reply::fixture(200, "kube/apply/secret-token-filled.json"),
    );
    api.reply(
        "DELETE",
        CR,
        Reply::fixture(404, "kube/apply/status-404-clusterrole.json"),
    );
    api.reply(
        "DELETE",
        SA,
        Reply::fixture(200, "kube/apply/serviceaccount-created.json"),
    );
    let s = session(&api, &dir);
    let out = apply::delete_all(&s, &objects(), false).expect("delete");
    assert_eq!(
        out,
        [
            (
                "configmap/kube-flannel-cfg -n kube-system".to_string(),
                true
            ),
            ("secret/flannel-token -n kube-system".to_string(), true),
            (
                "clusterrole.rbac.authorization.k8s.io/flannel".to_string(),
                false
            ),
            ("serviceaccount/flannel -n kube-system".to_string(), true),
        ]
    );
    let deletes: Vec<Recorded> = api.requests();
    assert!(deletes.iter().all(|r| r.method == "DELETE"));
    assert_eq!(deletes[0].json()["propagationPolicy"], "Background");
}

#[test]
fn token_is_read_once_the_controller_filled_the_secret() {
    let api = FakeApiServer::start();
    let dir = tempfile::tempdir().unwrap();
    api.reply(
        "GET",
        SECRET,
        Reply::fixture(200, "kube/apply/secret-token-pending.json"),
    );
    api.reply(
        "GET",
        SECRET,
        Reply::fixture(200, "kube/apply/secret-token-filled.json"),
    );
    let s = session(&api, &dir);
    let r = credentials::token_secret(&objects()).expect("token secret in the manifest");
    assert_eq!(
        (
            r.namespace.as_str(),
            r.name.as_str(),
            r.service_account.as_str()
        ),
        ("kube-system", "flannel-token", "flannel")
    );
    let tok = credentials::wait_token(&s, &r, Duration::from_secs(10))
        .expect("token")
        .expect("secret exists");
    assert!(
        tok.token.starts_with("eyJhbGciOiJSUzI1NiIs"),
        "{}",
        tok.token
    );
    assert!(
        tok.ca_pem
            .as_deref()
            .unwrap_or_default()
            .starts_with(b"-----BEGIN CERTIFICATE-----")
    );
    assert_eq!(api.requests().len(), 2, "polled until filled");

    let text = credentials::agent_kubeconfig("https://10.0.0.1:6443", "flannel", &tok);
    assert!(text.contains("server: https://10.0.0.1:6443\n"), "{text}");

    // never filled → a timeout that says who fills it
    let api2 = FakeApiServer::start();
    api2.reply(
        "GET",
        SECRET,
        Reply::fixture(200, "kube/apply/secret-token-pending.json"),
    );
    let s2 = session(&api2, &dir);
    let err = credentials::wait_token(&s2, &r, Duration::from_secs(1))
        .expect_err("timeout")
        .to_string();
    assert!(
        err.contains("flannel-token has no token") && err.contains("kube-controller-manager"),
        "{err}"
    );
}

#[test]
fn node_wait_reports_which_node_is_not_up_and_why() {
    let api = FakeApiServer::start();
    let dir = tempfile::tempdir().unwrap();
    api.reply(
        "GET",
        "/api/v1/nodes",
        Reply::fixture(200, "kube/apply/nodelist-one-pending.json"),
    );
    let s = session(&api, &dir);
    let names = vec![
        "k8s-node-1".to_string(),
        "k8s-node-2".into(),
        "k8s-node-3".into(),
    ];
    let (view, missing) =
        nodes::wait_up(&s, &names, "vxlan", Duration::from_secs(1)).expect("wait");
    assert_eq!(missing, ["k8s-node-2", "k8s-node-3"]);
    assert!(view["k8s-node-1"].is_up("vxlan"));
    assert!(!view["k8s-node-1"].is_up("host-gw"));
    assert!(nodes::not_up_reason(view.get("k8s-node-2"), "vxlan").contains("podCIDR not assigned"));
    assert!(nodes::not_up_reason(view.get("k8s-node-3"), "vxlan").contains("no Node object"));
}

#[test]
fn clean_removes_only_flannel_annotations_with_a_merge_patch() {
    let api = FakeApiServer::start();
    let dir = tempfile::tempdir().unwrap();
    let node = "/api/v1/nodes/k8s-node-1";
    api.reply(
        "GET",
        node,
        Reply::fixture(200, "kube/apply/node-annotated.json"),
    );
    api.reply(
        "PATCH",
        node,
        Reply::fixture(200, "kube/apply/node-annotated.json"),
    );
    api.reply(
        "GET",
        "/api/v1/nodes/gone",
        Reply::fixture(404, "kube/agent/status-404-node-a.json"),
    );
    let s = session(&api, &dir);
    let out = nodes::remove_annotations(&s, &["k8s-node-1".into(), "gone".into()], false)
        .expect("remove");
    assert_eq!(out.len(), 1);
    let p = patches(&api);
    assert_eq!(p.len(), 1);
    assert_eq!(p[0].path, node, "the Node itself, not its status");
    assert_eq!(
        p[0].content_type.as_deref(),
        Some("application/merge-patch+json")
    );
    assert_eq!(
        p[0].json(),
        json!({"metadata": {"annotations": {
            "flannel.alpha.coreos.com/backend-type": null,
            "flannel.alpha.coreos.com/backend-data": null,
            "flannel.alpha.coreos.com/kube-subnet-manager": null,
            "flannel.alpha.coreos.com/public-ip": null,
        }}})
    );
}

#[test]
fn daemonset_not_rolled_out_is_explained_per_node() {
    let api = FakeApiServer::start();
    let dir = tempfile::tempdir().unwrap();
    let ds = fixture("kube/apply/daemonset-not-ready.json");
    api.reply(
        "GET",
        "/apis/apps/v1/namespaces/kube-system/daemonsets/kube-flannel-ds",
        Reply::json(200, ds),
    );
    api.reply(
        "GET",
        "/api/v1/namespaces/kube-system/pods",
        Reply::fixture(200, "kube/apply/podlist-flannel.json"),
    );
    api.reply(
        "GET",
        "/api/v1/namespaces/kube-system/events",
        Reply::fixture(200, "kube/apply/eventlist-pod.json"),
    );
    api.reply(
        "GET",
        "/api/v1/namespaces/kube-system/pods/kube-flannel-ds-q9w4m/log",
        Reply::text(200, "I1124 08:02:40.1 main.go:211] CLI flags config\nE1124 08:02:41.3 main.go:359] Error registering network: failed to acquire lease: node \"k8s-node-2\" pod cidr not assigned\n"),
    );
    let s = session(&api, &dir);
    let r = daemonset::wait_rollout(&s, "kube-system", "kube-flannel-ds", Duration::from_secs(1))
        .expect("rollout");
    assert_eq!((r.desired, r.updated, r.ready, r.done()), (2, 2, 1, false));
    let names = vec![
        "k8s-node-1".to_string(),
        "k8s-node-2".into(),
        "k8s-node-3".into(),
    ];
    let d = daemonset::diagnose(&s, "kube-system", "app=flannel", "kube-flannel", &names)
        .expect("diagnose");
    assert_eq!(d.len(), 2, "{d:?}");
    assert_eq!(d[0].node, "k8s-node-3");
    assert!(d[0].state.contains("no flannel pod"), "{d:?}");
    assert_eq!(
        (d[1].node.as_str(), d[1].pod.as_str()),
        ("k8s-node-2", "kube-flannel-ds-q9w4m")
    );
    assert!(
        d[1].state.contains("CrashLoopBackOff") && d[1].state.contains("restarted 4 times"),
        "{}",
        d[1].state
    );
    assert!(
        d[1].events
            .iter()
            .any(|e| e.starts_with("BackOff: Back-off restarting")),
        "{:?}",
        d[1].events
    );
    assert!(
        d[1].log_tail
            .iter()
            .any(|l| l.contains("pod cidr not assigned")),
        "{:?}",
        d[1].log_tail
    );
    let reqs = api.requests();
    let pods = reqs
        .iter()
        .find(|r| r.path.ends_with("/pods"))
        .expect("pod list");
    assert_eq!(
        pods.query_param("labelSelector").as_deref(),
        Some("app=flannel")
    );
    let log = reqs.iter().find(|r| r.path.ends_with("/log")).expect("log");
    assert_eq!(
        log.query_param("container").as_deref(),
        Some("kube-flannel")
    );
    assert_eq!(log.query_param("tailLines").as_deref(), Some("10"));
    let ev = reqs
        .iter()
        .find(|r| r.path.ends_with("/events"))
        .expect("events");
    assert_eq!(
        ev.query_param("fieldSelector").as_deref(),
        Some("involvedObject.name=kube-flannel-ds-q9w4m,involvedObject.kind=Pod")
    );
}
