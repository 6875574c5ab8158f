//! Query strings and path parameters: percent-decoding, ao ids, `limit` and `sort`.
//!
//! Everything here is untrusted client input: parsing never panics, every value is bounded
//! (the URI itself by [`super::MAX_URI_BYTES`], the number of pairs by [`MAX_QUERY_PAIRS`]), and
//! each failure is a 400 naming the parameter, in the reference's `'<field>': <reason>.` form.

use super::ApiError;
use super::cursor::Sort;

/// Most `name=value` pairs one query string may have.
pub const MAX_QUERY_PAIRS: usize = 64;

/// Length of an ao id (process, message, module): 32 bytes in unpadded base64url.
pub const AO_ID_LEN: usize = 43;

/// Whether `s` is an ao id: 43 characters of the base64url alphabet.
pub fn is_ao_id(s: &str) -> bool {
    s.len() == AO_ID_LEN && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// `value` if it is an ao id, else a 400 naming `field`.
pub fn ao_id(field: &str, value: &str) -> Result<String, ApiError> {
    if value.is_empty() {
        return Err(ApiError::invalid(field, "Required"));
    }
    if !is_ao_id(value) {
        return Err(ApiError::invalid(field, format!("expected an ao id ({AO_ID_LEN} base64url characters)")));
    }
    Ok(value.to_owned())
}

/// Percent-decodes `s` (`+` as a space when `plus_as_space`, as in query strings). Malformed
/// escapes are kept literally, as Node's `querystring` does; `None` if the result is not UTF-8.
pub fn percent_decode(s: &str, plus_as_space: bool) -> Option<String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'%' => match (hex(b.get(i + 1).copied()), hex(b.get(i + 2).copied())) {
                (Some(hi), Some(lo)) => {
                    out.push(hi << 4 | lo);
                    i += 3;
                }
                _ => {
                    out.push(b'%');
                    i += 1;
                }
            },
            b'+' if plus_as_space => {
                out.push(b' ');
                i += 1;
            }
            c => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8(out).ok()
}

fn hex(c: Option<u8>) -> Option<u8> {
    match c? {
        c @ b'0'..=b'9' => Some(c - b'0'),
        c @ b'a'..=b'f' => Some(c - b'a' + 10),
        c @ b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

/// The decoded `name=value` pairs of a query string.
#[derive(Debug, Default)]
pub struct Params {
    pairs: Vec<(String, String)>,
}

impl Params {
    /// Parses the query string of a request (`None`: no `?`).
    pub fn parse(raw: Option<&str>) -> Result<Params, ApiError> {
        let mut pairs = Vec::new();
        for part in raw.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
            if pairs.len() == MAX_QUERY_PAIRS {
                return Err(ApiError::bad_request(format!("more than {MAX_QUERY_PAIRS} query parameters")));
            }
            let (k, v) = part.split_once('=').unwrap_or((part, ""));
            let (Some(k), Some(v)) = (percent_decode(k, true), percent_decode(v, true)) else {
                return Err(ApiError::bad_request("query string is not valid UTF-8 once percent-decoded"));
            };
            pairs.push((k, v));
        }
        Ok(Params { pairs })
    }

    /// The value of `name`; `None` if absent or empty (the reference treats `""` as absent);
    /// 400 if it is given twice (ambiguous).
    pub fn get(&self, name: &str) -> Result<Option<&str>, ApiError> {
        let mut found = self.pairs.iter().filter(|(k, _)| k == name).map(|(_, v)| v.as_str());
        let first = found.next();
        if found.next().is_some() {
            return Err(ApiError::invalid(name, "given more than once"));
        }
        Ok(first.filter(|v| !v.is_empty()))
    }
}

/// `limit`: a positive integer, `default` when absent, clamped to `max`.
pub fn limit(raw: Option<&str>, default: usize, max: usize) -> Result<usize, ApiError> {
    let Some(raw) = raw else { return Ok(default.min(max)) };
    let n = match raw.parse::<u64>() {
        Ok(n) => n as f64,
        // Integral floats (`"50.0"`, `"1e3"`) are numbers to the reference's `z.coerce.number()`.
        Err(_) => raw.parse::<f64>().ok().filter(|f| f.is_finite() && f.fract() == 0.0).unwrap_or(-1.0),
    };
    if n < 1.0 {
        return Err(ApiError::invalid("limit", "expected a positive integer"));
    }
    Ok(if n >= max as f64 { max } else { n as usize })
}

/// `sort`: `ASC` or `DESC` (any case), `None` when absent.
pub fn sort(raw: Option<&str>) -> Result<Option<Sort>, ApiError> {
    raw.map(|s| Sort::parse(s).ok_or_else(|| ApiError::invalid("sort", "expected 'ASC' or 'DESC'"))).transpose()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recognises_ao_ids() {
        assert!(is_ao_id("Pq4X2aN2Jh7yYb3dE1fL0kR9sT6uV5wX8zC3bA1dE0f"));
        assert!(is_ao_id("vh-NTHVvlKZqRxc8LyyTNok65yQ55a_PJ1zWLb9G2JI"));
        assert!(!is_ao_id("Pq4X2aN2Jh7yYb3dE1fL0kR9sT6uV5wX8zC3bA1dE0"));
        assert!(!is_ao_id("Pq4X2aN2Jh7yYb3dE1fL0kR9sT6uV5wX8zC3bA1dE0+"));
        assert!(!is_ao_id("1234"));
    }

    #[test]
    fn percent_decodes_like_querystring() {
        assert_eq!(percent_decode("a%2Bb+c%3D", true).unwrap(), "a+b c=");
        assert_eq!(percent_decode("a+b", false).unwrap(), "a+b");
        assert_eq!(percent_decode("%zz%4", true).unwrap(), "%zz%4");
        assert_eq!(percent_decode("%", true).unwrap(), "%");
        assert_eq!(percent_decode("%41", true).unwrap(), "A");
        assert!(percent_decode("%ff", true).is_none());
    }

    #[test]
    fn params_treat_empty_as_absent_and_refuse_duplicates() {
        let p = Params::parse(Some("a=1&b=&c&&d=%20x")).unwrap();
        assert_eq!(p.get("a").unwrap(), Some("1"));
        assert_eq!(p.get("b").unwrap(), None);
        assert_eq!(p.get("c").unwrap(), None);
        assert_eq!(p.get("d").unwrap(), Some(" x"));
        assert_eq!(p.get("zz").unwrap(), None);
        assert_eq!(Params::parse(Some("a=1&a=2")).unwrap().get("a").unwrap_err().status, 400);
        let many = vec!["x=1"; MAX_QUERY_PAIRS + 1].join("&");
        assert_eq!(Params::parse(Some(&many)).unwrap_err().status, 400);
    }

    #[test]
    fn limits() {
        assert_eq!(limit(None, 25, 1000).unwrap(), 25);
        assert_eq!(limit(Some("7"), 25, 1000).unwrap(), 7);
        assert_eq!(limit(Some("50.0"), 25, 1000).unwrap(), 50);
        assert_eq!(limit(Some("5000"), 500, 1000).unwrap(), 1000);
        assert_eq!(limit(Some("99999999999999999999999"), 25, 1000).unwrap(), 1000);
        for bad in ["0", "-1", "1.5", "abc", "NaN", "Infinity", " 5"] {
            assert_eq!(
                limit(Some(bad), 25, 1000).unwrap_err().message,
                "'limit': expected a positive integer.",
                "{bad}"
            );
        }
    }

    #[test]
    fn sorts() {
        assert_eq!(sort(None).unwrap(), None);
        assert_eq!(sort(Some("DESC")).unwrap(), Some(Sort::Desc));
        assert_eq!(sort(Some("asc")).unwrap(), Some(Sort::Asc));
        assert_eq!(sort(Some("up")).unwrap_err().status, 400);
    }
}
