//! Every Prometheus metric camgate exports, in one place.
//!
//! Names are `camgate_*` with units in the name; labels are low-cardinality
//! enums (outcome, kind, method, transport). Device ids appear only in the
//! opt-in `camgate_device_*` families (`metrics.per_device_labels`), so by
//! default the series count stays bounded however many cameras register.
//! README.md's metrics catalogue lists every family; tests/metrics_catalogue.rs
//! keeps the two in step.

use std::sync::OnceLock;

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

/// One label pair with a fixed name and a value from a closed set.
pub type Label = [(&'static str, &'static str); 1];

pub struct Metrics {
    registry: Registry,
    pub devices_registered: Gauge,
    pub devices_online: Gauge,
    pub sip_requests: Family<Label, Counter>,
    pub sip_errors: Family<Label, Counter>,
    pub registrations: Family<Label, Counter>,
    pub keepalives: Counter,
    pub manscdp_errors: Family<Label, Counter>,
    pub invites: Family<Label, Counter>,
    pub byes_sent: Counter,
    pub invite_first_frame_seconds: Histogram,
    pub streams_active: Gauge,
    pub stream_starts: Counter,
    pub stream_stops: Family<Label, Counter>,
    pub viewers: Gauge,
    pub viewer_frames_skipped: Counter,
    pub viewer_queue_overflows: Counter,
    pub rtp_packets_received: Counter,
    pub rtp_bytes_received: Counter,
    pub rtp_errors: Family<Label, Counter>,
    pub rtp_packets_lost: Counter,
    pub ps_demux_errors: Family<Label, Counter>,
    pub ps_psm_repaired: Counter,
    pub payload_bytes_copied: Counter,
    pub frames_demuxed: Counter,
    pub rtp_ports_in_use: Gauge,
    pub rtp_port_exhausted: Counter,
    pub rtsp_sessions: Gauge,
    pub rtsp_sessions_started: Family<Label, Counter>,
    pub rtsp_requests: Family<Label, Counter>,
    pub rtsp_errors: Family<Label, Counter>,
    pub rtsp_bytes_sent: Counter,
    pub http_requests: Counter,
    pub http_private_network_preflights: Counter,
    pub http_errors: Family<Label, Counter>,
    pub connections_refused: Family<Label, Counter>,
    pub request_timeouts: Family<Label, Counter>,
    pub sip_dialogs: Gauge,
    pub tokio_tasks: Gauge,
    pub heap_trims: Counter,
    pub heap_released_bytes: Counter,
    pub heap_in_use_bytes: Gauge,
    pub heap_free_bytes: Gauge,
    pub gb_events: Counter,
    pub gb_webhook_errors: Family<Label, Counter>,
    pub gb_queries: Family<Label, Counter>,
    pub gb_controls: Family<Label, Counter>,
    pub gb_playback_commands: Family<Label, Counter>,
    pub gb_downloads: Family<Label, Counter>,
    pub gb_download_chunks_dropped: Counter,
    pub gb_talk_sessions: Family<Label, Counter>,
    pub gb_talk_packets_sent: Counter,
    pub gb_snapshot_requests: Family<Label, Counter>,
    pub gb_snapshot_images: Family<Label, Counter>,
    pub gb_catalog_notifies: Family<Label, Counter>,
    pub gb_subscriptions: Family<Label, Counter>,
    pub ready: Gauge,
    pub build_info: Family<Label, Gauge>,
    pub config_reloads: Family<Label, Counter>,
    pub config_restart_pending: Gauge,
    pub device_online: Family<DeviceLabel, Gauge>,
    pub rtsp_sessions_by_transport: Family<Label, Gauge>,
    pub rtsp_client_rtcp: Family<Label, Counter>,
    pub rtsp_client_packets_lost: Counter,
    pub rtsp_client_loss_fraction: Histogram,
    pub rtsp_auth_failures: Family<Label, Counter>,
    pub rtsp_first_frame_seconds: Histogram,
    pub rtsp_viewers_dropped: Family<Label, Counter>,
    pub rtsp_tokens_minted: Counter,
    pub cascade_upstreams_registered: Gauge,
    pub cascade_registrations: Family<Label, Counter>,
    pub cascade_keepalives: Family<Label, Counter>,
    pub cascade_errors: Family<Label, Counter>,
    pub cascade_retransmissions: Family<Label, Counter>,
    pub cascade_queries: Family<Label, Counter>,
    pub cascade_invites: Family<Label, Counter>,
    pub cascade_forwarded: Family<Label, Counter>,
    pub cascade_recorded_invites: Family<Label, Counter>,
    pub cascade_playback_controls: Family<Label, Counter>,
    pub cascade_recording_ends: Family<Label, Counter>,
    pub cascade_rtp_bytes_sent: Counter,
    pub cascade_alarms: Family<Label, Counter>,
    pub ctel_registrations: Family<Label, Counter>,
    pub ctel_logins: Family<Label, Counter>,
    pub ctel_devices_online: Gauge,
    pub ctel_link_errors: Family<Label, Counter>,
    pub ctel_heartbeats: Counter,
    pub ctel_token_checks: Family<Label, Counter>,
    pub ctel_commands: Family<Label, Counter>,
    pub ctel_pull_errors: Family<Label, Counter>,
    pub shared_port_packets: Family<Label, Counter>,
    pub rtp_reorder: Family<Label, Counter>,
    pub media_streams: Family<Label, Counter>,
    pub tcp_media_errors: Family<Label, Counter>,
    pub rtcp_receiver_reports: Counter,
    pub rtp_ports_capacity: Gauge,
    pub foscam_logins: Family<Label, Counter>,
    pub foscam_errors: Family<Label, Counter>,
    pub foscam_frames: Family<Label, Counter>,
    pub foscam_alarms: Counter,
    pub foscam_cameras_online: Gauge,
    pub webrtc_peers: Gauge,
    pub webrtc_sessions: Family<Label, Counter>,
    pub webrtc_sessions_ended: Family<Label, Counter>,
    pub webrtc_errors: Family<Label, Counter>,
    pub webrtc_datagrams_dropped: Family<Label, Counter>,
    pub webrtc_bytes_sent: Counter,
    pub webrtc_frames_sent: Counter,
    pub webrtc_keyframe_requests: Counter,
    pub webrtc_playback_commands: Family<Label, Counter>,
    pub webrtc_talk_sessions: Family<Label, Counter>,
    pub webrtc_talk_packets: Counter,
    pub webrtc_talk_errors: Family<Label, Counter>,
    pub transcodes_active: Gauge,
    pub transcode_starts: Family<Label, Counter>,
    pub transcode_frames_in: Family<Label, Counter>,
    pub transcode_frames_out: Family<Label, Counter>,
    pub transcode_frames_dropped: Family<Label, Counter>,
    pub transcode_cpu_seconds: Family<Label, Counter<f64, std::sync::atomic::AtomicU64>>,
    pub transcode_errors: Family<Label, Counter>,
    pub sip_rejected: Family<Label, Counter>,
    pub http_auth_failures: Family<Label, Counter>,
    pub webrtc_routes: Gauge,
    // ---- cluster (issue 18) ----
    pub cluster_nodes: Gauge,
    pub cluster_redis_up: Gauge,
    pub cluster_redirects: Family<Label, Counter>,
    pub cluster_forwarded_requests: Family<Label, Counter>,
    pub cluster_relays: Gauge,
    pub cluster_events: Family<Label, Counter>,
    pub cluster_relay_errors: Family<Label, Counter>,
    pub cluster_redis_command_seconds: Family<Label, Histogram, fn() -> Histogram>,
}

fn redis_latency_histogram() -> Histogram {
    Histogram::new([
        0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0,
    ])
}

/// A per-device label; only populated when `metrics.per_device_labels` is on.
pub type DeviceLabel = [(&'static str, String); 1];

fn build() -> Metrics {
    let mut r = Registry::default();
    macro_rules! reg {
        ($name:literal, $help:literal, $metric:expr) => {{
            let m = $metric;
            r.register($name, $help, m.clone());
            m
        }};
    }
    Metrics {
        devices_registered: reg!(
            "camgate_devices_registered",
            "Devices with a current SIP registration",
            Gauge::default()
        ),
        devices_online: reg!(
            "camgate_devices_online",
            "Registered devices whose keepalives are on time",
            Gauge::default()
        ),
        sip_requests: reg!(
            "camgate_sip_requests",
            "SIP requests received, by method",
            Family::default()
        ),
        sip_errors: reg!(
            "camgate_sip_errors",
            "SIP messages rejected or failed, by kind",
            Family::default()
        ),
        registrations: reg!(
            "camgate_sip_registrations",
            "REGISTER outcomes (challenged, ok, forbidden, unregistered, unknown_device)",
            Family::default()
        ),
        keepalives: reg!(
            "camgate_sip_keepalives",
            "Keepalive notifications received",
            Counter::default()
        ),
        manscdp_errors: reg!(
            "camgate_manscdp_errors",
            "MANSCDP XML bodies that failed to decode, by kind",
            Family::default()
        ),
        invites: reg!(
            "camgate_invites",
            "INVITE outcomes (ok, rejected, timeout, error)",
            Family::default()
        ),
        byes_sent: reg!(
            "camgate_byes_sent",
            "BYE requests sent to devices",
            Counter::default()
        ),
        invite_first_frame_seconds: reg!(
            "camgate_invite_first_frame_seconds",
            "Time from sending INVITE to the first demuxed frame",
            Histogram::new([0.1, 0.25, 0.5, 1.0, 2.0, 3.0, 5.0, 10.0])
        ),
        streams_active: reg!(
            "camgate_streams_active",
            "Streams whose source is running",
            Gauge::default()
        ),
        stream_starts: reg!(
            "camgate_stream_starts",
            "Sources started on demand",
            Counter::default()
        ),
        stream_stops: reg!(
            "camgate_stream_stops",
            "Sources stopped, by reason (idle, failed, shutdown, finished, no_media, device_gone, device_restarted)",
            Family::default()
        ),
        viewers: reg!(
            "camgate_viewers",
            "Viewers attached to streams",
            Gauge::default()
        ),
        viewer_frames_skipped: reg!(
            "camgate_viewer_frames_skipped",
            "Frames skipped by viewers that fell behind",
            Counter::default()
        ),
        viewer_queue_overflows: reg!(
            "camgate_viewer_queue_overflows",
            "Times a viewer fell more than media.viewer_queue_seconds of media behind and skipped to the next keyframe",
            Counter::default()
        ),
        rtp_packets_received: reg!(
            "camgate_rtp_packets_received",
            "RTP packets received from devices",
            Counter::default()
        ),
        rtp_bytes_received: reg!(
            "camgate_rtp_bytes_received",
            "RTP bytes received from devices, headers included",
            Counter::default()
        ),
        rtp_errors: reg!(
            "camgate_rtp_errors",
            "RTP packets dropped, by kind (malformed, unknown_ssrc, late, duplicate)",
            Family::default()
        ),
        rtp_packets_lost: reg!(
            "camgate_rtp_packets_lost",
            "RTP packets missing by sequence number",
            Counter::default()
        ),
        ps_demux_errors: reg!(
            "camgate_ps_demux_errors",
            "MPEG-PS demux errors, by kind",
            Family::default()
        ),
        ps_psm_repaired: reg!(
            "camgate_ps_psm_repaired",
            "Program stream maps whose inner length disagreed and were read by the packet length",
            Counter::default()
        ),
        payload_bytes_copied: reg!(
            "camgate_payload_bytes_copied",
            "Payload bytes copied between ingress and egress (zero-copy misses)",
            Counter::default()
        ),
        frames_demuxed: reg!(
            "camgate_frames_demuxed",
            "Frames produced by demuxers",
            Counter::default()
        ),
        rtp_ports_in_use: reg!(
            "camgate_rtp_ports_in_use",
            "RTP receive ports taken from the pool",
            Gauge::default()
        ),
        rtp_port_exhausted: reg!(
            "camgate_rtp_port_exhausted",
            "Stream starts refused because no RTP port was free",
            Counter::default()
        ),
        rtsp_sessions: reg!(
            "camgate_rtsp_sessions",
            "RTSP sessions playing or set up",
            Gauge::default()
        ),
        rtsp_sessions_started: reg!(
            "camgate_rtsp_sessions_started",
            "RTSP sessions started, by transport (tcp, udp)",
            Family::default()
        ),
        rtsp_requests: reg!(
            "camgate_rtsp_requests",
            "RTSP requests, by method",
            Family::default()
        ),
        rtsp_errors: reg!(
            "camgate_rtsp_errors",
            "RTSP error answers and bad requests, by kind",
            Family::default()
        ),
        rtsp_bytes_sent: reg!(
            "camgate_rtsp_bytes_sent",
            "Bytes sent to RTSP viewers, RTP and RTCP",
            Counter::default()
        ),
        http_requests: reg!(
            "camgate_http_requests",
            "HTTP API requests served",
            Counter::default()
        ),
        http_private_network_preflights: reg!(
            "camgate_http_private_network_preflights",
            "Preflights answered with Access-Control-Allow-Private-Network",
            Counter::default()
        ),
        http_errors: reg!(
            "camgate_http_errors",
            "HTTP requests answered with a client error (4xx), by kind",
            Family::default()
        ),
        connections_refused: reg!(
            "camgate_connections_refused",
            "TCP connections closed at accept: the peer IP already holds limits.max_connections_per_ip, by listener",
            Family::default()
        ),
        request_timeouts: reg!(
            "camgate_request_timeouts",
            "TCP connections closed for sending no complete request within limits.request_timeout, by listener",
            Family::default()
        ),
        sip_dialogs: reg!(
            "camgate_sip_dialogs",
            "SIP dialogs the stack holds (INVITE sessions with devices)",
            Gauge::default()
        ),
        tokio_tasks: reg!(
            "camgate_tokio_tasks",
            "Tasks alive in the async runtime",
            Gauge::default()
        ),
        heap_trims: reg!(
            "camgate_heap_trims",
            "Times freed heap was given back to the kernel after a burst (malloc_trim)",
            Counter::default()
        ),
        heap_released_bytes: reg!(
            "camgate_heap_released_bytes",
            "Resident bytes given back to the kernel by heap trims",
            Counter::default()
        ),
        heap_in_use_bytes: reg!(
            "camgate_heap_in_use_bytes",
            "Bytes malloc has handed out and not had back (glibc mallinfo2 uordblks, read every 10 s)",
            Gauge::default()
        ),
        heap_free_bytes: reg!(
            "camgate_heap_free_bytes",
            "Free bytes inside malloc's arenas, resident or not (mallinfo2 fordblks, read every 10 s); resident size minus in-use is what fragmentation costs",
            Gauge::default()
        ),
        gb_events: reg!(
            "camgate_gb_events",
            "Device events (alarms, end of recording) recorded",
            Counter::default()
        ),
        gb_webhook_errors: reg!(
            "camgate_gb_webhook_errors",
            "Event webhook deliveries that failed, by kind",
            Family::default()
        ),
        gb_queries: reg!(
            "camgate_gb_queries",
            "Queries to devices, by outcome (ok, partial, timeout, refused, ...)",
            Family::default()
        ),
        gb_controls: reg!(
            "camgate_gb_controls",
            "DeviceControl/DeviceConfig requests sent, by outcome",
            Family::default()
        ),
        gb_playback_commands: reg!(
            "camgate_gb_playback_commands",
            "MANSRTSP playback control INFOs, by outcome",
            Family::default()
        ),
        gb_downloads: reg!(
            "camgate_gb_downloads",
            "Recording download jobs, by outcome (started, done, failed, cancelled)",
            Family::default()
        ),
        gb_download_chunks_dropped: reg!(
            "camgate_gb_download_chunks_dropped",
            "Download PS chunks dropped because the file writer fell behind",
            Counter::default()
        ),
        gb_talk_sessions: reg!(
            "camgate_gb_talk_sessions",
            "Voice broadcast sessions, by outcome",
            Family::default()
        ),
        gb_talk_packets_sent: reg!(
            "camgate_gb_talk_packets_sent",
            "PCMA RTP packets sent to devices' speakers",
            Counter::default()
        ),
        gb_snapshot_requests: reg!(
            "camgate_gb_snapshot_requests",
            "Snapshot (SnapShotConfig) requests, by outcome",
            Family::default()
        ),
        gb_snapshot_images: reg!(
            "camgate_gb_snapshot_images",
            "Snapshot images uploaded by devices, by outcome (stored or the refusal kind)",
            Family::default()
        ),
        gb_catalog_notifies: reg!(
            "camgate_gb_catalog_notifies",
            "Catalog NOTIFY items applied, by event (ON, OFF, ADD, DEL, UPDATE, other)",
            Family::default()
        ),
        gb_subscriptions: reg!(
            "camgate_gb_subscriptions",
            "Alarm and catalog SUBSCRIBEs to devices, by outcome (subscribed, renewed, failed)",
            Family::default()
        ),
        ready: reg!(
            "camgate_ready",
            "1 when listeners are bound and no drain is under way (what /readyz reports)",
            Gauge::default()
        ),
        build_info: reg!(
            "camgate_build_info",
            "Always 1; the version label names the running build",
            Family::default()
        ),
        config_reloads: reg!(
            "camgate_config_reloads",
            "SIGHUP configuration reloads, by outcome (applied, unchanged, failed)",
            Family::default()
        ),
        config_restart_pending: reg!(
            "camgate_config_restart_pending",
            "1 when a reload saw changed keys that only take effect after a restart",
            Gauge::default()
        ),
        device_online: reg!(
            "camgate_device_online",
            "Per registered device: 1 online, 0 keepalives overdue (only with metrics.per_device_labels)",
            Family::default()
        ),
        rtsp_sessions_by_transport: reg!(
            "camgate_rtsp_sessions_by_transport",
            "RTSP sessions set up now, by transport (tcp, udp)",
            Family::default()
        ),
        rtsp_client_rtcp: reg!(
            "camgate_rtsp_client_rtcp",
            "RTCP compound packets from RTSP clients, by type (report, bye)",
            Family::default()
        ),
        rtsp_client_packets_lost: reg!(
            "camgate_rtsp_client_packets_lost",
            "RTP packets RTSP clients reported lost in their RTCP receiver reports",
            Counter::default()
        ),
        rtsp_client_loss_fraction: reg!(
            "camgate_rtsp_client_loss_fraction",
            "Fraction lost per RTCP report block from RTSP clients",
            Histogram::new([0.0, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0])
        ),
        rtsp_auth_failures: reg!(
            "camgate_rtsp_auth_failures",
            "RTSP requests refused by access control, by kind",
            Family::default()
        ),
        rtsp_first_frame_seconds: reg!(
            "camgate_rtsp_first_frame_seconds",
            "Time from an RTSP PLAY to the first media packet sent",
            Histogram::new([0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0])
        ),
        rtsp_viewers_dropped: reg!(
            "camgate_rtsp_viewers_dropped",
            "RTSP viewers disconnected by the server, by reason (stalled)",
            Family::default()
        ),
        rtsp_tokens_minted: reg!(
            "camgate_rtsp_tokens_minted",
            "One-time RTSP hash tokens minted through the API",
            Counter::default()
        ),
        cascade_upstreams_registered: reg!(
            "camgate_cascade_upstreams_registered",
            "Upper platforms (cascade.upstreams) camgate is registered to now",
            Gauge::default()
        ),
        cascade_registrations: reg!(
            "camgate_cascade_registrations",
            "Registration outcomes toward upper platforms, by outcome (ok, failed, redirected, lost)",
            Family::default()
        ),
        cascade_keepalives: reg!(
            "camgate_cascade_keepalives",
            "Keepalives to upper platforms, by outcome (answered, missed)",
            Family::default()
        ),
        cascade_errors: reg!(
            "camgate_cascade_errors",
            "Cascade SIP input dropped or refused, by kind (unparsable, bad_header, stray_response, request_not_served, ...)",
            Family::default()
        ),
        cascade_retransmissions: reg!(
            "camgate_cascade_retransmissions",
            "Our requests to upper platforms over UDP resent unanswered, by outcome (resent, gave_up after 32 s, dropped at the cap of 1024 tracked)",
            Family::default()
        ),
        cascade_queries: reg!(
            "camgate_cascade_queries",
            "Upper-platform queries answered, by cmd (catalog, device_info, device_status, device_control, record_info)",
            Family::default()
        ),
        cascade_invites: reg!(
            "camgate_cascade_invites",
            "Live INVITEs (s=Play, or an unreadable offer) from upper platforms, by outcome (ok, not_found, refused, failed)",
            Family::default()
        ),
        cascade_recorded_invites: reg!(
            "camgate_cascade_recorded_invites",
            "Playback and download INVITEs from upper platforms, by outcome (ok, not_found, not_recorded, refused, failed)",
            Family::default()
        ),
        cascade_playback_controls: reg!(
            "camgate_cascade_playback_controls",
            "MANSRTSP INFOs from upper platforms, by outcome (ok, repeated, unknown_call, bad_request, refused)",
            Family::default()
        ),
        cascade_recording_ends: reg!(
            "camgate_cascade_recording_ends",
            "Recordings played to their end for an upper platform (MediaStatus 121 sent), by outcome: who hung up (upper_bye, our_bye)",
            Family::default()
        ),
        cascade_forwarded: reg!(
            "camgate_cascade_forwarded",
            "DeviceControl and RecordInfo from upper platforms carried out on cameras, by outcome (ok, not_found, busy, unknown_channel, unsupported, refused, unreachable, timeout)",
            Family::default()
        ),
        cascade_rtp_bytes_sent: reg!(
            "camgate_cascade_rtp_bytes_sent",
            "RTP bytes (PS) sent to upper platforms, counted when each upward stream ends",
            Counter::default()
        ),
        cascade_alarms: reg!(
            "camgate_cascade_alarms",
            "Camera alarms for upper platforms, by outcome (sent: MESSAGE, notified: NOTIFY in an alarm subscription, dropped: queue full or feed lagged, not_exposed: camera not shown to that upstream)",
            Family::default()
        ),
        ctel_registrations: reg!(
            "camgate_ctel_registrations",
            "Telecom HTTP registrations, by outcome (ok, unknown_device, wrong_key, bad_request, redirect)",
            Family::default()
        ),
        ctel_logins: reg!(
            "camgate_ctel_logins",
            "Telecom link logins, by outcome (ok, unknown_device, wrong_key)",
            Family::default()
        ),
        ctel_devices_online: reg!(
            "camgate_ctel_devices_online",
            "Telecom devices with a live link",
            Gauge::default()
        ),
        ctel_link_errors: reg!(
            "camgate_ctel_link_errors",
            "Telecom link errors, by kind (bad_head, oversize, bad_digest, xml_decode, timeout, ...)",
            Family::default()
        ),
        ctel_heartbeats: reg!(
            "camgate_ctel_heartbeats",
            "Telecom heartbeats received",
            Counter::default()
        ),
        ctel_token_checks: reg!(
            "camgate_ctel_token_checks",
            "Token checks devices asked for, by outcome (ok, unknown, expired, mismatch)",
            Family::default()
        ),
        ctel_commands: reg!(
            "camgate_ctel_commands",
            "Platform commands sent to telecom devices, by outcome (ok, refused, timeout, offline)",
            Family::default()
        ),
        ctel_pull_errors: reg!(
            "camgate_ctel_pull_errors",
            "Failed pulls of a telecom device's RTSP, by kind (connect, rtsp, offline)",
            Family::default()
        ),
        shared_port_packets: reg!(
            "camgate_shared_port_packets",
            "Datagrams on the shared RTP port, by outcome (routed, learned, unknown_ssrc, rtcp, not_rtp, queue_full, closed)",
            Family::default()
        ),
        rtp_reorder: reg!(
            "camgate_rtp_reorder_packets",
            "UDP reorder buffer events, by kind (reordered, late, duplicate, lost)",
            Family::default()
        ),
        media_streams: reg!(
            "camgate_media_streams",
            "Device media sessions started, by transport (udp, udp_shared, tcp_passive, tcp_active)",
            Family::default()
        ),
        tcp_media_errors: reg!(
            "camgate_tcp_media_errors",
            "TCP media connection and RFC 4571 framing failures, by kind",
            Family::default()
        ),
        rtcp_receiver_reports: reg!(
            "camgate_rtcp_receiver_reports",
            "RTCP receiver reports sent to devices",
            Counter::default()
        ),
        rtp_ports_capacity: reg!(
            "camgate_rtp_ports_capacity",
            "RTP receive ports the pool can hand out",
            Gauge::default()
        ),
        foscam_logins: reg!(
            "camgate_foscam_logins",
            "Foscam control logins, by outcome (ok, too_many, wrong_user, wrong_password, unreachable, timeout, error)",
            Family::default()
        ),
        foscam_errors: reg!(
            "camgate_foscam_errors",
            "Foscam protocol errors and lost connections, by kind",
            Family::default()
        ),
        foscam_frames: reg!(
            "camgate_foscam_frames",
            "Frames received from Foscam cameras, by kind (video, audio)",
            Family::default()
        ),
        foscam_alarms: reg!(
            "camgate_foscam_alarms",
            "Alarm notifications received from Foscam cameras",
            Counter::default()
        ),
        foscam_cameras_online: reg!(
            "camgate_foscam_cameras_online",
            "Foscam cameras with a logged-in control connection",
            Gauge::default()
        ),
        webrtc_peers: reg!(
            "camgate_webrtc_peers",
            "WebRTC (WHEP) viewers, connecting or connected",
            Gauge::default()
        ),
        webrtc_sessions: reg!(
            "camgate_webrtc_sessions",
            "WHEP offers, by outcome (ok, not_found, start_failed, no_codec, too_many, ...)",
            Family::default()
        ),
        webrtc_sessions_ended: reg!(
            "camgate_webrtc_sessions_ended",
            "WebRTC sessions ended, by reason (deleted, ice_closed, connect_timeout, stream_ended, error)",
            Family::default()
        ),
        webrtc_errors: reg!(
            "camgate_webrtc_errors",
            "WebRTC input rejected or peer failures, by kind",
            Family::default()
        ),
        webrtc_datagrams_dropped: reg!(
            "camgate_webrtc_datagrams_dropped",
            "Datagrams on the WebRTC port that reached no peer, by reason",
            Family::default()
        ),
        webrtc_bytes_sent: reg!(
            "camgate_webrtc_bytes_sent",
            "Bytes sent to WebRTC peers (SRTP, SRTCP, DTLS, STUN)",
            Counter::default()
        ),
        webrtc_frames_sent: reg!(
            "camgate_webrtc_frames_sent",
            "Frames written to WebRTC peers",
            Counter::default()
        ),
        webrtc_keyframe_requests: reg!(
            "camgate_webrtc_keyframe_requests",
            "PLI/FIR key frame requests from browsers",
            Counter::default()
        ),
        webrtc_playback_commands: reg!(
            "camgate_webrtc_playback_commands",
            "Trick-play requests for WebRTC viewers of recordings, by outcome",
            Family::default()
        ),
        webrtc_talk_sessions: reg!(
            "camgate_webrtc_talk_sessions",
            "Browser microphone talk offers, by outcome",
            Family::default()
        ),
        webrtc_talk_packets: reg!(
            "camgate_webrtc_talk_packets",
            "Opus packets from browser microphones decoded for talk",
            Counter::default()
        ),
        webrtc_talk_errors: reg!(
            "camgate_webrtc_talk_errors",
            "Browser talk media dropped, by kind",
            Family::default()
        ),
        transcodes_active: reg!(
            "camgate_transcodes_active",
            "Streams being transcoded to H.264 for WebRTC viewers",
            Gauge::default()
        ),
        transcode_starts: reg!(
            "camgate_transcode_starts",
            "Transcodes started, by source codec (h265, mjpeg)",
            Family::default()
        ),
        transcode_frames_in: reg!(
            "camgate_transcode_frames_in",
            "Source frames taken in by transcoders, by source codec",
            Family::default()
        ),
        transcode_frames_out: reg!(
            "camgate_transcode_frames_out",
            "H.264 frames produced by transcoders, by source codec",
            Family::default()
        ),
        transcode_frames_dropped: reg!(
            "camgate_transcode_frames_dropped",
            "Source frames a busy transcoder skipped (it resumes at the next key frame), by source codec",
            Family::default()
        ),
        transcode_cpu_seconds: reg!(
            "camgate_transcode_cpu_seconds",
            "CPU seconds spent decoding and encoding, decoder processes included, by source codec",
            Family::default()
        ),
        transcode_errors: reg!(
            "camgate_transcode_errors",
            "Transcode failures, by kind (jpeg_decode, hevc_decode, decoder_exit, encode, ...)",
            Family::default()
        ),
        sip_rejected: reg!(
            "camgate_sip_rejected",
            "SIP requests refused for who sent them (403), by reason",
            Family::default()
        ),
        http_auth_failures: reg!(
            "camgate_http_auth_failures",
            "HTTP API requests refused by http.auth, by reason",
            Family::default()
        ),
        webrtc_routes: reg!(
            "camgate_webrtc_routes",
            "Remote addresses routed to a WebRTC peer (verified STUN only)",
            Gauge::default()
        ),
        cluster_nodes: reg!(
            "camgate_cluster_nodes",
            "Live cluster nodes (their Redis lease holds), this one included",
            Gauge::default()
        ),
        cluster_redis_up: reg!(
            "camgate_cluster_redis_up",
            "1 when the last cluster sync reached Redis, 0 when it failed or no cluster is configured",
            Gauge::default()
        ),
        cluster_redirects: reg!(
            "camgate_cluster_redirects",
            "Requests sent to the owning node, by kind (register, rtsp, whep)",
            Family::default()
        ),
        cluster_forwarded_requests: reg!(
            "camgate_cluster_forwarded_requests",
            "API requests for another node's device forwarded to it, by outcome (ok, unreachable, timeout, bad_answer)",
            Family::default()
        ),
        cluster_events: reg!(
            "camgate_cluster_events",
            "Events through the cluster's Redis Stream, by outcome (published, publish_failed, received)",
            Family::default()
        ),
        cluster_relays: reg!(
            "camgate_cluster_relays",
            "Streams this node pulls from the owning node and serves locally (viewer_routing: relay)",
            Gauge::default()
        ),
        cluster_relay_errors: reg!(
            "camgate_cluster_relay_errors",
            "Relay pulls from the owning node that failed, by kind (rtsp, connect, oversize_frame, bad_length_prefix)",
            Family::default()
        ),
        cluster_redis_command_seconds: reg!(
            "camgate_cluster_redis_command_seconds",
            "Redis command round-trip time, by command",
            Family::<Label, Histogram, fn() -> Histogram>::new_with_constructor(
                redis_latency_histogram
            )
        ),
        registry: r,
    }
}

static METRICS: OnceLock<Metrics> = OnceLock::new();

/// The process-wide metrics.
pub fn get() -> &'static Metrics {
    METRICS.get_or_init(|| {
        let m = build();
        zero_known_series(&m);
        m.build_info
            .get_or_create(&label("version", env!("CARGO_PKG_VERSION")))
            .set(1);
        m
    })
}

/// Shorthand for a one-label family key.
pub fn label(name: &'static str, value: &'static str) -> Label {
    [(name, value)]
}

impl Metrics {
    /// The Prometheus text exposition of every metric.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = encode(&mut out, &self.registry);
        out
    }
}

/// Create every series whose label values are known up front, at zero.
/// A series that appears only at its first increment hides that first
/// increase from `rate()`/`increase()`, and an absent series cannot tell
/// "no errors" from "not scraped"; with these, dashboards and alerts see 0.
/// Label values created later (a new error kind) still work as before.
fn zero_known_series(m: &Metrics) {
    fn zero<C: Default + Clone + prometheus_client::metrics::TypedMetric>(
        family: &Family<Label, C>,
        name: &'static str,
        values: &[&'static str],
    ) {
        for v in values {
            drop(family.get_or_create(&label(name, v)));
        }
    }
    const SIP_METHODS: &[&str] = &[
        "REGISTER",
        "MESSAGE",
        "INVITE",
        "ACK",
        "BYE",
        "CANCEL",
        "INFO",
        "NOTIFY",
        "SUBSCRIBE",
        "OPTIONS",
        "OTHER",
    ];
    const RTSP_METHODS: &[&str] = &[
        "OPTIONS",
        "DESCRIBE",
        "SETUP",
        "PLAY",
        "PAUSE",
        "TEARDOWN",
        "GET_PARAMETER",
    ];
    zero(&m.sip_requests, "method", SIP_METHODS);
    zero(&m.sip_errors, "kind", crate::sip::screen::Rejection::KINDS);
    zero(
        &m.sip_errors,
        "kind",
        &[
            "bad_header",
            "stack",
            "register_refused",
            "no_dialog",
            "method_not_allowed",
        ],
    );
    zero(
        &m.connections_refused,
        "listener",
        &["sip", "rtsp", "http", "ctel"],
    );
    zero(&m.request_timeouts, "listener", &["sip", "rtsp", "ctel"]);
    zero(&m.http_errors, "kind", crate::api::http_errors::KINDS);
    zero(
        &m.registrations,
        "outcome",
        &[
            "challenged",
            "ok",
            "forbidden",
            "unregistered",
            "bad_request",
            "redirected",
            "throttled",
            "adopt_pending",
        ],
    );
    zero(
        &m.manscdp_errors,
        "kind",
        &[
            "too_large",
            "encoding",
            "xml",
            "no_root",
            "too_complex",
            "missing_element",
            "invalid_value",
        ],
    );
    zero(
        &m.invites,
        "outcome",
        &["ok", "rejected", "timeout", "error"],
    );
    zero(
        &m.stream_stops,
        "reason",
        &[
            "idle",
            "failed",
            "shutdown",
            "finished",
            "no_media",
            "device_gone",
            "device_restarted",
        ],
    );
    zero(
        &m.rtp_errors,
        "kind",
        &[
            "unknown_ssrc",
            "rtcp_on_rtp_port",
            "too_short",
            "bad_version",
            "csrc_overrun",
            "extension_overrun",
            "bad_padding",
            "foreign_source",
        ],
    );
    zero(
        &m.ps_demux_errors,
        "kind",
        &crate::media::ps::PsError::KINDS,
    );
    zero(&m.rtsp_sessions_started, "transport", &["tcp", "udp"]);
    zero(&m.rtsp_requests, "method", RTSP_METHODS);
    zero(
        &m.rtsp_errors,
        "kind",
        &["bad_request", "not_found", "method", "state", "transport"],
    );
    zero(
        &m.config_reloads,
        "outcome",
        &["applied", "unchanged", "failed"],
    );
    zero(
        &m.gb_webhook_errors,
        "kind",
        &["url", "io", "timeout", "status", "bad_answer"],
    );
    const QUERY_OUTCOMES: &[&str] = &[
        "ok",
        "partial",
        "timeout",
        "refused",
        "busy",
        "failed",
        "invalid",
        "offline",
        "send",
        "unknown_device",
    ];
    zero(&m.gb_queries, "outcome", QUERY_OUTCOMES);
    zero(&m.gb_controls, "outcome", QUERY_OUTCOMES);
    zero(&m.gb_playback_commands, "outcome", QUERY_OUTCOMES);
    zero(
        &m.gb_downloads,
        "outcome",
        &["started", "done", "failed", "cancelled"],
    );
    zero(
        &m.gb_talk_sessions,
        "outcome",
        &[
            "ok",
            "busy",
            "notify",
            "no_callback",
            "bad_offer",
            "failed",
            "unexpected_invite",
            "media_failed",
        ],
    );
    zero(&m.gb_snapshot_requests, "outcome", QUERY_OUTCOMES);
    zero(
        &m.gb_snapshot_images,
        "outcome",
        &["stored", "unknown_session", "full", "too_large", "not_jpeg"],
    );
    zero(
        &m.gb_catalog_notifies,
        "event",
        &["ON", "OFF", "ADD", "DEL", "UPDATE", "other"],
    );
    zero(
        &m.gb_subscriptions,
        "outcome",
        &["subscribed", "renewed", "failed"],
    );
    zero(&m.rtsp_sessions_by_transport, "transport", &["tcp", "udp"]);
    zero(&m.rtsp_client_rtcp, "type", &["report", "bye"]);
    zero(
        &m.rtsp_auth_failures,
        "kind",
        &[
            "missing",
            "bad_credentials",
            "wrong_realm",
            "stale_nonce",
            "unsupported",
            "malformed",
            "disabled",
        ],
    );
    zero(&m.rtsp_viewers_dropped, "reason", &["stalled"]);
    zero(
        &m.cascade_registrations,
        "outcome",
        &["ok", "failed", "redirected", "lost"],
    );
    zero(&m.cascade_keepalives, "outcome", &["answered", "missed"]);
    zero(
        &m.cascade_retransmissions,
        "outcome",
        &["resent", "gave_up", "dropped"],
    );
    zero(
        &m.cascade_errors,
        "kind",
        &[
            "unparsable",
            "bad_header",
            "stray_response",
            "request_not_served",
            "ptz_word_invalid",
            "control_unsupported",
        ],
    );
    zero(
        &m.cascade_queries,
        "cmd",
        &[
            "catalog",
            "device_info",
            "device_status",
            "device_control",
            "record_info",
        ],
    );
    zero(
        &m.cascade_forwarded,
        "outcome",
        &[
            "ok",
            "not_found",
            "unsupported",
            "refused",
            "unreachable",
            "timeout",
        ],
    );
    zero(
        &m.cascade_invites,
        "outcome",
        &["ok", "not_found", "refused", "failed"],
    );
    zero(
        &m.cascade_recorded_invites,
        "outcome",
        &["ok", "not_found", "not_recorded", "refused", "failed"],
    );
    zero(
        &m.cascade_alarms,
        "outcome",
        &["sent", "notified", "dropped", "not_exposed"],
    );
    zero(
        &m.cascade_playback_controls,
        "outcome",
        &["ok", "repeated", "unknown_call", "bad_request", "refused"],
    );
    zero(
        &m.cascade_recording_ends,
        "outcome",
        &["upper_bye", "our_bye"],
    );
    zero(
        &m.ctel_registrations,
        "outcome",
        &[
            "ok",
            "unknown_device",
            "wrong_key",
            "bad_request",
            "redirect",
        ],
    );
    zero(
        &m.ctel_logins,
        "outcome",
        &["ok", "unknown_device", "wrong_key"],
    );
    zero(
        &m.ctel_link_errors,
        "kind",
        &[
            "bad_head",
            "oversize",
            "bad_digest",
            "xml_decode",
            "timeout",
        ],
    );
    zero(
        &m.ctel_token_checks,
        "outcome",
        &["ok", "unknown", "expired", "mismatch"],
    );
    zero(
        &m.ctel_commands,
        "outcome",
        &["ok", "refused", "timeout", "offline"],
    );
    zero(&m.ctel_pull_errors, "kind", &["connect", "rtsp", "offline"]);
    zero(
        &m.foscam_logins,
        "outcome",
        &[
            "ok",
            "too_many",
            "wrong_user",
            "wrong_password",
            "refused",
            "timeout",
            "unreachable",
            "error",
        ],
    );
    zero(
        &m.foscam_errors,
        "kind",
        &[
            "garbage",
            "too_large",
            "truncated",
            "bad_inner_length",
            "jpeg_header",
            "audio_format",
            "connection_lost",
            "media_lost",
            "viewer_no_media",
        ],
    );
    zero(&m.foscam_frames, "kind", &["video", "audio"]);
    zero(
        &m.webrtc_sessions,
        "outcome",
        &[
            "ok",
            "bad_offer",
            "offer_refused",
            "no_codec",
            "source_codec",
            "not_found",
            "not_described",
            "start_failed",
            "too_many",
            "unauthorized",
            "forbidden",
        ],
    );
    zero(
        &m.webrtc_playback_commands,
        "outcome",
        &["ok", "bad_request", "no_session", "live", "device_error"],
    );
    zero(
        &m.webrtc_talk_sessions,
        "outcome",
        &[
            "ok",
            "bad_offer",
            "no_opus",
            "busy",
            "device_error",
            "too_many",
        ],
    );
    zero(&m.webrtc_talk_errors, "kind", &["opus_decode", "late"]);
    zero(
        &m.webrtc_sessions_ended,
        "reason",
        &[
            "deleted",
            "ice_closed",
            "connect_timeout",
            "stream_ended",
            "error",
        ],
    );
    zero(
        &m.webrtc_errors,
        "kind",
        &["bad_stun", "bad_offer", "candidate", "rtc"],
    );
    zero(
        &m.webrtc_datagrams_dropped,
        "reason",
        &[
            "peer_busy",
            "unknown_address",
            "unknown_ufrag",
            "bad_integrity",
            "route_cap",
        ],
    );
    zero(
        &m.sip_rejected,
        "reason",
        &[
            "address_mismatch",
            "unregistered",
            "not_allowed",
            "throttled",
        ],
    );
    zero(
        &m.http_auth_failures,
        "reason",
        &["missing", "invalid", "scope"],
    );
    zero(
        &m.shared_port_packets,
        "outcome",
        &[
            "routed",
            "learned",
            "unknown_ssrc",
            "rtcp",
            "not_rtp",
            "queue_full",
            "closed",
        ],
    );
    zero(
        &m.rtp_reorder,
        "kind",
        &["reordered", "late", "duplicate", "lost"],
    );
    zero(
        &m.media_streams,
        "transport",
        &["udp", "udp_shared", "tcp_passive", "tcp_active"],
    );
    zero(
        &m.tcp_media_errors,
        "kind",
        &[
            "accept_failed",
            "accept_timeout",
            "connect_failed",
            "connect_timeout",
            "desynchronized",
            "frame_not_rtp",
            "frame_too_long",
            "frame_too_short",
        ],
    );
    for codec in crate::transcode::SOURCE_CODECS {
        zero(&m.transcode_starts, "codec", &[codec]);
        zero(&m.transcode_frames_in, "codec", &[codec]);
        zero(&m.transcode_frames_out, "codec", &[codec]);
        zero(&m.transcode_frames_dropped, "codec", &[codec]);
        zero(&m.transcode_cpu_seconds, "codec", &[codec]);
    }
    zero(
        &m.transcode_errors,
        "kind",
        crate::transcode::TranscodeError::KINDS,
    );
    zero(
        &m.webrtc_sessions,
        "outcome",
        &["too_many_transcodes", "transcode_failed"],
    );
    zero(&m.cluster_redirects, "kind", &["register", "rtsp", "whep"]);
    zero(
        &m.cluster_events,
        "outcome",
        &["published", "publish_failed", "received"],
    );
    for command in crate::cluster::store::COMMANDS {
        drop(
            m.cluster_redis_command_seconds
                .get_or_create(&label("command", command)),
        );
    }
    zero(
        &m.cluster_relay_errors,
        "kind",
        &["rtsp", "connect", "oversize_frame", "bad_length_prefix"],
    );
    zero(
        &m.cluster_forwarded_requests,
        "outcome",
        &["ok", "unreachable", "timeout", "bad_answer"],
    );
}
