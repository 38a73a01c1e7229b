//! Camera alarms told to an upper platform (GB/T 28181-2016 §9.4 alarm
//! event notification; A.2.5.3 `<Notify><CmdType>Alarm</CmdType>`): which
//! exposed channel an alarm belongs to, the Notify body, the alarms
//! waiting while we are not registered, and the upper platform's alarm
//! subscriptions (§9.7 event subscription; the SUBSCRIBE carries
//! `Event: Alarm` or an A.2.4.5 `<Query><CmdType>Alarm</CmdType>` body).
//!
//! §9.4 sends every alarm to the upper platform as a MESSAGE, subscribed
//! or not; an alarm subscription adds a NOTIFY in its dialog.
//!
//! Sans-IO: alarms, channel lists and `now` in; bodies and decisions out.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use super::answers::{DECLARATION, ExposedChannel, element, escape, gb2312};
use crate::streams::alarms::ChannelAlarm;

/// Alarms kept per upstream while it is not registered; the oldest give
/// way first (an alarm hours old matters less than the newest).
pub const MAX_QUEUED: usize = 64;
/// Alarm subscriptions one upstream may hold (one per SUBSCRIBE dialog).
pub const MAX_SUBSCRIPTIONS: usize = 8;
/// Longest lifetime granted to a subscription.
pub const MAX_EXPIRES: Duration = Duration::from_secs(86_400);
/// A.2.5.3 requires AlarmPriority and AlarmMethod: what we send when the
/// camera gave none (4 general, 7 other).
const DEFAULT_PRIORITY: u32 = 4;
const DEFAULT_METHOD: u32 = 7;

/// The exposed channel id `alarm` is told under, or `None` when its camera
/// is not shown to this upstream.
///
/// A GB28181 alarm naming one of the device's channels goes under that
/// channel (when exposed). An alarm naming only the device (its DeviceID
/// is the device's) or a camera of another protocol goes under the
/// device's channel when it has exactly one exposed; a device with
/// several goes under `platform_id`, the lower platform itself, rather
/// than guess a channel.
pub fn channel_for(
    alarm: &ChannelAlarm,
    exposed: &[ExposedChannel],
    platform_id: &str,
) -> Option<String> {
    let prefix = format!("{}/", alarm.device);
    let of_device: Vec<&ExposedChannel> = exposed
        .iter()
        .filter(|c| c.stream == alarm.device || c.stream.starts_with(&prefix))
        .collect();
    let names_the_device = |ch: &str| alarm.device.rsplit('/').next() == Some(ch);
    match alarm.channel.as_deref() {
        Some(ch) if !names_the_device(ch) => {
            let stream = format!("{prefix}{ch}");
            of_device
                .iter()
                .find(|c| c.stream == stream)
                .map(|c| c.id.clone())
        }
        _ => match of_device.as_slice() {
            [] => None,
            [one] => Some(one.id.clone()),
            _ => Some(platform_id.to_owned()),
        },
    }
}

/// The A.2.5.3 Notify for `alarm` under `device_id`, GB2312.
pub fn notify_body(sn: u32, device_id: &str, alarm: &ChannelAlarm) -> Vec<u8> {
    let mut x = format!(
        "{DECLARATION}<Notify>\r\n<CmdType>Alarm</CmdType>\r\n<SN>{sn}</SN>\r\n\
         <DeviceID>{}</DeviceID>\r\n<AlarmPriority>{}</AlarmPriority>\r\n\
         <AlarmMethod>{}</AlarmMethod>\r\n<AlarmTime>{}</AlarmTime>\r\n",
        escape(device_id),
        alarm.priority.unwrap_or(DEFAULT_PRIORITY),
        alarm.method.unwrap_or(DEFAULT_METHOD),
        escape(&alarm.time),
    );
    if let Some(d) = &alarm.description {
        x.push_str(&format!(
            "<AlarmDescription>{}</AlarmDescription>\r\n",
            escape(d)
        ));
    }
    if let Some(t) = alarm.alarm_type {
        x.push_str(&format!(
            "<Info>\r\n<AlarmType>{t}</AlarmType>\r\n</Info>\r\n"
        ));
    }
    x.push_str("</Notify>\r\n");
    gb2312(&x)
}

/// Whether a SUBSCRIBE is for alarms: `Event: Alarm`, or the alarm
/// query-subscription body whatever the Event header says.
pub fn is_alarm_subscribe(event: Option<&str>, body: &[u8]) -> bool {
    let named = event
        .and_then(|e| e.split(';').next())
        .is_some_and(|n| n.trim().eq_ignore_ascii_case("Alarm"));
    named || is_doc(body, "Query")
}

/// Whether a MESSAGE is the upper platform's `<Response>` to one of our
/// alarm notifications (A.2.6: Result OK), which needs only a 200.
pub fn is_alarm_response(body: &[u8]) -> bool {
    is_doc(body, "Response")
}

fn is_doc(body: &[u8], root: &str) -> bool {
    let text = String::from_utf8_lossy(body);
    text.contains(&format!("<{root}>"))
        && element(&text, "CmdType").is_some_and(|c| c.eq_ignore_ascii_case("Alarm"))
}

/// Which alarms a subscription asked for (A.2.4.5: StartAlarmPriority,
/// EndAlarmPriority, AlarmMethod `0` for all or e.g. `1/2`); absent or
/// unreadable conditions admit everything.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AlarmFilter {
    pub priorities: std::ops::RangeInclusive<u32>,
    /// `None`: every method.
    pub methods: Option<Vec<u32>>,
}

impl Default for AlarmFilter {
    fn default() -> Self {
        Self {
            priorities: 0..=u32::MAX,
            methods: None,
        }
    }
}

impl AlarmFilter {
    /// The conditions of a SUBSCRIBE body (any body: none means all).
    pub fn parse(body: &[u8]) -> Self {
        let text = String::from_utf8_lossy(body);
        let num = |tag| element(&text, tag).and_then(|v| v.parse::<u32>().ok());
        let start = num("StartAlarmPriority").filter(|p| *p > 0).unwrap_or(0);
        let end = num("EndAlarmPriority")
            .filter(|p| *p > 0)
            .unwrap_or(u32::MAX);
        let methods = element(&text, "AlarmMethod").and_then(|v| {
            let list: Vec<u32> = v.split('/').filter_map(|m| m.trim().parse().ok()).collect();
            (!list.is_empty() && !list.contains(&0)).then_some(list)
        });
        Self {
            priorities: start..=end,
            methods,
        }
    }

    pub fn admits(&self, alarm: &ChannelAlarm) -> bool {
        let method = alarm.method.unwrap_or(DEFAULT_METHOD);
        self.priorities
            .contains(&alarm.priority.unwrap_or(DEFAULT_PRIORITY))
            && self.methods.as_ref().is_none_or(|m| m.contains(&method))
    }
}

/// Alarms waiting for the registration, oldest first, at most a fixed
/// number.
#[derive(Debug)]
pub struct AlarmOutbox {
    queue: VecDeque<ChannelAlarm>,
    capacity: usize,
}

impl AlarmOutbox {
    pub fn new(capacity: usize) -> Self {
        Self {
            queue: VecDeque::new(),
            capacity: capacity.max(1),
        }
    }

    /// Queue `alarm`; whether the oldest was dropped to make room.
    pub fn push(&mut self, alarm: ChannelAlarm) -> bool {
        let dropped = self.queue.len() == self.capacity;
        if dropped {
            self.queue.pop_front();
        }
        self.queue.push_back(alarm);
        dropped
    }

    /// Everything queued, oldest first; the outbox is left empty.
    pub fn take(&mut self) -> Vec<ChannelAlarm> {
        self.queue.drain(..).collect()
    }

    pub fn is_empty(&self) -> bool {
        self.queue.is_empty()
    }
}

/// One alarm subscription dialog (we are the notifier).
#[derive(Debug, Clone)]
pub struct AlarmSubscription {
    pub call_id: String,
    /// Their From (URI and tag), our NOTIFY's To.
    pub their_uri: String,
    pub their_tag: String,
    /// Where NOTIFY goes.
    pub target: SocketAddr,
    pub expires_at: Instant,
    pub cseq: u32,
    pub filter: AlarmFilter,
}

/// The alarm subscriptions of one upstream.
#[derive(Debug, Default)]
pub struct AlarmSubscriptions {
    list: Vec<AlarmSubscription>,
}

impl AlarmSubscriptions {
    /// A SUBSCRIBE in dialog `sub` asking for `expires` (zero ends it):
    /// the status code to answer, 200 or 486 when full.
    pub fn subscribe(&mut self, sub: AlarmSubscription, expires: Duration, now: Instant) -> u16 {
        self.list.retain(|s| s.expires_at > now);
        if expires.is_zero() {
            self.list.retain(|s| s.call_id != sub.call_id);
            return 200;
        }
        let expires_at = now + expires.min(MAX_EXPIRES);
        if let Some(s) = self.list.iter_mut().find(|s| s.call_id == sub.call_id) {
            s.expires_at = expires_at;
            s.filter = sub.filter;
            return 200;
        }
        if self.list.len() >= MAX_SUBSCRIPTIONS {
            return 486;
        }
        self.list.push(AlarmSubscription { expires_at, ..sub });
        200
    }

    /// The live subscriptions, expired ones forgotten.
    pub fn active(&mut self, now: Instant) -> &mut [AlarmSubscription] {
        self.list.retain(|s| s.expires_at > now);
        &mut self.list
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ch(id: &str, stream: &str) -> ExposedChannel {
        ExposedChannel {
            id: id.into(),
            name: id.into(),
            manufacturer: String::new(),
            model: String::new(),
            online: true,
            stream: stream.into(),
            ptz: false,
        }
    }

    fn alarm(device: &str, channel: Option<&str>) -> ChannelAlarm {
        ChannelAlarm {
            device: device.into(),
            channel: channel.map(str::to_owned),
            priority: Some(1),
            method: Some(5),
            time: "2024-05-01T08:00:05".into(),
            description: Some("motion <gate>".into()),
            alarm_type: Some(2),
        }
    }

    #[test]
    fn alarms_go_under_the_exposed_channel_or_the_platform() {
        let exposed = [
            ch("C1", "gb/D1/C1"),
            ch("C2", "gb/D2/C2"),
            ch("C3", "gb/D2/C3"),
            ch("F1", "foscam/demo"),
        ];
        let p = "P";
        let to = |a: ChannelAlarm| channel_for(&a, &exposed, p);
        assert_eq!(to(alarm("gb/D1", Some("C1"))).as_deref(), Some("C1"));
        // Only the device named: its one channel.
        assert_eq!(to(alarm("gb/D1", Some("D1"))).as_deref(), Some("C1"));
        // Several channels and only the device named: the platform.
        assert_eq!(to(alarm("gb/D2", Some("D2"))).as_deref(), Some("P"));
        assert_eq!(to(alarm("gb/D2", Some("C3"))).as_deref(), Some("C3"));
        // A channel not shown to this upstream, a device not shown at all.
        assert_eq!(to(alarm("gb/D2", Some("C9"))), None);
        assert_eq!(to(alarm("gb/D9", None)), None);
        assert_eq!(to(alarm("foscam/demo", None)).as_deref(), Some("F1"));
        // `foscam/demo2` is another camera, not a channel of `foscam/demo`.
        assert_eq!(to(alarm("foscam/dem", None)), None);
    }

    #[test]
    fn notify_body_carries_the_fields() {
        let body = notify_body(7, "C1", &alarm("gb/D1", Some("C1")));
        let text = String::from_utf8(body).unwrap();
        assert!(text.starts_with("<?xml version=\"1.0\" encoding=\"GB2312\"?>\r\n<Notify>"));
        for part in [
            "<CmdType>Alarm</CmdType>",
            "<SN>7</SN>",
            "<DeviceID>C1</DeviceID>",
            "<AlarmPriority>1</AlarmPriority>",
            "<AlarmMethod>5</AlarmMethod>",
            "<AlarmTime>2024-05-01T08:00:05</AlarmTime>",
            "<AlarmDescription>motion &lt;gate&gt;</AlarmDescription>",
            "<Info>\r\n<AlarmType>2</AlarmType>\r\n</Info>",
        ] {
            assert!(text.contains(part), "{part} missing from {text}");
        }
        let mut bare = alarm("gb/D1", None);
        bare.priority = None;
        bare.method = None;
        bare.description = None;
        bare.alarm_type = None;
        let text = String::from_utf8(notify_body(1, "C1", &bare)).unwrap();
        assert!(text.contains("<AlarmPriority>4</AlarmPriority>"));
        assert!(text.contains("<AlarmMethod>7</AlarmMethod>"));
        assert!(!text.contains("AlarmDescription") && !text.contains("<Info>"));
    }

    #[test]
    fn subscribe_and_response_are_recognised() {
        let query = b"<?xml version=\"1.0\"?>\r\n<Query>\r\n<CmdType>Alarm</CmdType>\r\n<SN>1</SN>\r\n</Query>\r\n";
        assert!(is_alarm_subscribe(Some("presence"), query));
        assert!(is_alarm_subscribe(Some("Alarm;id=1"), b""));
        assert!(!is_alarm_subscribe(Some("Catalog"), b""));
        assert!(!is_alarm_response(query));
        let resp = b"<Response><CmdType>Alarm</CmdType><SN>1</SN><Result>OK</Result></Response>";
        assert!(is_alarm_response(resp));
        assert!(!is_alarm_subscribe(None, resp));
    }

    #[test]
    fn filter_reads_the_conditions_of_the_query() {
        let a = |priority, method| ChannelAlarm {
            priority: Some(priority),
            method: Some(method),
            ..alarm("gb/D1", None)
        };
        let all = AlarmFilter::parse(
            b"<Query><CmdType>Alarm</CmdType><AlarmMethod>0</AlarmMethod></Query>",
        );
        assert_eq!(all, AlarmFilter::default());
        assert!(all.admits(&a(4, 7)));
        let f = AlarmFilter::parse(
            b"<Query><StartAlarmPriority>1</StartAlarmPriority><EndAlarmPriority>2</EndAlarmPriority>\
              <AlarmMethod>2/5</AlarmMethod></Query>",
        );
        assert!(f.admits(&a(1, 5)));
        assert!(f.admits(&a(2, 2)));
        assert!(!f.admits(&a(3, 5)));
        assert!(!f.admits(&a(1, 1)));
    }

    #[test]
    fn outbox_drops_the_oldest() {
        let mut o = AlarmOutbox::new(2);
        assert!(!o.push(alarm("a", None)));
        assert!(!o.push(alarm("b", None)));
        assert!(o.push(alarm("c", None)));
        let got: Vec<String> = o.take().into_iter().map(|a| a.device).collect();
        assert_eq!(got, ["b", "c"]);
        assert!(o.is_empty());
    }

    #[test]
    fn subscriptions_refresh_end_expire_and_are_bounded() {
        let now = Instant::now();
        let sub = |id: &str| AlarmSubscription {
            call_id: id.into(),
            their_uri: "sip:u@x".into(),
            their_tag: "t".into(),
            target: "127.0.0.1:5060".parse().unwrap(),
            expires_at: now,
            cseq: 0,
            filter: AlarmFilter::default(),
        };
        let mut s = AlarmSubscriptions::default();
        let minute = Duration::from_secs(60);
        assert_eq!(s.subscribe(sub("a"), minute, now), 200);
        assert_eq!(s.subscribe(sub("a"), minute * 2, now), 200);
        assert_eq!(s.active(now).len(), 1);
        assert_eq!(s.active(now + minute + minute / 2).len(), 1);
        assert_eq!(s.subscribe(sub("a"), Duration::ZERO, now), 200);
        assert!(s.active(now).is_empty());
        for i in 0..MAX_SUBSCRIPTIONS {
            assert_eq!(s.subscribe(sub(&i.to_string()), minute, now), 200);
        }
        assert_eq!(s.subscribe(sub("x"), minute, now), 486);
        assert!(s.active(now + minute * 2).is_empty());
    }
}
