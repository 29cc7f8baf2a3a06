//! The agent's Kubernetes datastore (flannel-spec §3) against a scripted API server over real
//! HTTP: exact requests (paths, content types, patch bodies), error messages and transience,
//! and the node watch (snapshots, puts, deletes, relist after 410, outages). No root needed.

mod common;

use common::fake_apiserver::{FakeApiServer, Recorded, Reply, fixture};
use installer::agent::datastore::kube::{KubeDatastore, KubeSettings};
use installer::agent::datastore::{AcquireRequest, Datastore, DatastoreError, WatchUpdate};
use installer::agent::lease::{Lease, LeaseAttrs, LeaseEvent, LeaseTracker};
use installer::agent::netconf::NetConf;
use serde_json::{Value, json};
use std::net::Ipv4Addr;
use std::time::{Duration, Instant};
use tempfile::TempDir;
use tokio::sync::mpsc;

const NODE: &str = "/api/v1/nodes/node-a";
const STATUS: &str = "/api/v1/nodes/node-a/status";
const NODES: &str = "/api/v1/nodes";
const P: &str = "flannel.alpha.coreos.com";
const VXLAN_CONF: &str = r#"{"Network":"10.1.0.0/16","Backend":{"Type":"vxlan"}}"#;
const MAC: &str = "0e:11:22:33:44:55";

struct Env {
    server: FakeApiServer,
    _dir: TempDir,
    ds: KubeDatastore,
}

async fn env(net_conf: &str) -> Env {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let server = FakeApiServer::start();
    let dir = tempfile::tempdir().unwrap();
    let net_conf_path = dir.path().join("net-conf.json");
    std::fs::write(&net_conf_path, net_conf).unwrap();
    let settings = KubeSettings {
        kubeconfig: Some(server.kubeconfig(dir.path())),
        node_name: Some("node-a".into()),
        net_conf_path,
    };
    let ds = KubeDatastore::connect(&settings).await.unwrap();
    Env {
        server,
        _dir: dir,
        ds,
    }
}

fn vxlan_attrs() -> LeaseAttrs {
    LeaseAttrs {
        public_ip: Ipv4Addr::new(192, 168, 1, 11),
        public_ipv6: None,
        backend_type: "vxlan".into(),
        backend_data: Some(json!({"VNI": 1, "VtepMAC": MAC})),
    }
}

fn hostgw_attrs() -> LeaseAttrs {
    LeaseAttrs {
        backend_type: "host-gw".into(),
        backend_data: None,
        ..vxlan_attrs()
    }
}

async fn acquire(e: &Env, attrs: &LeaseAttrs) -> Result<Lease, DatastoreError> {
    let conf: NetConf = e.ds.network_config().await.unwrap();
    tokio::time::timeout(
        Duration::from_secs(15),
        e.ds.acquire_lease(AcquireRequest {
            conf: &conf,
            attrs,
            previous_subnet: None,
        }),
    )
    .await
    .expect("acquire_lease hangs")
}

fn methods_paths(reqs: &[Recorded]) -> Vec<(String, String)> {
    reqs.iter()
        .map(|r| (r.method.clone(), r.path.clone()))
        .collect()
}

fn annotated(mut node: Value, ann: &[(&str, &str)]) -> Value {
    for (k, v) in ann {
        node["metadata"]["annotations"][format!("{P}/{k}")] = json!(v);
    }
    node
}

// ---------------------------------------------------------------------------------------------
// acquire_lease

#[tokio::test]
async fn acquire_vxlan_patches_node_status_with_flannel_annotations() {
    let e = env(VXLAN_CONF).await;
    e.server
        .reply("GET", NODE, Reply::fixture(200, "kube/agent/node-a.json"));
    e.server.reply(
        "PATCH",
        STATUS,
        Reply::fixture(200, "kube/agent/node-a-vxlan.json"),
    );
    let lease = acquire(&e, &vxlan_attrs()).await.unwrap();
    assert_eq!(lease.subnet.to_string(), "10.1.17.0/24");
    assert_eq!(lease.expiration, None, "kube leases are never renewed");
    assert_eq!(lease.attrs, vxlan_attrs());

    let reqs = e.server.requests();
    assert_eq!(
        methods_paths(&reqs),
        [("GET".into(), NODE.into()), ("PATCH".into(), STATUS.into())]
    );
    for r in &reqs {
        assert_eq!(r.authorization.as_deref(), Some("Bearer fake-token"));
    }
    let patch = &reqs[1];
    assert_eq!(
        patch.content_type.as_deref(),
        Some("application/strategic-merge-patch+json")
    );
    assert_eq!(
        patch.json(),
        json!({"metadata": {"annotations": {
            "flannel.alpha.coreos.com/backend-data": "{\"VNI\":1,\"VtepMAC\":\"0e:11:22:33:44:55\"}",
            "flannel.alpha.coreos.com/backend-type": "vxlan",
            "flannel.alpha.coreos.com/kube-subnet-manager": "true",
            "flannel.alpha.coreos.com/public-ip": "192.168.1.11",
        }}})
    );
    // the datastore never renews or changes the lease
    assert_eq!(e.ds.renew_lease(&lease).await.unwrap(), lease);
}

#[tokio::test]
async fn acquire_hostgw_writes_null_backend_data() {
    let e = env(r#"{"Network":"10.1.0.0/16","Backend":{"Type":"host-gw"}}"#).await;
    e.server
        .reply("GET", NODE, Reply::fixture(200, "kube/agent/node-a.json"));
    e.server.reply(
        "PATCH",
        STATUS,
        Reply::fixture(200, "kube/agent/node-a.json"),
    );
    acquire(&e, &hostgw_attrs()).await.unwrap();
    let patches = e.server.requests_to("PATCH", STATUS);
    assert_eq!(patches.len(), 1);
    let ann = &patches[0].json()["metadata"]["annotations"];
    assert_eq!(ann[format!("{P}/backend-data")], "null");
    assert_eq!(ann[format!("{P}/backend-type")], "host-gw");
    assert_eq!(ann[format!("{P}/public-ip")], "192.168.1.11");
}

#[tokio::test]
async fn public_ip_overwrite_is_copied_into_public_ip() {
    let e = env(VXLAN_CONF).await;
    e.server.reply(
        "GET",
        NODE,
        Reply::fixture(200, "kube/agent/node-a-public-ip-overwrite.json"),
    );
    e.server.reply(
        "PATCH",
        STATUS,
        Reply::fixture(200, "kube/agent/node-a.json"),
    );
    let lease = acquire(&e, &vxlan_attrs()).await.unwrap();
    let patch = &e.server.requests_to("PATCH", STATUS)[0];
    let ann = &patch.json()["metadata"]["annotations"];
    assert_eq!(ann[format!("{P}/public-ip")], "203.0.113.7");
    assert!(
        ann.get(format!("{P}/public-ip-overwrite")).is_none(),
        "the operator's annotation is not touched: {ann}"
    );
    assert_eq!(lease.attrs.public_ip, Ipv4Addr::new(203, 0, 113, 7));
}

#[tokio::test]
async fn no_patch_when_annotations_already_match() {
    let e = env(VXLAN_CONF).await;
    let node = annotated(
        fixture("kube/agent/node-a.json"),
        &[
            ("backend-type", "vxlan"),
            ("backend-data", &format!(r#"{{"VNI":1,"VtepMAC":"{MAC}"}}"#)),
            ("kube-subnet-manager", "true"),
            ("public-ip", "192.168.1.11"),
        ],
    );
    e.server.reply("GET", NODE, Reply::json(200, node.clone()));
    let lease = acquire(&e, &vxlan_attrs()).await.unwrap();
    assert_eq!(lease.subnet.to_string(), "10.1.17.0/24");
    assert_eq!(
        methods_paths(&e.server.requests()),
        [("GET".into(), NODE.into())]
    );
    // one differing value (a new MAC) → a patch again
    let mut attrs = vxlan_attrs();
    attrs.backend_data = Some(json!({"VNI": 1, "VtepMAC": "0e:11:22:33:44:66"}));
    e.server.reply("PATCH", STATUS, Reply::json(200, node));
    acquire(&e, &attrs).await.unwrap();
    assert_eq!(e.server.requests_to("PATCH", STATUS).len(), 1);
}

#[tokio::test]
async fn pod_cidr_not_assigned_is_fatal_with_flannels_message() {
    let e = env(VXLAN_CONF).await;
    e.server.reply(
        "GET",
        NODE,
        Reply::fixture(200, "kube/agent/node-a-no-podcidr.json"),
    );
    let err = acquire(&e, &vxlan_attrs()).await.unwrap_err();
    let text = err.to_string();
    assert!(
        text.starts_with("node \"node-a\" pod cidr not assigned"),
        "{text}"
    );
    assert!(text.contains("--allocate-node-cidrs"), "{text}");
    assert!(!err.is_transient());
    assert!(e.server.requests_to("PATCH", STATUS).is_empty());
}

#[tokio::test]
async fn pod_cidr_outside_network_is_fatal() {
    let e = env(VXLAN_CONF).await;
    e.server.reply(
        "GET",
        NODE,
        Reply::fixture(200, "kube/agent/node-a-outside-network.json"),
    );
    let err = acquire(&e, &vxlan_attrs()).await.unwrap_err();
    let text = err.to_string();
    assert!(
        text.starts_with(
            "subnet \"10.1.0.0/16\" specified in the flannel net config doesn't contain \
             \"10.2.0.0/24\" PodCIDR of the \"node-a\" node"
        ),
        "{text}"
    );
    assert!(!err.is_transient());
    assert!(e.server.requests_to("PATCH", STATUS).is_empty());
}

#[tokio::test]
async fn forbidden_patch_names_the_missing_rbac() {
    let e = env(VXLAN_CONF).await;
    e.server
        .reply("GET", NODE, Reply::fixture(200, "kube/agent/node-a.json"));
    e.server.reply(
        "PATCH",
        STATUS,
        Reply::fixture(403, "kube/agent/status-403-patch-nodes-status.json"),
    );
    let err = acquire(&e, &vxlan_attrs()).await.unwrap_err();
    let text = err.to_string();
    for part in [
        "patch nodes/status \"node-a\"",
        "HTTP 403 Forbidden",
        "cannot patch resource \"nodes/status\"",
        "the flannel ClusterRole grants: pods get; nodes get, list, watch; nodes/status patch",
    ] {
        assert!(text.contains(part), "missing {part:?} in {text}");
    }
    assert!(!err.is_transient());
}

#[tokio::test]
async fn node_not_found_is_transient_and_named() {
    let e = env(VXLAN_CONF).await;
    e.server.reply(
        "GET",
        NODE,
        Reply::fixture(404, "kube/agent/status-404-node-a.json"),
    );
    let err = acquire(&e, &vxlan_attrs()).await.unwrap_err();
    assert!(
        matches!(err, DatastoreError::NodeNotFound { .. }),
        "{err:?}"
    );
    assert!(err.is_transient());
    assert!(err.to_string().contains("\"node-a\""), "{err}");
}

#[tokio::test]
async fn server_errors_are_transient_auth_errors_fatal() {
    let e = env(VXLAN_CONF).await;
    e.server.reply(
        "GET",
        NODE,
        Reply::fixture(500, "kube/agent/status-500.json"),
    );
    let err = acquire(&e, &vxlan_attrs()).await.unwrap_err();
    assert!(err.is_transient(), "{err}");
    assert!(err.to_string().contains("HTTP 500 InternalError"), "{err}");

    let e = env(VXLAN_CONF).await;
    e.server.reply(
        "GET",
        NODE,
        Reply::text(
            503,
            "upstream connect error or disconnect/reset before headers",
        ),
    );
    let err = acquire(&e, &vxlan_attrs()).await.unwrap_err();
    assert!(err.is_transient(), "{err}");
    assert!(err.to_string().contains("upstream connect error"), "{err}");

    let e = env(VXLAN_CONF).await;
    e.server.reply(
        "GET",
        NODE,
        Reply::fixture(401, "kube/agent/status-401.json"),
    );
    let err = acquire(&e, &vxlan_attrs()).await.unwrap_err();
    assert!(!err.is_transient(), "{err}");
    assert!(err.to_string().contains("HTTP 401 Unauthorized"), "{err}");

    let e = env(VXLAN_CONF).await;
    e.server
        .reply("GET", NODE, Reply::fixture(200, "kube/agent/node-a.json"));
    e.server.reply(
        "PATCH",
        STATUS,
        Reply::fixture(409, "kube/agent/status-409-node-a.json"),
    );
    let err = acquire(&e, &vxlan_attrs()).await.unwrap_err();
    assert!(err.is_transient(), "a conflict is retried: {err}");
}

#[tokio::test]
async fn unreachable_api_server_is_transient() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let dir = tempfile::tempdir().unwrap();
    // a port nobody listens on: bind, note, close
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let server = FakeApiServer::start();
    let kc = std::fs::read_to_string(server.kubeconfig(dir.path()))
        .unwrap()
        .replace(&server.url(), &format!("http://127.0.0.1:{port}"));
    std::fs::write(dir.path().join("kubeconfig"), kc).unwrap();
    std::fs::write(dir.path().join("net-conf.json"), VXLAN_CONF).unwrap();
    let ds = KubeDatastore::connect(&KubeSettings {
        kubeconfig: Some(dir.path().join("kubeconfig")),
        node_name: Some("node-a".into()),
        net_conf_path: dir.path().join("net-conf.json"),
    })
    .await
    .unwrap();
    let conf = ds.network_config().await.unwrap();
    let err = ds
        .acquire_lease(AcquireRequest {
            conf: &conf,
            attrs: &vxlan_attrs(),
            previous_subnet: None,
        })
        .await
        .unwrap_err();
    assert!(matches!(err, DatastoreError::KubeRequest { .. }), "{err:?}");
    assert!(err.is_transient());
    assert!(err.to_string().contains("get nodes \"node-a\""), "{err}");
}

// ---------------------------------------------------------------------------------------------
// config, stored lease, complete, delete

#[tokio::test]
async fn net_conf_errors_name_the_file() {
    let e = env("{not json").await;
    let err = e.ds.network_config().await.unwrap_err();
    let text = err.to_string();
    assert!(text.starts_with("error parsing subnet config"), "{text}");
    assert!(text.contains("net-conf.json"), "{text}");
    assert!(matches!(err, DatastoreError::NetConfFile { .. }));

    let _ = rustls::crypto::ring::default_provider().install_default();
    let server = FakeApiServer::start();
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing-net-conf.json");
    let ds = KubeDatastore::connect(&KubeSettings {
        kubeconfig: Some(server.kubeconfig(dir.path())),
        node_name: Some("node-a".into()),
        net_conf_path: missing.clone(),
    })
    .await
    .unwrap();
    let text = ds.network_config().await.unwrap_err().to_string();
    assert!(text.starts_with("failed to read net conf"), "{text}");
    assert!(text.contains(&missing.display().to_string()), "{text}");

    // kube mode ignores SubnetLen but still needs the Network
    let e = env(r#"{"Backend":{"Type":"vxlan"}}"#).await;
    let text = e.ds.network_config().await.unwrap_err().to_string();
    assert!(text.contains("please define a correct Network"), "{text}");
}

#[tokio::test]
async fn missing_kubeconfig_is_named() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let err = match KubeDatastore::connect(&KubeSettings {
        kubeconfig: Some("/nonexistent/kubeconfig".into()),
        node_name: Some("node-a".into()),
        net_conf_path: "/nonexistent/net-conf.json".into(),
    })
    .await
    {
        Ok(_) => panic!("connected without a kubeconfig"),
        Err(e) => e,
    };
    assert!(err.to_string().contains("/nonexistent/kubeconfig"), "{err}");
}

#[tokio::test]
async fn stored_lease_recovers_the_previous_vtep_mac() {
    let e = env(VXLAN_CONF).await;
    e.server.reply(
        "GET",
        NODE,
        Reply::fixture(200, "kube/agent/node-a-vxlan.json"),
    );
    let ip = Ipv4Addr::new(192, 168, 1, 11);
    let stored =
        e.ds.stored_lease(ip)
            .await
            .unwrap()
            .expect("a stored lease");
    assert_eq!(stored.attrs.backend_type, "vxlan");
    assert_eq!(
        stored.attrs.vtep_mac(),
        Some([0x2e, 0x5c, 0x7a, 0x11, 0x90, 0x3d])
    );
    assert_eq!(stored.subnet.to_string(), "10.1.17.0/24");

    let e = env(VXLAN_CONF).await;
    e.server
        .reply("GET", NODE, Reply::fixture(200, "kube/agent/node-a.json"));
    assert_eq!(e.ds.stored_lease(ip).await.unwrap(), None);
}

#[tokio::test]
async fn complete_lease_sets_network_unavailable_false() {
    let e = env(VXLAN_CONF).await;
    e.server.reply(
        "PATCH",
        STATUS,
        Reply::fixture(200, "kube/agent/node-a-vxlan.json"),
    );
    let lease = Lease {
        subnet: "10.1.17.0/24".parse().unwrap(),
        attrs: vxlan_attrs(),
        expiration: None,
        id: 0,
    };
    let before = jiff::Timestamp::now();
    e.ds.complete_lease(&lease).await.unwrap();
    let patches = e.server.requests();
    assert_eq!(methods_paths(&patches), [("PATCH".into(), STATUS.into())]);
    assert_eq!(
        patches[0].content_type.as_deref(),
        Some("application/strategic-merge-patch+json")
    );
    let body = patches[0].json();
    let cond = &body["status"]["conditions"][0];
    let now = cond["lastHeartbeatTime"].as_str().unwrap().to_string();
    assert_eq!(
        body,
        json!({"status": {"conditions": [{
            "type": "NetworkUnavailable",
            "status": "False",
            "reason": "FlannelIsUp",
            "message": "Flannel is running on this node",
            "lastTransitionTime": now,
            "lastHeartbeatTime": now,
        }]}})
    );
    let t: jiff::Timestamp = now.parse().unwrap();
    assert!(
        now.ends_with('Z') && now.len() == 20,
        "RFC 3339 seconds: {now}"
    );
    assert!(t.as_second() >= before.as_second() - 1);
    assert!(t.as_second() <= jiff::Timestamp::now().as_second() + 1);
}

#[tokio::test]
async fn complete_lease_retries_then_gives_up() {
    let e = env(VXLAN_CONF).await;
    e.server.reply(
        "PATCH",
        STATUS,
        Reply::fixture(500, "kube/agent/status-500.json"),
    );
    e.server.reply(
        "PATCH",
        STATUS,
        Reply::fixture(200, "kube/agent/node-a.json"),
    );
    let lease = Lease {
        subnet: "10.1.17.0/24".parse().unwrap(),
        attrs: vxlan_attrs(),
        expiration: None,
        id: 0,
    };
    e.ds.complete_lease(&lease).await.unwrap();
    assert_eq!(e.server.requests_to("PATCH", STATUS).len(), 2, "one retry");

    let e = env(VXLAN_CONF).await;
    e.server.reply(
        "PATCH",
        STATUS,
        Reply::fixture(403, "kube/agent/status-403-patch-nodes-status.json"),
    );
    let start = Instant::now();
    let err = e.ds.complete_lease(&lease).await.unwrap_err();
    assert!(err.to_string().contains("HTTP 403"), "{err}");
    let attempts = e.server.requests_to("PATCH", STATUS).len();
    assert!((2..=5).contains(&attempts), "{attempts} attempts");
    assert!(start.elapsed() < Duration::from_secs(15), "bounded");
}

#[tokio::test]
async fn delete_lease_removes_our_annotations() {
    let e = env(VXLAN_CONF).await;
    e.server.reply(
        "PATCH",
        STATUS,
        Reply::fixture(200, "kube/agent/node-a.json"),
    );
    e.ds.delete_lease("10.1.17.0/24".parse().unwrap())
        .await
        .unwrap();
    let patches = e.server.requests_to("PATCH", STATUS);
    assert_eq!(patches.len(), 1);
    assert_eq!(
        patches[0].content_type.as_deref(),
        Some("application/strategic-merge-patch+json")
    );
    assert_eq!(
        patches[0].json(),
        json!({"metadata": {"annotations": {
            "flannel.alpha.coreos.com/backend-type": null,
            "flannel.alpha.coreos.com/backend-data": null,
            "flannel.alpha.coreos.com/kube-subnet-manager": null,
            "flannel.alpha.coreos.com/public-ip": null,
        }}})
    );
}

// ---------------------------------------------------------------------------------------------
// watch

/// Run the watch until `done` says the collected updates suffice (or `limit` passes).
async fn watch_until(
    ds: &KubeDatastore,
    limit: Duration,
    done: impl Fn(&[WatchUpdate]) -> bool,
) -> Vec<WatchUpdate> {
    let (tx, mut rx) = mpsc::channel(64);
    let mut got = Vec::new();
    let collect = async {
        while let Some(u) = rx.recv().await {
            got.push(u);
            if done(&got) {
                break;
            }
        }
    };
    tokio::select! {
        _ = ds.watch_leases(tx) => panic!("watch_leases returned while the receiver was open"),
        _ = tokio::time::timeout(limit, collect) => {}
    }
    got
}

fn subnets(leases: &[Lease]) -> Vec<String> {
    let mut s: Vec<String> = leases.iter().map(|l| l.subnet.to_string()).collect();
    s.sort();
    s
}

fn snapshots(updates: &[WatchUpdate]) -> usize {
    updates
        .iter()
        .filter(|u| matches!(u, WatchUpdate::Snapshot(_)))
        .count()
}

fn ev(rel: &str) -> Value {
    fixture(&format!("kube/agent/{rel}"))
}

#[tokio::test]
async fn watch_snapshot_then_put_and_delete() {
    let e = env(VXLAN_CONF).await;
    e.server.reply(
        "GET",
        NODES,
        Reply::fixture(200, "kube/agent/nodelist.json"),
    );
    e.server.reply_watch(
        NODES,
        Reply::watch_then_hold(
            vec![
                ev("watch-bookmark.json"),
                ev("watch-modified-node-b-new-mac.json"),
                ev("watch-added-node-e.json"),
                ev("watch-modified-node-b-no-subnet-manager.json"),
                ev("watch-deleted-node-b.json"),
            ],
            Duration::from_secs(30),
        ),
    );
    let got = watch_until(&e.ds, Duration::from_secs(10), |u| u.len() >= 4).await;
    assert_eq!(got.len(), 4, "{got:#?}");
    // node-c (no kube-subnet-manager) and node-d (bad public-ip) are not in the snapshot
    let WatchUpdate::Snapshot(first) = &got[0] else {
        panic!("{got:#?}")
    };
    assert_eq!(subnets(first), ["10.1.17.0/24", "10.1.18.0/24"]);
    let b = first
        .iter()
        .find(|l| l.subnet.to_string() == "10.1.18.0/24")
        .unwrap();
    assert_eq!(b.attrs.public_ip, Ipv4Addr::new(192, 168, 1, 12));
    assert_eq!(b.attrs.backend_type, "vxlan");
    assert_eq!(
        b.attrs.backend_data,
        Some(json!({"VNI": 1, "VtepMAC": "ae:3f:01:22:b4:c5"}))
    );
    // MODIFIED node-b (new MAC) → Put
    let WatchUpdate::Put(b2) = &got[1] else {
        panic!("{got:#?}")
    };
    assert_eq!(b2.subnet.to_string(), "10.1.18.0/24");
    assert_eq!(b2.attrs.vtep_mac(), Some([0xae, 0x3f, 1, 0x22, 0xb4, 0xc6]));
    // ADDED node-e → Put
    assert!(
        matches!(&got[2], WatchUpdate::Put(l) if l.subnet.to_string() == "10.1.21.0/24"
            && l.attrs.public_ip == Ipv4Addr::new(192, 168, 1, 15)),
        "{got:#?}"
    );
    // node-b lost kube-subnet-manager → Delete; its DELETED event then emits nothing more
    assert_eq!(got[3], WatchUpdate::Delete("10.1.18.0/24".parse().unwrap()));

    let reqs = e.server.requests();
    let list = reqs
        .iter()
        .find(|r| r.path == NODES && !r.is_watch())
        .unwrap();
    assert_eq!(list.query_param("limit").as_deref(), Some("500"));
    let watch = reqs.iter().find(|r| r.is_watch()).unwrap();
    assert_eq!(
        watch.query_param("resourceVersion").as_deref(),
        Some("1120")
    );
    assert_eq!(watch.authorization.as_deref(), Some("Bearer fake-token"));
}

#[tokio::test]
async fn watch_deleted_node_emits_delete() {
    let e = env(VXLAN_CONF).await;
    e.server.reply(
        "GET",
        NODES,
        Reply::fixture(200, "kube/agent/nodelist.json"),
    );
    e.server.reply_watch(
        NODES,
        Reply::watch_then_hold(
            vec![ev("watch-deleted-node-b.json")],
            Duration::from_secs(30),
        ),
    );
    let got = watch_until(&e.ds, Duration::from_secs(10), |u| u.len() >= 2).await;
    assert_eq!(got.len(), 2, "{got:#?}");
    assert_eq!(got[1], WatchUpdate::Delete("10.1.18.0/24".parse().unwrap()));
}

#[tokio::test]
async fn watch_410_relists_and_keeps_peers_still_present() {
    let e = env(VXLAN_CONF).await;
    e.server.reply(
        "GET",
        NODES,
        Reply::fixture(200, "kube/agent/nodelist.json"),
    );
    // the relist: node-b still there (same annotations), node-e new
    let mut second = fixture("kube/agent/nodelist.json");
    second["metadata"]["resourceVersion"] = json!("1402");
    let mut e_node = ev("watch-added-node-e.json")["object"].clone();
    e_node.as_object_mut().unwrap().remove("kind");
    e_node.as_object_mut().unwrap().remove("apiVersion");
    second["items"].as_array_mut().unwrap().push(e_node);
    e.server.reply("GET", NODES, Reply::json(200, second));
    e.server.reply_watch(
        NODES,
        Reply::watch_then_hold(
            vec![ev("watch-error-410-expired.json")],
            Duration::from_secs(30),
        ),
    );
    e.server.reply_watch(
        NODES,
        Reply::watch_then_hold(vec![], Duration::from_secs(30)),
    );
    let got = watch_until(&e.ds, Duration::from_secs(10), |u| snapshots(u) >= 2).await;
    assert_eq!(got.len(), 2, "only two snapshots, no Delete: {got:#?}");
    let (WatchUpdate::Snapshot(a), WatchUpdate::Snapshot(b)) = (&got[0], &got[1]) else {
        panic!("{got:#?}")
    };
    assert_eq!(subnets(a), ["10.1.17.0/24", "10.1.18.0/24"]);
    assert_eq!(subnets(b), ["10.1.17.0/24", "10.1.18.0/24", "10.1.21.0/24"]);
    // what the daemon does with them: node-b is not touched, node-e is added
    let mut tracker = LeaseTracker::new("10.1.17.0/24".parse().unwrap());
    assert_eq!(tracker.reset(a.clone()).len(), 1);
    let events = tracker.reset(b.clone());
    assert_eq!(events.len(), 1, "{events:#?}");
    assert!(matches!(&events[0], LeaseEvent::Added(l) if l.subnet.to_string() == "10.1.21.0/24"));
    let lists = e
        .server
        .requests()
        .iter()
        .filter(|r| r.path == NODES && !r.is_watch())
        .count();
    assert_eq!(lists, 2, "relisted once after 410");
}

#[tokio::test]
async fn watch_relist_drops_nodes_deleted_meanwhile() {
    let e = env(VXLAN_CONF).await;
    e.server.reply(
        "GET",
        NODES,
        Reply::fixture(200, "kube/agent/nodelist.json"),
    );
    let mut second = fixture("kube/agent/nodelist.json");
    second["metadata"]["resourceVersion"] = json!("1402");
    second["items"]
        .as_array_mut()
        .unwrap()
        .retain(|n| n["metadata"]["name"] != "node-b");
    e.server.reply("GET", NODES, Reply::json(200, second));
    e.server.reply_watch(
        NODES,
        Reply::watch(vec![ev("watch-error-410-expired.json")]),
    );
    e.server.reply_watch(
        NODES,
        Reply::watch_then_hold(vec![], Duration::from_secs(30)),
    );
    let got = watch_until(&e.ds, Duration::from_secs(10), |u| snapshots(u) >= 2).await;
    let WatchUpdate::Snapshot(b) = got.last().unwrap() else {
        panic!("{got:#?}")
    };
    assert_eq!(subnets(b), ["10.1.17.0/24"]);
    assert!(
        !got.iter().any(|u| matches!(u, WatchUpdate::Delete(_))),
        "{got:#?}"
    );
    let mut tracker = LeaseTracker::new("10.1.17.0/24".parse().unwrap());
    let WatchUpdate::Snapshot(a) = &got[0] else {
        panic!()
    };
    tracker.reset(a.clone());
    let events = tracker.reset(b.clone());
    assert!(
        matches!(&events[..], [LeaseEvent::Removed(l)] if l.subnet.to_string() == "10.1.18.0/24"),
        "{events:#?}"
    );
}

#[tokio::test]
async fn watch_outage_emits_no_delete() {
    let e = env(VXLAN_CONF).await;
    // first list fails (500), then works
    e.server.reply(
        "GET",
        NODES,
        Reply::fixture(500, "kube/agent/status-500.json"),
    );
    e.server.reply(
        "GET",
        NODES,
        Reply::fixture(200, "kube/agent/nodelist.json"),
    );
    // watch: two 500s, a plain-text 503, a stream that ends, then a quiet stream
    e.server
        .reply_watch(NODES, Reply::fixture(500, "kube/agent/status-500.json"));
    e.server
        .reply_watch(NODES, Reply::fixture(500, "kube/agent/status-500.json"));
    e.server
        .reply_watch(NODES, Reply::text(503, "no healthy upstream"));
    e.server.reply_watch(NODES, Reply::watch(vec![]));
    e.server.reply_watch(
        NODES,
        Reply::watch_then_hold(vec![], Duration::from_secs(30)),
    );
    let start = Instant::now();
    let (tx, mut rx) = mpsc::channel(64);
    let server = &e.server;
    let wait = async {
        // until the quiet stream is reached (5 watch requests)
        while server.requests().iter().filter(|r| r.is_watch()).count() < 5 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    tokio::select! {
        _ = e.ds.watch_leases(tx) => panic!("watch ended"),
        r = tokio::time::timeout(Duration::from_secs(15), wait) => r.expect("watch retried"),
    }
    assert!(start.elapsed() < Duration::from_secs(15));
    let mut got = Vec::new();
    while let Ok(u) = rx.try_recv() {
        got.push(u);
    }
    assert_eq!(got.len(), 1, "one snapshot and nothing else: {got:#?}");
    assert!(matches!(&got[0], WatchUpdate::Snapshot(l) if l.len() == 2));
    let lists = e
        .server
        .requests()
        .iter()
        .filter(|r| r.path == NODES && !r.is_watch())
        .count();
    assert_eq!(
        lists, 2,
        "errors and stream ends resume the watch without a relist"
    );
}

#[tokio::test]
async fn watch_forbidden_keeps_retrying_without_updates() {
    let e = env(VXLAN_CONF).await;
    e.server.reply(
        "GET",
        NODES,
        Reply::fixture(403, "kube/agent/status-403-list-nodes.json"),
    );
    let got = watch_until(&e.ds, Duration::from_millis(1500), |_| true).await;
    assert!(got.is_empty(), "{got:#?}");
    let lists = e.server.requests_to("GET", NODES).len();
    assert!(
        (2..=6).contains(&lists),
        "retried with backoff, not in a tight loop: {lists}"
    );
}

#[tokio::test]
async fn own_node_stays_in_snapshots_after_acquire() {
    let e = env(VXLAN_CONF).await;
    e.server
        .reply("GET", NODE, Reply::fixture(200, "kube/agent/node-a.json"));
    e.server.reply(
        "PATCH",
        STATUS,
        Reply::fixture(200, "kube/agent/node-a-vxlan.json"),
    );
    acquire(&e, &vxlan_attrs()).await.unwrap();
    // a list in which node-a lost its annotations: our lease is still reported (no revocation)
    let mut list = fixture("kube/agent/nodelist.json");
    list["items"][0]["metadata"]["annotations"]
        .as_object_mut()
        .unwrap()
        .retain(|k, _| !k.starts_with(P));
    e.server.reply("GET", NODES, Reply::json(200, list));
    e.server.reply_watch(
        NODES,
        Reply::watch_then_hold(vec![], Duration::from_secs(30)),
    );
    let got = watch_until(&e.ds, Duration::from_secs(10), |u| !u.is_empty()).await;
    let WatchUpdate::Snapshot(s) = &got[0] else {
        panic!("{got:#?}")
    };
    assert_eq!(subnets(s), ["10.1.17.0/24", "10.1.18.0/24"]);
    let mut tracker = LeaseTracker::new("10.1.17.0/24".parse().unwrap());
    assert!(!tracker.reset(s.clone()).contains(&LeaseEvent::Revoked));
}

// ---------------------------------------------------------------------------------------------
// the binary: fatal startup errors in Kubernetes mode (§12.21), before anything needs root

#[test]
fn agent_binary_exits_1_on_malformed_net_conf() {
    let server = FakeApiServer::start();
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = server.kubeconfig(dir.path());
    let net_conf = dir.path().join("net-conf.json");
    std::fs::write(&net_conf, "{\"Network\": ").unwrap();
    let out = common::installer()
        .args(["agent", "--kube-subnet-mgr", "--kubeconfig-file"])
        .arg(&kubeconfig)
        .arg("--net-config-path")
        .arg(&net_conf)
        .env("NODE_NAME", "node-a")
        .timeout(Duration::from_secs(20))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("error parsing subnet config"), "{stderr}");
    assert!(stderr.contains(&net_conf.display().to_string()), "{stderr}");
    assert!(
        server.requests().is_empty(),
        "no API call before the config is valid"
    );

    // a kubeconfig that does not exist is named
    let out = common::installer()
        .args([
            "agent",
            "--kube-subnet-mgr",
            "--kubeconfig-file",
            "/nonexistent/kc",
        ])
        .arg("--net-config-path")
        .arg(&net_conf)
        .env("NODE_NAME", "node-a")
        .timeout(Duration::from_secs(20))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("/nonexistent/kc"), "{stderr}");
}
