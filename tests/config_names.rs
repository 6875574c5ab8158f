//! Every configuration name of the reference CU (cu-protocol §5) is either a setting of
//! `metalcu serve` or named as inert: an operator's existing env file never has a setting that is
//! silently ignored, and a TOML file never refuses a reference name.

mod common;

use metalcu::config::INERT;
use metalcu::config::args::NAMES;

/// The names in the first column of the spec's §5 table (`A` / `B`, and `X` / `_Y` / `_Z`
/// shorthand for `X`, `X_Y`… expanded).
fn spec_names(spec: &str) -> Vec<String> {
    let start = spec.find("## 5. Configuration").expect("spec has §5");
    let end = spec[start..].find("\n---").map_or(spec.len(), |e| start + e);
    let mut out = Vec::new();
    for line in spec[start..end].lines().filter(|l| l.starts_with("| `")) {
        let first = line.split('|').nth(1).unwrap_or_default();
        let parts: Vec<&str> = first.split('`').skip(1).step_by(2).collect();
        let Some(head) = parts.first() else { continue };
        out.push(head.to_string());
        for p in &parts[1..] {
            if let Some(suffix) = p.strip_prefix('_') {
                // `CHECKPONT_VALIDATION_STEPS` / `_THRESH`: the suffix replaces the last word.
                let stem = head.rsplit_once('_').map_or(*head, |(s, _)| s);
                out.push(format!("{stem}_{suffix}"));
            } else {
                out.push(p.to_string());
            }
        }
    }
    out
}

#[test]
fn every_reference_setting_is_read_or_named_inert() {
    let Some(shared) = common::shared_dir() else { return };
    let spec = std::fs::read_to_string(shared.join("spec/cu-protocol.md")).unwrap();
    let names = spec_names(&spec);
    assert!(names.len() >= 50, "parsed only {} names from §5: {names:?}", names.len());
    assert!(names.iter().any(|n| n == "CHECKPONT_VALIDATION_RETRIES"), "shorthand expanded: {names:?}");
    let missing: Vec<&String> =
        names.iter().filter(|n| !NAMES.contains(&n.as_str()) && !INERT.iter().any(|(i, _)| i == n)).collect();
    assert!(missing.is_empty(), "reference settings neither read nor named inert: {missing:?}");
}

#[test]
fn no_setting_is_both_read_and_inert() {
    let both: Vec<&str> = INERT.iter().map(|(n, _)| *n).filter(|n| NAMES.contains(n)).collect();
    assert!(both.is_empty(), "{both:?}");
    let mut inert: Vec<&str> = INERT.iter().map(|(n, _)| *n).collect();
    inert.sort_unstable();
    inert.dedup();
    assert_eq!(inert.len(), INERT.len(), "INERT lists a name twice");
}
