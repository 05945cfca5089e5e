//! The fax domain: results from spandsp events, outcome classification, fallback policy, dial strings.
