#![no_main]
//! RTP parsing and the RTP→PS receive path on arbitrary datagrams.
use bytes::Bytes;
use camgate::media::ps::PsEvent;
use camgate::media::rtp::{RtpPacket, is_rtcp, peek_ssrc};
use camgate::media::rtp_ps::RtpPsReceiver;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = is_rtcp(data);
    let _ = peek_ssrc(data);
    let _ = RtpPacket::parse(Bytes::copy_from_slice(data));
    // The input as a sequence of length-prefixed datagrams (RFC 4571 style).
    let mut rx = RtpPsReceiver::new();
    let mut out: Vec<PsEvent> = Vec::new();
    let mut rest = data;
    while let [hi, lo, tail @ ..] = rest {
        let n = usize::from(u16::from_be_bytes([*hi, *lo])).min(tail.len());
        let _ = rx.push_datagram(Bytes::copy_from_slice(&tail[..n]), &mut out);
        out.clear();
        rest = &tail[n..];
    }
    rx.flush(&mut out);
});
