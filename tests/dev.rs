//! `metalcu dev` end to end on 127.0.0.1: post messages to the local scheduler over HTTP, read
//! their results, list them, dry-run against the latest state, and restart on the same data
//! directory with every result and the process kept.

mod common;

use common::http::http;
use metalcu::dev::{DevConfig, start};
use serde_json::json;

fn cfg(dir: &std::path::Path) -> DevConfig {
    DevConfig::new(dir)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dev_stack_serves_results_and_survives_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let dev = start(cfg(dir.path())).await.unwrap();
    let pid = dev.pid.clone();
    let mut ids = Vec::new();
    for n in 0..3 {
        let post =
            json!({ "process": pid, "tags": [{ "name": "Action", "value": "Echo" }], "data": format!("hello {n}") });
        let (status, posted) = http(dev.su_addr, "POST", "/", Some(&post)).await;
        assert_eq!(status, 200, "{posted}");
        assert_eq!(posted["nonce"], n + 1);
        ids.push(posted["id"].as_str().unwrap().to_string());
    }
    // The echo module answers with the message the CU built: check the CU's msg shape.
    let (status, result) = http(dev.cu_addr, "GET", &format!("/result/{}?process-id={pid}", ids[1]), None).await;
    assert_eq!(status, 200, "{result}");
    let msg = &result["Output"];
    assert_eq!(msg["Id"], ids[1]);
    assert_eq!(msg["Data"], "hello 1");
    assert_eq!(msg["Target"], pid);
    assert_eq!(msg["Nonce"], 2);
    assert_eq!(msg["Cron"], false);
    assert_eq!(msg["Read-Only"], false);
    let keys: Vec<&str> = msg.as_object().unwrap().keys().map(String::as_str).collect();
    assert_eq!(
        keys,
        [
            "Id",
            "Signature",
            "Data",
            "Owner",
            "Target",
            "Anchor",
            "From",
            "Tags",
            "Epoch",
            "Nonce",
            "Timestamp",
            "Block-Height",
            "Hash-Chain",
            "Cron",
            "Read-Only"
        ]
    );
    for k in ["Messages", "Assignments", "Spawns"] {
        assert_eq!(result[k], json!([]));
    }
    // Everything evaluated so far is listed, in order, with cursors that page.
    let (status, page) = http(dev.cu_addr, "GET", &format!("/results/{pid}?limit=2"), None).await;
    assert_eq!(status, 200);
    assert_eq!(page["pageInfo"]["hasNextPage"], true);
    let cursor = page["edges"][1]["cursor"].as_str().unwrap().to_string();
    let (_, rest) = http(dev.cu_addr, "GET", &format!("/results/{pid}?from={cursor}"), None).await;
    assert_eq!(rest["edges"].as_array().unwrap().len(), 1, "spawn + first two, then the third: {rest}");
    // Dry-run sees the latest state, stores nothing.
    let dry = json!({ "Id": "1234", "Owner": "1234", "Data": "peek", "Tags": [{ "name": "Action", "value": "Peek" }] });
    let (status, out) = http(dev.cu_addr, "POST", &format!("/dry-run?process-id={pid}"), Some(&dry)).await;
    assert_eq!(status, 200, "{out}");
    assert_eq!(out["Output"]["Read-Only"], true);
    assert_eq!(out["Output"]["From"], "1234");
    let keys: Vec<&str> = out["Output"].as_object().unwrap().keys().map(String::as_str).collect();
    assert_eq!(
        keys,
        ["Id", "Data", "Owner", "Target", "From", "Tags", "Timestamp", "Block-Height", "Cron", "Read-Only"]
    );
    let (_, after) = http(dev.cu_addr, "GET", &format!("/results/{pid}"), None).await;
    assert_eq!(after["edges"].as_array().unwrap().len(), 4, "spawn + 3 messages; the dry-run left nothing");
    // Unknown message and bad input.
    let (status, err) = http(dev.cu_addr, "GET", &format!("/result/{}?process-id={pid}", "x".repeat(43)), None).await;
    assert_eq!(status, 404, "{err}");
    assert!(err["error"].is_string());
    dev.stop().await.unwrap();

    // Restart on the same directory: same process, results served from the store.
    let dev = start(cfg(dir.path())).await.unwrap();
    assert_eq!(dev.pid, pid);
    let (status, again) = http(dev.cu_addr, "GET", &format!("/result/{}?process-id={pid}", ids[1]), None).await;
    assert_eq!(status, 200);
    assert_eq!(again, result, "a stored result is never rewritten");
    let post = json!({ "process": pid, "tags": [], "data": "after restart" });
    let (_, posted) = http(dev.su_addr, "POST", "/", Some(&post)).await;
    assert_eq!(posted["nonce"], 4, "the scheduler's log survived the restart");
    let (status, r) =
        http(dev.cu_addr, "GET", &format!("/result/{}?process-id={pid}", posted["id"].as_str().unwrap()), None).await;
    assert_eq!(status, 200, "{r}");
    assert_eq!(r["Output"]["Data"], "after restart");
    dev.stop().await.unwrap();
}
