//! Command-line interface: argument types and dispatch.

use std::process::ExitCode;

/// Parse arguments, run the command, and turn errors into a message and exit code 1.
pub fn main() -> ExitCode {
    ExitCode::SUCCESS
}
