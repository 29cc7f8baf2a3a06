//! `/healthz` and `/readyz` (flannel-spec §7): 200 "flanneld is running" while the process
//! lives; 503 "flanneld is not ready yet" until subnet.env is written, then 200 "flanneld is
//! ready". Served by tiny_http on its own thread.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

/// Readiness flag shared with the agent loop.
#[derive(Debug, Clone, Default)]
pub struct Readiness(Arc<AtomicBool>);

impl Readiness {
    /// Mark ready (after subnet.env is written).
    pub fn set_ready(&self) {
        self.0.store(true, Ordering::SeqCst);
    }
    /// Whether ready.
    pub fn is_ready(&self) -> bool {
        self.0.load(Ordering::SeqCst)
    }
}

/// The answer for a path: status and body.
pub fn answer(path: &str, ready: bool) -> (u16, &'static str) {
    match path.split('?').next().unwrap_or("") {
        "/healthz" => (200, "flanneld is running"),
        "/readyz" if ready => (200, "flanneld is ready"),
        "/readyz" => (503, "flanneld is not ready yet"),
        _ => (404, "not found"),
    }
}

/// Start the server; an error when the address cannot be bound.
pub fn serve(addr: SocketAddr, ready: Readiness) -> std::io::Result<()> {
    let server = tiny_http::Server::http(addr).map_err(std::io::Error::other)?;
    std::thread::Builder::new()
        .name("healthz".into())
        .spawn(move || {
            for req in server.incoming_requests() {
                let (code, body) = answer(req.url(), ready.is_ready());
                let _ = req.respond(tiny_http::Response::from_string(body).with_status_code(code));
            }
        })?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spec12_18_answers() {
        assert_eq!(answer("/healthz", false), (200, "flanneld is running"));
        assert_eq!(answer("/readyz", false), (503, "flanneld is not ready yet"));
        assert_eq!(answer("/readyz", true), (200, "flanneld is ready"));
        assert_eq!(answer("/readyz?verbose", true).0, 200);
        assert_eq!(answer("/", true).0, 404);
    }
}
