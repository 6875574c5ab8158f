//! Module selection and limits (cu-protocol §4.2): from the module's tags (M) and the process's
//! tags (P, which override M), the format, `Memory-Limit`, `Compute-Limit` and extensions a
//! process runs with — refused with the reference's status codes and texts.

use crate::engine::ModuleFormat;
use crate::su::message::tag;
use crate::su::types::Tag;

/// Defaults of the reference CU (`PROCESS_WASM_MEMORY_MAX_LIMIT`, `PROCESS_WASM_COMPUTE_MAX_LIMIT`).
pub const DEFAULT_MEMORY_MAX: u64 = 1 << 30;
pub const DEFAULT_COMPUTE_MAX: u64 = 9_000_000_000_000;

/// What the operator allows: the `PROCESS_WASM_*` settings, the allow/deny lists
/// (`ALLOW_PROCESSES`, `RESTRICT_PROCESSES`, `ALLOW_OWNERS`; empty allow lists allow all) and the
/// scheduler page size (`LOAD_MESSAGES_PAGE_SIZE`).
#[derive(Debug, Clone)]
pub struct Policy {
    pub memory_max: u64,
    pub compute_max: u64,
    pub formats: Vec<ModuleFormat>,
    pub extensions: Vec<String>,
    pub allow_processes: Vec<String>,
    pub restrict_processes: Vec<String>,
    pub allow_owners: Vec<String>,
    pub page_size: u32,
}

impl Policy {
    /// `Err(text)` when process `pid` may not be served (403, before any work).
    pub fn check_process(&self, pid: &str) -> Result<(), String> {
        let denied = self.restrict_processes.iter().any(|p| p == pid)
            || (!self.allow_processes.is_empty() && !self.allow_processes.iter().any(|p| p == pid));
        if denied { Err(format!("Access denied for process {pid}")) } else { Ok(()) }
    }

    /// `Err(text)` when processes of `owner` may not be served (403, after loading the process).
    pub fn check_owner(&self, owner: &str) -> Result<(), String> {
        if !self.allow_owners.is_empty() && !self.allow_owners.iter().any(|o| o == owner) {
            return Err(format!("Access denied for process owner {owner}"));
        }
        Ok(())
    }
}

impl Default for Policy {
    fn default() -> Self {
        Policy {
            memory_max: DEFAULT_MEMORY_MAX,
            compute_max: DEFAULT_COMPUTE_MAX,
            formats: ModuleFormat::ALL.to_vec(),
            extensions: Vec::new(),
            allow_processes: Vec::new(),
            restrict_processes: Vec::new(),
            allow_owners: Vec::new(),
            page_size: super::evaluator::PAGE_SIZE,
        }
    }
}

/// The options a process runs with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModuleOptions {
    pub format: ModuleFormat,
    pub memory_limit: u64,
    pub compute_limit: u64,
    pub extensions: Vec<String>,
    /// `Availability-Type` (P, else M; default `Assignments`).
    pub availability: String,
}

/// Why a process cannot run here; `status()` is the reference's HTTP status.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OptionsError {
    #[error("Memory-Limit for process \"{0}\" exceeds supported limit")]
    MemoryLimit(String),
    #[error("Compute-Limit for process \"{0}\" exceeds supported limit")]
    ComputeLimit(String),
    #[error("Module-Format for module \"{0}\" is not supported")]
    Format(String),
    #[error("Input-Encoding for module \"{0}\" is not supported")]
    InputEncoding(String),
    #[error("Output-Encoding for module \"{0}\" is not supported")]
    OutputEncoding(String),
    #[error("Module Extensions for module \"{0}\" are not supported")]
    Extensions(String),
}

impl OptionsError {
    /// HTTP status of the reference CU for this refusal.
    pub fn status(&self) -> u16 {
        match self {
            OptionsError::MemoryLimit(_) | OptionsError::ComputeLimit(_) => 413,
            _ => 422,
        }
    }
}

/// Parses a `Memory-Limit` value like the reference: strip the first `-`, then the `bytes`
/// package's rules (binary units b/kb/mb/gb/tb/pb, case-insensitive, decimals allowed; a bare
/// number is bytes). `"1-gb"` → 1 073 741 824, `"500-mb"` → 524 288 000.
pub fn parse_memory_limit(value: &str) -> Option<u64> {
    let s = value.replacen('-', "", 1);
    let s = s.trim();
    let lower = s.to_ascii_lowercase();
    let units = [("kb", 1u64 << 10), ("mb", 1 << 20), ("gb", 1 << 30), ("tb", 1 << 40), ("pb", 1 << 50), ("b", 1)];
    for (unit, mult) in units {
        if let Some(num) = lower.strip_suffix(unit) {
            let num = num.trim_end();
            if !num.is_empty() && num.chars().all(|c| c.is_ascii_digit() || c == '.') && num.matches('.').count() <= 1 {
                let v: f64 = num.parse().ok()?;
                return Some((v * mult as f64).floor() as u64);
            }
            return None;
        }
    }
    // `parseInt(value, 10)`: leading digits.
    let digits: String = s.chars().take_while(|c| c.is_ascii_digit()).collect();
    digits.parse().ok()
}

fn p_else_m<'a>(process: &'a [Tag], module: &'a [Tag], name: &str) -> Option<&'a str> {
    tag(process, name).or_else(|| tag(module, name))
}

/// Derives and checks the options of process `pid` running module `mid`.
pub fn module_options(
    pid: &str,
    mid: &str,
    process: &[Tag],
    module: &[Tag],
    policy: &Policy,
) -> Result<ModuleOptions, OptionsError> {
    let format = tag(module, "Module-Format")
        .and_then(|f| f.parse::<ModuleFormat>().ok())
        .filter(|f| policy.formats.contains(f))
        .ok_or_else(|| OptionsError::Format(mid.to_string()))?;
    tag(module, "Input-Encoding").ok_or_else(|| OptionsError::InputEncoding(mid.to_string()))?;
    tag(module, "Output-Encoding").ok_or_else(|| OptionsError::OutputEncoding(mid.to_string()))?;
    let memory_limit = p_else_m(process, module, "Memory-Limit")
        .and_then(parse_memory_limit)
        .filter(|m| *m <= policy.memory_max)
        .ok_or_else(|| OptionsError::MemoryLimit(pid.to_string()))?;
    let compute_limit = p_else_m(process, module, "Compute-Limit")
        .and_then(|c| c.trim().parse::<u64>().ok())
        .filter(|c| *c <= policy.compute_max)
        .ok_or_else(|| OptionsError::ComputeLimit(pid.to_string()))?;
    let extensions: Vec<String> = module.iter().filter(|t| t.name == "Extension").map(|t| t.value.clone()).collect();
    if extensions.iter().any(|e| !policy.extensions.contains(e)) {
        return Err(OptionsError::Extensions(mid.to_string()));
    }
    let availability = p_else_m(process, module, "Availability-Type").unwrap_or("Assignments").to_string();
    Ok(ModuleOptions { format, memory_limit, compute_limit, extensions, availability })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tags(pairs: &[(&str, &str)]) -> Vec<Tag> {
        pairs.iter().map(|(n, v)| Tag { name: n.to_string(), value: v.to_string() }).collect()
    }

    #[test]
    fn memory_limits_parse_with_binary_units() {
        assert_eq!(parse_memory_limit("1-gb"), Some(1_073_741_824));
        assert_eq!(parse_memory_limit("500-mb"), Some(524_288_000));
        assert_eq!(parse_memory_limit("1.5-GB"), Some(1_610_612_736));
        assert_eq!(parse_memory_limit("65536"), Some(65_536));
        assert_eq!(parse_memory_limit("16-kb"), Some(16_384));
        assert_eq!(parse_memory_limit("lots"), None);
        assert_eq!(parse_memory_limit("1-zb"), None);
    }

    #[test]
    fn process_tags_override_module_tags() {
        let module = tags(&[
            ("Module-Format", "wasm32-unknown-emscripten2"),
            ("Input-Encoding", "JSON-1"),
            ("Output-Encoding", "JSON-1"),
            ("Memory-Limit", "500-mb"),
            ("Compute-Limit", "9000000000000"),
        ]);
        let process = tags(&[("Memory-Limit", "1-gb")]);
        let o = module_options("P", "M", &process, &module, &Policy::default()).unwrap();
        assert_eq!(o.format, ModuleFormat::Emscripten2);
        assert_eq!(o.memory_limit, 1 << 30);
        assert_eq!(o.compute_limit, 9_000_000_000_000);
        assert_eq!(o.availability, "Assignments");
    }

    #[test]
    fn refusals_carry_the_reference_status_and_text() {
        let base = [("Module-Format", "wasm32-unknown-emscripten4"), ("Input-Encoding", "x"), ("Output-Encoding", "y")];
        let run = |extra: &[(&str, &str)], drop: &str| {
            let mut t: Vec<(&str, &str)> = base.iter().copied().filter(|(n, _)| *n != drop).collect();
            t.extend_from_slice(extra);
            module_options("P", "M", &[], &tags(&t), &Policy::default())
        };
        let ok_limits = [("Memory-Limit", "1-gb"), ("Compute-Limit", "1000")];
        assert!(run(&ok_limits, "").is_ok());
        let e = run(&[("Memory-Limit", "2-gb"), ("Compute-Limit", "1")], "").unwrap_err();
        assert_eq!((e.status(), e.to_string()), (413, "Memory-Limit for process \"P\" exceeds supported limit".into()));
        let e = run(&[("Compute-Limit", "1")], "").unwrap_err();
        assert_eq!(e.status(), 413, "a missing Memory-Limit is refused too");
        let e = run(&[("Memory-Limit", "1-gb"), ("Compute-Limit", "9000000000001")], "").unwrap_err();
        assert_eq!(e.to_string(), "Compute-Limit for process \"P\" exceeds supported limit");
        let e = run(&ok_limits, "Input-Encoding").unwrap_err();
        assert_eq!((e.status(), e.to_string()), (422, "Input-Encoding for module \"M\" is not supported".into()));
        let e = run(&[("Memory-Limit", "1-gb"), ("Compute-Limit", "1"), ("Extension", "WeaveDrive")], "").unwrap_err();
        assert_eq!(e.to_string(), "Module Extensions for module \"M\" are not supported");
        let e = module_options("P", "M", &[], &tags(&[("Module-Format", "wasm32-unknown-foo")]), &Policy::default())
            .unwrap_err();
        assert_eq!((e.status(), e.to_string()), (422, "Module-Format for module \"M\" is not supported".into()));
    }
}
