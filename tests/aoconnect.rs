//! The real `@permaweb/aoconnect` (npm, pinned in tests/aoconnect/package-lock.json) against
//! `metalcu dev` running aos: its `result`, `results` and `dryrun` in legacy mode, through
//! tests/aoconnect/run.mjs, must return what the CU serves, with aos's real output.
//!
//! Each test starts `metalcu dev` as a child process on ports 0 with a fresh data directory,
//! posts aos `Eval` messages to its scheduler, runs the node script and compares what aoconnect
//! returned with the CU's own HTTP answers. Needs `../shared` (the aos module) and node + npm:
//! `npm ci` runs here if `.ci/run` has not already installed the packages. Without node, npm or
//! `../shared` the tests say so loudly and do not run, except under `CI`, where they fail.
//! Every wait is bounded and the child is killed even when a test fails.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::OnceLock;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use base64::Engine as _;
use serde_json::{Value, json};

/// The owner of the dev process and of every message posted without `owner` (aos evaluates
/// `Eval` only from its owner).
const OWNER: &str = metalcu::su::local::DEV_OWNER;

/// The aos `Eval`s every test posts, in order: a number, a global set, a Lua error, the global.
const EVALS: [&str; 4] = ["1 + 41", "Counter = 7", "error('boom')", "Counter"];

/// Bound on `metalcu dev` printing where it listens.
const START_TIMEOUT: Duration = Duration::from_secs(60);
/// Bound on one HTTP exchange with the CU or the scheduler (the first evaluation compiles aos).
const HTTP_TIMEOUT: Duration = Duration::from_secs(180);
/// Bound on one run of the node script.
const NODE_TIMEOUT: Duration = Duration::from_secs(180);
/// Bound on `npm ci`.
const NPM_TIMEOUT: Duration = Duration::from_secs(600);

// ---------------------------------------------------------------------------------------------
// Processes with bounded waits

/// Runs `cmd` to completion within `limit` (killed then, and the test fails); returns its exit
/// status, stdout and stderr. Both pipes are drained while it runs, so it never blocks on them.
fn run_bounded(mut cmd: Command, limit: Duration, what: &str) -> (ExitStatus, String, String) {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{what}: cannot start: {e}"));
    let drain = |mut r: Box<dyn Read + Send>| {
        std::thread::spawn(move || {
            let mut s = Vec::new();
            let _ = r.read_to_end(&mut s);
            String::from_utf8_lossy(&s).into_owned()
        })
    };
    let out = drain(Box::new(child.stdout.take().unwrap()));
    let err = drain(Box::new(child.stderr.take().unwrap()));
    let deadline = Instant::now() + limit;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            let err = err.join().unwrap_or_default();
            panic!("{what}: still running after {limit:?}, killed; stderr:\n{err}");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    (status, out.join().unwrap_or_default(), err.join().unwrap_or_default())
}

/// Whether `program --version` runs.
fn runs(program: &str) -> bool {
    Command::new(program)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// tests/aoconnect with its npm packages installed (`npm ci` once per test binary if missing);
/// `None` (said loudly) when node or npm is missing outside CI. Panics under CI instead.
fn aoconnect_dir() -> Option<PathBuf> {
    static DIR: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    let got = DIR.get_or_init(|| {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/aoconnect");
        let installed = dir.join("node_modules/@permaweb/aoconnect/package.json");
        if !runs("node") {
            return Err("node not found on PATH".into());
        }
        if !installed.is_file() {
            if !runs("npm") {
                return Err("npm not found on PATH (and tests/aoconnect/node_modules is not installed)".into());
            }
            let mut npm = Command::new("npm");
            npm.args(["ci", "--ignore-scripts", "--no-audit", "--no-fund"]).current_dir(&dir);
            let (status, out, err) = run_bounded(npm, NPM_TIMEOUT, "npm ci in tests/aoconnect");
            assert!(status.success(), "npm ci in {} failed ({status}):\n{out}\n{err}", dir.display());
            assert!(installed.is_file(), "npm ci did not install @permaweb/aoconnect in {}", dir.display());
        }
        Ok(dir)
    });
    match got {
        Ok(dir) => Some(dir.clone()),
        Err(why) if std::env::var_os("CI").is_some() => {
            panic!("aoconnect end-to-end tests: {why}; CI requires node and npm (Node 20)")
        }
        Err(why) => {
            // Straight to the process's stderr: the test harness captures `eprintln!`.
            let _ = writeln!(
                std::io::stderr(),
                "\n*** SKIPPED: the aoconnect end-to-end test did NOT run: {why}. Install Node 20 + npm. ***\n"
            );
            None
        }
    }
}

/// A running `metalcu dev`; killed (and reaped) when dropped. On a failing test its stderr is
/// printed.
struct DevChild {
    child: Child,
    stderr_log: PathBuf,
}

impl Drop for DevChild {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            let log = std::fs::read_to_string(&self.stderr_log).unwrap_or_default();
            let tail: String = log.chars().rev().take(8000).collect::<Vec<_>>().into_iter().rev().collect();
            eprintln!("--- metalcu dev stderr (tail) ---\n{tail}\n---");
        }
    }
}

// ---------------------------------------------------------------------------------------------
// A tiny blocking HTTP/1.1 client

/// One request with `Connection: close`; returns (status, JSON body — or the text as a string).
fn http(addr: &str, method: &str, target: &str, body: Option<&Value>) -> (u16, Value) {
    let sock = addr.to_socket_addrs().unwrap().next().unwrap();
    let mut s =
        TcpStream::connect_timeout(&sock, Duration::from_secs(10)).unwrap_or_else(|e| panic!("connect {addr}: {e}"));
    s.set_read_timeout(Some(HTTP_TIMEOUT)).unwrap();
    s.set_write_timeout(Some(Duration::from_secs(10))).unwrap();
    let body = body.map(Value::to_string).unwrap_or_default();
    let req = format!(
        "{method} {target} HTTP/1.1\r\nhost: {addr}\r\naccept: application/json\r\ncontent-type: application/json\r\n\
         content-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes()).unwrap();
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).unwrap_or_else(|e| panic!("{method} http://{addr}{target}: {e}"));
    let text = String::from_utf8(raw).expect("a UTF-8 answer");
    let (head, payload) = text.split_once("\r\n\r\n").unwrap_or_else(|| panic!("no head in {text:?}"));
    let status: u16 = head.get(9..12).and_then(|s| s.parse().ok()).unwrap_or_else(|| panic!("status in {head:?}"));
    let chunked = head.lines().any(|l| {
        let l = l.to_ascii_lowercase();
        l.starts_with("transfer-encoding:") && l.contains("chunked")
    });
    let payload = if chunked { dechunk(payload) } else { payload.to_string() };
    (status, serde_json::from_str(&payload).unwrap_or(Value::String(payload)))
}

fn dechunk(mut s: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = s.split_once("\r\n") {
        let n = usize::from_str_radix(size.split(';').next().unwrap().trim(), 16).unwrap();
        if n == 0 {
            break;
        }
        out.push_str(&rest[..n]);
        s = &rest[n + 2..];
    }
    out
}

// ---------------------------------------------------------------------------------------------
// The stack under test

/// One message posted to the scheduler.
#[derive(Debug, Clone)]
struct Posted {
    id: String,
    nonce: u64,
    timestamp: i64,
}

/// `metalcu dev` on aos, with [`EVALS`] posted (not yet evaluated).
struct Stack {
    /// Where the CU listens, `127.0.0.1:P`.
    cu: String,
    /// Where the scheduler listens.
    su: String,
    pid: String,
    posted: Vec<Posted>,
    aoconnect: PathBuf,
    _child: DevChild,
    _dir: tempfile::TempDir,
}

impl Stack {
    /// Starts the stack, or `None` when the test cannot run here (said on stderr).
    fn start() -> Option<Stack> {
        let shared = common::shared_dir()?;
        let aoconnect = aoconnect_dir()?;
        let module = shared.join("fixtures/modules/aos2-emscripten4.wasm");
        assert!(module.is_file(), "{} is missing", module.display());
        let dir = tempfile::tempdir().unwrap();
        let stderr_log = dir.path().join("dev.stderr");
        let mut child = Command::new(env!("CARGO_BIN_EXE_metalcu"))
            .args(["dev", "--port", "0", "--su-port", "0", "--data-dir"])
            .arg(dir.path().join("data"))
            .arg("--module")
            .arg(&module)
            .args(["--format", "wasm32-unknown-emscripten4"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&stderr_log).unwrap())
            .spawn()
            .expect("start metalcu dev");
        let stdout = child.stdout.take().unwrap();
        let child = DevChild { child, stderr_log };
        // Lines of its stdout, read on a thread that drains it until the child exits.
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    // Nobody listens any more: keep draining so the child never blocks.
                    continue;
                }
            }
        });
        let deadline = Instant::now() + START_TIMEOUT;
        let (mut cu, mut su, mut pid) = (None, None, None);
        while pid.is_none() || cu.is_none() {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = rx.recv_timeout(left).unwrap_or_else(|e| {
                panic!("metalcu dev did not print its addresses and process within {START_TIMEOUT:?}: {e}")
            });
            let words: Vec<&str> = line.split_whitespace().collect();
            let after = |w: &str| words.iter().position(|x| *x == w).and_then(|i| words.get(i + 1));
            if line.starts_with("metalcu dev: CU ") {
                let addr = |u: Option<&&str>| u.and_then(|u| u.strip_prefix("http://")).map(str::to_string);
                cu = addr(after("CU"));
                su = addr(after("scheduler"));
                assert!(cu.is_some() && su.is_some(), "cannot parse {line:?}");
            } else if line.starts_with("process ") {
                pid = words.get(1).map(|s| s.to_string());
            }
        }
        let (cu, su, pid) = (cu.unwrap(), su.unwrap(), pid.unwrap());
        assert_eq!(pid.len(), 43, "process id {pid:?}");
        let mut stack = Stack { cu, su, pid, posted: Vec::new(), aoconnect, _child: child, _dir: dir };
        for code in EVALS {
            stack.post_eval(code);
        }
        Some(stack)
    }

    /// Posts an aos `Eval` of `code` from the process's owner to the scheduler.
    fn post_eval(&mut self, code: &str) -> Posted {
        let body = json!({ "process": self.pid, "tags": [{ "name": "Action", "value": "Eval" }], "data": code });
        let (status, answer) = http(&self.su, "POST", "/", Some(&body));
        assert_eq!(status, 200, "posting {code:?}: {answer}");
        let posted = Posted {
            id: answer["id"].as_str().expect("id").to_string(),
            nonce: answer["nonce"].as_u64().expect("nonce"),
            timestamp: answer["timestamp"].as_i64().expect("timestamp"),
        };
        assert_eq!(posted.nonce, self.posted.len() as u64 + 1, "{answer}");
        self.posted.push(posted.clone());
        posted
    }

    /// The CU's own `GET /result/<id>?process-id=<pid>`: must be 200.
    fn cu_result(&self, id: &str) -> Value {
        let (status, body) = http(&self.cu, "GET", &format!("/result/{id}?process-id={}", self.pid), None);
        assert_eq!(status, 200, "GET /result/{id}: {body}");
        body
    }

    /// The CU's own `GET /results/<pid>?<query>`: must be 200.
    fn cu_results(&self, query: &str) -> Value {
        let (status, body) = http(&self.cu, "GET", &format!("/results/{}?{query}", self.pid), None);
        assert_eq!(status, 200, "GET /results?{query}: {body}");
        body
    }

    /// Runs `calls` through aoconnect (tests/aoconnect/run.mjs); returns what each returned.
    /// A call that threw fails the test.
    fn aoconnect(&self, calls: &[Value]) -> Vec<Value> {
        let mut node = Command::new("node");
        node.arg("run.mjs")
            .arg(format!("http://{}", self.cu))
            .arg(&self.pid)
            .arg(Value::from(calls.to_vec()).to_string())
            .current_dir(&self.aoconnect)
            // aoconnect's own defaults must not matter (nor reach the network).
            .env_remove("CU_URL")
            .env_remove("MU_URL")
            .env_remove("GATEWAY_URL")
            .env_remove("GRAPHQL_URL");
        let (status, out, err) = run_bounded(node, NODE_TIMEOUT, "node run.mjs");
        assert!(status.success(), "node run.mjs failed ({status}):\nstdout: {out}\nstderr: {err}");
        let doc: Value = serde_json::from_str(out.trim()).unwrap_or_else(|e| panic!("run.mjs printed {out:?}: {e}"));
        assert_eq!(doc["aoconnect"], "0.0.98", "the pinned aoconnect is installed");
        let answers = doc["calls"].as_array().expect("calls").clone();
        assert_eq!(answers.len(), calls.len(), "{doc}");
        answers
            .into_iter()
            .zip(calls)
            .map(|(a, c)| {
                assert!(a.get("error").is_none(), "aoconnect {c} threw: {}", a["error"].as_str().unwrap_or(""));
                a["ok"].clone()
            })
            .collect()
    }
}

/// aos's printed answer to an `Eval`: `Output.data`.
fn data(result: &Value) -> &str {
    result["Output"]["data"].as_str().unwrap_or_else(|| panic!("no Output.data in {result}"))
}

/// A results cursor, decoded: `{"timestamp":…,"ordinate":"…","sort":"…"}`.
fn decode_cursor(cursor: &Value) -> Value {
    let raw = base64::engine::general_purpose::STANDARD
        .decode(cursor.as_str().expect("cursor is a string"))
        .unwrap_or_else(|e| panic!("cursor {cursor} is not base64: {e}"));
    serde_json::from_slice(&raw).unwrap_or_else(|e| panic!("cursor {cursor} is not JSON: {e}"))
}

/// The ordinates (nonces) of a results page, in order.
fn ordinates(page: &Value) -> Vec<String> {
    edges(page).iter().map(|e| decode_cursor(&e["cursor"])["ordinate"].as_str().unwrap().to_string()).collect()
}

fn edges(page: &Value) -> &Vec<Value> {
    page["edges"].as_array().unwrap_or_else(|| panic!("no edges in {page}"))
}

// ---------------------------------------------------------------------------------------------
// The tests

#[test]
fn aoconnect_result_returns_the_cus_result_with_aos_output_and_errors() {
    let Some(stack) = Stack::start() else { return };
    let pid = stack.pid.clone();
    // aoconnect asks first: the CU evaluates on its request, message by message.
    let mut calls: Vec<Value> = stack.posted.iter().map(|p| json!({ "call": "result", "message": p.id })).collect();
    calls.push(json!({ "call": "result", "message": pid }));
    calls.push(json!({ "call": "result", "message": "x".repeat(43) }));
    let got = stack.aoconnect(&calls);

    // What aoconnect returned is exactly the CU's body for the same message.
    for (p, g) in stack.posted.iter().zip(&got) {
        assert_eq!(g, &stack.cu_result(&p.id), "result of nonce {}", p.nonce);
        for k in ["Messages", "Assignments", "Spawns"] {
            assert_eq!(g[k], json!([]), "nonce {}: {g}", p.nonce);
        }
        assert!(g.get("Memory").is_none() && g.get("GasUsed").is_none(), "{g}");
    }
    assert_eq!(data(&got[0]), "42", "1 + 41: {}", got[0]);
    assert!(got[0].get("Error").is_none());
    assert_eq!(data(&got[1]), "", "an assignment prints nothing: {}", got[1]);
    assert!(got[1].get("Error").is_none());
    let err = got[2]["Error"].as_str().unwrap_or_else(|| panic!("a Lua error is an Error: {}", got[2]));
    assert!(err.contains("boom"), "{err}");
    assert_eq!(data(&got[3]), "7", "the global kept across messages: {}", got[3]);
    for g in &got[..4] {
        if g.get("Error").is_none() {
            assert!(g["Output"]["prompt"].as_str().unwrap().contains("aos-2"), "aos's prompt: {g}");
        }
    }
    // The process id as the message: the spawn's evaluation (aop6 boot loader).
    assert_eq!(got[4], stack.cu_result(&pid), "result of the spawn");
    assert_eq!(data(&got[4]), "");
    // An unknown message: aoconnect hands back the CU's error envelope.
    let unknown = &got[5];
    assert!(unknown["error"].as_str().is_some_and(|e| !e.is_empty()), "{unknown}");
    let (status, body) = http(&stack.cu, "GET", &format!("/result/{}?process-id={pid}", "x".repeat(43)), None);
    assert_eq!(status, 404);
    assert_eq!(&body, unknown);
}

#[test]
fn aoconnect_results_lists_evaluations_in_order_and_pages_by_cursor() {
    let Some(stack) = Stack::start() else { return };
    let p = &stack.posted;
    // `/results` never evaluates: evaluate everything first.
    let last = stack.cu_result(&p[3].id);
    assert_eq!(data(&last), "7");
    let all = stack.aoconnect(&[json!({ "call": "results" })]).remove(0);

    // The spawn and every message but the failed one (Error results are omitted), in order.
    assert_eq!(ordinates(&all), ["0", "1", "2", "4"], "{all}");
    let timestamps: Vec<i64> =
        edges(&all).iter().map(|e| decode_cursor(&e["cursor"])["timestamp"].as_i64().unwrap()).collect();
    assert_eq!(timestamps[1..], [p[0].timestamp, p[1].timestamp, p[3].timestamp]);
    for e in edges(&all) {
        let c = decode_cursor(&e["cursor"]);
        assert_eq!(c["sort"], "ASC", "{c}");
        assert_eq!(c.as_object().unwrap().keys().collect::<Vec<_>>(), ["timestamp", "ordinate", "sort"]);
    }
    // Each node is the message's result (as aoconnect's schema keeps it: Output, Messages,
    // Spawns, Error), and the page is the CU's own, edge for edge.
    let ours = stack.cu_results("limit=100");
    assert_eq!(ours["pageInfo"]["hasNextPage"], false);
    assert_eq!(edges(&ours).len(), edges(&all).len());
    for (a, o) in edges(&all).iter().zip(edges(&ours)) {
        assert_eq!(a["cursor"], o["cursor"]);
        for k in ["Output", "Messages", "Spawns", "Error"] {
            assert_eq!(a["node"].get(k), o["node"].get(k), "{k} of {a}");
        }
    }
    for (edge, msg) in edges(&all)[1..].iter().zip([&p[0], &p[1], &p[3]]) {
        let r = stack.cu_result(&msg.id);
        assert_eq!(edge["node"]["Output"], r["Output"], "nonce {}", msg.nonce);
        assert_eq!(edge["node"]["Messages"], r["Messages"]);
    }
    assert_eq!(edges(&all)[1]["node"]["Output"]["data"], "42");

    let cur = |page: &Value, i: usize| edges(page)[i]["cursor"].as_str().unwrap().to_string();
    let desc = stack.aoconnect(&[json!({ "call": "results", "sort": "DESC" })]).remove(0);
    assert_eq!(ordinates(&desc), ["4", "2", "1", "0"], "{desc}");
    for e in edges(&desc) {
        assert_eq!(decode_cursor(&e["cursor"])["sort"], "DESC", "{e}");
    }
    // Cursor ranges as the reference's (`id > from AND id <= to`, whatever the order): `from`
    // is exclusive and always the lower end, `to` inclusive and the upper end.
    let pages = stack.aoconnect(&[
        json!({ "call": "results", "sort": "DESC", "limit": 2 }),
        json!({ "call": "results", "sort": "DESC", "from": cur(&desc, 3) }),
        // A cursor's own sort wins over the `sort` aoconnect sends by default (ASC).
        json!({ "call": "results", "from": cur(&desc, 3) }),
        // Paging down a DESC listing: `to` the last cursor seen.
        json!({ "call": "results", "sort": "DESC", "to": cur(&desc, 1), "limit": 2 }),
        // ASC pages: `from` exclusive, `limit`, `to` inclusive.
        json!({ "call": "results", "from": cur(&all, 0), "limit": 2 }),
        json!({ "call": "results", "from": cur(&all, 2) }),
        json!({ "call": "results", "from": cur(&all, 0), "to": cur(&all, 2) }),
        json!({ "call": "results", "limit": 1 }),
        // A bare timestamp as `from` includes the evaluations at that millisecond.
        json!({ "call": "results", "from": p[1].timestamp.to_string() }),
    ]);
    let expected: [&[&str]; 9] = [
        &["4", "2"],
        &["4", "2", "1"],
        &["4", "2", "1"],
        &["2", "1"],
        &["1", "2"],
        &["4"],
        &["1", "2"],
        &["0"],
        &["2", "4"],
    ];
    for (i, (page, want)) in pages.iter().zip(expected).enumerate() {
        assert_eq!(ordinates(page), want, "page {i}: {page}");
    }
    assert_eq!(edges(&pages[0]), &edges(&desc)[..2], "pages carry the same edges as the full list");
    assert_eq!(edges(&pages[4]), &edges(&all)[1..3]);
}

#[test]
fn aoconnect_dryrun_reads_the_latest_state_without_changing_it() {
    let Some(mut stack) = Stack::start() else { return };
    assert_eq!(data(&stack.cu_result(&stack.posted[3].id)), "7");
    let before = edges(&stack.cu_results("limit=100")).len();
    assert_eq!(before, 4, "spawn + 3 messages without Error");

    let eval = |code: &str| json!({ "call": "dryrun", "Owner": OWNER, "data": code, "tags": [{ "name": "Action", "value": "Eval" }] });
    let got = stack.aoconnect(&[
        eval("Counter"),
        eval("Counter = 100; return Counter"),
        // Not the same body as the first (a dry-run result cache could answer that one).
        eval("return Counter"),
        // aoconnect's defaults: Id and Owner "1234", so aos files it in the Inbox (of the copy).
        json!({ "call": "dryrun", "data": "hello from a stranger", "tags": [{ "name": "Action", "value": "Greet" }] }),
    ]);
    assert_eq!(data(&got[0]), "7", "the global set by a real message: {}", got[0]);
    assert_eq!(data(&got[1]), "100", "{}", got[1]);
    assert_eq!(data(&got[2]), "7", "the previous dry-run changed nothing: {}", got[2]);
    assert!(data(&got[3]).contains("New Message From"), "{}", got[3]);
    for g in &got {
        assert!(g.get("Error").is_none(), "{g}");
        assert_eq!(g["Messages"], json!([]));
    }
    // aoconnect sends exactly the body the CU answers for: the same body posted directly.
    let direct = json!({
        "Id": "1234", "Owner": OWNER, "Target": stack.pid, "Data": "Counter", "Anchor": "0",
        "Tags": [
            { "name": "Action", "value": "Eval" }, { "name": "Data-Protocol", "value": "ao" },
            { "name": "Type", "value": "Message" }, { "name": "Variant", "value": "ao.TN.1" }
        ]
    });
    let (status, ours) = http(&stack.cu, "POST", &format!("/dry-run?process-id={}", stack.pid), Some(&direct));
    assert_eq!(status, 200, "{ours}");
    assert_eq!(ours, got[0]);

    // Nothing was stored or changed: the same results, and real messages see the old state.
    let listed = stack.aoconnect(&[json!({ "call": "results", "limit": 100 })]).remove(0);
    assert_eq!(edges(&listed).len(), before, "dry-runs leave no results: {listed}");
    let counter = stack.post_eval("Counter").id;
    let inbox = stack.post_eval("#Inbox").id;
    let after = stack.aoconnect(&[
        json!({ "call": "result", "message": counter }),
        json!({ "call": "result", "message": inbox }),
        json!({ "call": "results", "limit": 100 }),
    ]);
    assert_eq!(data(&after[0]), "7", "Counter = 100 was a dry-run: {}", after[0]);
    assert_eq!(data(&after[1]), "0", "the stranger's dry-run message never reached the Inbox: {}", after[1]);
    assert_eq!(ordinates(&after[2]), ["0", "1", "2", "4", "5", "6"]);
}
