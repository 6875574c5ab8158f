//! What the bench reads about the machine and the server process from Linux's `/proc`: CPU
//! count and model, memory, load average, a process's resident memory (`VmRSS`, and its peak
//! `VmHWM`) and CPU time. Also the report's date (UTC, from the system clock).
//!
//! Invariants: read-only; every reader returns `None` (never panics) when a file is missing or
//! unreadable, e.g. on another OS or after the process has exited.

use std::time::{SystemTime, UNIX_EPOCH};

use serde::Serialize;

/// The machine the bench ran on.
#[derive(Debug, Clone, Serialize)]
pub struct Machine {
    /// CPUs this process may use (what `nproc` prints).
    pub cpus: usize,
    pub cpu_model: Option<String>,
    pub mem_total_bytes: Option<u64>,
    pub kernel: Option<String>,
}

impl Machine {
    pub fn read() -> Machine {
        let cpu_model = std::fs::read_to_string("/proc/cpuinfo").ok().and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, v)| v.trim().into())
        });
        let mem_total_bytes = std::fs::read_to_string("/proc/meminfo").ok().and_then(|s| kib_field(&s, "MemTotal:"));
        let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").ok().map(|s| s.trim().to_string());
        Machine {
            cpus: std::thread::available_parallelism().map_or(1, |n| n.get()),
            cpu_model,
            mem_total_bytes,
            kernel,
        }
    }
}

/// The 1, 5 and 15 minute load averages.
pub fn load_average() -> Option<[f64; 3]> {
    let s = std::fs::read_to_string("/proc/loadavg").ok()?;
    let mut it = s.split_whitespace().map(|v| v.parse::<f64>().ok());
    Some([it.next()??, it.next()??, it.next()??])
}

/// Resident memory of a process.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Memory {
    /// `VmRSS`: resident now.
    pub rss_bytes: u64,
    /// `VmHWM`: the peak resident size since the process started.
    pub peak_bytes: u64,
}

/// `VmRSS` and `VmHWM` of process `pid`.
pub fn memory(pid: u32) -> Option<Memory> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    Some(Memory { rss_bytes: kib_field(&s, "VmRSS:")?, peak_bytes: kib_field(&s, "VmHWM:")? })
}

/// A `Name:   123 kB` line of a `/proc` file, in bytes.
fn kib_field(s: &str, name: &str) -> Option<u64> {
    let line = s.lines().find(|l| l.starts_with(name))?;
    let kib: u64 = line[name.len()..].split_whitespace().next()?.parse().ok()?;
    Some(kib * 1024)
}

/// CPU time (user + system) process `pid` has used, in seconds; `None` = this process.
pub fn cpu_seconds(pid: Option<u32>) -> Option<f64> {
    let path = match pid {
        Some(p) => format!("/proc/{p}/stat"),
        None => "/proc/self/stat".to_string(),
    };
    let s = std::fs::read_to_string(path).ok()?;
    // The command name (field 2) is in parentheses and may hold spaces: count from after it.
    let rest = &s[s.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the whole line, 12 and 13 after the name.
    let ticks: u64 = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    // SAFETY: sysconf only reads a configuration value.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    (hz > 0).then(|| ticks as f64 / hz as f64)
}

/// Now, as seconds since the Unix epoch and as `YYYY-MM-DD HH:MM:SS UTC`.
pub fn now_utc() -> (u64, String) {
    let secs = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    (secs, format_utc(secs))
}

/// `YYYY-MM-DD HH:MM:SS UTC` of a Unix time (proleptic Gregorian calendar).
pub fn format_utc(secs: u64) -> String {
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!("{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02} UTC", rem / 3600, rem % 3600 / 60, rem % 60)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates() {
        assert_eq!(format_utc(0), "1970-01-01 00:00:00 UTC");
        assert_eq!(format_utc(951_782_400), "2000-02-29 00:00:00 UTC");
        assert_eq!(format_utc(1_795_581_677), "2026-11-25 04:41:17 UTC");
    }

    #[test]
    fn proc_fields() {
        assert_eq!(kib_field("VmHWM:\t  2048 kB\nVmRSS:\t 1024 kB\n", "VmRSS:"), Some(1024 * 1024));
        assert_eq!(kib_field("VmRSS: x kB", "VmRSS:"), None);
        if cfg!(target_os = "linux") {
            let m = memory(std::process::id()).unwrap();
            assert!(m.peak_bytes >= m.rss_bytes && m.rss_bytes > 0);
            assert!(cpu_seconds(None).is_some());
        }
    }
}
