//! RTSP server (RFC 2326): the egress VLC, ffmpeg, GStreamer and NVRs use.
