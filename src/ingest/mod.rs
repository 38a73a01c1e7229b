//! Media ingest: RTP receive sockets, port pool, SSRC routing.
