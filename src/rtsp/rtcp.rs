//! RTCP for the RTSP egress: sender reports (RFC 3550 §6.4.1) with an SDES
//! CNAME (§6.5.1), sent as one compound packet (§6.1) per track.
//!
//! Receivers line audio up with video by mapping each track's RTP time to
//! the NTP wallclock in its SRs, so every track of a session must use the
//! same mapping. [`MediaClock`] is that shared mapping: it ties the
//! source's presentation time (the frames' `pts`) to the local clock once,
//! and each track converts it into its own RTP clock.
//!
//! Client RTCP (receiver reports, BYE) is only a sign of life for us; it is
//! never parsed beyond what [`is_rtcp`] checks.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Seconds from the NTP epoch (1900) to the Unix epoch (1970).
const NTP_UNIX_OFFSET: u64 = 2_208_988_800;

/// RTCP packet type of a sender report.
pub const PT_SR: u8 = 200;
/// RTCP packet type of source description.
pub const PT_SDES: u8 = 202;

/// How often each track sends a sender report. RFC 3550 §6.2 scales the
/// interval with bandwidth, but for one unicast receiver its 5 s minimum is
/// what every implementation uses.
pub const SR_INTERVAL: Duration = Duration::from_secs(5);

/// The 64-bit NTP timestamp (RFC 3550 §4) of a wallclock time.
pub fn ntp_timestamp(t: SystemTime) -> u64 {
    let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = d.as_secs() + NTP_UNIX_OFFSET;
    let frac = (u64::from(d.subsec_nanos()) << 32) / 1_000_000_000;
    (secs << 32) | frac
}

/// What one sender report says about one track.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SenderReport {
    pub ssrc: u32,
    pub ntp: u64,
    pub rtp_time: u32,
    pub packets: u32,
    /// Payload octets sent (RTP headers excluded, §6.4.1).
    pub octets: u32,
}

impl SenderReport {
    /// Append the compound packet SR + SDES(CNAME) to `out`.
    pub fn encode(&self, cname: &str, out: &mut Vec<u8>) {
        // SR without report blocks: header, SSRC, 20 bytes of sender info.
        out.extend_from_slice(&[0x80, PT_SR, 0, 6]);
        out.extend_from_slice(&self.ssrc.to_be_bytes());
        out.extend_from_slice(&self.ntp.to_be_bytes());
        out.extend_from_slice(&self.rtp_time.to_be_bytes());
        out.extend_from_slice(&self.packets.to_be_bytes());
        out.extend_from_slice(&self.octets.to_be_bytes());

        // SDES, one chunk: SSRC, CNAME item, END, padding to 32 bits.
        let cname = &cname.as_bytes()[..cname.len().min(255)];
        let chunk_len = 4 + 2 + cname.len() + 1;
        let padded = chunk_len.div_ceil(4) * 4;
        let words = (4 + padded) / 4 - 1;
        out.extend_from_slice(&[0x81, PT_SDES]);
        out.extend_from_slice(&(words as u16).to_be_bytes());
        out.extend_from_slice(&self.ssrc.to_be_bytes());
        out.extend_from_slice(&[1, cname.len() as u8]);
        out.extend_from_slice(cname);
        out.resize(out.len() + (padded - chunk_len) + 1, 0);
    }
}

/// RTCP packet type of BYE.
pub const PT_BYE: u8 = 203;

/// Append a BYE for `ssrc` (RFC 3550 §6.6) to `out`; it follows an SR in
/// the same compound packet, which must start with a report (§6.1).
pub fn encode_bye(ssrc: u32, out: &mut Vec<u8>) {
    out.extend_from_slice(&[0x81, PT_BYE, 0, 1]);
    out.extend_from_slice(&ssrc.to_be_bytes());
}

/// Loose check that a datagram is RTCP (version 2, a known-range packet
/// type), used only to decide whether it counts as client activity.
pub fn is_rtcp(data: &[u8]) -> bool {
    data.len() >= 4 && data[0] >> 6 == 2 && (192..=223).contains(&data[1])
}

/// The session-wide mapping from source presentation time to local time.
///
/// The first frame anchors it. Frames from the GOP cache arrive in a burst
/// ahead of their presentation times, so the anchor tracks the largest
/// "lead" (media time minus elapsed local time) seen: that is the live edge,
/// and it only ever moves forward, by little, after the burst.
#[derive(Clone, Debug, Default)]
pub struct MediaClock {
    anchor: Option<Anchor>,
}

#[derive(Clone, Debug)]
struct Anchor {
    at: Instant,
    pts: i64,
    clock: u32,
    lead_secs: f64,
}

impl Anchor {
    /// The anchor pts expressed in another clock.
    fn origin_in(&self, clock: u32) -> i64 {
        let v = i128::from(self.pts) * i128::from(clock) / i128::from(self.clock.max(1));
        v.clamp(i128::from(i64::MIN), i128::from(i64::MAX)) as i64
    }
}

impl MediaClock {
    /// A clock whose origin is presentation time `pts` (in `clock` units)
    /// at local time `now`, instead of the first frame observed.
    pub fn anchored(pts: i64, clock: u32, now: Instant) -> Self {
        Self {
            anchor: Some(Anchor {
                at: now,
                pts,
                clock: clock.max(1),
                lead_secs: 0.0,
            }),
        }
    }

    /// Whether the origin is set.
    pub fn is_anchored(&self) -> bool {
        self.anchor.is_some()
    }

    /// Media time of a frame relative to the session origin, in `clock`
    /// units (which is what its RTP timestamp adds to the track's base).
    pub fn observe(&mut self, pts: i64, clock: u32, now: Instant) -> i64 {
        let clock = clock.max(1);
        let anchor = self.anchor.get_or_insert(Anchor {
            at: now,
            pts,
            clock,
            lead_secs: 0.0,
        });
        let rel = pts.wrapping_sub(anchor.origin_in(clock));
        let lead = rel as f64 / f64::from(clock) - now.duration_since(anchor.at).as_secs_f64();
        if lead > anchor.lead_secs {
            anchor.lead_secs = lead;
        }
        rel
    }

    /// Media time at local time `now`, relative to the origin, in `clock`
    /// units; `None` before the first frame.
    pub fn media_time_at(&self, clock: u32, now: Instant) -> Option<i64> {
        let a = self.anchor.as_ref()?;
        let secs = now.duration_since(a.at).as_secs_f64() + a.lead_secs;
        Some((secs * f64::from(clock)).round() as i64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sr_with_sdes_layout() {
        let sr = SenderReport {
            ssrc: 0xdead_beef,
            ntp: 0x0102_0304_0506_0708,
            rtp_time: 0x1122_3344,
            packets: 10,
            octets: 12_000,
        };
        let mut out = Vec::new();
        sr.encode("camgate", &mut out);
        assert_eq!(
            &out[..28],
            &[
                0x80, 200, 0, 6, 0xde, 0xad, 0xbe, 0xef, 1, 2, 3, 4, 5, 6, 7, 8, 0x11, 0x22, 0x33,
                0x44, 0, 0, 0, 10, 0, 0, 0x2e, 0xe0
            ]
        );
        let sdes = &out[28..];
        // 4 header + 4 SSRC + 2 + 7 "camgate" + 1 END = 18 → padded to 20.
        assert_eq!(sdes.len(), 20);
        assert_eq!(&sdes[..4], &[0x81, 202, 0, 4]);
        assert_eq!(&sdes[8..10], &[1, 7]);
        assert_eq!(&sdes[10..17], b"camgate");
        assert_eq!(&sdes[17..], &[0, 0, 0]);
        assert!(is_rtcp(&out));
        assert!(!is_rtcp(&[0x80, 96, 0, 0]));
    }

    #[test]
    fn ntp_epoch_offset() {
        let t = UNIX_EPOCH + Duration::from_millis(1500);
        assert_eq!(ntp_timestamp(t), ((NTP_UNIX_OFFSET + 1) << 32) | (1 << 31));
    }

    #[test]
    fn clock_is_shared_across_rates_and_follows_the_live_edge() {
        let t0 = Instant::now();
        let mut c = MediaClock::default();
        assert_eq!(c.media_time_at(90_000, t0), None);
        assert_eq!(c.observe(900_000, 90_000, t0), 0);
        // Audio 0.5 s later in media time, at 8 kHz.
        assert_eq!(c.observe(80_000 + 4_000, 8_000, t0), 4_000);
        // A cached frame one second ahead arrives at once: lead becomes 1 s.
        c.observe(990_000, 90_000, t0);
        let later = t0 + Duration::from_secs(2);
        assert_eq!(c.media_time_at(90_000, later), Some(270_000));
        assert_eq!(c.media_time_at(8_000, later), Some(24_000));
    }
}
