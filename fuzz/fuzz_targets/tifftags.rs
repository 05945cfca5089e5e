//! A received document, any bytes: counting its pages, reading HylaFAX's session tags and
//! adding them give an answer or an error, never a panic (fsfaxd examines every received TIFF
//! on its spool writer, built with `panic = "abort"`). A document that takes the tags counts
//! the same pages afterwards and its session tags read back.
#![no_main]

use std::path::Path;

use fsfax::tiff::count_pages_of;
use fsfax::tifftags::{
    PageInfo, TAG_FAX_RECV_PARAMS, TAG_FAX_RECV_TIME, TAG_IMAGE_DESCRIPTION, Value, session_in,
    with_tags,
};
use libfuzzer_sys::fuzz_target;

fn tags(p: PageInfo) -> Vec<(u16, Value)> {
    vec![
        (TAG_FAX_RECV_PARAMS, Value::Long(1000 + p.index as u32)),
        (TAG_FAX_RECV_TIME, Value::Long(p.width.unwrap_or(0))),
        (TAG_IMAGE_DESCRIPTION, Value::Ascii("+49 40 5550".into())),
    ]
}

fuzz_target!(|data: &[u8]| {
    let path = Path::new("fax000000001.tif");
    let pages = count_pages_of(path, data);
    let _ = session_in(data);
    if let Ok((tagged, _)) = with_tags(data, tags) {
        let pages = pages.expect("a document that takes the tags has countable pages");
        assert_eq!(count_pages_of(path, &tagged).ok(), Some(pages));
        assert!(
            session_in(&tagged).is_ok(),
            "the added tags do not read back"
        );
    }
});
