#![no_main]
//! The cascade client's input from an upper platform: any datagram into
//! the registration core (after it has sent its first REGISTER), and the
//! MANSCDP query, DeviceControl, RecordInfo, SDP offer (with a recording's
//! `t=`) and MANSRTSP INFO readers on the same bytes (and the PTZ word
//! decoder on them as text). Nothing may panic, and the core must keep a
//! deadline while it is running.
use std::time::{Duration, Instant};

use camgate::cascade::answers::parse_query;
use camgate::cascade::control::{parse_control, ptz_word};
use camgate::cascade::media::parse_offer;
use camgate::cascade::records::parse_record_query;
use camgate::cascade::playback::{parse_info, range_of_t};
use camgate::cascade::register::{ClientParams, Phase, RegisterClient};
use camgate::cascade::wire::Transport;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let params = ClientParams {
        server_id: "34020000002000000001".into(),
        realm: "3402000000".into(),
        platform_id: "34020000002000000002".into(),
        password: "pw".into(),
        expires: Duration::from_secs(60),
        keepalive_interval: Duration::from_secs(10),
        keepalive_misses: 3,
        local: "127.0.0.1:5070".parse().unwrap(),
        // Both transports: over TCP nothing is retransmitted.
        transport: if data.len() % 2 == 1 {
            Transport::Tcp
        } else {
            Transport::Udp
        },
    };
    let upper = "127.0.0.1:5060".parse().unwrap();
    let now = Instant::now();
    let mut client = RegisterClient::new(params, upper, 1);
    client.start(now);
    while client.poll_transmit().is_some() {}
    client.handle_datagram(data, upper, now);
    while client.poll_event().is_some() {}
    if client.phase() != Phase::Stopped {
        assert!(client.poll_timeout().is_some());
    }
    let _ = parse_query(data);
    let _ = parse_control(data);
    let _ = parse_record_query(data);
    let _ = ptz_word(&String::from_utf8_lossy(data));
    let text = String::from_utf8_lossy(data);
    let _ = parse_offer(&text);
    let _ = range_of_t(&text);
    let _ = parse_info(Some("Application/MANSRTSP"), data);
});
