//! gofaxconf-compatible configuration.
