//! Catalog subscription against the simulated camera: with
//! `gb.subscribe_catalog` the gateway SUBSCRIBEs (`Event: Catalog`) after
//! the catalog query, and the camera's NOTIFY — ADD, ON, OFF, ADD, DEL,
//! UPDATE — leaves the channel list the API shows in the scripted state.

mod common;

use std::time::Duration;

use common::*;

#[test]
fn notify_events_update_the_channel_list() {
    let mut rig = Rig::start(Options {
        extra_yaml: "gb:\n  subscribe_catalog: true\n".into(),
        ..Options::default()
    });
    rig.add_camera(DEVICE, CHANNEL, &[]);
    rig.wait_channel(DEVICE, CHANNEL);
    let base = &CHANNEL[..18];
    let (second, third) = (format!("{base}98"), format!("{base}99"));

    let channels = wait_for(Duration::from_secs(10), || {
        let (_, body) = http_get(
            rig.ports.http,
            &format!("/api/v1/devices/{DEVICE}/channels"),
        )?;
        let v: serde_json::Value = serde_json::from_str(&body).ok()?;
        let list = v.as_array().or_else(|| v["channels"].as_array())?.clone();
        list.iter()
            .any(|c| c["id"] == second.as_str() && c["name"] == "Gate 2")
            .then_some(list)
    })
    .unwrap_or_else(|| panic!("catalog changes never applied\n{}", rig.logs()));
    let find = |id: &str| channels.iter().find(|c| c["id"] == id);
    let main = find(CHANNEL).expect("main channel kept");
    assert_eq!(main["online"], false, "{main}");
    assert_eq!(main["status"], "OFF", "{main}");
    let added = find(&second).unwrap();
    assert_eq!(added["online"], true, "{added}");
    assert!(
        find(&third).is_none(),
        "deleted channel listed: {channels:?}"
    );
    for (event, n) in [
        ("ADD", 2.0),
        ("ON", 1.0),
        ("OFF", 1.0),
        ("DEL", 1.0),
        ("UPDATE", 1.0),
    ] {
        assert_eq!(
            rig.metric(&format!(
                "camgate_gb_catalog_notifies_total{{event=\"{event}\"}}"
            )),
            n,
            "{event}"
        );
    }
}

/// Subscriptions are renewed before they lapse: with a 2 s lifetime both
/// the alarm and the catalog SUBSCRIBE go out again every ~1.6 s, and
/// the device answers each catalog renewal with its NOTIFY again (so the
/// renewals reached it).
#[test]
fn subscriptions_are_renewed_before_they_expire() {
    let mut rig = Rig::start(Options {
        extra_yaml: "gb:\n  subscribe_catalog: true\n  subscription_expires: 2\n".into(),
        ..Options::default()
    });
    rig.add_camera(DEVICE, CHANNEL, &[]);
    rig.wait_channel(DEVICE, CHANNEL);
    let renewed = "camgate_gb_subscriptions_total{outcome=\"renewed\"}";
    // Two kinds, renewed at least twice each.
    wait_for(Duration::from_secs(15), || {
        (rig.metric(renewed) >= 4.0).then_some(())
    })
    .unwrap_or_else(|| panic!("renewals: {}\n{}", rig.metric(renewed), rig.logs()));
    assert_eq!(
        rig.metric("camgate_gb_subscriptions_total{outcome=\"failed\"}"),
        0.0
    );
    assert_eq!(
        rig.metric("camgate_gb_subscriptions_total{outcome=\"subscribed\"}"),
        2.0
    );
    // One NOTIFY (one DEL) per catalog SUBSCRIBE the device received.
    let dels = rig.metric("camgate_gb_catalog_notifies_total{event=\"DEL\"}");
    assert!(dels >= 3.0, "catalog NOTIFYs after renewals: {dels}");
}
