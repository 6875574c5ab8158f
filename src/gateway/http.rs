//! [`HttpGateway`]: the CU's client for a real Arweave gateway (cu-protocol §3, §2.1): transaction
//! metadata and Scheduler-Location records over GraphQL, blocks for cron over GraphQL, and raw
//! data over `GET {ARWEAVE_URL}/raw/{id}`. Transport, per-attempt timeouts, redirects and body
//! limits are the shared [`Fetcher`]'s (`net::fetch`).
//!
//! GraphQL calls send the reference's queries verbatim ([`GET_PROCESSES_QUERY`],
//! [`GET_BLOCKS_QUERY`], [`GET_SCHEDULER_LOCATION_QUERY`]) as `POST {query, variables}`. Each call
//! is retried here (not inside the fetcher) so that block queries can rotate over
//! `GRAPHQL_URLS`, one endpoint per attempt: up to [`ClientConfig::retries`] retries with jittered
//! doubling backoff from [`ClientConfig::base_delay`], under [`ClientConfig::max_total`]. An
//! unreachable endpoint, a 5xx, 408/429 or a GraphQL `errors` answer is retried; with several
//! endpoints any failure moves on to the next one. GraphQL `errors` that persist are
//! [`GatewayError::Unavailable`] (503) quoting the messages: the queries are fixed and valid, so
//! errors are the gateway's trouble (timeouts, rate limits, indexing).
//!
//! A transaction the gateway does not (yet) index is asked for again [`MISSING_NODE_RETRIES`]
//! times (gateways index new data items with a lag), then is [`GatewayError::NotFound`] (404).
//! Transaction metadata is immutable, so answers are kept in a bounded in-memory LRU
//! ([`TX_CACHE_ENTRIES`], entries up to [`TX_CACHE_MAX_ENTRY_BYTES`]).
//!
//! Invariants: every input id is checked (43-character base64url Arweave id, or for scheduler
//! owners also an `0x` EVM address) before any network call — a bad one is
//! [`GatewayError::Invalid`] without traffic; gateway answers are untrusted: bodies are bounded,
//! tags bounded like SU tags ([`MAX_TAGS`], [`MAX_TAG_BYTES`]), a node must carry the id that was
//! asked for, block heights must increase; nothing in an answer can make this module panic.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use serde_json::{Value, json};

use super::cache::TtlLru;
use super::{Block, Gateway, GatewayError, MAX_BLOCKS_PER_CALL, SchedulerLocation, TxMeta};
use crate::net::fetch::{ClientConfig, FetchError, Fetcher, Peer, base_url};
use crate::net::{AnyTransport, IoMode};
use crate::su::types::{MAX_TAG_BYTES, MAX_TAGS, Owner, Tag};

/// `GATEWAY_URL` when unset (the reference's default).
pub const DEFAULT_GATEWAY_URL: &str = "https://arweave.net";
/// Largest GraphQL answer accepted.
pub const DEFAULT_MAX_GRAPHQL_BYTES: usize = 8 * 1024 * 1024;
/// Largest `/raw` body accepted (module binaries, message data, checkpoint bodies).
pub const DEFAULT_MAX_RAW_BYTES: usize = 256 * 1024 * 1024;
/// Blocks asked for per GraphQL page (the reference: 90).
pub const BLOCKS_PAGE_SIZE: usize = 90;
/// Further lookups of a transaction the gateway does not return, before NotFound.
pub const MISSING_NODE_RETRIES: u32 = 2;
/// Transactions kept in memory.
pub const TX_CACHE_ENTRIES: usize = 1024;
/// Largest transaction (tags, owner key, signature; approximate bytes) kept in memory.
pub const TX_CACHE_MAX_ENTRY_BYTES: usize = 64 * 1024;
/// How gateway fetchers name their peer in errors.
pub const GATEWAY_PEER: Peer = Peer { name: "gateway", not_found_text: None };

/// Transaction metadata (§3.1), verbatim.
pub const GET_PROCESSES_QUERY: &str = r#"query GetProcesses($processIds: [ID!]!, $skipTags: Boolean!, $skipSignature: Boolean!, $skipAnchor: Boolean!) {
  transactions(ids: $processIds) {
    edges { node {
      id
      signature @skip(if: $skipSignature)
      anchor @skip(if: $skipAnchor)
      owner { address key }
      tags @skip(if: $skipTags) { name value }
      recipient
    } }
  }
}"#;

/// Blocks for cron (§3.3), verbatim.
/// The reference's checkpoint query (`GetAoProcessCheckpoints`, §3.4).
pub const GET_CHECKPOINTS_QUERY: &str = r#"query GetAoProcessCheckpoints($owners: [String!]!, $processId: String!, $limit: Int!) {
  transactions(
    tags: [
      { name: "Process", values: [$processId] }
      { name: "Type", values: ["Checkpoint"] }
      { name: "Data-Protocol", values: ["ao"] }
    ],
    owners: $owners, first: $limit, sort: HEIGHT_DESC
  ) { edges { node { id owner { address } tags { name value } } } }
}"#;

pub const GET_BLOCKS_QUERY: &str = r#"query GetBlocks($min: Int!, $limit: Int!) {
  blocks(height: { min: $min }, first: $limit, sort: HEIGHT_ASC) {
    pageInfo { hasNextPage }
    edges { node { timestamp height } }
  }
}"#;

/// The newest Scheduler-Location record of a wallet (§2.1), verbatim.
pub const GET_SCHEDULER_LOCATION_QUERY: &str = r#"query GetSchedulerLocation($owner: String!) {
  transactions(owners: [$owner],
    tags: [{ name: "Data-Protocol", values: ["ao"] }, { name: "Type", values: ["Scheduler-Location"] }],
    sort: HEIGHT_DESC, first: 1) {
    edges { node { tags { name value } } }
  }
}"#;

/// Whether `s` is an Arweave id or address: 43 characters of base64url (32 bytes, no padding).
pub fn is_arweave_id(s: &str) -> bool {
    s.len() == 43 && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// Whether `s` can name a scheduler wallet: an Arweave address, or an `0x` EVM address.
pub fn is_wallet_address(s: &str) -> bool {
    is_arweave_id(s) || (s.len() == 42 && s.starts_with("0x") && s[2..].bytes().all(|b| b.is_ascii_hexdigit()))
}

fn check_id(id: &str) -> Result<(), GatewayError> {
    if is_arweave_id(id) {
        Ok(())
    } else {
        Err(GatewayError::Invalid(format!("{:?} is not an Arweave transaction id (43 base64url characters)", clip(id))))
    }
}

/// At most 64 characters of untrusted text, for messages.
fn clip(s: &str) -> String {
    s.chars().take(64).collect()
}

/// Where the gateway is and how to talk to it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpGatewayConfig {
    /// `ARWEAVE_URL`: base of `/raw/{id}`.
    pub arweave_url: String,
    /// `GRAPHQL_URL`: transaction metadata and Scheduler-Location records.
    pub graphql_url: String,
    /// `CHECKPOINT_GRAPHQL_URL`: checkpoint queries fall back to it after two tries of
    /// `graphql_url` (§3.4).
    pub checkpoint_graphql_url: String,
    /// `GRAPHQL_URLS`: block queries, one endpoint per attempt, round-robin; empty = `graphql_url`.
    pub graphql_urls: Vec<String>,
    /// Retries, delays, deadlines; its `max_body_bytes` bounds GraphQL answers.
    pub client: ClientConfig,
    /// Largest `/raw` body.
    pub max_raw_bytes: usize,
}

impl HttpGatewayConfig {
    /// The spec's defaulting (§3, §5): `GATEWAY_URL` (default [`DEFAULT_GATEWAY_URL`]) is the
    /// fallback of `ARWEAVE_URL` (itself) and `GRAPHQL_URL` (`GATEWAY_URL/graphql`); `GRAPHQL_URLS`
    /// is a comma list (blank entries ignored) and defaults to `GRAPHQL_URL` alone (metalcu does
    /// not hard-code third-party endpoints). Blank values count as unset. Every URL must be
    /// `http(s)://host[:port][/path]` without a query; trailing `/` are trimmed.
    pub fn from_urls(
        gateway_url: Option<&str>,
        arweave_url: Option<&str>,
        graphql_url: Option<&str>,
        graphql_urls: Option<&str>,
    ) -> Result<Self, String> {
        fn set(v: Option<&str>) -> Option<&str> {
            v.map(str::trim).filter(|v| !v.is_empty())
        }
        let gateway = base_url(set(gateway_url).unwrap_or(DEFAULT_GATEWAY_URL), "GATEWAY_URL")?;
        let arweave_url = match set(arweave_url) {
            Some(u) => base_url(u, "ARWEAVE_URL")?,
            None => gateway.clone(),
        };
        let graphql_url = match set(graphql_url) {
            Some(u) => base_url(u, "GRAPHQL_URL")?,
            None => format!("{gateway}/graphql"),
        };
        let graphql_urls = match set(graphql_urls) {
            Some(list) => list
                .split(',')
                .map(str::trim)
                .filter(|u| !u.is_empty())
                .map(|u| base_url(u, "GRAPHQL_URLS"))
                .collect::<Result<Vec<_>, _>>()?,
            None => Vec::new(),
        };
        Ok(HttpGatewayConfig {
            arweave_url,
            checkpoint_graphql_url: graphql_url.clone(),
            graphql_url,
            graphql_urls,
            client: ClientConfig { max_body_bytes: DEFAULT_MAX_GRAPHQL_BYTES, ..ClientConfig::default() },
            max_raw_bytes: DEFAULT_MAX_RAW_BYTES,
        })
    }

    /// [`HttpGatewayConfig::from_urls`] from `GATEWAY_URL`, `ARWEAVE_URL`, `GRAPHQL_URL`,
    /// `GRAPHQL_URLS` as `lookup` gives them (e.g. `|k| std::env::var(k).ok()`).
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, String> {
        let (g, a, q, qs) =
            (lookup("GATEWAY_URL"), lookup("ARWEAVE_URL"), lookup("GRAPHQL_URL"), lookup("GRAPHQL_URLS"));
        Self::from_urls(g.as_deref(), a.as_deref(), q.as_deref(), qs.as_deref())
    }

    /// The endpoints block queries rotate over.
    pub fn block_urls(&self) -> Vec<String> {
        if self.graphql_urls.is_empty() { vec![self.graphql_url.clone()] } else { self.graphql_urls.clone() }
    }
}

/// A real Arweave gateway.
#[derive(Debug)]
pub struct HttpGateway {
    cfg: HttpGatewayConfig,
    block_urls: Vec<String>,
    /// One attempt per call; [`HttpGateway::graphql`] retries.
    gql: Fetcher,
    raw: Fetcher,
    txs: Mutex<TtlLru<TxMeta>>,
}

impl HttpGateway {
    /// A client on its own epoll transport.
    pub fn new(cfg: HttpGatewayConfig) -> Result<Self, GatewayError> {
        let transport = AnyTransport::new(IoMode::Epoll, cfg.client.request_timeout)
            .map_err(|e| GatewayError::Invalid(e.to_string()))?;
        Self::with_transport(cfg, Arc::new(transport))
    }

    /// A client sharing `transport` (and its connection pool) with the CU's other clients.
    pub fn with_transport(cfg: HttpGatewayConfig, transport: Arc<AnyTransport>) -> Result<Self, GatewayError> {
        let mut cfg = cfg;
        cfg.arweave_url = base_url(&cfg.arweave_url, "ARWEAVE_URL").map_err(GatewayError::Invalid)?;
        cfg.graphql_url = base_url(&cfg.graphql_url, "GRAPHQL_URL").map_err(GatewayError::Invalid)?;
        cfg.graphql_urls = cfg
            .graphql_urls
            .iter()
            .map(|u| base_url(u, "GRAPHQL_URLS"))
            .collect::<Result<_, _>>()
            .map_err(GatewayError::Invalid)?;
        let one_attempt = ClientConfig { retries: 0, max_total: cfg.client.request_timeout, ..cfg.client };
        let raw_cfg = ClientConfig { max_body_bytes: cfg.max_raw_bytes, ..cfg.client };
        Ok(HttpGateway {
            block_urls: cfg.block_urls(),
            gql: Fetcher::new(transport.clone(), one_attempt, GATEWAY_PEER),
            raw: Fetcher::new(transport, raw_cfg, GATEWAY_PEER),
            txs: Mutex::new(TtlLru::new(TX_CACHE_ENTRIES)),
            cfg,
        })
    }

    /// The configuration in force (URLs normalised).
    pub fn config(&self) -> &HttpGatewayConfig {
        &self.cfg
    }

    /// The transport's name (`epoll`, `uring`).
    pub fn transport_name(&self) -> &'static str {
        self.raw.transport_name()
    }

    fn backoff(&self, retry: u32) -> Duration {
        self.cfg.client.base_delay.saturating_mul(2u32.saturating_pow(retry.min(20))).mul_f64(self.gql.jitter())
    }

    /// POSTs `{query, variables}` to `urls` (one per attempt, round-robin) and returns `data`.
    async fn graphql(
        &self,
        urls: &[String],
        query: &str,
        variables: Value,
        thing: &str,
    ) -> Result<Value, GatewayError> {
        let body = Bytes::from(json!({ "query": query, "variables": variables }).to_string());
        let deadline = Instant::now() + self.cfg.client.max_total;
        let mut retry = 0u32;
        loop {
            let url = &urls[retry as usize % urls.len().max(1)];
            let err = match self.gql.post_json(url, body.clone(), thing).await {
                Ok(answer) => match graphql_data(&answer, thing) {
                    Ok(data) => return Ok(data),
                    Err(e) => e,
                },
                Err(FetchError::NotFound(t)) => GatewayError::Invalid(format!("GraphQL endpoint {url} not found: {t}")),
                Err(FetchError::Unavailable(t)) => GatewayError::Unavailable(t),
                Err(FetchError::Invalid(t) | FetchError::Forbidden(t)) => GatewayError::Invalid(t),
            };
            let retryable = matches!(err, GatewayError::Unavailable(_)) || urls.len() > 1;
            if !retryable || retry >= self.cfg.client.retries {
                return Err(err);
            }
            let delay = self.backoff(retry);
            if Instant::now() + delay >= deadline {
                return Err(err);
            }
            tracing::debug!("{thing}: {err}; retry {} in {delay:?}", retry + 1);
            tokio::time::sleep(delay).await;
            retry += 1;
        }
    }

    async fn fetch_transaction(&self, id: &str) -> Result<TxMeta, GatewayError> {
        let thing = format!("transaction {id}");
        let vars = json!({ "processIds": [id], "skipTags": false, "skipSignature": false, "skipAnchor": false });
        let urls = std::slice::from_ref(&self.cfg.graphql_url);
        let mut missing = 0u32;
        loop {
            let data = self.graphql(urls, GET_PROCESSES_QUERY, vars.clone(), &thing).await?;
            match first_node(&data, "transactions", &thing)? {
                Some(node) => return parse_tx(node, id),
                None if missing < MISSING_NODE_RETRIES => {
                    let delay = self.backoff(missing);
                    tracing::debug!("{thing}: not on the gateway (yet); asking again in {delay:?}");
                    tokio::time::sleep(delay).await;
                    missing += 1;
                }
                None => return Err(GatewayError::NotFound(id.to_string())),
            }
        }
    }
}

impl Gateway for HttpGateway {
    async fn transaction(&self, id: &str) -> Result<TxMeta, GatewayError> {
        check_id(id)?;
        if let Some(tx) = self.txs.lock().unwrap_or_else(|p| p.into_inner()).get(id) {
            return Ok(tx);
        }
        let tx = self.fetch_transaction(id).await?;
        if tx_size(&tx) <= TX_CACHE_MAX_ENTRY_BYTES {
            self.txs.lock().unwrap_or_else(|p| p.into_inner()).insert(id.to_string(), tx.clone(), None);
        }
        Ok(tx)
    }

    async fn raw(&self, id: &str) -> Result<Bytes, GatewayError> {
        check_id(id)?;
        let url = format!("{}/raw/{id}", self.cfg.arweave_url);
        match self.raw.get(&url, &format!("data of {id}")).await {
            Ok(body) => Ok(body),
            Err(FetchError::NotFound(_)) => Err(GatewayError::NotFound(id.to_string())),
            Err(FetchError::Unavailable(t)) => Err(GatewayError::Unavailable(t)),
            Err(FetchError::Invalid(t) | FetchError::Forbidden(t)) => Err(GatewayError::Invalid(t)),
        }
    }

    async fn blocks(&self, min_height: u64, max_timestamp_s: i64) -> Result<Vec<Block>, GatewayError> {
        let mut out: Vec<Block> = Vec::new();
        let mut min = min_height;
        loop {
            let thing = format!("blocks from height {min}");
            let vars = json!({ "min": min, "limit": BLOCKS_PAGE_SIZE });
            let data = self.graphql(&self.block_urls, GET_BLOCKS_QUERY, vars, &thing).await?;
            let (page, has_next) = parse_blocks(&data, &thing)?;
            if page.is_empty() {
                return Ok(out);
            }
            for b in page {
                let floor = out.last().map_or(Some(min_height), |l| l.height.checked_add(1));
                if floor.is_none_or(|f| b.height < f) {
                    return Err(GatewayError::Invalid(format!(
                        "{thing}: block {} is out of order (expected heights from {min_height}, increasing)",
                        b.height
                    )));
                }
                let past = b.timestamp_s > max_timestamp_s;
                out.push(b);
                if past || out.len() >= MAX_BLOCKS_PER_CALL {
                    return Ok(out);
                }
            }
            match out.last().and_then(|b| b.height.checked_add(1)) {
                Some(next) if has_next => min = next,
                _ => return Ok(out),
            }
        }
    }

    async fn checkpoints(&self, pid: &str, owners: &[String], limit: usize) -> Result<Vec<TxMeta>, GatewayError> {
        check_id(pid)?;
        let thing = format!("checkpoints of process {pid}");
        // GRAPHQL_URL twice, then CHECKPOINT_GRAPHQL_URL (the reference's order).
        let c = &self.cfg;
        let urls = [c.graphql_url.clone(), c.graphql_url.clone(), c.checkpoint_graphql_url.clone()];
        let vars = json!({ "owners": owners, "processId": pid, "limit": limit });
        let data = self.graphql(&urls, GET_CHECKPOINTS_QUERY, vars, &thing).await?;
        let edges = data
            .get("transactions")
            .and_then(|t| t.get("edges"))
            .and_then(Value::as_array)
            .ok_or_else(|| GatewayError::Invalid(format!("{thing}: no transactions.edges")))?;
        edges
            .iter()
            .take(limit)
            .map(|e| {
                let node =
                    e.get("node").ok_or_else(|| GatewayError::Invalid(format!("{thing}: an edge has no node")))?;
                let id = node.get("id").and_then(Value::as_str).unwrap_or_default().to_string();
                parse_tx(node, &id)
            })
            .collect()
    }

    async fn scheduler_location(&self, owner: &str) -> Result<SchedulerLocation, GatewayError> {
        if !is_wallet_address(owner) {
            return Err(GatewayError::Invalid(format!("{:?} is not a wallet address", clip(owner))));
        }
        let thing = format!("Scheduler-Location of {owner}");
        let urls = std::slice::from_ref(&self.cfg.graphql_url);
        let data = self.graphql(urls, GET_SCHEDULER_LOCATION_QUERY, json!({ "owner": owner }), &thing).await?;
        let Some(node) = first_node(&data, "transactions", &thing)? else {
            return Err(GatewayError::NotFound(format!("Scheduler-Location of {owner}")));
        };
        let tags = parse_tags(node.get("tags"), &thing)?;
        let find = |name: &str| tags.iter().find(|t| t.name.eq_ignore_ascii_case(name)).map(|t| t.value.trim());
        let invalid = |why: String| GatewayError::Invalid(format!("InvalidSchedulerLocation: {why} ({thing})"));
        let url = find("Url").filter(|u| !u.is_empty());
        let ttl = find("Time-To-Live").filter(|t| !t.is_empty());
        let url = url.ok_or_else(|| invalid("No \"Url\" tag found on Scheduler-Location".into()))?;
        let ttl = ttl.ok_or_else(|| invalid("No \"Time-To-Live\" tag found on Scheduler-Location".into()))?;
        let url = base_url(url, "Scheduler-Location").map_err(invalid)?;
        let ttl_ms =
            ttl.parse::<u64>().map_err(|_| invalid(format!("Time-To-Live {:?} is not a number", clip(ttl))))?;
        Ok(SchedulerLocation { url, ttl_ms })
    }
}

/// `data` of a GraphQL answer; an `errors` array is [`GatewayError::Unavailable`].
fn graphql_data(answer: &[u8], thing: &str) -> Result<Value, GatewayError> {
    let v: Value = serde_json::from_slice(answer)
        .map_err(|e| GatewayError::Invalid(format!("{thing}: the GraphQL answer is not JSON: {e}")))?;
    if let Some(errors) = v.get("errors").and_then(Value::as_array).filter(|e| !e.is_empty()) {
        let messages: Vec<String> = errors
            .iter()
            .take(5)
            .map(|e| e.get("message").and_then(Value::as_str).map_or_else(|| e.to_string(), str::to_string))
            .map(|m| m.chars().take(300).collect())
            .collect();
        return Err(GatewayError::Unavailable(format!("{thing}: GraphQL error: {}", messages.join("; "))));
    }
    match v.get("data") {
        Some(d) if d.is_object() => Ok(d.clone()),
        _ => Err(GatewayError::Invalid(format!("{thing}: the GraphQL answer has no data"))),
    }
}

/// The first `edges[].node` of `data.<field>`, if any.
fn first_node<'a>(data: &'a Value, field: &str, thing: &str) -> Result<Option<&'a Value>, GatewayError> {
    let edges = data
        .get(field)
        .and_then(|t| t.get("edges"))
        .and_then(Value::as_array)
        .ok_or_else(|| GatewayError::Invalid(format!("{thing}: the GraphQL answer has no {field}.edges")))?;
    match edges.first() {
        None => Ok(None),
        Some(e) => match e.get("node") {
            Some(n) if n.is_object() => Ok(Some(n)),
            _ => Err(GatewayError::Invalid(format!("{thing}: an edge has no node"))),
        },
    }
}

fn parse_tags(v: Option<&Value>, thing: &str) -> Result<Vec<Tag>, GatewayError> {
    let invalid = |why: String| GatewayError::Invalid(format!("{thing}: {why}"));
    let Some(v) = v.filter(|v| !v.is_null()) else { return Ok(Vec::new()) };
    let tags: Vec<Tag> = serde_json::from_value(v.clone()).map_err(|e| invalid(format!("invalid tags: {e}")))?;
    if tags.len() > MAX_TAGS {
        return Err(invalid(format!("{} tags; at most {MAX_TAGS} are accepted", tags.len())));
    }
    if let Some(t) = tags.iter().find(|t| t.name.len() > MAX_TAG_BYTES || t.value.len() > MAX_TAG_BYTES) {
        return Err(invalid(format!("tag {:?} is longer than {MAX_TAG_BYTES} bytes", clip(&t.name))));
    }
    Ok(tags)
}

fn opt_string(node: &Value, field: &str, thing: &str) -> Result<Option<String>, GatewayError> {
    match node.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(_) => Err(GatewayError::Invalid(format!("{thing}: {field} is not a string"))),
    }
}

fn parse_tx(node: &Value, id: &str) -> Result<TxMeta, GatewayError> {
    let thing = format!("transaction {id}");
    let got = node.get("id").and_then(Value::as_str).unwrap_or("");
    if got != id {
        return Err(GatewayError::Invalid(format!("{thing}: the gateway answered for {:?}", clip(got))));
    }
    let owner: Owner = node
        .get("owner")
        .cloned()
        .map(serde_json::from_value)
        .transpose()
        .map_err(|e| GatewayError::Invalid(format!("{thing}: invalid owner: {e}")))?
        .ok_or_else(|| GatewayError::Invalid(format!("{thing}: no owner")))?;
    Ok(TxMeta {
        id: id.to_string(),
        owner,
        tags: parse_tags(node.get("tags"), &thing)?,
        signature: opt_string(node, "signature", &thing)?,
        anchor: opt_string(node, "anchor", &thing)?,
        recipient: opt_string(node, "recipient", &thing)?,
    })
}

/// Approximate bytes of a transaction, for the memory cache's entry bound.
fn tx_size(tx: &TxMeta) -> usize {
    let opt = |s: &Option<String>| s.as_ref().map_or(0, String::len);
    tx.id.len()
        + tx.owner.address.len()
        + tx.owner.key.len()
        + tx.tags.iter().map(|t| t.name.len() + t.value.len() + 16).sum::<usize>()
        + opt(&tx.signature)
        + opt(&tx.anchor)
        + opt(&tx.recipient)
}

/// An integer written as a JSON number or a numeric string.
fn int_of<T: std::str::FromStr + TryFrom<i64> + TryFrom<u64>>(v: Option<&Value>) -> Option<T> {
    match v? {
        Value::Number(n) => {
            n.as_u64().and_then(|u| T::try_from(u).ok()).or_else(|| n.as_i64().and_then(|i| T::try_from(i).ok()))
        }
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

/// The blocks of one `GetBlocks` page and its `hasNextPage`.
fn parse_blocks(data: &Value, thing: &str) -> Result<(Vec<Block>, bool), GatewayError> {
    let invalid = |why: &str| GatewayError::Invalid(format!("{thing}: {why}"));
    let blocks = data.get("blocks").ok_or_else(|| invalid("the GraphQL answer has no blocks"))?;
    let edges = blocks.get("edges").and_then(Value::as_array).ok_or_else(|| invalid("no blocks.edges"))?;
    let has_next = blocks.get("pageInfo").and_then(|p| p.get("hasNextPage")).and_then(Value::as_bool).unwrap_or(false);
    let mut out = Vec::with_capacity(edges.len().min(MAX_BLOCKS_PER_CALL));
    for e in edges.iter().take(MAX_BLOCKS_PER_CALL) {
        let node = e.get("node").ok_or_else(|| invalid("an edge has no node"))?;
        let height = int_of::<u64>(node.get("height")).ok_or_else(|| invalid("a block has no valid height"))?;
        let timestamp_s =
            int_of::<i64>(node.get("timestamp")).ok_or_else(|| invalid("a block has no valid timestamp"))?;
        out.push(Block { height, timestamp_s });
    }
    Ok((out, has_next))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_and_addresses() {
        assert!(is_arweave_id("bkjb55i07GUCUSWROtKK4HU1mBS_X0TyH3M5jMV6aPg"));
        assert!(!is_arweave_id("bkjb55i07GUCUSWROtKK4HU1mBS_X0TyH3M5jMV6aP"));
        assert!(!is_arweave_id("bkjb55i07GUCUSWROtKK4HU1mBS/X0TyH3M5jMV6aPg"));
        assert!(!is_arweave_id("../../../../etc/passwd000000000000000000000"));
        assert!(is_wallet_address("0x52908400098527886E0F7030069857D2E4169EE7"));
        assert!(!is_wallet_address("0x52908400098527886E0F7030069857D2E4169EEZ"));
    }

    #[test]
    fn integers_are_numbers_or_numeric_strings() {
        assert_eq!(int_of::<u64>(Some(&json!(5))), Some(5));
        assert_eq!(int_of::<u64>(Some(&json!("7"))), Some(7));
        assert_eq!(int_of::<u64>(Some(&json!(-1))), None);
        assert_eq!(int_of::<i64>(Some(&json!(-1))), Some(-1));
        assert_eq!(int_of::<i64>(Some(&json!(1.5))), None);
        assert_eq!(int_of::<i64>(None), None);
    }
}
