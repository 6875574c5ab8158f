//! The route table (cu-protocol.md §1.1) and one handler per route: parse and validate the
//! request, call [`CuService`], render. Phases of a request: head bounds → preflight → URI
//! bound → route → method → (dry-run: body) → parameters → domain → render.
//!
//! Invariants: handlers hold no business rules; a malformed input is a 400 naming it; an unknown
//! path is 404 `{"error":"Not Found"}`, a known path with the wrong method 405 with `Allow`.

use std::fmt::Display;

use bytes::{Bytes, BytesMut};
use http_body_util::BodyExt as _;
use hyper::body::Body as HttpBody;
use hyper::header::{self, HeaderMap, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use serde_json::json;

use super::query::{self, Params};
use super::render::{self, Body};
use super::server::ServerConfig;
use super::{ApiError, CRON_DEFAULT_LIMIT, CRON_MAX_LIMIT, CuService, RESULTS_DEFAULT_LIMIT, RESULTS_MAX_LIMIT};
use super::{ResultsQuery, Sort, cursor};

/// A matched path; ids are percent-decoded but not yet validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    Health,
    Healthz,
    Result(String),
    Results(String),
    Cron(String),
    DryRun,
    State(String),
    /// `GET /metrics`.
    Metrics,
    /// `GET /usage` (`None`) or `GET /usage/:pid`.
    Usage(Option<String>),
}

impl Route {
    /// The route of `path`, `None` if there is none.
    pub fn parse(path: &str) -> Option<Route> {
        let rest = path.strip_prefix('/')?;
        let (head, param) = match rest.split_once('/') {
            Some((head, param)) if !param.contains('/') => (head, Some(param)),
            Some(_) => return None,
            None => (rest, None),
        };
        // A segment that is not UTF-8 once decoded stays raw: it then fails id validation.
        let id = |p: &str| query::percent_decode(p, false).unwrap_or_else(|| p.to_owned());
        Some(match (head, param) {
            ("", None) => Route::Health,
            ("healthz", None) => Route::Healthz,
            ("dry-run", None) => Route::DryRun,
            ("result", Some(p)) => Route::Result(id(p)),
            ("results", Some(p)) => Route::Results(id(p)),
            ("cron", Some(p)) => Route::Cron(id(p)),
            ("state", Some(p)) => Route::State(id(p)),
            ("metrics", None) => Route::Metrics,
            ("usage", None) => Route::Usage(None),
            ("usage", Some(p)) => Route::Usage(Some(id(p))),
            _ => return None,
        })
    }

    /// The route's name in metrics.
    pub fn name(&self) -> &'static str {
        match self {
            Route::Health => "info",
            Route::Healthz => "healthz",
            Route::Result(_) => "result",
            Route::Results(_) => "results",
            Route::Cron(_) => "cron",
            Route::DryRun => "dry_run",
            Route::State(_) => "state",
            Route::Metrics => "metrics",
            Route::Usage(None) => "usage_totals",
            Route::Usage(Some(_)) => "usage",
        }
    }

    /// The methods the route serves, as an `Allow` header.
    pub fn allow(&self) -> &'static str {
        match self {
            Route::DryRun => "POST, OPTIONS",
            _ => "GET, HEAD, OPTIONS",
        }
    }

    fn accepts(&self, m: &Method) -> bool {
        match self {
            Route::DryRun => m == Method::POST,
            _ => m == Method::GET || m == Method::HEAD,
        }
    }
}

/// Answers one request (without the headers [`render::finish`] adds).
pub async fn handle<S, B>(svc: &S, req: Request<B>, cfg: &ServerConfig) -> Response<Body>
where
    S: CuService,
    B: HttpBody<Data = Bytes> + Unpin,
    B::Error: Display,
{
    let (parts, body) = req.into_parts();
    // hyper enforces its head limits only while a head is incomplete; one large read slips by.
    let head_len: usize = parts.headers.iter().map(|(k, v)| k.as_str().len() + v.len() + 4).sum();
    if head_len > cfg.max_head_bytes {
        let e = ApiError::new(431, format!("request headers larger than {} bytes", cfg.max_head_bytes));
        let mut r = render::error(&e);
        r.headers_mut().insert(header::CONNECTION, HeaderValue::from_static("close"));
        return r;
    }
    if parts.method == Method::OPTIONS {
        return render::preflight(&parts.headers);
    }
    let target_len = parts.uri.path_and_query().map_or(0, |pq| pq.as_str().len());
    if target_len > cfg.max_uri_bytes {
        let e = ApiError::new(414, format!("request target longer than {} bytes", cfg.max_uri_bytes));
        return render::error(&e);
    }
    let Some(route) = Route::parse(parts.uri.path()) else {
        return render::error(&ApiError::not_found("Not Found"));
    };
    if !route.accepts(&parts.method) {
        return render::method_not_allowed(route.allow());
    }
    let query = parts.uri.query();
    let out = match route {
        Route::Health => Ok(render::json(StatusCode::OK, &svc.info())),
        Route::Healthz => Ok(render::json(StatusCode::OK, &json!({ "ok": true }))),
        Route::Result(mid) => result(svc, query, &mid).await,
        Route::Results(pid) => results(svc, query, &pid, false).await,
        Route::Cron(pid) => results(svc, query, &pid, true).await,
        Route::State(pid) => state(svc, query, &pid).await,
        Route::DryRun => return dry_run(svc, query, &parts.headers, body, cfg).await,
        Route::Metrics => match svc.metrics() {
            Some(m) => Ok(render::metrics(m.encode())),
            None => Err(ApiError::not_found("Not Found")),
        },
        Route::Usage(None) => svc.usage_totals().map(|t| render::json(StatusCode::OK, &render::usage_totals(&t))),
        Route::Usage(Some(pid)) => usage(svc, &pid),
    };
    out.unwrap_or_else(|e| render::error(&e))
}

async fn result<S: CuService>(svc: &S, query: Option<&str>, mid: &str) -> Result<Response<Body>, ApiError> {
    let params = Params::parse(query)?;
    let pid = query::ao_id("process-id", params.get("process-id")?.unwrap_or(""))?;
    let mid = query::ao_id("messageTxId", mid)?;
    // `no-busy` needs no handling: this server never answers 202.
    Ok(render::json(StatusCode::OK, &svc.result(&pid, &mid).await?))
}

async fn results<S: CuService>(
    svc: &S,
    query: Option<&str>,
    pid: &str,
    cron: bool,
) -> Result<Response<Body>, ApiError> {
    let pid = query::ao_id("processId", pid)?;
    let q = listing(&Params::parse(query)?, cron)?;
    let page = if cron { svc.cron(&pid, q).await? } else { svc.results(&pid, q).await? };
    Ok(render::json(StatusCode::OK, &render::connection(&page)))
}

/// `from`, `to`, `sort` and `limit` of `/results` (`cron`: of `/cron`, always ASC).
fn listing(params: &Params, cron: bool) -> Result<ResultsQuery, ApiError> {
    let from = params.get("from")?.map(|raw| cursor::parse_bound("from", raw)).transpose()?;
    let to = params.get("to")?.map(|raw| cursor::parse_bound("to", raw)).transpose()?;
    let (sort, limit) = if cron {
        (Sort::Asc, query::limit(params.get("limit")?, CRON_DEFAULT_LIMIT, CRON_MAX_LIMIT)?)
    } else {
        let asked = query::sort(params.get("sort")?)?;
        // The reference: the `from` cursor's sort, else the `to` cursor's, else the parameter.
        let embedded = from.as_ref().and_then(|d| d.sort).or(to.as_ref().and_then(|d| d.sort));
        let sort = embedded.or(asked).unwrap_or_default();
        (sort, query::limit(params.get("limit")?, RESULTS_DEFAULT_LIMIT, RESULTS_MAX_LIMIT)?)
    };
    Ok(ResultsQuery { from: from.map(|d| d.bound), to: to.map(|d| d.bound), sort, limit })
}

fn usage<S: CuService>(svc: &S, pid: &str) -> Result<Response<Body>, ApiError> {
    let pid = query::ao_id("processId", pid)?;
    let u = svc.usage(&pid)?;
    Ok(render::json(StatusCode::OK, &render::usage(&pid, &u)))
}

async fn state<S: CuService>(svc: &S, query: Option<&str>, pid: &str) -> Result<Response<Body>, ApiError> {
    let pid = query::ao_id("processId", pid)?;
    let params = Params::parse(query)?;
    let to = match params.get("to")? {
        None => None,
        Some(raw) => Some(
            cursor::parse_timestamp(raw)
                .ok_or_else(|| ApiError::invalid("to", "expected a timestamp in milliseconds"))?,
        ),
    };
    Ok(render::state(svc.state(&pid, to).await?))
}

/// `/dry-run`. The body is read first (bounded), so every answer — errors included — leaves
/// the connection clean for keep-alive, or says `Connection: close` when it cannot.
async fn dry_run<S, B>(svc: &S, query: Option<&str>, headers: &HeaderMap, body: B, cfg: &ServerConfig) -> Response<Body>
where
    S: CuService,
    B: HttpBody<Data = Bytes> + Unpin,
    B::Error: Display,
{
    let bytes = match read_body(body, headers, cfg).await {
        Ok(b) => b,
        Err(BodyError { error, drained }) => {
            let mut r = render::error(&error);
            if !drained {
                r.headers_mut().insert(header::CONNECTION, HeaderValue::from_static("close"));
            }
            return r;
        }
    };
    let out = async {
        check_content_type(headers)?;
        let params = Params::parse(query)?;
        let pid = query::ao_id("process-id", params.get("process-id")?.unwrap_or(""))?;
        let to = params.get("to")?.map(|to| query::ao_id("to", to)).transpose()?;
        let message = super::dryrun::validate(&bytes)?;
        Ok::<_, ApiError>(render::json(StatusCode::OK, &svc.dry_run(&pid, to, message).await?))
    };
    out.await.unwrap_or_else(|e| render::error(&e))
}

/// 415 unless the body is declared JSON (`application/json`, `…+json`) or not declared at all.
fn check_content_type(headers: &HeaderMap) -> Result<(), ApiError> {
    let Some(ct) = headers.get(header::CONTENT_TYPE) else { return Ok(()) };
    let essence = ct.to_str().unwrap_or("").split(';').next().unwrap_or("").trim().to_ascii_lowercase();
    if essence == "application/json" || essence.ends_with("+json") {
        return Ok(());
    }
    Err(ApiError::new(415, format!("Unsupported Media Type: the body must be application/json, not '{essence}'")))
}

/// A body that could not be read; `drained`: the connection is still at a message boundary.
struct BodyError {
    error: ApiError,
    drained: bool,
}

/// Reads a request body of at most `cfg.max_body_bytes` within `cfg.body_read_timeout`. An
/// oversized body is read on and discarded up to [`super::MAX_DRAIN_BYTES`] so that the 413
/// reaches the client before the connection closes (closing on unread data resets it).
async fn read_body<B>(mut body: B, headers: &HeaderMap, cfg: &ServerConfig) -> Result<Bytes, BodyError>
where
    B: HttpBody<Data = Bytes> + Unpin,
    B::Error: Display,
{
    let limit = cfg.max_body_bytes;
    let too_large = || ApiError::new(413, format!("Request body is too large (limit {limit} bytes)"));
    let declared = headers.get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
    if declared.is_some_and(|n| n > super::MAX_DRAIN_BYTES as u64) {
        return Err(BodyError { error: too_large(), drained: false });
    }
    let read = async {
        let mut buf = BytesMut::new();
        let mut total = 0usize;
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(|e| BodyError {
                error: ApiError::bad_request(format!("could not read the request body: {e}")),
                drained: false,
            })?;
            let Ok(data) = frame.into_data() else { continue };
            total = total.saturating_add(data.len());
            if total > super::MAX_DRAIN_BYTES {
                return Err(BodyError { error: too_large(), drained: false });
            }
            if total <= limit {
                buf.extend_from_slice(&data);
            }
        }
        if total > limit { Err(BodyError { error: too_large(), drained: true }) } else { Ok(buf.freeze()) }
    };
    match tokio::time::timeout(cfg.body_read_timeout, read).await {
        Ok(r) => r,
        Err(_) => Err(BodyError {
            error: ApiError::new(408, format!("request body not received within {:?}", cfg.body_read_timeout)),
            drained: false,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_the_route_table() {
        let id = "Pq4X2aN2Jh7yYb3dE1fL0kR9sT6uV5wX8zC3bA1dE0f";
        assert_eq!(Route::parse("/"), Some(Route::Health));
        assert_eq!(Route::parse("/healthz"), Some(Route::Healthz));
        assert_eq!(Route::parse("/dry-run"), Some(Route::DryRun));
        assert_eq!(Route::parse(&format!("/result/{id}")), Some(Route::Result(id.into())));
        assert_eq!(Route::parse(&format!("/results/{id}")), Some(Route::Results(id.into())));
        assert_eq!(Route::parse(&format!("/cron/{id}")), Some(Route::Cron(id.into())));
        assert_eq!(Route::parse(&format!("/state/{id}")), Some(Route::State(id.into())));
        assert_eq!(Route::parse("/results/a%2Db"), Some(Route::Results("a-b".into())));
        assert_eq!(Route::parse("/results/"), Some(Route::Results(String::new())));
        assert_eq!(Route::parse("/results/%ff"), Some(Route::Results("%ff".into())));
        assert_eq!(Route::parse("/metrics"), Some(Route::Metrics));
        assert_eq!(Route::parse("/usage"), Some(Route::Usage(None)));
        assert_eq!(Route::parse(&format!("/usage/{id}")), Some(Route::Usage(Some(id.into()))));
        for none in ["", "x", "/nope", "/results", "/results/a/b", "/healthz/", "/dry-run/x", "//", "/metrics/x"] {
            assert_eq!(Route::parse(none), None, "{none}");
        }
    }

    #[test]
    fn content_types() {
        let mut h = HeaderMap::new();
        assert!(check_content_type(&h).is_ok());
        for ok in ["application/json", "Application/JSON; charset=utf-8", "application/ld+json"] {
            h.insert(header::CONTENT_TYPE, HeaderValue::from_static(ok));
            assert!(check_content_type(&h).is_ok(), "{ok}");
        }
        h.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
        assert_eq!(check_content_type(&h).unwrap_err().status, 415);
    }
}
