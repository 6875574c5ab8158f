//! `metalcu serve` as an operator runs it: a child process configured only through the reference
//! CU's environment names, reaching a gateway (GraphQL + `/raw`, faked here in-process with the
//! real JSON shapes) and the scheduler that gateway points the process to (the real local SU
//! over HTTP). It locates the SU, fetches and caches the module, evaluates and serves results; a
//! bad setting stops it at start with a message naming the setting.

mod common;
#[path = "common/fake_gateway.rs"]
mod fake_gateway;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use base64::Engine as _;
use metalcu::su::local::{DEV_OWNER, LOCAL_SU_ADDRESS};
use metalcu::su::types::Tag;
use serde_json::Value;

fn tag(n: &str, v: &str) -> Tag {
    Tag { name: n.into(), value: v.into() }
}

fn wallet() -> String {
    let n = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode([9u8; 512]);
    format!(r#"{{"kty":"RSA","n":"{n}","e":"AQAB"}}"#)
}

struct Killed(Child);
impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// GET `path` on `addr` (HTTP/1.1, connection closed): status and JSON body.
fn get(addr: &str, path: &str) -> (u16, Value) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    write!(s, "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").unwrap();
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).unwrap();
    let text = String::from_utf8_lossy(&raw).to_string();
    let status = text.split_whitespace().nth(1).unwrap().parse().unwrap();
    let body = text.split_once("\r\n\r\n").map(|(_, b)| b).unwrap_or("");
    (status, serde_json::from_str(body).unwrap_or(Value::Null))
}

async fn serve_end_to_end(io: &str) {
    let dir = tempfile::tempdir().unwrap();
    let fake_gateway::EchoStack { su, module, gateway } = fake_gateway::start_echo_stack(dir.path()).await;
    let process_tags = vec![
        tag("Data-Protocol", "ao"),
        tag("Type", "Process"),
        tag("Module", &module),
        tag("Scheduler", LOCAL_SU_ADDRESS),
    ];
    let pid = su.spawn(DEV_OWNER, process_tags, String::new()).unwrap().process_id;
    let ids: Vec<String> = (0..3).map(|n| su.post(&pid, DEV_OWNER, vec![], format!("m{n}")).unwrap().id).collect();

    let mut child = Killed(
        Command::new(env!("CARGO_BIN_EXE_metalcu"))
            .arg("serve")
            .env_clear()
            .env("WALLET", wallet())
            .env("GATEWAY_URL", &gateway.url)
            .env("PORT", "0")
            .env("HOST", "127.0.0.1")
            .env("IO", io)
            .env("DATA_DIR", dir.path())
            .env("WASM_BINARY_FILE_DIRECTORY", dir.path().join("wasm"))
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap(),
    );
    let stdout = child.0.stdout.take().unwrap();
    let line = tokio::task::spawn_blocking(move || {
        let mut line = String::new();
        BufReader::new(stdout).read_line(&mut line).unwrap();
        line
    });
    let line = tokio::time::timeout(Duration::from_secs(60), line).await.expect("serve starts").unwrap();
    let addr = line.split("CU http://").nth(1).and_then(|r| r.split_whitespace().next()).expect(&line).to_string();

    let last = ids[2].clone();
    let (addr2, pid2) = (addr.clone(), pid.clone());
    let (status, body) =
        tokio::task::spawn_blocking(move || get(&addr2, &format!("/result/{last}?process-id={pid2}"))).await.unwrap();
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["Output"]["Data"], "m2");
    assert_eq!(body["Output"]["Target"], pid);
    let (addr2, pid2) = (addr.clone(), pid.clone());
    let (status, body) = tokio::task::spawn_blocking(move || get(&addr2, &format!("/results/{pid2}"))).await.unwrap();
    assert_eq!(status, 200);
    assert_eq!(body["edges"].as_array().unwrap().len(), 4, "spawn + 3 messages");
    let (status, body) = tokio::task::spawn_blocking(move || get(&addr, "/")).await.unwrap();
    assert_eq!(status, 200);
    let want = {
        use sha2::Digest;
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(sha2::Sha256::digest([9u8; 512]))
    };
    assert_eq!(body["address"], want, "the wallet's address");
    let cached = std::fs::read_dir(dir.path().join("wasm").join("modules")).unwrap().count();
    assert!(cached >= 1, "the module binary is cached on disk");
    assert_eq!(gateway.unexpected(), Vec::<String>::new(), "the CU asks the gateway only what it serves");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_locates_the_scheduler_through_the_gateway_and_serves_results_on_epoll() {
    serve_end_to_end("epoll").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_does_the_same_with_io_auto() {
    serve_end_to_end("auto").await;
}

#[test]
fn a_bad_setting_stops_serve_at_start_naming_it() {
    let run = |env: &[(&str, String)]| {
        let out = Command::new(env!("CARGO_BIN_EXE_metalcu"))
            .arg("serve")
            .env_clear()
            .envs(env.iter().map(|(k, v)| (k, v)))
            .output()
            .unwrap();
        assert!(!out.status.success());
        String::from_utf8_lossy(&out.stderr).to_string()
    };
    let err = run(&[("WALLET", wallet()), ("PORT", "sixty".into())]);
    assert!(err.contains("PORT = \"sixty\" (environment): expected an integer"), "{err}");
    let err = run(&[]);
    assert!(err.contains("WALLET") && err.contains("required"), "{err}");
    let err = run(&[("WALLET", wallet()), ("GATEWAY_URL", "arweave.net".into())]);
    assert!(err.contains("GATEWAY_URL"), "{err}");
    let out = Command::new(env!("CARGO_BIN_EXE_metalcu")).args(["serve", "--help"]).output().unwrap();
    let help = String::from_utf8_lossy(&out.stdout);
    for name in [
        "PORT",
        "GATEWAY_URL",
        "GRAPHQL_URL",
        "CHECKPOINT_GRAPHQL_URL",
        "UPLOADER_URL",
        "WALLET_FILE",
        "PROCESS_WASM_MEMORY_MAX_LIMIT",
        "PROCESS_WASM_COMPUTE_MAX_LIMIT",
        "IO",
    ] {
        assert!(help.contains(&format!("[env: {name}]")), "serve --help documents {name}");
    }
}

/// The check above is not vacuous: the gateway fake keeps what a CU should not ask, answered as
/// a gateway would (a GraphQL error, no edges, 404), and serves what it should.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_gateway_fake_records_requests_a_cu_should_not_make() {
    let dir = tempfile::tempdir().unwrap();
    let stack = fake_gateway::start_echo_stack(dir.path()).await;
    let addr: std::net::SocketAddr = stack.gateway.url.strip_prefix("http://").unwrap().parse().unwrap();
    let ask = |query: &str, variables: serde_json::Value| serde_json::json!({ "query": query, "variables": variables });
    let local = ask("query GetSchedulerLocation", serde_json::json!({ "owner": LOCAL_SU_ADDRESS }));
    let (status, found) = common::http::http(addr, "POST", "/graphql", Some(&local)).await;
    assert_eq!(status, 200);
    assert_eq!(found["data"]["transactions"]["edges"].as_array().unwrap().len(), 1, "{found}");
    let (status, _) = common::http::http(addr, "GET", &format!("/raw/{}", stack.module), None).await;
    assert_eq!(status, 200, "the module binary");
    assert_eq!(stack.gateway.unexpected(), Vec::<String>::new());

    let other = ask("query GetSchedulerLocation", serde_json::json!({ "owner": "someone-else" }));
    let (status, none) = common::http::http(addr, "POST", "/graphql", Some(&other)).await;
    assert_eq!((status, none["data"]["transactions"]["edges"].as_array().unwrap().len()), (200, 0));
    let (status, refused) = common::http::http(addr, "POST", "/graphql", Some(&ask("query Other", Value::Null))).await;
    assert_eq!(status, 400);
    assert!(refused["errors"][0]["message"].as_str().unwrap().contains("query Other"), "{refused}");
    let (status, _) = common::http::http(addr, "GET", "/elsewhere", None).await;
    assert_eq!(status, 404);
    let seen = stack.gateway.unexpected();
    assert_eq!(seen.len(), 3, "{seen:?}");
    assert!(seen[0].contains("someone-else") && seen[1].contains("query Other") && seen[2].contains("/elsewhere"));
}
