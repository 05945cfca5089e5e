//! End to end with a real HylaFAX: `sendfax` queues a job, the real faxq runs fsfaxsend with
//! `TagLineFormat: "From %%n|%c|Page %%P of %%T"` in the lab's modem config, and the document
//! fsfaxsend hands to the (fake) FreeSWITCH carries the tag line on each page.
//!
//! The far end never answers, so the document stays in `tmp/` until faxrm stops the attempt:
//! it is read whatever the machine's speed.

mod support;

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use fsfax::imaging::page::{Geometry, band_rows, render_band, top_rows};
use fsfax::imaging::pcf::Font;
use support::fakefs::{CallScript, FakeConfig, FakeFs};
use support::hylafax::{HylafaxLab, SendFaxCmd};

const FONT: &str = "/etc/hylafax/lutRS18.pcf";

#[tokio::test(flavor = "multi_thread")]
async fn faxq_job_goes_out_with_hylafax_tag_line() {
    let fs = FakeFs::start(FakeConfig::new().default_script(CallScript::Silent)).await;
    let cmd = SendFaxCmd::new();
    let conf = cmd.conf.clone();
    let lab = HylafaxLab::start(1, &cmd.wrapper);
    fs::write(
        &conf,
        format!(
            "[freeswitch]\nsocket = {}\npassword = ClueCon\ngateway = gw1\nident = +1 555 0100\n\
             header = \"spandsp header\"\n\
             [hylafax]\nspooldir = {}\nmodems = 1\nxferfaxlog = log/xferfaxlog\n\
             [gofaxsend]\nfaxnumber = 4711\noriginatetimeout = 120s\n",
            fs.addr(),
            lab.spool().display()
        ),
    )
    .unwrap();
    fs::set_permissions(&conf, fs::Permissions::from_mode(0o644)).unwrap();
    let spool = lab.spool();
    fs::copy(FONT, spool.join("etc/lutRS18.pcf")).unwrap();
    fs::set_permissions(
        spool.join("etc/lutRS18.pcf"),
        fs::Permissions::from_mode(0o644),
    )
    .unwrap();
    let modem_config = spool.join("etc/config.freeswitch0");
    let mut text = fs::read_to_string(&modem_config).unwrap_or_default();
    text.push_str(
        "FAXNumber: +15550100\nTagLineFont: etc/lutRS18.pcf\n\
         TagLineFormat: \"From %%n|%c|Page %%P of %%T\"\n",
    );
    fs::write(&modem_config, text).unwrap();
    lab.ready();

    let doc = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/fax/test3.tif");
    let job = lab.submit("5551001", &doc);
    let dialled = fs
        .wait_for(Duration::from_secs(60), |fs| !fs.originates().is_empty())
        .await;
    assert!(dialled, "faxq did not run fsfaxsend:\n{}", lab.syslog());
    let o = fs.originates()[0].clone();
    let sent = PathBuf::from(o.originate.app_arg.clone().unwrap_or_default());
    assert!(
        sent.starts_with(spool.join("tmp")) && sent.to_string_lossy().ends_with("-tagline.tif"),
        "{sent:?}"
    );
    assert_eq!(
        o.var("fax_header").as_deref(),
        Some("%00"),
        "no spandsp header"
    );
    let keep = tempfile::tempdir().unwrap();
    let tagged = fs::read(&sent).unwrap();
    // The job's own document as faxq prepared it in docq.
    let entry = lab.qfile_field(job, "fax").expect("fax: entry");
    let own_path = spool.join(entry.rsplit(':').next().unwrap());
    let own = fs::read(&own_path).unwrap();
    fs::write(keep.path().join("tagged.tif"), &tagged).unwrap();

    // Stop the attempt the way an admin would.
    let out = lab.client("faxrm", &["-h", &lab.server(), &job.to_string()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let gone = lab.wait_for(Duration::from_secs(60), |lab| {
        lab.qfile_field(job, "state").as_deref() == Some("8")
    });
    assert!(gone, "faxrm did not end the job:\n{}", lab.syslog());

    // faxinfo (HylaFAX) and tiffinfo (libtiff) read the document sent.
    let tagged_path = keep.path().join("tagged.tif");
    for (tool, args) in [("faxinfo", &[][..]), ("tiffinfo", &["-D"][..])] {
        let out = Command::new(tool)
            .args(args)
            .arg(&tagged_path)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            out.status.success() && !err.contains("rror"),
            "{tool}: {err}"
        );
    }

    // Each page: the band holds "From +15550100" and "Page n of 3", the rest is faxq's page.
    let font = Font::parse(&fs::read(FONT).unwrap()).unwrap();
    let resolution: f64 = lab
        .qfile_field(job, "resolution")
        .and_then(|r| r.parse().ok())
        .unwrap_or(98.0);
    let y_dpi = if resolution > 150.0 { 196.0 } else { 98.0 };
    let band = band_rows(&font, y_dpi);
    for page in 0..3 {
        let rows = band + 200;
        let got = top_rows(&tagged, page, rows).unwrap();
        let was = top_rows(&own, page, rows).unwrap();
        assert!(
            got[band..] == was[band..],
            "page {page}: below the band changed"
        );
        let width = got[0].len();
        let third = width / 3;
        let want = render_band(
            &font,
            &[
                "From +15550100".into(),
                String::new(),
                format!("Page {} of 3", page + 1),
            ],
            Geometry {
                width,
                x_dpi: 204.0,
                y_dpi,
            },
        );
        for r in 0..band {
            assert!(
                got[r][..third] == want[r][..third],
                "page {page} row {r}: sender"
            );
            assert!(
                got[r][2 * third..] == want[r][2 * third..],
                "page {page} row {r}: page"
            );
        }
    }
}
