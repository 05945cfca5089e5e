//! DynamicConfig output parser: never panics, reads LF and CRLF output alike, and whatever the
//! script prints (HylaFAX quoting allows `\n` escapes inside a value), the settings it yields
//! never put a line break or a second leg on the wire once fsfax uses them.
#![no_main]

use std::path::PathBuf;

use fsfax::fax::dialstring::encode_fax_ident;
use fsfax::fax::{ChannelVars, OriginateRequest};
use fsfax::hylafax::dynconfig::DynSettings;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let s = DynSettings::parse(&text);
    let inc = s.incoming();
    let out = s.outgoing();
    let _ = s.get_bool("RejectCall");
    for g in &out.gateways {
        assert!(!g.is_empty() && !g.contains(','), "bad gateway {g:?}");
    }
    let crlf = DynSettings::parse(&text.replace('\n', "\r\n"));
    assert_eq!(crlf.incoming(), inc, "CRLF output reads differently");
    assert_eq!(crlf.outgoing(), out, "CRLF output reads differently");

    // fsfaxd: `set fax_ident=<encoded>` on the channel.
    if let Some(ident) = &inc.local_identifier {
        let wire = encode_fax_ident(ident);
        assert!(wire.bytes().all(|b| b.is_ascii_graphic()), "{wire:?}");
    }
    // fsfaxsend: one originate per gateway with these settings.
    let mut vars = ChannelVars::new();
    vars.fax_ident = out.local_identifier.clone();
    vars.fax_header = out.tag_line.clone();
    vars.caller_id_number = out.fax_number.clone();
    let number = format!("{}0401234", out.call_prefix.clone().unwrap_or_default());
    for gateway in out
        .gateways
        .iter()
        .chain(std::iter::once(&"gw1".to_owned()))
    {
        let req = OriginateRequest {
            uuid: uuid::Uuid::nil(),
            gateway: gateway.clone(),
            number: number.clone(),
            vars: vars.clone(),
            txfax_path: PathBuf::from("/var/spool/hylafax/docq/doc1.tif"),
            start_page: None,
            end_page: None,
        };
        if let Ok(line) = req.build() {
            assert!(!line.contains(['\r', '\n', '\0']), "{line:?}");
            assert_eq!(line.matches("sofia/gateway/").count(), 1, "{line:?}");
            assert_eq!(line.matches("&txfax(").count(), 1, "{line:?}");
        }
    }
});
