//! Agent log lines, klog style like flanneld's: `I1124 18:40:01.123456   4242 vxlan] message`
//! (level, local date and time, pid, module). They go to stderr (the journal under systemd) and,
//! when a log directory is configured, are appended to `<log_dir>/flannel-agent.log` too.

use std::fs::File;
use std::io::Write;
use std::path::Path;
use std::sync::{Mutex, OnceLock};

static LOG_FILE: OnceLock<Mutex<File>> = OnceLock::new();

/// Name of the log file in the configured log directory.
pub const LOG_FILE_NAME: &str = "flannel-agent.log";

/// Also append log lines to `<dir>/flannel-agent.log`; an error is returned (and logging to
/// stderr continues) when the file cannot be opened.
pub fn to_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    let file = File::options()
        .create(true)
        .append(true)
        .open(dir.join(LOG_FILE_NAME))?;
    let _ = LOG_FILE.set(Mutex::new(file));
    Ok(())
}

/// Format one line (without the newline).
pub fn format_line(level: char, module: &str, msg: std::fmt::Arguments) -> String {
    let now = jiff::Zoned::now();
    let module = module.rsplit("::").next().unwrap_or(module);
    format!(
        "{level}{} {:>7} {module}] {msg}",
        now.strftime("%m%d %H:%M:%S%.6f"),
        std::process::id()
    )
}

/// Write a line to stderr and the log file.
pub fn write(level: char, module: &str, msg: std::fmt::Arguments) {
    let mut line = format_line(level, module, msg);
    line.push('\n');
    let _ = std::io::stderr().lock().write_all(line.as_bytes());
    if let Some(file) = LOG_FILE.get()
        && let Ok(mut f) = file.lock()
    {
        let _ = f.write_all(line.as_bytes());
    }
}

/// Log at info level.
macro_rules! info {
    ($($t:tt)*) => { $crate::agent::log::write('I', module_path!(), format_args!($($t)*)) };
}
/// Log at warning level.
macro_rules! warning {
    ($($t:tt)*) => { $crate::agent::log::write('W', module_path!(), format_args!($($t)*)) };
}
/// Log at error level.
macro_rules! error {
    ($($t:tt)*) => { $crate::agent::log::write('E', module_path!(), format_args!($($t)*)) };
}
pub(crate) use {error, info, warning};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn klog_like_line() {
        let line = format_line(
            'I',
            "installer::agent::vxlan",
            format_args!("Added peer {}", 7),
        );
        let re =
            regex::Regex::new(r"^I\d{4} \d\d:\d\d:\d\d\.\d{6} +\d+ vxlan\] Added peer 7$").unwrap();
        assert!(re.is_match(&line), "{line}");
    }
}
