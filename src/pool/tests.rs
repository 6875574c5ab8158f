//! Worker pool behaviour: answers, placement, stealing, backpressure, panics, shutdown.

use super::*;
use std::sync::Mutex;
use std::time::{Duration, Instant};

fn pool(workers: usize, depth: usize) -> WorkerPool {
    WorkerPool::new(&PoolConfig { workers, cpus: None, pin: true, queue_depth: depth }).unwrap()
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap()
}

/// A key whose home is worker `w` of `n`.
fn key_for(w: usize, n: usize) -> String {
    (0..).map(|i| format!("p{i}")).find(|k| shard::home(k, n) == w).unwrap()
}

#[test]
fn jobs_run_on_worker_threads_and_answer() {
    let p = pool(2, 8);
    rt().block_on(async {
        let name = p.run("a", || std::thread::current().name().map(str::to_string)).await.unwrap();
        assert!(name.unwrap().starts_with("metalcu-worker-"));
        assert_eq!(p.run("b", || 6 * 7).await.unwrap(), 42);
    });
    let total: u64 = p.stats().iter().map(|s| s.jobs_run).sum();
    assert_eq!(total, 2);
}

#[test]
fn bad_settings_are_refused() {
    let bad = |c: PoolConfig| WorkerPool::new(&c).unwrap_err();
    assert!(matches!(bad(PoolConfig { queue_depth: 0, ..PoolConfig::default() }), PoolError::Config(_)));
    assert!(matches!(bad(PoolConfig { workers: MAX_WORKERS + 1, ..PoolConfig::default() }), PoolError::Config(_)));
    assert!(matches!(bad(PoolConfig { cpus: Some(vec![]), ..PoolConfig::default() }), PoolError::Config(_)));
}

#[test]
fn default_is_one_worker_per_available_cpu_pinned_in_order() {
    let p = WorkerPool::new(&PoolConfig::default()).unwrap();
    let cpus = available_cpus();
    assert_eq!(p.workers(), cpus.len().max(1));
    let pinned: Vec<Option<usize>> = p.stats().iter().map(|s| s.cpu).collect();
    if !cpus.is_empty() {
        assert_eq!(pinned, cpus.iter().map(|&c| Some(c)).collect::<Vec<_>>());
    }
}

#[test]
fn a_free_home_worker_runs_its_keys_jobs() {
    let p = pool(2, 8);
    let k = key_for(1, 2);
    rt().block_on(async {
        for _ in 0..20 {
            let name = p.run(&k, || std::thread::current().name().unwrap().to_string()).await.unwrap();
            assert_eq!(name, "metalcu-worker-1");
        }
    });
}

/// While the home worker is busy, a job of the same home goes to the idle worker, so it does not
/// wait behind the long one.
#[test]
fn a_busy_home_sends_new_work_to_an_idle_worker() {
    let p = pool(2, 8);
    let (k0, k0b) = (key_for(0, 2), (0..).map(|i| format!("q{i}")).find(|k| shard::home(k, 2) == 0).unwrap());
    let (release, gate) = std::sync::mpsc::channel::<()>();
    let gate = Mutex::new(gate);
    rt().block_on(async {
        let p2 = p.clone();
        let long = tokio::spawn(async move {
            p2.run(&k0, move || {
                gate.lock().unwrap().recv().unwrap();
            })
            .await
        });
        while !p.stats()[0].busy {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        let name = p.run(&k0b, || std::thread::current().name().unwrap().to_string()).await.unwrap();
        assert_eq!(name, "metalcu-worker-1");
        release.send(()).unwrap();
        long.await.unwrap().unwrap();
    });
    assert_eq!(p.stats()[1].jobs_placed_away, 1);
}

/// A job queued behind a long one on a busy worker is taken by the other worker once that one
/// runs out of work, and jobs of one key (submitted one after another) keep their order.
#[test]
fn an_idle_worker_steals_queued_work_from_a_busy_one() {
    let p = pool(2, 64);
    rt().block_on(async {
        // Both workers busy, so the next job queues at its home (worker 0).
        let (r0, g0) = std::sync::mpsc::channel::<()>();
        let (r1, g1) = std::sync::mpsc::channel::<()>();
        let (g0, g1) = (Mutex::new(g0), Mutex::new(g1));
        let a = tokio::spawn({
            let p = p.clone();
            let k = key_for(0, 2);
            async move { p.run(&k, move || g0.lock().unwrap().recv().unwrap()).await }
        });
        while !p.stats()[0].busy {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        let b = tokio::spawn({
            let p = p.clone();
            let k = key_for(1, 2);
            async move { p.run(&k, move || g1.lock().unwrap().recv().unwrap()).await }
        });
        while !p.stats()[1].busy {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        let queued = tokio::spawn({
            let p = p.clone();
            let k = key_for(0, 2);
            async move { p.run(&k, || std::thread::current().name().unwrap().to_string()).await }
        });
        while p.stats()[0].queued == 0 {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        // Worker 1 is released first: it finds its own queue empty and worker 0 busy.
        r1.send(()).unwrap();
        b.await.unwrap().unwrap();
        assert_eq!(queued.await.unwrap().unwrap(), "metalcu-worker-1");
        r0.send(()).unwrap();
        a.await.unwrap().unwrap();
    });
    assert_eq!(p.stats()[1].jobs_stolen, 1);

    // Order per key under load from many keys.
    let log = Arc::new(Mutex::new(Vec::new()));
    rt().block_on(async {
        let mut tasks = Vec::new();
        for k in 0..16 {
            let (p, log) = (p.clone(), log.clone());
            tasks.push(tokio::spawn(async move {
                for n in 0..50u32 {
                    let log = log.clone();
                    p.run(&format!("k{k}"), move || log.lock().unwrap().push((k, n))).await.unwrap();
                }
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
    });
    let log = log.lock().unwrap();
    assert_eq!(log.len(), 16 * 50);
    for k in 0..16 {
        let seq: Vec<u32> = log.iter().filter(|(kk, _)| *kk == k).map(|(_, n)| *n).collect();
        assert_eq!(seq, (0..50).collect::<Vec<_>>(), "key k{k} out of order");
    }
}

/// With the queue full, `run` waits for room instead of growing the queue.
#[test]
fn a_full_queue_applies_backpressure() {
    let p = pool(1, 2);
    rt().block_on(async {
        let (release, gate) = std::sync::mpsc::channel::<()>();
        let gate = Arc::new(Mutex::new(gate));
        let mut tasks = Vec::new();
        for i in 0..4 {
            let (p, gate) = (p.clone(), gate.clone());
            tasks.push(tokio::spawn(async move {
                p.run("k", move || {
                    gate.lock().unwrap().recv().unwrap();
                    i
                })
                .await
            }));
        }
        // One running + two queued; the fourth waits for room.
        let deadline = Instant::now() + Duration::from_secs(10);
        while !(p.stats()[0].busy && p.stats()[0].queued == 2) {
            assert!(Instant::now() < deadline, "never reached one running + two queued: {:?}", p.stats());
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert_eq!(p.stats()[0].queued, 2, "the queue grew past its bound");
        for _ in 0..4 {
            release.send(()).unwrap();
        }
        let mut got: Vec<i32> = Vec::new();
        for t in tasks {
            got.push(t.await.unwrap().unwrap());
        }
        got.sort_unstable();
        assert_eq!(got, vec![0, 1, 2, 3]);
    });
}

#[test]
fn a_panicking_job_is_contained() {
    let p = pool(1, 4);
    rt().block_on(async {
        let err = p.run("k", || -> u32 { panic!("boom") }).await.unwrap_err();
        assert_eq!(err, PoolError::Panicked("boom".into()));
        assert_eq!(p.run("k", || 7).await.unwrap(), 7, "the worker carries on");
    });
}

/// A job whose caller stopped waiting still runs; dropping the pool drains the queues.
#[test]
fn queued_jobs_run_even_when_the_caller_leaves_and_on_drop() {
    let done = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    {
        let p = pool(1, 16);
        rt().block_on(async {
            for _ in 0..5 {
                let d = done.clone();
                let fut = p.run("k", move || {
                    std::thread::sleep(Duration::from_millis(5));
                    d.fetch_add(1, Ordering::SeqCst);
                });
                // Queued, then abandoned.
                let _ = tokio::time::timeout(Duration::from_micros(1), fut).await;
            }
        });
    }
    assert_eq!(done.load(Ordering::SeqCst), 5);
}

#[test]
fn the_longest_running_job_is_reported() {
    let p = pool(2, 4);
    assert_eq!(p.longest_job(), None);
    rt().block_on(async {
        let (release, gate) = std::sync::mpsc::channel::<()>();
        let gate = Mutex::new(gate);
        let p2 = p.clone();
        let long = tokio::spawn(async move { p2.run("k", move || gate.lock().unwrap().recv().unwrap()).await });
        while p.longest_job().is_none() {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        tokio::time::sleep(Duration::from_millis(30)).await;
        assert!(p.longest_job().unwrap() >= Duration::from_millis(30));
        release.send(()).unwrap();
        long.await.unwrap().unwrap();
    });
    assert_eq!(p.longest_job(), None);
}
