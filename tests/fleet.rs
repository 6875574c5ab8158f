//! A fleet of two `metalcu serve` CUs behind a real HAProxy on 127.0.0.1, configured from
//! `tuning/haproxy/metalcu-fleet.cfg.in`. Both CUs read the same scheduler (the local SU over
//! HTTP) and gateway (GraphQL + `/raw`, `common/fake_gateway.rs`), each with its own data
//! directory. Through HAProxy: every route answers; every request about a process, whichever
//! route names it, is served by the same CU (the `X-Metalcu-Server` header); processes are
//! spread over both CUs; and, read from each CU's results store once it has stopped (which
//! evaluates nothing), the other CU never evaluated that process. Then, with the owner of some
//! processes gone, the ring's next CU replays them from the scheduler and serves the same results.
//!
//! Needs the `haproxy` binary (Debian package `haproxy`): without it the test says so and does
//! not run, except under `CI`, where that is a failure.

mod common;
#[path = "common/fake_gateway.rs"]
mod fake_gateway;

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use base64::Engine as _;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use metalcu::store::{Query, RedbStore, Store};
use metalcu::su::local::{DEV_OWNER, LOCAL_SU_ADDRESS, LocalScheduler};
use metalcu::su::types::Tag;
use serde_json::{Value, json};

/// The whole test gives up after this long (it takes seconds when healthy).
const TEST_DEADLINE: Duration = Duration::from_secs(300);
/// One request through HAProxy.
const REQUEST_DEADLINE: Duration = Duration::from_secs(60);
/// A CU prints its address, or HAProxy sees both CUs, within this long.
const START_DEADLINE: Duration = Duration::from_secs(60);
/// A stopped CU exits within this long (in-flight requests finish first).
const STOP_DEADLINE: Duration = Duration::from_secs(30);
/// Processes created first; more are added (up to `MAX_PROCESSES`) only if they all hash to
/// one CU, which a working ring makes vanishingly unlikely.
const FIRST_PROCESSES: usize = 8;
const MAX_PROCESSES: usize = 32;
/// Messages posted to each process.
const MESSAGES: usize = 3;
/// The response header naming the CU that answered (set in the template).
const SERVER_HEADER: &str = "x-metalcu-server";
const CUS: [&str; 2] = ["cu1", "cu2"];

fn tag(n: &str, v: &str) -> Tag {
    Tag { name: n.into(), value: v.into() }
}

fn wallet() -> String {
    let n = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode([7u8; 512]);
    format!(r#"{{"kty":"RSA","n":"{n}","e":"AQAB"}}"#)
}

/// The HAProxy binary: on `PATH`, else where Debian installs it. `None` (said on stderr) when
/// missing outside CI; a panic under CI.
fn haproxy_binary() -> Option<PathBuf> {
    let on_path = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).map(|d| d.join("haproxy")).collect::<Vec<_>>())
        .unwrap_or_default();
    let found = on_path
        .into_iter()
        .chain(["/usr/sbin/haproxy", "/usr/local/sbin/haproxy"].map(PathBuf::from))
        .find(|p| p.is_file());
    if found.is_none() {
        if std::env::var_os("CI").is_some() {
            panic!("haproxy not found (PATH, /usr/sbin): CI must install the Debian package `haproxy`");
        }
        eprintln!("NOTE: haproxy not found (apt-get install haproxy); tests/fleet.rs did not run");
    }
    found
}

/// A free TCP port on 127.0.0.1 (bound, then released for the child to take).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// A child process killed (and reaped) when dropped; its log is printed if the test failed.
struct Running {
    name: String,
    child: Option<Child>,
    log: PathBuf,
}

impl Running {
    fn spawn(name: &str, mut cmd: Command, log: PathBuf) -> Running {
        let file = std::fs::File::create(&log).unwrap();
        cmd.stderr(Stdio::from(file));
        let child = cmd.spawn().unwrap_or_else(|e| panic!("cannot start {name}: {e}"));
        Running { name: name.into(), child: Some(child), log }
    }

    /// SIGTERM, then waits (bounded) for the exit; the CU shuts down gracefully.
    fn terminate(&mut self) {
        let Some(mut child) = self.child.take() else { return };
        let pid = i32::try_from(child.id()).expect("pid");
        // SAFETY: kill(2) on our own child's pid, which has not been reaped yet.
        unsafe { libc::kill(pid, libc::SIGTERM) };
        let start = std::time::Instant::now();
        while start.elapsed() < STOP_DEADLINE {
            if let Some(status) = child.try_wait().unwrap() {
                assert!(status.success(), "{} exited with {status} after SIGTERM", self.name);
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = child.kill();
        let _ = child.wait();
        panic!("{} did not stop within {STOP_DEADLINE:?} of SIGTERM", self.name);
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        if std::thread::panicking() {
            let log = std::fs::read_to_string(&self.log).unwrap_or_default();
            let tail: Vec<&str> = log.lines().rev().take(40).collect();
            eprintln!("--- {} (last lines of {}) ---", self.name, self.log.display());
            tail.iter().rev().for_each(|l| eprintln!("{l}"));
        }
    }
}

/// Starts `metalcu serve` on `port` with its own data directory; returns once it listens.
async fn start_cu(name: &str, port: u16, data: &Path, gateway: &str) -> Running {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_metalcu"));
    cmd.arg("serve")
        .env_clear()
        .env("WALLET", wallet())
        .env("GATEWAY_URL", gateway)
        .env("HOST", "127.0.0.1")
        .env("PORT", port.to_string())
        .env("IO", "epoll")
        .env("DATA_DIR", data)
        .env("WASM_BINARY_FILE_DIRECTORY", data.join("wasm"))
        .stdout(Stdio::piped());
    let mut cu = Running::spawn(name, cmd, data.with_extension("log"));
    let stdout = cu.child.as_mut().unwrap().stdout.take().unwrap();
    let line = tokio::task::spawn_blocking(move || {
        let mut line = String::new();
        BufReader::new(stdout).read_line(&mut line).unwrap();
        line
    });
    let line = tokio::time::timeout(START_DEADLINE, line).await.expect("the CU starts").unwrap();
    assert!(line.contains(&format!("CU http://127.0.0.1:{port}")), "{name} printed {line:?}");
    cu
}

/// The template with its placeholders filled in (comment lines keep theirs), as render.sh does.
fn render_config(bind: &str, servers: &[(&str, u16)]) -> String {
    let template = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/tuning/haproxy/metalcu-fleet.cfg.in"))
        .expect("tuning/haproxy/metalcu-fleet.cfg.in");
    let mut out = String::new();
    for line in template.lines() {
        if line == "@PRIVILEGES@" {
            // The test runs HAProxy as whoever runs it: no user, group or chroot.
        } else if line == "@SERVERS@" {
            for (id, (name, port)) in servers.iter().enumerate() {
                out.push_str(&format!("    server {name} 127.0.0.1:{port} id {}\n", id + 1));
            }
        } else if line.trim_start().starts_with('#') {
            out.push_str(line);
            out.push('\n');
        } else {
            out.push_str(&line.replace("@BIND@", bind).replace("@STATS_SOCKET@", ""));
            out.push('\n');
        }
    }
    assert!(!out.lines().any(|l| !l.trim_start().starts_with('#') && l.contains('@')), "a placeholder is left");
    out
}

/// One answer through HAProxy.
struct Reply {
    status: u16,
    server: Option<String>,
    content_type: Option<String>,
    body: Bytes,
}

impl Reply {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&self.body)))
    }
}

struct Router {
    client: Client<HttpConnector, Full<Bytes>>,
    base: String,
}

impl Router {
    async fn call(&self, method: &str, path: &str, body: Option<&Value>) -> Reply {
        let mut req = hyper::Request::builder().method(method).uri(format!("{}{path}", self.base));
        if body.is_some() {
            req = req.header("content-type", "application/json");
        }
        let body = body.map(|b| Bytes::from(b.to_string())).unwrap_or_default();
        let req = req.body(Full::new(body)).unwrap();
        let res = tokio::time::timeout(REQUEST_DEADLINE, self.client.request(req))
            .await
            .unwrap_or_else(|_| panic!("{method} {path}: no answer within {REQUEST_DEADLINE:?}"))
            .unwrap_or_else(|e| panic!("{method} {path}: {e}"));
        let header = |name: &str| res.headers().get(name).and_then(|v| v.to_str().ok()).map(str::to_owned);
        let (status, server, content_type) = (res.status().as_u16(), header(SERVER_HEADER), header("content-type"));
        let body = res.into_body().collect().await.unwrap().to_bytes();
        Reply { status, server, content_type, body }
    }

    async fn get(&self, path: &str) -> Reply {
        self.call("GET", path, None).await
    }

    /// GET that must answer 200 from a CU; returns the CU's name and the body.
    async fn ok(&self, path: &str) -> (String, Reply) {
        let r = self.get(path).await;
        assert_eq!(r.status, 200, "GET {path}: {}", String::from_utf8_lossy(&r.body));
        (r.server.clone().unwrap_or_else(|| panic!("GET {path}: no {SERVER_HEADER} header")), r)
    }
}

/// One process of the test, with the ids of its messages.
struct AoProcess {
    pid: String,
    messages: Vec<String>,
}

fn spawn_process(su: &LocalScheduler, module: &str) -> AoProcess {
    let tags = vec![
        tag("Data-Protocol", "ao"),
        tag("Type", "Process"),
        tag("Module", module),
        tag("Scheduler", LOCAL_SU_ADDRESS),
    ];
    let pid = su.spawn(DEV_OWNER, tags, String::new()).unwrap().process_id;
    let messages = (0..MESSAGES).map(|n| su.post(&pid, DEV_OWNER, vec![], format!("m{n}")).unwrap().id).collect();
    AoProcess { pid, messages }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fleet_behind_haproxy_serves_each_process_from_one_cu() {
    let Some(haproxy) = haproxy_binary() else { return };
    tokio::time::timeout(TEST_DEADLINE, fleet(haproxy)).await.expect("the fleet test finishes in its time bound");
}

async fn fleet(haproxy: PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    // The shared scheduler and gateway.
    let fake_gateway::EchoStack { su, module, gateway } = fake_gateway::start_echo_stack(dir.path()).await;

    // Two CUs, each with its own data directory, and HAProxy in front.
    let ports = [free_port(), free_port()];
    let data: Vec<PathBuf> = CUS.iter().map(|n| dir.path().join(n)).collect();
    let mut cu1 = start_cu(CUS[0], ports[0], &data[0], &gateway.url).await;
    let mut cu2 = start_cu(CUS[1], ports[1], &data[1], &gateway.url).await;
    let bind = format!("127.0.0.1:{}", free_port());
    let cfg = dir.path().join("haproxy.cfg");
    std::fs::write(&cfg, render_config(&bind, &[(CUS[0], ports[0]), (CUS[1], ports[1])])).unwrap();
    let check = Command::new(&haproxy).arg("-c").arg("-f").arg(&cfg).output().unwrap();
    assert!(check.status.success(), "haproxy -c: {}", String::from_utf8_lossy(&check.stderr));
    let mut cmd = Command::new(&haproxy);
    cmd.arg("-db").arg("-f").arg(&cfg).stdout(Stdio::null());
    let mut proxy = Running::spawn("haproxy", cmd, dir.path().join("haproxy.log"));
    let router = Router { client: Client::builder(TokioExecutor::new()).build_http(), base: format!("http://{bind}") };

    // `/` has no process id: round robin, so both CUs answer it once both are up.
    let mut seen = BTreeSet::new();
    let start = std::time::Instant::now();
    while seen.len() < CUS.len() {
        assert!(start.elapsed() < START_DEADLINE, "HAProxy did not reach both CUs: saw {seen:?}");
        if let Some(status) = proxy.child.as_mut().unwrap().try_wait().unwrap() {
            panic!("haproxy exited with {status}");
        }
        if let Ok(Ok(r)) = tokio::time::timeout(REQUEST_DEADLINE, router.client.get(bind_uri(&bind, "/"))).await
            && r.status() == 200
            && let Some(s) = r.headers().get(SERVER_HEADER).and_then(|v| v.to_str().ok())
        {
            seen.insert(s.to_owned());
            continue;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (_, info) = router.ok("/").await;
    let want =
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(<sha2::Sha256 as sha2::Digest>::digest([7u8; 512]));
    assert_eq!(info.json()["address"], want, "GET / answers with the CU's wallet address");
    let (_, health) = router.ok("/healthz").await;
    assert_eq!(health.json(), json!({ "ok": true }));

    // Processes, until both CUs own some (the first batch all but always suffices).
    let mut procs = Vec::new();
    let mut owner: BTreeMap<String, String> = BTreeMap::new();
    while procs.len() < FIRST_PROCESSES || owner.values().collect::<BTreeSet<_>>().len() < CUS.len() {
        assert!(procs.len() < MAX_PROCESSES, "{MAX_PROCESSES} processes all went to one CU: {owner:?}");
        let p = spawn_process(&su, &module);
        let (cu, r) = router.ok(&format!("/result/{}?process-id={}", p.messages[MESSAGES - 1], p.pid)).await;
        assert_eq!(r.json()["Output"]["Data"], format!("m{}", MESSAGES - 1));
        owner.insert(p.pid.clone(), cu);
        procs.push(p);
    }

    // Every route, for every process, through HAProxy: always the owner.
    let mut results = BTreeMap::new();
    for p in &procs {
        let pid = &p.pid;
        let mine = &owner[pid];
        for (n, mid) in p.messages.iter().enumerate() {
            let (cu, r) = router.ok(&format!("/result/{mid}?process-id={pid}")).await;
            assert_eq!(&cu, mine, "/result of {pid}");
            let out = r.json();
            assert_eq!(out["Output"]["Id"], mid.as_str());
            assert_eq!(out["Output"]["Data"], format!("m{n}"));
            assert_eq!(out["Output"]["Target"], pid.as_str());
            results.insert(mid.clone(), out);
        }
        let (cu, r) = router.ok(&format!("/results/{pid}")).await;
        assert_eq!(&cu, mine, "/results of {pid}");
        assert_eq!(r.json()["edges"].as_array().unwrap().len(), MESSAGES + 1, "spawn + messages");
        let (cu, r) = router.ok(&format!("/results/{pid}?sort=DESC&limit=1")).await;
        assert_eq!(&cu, mine, "/results of {pid} with a query");
        assert_eq!(r.json()["edges"][0]["node"]["Output"]["Data"], format!("m{}", MESSAGES - 1));
        let (cu, r) = router.ok(&format!("/cron/{pid}")).await;
        assert_eq!(&cu, mine, "/cron of {pid}");
        assert_eq!(r.json()["edges"], json!([]), "no crons declared");
        let (cu, r) = router.ok(&format!("/state/{pid}")).await;
        assert_eq!(&cu, mine, "/state of {pid}");
        assert_eq!(r.content_type.as_deref(), Some("application/octet-stream"));
        assert!(!r.body.is_empty() && r.body.len() % 65536 == 0, "/state is the memory: {} bytes", r.body.len());
        // Routing only: the owner answers `/usage/:pid`, whatever its status on this build.
        let r = router.get(&format!("/usage/{pid}")).await;
        assert_eq!(r.server.as_ref(), Some(mine), "/usage of {pid} ({})", r.status);
        let dry =
            json!({ "Id": "1234", "Owner": "1234", "Data": "peek", "Tags": [{ "name": "Action", "value": "Peek" }] });
        let r = router.call("POST", &format!("/dry-run?process-id={pid}"), Some(&dry)).await;
        assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
        assert_eq!(r.server.as_ref(), Some(mine), "/dry-run of {pid}");
        assert_eq!(r.json()["Output"]["Read-Only"], true);
        assert_eq!(r.json()["Output"]["Data"], "peek");
    }
    // A request without a process id where one is needed: the CU's 400, through the router.
    let r = router.get(&format!("/result/{}", procs[0].messages[0])).await;
    assert_eq!(r.status, 400, "{}", String::from_utf8_lossy(&r.body));
    let per_cu: BTreeMap<&String, usize> = owner.values().fold(BTreeMap::new(), |mut m, cu| {
        *m.entry(cu).or_default() += 1;
        m
    });
    eprintln!("processes per CU: {per_cu:?} ({} processes)", procs.len());

    // Each CU's store, read after it stopped (reading evaluates nothing): the owner holds the
    // spawn and every message of its processes, the other CU nothing of them.
    cu1.terminate();
    cu2.terminate();
    for (cu, data) in CUS.iter().zip(&data) {
        let store = RedbStore::open(data.join("ao-cache.redb")).unwrap();
        for p in &procs {
            let q =
                Query { after: None, until: None, descending: false, limit: 100, cron_only: false, hide_errors: false };
            let (held, _) = store.list(&p.pid, &q).unwrap();
            if owner[&p.pid] == *cu {
                assert_eq!(held.len(), MESSAGES + 1, "{cu} evaluated all of {}", p.pid);
            } else {
                assert!(
                    held.is_empty(),
                    "{cu} evaluated {} ({} results) which {} owns",
                    p.pid,
                    held.len(),
                    owner[&p.pid]
                );
            }
        }
    }

    // cu2 is gone; cu1 comes back. cu2's processes move to cu1 on the ring: cu1 replays them
    // from the scheduler and serves the very results cu2 served.
    let _cu1 = start_cu(CUS[0], ports[0], &data[0], &gateway.url).await;
    let moved: Vec<&AoProcess> = procs.iter().filter(|p| owner[&p.pid] == CUS[1]).collect();
    for p in &moved {
        let path = format!("/result/{}?process-id={}", p.messages[MESSAGES - 1], p.pid);
        let start = std::time::Instant::now();
        let r = loop {
            // HAProxy may still count cu1 down for a few checks after its restart: 503 until then.
            let r = router.get(&path).await;
            if r.status != 503 || start.elapsed() > START_DEADLINE {
                break r;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        };
        assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
        assert_eq!(r.server.as_deref(), Some(CUS[0]), "{} moved to cu1", p.pid);
        assert_eq!(r.json(), results[&p.messages[MESSAGES - 1]], "the same result after the move");
    }
    eprintln!("{} processes moved from cu2 to cu1 and were replayed there", moved.len());
}

fn bind_uri(bind: &str, path: &str) -> hyper::Uri {
    format!("http://{bind}{path}").parse().unwrap()
}

/// Runs `tuning/haproxy/render.sh` with `args`; (success, stdout, stderr).
fn render_sh(args: &[&str]) -> (bool, String, String) {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tuning/haproxy/render.sh");
    let out = Command::new("bash").arg(script).args(args).output().expect("bash runs render.sh");
    (out.status.success(), String::from_utf8_lossy(&out.stdout).into(), String::from_utf8_lossy(&out.stderr).into())
}

#[test]
fn render_sh_fills_the_template_as_the_test_does_and_refuses_bad_nodes() {
    let dir = tempfile::tempdir().unwrap();
    let nodes = dir.path().join("nodes");
    std::fs::write(&nodes, "# the fleet\n1 cu1 127.0.0.1:7001\n\n2 cu2 127.0.0.1:7002  # second\n").unwrap();
    let nodes_arg = nodes.to_str().unwrap();
    let (ok, cfg, err) = render_sh(&[nodes_arg, "--bind", "127.0.0.1:7000", "--unprivileged"]);
    assert!(ok, "{err}");
    assert_eq!(cfg, render_config("127.0.0.1:7000", &[("cu1", 7001), ("cu2", 7002)]));
    let (ok, with_socket, err) = render_sh(&[nodes_arg, "--stats-socket", "/run/haproxy/metalcu.sock"]);
    assert!(ok, "{err}");
    assert!(with_socket.contains("\n    stats socket /run/haproxy/metalcu.sock mode 600 level admin\n"));
    assert!(with_socket.contains("\n    bind :80\n"), "the default bind");
    assert!(with_socket.contains("\n    user haproxy\n    group haproxy\n    chroot /var/lib/haproxy\n"));
    let (ok, unprivileged, err) = render_sh(&[nodes_arg, "--stats-socket", "/tmp/metalcu.sock", "--unprivileged"]);
    assert!(ok, "{err}");
    assert!(!unprivileged.contains("user haproxy"));
    if let Some(haproxy) = haproxy_binary() {
        let file = dir.path().join("haproxy.cfg");
        // Checked unprivileged: the haproxy account exists only where Debian's package made it.
        std::fs::write(&file, &unprivileged).unwrap();
        let check = Command::new(haproxy).arg("-c").arg("-f").arg(&file).output().unwrap();
        assert!(check.status.success(), "haproxy -c: {}", String::from_utf8_lossy(&check.stderr));
    }
    for (bad, why) in [
        ("1 cu1 10.0.0.1:6363\n1 cu2 10.0.0.2:6363\n", ":2: id 1 is already used by cu1"),
        ("1 cu1 10.0.0.1:6363\n2 cu1 10.0.0.2:6363\n", ":2: name cu1 is used twice"),
        ("0 cu1 10.0.0.1:6363\n", ":1: id '0' is not a positive integer"),
        ("1 cu1 10.0.0.1\n", ":1: address '10.0.0.1' is not host:port"),
        ("1 cu1 10.0.0.1:70000\n", ":1: port 70000 is out of range"),
        ("1 cu/1 10.0.0.1:6363\n", ":1: name 'cu/1' must be"),
        ("1 cu1 10.0.0.1:6363 9\n", ":1: expected '<id> <name> <host:port>'"),
        ("# nobody\n", "no CU listed"),
    ] {
        std::fs::write(&nodes, bad).unwrap();
        let (ok, out, err) = render_sh(&[nodes_arg]);
        assert!(!ok && out.is_empty(), "{bad:?} was accepted: {out}");
        assert!(err.contains(why), "{bad:?}: {err}");
    }
    let (ok, _, err) = render_sh(&[nodes_arg, "--bind"]);
    assert!(!ok && err.contains("--bind needs an address"), "{err}");
}
