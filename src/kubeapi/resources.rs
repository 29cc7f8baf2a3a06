//! Which API path each kind in our manifests lives under. A fixed table instead of discovery:
//! the manifests only hold these kinds (checked at render time), and it saves a round trip per
//! group on every run.

use kube::core::{ApiResource, GroupVersionKind};

/// One kind we apply.
#[derive(Debug, Clone, Copy)]
pub struct Kind {
    /// `apiVersion`.
    pub api_version: &'static str,
    /// `kind`.
    pub kind: &'static str,
    /// URL plural.
    pub plural: &'static str,
    /// Namespaced (else cluster scoped).
    pub namespaced: bool,
}

/// Every kind `setup` applies and `clean` deletes.
pub const KINDS: &[Kind] = &[
    Kind {
        api_version: "v1",
        kind: "Namespace",
        plural: "namespaces",
        namespaced: false,
    },
    Kind {
        api_version: "v1",
        kind: "ServiceAccount",
        plural: "serviceaccounts",
        namespaced: true,
    },
    Kind {
        api_version: "v1",
        kind: "Secret",
        plural: "secrets",
        namespaced: true,
    },
    Kind {
        api_version: "v1",
        kind: "ConfigMap",
        plural: "configmaps",
        namespaced: true,
    },
    Kind {
        api_version: "rbac.authorization.k8s.io/v1",
        kind: "ClusterRole",
        plural: "clusterroles",
        namespaced: false,
    },
    Kind {
        api_version: "rbac.authorization.k8s.io/v1",
        kind: "ClusterRoleBinding",
        plural: "clusterrolebindings",
        namespaced: false,
    },
    Kind {
        api_version: "rbac.authorization.k8s.io/v1",
        kind: "Role",
        plural: "roles",
        namespaced: true,
    },
    Kind {
        api_version: "rbac.authorization.k8s.io/v1",
        kind: "RoleBinding",
        plural: "rolebindings",
        namespaced: true,
    },
    Kind {
        api_version: "apps/v1",
        kind: "DaemonSet",
        plural: "daemonsets",
        namespaced: true,
    },
];

/// The table entry for an object's apiVersion and kind.
pub fn lookup(api_version: &str, kind: &str) -> Option<&'static Kind> {
    KINDS
        .iter()
        .find(|k| k.api_version == api_version && k.kind == kind)
}

/// The list of known kinds, for messages.
pub fn known() -> String {
    KINDS
        .iter()
        .map(|k| format!("{}/{}", k.api_version, k.kind))
        .collect::<Vec<_>>()
        .join(", ")
}

impl Kind {
    /// The `kube` description of this kind.
    pub fn api_resource(&self) -> ApiResource {
        let (group, version) = match self.api_version.split_once('/') {
            Some((g, v)) => (g, v),
            None => ("", self.api_version),
        };
        ApiResource::from_gvk_with_plural(
            &GroupVersionKind::gvk(group, version, self.kind),
            self.plural,
        )
    }

    /// kubectl's short form of an object: `configmap/kube-flannel-cfg`,
    /// `clusterrole.rbac.authorization.k8s.io/flannel`.
    pub fn display(&self, name: &str) -> String {
        let kind = self.kind.to_ascii_lowercase();
        match self.api_version.split_once('/') {
            Some((group, _)) => format!("{kind}.{group}/{name}"),
            None => format!("{kind}/{name}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_and_names_follow_the_api() {
        let ds = lookup("apps/v1", "DaemonSet").unwrap();
        let ar = ds.api_resource();
        assert_eq!((ar.group.as_str(), ar.version.as_str()), ("apps", "v1"));
        assert_eq!(ar.plural, "daemonsets");
        assert_eq!(
            ds.display("kube-flannel-ds"),
            "daemonset.apps/kube-flannel-ds"
        );
        let cm = lookup("v1", "ConfigMap").unwrap();
        assert_eq!(cm.api_resource().api_version, "v1");
        assert_eq!(cm.display("x"), "configmap/x");
        assert!(lookup("v1", "Pod").is_none());
    }
}
