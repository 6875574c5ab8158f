//! The `/dry-run` body schema (cu-protocol.md §1.8), checked the way the reference's route
//! schema checks it, with a 400 instead of its 500.
//!
//! `Id, Signature, Owner, Target, Anchor`: string or null (any string: aoconnect sends
//! `Id: "1234"`); `Data`: anything; `Tags`: null or an array of `{name: string, value: string}`
//! (each rebuilt as exactly those two keys, as zod strips the rest); `Timestamp`, `Block-Height`:
//! null, a number, or a string holding one (coerced to a JSON number). Other fields pass through
//! untouched, in their order. The message-level rules (`Owner` and `Tags` required, `From`) are
//! the domain's.
//!
//! Invariants: input is untrusted and already bounded by the body limit; never panics; every
//! failure names its field (`'Tags.2.value': Expected string, received number.`), at most
//! [`MAX_REPORTED`] of them joined by ` | `.

use serde_json::{Map, Number, Value};

use super::ApiError;

/// Most field errors one response lists.
pub const MAX_REPORTED: usize = 10;

const STRING_FIELDS: [&str; 5] = ["Id", "Signature", "Owner", "Target", "Anchor"];
const NUMBER_FIELDS: [&str; 2] = ["Timestamp", "Block-Height"];

/// Parses and checks a dry-run body; the message fields the domain gets.
pub fn validate(body: &[u8]) -> Result<Map<String, Value>, ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Err(ApiError::bad_request("Body is empty; expected a JSON object (the dry-run message)"));
    }
    let value: Value =
        serde_json::from_slice(body).map_err(|e| ApiError::bad_request(format!("Body is not valid JSON: {e}")))?;
    let Value::Object(mut msg) = value else {
        return Err(ApiError::bad_request(format!("Body must be a JSON object, received {}", kind(&value))));
    };
    let mut errors = Vec::new();
    for field in STRING_FIELDS {
        match msg.get(field) {
            None | Some(Value::Null | Value::String(_)) => {}
            Some(v) => errors.push(expected(field, "string", v)),
        }
    }
    if let Some(tags) = msg.get_mut("Tags") {
        match check_tags(tags) {
            Ok(Some(rebuilt)) => *tags = rebuilt,
            Ok(None) => {}
            Err(mut e) => errors.append(&mut e),
        }
    }
    for field in NUMBER_FIELDS {
        if let Some(v) = msg.get_mut(field) {
            match coerce_number(v) {
                Ok(Some(n)) => *v = Value::Number(n),
                Ok(None) => {}
                Err(()) => errors.push(expected(field, "number", v)),
            }
        }
    }
    if errors.is_empty() {
        return Ok(msg);
    }
    errors.truncate(MAX_REPORTED);
    Err(ApiError::bad_request(errors.join(" | ")))
}

/// `Tags` rebuilt as `[{name, value}]` (`None`: null, left as is), or the field errors.
fn check_tags(tags: &Value) -> Result<Option<Value>, Vec<String>> {
    let items = match tags {
        Value::Null => return Ok(None),
        Value::Array(items) => items,
        v => return Err(vec![expected("Tags", "array", v)]),
    };
    let mut errors = Vec::new();
    let mut rebuilt = Vec::with_capacity(items.len());
    for (i, item) in items.iter().enumerate() {
        let Value::Object(tag) = item else {
            errors.push(expected(&format!("Tags.{i}"), "object", item));
            continue;
        };
        let mut out = Map::new();
        for key in ["name", "value"] {
            match tag.get(key) {
                Some(Value::String(s)) => {
                    out.insert(key.into(), Value::String(s.clone()));
                }
                None => errors.push(format!("'Tags.{i}.{key}': Required.")),
                Some(v) => errors.push(expected(&format!("Tags.{i}.{key}"), "string", v)),
            }
        }
        if errors.len() >= MAX_REPORTED {
            break;
        }
        rebuilt.push(Value::Object(out));
    }
    if errors.is_empty() { Ok(Some(Value::Array(rebuilt))) } else { Err(errors) }
}

/// `z.coerce.number()` for the inputs that make sense: a finite number, or a string holding one.
/// `Ok(None)`: null, kept. Integral values become JSON integers (`"17"` → `17`, not `17.0`).
fn coerce_number(v: &Value) -> Result<Option<Number>, ()> {
    let f = match v {
        Value::Null => return Ok(None),
        Value::Number(n) if n.is_i64() || n.is_u64() => return Ok(Some(n.clone())),
        Value::Number(n) => n.as_f64().ok_or(())?,
        Value::String(s) => s.trim().parse::<f64>().map_err(|_| ())?,
        _ => return Err(()),
    };
    if !f.is_finite() {
        return Err(());
    }
    // Integral and exactly representable: write it as an integer, as JSON.stringify would.
    if f.fract() == 0.0 && f.abs() <= 9_007_199_254_740_992.0 {
        return Ok(Some(Number::from(f as i64)));
    }
    Number::from_f64(f).map(Some).ok_or(())
}

fn expected(field: &str, want: &str, got: &Value) -> String {
    format!("'{field}': Expected {want}, received {}.", kind(got))
}

/// The zod name of a JSON value's type.
fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn ok(v: Value) -> Map<String, Value> {
        validate(v.to_string().as_bytes()).unwrap()
    }

    fn err(body: &str) -> String {
        let e = validate(body.as_bytes()).unwrap_err();
        assert_eq!(e.status, 400);
        e.message
    }

    #[test]
    fn accepts_what_aoconnect_sends() {
        let body = json!({
            "Id": "1234", "Target": "Pq4X2aN2Jh7yYb3dE1fL0kR9sT6uV5wX8zC3bA1dE0f", "Owner": "1234",
            "Anchor": "0", "Data": "1234",
            "Tags": [{"name": "Action", "value": "Balance"}, {"name": "Data-Protocol", "value": "ao"}]
        });
        assert_eq!(Value::Object(ok(body.clone())), body);
    }

    #[test]
    fn passes_extra_fields_and_any_data_through_in_order() {
        let m = ok(json!({"Zeta": 1, "Data": {"x": [1, 2]}, "Owner": null, "Alpha": true}));
        assert_eq!(m.keys().collect::<Vec<_>>(), ["Zeta", "Data", "Owner", "Alpha"]);
        assert_eq!(m["Data"], json!({"x": [1, 2]}));
    }

    #[test]
    fn strips_extra_tag_keys() {
        let m = ok(json!({"Tags": [{"value": "v", "name": "n", "extra": 1}]}));
        assert_eq!(m["Tags"].to_string(), r#"[{"name":"n","value":"v"}]"#);
    }

    #[test]
    fn coerces_numbers() {
        let m = ok(json!({"Timestamp": "1712967091755", "Block-Height": 1000.0}));
        assert_eq!(m["Timestamp"].to_string(), "1712967091755");
        assert_eq!(m["Block-Height"].to_string(), "1000");
        let m = ok(json!({"Timestamp": 1.5, "Block-Height": null}));
        assert_eq!(m["Timestamp"], json!(1.5));
        assert_eq!(m["Block-Height"], Value::Null);
    }

    #[test]
    fn names_each_bad_field() {
        assert_eq!(err(r#"{"Owner": 5}"#), "'Owner': Expected string, received number.");
        assert_eq!(err(r#"{"Tags": "x"}"#), "'Tags': Expected array, received string.");
        assert_eq!(
            err(r#"{"Tags": [{"name": "a", "value": "b"}, {"name": 1}, 3]}"#),
            "'Tags.1.name': Expected string, received number. | 'Tags.1.value': Required. \
             | 'Tags.2': Expected object, received number."
        );
        assert_eq!(err(r#"{"Timestamp": "soon"}"#), "'Timestamp': Expected number, received string.");
        assert_eq!(err(r#"{"Block-Height": true}"#), "'Block-Height': Expected number, received boolean.");
    }

    #[test]
    fn refuses_non_objects_and_bad_json() {
        assert!(err("").contains("empty"));
        assert!(err("[1]").contains("received array"));
        assert!(err("null").contains("received null"));
        assert!(err("{\"Id\":").starts_with("Body is not valid JSON"));
        assert!(err("\u{0}\u{1}garbage").starts_with("Body is not valid JSON"));
    }

    #[test]
    fn caps_the_error_list() {
        let tags: Vec<Value> = (0..100).map(|_| json!(1)).collect();
        let msg = err(&json!({ "Tags": tags }).to_string());
        assert_eq!(msg.matches(" | ").count(), MAX_REPORTED - 1);
    }
}
