//! API requests for a device another node owns are forwarded to that
//! node's HTTP listener (PTZ, queries, records …): one HTTP/1.1 exchange
//! over a fresh loopback-or-cluster TCP connection, bounded by one
//! deadline and a reply size cap. Hand-written like the event webhook: no
//! TLS, no redirects, no client crate. The request carries
//! [`SECRET_HEADER`] (the cluster secret, which the owner accepts in place
//! of an API credential) and [`FORWARDED_HEADER`] (never forwarded again,
//! so two nodes with different views cannot bounce a request forever).

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// The cluster secret, proving the request comes from a node.
pub const SECRET_HEADER: &str = "x-camgate-cluster-secret";
/// The node that forwarded the request.
pub const FORWARDED_HEADER: &str = "x-camgate-forwarded-by";
/// Largest reply relayed (device answers are small JSON documents).
pub const MAX_REPLY_BYTES: usize = 1 << 20;

#[derive(Debug, thiserror::Error)]
pub enum ForwardError {
    #[error("connect/send to {0}: {1}")]
    Io(SocketAddr, std::io::Error),
    #[error("{0} did not answer within {1:?}")]
    Timeout(SocketAddr, Duration),
    #[error("unreadable answer from {0}")]
    BadAnswer(SocketAddr),
    #[error("answer from {0} larger than {MAX_REPLY_BYTES} bytes")]
    TooLarge(SocketAddr),
}

impl ForwardError {
    /// `camgate_cluster_forwarded_requests_total{outcome}`.
    pub fn outcome(&self) -> &'static str {
        match self {
            Self::Io(..) => "unreachable",
            Self::Timeout(..) => "timeout",
            Self::BadAnswer(_) | Self::TooLarge(_) => "bad_answer",
        }
    }
}

/// The owner's answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    pub status: u16,
    pub content_type: Option<String>,
    pub body: Vec<u8>,
}

/// One request to forward.
pub struct Outgoing<'a> {
    pub method: &'a str,
    /// Path and query, as received.
    pub target: &'a str,
    pub content_type: Option<&'a str>,
    pub authorization: Option<&'a str>,
    pub secret: &'a str,
    pub from_node: &'a str,
    pub body: &'a [u8],
}

/// The request bytes (header values come from our own request parser or
/// config; CR/LF are stripped all the same so nothing can be injected).
pub fn encode(to: SocketAddr, r: &Outgoing<'_>) -> Vec<u8> {
    let clean = |v: &str| v.replace(['\r', '\n'], "");
    let mut head = format!(
        "{} {} HTTP/1.1\r\nHost: {to}\r\nConnection: close\r\nContent-Length: {}\r\n{FORWARDED_HEADER}: {}\r\n",
        clean(r.method),
        clean(r.target),
        r.body.len(),
        clean(r.from_node),
    );
    if !r.secret.is_empty() {
        head.push_str(&format!("{SECRET_HEADER}: {}\r\n", clean(r.secret)));
    }
    if let Some(ct) = r.content_type {
        head.push_str(&format!("Content-Type: {}\r\n", clean(ct)));
    }
    if let Some(a) = r.authorization {
        head.push_str(&format!("Authorization: {}\r\n", clean(a)));
    }
    head.push_str("\r\n");
    let mut out = head.into_bytes();
    out.extend_from_slice(r.body);
    out
}

/// Parse a whole `Connection: close` answer. `None` until the head is
/// complete and, with a Content-Length, the body too.
pub fn parse(raw: &[u8]) -> Option<Reply> {
    let split = raw.windows(4).position(|w| w == b"\r\n\r\n")?;
    let head = std::str::from_utf8(&raw[..split]).ok()?;
    let mut lines = head.split("\r\n");
    let status = lines.next()?.split(' ').nth(1)?.parse().ok()?;
    let mut content_type = None;
    let mut length = None;
    for line in lines {
        let Some((k, v)) = line.split_once(':') else {
            continue;
        };
        let v = v.trim();
        if k.eq_ignore_ascii_case("content-type") {
            content_type = Some(v.to_owned());
        } else if k.eq_ignore_ascii_case("content-length") {
            length = v.parse::<usize>().ok();
        }
    }
    let body = &raw[split + 4..];
    let body = match length {
        Some(n) if body.len() < n => return None,
        Some(n) => &body[..n],
        None => body,
    };
    Some(Reply {
        status,
        content_type,
        body: body.to_vec(),
    })
}

/// Send `r` to `to` and read the answer, all within `timeout`.
pub async fn send(
    to: SocketAddr,
    r: &Outgoing<'_>,
    timeout: Duration,
) -> Result<Reply, ForwardError> {
    let exchange = async {
        let mut s = tokio::net::TcpStream::connect(to)
            .await
            .map_err(|e| ForwardError::Io(to, e))?;
        s.write_all(&encode(to, r))
            .await
            .map_err(|e| ForwardError::Io(to, e))?;
        let mut raw = Vec::new();
        let mut chunk = [0u8; 8192];
        loop {
            let n = s
                .read(&mut chunk)
                .await
                .map_err(|e| ForwardError::Io(to, e))?;
            if n == 0 {
                return parse(&raw).ok_or(ForwardError::BadAnswer(to));
            }
            raw.extend_from_slice(&chunk[..n]);
            if raw.len() > MAX_REPLY_BYTES + 16 * 1024 {
                return Err(ForwardError::TooLarge(to));
            }
            if let Some(reply) = parse(&raw)
                && raw.windows(4).any(|w| w == b"\r\n\r\n")
                && has_length(&raw)
            {
                return Ok(reply);
            }
        }
    };
    tokio::time::timeout(timeout, exchange)
        .await
        .unwrap_or(Err(ForwardError::Timeout(to, timeout)))
}

/// Whether the head names a Content-Length (else the body runs to EOF).
fn has_length(raw: &[u8]) -> bool {
    let Some(split) = raw.windows(4).position(|w| w == b"\r\n\r\n") else {
        return false;
    };
    String::from_utf8_lossy(&raw[..split])
        .to_ascii_lowercase()
        .contains("\r\ncontent-length:")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_carries_secret_origin_and_body_without_injection() {
        let to: SocketAddr = "10.0.0.3:8080".parse().unwrap();
        let bytes = encode(
            to,
            &Outgoing {
                method: "POST",
                target: "/api/v1/devices/d/channels/c/ptz",
                content_type: Some("application/json"),
                authorization: Some("Bearer k\r\nX-Evil: 1"),
                secret: "s3",
                from_node: "node-1",
                body: b"{\"action\":\"left\"}",
            },
        );
        let text = String::from_utf8(bytes).unwrap();
        assert!(text.starts_with("POST /api/v1/devices/d/channels/c/ptz HTTP/1.1\r\n"));
        assert!(text.contains("\r\nx-camgate-cluster-secret: s3\r\n"));
        assert!(text.contains("\r\nx-camgate-forwarded-by: node-1\r\n"));
        assert!(text.contains("\r\nContent-Length: 17\r\n"));
        assert!(text.contains("\r\nAuthorization: Bearer kX-Evil: 1\r\n"));
        assert!(text.ends_with("\r\n\r\n{\"action\":\"left\"}"));
    }

    #[test]
    fn answers_parse_by_length_or_to_the_end() {
        let full =
            b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 2\r\n\r\n{}";
        assert_eq!(
            parse(full),
            Some(Reply {
                status: 200,
                content_type: Some("application/json".into()),
                body: b"{}".to_vec()
            })
        );
        assert_eq!(parse(&full[..full.len() - 1]), None);
        assert_eq!(
            parse(b"HTTP/1.1 404 Not Found\r\n\r\nno").unwrap().body,
            b"no"
        );
        assert_eq!(parse(b"garbage"), None);
        assert_eq!(parse(b"HTTP/1.1 abc\r\n\r\n"), None);
    }
}
