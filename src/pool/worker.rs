//! The worker threads: each takes jobs from its own queue first, then, when that is empty, the
//! oldest queued job of a worker that is busy running one (so a job never waits while a core is
//! idle), and otherwise sleeps on its own queue (or its stop channel). When the pool is dropped,
//! [`Threads`] tells each worker to stop; it drains its own queue first, then leaves, and is
//! joined. A job must not hold the last clone of the pool (its worker would join itself).

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::thread::JoinHandle;

use super::{Job, PoolError, Shared};

/// The running threads; dropping this stops and joins them.
pub(super) struct Threads {
    shared: Arc<Shared>,
    handles: Vec<JoinHandle<()>>,
}

impl Threads {
    pub(super) fn start(shared: Arc<Shared>) -> Result<Threads, PoolError> {
        let mut threads = Threads { shared: shared.clone(), handles: Vec::with_capacity(shared.slots.len()) };
        for i in 0..shared.slots.len() {
            let me = shared.clone();
            let h = std::thread::Builder::new()
                .name(format!("metalcu-worker-{i}"))
                .spawn(move || run(&me, i))
                .map_err(|e| PoolError::Config(format!("cannot start worker thread {i}: {e}")))?;
            // On an early return, dropping `threads` stops the workers already started.
            threads.handles.push(h);
        }
        Ok(threads)
    }
}

impl Drop for Threads {
    fn drop(&mut self) {
        // The senders live in `Shared`, which the workers hold too, so the queues never
        // disconnect: each worker is told to stop on its own stop channel, drains its queue (a
        // job whose caller stopped waiting still runs) and leaves.
        for slot in &self.shared.slots {
            let _ = slot.stop_tx.try_send(());
        }
        for h in self.handles.drain(..) {
            let _ = h.join();
        }
    }
}

fn pin(shared: &Shared, i: usize) {
    let Some(cpu) = shared.slots[i].cpu else { return };
    if core_affinity::set_for_current(core_affinity::CoreId { id: cpu }) {
        tracing::debug!(worker = i, cpu, "worker pinned");
    } else {
        tracing::warn!(worker = i, cpu, "could not pin the worker to its CPU; it runs unpinned");
    }
}

/// The oldest queued job of another worker that is busy right now.
fn steal(shared: &Shared, me: usize) -> Option<Job> {
    let n = shared.slots.len();
    (1..n).map(|d| (me + d) % n).find_map(|v| {
        let victim = &shared.slots[v];
        if victim.busy.load(Ordering::Acquire) { victim.rx.try_recv().ok() } else { None }
    })
}

fn execute(shared: &Shared, me: &super::Slot, job: Job) {
    me.started_us.store(shared.epoch.elapsed().as_micros() as u64 + 1, Ordering::Release);
    me.busy.store(true, Ordering::Release);
    drop(job.slot);
    let deliver = (job.run)();
    me.ran.fetch_add(1, Ordering::Relaxed);
    me.busy.store(false, Ordering::Release);
    me.started_us.store(0, Ordering::Release);
    deliver();
}

fn run(shared: &Shared, i: usize) {
    pin(shared, i);
    let me = &shared.slots[i];
    loop {
        if let Ok(job) = me.rx.try_recv() {
            execute(shared, me, job);
            continue;
        }
        if let Some(job) = steal(shared, i) {
            me.stolen.fetch_add(1, Ordering::Relaxed);
            execute(shared, me, job);
            continue;
        }
        crossbeam_channel::select! {
            recv(me.rx) -> job => match job {
                Ok(job) => execute(shared, me, job),
                Err(_) => return,
            },
            recv(me.stop_rx) -> _ => {
                while let Ok(job) = me.rx.try_recv() {
                    execute(shared, me, job);
                }
                return;
            }
        }
    }
}
