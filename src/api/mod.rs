//! HTTP API, metrics and health endpoints (axum).
