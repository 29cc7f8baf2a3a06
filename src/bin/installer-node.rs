//! `installer-node`: the node build of installer (agent, CNI plugin, service helpers), pushed
//! by `installer setup` to every node. Executed as `flannel`, it is the CNI plugin.

fn main() -> std::process::ExitCode {
    if installer::cni::invoked_as_plugin() {
        return installer::cni::flannel::main();
    }
    installer::node_cli::main()
}
