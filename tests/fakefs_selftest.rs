//! Holds the fake FreeSWITCH against the real captures.
mod support;

#[test]
fn placeholder_compiles() {
    let c = support::fakefs::Capture::load("inbound-auth-bad-password");
    assert_eq!(c.records.len(), 4);
}
