//! The simulated GB28181 camera against a fake platform written here with
//! hand-made SIP text over a real UDP socket: registration with digest auth,
//! keepalive, a Catalog query, INVITE → PS over RTP (checked by ffprobe),
//! BYE, and the dead-device and wrong-password variants.
//!
//! The platform side parses nothing with camgate code, so a bug shared by
//! the simulator's SIP and a parser here cannot hide itself.

use std::net::SocketAddr;
use std::process::Command;
use std::time::Duration;

use camgate::sim::{SimCameraConfig, spawn};
use md5::{Digest as _, Md5};
use tokio::net::UdpSocket;
use tokio::time::{Instant, timeout};
use tokio_util::sync::CancellationToken;

const DEVICE: &str = "34020000001320000001";
const CHANNEL: &str = "34020000001310000001";
const SERVER_ID: &str = "34020000002000000001";
const REALM: &str = "3402000000";
const NONCE: &str = "9485904448344456af5449b51759016e";

/// One SIP message as the fake platform sees it.
#[derive(Debug, Clone)]
struct Msg {
    text: String,
    from: SocketAddr,
}

impl Msg {
    fn first_line(&self) -> &str {
        self.text.lines().next().unwrap_or("")
    }

    fn is_request(&self, method: &str) -> bool {
        self.first_line().starts_with(&format!("{method} "))
    }

    fn status(&self) -> Option<u16> {
        self.first_line()
            .strip_prefix("SIP/2.0 ")?
            .get(..3)?
            .parse()
            .ok()
    }

    fn header(&self, name: &str) -> Option<&str> {
        let head = self.text.split("\r\n\r\n").next()?;
        head.lines().skip(1).find_map(|l| {
            let (n, v) = l.split_once(':')?;
            n.trim().eq_ignore_ascii_case(name).then(|| v.trim())
        })
    }

    fn body(&self) -> &str {
        self.text.split_once("\r\n\r\n").map_or("", |(_, b)| b)
    }

    /// Our response to this request; the To tag is added if missing.
    fn reply(&self, status: &str, extra: &str) -> String {
        let to = self.header("To").unwrap();
        let to = if to.contains("tag=") {
            to.to_owned()
        } else {
            format!("{to};tag=platform")
        };
        format!(
            "SIP/2.0 {status}\r\nVia: {}\r\nFrom: {}\r\nTo: {to}\r\nCall-ID: {}\r\nCSeq: {}\r\nUser-Agent: fake-platform\r\n{extra}Content-Length: 0\r\n\r\n",
            self.header("Via").unwrap(),
            self.header("From").unwrap(),
            self.header("Call-ID").unwrap(),
            self.header("CSeq").unwrap(),
        )
    }
}

struct Platform {
    sock: UdpSocket,
    addr: SocketAddr,
    camera: Option<SocketAddr>,
    cseq: u32,
}

impl Platform {
    async fn new() -> Self {
        let sock = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let addr = sock.local_addr().unwrap();
        Self {
            sock,
            addr,
            camera: None,
            cseq: 20,
        }
    }

    async fn recv(&mut self, within: Duration) -> Option<Msg> {
        let mut buf = vec![0u8; 65_536];
        let (n, from) = timeout(within, self.sock.recv_from(&mut buf))
            .await
            .ok()?
            .unwrap();
        self.camera = Some(from);
        Some(Msg {
            text: String::from_utf8_lossy(&buf[..n]).into_owned(),
            from,
        })
    }

    /// Next message matching `pred`; keepalives met on the way get a 200.
    async fn expect(&mut self, what: &str, pred: impl Fn(&Msg) -> bool) -> Msg {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let Some(m) = self.recv(left).await else {
                panic!("timed out waiting for {what}");
            };
            if pred(&m) {
                return m;
            }
            if m.is_request("MESSAGE") && m.body().contains("Keepalive") {
                self.send_to(&m.reply("200 OK", ""), m.from).await;
            }
        }
    }

    async fn send_to(&self, text: &str, to: SocketAddr) {
        self.sock.send_to(text.as_bytes(), to).await.unwrap();
    }

    async fn send(&self, text: &str) {
        self.send_to(text, self.camera.expect("camera address known"))
            .await;
    }

    /// A request from the platform to the camera.
    fn request(
        &mut self,
        method: &str,
        target: &str,
        call_id: &str,
        extra: &str,
        body: &str,
    ) -> String {
        self.cseq += 1;
        let camera = self.camera.unwrap();
        format!(
            "{method} sip:{target}@{camera} SIP/2.0\r\n\
             Via: SIP/2.0/UDP {me};rport;branch=z9hG4bK-{method}-{call_id}-{cseq}\r\n\
             From: <sip:{SERVER_ID}@{REALM}>;tag=plat{call_id}\r\n\
             To: <sip:{target}@{REALM}>{extra}\r\n\
             Call-ID: {call_id}\r\n\
             CSeq: {cseq} {method}\r\n\
             Contact: <sip:{SERVER_ID}@{me}>\r\n\
             Max-Forwards: 70\r\n\
             User-Agent: fake-platform\r\n\
             Content-Length: {len}\r\n\r\n{body}",
            me = self.addr,
            cseq = self.cseq,
            len = body.len(),
        )
    }

    /// Answer REGISTERs (challenge first) until one is accepted.
    async fn accept_registration(&mut self, password: &str) -> Msg {
        let reg = self.expect("REGISTER", |m| m.is_request("REGISTER")).await;
        assert!(reg.header("Authorization").is_none());
        assert_eq!(reg.header("Expires"), Some("3600"));
        assert!(
            reg.first_line()
                .starts_with(&format!("REGISTER sip:{SERVER_ID}@{REALM} "))
        );
        self.send(&reg.reply(
            "401 Unauthorized",
            &format!("WWW-Authenticate: Digest realm=\"{REALM}\", nonce=\"{NONCE}\"\r\n"),
        ))
        .await;
        let reg2 = self
            .expect("authorized REGISTER", |m| {
                m.is_request("REGISTER") && m.header("Authorization").is_some()
            })
            .await;
        let auth = reg2.header("Authorization").unwrap();
        let uri = format!("sip:{SERVER_ID}@{REALM}");
        let expected = digest(DEVICE, REALM, password, "REGISTER", &uri, NONCE);
        assert!(
            auth.contains(&format!("response=\"{expected}\"")),
            "bad digest in {auth}"
        );
        assert!(auth.contains(&format!("username=\"{DEVICE}\"")), "{auth}");
        self.send(&reg2.reply("200 OK", "Expires: 3600\r\n")).await;
        reg2
    }
}

fn md5_hex(s: &str) -> String {
    Md5::digest(s.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn digest(user: &str, realm: &str, pass: &str, method: &str, uri: &str, nonce: &str) -> String {
    let ha1 = md5_hex(&format!("{user}:{realm}:{pass}"));
    let ha2 = md5_hex(&format!("{method}:{uri}"));
    md5_hex(&format!("{ha1}:{nonce}:{ha2}"))
}

fn camera_config(platform: &Platform) -> SimCameraConfig {
    let mut c = SimCameraConfig::new(platform.addr);
    c.password = Some("12345678".into());
    c
}

fn sdp_offer(rtp: SocketAddr, y: &str) -> String {
    format!(
        "v=0\r\no={CHANNEL} 0 0 IN IP4 {ip}\r\ns=Play\r\nc=IN IP4 {ip}\r\nt=0 0\r\n\
         m=video {port} RTP/AVP 96 98 97\r\na=recvonly\r\na=rtpmap:96 PS/90000\r\n\
         a=rtpmap:98 H264/90000\r\na=rtpmap:97 MPEG4/90000\r\ny={y}\r\n",
        ip = rtp.ip(),
        port = rtp.port()
    )
}

fn invite(p: &mut Platform, call_id: &str, sdp: &str) -> String {
    p.request("INVITE", CHANNEL, call_id, "", sdp).replace(
        "Max-Forwards: 70\r\n",
        &format!(
            "Max-Forwards: 70\r\nContent-Type: APPLICATION/SDP\r\nSubject: {CHANNEL}:0200000123,{SERVER_ID}:0\r\n"
        ),
    )
}

struct RtpPacket {
    marker: bool,
    pt: u8,
    seq: u16,
    ts: u32,
    ssrc: u32,
    payload: Vec<u8>,
}

fn parse_rtp(d: &[u8]) -> RtpPacket {
    assert!(d.len() > 12, "short RTP packet");
    assert_eq!(d[0] >> 6, 2, "RTP version");
    assert_eq!(d[0] & 0x3F, 0, "no padding/extension/CSRC expected");
    RtpPacket {
        marker: d[1] & 0x80 != 0,
        pt: d[1] & 0x7F,
        seq: u16::from_be_bytes([d[2], d[3]]),
        ts: u32::from_be_bytes([d[4], d[5], d[6], d[7]]),
        ssrc: u32::from_be_bytes([d[8], d[9], d[10], d[11]]),
        payload: d[12..].to_vec(),
    }
}

#[tokio::test]
async fn registers_answers_catalog_and_streams_ps_over_rtp() {
    let mut p = Platform::new().await;
    let shutdown = CancellationToken::new();
    let camera = spawn(camera_config(&p), shutdown.clone());

    // Registration: From/To are the device's AOR in the realm.
    let reg = p.accept_registration("12345678").await;
    assert!(
        reg.header("From")
            .unwrap()
            .contains(&format!("sip:{DEVICE}@{REALM}"))
    );
    assert!(
        reg.header("To")
            .unwrap()
            .contains(&format!("sip:{DEVICE}@{REALM}"))
    );

    // First keepalive straight after registration.
    let ka = p
        .expect("keepalive", |m| {
            m.is_request("MESSAGE") && m.body().contains("Keepalive")
        })
        .await;
    assert_eq!(ka.header("Content-Type"), Some("Application/MANSCDP+xml"));
    assert!(
        ka.body()
            .contains(&format!("<DeviceID>{DEVICE}</DeviceID>"))
    );
    assert!(ka.body().contains("<Status>OK</Status>"));
    p.send(&ka.reply("200 OK", "")).await;
    assert!(camera.stats.is_registered());

    // Catalog: 200 OK to our MESSAGE, then a Response MESSAGE of its own.
    let query = format!(
        "<?xml version=\"1.0\"?>\r\n<Query>\r\n<CmdType>Catalog</CmdType>\r\n<SN>1</SN>\r\n<DeviceID>{DEVICE}</DeviceID>\r\n</Query>\r\n"
    );
    let q = p
        .request("MESSAGE", DEVICE, "catalog1", "", &query)
        .replace(
            "Max-Forwards",
            "Content-Type: Application/MANSCDP+xml\r\nMax-Forwards",
        );
    p.send(&q).await;
    let ok = p
        .expect("200 to Catalog", |m| {
            m.status() == Some(200) && m.header("Call-ID") == Some("catalog1")
        })
        .await;
    assert!(ok.header("To").unwrap().contains("tag="));
    let resp = p
        .expect("Catalog Response", |m| {
            m.is_request("MESSAGE") && m.body().contains("<Response>")
        })
        .await;
    let body = resp.body();
    assert!(body.contains("<CmdType>Catalog</CmdType>"), "{body}");
    assert!(body.contains("<SN>1</SN>"), "{body}");
    assert!(
        body.contains(&format!("<DeviceID>{CHANNEL}</DeviceID>")),
        "{body}"
    );
    assert!(body.contains("<Name>Demo Camera</Name>"), "{body}");
    p.send(&resp.reply("200 OK", "")).await;

    // INVITE with a GB28181 offer pointing at our RTP socket.
    let rtp = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let rtp_addr = rtp.local_addr().unwrap();
    let inv = invite(&mut p, "call-1", &sdp_offer(rtp_addr, "0200000123"));
    p.send(&inv).await;
    let mut provisional = Vec::new();
    let ok = loop {
        let m = p
            .expect("INVITE responses", |m| {
                m.header("Call-ID") == Some("call-1")
            })
            .await;
        match m.status() {
            Some(200) => break m,
            Some(s) if s < 200 => provisional.push(s),
            other => panic!("unexpected {other:?}: {}", m.text),
        }
    };
    assert!(provisional.contains(&101), "{provisional:?}");
    assert!(ok.first_line().ends_with("200 OK"));
    let answer = ok.body();
    let media_addr = camera.stats.media_addr().unwrap();
    for line in [
        "v=0".to_owned(),
        format!("o={CHANNEL} 0 0 IN IP4 127.0.0.1"),
        "s=Play".into(),
        "c=IN IP4 127.0.0.1".into(),
        format!("m=video {} RTP/AVP 96", media_addr.port()),
        "a=sendonly".into(),
        "a=rtpmap:96 PS/90000".into(),
        "y=0200000123".into(),
    ] {
        assert!(
            answer.lines().any(|l| l == line),
            "{line} missing in\n{answer}"
        );
    }
    let to = ok.header("To").unwrap().to_owned();
    let tag = to.split("tag=").nth(1).unwrap().to_owned();
    let ack = p.request("ACK", CHANNEL, "call-1", &format!(";tag={tag}"), "");
    p.send(&ack).await;

    // Receive about three seconds of RTP.
    let mut packets = Vec::new();
    let mut buf = vec![0u8; 2048];
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(3) {
        let (n, from) = timeout(Duration::from_secs(2), rtp.recv_from(&mut buf))
            .await
            .expect("RTP flowing")
            .unwrap();
        assert_eq!(from, media_addr, "RTP from the port in the SDP answer");
        assert!(n <= 12 + 1400, "packet of {n} bytes");
        packets.push(parse_rtp(&buf[..n]));
    }
    assert!(packets.len() > 60, "only {} packets", packets.len());
    for w in packets.windows(2) {
        assert_eq!(
            w[1].seq,
            w[0].seq.wrapping_add(1),
            "seq must be consecutive"
        );
        let step = w[1].ts.wrapping_sub(w[0].ts);
        assert!(step == 0 || step == 3600, "timestamp step {step}");
        assert_eq!(step == 3600, w[0].marker, "marker closes each frame");
    }
    for pk in &packets {
        assert_eq!(pk.pt, 96);
        assert_eq!(pk.ssrc, 200_000_123);
    }
    let frames = packets.iter().filter(|p| p.marker).count();
    assert!(
        (60..=90).contains(&frames),
        "{frames} frames in 3 s at 25 fps"
    );

    // The joined payloads are a program stream ffprobe understands. The
    // capture window cut the last frame short: keep whole frames only.
    let whole = packets.iter().rposition(|p| p.marker).unwrap() + 1;
    let ps: Vec<u8> = packets[..whole]
        .iter()
        .flat_map(|p| p.payload.clone())
        .collect();
    assert_eq!(
        &ps[..4],
        &[0, 0, 1, 0xBA],
        "stream opens with a pack header"
    );
    let path = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("sim_camera.ps");
    std::fs::write(&path, &ps).unwrap();
    match Command::new("ffprobe")
        .args(["-v", "error", "-show_streams", "-of", "json"])
        .arg(&path)
        .output()
    {
        Err(_) => eprintln!("SKIPPED: ffprobe not installed"),
        Ok(out) => {
            let json = String::from_utf8_lossy(&out.stdout);
            assert!(
                out.status.success(),
                "ffprobe failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            let compact: String = json.split_whitespace().collect();
            assert!(compact.contains("\"codec_name\":\"h264\""), "{json}");
            assert!(compact.contains("\"width\":640"), "{json}");
            assert!(compact.contains("\"height\":360"), "{json}");
            assert_decodes_cleanly(&path, None);
        }
    }

    // BYE: 200 OK, and the RTP stops.
    let bye = p.request("BYE", CHANNEL, "call-1", &format!(";tag={tag}"), "");
    p.send(&bye).await;
    p.expect("200 to BYE", |m| {
        m.status() == Some(200) && m.header("CSeq").is_some_and(|c| c.ends_with("BYE"))
    })
    .await;
    // Drain what was in flight, then expect silence.
    while timeout(Duration::from_millis(200), rtp.recv_from(&mut buf))
        .await
        .is_ok()
    {}
    assert!(
        timeout(Duration::from_millis(500), rtp.recv_from(&mut buf))
            .await
            .is_err(),
        "RTP still flowing after BYE"
    );
    assert_eq!(camera.stats.invites(), 1);
    assert_eq!(camera.stats.byes(), 1);
    assert_eq!(camera.stats.active_streams(), 0);

    // Shutdown unregisters (Expires: 0) and the task ends cleanly.
    shutdown.cancel();
    let unreg = p.expect("un-REGISTER", |m| m.is_request("REGISTER")).await;
    assert_eq!(unreg.header("Expires"), Some("0"));
    p.send(&unreg.reply("200 OK", "")).await;
    timeout(Duration::from_secs(5), camera.task)
        .await
        .expect("camera stops")
        .unwrap()
        .unwrap();
}

#[tokio::test]
async fn dead_device_never_answers_invite() {
    let mut p = Platform::new().await;
    let shutdown = CancellationToken::new();
    let mut cfg = camera_config(&p);
    cfg.answer_invites = false;
    let camera = spawn(cfg, shutdown.clone());
    p.accept_registration("12345678").await;
    let rtp = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let inv = invite(
        &mut p,
        "dead-1",
        &sdp_offer(rtp.local_addr().unwrap(), "0200000001"),
    );
    // Send it three times, as a retransmitting UAC would.
    for _ in 0..3 {
        p.send(&inv).await;
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let deadline = Instant::now() + Duration::from_secs(1);
    while let Some(m) = p
        .recv(deadline.saturating_duration_since(Instant::now()))
        .await
    {
        assert_ne!(
            m.header("Call-ID"),
            Some("dead-1"),
            "dead device answered: {}",
            m.text
        );
    }
    let mut buf = [0u8; 2048];
    assert!(
        timeout(Duration::from_millis(300), rtp.recv_from(&mut buf))
            .await
            .is_err()
    );
    assert_eq!(camera.stats.invites(), 1, "retransmissions are one INVITE");
    shutdown.cancel();
    // Nobody answers the un-REGISTER here; the camera gives up in time.
    timeout(Duration::from_secs(5), camera.task)
        .await
        .expect("camera stops")
        .unwrap()
        .unwrap();
}

#[tokio::test]
async fn wrong_password_is_refused_and_retried() {
    let mut p = Platform::new().await;
    let shutdown = CancellationToken::new();
    let mut cfg = camera_config(&p);
    cfg.password = Some("not-the-password".into());
    cfg.register_retry = Duration::from_millis(300);
    let camera = spawn(cfg, shutdown.clone());
    let challenge = format!("WWW-Authenticate: Digest realm=\"{REALM}\", nonce=\"{NONCE}\"\r\n");
    let reg = p.expect("REGISTER", |m| m.is_request("REGISTER")).await;
    p.send(&reg.reply("401 Unauthorized", &challenge)).await;
    let reg2 = p
        .expect("authorized REGISTER", |m| {
            m.header("Authorization").is_some()
        })
        .await;
    let good = digest(
        DEVICE,
        REALM,
        "12345678",
        "REGISTER",
        &format!("sip:{SERVER_ID}@{REALM}"),
        NONCE,
    );
    assert!(!reg2.header("Authorization").unwrap().contains(&good));
    p.send(&reg2.reply("403 Forbidden", "")).await;
    // It tries again after register_retry.
    let again = p
        .expect("retry REGISTER", |m| m.is_request("REGISTER"))
        .await;
    assert!(again.header("CSeq").unwrap().ends_with("REGISTER"));
    assert!(!camera.stats.is_registered());
    assert!(
        camera
            .stats
            .registration_failures
            .load(std::sync::atomic::Ordering::Relaxed)
            >= 1
    );
    shutdown.cancel();
    timeout(Duration::from_secs(5), camera.task)
        .await
        .expect("camera stops")
        .unwrap()
        .unwrap();
}

/// Decode with ffmpeg: no error output, and `frames` frames when given.
fn assert_decodes_cleanly(path: &std::path::Path, frames: Option<usize>) {
    let out = Command::new("ffmpeg")
        .args(["-v", "error", "-i"])
        .arg(path)
        .args(["-f", "framemd5", "-"])
        .output()
        .expect("ffmpeg runs where ffprobe does");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && stderr.trim().is_empty(),
        "ffmpeg: {stderr}"
    );
    if let Some(n) = frames {
        let decoded = String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter(|l| !l.starts_with('#'))
            .count();
        assert_eq!(decoded, n);
    }
}

#[test]
fn whole_demo_clip_muxes_to_a_clean_program_stream() {
    use camgate::media::ps_mux::PsMuxer;
    use camgate::sim::clip::Clip;
    let clip = Clip::demo();
    let mut mux = PsMuxer::new();
    let mut ps = bytes::BytesMut::new();
    for (i, unit) in clip.units().iter().enumerate() {
        mux.write_video(&unit.nals, 3600 * i as u64, unit.keyframe, &mut ps);
    }
    let path = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("demo_clip.ps");
    std::fs::write(&path, &ps).unwrap();
    if Command::new("ffprobe").arg("-version").output().is_err() {
        eprintln!("SKIPPED: ffprobe not installed");
        return;
    }
    let out = Command::new("ffprobe")
        .args(["-v", "error", "-show_streams", "-of", "json"])
        .arg(&path)
        .output()
        .unwrap();
    let compact: String = String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .collect();
    assert!(compact.contains("\"codec_name\":\"h264\""), "{compact}");
    assert!(compact.contains("\"id\":\"0x1e0\""), "{compact}");
    assert_decodes_cleanly(&path, Some(150));
}
