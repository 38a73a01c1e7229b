//! A bare RTSP/1.0 client over TCP for tests that check replies header by
//! header: DESCRIBE, SETUP interleaved, PLAY with Range/Scale, PAUSE; the
//! interleaved media in between is skipped.

use std::io::{Read, Write};
use std::time::Duration;

pub struct RawRtsp {
    stream: std::net::TcpStream,
    cseq: u32,
    session: Option<String>,
}

/// One reply: status code, header block, body.
pub struct Reply {
    pub status: u16,
    pub head: String,
    pub body: String,
}

/// The value of header `name` (case-insensitive) in a header block.
pub fn header<'a>(head: &'a str, name: &str) -> Option<&'a str> {
    head.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.eq_ignore_ascii_case(name).then(|| v.trim())
    })
}

impl RawRtsp {
    pub fn connect(port: u16) -> Self {
        let stream = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(15)))
            .unwrap();
        Self {
            stream,
            cseq: 0,
            session: None,
        }
    }

    /// How long a read (a reply, or [`RawRtsp::packet`]) may wait.
    pub fn set_read_timeout(&mut self, limit: Duration) {
        self.stream.set_read_timeout(Some(limit)).unwrap();
    }

    /// The connection itself, for reading the media after PLAY.
    pub fn into_stream(self) -> std::net::TcpStream {
        self.stream
    }

    /// Send a request (with the session once there is one) and read its
    /// reply.
    pub fn request(&mut self, method: &str, url: &str, headers: &[&str]) -> Reply {
        self.cseq += 1;
        let mut req = format!("{method} {url} RTSP/1.0\r\nCSeq: {}\r\n", self.cseq);
        if let Some(s) = &self.session {
            req += &format!("Session: {s}\r\n");
        }
        for h in headers {
            req += h;
            req += "\r\n";
        }
        req += "\r\n";
        self.stream.write_all(req.as_bytes()).unwrap();
        let mut byte = [0u8; 1];
        loop {
            self.stream.read_exact(&mut byte).unwrap();
            if byte[0] == b'$' {
                // Interleaved frame: channel, 16-bit length, payload.
                let mut head = [0u8; 3];
                self.stream.read_exact(&mut head).unwrap();
                let mut skip = vec![0u8; usize::from(u16::from_be_bytes([head[1], head[2]]))];
                self.stream.read_exact(&mut skip).unwrap();
                continue;
            }
            let mut text = vec![byte[0]];
            while !text.ends_with(b"\r\n\r\n") {
                self.stream.read_exact(&mut byte).unwrap();
                text.push(byte[0]);
            }
            let head = String::from_utf8_lossy(&text).into_owned();
            let length = header(&head, "Content-Length").map_or(0, |v| v.parse().unwrap_or(0));
            let mut body = vec![0u8; length];
            self.stream.read_exact(&mut body).unwrap();
            if let Some(s) = header(&head, "Session") {
                self.session = Some(s.split(';').next().unwrap_or("").to_owned());
            }
            let status = head
                .split(' ')
                .nth(1)
                .and_then(|c| c.parse().ok())
                .unwrap_or(0);
            return Reply {
                status,
                head,
                body: String::from_utf8_lossy(&body).into_owned(),
            };
        }
    }

    /// The next interleaved packet (channel, payload), skipping nothing
    /// else: call after PLAY. `None` when the server closed or went quiet.
    pub fn packet(&mut self) -> Option<(u8, Vec<u8>)> {
        let mut head = [0u8; 4];
        self.stream.read_exact(&mut head).ok()?;
        if head[0] != b'$' {
            return None;
        }
        let mut payload = vec![0u8; usize::from(u16::from_be_bytes([head[2], head[3]]))];
        self.stream.read_exact(&mut payload).ok()?;
        Some((head[1], payload))
    }
}
