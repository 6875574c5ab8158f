//! `metalcu doctor`: inspects the host for what a CU of the configured size needs (placeholder;
//! being written).

/// Arguments of `metalcu doctor`.
#[derive(Debug, clap::Args)]
pub struct DoctorArgs {}

/// Runs the checks; the exit code is non-zero when a setting blocks the configured size.
pub fn main(_args: DoctorArgs) -> anyhow::Result<std::process::ExitCode> {
    anyhow::bail!("metalcu doctor is not written yet")
}
