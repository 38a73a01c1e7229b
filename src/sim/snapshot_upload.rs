//! The simulated camera's side of GB/T 28181-2022 snapshots (§9.14): POST
//! `SnapNum` JPEGs `Interval` seconds apart to the platform's `UploadURL`
//! (plain HTTP/1.1, one connection per image), then report the file ids
//! in `UploadSnapShotFinished`.
//!
//! Each image is `assets/snapshot.jpg` with a JPEG comment segment (COM,
//! ITU-T T.81 §B.2.4.5) naming the session and image number inserted after
//! SOI, so every upload differs and still decodes.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;

/// The base image.
pub static SNAPSHOT_JPEG: &[u8] = include_bytes!("../../assets/snapshot.jpg");
/// Longest wait for the platform's answer to one upload.
const UPLOAD_TIMEOUT: Duration = Duration::from_secs(5);

/// The `n`th image of `session`.
pub fn snapshot_image(session: &str, n: u32) -> Vec<u8> {
    let comment = format!("camgate sim snapshot {session} #{n}");
    let comment = comment.as_bytes();
    let len = (comment.len() + 2) as u16;
    let mut out = Vec::with_capacity(SNAPSHOT_JPEG.len() + comment.len() + 4);
    out.extend_from_slice(SNAPSHOT_JPEG.get(..2).unwrap_or_default());
    out.extend_from_slice(&[0xFF, 0xFE]);
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(comment);
    out.extend_from_slice(SNAPSHOT_JPEG.get(2..).unwrap_or_default());
    out
}

/// `http://host:port/path` → (`host:port`, `/path`).
pub fn split_http_url(url: &str) -> Option<(&str, &str)> {
    let rest = url.strip_prefix("http://")?;
    let (authority, path) = match rest.find('/') {
        Some(i) => (rest.get(..i)?, rest.get(i..)?),
        None => (rest, "/"),
    };
    (!authority.is_empty() && authority.contains(':')).then_some((authority, path))
}

/// POST one body; returns the HTTP status.
async fn post(url: &str, body: &[u8]) -> Result<u16, String> {
    let (authority, path) = split_http_url(url).ok_or_else(|| format!("bad URL {url:?}"))?;
    let exchange = async {
        let mut s = TcpStream::connect(authority)
            .await
            .map_err(|e| format!("connect {authority}: {e}"))?;
        let head = format!(
            "POST {path} HTTP/1.1\r\nHost: {authority}\r\nContent-Type: image/jpeg\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
            body.len()
        );
        s.write_all(head.as_bytes())
            .await
            .map_err(|e| e.to_string())?;
        s.write_all(body).await.map_err(|e| e.to_string())?;
        let mut resp = Vec::new();
        s.take(64 * 1024)
            .read_to_end(&mut resp)
            .await
            .map_err(|e| e.to_string())?;
        let text = String::from_utf8_lossy(&resp);
        text.split(' ')
            .nth(1)
            .and_then(|c| c.parse().ok())
            .ok_or_else(|| "no HTTP status".to_owned())
    };
    tokio::time::timeout(UPLOAD_TIMEOUT, exchange)
        .await
        .map_err(|_| "upload timed out".to_owned())?
}

/// Upload `num` images; returns the file ids of those the platform took.
pub async fn upload_snapshots(
    url: String,
    session: String,
    num: u32,
    interval: Duration,
    stop: CancellationToken,
) -> Vec<String> {
    let mut files = Vec::new();
    for n in 1..=num {
        if n > 1 {
            tokio::select! {
                _ = stop.cancelled() => break,
                _ = tokio::time::sleep(interval) => {}
            }
        }
        match post(&url, &snapshot_image(&session, n)).await {
            Ok(status) if (200..300).contains(&status) => {
                tracing::info!(%session, n, "snapshot uploaded");
                files.push(format!("{session}_{n}"));
            }
            Ok(status) => tracing::warn!(%session, n, status, "snapshot upload refused"),
            Err(e) => tracing::warn!(%session, n, "snapshot upload failed: {e}"),
        }
    }
    files
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn images_stay_jpeg_and_differ() {
        let a = snapshot_image("s", 1);
        let b = snapshot_image("s", 2);
        assert_ne!(a, b);
        for img in [&a, &b] {
            assert!(crate::gb28181::snapshot::looks_like_jpeg(img));
            assert_eq!(img.get(2..4), Some(&[0xFF, 0xFE][..]));
        }
        assert_eq!(
            split_http_url("http://127.0.0.1:8080/api/v1/snapshots/upload/x"),
            Some(("127.0.0.1:8080", "/api/v1/snapshots/upload/x"))
        );
        assert_eq!(split_http_url("ftp://x/y"), None);
        assert_eq!(split_http_url("http://host/y"), None);
    }
}
