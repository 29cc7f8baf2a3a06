//! `installer` entry point: everything lives in the library; this only maps errors to exit codes.
//! Executed under the name `flannel` (a symlink or copy in /opt/cni/bin), it is the CNI plugin.

fn main() -> std::process::ExitCode {
    if installer::cni::invoked_as_plugin() {
        return installer::cni::flannel::main();
    }
    installer::cli::main()
}
