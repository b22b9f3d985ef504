//! `cargo xtask verify`.

/// Arguments of `cargo xtask verify`.
#[derive(clap::Args)]
pub struct Args {}

/// Runs `cargo xtask verify`.
pub fn run(_args: Args) -> anyhow::Result<()> {
    anyhow::bail!("`verify` is not implemented yet")
}
