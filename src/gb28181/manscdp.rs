//! MANSCDP: the XML bodies of GB28181 `MESSAGE`s (GB/T 28181-2016 Annex A,
//! `Application/MANSCDP+xml`): keepalive notifications (A.2.5), catalog and
//! device-info queries (A.2.4) and their responses (A.2.6).
//!
//! Devices declare `encoding="GB2312"` and send GBK/GB18030 bytes, so
//! [`decode_body`] reads the declaration first and decodes with
//! `encoding_rs` before parsing. Parsing builds a small bounded element tree
//! with quick-xml's event reader and maps it to typed messages by element
//! name, ignoring elements we do not model: devices add vendor elements
//! freely, and a missing optional element must not cost us the message.

use std::fmt::Write as _;

use encoding_rs::{Encoding, GB18030, UTF_8};
use quick_xml::events::Event;
use quick_xml::reader::Reader;

/// Largest body we decode. Catalog responses are split by devices into
/// several MESSAGEs well under UDP size; 64 KiB leaves ample room.
pub const MAX_BODY_LEN: usize = 64 * 1024;
/// Deepest element nesting accepted (real bodies nest 4 deep).
pub const MAX_DEPTH: usize = 16;
/// Most elements in one body.
pub const MAX_ELEMENTS: usize = 8192;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ManscdpError {
    #[error("body is {0} bytes, above the {MAX_BODY_LEN} byte limit")]
    TooLarge(usize),
    #[error("unsupported character encoding {0:?}")]
    UnknownEncoding(String),
    #[error("malformed XML at byte {position}: {message}")]
    Xml { position: u64, message: String },
    #[error("no root element")]
    NoRoot,
    #[error("elements nested deeper than {MAX_DEPTH}")]
    TooDeep,
    #[error("more than {MAX_ELEMENTS} elements")]
    TooManyElements,
    #[error("required element <{0}> is missing")]
    MissingElement(&'static str),
    #[error("element <{element}> has invalid value {value:?}")]
    InvalidValue {
        element: &'static str,
        value: String,
    },
}

impl ManscdpError {
    /// Stable label for the `camgate_manscdp_errors` metric.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::TooLarge(_) => "too_large",
            Self::UnknownEncoding(_) => "encoding",
            Self::Xml { .. } => "xml",
            Self::NoRoot => "no_root",
            Self::TooDeep | Self::TooManyElements => "too_complex",
            Self::MissingElement(_) => "missing_element",
            Self::InvalidValue { .. } => "invalid_value",
        }
    }
}

/// The fields every MANSCDP message starts with, for kinds we do not model.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    pub cmd_type: String,
    pub sn: Option<u32>,
    pub device_id: Option<String>,
}

/// A decoded MANSCDP body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    Notify(Notify),
    Response(Response),
    Query(Query),
    /// `<Control>` and any other root element.
    Other {
        root: String,
        header: Header,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Notify {
    /// A.2.5.2: the device is alive. `status` is `OK` normally; empty if the
    /// device left it out.
    Keepalive {
        sn: u32,
        device_id: String,
        status: String,
    },
    /// Alarm, MediaStatus, Catalog notifications…
    Other(Header),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Response {
    Catalog(CatalogResponse),
    DeviceInfo(DeviceInfoResponse),
    Other {
        header: Header,
        result: Option<String>,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Query {
    Catalog { sn: u32, device_id: String },
    DeviceInfo { sn: u32, device_id: String },
    DeviceStatus { sn: u32, device_id: String },
    Other(Header),
}

/// Queries we build (A.2.4).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QueryKind {
    Catalog,
    DeviceInfo,
    DeviceStatus,
}

impl QueryKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Catalog => "Catalog",
            Self::DeviceInfo => "DeviceInfo",
            Self::DeviceStatus => "DeviceStatus",
        }
    }
}

/// A.2.6.4 catalog response: one page of a device's channel list. Devices
/// split long lists over several MESSAGEs with the same SN; `sum_num` is
/// the total across pages. A response to a catalog SUBSCRIBE carries only
/// `Result` and no list.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CatalogResponse {
    pub sn: u32,
    pub device_id: String,
    pub sum_num: Option<u32>,
    pub items: Vec<CatalogItem>,
    pub result: Option<String>,
}

/// One `<Item>` of a catalog (A.2.6.4, table "目录项").
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CatalogItem {
    pub device_id: String,
    pub name: Option<String>,
    pub manufacturer: Option<String>,
    pub model: Option<String>,
    pub owner: Option<String>,
    pub civil_code: Option<String>,
    pub block: Option<String>,
    pub address: Option<String>,
    /// 1 if the item has children (a directory or NVR), else 0.
    pub parental: Option<u32>,
    pub parent_id: Option<String>,
    pub safety_way: Option<u32>,
    /// 1 = RFC 3261 registration, 2 = password-based, 3 = certificate.
    pub register_way: Option<u32>,
    pub cert_num: Option<String>,
    pub certifiable: Option<u32>,
    pub err_code: Option<u32>,
    pub end_time: Option<String>,
    pub secrecy: Option<u32>,
    pub ip_address: Option<String>,
    pub port: Option<u16>,
    /// `ON`/`OFF` (some devices send `ONLINE`/`OFFLINE`).
    pub status: Option<String>,
    pub longitude: Option<String>,
    pub latitude: Option<String>,
    pub stream_num: Option<u32>,
    /// `<Info><PTZType>`: 1 dome, 2 half-dome, 3 fixed, 4 remote-controlled.
    pub ptz_type: Option<u32>,
    /// `<Info><DownloadSpeed>`: e.g. `1/2/4/8`.
    pub download_speed: Option<String>,
}

impl CatalogItem {
    /// Whether `status` says the channel is up.
    pub fn is_on(&self) -> bool {
        self.status
            .as_deref()
            .is_some_and(|s| s.eq_ignore_ascii_case("ON") || s.eq_ignore_ascii_case("ONLINE"))
    }
}

/// A.2.6.3 device-info response.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DeviceInfoResponse {
    pub sn: u32,
    pub device_id: String,
    pub device_name: Option<String>,
    pub result: Option<String>,
    pub device_type: Option<String>,
    pub manufacturer: Option<String>,
    pub model: Option<String>,
    pub firmware: Option<String>,
    pub max_camera: Option<u32>,
    pub max_alarm: Option<u32>,
    /// Number of video channels.
    pub channel: Option<u32>,
}

impl Message {
    pub fn cmd_type(&self) -> &str {
        match self {
            Self::Notify(Notify::Keepalive { .. }) => "Keepalive",
            Self::Notify(Notify::Other(h)) | Self::Query(Query::Other(h)) => &h.cmd_type,
            Self::Response(Response::Catalog(_)) => "Catalog",
            Self::Response(Response::DeviceInfo(_)) => "DeviceInfo",
            Self::Response(Response::Other { header, .. }) | Self::Other { header, .. } => {
                &header.cmd_type
            }
            Self::Query(Query::Catalog { .. }) => "Catalog",
            Self::Query(Query::DeviceInfo { .. }) => "DeviceInfo",
            Self::Query(Query::DeviceStatus { .. }) => "DeviceStatus",
        }
    }

    pub fn sn(&self) -> Option<u32> {
        match self {
            Self::Notify(Notify::Keepalive { sn, .. })
            | Self::Query(Query::Catalog { sn, .. })
            | Self::Query(Query::DeviceInfo { sn, .. })
            | Self::Query(Query::DeviceStatus { sn, .. }) => Some(*sn),
            Self::Response(Response::Catalog(c)) => Some(c.sn),
            Self::Response(Response::DeviceInfo(d)) => Some(d.sn),
            Self::Notify(Notify::Other(h))
            | Self::Query(Query::Other(h))
            | Self::Response(Response::Other { header: h, .. })
            | Self::Other { header: h, .. } => h.sn,
        }
    }

    pub fn device_id(&self) -> Option<&str> {
        match self {
            Self::Notify(Notify::Keepalive { device_id, .. })
            | Self::Query(Query::Catalog { device_id, .. })
            | Self::Query(Query::DeviceInfo { device_id, .. })
            | Self::Query(Query::DeviceStatus { device_id, .. }) => Some(device_id),
            Self::Response(Response::Catalog(c)) => Some(&c.device_id),
            Self::Response(Response::DeviceInfo(d)) => Some(&d.device_id),
            Self::Notify(Notify::Other(h))
            | Self::Query(Query::Other(h))
            | Self::Response(Response::Other { header: h, .. })
            | Self::Other { header: h, .. } => h.device_id.as_deref(),
        }
    }

    /// Render as a MANSCDP document (GB2312 declaration, CRLF) — what our
    /// platform and the simulated camera send. Pass the result through
    /// [`encode_body`] to get the bytes on the wire.
    pub fn to_xml(&self) -> String {
        let mut w = XmlWriter::new();
        match self {
            Self::Notify(n) => {
                w.open("Notify");
                match n {
                    Notify::Keepalive {
                        sn,
                        device_id,
                        status,
                    } => {
                        w.header("Keepalive", Some(*sn), Some(device_id));
                        w.leaf("Status", status);
                    }
                    Notify::Other(h) => w.header_of(h),
                }
                w.close("Notify");
            }
            Self::Query(q) => {
                w.open("Query");
                match q {
                    Query::Catalog { sn, device_id } => {
                        w.header("Catalog", Some(*sn), Some(device_id))
                    }
                    Query::DeviceInfo { sn, device_id } => {
                        w.header("DeviceInfo", Some(*sn), Some(device_id))
                    }
                    Query::DeviceStatus { sn, device_id } => {
                        w.header("DeviceStatus", Some(*sn), Some(device_id))
                    }
                    Query::Other(h) => w.header_of(h),
                }
                w.close("Query");
            }
            Self::Response(r) => {
                w.open("Response");
                match r {
                    Response::Catalog(c) => write_catalog(&mut w, c),
                    Response::DeviceInfo(d) => write_device_info(&mut w, d),
                    Response::Other { header, result } => {
                        w.header_of(header);
                        w.opt("Result", result.as_deref());
                    }
                }
                w.close("Response");
            }
            Self::Other { root, header } => {
                let root = if is_xml_name(root) { root } else { "Control" };
                w.open(root);
                w.header_of(header);
                w.close(root);
            }
        }
        w.finish()
    }
}

fn write_catalog(w: &mut XmlWriter, c: &CatalogResponse) {
    w.header("Catalog", Some(c.sn), Some(&c.device_id));
    w.opt_num("SumNum", c.sum_num);
    if c.sum_num.is_some() || !c.items.is_empty() {
        w.raw(&format!("<DeviceList Num=\"{}\">\r\n", c.items.len()));
        for it in &c.items {
            w.open("Item");
            w.leaf("DeviceID", &it.device_id);
            w.opt("Name", it.name.as_deref());
            w.opt("Manufacturer", it.manufacturer.as_deref());
            w.opt("Model", it.model.as_deref());
            w.opt("Owner", it.owner.as_deref());
            w.opt("CivilCode", it.civil_code.as_deref());
            w.opt("Block", it.block.as_deref());
            w.opt("Address", it.address.as_deref());
            w.opt_num("Parental", it.parental);
            w.opt("ParentID", it.parent_id.as_deref());
            w.opt_num("SafetyWay", it.safety_way);
            w.opt_num("RegisterWay", it.register_way);
            w.opt("CertNum", it.cert_num.as_deref());
            w.opt_num("Certifiable", it.certifiable);
            w.opt_num("ErrCode", it.err_code);
            w.opt("EndTime", it.end_time.as_deref());
            w.opt_num("Secrecy", it.secrecy);
            w.opt("IPAddress", it.ip_address.as_deref());
            w.opt_num("Port", it.port);
            w.opt("Status", it.status.as_deref());
            w.opt("Longitude", it.longitude.as_deref());
            w.opt("Latitude", it.latitude.as_deref());
            w.opt_num("StreamNum", it.stream_num);
            if it.ptz_type.is_some() || it.download_speed.is_some() {
                w.open("Info");
                w.opt_num("PTZType", it.ptz_type);
                w.opt("DownloadSpeed", it.download_speed.as_deref());
                w.close("Info");
            }
            w.close("Item");
        }
        w.close("DeviceList");
    }
    w.opt("Result", c.result.as_deref());
}

fn write_device_info(w: &mut XmlWriter, d: &DeviceInfoResponse) {
    w.header("DeviceInfo", Some(d.sn), Some(&d.device_id));
    w.opt("DeviceName", d.device_name.as_deref());
    w.opt("Result", d.result.as_deref());
    w.opt("DeviceType", d.device_type.as_deref());
    w.opt("Manufacturer", d.manufacturer.as_deref());
    w.opt("Model", d.model.as_deref());
    w.opt("Firmware", d.firmware.as_deref());
    w.opt_num("MaxCamera", d.max_camera);
    w.opt_num("MaxAlarm", d.max_alarm);
    w.opt_num("Channel", d.channel);
}

/// A query document (A.2.4), e.g. the catalog query sent after REGISTER.
pub fn query_xml(kind: QueryKind, sn: u32, device_id: &str) -> String {
    let device_id = device_id.to_owned();
    Message::Query(match kind {
        QueryKind::Catalog => Query::Catalog { sn, device_id },
        QueryKind::DeviceInfo => Query::DeviceInfo { sn, device_id },
        QueryKind::DeviceStatus => Query::DeviceStatus { sn, device_id },
    })
    .to_xml()
}

/// The wire bytes for a document: GB18030 (a superset of the declared
/// GB2312/GBK that encodes every character) unless the declaration names
/// UTF-8.
pub fn encode_body(xml: &str) -> Vec<u8> {
    match declared_encoding(xml.as_bytes()) {
        Some(label) if Encoding::for_label(label.as_bytes()) == Some(UTF_8) => {
            xml.as_bytes().to_vec()
        }
        _ => GB18030.encode(xml).0.into_owned(),
    }
}

/// Decode body bytes to text per the XML declaration (see [`decode_body`]).
pub fn decode_text(body: &[u8]) -> Result<String, ManscdpError> {
    if body.len() > MAX_BODY_LEN {
        return Err(ManscdpError::TooLarge(body.len()));
    }
    let body = body.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(body);
    let encoding = match declared_encoding(body) {
        None => UTF_8,
        Some(label) => match Encoding::for_label(label.trim().as_bytes()) {
            // GB2312 and GBK resolve to encoding_rs's GBK, whose decoder is
            // the GB18030 one; name GB18030 explicitly so intent is clear.
            Some(e) if e == encoding_rs::GBK || e == GB18030 => GB18030,
            Some(e) => e,
            None => return Err(ManscdpError::UnknownEncoding(label)),
        },
    };
    if encoding == GB18030
        && !body.is_ascii()
        && let Ok(s) = std::str::from_utf8(body)
    {
        // Declared GB2312 (the GB/T 28181 default, often hard-coded) but
        // sent as UTF-8: GBK text of two or more Chinese characters is
        // almost never valid UTF-8, so valid UTF-8 here is UTF-8.
        tracing::debug!("MANSCDP body declared GB but is UTF-8; decoding as UTF-8");
        return Ok(s.to_owned());
    }
    if encoding == UTF_8 {
        if let Ok(s) = std::str::from_utf8(body) {
            return Ok(s.to_owned());
        }
        // Bodies labelled UTF-8 (or unlabelled) that are really GBK are
        // common from NVRs that hard-code the declaration; GB18030 decodes
        // them correctly and any real UTF-8 would have passed above.
        tracing::debug!("MANSCDP body is not valid UTF-8; decoding as GB18030");
        return Ok(GB18030.decode_without_bom_handling(body).0.into_owned());
    }
    // Malformed sequences become U+FFFD: a garbled name is better than a
    // lost keepalive.
    Ok(encoding.decode_without_bom_handling(body).0.into_owned())
}

/// The `encoding` pseudo-attribute of a leading `<?xml …?>`, if any.
fn declared_encoding(body: &[u8]) -> Option<String> {
    let start = body.iter().position(|b| !b.is_ascii_whitespace())?;
    let rest = &body[start..];
    if !rest.starts_with(b"<?xml") {
        return None;
    }
    // The declaration is ASCII and short; don't scan the whole body.
    let window = &rest[..rest.len().min(256)];
    let end = window.windows(2).position(|w| w == b"?>")?;
    let decl = std::str::from_utf8(&window[..end]).ok()?;
    let lower = decl.to_ascii_lowercase();
    let at = lower.find("encoding")? + "encoding".len();
    let after = decl[at..].trim_start().strip_prefix('=')?.trim_start();
    let quote = after.chars().next().filter(|c| *c == '"' || *c == '\'')?;
    let value = &after[1..];
    let close = value.find(quote)?;
    Some(value[..close].to_owned())
}

/// Decode a MANSCDP body: bounded size, declared encoding, then XML.
pub fn decode_body(body: &[u8]) -> Result<Message, ManscdpError> {
    let text = decode_text(body)?;
    parse_xml(&text)
}

/// Parse an already-decoded MANSCDP document.
pub fn parse_xml(text: &str) -> Result<Message, ManscdpError> {
    if text.len() > MAX_BODY_LEN {
        return Err(ManscdpError::TooLarge(text.len()));
    }
    let root = parse_tree(&escape_stray_ampersands(text.trim_start()))?;
    to_message(&root)
}

/// Decode a body to its element tree, for message kinds typed outside this
/// module (records, alarms, status, presets…).
pub fn decode_tree(body: &[u8]) -> Result<Element, ManscdpError> {
    let text = decode_text(body)?;
    if text.len() > MAX_BODY_LEN {
        return Err(ManscdpError::TooLarge(text.len()));
    }
    parse_tree(&escape_stray_ampersands(text.trim_start()))
}

/// Devices put names like "A&B" into XML unescaped; a strict parser would
/// refuse the whole message. An `&` that does not start an entity or
/// character reference (`&name;`, `&#…;`) is taken literally. CDATA
/// sections are left alone (an `&` is literal there already).
fn escape_stray_ampersands(text: &str) -> std::borrow::Cow<'_, str> {
    const CDATA_OPEN: &str = "<![CDATA[";
    let starts_ref = |rest: &str| {
        let body = rest.split(';').next().unwrap_or("");
        rest.len() > body.len()
            && !body.is_empty()
            && body.len() <= 32
            && (body.bytes().all(|b| b.is_ascii_alphanumeric())
                || body
                    .strip_prefix('#')
                    .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_alphanumeric())))
    };
    if !text.contains('&') {
        return std::borrow::Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 16);
    let mut rest = text;
    let mut changed = false;
    while let Some(i) = rest.find(['&', '<']) {
        out.push_str(&rest[..i]);
        let tail = &rest[i..];
        if tail.starts_with(CDATA_OPEN) {
            let end = tail.find("]]>").map_or(tail.len(), |e| e + 3);
            out.push_str(&tail[..end]);
            rest = &tail[end..];
        } else if tail.starts_with('&') && !starts_ref(&tail[1..]) {
            out.push_str("&amp;");
            changed = true;
            rest = &tail[1..];
        } else {
            out.push_str(&tail[..1]);
            rest = &tail[1..];
        }
    }
    out.push_str(rest);
    if changed {
        std::borrow::Cow::Owned(out)
    } else {
        std::borrow::Cow::Borrowed(text)
    }
}

/// A parsed element: name, concatenated text, children.
#[derive(Debug, Default)]
pub struct Element {
    name: String,
    text: String,
    children: Vec<Element>,
}

impl Element {
    pub fn name(&self) -> &str {
        &self.name
    }

    /// This element's own trimmed text.
    pub fn own_text(&self) -> &str {
        self.text.trim()
    }

    /// Children named `name` (case-insensitive).
    pub fn children_named<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a Element> {
        self.children
            .iter()
            .filter(move |c| c.name.eq_ignore_ascii_case(name))
    }

    /// Child by name; case-insensitive because devices vary the case of
    /// element names (`DeviceId`, `SN`/`Sn`).
    pub fn child(&self, name: &str) -> Option<&Element> {
        self.children
            .iter()
            .find(|c| c.name.eq_ignore_ascii_case(name))
    }

    /// Trimmed text of a child; `None` if absent or empty.
    pub fn text(&self, name: &str) -> Option<&str> {
        self.child(name)
            .map(|c| c.text.trim())
            .filter(|t| !t.is_empty())
    }

    pub fn string(&self, name: &str) -> Option<String> {
        self.text(name).map(str::to_owned)
    }

    /// Tolerant number: absent or unparsable is `None`, for optional fields
    /// where a device's odd value must not reject the whole message.
    pub fn num<T: std::str::FromStr>(&self, name: &str) -> Option<T> {
        self.text(name).and_then(|t| t.parse().ok())
    }

    pub fn required(&self, name: &'static str) -> Result<String, ManscdpError> {
        self.string(name).ok_or(ManscdpError::MissingElement(name))
    }

    pub fn sn(&self) -> Result<u32, ManscdpError> {
        let t = self.text("SN").ok_or(ManscdpError::MissingElement("SN"))?;
        t.parse().map_err(|_| ManscdpError::InvalidValue {
            element: "SN",
            value: t.chars().take(32).collect(),
        })
    }

    pub fn header(&self) -> Result<Header, ManscdpError> {
        Ok(Header {
            cmd_type: self.required("CmdType")?,
            sn: self.num("SN"),
            device_id: self.string("DeviceID"),
        })
    }
}

fn xml_error(reader: &Reader<&[u8]>, e: impl std::fmt::Display) -> ManscdpError {
    ManscdpError::Xml {
        position: reader.error_position(),
        message: e.to_string(),
    }
}

fn parse_tree(text: &str) -> Result<Element, ManscdpError> {
    let mut reader = Reader::from_str(text);
    let mut stack: Vec<Element> = Vec::new();
    let mut count = 0usize;
    loop {
        let event = reader.read_event().map_err(|e| xml_error(&reader, e))?;
        let empty = matches!(event, Event::Empty(_));
        match event {
            Event::Start(e) | Event::Empty(e) => {
                count += 1;
                if count > MAX_ELEMENTS {
                    return Err(ManscdpError::TooManyElements);
                }
                if stack.len() >= MAX_DEPTH {
                    return Err(ManscdpError::TooDeep);
                }
                let el = Element {
                    name: e.local_name().as_ref().to_owned(),
                    ..Element::default()
                };
                if empty {
                    match stack.last_mut() {
                        Some(parent) => parent.children.push(el),
                        None => return Ok(el),
                    }
                } else {
                    stack.push(el);
                }
            }
            Event::End(_) => {
                // quick-xml has already checked the end name matches.
                let Some(done) = stack.pop() else {
                    return Err(xml_error(&reader, "unmatched end tag"));
                };
                match stack.last_mut() {
                    Some(parent) => parent.children.push(done),
                    // Anything after the root (trailing NULs, junk) is
                    // ignored: the message is complete.
                    None => return Ok(done),
                }
            }
            Event::Text(t) => {
                if let Some(top) = stack.last_mut() {
                    top.text.push_str(&t.xml10_content());
                }
            }
            Event::CData(t) => {
                if let Some(top) = stack.last_mut() {
                    top.text.push_str(&t.xml10_content());
                }
            }
            Event::GeneralRef(r) => {
                if let Some(top) = stack.last_mut() {
                    let resolved = match r.resolve_char_ref() {
                        Ok(Some(c)) => Some(c),
                        Ok(None) => match &*r {
                            "lt" => Some('<'),
                            "gt" => Some('>'),
                            "amp" => Some('&'),
                            "apos" => Some('\''),
                            "quot" => Some('"'),
                            _ => None,
                        },
                        Err(e) => return Err(xml_error(&reader, e)),
                    };
                    match resolved {
                        Some(c) => top.text.push(c),
                        // Unknown named entity (no DTDs here): keep it
                        // literally rather than fail the message.
                        None => {
                            let _ = write!(top.text, "&{};", &*r);
                        }
                    }
                }
            }
            Event::Eof => {
                return Err(if stack.is_empty() {
                    ManscdpError::NoRoot
                } else {
                    xml_error(&reader, "unexpected end of document")
                });
            }
            Event::Decl(_) | Event::PI(_) | Event::Comment(_) | Event::DocType(_) => {}
        }
    }
}

fn to_message(root: &Element) -> Result<Message, ManscdpError> {
    let cmd = root.required("CmdType")?;
    let is = |name: &str| cmd.eq_ignore_ascii_case(name);
    match root.name.to_ascii_lowercase().as_str() {
        "notify" if is("Keepalive") => Ok(Message::Notify(Notify::Keepalive {
            sn: root.sn()?,
            device_id: root.required("DeviceID")?,
            status: root.string("Status").unwrap_or_default(),
        })),
        "notify" => Ok(Message::Notify(Notify::Other(root.header()?))),
        "query" if is("Catalog") || is("DeviceInfo") || is("DeviceStatus") => {
            let sn = root.sn()?;
            let device_id = root.required("DeviceID")?;
            Ok(Message::Query(if is("Catalog") {
                Query::Catalog { sn, device_id }
            } else if is("DeviceInfo") {
                Query::DeviceInfo { sn, device_id }
            } else {
                Query::DeviceStatus { sn, device_id }
            }))
        }
        "query" => Ok(Message::Query(Query::Other(root.header()?))),
        "response" if is("Catalog") => Ok(Message::Response(Response::Catalog(catalog(root)?))),
        "response" if is("DeviceInfo") => Ok(Message::Response(Response::DeviceInfo(
            DeviceInfoResponse {
                sn: root.sn()?,
                device_id: root.required("DeviceID")?,
                device_name: root.string("DeviceName"),
                result: root.string("Result"),
                device_type: root.string("DeviceType"),
                manufacturer: root.string("Manufacturer"),
                model: root.string("Model"),
                firmware: root.string("Firmware"),
                max_camera: root.num("MaxCamera"),
                max_alarm: root.num("MaxAlarm"),
                channel: root.num("Channel"),
            },
        ))),
        "response" => Ok(Message::Response(Response::Other {
            header: root.header()?,
            result: root.string("Result"),
        })),
        _ => Ok(Message::Other {
            root: root.name.clone(),
            header: root.header()?,
        }),
    }
}

pub(crate) fn catalog(root: &Element) -> Result<CatalogResponse, ManscdpError> {
    let mut items = Vec::new();
    if let Some(list) = root.child("DeviceList") {
        for el in list
            .children
            .iter()
            .filter(|c| c.name.eq_ignore_ascii_case("Item"))
        {
            // An item without an id cannot be addressed; skip it and keep
            // the rest of the page.
            let Some(device_id) = el.string("DeviceID") else {
                tracing::debug!("catalog item without DeviceID skipped");
                continue;
            };
            let info = el.child("Info");
            items.push(CatalogItem {
                device_id,
                name: el.string("Name"),
                manufacturer: el.string("Manufacturer"),
                model: el.string("Model"),
                owner: el.string("Owner"),
                civil_code: el.string("CivilCode"),
                block: el.string("Block"),
                address: el.string("Address"),
                parental: el.num("Parental"),
                parent_id: el.string("ParentID"),
                safety_way: el.num("SafetyWay"),
                register_way: el.num("RegisterWay"),
                cert_num: el.string("CertNum"),
                certifiable: el.num("Certifiable"),
                err_code: el.num("ErrCode"),
                end_time: el.string("EndTime"),
                secrecy: el.num("Secrecy"),
                ip_address: el.string("IPAddress"),
                port: el.num("Port"),
                status: el.string("Status"),
                longitude: el.string("Longitude"),
                latitude: el.string("Latitude"),
                stream_num: el.num("StreamNum"),
                ptz_type: info.and_then(|i| i.num("PTZType")),
                download_speed: info.and_then(|i| i.string("DownloadSpeed")),
            });
        }
    }
    Ok(CatalogResponse {
        sn: root.sn()?,
        device_id: root.required("DeviceID")?,
        sum_num: root.num("SumNum"),
        items,
        result: root.string("Result"),
    })
}

fn is_xml_name(s: &str) -> bool {
    let mut chars = s.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
}

/// Minimal writer for the flat documents MANSCDP uses; other modules build
/// their documents with it so every body has the same declaration and CRLFs.
pub struct XmlWriter(String);

impl Default for XmlWriter {
    fn default() -> Self {
        Self::new()
    }
}

impl XmlWriter {
    pub fn new() -> Self {
        Self(String::from(
            "<?xml version=\"1.0\" encoding=\"GB2312\"?>\r\n",
        ))
    }
    pub fn raw(&mut self, s: &str) {
        self.0.push_str(s);
    }
    pub fn open(&mut self, name: &str) {
        let _ = write!(self.0, "<{name}>\r\n");
    }
    pub fn close(&mut self, name: &str) {
        let _ = write!(self.0, "</{name}>\r\n");
    }
    pub fn leaf(&mut self, name: &str, value: &str) {
        let _ = write!(self.0, "<{name}>");
        escape_into(&mut self.0, value);
        let _ = write!(self.0, "</{name}>\r\n");
    }
    pub fn opt(&mut self, name: &str, value: Option<&str>) {
        if let Some(v) = value {
            self.leaf(name, v);
        }
    }
    pub fn opt_num<T: std::fmt::Display>(&mut self, name: &str, value: Option<T>) {
        if let Some(v) = value {
            let _ = write!(self.0, "<{name}>{v}</{name}>\r\n");
        }
    }
    pub fn header(&mut self, cmd: &str, sn: Option<u32>, device_id: Option<&str>) {
        self.leaf("CmdType", cmd);
        self.opt_num("SN", sn);
        self.opt("DeviceID", device_id);
    }
    pub fn header_of(&mut self, h: &Header) {
        self.header(&h.cmd_type, h.sn, h.device_id.as_deref());
    }
    pub fn finish(self) -> String {
        self.0
    }
}

fn escape_into(out: &mut String, s: &str) {
    for c in s.chars() {
        match c {
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '&' => out.push_str("&amp;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            c => out.push(c),
        }
    }
}

#[cfg(test)]
#[path = "manscdp_quirks_tests.rs"]
mod quirks_tests;

#[cfg(test)]
mod tests {
    use super::*;

    const KEEPALIVE: &str = r#"<?xml version="1.0" encoding="GB2312" ?> <Notify> <CmdType>Keepalive</CmdType> <SN>539</SN> <DeviceID>34020000001320000002</DeviceID> <Status>OK</Status> </Notify>"#;
    const CATALOG: &str = r#"<?xml version="1.0" encoding="GB2312" ?> <Response> <CmdType>Catalog</CmdType> <SN>7</SN> <DeviceID>34020000001320000002</DeviceID> <SumNum>1</SumNum> <DeviceList Num="1"> <Item> <DeviceID>34020000001310000001</DeviceID> <Name>DH71</Name> <Manufacturer>Dahua</Manufacturer> <Model>DH-SD-6C3230UE-HN</Model> <Owner>0</Owner> <CivilCode>340200</CivilCode> <Address>axy</Address> <Parental>0</Parental> <ParentID>34020000001320000002</ParentID> <RegisterWay>1</RegisterWay> <Secrecy>0</Secrecy> <StreamNum>2</StreamNum> <Status>ON</Status> <Info> <PTZType>3</PTZType> <DownloadSpeed>1/2/4/8</DownloadSpeed> </Info> </Item> </DeviceList> </Response>"#;
    const DEVICE_INFO: &str = r#"<?xml version="1.0" encoding="GB2312" ?> <Response> <CmdType>DeviceInfo</CmdType> <SN>9</SN> <DeviceID>34020000001320000002</DeviceID> <DeviceName>DH-SD-6C3230UE-HN</DeviceName> <Result>OK</Result> <DeviceType>SD</DeviceType> <Manufacturer>Dahua</Manufacturer> <Model>DH-SD-6C3230UE-HN</Model> <Firmware>2.623.0000000.17.R,2019-01-19</Firmware> <MaxCamera>1</MaxCamera> <MaxAlarm>2</MaxAlarm> <Channel>1</Channel> <Port>80</Port> <LoginName>admin</LoginName> <Password>******</Password> </Response>"#;

    fn roundtrip(m: &Message) {
        let bytes = encode_body(&m.to_xml());
        assert_eq!(&decode_body(&bytes).unwrap(), m, "{}", m.to_xml());
    }

    #[test]
    fn dahua_keepalive() {
        let m = decode_body(KEEPALIVE.as_bytes()).unwrap();
        assert_eq!(
            m,
            Message::Notify(Notify::Keepalive {
                sn: 539,
                device_id: "34020000001320000002".into(),
                status: "OK".into(),
            })
        );
        assert_eq!(m.cmd_type(), "Keepalive");
        assert_eq!(m.sn(), Some(539));
        assert_eq!(m.device_id(), Some("34020000001320000002"));
        roundtrip(&m);
    }

    #[test]
    fn dahua_catalog() {
        let m = decode_body(CATALOG.as_bytes()).unwrap();
        let want = CatalogResponse {
            sn: 7,
            device_id: "34020000001320000002".into(),
            sum_num: Some(1),
            result: None,
            items: vec![CatalogItem {
                device_id: "34020000001310000001".into(),
                name: Some("DH71".into()),
                manufacturer: Some("Dahua".into()),
                model: Some("DH-SD-6C3230UE-HN".into()),
                owner: Some("0".into()),
                civil_code: Some("340200".into()),
                address: Some("axy".into()),
                parental: Some(0),
                parent_id: Some("34020000001320000002".into()),
                register_way: Some(1),
                secrecy: Some(0),
                stream_num: Some(2),
                status: Some("ON".into()),
                ptz_type: Some(3),
                download_speed: Some("1/2/4/8".into()),
                ..CatalogItem::default()
            }],
        };
        assert_eq!(m, Message::Response(Response::Catalog(want)));
        let Message::Response(Response::Catalog(c)) = &m else {
            unreachable!()
        };
        assert!(c.items[0].is_on());
        roundtrip(&m);
    }

    #[test]
    fn dahua_device_info() {
        let m = decode_body(DEVICE_INFO.as_bytes()).unwrap();
        assert_eq!(
            m,
            Message::Response(Response::DeviceInfo(DeviceInfoResponse {
                sn: 9,
                device_id: "34020000001320000002".into(),
                device_name: Some("DH-SD-6C3230UE-HN".into()),
                result: Some("OK".into()),
                device_type: Some("SD".into()),
                manufacturer: Some("Dahua".into()),
                model: Some("DH-SD-6C3230UE-HN".into()),
                firmware: Some("2.623.0000000.17.R,2019-01-19".into()),
                max_camera: Some(1),
                max_alarm: Some(2),
                channel: Some(1),
            }))
        );
        roundtrip(&m);
    }

    #[test]
    fn gb2312_chinese_name() {
        let xml = CATALOG.replace("<Name>DH71</Name>", "<Name>摄像机1</Name>");
        let (bytes, _, had_errors) = GB18030.encode(&xml);
        assert!(!had_errors);
        // The bytes are not UTF-8: proof the declared encoding was used.
        assert!(std::str::from_utf8(&bytes).is_err());
        let Message::Response(Response::Catalog(c)) = decode_body(&bytes).unwrap() else {
            panic!("not a catalog")
        };
        assert_eq!(c.items[0].name.as_deref(), Some("摄像机1"));
        // Our own encoder produces the same bytes.
        assert_eq!(encode_body(&xml), bytes.into_owned());
        // Mislabelled: GBK bytes declared UTF-8 still decode.
        let lying = xml.replace("GB2312", "UTF-8");
        let (bytes, _, _) = GB18030.encode(&lying);
        let m = decode_body(&bytes).unwrap();
        let Message::Response(Response::Catalog(c)) = m else {
            panic!()
        };
        assert_eq!(c.items[0].name.as_deref(), Some("摄像机1"));
        // A UTF-8 declaration keeps UTF-8 bytes.
        assert_eq!(encode_body(&lying), lying.as_bytes());
    }

    #[test]
    fn query_builder() {
        let xml = query_xml(QueryKind::Catalog, 17, "34020000001320000001");
        assert_eq!(
            xml,
            "<?xml version=\"1.0\" encoding=\"GB2312\"?>\r\n<Query>\r\n<CmdType>Catalog</CmdType>\r\n\
             <SN>17</SN>\r\n<DeviceID>34020000001320000001</DeviceID>\r\n</Query>\r\n"
        );
        for kind in [
            QueryKind::Catalog,
            QueryKind::DeviceInfo,
            QueryKind::DeviceStatus,
        ] {
            let m = decode_body(&encode_body(&query_xml(kind, 3, "x"))).unwrap();
            assert_eq!(m.cmd_type(), kind.as_str());
            assert_eq!(m.sn(), Some(3));
            assert_eq!(m.device_id(), Some("x"));
        }
    }

    #[test]
    fn tolerance() {
        // Unknown elements, entity refs, CDATA, comments, case, trailing junk.
        let xml = "\n\n<?xml version='1.0' encoding='gbk'?><!-- hi --><Notify><cmdtype>Alarm</cmdtype>\
                   <Sn>5</Sn><Vendor><X/></Vendor><DeviceID><![CDATA[a&b]]>&amp;&#x4e2d;&bogus;</DeviceID></Notify>\0\0";
        let m = decode_body(xml.as_bytes()).unwrap();
        assert_eq!(
            m,
            Message::Notify(Notify::Other(Header {
                cmd_type: "Alarm".into(),
                sn: Some(5),
                device_id: Some("a&b&中&bogus;".into()),
            }))
        );
        roundtrip(&m);
        let ctl = "<Control><CmdType>DeviceControl</CmdType><SN>1</SN><DeviceID>d</DeviceID><PTZCmd>A50F</PTZCmd></Control>";
        let m = decode_body(ctl.as_bytes()).unwrap();
        assert!(matches!(&m, Message::Other { root, .. } if root == "Control"));
        roundtrip(&m);
        // Subscription reply in the trace: Result but no SumNum/list.
        let sub = "<Response><CmdType>Catalog</CmdType><SN>2</SN><DeviceID>d</DeviceID><Result>OK</Result></Response>";
        let m = decode_body(sub.as_bytes()).unwrap();
        assert_eq!(
            m,
            Message::Response(Response::Catalog(CatalogResponse {
                sn: 2,
                device_id: "d".into(),
                result: Some("OK".into()),
                ..Default::default()
            }))
        );
        roundtrip(&m);
    }

    #[test]
    fn errors_have_kinds() {
        let cases: [(&[u8], &str); 9] = [
            (b"", "no_root"),
            (b"<?xml version=\"1.0\"?>", "no_root"),
            (b"<Notify><CmdType>Keepalive</CmdType>", "xml"),
            (b"<Notify></Query>", "xml"),
            (b"<Notify><SN>1</SN></Notify>", "missing_element"),
            (
                b"<Notify><CmdType>Keepalive</CmdType><SN>x</SN><DeviceID>d</DeviceID></Notify>",
                "invalid_value",
            ),
            (
                b"<Notify><CmdType>Keepalive</CmdType><SN>1</SN></Notify>",
                "missing_element",
            ),
            (
                b"<?xml version=\"1.0\" encoding=\"klingon\"?><a/>",
                "encoding",
            ),
            (
                b"<a><b><c><d><e><f><g><h><i><j><k><l><m><n><o><p><q>",
                "too_complex",
            ),
        ];
        for (body, kind) in cases {
            let e = decode_body(body).unwrap_err();
            assert_eq!(
                e.kind(),
                kind,
                "{e} for {:?}",
                String::from_utf8_lossy(body)
            );
        }
        let big = vec![b' '; MAX_BODY_LEN + 1];
        assert_eq!(decode_body(&big).unwrap_err().kind(), "too_large");
        let many = format!("<a>{}</a>", "<b/>".repeat(MAX_ELEMENTS));
        assert_eq!(
            decode_body(many.as_bytes()).unwrap_err().kind(),
            "too_complex"
        );
    }

    /// The MANSCDP bodies of the trace, rebuilt from Wireshark's text view
    /// (each line ends in a literal `\n` or `\r\n`).
    fn xml_bodies_from_trace(text: &str) -> Vec<String> {
        let mut out = Vec::new();
        let mut lines = text.lines();
        while let Some(line) = lines.next() {
            if line.trim() != "Message Body" {
                continue;
            }
            let mut body = String::new();
            for l in lines.by_ref() {
                let t = l.trim();
                if let Some(x) = t.strip_suffix("\\r\\n") {
                    body.push_str(x);
                    body.push_str("\r\n");
                } else if let Some(x) = t.strip_suffix("\\n") {
                    body.push_str(x);
                    body.push('\n');
                } else {
                    break;
                }
            }
            if !body.is_empty() {
                out.push(body);
            }
        }
        out
    }

    #[test]
    fn dahua_trace_bodies() {
        let Some(path) = crate::testdata::file("dahua_ipc_sip_trace.txt") else {
            return;
        };
        let text = std::fs::read_to_string(path).unwrap();
        let bodies = xml_bodies_from_trace(&text);
        let (mut keepalives, mut queries, mut catalogs, mut sub_ok) = (0, 0, 0, 0);
        for b in &bodies {
            // The device sends GB2312; re-encode as it would be on the wire.
            let m = decode_body(&encode_body(b)).unwrap_or_else(|e| panic!("{e}: {b}"));
            match &m {
                Message::Notify(Notify::Keepalive {
                    sn,
                    device_id,
                    status,
                }) => {
                    assert!((800..1000).contains(sn));
                    assert_eq!(device_id, "34020000001320000001");
                    assert_eq!(status, "OK");
                    keepalives += 1;
                }
                Message::Query(Query::Catalog { sn, device_id }) => {
                    assert!(*sn == 1 || *sn == 2);
                    assert_eq!(device_id, "34020000001320000001");
                    queries += 1;
                }
                Message::Response(Response::Catalog(c)) if c.items.is_empty() => {
                    assert_eq!(c.result.as_deref(), Some("OK"));
                    assert_eq!(c.sum_num, None);
                    sub_ok += 1;
                }
                Message::Response(Response::Catalog(c)) => {
                    assert_eq!((c.sn, c.sum_num), (1, Some(1)));
                    let it = &c.items[0];
                    assert_eq!(it.device_id, "34020000001320000001");
                    assert_eq!(it.name.as_deref(), Some("IPC"));
                    assert_eq!(it.model.as_deref(), Some("IPC-HDW2230C-A-V2"));
                    assert_eq!(it.parent_id.as_deref(), Some("34020000001320000001"));
                    assert_eq!(it.ptz_type, Some(3));
                    assert!(it.is_on());
                    catalogs += 1;
                }
                other => panic!("unexpected {other:?}"),
            }
            roundtrip(&m);
        }
        assert_eq!((keepalives, queries, catalogs, sub_ok), (35, 2, 1, 1));
    }

    #[test]
    fn random_input_never_panics() {
        let mut x: u64 = 0xdead_beef_cafe_f00d;
        let mut next = || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        let pieces: [&[u8]; 22] = [
            b"<?xml version=\"1.0\" encoding=\"GB2312\"?>",
            b"<Notify>",
            b"</Notify>",
            b"<Response>",
            b"</Response>",
            b"<CmdType>Keepalive</CmdType>",
            b"<CmdType>Catalog</CmdType>",
            b"<SN>1</SN>",
            b"<DeviceID>1</DeviceID>",
            b"<DeviceList Num=\"1\">",
            b"<Item>",
            b"</Item>",
            b"</DeviceList>",
            b"<Info><PTZType>x</PTZType></Info>",
            b"&#xD800;",
            b"&amp;",
            b"<![CDATA[",
            b"]]>",
            b"<",
            b"\xd5\xe3",
            b"\xff",
            b"<?xml encoding='",
        ];
        let mut parsed = 0;
        for round in 0..4000 {
            let mut body = Vec::new();
            // A third of the rounds get a valid frame around the noise so
            // the success path is exercised too.
            let root = if next() % 2 == 0 { 1 } else { 3 };
            if round % 3 == 1 {
                body.extend_from_slice(pieces[0]);
                body.extend_from_slice(pieces[root]);
                body.extend_from_slice(pieces[5 + (next() % 2) as usize]);
                body.extend_from_slice(pieces[7]);
                body.extend_from_slice(pieces[8]);
            }
            for _ in 0..next() % 20 {
                if round % 3 == 0 {
                    body.push(next() as u8);
                } else {
                    body.extend_from_slice(pieces[(next() % pieces.len() as u64) as usize]);
                }
            }
            if round % 3 == 1 {
                body.extend_from_slice(pieces[root + 1]);
            }
            if let Ok(m) = decode_body(&body) {
                parsed += 1;
                let _ = decode_body(&encode_body(&m.to_xml()));
                let _ = (m.sn(), m.device_id(), m.cmd_type());
            }
        }
        assert!(parsed > 20, "only {parsed} bodies decoded");
    }
}
