//! Event webhook: each event POSTed as JSON to a configured `http://` URL.
//!
//! A hand-written HTTP/1.1 request over a tokio `TcpStream` rather than an
//! HTTP client crate: one small POST, no TLS, no redirects, and the build
//! stays lean. Bounded by a connect-and-answer timeout and a small reply
//! read.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Whole exchange, connect to status line.
pub const TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Debug, thiserror::Error)]
pub enum WebhookError {
    #[error("not an http:// URL: {0}")]
    Url(String),
    #[error("connect/send: {0}")]
    Io(#[from] std::io::Error),
    #[error("no answer within {TIMEOUT:?}")]
    Timeout,
    #[error("receiver answered {0}")]
    Status(u16),
    #[error("unreadable answer")]
    BadAnswer,
}

impl WebhookError {
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Url(_) => "url",
            Self::Io(_) => "io",
            Self::Timeout => "timeout",
            Self::Status(_) => "status",
            Self::BadAnswer => "bad_answer",
        }
    }
}

/// `host:port` and path of an `http://` URL.
fn split_url(url: &str) -> Result<(String, String), WebhookError> {
    let rest = url
        .strip_prefix("http://")
        .ok_or_else(|| WebhookError::Url(url.to_owned()))?;
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    if authority.is_empty() || authority.contains('@') {
        return Err(WebhookError::Url(url.to_owned()));
    }
    let authority = if authority.contains(':') {
        authority.to_owned()
    } else {
        format!("{authority}:80")
    };
    Ok((authority, path.to_owned()))
}

/// POST `value` as JSON; success is any 2xx.
pub async fn post_json<T: serde::Serialize>(url: &str, value: &T) -> Result<(), WebhookError> {
    let (authority, path) = split_url(url)?;
    let body = serde_json::to_vec(value).map_err(|_| WebhookError::BadAnswer)?;
    let exchange = async {
        let mut s = tokio::net::TcpStream::connect(&authority).await?;
        let head = format!(
            "POST {path} HTTP/1.1\r\nHost: {authority}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\nUser-Agent: {}\r\n\r\n",
            body.len(),
            crate::sip::stack::USER_AGENT
        );
        s.write_all(head.as_bytes()).await?;
        s.write_all(&body).await?;
        let mut buf = [0u8; 64];
        let mut n = 0;
        while n < 12 {
            let r = s.read(&mut buf[n..]).await?;
            if r == 0 {
                break;
            }
            n += r;
        }
        let line = std::str::from_utf8(&buf[..n]).map_err(|_| WebhookError::BadAnswer)?;
        let code: u16 = line
            .split(' ')
            .nth(1)
            .and_then(|c| c.get(..3))
            .and_then(|c| c.parse().ok())
            .ok_or(WebhookError::BadAnswer)?;
        if (200..300).contains(&code) {
            Ok(())
        } else {
            Err(WebhookError::Status(code))
        }
    };
    tokio::time::timeout(TIMEOUT, exchange)
        .await
        .map_err(|_| WebhookError::Timeout)?
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        assert_eq!(
            split_url("http://10.0.0.1:9000/hook").unwrap(),
            ("10.0.0.1:9000".into(), "/hook".into())
        );
        assert_eq!(
            split_url("http://example").unwrap(),
            ("example:80".into(), "/".into())
        );
        assert!(split_url("https://x/").is_err());
        assert!(split_url("http://u:p@x/").is_err());
    }

    #[tokio::test]
    async fn posts_json_and_reads_the_status() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.unwrap();
            let mut req = Vec::new();
            let mut buf = [0u8; 1024];
            loop {
                let n = s.read(&mut buf).await.unwrap();
                req.extend_from_slice(&buf[..n]);
                if n == 0 || req.ends_with(b"}") {
                    break;
                }
            }
            s.write_all(b"HTTP/1.1 204 No Content\r\n\r\n")
                .await
                .unwrap();
            String::from_utf8(req).unwrap()
        });
        post_json(
            &format!("http://{addr}/events"),
            &serde_json::json!({"seq": 7}),
        )
        .await
        .unwrap();
        let req = server.await.unwrap();
        assert!(req.starts_with("POST /events HTTP/1.1\r\n"), "{req}");
        assert!(req.ends_with("\r\n\r\n{\"seq\":7}"), "{req}");
    }
}
