//! Tag lines imaged into real G3 documents (MH, MR, MMR at standard and fine resolution),
//! checked by decoding the result with libtiff (`tiffcp -c none`), not with our own decoder,
//! and accepted by HylaFAX's `faxinfo` and libtiff's `tiffinfo`/`tiff2ps`.
//!
//! The font is HylaFAX's own `lutRS18.pcf` as Debian installs it (hylafax-server); it is not
//! vendored (its license asks for notices we would rather not carry for a test).

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use chrono::TimeZone;
use fsfax::hylafax::qfile::QFileContent;
use fsfax::hylafax::tagline::{DEFAULT_FORMAT, JobFields, TagLine};
use fsfax::imaging::page::{Geometry, band_rows, imprint, render_band};
use fsfax::imaging::pcf::Font;

fn font_path() -> &'static Path {
    const CANDIDATES: [&str; 2] = [
        "/var/spool/hylafax/etc/lutRS18.pcf",
        "/etc/hylafax/lutRS18.pcf",
    ];
    CANDIDATES
        .iter()
        .map(Path::new)
        .find(|p| p.exists())
        .expect("HylaFAX's lutRS18.pcf is missing: install hylafax-server")
}

fn font() -> Font {
    Font::parse(&std::fs::read(font_path()).unwrap()).unwrap()
}

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/fax")
        .join(name)
}

fn run(cmd: &str, args: &[&str]) -> std::process::Output {
    let out = Command::new(cmd)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd}: {e}"));
    assert!(
        out.status.success(),
        "{cmd} {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// One page as libtiff decodes it.
#[derive(Debug, PartialEq)]
struct Page {
    width: usize,
    rows: Vec<Vec<bool>>,
}

/// Decodes every page of `path` with libtiff (to an uncompressed TIFF, read here).
fn decode(path: &Path, dir: &Path) -> Vec<Page> {
    let raw = dir.join(format!(
        "raw-{}.tif",
        path.file_name().unwrap().to_string_lossy()
    ));
    run(
        "tiffcp",
        &["-c", "none", path.to_str().unwrap(), raw.to_str().unwrap()],
    );
    let d = std::fs::read(&raw).unwrap();
    let le = &d[..2] == b"II";
    let u16_at = |at: usize| {
        let b = [d[at], d[at + 1]];
        if le {
            u16::from_le_bytes(b)
        } else {
            u16::from_be_bytes(b)
        }
    };
    let u32_at = |at: usize| {
        let b = [d[at], d[at + 1], d[at + 2], d[at + 3]];
        if le {
            u32::from_le_bytes(b)
        } else {
            u32::from_be_bytes(b)
        }
    };
    let mut pages = Vec::new();
    let mut at = u32_at(4) as usize;
    while at != 0 {
        let n = u16_at(at) as usize;
        let (mut width, mut length, mut photometric, mut fill_order) = (0, 0, 0, 1);
        let (mut offsets, mut counts) = (Vec::new(), Vec::new());
        for i in 0..n {
            let e = at + 2 + 12 * i;
            let (tag, kind, count) = (u16_at(e), u16_at(e + 2), u32_at(e + 4) as usize);
            if ![256, 257, 262, 266, 273, 279].contains(&tag) {
                continue;
            }
            let size = if kind == 3 { 2 } else { 4 };
            let base = if size * count <= 4 {
                e + 8
            } else {
                u32_at(e + 8) as usize
            };
            let vals: Vec<usize> = (0..count)
                .map(|k| {
                    if kind == 3 {
                        u16_at(base + 2 * k) as usize
                    } else {
                        u32_at(base + 4 * k) as usize
                    }
                })
                .collect();
            match tag {
                256 => width = vals[0],
                257 => length = vals[0],
                262 => photometric = vals[0],
                266 => fill_order = vals[0],
                273 => offsets = vals,
                279 => counts = vals,
                _ => {}
            }
        }
        let mut bytes = Vec::new();
        for (o, c) in offsets.iter().zip(&counts) {
            bytes.extend_from_slice(&d[*o..o + c]);
        }
        let stride = width.div_ceil(8);
        let rows = (0..length)
            .map(|y| {
                (0..width)
                    .map(|x| {
                        let shift = if fill_order == 2 { x % 8 } else { 7 - x % 8 };
                        let bit = bytes[y * stride + x / 8] >> shift & 1 == 1;
                        // MinIsWhite (0): a set bit is black.
                        bit == (photometric == 0)
                    })
                    .collect()
            })
            .collect();
        pages.push(Page { width, rows });
        at = u32_at(at + 2 + 12 * n) as usize;
    }
    pages
}

/// `name` converted by tiffcp with `args` (e.g. `-c g4`), or copied as it is.
fn variant(name: &str, args: &[&str], dir: &Path, out: &str) -> PathBuf {
    let to = dir.join(out);
    let mut a: Vec<&str> = args.to_vec();
    let from = fixture(name);
    a.push(from.to_str().unwrap());
    a.push(to.to_str().unwrap());
    run("tiffcp", &a);
    to
}

fn fields_for(page: u32) -> Vec<String> {
    vec![
        "From +1 555 0100".into(),
        "Fri Dec  4 14:18:05 2026".into(),
        format!("Page {} of 12", page + 3),
    ]
}

fn check_document(src: &Path, y_dpi: f64, first: u32, dir: &Path) {
    let font = font();
    let doc = std::fs::read(src).unwrap();
    let out = imprint(&doc, first, &font, &fields_for).unwrap();
    assert!(out.untouched.is_empty());
    let name = src.file_stem().unwrap().to_string_lossy();
    let dst = dir.join(format!("{name}-tagged.tif"));
    std::fs::write(&dst, &out.bytes).unwrap();

    let before = decode(src, dir);
    let after = decode(&dst, dir);
    assert_eq!(after.len(), before.len() - first as usize);
    let band = band_rows(&font, y_dpi);
    for (i, (b, a)) in before[first as usize..].iter().zip(&after).enumerate() {
        assert_eq!(
            (a.width, a.rows.len()),
            (b.width, b.rows.len()),
            "{name} page {i}"
        );
        assert!(
            a.rows[band..] == b.rows[band..],
            "{name} page {i}: the page below the tag line changed"
        );
        let want = render_band(
            &font,
            &fields_for(i as u32),
            Geometry {
                width: a.width,
                x_dpi: 204.0,
                y_dpi,
            },
        );
        assert!(a.rows[..band] == want[..], "{name} page {i}: band differs");
        // The band holds ink in each of the three fields, centred in its third of the line.
        let third = a.width / 3;
        for f in 0..3 {
            let cols: Vec<usize> = (f * third..(f + 1) * third)
                .filter(|&x| a.rows[..band].iter().any(|r| r[x]))
                .collect();
            let (lo, hi) = (cols[0], *cols.last().unwrap());
            let centre = (lo + hi) / 2;
            let mid = f * third + third / 2;
            assert!(
                centre.abs_diff(mid) <= 10,
                "{name} page {i} field {f}: ink {lo}..{hi} not centred on {mid}"
            );
        }
    }
    // HylaFAX's and libtiff's own tools read the result.
    let info = run("faxinfo", &[dst.to_str().unwrap()]);
    let info = String::from_utf8_lossy(&info.stdout);
    assert!(
        info.contains(&format!("Pages: {}", after.len())),
        "faxinfo: {info}"
    );
    let ti = run("tiffinfo", &["-D", dst.to_str().unwrap()]);
    assert!(
        !String::from_utf8_lossy(&ti.stderr).contains("Error"),
        "tiffinfo: {}",
        String::from_utf8_lossy(&ti.stderr)
    );
    run(
        "tiff2ps",
        &[
            "-a",
            "-O",
            dir.join("out.ps").to_str().unwrap(),
            dst.to_str().unwrap(),
        ],
    );
}

#[test]
fn mh_mr_mmr_at_standard_resolution() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    check_document(&fixture("test3.tif"), 98.0, 0, d);
    check_document(
        &variant("test3.tif", &["-c", "g3:2d"], d, "mr.tif"),
        98.0,
        0,
        d,
    );
    check_document(
        &variant("test3.tif", &["-c", "g4"], d, "mmr.tif"),
        98.0,
        0,
        d,
    );
    // Byte-aligned EOLs off, and several strips per page.
    check_document(
        &variant("test3.tif", &["-c", "g3:1d", "-r", "7"], d, "mh-strips.tif"),
        98.0,
        1,
        d,
    );
    check_document(
        &variant(
            "test3.tif",
            &["-c", "g3:2d:fill", "-r", "5"],
            d,
            "mr-strips.tif",
        ),
        98.0,
        0,
        d,
    );
    let more = [
        (&["-c", "g4", "-r", "5"][..], "mmr-strips.tif"),
        // Bits stored LSB first (FillOrder 2).
        (&["-c", "g3:2d", "-f", "lsb2msb"][..], "mr-lsb.tif"),
        (&["-c", "g4", "-f", "lsb2msb"][..], "mmr-lsb.tif"),
    ];
    for (args, name) in more {
        check_document(&variant("test3.tif", args, d, name), 98.0, 0, d);
    }
}

#[test]
fn mh_mr_mmr_at_fine_resolution() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    for (args, name) in [
        (&["-c", "g3:1d:fill"][..], "fine-mh.tif"),
        (&["-c", "g3:2d:fill"][..], "fine-mr.tif"),
        (&["-c", "g4"][..], "fine-mmr.tif"),
    ] {
        let f = variant("test1.tif", args, d, name);
        run("tiffset", &["-s", "283", "196", f.to_str().unwrap()]);
        check_document(&f, 196.0, 0, d);
    }
}

#[test]
fn a_resumed_job_first_page_says_page_3_of_12() {
    let q = QFileContent::parse(
        "sendq/q5",
        b"jobid:5\nexternal:5551234\nnpages:2\ntotpages:12\n",
    )
    .unwrap();
    let fields = JobFields::from_qfile(&q, None, "+1 555 0100");
    let when = chrono::FixedOffset::east_opt(0)
        .unwrap()
        .with_ymd_and_hms(2026, 12, 4, 14, 18, 5)
        .unwrap();
    let line = TagLine::new(DEFAULT_FORMAT, &when, fields, 10);
    assert_eq!(
        line.fields(1),
        [
            "From +1 555 0100",
            "Fri Dec  4 14:18:05 2026",
            "Page 3 of 12"
        ]
    );
    // The same text drawn into the pages still to send of a 12-page document.
    let dir = tempfile::tempdir().unwrap();
    let font = font();
    let doc = std::fs::read(fixture("test12.tif")).unwrap();
    let out = imprint(&doc, 2, &font, &|i| line.fields(i + 1)).unwrap();
    assert_eq!(out.pages, 10);
    let dst = dir.path().join("resumed.tif");
    std::fs::write(&dst, &out.bytes).unwrap();
    let pages = decode(&dst, dir.path());
    let band = band_rows(&font, 98.0);
    let g = Geometry {
        width: 1728,
        x_dpi: 204.0,
        y_dpi: 98.0,
    };
    let want = render_band(&font, &line.fields(1), g);
    assert!(pages[0].rows[..band] == want[..]);
    let other = render_band(&font, &line.fields(2), g);
    assert!(
        pages[0].rows[..band] != other[..],
        "page 4's text on page 3"
    );
}

#[test]
fn the_glyphs_are_the_fonts_own() {
    // Independent of render_band: the first field's first glyph, found in the decoded band,
    // is the font's bitmap of 'F' (standard resolution merges row pairs, so compare at fine).
    let dir = tempfile::tempdir().unwrap();
    let font = font();
    let f = variant("test1.tif", &["-c", "g4"], dir.path(), "g.tif");
    run("tiffset", &["-s", "283", "196", f.to_str().unwrap()]);
    let out = imprint(&std::fs::read(&f).unwrap(), 0, &font, &|_| vec!["F".into()]).unwrap();
    let dst = dir.path().join("g-out.tif");
    std::fs::write(&dst, &out.bytes).unwrap();
    let page = &decode(&dst, dir.path())[0];
    let glyph = font.glyph('F').unwrap();
    let x0 = (1728 - glyph.advance as usize) / 2 + glyph.left as usize;
    let y0 = 1 + (font.ascent() - glyph.ascent) as usize;
    for (r, row) in glyph.rows.iter().enumerate() {
        let got: Vec<bool> = page.rows[y0 + r][x0..x0 + glyph.width].to_vec();
        assert_eq!(&got, row, "row {r} of 'F'");
    }
    let ink = page.rows[..band_rows(&font, 196.0)]
        .iter()
        .flatten()
        .filter(|p| **p)
        .count();
    let glyph_ink = glyph.rows.iter().flatten().filter(|p| **p).count();
    assert_eq!(ink, glyph_ink, "ink outside the glyph");
}

// fsfaxsend, the real binary, against the fake FreeSWITCH.

use support::fakefs::{CallScript, FakeConfig, FakeFs};
use support::send::{MODEM, SendEnv, wait_exit};

const FORMAT: &str = "TagLineFormat: \"From %%n|%c|Page %%P of %%T\"\n";

/// A resumed job: 2 of test12.tif's 12 pages went out before.
fn resumed_job(env: &SendEnv, job: u32) {
    let q = env.qfile(job, "0401234", &[("test12.tif", 2)], &[]);
    let text = std::fs::read_to_string(&q)
        .unwrap()
        .replace("npages:0\ntotpages:3\n", "npages:2\ntotpages:12\n");
    std::fs::write(&q, text).unwrap();
}

fn modem_config(env: &SendEnv, text: &str) {
    std::fs::write(env.spool.join(format!("etc/config.{MODEM}")), text).unwrap();
}

#[tokio::test]
async fn fsfaxsend_sends_a_tagged_copy_and_asks_spandsp_for_no_header() {
    // The far end never answers: the document stays in place until we stop fsfaxsend, so it
    // can be read whatever the machine's speed.
    let fs = FakeFs::start(FakeConfig::new().default_script(CallScript::Silent)).await;
    let env = SendEnv::new(&fs.addr().to_string());
    env.write_config(&[], &["originatetimeout = 120s"], &[]);
    modem_config(
        &env,
        &format!("TagLineFont: {}\n{FORMAT}", font_path().display()),
    );
    resumed_job(&env, 21);
    let child = env.spawn(21);
    let pid = child.id().unwrap() as i32;
    assert!(
        fs.wait_for(Duration::from_secs(60), |fs| !fs.originates().is_empty())
            .await
    );
    let o = fs.originates()[0].clone();
    let path = PathBuf::from(o.originate.app_arg.clone().unwrap_or_default());
    assert!(
        path.starts_with(env.spool.join("tmp")) && path.to_string_lossy().ends_with("-tagline.tif"),
        "txfax gets the tagged copy in tmp/: {path:?}"
    );
    // An empty header, url-decoded by mod_spandsp: spandsp draws none (spandsp.conf's would
    // be used if the variable were left out).
    assert_eq!(
        o.var("fax_header").as_deref(),
        Some("%00"),
        "spandsp must draw no header"
    );
    assert_eq!(
        o.var("fax_start_page"),
        None,
        "the copy holds only the pages to send"
    );
    let dir = tempfile::tempdir().unwrap();
    let copy = dir.path().join("sent.tif");
    std::fs::copy(&path, &copy).unwrap();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    assert_eq!(wait_exit(child, Duration::from_secs(60)).await, 0);
    assert_eq!(
        env.temp_files(),
        0,
        "the tagged copy is removed after the attempt"
    );
    // The job's own document is untouched.
    let own = std::fs::read(env.spool.join("docq/doc21-0.tif")).unwrap();
    assert_eq!(own, std::fs::read(fixture("test12.tif")).unwrap());

    let pages = decode(&copy, dir.path());
    let original = decode(&fixture("test12.tif"), dir.path());
    assert_eq!(pages.len(), 10);
    let font = font();
    let band = band_rows(&font, 98.0);
    let g = Geometry {
        width: 1728,
        x_dpi: 204.0,
        y_dpi: 98.0,
    };
    for (i, p) in pages.iter().enumerate() {
        assert!(p.rows[band..] == original[i + 2].rows[band..], "page {i}");
        // The third field, in the last third of the line: "Page 3 of 12" on the first page.
        let want = render_band(
            &font,
            &[
                String::new(),
                String::new(),
                format!("Page {} of 12", i + 3),
            ],
            g,
        );
        for (r, row) in want.iter().enumerate() {
            assert!(p.rows[r][1152..] == row[1152..], "page {i} row {r}");
        }
        // The first field names the sender's number ([gofaxsend] faxnumber).
        let want = render_band(
            &font,
            &["From 4711".into(), String::new(), String::new()],
            g,
        );
        for (r, row) in want.iter().enumerate() {
            assert!(p.rows[r][..576] == row[..576], "page {i} row {r}");
        }
    }
}

#[tokio::test]
async fn fsfaxsend_done_with_tag_line_cleans_up() {
    let fs = FakeFs::start(FakeConfig::new()).await;
    let env = SendEnv::new(&fs.addr().to_string());
    modem_config(&env, &format!("TagLineFont: {}\n", font_path().display()));
    env.qfile(22, "0402222", &[("test3.tif", 0)], &[]);
    assert_eq!(env.run(22).await, 2);
    assert_eq!(env.field(22, "returned"), "2");
    assert_eq!(env.field(22, "npages"), "3");
    assert_eq!(fs.originates()[0].var("fax_header").as_deref(), Some("%00"));
    assert_eq!(env.temp_files(), 0);
}

#[tokio::test]
async fn a_bad_font_sends_without_tag_line_and_says_so() {
    let fs = FakeFs::start(FakeConfig::new()).await;
    let env = SendEnv::new(&fs.addr().to_string());
    std::fs::write(env.spool.join("etc/bad.pcf"), b"not a font").unwrap();
    modem_config(&env, "TagLineFont: etc/bad.pcf\n");
    env.qfile(23, "0402323", &[("test3.tif", 0)], &[]);
    assert_eq!(env.run(23).await, 2);
    assert_eq!(env.field(23, "returned"), "2");
    let status = env.field(23, "status");
    assert!(
        status.starts_with("Tag line not imaged") && status.contains("bad.pcf"),
        "{status}"
    );
    let o = &fs.originates()[0];
    // Today's behaviour: spandsp draws [freeswitch] header on the job's own document.
    assert!(o.var("fax_header").is_some_and(|h| h.contains("ACME")));
    assert!(
        o.originate
            .app_arg
            .clone()
            .unwrap_or_default()
            .contains("/docq/")
    );
}

#[tokio::test]
async fn a_bad_font_with_taglinefailure_retry_requeues_without_dialling() {
    let fs = FakeFs::start(FakeConfig::new()).await;
    let env = SendEnv::new(&fs.addr().to_string());
    env.write_config(&[], &["taglinefailure = retry"], &[]);
    modem_config(&env, "TagLineFont: etc/missing.pcf\n");
    env.qfile(24, "0402424", &[("test3.tif", 0)], &[]);
    assert_eq!(env.run(24).await, 0);
    assert_eq!(env.field(24, "returned"), "0");
    let status = env.field(24, "status");
    assert!(
        status.contains("Tag line cannot be imaged") && status.contains("missing.pcf"),
        "{status}"
    );
    assert!(fs.originates().is_empty(), "nothing was dialled");
}

#[tokio::test]
async fn an_empty_format_keeps_todays_header() {
    let fs = FakeFs::start(FakeConfig::new()).await;
    let env = SendEnv::new(&fs.addr().to_string());
    modem_config(
        &env,
        &format!(
            "TagLineFont: {}\nTagLineFormat: \"\"\n",
            font_path().display()
        ),
    );
    env.qfile(25, "0402525", &[("test3.tif", 0)], &[]);
    assert_eq!(env.run(25).await, 2);
    let o = &fs.originates()[0];
    assert!(o.var("fax_header").is_some_and(|h| h.contains("ACME")));
    assert!(
        o.originate
            .app_arg
            .clone()
            .unwrap_or_default()
            .contains("/docq/")
    );
}

#[tokio::test]
async fn an_encoding_that_cannot_be_imaged_is_sent_without_tag_line_and_says_so() {
    let fs = FakeFs::start(FakeConfig::new()).await;
    let env = SendEnv::new(&fs.addr().to_string());
    modem_config(&env, &format!("TagLineFont: {}\n", font_path().display()));
    env.qfile(26, "0402626", &[("test1.tif", 0)], &[]);
    // The same page, its Compression tag claiming LZW (5).
    set_compression(&env.spool.join("docq/doc26-0.tif"), 5);
    assert_eq!(env.run(26).await, 2);
    let status = env.field(26, "status");
    assert!(
        status.starts_with("Tag line not imaged") && status.contains("page 1: TIFF compression 5"),
        "{status}"
    );
    let log = env.session_log(26);
    assert!(log.contains("Sending without tag line"), "{log}");
}

/// Runs fsfaxsend on `job` against a far end that never answers, reads the document handed to
/// `txfax` while the call is pending, then stops fsfaxsend with SIGTERM (a retry).
async fn sent_document(env: &SendEnv, fs: &FakeFs, job: u32) -> Vec<u8> {
    let child = env.spawn(job);
    let pid = child.id().unwrap() as i32;
    assert!(
        fs.wait_for(Duration::from_secs(60), |fs| !fs.originates().is_empty())
            .await
    );
    let path = fs.originates()[0]
        .originate
        .app_arg
        .clone()
        .unwrap_or_default();
    let bytes = std::fs::read(&path).unwrap();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    assert_eq!(wait_exit(child, Duration::from_secs(60)).await, 0);
    bytes
}

#[tokio::test]
async fn dynamicconfig_tagline_wins_over_the_modem_config() {
    let fs = FakeFs::start(FakeConfig::new().default_script(CallScript::Silent)).await;
    let env = SendEnv::new(&fs.addr().to_string());
    let script = env.spool.join("bin/dynconf");
    std::fs::write(
        &script,
        "#!/bin/sh\necho 'TagLine: \"%%l|p%%P\"'\necho 'LocalIdentifier: ACME GmbH'\n",
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    env.write_config(
        &[],
        &[
            &format!("dynamicconfig = {}", script.display()),
            "originatetimeout = 120s",
        ],
        &[],
    );
    modem_config(
        &env,
        &format!("TagLineFont: {}\n{FORMAT}", font_path().display()),
    );
    env.qfile(27, "0402727", &[("test3.tif", 0)], &[]);
    let sent = sent_document(&env, &fs, 27).await;
    let o = &fs.originates()[0];
    assert_eq!(o.var("fax_header").as_deref(), Some("%00"));
    let font = font();
    let g = Geometry {
        width: 1728,
        x_dpi: 204.0,
        y_dpi: 98.0,
    };
    let band = band_rows(&font, 98.0);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("dyn.tif");
    std::fs::write(&path, &sent).unwrap();
    let pages = decode(&path, dir.path());
    for (i, p) in pages.iter().enumerate() {
        let want = render_band(&font, &["ACME GmbH".into(), format!("p{}", i + 1)], g);
        assert!(p.rows[..band] == want[..], "page {i}");
    }
}

/// Rewrites the Compression tag of the first page of a little-endian TIFF.
fn set_compression(path: &Path, value: u16) {
    let mut d = std::fs::read(path).unwrap();
    let at = u32::from_le_bytes([d[4], d[5], d[6], d[7]]) as usize;
    let n = u16::from_le_bytes([d[at], d[at + 1]]) as usize;
    let e = (0..n)
        .map(|i| at + 2 + 12 * i)
        .find(|&e| u16::from_le_bytes([d[e], d[e + 1]]) == 259)
        .unwrap();
    d[e + 8..e + 10].copy_from_slice(&value.to_le_bytes());
    std::fs::write(path, d).unwrap();
}

#[tokio::test]
async fn a_jbig_page_is_sent_as_it_is_and_the_status_says_so() {
    let fs = FakeFs::start(FakeConfig::new()).await;
    let env = SendEnv::new(&fs.addr().to_string());
    modem_config(&env, &format!("TagLineFont: {}\n", font_path().display()));
    env.qfile(28, "0402828", &[("test1.tif", 0)], &[]);
    set_compression(&env.spool.join("docq/doc28-0.tif"), 9);
    assert_eq!(env.run(28).await, 2);
    let status = env.field(28, "status");
    assert!(
        status.contains("Tag line not imaged on page 1") && status.contains("JBIG"),
        "{status}"
    );
    // No page could carry the tag line: the job's own document goes out with spandsp's header.
    let o = &fs.originates()[0];
    let path = o.originate.app_arg.clone().unwrap_or_default();
    assert!(path.contains("/docq/"), "{path}");
    assert!(o.var("fax_header").is_some_and(|h| h.contains("ACME")));
}
