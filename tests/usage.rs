//! Usage accounting: the store's sums are exactly the sums over the evaluations inserted (both
//! stores), never double-counted on an identical re-store or a refused one, durable across a
//! reopen, rebuilt when a schema-1 store is upgraded; and `GET /usage/:pid`, `GET /usage` on a
//! `metalcu dev` stack after real evaluations, across a restart, with dry-runs left out.

mod common;

use common::http::http;
use metalcu::dev::{DevConfig, start};
use metalcu::engine::ModuleFormat;
use metalcu::store::{Evaluation, MemoryStore, Position, RedbStore, Store, Usage, UsageSums, UsageTotals};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn eval(pid: &str, nonce: u64, gas: u64, usage: Usage) -> Evaluation {
    Evaluation {
        process_id: pid.into(),
        message_id: Some(format!("{pid}-m{nonce}")),
        position: Position { timestamp: 1_000 + nonce as i64, nonce, cron: None },
        block_height: 7,
        result: json!({"Messages": [], "Assignments": [], "Spawns": [], "Output": format!("{nonce}"), "GasUsed": gas}),
        state_hash: [nonce as u8; 32],
        gas,
        usage,
    }
}

fn usage(n: u64) -> Usage {
    Usage { cpu_us: 100 + n, wall_us: 250 + 3 * n, memory_bytes: (n + 1) << 16 }
}

fn sums_of(es: &[Evaluation]) -> UsageSums {
    let mut s = UsageSums::default();
    for e in es {
        s.messages += 1;
        s.gas += e.gas;
        s.cpu_us += e.usage.cpu_us;
        s.wall_us += e.usage.wall_us;
        s.memory_byte_us += u128::from(e.usage.memory_bytes) * u128::from(e.usage.wall_us);
    }
    s
}

/// Sums follow inserts only: identical re-stores (even measured differently), conflicts and
/// duplicates inside a batch add nothing.
fn sums_are_the_sums_of_inserted_evaluations(store: &dyn Store) {
    assert_eq!(store.usage("a").unwrap(), None);
    assert_eq!(store.usage_totals().unwrap(), UsageTotals::default());
    let a: Vec<Evaluation> = (1..=5).map(|n| eval("a", n, 1_000 * n, usage(n))).collect();
    let b: Vec<Evaluation> = (1..=3).map(|n| eval("b", n, 7 * n, usage(10 + n))).collect();
    store.put_batch(&a[..3]).unwrap();
    store.put(&b[0]).unwrap();
    store.put_batch(&[a[3].clone(), b[1].clone(), a[4].clone(), b[2].clone()]).unwrap();
    assert_eq!(store.usage("a").unwrap(), Some(sums_of(&a)));
    assert_eq!(store.usage("b").unwrap(), Some(sums_of(&b)));
    let mut all = sums_of(&a);
    all.merge(&sums_of(&b));
    assert_eq!(store.usage_totals().unwrap(), UsageTotals { processes: 2, sums: all });

    // The same evaluations again, measured differently: no-ops, nothing added.
    let again: Vec<Evaluation> = a.iter().map(|e| Evaluation { usage: usage(99), ..e.clone() }).collect();
    store.put_batch(&again).unwrap();
    store.put(&again[0]).unwrap();
    // A conflicting evaluation at a stored position is refused and adds nothing.
    let mut conflict = a[1].clone();
    conflict.gas += 1;
    assert!(store.put(&conflict).is_err());
    assert_eq!(store.usage("a").unwrap(), Some(sums_of(&a)));
    assert_eq!(store.usage_totals().unwrap(), UsageTotals { processes: 2, sums: all });
    // Reads never return usage (it is summed, not kept per row).
    assert_eq!(store.by_message("a", "a-m1").unwrap().unwrap().usage, Usage::default());
}

#[test]
fn memory_store_sums_inserted_evaluations() {
    sums_are_the_sums_of_inserted_evaluations(&MemoryStore::new());
}

#[test]
fn redb_store_sums_inserted_evaluations_and_keeps_them_across_a_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("cu.redb");
    let (a, b, totals) = {
        let store = RedbStore::open(&path).unwrap();
        sums_are_the_sums_of_inserted_evaluations(&store);
        (store.usage("a").unwrap(), store.usage("b").unwrap(), store.usage_totals().unwrap())
    };
    let store = RedbStore::open(&path).unwrap();
    assert_eq!(store.usage("a").unwrap(), a);
    assert_eq!(store.usage("b").unwrap(), b);
    assert_eq!(store.usage_totals().unwrap(), totals);
}

#[test]
fn a_schema_1_store_is_upgraded_with_sums_rebuilt_from_its_rows() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("cu.redb");
    let es: Vec<Evaluation> =
        (1..=4).map(|n| eval(if n % 2 == 0 { "even" } else { "odd" }, n, 10 * n, usage(n))).collect();
    {
        let store = RedbStore::open(&path).unwrap();
        store.put_batch(&es).unwrap();
    }
    // Make it what schema 1 wrote: no usage tables, schema 1.
    {
        let db = redb::Database::create(&path).unwrap();
        let txn = db.begin_write().unwrap();
        txn.delete_table(redb::TableDefinition::<&str, &[u8]>::new("usage")).unwrap();
        txn.delete_table(redb::TableDefinition::<&str, &[u8]>::new("usage_totals")).unwrap();
        txn.open_table(redb::TableDefinition::<&str, u64>::new("meta")).unwrap().insert("schema", 1).unwrap();
        txn.commit().unwrap();
    }
    let store = RedbStore::open(&path).unwrap();
    let rebuilt = |pid: &str| {
        let mut s = UsageSums::default();
        for e in es.iter().filter(|e| e.process_id == pid) {
            s.add(e.gas, &Usage::default());
        }
        s
    };
    assert_eq!(store.usage("odd").unwrap(), Some(rebuilt("odd")));
    assert_eq!(store.usage("even").unwrap(), Some(rebuilt("even")));
    assert_eq!(store.usage_totals().unwrap().processes, 2);
    assert_eq!(store.usage_totals().unwrap().sums.gas, 100);
    drop(store);
    // Upgraded once: a second open changes nothing, new evaluations add to the rebuilt sums.
    let store = RedbStore::open(&path).unwrap();
    store.put(&eval("odd", 9, 5, usage(9))).unwrap();
    let mut want = rebuilt("odd");
    want.add(5, &usage(9));
    assert_eq!(store.usage("odd").unwrap(), Some(want));
}

async fn metrics_sum(addr: std::net::SocketAddr, series: &str) -> f64 {
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(format!("GET /metrics HTTP/1.1\r\nhost: {addr}\r\nconnection: close\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut raw = String::new();
    s.read_to_string(&mut raw).await.unwrap();
    raw.lines().find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.trim().parse().ok()).unwrap_or(0.0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn usage_routes_serve_the_sums_of_real_evaluations_across_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let wasm = wat::parse_str(common::echo_wat("", "", "")).unwrap();
    let module = dir.path().join("echo.wasm");
    std::fs::write(&module, wasm).unwrap();
    let cfg = DevConfig {
        module: Some((module, ModuleFormat::Emscripten4Metering)),
        ..DevConfig::new(dir.path().join("data"))
    };
    let dev = start(cfg.clone()).await.unwrap();
    let pid = dev.pid.clone();
    let (status, none) = http(dev.cu_addr, "GET", &format!("/usage/{pid}"), None).await;
    assert_eq!(status, 404, "nothing evaluated yet: {none}");
    assert!(none["error"].as_str().unwrap().contains(&pid));
    let mut last = String::new();
    for n in 0..3 {
        let post = json!({ "process": pid, "tags": [], "data": format!("bill me {n}") });
        let (_, posted) = http(dev.su_addr, "POST", "/", Some(&post)).await;
        last = posted["id"].as_str().unwrap().to_string();
    }
    let (status, _) = http(dev.cu_addr, "GET", &format!("/result/{last}?process-id={pid}"), None).await;
    assert_eq!(status, 200);
    let (_, page) = http(dev.cu_addr, "GET", &format!("/results/{pid}"), None).await;
    let evaluated = page["edges"].as_array().unwrap().len() as u64;
    assert_eq!(evaluated, 4, "spawn + 3");
    let mut gas = 0;
    // GasUsed of every stored evaluation, read one by one.
    let (_, all) = http(dev.cu_addr, "GET", &format!("/results/{pid}?limit=100"), None).await;
    assert_eq!(all["edges"].as_array().unwrap().len() as u64, evaluated);
    for id in ids_of(dev.su_addr, &pid).await {
        let (status, r) = http(dev.cu_addr, "GET", &format!("/result/{id}?process-id={pid}"), None).await;
        assert_eq!(status, 200, "{r}");
        gas += r["GasUsed"].as_u64().unwrap();
    }
    let (status, u) = http(dev.cu_addr, "GET", &format!("/usage/{pid}"), None).await;
    assert_eq!(status, 200, "{u}");
    let keys: Vec<&str> = u.as_object().unwrap().keys().map(String::as_str).collect();
    assert_eq!(keys, ["process_id", "messages", "gas_used", "cpu_time_us", "wall_time_us", "memory_byte_seconds"]);
    assert_eq!(u["process_id"], pid.as_str());
    assert_eq!(u["messages"], evaluated);
    assert!(gas > 0);
    assert_eq!(u["gas_used"], gas, "the sum of the stored GasUsed");
    // Wall time is the sum the latency histogram saw (µs per call, rounded down, vs seconds).
    let wall_us = u["wall_time_us"].as_u64().unwrap();
    let hist_us = metrics_sum(dev.cu_addr, "metalcu_evaluation_duration_seconds_sum").await * 1e6;
    assert!((wall_us as f64 - hist_us).abs() <= evaluated as f64 + 1.0, "{wall_us} µs vs histogram {hist_us} µs");
    // The echo module's memory never grows, so memory-time is its size × the wall time.
    let (status, state) = {
        let mut s = tokio::net::TcpStream::connect(dev.cu_addr).await.unwrap();
        let req = format!("GET /state/{pid} HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n");
        s.write_all(req.as_bytes()).await.unwrap();
        let mut raw = Vec::new();
        s.read_to_end(&mut raw).await.unwrap();
        let at = raw.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
        (String::from_utf8_lossy(&raw[9..12]).parse::<u16>().unwrap(), raw[at..].len() as u128)
    };
    assert_eq!(status, 200);
    assert_eq!(u["memory_byte_seconds"], (state * u128::from(wall_us) / 1_000_000) as u64);

    // Dry-runs are not billed here (they are in /metrics).
    let dry = json!({ "Id": "1234", "Owner": "1234", "Data": "free", "Tags": [] });
    let (status, _) = http(dev.cu_addr, "POST", &format!("/dry-run?process-id={pid}"), Some(&dry)).await;
    assert_eq!(status, 200);
    let (_, after_dry) = http(dev.cu_addr, "GET", &format!("/usage/{pid}"), None).await;
    assert_eq!(after_dry, u);

    let (status, totals) = http(dev.cu_addr, "GET", "/usage", None).await;
    assert_eq!(status, 200);
    let mut want = u.clone();
    want.as_object_mut().unwrap().remove("process_id");
    let mut got = totals.clone();
    assert_eq!(got.as_object_mut().unwrap().remove("processes"), Some(json!(1)));
    assert_eq!(got, want);

    let (status, e) = http(dev.cu_addr, "GET", &format!("/usage/{}", "z".repeat(43)), None).await;
    assert_eq!(status, 404, "{e}");
    assert!(e["error"].is_string());
    let (status, e) = http(dev.cu_addr, "GET", "/usage/not-an-id", None).await;
    assert_eq!(status, 400, "{e}");
    assert!(e["error"].as_str().unwrap().contains("processId"));
    dev.stop().await.unwrap();

    // A restart reads the same sums from the store.
    let dev = start(cfg).await.unwrap();
    let (status, again) = http(dev.cu_addr, "GET", &format!("/usage/{pid}"), None).await;
    assert_eq!(status, 200);
    assert_eq!(again, u);
    let (_, totals_again) = http(dev.cu_addr, "GET", "/usage", None).await;
    assert_eq!(totals_again, totals);
    dev.stop().await.unwrap();
}

/// Ids of the process's messages (its own spawn first), from the scheduler's page.
async fn ids_of(su: std::net::SocketAddr, pid: &str) -> Vec<String> {
    let (status, page) = http(su, "GET", &format!("/{pid}"), None).await;
    assert_eq!(status, 200, "{page}");
    page["edges"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            let node = &e["node"];
            node["message"]["id"].as_str().or(node["assignment"]["id"].as_str()).unwrap().to_string()
        })
        .collect()
}
