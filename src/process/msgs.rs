//! The `msg` objects the CU builds itself rather than maps from an SU node (cu-protocol §4.3):
//! the synthesized spawn message of legacy processes (§4.4), assignments of existing
//! transactions hydrated from the gateway (§2.5), cron messages (§4.5) and dry-run messages
//! (§1.8).
//!
//! Invariant: every builder returns its keys in the reference's order ([`MSG_KEYS`]), keys the
//! reference leaves `undefined` are absent, and tags named `From` or `Owner` are removed — so
//! `JSON.stringify(msg)`, and with it the module's memory, is byte-identical to the reference's.

use serde_json::{Map, Value};

use crate::gateway::TxMeta;
use crate::process::cron::Tick;
use crate::su::message::owner_address;
use crate::su::types::{Process, Tag};

/// The keys of a `msg` object in the order the reference writes them (§4.3).
pub const MSG_KEYS: [&str; 16] = [
    "Id",
    "Signature",
    "Data",
    "Owner",
    "Target",
    "Anchor",
    "From",
    "Forwarded-By",
    "Tags",
    "Epoch",
    "Nonce",
    "Timestamp",
    "Block-Height",
    "Hash-Chain",
    "Cron",
    "Read-Only",
];

/// `msg` with its keys in [`MSG_KEYS`] order; other keys follow in their own order.
pub fn ordered(mut msg: Map<String, Value>) -> Map<String, Value> {
    let mut out = Map::new();
    for k in MSG_KEYS {
        if let Some(v) = msg.remove(k) {
            out.insert(k.to_string(), v);
        }
    }
    out.extend(msg);
    out
}

/// The `From` rule: the value of the first `From-Process` tag if it is non-empty, else the owner.
pub fn from_rule<'a>(mut tags: impl Iterator<Item = (&'a str, &'a str)>, owner: &str) -> String {
    match tags.find(|(n, _)| *n == "From-Process") {
        Some((_, v)) if !v.is_empty() => v.to_string(),
        _ => owner.to_string(),
    }
}

/// Tags as the module sees them: original order, `From` and `Owner` removed.
pub fn tags_value(tags: &[Tag]) -> Value {
    Value::Array(
        tags.iter()
            .filter(|t| t.name != "From" && t.name != "Owner")
            .map(|t| serde_json::json!({ "name": t.name, "value": t.value }))
            .collect(),
    )
}

fn opt_string(v: &Option<String>) -> Value {
    v.clone().map(Value::String).unwrap_or(Value::Null)
}

/// The spawn message a legacy process (whose stream does not start with itself) is started
/// with (§4.4): `data` is the process's `/raw` data as text.
pub fn spawn_message(process: &Process, height: u64, data: String) -> Map<String, Value> {
    let owner = owner_address(&process.owner);
    let tags = process.tags.iter().map(|t| (t.name.as_str(), t.value.as_str()));
    let mut m = Map::new();
    m.insert("Id".into(), Value::String(process.process_id.clone()));
    m.insert("Signature".into(), opt_string(&process.signature));
    m.insert("Data".into(), Value::String(data));
    m.insert("Owner".into(), Value::String(owner.clone()));
    m.insert("Target".into(), Value::String(process.process_id.clone()));
    m.insert("Anchor".into(), opt_string(&process.anchor));
    m.insert("From".into(), Value::String(from_rule(tags, &owner)));
    m.insert("Tags".into(), tags_value(&process.tags));
    m.insert("Timestamp".into(), Value::from(process.timestamp));
    m.insert("Block-Height".into(), Value::from(height));
    m.insert("Cron".into(), Value::Bool(false));
    ordered(m)
}

/// Completes an assignment of an existing transaction (§2.5, right column) with the gateway's
/// metadata `tx` and, unless `Data` is excluded, its data as text. Fields named in `exclude`
/// (`Data`, `Tags`, `Signature`, `Anchor`) stay absent, as in the reference, whose GraphQL query
/// skips them.
pub fn hydrate_assignment(
    mut msg: Map<String, Value>,
    tx: &TxMeta,
    data: Option<String>,
    exclude: &[String],
) -> Map<String, Value> {
    let excluded = |name: &str| exclude.iter().any(|e| e == name);
    let owner = owner_address(&tx.owner);
    if !excluded("Signature") {
        msg.insert("Signature".into(), opt_string(&tx.signature));
    }
    if let Some(d) = data {
        msg.insert("Data".into(), Value::String(d));
    }
    msg.insert("Owner".into(), Value::String(owner.clone()));
    msg.insert("Target".into(), Value::String(tx.recipient.clone().unwrap_or_default()));
    if !excluded("Anchor") {
        msg.insert("Anchor".into(), opt_string(&tx.anchor));
    }
    let tags = if excluded("Tags") { &[][..] } else { &tx.tags[..] };
    msg.insert(
        "From".into(),
        Value::String(from_rule(tags.iter().map(|t| (t.name.as_str(), t.value.as_str())), &owner)),
    );
    if !excluded("Tags") {
        msg.insert("Tags".into(), tags_value(&tx.tags));
    }
    ordered(msg)
}

/// A cron message (§4.5): no id, signature, nonce or hash chain.
pub fn cron_message(process_owner: &str, pid: &str, tick: &Tick) -> Map<String, Value> {
    let mut m = Map::new();
    m.insert("Owner".into(), Value::String(process_owner.to_string()));
    m.insert("Target".into(), Value::String(pid.to_string()));
    m.insert("From".into(), Value::String(process_owner.to_string()));
    m.insert("Tags".into(), tags_value(&tick.tags));
    m.insert("Timestamp".into(), Value::from(tick.timestamp_ms));
    m.insert("Block-Height".into(), Value::from(tick.block_height));
    m.insert("Cron".into(), Value::Bool(true));
    m.insert("Read-Only".into(), Value::Bool(false));
    ordered(m)
}

/// A dry-run message (§1.8 step 4) from the caller's fields: `Timestamp`/`Block-Height` default
/// to the last evaluated message's, `Target` to the process, `From` by the `From` rule,
/// `Cron: false`, `Read-Only: true`.
pub fn dry_run_message(mut msg: Map<String, Value>, pid: &str, last: Option<(i64, u64)>) -> Map<String, Value> {
    if let Some((ts, height)) = last {
        msg.entry("Timestamp").or_insert(Value::from(ts));
        msg.entry("Block-Height").or_insert(Value::from(height));
    }
    msg.entry("Target").or_insert(Value::String(pid.to_string()));
    if let Some(Value::Array(tags)) = msg.get_mut("Tags") {
        tags.retain(|t| t["name"] != "From" && t["name"] != "Owner");
    }
    let owner = msg.get("Owner").and_then(Value::as_str).map(str::to_string);
    if let Some(owner) = owner {
        let tags: Vec<(&str, &str)> = msg
            .get("Tags")
            .and_then(Value::as_array)
            .map(|a| a.iter().filter_map(|t| Some((t["name"].as_str()?, t["value"].as_str()?))).collect())
            .unwrap_or_default();
        let from = from_rule(tags.into_iter(), &owner);
        msg.insert("From".into(), Value::String(from));
    }
    msg.insert("Cron".into(), Value::Bool(false));
    msg.insert("Read-Only".into(), Value::Bool(true));
    ordered(msg)
}

/// Why the reference's message schema refuses dry-run message `msg` (§1.8), if it does: `Owner`
/// and `Tags` are required, and `From`, derived from a `From-Process` tag or the owner, with them;
/// the failures in schema order, joined by ` | `.
pub fn dry_run_refusal(msg: &Map<String, Value>) -> Option<String> {
    let present = |k: &str| msg.get(k).is_some_and(|v| !v.is_null());
    let from_process = msg
        .get("Tags")
        .and_then(Value::as_array)
        .and_then(|tags| tags.iter().find(|t| t["name"] == "From-Process"))
        .and_then(|t| t["value"].as_str())
        .is_some_and(|v| !v.is_empty());
    let mut missing = Vec::new();
    if !present("Owner") {
        missing.push("'Owner': Required.");
        if !from_process {
            missing.push("'From': Required.");
        }
    }
    if !present("Tags") {
        missing.push("'Tags': Required.");
    }
    (!missing.is_empty()).then(|| missing.join(" | "))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::jsjson::stringify;
    use crate::su::types::Owner;

    fn tag(n: &str, v: &str) -> Tag {
        Tag { name: n.into(), value: v.into() }
    }

    #[test]
    fn spawn_message_has_the_reference_keys_in_order() {
        let p = Process {
            process_id: "PID".into(),
            block: "000001412345".into(),
            owner: Owner { address: "OWNER".into(), key: String::new() },
            tags: vec![tag("Type", "Process"), tag("From", "spoof"), tag("Module", "MOD")],
            timestamp: 1_712_967_000_000,
            data: Value::Null,
            anchor: None,
            signature: Some("SIG".into()),
        };
        let m = spawn_message(&p, 1_412_345, "-- init".into());
        assert_eq!(
            stringify(&Value::Object(m)),
            concat!(
                r#"{"Id":"PID","Signature":"SIG","Data":"-- init","Owner":"OWNER","Target":"PID","Anchor":null,"#,
                r#""From":"OWNER","Tags":[{"name":"Type","value":"Process"},{"name":"Module","value":"MOD"}],"#,
                r#""Timestamp":1712967000000,"Block-Height":1412345,"Cron":false}"#
            )
        );
    }

    #[test]
    fn assignments_take_the_gateway_fields_except_excluded_ones() {
        let mut base = Map::new();
        base.insert("Id".into(), Value::String("TX".into()));
        base.insert("Epoch".into(), Value::from(0));
        base.insert("Nonce".into(), Value::from(3));
        let tx = TxMeta {
            id: "TX".into(),
            owner: Owner { address: "SIGNER".into(), key: String::new() },
            tags: vec![tag("Action", "Ping"), tag("From-Process", "OTHER")],
            signature: Some("S".into()),
            anchor: None,
            recipient: None,
        };
        let full = hydrate_assignment(base.clone(), &tx, Some("hello".into()), &[]);
        assert_eq!(
            stringify(&Value::Object(full)),
            concat!(
                r#"{"Id":"TX","Signature":"S","Data":"hello","Owner":"SIGNER","Target":"","Anchor":null,"#,
                r#""From":"OTHER","Tags":[{"name":"Action","value":"Ping"},{"name":"From-Process","value":"OTHER"}],"#,
                r#""Epoch":0,"Nonce":3}"#
            )
        );
        let lean = hydrate_assignment(base, &tx, None, &["Data".into(), "Tags".into()]);
        let text = stringify(&Value::Object(lean));
        assert!(!text.contains("Data") && !text.contains("Tags"), "{text}");
        assert!(text.contains(r#""From":"SIGNER""#), "no tags, so From is the owner: {text}");
    }

    #[test]
    fn cron_and_dry_run_messages() {
        let tick =
            Tick { timestamp_ms: 5000, block_height: 7, cron: "0-5-seconds".into(), tags: vec![tag("Action", "Tick")] };
        assert_eq!(
            stringify(&Value::Object(cron_message("OWN", "PID", &tick))),
            concat!(
                r#"{"Owner":"OWN","Target":"PID","From":"OWN","Tags":[{"name":"Action","value":"Tick"}],"#,
                r#""Timestamp":5000,"Block-Height":7,"Cron":true,"Read-Only":false}"#
            )
        );
        let body: Map<String, Value> = serde_json::from_str(
            r#"{"Tags":[{"name":"From-Process","value":"X"},{"name":"Owner","value":"spoof"}],"Owner":"O","Data":"d","Id":"1"}"#,
        )
        .unwrap();
        let m = dry_run_message(body, "PID", Some((10, 2)));
        assert_eq!(
            stringify(&Value::Object(m)),
            concat!(
                r#"{"Id":"1","Data":"d","Owner":"O","Target":"PID","From":"X","#,
                r#""Tags":[{"name":"From-Process","value":"X"}],"Timestamp":10,"Block-Height":2,"#,
                r#""Cron":false,"Read-Only":true}"#
            )
        );
    }

    #[test]
    fn dry_runs_without_owner_or_tags_are_refused_as_the_reference_refuses_them() {
        let m = |v: Value| v.as_object().unwrap().clone();
        assert_eq!(dry_run_refusal(&m(serde_json::json!({"Owner": "O", "Tags": []}))), None);
        assert_eq!(
            dry_run_refusal(&m(serde_json::json!({"Tags": [], "Data": "x"}))).unwrap(),
            "'Owner': Required. | 'From': Required."
        );
        assert_eq!(
            dry_run_refusal(&m(serde_json::json!({"Owner": null}))).unwrap(),
            "'Owner': Required. | 'From': Required. | 'Tags': Required."
        );
        let from_process = serde_json::json!({"Tags": [{"name": "From-Process", "value": "P"}]});
        assert_eq!(dry_run_refusal(&m(from_process)).unwrap(), "'Owner': Required.");
        assert_eq!(dry_run_refusal(&m(serde_json::json!({"Owner": "O"}))).unwrap(), "'Tags': Required.");
    }
}
