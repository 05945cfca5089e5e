//! DynamicConfig output parser: never panics; a setting never spans lines (a lone CR may stay
//! inside a value: every use encodes or checks it, see the dialstring target), and the same
//! settings come out of the output whatever its line endings (LF or CRLF).
#![no_main]

use fsfax::hylafax::dynconfig::DynSettings;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let s = DynSettings::parse(&text);
    let inc = s.incoming();
    let out = s.outgoing();
    for v in [&inc.local_identifier, &out.local_identifier, &out.tag_line, &out.fax_number, &out.call_prefix]
        .into_iter()
        .flatten()
    {
        assert!(!v.contains('\n'), "line break in a setting: {v:?}");
    }
    for g in &out.gateways {
        assert!(!g.is_empty() && !g.contains(','), "bad gateway {g:?}");
    }
    let _ = s.get_bool("RejectCall");
    let crlf = DynSettings::parse(&text.replace('\n', "\r\n"));
    assert_eq!(crlf.incoming(), inc, "CRLF output reads differently");
    assert_eq!(crlf.outgoing(), out, "CRLF output reads differently");
});
