//! Remote layer: SSH sessions to inventory hosts, the operations every step uses, and the fleet
//! runner that does per-host work in parallel and prints the recap.
//!
//! Every remote effect in the installer goes through here; no other module opens SSH channels
//! or builds shell strings.
//!
//! - [`conn`]: a host's [`ConnectionSpec`] from its Ansible variables, `ansible.cfg`
//!   ([`ansible_cfg`]) and `~/.ssh/config` ([`ssh_config`]).
//! - [`known_hosts`]: host key verification (`--known-hosts`, `--host-key-policy`).
//! - [`session`]: connect (timeout, one retry), check the host key, authenticate
//!   (key files, ssh-agent, password).
//! - [`ops`]: [`Remote`] with `run`, `command`, `ensure_dir`, `put_file`, `remove`,
//!   `read_file`, `sha256`; each change returns an [`OpResult`] (ok / changed / failed).
//! - [`fleet`]: [`Fleet::run`] over many hosts with `--forks` threads, [`Recap`].
//! - [`report`]: [`HumanReporter`] (live per-host progress, `-v`, `--diff`) and
//!   [`JsonReporter`] (`--output json`, one event per line, recap last).
//!
//! Typical use:
//! ```no_run
//! # use std::sync::Arc;
//! # use installer::remote::*;
//! # fn demo(specs: Vec<ConnectionSpec>) -> Result<(), Box<dyn std::error::Error>> {
//! let defaults = ConnDefaults::load()?;
//! let home = defaults.home.clone().unwrap_or_default();
//! let kh = Arc::new(KnownHosts::new(KnownHosts::default_user_file(&home)));
//! let opts = FleetOptions {
//!     forks: defaults.forks(None),
//!     check: false,
//!     diff: false,
//!     connect: ConnectOptions::new(kh, defaults.host_key_policy(None)),
//! };
//! let reporter = HumanReporter::new(0, false);
//! let recap = Fleet::new(opts, &reporter).run(&specs, |ctx| {
//!     ctx.step("config");
//!     ctx.record(ctx.remote().ensure_dir("/etc/cni/net.d", &Attrs::mode(0o755)))?;
//!     ctx.record(ctx.remote().put_file("/etc/cni/net.d/10-x.conf", Content::Bytes(b"{}"), &Attrs::mode(0o644)))?;
//!     Ok(())
//! });
//! std::process::exit(if recap.success() { 0 } else { 2 });
//! # }
//! ```

pub mod ansible_cfg;
pub mod conn;
pub mod converge;
pub mod diff;
pub mod fleet;
pub mod known_hosts;
pub mod ops;
pub mod pattern;
pub mod report;
pub mod service;
pub mod session;
pub mod ssh_config;

pub use conn::{Become, ConnDefaults, ConnError, ConnectionSpec, DEFAULT_FORKS, Secret};
pub use converge::{Desired, Facts};
pub use fleet::{Counts, Fleet, FleetOptions, HostCtx, HostFailed, HostRecap, Recap};
pub use known_hosts::{HostKeyError, HostKeyPolicy, HostKeyVerdict, KnownHosts};
pub use ops::{Attrs, CmdOutput, Content, OpResult, OpStatus, Remote, RemoteError};
pub use report::{HumanReporter, JsonReporter, Reporter};
pub use service::ServiceSpec;
pub use session::{ConnectError, ConnectOptions, connect};
