//! `installer` entry point: everything lives in the library; this only maps errors to exit codes.

fn main() -> std::process::ExitCode {
    installer::cli::main()
}
