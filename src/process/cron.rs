//! Cron messages (cu-protocol §4.5): which crons a process declares in its tags, and at which
//! (timestamp, block height) they fire between two points of its message stream. Deterministic:
//! the same tags, origin and blocks always give the same ticks, in the same order.
//!
//! Reproduced quirks of the reference: `months` is not a unit (such a cron never fires, it is not
//! given an invented length); a year is 365.25 days; intervals under one second are refused.

use crate::su::types::Tag;

/// Most ticks one gap may produce; a process with a 1-second cron idle for 11 days hits it.
pub const MAX_TICKS_PER_GAP: usize = 1_000_000;

/// How often a cron fires.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Interval {
    /// Every N blocks.
    Blocks(u64),
    /// Every N seconds (may be fractional, as the reference computes it).
    Seconds(f64),
    /// A unit the reference cannot parse (e.g. `months`): never fires.
    Never,
}

/// One declared cron.
#[derive(Debug, Clone, PartialEq)]
pub struct Cron {
    /// `<index>-<interval as written>`.
    pub id: String,
    pub interval: Interval,
    /// Tags of the cron message (from `Cron-Tag-<Name>`).
    pub tags: Vec<Tag>,
}

/// A malformed cron declaration.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CronError {
    #[error("Cron-Tag-{0} appears before any Cron-Interval")]
    TagBeforeInterval(String),
    #[error("invalid Cron-Interval {0:?}")]
    Invalid(String),
    #[error("Cron-Interval {0:?} is shorter than one second")]
    TooShort(String),
}

fn unit_seconds(unit: &str) -> Option<f64> {
    Some(match unit {
        "ms" | "millisecond" | "milliseconds" => 0.001,
        "s" | "sec" | "secs" | "second" | "seconds" => 1.0,
        "m" | "min" | "mins" | "minute" | "minutes" => 60.0,
        "h" | "hr" | "hrs" | "hour" | "hours" => 3600.0,
        "d" | "day" | "days" => 86_400.0,
        "w" | "week" | "weeks" => 604_800.0,
        "y" | "yr" | "yrs" | "year" | "years" => 31_557_600.0,
        _ => return None,
    })
}

fn parse_interval(raw: &str) -> Result<Interval, CronError> {
    let mut parts = raw.split('-');
    let (n, unit) = (parts.next().unwrap_or("").trim(), parts.next().unwrap_or("").trim().to_ascii_lowercase());
    let value: f64 = n.parse().map_err(|_| CronError::Invalid(raw.to_string()))?;
    if !value.is_finite() || value <= 0.0 {
        return Err(CronError::Invalid(raw.to_string()));
    }
    if unit == "block" || unit == "blocks" {
        if value.fract() != 0.0 {
            return Err(CronError::Invalid(raw.to_string()));
        }
        return Ok(Interval::Blocks(value as u64));
    }
    match unit_seconds(&unit) {
        Some(s) if value * s < 1.0 => Err(CronError::TooShort(raw.to_string())),
        Some(s) => Ok(Interval::Seconds(value * s)),
        None => Ok(Interval::Never),
    }
}

/// The crons a process declares, with their ids: block crons indexed in tag order, time crons
/// sorted by interval (stable) and indexed in that order.
pub fn parse_crons(process_tags: &[Tag]) -> Result<Vec<Cron>, CronError> {
    let mut declared: Vec<(String, Interval, Vec<Tag>)> = Vec::new();
    for t in process_tags {
        if t.name == "Cron-Interval" {
            declared.push((t.value.clone(), parse_interval(&t.value)?, Vec::new()));
        } else if let Some(name) = t.name.strip_prefix("Cron-Tag-") {
            let last = declared.last_mut().ok_or_else(|| CronError::TagBeforeInterval(name.to_string()))?;
            last.2.push(Tag { name: name.to_string(), value: t.value.clone() });
        }
    }
    let mut out = Vec::new();
    let blocks = declared.iter().filter(|d| matches!(d.1, Interval::Blocks(_)));
    for (i, (raw, interval, tags)) in blocks.enumerate() {
        out.push(Cron { id: format!("{i}-{raw}"), interval: *interval, tags: tags.clone() });
    }
    let mut times: Vec<&(String, Interval, Vec<Tag>)> =
        declared.iter().filter(|d| !matches!(d.1, Interval::Blocks(_))).collect();
    let secs = |i: &Interval| if let Interval::Seconds(s) = i { *s } else { f64::NAN };
    // JavaScript's sort with `a - b`: NaN compares as "equal", keeping the original order.
    times.sort_by(|a, b| secs(&a.1).partial_cmp(&secs(&b.1)).unwrap_or(std::cmp::Ordering::Equal));
    for (i, (raw, interval, tags)) in times.into_iter().enumerate() {
        out.push(Cron { id: format!("{i}-{raw}"), interval: *interval, tags: tags.clone() });
    }
    Ok(out)
}

/// A block: height and timestamp (seconds, as the gateway reports it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Block {
    pub height: u64,
    pub timestamp_s: i64,
}

/// One cron message to evaluate.
#[derive(Debug, Clone, PartialEq)]
pub struct Tick {
    pub timestamp_ms: i64,
    pub block_height: u64,
    pub cron: String,
    pub tags: Vec<Tag>,
}

/// The ticks between `left_ms` (inclusive) and `right_ms` (exclusive): `origin` is the process's
/// block (its spawn timestamp, ms, and height), `current` the block in force at `left_ms`,
/// `blocks` the gateway's later blocks in height order. Errors if the gap would exceed
/// [`MAX_TICKS_PER_GAP`].
pub fn ticks(
    crons: &[Cron],
    origin: (i64, u64),
    mut current: Block,
    blocks: &[Block],
    left_ms: i64,
    right_ms: i64,
) -> Result<Vec<Tick>, usize> {
    let (origin_ms, origin_height) = origin;
    let origin_s = origin_ms.div_euclid(1000);
    let mut next_block =
        blocks.iter().filter(|b| b.timestamp_s * 1000 > left_ms && b.timestamp_s * 1000 < right_ms).peekable();
    let mut out = Vec::new();
    let mut t = left_ms;
    while t < right_ms {
        let sec = t.div_euclid(1000);
        if let Some(b) = next_block.next_if(|b| sec >= b.timestamp_s) {
            current = *b;
            for c in crons {
                if let Interval::Blocks(n) = c.interval
                    && b.height != origin_height
                    && b.height.abs_diff(origin_height) % n == 0
                {
                    out.push(Tick {
                        timestamp_ms: b.timestamp_s * 1000,
                        block_height: b.height,
                        cron: c.id.clone(),
                        tags: c.tags.clone(),
                    });
                }
            }
        }
        for c in crons {
            if let Interval::Seconds(s) = c.interval
                && sec != origin_s
                && ((sec - origin_s) as f64 % s) == 0.0
            {
                out.push(Tick {
                    timestamp_ms: t,
                    block_height: current.height,
                    cron: c.id.clone(),
                    tags: c.tags.clone(),
                });
            }
        }
        if out.len() > MAX_TICKS_PER_GAP {
            return Err(out.len());
        }
        t += 1000;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tags(pairs: &[(&str, &str)]) -> Vec<Tag> {
        pairs.iter().map(|(n, v)| Tag { name: n.to_string(), value: v.to_string() }).collect()
    }

    #[test]
    fn crons_are_parsed_with_their_tags_and_ids() {
        let c = parse_crons(&tags(&[
            ("Cron-Interval", "10-minutes"),
            ("Cron-Tag-Action", "Slow"),
            ("Cron-Interval", "5-blocks"),
            ("Cron-Tag-Action", "Blocky"),
            ("Cron-Interval", "30-seconds"),
            ("Cron-Tag-Action", "Fast"),
            ("Cron-Interval", "1-month"),
        ]))
        .unwrap();
        let ids: Vec<&str> = c.iter().map(|c| c.id.as_str()).collect();
        assert_eq!(ids, ["0-5-blocks", "0-30-seconds", "1-10-minutes", "2-1-month"]);
        assert_eq!(c[0].interval, Interval::Blocks(5));
        assert_eq!(c[1].interval, Interval::Seconds(30.0));
        assert_eq!(c[2].tags, tags(&[("Action", "Slow")]));
        assert_eq!(c[3].interval, Interval::Never, "months never fire, as in the reference");
    }

    #[test]
    fn malformed_declarations_are_refused() {
        assert_eq!(
            parse_crons(&tags(&[("Cron-Tag-Action", "x")])).unwrap_err(),
            CronError::TagBeforeInterval("Action".into())
        );
        assert!(matches!(parse_crons(&tags(&[("Cron-Interval", "500-ms")])), Err(CronError::TooShort(_))));
        assert!(matches!(parse_crons(&tags(&[("Cron-Interval", "x-minutes")])), Err(CronError::Invalid(_))));
        assert_eq!(
            parse_crons(&tags(&[("Cron-Interval", "1.5-years")])).unwrap()[0].interval,
            Interval::Seconds(47_336_400.0)
        );
    }

    #[test]
    fn time_and_block_ticks_between_two_messages() {
        let crons = parse_crons(&tags(&[("Cron-Interval", "2-blocks"), ("Cron-Interval", "10-seconds")])).unwrap();
        let origin = (1_000_000, 100);
        let blocks = [Block { height: 101, timestamp_s: 1_012 }, Block { height: 102, timestamp_s: 1_025 }];
        let got =
            ticks(&crons, origin, Block { height: 100, timestamp_s: 1_000 }, &blocks, 1_000_000, 1_031_000).unwrap();
        let summary: Vec<(i64, u64, &str)> =
            got.iter().map(|t| (t.timestamp_ms, t.block_height, t.cron.as_str())).collect();
        assert_eq!(
            summary,
            [
                (1_010_000, 100, "0-10-seconds"),
                (1_020_000, 101, "0-10-seconds"),
                (1_025_000, 102, "0-2-blocks"),
                (1_030_000, 102, "0-10-seconds"),
            ]
        );
        let every_second = parse_crons(&tags(&[("Cron-Interval", "1-second")])).unwrap();
        let two_million_s = 1_000_000 + 2_000_000 * 1000;
        let err =
            ticks(&every_second, origin, Block { height: 100, timestamp_s: 1_000 }, &[], 1_000_000, two_million_s);
        assert_eq!(err.unwrap_err(), MAX_TICKS_PER_GAP + 1, "a gap is bounded");
    }
}
