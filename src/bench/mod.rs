//! `metalcu bench`: the end-to-end load bench (placeholder; being written).

/// Arguments of `metalcu bench`.
#[derive(Debug, clap::Args)]
pub struct BenchArgs {}

/// Runs the bench.
pub fn main(_args: BenchArgs) -> anyhow::Result<()> {
    anyhow::bail!("metalcu bench is not written yet")
}
