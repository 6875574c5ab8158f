//! `GET /metrics` after real evaluations through the HTTP API of a `metalcu dev` stack (a
//! metering module, so gas is real), SU fetch metrics per transport through the real SU client,
//! and `--log-format json` from the real binary.

mod common;

use std::sync::Arc;

use metalcu::dev::{DevConfig, start};
use metalcu::engine::ModuleFormat;
use metalcu::metrics::Metrics;
use metalcu::net::fetch::Fetcher;
use metalcu::net::{AnyTransport, IoMode};
use metalcu::su::client::{ClientConfig, HttpScheduler, SU_PEER};
use metalcu::su::local::{LocalScheduler, system_clock};
use metalcu::su::scheduler::Scheduler;
use metalcu::su::types::Tag;
use serde_json::{Value, json};

/// One HTTP/1.1 request with `Connection: close`; returns (status, content type, body text).
async fn http(addr: std::net::SocketAddr, method: &str, path: &str, body: Option<&Value>) -> (u16, String, String) {
    let reply = common::http::request(addr, method, path, body).await;
    (reply.status, reply.content_type(), reply.body)
}

async fn get_json(addr: std::net::SocketAddr, path: &str) -> (u16, Value) {
    common::http::http(addr, "GET", path, None).await
}

/// The value of the sample `series` (name with labels, exactly as exposed), 0 if absent.
fn sample(text: &str, series: &str) -> f64 {
    text.lines()
        .filter_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .map(|v| v.trim().parse::<f64>().unwrap())
        .next()
        .unwrap_or(0.0)
}

/// The echo module as `wasm32-unknown-emscripten-metering`: instrumented at load, so every call
/// uses gas.
fn metering_echo(dir: &std::path::Path) -> DevConfig {
    let wasm = wat::parse_str(common::echo_wat("", "", "")).unwrap();
    let path = dir.join("echo.wasm");
    std::fs::write(&path, wasm).unwrap();
    DevConfig { module: Some((path, ModuleFormat::Emscripten4Metering)), ..DevConfig::new(dir.join("data")) }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_the_evaluations_gas_and_responses_served() {
    let dir = tempfile::tempdir().unwrap();
    let dev = start(metering_echo(dir.path())).await.unwrap();
    let pid = dev.pid.clone();
    let (status, ctype, before) = http(dev.cu_addr, "GET", "/metrics", None).await;
    assert_eq!(status, 200);
    assert!(ctype.starts_with("application/openmetrics-text"), "{ctype}");
    assert!(before.ends_with("# EOF\n"), "{before}");
    assert_eq!(sample(&before, "metalcu_evaluations_total{outcome=\"ok\"}"), 0.0);

    let mut ids = Vec::new();
    for n in 0..4 {
        let post = json!({ "process": pid, "tags": [{ "name": "Action", "value": "Echo" }], "data": format!("m{n}") });
        let (status, _, posted) = http(dev.su_addr, "POST", "/", Some(&post)).await;
        assert_eq!(status, 200, "{posted}");
        ids.push(serde_json::from_str::<Value>(&posted).unwrap()["id"].as_str().unwrap().to_string());
    }
    // The last result evaluates the spawn message and all four.
    let (status, last) = get_json(dev.cu_addr, &format!("/result/{}?process-id={pid}", ids[3])).await;
    assert_eq!(status, 200, "{last}");
    let mut gas = 0u64;
    for id in std::iter::once(&pid).chain(&ids) {
        let (status, r) = get_json(dev.cu_addr, &format!("/result/{id}?process-id={pid}")).await;
        assert_eq!(status, 200, "{r}");
        gas += r["GasUsed"].as_u64().unwrap_or_else(|| panic!("GasUsed in {r}"));
    }
    assert!(gas > 0, "the metering module uses gas");
    let (status, _) = get_json(dev.cu_addr, "/nope").await;
    assert_eq!(status, 404);
    let (status, _) = get_json(dev.cu_addr, &format!("/result/{}?process-id={pid}", "x".repeat(43))).await;
    assert_eq!(status, 404);
    let dry = json!({ "Id": "1234", "Owner": "1234", "Data": "peek", "Tags": [] });
    let (status, _, _) = http(dev.cu_addr, "POST", &format!("/dry-run?process-id={pid}"), Some(&dry)).await;
    assert_eq!(status, 200);

    let (_, _, text) = http(dev.cu_addr, "GET", "/metrics", None).await;
    assert_eq!(sample(&text, "metalcu_evaluations_total{outcome=\"ok\"}"), 5.0, "spawn + 4 messages:\n{text}");
    assert_eq!(sample(&text, "metalcu_evaluations_total{outcome=\"error\"}"), 0.0);
    assert_eq!(sample(&text, "metalcu_evaluation_duration_seconds_count"), 5.0);
    assert!(sample(&text, "metalcu_evaluation_duration_seconds_sum") > 0.0);
    assert_eq!(sample(&text, "metalcu_gas_used_total"), gas as f64, "the sum of the stored GasUsed");
    assert_eq!(sample(&text, "metalcu_dry_runs_total{outcome=\"ok\"}"), 1.0);
    assert!(sample(&text, "metalcu_dry_run_gas_used_total") > 0.0);
    assert_eq!(sample(&text, "metalcu_resident_processes"), 1.0);
    assert_eq!(sample(&text, "metalcu_evictions_total"), 0.0);
    assert_eq!(sample(&text, "metalcu_http_responses_total{route=\"result\",status=\"200\"}"), 6.0);
    assert_eq!(sample(&text, "metalcu_http_responses_total{route=\"result\",status=\"404\"}"), 1.0);
    assert_eq!(sample(&text, "metalcu_http_responses_total{route=\"none\",status=\"404\"}"), 1.0);
    assert_eq!(sample(&text, "metalcu_http_responses_total{route=\"dry_run\",status=\"200\"}"), 1.0);
    assert_eq!(sample(&text, "metalcu_http_responses_total{route=\"metrics\",status=\"200\"}"), 1.0);
    for family in ["metalcu_checkpoint_write_duration_seconds", "metalcu_checkpoint_restore_duration_seconds"] {
        assert!(text.contains(&format!("# TYPE {family} histogram")), "{family} is exposed");
    }
    // Stored results are served without evaluating again.
    let (_, _) = get_json(dev.cu_addr, &format!("/result/{}?process-id={pid}", ids[0])).await;
    let (_, _, again) = http(dev.cu_addr, "GET", "/metrics", None).await;
    assert_eq!(sample(&again, "metalcu_evaluations_total{outcome=\"ok\"}"), 5.0);
    dev.stop().await.unwrap();
}

async fn su_fetches_are_counted_per_transport(mode: IoMode) {
    if common::uring::skipped(mode) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let su = Arc::new(LocalScheduler::open(dir.path().join("su.redb"), system_clock()).unwrap());
    let tags = vec![
        Tag { name: "Data-Protocol".into(), value: "ao".into() },
        Tag { name: "Type".into(), value: "Process".into() },
        Tag { name: "Module".into(), value: "bkjb55i07GUCUSWROtKK4HU1mBS_X0TyH3M5jMV6aPg".into() },
    ];
    let pid = su.spawn(metalcu::su::local::DEV_OWNER, tags, String::new()).unwrap().process_id;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(metalcu::su::local_http::serve(listener, su, async {
        let _ = rx.await;
    }));
    let metrics = Arc::new(Metrics::new());
    let cfg = ClientConfig { retries: 0, ..ClientConfig::default() };
    let transport = Arc::new(AnyTransport::new(mode, cfg.request_timeout).unwrap());
    let fetcher = Fetcher::new(transport, cfg, SU_PEER).with_su_metrics(metrics.clone());
    let client = HttpScheduler::with_fetcher(&format!("http://{addr}"), Arc::new(fetcher)).unwrap();
    let name = client.transport_name();
    client.process(&pid).await.unwrap();
    client.process(&pid).await.unwrap();
    assert!(client.process(&"y".repeat(43)).await.is_err());
    let text = metrics.encode();
    assert_eq!(sample(&text, &format!("metalcu_su_fetch_duration_seconds_count{{transport=\"{name}\"}}")), 3.0);
    assert_eq!(
        sample(&text, &format!("metalcu_su_fetch_errors_total{{transport=\"{name}\",kind=\"not_found\"}}")),
        1.0,
        "{text}"
    );
    // A scheduler that is gone: unavailable.
    let _ = tx.send(());
    server.await.unwrap().unwrap();
    assert!(client.process(&pid).await.is_err());
    let text = metrics.encode();
    assert_eq!(
        sample(&text, &format!("metalcu_su_fetch_errors_total{{transport=\"{name}\",kind=\"unavailable\"}}")),
        1.0,
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn su_fetch_metrics_epoll() {
    su_fetches_are_counted_per_transport(IoMode::Epoll).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn su_fetch_metrics_uring() {
    su_fetches_are_counted_per_transport(IoMode::Uring).await;
}

/// Reads the first stdout line of a `metalcu dev` child: `metalcu dev: CU http://A  scheduler http://B …`.
fn addresses(line: &str) -> (String, String) {
    let mut urls = line.split_whitespace().filter(|w| w.starts_with("http://"));
    (urls.next().unwrap().to_string(), urls.next().unwrap().to_string())
}

#[test]
fn json_logs_carry_process_and_message_ids() {
    use std::io::{BufRead, Read};
    let dir = tempfile::tempdir().unwrap();
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_metalcu"))
        .args(["dev", "--port", "0", "--su-port", "0", "--log-format", "json", "--data-dir"])
        .arg(dir.path())
        .env("RUST_LOG", "warn,metalcu=debug")
        .env_remove("LOG_FORMAT")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = std::io::BufReader::new(child.stdout.take().unwrap());
    let mut first = String::new();
    out.read_line(&mut first).unwrap();
    let mut second = String::new();
    out.read_line(&mut second).unwrap();
    let (cu, su) = addresses(&first);
    let pid = second.split_whitespace().nth(1).unwrap().to_string();
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let message_id = rt.block_on(async {
        let su: std::net::SocketAddr = su.trim_start_matches("http://").parse().unwrap();
        let cu: std::net::SocketAddr = cu.trim_start_matches("http://").parse().unwrap();
        let post = json!({ "process": pid, "tags": [], "data": "logged" });
        let (_, _, posted) = http(su, "POST", "/", Some(&post)).await;
        let id = serde_json::from_str::<Value>(&posted).unwrap()["id"].as_str().unwrap().to_string();
        let (status, r) = get_json(cu, &format!("/result/{id}?process-id={pid}")).await;
        assert_eq!(status, 200, "{r}");
        id
    });
    // SIGINT: `dev` stops gracefully and its stderr ends.
    assert_eq!(unsafe { libc::kill(child.id() as i32, libc::SIGINT) }, 0);
    let mut err = String::new();
    child.stderr.take().unwrap().read_to_string(&mut err).unwrap();
    assert!(child.wait().unwrap().success(), "{err}");
    let lines: Vec<Value> = err
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not a JSON line ({e}): {l}")))
        .collect();
    let evaluated: Vec<&Value> = lines.iter().filter(|l| l["message"] == "evaluated").collect();
    assert!(
        evaluated.iter().any(|l| l["process_id"] == pid.as_str() && l["message_id"] == message_id.as_str()),
        "no evaluation event for {message_id}: {err}"
    );
    for l in &evaluated {
        assert_eq!(l["level"], "DEBUG");
        assert_eq!(l["process_id"], pid.as_str());
        assert!(l["timestamp"].is_string() && l["gas"].is_u64() && l["wall_us"].is_u64(), "{l}");
    }
}

#[test]
fn a_bad_log_format_is_refused_naming_the_setting() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_metalcu"))
        .args(["doctor", "--json"])
        .env("LOG_FORMAT", "xml")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("LOG_FORMAT (environment)") && err.contains("xml"), "{err}");
    let help = std::process::Command::new(env!("CARGO_BIN_EXE_metalcu")).args(["serve", "--help"]).output().unwrap();
    let help = String::from_utf8_lossy(&help.stdout);
    assert!(help.contains("--log-format") && help.contains("LOG_FORMAT"), "{help}");
}
