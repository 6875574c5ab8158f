//! Logging: one `tracing` subscriber for the whole binary, writing to stderr either for people
//! (`human`, the default) or as one JSON object per line (`json`, for journald/Loki/ELK), chosen
//! by `--log-format` or `LOG_FORMAT` (the flag wins). Levels come from `RUST_LOG` (default
//! [`DEFAULT_FILTER`]).
//!
//! Fields are the same in both formats: evaluation events carry `process_id` and `message_id`
//! (see `metrics::Metrics::evaluated`). A JSON line is
//! `{"timestamp":…,"level":…,"message":…,"process_id":…,"message_id":…,…,"target":…}`.
//!
//! Invariant: a bad `LOG_FORMAT` stops the start with a message naming the setting and where it
//! came from, before anything else runs.

use std::io::Write;

use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::MakeWriter;

/// The filter when `RUST_LOG` is unset or invalid.
pub const DEFAULT_FILTER: &str = "warn,metalcu=info";
/// The environment variable that chooses the format when the flag is absent.
pub const ENV: &str = "LOG_FORMAT";

/// How log lines are written.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Aligned text for people.
    #[default]
    Human,
    /// One JSON object per line.
    Json,
}

impl std::str::FromStr for LogFormat {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.trim().to_ascii_lowercase().as_str() {
            "human" => Ok(LogFormat::Human),
            "json" => Ok(LogFormat::Json),
            other => Err(format!("{other:?} is not a log format; expected human or json")),
        }
    }
}

/// The format in force: the flag, else `LOG_FORMAT` as `env` gives it, else human. Errors name
/// the setting and its source.
pub fn resolve(flag: Option<LogFormat>, env: impl Fn(&str) -> Option<String>) -> Result<LogFormat, String> {
    if let Some(f) = flag {
        return Ok(f);
    }
    match env(ENV) {
        None => Ok(LogFormat::default()),
        Some(v) if v.trim().is_empty() => Ok(LogFormat::default()),
        Some(v) => v.parse().map_err(|e| format!("{ENV} (environment): {e}")),
    }
}

/// The filter from `RUST_LOG`, or [`DEFAULT_FILTER`].
fn filter() -> EnvFilter {
    EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(DEFAULT_FILTER))
}

/// A subscriber writing `format` to `writer`, filtered by `filter` (tests pass their own writer).
pub fn subscriber<W>(format: LogFormat, filter: EnvFilter, writer: W) -> Box<dyn tracing::Subscriber + Send + Sync>
where
    W: for<'a> MakeWriter<'a> + Send + Sync + 'static,
{
    let builder = tracing_subscriber::fmt().with_writer(writer).with_env_filter(filter);
    match format {
        LogFormat::Human => Box::new(builder.finish()),
        // Event fields sit beside `level` and `message` (no field of ours is named like them).
        LogFormat::Json => {
            Box::new(builder.json().flatten_event(true).with_current_span(true).with_span_list(false).finish())
        }
    }
}

/// Installs the process-wide subscriber on stderr. Call once, first thing in `main`.
pub fn init(format: LogFormat) {
    let sub = subscriber(format, filter(), std::io::stderr);
    if tracing::subscriber::set_global_default(sub).is_err() {
        let _ = writeln!(std::io::stderr(), "metalcu: a log subscriber was already installed");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flag_beats_environment_and_bad_values_are_named() {
        let env = |v: &'static str| move |k: &str| (k == ENV).then(|| v.to_string());
        assert_eq!(resolve(Some(LogFormat::Human), env("json")), Ok(LogFormat::Human));
        assert_eq!(resolve(None, env("JSON")), Ok(LogFormat::Json));
        assert_eq!(resolve(None, env("")), Ok(LogFormat::Human));
        assert_eq!(resolve(None, |_: &str| None), Ok(LogFormat::Human));
        let e = resolve(None, env("xml")).unwrap_err();
        assert!(e.contains("LOG_FORMAT (environment)") && e.contains("xml"), "{e}");
    }
}
