//! An Arweave gateway for `metalcu serve` children, on 127.0.0.1: GraphQL (`GetProcesses` for
//! modules and processes, `GetSchedulerLocation` pointing the local SU's wallet at its HTTP
//! front) and `/raw/:id` for module binaries, with the real JSON shapes. Modules come from a
//! [`LocalGateway`], processes from the [`LocalScheduler`]. A query it does not know is answered
//! 400 naming it, so the CU's error says what was asked; that, and any other request a CU should
//! not make (a path other than `/raw/:id` and `/graphql`, a body that is not JSON, the location
//! of a scheduler other than the local SU), is also kept in [`FakeGateway::unexpected`] for the
//! test to check, since a failure inside the gateway's own tasks cannot fail the test.
//! [`start_echo_stack`] sets up what `metalcu serve` children reach: the local SU over HTTP and
//! this gateway with the echo module.

use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use metalcu::gateway::Gateway;
use metalcu::gateway::local::LocalGateway;
use metalcu::su::local::{DEV_OWNER, LOCAL_SU_ADDRESS, LocalScheduler, system_clock};
use metalcu::su::scheduler::Scheduler;
use serde_json::{Value, json};

/// Time-To-Live of the scheduler location it announces, in ms.
const LOCATION_TTL_MS: &str = "3600000";

/// A running gateway: its URL and what it was asked that a CU should not ask.
pub struct FakeGateway {
    pub url: String,
    unexpected: Arc<Mutex<Vec<String>>>,
}

impl FakeGateway {
    /// The requests it refused or did not expect, in the order they came, each said in a line.
    #[allow(dead_code)] // Not every test that serves the gateway checks it.
    pub fn unexpected(&self) -> Vec<String> {
        self.unexpected.lock().expect("unexpected requests").clone()
    }
}

/// Serves the gateway on an ephemeral port of 127.0.0.1 until the runtime stops.
pub async fn start(modules: Arc<LocalGateway>, su: Arc<LocalScheduler>, su_url: String) -> FakeGateway {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind the gateway");
    let addr = listener.local_addr().expect("gateway address");
    let unexpected = Arc::new(Mutex::new(Vec::new()));
    let log = unexpected.clone();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else { return };
            let (modules, su, su_url, log) = (modules.clone(), su.clone(), su_url.clone(), log.clone());
            tokio::spawn(async move {
                let svc = service_fn(move |req: Request<hyper::body::Incoming>| {
                    let (modules, su, su_url, log) = (modules.clone(), su.clone(), su_url.clone(), log.clone());
                    async move {
                        let path = req.uri().path().to_string();
                        let body = req.into_body().collect().await.map(|b| b.to_bytes()).unwrap_or_default();
                        let (status, out) = match answer(&path, &body, &modules, &su, &su_url).await {
                            Ok(answer) => answer,
                            Err((why, answer)) => {
                                log.lock().expect("unexpected requests").push(why);
                                answer
                            }
                        };
                        Ok::<_, std::convert::Infallible>(
                            Response::builder().status(status).body(Full::new(out)).expect("response"),
                        )
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(stream), svc).await;
            });
        }
    });
    FakeGateway { url: format!("http://{addr}"), unexpected }
}

/// What [`start_echo_stack`] set up.
pub struct EchoStack {
    /// The local SU, served over HTTP; the gateway points its wallet there.
    pub su: Arc<LocalScheduler>,
    /// The echo module's id at the gateway.
    pub module: String,
    pub gateway: FakeGateway,
}

/// A local SU in `dir/su.redb` (system clock) served over HTTP on 127.0.0.1, the project's echo
/// module (`wasm32-unknown-emscripten4`) registered by `DEV_OWNER`, and a gateway serving both,
/// until the runtime stops.
pub async fn start_echo_stack(dir: &std::path::Path) -> EchoStack {
    let su = Arc::new(LocalScheduler::open(dir.join("su.redb"), system_clock()).expect("open the local SU"));
    let su_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind the SU");
    let su_url = format!("http://{}", su_listener.local_addr().expect("SU address"));
    tokio::spawn(metalcu::su::local_http::serve(su_listener, su.clone(), std::future::pending()));
    let modules = Arc::new(LocalGateway::default());
    let wasm = wat::parse_str(crate::common::echo_wat("", "", "")).expect("the echo module");
    let module_tags = crate::common::module_tags("wasm32-unknown-emscripten4");
    let module = modules.register(DEV_OWNER, module_tags, wasm).expect("register the echo module");
    let gateway = start(modules, su.clone(), su_url).await;
    EchoStack { su, module, gateway }
}

/// An answer, or why the request was not expected with the answer it gets.
type Answer = Result<(u16, Bytes), (String, (u16, Bytes))>;

fn edges(edges: Vec<Value>) -> (u16, Bytes) {
    (200, Bytes::from(json!({"data": {"transactions": {"edges": edges}}}).to_string()))
}

fn refuse(why: String) -> Answer {
    let answer = (400, Bytes::from(json!({ "errors": [{ "message": why }] }).to_string()));
    Err((why, answer))
}

async fn answer(path: &str, body: &[u8], modules: &LocalGateway, su: &LocalScheduler, su_url: &str) -> Answer {
    if let Some(id) = path.strip_prefix("/raw/") {
        return Ok(match modules.raw(id).await {
            Ok(b) => (200, b),
            Err(_) => (404, Bytes::from_static(b"not found")),
        });
    }
    if path != "/graphql" {
        return Err((format!("a request for {path}, not /graphql"), (404, Bytes::from_static(b"not found"))));
    }
    let Ok(q) = serde_json::from_slice::<Value>(body) else {
        return refuse("the body is not JSON".into());
    };
    let query = q["query"].as_str().unwrap_or_default();
    if query.contains("GetSchedulerLocation") {
        let owner = &q["variables"]["owner"];
        if owner != LOCAL_SU_ADDRESS {
            return Err((format!("the location of scheduler {owner}, not the local SU"), edges(vec![])));
        }
        let tags = json!([{"name": "Url", "value": su_url}, {"name": "Time-To-Live", "value": LOCATION_TTL_MS}]);
        return Ok(edges(vec![json!({ "node": { "tags": tags } })]));
    }
    if query.contains("GetProcesses") {
        let id = q["variables"]["processIds"][0].as_str().unwrap_or_default().to_string();
        let (owner, tags) = match (modules.transaction(&id).await, su.process(&id).await) {
            (Ok(m), _) => (m.owner, m.tags),
            (_, Ok(p)) => (p.owner, p.tags),
            _ => return Ok(edges(vec![])),
        };
        let node =
            json!({"id": id, "owner": {"address": owner.address, "key": owner.key}, "tags": tags, "recipient": ""});
        return Ok(edges(vec![json!({ "node": node })]));
    }
    if query.contains("GetAoProcessCheckpoints") {
        // No Arweave checkpoints: processes replay from their scheduler.
        return Ok(edges(vec![]));
    }
    refuse(format!("the test gateway does not answer this query: {query}"))
}
