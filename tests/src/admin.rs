//! The admin door of a server, read as an operator's script would: `/status` as JSON.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// The body of `GET path` on `admin`; an empty string when the door does not answer within a few
/// seconds (a server stopped or restarting), so callers can poll.
pub async fn get(admin: SocketAddr, path: &str) -> String {
    let request = format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n");
    let exchange = async {
        let mut s = TcpStream::connect(admin).await.ok()?;
        s.write_all(request.as_bytes()).await.ok()?;
        let mut answer = Vec::new();
        s.read_to_end(&mut answer).await.ok()?;
        Some(answer)
    };
    let Ok(Some(answer)) = tokio::time::timeout(Duration::from_secs(5), exchange).await else {
        return String::new();
    };
    let answer = String::from_utf8_lossy(&answer).into_owned();
    answer
        .split_once("\r\n\r\n")
        .map(|(_, body)| body.to_owned())
        .unwrap_or_default()
}

/// `/status` as JSON (`Null` when the server does not answer).
pub async fn status(admin: SocketAddr) -> serde_json::Value {
    serde_json::from_str(&get(admin, "/status").await).unwrap_or_default()
}

/// The records a server holds and their fingerprint, from `/status`: two servers that hold the same
/// records show the same pair.
pub async fn fingerprint(admin: SocketAddr) -> Option<(u64, String)> {
    let s = status(admin).await;
    Some((
        s["records"].as_u64()?,
        s["fingerprint"].as_str()?.to_owned(),
    ))
}

/// The link to `peer` as `/status` shows it.
pub async fn link(admin: SocketAddr, peer: &str) -> serde_json::Value {
    let s = status(admin).await;
    s["links"]
        .as_array()
        .and_then(|links| links.iter().find(|l| l["name"] == peer).cloned())
        .unwrap_or_default()
}
