//! Vectors written by hand from the protocol tables (header layout, then
//! each body field in order), not produced by our encoder.

use super::*;

/// A header as the document lays it out; `reserved_tail` is what the last
/// four bytes hold (0 per the document, the length for some clients).
fn header(magic: &[u8; 4], opcode: u16, len: u32, reserved_tail: u32) -> Vec<u8> {
    let mut h = magic.to_vec();
    h.extend_from_slice(&opcode.to_le_bytes());
    h.push(0);
    h.extend_from_slice(&[0; 8]);
    h.extend_from_slice(&len.to_le_bytes());
    h.extend_from_slice(&reserved_tail.to_le_bytes());
    assert_eq!(h.len(), HEADER_LEN);
    h
}

fn decode_one(channel: Channel, bytes: &[u8]) -> RawFrame {
    let mut buf = BytesMut::from(bytes);
    let frame = FrameDecoder::new(channel)
        .decode(&mut buf)
        .expect("complete frame")
        .expect("valid frame");
    assert!(buf.is_empty(), "frame consumed exactly");
    frame
}

#[test]
fn login_response_vector() {
    let mut wire = header(b"MO_O", 1, 27, 0);
    wire.extend_from_slice(&[0x00, 0x00]); // result 0
    wire.extend_from_slice(b"00626E4F1A2B\0"); // camera id, 13 bytes
    wire.extend_from_slice(&[0; 8]); // two reserved u32
    wire.extend_from_slice(&[11, 37, 2, 49]); // firmware 11.37.2.49
    let frame = decode_one(Channel::Operation, &wire);
    assert_eq!(frame.opcode, 1);
    let msg = OpMessage::parse(&frame).unwrap();
    assert_eq!(
        msg,
        OpMessage::LoginResp {
            result: 0,
            ident: Some(CameraIdent {
                camera_id: "00626E4F1A2B".into(),
                firmware: [11, 37, 2, 49],
            }),
        }
    );
    // Our encoder repeats the length in the last reserved word.
    let mut out = BytesMut::new();
    msg.encode(&mut out);
    let mut expected = wire.clone();
    expected[19..23].copy_from_slice(&27u32.to_le_bytes());
    assert_eq!(&out[..], &expected[..]);
}

#[test]
fn login_refused_has_no_ident() {
    let mut wire = header(b"MO_O", 1, 2, 0);
    wire.extend_from_slice(&[0x02, 0x00]);
    let msg = OpMessage::parse(&decode_one(Channel::Operation, &wire)).unwrap();
    assert_eq!(
        msg,
        OpMessage::LoginResp {
            result: LOGIN_TOO_MANY,
            ident: None
        }
    );
}

#[test]
fn verify_request_and_response_vectors() {
    let mut wire = header(b"MO_O", 2, 26, 26);
    wire.extend_from_slice(b"admin\0\0\0\0\0\0\0\0");
    wire.extend_from_slice(b"secret\0\0\0\0\0\0\0");
    let req = OpMessage::VerifyReq {
        user: "admin".into(),
        password: "secret".into(),
    };
    let mut out = BytesMut::new();
    req.encode(&mut out);
    assert_eq!(&out[..], &wire[..]);
    assert_eq!(
        OpMessage::parse(&decode_one(Channel::Operation, &wire)).unwrap(),
        req
    );

    let mut resp = header(b"MO_O", 3, 3, 0);
    resp.extend_from_slice(&[0x05, 0x00, 0x00]); // result 5 = wrong password
    assert_eq!(
        OpMessage::parse(&decode_one(Channel::Operation, &resp)).unwrap(),
        OpMessage::VerifyResp {
            result: VERIFY_WRONG_PASSWORD
        }
    );
}

#[test]
fn video_start_response_carries_the_connection_id() {
    let mut wire = header(b"MO_O", 5, 6, 0);
    wire.extend_from_slice(&[0x00, 0x00]);
    wire.extend_from_slice(&[0x78, 0x56, 0x34, 0x12]);
    assert_eq!(
        OpMessage::parse(&decode_one(Channel::Operation, &wire)).unwrap(),
        OpMessage::VideoStartResp {
            result: 0,
            connection_id: Some(0x1234_5678)
        }
    );
    // The media connection logs in with exactly that id.
    let mut login = header(b"MO_V", 0, 4, 4);
    login.extend_from_slice(&[0x78, 0x56, 0x34, 0x12]);
    let mut out = BytesMut::new();
    MediaMessage::LoginReq {
        connection_id: 0x1234_5678,
    }
    .encode(&mut out);
    assert_eq!(&out[..], &login[..]);
}

#[test]
fn video_data_vector_slices_the_jpeg() {
    let jpeg = [0xff, 0xd8, 0xff, 0xe0, 0x00, 0x10, 0xff, 0xd9];
    let mut wire = header(b"MO_V", 1, 13 + jpeg.len() as u32, 0);
    wire.extend_from_slice(&1234u32.to_le_bytes()); // 12.34 s
    wire.extend_from_slice(&1_700_000_000u32.to_le_bytes());
    wire.push(0);
    wire.extend_from_slice(&(jpeg.len() as u32).to_le_bytes());
    wire.extend_from_slice(&jpeg);
    let frame = decode_one(Channel::Media, &wire);
    match MediaMessage::parse(&frame).unwrap() {
        MediaMessage::VideoData {
            timestamp,
            capture_time,
            jpeg: j,
        } => {
            assert_eq!((timestamp, capture_time), (1234, 1_700_000_000));
            assert_eq!(&j[..], &jpeg[..]);
            // Shared with the frame body, not copied.
            let body_start = frame.body.as_ptr() as usize;
            assert_eq!(j.as_ptr() as usize, body_start + 13);
        }
        other => panic!("unexpected {other:?}"),
    }
}

#[test]
fn audio_data_vector() {
    let mut wire = header(b"MO_V", 2, 17 + 160, 0);
    wire.extend_from_slice(&500u32.to_le_bytes());
    wire.extend_from_slice(&7u32.to_le_bytes());
    wire.extend_from_slice(&1_700_000_005u32.to_le_bytes());
    wire.push(0); // ADPCM
    wire.extend_from_slice(&160u32.to_le_bytes());
    wire.extend((0..160u32).map(|i| i as u8));
    let msg = MediaMessage::parse(&decode_one(Channel::Media, &wire)).unwrap();
    let MediaMessage::AudioData {
        timestamp,
        sequence,
        capture_time,
        format,
        ref data,
    } = msg
    else {
        panic!("not audio: {msg:?}");
    };
    assert_eq!(
        (timestamp, sequence, capture_time, format, data.len()),
        (500, 7, 1_700_000_005, 0, 160)
    );
    assert_eq!(data[159], 159);
    let mut out = BytesMut::new();
    msg.encode(&mut out);
    assert_eq!(&out[HEADER_LEN..], &wire[HEADER_LEN..]);
}

#[test]
fn alarm_and_ptz_vectors() {
    let mut wire = header(b"MO_O", 25, 9, 0);
    wire.push(1);
    for v in [10i16, 20, 30, -1] {
        wire.extend_from_slice(&v.to_le_bytes());
    }
    assert_eq!(
        OpMessage::parse(&decode_one(Channel::Operation, &wire)).unwrap(),
        OpMessage::AlarmNotify {
            kind: AlarmKind::Motion,
            area: [10, 20, 30, -1]
        }
    );
    let mut ptz = header(b"MO_O", 14, 1, 1);
    ptz.push(25);
    let mut out = BytesMut::new();
    OpMessage::DecoderControl { command: 25 }.encode(&mut out);
    assert_eq!(&out[..], &ptz[..]);
}

#[test]
fn resyncs_after_garbage_and_split_reads() {
    let mut ka = BytesMut::new();
    OpMessage::KeepAlive.encode(&mut ka);
    let mut stream = b"junkMO".to_vec();
    stream.extend_from_slice(&ka);
    stream.extend_from_slice(&ka);
    let mut dec = FrameDecoder::new(Channel::Operation);
    let mut buf = BytesMut::new();
    let mut frames = 0;
    let mut garbage = 0;
    // Feed one byte at a time: every split point must work.
    for b in stream {
        buf.put_u8(b);
        while let Some(r) = dec.decode(&mut buf) {
            match r {
                Ok(f) => {
                    assert_eq!(f.opcode, op::KEEP_ALIVE);
                    frames += 1;
                }
                Err(ProtoError::Garbage { skipped }) => garbage += skipped,
                Err(e) => panic!("{e}"),
            }
        }
    }
    assert_eq!((frames, garbage), (2, 6));
}

#[test]
fn oversized_and_truncated_bodies_are_typed_errors() {
    let mut buf = BytesMut::from(&header(b"MO_O", 5, 1_000_000, 0)[..]);
    let err = FrameDecoder::new(Channel::Operation)
        .decode(&mut buf)
        .unwrap()
        .unwrap_err();
    assert_eq!(err.kind(), "too_large");

    let mut wire = header(b"MO_V", 1, 13, 0);
    wire.extend_from_slice(&[0; 9]);
    wire.extend_from_slice(&500u32.to_le_bytes()); // claims 500 bytes, has 0
    let frame = decode_one(Channel::Media, &wire);
    assert_eq!(
        MediaMessage::parse(&frame).unwrap_err(),
        ProtoError::BadInnerLength {
            opcode: 1,
            inner: 500,
            available: 0
        }
    );
    let short = header(b"MO_O", 3, 0, 0);
    let frame = decode_one(Channel::Operation, &short);
    assert_eq!(OpMessage::parse(&frame).unwrap_err().kind(), "truncated");
}
