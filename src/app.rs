//! Wiring: registry, listeners, API; graceful shutdown.
