//! What the API asks of devices (GB/T 28181-2016 §9.3 control, §9.5
//! queries, §9.7 subscriptions): each call sends one MANSCDP request with
//! a fresh SN and waits, through [`super::exchanges::Exchanges`], for the
//! device's answer — every page of it for catalogs, records and presets.

use std::time::Instant;

use rsipstack::sip::Method;
use tracing::{info, warn};

use super::aggregate::Completed;
use super::control::{DeviceControl, SnapshotConfig};
use super::exchanges::QueryError;
use super::manscdp::{self, CatalogItem, QueryKind};
use super::platform::{GbPlatform, lock};
use super::reports::{self, BasicParam, DeviceStatus, Preset, RecordItem, Report};
use super::subscriptions::SubscriptionKind;
use crate::metrics::{self, label};

fn count(outcome: Result<(), &QueryError>) {
    let kind = match outcome {
        Ok(()) => "ok",
        Err(e) => e.kind(),
    };
    metrics::get()
        .gb_queries
        .get_or_create(&label("outcome", kind))
        .inc();
}

impl GbPlatform {
    /// Send `xml` and await the pages `rx` collects.
    async fn paged<T>(
        &self,
        device: &str,
        sn: u32,
        xml: String,
        rx: tokio::sync::oneshot::Receiver<Completed<T>>,
    ) -> Result<Completed<T>, QueryError> {
        let timeout = self.config().gb.query_timeout;
        if let Err(e) = self.send_manscdp(device, &xml).await {
            lock(&self.exchanges).cancel(device, sn);
            count(Err(&e));
            return Err(e);
        }
        // The aggregator's own deadline ends the query with whatever pages
        // arrived; the extra second covers the timer's granularity.
        match tokio::time::timeout(timeout + std::time::Duration::from_secs(2), rx).await {
            Ok(Ok(done)) => {
                metrics::get()
                    .gb_queries
                    .get_or_create(&label(
                        "outcome",
                        if done.partial { "partial" } else { "ok" },
                    ))
                    .inc();
                Ok(done)
            }
            _ => {
                lock(&self.exchanges).cancel(device, sn);
                let e = QueryError::Timeout(timeout);
                count(Err(&e));
                Err(e)
            }
        }
    }

    /// Send `xml` and await the one answer with its SN.
    async fn single(&self, device: &str, sn: u32, xml: String) -> Result<Report, QueryError> {
        let rx = lock(&self.exchanges).expect_one(device, sn)?;
        if let Err(e) = self.send_manscdp(device, &xml).await {
            lock(&self.exchanges).cancel(device, sn);
            count(Err(&e));
            return Err(e);
        }
        let timeout = self.config().gb.query_timeout;
        match tokio::time::timeout(timeout, rx).await {
            Ok(Ok(report)) => {
                count(Ok(()));
                Ok(report)
            }
            _ => {
                lock(&self.exchanges).cancel(device, sn);
                let e = QueryError::Timeout(timeout);
                count(Err(&e));
                Err(e)
            }
        }
    }

    /// A.2.4.3 Catalog, every page; the registry is updated as pages come.
    pub async fn query_catalog(&self, device: &str) -> Result<Completed<CatalogItem>, QueryError> {
        let sn = self.next_sn();
        let rx = lock(&self.exchanges).expect_catalog(
            device,
            sn,
            Instant::now(),
            self.config().gb.query_timeout,
        )?;
        let xml = manscdp::query_xml(QueryKind::Catalog, sn, device);
        self.paged(device, sn, xml, rx).await
    }

    /// A.2.4.5 RecordInfo of `channel` between two GB times.
    pub async fn query_records(
        &self,
        device: &str,
        channel: &str,
        start: &str,
        end: &str,
    ) -> Result<Completed<RecordItem>, QueryError> {
        let sn = self.next_sn();
        let rx = lock(&self.exchanges).expect_records(
            device,
            sn,
            Instant::now(),
            self.config().gb.query_timeout,
        )?;
        let xml = reports::record_info_query(sn, channel, start, end);
        self.paged(device, sn, xml, rx).await
    }

    /// A.2.4.8 PresetQuery of `channel`.
    pub async fn query_presets(
        &self,
        device: &str,
        channel: &str,
    ) -> Result<Completed<Preset>, QueryError> {
        let sn = self.next_sn();
        let rx = lock(&self.exchanges).expect_presets(
            device,
            sn,
            Instant::now(),
            self.config().gb.query_timeout,
        )?;
        let xml = reports::preset_query(sn, channel);
        self.paged(device, sn, xml, rx).await
    }

    /// A.2.4.2 DeviceStatus.
    pub async fn query_status(&self, device: &str) -> Result<DeviceStatus, QueryError> {
        let sn = self.next_sn();
        let xml = manscdp::query_xml(QueryKind::DeviceStatus, sn, device);
        match self.single(device, sn, xml).await? {
            Report::DeviceStatus(s) => Ok(s),
            other => Err(QueryError::Failed(format!("unexpected answer {other:?}"))),
        }
    }

    /// A.2.4.7 ConfigDownload `BasicParam`; also adopts the device's
    /// heartbeat settings for offline detection (done on receipt).
    pub async fn query_config(&self, device: &str) -> Result<BasicParam, QueryError> {
        let sn = self.next_sn();
        let xml = reports::config_download_query(sn, device);
        match self.single(device, sn, xml).await? {
            Report::ConfigDownload(p) => Ok(p),
            other => Err(QueryError::Failed(format!("unexpected answer {other:?}"))),
        }
    }

    /// Send a DeviceControl to `target` (a channel or the device itself).
    /// PTZ commands are done at the 200 OK; the others wait for the
    /// device's `Result`.
    pub async fn control(
        &self,
        device: &str,
        target: &str,
        control: &DeviceControl,
    ) -> Result<Option<String>, QueryError> {
        let sn = self.next_sn();
        let xml = control.to_xml(sn, target);
        let outcome = if control.expects_response() {
            match self.single(device, sn, xml).await {
                Ok(Report::Result { result, .. }) => {
                    if result.eq_ignore_ascii_case("OK") {
                        Ok(Some(result))
                    } else {
                        Err(QueryError::Failed(result))
                    }
                }
                Ok(other) => Err(QueryError::Failed(format!("unexpected answer {other:?}"))),
                Err(e) => Err(e),
            }
        } else {
            self.send_manscdp(device, &xml).await.map(|()| None)
        };
        metrics::get()
            .gb_controls
            .get_or_create(&label(
                "outcome",
                match &outcome {
                    Ok(_) => "ok",
                    Err(e) => e.kind(),
                },
            ))
            .inc();
        if let Err(e) = &outcome {
            warn!(%device, %target, "DeviceControl failed: {e}");
        }
        outcome
    }

    /// Ask `channel` for `count` snapshots `interval` s apart, uploaded to
    /// our receiver; returns the new session (empty until uploads come).
    pub async fn request_snapshot(
        &self,
        device: &str,
        channel: &str,
        count: u32,
        interval: u32,
    ) -> Result<super::snapshot::SnapshotSession, QueryError> {
        let count = count.clamp(1, super::control::MAX_SNAP_NUM);
        let interval = interval.max(1);
        let session = self.snapshots.open(device, channel, count, interval);
        let config = SnapshotConfig {
            snap_num: count,
            interval,
            upload_url: format!(
                "http://{}:{}/api/v1/snapshots/upload/{}",
                self.config().advertised_ip(),
                self.config().http.listen.port(),
                session.session
            ),
            session_id: session.session.clone(),
        };
        let outcome = self.request_snapshots(device, channel, &config).await;
        metrics::get()
            .gb_snapshot_requests
            .get_or_create(&label(
                "outcome",
                match &outcome {
                    Ok(()) => "ok",
                    Err(e) => e.kind(),
                },
            ))
            .inc();
        outcome.map(|()| session)
    }

    /// GB/T 28181-2022 snapshot: ask `channel` to upload images to us.
    pub async fn request_snapshots(
        &self,
        device: &str,
        channel: &str,
        config: &SnapshotConfig,
    ) -> Result<(), QueryError> {
        let sn = self.next_sn();
        let xml = config.to_xml(sn, channel);
        // Devices acknowledge with a DeviceConfig Result; some send none, so
        // the 200 OK is enough to proceed and the upload is the proof.
        self.send_manscdp(device, &xml).await
    }

    /// §9.7.2: SUBSCRIBE (`Event: presence`) with an Alarm query body, so
    /// the device NOTIFYs or MESSAGEs us its alarms.
    pub async fn subscribe_alarms(&self, device: &str) -> Result<(), QueryError> {
        let xml = reports::alarm_query(self.next_sn(), device, None);
        self.subscribe(device, SubscriptionKind::Alarm, "presence", &xml)
            .await
    }

    /// §9.7.1: SUBSCRIBE (`Event: Catalog`) so the device NOTIFYs channel
    /// changes (ON/OFF/ADD/DEL/UPDATE).
    pub async fn subscribe_catalog(&self, device: &str) -> Result<(), QueryError> {
        let xml = super::catalog_notify::subscribe_body(self.next_sn(), device);
        self.subscribe(device, SubscriptionKind::Catalog, "Catalog", &xml)
            .await
    }

    /// Subscribe again (the renewal schedule says it is due).
    pub(crate) async fn renew_subscription(
        &self,
        device: &str,
        kind: SubscriptionKind,
    ) -> Result<(), QueryError> {
        match kind {
            SubscriptionKind::Alarm => self.subscribe_alarms(device).await,
            SubscriptionKind::Catalog => self.subscribe_catalog(device).await,
        }
    }

    /// One SUBSCRIBE with a MANSCDP body, tracked for renewal.
    async fn subscribe(
        &self,
        device: &str,
        kind: SubscriptionKind,
        event: &str,
        xml: &str,
    ) -> Result<(), QueryError> {
        let what = kind.as_str();
        let lifetime = self.config().gb.subscription_expires;
        let renewal = {
            let mut subs = lock(&self.subscriptions);
            let known = subs.is_tracked(device, kind);
            subs.started(device, kind, Instant::now());
            known
        };
        let r = self
            .send_to_device(
                device,
                Method::Subscribe,
                "Application/MANSCDP+xml",
                xml,
                &[
                    ("Event", event.to_owned()),
                    ("Expires", lifetime.as_secs().max(1).to_string()),
                ],
            )
            .await;
        let outcome = match &r {
            Ok(()) => {
                lock(&self.subscriptions).accepted(device, kind, Instant::now(), lifetime);
                info!(%device, what, renewal, "subscription accepted");
                if renewal { "renewed" } else { "subscribed" }
            }
            Err(e) => {
                lock(&self.subscriptions).failed(device, kind, Instant::now());
                warn!(%device, what, renewal, "subscription failed: {e}");
                "failed"
            }
        };
        metrics::get()
            .gb_subscriptions
            .get_or_create(&label("outcome", outcome))
            .inc();
        r
    }

    /// Forget a device (API `DELETE`); it comes back when it registers.
    pub fn remove_device(&self, device: &str) -> bool {
        self.forget_device(device)
    }
}
