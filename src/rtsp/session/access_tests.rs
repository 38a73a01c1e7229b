//! Access control, trick play and client RTCP on the sans-IO connection.

use super::*;
use crate::media::frame::{Codec, VideoParams};
use crate::rtsp::auth::{AuthConfig, AuthMode, AuthUser, PathRule};
use crate::rtsp::tokens::TokenStore;
use md5::{Digest as _, Md5};

const BASE: &str = "rtsp://127.0.0.1:8554/gb/dev/ch";

fn info() -> StreamInfo {
    StreamInfo {
        audio_decided_by: None,
        video: Some((
            Codec::H264,
            VideoParams {
                width: 640,
                height: 360,
                vps: None,
                sps: Some(Bytes::from_static(&[0x67, 0x4d, 0x40, 0x1e, 0xab])),
                pps: Some(Bytes::from_static(&[0x68, 0xee, 0x3c, 0x80])),
            },
        )),
        audio: None,
    }
}

fn conn(auth: Option<Arc<Authenticator>>) -> Connection {
    Connection::new(
        SessionConfig {
            auth,
            ..SessionConfig::default()
        },
        "127.0.0.1".parse().unwrap(),
        9,
        Instant::now(),
    )
}

fn authenticator(mode: AuthMode, tokens: Arc<TokenStore>) -> Arc<Authenticator> {
    Arc::new(Authenticator::new(
        AuthConfig {
            mode,
            users: vec![AuthUser {
                name: "admin".into(),
                password: "secret".into(),
            }],
            paths: vec![PathRule {
                prefix: "gb/off".into(),
                mode: AuthMode::Disabled,
            }],
            ..AuthConfig::default()
        },
        tokens,
    ))
}

/// Everything queued for the socket, as text.
fn sent(c: &mut Connection) -> String {
    let mut out = Vec::new();
    c.take_transmits(&mut out);
    out.iter()
        .map(|t| String::from_utf8_lossy(&t.payload.to_vec()).into_owned())
        .collect()
}

fn events(c: &mut Connection) -> Vec<Event> {
    std::iter::from_fn(|| c.poll_event()).collect()
}

fn md5_hex(s: &str) -> String {
    Md5::digest(s.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[test]
fn digest_challenge_then_answer() {
    let mut c = conn(Some(authenticator(
        AuthMode::Digest,
        Arc::new(TokenStore::new(Duration::from_secs(60))),
    )));
    c.receive(
        format!("DESCRIBE {BASE} RTSP/1.0\r\nCSeq: 1\r\n\r\n").as_bytes(),
        Instant::now(),
    );
    let resp = sent(&mut c);
    assert!(resp.starts_with("RTSP/1.0 401 Unauthorized\r\n"), "{resp}");
    let challenges: Vec<&str> = resp
        .lines()
        .filter_map(|l| l.strip_prefix("WWW-Authenticate: "))
        .collect();
    assert_eq!(challenges.len(), 2, "{resp}");
    assert!(challenges[0].contains("algorithm=SHA-256"));
    assert!(challenges[1].contains("algorithm=MD5"));
    assert!(resp.ends_with("\r\n\r\n") && resp.contains("CSeq: 1\r\n"));
    assert!(events(&mut c).is_empty(), "no stream opened before auth");
    let nonce = challenges[1]
        .split("nonce=\"")
        .nth(1)
        .and_then(|s| s.split('"').next())
        .unwrap()
        .to_owned();

    // RFC 2069 form, as GStreamer and older ffmpeg send it.
    let wrong = md5_hex(&format!(
        "{}:{nonce}:{}",
        md5_hex("admin:camgate:nope"),
        md5_hex(&format!("DESCRIBE:{BASE}"))
    ));
    let auth = |response: &str| {
        format!(
            "DESCRIBE {BASE} RTSP/1.0\r\nCSeq: 2\r\nAuthorization: Digest username=\"admin\", realm=\"camgate\", nonce=\"{nonce}\", uri=\"{BASE}\", response=\"{response}\"\r\n\r\n"
        )
    };
    c.receive(auth(&wrong).as_bytes(), Instant::now());
    assert!(sent(&mut c).starts_with("RTSP/1.0 401 "));
    let right = md5_hex(&format!(
        "{}:{nonce}:{}",
        md5_hex("admin:camgate:secret"),
        md5_hex(&format!("DESCRIBE:{BASE}"))
    ));
    c.receive(auth(&right).as_bytes(), Instant::now());
    assert!(matches!(events(&mut c)[..], [Event::OpenStream(_)]));
    c.stream_opened(Ok(info()), Instant::now());
    assert!(sent(&mut c).starts_with("RTSP/1.0 200 OK"));
    // Later requests on this connection need no credentials again.
    c.receive(
        format!(
            "SETUP {BASE}/trackID=0 RTSP/1.0\r\nCSeq: 3\r\nTransport: RTP/AVP/TCP;interleaved=0-1\r\n\r\n"
        )
        .as_bytes(),
        Instant::now(),
    );
    assert!(sent(&mut c).starts_with("RTSP/1.0 200 OK"));
}

#[test]
fn disabled_stream_is_403_and_tokens_work_once() {
    let tokens = Arc::new(TokenStore::new(Duration::from_secs(60)));
    let auth = authenticator(AuthMode::Token, tokens.clone());
    let mut c = conn(Some(auth.clone()));
    c.receive(
        b"DESCRIBE rtsp://h/gb/off/1 RTSP/1.0\r\nCSeq: 1\r\n\r\n",
        Instant::now(),
    );
    assert!(sent(&mut c).starts_with("RTSP/1.0 403 Forbidden\r\n"));

    let key = StreamKey::from_path("gb/dev/ch").unwrap();
    let token = tokens.mint(key, "t1".into(), Instant::now()).unwrap();
    let describe = format!("DESCRIBE {BASE}?hashtoken={token} RTSP/1.0\r\nCSeq: 2\r\n\r\n");
    c.receive(describe.as_bytes(), Instant::now());
    assert!(matches!(events(&mut c)[..], [Event::OpenStream(_)]));

    let mut again = conn(Some(auth));
    again.receive(describe.as_bytes(), Instant::now());
    let resp = sent(&mut again);
    assert!(resp.starts_with("RTSP/1.0 401 "), "{resp}");
    assert!(resp.contains("WWW-Authenticate: HashToken"), "{resp}");
}

/// SETUP and PLAY over TCP on a stream that is (or is not) a playback.
fn set_up(playback: bool) -> (Connection, String) {
    let mut c = conn(None);
    c.set_playback(playback);
    c.receive(
        format!(
            "SETUP {BASE}/trackID=0 RTSP/1.0\r\nCSeq: 1\r\nTransport: RTP/AVP/TCP;interleaved=0-1\r\n\r\n"
        )
        .as_bytes(),
        Instant::now(),
    );
    events(&mut c);
    c.stream_opened(Ok(info()), Instant::now());
    let resp = sent(&mut c);
    let id = resp
        .lines()
        .find_map(|l| l.strip_prefix("Session: "))
        .and_then(|s| s.split(';').next())
        .unwrap()
        .to_owned();
    events(&mut c);
    (c, id)
}

#[test]
fn playback_trick_play_reaches_the_control() {
    let (mut c, id) = set_up(true);
    c.receive(
        format!("PLAY {BASE} RTSP/1.0\r\nCSeq: 2\r\nSession: {id}\r\nRange: npt=00:01:10.5-\r\nScale: 2.0\r\n\r\n").as_bytes(),
        Instant::now(),
    );
    let resp = sent(&mut c);
    assert!(
        resp.starts_with("RTSP/1.0 200 OK") && resp.contains("Scale: 2\r\n"),
        "{resp}"
    );
    // MANSRTSP seeks whole seconds; the length is unknown here.
    assert!(resp.contains("Range: npt=70.000-\r\n"), "{resp}");
    assert_eq!(
        events(&mut c),
        [
            // Flushed before the device is told, so nothing it sends from
            // the new place can be flushed away.
            Event::Flush,
            Event::Playback(PlaybackCommand::Seek(70.0)),
            Event::Playback(PlaybackCommand::Scale(2.0)),
            Event::StartMedia,
        ]
    );
    c.receive(
        format!("PAUSE {BASE} RTSP/1.0\r\nCSeq: 3\r\nSession: {id}\r\n\r\n").as_bytes(),
        Instant::now(),
    );
    assert_eq!(
        events(&mut c),
        [Event::HoldMedia, Event::Playback(PlaybackCommand::Pause)]
    );
    c.receive(
        format!("PLAY {BASE} RTSP/1.0\r\nCSeq: 4\r\nSession: {id}\r\n\r\n").as_bytes(),
        Instant::now(),
    );
    assert_eq!(
        events(&mut c),
        [Event::Playback(PlaybackCommand::Resume), Event::StartMedia]
    );
}

#[test]
fn live_stream_refuses_scale_but_ignores_range() {
    let (mut c, id) = set_up(false);
    c.receive(
        format!("PLAY {BASE} RTSP/1.0\r\nCSeq: 2\r\nSession: {id}\r\nScale: 4\r\n\r\n").as_bytes(),
        Instant::now(),
    );
    assert!(sent(&mut c).starts_with("RTSP/1.0 456 Header Field Not Valid for Resource"));
    assert!(events(&mut c).is_empty());
    c.receive(
        format!(
            "PLAY {BASE} RTSP/1.0\r\nCSeq: 3\r\nSession: {id}\r\nScale: 1\r\nRange: npt=5-\r\n\r\n"
        )
        .as_bytes(),
        Instant::now(),
    );
    assert!(sent(&mut c).starts_with("RTSP/1.0 200 OK"));
    assert_eq!(events(&mut c), [Event::StartMedia]);
}

#[test]
fn receiver_report_loss_is_counted_once() {
    let (mut c, id) = set_up(false);
    c.receive(
        format!("PLAY {BASE} RTSP/1.0\r\nCSeq: 2\r\nSession: {id}\r\n\r\n").as_bytes(),
        Instant::now(),
    );
    let ssrc = c.session.as_ref().unwrap().tracks[0].rtp.ssrc.to_be_bytes();
    let rr = |lost: u8| {
        let mut p = vec![b'$', 1, 0, 32, 0x81, 201, 0, 7, 0, 0, 0, 1];
        p.extend_from_slice(&ssrc);
        p.extend_from_slice(&[10, 0, 0, lost]);
        p.extend_from_slice(&[0; 16]);
        p
    };
    let lost = || metrics::get().rtsp_client_packets_lost.get();
    let before = lost();
    c.receive(&rr(5), Instant::now());
    c.receive(&rr(5), Instant::now());
    c.receive(&rr(7), Instant::now());
    // Other tests run in parallel but never report loss for this SSRC.
    assert!(lost() - before >= 7, "{} lost counted", lost() - before);
    assert_eq!(c.session.as_ref().unwrap().tracks[0].reported_lost, 7);
}
