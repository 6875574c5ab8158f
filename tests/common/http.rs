//! A tiny async HTTP/1.1 client for tests that reach a server on 127.0.0.1 from inside their own
//! tokio runtime (`metalcu dev` stacks started in-process): one request per connection
//! (`Connection: close`), the whole answer read to the end. Failures panic, as a test should;
//! the blocking client for servers seen from outside is in [`super::devchild`].

use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// One answer: status, head (status line and headers) and body, as text.
pub struct Reply {
    pub status: u16,
    pub head: String,
    pub body: String,
}

impl Reply {
    /// The `Content-Type` header's value (its name in either spelling the servers use), or "".
    pub fn content_type(&self) -> String {
        self.head
            .lines()
            .find_map(|l| l.strip_prefix("content-type: ").or_else(|| l.strip_prefix("Content-Type: ")))
            .unwrap_or("")
            .to_string()
    }

    /// The body as JSON, or as a JSON string of the text when it is not JSON.
    pub fn json(self) -> Value {
        serde_json::from_str(&self.body).unwrap_or(Value::String(self.body))
    }
}

/// `method path` on `addr` with `body` as JSON (empty when `None`); returns the whole answer.
pub async fn request(addr: std::net::SocketAddr, method: &str, path: &str, body: Option<&Value>) -> Reply {
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let body = body.map(|b| b.to_string()).unwrap_or_default();
    let req = format!(
        "{method} {path} HTTP/1.1\r\nhost: {addr}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes()).await.unwrap();
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).await.unwrap();
    let text = String::from_utf8_lossy(&raw).into_owned();
    let status = text[9..12].parse().unwrap();
    let (head, payload) = text.split_once("\r\n\r\n").unwrap();
    Reply { status, head: head.to_string(), body: payload.to_string() }
}

/// [`request`], returning (status, JSON body — or the text as a JSON string).
pub async fn http(addr: std::net::SocketAddr, method: &str, path: &str, body: Option<&Value>) -> (u16, Value) {
    let reply = request(addr, method, path, body).await;
    (reply.status, reply.json())
}
