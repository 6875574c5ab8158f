//! Pagination cursors of `/results` and `/cron` (cu-protocol.md §1.6).
//!
//! A cursor is `base64(JSON.stringify({timestamp, ordinate, cron?, sort}))`: standard base64
//! with padding (`btoa`), keys in exactly that order, `cron` omitted when absent. [`encode`]
//! produces the reference's bytes; [`parse_bound`] accepts what the reference accepts for `from`
//! and `to`: a cursor, or — on any decoding failure — the raw value as a timestamp.
//!
//! Invariants: parsing never panics and is bounded ([`MAX_CURSOR_BYTES`]); a bound handed to the
//! domain always has a timestamp; a value that is neither a cursor nor a timestamp is a 400.

use base64::Engine as _;
use base64::engine::DecodePaddingMode;
use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig, STANDARD};
use serde_json::{Map, Value};

use super::ApiError;

/// Longest `from`/`to` value accepted, in bytes (a real cursor is under 200).
pub const MAX_CURSOR_BYTES: usize = 1024;

/// Like `atob`: standard alphabet, padding optional.
const LENIENT: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// Order of a listing: `ASC` (stream order, the default) or `DESC`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Sort {
    #[default]
    Asc,
    Desc,
}

impl Sort {
    /// The wire spelling, `"ASC"` or `"DESC"`.
    pub fn as_str(self) -> &'static str {
        match self {
            Sort::Asc => "ASC",
            Sort::Desc => "DESC",
        }
    }

    /// `ASC`/`DESC`, any letter case; `None` for anything else.
    pub fn parse(s: &str) -> Option<Sort> {
        if s.eq_ignore_ascii_case("ASC") {
            Some(Sort::Asc)
        } else if s.eq_ignore_ascii_case("DESC") {
            Some(Sort::Desc)
        } else {
            None
        }
    }
}

/// The position of one evaluation in a listing, as its edge's `cursor` encodes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cursor {
    /// Milliseconds since the epoch.
    pub timestamp: i64,
    /// The ordinate (`String(nonce)`; a cron message carries the preceding message's).
    pub ordinate: String,
    /// The cron id (`"0-10-seconds"`), `None` for scheduled messages.
    pub cron: Option<String>,
    /// The order of the listing the cursor came from.
    pub sort: Sort,
}

/// A `from` or `to` bound of a listing. A bare timestamp has no ordinate and no cron: it stands
/// for "every evaluation at that millisecond" (§1.6 range semantics, applied by the domain).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CursorBound {
    /// Milliseconds since the epoch.
    pub timestamp: i64,
    pub ordinate: Option<String>,
    pub cron: Option<String>,
}

/// The cursor string of `c`, byte for byte as the reference writes it.
pub fn encode(c: &Cursor) -> String {
    let mut m = Map::new();
    m.insert("timestamp".into(), Value::from(c.timestamp));
    m.insert("ordinate".into(), Value::from(c.ordinate.as_str()));
    if let Some(cron) = &c.cron {
        m.insert("cron".into(), Value::from(cron.as_str()));
    }
    m.insert("sort".into(), Value::from(c.sort.as_str()));
    STANDARD.encode(Value::Object(m).to_string())
}

/// A decoded cursor: the bound and the sort it embeds (absent in hand-made cursors).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decoded {
    pub bound: CursorBound,
    pub sort: Option<Sort>,
}

/// Decodes a cursor string; `None` if it is not one (not base64, not a JSON object, no integer
/// `timestamp`, or a `sort`/`ordinate`/`cron` of the wrong type).
///
/// A space is read as `+`: base64 has no spaces, so one can only be a `+` that a client left
/// unescaped in a query string (`+` means space there).
pub fn decode(raw: &str) -> Option<Decoded> {
    let b64 = raw.replace(' ', "+");
    let bytes = LENIENT.decode(b64.as_bytes()).ok()?;
    let Value::Object(m) = serde_json::from_slice::<Value>(&bytes).ok()? else {
        return None;
    };
    let timestamp = match m.get("timestamp")? {
        Value::Number(n) => n.as_i64()?,
        Value::String(s) => parse_timestamp(s)?,
        _ => return None,
    };
    let ordinate = match m.get("ordinate") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(s.clone()),
        Some(Value::Number(n)) => Some(n.to_string()),
        Some(_) => return None,
    };
    let cron = match m.get("cron") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(s.clone()),
        Some(_) => return None,
    };
    let sort = match m.get("sort") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(Sort::parse(s)?),
        Some(_) => return None,
    };
    Some(Decoded { bound: CursorBound { timestamp, ordinate, cron }, sort })
}

/// A timestamp in milliseconds: decimal digits only, within `i64`.
pub fn parse_timestamp(s: &str) -> Option<i64> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

/// Parses the `from`/`to` query value named `field`: a cursor, else a bare timestamp, else 400.
pub fn parse_bound(field: &str, raw: &str) -> Result<Decoded, ApiError> {
    if raw.len() > MAX_CURSOR_BYTES {
        return Err(ApiError::invalid(field, format!("longer than {MAX_CURSOR_BYTES} bytes")));
    }
    if let Some(d) = decode(raw) {
        return Ok(d);
    }
    match parse_timestamp(raw) {
        Some(timestamp) => Ok(Decoded { bound: CursorBound { timestamp, ordinate: None, cron: None }, sort: None }),
        None => Err(ApiError::invalid(field, "expected a cursor or a timestamp in milliseconds")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SCHEDULED: &str = "eyJ0aW1lc3RhbXAiOjE3MTI5NjcwOTE3NTUsIm9yZGluYXRlIjoiMjMiLCJzb3J0IjoiQVNDIn0=";
    const CRON: &str =
        "eyJ0aW1lc3RhbXAiOjE3MTI5NjcwOTI3NTUsIm9yZGluYXRlIjoiMjMiLCJjcm9uIjoiMC0xMC1zZWNvbmRzIiwic29ydCI6IkFTQyJ9";

    fn cursor(timestamp: i64, cron: Option<&str>) -> Cursor {
        Cursor { timestamp, ordinate: "23".into(), cron: cron.map(Into::into), sort: Sort::Asc }
    }

    #[test]
    fn encodes_the_spec_examples_byte_for_byte() {
        assert_eq!(encode(&cursor(1712967091755, None)), SCHEDULED);
        assert_eq!(encode(&cursor(1712967092755, Some("0-10-seconds"))), CRON);
    }

    #[test]
    fn decodes_the_spec_examples() {
        let d = decode(SCHEDULED).unwrap();
        assert_eq!(d.bound, CursorBound { timestamp: 1712967091755, ordinate: Some("23".into()), cron: None });
        assert_eq!(d.sort, Some(Sort::Asc));
        let d = decode(CRON).unwrap();
        assert_eq!(d.bound.cron.as_deref(), Some("0-10-seconds"));
        assert_eq!(d.bound.timestamp, 1712967092755);
    }

    #[test]
    fn round_trips_desc_and_odd_ordinates() {
        let c =
            Cursor { timestamp: 0, ordinate: "a\"b\\c\n".into(), cron: Some("1-5-minutes".into()), sort: Sort::Desc };
        let d = decode(&encode(&c)).unwrap();
        assert_eq!(d.bound, CursorBound { timestamp: 0, ordinate: Some(c.ordinate), cron: c.cron });
        assert_eq!(d.sort, Some(Sort::Desc));
    }

    #[test]
    fn accepts_unpadded_and_space_for_plus() {
        assert!(decode(SCHEDULED.trim_end_matches('=')).is_some());
        // `{"timestamp":1,"ordinate":">>>"}` encodes with `+`; a client may send it unescaped.
        let raw = STANDARD.encode(r#"{"timestamp":1,"ordinate":">>>"}"#);
        assert!(raw.contains('+'));
        assert_eq!(decode(&raw.replace('+', " ")).unwrap().bound.ordinate.as_deref(), Some(">>>"));
    }

    #[test]
    fn falls_back_to_a_bare_timestamp() {
        for raw in ["1712967091755", "0", "123456789012", "1234567890123456"] {
            let d = parse_bound("from", raw).unwrap();
            assert_eq!(d.bound.timestamp, raw.parse::<i64>().unwrap(), "{raw}");
            assert_eq!((d.bound.ordinate, d.bound.cron, d.sort), (None, None, None));
        }
    }

    #[test]
    fn rejects_what_is_neither_cursor_nor_timestamp() {
        let no_timestamp = STANDARD.encode(r#"{"ordinate":"1"}"#);
        let bad_sort = STANDARD.encode(r#"{"timestamp":1,"sort":"UP"}"#);
        let long = "1".repeat(MAX_CURSOR_BYTES + 1);
        for raw in ["", "abc", "-5", "1.5", "eyJ9", no_timestamp.as_str(), bad_sort.as_str(), long.as_str()] {
            let e = parse_bound("from", raw).unwrap_err();
            assert_eq!(e.status, 400, "{raw}");
            assert!(e.message.starts_with("'from': "), "{}", e.message);
        }
    }
}
