//! One live view or recording an upper platform asked for: the stream opened through
//! the stream table like any viewer, re-muxed into PS and sent over RTP to
//! the address of the INVITE's SDP until BYE or the stream ends. MJPEG
//! (Foscam) goes through the shared transcode to H.264 first, as for
//! WebRTC viewers; H.264 and H.265 pass through.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use tokio::net::UdpSocket;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::media::RtpPacker;
use crate::media::frame::{AudioParams, Codec, StreamInfo};
use crate::media::ps_mux::PsMuxer;
use crate::streams::{StreamKey, Streams, Viewer};
use crate::transcode::shared::{SharedTranscode, Transcodes};

/// What sessions need from the rest of the gateway.
#[derive(Clone)]
pub struct MediaServices {
    pub streams: Streams,
    pub transcodes: Arc<Transcodes>,
    /// How long a stream may take to describe itself (codec, size).
    pub describe_timeout: Duration,
}

/// A stream ready to send: the viewer's hold, the transcode if any, and
/// what the frames are.
pub struct Opened {
    _viewer: Viewer,
    transcode: Option<Arc<SharedTranscode>>,
    subscription: crate::media::hub::Subscription,
    info: StreamInfo,
}

#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    #[error("stream: {0}")]
    Start(#[from] crate::streams::StartError),
    #[error("stream did not describe itself in time")]
    NotDescribed,
    #[error("transcode: {0}")]
    Transcode(#[from] crate::transcode::TranscodeError),
    #[error("video codec {0:?} cannot go into PS")]
    Codec(Codec),
}

/// Open `key` as a viewer and settle what goes upward.
pub async fn open(services: &MediaServices, key: &StreamKey) -> Result<Opened, SessionError> {
    let viewer = services.streams.open(key).await?;
    let info = viewer.hub().wait_described(services.describe_timeout).await;
    if info.video.is_none() {
        return Err(SessionError::NotDescribed);
    }
    let transcode = match &info.video {
        Some((Codec::Mjpeg, _)) => services.transcodes.join(key, viewer.hub(), &info)?,
        _ => None,
    };
    let (info, subscription) = match &transcode {
        Some(t) => (
            t.wait_ready(services.describe_timeout).await?,
            t.subscribe(),
        ),
        None => (info, viewer.subscribe()),
    };
    Ok(Opened {
        _viewer: viewer,
        transcode,
        subscription,
        info,
    })
}

/// Where RTP goes: a UDP socket and the upper platform's address, or a TCP
/// connection carrying RFC 4571 frames (a 16-bit length before each
/// packet).
pub enum Sink {
    Udp { socket: UdpSocket, dest: SocketAddr },
    Tcp(tokio::net::TcpStream),
}

impl Sink {
    /// Send one RTP packet. UDP errors are passing (ICMP from a closed
    /// port); a TCP error means the connection is gone.
    async fn send(&mut self, packet: &[u8]) -> std::io::Result<()> {
        match self {
            Sink::Udp { socket, dest } => {
                if let Err(e) = socket.send_to(packet, *dest).await {
                    tracing::debug!(%dest, "cascade: RTP send failed: {e}");
                }
                Ok(())
            }
            Sink::Tcp(stream) => {
                use tokio::io::AsyncWriteExt;
                // Packets are at most MAX_RTP_PAYLOAD + 12 bytes.
                let len = u16::try_from(packet.len()).unwrap_or(u16::MAX);
                stream.write_all(&len.to_be_bytes()).await?;
                stream.write_all(packet).await
            }
        }
    }
}

/// Why an upward stream stopped sending.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ended {
    /// BYE from the upper platform, or shutdown.
    Cancelled,
    /// The stream table closed the stream: for a recording, its end.
    StreamEnded,
    /// The TCP media connection broke.
    Broken,
}

/// Send `opened` as PS over RTP through `sink` with `ssrc` until `cancel`
/// (BYE), the stream ends, or a TCP connection breaks.
pub async fn send(
    mut opened: Opened,
    mut sink: Sink,
    ssrc: u32,
    cancel: CancellationToken,
    label: String,
) -> Result<Ended, SessionError> {
    let video = opened.info.video.as_ref().map(|(c, _)| *c);
    let audio: Option<(Codec, AudioParams)> = opened
        .info
        .audio
        .clone()
        .filter(|(c, _)| matches!(c, Codec::Pcma | Codec::Pcmu | Codec::Aac));
    let mut mux = PsMuxer::for_codecs(video, audio.as_ref().map(|(c, _)| *c))
        .map_err(|_| SessionError::Codec(video.unwrap_or(Codec::Mjpeg)))?;
    let audio_params = audio.map(|(_, p)| p);
    let mut packer = RtpPacker::new(ssrc, (u64::from(ssrc) ^ 0x5a5a) as u16);
    let mut ps = BytesMut::with_capacity(64 * 1024);
    let mut packets = Vec::with_capacity(64);
    let (mut frames, mut bytes) = (0u64, 0u64);
    let tcp = matches!(sink, Sink::Tcp(_));
    info!(stream = %label, tcp, ssrc, video = ?video, transcoded = opened.transcode.is_some(), "cascade: sending PS upward");
    let ended = loop {
        let frame = tokio::select! {
            _ = cancel.cancelled() => break Ended::Cancelled,
            f = opened.subscription.recv() => match f {
                Ok(f) => f,
                Err(_) => {
                    info!(stream = %label, "cascade: stream ended");
                    break Ended::StreamEnded;
                }
            },
        };
        ps.clear();
        if mux
            .write_frame(&frame, audio_params.as_ref(), &mut ps)
            .is_err()
        {
            // A track the PS does not carry (e.g. G.722 audio): skipped.
            continue;
        }
        let ts = if frame.codec.kind() == crate::media::frame::MediaKind::Video {
            frame.pts as u32
        } else {
            let rate = audio_params
                .as_ref()
                .map_or(8_000, |p| p.sample_rate.max(1));
            (i128::from(frame.pts) * 90_000 / i128::from(rate)) as u32
        };
        packer.pack(&ps, ts, &mut packets);
        let mut broken = false;
        for p in packets.drain(..) {
            bytes += p.len() as u64;
            let sent = tokio::select! {
                _ = cancel.cancelled() => Ok(()),
                r = sink.send(&p) => r,
            };
            if let Err(e) = sent {
                warn!(stream = %label, "cascade: media connection lost: {e}");
                broken = true;
                break;
            }
        }
        if broken {
            break Ended::Broken;
        }
        frames += 1;
    };
    crate::metrics::get().cascade_rtp_bytes_sent.inc_by(bytes);
    info!(stream = %label, frames, bytes, ?ended, "cascade: upward stream ended");
    Ok(ended)
}
