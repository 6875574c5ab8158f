//! JSON exactly as JavaScript's `JSON.stringify` writes it.
//!
//! The reference host marshals `msg`/`env` with `JSON.stringify` and returns result fields that went
//! through `JSON.parse`, so byte-identical output needs JavaScript's rules:
//! - numbers are IEEE doubles printed by ECMAScript `Number::toString` (integers beyond 2^53 lose
//!   precision exactly as `JSON.parse` loses it);
//! - object keys that are array indices (canonical decimal integers below 2^32 - 1) come first in
//!   ascending order, then the other keys in insertion order;
//! - strings escape `"`, `\`, and control characters (short forms for `\b\f\n\r\t`, else `\u00xx`).

use serde_json::{Map, Value};

/// Serialises `v` as `JSON.stringify(v)` would.
pub fn stringify(v: &Value) -> String {
    let mut out = String::with_capacity(256);
    write_value(&mut out, v);
    out
}

/// The number of UTF-16 code units in `s` (JavaScript's `String.prototype.length`).
pub fn utf16_len(s: &str) -> usize {
    s.chars().map(char::len_utf16).sum()
}

fn write_value(out: &mut String, v: &Value) {
    match v {
        Value::Null => out.push_str("null"),
        Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        Value::Number(n) => write_number(out, n.as_f64().unwrap_or(f64::NAN)),
        Value::String(s) => write_string(out, s),
        Value::Array(a) => {
            out.push('[');
            for (i, x) in a.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_value(out, x);
            }
            out.push(']');
        }
        Value::Object(m) => write_object(out, m),
    }
}

fn write_number(out: &mut String, f: f64) {
    if !f.is_finite() {
        out.push_str("null");
    } else if f == 0.0 {
        out.push('0'); // -0 prints as 0
    } else {
        let mut buf = ryu_js::Buffer::new();
        out.push_str(buf.format_finite(f));
    }
}

/// Writes a JSON string literal with `JSON.stringify`'s escaping.
pub fn write_string(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => {
                out.push_str(&format!("\\u{:04x}", c as u32));
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

/// The array index a key denotes in a JavaScript object, if any.
fn array_index(k: &str) -> Option<u32> {
    if k.is_empty() || k.len() > 10 || (k.len() > 1 && k.starts_with('0')) {
        return None;
    }
    if !k.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let n: u64 = k.parse().ok()?;
    (n < u32::MAX as u64).then_some(n as u32)
}

fn write_object(out: &mut String, m: &Map<String, Value>) {
    out.push('{');
    let mut first = true;
    let mut indexed: Vec<(u32, &String, &Value)> =
        m.iter().filter_map(|(k, v)| array_index(k).map(|i| (i, k, v))).collect();
    indexed.sort_by_key(|(i, _, _)| *i);
    let ordered = indexed.into_iter().map(|(_, k, v)| (k, v)).chain(m.iter().filter(|(k, _)| array_index(k).is_none()));
    for (k, v) in ordered {
        if !first {
            out.push(',');
        }
        first = false;
        write_string(out, k);
        out.push(':');
        write_value(out, v);
    }
    out.push('}');
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn numbers_print_like_javascript() {
        let v: Value = serde_json::from_str("[1.0, 1e21, 1e-7, 0.1, -0.0, 12345678901234567890, 5e-324]").unwrap();
        assert_eq!(stringify(&v), "[1,1e+21,1e-7,0.1,0,12345678901234567000,5e-324]");
    }

    #[test]
    fn index_keys_come_first_in_ascending_order() {
        let v: Value = serde_json::from_str(r#"{"b":1,"2":2,"a":3,"1":4,"01":5,"4294967295":6}"#).unwrap();
        assert_eq!(stringify(&v), r#"{"1":4,"2":2,"b":1,"a":3,"01":5,"4294967295":6}"#);
    }

    #[test]
    fn strings_escape_like_javascript() {
        let v = json!(["a\"b\\c\u{1}\u{1b}\n\t\u{7f}é✓\u{2028}"]);
        assert_eq!(stringify(&v), "[\"a\\\"b\\\\c\\u0001\\u001b\\n\\t\u{7f}é✓\u{2028}\"]");
    }

    #[test]
    fn utf16_length_counts_surrogate_pairs() {
        assert_eq!(utf16_len("aé✓😀"), 5);
    }
}
