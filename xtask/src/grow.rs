//! `cargo xtask grow`.

/// Arguments of `cargo xtask grow`.
#[derive(clap::Args)]
pub struct Args {}

/// Runs `cargo xtask grow`.
pub fn run(_args: Args) -> anyhow::Result<()> {
    anyhow::bail!("`grow` is not implemented yet")
}
