//! The SU's JSON shapes (`GET /{pid}` messages pages, `GET /processes/{pid}`, single nodes).

use serde::Deserialize;
use serde_json::Value;

/// Most tags accepted on one message or assignment (ANS-104 allows 128).
pub const MAX_TAGS: usize = 128;
/// Most bytes of one tag name or value.
pub const MAX_TAG_BYTES: usize = 4096;
/// Most edges accepted in one page (the CU asks for `LOAD_MESSAGES_PAGE_SIZE` = 1000).
pub const MAX_PAGE_EDGES: usize = 10_000;

/// A `{name, value}` tag.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, serde::Serialize)]
pub struct Tag {
    pub name: String,
    pub value: String,
}

/// A signer: Arweave address and public key (base64url).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Owner {
    pub address: String,
    #[serde(default)]
    pub key: String,
}

/// The message half of a node (absent for assignments of existing transactions).
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct SuMessage {
    pub id: String,
    pub owner: Owner,
    /// A string, or null when the SU has no UTF-8 data.
    #[serde(default)]
    pub data: Value,
    #[serde(default)]
    pub tags: Vec<Tag>,
    #[serde(default)]
    pub signature: Option<String>,
    #[serde(default)]
    pub anchor: Option<String>,
    /// Present, but ignored by the CU (the target is the assignment's `Process` tag).
    #[serde(default)]
    pub target: Option<String>,
}

/// The assignment half of a node: the SU's ordering of the message.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct SuAssignment {
    pub id: String,
    pub owner: Owner,
    #[serde(default)]
    pub tags: Vec<Tag>,
    #[serde(default)]
    pub signature: Option<String>,
}

/// One scheduled item.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct Node {
    #[serde(default)]
    pub message: Option<SuMessage>,
    pub assignment: SuAssignment,
}

/// One edge of a messages page.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct Edge {
    pub cursor: String,
    pub node: Node,
}

/// `page_info` of a messages page.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub struct PageInfo {
    pub has_next_page: bool,
}

/// `GET {su}/{pid}?from=&to=&limit=`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct Page {
    pub page_info: PageInfo,
    pub edges: Vec<Edge>,
}

impl Node {
    /// Parses a one-message answer (`GET /{msgId}`, `GET /{pid}/latest`): a `{message,
    /// assignment}` node, or the legacy flat shape `{process_id, timestamp, nonce}` (§2.4), which
    /// becomes a node whose assignment carries just those (epoch and block height 0) — enough to
    /// place the message in its process's stream, which is all the CU reads from it.
    pub fn parse_single(body: &[u8]) -> Result<Node, SuDataError> {
        let v: Value = serde_json::from_slice(body).map_err(|e| SuDataError::Json(e.to_string()))?;
        let flat = v.get("assignment").is_none() && v.get("process_id").is_some();
        if !flat {
            let node: Node = serde_json::from_value(v).map_err(|e| SuDataError::Json(e.to_string()))?;
            check_tags(&node.assignment.id, &node.assignment.tags)?;
            if let Some(m) = &node.message {
                check_tags(&m.id, &m.tags)?;
            }
            return Ok(node);
        }
        let text = |name: &str| match v.get(name) {
            Some(Value::String(s)) => Some(s.clone()),
            Some(Value::Number(n)) => Some(n.to_string()),
            _ => None,
        };
        let missing = |name: &str| SuDataError::Json(format!("legacy message answer has no {name}"));
        let pid = text("process_id").ok_or_else(|| missing("process_id"))?;
        let timestamp = text("timestamp").ok_or_else(|| missing("timestamp"))?;
        let nonce = text("nonce").ok_or_else(|| missing("nonce"))?;
        let tag = |name: &str, value: String| Tag { name: name.into(), value };
        Ok(Node {
            message: None,
            assignment: SuAssignment {
                id: text("id").unwrap_or_default(),
                owner: Owner { address: String::new(), key: String::new() },
                tags: vec![
                    tag("Process", pid),
                    tag("Epoch", "0".into()),
                    tag("Nonce", nonce),
                    tag("Timestamp", timestamp),
                    tag("Block-Height", "0".into()),
                    tag("Message", text("id").unwrap_or_default()),
                ],
                signature: None,
            },
        })
    }
}

/// `GET {su}/processes/{pid}` (flat, not wrapped).
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct Process {
    pub process_id: String,
    /// Block height, zero-padded decimal.
    pub block: String,
    pub owner: Owner,
    #[serde(default)]
    pub tags: Vec<Tag>,
    pub timestamp: i64,
    #[serde(default)]
    pub data: Value,
    #[serde(default)]
    pub anchor: Option<String>,
    #[serde(default)]
    pub signature: Option<String>,
}

/// Why SU data was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SuDataError {
    #[error("SU returned invalid JSON: {0}")]
    Json(String),
    #[error("SU page has {0} edges; the limit is {MAX_PAGE_EDGES}")]
    TooManyEdges(usize),
    #[error("message {id}: {what}")]
    Invalid { id: String, what: String },
}

fn check_tags(id: &str, tags: &[Tag]) -> Result<(), SuDataError> {
    let bad = |what: String| SuDataError::Invalid { id: id.to_string(), what };
    if tags.len() > MAX_TAGS {
        return Err(bad(format!("{} tags; the limit is {MAX_TAGS}", tags.len())));
    }
    if let Some(t) = tags.iter().find(|t| t.name.len() > MAX_TAG_BYTES || t.value.len() > MAX_TAG_BYTES) {
        return Err(bad(format!(
            "tag {:?} is longer than {MAX_TAG_BYTES} bytes",
            t.name.chars().take(64).collect::<String>()
        )));
    }
    Ok(())
}

impl Page {
    /// Parses and bounds a messages page.
    pub fn parse(body: &[u8]) -> Result<Page, SuDataError> {
        let page: Page = serde_json::from_slice(body).map_err(|e| SuDataError::Json(e.to_string()))?;
        if page.edges.len() > MAX_PAGE_EDGES {
            return Err(SuDataError::TooManyEdges(page.edges.len()));
        }
        for e in &page.edges {
            check_tags(&e.node.assignment.id, &e.node.assignment.tags)?;
            if let Some(m) = &e.node.message {
                check_tags(&m.id, &m.tags)?;
            }
        }
        Ok(page)
    }
}
