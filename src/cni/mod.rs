//! CNI: the flannel meta-plugin and a small libcni-style runtime.
//!
//! * [`flannel`] — what this binary does when it is executed under the name `flannel` (from
//!   `/opt/cni/bin`): read `/run/flannel/subnet.env`, turn the flannel config into a bridge +
//!   host-local delegate config, save it, and run the delegate (spec §8, §9).
//! * [`runtime`] — executes a node's CNI configuration the way containerd's libcni does
//!   (first `.conf`/`.conflist`/`.json` in the conf dir, plugins chained with `prevResult`,
//!   a result cache for DEL), so `verify` can create probe pods through the real CNI path.
//! * Shared protocol pieces: [`skel`] (the plugin side: env, stdin, dispatch, error output),
//!   [`invoke`] (finding and executing plugin binaries), [`result`], [`version`],
//!   [`error`] (the CNI error object) and [`gojson`] (Go-compatible JSON text).
//!
//! Everything here is synchronous: a CNI call is one short-lived process.

pub mod error;
pub mod flannel;
pub mod gojson;
pub mod invoke;
pub mod result;
pub mod runtime;
pub mod skel;
pub mod subnet_env;
pub mod version;

pub use error::CniError;
pub use result::CniResult;
pub use runtime::{Attachment, Runtime, RuntimeError};

/// True when the program was started under the file name `flannel` (argv\[0\]), i.e. by a
/// container runtime as the flannel CNI plugin rather than by a user as `installer`.
pub fn invoked_as_plugin() -> bool {
    std::env::args_os()
        .next()
        .and_then(|arg0| {
            std::path::Path::new(&arg0)
                .file_name()
                .map(|name| name == "flannel")
        })
        .unwrap_or(false)
}

/// An OS error as Go prints it: `no such file or directory` rather than Rust's
/// `No such file or directory (os error 2)`, so messages match the upstream plugin's.
pub(crate) fn errno_text(error: &std::io::Error) -> String {
    let text = error.to_string();
    let text = match (error.raw_os_error(), text.rfind(" (os error ")) {
        (Some(_), Some(cut)) => &text[..cut],
        _ => text.as_str(),
    };
    let mut chars = text.chars();
    match chars.next() {
        Some(first) => first.to_lowercase().chain(chars).collect(),
        None => String::new(),
    }
}
