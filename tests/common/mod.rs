//! Helpers shared by the integration tests: where `../shared` is, and small WAT modules.
#![allow(dead_code)]

use std::path::PathBuf;

pub mod devchild;

/// The shared test data (fixtures, goldens): `$METALCU_SHARED`, else `../shared` beside the repo.
/// Returns `None` (after saying so on stderr) when it is missing locally; panics under CI, where
/// a missing `../shared` must fail the run rather than skip it.
pub fn shared_dir() -> Option<PathBuf> {
    let dir = std::env::var_os("METALCU_SHARED")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared"));
    if dir.join("goldens/out").is_dir() && dir.join("fixtures/modules").is_dir() {
        return Some(dir);
    }
    if std::env::var_os("CI").is_some() {
        panic!("shared test data not found at {} (set METALCU_SHARED); CI requires it", dir.display());
    }
    eprintln!("NOTE: shared test data not found at {}; this test did not run", dir.display());
    None
}

/// The project's echo module (format-4 calling convention); see `metalcu::dev::echo_module_wat`.
pub fn echo_wat(imports: &str, items: &str, extra: &str) -> String {
    metalcu::dev::echo_module_wat(imports, items, extra)
}
