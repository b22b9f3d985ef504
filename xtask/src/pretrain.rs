//! `cargo xtask pretrain`.

/// Arguments of `cargo xtask pretrain`.
#[derive(clap::Args)]
pub struct Args {}

/// Runs `cargo xtask pretrain`.
pub fn run(_args: Args) -> anyhow::Result<()> {
    anyhow::bail!("`pretrain` is not implemented yet")
}
