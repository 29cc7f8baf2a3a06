//! Local lab of namespace hosts (being written).

/// `installer lab …` arguments.
#[derive(Debug, clap::Args)]
pub struct LabArgs {}

/// Run a `lab` subcommand.
pub fn run(_args: LabArgs) -> anyhow::Result<std::process::ExitCode> {
    anyhow::bail!("the lab is not built yet")
}
