//! RTCP from RTSP clients (RFC 3550 §6.1 compound packets): the report
//! blocks of their receiver (§6.4.2) or sender (§6.4.1) reports, which say
//! how many of our packets they lost, and BYE (§6.6).
//!
//! Other packet types (SDES, APP, feedback) are skipped by their length.

/// Largest compound packet we look at; real ones are under 200 bytes, and
/// an interleaved frame is at most 64 KiB.
pub const MAX_RTCP_LEN: usize = 64 * 1024;

const PT_SR: u8 = 200;
const PT_RR: u8 = 201;
const PT_BYE: u8 = 203;

/// Why a client's RTCP was not understood.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum RtcpError {
    #[error("{0} bytes is above the {MAX_RTCP_LEN} byte limit")]
    TooLong(usize),
    #[error("not RTCP version 2")]
    Version,
    #[error("packet at offset {0} runs past the end")]
    Truncated(usize),
}

impl RtcpError {
    /// Label value for `camgate_rtsp_errors{kind}`.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::TooLong(_) => "rtcp_too_long",
            Self::Version => "rtcp_version",
            Self::Truncated(_) => "rtcp_truncated",
        }
    }
}

/// One report block: what a receiver says about one of our SSRCs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReportBlock {
    pub ssrc: u32,
    /// Fraction lost since the previous report, in 1/256.
    pub fraction_lost: u8,
    /// Cumulative packets lost (24-bit signed: duplicates can make it < 0).
    pub cumulative_lost: i32,
    pub highest_seq: u32,
    pub jitter: u32,
}

/// What one compound packet told us.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClientRtcp {
    pub reports: Vec<ReportBlock>,
    pub bye: bool,
}

fn be32(b: &[u8]) -> u32 {
    match b {
        [a, b, c, d, ..] => u32::from_be_bytes([*a, *b, *c, *d]),
        _ => 0,
    }
}

fn report_block(b: &[u8]) -> Option<ReportBlock> {
    let b = b.get(..24)?;
    // Sign-extend the 24-bit cumulative count.
    let raw = u32::from_be_bytes([0, b[5], b[6], b[7]]);
    let cumulative_lost = ((raw << 8) as i32) >> 8;
    Some(ReportBlock {
        ssrc: be32(b),
        fraction_lost: b[4],
        cumulative_lost,
        highest_seq: be32(&b[8..]),
        jitter: be32(&b[12..]),
    })
}

/// Parse a compound RTCP packet from a client.
pub fn parse(data: &[u8]) -> Result<ClientRtcp, RtcpError> {
    if data.len() > MAX_RTCP_LEN {
        return Err(RtcpError::TooLong(data.len()));
    }
    let mut out = ClientRtcp::default();
    let mut at = 0;
    while at < data.len() {
        let head = data.get(at..at + 4).ok_or(RtcpError::Truncated(at))?;
        if head[0] >> 6 != 2 {
            return Err(RtcpError::Version);
        }
        let count = usize::from(head[0] & 0x1f);
        let pt = head[1];
        let len = (usize::from(u16::from_be_bytes([head[2], head[3]])) + 1) * 4;
        let body = data.get(at + 4..at + len).ok_or(RtcpError::Truncated(at))?;
        let blocks_at = match pt {
            PT_RR => Some(4),
            PT_SR => Some(24),
            _ => None,
        };
        if let Some(offset) = blocks_at {
            for i in 0..count {
                let start = offset + i * 24;
                let block = body
                    .get(start..)
                    .and_then(report_block)
                    .ok_or(RtcpError::Truncated(at))?;
                out.reports.push(block);
            }
        }
        out.bye |= pt == PT_BYE;
        at += len;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An RR as ffmpeg sends it (one block), then SDES, then BYE.
    #[test]
    fn rr_sdes_bye() {
        let mut p = vec![0x81, 201, 0, 7, 0, 0, 0, 1];
        p.extend_from_slice(&[0xde, 0xad, 0xbe, 0xef, 26, 0xff, 0xff, 0xfe]);
        p.extend_from_slice(&[0, 1, 0x10, 0x00, 0, 0, 0, 9, 0, 0, 0, 0, 0, 0, 0, 0]);
        p.extend_from_slice(&[0x81, 202, 0, 2, 0, 0, 0, 1, 1, 1, b'x', 0]);
        p.extend_from_slice(&[0x81, 203, 0, 1, 0, 0, 0, 1]);
        let r = parse(&p).unwrap();
        assert_eq!(
            r.reports,
            [ReportBlock {
                ssrc: 0xdead_beef,
                fraction_lost: 26,
                cumulative_lost: -2,
                highest_seq: 0x0001_1000,
                jitter: 9,
            }]
        );
        assert!(r.bye);
    }

    #[test]
    fn bad_input_is_an_error() {
        assert_eq!(parse(&[0x40, 201, 0, 0]), Err(RtcpError::Version));
        assert_eq!(parse(&[0x81, 201, 0, 7, 0]), Err(RtcpError::Truncated(0)));
        // Claims a block the length does not hold.
        assert_eq!(
            parse(&[0x81, 201, 0, 1, 0, 0, 0, 1]),
            Err(RtcpError::Truncated(0))
        );
        assert_eq!(parse(&[]), Ok(ClientRtcp::default()));
    }
}
