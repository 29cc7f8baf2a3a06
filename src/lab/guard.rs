//! [`LabGuard`]: a uniquely named lab for one test, removed when the guard drops (also when the
//! test panics).

use super::error::Result;
use super::state::{self, Lab};
use super::up::UpOptions;
use super::{down, prereq, sys};
use std::sync::atomic::{AtomicUsize, Ordering};

/// A lab that exists as long as this value. Dereferences to [`Lab`].
///
/// ```no_run
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// use installer::lab::LabGuard;
/// let Some(lab) = LabGuard::up_or_skip("my_test", 2)? else { return Ok(()) };
/// let out = lab.exec_on(&lab.nodes[0], &["hostname"])?;
/// assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), lab.nodes[0].name);
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct LabGuard {
    lab: Lab,
}

static COUNTER: AtomicUsize = AtomicUsize::new(0);

impl LabGuard {
    /// Bring up a lab of `nodes` nodes under a fresh name (`t<pid>-<n>`); its mirror runs in
    /// this process. Guard labs left behind by test processes that died (killed by a timeout,
    /// say) are removed first, so they never use up the lab slots.
    pub fn up(nodes: usize) -> Result<LabGuard> {
        remove_orphans();
        let name = format!(
            "t{}-{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::SeqCst)
        );
        Self::up_with(&UpOptions::new(name, nodes))
    }

    /// Bring up a lab with explicit options (the name should be unique to the test).
    pub fn up_with(opts: &UpOptions) -> Result<LabGuard> {
        Ok(LabGuard {
            lab: Lab::up(opts)?,
        })
    }

    /// Like [`LabGuard::up`], but when the lab cannot run here (not root, packages missing)
    /// print a notice naming `test` and return `None`, so the test can skip.
    pub fn up_or_skip(test: &str, nodes: usize) -> Result<Option<LabGuard>> {
        if let Some(reason) = prereq::unavailable_reason() {
            eprintln!("skipping {test}: {reason}");
            return Ok(None);
        }
        Self::up(nodes).map(Some)
    }

    /// The lab.
    pub fn lab(&self) -> &Lab {
        &self.lab
    }
}

/// Remove guard labs (`t<pid>-<n>`) whose process is gone.
fn remove_orphans() {
    for name in state::lab_dirs() {
        let Some(pid) = name
            .strip_prefix('t')
            .and_then(|rest| rest.split_once('-'))
            .and_then(|(pid, n)| n.parse::<usize>().ok().and(pid.parse::<u32>().ok()))
        else {
            continue;
        };
        if !sys::pid_alive(pid)
            && let Err(e) = down::down_by_name(&name)
        {
            eprintln!("removing orphaned test lab {name}: {e}");
        }
    }
}

impl std::ops::Deref for LabGuard {
    type Target = Lab;
    fn deref(&self) -> &Lab {
        &self.lab
    }
}

impl Drop for LabGuard {
    fn drop(&mut self) {
        match self.lab.down() {
            Ok(report) if !report.leftovers.is_empty() => eprintln!(
                "lab {}: could not remove {}",
                self.lab.name,
                report.leftovers.join(", ")
            ),
            Ok(_) => {}
            Err(e) => eprintln!("lab {}: {e}", self.lab.name),
        }
    }
}
