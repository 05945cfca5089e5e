//! Logging to syslog or stderr.
