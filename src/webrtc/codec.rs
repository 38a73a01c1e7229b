//! Which H.264 payload type to send a browser.
//!
//! RFC 6184 §8.1 describes a stream by `profile-level-id` (profile_idc,
//! constraint flags, level_idc — the three bytes after the SPS NAL header),
//! and RFC 7742 §6.2 makes WebRTC endpoints negotiate it. Browsers list the
//! profiles their decoder is wired for; Debian's Chromium, for instance,
//! offers Baseline, Constrained Baseline and Main but not High, although
//! its decoder plays High. Cameras send Main or High. So the rule is: send
//! on the offered payload type whose profile equals the source's; failing
//! that, on the highest offered profile, and say that it is a mismatch.
//! `packetization-mode=1` is required because key frames do not fit one
//! packet (FU-A, RFC 6184 §5.8).

/// profile_idc values (ITU-T H.264 Annex A).
const BASELINE: u8 = 66;
const MAIN: u8 = 77;
const HIGH: u8 = 100;

/// `profile-level-id` of a stream from its SPS (NAL header included).
pub fn profile_level_id(sps: &[u8]) -> Option<u32> {
    match sps {
        [header, profile, constraints, level, ..] if header & 0x1f == 7 => {
            Some((u32::from(*profile) << 16) | (u32::from(*constraints) << 8) | u32::from(*level))
        }
        _ => None,
    }
}

/// An H.264 payload type the browser's offer allows us to send on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OfferedH264 {
    pub pt: u8,
    pub profile_level_id: Option<u32>,
    pub packetization_mode: Option<u8>,
}

/// The payload type to send on, and whether its profile is the source's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct H264Choice {
    pub pt: u8,
    pub profile_level_id: Option<u32>,
    pub exact: bool,
}

/// How well an offered profile can carry the source, higher is better;
/// `None` when it cannot be used at all.
fn rank(source_profile: Option<u8>, offered: &OfferedH264) -> Option<(u8, u8)> {
    if offered.packetization_mode != Some(1) {
        return None;
    }
    // RFC 6184 §8.1: a missing profile-level-id means Baseline level 1.0.
    let profile = offered
        .profile_level_id
        .map_or(BASELINE, |p| (p >> 16) as u8);
    let exact = u8::from(Some(profile) == source_profile);
    let capability = match profile {
        HIGH => 4,
        MAIN => 3,
        BASELINE if offered.profile_level_id.is_some_and(|p| p & 0x4000 != 0) => 1,
        BASELINE => 2,
        _ => 0,
    };
    Some((exact, capability))
}

/// Pick the payload type for a source with `source_plid` (from its SPS)
/// among what the browser accepted.
pub fn choose_h264(source_plid: Option<u32>, offered: &[OfferedH264]) -> Option<H264Choice> {
    let source_profile = source_plid.map(|p| (p >> 16) as u8);
    offered
        .iter()
        .filter_map(|o| rank(source_profile, o).map(|r| (r, o)))
        .max_by_key(|(r, o)| (*r, std::cmp::Reverse(o.pt)))
        .map(|((exact, _), o)| H264Choice {
            pt: o.pt,
            profile_level_id: o.profile_level_id,
            exact: exact == 1,
        })
}

/// `profile-level-id` of Constrained Baseline level 3.1, the H.264 every
/// WebRTC browser offers (RFC 7742 §6.2) and the one camgate's own
/// encoder output is sent as.
pub const CONSTRAINED_BASELINE_31: u32 = 0x42e01f;

/// [`choose_h264`], except that an offered payload type whose
/// `profile-level-id` is exactly `preferred` (with packetization-mode=1)
/// wins outright: for streams camgate encodes itself, where the profile is
/// known to fit.
pub fn choose_h264_preferring(
    preferred: Option<u32>,
    source_plid: Option<u32>,
    offered: &[OfferedH264],
) -> Option<H264Choice> {
    let exact = preferred.and_then(|plid| {
        offered
            .iter()
            .filter(|o| o.profile_level_id == Some(plid) && o.packetization_mode == Some(1))
            .min_by_key(|o| o.pt)
    });
    match exact {
        Some(o) => Some(H264Choice {
            pt: o.pt,
            profile_level_id: o.profile_level_id,
            exact: true,
        }),
        None => choose_h264(source_plid, offered),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn offer(pt: u8, plid: u32, mode: u8) -> OfferedH264 {
        OfferedH264 {
            pt,
            profile_level_id: Some(plid),
            packetization_mode: Some(mode),
        }
    }

    /// What Debian's Chromium offers for H.264 (High absent).
    fn chromium() -> Vec<OfferedH264> {
        vec![
            offer(102, 0x42001f, 1),
            offer(103, 0x42001f, 0),
            offer(104, 0x42e01f, 1),
            offer(105, 0x42e01f, 0),
            offer(106, 0x4d001f, 1),
            offer(107, 0x4d001f, 0),
        ]
    }

    #[test]
    fn plid_from_sps() {
        // SPS of the demo clip (Main, level 3.1) and of a High camera.
        assert_eq!(
            profile_level_id(&[0x67, 0x4d, 0x00, 0x1f, 0xab]),
            Some(0x4d001f)
        );
        assert_eq!(profile_level_id(&[0x27, 0x64, 0x00, 0x28]), Some(0x640028));
        assert_eq!(profile_level_id(&[0x68, 0x4d, 0x00, 0x1f]), None, "a PPS");
        assert_eq!(profile_level_id(&[0x67, 0x4d]), None);
    }

    #[test]
    fn main_source_gets_main_pt() {
        let c = choose_h264(Some(0x4d0028), &chromium()).unwrap();
        assert_eq!((c.pt, c.exact), (106, true));
    }

    #[test]
    fn high_source_falls_back_to_main_and_says_so() {
        let c = choose_h264(Some(0x640028), &chromium()).unwrap();
        assert_eq!((c.pt, c.exact), (106, false));
        let mut with_high = chromium();
        with_high.push(offer(112, 0x64001f, 1));
        let c = choose_h264(Some(0x640028), &with_high).unwrap();
        assert_eq!((c.pt, c.exact), (112, true));
    }

    #[test]
    fn baseline_source_prefers_baseline() {
        let c = choose_h264(Some(0x42c01e), &chromium()).unwrap();
        assert_eq!((c.pt, c.exact), (102, true));
    }

    #[test]
    fn single_nal_mode_is_never_chosen() {
        let only_mode0 = [offer(103, 0x42001f, 0), offer(107, 0x4d001f, 0)];
        assert_eq!(choose_h264(Some(0x4d001f), &only_mode0), None);
        assert_eq!(choose_h264(None, &[]), None);
    }

    #[test]
    fn unknown_source_profile_takes_the_most_capable() {
        let c = choose_h264(None, &chromium()).unwrap();
        assert_eq!((c.pt, c.exact), (106, false));
    }

    #[test]
    fn transcoded_output_goes_out_as_constrained_baseline() {
        // OpenH264's SPS says 42c01f; plain choose_h264 would take 42001f.
        let c = choose_h264_preferring(Some(CONSTRAINED_BASELINE_31), Some(0x42c01f), &chromium())
            .unwrap();
        assert_eq!((c.pt, c.exact), (104, true));
        // Not offered: the usual ranking decides.
        let no_cb = [offer(102, 0x42001f, 1), offer(106, 0x4d001f, 1)];
        let c =
            choose_h264_preferring(Some(CONSTRAINED_BASELINE_31), Some(0x42c01f), &no_cb).unwrap();
        assert_eq!(c.pt, 102);
    }
}
