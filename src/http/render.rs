//! Responses: JSON bodies, the `{"error"}` envelope, connections, `/state`, CORS.
//!
//! Invariants: JSON is `application/json; charset=utf-8` (§1.2); every error body is
//! `{"error": "<message>"}`; [`finish`] gives every response `Access-Control-Allow-Origin: *`
//! (browser aoconnect) and `X-Content-Type-Options: nosniff`.

use bytes::Bytes;
use http_body_util::Full;
use hyper::header::{self, HeaderMap, HeaderName, HeaderValue};
use hyper::{Response, StatusCode};
use serde_json::{Map, Value, json};

use super::{ApiError, Connection, StateBody, cursor};
use crate::store::{UsageSums, UsageTotals};

/// The body type of every response: the whole body in memory (`/state` shares its `Bytes`).
pub type Body = Full<Bytes>;

/// `Content-Type` of JSON responses.
pub const JSON: &str = "application/json; charset=utf-8";

/// Methods a preflight allows (those of the `cors` middleware the reference uses).
const ALLOW_METHODS: &str = "GET,HEAD,PUT,PATCH,POST,DELETE";

/// `value` as a JSON response with `status`.
pub fn json(status: StatusCode, value: &Value) -> Response<Body> {
    let body = serde_json::to_vec(value).unwrap_or_else(|_| br#"{"error":"unserialisable response"}"#.to_vec());
    let mut r = Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = status;
    r.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static(JSON));
    r
}

/// The error envelope: `{"error": message}` with the error's status (500 unless it is in
/// 400..=599: an error must not pass for a success, nor be a status that forbids a body).
pub fn error(e: &ApiError) -> Response<Body> {
    let status = Some(e.status)
        .filter(|s| (400..=599).contains(s))
        .and_then(|s| StatusCode::from_u16(s).ok())
        .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    json(status, &json!({ "error": e.message }))
}

/// The usage fields of `/usage` bodies (units in the names; see README "Usage accounting").
fn usage_fields(m: &mut Map<String, Value>, u: &UsageSums) {
    m.insert("messages".into(), u.messages.into());
    m.insert("gas_used".into(), u.gas.into());
    m.insert("cpu_time_us".into(), u.cpu_us.into());
    m.insert("wall_time_us".into(), u.wall_us.into());
    m.insert("memory_byte_seconds".into(), u.memory_byte_seconds().into());
}

/// `GET /usage/:pid`: `{"process_id", "messages", "gas_used", "cpu_time_us", "wall_time_us",
/// "memory_byte_seconds"}`.
pub fn usage(pid: &str, u: &UsageSums) -> Value {
    let mut m = Map::new();
    m.insert("process_id".into(), pid.into());
    usage_fields(&mut m, u);
    Value::Object(m)
}

/// `GET /usage`: `{"processes", "messages", "gas_used", …}` over every process.
pub fn usage_totals(t: &UsageTotals) -> Value {
    let mut m = Map::new();
    m.insert("processes".into(), t.processes.into());
    usage_fields(&mut m, &t.sums);
    Value::Object(m)
}

/// The OpenMetrics text of `/metrics`.
pub fn metrics(text: String) -> Response<Body> {
    let mut r = Response::new(Full::new(Bytes::from(text)));
    r.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static(crate::metrics::CONTENT_TYPE));
    r
}

/// A connection as `{"pageInfo":{"hasNextPage"},"edges":[{"cursor","node"}]}` (§1.5).
pub fn connection(c: &Connection) -> Value {
    let edges = c
        .edges
        .iter()
        .map(|(cur, node)| {
            let mut e = Map::new();
            e.insert("cursor".into(), Value::String(cursor::encode(cur)));
            e.insert("node".into(), node.clone());
            Value::Object(e)
        })
        .collect();
    let mut m = Map::new();
    m.insert("pageInfo".into(), json!({ "hasNextPage": c.has_next_page }));
    m.insert("edges".into(), Value::Array(edges));
    Value::Object(m)
}

/// `/state`: the memory as `application/octet-stream` with its `Last-*` headers (§1.9).
pub fn state(s: StateBody) -> Response<Body> {
    let mut r = Response::new(Full::new(s.memory));
    let h = r.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/octet-stream"));
    let mut put = |name: &'static str, value: Option<String>| {
        // An ordinate that is not a valid header value (never a nonce) is left out, not sent mangled.
        if let Some(v) = value.and_then(|v| HeaderValue::from_str(&v).ok()) {
            h.insert(HeaderName::from_static(name), v);
        }
    };
    put("last-timestamp", s.last_timestamp.map(|t| t.to_string()));
    put("last-ordinate", s.last_ordinate);
    put("last-block-height", s.last_block_height.map(|b| b.to_string()));
    r
}

/// 204 answer to a CORS preflight (`OPTIONS` on any path): any origin, the usual methods, and the
/// headers the browser asked for.
pub fn preflight(request: &HeaderMap) -> Response<Body> {
    let mut r = Response::new(Full::new(Bytes::new()));
    *r.status_mut() = StatusCode::NO_CONTENT;
    let h = r.headers_mut();
    h.insert(header::ACCESS_CONTROL_ALLOW_METHODS, HeaderValue::from_static(ALLOW_METHODS));
    if let Some(asked) = request.get(header::ACCESS_CONTROL_REQUEST_HEADERS) {
        h.insert(header::ACCESS_CONTROL_ALLOW_HEADERS, asked.clone());
        h.insert(header::VARY, HeaderValue::from_static("Access-Control-Request-Headers"));
    }
    h.insert(header::CONTENT_LENGTH, HeaderValue::from_static("0"));
    r
}

/// 405 with the methods the path does allow.
pub fn method_not_allowed(allow: &'static str) -> Response<Body> {
    let mut r = error(&ApiError::new(405, "Method Not Allowed"));
    r.headers_mut().insert(header::ALLOW, HeaderValue::from_static(allow));
    r
}

/// Headers every response carries.
pub fn finish(r: &mut Response<Body>) {
    let h = r.headers_mut();
    h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, HeaderValue::from_static("*"));
    h.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::{Cursor, Sort};

    #[test]
    fn renders_a_connection_in_the_reference_shape() {
        let c = Connection {
            edges: vec![(
                Cursor { timestamp: 1712967091755, ordinate: "23".into(), cron: None, sort: Sort::Asc },
                json!({"Messages": [], "Assignments": [], "Spawns": [], "Output": "hi"}),
            )],
            has_next_page: true,
        };
        assert_eq!(
            connection(&c).to_string(),
            r#"{"pageInfo":{"hasNextPage":true},"edges":[{"cursor":"eyJ0aW1lc3RhbXAiOjE3MTI5NjcwOTE3NTUsIm9yZGluYXRlIjoiMjMiLCJzb3J0IjoiQVNDIn0=","node":{"Messages":[],"Assignments":[],"Spawns":[],"Output":"hi"}}]}"#
        );
    }

    #[test]
    fn out_of_range_status_becomes_500() {
        assert_eq!(error(&ApiError::new(1000, "x")).status(), 500);
        assert_eq!(error(&ApiError::new(200, "x")).status(), 500);
        assert_eq!(error(&ApiError::new(425, "x")).status(), 425);
    }

    #[test]
    fn state_omits_unknown_and_unrepresentable_headers() {
        let r = state(StateBody {
            last_ordinate: Some("bad\nvalue".into()),
            last_block_height: Some(7),
            ..Default::default()
        });
        assert!(r.headers().get("last-ordinate").is_none());
        assert!(r.headers().get("last-timestamp").is_none());
        assert_eq!(r.headers()["last-block-height"], "7");
    }
}
