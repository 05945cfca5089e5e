//! The T.38 fallback list in calls: the real fsfaxsend and fsfaxd against the fake FreeSWITCH
//! and its mod_db, in both directions, with expiry, hostile caller IDs and a mod_db that hangs.

mod support;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use support::fakefs::{CallScript, CallSetup, FakeCall, FakeConfig, FakeDb, FakeFs, RxScript, T38};
use support::fsfaxd::{Fsfaxd, wait_async};

/// Waits end as soon as what they wait for holds; this only bounds a hang.
const T: Duration = support::wait::HANG;
/// Only a guard against a hang: far above every timeout the configurations set.
const HANG_GUARD: Duration = Duration::from_secs(60);

/// A spool and configuration for fsfaxsend runs against one fake FreeSWITCH.
struct Sender {
    dir: tempfile::TempDir,
}

impl Sender {
    fn new(fs_addr: &str, freeswitch_extra: &str) -> Sender {
        let dir = tempfile::tempdir().unwrap();
        for d in ["log", "sendq", "docq", "tmp", "status", "etc"] {
            fs::create_dir_all(dir.path().join("spool").join(d)).unwrap();
        }
        let conf = format!(
            "[freeswitch]\nsocket = {fs_addr}\npassword = ClueCon\ngateway = gw1\n\
             softmodemfallback = true\n{}{freeswitch_extra}\n\
             [hylafax]\nspooldir = {}\nmodems = 1\n\
             [gofaxsend]\nenablet38 = true\nrequestt38 = true\nfaxnumber = 4711\n\
             originatetimeout = 60s\nmaxcallduration = 300s\nhangupafterresult = 1s\n",
            patient_lookups(freeswitch_extra),
            dir.path().join("spool").display()
        );
        fs::write(dir.path().join("fsfax.conf"), conf).unwrap();
        Sender { dir }
    }

    fn spool(&self) -> PathBuf {
        self.dir.path().join("spool")
    }

    /// Writes `sendq/q<job>` for `number` with the 3-page fixture and runs fsfaxsend on it.
    async fn send(&self, job: u32, number: &str) -> (i32, String) {
        let doc = format!("doc{job}.tif");
        fs::copy(fixture("test3.tif"), self.spool().join("docq").join(&doc)).unwrap();
        let q = format!(
            "tts:0\nkilltime:1995356039\nretrytime:0\nstate:6\nnpages:0\ntotpages:3\nntries:0\n\
             ndials:0\ntotdials:0\nmaxdials:12\ntottries:0\nmaxtries:3\nresolution:98\n\
             external:{number}\nnumber:{number}\nmailaddr:root@vm\nsender:A\njobid:{job}\n\
             jobtag:\nowner:root\nstatus:\nreturned:7\nnotify:none\nfax:0::docq/{doc}\n"
        );
        fs::write(self.spool().join("sendq").join(format!("q{job}")), q).unwrap();
        let child = tokio::process::Command::new(support::fsfaxsend())
            .arg("-c")
            .arg(self.dir.path().join("fsfax.conf"))
            .args(["-m", "freeswitch0", &format!("sendq/q{job}")])
            .current_dir(self.spool())
            .env("FSFAX_LOG", "info")
            .env("FSFAX_LOG_STDERR", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let out = tokio::time::timeout(HANG_GUARD, child.wait_with_output())
            .await
            .expect("fsfaxsend hung")
            .unwrap();
        let log = String::from_utf8_lossy(&out.stderr).into_owned();
        (out.status.code().unwrap_or(-1), log)
    }

    /// Every session log of the spool, concatenated.
    fn session_logs(&self) -> String {
        session_logs(&self.spool())
    }
}

fn session_logs(spool: &Path) -> String {
    let mut text = String::new();
    for e in fs::read_dir(spool.join("log")).unwrap() {
        let e = e.unwrap();
        if e.file_name().to_string_lossy().starts_with('c') {
            text.push_str(&fs::read_to_string(e.path()).unwrap_or_default());
        }
    }
    text
}

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/fax")
        .join(name)
}

/// A lookup limit far beyond what the fake needs, unless the test sets its own: whether a
/// lookup counts as answered must follow from the fake's mod_db, not from the machine's load.
fn patient_lookups(extra: &str) -> &'static str {
    if extra.contains("fallbacklookuptimeout") {
        ""
    } else {
        "fallbacklookuptimeout = 60s\n"
    }
}

/// fsfaxd with the fallback list in the mod_db of the fake FreeSWITCH at `fs`, which fsfaxd
/// reaches through `[freeswitch] socket` (never through the call's own socket).
fn receiver(fs: &FakeFs) -> Fsfaxd {
    Fsfaxd::start(
        1,
        &format!(
            "enablet38 = true\nrequestt38 = true\n\n[freeswitch]\nsoftmodemfallback = true\n\
             {}socket = {}\npassword = ClueCon",
            patient_lookups(""),
            fs.addr()
        ),
    )
}

/// Receives one call from `caller` with `script`, mod_db shared with `db`; waits for its end.
async fn receive(d: &Fsfaxd, db: &FakeDb, caller: &str, script: RxScript) -> FakeCall {
    let c = FakeCall::connect(
        d.addr,
        CallSetup {
            caller_number: caller.into(),
            db: db.clone(),
            script,
            ..CallSetup::default()
        },
    )
    .await
    .unwrap();
    assert!(c.wait_finished(T).await, "{}", d.log());
    c
}

fn t38_vars(c: &FakeCall) -> Vec<(String, String)> {
    c.log()
        .vars
        .into_iter()
        .filter(|(k, _)| k.starts_with("fax_enable_t38"))
        .collect()
}

fn now() -> i64 {
    chrono::Utc::now().timestamp()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_reception_puts_the_caller_on_the_list_and_the_next_send_uses_audio() {
    let fs = FakeFs::start(FakeConfig::new()).await;
    let db = fs.db();
    let d = receiver(&fs);
    let _c = receive(
        &d,
        &db,
        "040 1234",
        RxScript::RetrainThenHangUp { after_pages: 1 },
    )
    .await;
    assert!(
        fs.all_command_lines()
            .iter()
            .any(|l| l.starts_with("api db insert/fallback/0401234/")),
        "{:?}",
        fs.all_command_lines()
    );
    let since: i64 = db.get("fallback", "0401234").unwrap().parse().unwrap();
    assert!((now() - since).abs() < 600, "{since}");
    assert!(db.get("fallback-index-234", "0401234").is_some());
    assert!(
        wait_async(T, || session_logs(&d.spool())
            .contains("0401234 added to the fallback list"))
        .await,
        "{}",
        session_logs(&d.spool())
    );

    // The other direction: a send to the same station goes out with audio.
    let tx = Sender::new(&fs.addr().to_string(), "");
    let (code, log) = tx.send(1, "0401234").await;
    assert_eq!(code, 2, "done: {log}");
    let o = fs.originates();
    assert_eq!(o.len(), 1);
    assert_eq!(o[0].var("fax_enable_t38").as_deref(), Some("false"));
    assert_eq!(o[0].var("fax_enable_t38_request").as_deref(), Some("false"));
    assert!(
        tx.session_logs()
            .contains("sending with audio (G.711), T.38 off"),
        "{}",
        tx.session_logs()
    );
    assert!(log.contains("on the fallback list"), "{log}");

    // A station not on the list keeps T.38.
    tx.send(2, "0409999").await;
    let o = fs.originates();
    assert_eq!(o[1].var("fax_enable_t38").as_deref(), Some("true"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_send_puts_the_station_on_the_list_and_its_next_call_in_is_received_with_audio() {
    let fs = FakeFs::start(FakeConfig::new().default_script(CallScript::TrainingFailure)).await;
    let db = fs.db();
    let tx = Sender::new(&fs.addr().to_string(), "");
    let (code, log) = tx.send(1, "0405678").await;
    assert_eq!(code, 0, "{log}");
    assert!(db.get("fallback", "0405678").is_some(), "{:?}", db.rows());
    assert!(db.get("fallback-index-678", "0405678").is_some());
    assert!(
        tx.session_logs()
            .contains("0405678 added to the fallback list"),
        "{}",
        tx.session_logs()
    );

    let d = receiver(&fs);
    let c = receive(
        &d,
        &db,
        "0405678",
        RxScript::RxOk {
            pages: 1,
            t38: T38::Refused,
        },
    )
    .await;
    assert_eq!(
        t38_vars(&c),
        [
            ("fax_enable_t38".to_string(), "false".to_string()),
            ("fax_enable_t38_request".to_string(), "false".to_string())
        ]
    );
    assert!(
        wait_async(T, || session_logs(&d.spool())
            .contains("receiving with audio (G.711), T.38 off"))
        .await
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_entries_are_ignored_and_removed_in_both_directions() {
    let fs = FakeFs::start(FakeConfig::new()).await;
    let db = fs.db();
    let old = (now() - 40 * 86_400).to_string();
    for key in ["0401111", "0402222"] {
        db.seed("fallback", key, &old);
    }
    db.seed("fallback-index-111", "0401111", &old);
    let tx = Sender::new(&fs.addr().to_string(), "softmodemfallbackexpiry = 30d");
    let (code, log) = tx.send(1, "0401111").await;
    assert_eq!(code, 2, "{log}");
    assert_eq!(
        fs.originates()[0].var("fax_enable_t38").as_deref(),
        Some("true")
    );
    assert_eq!(db.get("fallback", "0401111"), None);
    assert_eq!(db.get("fallback-index-111", "0401111"), None);
    assert!(
        tx.session_logs().contains("expired; removed"),
        "{}",
        tx.session_logs()
    );
    assert!(log.contains("expired"), "{log}");

    // fsfaxd, with the same expiry.
    let d = Fsfaxd::start(
        1,
        &format!(
            "enablet38 = true\nrequestt38 = true\n\n[freeswitch]\nsoftmodemfallback = true\n\
             softmodemfallbackexpiry = 30d\nsocket = {}\npassword = ClueCon",
            fs.addr()
        ),
    );
    let c = receive(
        &d,
        &db,
        "0402222",
        RxScript::RxOk {
            pages: 1,
            t38: T38::Negotiated,
        },
    )
    .await;
    assert_eq!(
        t38_vars(&c)
            .iter()
            .find(|(k, _)| k == "fax_enable_t38")
            .map(|(_, v)| v.as_str()),
        Some("true")
    );
    assert_eq!(db.get("fallback", "0402222"), None);
    assert!(
        fs.all_command_lines()
            .contains(&"api db delete/fallback/0402222".to_string()),
        "{:?}",
        fs.all_command_lines()
    );
    assert!(wait_async(T, || d.log().contains("expired; removed")).await);

    // A fresh entry still applies under the same expiry.
    db.seed("fallback", "0403333", &now().to_string());
    tx.send(2, "0403333").await;
    assert_eq!(
        fs.originates()[1].var("fax_enable_t38").as_deref(),
        Some("false")
    );
    assert!(db.get("fallback", "0403333").is_some());
}

/// Every `db` command must be one of the well-formed fallback commands.
fn assert_well_formed(lines: &[String]) {
    for l in lines.iter().filter(|l| l.starts_with("api db")) {
        let rest = l.strip_prefix("api db ").unwrap();
        let fields: Vec<&str> = rest.split('/').collect();
        let (op, realm) = (fields[0], fields[1]);
        assert!(
            ["select", "exists", "insert", "delete"].contains(&op),
            "{l}"
        );
        assert!(
            realm == "fallback" || realm.starts_with("fallback-index-"),
            "{l}"
        );
        let key = fields[2];
        assert!(
            !key.is_empty()
                && key
                    .char_indices()
                    .all(|(i, c)| c.is_ascii_digit() || (c == '+' && i == 0)),
            "{l}"
        );
        assert_eq!(fields.len(), if op == "insert" { 4 } else { 3 }, "{l}");
        if op == "insert" {
            assert!(fields[3].parse::<i64>().is_ok(), "{l}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_caller_ids_never_make_a_broken_db_command() {
    let fs = FakeFs::start(FakeConfig::new()).await;
    let db = fs.db();
    let d = receiver(&fs);
    let mut all = Vec::new();
    for caller in ["12/34", "+49 (40) 1234", "", "0401,234", "040\t1234"] {
        let before = fs.all_command_lines().len();
        let c = receive(
            &d,
            &db,
            caller,
            RxScript::RetrainThenHangUp { after_pages: 1 },
        )
        .await;
        // Nothing about the fallback list goes over the call's own socket.
        assert!(!c.command_lines().iter().any(|l| l.starts_with("api db")));
        let lines: Vec<String> = fs.all_command_lines().split_off(before);
        assert_well_formed(&lines);
        let db_lines: Vec<&String> = lines.iter().filter(|l| l.starts_with("api db")).collect();
        if caller == "+49 (40) 1234" {
            assert!(
                db_lines.contains(&&"api db select/fallback/+49401234".to_string()),
                "{db_lines:?}"
            );
        } else {
            assert!(db_lines.is_empty(), "{caller:?}: {db_lines:?}");
        }
        all.extend(lines);
    }
    // Only the usable caller ID reached mod_db.
    let keys: Vec<String> = db.rows().into_iter().map(|(_, k, _)| k).collect();
    assert_eq!(keys, ["+49401234", "+49401234"], "{:?}", db.rows());
    assert!(
        all.iter()
            .any(|l| l.starts_with("api db insert/fallback/+49401234/"))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mod_db_that_never_answers_does_not_stop_the_send() {
    let fs = FakeFs::start(FakeConfig::new().db_silent()).await;
    let tx = Sender::new(&fs.addr().to_string(), "fallbacklookuptimeout = 1s");
    let (code, log) = tx.send(1, "0401234").await;
    // The fax went out, with T.38 as configured, and the job is done.
    assert_eq!(code, 2, "{log}");
    let o = fs.originates();
    assert_eq!(o.len(), 1, "{log}");
    assert_eq!(o[0].var("fax_enable_t38").as_deref(), Some("true"));
    let lines = fs.all_command_lines();
    assert!(
        lines.contains(&"api db select/fallback/0401234".to_string()),
        "{lines:?}"
    );
    assert!(log.contains("lookup for 0401234 failed"), "{log}");
    assert!(
        tx.session_logs().contains("T.38 as configured"),
        "{}",
        tx.session_logs()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mod_db_that_never_answers_does_not_stop_a_reception() {
    let fs = FakeFs::start(FakeConfig::new().db_silent()).await;
    let db = fs.db();
    let d = Fsfaxd::start(
        1,
        &format!(
            "enablet38 = true\nrequestt38 = true\n\n[freeswitch]\nsoftmodemfallback = true\n\
             fallbacklookuptimeout = 1s\nsocket = {}\npassword = ClueCon",
            fs.addr()
        ),
    );
    for (i, caller) in ["0401234", "0405678"].into_iter().enumerate() {
        let c = receive(
            &d,
            &db,
            caller,
            RxScript::RxOk {
                pages: 1,
                t38: T38::Negotiated,
            },
        )
        .await;
        // The lookup gave up; the call went on with T.38 as configured and was delivered.
        assert!(
            t38_vars(&c).contains(&("fax_enable_t38".to_string(), "true".to_string())),
            "{:?}",
            t38_vars(&c)
        );
        assert!(
            wait_async(T, || d.faxrcvd_runs().len() == i + 1).await,
            "{}",
            d.log()
        );
    }
    assert!(d.log().contains("fallback"), "{}", d.log());
}
