//! Writes the README's picture of a page top with a tag line: page 1 of the test fixture
//! `test3.tif` imaged with HylaFAX's default format and font, rows doubled to the real aspect
//! of a standard-resolution page. `cargo run --example tagline_picture -- docs/tagline.png`
//! (scripts/tagline-picture.sh).

use std::path::Path;

use chrono::TimeZone;
use fsfax::hylafax::qfile::QFileContent;
use fsfax::hylafax::tagline::{DEFAULT_FORMAT, JobFields, TagLine};
use fsfax::imaging::page::{imprint, top_rows};
use fsfax::imaging::pcf::Font;

fn main() {
    let out = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "docs/tagline.png".into());
    let font_path = [
        "/var/spool/hylafax/etc/lutRS18.pcf",
        "/etc/hylafax/lutRS18.pcf",
    ]
    .into_iter()
    .find(|p| Path::new(p).exists())
    .expect("install hylafax-server for lutRS18.pcf");
    let font = Font::parse(&std::fs::read(font_path).unwrap()).unwrap();
    let q = QFileContent::parse(
        "sendq/q7",
        b"jobid:7\nexternal:+49 30 1234567\ncompany:ACME Corp\nnpages:2\ntotpages:12\n",
    )
    .unwrap();
    let when = chrono::Local
        .with_ymd_and_hms(2026, 12, 4, 14, 18, 5)
        .unwrap();
    let line = TagLine::new(
        DEFAULT_FORMAT,
        &when,
        JobFields::from_qfile(&q, None, "+1 555 0100"),
        10,
    );
    let doc =
        std::fs::read(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/fax/test3.tif"))
            .unwrap();
    let tagged = imprint(&doc, 0, &font, &|i| line.fields(i + 1)).unwrap();
    let rows = top_rows(&tagged.bytes, 0, 40).unwrap();
    let width = rows[0].len();
    // Standard resolution: each row is twice as tall as a pixel is wide.
    let mut data = Vec::new();
    for row in &rows {
        let mut packed = vec![0u8; width.div_ceil(8)];
        for (x, &black) in row.iter().enumerate() {
            if !black {
                packed[x / 8] |= 0x80 >> (x % 8);
            }
        }
        data.extend_from_slice(&packed);
        data.extend_from_slice(&packed);
    }
    let file = std::fs::File::create(&out).unwrap();
    let mut enc = png::Encoder::new(
        std::io::BufWriter::new(file),
        width as u32,
        2 * rows.len() as u32,
    );
    enc.set_color(png::ColorType::Grayscale);
    enc.set_depth(png::BitDepth::One);
    enc.set_compression(png::Compression::Best);
    enc.write_header().unwrap().write_image_data(&data).unwrap();
    println!("{out}");
}
