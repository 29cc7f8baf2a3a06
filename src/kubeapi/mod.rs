//! The deploy host's side of the Kubernetes datastore: server-side apply of the rendered
//! manifest, the ServiceAccount credentials the embedded agents use, and the waits that tell
//! whether the network really came up (node annotations, DaemonSet rollout). Everything goes
//! through the `kube` crate's client over the kubeconfig the operator names.
//!
//! ```text
//! session ─ kubeconfig lookup, client, blocking runtime, error mapping
//! resources ─ kind → API path          apply ─ server-side apply, dry-run, diff
//! credentials ─ agent kubeconfig       nodes ─ flannel annotations: wait and remove
//! daemonset ─ rollout wait and the diagnosis of nodes that did not come up
//! ```

pub mod apply;
pub mod credentials;
pub mod daemonset;
pub mod nodes;
pub mod resources;
pub mod session;

pub use session::{KubeApiError, KubeSession};
