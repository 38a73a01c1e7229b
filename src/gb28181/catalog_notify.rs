//! Catalog change notifications (GB/T 28181-2016 §9.7.1 catalog
//! subscription, A.2.5.6): after `SUBSCRIBE` with `Event: Catalog`, a
//! device NOTIFYs (or MESSAGEs) `<Notify><CmdType>Catalog</CmdType>` with
//! items that each carry an `<Event>`: `ON`/`OFF` (status), `ADD`, `DEL`,
//! `UPDATE`. This module reads those and applies them to a device's
//! channel list; it is sans-IO (no registry locking, no clock).

use super::manscdp::{self, CatalogItem, Element, ManscdpError, XmlWriter};
use super::registry::Channel;

/// What happened to one catalog item.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CatalogEvent {
    On,
    Off,
    Add,
    Del,
    Update,
    /// An event we do not know (VLOST, DEFECT…); the item is refreshed.
    Other,
}

impl CatalogEvent {
    pub fn parse(s: &str) -> Self {
        match s.trim().to_ascii_uppercase().as_str() {
            "ON" => Self::On,
            "OFF" => Self::Off,
            "ADD" => Self::Add,
            "DEL" => Self::Del,
            "UPDATE" => Self::Update,
            _ => Self::Other,
        }
    }

    /// Metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::On => "ON",
            Self::Off => "OFF",
            Self::Add => "ADD",
            Self::Del => "DEL",
            Self::Update => "UPDATE",
            Self::Other => "other",
        }
    }
}

/// Whether a decoded tree is a catalog notification.
pub fn is_catalog_notify(root: &Element) -> bool {
    root.name().eq_ignore_ascii_case("Notify")
        && root
            .text("CmdType")
            .is_some_and(|c| c.eq_ignore_ascii_case("Catalog"))
}

/// The items of a catalog notification with their events, in order. An
/// item without `<Event>` is an `UPDATE` (what devices mean by resending).
pub fn parse(root: &Element) -> Result<Vec<(CatalogItem, CatalogEvent)>, ManscdpError> {
    let items = manscdp::catalog(root)?.items;
    let events: Vec<(String, CatalogEvent)> = root
        .child("DeviceList")
        .into_iter()
        .flat_map(|l| l.children_named("Item"))
        .filter_map(|i| {
            let id = i.string("DeviceID")?;
            let ev = i
                .text("Event")
                .map_or(CatalogEvent::Update, CatalogEvent::parse);
            Some((id, ev))
        })
        .collect();
    // Items and events are both in document order, DeviceID-less items
    // skipped by both.
    Ok(items
        .into_iter()
        .zip(events)
        .map(|(item, (_, ev))| (item, ev))
        .collect())
}

/// Apply one event to a channel list; returns whether anything changed.
pub fn apply(channels: &mut Vec<Channel>, item: &CatalogItem, event: CatalogEvent) -> bool {
    let at = channels.iter().position(|c| c.id == item.device_id);
    match (event, at) {
        (CatalogEvent::Del, Some(i)) => {
            channels.remove(i);
            true
        }
        (CatalogEvent::Del, None) => false,
        (CatalogEvent::On | CatalogEvent::Off, Some(i)) => {
            let on = event == CatalogEvent::On;
            let c = &mut channels[i];
            c.online = on;
            c.status = Some(if on { "ON" } else { "OFF" }.to_owned());
            true
        }
        (CatalogEvent::On | CatalogEvent::Off, None) => false,
        (_, Some(i)) => {
            channels[i] = Channel::from(item);
            true
        }
        (_, None) => {
            channels.push(Channel::from(item));
            true
        }
    }
}

/// §9.7.1 subscription body: a Catalog query.
pub fn subscribe_body(sn: u32, device: &str) -> String {
    let mut w = XmlWriter::new();
    w.open("Query");
    w.leaf("CmdType", "Catalog");
    w.leaf("SN", &sn.to_string());
    w.leaf("DeviceID", device);
    w.close("Query");
    w.finish()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gb28181::manscdp::decode_tree;

    const NOTIFY: &str = "<?xml version=\"1.0\" encoding=\"GB2312\"?>\r\n<Notify>\r\n<CmdType>Catalog</CmdType>\r\n<SN>9</SN>\r\n<DeviceID>34020000001320000001</DeviceID>\r\n<SumNum>3</SumNum>\r\n<DeviceList Num=\"3\">\r\n<Item><DeviceID>34020000001310000002</DeviceID><Name>Gate</Name><Status>ON</Status><Event>ADD</Event></Item>\r\n<Item><DeviceID>34020000001310000001</DeviceID><Event>OFF</Event></Item>\r\n<Item><DeviceID>34020000001310000002</DeviceID><Event>DEL</Event></Item>\r\n</DeviceList>\r\n</Notify>\r\n";

    fn channel(id: &str) -> Channel {
        Channel {
            id: id.into(),
            name: None,
            manufacturer: None,
            model: None,
            status: Some("ON".into()),
            online: true,
            parent_id: None,
            civil_code: None,
            address: None,
            ptz_type: None,
        }
    }

    #[test]
    fn events_apply_in_order() {
        let root = decode_tree(NOTIFY.as_bytes()).unwrap();
        assert!(is_catalog_notify(&root));
        let items = parse(&root).unwrap();
        let events: Vec<_> = items.iter().map(|(_, e)| *e).collect();
        assert_eq!(
            events,
            [CatalogEvent::Add, CatalogEvent::Off, CatalogEvent::Del]
        );
        let mut channels = vec![channel("34020000001310000001")];
        for (item, ev) in &items[..1] {
            assert!(apply(&mut channels, item, *ev));
        }
        assert_eq!(channels.len(), 2);
        assert_eq!(channels[1].name.as_deref(), Some("Gate"));
        for (item, ev) in &items[1..] {
            assert!(apply(&mut channels, item, *ev));
        }
        assert_eq!(channels.len(), 1);
        assert!(!channels[0].online);
        assert_eq!(channels[0].status.as_deref(), Some("OFF"));
        // OFF for an unknown channel changes nothing.
        assert!(!apply(&mut channels, &items[0].0, CatalogEvent::Off));
        assert_eq!(CatalogEvent::parse("vlost"), CatalogEvent::Other);
    }
}
