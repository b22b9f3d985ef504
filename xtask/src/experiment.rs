//! `cargo xtask experiment`.

/// Arguments of `cargo xtask experiment`.
#[derive(clap::Args)]
pub struct Args {}

/// Runs `cargo xtask experiment`.
pub fn run(_args: Args) -> anyhow::Result<()> {
    anyhow::bail!("`experiment` is not implemented yet")
}
