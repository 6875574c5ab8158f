//! [`RoutedScheduler`]: the [`Scheduler`] of a CU on the real network, where every process has its
//! own SU. For each process id it finds that SU (cu-protocol §2.1), then delegates the call to an
//! [`HttpScheduler`] for that SU's URL (one per URL, all sharing one [`Fetcher`] and transport).
//!
//! Locating a process, in order:
//! 1. the location cache: LRU of [`LOCATION_CACHE_ENTRIES`] `pid → SU url`, each entry living for
//!    its Scheduler-Location's `Time-To-Live` (capped at [`MAX_LOCATION_TTL`]);
//! 2. a hint, when the caller knows the process's `Scheduler` tag
//!    ([`RoutedScheduler::locate_hinted`]; the reference takes it from its `processes` table):
//!    that wallet's Scheduler-Location via the gateway;
//! 3. with `SU_ROUTER_URL` set: `GET {router}/?process-id={pid}` → `{"address"}`, then that
//!    wallet's Scheduler-Location via the gateway (no router URL is built in; if the router fails,
//!    step 4 is tried);
//! 4. the gateway: the process's tags (`Gateway::transaction(pid)`) → tag `Scheduler` → that
//!    wallet's Scheduler-Location;
//! 5. unless disabled, the redirect probe: `GET {url}/?process-id={pid}` sent on the transport
//!    directly, redirects *not* followed; on 301/302/307/308 the **origin** of `Location` becomes
//!    the SU url for this process (a probe that fails or answers anything else keeps the url).
//!    Trailing `/` are trimmed.
//!
//! With a fixed SU (`--su-url`, private deployments) every process goes to that SU and nothing is
//! located.
//!
//! Errors (`SuError`, whose `status()` the CU answers with):
//! - process unknown to the gateway: `NotFound` (404), `TransactionNotFound: <pid> was not found on gateway`;
//! - no `Scheduler` tag: `NotFound` (404), `SchedulerTagNotFound: No "Scheduler" tag found on process <pid>`;
//! - no Scheduler-Location record for the wallet: `NotFound` (404);
//! - a record without `Url`/`Time-To-Live` (or with unusable values): `Invalid` (502),
//!   `… InvalidSchedulerLocation: …`;
//! - gateway or SU unreachable: `Unavailable` (503).
//!
//! An SU call that ends `Unavailable` drops the process's cached location, so the next call
//! locates it afresh (the SU may have moved).
//!
//! Invariants: locations are bounded in number and lifetime; concurrent calls for one process
//! locate it once; nothing a router, gateway or SU answers can make this module panic.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use hyper::header::LOCATION;
use hyper::{Request, StatusCode, Uri};
use serde_json::Value;

use super::client::{HttpScheduler, NOT_FOUND_TEXT, SU_PEER};
use super::scheduler::{PageQuery, Scheduler, SuError};
use super::types::{Node, Page, Process};
use crate::gateway::cache::{KeyedLocks, TtlLru};
use crate::gateway::http::{is_arweave_id, is_wallet_address};
use crate::gateway::{Gateway, GatewayError, SchedulerLocation};
use crate::net::fetch::{ClientConfig, Fetcher, Peer, base_url, enc};
use crate::net::{AnyTransport, Transport};

/// Process locations kept (the reference: 100).
pub const LOCATION_CACHE_ENTRIES: usize = 100;
/// Longest a location is trusted, whatever its `Time-To-Live` says.
pub const MAX_LOCATION_TTL: Duration = Duration::from_secs(7 * 24 * 3600);
/// SU clients kept (one per SU URL).
pub const MAX_SU_CLIENTS: usize = 1024;
/// Largest body read from a redirect probe.
pub const PROBE_MAX_BODY_BYTES: usize = 64 * 1024;
/// Largest SU router answer.
pub const ROUTER_MAX_BODY_BYTES: usize = 64 * 1024;
/// The tag of a process naming its scheduler's wallet.
pub const SCHEDULER_TAG: &str = "Scheduler";
/// How router fetchers name their peer.
pub const ROUTER_PEER: Peer = Peer { name: "SU router", not_found_text: Some(NOT_FOUND_TEXT) };

/// How processes are routed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouterConfig {
    /// `--su-url`: every process goes to this SU; nothing is located.
    pub su_url: Option<String>,
    /// `SU_ROUTER_URL`: asked for a process's scheduler wallet before the gateway.
    pub router_url: Option<String>,
    /// Probe each located URL for a redirect (the reference CU: on).
    pub follow_redirects: bool,
    /// Retries, delays, deadlines and body limit of the SU calls (the probe and the router
    /// use its `request_timeout` too).
    pub client: ClientConfig,
    /// Locations kept.
    pub cache_entries: usize,
}

impl Default for RouterConfig {
    fn default() -> Self {
        RouterConfig {
            su_url: None,
            router_url: None,
            follow_redirects: true,
            client: ClientConfig::default(),
            cache_entries: LOCATION_CACHE_ENTRIES,
        }
    }
}

impl RouterConfig {
    /// Defaults, with `router_url` from `SU_ROUTER_URL` as `lookup` gives it (blank = unset).
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Self {
        let router_url = lookup("SU_ROUTER_URL").map(|s| s.trim().to_string()).filter(|s| !s.is_empty());
        RouterConfig { router_url, ..RouterConfig::default() }
    }
}

/// Schedulers of the real network, found per process.
pub struct RoutedScheduler<G: Gateway> {
    gateway: Arc<G>,
    transport: Arc<AnyTransport>,
    cfg: RouterConfig,
    su_fetcher: Arc<Fetcher>,
    router: Option<(String, Fetcher)>,
    fixed: Option<Arc<HttpScheduler>>,
    locations: Mutex<TtlLru<String>>,
    clients: Mutex<TtlLru<Arc<HttpScheduler>>>,
    locks: KeyedLocks,
}

impl<G: Gateway> RoutedScheduler<G> {
    /// A router over `gateway`, sending everything on `transport`.
    pub fn new(gateway: Arc<G>, transport: Arc<AnyTransport>, cfg: RouterConfig) -> Result<Self, SuError> {
        Self::build(gateway, transport, cfg, None)
    }

    /// [`RoutedScheduler::new`], recording every SU call in `metrics` (latency and errors per
    /// transport).
    pub fn with_metrics(
        gateway: Arc<G>,
        transport: Arc<AnyTransport>,
        cfg: RouterConfig,
        metrics: Arc<crate::metrics::Metrics>,
    ) -> Result<Self, SuError> {
        Self::build(gateway, transport, cfg, Some(metrics))
    }

    fn build(
        gateway: Arc<G>,
        transport: Arc<AnyTransport>,
        cfg: RouterConfig,
        metrics: Option<Arc<crate::metrics::Metrics>>,
    ) -> Result<Self, SuError> {
        let su_fetcher = Fetcher::new(transport.clone(), cfg.client, SU_PEER);
        let su_fetcher = Arc::new(match metrics {
            Some(m) => su_fetcher.with_su_metrics(m),
            None => su_fetcher,
        });
        let fixed = match &cfg.su_url {
            Some(u) => Some(Arc::new(HttpScheduler::with_fetcher(u, su_fetcher.clone())?)),
            None => None,
        };
        let router = match &cfg.router_url {
            Some(u) => {
                let url = base_url(u, "SU_ROUTER_URL").map_err(SuError::Invalid)?;
                let rcfg = ClientConfig { max_body_bytes: ROUTER_MAX_BODY_BYTES, ..cfg.client };
                Some((url, Fetcher::new(transport.clone(), rcfg, ROUTER_PEER)))
            }
            None => None,
        };
        Ok(RoutedScheduler {
            gateway,
            transport,
            su_fetcher,
            router,
            fixed,
            locations: Mutex::new(TtlLru::new(cfg.cache_entries)),
            clients: Mutex::new(TtlLru::new(MAX_SU_CLIENTS)),
            locks: KeyedLocks::default(),
            cfg,
        })
    }

    /// The configuration in force.
    pub fn config(&self) -> &RouterConfig {
        &self.cfg
    }

    /// The gateway locations come from.
    pub fn gateway(&self) -> &Arc<G> {
        &self.gateway
    }

    /// The base URL of the SU of `pid` (cached, else located; see the module docs).
    pub async fn locate(&self, pid: &str) -> Result<String, SuError> {
        self.locate_hinted(pid, None).await
    }

    /// [`RoutedScheduler::locate`], starting from the process's `Scheduler` tag when the caller
    /// knows it.
    pub async fn locate_hinted(&self, pid: &str, scheduler: Option<&str>) -> Result<String, SuError> {
        if let Some(fixed) = &self.fixed {
            return Ok(fixed.base_url().to_string());
        }
        if let Some(url) = self.cached(pid) {
            return Ok(url);
        }
        if !is_arweave_id(pid) {
            let shown: String = pid.chars().take(64).collect();
            return Err(SuError::Invalid(format!("{shown:?} is not a process id (43 base64url characters)")));
        }
        let _turn = self.locks.lock(pid).await;
        if let Some(url) = self.cached(pid) {
            return Ok(url);
        }
        let loc = self.find(pid, scheduler).await?;
        let mut url = base_url(&loc.url, "Scheduler-Location")
            .map_err(|e| SuError::Invalid(format!("InvalidSchedulerLocation: {e} (process {pid})")))?;
        if self.cfg.follow_redirects {
            url = self.probe(&url, pid).await;
        }
        let ttl = Duration::from_millis(loc.ttl_ms).min(MAX_LOCATION_TTL);
        tracing::debug!("process {pid} is scheduled by {url} (for {ttl:?})");
        self.locations.lock().unwrap_or_else(|p| p.into_inner()).insert(pid.to_string(), url.clone(), Some(ttl));
        Ok(url)
    }

    /// Drops the cached location of `pid`.
    pub fn forget(&self, pid: &str) {
        self.locations.lock().unwrap_or_else(|p| p.into_inner()).remove(pid);
    }

    fn cached(&self, pid: &str) -> Option<String> {
        self.locations.lock().unwrap_or_else(|p| p.into_inner()).get(pid)
    }

    /// Steps 2–4 of the module docs.
    async fn find(&self, pid: &str, hint: Option<&str>) -> Result<SchedulerLocation, SuError> {
        if let Some(wallet) = hint {
            return self.location_of(wallet, pid).await;
        }
        if let Some((router, fetcher)) = &self.router {
            match self.ask_router(router, fetcher, pid).await {
                Ok(wallet) => return self.location_of(&wallet, pid).await,
                Err(e) => tracing::warn!("SU router {router} failed for process {pid}: {e}; asking the gateway"),
            }
        }
        let tx = self.gateway.transaction(pid).await.map_err(gateway_error)?;
        let wallet = tx.tags.iter().find(|t| t.name == SCHEDULER_TAG).map(|t| t.value.trim().to_string());
        match wallet.filter(|w| !w.is_empty()) {
            Some(w) => self.location_of(&w, pid).await,
            None => {
                Err(SuError::NotFound(format!("SchedulerTagNotFound: No \"Scheduler\" tag found on process {pid}")))
            }
        }
    }

    async fn location_of(&self, wallet: &str, pid: &str) -> Result<SchedulerLocation, SuError> {
        match self.gateway.scheduler_location(wallet).await {
            Ok(loc) => Ok(loc),
            Err(GatewayError::NotFound(_)) => Err(SuError::NotFound(format!(
                "Could not find 'Scheduler-Location' owned by wallet {wallet} (scheduler of process {pid})"
            ))),
            Err(e) => Err(gateway_error(e)),
        }
    }

    /// `GET {router}/?process-id={pid}` → the scheduler wallet.
    async fn ask_router(&self, router: &str, fetcher: &Fetcher, pid: &str) -> Result<String, SuError> {
        let thing = format!("scheduler of process {pid}");
        let body = fetcher.get(&format!("{router}/?process-id={}", enc(pid)), &thing).await?;
        let v: Value = serde_json::from_slice(&body)
            .map_err(|e| SuError::Invalid(format!("SU router returned an invalid {thing}: {e}")))?;
        match v.get("address").and_then(Value::as_str) {
            Some(a) if is_wallet_address(a) => Ok(a.to_string()),
            _ => Err(SuError::Invalid(format!("SU router returned no valid address for {thing}"))),
        }
    }

    /// Step 5: where `url` redirects requests for `pid`, as an origin; else `url`.
    async fn probe(&self, url: &str, pid: &str) -> String {
        let target = format!("{url}/?process-id={}", enc(pid));
        let req = match Request::get(target.as_str()).body(Bytes::new()) {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!("redirect probe {target}: {e}");
                return url.to_string();
            }
        };
        let sent =
            tokio::time::timeout(self.cfg.client.request_timeout, self.transport.send(req, PROBE_MAX_BODY_BYTES));
        let resp = match sent.await {
            Ok(Ok(r)) => r,
            Ok(Err(e)) => {
                tracing::debug!("redirect probe {target}: {e}; keeping {url}");
                return url.to_string();
            }
            Err(_) => {
                tracing::debug!("redirect probe {target}: timeout; keeping {url}");
                return url.to_string();
            }
        };
        let redirect = matches!(
            resp.status(),
            StatusCode::MOVED_PERMANENTLY
                | StatusCode::FOUND
                | StatusCode::TEMPORARY_REDIRECT
                | StatusCode::PERMANENT_REDIRECT
        );
        if !redirect {
            return url.to_string();
        }
        let location = resp.headers().get(LOCATION).and_then(|v| v.to_str().ok()).unwrap_or("");
        match origin(location) {
            Some(o) => {
                tracing::debug!("process {pid}: {url} redirects to {o}");
                o
            }
            None => {
                let shown: String = location.chars().take(200).collect();
                tracing::warn!("redirect probe {target}: unusable Location {shown:?}; keeping {url}");
                url.to_string()
            }
        }
    }

    /// The client for the SU of `pid`.
    async fn client(&self, pid: &str) -> Result<Arc<HttpScheduler>, SuError> {
        if let Some(fixed) = &self.fixed {
            return Ok(fixed.clone());
        }
        let url = self.locate(pid).await?;
        let mut clients = self.clients.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(c) = clients.get(&url) {
            return Ok(c);
        }
        let c = Arc::new(HttpScheduler::with_fetcher(&url, self.su_fetcher.clone())?);
        clients.insert(url, c.clone(), None);
        Ok(c)
    }

    /// After an SU call: an unreachable SU makes the next call locate the process again.
    fn after<T>(&self, pid: &str, r: &Result<T, SuError>) {
        if self.fixed.is_none() && matches!(r, Err(SuError::Unavailable(_))) {
            self.forget(pid);
        }
    }
}

/// The origin (`scheme://host[:port]`, default port dropped, no user info) of an absolute
/// `http(s)` URL — what `new URL(location).origin` gives in the reference.
fn origin(location: &str) -> Option<String> {
    let uri: Uri = location.trim().parse().ok()?;
    let scheme = uri.scheme_str()?;
    if !matches!(scheme, "http" | "https") {
        return None;
    }
    let host = uri.host().filter(|h| !h.is_empty())?;
    let port = uri.port_u16().filter(|p| !matches!((scheme, p), ("http", 80) | ("https", 443)));
    Some(match port {
        Some(p) => format!("{scheme}://{host}:{p}"),
        None => format!("{scheme}://{host}"),
    })
}

fn gateway_error(e: GatewayError) -> SuError {
    match e {
        GatewayError::NotFound(_) => SuError::NotFound(e.to_string()),
        GatewayError::Unavailable(_) => SuError::Unavailable(e.to_string()),
        GatewayError::Invalid(_) => SuError::Invalid(e.to_string()),
    }
}

impl<G: Gateway> Scheduler for RoutedScheduler<G> {
    async fn process(&self, pid: &str) -> Result<Process, SuError> {
        let r = self.client(pid).await?.process(pid).await;
        self.after(pid, &r);
        r
    }

    async fn page(&self, pid: &str, q: PageQuery) -> Result<Page, SuError> {
        let r = self.client(pid).await?.page(pid, q).await;
        self.after(pid, &r);
        r
    }

    async fn message(&self, pid: &str, message_id: &str) -> Result<Node, SuError> {
        let r = self.client(pid).await?.message(pid, message_id).await;
        self.after(pid, &r);
        r
    }

    async fn latest(&self, pid: &str) -> Result<Option<Node>, SuError> {
        let r = self.client(pid).await?.latest(pid).await;
        self.after(pid, &r);
        r
    }

    async fn timestamp(&self, pid: &str) -> Result<(i64, u64), SuError> {
        let r = self.client(pid).await?.timestamp(pid).await;
        self.after(pid, &r);
        r
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origins_are_scheme_host_and_port() {
        assert_eq!(origin("https://su1.example/x?process-id=p").as_deref(), Some("https://su1.example"));
        assert_eq!(origin("http://127.0.0.1:8080/").as_deref(), Some("http://127.0.0.1:8080"));
        assert_eq!(origin("https://su.example:443/a").as_deref(), Some("https://su.example"));
        assert_eq!(origin("http://u:p@su.example:81/a").as_deref(), Some("http://su.example:81"));
        assert_eq!(origin("/relative"), None);
        assert_eq!(origin("ftp://x/y"), None);
        assert_eq!(origin(""), None);
    }
}
