//! RTCP receiver reports (RFC 3550 §6.4.2) that we send to a device for
//! the one source we receive from it, sans-IO: counters in, packet bytes
//! out. Interval handling is the driver's (RFC 3550 §6.2's 5 s minimum).
//!
//! Interarrival jitter is reported as 0 and LSR/DLSR as 0 (we do not
//! track device sender reports); devices use these reports as a keepalive
//! of the media path, which is what matters for GB28181.

/// RTCP packet type of a receiver report.
pub const PT_RR: u8 = 201;

/// State carried between reports for the fraction-lost field (A.3).
#[derive(Debug, Clone, Default)]
pub struct ReceiverReporter {
    expected_prior: u64,
    received_prior: u64,
}

/// What the receive side knows at report time.
#[derive(Debug, Clone, Copy)]
pub struct ReceptionCounts {
    /// SSRC of the device's stream.
    pub source_ssrc: u32,
    /// First extended sequence number received.
    pub base_seq: u64,
    /// Highest extended sequence number received.
    pub extended_max: u64,
    /// Packets received (duplicates excluded).
    pub received: u64,
}

impl ReceiverReporter {
    /// Append one RR packet from `our_ssrc` to `out`.
    pub fn report(&mut self, our_ssrc: u32, c: ReceptionCounts, out: &mut Vec<u8>) {
        let expected = c.extended_max.saturating_sub(c.base_seq) + 1;
        let lost = expected.saturating_sub(c.received);
        // §6.4.1: cumulative loss is a signed 24-bit value; clamp.
        let cumulative = lost.min(0x7f_ffff) as u32;
        let expected_interval = expected.saturating_sub(self.expected_prior);
        let received_interval = c.received.saturating_sub(self.received_prior);
        self.expected_prior = expected;
        self.received_prior = c.received;
        let lost_interval = expected_interval.saturating_sub(received_interval);
        let fraction = if expected_interval == 0 || lost_interval == 0 {
            0
        } else {
            ((lost_interval << 8) / expected_interval).min(255) as u8
        };
        out.extend_from_slice(&[0x81, PT_RR, 0, 7]);
        out.extend_from_slice(&our_ssrc.to_be_bytes());
        out.extend_from_slice(&c.source_ssrc.to_be_bytes());
        out.push(fraction);
        out.extend_from_slice(&cumulative.to_be_bytes()[1..]);
        out.extend_from_slice(&(c.extended_max as u32).to_be_bytes());
        out.extend_from_slice(&[0; 12]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn report_fields() {
        let mut r = ReceiverReporter::default();
        let mut out = Vec::new();
        let c = ReceptionCounts {
            source_ssrc: 0x0102_0304,
            base_seq: 100,
            extended_max: (1 << 16) | 99,
            received: 65_536 - 10,
        };
        r.report(7, c, &mut out);
        assert_eq!(out.len(), 32);
        assert_eq!(&out[..4], &[0x81, 201, 0, 7]);
        assert_eq!(&out[4..8], &7u32.to_be_bytes());
        assert_eq!(&out[8..12], &[1, 2, 3, 4]);
        // 10 of 65,536 lost: fraction 10*256/65536 = 0.
        assert_eq!(out[12], 0);
        assert_eq!(&out[13..16], &[0, 0, 10]);
        assert_eq!(&out[16..20], &((1u32 << 16) | 99).to_be_bytes());
        assert!(crate::rtsp::rtcp::is_rtcp(&out));
        // Next interval: 100 expected, 75 received: 25% = 64/256.
        out.clear();
        r.report(
            7,
            ReceptionCounts {
                extended_max: c.extended_max + 100,
                received: c.received + 75,
                ..c
            },
            &mut out,
        );
        assert_eq!(out[12], 64);
        assert_eq!(&out[13..16], &[0, 0, 35]);
    }
}
