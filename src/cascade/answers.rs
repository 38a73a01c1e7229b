//! What a lower platform answers an upper one's MANSCDP queries with
//! (GB/T 28181-2016 §9.5 and Annex A.2.4/A.2.6): Catalog of every exposed
//! channel, DeviceInfo and DeviceStatus of the platform (or of one channel).
//!
//! The query is read by scanning for its few elements (tags are ASCII
//! whatever the declared encoding); answers are written as GB2312 (GBK)
//! with CRLF, as GB28181 peers expect. Catalog answers are paged: each
//! document holds as many items as fit [`CATALOG_BODY_BUDGET`] bytes and
//! carries the total in `SumNum`, so every MESSAGE fits one datagram.
//!
//! Sans-IO: bytes in, bodies out.

use std::fmt::Write as _;

/// Largest Catalog body per MESSAGE: with ~500 bytes of SIP headers the
/// datagram stays under a 1500-byte Ethernet MTU, so nothing fragments.
pub const CATALOG_BODY_BUDGET: usize = 900;
/// Longest element value read from a query.
const MAX_VALUE: usize = 64;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AnswerError {
    #[error("not a MANSCDP Query")]
    NotAQuery,
    #[error("query without {0}")]
    Missing(&'static str),
}

impl AnswerError {
    pub fn kind(&self) -> &'static str {
        match self {
            Self::NotAQuery => "not_a_query",
            Self::Missing(_) => "query_incomplete",
        }
    }
}

/// The parts of a query an answer needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Query {
    pub cmd_type: String,
    pub sn: u32,
    /// The platform id, or one channel's id.
    pub device_id: String,
}

/// One channel as the upper platform sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExposedChannel {
    pub id: String,
    pub name: String,
    pub manufacturer: String,
    pub model: String,
    pub online: bool,
    /// The stream key that plays it.
    pub stream: String,
    pub ptz: bool,
}

/// Text of element `<tag>` directly in `xml` (first occurrence), trimmed.
pub(crate) fn element<'a>(xml: &'a str, tag: &str) -> Option<&'a str> {
    let open = format!("<{tag}>");
    let close = format!("</{tag}>");
    let start = xml.find(&open)? + open.len();
    let len = xml[start..].find(&close)?;
    let v = xml[start..start + len].trim();
    (v.len() <= MAX_VALUE).then_some(v)
}

/// Read a `<Query>` document.
pub fn parse_query(body: &[u8]) -> Result<Query, AnswerError> {
    let text = String::from_utf8_lossy(body);
    if !text.contains("<Query>") {
        return Err(AnswerError::NotAQuery);
    }
    let cmd_type = element(&text, "CmdType").ok_or(AnswerError::Missing("CmdType"))?;
    let sn = element(&text, "SN")
        .and_then(|s| s.parse().ok())
        .ok_or(AnswerError::Missing("SN"))?;
    let device_id = element(&text, "DeviceID").ok_or(AnswerError::Missing("DeviceID"))?;
    Ok(Query {
        cmd_type: cmd_type.to_owned(),
        sn,
        device_id: device_id.to_owned(),
    })
}

/// XML text escaping for element content.
pub(crate) fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            c if c.is_control() => {}
            c => out.push(c),
        }
    }
    out
}

/// Encode as GB2312 (GBK, its superset that encoding_rs provides);
/// characters outside it become numeric references.
pub(crate) fn gb2312(text: &str) -> Vec<u8> {
    encoding_rs::GBK.encode(text).0.into_owned()
}

pub(crate) const DECLARATION: &str = "<?xml version=\"1.0\" encoding=\"GB2312\"?>\r\n";

fn catalog_item(c: &ExposedChannel, parent: &str, civil_code: &str, event: Option<&str>) -> String {
    let mut s = String::with_capacity(400);
    let _ = write!(
        s,
        "<Item>\r\n<DeviceID>{id}</DeviceID>\r\n<Name>{name}</Name>\r\n\
         <Manufacturer>{manu}</Manufacturer>\r\n<Model>{model}</Model>\r\n\
         <Owner>0</Owner>\r\n<CivilCode>{civil_code}</CivilCode>\r\n\
         <Address>{stream}</Address>\r\n<Parental>0</Parental>\r\n\
         <ParentID>{parent}</ParentID>\r\n<SafetyWay>0</SafetyWay>\r\n\
         <RegisterWay>1</RegisterWay>\r\n<Secrecy>0</Secrecy>\r\n\
         <Status>{status}</Status>\r\n<Info>\r\n<PTZType>{ptz}</PTZType>\r\n</Info>\r\n{event}</Item>\r\n",
        id = c.id,
        name = escape(&c.name),
        manu = escape(&c.manufacturer),
        model = escape(&c.model),
        stream = escape(&c.stream),
        status = if c.online { "ON" } else { "OFF" },
        // Annex A: 1 = dome (pan/tilt/zoom), 3 = fixed.
        ptz = if c.ptz { 1 } else { 3 },
        event = event
            .map(|e| format!("<Event>{e}</Event>\r\n"))
            .unwrap_or_default(),
    );
    s
}

/// Catalog answers: one GB2312 document per page, in channel order.
pub fn catalog_pages(
    q: &Query,
    platform_id: &str,
    civil_code: &str,
    channels: &[ExposedChannel],
) -> Vec<Vec<u8>> {
    let items = channels
        .iter()
        .map(|c| catalog_item(c, platform_id, civil_code, None))
        .collect();
    paged(
        "Response",
        "Catalog",
        q.sn,
        platform_id,
        "",
        "DeviceList",
        items,
    )
}

/// Catalog change notifications (§9.7.1, A.2.5.6): the changed channels,
/// each with its `<Event>` (ON, OFF, ADD, DEL), paged like answers.
pub fn catalog_notify_pages(
    sn: u32,
    platform_id: &str,
    civil_code: &str,
    changes: &[(ExposedChannel, &str)],
) -> Vec<Vec<u8>> {
    let items = changes
        .iter()
        .map(|(c, event)| catalog_item(c, platform_id, civil_code, Some(event)))
        .collect();
    paged(
        "Notify",
        "Catalog",
        sn,
        platform_id,
        "",
        "DeviceList",
        items,
    )
}

/// Documents `<{root}><CmdType>{cmd}</CmdType>…<{list} Num=…>` holding
/// `items` (XML text), as many per document as fit
/// [`CATALOG_BODY_BUDGET`], each stating the total in `SumNum`. `extra`
/// (whole elements, CRLF-ended) goes between `DeviceID` and `SumNum`.
pub(crate) fn paged(
    root: &str,
    cmd: &str,
    sn: u32,
    device_id: &str,
    extra: &str,
    list: &str,
    items: Vec<String>,
) -> Vec<Vec<u8>> {
    let sum = items.len();
    let head = |n: usize| {
        format!(
            "{DECLARATION}<{root}>\r\n<CmdType>{cmd}</CmdType>\r\n<SN>{sn}</SN>\r\n\
             <DeviceID>{device_id}</DeviceID>\r\n{extra}<SumNum>{sum}</SumNum>\r\n<{list} Num=\"{n}\">\r\n",
        )
    };
    let tail = format!("</{list}>\r\n</{root}>\r\n");
    let frame = gb2312(&head(sum)).len() + tail.len();
    let items: Vec<Vec<u8>> = items.iter().map(|i| gb2312(i)).collect();
    let mut pages: Vec<Vec<&Vec<u8>>> = Vec::new();
    let mut size = frame;
    for item in &items {
        match pages.last_mut() {
            Some(page) if size + item.len() <= CATALOG_BODY_BUDGET => {
                page.push(item);
                size += item.len();
            }
            _ => {
                pages.push(vec![item]);
                size = frame + item.len();
            }
        }
    }
    if pages.is_empty() {
        pages.push(Vec::new());
    }
    pages
        .into_iter()
        .map(|page| {
            let mut body = gb2312(&head(page.len()));
            for item in page {
                body.extend_from_slice(item);
            }
            body.extend_from_slice(tail.as_bytes());
            body
        })
        .collect()
}

/// DeviceInfo of the platform (or of channel `c`).
pub fn device_info(q: &Query, channels: usize, c: Option<&ExposedChannel>) -> Vec<u8> {
    let (name, manufacturer, model) = match c {
        Some(c) => (c.name.as_str(), c.manufacturer.as_str(), c.model.as_str()),
        None => ("camgate", "camgate", "gateway"),
    };
    gb2312(&format!(
        "{DECLARATION}<Response>\r\n<CmdType>DeviceInfo</CmdType>\r\n<SN>{sn}</SN>\r\n\
         <DeviceID>{id}</DeviceID>\r\n<Result>OK</Result>\r\n<DeviceName>{name}</DeviceName>\r\n\
         <Manufacturer>{manufacturer}</Manufacturer>\r\n<Model>{model}</Model>\r\n\
         <Firmware>{version}</Firmware>\r\n<Channel>{channels}</Channel>\r\n</Response>\r\n",
        sn = q.sn,
        id = q.device_id,
        name = escape(name),
        manufacturer = escape(manufacturer),
        model = escape(model),
        version = env!("CARGO_PKG_VERSION"),
        channels = if c.is_some() { 1 } else { channels },
    ))
}

/// DeviceStatus of the platform (or of channel `c`); `device_time` as
/// `YYYY-MM-DDTHH:MM:SS`.
pub fn device_status(q: &Query, c: Option<&ExposedChannel>, device_time: &str) -> Vec<u8> {
    let online = c.is_none_or(|c| c.online);
    gb2312(&format!(
        "{DECLARATION}<Response>\r\n<CmdType>DeviceStatus</CmdType>\r\n<SN>{sn}</SN>\r\n\
         <DeviceID>{id}</DeviceID>\r\n<Result>OK</Result>\r\n<Online>{online}</Online>\r\n\
         <Status>{status}</Status>\r\n<Encode>ON</Encode>\r\n<Record>OFF</Record>\r\n\
         <DeviceTime>{device_time}</DeviceTime>\r\n<Alarmstatus Num=\"0\">\r\n</Alarmstatus>\r\n</Response>\r\n",
        sn = q.sn,
        id = q.device_id,
        online = if online { "ONLINE" } else { "OFFLINE" },
        status = if online { "OK" } else { "ERROR" },
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn channel(i: usize, name: &str) -> ExposedChannel {
        ExposedChannel {
            id: format!("340200000013100{i:05}"),
            name: name.into(),
            manufacturer: "camgate".into(),
            model: "sim".into(),
            online: i.is_multiple_of(2),
            stream: format!("foscam/cam{i}"),
            ptz: true,
        }
    }

    fn query(cmd: &str) -> Query {
        let xml = format!(
            "<?xml version=\"1.0\" encoding=\"GB2312\"?>\r\n<Query>\r\n<CmdType>{cmd}</CmdType>\r\n<SN>17</SN>\r\n<DeviceID>34020000002000000002</DeviceID>\r\n</Query>\r\n"
        );
        parse_query(xml.as_bytes()).unwrap()
    }

    #[test]
    fn query_is_read() {
        let q = query("Catalog");
        assert_eq!(q.cmd_type, "Catalog");
        assert_eq!(q.sn, 17);
        assert_eq!(q.device_id, "34020000002000000002");
        assert_eq!(parse_query(b"<Notify/>"), Err(AnswerError::NotAQuery));
        assert_eq!(
            parse_query(b"<Query><CmdType>Catalog</CmdType></Query>"),
            Err(AnswerError::Missing("SN"))
        );
    }

    #[test]
    fn catalog_pages_fit_the_budget_and_carry_every_channel_once() {
        let channels: Vec<ExposedChannel> = (0..7).map(|i| channel(i, "大门 <东>")).collect();
        let pages = catalog_pages(
            &query("Catalog"),
            "34020000002000000002",
            "34020000",
            &channels,
        );
        assert!(pages.len() >= 3, "{} pages", pages.len());
        let mut ids = Vec::new();
        for p in &pages {
            assert!(p.len() <= CATALOG_BODY_BUDGET, "{} bytes", p.len());
            let (text, _, bad) = encoding_rs::GBK.decode(p);
            assert!(!bad);
            assert!(text.contains("<SumNum>7</SumNum>"));
            assert!(text.contains("<Name>大门 &lt;东&gt;</Name>"));
            let n = text.matches("<Item>").count();
            assert!(text.contains(&format!("<DeviceList Num=\"{n}\">")));
            for part in text.split("<Item>").skip(1) {
                ids.push(element(part, "DeviceID").unwrap().to_owned());
                assert_eq!(element(part, "ParentID"), Some("34020000002000000002"));
            }
        }
        let want: Vec<String> = channels.iter().map(|c| c.id.clone()).collect();
        assert_eq!(ids, want);
        // Status follows each channel (even ones online).
        let all: String = pages
            .iter()
            .map(|p| encoding_rs::GBK.decode(p).0.into_owned())
            .collect();
        assert_eq!(all.matches("<Status>ON</Status>").count(), 4);
        assert_eq!(all.matches("<Status>OFF</Status>").count(), 3);
    }

    #[test]
    fn notify_items_carry_their_event() {
        let changes = vec![(channel(1, "a"), "OFF"), (channel(2, "b"), "ADD")];
        let pages = catalog_notify_pages(5, "34020000002000000002", "34020000", &changes);
        let all: String = pages
            .iter()
            .map(|p| String::from_utf8(p.clone()).unwrap())
            .collect();
        assert!(all.starts_with("<?xml") && all.contains("<Notify>") && all.contains("</Notify>"));
        assert_eq!(all.matches("<SumNum>2</SumNum>").count(), pages.len());
        assert!(all.contains("<Event>OFF</Event>") && all.contains("<Event>ADD</Event>"));
    }

    #[test]
    fn empty_catalog_is_one_page_with_sum_zero() {
        let pages = catalog_pages(&query("Catalog"), "34020000002000000002", "34020000", &[]);
        assert_eq!(pages.len(), 1);
        let text = String::from_utf8(pages[0].clone()).unwrap();
        assert!(text.contains("<SumNum>0</SumNum>") && text.contains("Num=\"0\""));
    }

    #[test]
    fn device_info_and_status() {
        let info = String::from_utf8(device_info(&query("DeviceInfo"), 3, None)).unwrap();
        assert!(info.contains("<Channel>3</Channel>") && info.contains("<SN>17</SN>"));
        let c = channel(1, "x");
        let status = String::from_utf8(device_status(
            &query("DeviceStatus"),
            Some(&c),
            "2026-12-04T10:00:00",
        ))
        .unwrap();
        assert!(status.contains("<Online>OFFLINE</Online>"));
        assert!(status.contains("<DeviceTime>2026-12-04T10:00:00</DeviceTime>"));
    }
}
