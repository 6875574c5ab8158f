//! The CU HTTP API end to end: a real server on 127.0.0.1:0 over a fake `CuService`, driven by
//! hyper's client (and raw TCP for garbage). Covers every route's happy path, the error envelope
//! and statuses, cursors through `/results`, `/state` headers, CORS, limits, timeouts, panics,
//! and graceful shutdown. Every wait is bounded; the whole file runs in well under 10 s.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::header::HeaderMap;
use hyper::{Method, Request};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use metalcu::http::{
    ApiError, Connection, CuService, Cursor, CursorBound, MAX_BODY_BYTES, ResultsQuery, ServerConfig, Sort, StateBody,
    cursor, serve_with,
};
use serde_json::{Map, Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// Bound on any single exchange in these tests.
const STEP: Duration = Duration::from_secs(3);

const PID: &str = "Pq4X2aN2Jh7yYb3dE1fL0kR9sT6uV5wX8zC3bA1dE0f";
const MID: &str = "wH8S9l3Wv3kQ5r3f0m3p1QwzT1o0bqgXo6m0N8k5y2U";

/// A valid ao id starting with `tag`: the fake behaves by that prefix.
fn id(tag: &str) -> String {
    format!("{tag:x<43}")
}

/// What the fake was asked.
#[derive(Debug, Clone, PartialEq)]
enum Seen {
    Result(String, String),
    Results(String, ResultsQuery),
    Cron(String, ResultsQuery),
    DryRun(String, Option<String>, Map<String, Value>),
    State(String, Option<i64>),
}

#[derive(Default)]
struct Fake {
    seen: Mutex<Vec<Seen>>,
}

/// The fake process's evaluations, in stream order: (timestamp, ordinate, cron).
const EVALS: [(i64, u64, Option<&str>); 6] = [
    (1000, 1, None),
    (1000, 2, None),
    (1000, 2, Some("0-1-seconds")),
    (2000, 3, None),
    (3000, 3, Some("0-1-seconds")),
    (4000, 4, None),
];

type Key = (i64, u64, Option<String>);

fn bound_key(b: &CursorBound) -> Option<Key> {
    Some((b.timestamp, b.ordinate.as_ref()?.parse().ok()?, b.cron.clone()))
}

impl Fake {
    fn last(&self) -> Seen {
        self.seen.lock().unwrap().last().cloned().expect("the fake was called")
    }

    fn calls(&self) -> usize {
        self.seen.lock().unwrap().len()
    }

    fn record(&self, s: Seen) {
        self.seen.lock().unwrap().push(s);
    }

    /// Behaviour chosen by the process id's prefix.
    async fn act(pid: &str) -> Result<(), ApiError> {
        if pid.starts_with("E425") {
            return Err(ApiError::new(
                425,
                "message at nonce 3 not found cached, and earlier than latest known nonce 9",
            ));
        }
        if pid.starts_with("E503") {
            return Err(ApiError::new(503, "Nonce limit exceeded"));
        }
        if pid.starts_with("PANIC") {
            panic!("the fake domain panics (on purpose)");
        }
        if pid.starts_with("SLOW") {
            tokio::time::sleep(Duration::from_millis(400)).await;
        }
        Ok(())
    }

    /// A page of `EVALS` honouring the query like a store would (§1.6, ordinates as integers).
    fn page(q: &ResultsQuery, cron_only: bool) -> Connection {
        let mut rows: Vec<Key> = EVALS
            .iter()
            .filter(|e| !cron_only || e.2.is_some())
            .map(|&(t, o, c)| (t, o, c.map(String::from)))
            .collect();
        if q.sort == Sort::Desc {
            rows.reverse();
        }
        let after = |k: &Key| match &q.from {
            None => true,
            Some(b) => match bound_key(b) {
                Some(fk) if q.sort == Sort::Desc => *k < fk,
                Some(fk) => *k > fk,
                None if q.sort == Sort::Desc => k.0 <= b.timestamp,
                None => k.0 >= b.timestamp,
            },
        };
        let until = |k: &Key| match &q.to {
            None => true,
            Some(b) => match bound_key(b) {
                Some(tk) => *k <= tk,
                None => k.0 <= b.timestamp,
            },
        };
        let rows: Vec<Key> = rows.into_iter().filter(|k| after(k) && until(k)).collect();
        let edges = rows
            .iter()
            .take(q.limit)
            .map(|(t, o, c)| {
                let cur = Cursor { timestamp: *t, ordinate: o.to_string(), cron: c.clone(), sort: q.sort };
                let node = json!({"Messages": [], "Assignments": [], "Spawns": [], "Output": format!("{t}/{o}/{c:?}")});
                (cur, node)
            })
            .collect();
        Connection { edges, has_next_page: rows.len() > q.limit }
    }
}

impl CuService for Fake {
    fn info(&self) -> Value {
        json!({"version": "test", "timestamp": 1712967091755u64, "address": "vh-NTHVvlKZqRxc8LyyTNok65yQ55a_PJ1zWLb9G2JI"})
    }

    async fn result(&self, pid: &str, message_id: &str) -> Result<Value, ApiError> {
        self.record(Seen::Result(pid.into(), message_id.into()));
        Fake::act(pid).await?;
        Ok(json!({"Messages": [], "Assignments": [], "Spawns": [], "Output": {"data": "ok", "prompt": "aos> "}}))
    }

    async fn results(&self, pid: &str, q: ResultsQuery) -> Result<Connection, ApiError> {
        self.record(Seen::Results(pid.into(), q.clone()));
        Fake::act(pid).await?;
        Ok(Fake::page(&q, false))
    }

    async fn cron(&self, pid: &str, q: ResultsQuery) -> Result<Connection, ApiError> {
        self.record(Seen::Cron(pid.into(), q.clone()));
        Fake::act(pid).await?;
        Ok(Fake::page(&q, true))
    }

    async fn dry_run(&self, pid: &str, to: Option<String>, message: Map<String, Value>) -> Result<Value, ApiError> {
        self.record(Seen::DryRun(pid.into(), to, message.clone()));
        Fake::act(pid).await?;
        Ok(json!({"Messages": [], "Assignments": [], "Spawns": [], "Output": Value::Object(message)}))
    }

    async fn state(&self, pid: &str, to: Option<i64>) -> Result<StateBody, ApiError> {
        self.record(Seen::State(pid.into(), to));
        Fake::act(pid).await?;
        if pid.starts_with("BARE") {
            return Ok(StateBody { memory: Bytes::from_static(b"\0asm"), ..Default::default() });
        }
        Ok(StateBody {
            memory: Bytes::from(vec![7u8; 65536]),
            last_timestamp: Some(1712967091755),
            last_ordinate: Some("23".into()),
            last_block_height: Some(1400000),
        })
    }
}

struct Server {
    addr: std::net::SocketAddr,
    fake: Arc<Fake>,
    client: Client<HttpConnector, Full<Bytes>>,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<std::io::Result<()>>,
}

struct Reply {
    status: u16,
    headers: HeaderMap,
    body: Bytes,
}

impl Reply {
    fn json(&self) -> Value {
        assert_eq!(self.headers["content-type"], "application/json; charset=utf-8", "status {}", self.status);
        serde_json::from_slice(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {:?}", self.body))
    }

    /// Asserts the error envelope: `status`, `{"error": <message containing want>}`, CORS.
    fn assert_error(&self, status: u16, want: &str) {
        let body = self.json();
        assert_eq!(self.status, status, "{body}");
        let msg = body["error"].as_str().unwrap_or_else(|| panic!("no error string in {body}"));
        assert!(msg.contains(want), "error {msg:?} should contain {want:?}");
        assert_eq!(body.as_object().unwrap().len(), 1, "{body}");
        assert_eq!(self.headers["access-control-allow-origin"], "*");
    }
}

async fn start(config: ServerConfig) -> Server {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let fake = Arc::new(Fake::default());
    let (tx, rx) = oneshot::channel::<()>();
    let task = tokio::spawn(serve_with(
        listener,
        fake.clone(),
        async move {
            let _ = rx.await;
        },
        config,
    ));
    let client = Client::builder(TokioExecutor::new()).build_http();
    Server { addr, fake, client, stop: Some(tx), task }
}

impl Server {
    async fn send(&self, method: Method, path: &str, headers: &[(&str, &str)], body: impl Into<Bytes>) -> Reply {
        let mut req = Request::builder().method(method).uri(format!("http://{}{path}", self.addr));
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let req = req.body(Full::new(body.into())).unwrap();
        let exchange = async {
            let resp = self.client.request(req).await.expect("request failed");
            let (parts, body) = resp.into_parts();
            let body = body.collect().await.expect("body failed").to_bytes();
            Reply { status: parts.status.as_u16(), headers: parts.headers, body }
        };
        tokio::time::timeout(STEP, exchange).await.expect("exchange timed out")
    }

    async fn get(&self, path: &str) -> Reply {
        self.send(Method::GET, path, &[], Bytes::new()).await
    }

    async fn dry_run(&self, query: &str, body: &str) -> Reply {
        self.send(Method::POST, &format!("/dry-run{query}"), &[("content-type", "application/json")], body.to_owned())
            .await
    }

    /// Writes `bytes` on a fresh socket and reads until the server closes it (bounded).
    async fn raw(&self, bytes: &[u8]) -> Vec<u8> {
        let mut s = TcpStream::connect(self.addr).await.unwrap();
        // The server may stop reading (and close) before taking everything: that is fine.
        let _ = tokio::time::timeout(STEP, s.write_all(bytes)).await;
        let mut out = Vec::new();
        let _ = tokio::time::timeout(STEP, s.read_to_end(&mut out)).await.expect("server did not close the connection");
        out
    }

    async fn shutdown(mut self) {
        let _ = self.stop.take().unwrap().send(());
        tokio::time::timeout(STEP, self.task).await.expect("server did not stop").unwrap().unwrap();
    }
}

async fn default_server() -> Server {
    start(ServerConfig::default()).await
}

fn results_query(seen: Seen) -> ResultsQuery {
    match seen {
        Seen::Results(_, q) | Seen::Cron(_, q) => q,
        other => panic!("not a listing: {other:?}"),
    }
}

// ───────────────────────────── happy paths ─────────────────────────────

#[tokio::test]
async fn healthcheck_and_liveness() {
    let s = default_server().await;
    let r = s.get("/").await;
    assert_eq!(r.status, 200);
    assert_eq!(r.json(), s.fake.info());
    assert_eq!(r.headers["access-control-allow-origin"], "*");
    let r = s.get("/healthz").await;
    assert_eq!((r.status, r.json()), (200, json!({"ok": true})));
    let r = s.send(Method::HEAD, "/", &[], Bytes::new()).await;
    assert_eq!(r.status, 200);
    assert!(r.body.is_empty());
    assert_eq!(s.fake.calls(), 0);
    s.shutdown().await;
}

#[tokio::test]
async fn result_passes_ids_and_ignores_no_busy() {
    let s = default_server().await;
    let r = s.get(&format!("/result/{MID}?process-id={PID}&no-busy=1")).await;
    assert_eq!(r.status, 200);
    let body = r.json();
    assert_eq!(body["Output"]["data"], "ok");
    assert!(body["Messages"].is_array());
    assert_eq!(s.fake.last(), Seen::Result(PID.into(), MID.into()));
    // The spawn's own result: message id = process id.
    assert_eq!(s.get(&format!("/result/{PID}?process-id={PID}")).await.status, 200);
    s.shutdown().await;
}

#[tokio::test]
async fn results_defaults_and_explicit_parameters() {
    let s = default_server().await;
    let r = s.get(&format!("/results/{PID}")).await;
    assert_eq!(r.status, 200);
    let body = r.json();
    assert_eq!(body.as_object().unwrap().keys().collect::<Vec<_>>(), ["pageInfo", "edges"]);
    assert_eq!(body["pageInfo"]["hasNextPage"], false);
    assert_eq!(body["edges"].as_array().unwrap().len(), EVALS.len());
    let edge = &body["edges"][0];
    assert_eq!(edge.as_object().unwrap().keys().collect::<Vec<_>>(), ["cursor", "node"]);
    assert_eq!(
        edge["cursor"],
        cursor::encode(&Cursor { timestamp: 1000, ordinate: "1".into(), cron: None, sort: Sort::Asc })
    );
    assert_eq!(results_query(s.fake.last()), ResultsQuery { from: None, to: None, sort: Sort::Asc, limit: 25 });

    s.get(&format!("/results/{PID}?from=1000&to=3000&sort=DESC&limit=2")).await.json();
    let bare = |t| Some(CursorBound { timestamp: t, ordinate: None, cron: None });
    assert_eq!(
        results_query(s.fake.last()),
        ResultsQuery { from: bare(1000), to: bare(3000), sort: Sort::Desc, limit: 2 }
    );

    // Larger limits are clamped to the page cap.
    s.get(&format!("/results/{PID}?limit=5000")).await.json();
    assert_eq!(results_query(s.fake.last()).limit, 1000);
    s.shutdown().await;
}

/// Follows `hasNextPage` with each page's last cursor as `from`; returns the nodes' outputs.
async fn walk(s: &Server, route: &str, first: &str) -> (Vec<String>, usize) {
    let mut outputs = Vec::new();
    let mut url = format!("/{route}/{PID}?{first}");
    for pages in 1..=20 {
        let body = s.get(&url).await.json();
        let edges = body["edges"].as_array().unwrap();
        outputs.extend(edges.iter().map(|e| e["node"]["Output"].as_str().unwrap().to_owned()));
        if body["pageInfo"]["hasNextPage"] != true {
            return (outputs, pages);
        }
        let last = edges.last().unwrap()["cursor"].as_str().unwrap();
        // Cursors are standard base64: `+`, `/` and `=` must be escaped in a query.
        let escaped = last.replace('+', "%2B").replace('/', "%2F").replace('=', "%3D");
        url = format!("/{route}/{PID}?from={escaped}&limit=2");
    }
    panic!("pagination did not end");
}

#[tokio::test]
async fn results_cursors_round_trip_through_pagination() {
    let s = default_server().await;
    let all = Fake::page(&ResultsQuery { from: None, to: None, sort: Sort::Asc, limit: 100 }, false);
    let want: Vec<String> = all.edges.iter().map(|(_, n)| n["Output"].as_str().unwrap().to_owned()).collect();

    let (got, pages) = walk(&s, "results", "limit=2").await;
    assert_eq!((got.clone(), pages), (want.clone(), 3));

    // A DESC walk: the sort travels inside the cursor, so later pages need no `sort`.
    let (mut got, pages) = walk(&s, "results", "limit=2&sort=DESC").await;
    got.reverse();
    assert_eq!((got, pages), (want, 3));
    let q = results_query(s.fake.last());
    assert_eq!(q.sort, Sort::Desc);
    assert!(q.from.unwrap().ordinate.is_some());

    // The cursor's sort overrides the parameter.
    let desc = cursor::encode(&Cursor { timestamp: 9000, ordinate: "9".into(), cron: None, sort: Sort::Desc });
    s.get(&format!("/results/{PID}?to={desc}&sort=ASC")).await.json();
    let q = results_query(s.fake.last());
    assert_eq!(q.sort, Sort::Desc);
    assert_eq!(q.to, Some(CursorBound { timestamp: 9000, ordinate: Some("9".into()), cron: None }));
    s.shutdown().await;
}

#[tokio::test]
async fn cron_is_ascending_with_its_own_limits() {
    let s = default_server().await;
    let body = s.get(&format!("/cron/{PID}")).await.json();
    assert_eq!(body["edges"].as_array().unwrap().len(), 2);
    assert_eq!(results_query(s.fake.last()), ResultsQuery { from: None, to: None, sort: Sort::Asc, limit: 500 });

    let desc = cursor::encode(&Cursor { timestamp: 0, ordinate: "0".into(), cron: None, sort: Sort::Desc });
    s.get(&format!("/cron/{PID}?from={desc}&limit=5000&sort=DESC")).await.json();
    let q = results_query(s.fake.last());
    assert_eq!((q.sort, q.limit), (Sort::Asc, 1000));
    assert!(matches!(s.fake.last(), Seen::Cron(..)));

    let (got, _) = walk(&s, "cron", "limit=1").await;
    assert_eq!(got, ["1000/2/Some(\"0-1-seconds\")", "3000/3/Some(\"0-1-seconds\")"]);
    s.shutdown().await;
}

#[tokio::test]
async fn dry_run_accepts_what_aoconnect_sends() {
    let s = default_server().await;
    let body = json!({
        "Id": "1234", "Target": PID, "Owner": "1234", "Anchor": "0", "Data": "1234",
        "Tags": [{"name": "Action", "value": "Balance"}, {"name": "Data-Protocol", "value": "ao"}],
        "Timestamp": "1712967091755", "Extra": {"kept": true}
    });
    let r = s.dry_run(&format!("?process-id={PID}&to={MID}"), &body.to_string()).await;
    assert_eq!(r.status, 200);
    let out = r.json();
    assert_eq!(out["Output"]["Id"], "1234");
    assert_eq!(out["Output"]["Timestamp"], json!(1712967091755u64));
    let Seen::DryRun(pid, to, msg) = s.fake.last() else { panic!("not a dry-run") };
    assert_eq!((pid.as_str(), to.as_deref()), (PID, Some(MID)));
    assert_eq!(msg["Extra"], json!({"kept": true}));
    assert_eq!(msg["Tags"], body["Tags"]);

    // No `to`, no content type, a body of exactly the limit.
    let filler = "x".repeat(MAX_BODY_BYTES - r#"{"Data":""}"#.len());
    let big = format!(r#"{{"Data":"{filler}"}}"#);
    assert_eq!(big.len(), MAX_BODY_BYTES);
    let r = s.send(Method::POST, &format!("/dry-run?process-id={PID}"), &[], big).await;
    assert_eq!(r.status, 200);
    assert!(matches!(s.fake.last(), Seen::DryRun(_, None, _)));
    s.shutdown().await;
}

#[tokio::test]
async fn state_is_octet_stream_with_position_headers() {
    let s = default_server().await;
    let r = s.get(&format!("/state/{PID}?to=1712967091755")).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.headers["content-type"], "application/octet-stream");
    assert_eq!(r.headers["last-timestamp"], "1712967091755");
    assert_eq!(r.headers["last-ordinate"], "23");
    assert_eq!(r.headers["last-block-height"], "1400000");
    assert_eq!(r.headers["access-control-allow-origin"], "*");
    assert_eq!(r.body.len(), 65536);
    assert_eq!(s.fake.last(), Seen::State(PID.into(), Some(1712967091755)));

    let bare = id("BARE");
    let r = s.get(&format!("/state/{bare}")).await;
    assert_eq!((r.status, &r.body[..]), (200, &b"\0asm"[..]));
    for h in ["last-timestamp", "last-ordinate", "last-block-height"] {
        assert!(r.headers.get(h).is_none(), "{h}");
    }
    assert_eq!(s.fake.last(), Seen::State(bare, None));
    s.shutdown().await;
}

#[tokio::test]
async fn cors_preflight_and_headers() {
    let s = default_server().await;
    let r = s
        .send(
            Method::OPTIONS,
            "/dry-run?process-id=x",
            &[
                ("origin", "https://app.example"),
                ("access-control-request-method", "POST"),
                ("access-control-request-headers", "content-type"),
            ],
            Bytes::new(),
        )
        .await;
    assert_eq!(r.status, 204);
    assert_eq!(r.headers["access-control-allow-origin"], "*");
    assert!(r.headers["access-control-allow-methods"].to_str().unwrap().contains("POST"));
    assert_eq!(r.headers["access-control-allow-headers"], "content-type");
    assert!(r.body.is_empty());
    assert_eq!(s.fake.calls(), 0);
    s.shutdown().await;
}

// ───────────────────────────── errors ─────────────────────────────

#[tokio::test]
async fn unknown_routes_and_wrong_methods() {
    let s = default_server().await;
    for path in ["/nope", "/results", &format!("/results/{PID}/x"), "/metrics", "/healthz/"] {
        s.get(path).await.assert_error(404, "Not Found");
    }
    let r = s.send(Method::POST, &format!("/results/{PID}"), &[], "{}").await;
    r.assert_error(405, "Method Not Allowed");
    assert_eq!(r.headers["allow"], "GET, HEAD, OPTIONS");
    let r = s.get("/dry-run").await;
    r.assert_error(405, "Method Not Allowed");
    assert_eq!(r.headers["allow"], "POST, OPTIONS");
    s.send(Method::DELETE, "/", &[], Bytes::new()).await.assert_error(405, "Method Not Allowed");
    assert_eq!(s.fake.calls(), 0);
    s.shutdown().await;
}

#[tokio::test]
async fn malformed_query_input_is_400_naming_the_field() {
    let s = default_server().await;
    let long = "1".repeat(2000);
    let cases = [
        (format!("/result/{MID}"), "'process-id': Required."),
        (format!("/result/{MID}?process-id="), "'process-id': Required."),
        (format!("/result/{MID}?process-id=1234"), "'process-id': expected an ao id"),
        (format!("/result/short?process-id={PID}"), "'messageTxId': expected an ao id"),
        (format!("/result/{MID}?process-id={PID}&process-id={PID}"), "'process-id': given more than once"),
        ("/results/not-an-id".to_owned(), "'processId': expected an ao id"),
        ("/results/".to_owned(), "'processId': Required."),
        (format!("/results/{PID}?limit=0"), "'limit': expected a positive integer."),
        (format!("/results/{PID}?limit=ten"), "'limit'"),
        (format!("/results/{PID}?limit=-3"), "'limit'"),
        (format!("/results/{PID}?sort=UP"), "'sort': expected 'ASC' or 'DESC'."),
        (format!("/results/{PID}?from=yesterday"), "'from': expected a cursor or a timestamp"),
        (format!("/results/{PID}?to=%7B%7D"), "'to': expected a cursor or a timestamp"),
        (format!("/results/{PID}?from={long}"), "'from': longer than"),
        (format!("/cron/{PID}?from=-1"), "'from'"),
        (format!("/cron/{PID}?limit=1.5"), "'limit'"),
        (format!("/cron/{}", "a".repeat(44)), "'processId'"),
        (format!("/state/{PID}?to=abc"), "'to': expected a timestamp in milliseconds."),
        (format!("/state/{PID}?to={}", "9".repeat(30)), "'to'"),
        (format!("/state/{PID}?x=%FF"), "not valid UTF-8"),
        ("/state/%FF".to_owned(), "'processId'"),
    ];
    for (path, want) in cases {
        let r = s.get(&path).await;
        assert_eq!(r.status, 400, "{path}");
        r.assert_error(400, want);
    }
    assert_eq!(s.fake.calls(), 0, "nothing malformed reaches the domain");
    s.shutdown().await;
}

#[tokio::test]
async fn malformed_dry_runs_are_400_415_413() {
    let s = default_server().await;
    let ok_body = r#"{"Owner":"1234","Tags":[]}"#;
    s.dry_run("", ok_body).await.assert_error(400, "'process-id': Required.");
    s.dry_run("?process-id=abc", ok_body).await.assert_error(400, "'process-id': expected an ao id");
    s.dry_run(&format!("?process-id={PID}&to=abc"), ok_body).await.assert_error(400, "'to': expected an ao id");
    let q = format!("?process-id={PID}");
    s.dry_run(&q, "").await.assert_error(400, "Body is empty");
    s.dry_run(&q, "{\"Owner\":").await.assert_error(400, "Body is not valid JSON");
    s.dry_run(&q, "[1,2]").await.assert_error(400, "Body must be a JSON object, received array");
    s.dry_run(&q, r#"{"Owner":42}"#).await.assert_error(400, "'Owner': Expected string, received number.");
    s.dry_run(&q, r#"{"Tags":[{"name":"A","value":1}]}"#)
        .await
        .assert_error(400, "'Tags.0.value': Expected string, received number.");
    s.dry_run(&q, r#"{"Tags":{"name":"A"}}"#).await.assert_error(400, "'Tags': Expected array, received object.");
    s.dry_run(&q, r#"{"Block-Height":"high"}"#).await.assert_error(400, "'Block-Height': Expected number");
    s.send(Method::POST, &format!("/dry-run{q}"), &[("content-type", "text/plain")], ok_body)
        .await
        .assert_error(415, "application/json");
    assert_eq!(s.fake.calls(), 0);

    // One byte over the limit: 413, and the connection pool keeps working afterwards.
    let big = format!(r#"{{"Data":"{}"}}"#, "x".repeat(MAX_BODY_BYTES));
    s.send(Method::POST, &format!("/dry-run{q}"), &[("content-type", "application/json")], big)
        .await
        .assert_error(413, "too large");
    // Declared far beyond what the server drains: 413 at once, connection closed.
    let head = format!(
        "POST /dry-run{q} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100000000\r\n\r\n"
    );
    let out = String::from_utf8_lossy(&s.raw(head.as_bytes()).await).into_owned();
    assert!(out.starts_with("HTTP/1.1 413"), "{out}");
    assert!(out.contains("too large"), "{out}");
    assert_eq!(s.fake.calls(), 0);
    assert_eq!(s.get("/healthz").await.status, 200);
    s.shutdown().await;
}

#[tokio::test]
async fn domain_errors_keep_their_status() {
    let s = default_server().await;
    let e425 = id("E425");
    s.get(&format!("/result/{MID}?process-id={e425}")).await.assert_error(425, "not found cached");
    let e503 = id("E503");
    s.get(&format!("/results/{e503}")).await.assert_error(503, "Nonce limit exceeded");
    s.get(&format!("/cron/{e503}")).await.assert_error(503, "Nonce limit exceeded");
    s.get(&format!("/state/{e425}")).await.assert_error(425, "not found cached");
    s.dry_run(&format!("?process-id={e503}"), "{}").await.assert_error(503, "Nonce limit exceeded");
    s.shutdown().await;
}

#[tokio::test]
async fn a_panicking_request_is_a_500_and_the_server_goes_on() {
    let s = default_server().await;
    let r = s.get(&format!("/results/{}", id("PANIC"))).await;
    r.assert_error(500, "Internal Server Error");
    assert_eq!(s.get("/healthz").await.status, 200);
    s.shutdown().await;
}

// ───────────────────────────── limits, robustness, shutdown ─────────────────────────────

#[tokio::test]
async fn survives_garbage_and_keeps_serving() {
    let s = default_server().await;
    let huge_header = format!("GET / HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\n\r\n", "a".repeat(100_000));
    let long_uri =
        format!("GET /results/{PID}?from={} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", "1".repeat(10_000));
    let many_headers: String = (0..200).map(|i| format!("X-{i}: v\r\n")).collect();
    let many_headers = format!("GET / HTTP/1.1\r\nHost: x\r\n{many_headers}\r\n");
    let inputs: Vec<(&[u8], Option<&str>)> = vec![
        (b"\x00\x01\x02\xff\xfe garbage \r\n\r\n", Some("HTTP/1.1 400")),
        (b"NOT HTTP AT ALL\r\n\r\n", Some("HTTP/1.1 400")),
        (b"GET / HTTP/9.9\r\n\r\n", None),
        (b"POST /dry-run HTTP/1.1\r\nHost: x\r\nContent-Length: zz\r\n\r\n", Some("HTTP/1.1 400")),
        (b"POST /dry-run HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nZZZ\r\n", None),
        (huge_header.as_bytes(), Some("HTTP/1.1 431")),
        (many_headers.as_bytes(), Some("HTTP/1.1 431")),
        (long_uri.as_bytes(), Some("HTTP/1.1 414")),
    ];
    // A truncated head, then the client hangs up.
    let mut sock = TcpStream::connect(s.addr).await.unwrap();
    sock.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n").await.unwrap();
    drop(sock);
    for (bytes, want) in inputs {
        let out = s.raw(bytes).await;
        if let Some(want) = want {
            let text = String::from_utf8_lossy(&out);
            assert!(text.starts_with(want), "{:?} → {text}", String::from_utf8_lossy(&bytes[..bytes.len().min(60)]));
        }
        assert_eq!(s.get("/healthz").await.status, 200);
    }
    assert_eq!(s.fake.calls(), 0);
    s.shutdown().await;
}

#[tokio::test]
async fn keep_alive_serves_several_requests_on_one_connection() {
    let s = default_server().await;
    let mut sock = TcpStream::connect(s.addr).await.unwrap();
    let req = "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n";
    sock.write_all(format!("{req}{req}GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut out = Vec::new();
    tokio::time::timeout(STEP, sock.read_to_end(&mut out)).await.unwrap().unwrap();
    let text = String::from_utf8_lossy(&out);
    assert_eq!(text.matches("HTTP/1.1 200 OK").count(), 3, "{text}");
    s.shutdown().await;
}

#[tokio::test]
async fn slow_clients_and_slow_requests_are_cut() {
    let s = start(ServerConfig {
        request_timeout: Duration::from_millis(150),
        header_read_timeout: Duration::from_millis(200),
        body_read_timeout: Duration::from_millis(100),
        ..ServerConfig::default()
    })
    .await;
    // A request the domain takes too long to answer: 504.
    s.get(&format!("/result/{MID}?process-id={}", id("SLOW"))).await.assert_error(504, "not answered within");
    // A head that never completes: the connection is closed (bounded by `raw`'s timeout).
    s.raw(b"GET / HTTP/1.1\r\nHost: x\r\n").await;
    // A body that never arrives: 408.
    let head = format!("POST /dry-run?process-id={PID} HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\n{{");
    let out = String::from_utf8_lossy(&s.raw(head.as_bytes()).await).into_owned();
    assert!(out.starts_with("HTTP/1.1 408"), "{out}");
    assert_eq!(s.get("/healthz").await.status, 200);
    s.shutdown().await;
}

#[tokio::test]
async fn graceful_shutdown_finishes_in_flight_requests() {
    let s = default_server().await;
    let addr = s.addr;
    let slow = {
        let client = s.client.clone();
        let uri = format!("http://{addr}/result/{MID}?process-id={}", id("SLOW"));
        tokio::spawn(async move {
            let resp = client.request(Request::get(uri).body(Full::new(Bytes::new())).unwrap()).await.unwrap();
            resp.status().as_u16()
        })
    };
    // Let the slow request reach the domain, then stop the server while it runs.
    for _ in 0..100 {
        if s.fake.calls() > 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(s.fake.calls(), 1);
    let stopped = std::time::Instant::now();
    s.shutdown().await;
    assert!(stopped.elapsed() < Duration::from_secs(2));
    assert_eq!(tokio::time::timeout(STEP, slow).await.unwrap().unwrap(), 200);
    assert!(TcpStream::connect(addr).await.is_err(), "the listener is closed after shutdown");
}
