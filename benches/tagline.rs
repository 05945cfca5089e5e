//! Tag line imaging per page: the whole rewrite of a real 12-page G3 document (MH, and MR/MMR
//! made from it by tiffcp) with HylaFAX's lutRS18 font, divided by its pages; and the tag
//! line settings read a job without tag line pays at start-up (two small config files).
//!
//! Target (issue 14): imaging at most 2 ms per page. Needs hylafax-server (the font) and
//! libtiff-tools (tiffcp) installed.

use std::path::Path;
use std::process::Command;

use chrono::TimeZone;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use fsfax::hylafax::Spool;
use fsfax::hylafax::qfile::QFileContent;
use fsfax::hylafax::tagline::{DEFAULT_FORMAT, JobFields, TagLine, TagLineSettings};
use fsfax::imaging::page::imprint;
use fsfax::imaging::pcf::Font;

fn font() -> Font {
    let path = [
        "/var/spool/hylafax/etc/lutRS18.pcf",
        "/etc/hylafax/lutRS18.pcf",
    ]
    .into_iter()
    .map(Path::new)
    .find(|p| p.exists())
    .expect("install hylafax-server for lutRS18.pcf");
    Font::parse(&std::fs::read(path).unwrap()).unwrap()
}

fn document(compression: &str, dir: &Path) -> Vec<u8> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/fax/test12.tif");
    let dst = dir.join(format!("{}.tif", compression.replace(':', "-")));
    let ok = Command::new("tiffcp")
        .args(["-c", compression])
        .arg(&src)
        .arg(&dst)
        .status()
        .expect("tiffcp")
        .success();
    assert!(ok, "tiffcp -c {compression}");
    std::fs::read(dst).unwrap()
}

fn bench(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let font = font();
    let q = QFileContent::parse(
        "sendq/q1",
        b"jobid:1\nexternal:5551234\nnpages:0\ntotpages:12\n",
    )
    .unwrap();
    let when = chrono::Local
        .with_ymd_and_hms(2026, 12, 4, 14, 18, 5)
        .unwrap();
    let line = TagLine::new(
        DEFAULT_FORMAT,
        &when,
        JobFields::from_qfile(&q, None, "+1 555 0100"),
        12,
    );
    let mut g = c.benchmark_group("tagline");
    for compression in ["g3:1d:fill", "g3:2d:fill", "g4"] {
        let doc = document(compression, dir.path());
        g.throughput(Throughput::Elements(12));
        g.bench_function(
            format!("imprint 12 pages {compression} (time per page = time / 12)"),
            |b| b.iter(|| imprint(&doc, 0, &font, &|i| line.fields(i + 1)).unwrap()),
        );
    }
    g.throughput(Throughput::Elements(1));
    let font_bytes = std::fs::read(
        [
            "/var/spool/hylafax/etc/lutRS18.pcf",
            "/etc/hylafax/lutRS18.pcf",
        ]
        .into_iter()
        .find(|p| Path::new(p).exists())
        .unwrap(),
    )
    .unwrap();
    g.bench_function("parse lutRS18.pcf", |b| {
        b.iter(|| Font::parse(&font_bytes).unwrap())
    });
    // What a job without tag line costs: reading etc/config and etc/config.<modem>.
    let spool = dir.path().join("spool");
    std::fs::create_dir_all(spool.join("etc")).unwrap();
    std::fs::write(
        spool.join("etc/config"),
        "LogFacility: daemon\nCountryCode: 1\n",
    )
    .unwrap();
    std::fs::write(
        spool.join("etc/config.freeswitch0"),
        "FAXNumber: +1 555 0100\n",
    )
    .unwrap();
    let spool = Spool::new(&spool);
    g.bench_function("settings of a job without tag line", |b| {
        b.iter(|| TagLineSettings::read(&spool, "freeswitch0").unwrap())
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
