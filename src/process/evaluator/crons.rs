//! The crons of a walk (§4.5): between two scheduled messages, and after the last up to the
//! target, the ticks of the process's time and block crons are evaluated in order, in chunks of
//! at most `cron_chunk` ticks, so a gap of any length advances the process.
//!
//! Invariants: a tick at or before the last evaluated position is never evaluated again (a cron
//! position ties on its timestamp and cron id); block crons run only over the gateway's complete
//! list of blocks for the gap (more than [`MAX_BLOCKS_PER_GAP`] is an error, never a truncated
//! list); the gateway is asked for blocks only when a block cron exists or a time cron fires.

use serde_json::Value;

use super::{Core, CuError, Loaded, MAX_BLOCKS_PER_GAP};
use crate::gateway::Gateway;
use crate::process::cron::{self, Block, Gap, Progress, Tick};
use crate::process::msgs::cron_message;
use crate::store::Position;
use crate::su::scheduler::Scheduler;

impl<S: Scheduler, G: Gateway> Core<S, G> {
    /// Evaluates the crons that fire from the last evaluation (or the process's block on a cold
    /// start) up to `right_ms`, exclusive (§4.5), in chunks of at most `cron_chunk` ticks (plus
    /// those sharing the chunk's last second), so a gap of any length advances the process.
    pub(super) async fn crons_until(&self, pid: &str, p: &mut Loaded, right_ms: i64) -> Result<(), CuError> {
        if p.crons.is_empty() {
            return Ok(());
        }
        let left_ms = p.last.as_ref().map(|l| l.timestamp).unwrap_or(p.process.timestamp);
        if right_ms <= left_ms {
            return Ok(());
        }
        let origin = (p.process.timestamp, p.height);
        let current = Block { height: p.block_height, timestamp_s: 0 };
        // Time crons alone tell whether the gateway's blocks are needed for this gap at all.
        let has_block_crons = p.crons.iter().any(|c| matches!(c.interval, cron::Interval::Blocks(_)));
        if !has_block_crons {
            let probe = Gap { origin, blocks: &[], left_ms, right_ms };
            if cron::ticks(&p.crons, &probe, &mut Progress::start(&probe, current), 1).is_empty() {
                return Ok(());
            }
        }
        let blocks = self.blocks_between(p.block_height, right_ms).await?;
        let gap = Gap { origin, blocks: &blocks, left_ms, right_ms };
        let mut at = Progress::start(&gap, current);
        let nonce = p.last.as_ref().map(|l| l.nonce).unwrap_or(0);
        // When the last evaluation is itself a cron, the ticks at its timestamp up to and
        // including it were evaluated already.
        let mut done_at = p.last.as_ref().and_then(|l| l.cron.clone().map(|c| (l.timestamp, c)));
        while !at.done(&gap) {
            for tick in cron::ticks(&p.crons, &gap, &mut at, self.cron_chunk) {
                if let Some((ts, id)) = &done_at {
                    if tick.timestamp_ms == *ts {
                        if tick.cron == *id {
                            done_at = None;
                        }
                        continue;
                    }
                    done_at = None;
                }
                self.cron_tick(pid, p, &tick, nonce).await?;
            }
        }
        Ok(())
    }

    async fn cron_tick(&self, pid: &str, p: &mut Loaded, tick: &Tick, nonce: u64) -> Result<(), CuError> {
        let msg = Value::Object(cron_message(&p.owner, pid, tick));
        let position = Position { timestamp: tick.timestamp_ms, nonce, cron: Some(tick.cron.clone()) };
        self.evaluate_one(pid, p, msg, None, position, tick.block_height).await?;
        p.block_height = tick.block_height;
        if self.checkpoint_due_by_count(p) {
            self.checkpoint_if_due(pid, p, false).await;
        }
        Ok(())
    }

    /// The gateway's blocks from `min_height` up to the first past `right_ms`, at most
    /// [`MAX_BLOCKS_PER_GAP`].
    async fn blocks_between(&self, min_height: u64, right_ms: i64) -> Result<Vec<Block>, CuError> {
        let gw = |e: crate::gateway::GatewayError| CuError::new(e.status(), e.to_string());
        let right_s = right_ms.div_euclid(1000);
        let mut out: Vec<Block> = Vec::new();
        let mut next = min_height;
        while out.len() <= MAX_BLOCKS_PER_GAP {
            let got = self.gateway.blocks(next, right_s).await.map_err(gw)?;
            let (Some(first), Some(last)) = (got.first(), got.last()) else { break };
            if first.height < next || got.windows(2).any(|w| w[1].height <= w[0].height) {
                return Err(CuError::new(502, format!("gateway returned blocks out of order from height {next}")));
            }
            let (last_height, last_ts) = (last.height, last.timestamp_s);
            out.extend(got);
            if last_ts > right_s {
                break;
            }
            next = last_height + 1;
        }
        if out.len() > MAX_BLOCKS_PER_GAP {
            // Never evaluate block crons over a truncated list of blocks (wrong heights).
            return Err(CuError::new(
                503,
                format!("a cron gap spans more than {MAX_BLOCKS_PER_GAP} gateway blocks from height {min_height}"),
            ));
        }
        Ok(out)
    }
}
