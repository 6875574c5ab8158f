//! `RoutedScheduler` over a fake gateway (counting its calls) and two real local SUs served over
//! HTTP on 127.0.0.1, plus small hyper fakes for an SU that redirects and for an SU router:
//! process → `Scheduler` tag → Scheduler-Location → the right SU; locations cached for their TTL
//! and located again after it; the redirect probe moving a process to another SU; the
//! `SU_ROUTER_URL` path; the locating errors and their statuses; a fixed SU; an unreachable SU
//! dropping the cached location; concurrent calls locating once.

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::atomic::{AtomicI64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use metalcu::gateway::{Block, Gateway, GatewayError, SchedulerLocation, TxMeta};
use metalcu::net::{AnyTransport, ClientConfig, IoMode};
use metalcu::su::local::LocalScheduler;
use metalcu::su::local_http;
use metalcu::su::router::{RoutedScheduler, RouterConfig};
use metalcu::su::scheduler::{PageQuery, Scheduler, SuError};
use metalcu::su::types::{Owner, Tag};
use tokio::net::TcpListener;

const MODULE: &str = "bkjb55i07GUCUSWROtKK4HU1mBS_X0TyH3M5jMV6aPg";
const OWNER: &str = "vh-NTHVvlKZqRxc8LyyTNok65yQ55a_PJ1zWLb9G2JI";
const T0: i64 = 1_760_000_000_000;

fn t(name: &str, value: &str) -> Tag {
    Tag { name: name.into(), value: value.into() }
}

/// A 43-character id starting with `tag`.
fn id(tag: &str) -> String {
    format!("{tag:-<43}")
}

fn wallet(n: u8) -> String {
    id(&format!("wallet{n}"))
}

/// A gateway with processes (pid → tags) and Scheduler-Location answers (wallet → result),
/// counting calls; `delay` slows every call.
#[derive(Default)]
struct FakeGateway {
    txs: Mutex<HashMap<String, Vec<Tag>>>,
    locations: Mutex<HashMap<String, Result<SchedulerLocation, GatewayError>>>,
    tx_calls: AtomicUsize,
    location_calls: AtomicUsize,
    delay: Mutex<Duration>,
}

impl FakeGateway {
    fn process(&self, pid: &str, tags: Vec<Tag>) {
        self.txs.lock().unwrap().insert(pid.to_string(), tags);
    }
    fn scheduler(&self, wallet: &str, url: &str, ttl_ms: u64) {
        let loc = SchedulerLocation { url: url.to_string(), ttl_ms };
        self.locations.lock().unwrap().insert(wallet.to_string(), Ok(loc));
    }
    fn scheduler_err(&self, wallet: &str, e: GatewayError) {
        self.locations.lock().unwrap().insert(wallet.to_string(), Err(e));
    }
    fn calls(&self) -> (usize, usize) {
        (self.tx_calls.load(Ordering::SeqCst), self.location_calls.load(Ordering::SeqCst))
    }
    async fn pause(&self) {
        let d = *self.delay.lock().unwrap();
        if !d.is_zero() {
            tokio::time::sleep(d).await;
        }
    }
}

impl Gateway for FakeGateway {
    async fn transaction(&self, id: &str) -> Result<TxMeta, GatewayError> {
        self.tx_calls.fetch_add(1, Ordering::SeqCst);
        self.pause().await;
        let tags = self.txs.lock().unwrap().get(id).cloned().ok_or_else(|| GatewayError::NotFound(id.to_string()))?;
        Ok(TxMeta {
            id: id.to_string(),
            owner: Owner { address: OWNER.into(), key: String::new() },
            tags,
            signature: None,
            anchor: None,
            recipient: None,
        })
    }
    async fn raw(&self, id: &str) -> Result<Bytes, GatewayError> {
        Err(GatewayError::NotFound(id.to_string()))
    }
    async fn blocks(&self, _: u64, _: i64) -> Result<Vec<Block>, GatewayError> {
        Ok(Vec::new())
    }
    async fn checkpoints(&self, _: &str, _: &[String], _: usize) -> Result<Vec<TxMeta>, GatewayError> {
        Ok(Vec::new())
    }
    async fn scheduler_location(&self, owner: &str) -> Result<SchedulerLocation, GatewayError> {
        self.location_calls.fetch_add(1, Ordering::SeqCst);
        self.pause().await;
        self.locations
            .lock()
            .unwrap()
            .get(owner)
            .cloned()
            .unwrap_or_else(|| Err(GatewayError::NotFound(format!("Scheduler-Location of {owner}"))))
    }
}

/// A real local SU over HTTP with one spawned process (its `Scheduler` tag is `scheduler`).
struct Su {
    url: String,
    pid: String,
    _dir: tempfile::TempDir,
    _stop: tokio::sync::oneshot::Sender<()>,
}

async fn su(scheduler: &str) -> Su {
    let dir = tempfile::tempdir().unwrap();
    let now = Arc::new(AtomicI64::new(T0));
    let c = now.clone();
    let local =
        Arc::new(LocalScheduler::open(dir.path().join("su.redb"), Box::new(move || c.load(Ordering::SeqCst))).unwrap());
    let tags = vec![
        t("Data-Protocol", "ao"),
        t("Variant", "ao.TN.1"),
        t("Type", "Process"),
        t("Module", MODULE),
        t("Scheduler", scheduler),
    ];
    let pid = local.spawn(OWNER, tags, "-- data".into()).unwrap().id;
    now.fetch_add(10, Ordering::SeqCst);
    local.post(&pid, OWNER, vec![t("Data-Protocol", "ao"), t("Type", "Message")], "hi".into()).unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(local_http::serve(listener, local, async {
        let _ = stopped.await;
    }));
    Su { url, pid, _dir: dir, _stop: stop }
}

/// A hyper server answering `handler(path) → (status, location, body)`, recording paths.
struct Fake {
    url: String,
    paths: Arc<Mutex<Vec<String>>>,
}

impl Fake {
    fn paths(&self) -> Vec<String> {
        self.paths.lock().unwrap().clone()
    }
}

async fn fake(handler: impl Fn(&str) -> (u16, Option<String>, String) + Send + Sync + 'static) -> Fake {
    let handler = Arc::new(handler);
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let paths = Arc::new(Mutex::new(Vec::new()));
    let log = paths.clone();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else { return };
            let (handler, log) = (handler.clone(), log.clone());
            tokio::spawn(async move {
                let svc = service_fn(move |req: Request<Incoming>| {
                    let path = req.uri().path_and_query().map(|p| p.to_string()).unwrap_or_default();
                    log.lock().unwrap().push(path.clone());
                    let (status, location, body) = handler(&path);
                    let mut resp = Response::builder().status(status).header("content-type", "application/json");
                    if let Some(l) = location {
                        resp = resp.header("location", l);
                    }
                    let resp = resp.body(Full::new(Bytes::from(body))).unwrap();
                    async move { Ok::<_, Infallible>(resp) }
                });
                let _ = http1::Builder::new().serve_connection(TokioIo::new(stream), svc).await;
            });
        }
    });
    Fake { url, paths }
}

fn fast() -> ClientConfig {
    ClientConfig {
        retries: 1,
        base_delay: Duration::from_millis(20),
        max_total: Duration::from_secs(3),
        request_timeout: Duration::from_secs(1),
        max_body_bytes: 1024 * 1024,
    }
}

fn router(gw: &Arc<FakeGateway>, cfg: RouterConfig) -> RoutedScheduler<FakeGateway> {
    let transport = Arc::new(AnyTransport::new(IoMode::Epoll, Duration::from_secs(1)).unwrap());
    RoutedScheduler::new(gw.clone(), transport, RouterConfig { client: fast(), ..cfg }).unwrap()
}

fn q() -> PageQuery {
    PageQuery::default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn processes_are_routed_to_their_su() {
    let (w1, w2) = (wallet(1), wallet(2));
    let (su1, su2) = (su(&w1).await, su(&w2).await);
    let gw = Arc::new(FakeGateway::default());
    gw.process(&su1.pid, vec![t("Type", "Process"), t("Scheduler", &w1)]);
    gw.process(&su2.pid, vec![t("Type", "Process"), t("Scheduler", &w2)]);
    gw.scheduler(&w1, &su1.url, 60_000);
    gw.scheduler(&w2, &format!("{}/", su2.url), 60_000);
    let r = router(&gw, RouterConfig::default());

    assert_eq!(r.process(&su1.pid).await.unwrap().process_id, su1.pid);
    assert_eq!(r.process(&su2.pid).await.unwrap().process_id, su2.pid);
    assert_eq!(r.page(&su1.pid, q()).await.unwrap().edges.len(), 2);
    assert_eq!(r.page(&su2.pid, q()).await.unwrap().edges.len(), 2);
    assert!(r.latest(&su1.pid).await.unwrap().is_some());
    assert_eq!(r.locate(&su1.pid).await.unwrap(), su1.url);
    assert_eq!(r.locate(&su2.pid).await.unwrap(), su2.url, "trailing slash trimmed");
    // One lookup per process, then the cache.
    assert_eq!(gw.calls(), (2, 2));

    // A hint (the process's Scheduler tag, known to the caller) skips the process lookup.
    let hinted = id("hinted");
    assert_eq!(r.locate_hinted(&hinted, Some(&w2)).await.unwrap(), su2.url);
    assert_eq!(gw.calls(), (2, 3));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn locations_expire_with_their_ttl() {
    let w1 = wallet(1);
    let pid = id("ttl-process");
    let gw = Arc::new(FakeGateway::default());
    gw.process(&pid, vec![t("Scheduler", &w1)]);
    gw.scheduler(&w1, "http://127.0.0.1:9/first", 300);
    let r = router(&gw, RouterConfig { follow_redirects: false, ..RouterConfig::default() });

    assert_eq!(r.locate(&pid).await.unwrap(), "http://127.0.0.1:9/first");
    gw.scheduler(&w1, "http://127.0.0.1:9/second", 300);
    assert_eq!(r.locate(&pid).await.unwrap(), "http://127.0.0.1:9/first", "cached within the TTL");
    assert_eq!(gw.calls(), (1, 1));
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(r.locate(&pid).await.unwrap(), "http://127.0.0.1:9/second", "located again after the TTL");
    assert_eq!(gw.calls(), (2, 2));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_redirect_probe_moves_a_process() {
    let w1 = wallet(1);
    let su1 = su(&w1).await;
    let pid = su1.pid.clone();
    let real = su1.url.clone();
    let front = fake(move |path| {
        if path.starts_with("/?process-id=") {
            (307, Some(format!("{real}/?{}", &path[2..])), String::new())
        } else {
            (500, None, r#"{"error":"this SU only redirects"}"#.into())
        }
    })
    .await;
    let gw = Arc::new(FakeGateway::default());
    gw.process(&pid, vec![t("Scheduler", &w1)]);
    gw.scheduler(&w1, &format!("{}/", front.url), 60_000);

    let r = router(&gw, RouterConfig::default());
    assert_eq!(r.process(&pid).await.unwrap().process_id, pid);
    assert_eq!(r.locate(&pid).await.unwrap(), su1.url, "the Location's origin");
    assert_eq!(front.paths(), vec![format!("/?process-id={pid}")], "one probe, redirect not followed by it");

    // Without the probe the process stays on the front (whose calls then fail).
    let r = router(&gw, RouterConfig { follow_redirects: false, ..RouterConfig::default() });
    assert_eq!(r.locate(&pid).await.unwrap(), front.url);
    assert_eq!(front.paths().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_su_router_names_the_scheduler() {
    let (w1, w2) = (wallet(1), wallet(2));
    let (su1, su2) = (su(&w1).await, su(&w2).await);
    let routed = su2.pid.clone();
    let w = w2.clone();
    let su_router = fake(move |path| {
        if path == format!("/?process-id={routed}") {
            (200, None, format!(r#"{{"address":"{w}","timestamp":1}}"#))
        } else {
            (500, None, "router down".into())
        }
    })
    .await;
    let gw = Arc::new(FakeGateway::default());
    // The gateway does not know su2's process: only the router can place it.
    gw.process(&su1.pid, vec![t("Scheduler", &w1)]);
    gw.scheduler(&w1, &su1.url, 60_000);
    gw.scheduler(&w2, &su2.url, 60_000);
    let cfg = RouterConfig { router_url: Some(format!("{}/", su_router.url)), ..RouterConfig::default() };
    let r = router(&gw, cfg);

    assert_eq!(r.process(&su2.pid).await.unwrap().process_id, su2.pid);
    assert_eq!(su_router.paths(), vec![format!("/?process-id={}", su2.pid)]);
    assert_eq!(gw.calls(), (0, 1), "location of the router's wallet only");

    // A failing router falls back to the gateway.
    assert_eq!(r.process(&su1.pid).await.unwrap().process_id, su1.pid);
    assert_eq!(gw.calls(), (1, 2));

    // The setting comes from SU_ROUTER_URL; blank is unset.
    let cfg = RouterConfig::from_lookup(|k| (k == "SU_ROUTER_URL").then(|| "http://router.local".to_string()));
    assert_eq!(cfg.router_url.as_deref(), Some("http://router.local"));
    assert_eq!(RouterConfig::from_lookup(|_| Some(" ".into())).router_url, None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn locating_errors_carry_the_reference_names() {
    let gw = Arc::new(FakeGateway::default());
    let (untagged, unknown, homeless, broken, offline) =
        (id("untagged"), id("unknown"), id("homeless"), id("broken"), id("offline"));
    gw.process(&untagged, vec![t("Type", "Process")]);
    gw.process(&homeless, vec![t("Scheduler", &wallet(7))]);
    gw.process(&broken, vec![t("Scheduler", &wallet(8))]);
    gw.process(&offline, vec![t("Scheduler", &wallet(9))]);
    gw.scheduler_err(
        &wallet(8),
        GatewayError::Invalid("InvalidSchedulerLocation: No \"Time-To-Live\" tag found on Scheduler-Location".into()),
    );
    gw.scheduler_err(&wallet(9), GatewayError::Unavailable("gateway down".into()));
    let r = router(&gw, RouterConfig::default());

    let e = r.process(&untagged).await.unwrap_err();
    assert!(matches!(e, SuError::NotFound(ref t) if t.starts_with("SchedulerTagNotFound")), "{e:?}");
    assert_eq!(e.status(), 404);
    let e = r.page(&unknown, q()).await.unwrap_err();
    assert!(matches!(e, SuError::NotFound(ref t) if t.starts_with("TransactionNotFound")), "{e:?}");
    let e = r.latest(&homeless).await.unwrap_err();
    assert!(matches!(e, SuError::NotFound(ref t) if t.contains("Scheduler-Location")), "{e:?}");
    let e = r.message(&broken, &id("m")).await.unwrap_err();
    assert!(matches!(e, SuError::Invalid(ref t) if t.contains("InvalidSchedulerLocation")), "{e:?}");
    assert_eq!(e.status(), 502);
    let e = r.timestamp(&offline).await.unwrap_err();
    assert_eq!(e.status(), 503, "{e:?}");

    // A pid that is not an Arweave id never reaches the gateway.
    let before = gw.calls();
    assert!(matches!(r.process("not-a-pid").await, Err(SuError::Invalid(_))));
    assert_eq!(gw.calls(), before);
    // Failures are not cached.
    gw.process(&untagged, vec![t("Scheduler", &wallet(8))]);
    assert_eq!(r.process(&untagged).await.unwrap_err().status(), 502);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fixed_su_takes_every_process() {
    let (w1, w2) = (wallet(1), wallet(2));
    let (su1, su2) = (su(&w1).await, su(&w2).await);
    let gw = Arc::new(FakeGateway::default());
    let r = router(&gw, RouterConfig { su_url: Some(format!("{}/", su2.url)), ..RouterConfig::default() });
    assert_eq!(r.process(&su2.pid).await.unwrap().process_id, su2.pid);
    assert!(matches!(r.process(&su1.pid).await, Err(SuError::NotFound(_))), "su1's process is not on su2");
    assert_eq!(r.locate(&su1.pid).await.unwrap(), su2.url);
    assert_eq!(gw.calls(), (0, 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_su_is_located_again() {
    let w1 = wallet(1);
    let su1 = su(&w1).await;
    let dead = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        format!("http://{}", l.local_addr().unwrap())
    };
    let gw = Arc::new(FakeGateway::default());
    gw.process(&su1.pid, vec![t("Scheduler", &w1)]);
    gw.scheduler(&w1, &dead, 3_600_000);
    let r = router(&gw, RouterConfig::default());
    assert_eq!(r.process(&su1.pid).await.unwrap_err().status(), 503);
    // The SU moved; the hour-long TTL does not keep the process on the dead one.
    gw.scheduler(&w1, &su1.url, 3_600_000);
    assert_eq!(r.process(&su1.pid).await.unwrap().process_id, su1.pid);
    assert_eq!(gw.calls(), (2, 2));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_calls_locate_once() {
    let w1 = wallet(1);
    let su1 = su(&w1).await;
    let gw = Arc::new(FakeGateway::default());
    gw.process(&su1.pid, vec![t("Scheduler", &w1)]);
    gw.scheduler(&w1, &su1.url, 60_000);
    *gw.delay.lock().unwrap() = Duration::from_millis(100);
    let r = Arc::new(router(&gw, RouterConfig::default()));
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let (r, pid) = (r.clone(), su1.pid.clone());
        tasks.push(tokio::spawn(async move { r.timestamp(&pid).await }));
    }
    for task in tasks {
        assert_eq!(task.await.unwrap().unwrap().0, T0 + 10);
    }
    assert_eq!(gw.calls(), (1, 1));
}
