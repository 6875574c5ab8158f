//! Turning an SU node into the `msg` object `handle` receives (cu-protocol §2.5 and §4.3).
//!
//! Key order is the reference's: `Id, Signature, Data, Owner, Target, Anchor, From,
//! Forwarded-By, Tags, Epoch, Nonce, Timestamp, Block-Height, Hash-Chain, Cron, Read-Only`, so
//! `JSON.stringify(msg)` — and with it the module's memory — is byte-identical.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::{Map, Value};
use sha3::Digest;

use super::types::{Node, Owner, SuDataError, Tag};

/// A scheduled item, ready for evaluation (messages) or for hydration from the gateway
/// (assignments of existing transactions).
#[derive(Debug, Clone, PartialEq)]
pub struct Scheduled {
    /// The `msg` object; for an assignment, the fields the gateway must still fill are absent.
    pub msg: Map<String, Value>,
    pub assignment_id: String,
    /// `String(Nonce)`: the ordinate results are stored under.
    pub ordinate: String,
    pub nonce: u64,
    pub timestamp: i64,
    pub hash_chain: String,
    /// The assignment's `Exclude` values (fields the gateway must not fetch).
    pub exclude: Vec<String>,
    /// True when the node assigns an existing transaction (`message` null).
    pub is_assignment: bool,
}

/// The signer address of `owner`: for a 65-byte secp256k1 key, the EIP-55 checksummed Ethereum
/// address (last 20 bytes of keccak256 of the key without its 0x04 prefix); else the address given.
pub fn owner_address(owner: &Owner) -> String {
    match URL_SAFE_NO_PAD.decode(owner.key.trim_end_matches('=')) {
        Ok(key) if key.len() == 65 => eip55(&sha3::Keccak256::digest(&key[1..])[12..]),
        _ => owner.address.clone(),
    }
}

fn eip55(addr: &[u8]) -> String {
    let hex_lower = hex::encode(addr);
    let hash = sha3::Keccak256::digest(hex_lower.as_bytes());
    let mut out = String::from("0x");
    for (i, c) in hex_lower.chars().enumerate() {
        let nibble = (hash[i / 2] >> if i % 2 == 0 { 4 } else { 0 }) & 0xf;
        out.push(if c.is_ascii_alphabetic() && nibble >= 8 { c.to_ascii_uppercase() } else { c });
    }
    out
}

/// The first value of tag `name`.
pub fn tag<'a>(tags: &'a [Tag], name: &str) -> Option<&'a str> {
    tags.iter().find(|t| t.name == name).map(|t| t.value.as_str())
}

fn int_tag(tags: &[Tag], name: &str, id: &str) -> Result<i64, SuDataError> {
    let v = tag(tags, name)
        .ok_or_else(|| SuDataError::Invalid { id: id.into(), what: format!("assignment has no {name} tag") })?;
    v.trim()
        .parse::<i64>()
        .map_err(|_| SuDataError::Invalid { id: id.into(), what: format!("{name} {v:?} is not an integer") })
}

fn tags_value(tags: &[Tag]) -> Value {
    Value::Array(
        tags.iter()
            .filter(|t| t.name != "From" && t.name != "Owner")
            .map(|t| serde_json::json!({ "name": t.name, "value": t.value }))
            .collect(),
    )
}

/// Maps one SU node (§2.5). Messages become complete `msg` objects; assignments of existing
/// transactions carry the SU's fields and wait for the gateway (`Signature`, `Data`, `Owner`,
/// `From`, `Target`, `Anchor`, `Tags`).
pub fn map_node(node: &Node) -> Result<Scheduled, SuDataError> {
    let a = &node.assignment;
    let id_for_errors = node.message.as_ref().map(|m| m.id.as_str()).unwrap_or(a.id.as_str());
    let epoch = int_tag(&a.tags, "Epoch", id_for_errors)?;
    let nonce = int_tag(&a.tags, "Nonce", id_for_errors)?;
    let timestamp = int_tag(&a.tags, "Timestamp", id_for_errors)?;
    let height = int_tag(&a.tags, "Block-Height", id_for_errors)?;
    let nonce_u = u64::try_from(nonce)
        .map_err(|_| SuDataError::Invalid { id: id_for_errors.into(), what: format!("negative Nonce {nonce}") })?;
    let hash_chain = tag(&a.tags, "Hash-Chain").unwrap_or_default().to_string();
    let process = tag(&a.tags, "Process").unwrap_or_default().to_string();
    let exclude: Vec<String> = a.tags.iter().filter(|t| t.name == "Exclude").map(|t| t.value.clone()).collect();
    let mut msg = Map::new();
    let is_assignment = node.message.is_none();
    match &node.message {
        Some(m) => {
            let owner = owner_address(&m.owner);
            let from_process = tag(&m.tags, "From-Process").filter(|v| !v.is_empty());
            msg.insert("Id".into(), Value::String(m.id.clone()));
            msg.insert("Signature".into(), m.signature.clone().map(Value::String).unwrap_or(Value::Null));
            msg.insert("Data".into(), m.data.clone());
            msg.insert("Owner".into(), Value::String(owner.clone()));
            msg.insert("Target".into(), Value::String(process));
            msg.insert("Anchor".into(), m.anchor.clone().map(Value::String).unwrap_or(Value::Null));
            msg.insert("From".into(), Value::String(from_process.map(str::to_string).unwrap_or_else(|| owner.clone())));
            if tag(&m.tags, "From-Process").is_some() {
                msg.insert("Forwarded-By".into(), Value::String(owner));
            }
            msg.insert("Tags".into(), tags_value(&m.tags));
        }
        None => {
            let target = tag(&a.tags, "Message").ok_or_else(|| SuDataError::Invalid {
                id: a.id.clone(),
                what: "assignment of a transaction has no Message tag".into(),
            })?;
            msg.insert("Id".into(), Value::String(target.to_string()));
        }
    }
    msg.insert("Epoch".into(), Value::from(epoch));
    msg.insert("Nonce".into(), Value::from(nonce));
    msg.insert("Timestamp".into(), Value::from(timestamp));
    msg.insert("Block-Height".into(), Value::from(height));
    msg.insert("Hash-Chain".into(), Value::String(hash_chain.clone()));
    msg.insert("Cron".into(), Value::Bool(false));
    msg.insert("Read-Only".into(), Value::Bool(false));
    Ok(Scheduled {
        msg,
        assignment_id: a.id.clone(),
        ordinate: nonce.to_string(),
        nonce: nonce_u,
        timestamp,
        hash_chain,
        exclude,
        is_assignment,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::jsjson;
    use crate::su::types::Page;

    #[test]
    fn eip55_address_of_the_secp256k1_generator() {
        // Private key 1: its public key is the curve's generator point.
        let key = hex::decode(concat!(
            "04",
            "79be667ef9dcbbac55a06295ce870b07029bfcdb2dce28d959f2815b16f81798",
            "483ada7726a3c4655da4fbfc0e1108a8fd17b448a68554199c47d08ffb10d4b8"
        ))
        .unwrap();
        let owner = Owner { address: "ignored".into(), key: URL_SAFE_NO_PAD.encode(key) };
        assert_eq!(owner_address(&owner), "0x7E5F4552091A69125d5DfCb7b8C2659029395Bdf");
        let arweave = Owner {
            address: "vh-NTHVvlKZqRxc8LyyTNok65yQ55a_PJ1zWLb9G2JI".into(),
            key: URL_SAFE_NO_PAD.encode([7u8; 512]),
        };
        assert_eq!(owner_address(&arweave), "vh-NTHVvlKZqRxc8LyyTNok65yQ55a_PJ1zWLb9G2JI");
    }

    const PAGE: &str = r#"{"page_info":{"has_next_page":false},"edges":[
      {"cursor":"1712967000000","node":{
        "message":{"id":"MSG","owner":{"address":"OWNER","key":"AQID"},"data":"Handlers.list",
          "tags":[{"name":"Action","value":"Eval"},{"name":"From","value":"spoof"},{"name":"Data-Protocol","value":"ao"}],
          "signature":"SIG","anchor":"00000000000000000000000000000042","target":null},
        "assignment":{"id":"ASSIGN","owner":{"address":"SU","key":"AQID"},"tags":[
          {"name":"Process","value":"PID"},{"name":"Epoch","value":"0"},{"name":"Nonce","value":"23"},
          {"name":"Hash-Chain","value":"HC"},{"name":"Block-Height","value":"000001412346"},
          {"name":"Timestamp","value":"1712967091755"}],"signature":"S","anchor":null,"target":""}}},
      {"cursor":"1712967091756","node":{"message":null,"assignment":{"id":"A2","owner":{"address":"SU","key":""},
        "tags":[{"name":"Process","value":"PID"},{"name":"Epoch","value":"0"},{"name":"Nonce","value":"24"},
          {"name":"Hash-Chain","value":"HC2"},{"name":"Block-Height","value":"000001412347"},
          {"name":"Timestamp","value":"1712967091756"},{"name":"Message","value":"TX"},{"name":"Exclude","value":"Data"}]}}}]}"#;

    #[test]
    fn scheduled_message_maps_like_the_reference() {
        let page = Page::parse(PAGE.as_bytes()).unwrap();
        let s = map_node(&page.edges[0].node).unwrap();
        assert_eq!(
            jsjson::stringify(&Value::Object(s.msg)),
            concat!(
                r#"{"Id":"MSG","Signature":"SIG","Data":"Handlers.list","Owner":"OWNER","Target":"PID","#,
                r#""Anchor":"00000000000000000000000000000042","From":"OWNER","#,
                r#""Tags":[{"name":"Action","value":"Eval"},{"name":"Data-Protocol","value":"ao"}],"#,
                r#""Epoch":0,"Nonce":23,"Timestamp":1712967091755,"Block-Height":1412346,"Hash-Chain":"HC","#,
                r#""Cron":false,"Read-Only":false}"#
            )
        );
        assert_eq!((s.ordinate.as_str(), s.nonce, s.is_assignment), ("23", 23, false));
    }

    #[test]
    fn forwarded_message_takes_from_process() {
        let mut page = Page::parse(PAGE.as_bytes()).unwrap();
        let m = page.edges[0].node.message.as_mut().unwrap();
        m.tags.push(Tag { name: "From-Process".into(), value: "OTHER-PID".into() });
        let s = map_node(&page.edges[0].node).unwrap();
        assert_eq!(s.msg["From"], "OTHER-PID");
        assert_eq!(s.msg["Forwarded-By"], "OWNER");
    }

    #[test]
    fn assignment_waits_for_the_gateway() {
        let page = Page::parse(PAGE.as_bytes()).unwrap();
        let s = map_node(&page.edges[1].node).unwrap();
        assert!(s.is_assignment);
        assert_eq!(s.msg["Id"], "TX");
        assert_eq!(s.exclude, vec!["Data".to_string()]);
        assert!(!s.msg.contains_key("Data"));
    }

    #[test]
    fn malformed_nodes_are_refused_with_the_message_named() {
        let bad = PAGE.replace(r#""value":"23""#, r#""value":"x23""#);
        let page = Page::parse(bad.as_bytes()).unwrap();
        let err = map_node(&page.edges[0].node).unwrap_err().to_string();
        assert!(err.contains("MSG") && err.contains("Nonce"), "{err}");
        assert!(Page::parse(b"{\"edges\": 3}").is_err());
        let many: Vec<String> = (0..200).map(|i| format!(r#"{{"name":"T{i}","value":"v"}}"#)).collect();
        let big = PAGE.replace(r#"{"name":"Action","value":"Eval"},"#, &format!("{},", many.join(",")));
        let err = Page::parse(big.as_bytes()).unwrap_err().to_string();
        assert!(err.contains("202 tags; the limit is 128"), "{err}");
    }
}
