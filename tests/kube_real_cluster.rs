//! Opt-in: against a real Kubernetes cluster, when `INSTALLER_TEST_KUBECONFIG` names its
//! kubeconfig (skipped with a notice otherwise; CI has no cluster). It covers what the HTTP
//! stand-ins cannot: the real API server's validation of our manifests (server-side dry run of
//! both agent modes), real server-side apply semantics (a second apply is a no-op that keeps
//! `resourceVersion`), the real token controller filling a service-account-token Secret, and
//! deletes. It writes only into a namespace of its own (`installer-test-<pid>`), which it
//! deletes at the end; the flannel objects are only dry-run.
//!
//!     INSTALLER_TEST_KUBECONFIG=~/.kube/config cargo test --test kube_real_cluster -- --nocapture

mod common;
use common::*;
use installer::kubeapi::apply::{self, ApplyOptions, ApplyStatus};
use installer::kubeapi::{KubeSession, credentials, nodes};
use installer::render::check_manifest;
use std::path::PathBuf;
use std::time::Duration;

fn kubeconfig() -> Option<PathBuf> {
    match std::env::var_os("INSTALLER_TEST_KUBECONFIG") {
        Some(p) if !p.is_empty() => Some(PathBuf::from(p)),
        _ => {
            eprintln!("skipping kube_real_cluster: INSTALLER_TEST_KUBECONFIG is not set");
            None
        }
    }
}

/// The manifest `setup` would apply for an agent mode, rendered by the binary.
fn rendered_manifest(agent: &str) -> String {
    let dir = tempfile::tempdir().expect("tempdir");
    let inv = write(dir.path(), "hosts", &inventory(""));
    let out = installer()
        .args(["render", "-e", &format!("FLANNEL_AGENT={agent}"), "-o"])
        .arg(dir.path().join("out"))
        .arg("-i")
        .arg(&inv)
        .output()
        .expect("render");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    std::fs::read_to_string(dir.path().join("out/cluster/flannel.yaml")).expect("manifest")
}

#[test]
fn real_cluster_accepts_our_manifests_applies_idempotently_and_fills_tokens() {
    let Some(kc) = kubeconfig() else {
        return;
    };
    let s = KubeSession::connect(Some(&kc)).expect("connect");
    let view = nodes::list(&s).expect("list nodes");
    eprintln!("{} node(s) at {}", view.len(), s.server);

    for agent in ["embedded", "image"] {
        let objects = check_manifest(&rendered_manifest(agent)).expect("manifest");
        let dry = ApplyOptions {
            dry_run: true,
            diff: true,
            ..ApplyOptions::default()
        };
        for o in apply::apply_all(&s, &objects, dry).expect("server-side dry run") {
            eprintln!("{agent}: {}", o.line(true));
        }
    }

    let ns = format!("installer-test-{}", std::process::id());
    let text = format!(
        "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: {ns}\n---\n\
         apiVersion: v1\nkind: ServiceAccount\nmetadata:\n  name: probe\n  namespace: {ns}\n---\n\
         apiVersion: v1\nkind: Secret\nmetadata:\n  name: probe-token\n  namespace: {ns}\n  \
         annotations:\n    kubernetes.io/service-account.name: probe\n\
         type: kubernetes.io/service-account-token\n---\n\
         apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: probe\n  namespace: {ns}\n\
         data:\n  a: \"1\"\n"
    );
    let objects = check_manifest(&text).expect("test objects");
    let first = apply::apply_all(&s, &objects, ApplyOptions::default());
    let result = (|| {
        let first = first?;
        assert!(
            first.iter().all(|o| o.status == ApplyStatus::Created),
            "{first:?}"
        );
        let again = apply::apply_all(&s, &objects, ApplyOptions::default())?;
        assert!(
            again.iter().all(|o| o.status == ApplyStatus::Unchanged),
            "second apply must be a no-op: {again:?}"
        );
        let secret = credentials::token_secret(&objects).expect("token secret");
        let tok =
            credentials::wait_token(&s, &secret, Duration::from_secs(30))?.expect("secret exists");
        assert!(!tok.token.is_empty() && tok.ca_pem.is_some());
        Ok::<(), installer::kubeapi::KubeApiError>(())
    })();
    let deleted = apply::delete_all(&s, &objects, false);
    result.expect("apply, re-apply, token");
    deleted.expect("delete");
}
