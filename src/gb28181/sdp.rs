//! GB28181 SDP: RFC 4566 plus the fields GB/T 28181-2016 adds in §9.2.2
//! and Annex F — `y=` (the ten-digit SSRC), `f=` (media format
//! parameters), `u=` (the channel URI for playback/download) and the
//! attributes `a=setup`/`a=connection` (RFC 4145, TCP media) and
//! `a=downloadspeed`.
//!
//! General-purpose SDP crates drop `y=` and `f=` as unknown line types, so
//! this is our own small model: [`GbSdp::build`] renders with CRLF,
//! [`GbSdp::parse`] accepts what real cameras send (LF-only line ends,
//! stray whitespace, unknown lines), keeps attributes it does not model,
//! and never panics.

use std::fmt::Write as _;
use std::net::IpAddr;

/// Largest SDP body we parse; real GB28181 bodies are 200–400 bytes.
pub const MAX_SDP_LEN: usize = 16 * 1024;
/// Most `m=` sections we keep (a GB session has one, talk has two).
pub const MAX_MEDIA: usize = 8;
/// Most payload types in one `m=` line.
pub const MAX_PAYLOADS: usize = 32;
/// Most extra attributes kept per level.
pub const MAX_EXTRA_ATTRIBUTES: usize = 64;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SdpError {
    #[error("SDP is {0} bytes, above the {MAX_SDP_LEN} byte limit")]
    TooLarge(usize),
    #[error("required `{0}=` line is missing")]
    Missing(&'static str),
    #[error("line {line}: malformed `{field}=` line")]
    Malformed { line: usize, field: char },
    #[error("more than {MAX_MEDIA} media sections")]
    TooManyMedia,
}

impl SdpError {
    /// Stable label for error metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::TooLarge(_) => "sdp_too_large",
            Self::Missing(_) => "sdp_missing_field",
            Self::Malformed { .. } => "sdp_malformed",
            Self::TooManyMedia => "sdp_too_many_media",
        }
    }
}

/// `s=`: what the session is for (GB/T 28181-2016 §9.2.2).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SessionName {
    Play,
    Playback,
    Download,
    Talk,
    Other(String),
}

impl SessionName {
    pub fn as_str(&self) -> &str {
        match self {
            Self::Play => "Play",
            Self::Playback => "Playback",
            Self::Download => "Download",
            Self::Talk => "Talk",
            Self::Other(s) => s,
        }
    }

    fn parse(s: &str) -> Self {
        // Devices disagree on case ("play", "PLAYBACK"); the meaning doesn't.
        match s.to_ascii_lowercase().as_str() {
            "play" => Self::Play,
            "playback" => Self::Playback,
            "download" => Self::Download,
            "talk" => Self::Talk,
            _ => Self::Other(s.to_owned()),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MediaKind {
    Video,
    Audio,
    Other(String),
}

impl MediaKind {
    pub fn as_str(&self) -> &str {
        match self {
            Self::Video => "video",
            Self::Audio => "audio",
            Self::Other(s) => s,
        }
    }
}

/// The `m=` transport.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Transport {
    /// `RTP/AVP`: RTP over UDP.
    RtpAvp,
    /// `TCP/RTP/AVP`: RTP over TCP with RFC 4571 framing.
    TcpRtpAvp,
    Other(String),
}

impl Transport {
    pub fn as_str(&self) -> &str {
        match self {
            Self::RtpAvp => "RTP/AVP",
            Self::TcpRtpAvp => "TCP/RTP/AVP",
            Self::Other(s) => s,
        }
    }

    fn parse(s: &str) -> Self {
        if s.eq_ignore_ascii_case("RTP/AVP") {
            Self::RtpAvp
        } else if s.eq_ignore_ascii_case("TCP/RTP/AVP") || s.eq_ignore_ascii_case("RTP/AVP/TCP") {
            // Some NVRs write the RTSP-style `RTP/AVP/TCP`; same meaning.
            Self::TcpRtpAvp
        } else {
            Self::Other(s.to_owned())
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    RecvOnly,
    SendOnly,
    SendRecv,
    Inactive,
}

impl Direction {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::RecvOnly => "recvonly",
            Self::SendOnly => "sendonly",
            Self::SendRecv => "sendrecv",
            Self::Inactive => "inactive",
        }
    }
}

/// `a=setup:` (RFC 4145): who opens the TCP media connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Setup {
    Active,
    Passive,
    ActPass,
}

impl Setup {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Active => "active",
            Self::Passive => "passive",
            Self::ActPass => "actpass",
        }
    }
}

/// One payload type of an `m=` line with its `a=rtpmap`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Payload {
    pub pt: u8,
    /// Encoding name (`PS`, `H264`, `PCMA`…); empty if neither an rtpmap
    /// nor a static assignment names it.
    pub encoding: String,
    /// Clock rate in Hz; 0 if unknown.
    pub clock: u32,
}

impl Payload {
    pub fn new(pt: u8, encoding: &str, clock: u32) -> Self {
        Self {
            pt,
            encoding: encoding.to_owned(),
            clock,
        }
    }
}

/// One `m=` section.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Media {
    pub kind: MediaKind,
    pub port: u16,
    pub transport: Transport,
    pub payloads: Vec<Payload>,
    /// RFC 4566 §6 default when absent is sendrecv.
    pub direction: Direction,
    pub setup: Option<Setup>,
    /// `a=connection:new` (RFC 4145): open a new TCP connection.
    pub connection_new: bool,
    /// `a=downloadspeed:` (GB/T 28181-2016 §9.2.2): download speed factor.
    pub download_speed: Option<u32>,
    /// Media-level `c=` address, if any.
    pub connection_ip: Option<String>,
    /// Every other `a=` value of this section, in order, without `a=`
    /// (e.g. `streamprofile:0`, `filesize:1024`).
    pub attributes: Vec<String>,
}

impl Media {
    /// A section with no payloads or extra attributes yet.
    pub fn new(kind: MediaKind, port: u16, transport: Transport, direction: Direction) -> Self {
        Self {
            kind,
            port,
            transport,
            payloads: Vec::new(),
            direction,
            setup: None,
            connection_new: false,
            download_speed: None,
            connection_ip: None,
            attributes: Vec::new(),
        }
    }

    /// The first payload whose encoding is `name` (case-insensitive).
    pub fn payload(&self, name: &str) -> Option<&Payload> {
        self.payloads
            .iter()
            .find(|p| p.encoding.eq_ignore_ascii_case(name))
    }

    /// The value of the first extra attribute `name:` (or `Some("")` for a
    /// flag attribute `name`).
    pub fn attribute(&self, name: &str) -> Option<&str> {
        find_attribute(&self.attributes, name)
    }
}

fn find_attribute<'a>(attrs: &'a [String], name: &str) -> Option<&'a str> {
    attrs.iter().find_map(|a| {
        let (k, v) = a.split_once(':').unwrap_or((a, ""));
        k.eq_ignore_ascii_case(name).then_some(v)
    })
}

/// Parsed `f=` value (GB/T 28181-2016 Annex F):
/// `v/codec/resolution/framerate/ratetype/bitrate` `a/codec/bitrate/samplerate`.
/// Empty sub-fields (devices often leave them) are `None`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MediaFormat {
    /// 1 MPEG-4, 2 H.264, 3 SVAC, 4 3GP (2016); later editions add H.265.
    pub video_codec: Option<u32>,
    /// 1 QCIF, 2 CIF, 3 4CIF, 4 D1, 5 720P, 6 1080P/I.
    pub resolution: Option<u32>,
    pub frame_rate: Option<u32>,
    /// 1 constant, 2 variable.
    pub bitrate_type: Option<u32>,
    /// kbit/s.
    pub bitrate: Option<u32>,
    /// 1 G.711, 2 G.723.1, 3 G.729, 4 G.722.1.
    pub audio_codec: Option<u32>,
    /// Coded audio bitrate index.
    pub audio_bitrate: Option<u32>,
    /// Sample rate index.
    pub audio_sample_rate: Option<u32>,
}

impl MediaFormat {
    /// Parse `v/…a/…`; `None` if the shape is not recognisable.
    pub fn parse(f: &str) -> Option<Self> {
        let f = f.trim_ascii();
        let rest = f.strip_prefix('v').or_else(|| f.strip_prefix('V'))?;
        let rest = rest.strip_prefix('/')?;
        // The audio part starts at the `a` that ends the video part
        // ("…/0a/0/0/0" or "…/a/…"): the only letter after the leading `v`.
        let (video, audio) = match rest.find(['a', 'A']) {
            Some(i) => (&rest[..i], Some(&rest[i + 1..])),
            None => (rest, None),
        };
        let num = |s: &str| s.trim_ascii().parse::<u32>().ok();
        let v: Vec<&str> = video.split('/').collect();
        if v.len() > 5 {
            return None;
        }
        let vf = |i: usize| v.get(i).copied().and_then(num);
        let a: Vec<&str> = audio
            .map(|a| a.strip_prefix('/').unwrap_or(a).split('/').collect())
            .unwrap_or_default();
        if a.len() > 3 {
            return None;
        }
        let af = |i: usize| a.get(i).copied().and_then(num);
        Some(Self {
            video_codec: vf(0),
            resolution: vf(1),
            frame_rate: vf(2),
            bitrate_type: vf(3),
            bitrate: vf(4),
            audio_codec: af(0),
            audio_bitrate: af(1),
            audio_sample_rate: af(2),
        })
    }

    /// Render in the Annex F form, empty for unknown fields.
    pub fn to_f_line_value(&self) -> String {
        let s = |v: Option<u32>| v.map(|n| n.to_string()).unwrap_or_default();
        format!(
            "v/{}/{}/{}/{}/{}a/{}/{}/{}",
            s(self.video_codec),
            s(self.resolution),
            s(self.frame_rate),
            s(self.bitrate_type),
            s(self.bitrate),
            s(self.audio_codec),
            s(self.audio_bitrate),
            s(self.audio_sample_rate)
        )
    }
}

/// A GB28181 session description.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GbSdp {
    /// `o=` username: the sender's 20-digit id.
    pub origin_user: String,
    /// `o=` sess-id and sess-version, kept verbatim (GB uses `0 0`).
    pub origin_session_id: String,
    pub origin_session_version: String,
    pub origin_ip: String,
    pub session_name: SessionName,
    /// `i=`, e.g. Dahua's "VCam Live Video".
    pub session_info: Option<String>,
    /// `u=`: `channelId:type` for playback/download.
    pub uri: Option<String>,
    /// Session-level `c=` address (or the first media-level one).
    pub connection_ip: String,
    /// `t=` start and stop, NTP-era seconds as sent (0 0 for live).
    pub time: (u64, u64),
    /// Session-level `a=` values, in order.
    pub attributes: Vec<String>,
    pub media: Vec<Media>,
    /// `y=`: the ten-digit SSRC, verbatim.
    pub ssrc: Option<String>,
    /// `f=`: media format, verbatim (see [`GbSdp::media_format`]).
    pub format: Option<String>,
}

impl GbSdp {
    /// Our INVITE offer for live video: receive PS (or MPEG-4/H.264
    /// elementary) over RTP/UDP on `port`, SSRC `ssrc`.
    pub fn live_offer(server_id: &str, ip: &str, port: u16, ssrc: &str) -> Self {
        let mut m = Media::new(
            MediaKind::Video,
            port,
            Transport::RtpAvp,
            Direction::RecvOnly,
        );
        m.payloads = vec![
            Payload::new(96, "PS", 90000),
            Payload::new(97, "MPEG4", 90000),
            Payload::new(98, "H264", 90000),
        ];
        Self {
            origin_user: server_id.to_owned(),
            origin_session_id: "0".into(),
            origin_session_version: "0".into(),
            origin_ip: ip.to_owned(),
            session_name: SessionName::Play,
            session_info: None,
            uri: None,
            connection_ip: ip.to_owned(),
            time: (0, 0),
            attributes: Vec::new(),
            media: vec![m],
            ssrc: Some(ssrc.to_owned()),
            format: None,
        }
    }

    /// The `f=` line parsed, when present and recognisable.
    pub fn media_format(&self) -> Option<MediaFormat> {
        self.format.as_deref().and_then(MediaFormat::parse)
    }

    /// The `y=` SSRC as the RTP header's 32-bit value.
    pub fn ssrc_value(&self) -> Option<u32> {
        let s = self.ssrc.as_deref()?.trim();
        if s.is_empty() || s.len() > 10 || !s.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        s.parse::<u64>().ok().and_then(|v| u32::try_from(v).ok())
    }

    /// The session-level connection address, if it is an IP literal.
    pub fn connection_addr(&self) -> Option<IpAddr> {
        self.connection_ip.trim().parse().ok()
    }

    /// The first video section.
    pub fn video(&self) -> Option<&Media> {
        self.media.iter().find(|m| m.kind == MediaKind::Video)
    }

    /// The value of a session-level attribute (see [`Media::attribute`]).
    pub fn attribute(&self, name: &str) -> Option<&str> {
        find_attribute(&self.attributes, name)
    }

    /// Render with CRLF line ends, fields in RFC 4566 order with GB's `y=`
    /// and `f=` last, as devices expect them.
    pub fn build(&self) -> String {
        let mut s = String::with_capacity(256);
        // Writing into a String cannot fail.
        let _ = self.write(&mut s);
        s
    }

    fn write(&self, s: &mut String) -> std::fmt::Result {
        write!(s, "v=0\r\n")?;
        write!(
            s,
            "o={} {} {} IN {} {}\r\n",
            self.origin_user,
            self.origin_session_id,
            self.origin_session_version,
            addr_type(&self.origin_ip),
            self.origin_ip
        )?;
        write!(s, "s={}\r\n", self.session_name.as_str())?;
        if let Some(i) = &self.session_info {
            write!(s, "i={i}\r\n")?;
        }
        if let Some(u) = &self.uri {
            write!(s, "u={u}\r\n")?;
        }
        write!(
            s,
            "c=IN {} {}\r\n",
            addr_type(&self.connection_ip),
            self.connection_ip
        )?;
        write!(s, "t={} {}\r\n", self.time.0, self.time.1)?;
        for a in &self.attributes {
            write!(s, "a={a}\r\n")?;
        }
        for m in &self.media {
            write!(
                s,
                "m={} {} {}",
                m.kind.as_str(),
                m.port,
                m.transport.as_str()
            )?;
            for p in &m.payloads {
                write!(s, " {}", p.pt)?;
            }
            s.push_str("\r\n");
            if let Some(ip) = &m.connection_ip {
                write!(s, "c=IN {} {ip}\r\n", addr_type(ip))?;
            }
            write!(s, "a={}\r\n", m.direction.as_str())?;
            for p in &m.payloads {
                if !p.encoding.is_empty() {
                    write!(s, "a=rtpmap:{} {}/{}\r\n", p.pt, p.encoding, p.clock)?;
                }
            }
            if let Some(setup) = m.setup {
                write!(s, "a=setup:{}\r\n", setup.as_str())?;
            }
            if m.connection_new {
                s.push_str("a=connection:new\r\n");
            }
            if let Some(d) = m.download_speed {
                write!(s, "a=downloadspeed:{d}\r\n")?;
            }
            for a in &m.attributes {
                write!(s, "a={a}\r\n")?;
            }
        }
        if let Some(y) = &self.ssrc {
            write!(s, "y={y}\r\n")?;
        }
        if let Some(f) = &self.format {
            write!(s, "f={f}\r\n")?;
        }
        Ok(())
    }

    /// Parse an SDP body. Tolerant of LF-only line ends, surrounding
    /// whitespace, unknown line types and attributes; strict only about
    /// what we cannot work without (`o=`, `s=`, an address in `c=`).
    pub fn parse(text: &str) -> Result<Self, SdpError> {
        if text.len() > MAX_SDP_LEN {
            return Err(SdpError::TooLarge(text.len()));
        }
        let mut origin: Option<(String, String, String, String)> = None;
        let mut session_name = None;
        let mut session_info = None;
        let mut uri = None;
        let mut connection_ip: Option<String> = None;
        let mut time = (0, 0);
        let mut attributes = Vec::new();
        let mut media: Vec<Media> = Vec::new();
        // rtpmaps arrive after the m= line that lists their payload types.
        let mut ssrc = None;
        let mut format = None;

        for (idx, raw) in text.lines().enumerate() {
            let line_no = idx + 1;
            let line = raw.trim_ascii();
            let Some((field, value)) = line.split_once('=') else {
                continue;
            };
            let mut chars = field.trim_ascii().chars();
            let (Some(field), None) = (chars.next(), chars.next()) else {
                continue;
            };
            let value = value.trim_ascii();
            let malformed = || SdpError::Malformed {
                line: line_no,
                field,
            };
            match field {
                'o' => {
                    let p: Vec<&str> = value.split_ascii_whitespace().collect();
                    // username sess-id sess-version nettype addrtype address
                    if p.len() < 6 {
                        return Err(malformed());
                    }
                    origin = Some((p[0].into(), p[1].into(), p[2].into(), p[5].into()));
                }
                's' => session_name = Some(SessionName::parse(value)),
                'i' if media.is_empty() => session_info = Some(value.to_owned()),
                'u' => uri = Some(value.to_owned()),
                'c' => {
                    let p: Vec<&str> = value.split_ascii_whitespace().collect();
                    if p.len() < 3 {
                        return Err(malformed());
                    }
                    // Drop a multicast `/ttl` suffix; we only need the host.
                    let ip = p[2].split('/').next().unwrap_or(p[2]).to_owned();
                    if ip.is_empty() {
                        return Err(malformed());
                    }
                    match media.last_mut() {
                        Some(m) => m.connection_ip = Some(ip),
                        None => connection_ip = Some(ip),
                    }
                }
                't' => {
                    let mut p = value.split_ascii_whitespace().map(str::parse::<u64>);
                    match (p.next(), p.next()) {
                        (Some(Ok(a)), Some(Ok(b))) => time = (a, b),
                        _ => return Err(malformed()),
                    }
                }
                'm' => {
                    if media.len() == MAX_MEDIA {
                        return Err(SdpError::TooManyMedia);
                    }
                    media.push(parse_m_line(value).ok_or_else(malformed)?);
                }
                'a' => match media.last_mut() {
                    Some(m) => apply_media_attribute(m, value),
                    None => {
                        if attributes.len() < MAX_EXTRA_ATTRIBUTES {
                            attributes.push(value.to_owned());
                        }
                    }
                },
                'y' => ssrc = Some(value.to_owned()),
                'f' => format = Some(value.to_owned()),
                // v, b, z, k, r, e, p and anything unknown: not needed.
                _ => {}
            }
        }

        let (origin_user, origin_session_id, origin_session_version, origin_ip) =
            origin.ok_or(SdpError::Missing("o"))?;
        // Some devices leave `c=` out and put their media address only in
        // `o=` (RFC 4566 §5.7 requires c=, but the address is still there).
        let connection_ip = connection_ip
            .or_else(|| media.iter().find_map(|m| m.connection_ip.clone()))
            .or_else(|| {
                let ip = origin_ip.trim();
                ip.parse::<IpAddr>().is_ok().then(|| ip.to_owned())
            })
            .ok_or(SdpError::Missing("c"))?;
        Ok(Self {
            origin_user,
            origin_session_id,
            origin_session_version,
            origin_ip,
            session_name: session_name.ok_or(SdpError::Missing("s"))?,
            session_info,
            uri,
            connection_ip,
            time,
            attributes,
            media,
            ssrc,
            format,
        })
    }
}

fn addr_type(ip: &str) -> &'static str {
    if ip.contains(':') { "IP6" } else { "IP4" }
}

fn parse_m_line(value: &str) -> Option<Media> {
    let mut p = value.split_ascii_whitespace();
    let kind = match p.next()? {
        k if k.eq_ignore_ascii_case("video") => MediaKind::Video,
        k if k.eq_ignore_ascii_case("audio") => MediaKind::Audio,
        k => MediaKind::Other(k.to_owned()),
    };
    // `port/count` is legal SDP; GB never uses the count.
    let port_field = p.next()?;
    let port = port_field.split('/').next()?.parse::<u16>().ok()?;
    let transport = Transport::parse(p.next()?);
    let mut m = Media::new(kind, port, transport, Direction::SendRecv);
    for fmt in p.take(MAX_PAYLOADS) {
        // Non-numeric formats are not RTP payload types; skip them.
        if let Ok(pt) = fmt.parse::<u8>() {
            let (encoding, clock) = static_payload(pt);
            m.payloads.push(Payload::new(pt, encoding, clock));
        }
    }
    Some(m)
}

/// RFC 3551 static payload types GB devices use without an rtpmap.
fn static_payload(pt: u8) -> (&'static str, u32) {
    match pt {
        0 => ("PCMU", 8000),
        8 => ("PCMA", 8000),
        4 => ("G723", 8000),
        18 => ("G729", 8000),
        _ => ("", 0),
    }
}

fn apply_media_attribute(m: &mut Media, value: &str) {
    let (name, arg) = match value.split_once(':') {
        Some((n, a)) => (n.trim_ascii(), Some(a.trim_ascii())),
        None => (value, None),
    };
    let lname = name.to_ascii_lowercase();
    match (lname.as_str(), arg) {
        ("recvonly", None) => m.direction = Direction::RecvOnly,
        ("sendonly", None) => m.direction = Direction::SendOnly,
        ("sendrecv", None) => m.direction = Direction::SendRecv,
        ("inactive", None) => m.direction = Direction::Inactive,
        ("rtpmap", Some(arg)) if apply_rtpmap(m, arg) => {}
        ("setup", Some(arg)) if parse_setup(arg).is_some() => m.setup = parse_setup(arg),
        ("connection", Some(arg)) if arg.eq_ignore_ascii_case("new") => m.connection_new = true,
        ("downloadspeed", Some(arg)) if arg.parse::<u32>().is_ok() => {
            m.download_speed = arg.parse().ok();
        }
        _ => {
            if m.attributes.len() < MAX_EXTRA_ATTRIBUTES {
                m.attributes.push(value.to_owned());
            }
        }
    }
}

fn parse_setup(s: &str) -> Option<Setup> {
    match s.to_ascii_lowercase().as_str() {
        "active" => Some(Setup::Active),
        "passive" => Some(Setup::Passive),
        "actpass" => Some(Setup::ActPass),
        _ => None,
    }
}

/// Apply `pt enc/clock[/channels]` to the listed payload; false (kept as a
/// raw attribute) if it does not parse or names an unlisted payload.
fn apply_rtpmap(m: &mut Media, arg: &str) -> bool {
    let Some((pt, rest)) = arg.split_once(char::is_whitespace) else {
        return false;
    };
    let Ok(pt) = pt.parse::<u8>() else {
        return false;
    };
    let mut parts = rest.trim_ascii().split('/');
    let encoding = parts.next().unwrap_or("").trim_ascii();
    let Some(Ok(clock)) = parts.next().map(|c| c.trim_ascii().parse::<u32>()) else {
        return false;
    };
    if encoding.is_empty() || parts.next().is_some() {
        // Channel counts are not modelled; keep such rtpmaps verbatim so
        // nothing is lost on re-render.
        return false;
    }
    match m.payloads.iter_mut().find(|p| p.pt == pt) {
        Some(p) => {
            p.encoding = encoding.to_owned();
            p.clock = clock;
            true
        }
        None => false,
    }
}

#[cfg(test)]
#[path = "sdp_quirks_tests.rs"]
mod quirks_tests;

#[cfg(test)]
mod tests {
    use super::*;

    const LIVE_OFFER: &str = "v=0\r\n\
        o=34020000002000000001 0 0 IN IP4 192.168.1.10\r\n\
        s=Play\r\n\
        c=IN IP4 192.168.1.10\r\n\
        t=0 0\r\n\
        m=video 30000 RTP/AVP 96 97 98\r\n\
        a=recvonly\r\n\
        a=rtpmap:96 PS/90000\r\n\
        a=rtpmap:97 MPEG4/90000\r\n\
        a=rtpmap:98 H264/90000\r\n\
        y=0200000001\r\n";

    #[test]
    fn live_offer_renders_exactly() {
        let sdp = GbSdp::live_offer("34020000002000000001", "192.168.1.10", 30000, "0200000001");
        assert_eq!(sdp.build(), LIVE_OFFER);
        assert_eq!(GbSdp::parse(LIVE_OFFER).unwrap(), sdp);
        assert_eq!(sdp.ssrc_value(), Some(200_000_001));
    }

    #[test]
    fn camera_answer() {
        let answer = "v=0\n\
            o=34020000001320000001 0 0 IN IP4 192.168.28.110\n\
            s=Play\n\
            i=VCam Live Video\n\
            c=IN IP4 192.168.28.110\n\
            t=0 0\n\
            m=video 9712 RTP/AVP 96\n\
            a=sendonly\n\
            a=rtpmap:96 PS/90000\n\
            a=streamprofile:0\n\
            y=0000001002\n\
            f=v/0/0/0/0/0a/0/0/0\n";
        let sdp = GbSdp::parse(answer).unwrap();
        assert_eq!(sdp.origin_user, "34020000001320000001");
        assert_eq!(sdp.origin_ip, "192.168.28.110");
        assert_eq!(sdp.session_name, SessionName::Play);
        assert_eq!(sdp.session_info.as_deref(), Some("VCam Live Video"));
        assert_eq!(sdp.connection_addr(), Some([192, 168, 28, 110].into()));
        let v = sdp.video().unwrap();
        assert_eq!(v.port, 9712);
        assert_eq!(v.transport, Transport::RtpAvp);
        assert_eq!(v.direction, Direction::SendOnly);
        assert_eq!(v.payloads, vec![Payload::new(96, "PS", 90000)]);
        assert_eq!(v.attribute("streamprofile"), Some("0"));
        assert_eq!(v.attributes, vec!["streamprofile:0".to_string()]);
        assert_eq!(sdp.ssrc.as_deref(), Some("0000001002"));
        assert_eq!(sdp.ssrc_value(), Some(1002));
        assert_eq!(sdp.format.as_deref(), Some("v/0/0/0/0/0a/0/0/0"));
        let f = sdp.media_format().unwrap();
        assert_eq!(f.video_codec, Some(0));
        assert_eq!(f.audio_sample_rate, Some(0));
        assert_eq!(f.to_f_line_value(), "v/0/0/0/0/0a/0/0/0");
        // Round trip: CRLF rendering parses back identically.
        let built = sdp.build();
        assert!(built.contains("\r\ny=0000001002\r\nf=v/0/0/0/0/0a/0/0/0\r\n"));
        assert_eq!(GbSdp::parse(&built).unwrap(), sdp);
    }

    /// Found by the `gb_sdp` fuzz target: a vertical tab (not ASCII
    /// whitespace to the tokenizer, but whitespace to Unicode `trim`) ended
    /// the `c=` address; it survived the first parse and was trimmed away
    /// by the second. Every trim in the parser is ASCII now.
    #[test]
    fn control_characters_round_trip_unchanged() {
        let text = "v=0\r\no=u 1 1 IN IP4 10.0.0.1\x0b\r\ns=Play\x0b\r\n\
                    c=IN IP4 \x01\0\x0b\r\r:\r\nt=0 0\r\n";
        let sdp = GbSdp::parse(text).unwrap();
        assert_eq!(sdp.connection_ip, "\x01\0\x0b");
        assert_eq!(GbSdp::parse(&sdp.build()).unwrap(), sdp);
    }

    #[test]
    fn playback_tcp_roundtrip() {
        let mut m = Media::new(
            MediaKind::Video,
            0,
            Transport::TcpRtpAvp,
            Direction::RecvOnly,
        );
        m.payloads = vec![Payload::new(96, "PS", 90000)];
        m.setup = Some(Setup::Passive);
        m.connection_new = true;
        m.download_speed = Some(4);
        m.attributes.push("filesize:1048576".into());
        let sdp = GbSdp {
            origin_user: "34020000002000000001".into(),
            origin_session_id: "0".into(),
            origin_session_version: "0".into(),
            origin_ip: "10.0.0.1".into(),
            session_name: SessionName::Download,
            session_info: None,
            uri: Some("34020000001310000001:0".into()),
            connection_ip: "10.0.0.1".into(),
            time: (1_700_000_000, 1_700_003_600),
            attributes: vec!["tool:camgate".into()],
            media: vec![m],
            ssrc: Some("1200000001".into()),
            format: Some("v/2/6/25/1/4096a/1/8/1".into()),
        };
        let text = sdp.build();
        assert!(text.contains("u=34020000001310000001:0\r\n"));
        assert!(text.contains("m=video 0 TCP/RTP/AVP 96\r\n"));
        assert!(text.contains("a=setup:passive\r\na=connection:new\r\na=downloadspeed:4\r\n"));
        assert_eq!(GbSdp::parse(&text).unwrap(), sdp);
        let f = sdp.media_format().unwrap();
        assert_eq!(
            f,
            MediaFormat {
                video_codec: Some(2),
                resolution: Some(6),
                frame_rate: Some(25),
                bitrate_type: Some(1),
                bitrate: Some(4096),
                audio_codec: Some(1),
                audio_bitrate: Some(8),
                audio_sample_rate: Some(1),
            }
        );
        assert_eq!(f.to_f_line_value(), "v/2/6/25/1/4096a/1/8/1");
        // Empty fields, as many devices send them.
        let empty = MediaFormat::parse("v/////a///").unwrap();
        assert_eq!(empty, MediaFormat::default());
        assert_eq!(MediaFormat::parse("x/1"), None);
    }

    #[test]
    fn tolerance_and_errors() {
        // Whitespace, unknown lines, media-level c=, talk with audio PCMA.
        let text = "  v=0 \n o=3402 1 2 IN IP4 1.2.3.4\r\ns=talk\nb=AS:64\nz=junk\nt=0 0\n\
                    m=audio 8000 RTP/AVP 8 bogus\nc=IN IP4 5.6.7.8\na=sendrecv\na=rtpmap:8 PCMA/8000/1\n\
                    junk line\ny=0100000001\n";
        let sdp = GbSdp::parse(text).unwrap();
        assert_eq!(sdp.session_name, SessionName::Talk);
        assert_eq!(sdp.connection_ip, "5.6.7.8");
        let a = &sdp.media[0];
        assert_eq!(a.kind, MediaKind::Audio);
        assert_eq!(a.payloads, vec![Payload::new(8, "PCMA", 8000)]);
        assert_eq!(a.attributes, vec!["rtpmap:8 PCMA/8000/1".to_string()]);
        assert_eq!(GbSdp::parse(&sdp.build()).unwrap(), sdp);

        assert_eq!(
            GbSdp::parse("v=0\ns=Play\nc=IN IP4 1.1.1.1\n"),
            Err(SdpError::Missing("o"))
        );
        // No c=: the o= address serves (see quirks_tests); with none
        // there either, c= is missing.
        assert_eq!(
            GbSdp::parse("o=a 0 0 IN IP4 1.1.1.1\ns=Play\n").map(|s| s.connection_ip),
            Ok("1.1.1.1".to_owned())
        );
        assert_eq!(
            GbSdp::parse("o=a 0 0 IN IP4 -\ns=Play\n"),
            Err(SdpError::Missing("c"))
        );
        assert_eq!(
            GbSdp::parse("o=a 0 0 IN IP4 1.1.1.1\nc=IN IP4 1.1.1.1\n"),
            Err(SdpError::Missing("s"))
        );
        assert!(matches!(
            GbSdp::parse("o=a 0 0 IN IP4 1.1.1.1\ns=Play\nc=IN IP4 x\nm=video 99999 RTP/AVP 96\n"),
            Err(SdpError::Malformed {
                line: 4,
                field: 'm'
            })
        ));
        assert!(matches!(
            GbSdp::parse(&"a".repeat(MAX_SDP_LEN + 1)),
            Err(SdpError::TooLarge(_))
        ));
        let many = "m=video 1 RTP/AVP 96\n".repeat(MAX_MEDIA + 1);
        assert_eq!(
            GbSdp::parse(&format!(
                "o=a 0 0 IN IP4 1.1.1.1\ns=Play\nc=IN IP4 1.1.1.1\n{many}"
            )),
            Err(SdpError::TooManyMedia)
        );
        assert_eq!(
            GbSdp {
                ssrc: Some("4294967296".into()),
                ..GbSdp::live_offer("a", "::1", 1, "x")
            }
            .ssrc_value(),
            None
        );
        assert!(
            GbSdp::live_offer("a", "::1", 1, "x")
                .build()
                .contains("c=IN IP6 ::1\r\n")
        );
    }

    /// Rebuild SDP text from Wireshark's dissected view ("… (v): 0",
    /// "Unknown: y=…"); the trace holds no raw SDP bytes.
    fn sdp_bodies_from_trace(text: &str) -> Vec<String> {
        let mut bodies = Vec::new();
        let mut cur: Option<String> = None;
        for line in text.lines() {
            let t = line.trim();
            if t == "Session Description Protocol" {
                if let Some(b) = cur.take() {
                    bodies.push(b);
                }
                cur = Some(String::new());
                continue;
            }
            let Some(body) = cur.as_mut() else { continue };
            if t.starts_with("No. ") {
                bodies.push(cur.take().unwrap_or_default());
                continue;
            }
            if let Some(rest) = t.strip_prefix("Unknown: ") {
                body.push_str(rest);
                body.push('\n');
            } else if let Some(open) = t.find("): ")
                && t[..open].ends_with(|c: char| c.is_ascii_lowercase())
                && t[..open].rfind('(').is_some_and(|p| p + 2 == open)
            {
                let field = &t[open - 1..open];
                body.push_str(&format!("{field}={}\n", &t[open + 3..]));
            }
        }
        bodies.extend(cur);
        bodies
    }

    #[test]
    fn dahua_trace_bodies() {
        let Some(path) = crate::testdata::file("dahua_ipc_sip_trace.txt") else {
            return;
        };
        let text = std::fs::read_to_string(path).unwrap();
        let bodies = sdp_bodies_from_trace(&text);
        assert_eq!(bodies.len(), 4, "two INVITE offers and two 200 OK answers");
        let mut ports = Vec::new();
        for body in &bodies {
            let sdp = GbSdp::parse(body).unwrap_or_else(|e| panic!("{e}: {body}"));
            assert_eq!(sdp.origin_user, "34020000001320000001");
            assert_eq!(sdp.session_name, SessionName::Play);
            assert_eq!(sdp.time, (0, 0));
            let v = sdp.video().unwrap();
            ports.push(v.port);
            assert_eq!(v.payload("PS").map(|p| (p.pt, p.clock)), Some((96, 90000)));
            if sdp.origin_ip == "192.168.28.10" {
                // Platform offer: three payloads, no y= in this platform's offer.
                assert_eq!(v.direction, Direction::RecvOnly);
                assert_eq!(
                    v.payloads,
                    vec![
                        Payload::new(96, "PS", 90000),
                        Payload::new(98, "H264", 90000),
                        Payload::new(97, "MPEG4", 90000),
                    ]
                );
                assert_eq!(sdp.ssrc, None);
            } else {
                assert_eq!(sdp.origin_ip, "192.168.28.110");
                assert_eq!(sdp.connection_ip, "192.168.28.110");
                assert_eq!(sdp.session_info.as_deref(), Some("VCam Live Video"));
                assert_eq!(v.direction, Direction::SendOnly);
                assert_eq!(v.payloads, vec![Payload::new(96, "PS", 90000)]);
                assert_eq!(v.attribute("streamprofile"), Some("0"));
                assert_eq!(sdp.ssrc.as_deref(), Some("0000000000"));
                assert_eq!(sdp.ssrc_value(), Some(0));
                assert_eq!(sdp.format.as_deref(), Some("v/0/0/0/0/0a/0/0/0"));
            }
            assert_eq!(GbSdp::parse(&sdp.build()).unwrap(), sdp);
        }
        assert_eq!(ports, vec![33736, 9708, 33740, 9712]);
    }

    #[test]
    fn random_input_never_panics() {
        let mut x: u64 = 0x2545_f491_4f6c_dd1d;
        let mut next = || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        let pieces = [
            "v=0",
            "o=a 0 0 IN IP4 1.1.1.1",
            "s=Play",
            "c=IN IP4 1.1.1.1",
            "t=0 0",
            "t=1",
            "m=video 5 RTP/AVP 96",
            "m=audio",
            "a=rtpmap:96 PS/90000",
            "a=rtpmap:",
            "a=rtpmap:96",
            "a=setup:x",
            "a=downloadspeed:",
            "y=",
            "f=v/a",
            "f=v/1/2/3/4/5/6a/1/2/3/4",
            "\r",
            "\n",
            "=",
            "中",
            "a=connection:new",
        ];
        let mut parsed = 0;
        for round in 0..4000 {
            let mut s = String::new();
            if round % 3 == 1 {
                s.push_str("o=a 0 0 IN IP4 1.1.1.1\ns=Play\nc=IN IP4 1.1.1.1\n");
            }
            for _ in 0..(next() % 24) {
                if round % 3 == 0 {
                    let b: Vec<u8> = (0..next() % 12).map(|_| next() as u8).collect();
                    s.push_str(&String::from_utf8_lossy(&b));
                } else {
                    s.push_str(pieces[(next() % pieces.len() as u64) as usize]);
                    if next() % 2 == 0 {
                        s.push('\n');
                    }
                }
            }
            if let Ok(sdp) = GbSdp::parse(&s) {
                parsed += 1;
                let _ = sdp.media_format();
                let _ = sdp.ssrc_value();
                assert_eq!(GbSdp::parse(&sdp.build()).as_ref(), Ok(&sdp), "{s:?}");
            }
            let _ = MediaFormat::parse(&s);
        }
        // The generator must reach the success path, or the round-trip
        // assertion above tests nothing.
        assert!(parsed > 50, "only {parsed} inputs parsed");
    }
}
