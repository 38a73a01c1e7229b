//! SSRC allocation per GB/T 28181-2016 §9.2.2 and Annex F (`y=` field).
//!
//! A GB28181 SSRC is ten decimal digits: digit 1 is `0` for live video and
//! `1` for history (playback/download); digits 2–6 are digits 4–8 of the
//! SIP domain (realm); digits 7–10 are a sequence number. The device puts
//! the same number, read as a decimal integer, in the RTP header's SSRC
//! field, which is how the shared RTP port routes packets to streams.
//!
//! The standard fixes every digit but those four, so they are drawn at
//! random: a sequential counter would let anyone who saw one SSRC guess
//! the next stream's and inject packets into it (the media source is
//! pinned too, see `ingest::source_pin`; this makes guessing the SSRC the
//! first hurdle rather than none).

use std::collections::HashSet;
use std::fmt;

/// Which digit-1 namespace an SSRC is drawn from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SsrcKind {
    /// Real-time video (`0…`).
    Live,
    /// History video: playback and download (`1…`).
    History,
}

impl SsrcKind {
    fn digit(self) -> u8 {
        match self {
            Self::Live => b'0',
            Self::History => b'1',
        }
    }
}

/// A ten-digit GB28181 SSRC.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Ssrc([u8; 10]);

impl Ssrc {
    /// Parse ten decimal digits whose value fits the 32-bit RTP field.
    pub fn parse(s: &str) -> Option<Self> {
        let b = s.trim().as_bytes();
        let digits: [u8; 10] = b.try_into().ok()?;
        if !digits.iter().all(u8::is_ascii_digit) {
            return None;
        }
        let v: u64 = std::str::from_utf8(&digits).ok()?.parse().ok()?;
        u32::try_from(v).ok()?;
        Some(Self(digits))
    }

    /// The SSRC as written in an RTP header (always representable as ten
    /// zero-padded digits).
    pub fn from_value(v: u32) -> Self {
        let mut d = [b'0'; 10];
        let mut n = v;
        for slot in d.iter_mut().rev() {
            *slot = b'0' + (n % 10) as u8;
            n /= 10;
        }
        Self(d)
    }

    /// The ten digits, for `y=`.
    pub fn as_str(&self) -> &str {
        // Only ever built from ASCII digits.
        std::str::from_utf8(&self.0).unwrap_or("0000000000")
    }

    /// The decimal value: what goes in the RTP SSRC field.
    pub fn value(&self) -> u32 {
        self.0
            .iter()
            .fold(0u64, |acc, d| acc * 10 + u64::from(d - b'0'))
            .try_into()
            .unwrap_or(u32::MAX)
    }

    /// Live or history, from digit 1 (`None` for a foreign SSRC whose first
    /// digit is neither 0 nor 1).
    pub fn kind(&self) -> Option<SsrcKind> {
        match self.0[0] {
            b'0' => Some(SsrcKind::Live),
            b'1' => Some(SsrcKind::History),
            _ => None,
        }
    }
}

impl fmt::Display for Ssrc {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Debug for Ssrc {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Ssrc({})", self.as_str())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SsrcError {
    #[error("realm {0:?} needs at least 8 leading digits to derive an SSRC prefix")]
    BadRealm(String),
    #[error("all 10000 {0:?} SSRCs are in use")]
    Exhausted(SsrcKind),
}

/// Hands out SSRCs not currently in use, per kind, with random sequence
/// digits.
#[derive(Debug)]
pub struct SsrcAllocator {
    /// Realm digits 4–8.
    domain: [u8; 5],
    in_use: HashSet<Ssrc>,
}

const SEQ_SPACE: u16 = 10_000;

impl SsrcAllocator {
    pub fn new(realm: &str) -> Result<Self, SsrcError> {
        let b = realm.as_bytes();
        let domain: [u8; 5] = b
            .get(3..8)
            .and_then(|s| s.try_into().ok())
            .filter(|_| b.len() >= 8 && b[..8].iter().all(u8::is_ascii_digit))
            .ok_or_else(|| SsrcError::BadRealm(realm.to_owned()))?;
        Ok(Self {
            domain,
            in_use: HashSet::new(),
        })
    }

    /// A free SSRC of `kind` with unpredictable sequence digits.
    pub fn allocate(&mut self, kind: SsrcKind) -> Result<Ssrc, SsrcError> {
        // Never the `0000` sequence first: devices echo it when the offer
        // carried no `y=` at all.
        let start = rand::random_range(1..SEQ_SPACE);
        self.allocate_from(kind, start)
    }

    /// The first free SSRC of `kind` at or after sequence `start`,
    /// wrapping at 9999.
    fn allocate_from(&mut self, kind: SsrcKind, start: u16) -> Result<Ssrc, SsrcError> {
        for i in 0..SEQ_SPACE {
            let seq = (start % SEQ_SPACE + i) % SEQ_SPACE;
            let ssrc = make(kind, self.domain, seq);
            if self.in_use.insert(ssrc) {
                return Ok(ssrc);
            }
        }
        Err(SsrcError::Exhausted(kind))
    }

    /// Return an SSRC to the pool; false if it was not allocated.
    pub fn release(&mut self, ssrc: Ssrc) -> bool {
        self.in_use.remove(&ssrc)
    }

    /// Mark an SSRC chosen elsewhere (e.g. by a device's answer) as taken.
    pub fn reserve(&mut self, ssrc: Ssrc) -> bool {
        self.in_use.insert(ssrc)
    }

    pub fn is_in_use(&self, ssrc: Ssrc) -> bool {
        self.in_use.contains(&ssrc)
    }

    pub fn in_use(&self) -> usize {
        self.in_use.len()
    }
}

fn make(kind: SsrcKind, domain: [u8; 5], seq: u16) -> Ssrc {
    let mut d = [0u8; 10];
    d[0] = kind.digit();
    d[1..6].copy_from_slice(&domain);
    let mut n = seq;
    for slot in d[6..].iter_mut().rev() {
        *slot = b'0' + (n % 10) as u8;
        n /= 10;
    }
    Ssrc(d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout_follows_the_standard() {
        let mut a = SsrcAllocator::new("3402000000").unwrap();
        let live = a.allocate(SsrcKind::Live).unwrap();
        assert!(live.as_str().starts_with("020000"), "{live}");
        assert_ne!(&live.as_str()[6..], "0000");
        assert_eq!(live.kind(), Some(SsrcKind::Live));
        let hist = a.allocate(SsrcKind::History).unwrap();
        assert!(hist.as_str().starts_with("120000"), "{hist}");
        assert_eq!(hist.kind(), Some(SsrcKind::History));
        assert_eq!(
            a.allocate_from(SsrcKind::Live, 1).unwrap().as_str(),
            "0200000001"
        );
        assert_eq!(
            a.allocate_from(SsrcKind::Live, 1).unwrap().value(),
            200_000_002
        );

        let mut b = SsrcAllocator::new("4401061234").unwrap();
        assert_eq!(
            b.allocate_from(SsrcKind::Live, 1).unwrap().as_str(),
            "0106120001"
        );
        assert!(matches!(
            SsrcAllocator::new("34x2"),
            Err(SsrcError::BadRealm(_))
        ));
        assert!(SsrcAllocator::new("340200ab00").is_err());
    }

    #[test]
    fn sequence_digits_are_not_predictable() {
        let mut a = SsrcAllocator::new("3402000000").unwrap();
        let seqs: Vec<u32> = (0..20)
            .map(|_| a.allocate(SsrcKind::Live).unwrap().value() % 10_000)
            .collect();
        // Twenty in a row would all be consecutive with a counter; random
        // draws from 9999 values are consecutive with odds ~1e-76.
        let consecutive = seqs.windows(2).filter(|w| w[1] == w[0] + 1).count();
        assert!(consecutive < 5, "{seqs:?}");
        let distinct: std::collections::HashSet<_> = seqs.iter().collect();
        assert_eq!(distinct.len(), 20);
    }

    #[test]
    fn wraps_and_skips_in_use() {
        let mut a = SsrcAllocator::new("3402000000").unwrap();
        let s9998 = a.allocate_from(SsrcKind::Live, 9998).unwrap();
        assert_eq!(s9998.as_str(), "0200009998");
        assert_eq!(
            a.allocate_from(SsrcKind::Live, 9998).unwrap().as_str(),
            "0200009999"
        );
        assert_eq!(
            a.allocate_from(SsrcKind::Live, 9998).unwrap().as_str(),
            "0200000000"
        );
        // 0001 is taken by an earlier reservation: skipped.
        assert!(a.reserve(Ssrc::parse("0200000001").unwrap()));
        assert_eq!(
            a.allocate_from(SsrcKind::Live, 1).unwrap().as_str(),
            "0200000002"
        );
        assert!(a.release(s9998));
        assert!(!a.release(s9998));
        assert!(!a.is_in_use(s9998));
    }

    #[test]
    fn exhaustion_is_an_error() {
        let mut a = SsrcAllocator::new("3402000000").unwrap();
        for _ in 0..10_000 {
            a.allocate(SsrcKind::History).unwrap();
        }
        assert_eq!(
            a.allocate(SsrcKind::History),
            Err(SsrcError::Exhausted(SsrcKind::History))
        );
        assert!(a.allocate(SsrcKind::Live).is_ok());
        a.release(Ssrc::parse("1200004242").unwrap());
        assert_eq!(
            a.allocate(SsrcKind::History).unwrap().as_str(),
            "1200004242"
        );
    }

    #[test]
    fn parse_and_value() {
        assert_eq!(Ssrc::parse("0000001002").unwrap().value(), 1002);
        assert_eq!(Ssrc::from_value(1002).as_str(), "0000001002");
        assert_eq!(Ssrc::from_value(u32::MAX).as_str(), "4294967295");
        assert_eq!(Ssrc::parse("4294967295").unwrap().value(), u32::MAX);
        assert_eq!(Ssrc::parse("4294967296"), None);
        assert_eq!(Ssrc::parse("123"), None);
        assert_eq!(Ssrc::parse("12345678a0"), None);
        assert_eq!(Ssrc::parse("5000000000"), None);
        assert_eq!(Ssrc::parse("5000000000").and_then(|s| s.kind()), None);
        // The SSRC of the Hikvision capture in the shared testdata.
        assert_eq!(Ssrc::from_value(0x05F5_ED76).as_str(), "0100003190");
    }
}
