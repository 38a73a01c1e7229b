//! 200 OK answers to INVITE as field devices write them (issue 16), each a
//! literal SDP: no `y=`, `a=setup` on plain RTP/AVP, and the media address
//! only in `o=`.

use std::net::IpAddr;

use super::*;

#[test]
fn answer_without_y_has_no_ssrc_but_everything_else() {
    let answer = "v=0\r\n\
        o=34010000001320000001 0 0 IN IP4 192.168.1.64\r\n\
        s=Play\r\n\
        c=IN IP4 192.168.1.64\r\n\
        t=0 0\r\n\
        m=video 15060 RTP/AVP 96\r\n\
        a=sendonly\r\n\
        a=rtpmap:96 PS/90000\r\n";
    let sdp = GbSdp::parse(answer).unwrap();
    assert_eq!(sdp.ssrc_value(), None);
    let video = sdp.video().unwrap();
    assert_eq!(video.port, 15060);
    assert_eq!(video.payload("PS").map(|p| p.pt), Some(96));
    assert_eq!(
        sdp.connection_addr(),
        Some("192.168.1.64".parse::<IpAddr>().unwrap())
    );
}

#[test]
fn answer_with_setup_on_udp_stays_udp() {
    // Old eXosip firmware copies `a=setup` into every answer, TCP or not.
    let answer = "v=0\n\
        o=34010000001320000001 0 0 IN IP4 10.1.2.3\n\
        s=Play\n\
        c=IN IP4 10.1.2.3\n\
        t=0 0\n\
        m=video 6000 RTP/AVP 96\n\
        a=setup:active\n\
        a=connection:new\n\
        a=rtpmap:96 PS/90000\n\
        y=0100000001\n";
    let sdp = GbSdp::parse(answer).unwrap();
    let video = sdp.video().unwrap();
    assert_eq!(video.transport, Transport::RtpAvp);
    assert_eq!(video.setup, Some(Setup::Active));
    assert_eq!(video.port, 6000);
    assert_eq!(sdp.ssrc_value(), Some(100_000_001));
}

#[test]
fn media_address_only_in_origin() {
    let answer = "v=0\r\n\
        o=34010000001320000001 0 0 IN IP4 172.16.5.9\r\n\
        s=Play\r\n\
        t=0 0\r\n\
        m=video 20000 RTP/AVP 96\r\n\
        a=rtpmap:96 PS/90000\r\n\
        y=0100000002\r\n";
    let sdp = GbSdp::parse(answer).unwrap();
    assert_eq!(
        sdp.connection_addr(),
        Some("172.16.5.9".parse::<IpAddr>().unwrap())
    );
    assert_eq!(sdp.video().unwrap().connection_ip, None);
    assert_eq!(sdp.ssrc_value(), Some(100_000_002));
    // Neither c= nor an address in o=: still refused, naming c.
    let none = answer.replace("IN IP4 172.16.5.9", "IN IP4 -");
    assert!(matches!(GbSdp::parse(&none), Err(SdpError::Missing("c"))));
}
