#![no_main]
//! The FA F5 link decoder and the XML bodies on arbitrary byte streams: the
//! input is fed in pieces whose sizes come from the first byte, and each
//! packet that survives the digest is decoded as the body its CMD names.
//! Fuzz with `-max_len=70000` to reach bodies near the 65,535-byte limit.
use camgate::ctel::frame::{FrameDecoder, MAX_BODY, encode};
use camgate::ctel::messages::{self as m, cmd, from_xml};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&step, stream)) = data.split_first() else {
        return;
    };
    // An odd first byte wraps the rest in a valid frame (CMD first), so the
    // XML decoders are reached; random bytes almost never pass the digest.
    let wrapped;
    let stream = match stream.split_first() {
        Some((&c, body)) if step & 1 == 1 => {
            let Ok(framed) = encode(c, 1, body) else { return };
            wrapped = framed;
            &wrapped[..]
        }
        _ => stream,
    };
    let step = usize::from(step >> 1).max(1);
    let mut decoder = FrameDecoder::new(MAX_BODY);
    for piece in stream.chunks(step) {
        decoder.push(piece);
        loop {
            match decoder.next_packet() {
                Ok(Some(p)) => {
                    let text = p.body_str();
                    let _ = match p.cmd {
                        cmd::LOGIN => from_xml::<m::LoginReq>(text).map(drop),
                        cmd::ABILITY_UP => from_xml::<m::AbilityUpReq>(text).map(drop),
                        cmd::HEARTBEAT => from_xml::<m::HeartbeatReq>(text).map(drop),
                        cmd::EXCEPTION => from_xml::<m::ExceptionNotifyReq>(text).map(drop),
                        cmd::VIDEO_PLAY => from_xml::<m::VideoPlayReq>(text).map(drop),
                        cmd::RECORD_PLAY => from_xml::<m::RecordPlayReq>(text).map(drop),
                        cmd::FILE_QUERY => from_xml::<m::FileQueryRes>(text).map(drop),
                        cmd::GET_CHANNEL => from_xml::<m::GetChannelRes>(text).map(drop),
                        _ => from_xml::<m::VideoPtzRes>(text).map(drop),
                    };
                    // What decodes must re-encode to the same packet.
                    let again = encode(p.cmd, p.seq, &p.body).expect("decoded body fits LEN");
                    let mut d2 = FrameDecoder::new(MAX_BODY);
                    d2.push(&again);
                    assert_eq!(d2.next_packet(), Ok(Some(p)));
                }
                Ok(None) => break,
                Err(_) => return,
            }
        }
    }
});
