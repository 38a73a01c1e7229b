//! MANSCDP bodies as sloppy devices send them (issue 16), each a literal
//! message: wrong or missing encoding declarations, either line ending, an
//! unescaped `&`, and a catalog whose `SumNum` promises more than arrives.

use std::time::{Duration, Instant};

use super::*;
use crate::gb28181::exchanges::Exchanges;

const NAMED_CATALOG: &str = "<?xml version=\"1.0\" encoding=\"GB2312\"?>\r\n<Response>\r\n<CmdType>Catalog</CmdType>\r\n<SN>12</SN>\r\n<DeviceID>34010000001320000001</DeviceID>\r\n<SumNum>1</SumNum>\r\n<DeviceList Num=\"1\">\r\n<Item>\r\n<DeviceID>34010000001310000001</DeviceID>\r\n<Name>大门摄像机</Name>\r\n<Status>ON</Status>\r\n</Item>\r\n</DeviceList>\r\n</Response>\r\n";

fn catalog(body: &[u8]) -> CatalogResponse {
    match decode_body(body) {
        Ok(Message::Response(Response::Catalog(c))) => c,
        other => panic!("not a catalog: {other:?}"),
    }
}

fn first_name(body: &[u8]) -> Option<String> {
    catalog(body).items.first().and_then(|i| i.name.clone())
}

#[test]
fn declared_gb2312_but_sent_as_utf8() {
    // The bytes are UTF-8, as an eXosip firmware with a hard-coded
    // declaration sends them.
    assert_eq!(
        first_name(NAMED_CATALOG.as_bytes()).as_deref(),
        Some("大门摄像机")
    );
}

#[test]
fn declared_utf8_but_sent_as_gb2312() {
    let lying = NAMED_CATALOG.replace("GB2312", "UTF-8");
    let (bytes, _, _) = encoding_rs::GB18030.encode(&lying);
    assert!(std::str::from_utf8(&bytes).is_err());
    assert_eq!(first_name(&bytes).as_deref(), Some("大门摄像机"));
}

#[test]
fn no_xml_declaration_either_encoding() {
    let bare = NAMED_CATALOG.split_once("?>\r\n").unwrap().1;
    assert!(bare.starts_with("<Response>"));
    assert_eq!(first_name(bare.as_bytes()).as_deref(), Some("大门摄像机"));
    let (gbk, _, _) = encoding_rs::GB18030.encode(bare);
    assert_eq!(first_name(&gbk).as_deref(), Some("大门摄像机"));
}

#[test]
fn crlf_and_lf_line_endings_read_the_same() {
    let lf = NAMED_CATALOG.replace("\r\n", "\n");
    let a = catalog(NAMED_CATALOG.as_bytes());
    let b = catalog(lf.as_bytes());
    assert_eq!(a, b);
    assert_eq!(a.items[0].device_id, "34010000001310000001");
    assert_eq!(a.sum_num, Some(1));
}

#[test]
fn unescaped_ampersand_in_a_name() {
    let body = NAMED_CATALOG.replace("大门摄像机", "Gate & Yard &amp; R&D &#x4e2d;");
    assert_eq!(
        first_name(body.as_bytes()).as_deref(),
        Some("Gate & Yard & R&D 中")
    );
    // A keepalive with one in its device status text still counts.
    let keepalive = "<?xml version=\"1.0\"?>\n<Notify>\n<CmdType>Keepalive</CmdType>\n<SN>3</SN>\n<DeviceID>34010000001320000001</DeviceID>\n<Status>OK & fine</Status>\n</Notify>\n";
    assert!(matches!(
        decode_body(keepalive.as_bytes()),
        Ok(Message::Notify(Notify::Keepalive { sn: 3, .. }))
    ));
}

#[test]
fn sum_num_larger_than_items_sent_ends_partial() {
    // SumNum 4, but the device only ever sends these two items.
    let page = "<?xml version=\"1.0\" encoding=\"GB2312\"?>\n<Response>\n<CmdType>Catalog</CmdType>\n<SN>21</SN>\n<DeviceID>34010000001320000001</DeviceID>\n<SumNum>4</SumNum>\n<DeviceList Num=\"2\">\n<Item><DeviceID>34010000001310000001</DeviceID></Item>\n<Item><DeviceID>34010000001310000002</DeviceID></Item>\n</DeviceList>\n</Response>\n";
    let c = catalog(page.as_bytes());
    assert_eq!((c.sum_num, c.items.len()), (Some(4), 2));
    let t0 = Instant::now();
    let mut x = Exchanges::new();
    let mut rx = x
        .expect_catalog(&c.device_id, c.sn, t0, Duration::from_secs(5))
        .unwrap();
    assert!(x.catalog_page(&c.device_id, c.sn, c.sum_num, c.items));
    x.expire(t0 + Duration::from_secs(4));
    assert!(rx.try_recv().is_err(), "still waiting for the rest");
    x.expire(t0 + Duration::from_secs(5));
    let done = rx.try_recv().unwrap();
    assert!(done.partial);
    assert_eq!(done.items.len(), 2);
}
