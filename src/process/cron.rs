//! Cron messages (cu-protocol §4.5): which crons a process declares in its tags, and at which
//! (timestamp, block height) they fire between two points of its message stream. Deterministic:
//! the same tags, origin and blocks always give the same ticks, in the same order.
//!
//! Reproduced quirks of the reference: `months` is not a unit (such a cron never fires, it is not
//! given an invented length); a year is 365.25 days; intervals under one second are refused.

use crate::su::types::Tag;

/// Most ticks evaluated between two commits of a long gap: a gap producing more (a process with
/// a 1-second cron idle for days) is evaluated chunk after chunk, each at most this many ticks
/// plus those sharing the last chunk's second, so the process always advances.
pub const MAX_TICKS_PER_CHUNK: usize = 10_000;

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

/// One gap between two points of a process's stream: `origin` is the process's block (its spawn
/// timestamp, ms, and height), `blocks` the gateway's blocks after the gap's start, in height
/// order; ticks fire from `left_ms` (inclusive) to `right_ms` (exclusive).
#[derive(Debug, Clone, Copy)]
pub struct Gap<'a> {
    pub origin: (i64, u64),
    pub blocks: &'a [Block],
    pub left_ms: i64,
    pub right_ms: i64,
}

/// How far a gap has been walked: the next instant to look at, the block in force there, and how
/// many of the gap's blocks were passed. [`Progress::start`] begins a gap; [`ticks`] advances it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Progress {
    pub t_ms: i64,
    pub current: Block,
    pub blocks_passed: usize,
}

impl Progress {
    /// The start of `gap`, with `current` the block in force at its left edge.
    pub fn start(gap: &Gap<'_>, current: Block) -> Self {
        Progress { t_ms: gap.left_ms, current, blocks_passed: 0 }
    }

    /// Whether the whole gap has been walked.
    pub fn done(&self, gap: &Gap<'_>) -> bool {
        self.t_ms >= gap.right_ms
    }
}

/// The next ticks of `gap` from `at`, in order: walks whole seconds until at least `max` ticks
/// were produced (the last second's ticks all included) or the gap ends, and advances `at`.
/// Walking a gap chunk by chunk gives exactly the ticks of one walk with no bound.
pub fn ticks(crons: &[Cron], gap: &Gap<'_>, at: &mut Progress, max: usize) -> Vec<Tick> {
    let (origin_ms, origin_height) = gap.origin;
    let origin_s = origin_ms.div_euclid(1000);
    let mut next_block = gap
        .blocks
        .iter()
        .filter(|b| b.timestamp_s * 1000 > gap.left_ms && b.timestamp_s * 1000 < gap.right_ms)
        .skip(at.blocks_passed)
        .peekable();
    let mut out = Vec::new();
    while at.t_ms < gap.right_ms && out.len() < max.max(1) {
        let sec = at.t_ms.div_euclid(1000);
        if let Some(b) = next_block.next_if(|b| sec >= b.timestamp_s) {
            at.current = *b;
            at.blocks_passed += 1;
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
                    timestamp_ms: at.t_ms,
                    block_height: at.current.height,
                    cron: c.id.clone(),
                    tags: c.tags.clone(),
                });
            }
        }
        at.t_ms += 1000;
    }
    out
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
        let gap = Gap { origin, blocks: &blocks, left_ms: 1_000_000, right_ms: 1_031_000 };
        let start = Progress::start(&gap, Block { height: 100, timestamp_s: 1_000 });
        let mut whole_at = start;
        let got = ticks(&crons, &gap, &mut whole_at, usize::MAX);
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
        // Walked one tick at a time, the gap gives the same ticks.
        let mut at = start;
        let mut chunked = Vec::new();
        while !at.done(&gap) {
            chunked.extend(ticks(&crons, &gap, &mut at, 1));
        }
        assert_eq!(chunked, got);
        assert_eq!(at.current, blocks[1]);
    }

    #[test]
    fn a_long_gap_is_walked_in_bounded_chunks() {
        let every_second =
            parse_crons(&tags(&[("Cron-Interval", "1-second"), ("Cron-Interval", "2-seconds")])).unwrap();
        let origin = (1_000_000, 100);
        let gap = Gap { origin, blocks: &[], left_ms: 1_000_500, right_ms: 1_000_500 + 100_000 };
        let mut at = Progress::start(&gap, Block { height: 100, timestamp_s: 1_000 });
        let mut all = Vec::new();
        let mut chunks = 0;
        while !at.done(&gap) {
            let chunk = ticks(&every_second, &gap, &mut at, 7);
            assert!(chunk.len() <= 7 + 1, "a chunk stops after the second that reaches the bound");
            all.extend(chunk);
            chunks += 1;
        }
        assert!(chunks > 10);
        let mut whole_at = Progress::start(&gap, Block { height: 100, timestamp_s: 1_000 });
        let whole = ticks(&every_second, &gap, &mut whole_at, usize::MAX);
        assert_eq!(all, whole);
        assert_eq!(whole.len(), 99 + 49, "every second but the origin's, every other second");
        assert_eq!(whole[0].timestamp_ms, 1_001_500, "ticks keep the gap's millisecond offset");
    }
}
