//! `fsfaxd fallback ...`, the real binary against the fake FreeSWITCH's mod_db (whose `list`
//! is cut at 4 KiB like the real one).

mod support;

use std::collections::BTreeSet;
use std::fs;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use support::fakefs::{FakeConfig, FakeFs};

const HANG_GUARD: Duration = Duration::from_secs(120);

struct Admin {
    dir: tempfile::TempDir,
}

struct Out {
    code: i32,
    stdout: String,
    stderr: String,
}

impl Admin {
    fn new(socket: &str, extra: &str) -> Admin {
        let dir = tempfile::tempdir().unwrap();
        fs::write(
            dir.path().join("fsfax.conf"),
            format!("[freeswitch]\nsocket = {socket}\npassword = ClueCon\n{extra}\n"),
        )
        .unwrap();
        Admin { dir }
    }

    fn conf(&self) -> PathBuf {
        self.dir.path().join("fsfax.conf")
    }

    async fn run(&self, args: &[&str]) -> Out {
        let child = tokio::process::Command::new(env!("CARGO_BIN_EXE_fsfaxd"))
            .arg("-c")
            .arg(self.conf())
            .arg("fallback")
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let out = tokio::time::timeout(HANG_GUARD, child.wait_with_output())
            .await
            .expect("fsfaxd fallback hung")
            .unwrap();
        Out {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }
}

fn keys_of(stdout: &str) -> BTreeSet<String> {
    stdout
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .map(str::to_owned)
        .collect()
}

fn now() -> i64 {
    chrono::Utc::now().timestamp()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lists_five_thousand_entries_past_the_4_kib_list_limit() {
    let fs = FakeFs::start(FakeConfig::new()).await;
    let admin = Admin::new(&fs.addr().to_string(), "");
    let numbers: Vec<String> = (0..5000)
        .map(|i| format!("0{}", 401_000_000 + i * 7))
        .collect();
    let args: Vec<&str> = std::iter::once("add")
        .chain(numbers.iter().map(String::as_str))
        .collect();
    let added = admin.run(&args).await;
    assert_eq!(added.code, 0, "{}", added.stderr);
    assert_eq!(added.stdout.lines().count(), 5000);
    assert_eq!(fs.db().keys("fallback").len(), 5000);
    // mod_db itself cannot list them: its reply is cut.
    assert!(fs.db().api("list/fallback").split(',').count() < 1000);

    let list = admin.run(&["list"]).await;
    assert_eq!(list.code, 0, "{}", list.stderr);
    assert_eq!(list.stdout.lines().count(), 5000, "{}", list.stderr);
    let want: BTreeSet<String> = numbers.iter().cloned().collect();
    assert_eq!(keys_of(&list.stdout), want);
    let today = chrono::Local::now().format("%Y-%m-%d").to_string();
    let yesterday = (chrono::Local::now() - chrono::Duration::days(1))
        .format("%Y-%m-%d")
        .to_string();
    for line in list.stdout.lines() {
        assert!(
            line.contains(&today) || line.contains(&yesterday),
            "date added in local time: {line}"
        );
        assert!(!line.contains("expired"), "{line}");
    }
    assert!(
        !list.stderr.contains("not in fsfax's index"),
        "{}",
        list.stderr
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gofaxip_entries_work_and_what_cannot_be_listed_is_reported() {
    let fs = FakeFs::start(FakeConfig::new()).await;
    let db = fs.db();
    // GOfax.IP's rows: realm fallback, raw number, Unix time; no index.
    for i in 0..600 {
        db.seed("fallback", &format!("0402{i:06}"), "1700000000");
    }
    let admin = Admin::new(&fs.addr().to_string(), "softmodemfallbackexpiry = 30d");
    let list = admin.run(&["list"]).await;
    assert_eq!(list.code, 0, "{}", list.stderr);
    let shown = list.stdout.lines().count();
    assert!(shown > 100 && shown < 600, "{shown}");
    assert!(
        list.stdout.lines().all(|l| l.ends_with("expired")),
        "{}",
        list.stdout
    );
    assert!(
        list.stderr.contains(&format!(
            "{} of the 600 entries in realm `fallback` are not in fsfax's index",
            600 - shown
        )),
        "{}",
        list.stderr
    );
    // The last one is beyond mod_db's list, but show and delete reach it.
    let show = admin.run(&["show", "0402000599"]).await;
    assert_eq!(show.code, 0);
    assert!(show.stdout.starts_with("0402000599 "), "{}", show.stdout);
    assert!(show.stdout.contains("expired"), "{}", show.stdout);
    let del = admin.run(&["delete", "0402000599"]).await;
    assert_eq!(del.code, 0);
    assert_eq!(del.stdout, "deleted 0402000599\n");
    assert_eq!(db.get("fallback", "0402000599"), None);

    // purge removes everything it can see that is old enough.
    let purge = admin.run(&["purge", "--older-than", "30d"]).await;
    assert_eq!(purge.code, 0, "{}", purge.stderr);
    assert_eq!(purge.stdout.lines().count(), shown);
    assert_eq!(db.keys("fallback").len(), 599 - shown);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn show_add_delete_purge_and_their_messages() {
    let fs = FakeFs::start(FakeConfig::new()).await;
    let db = fs.db();
    let admin = Admin::new(&fs.addr().to_string(), "softmodemfallbackexpiry = 30d");

    let add = admin.run(&["add", "+49 (40) 1234", "040-5678"]).await;
    assert_eq!(add.code, 0, "{}", add.stderr);
    assert!(db.get("fallback", "+49401234").is_some());
    assert!(db.get("fallback-index-234", "+49401234").is_some());
    assert!(db.get("fallback", "0405678").is_some());

    let show = admin.run(&["show", "+49 40 1234"]).await;
    assert_eq!(show.code, 0);
    assert!(show.stdout.starts_with("+49401234 "), "{}", show.stdout);
    assert!(!show.stdout.contains("expired"));

    // An old entry, added by fsfax (indexed) and backdated.
    let old = (now() - 45 * 86_400).to_string();
    db.seed("fallback", "0409999", &old);
    db.seed("fallback-index-999", "0409999", &old);
    // A hand-made undated entry.
    db.seed("fallback", "0408888", "yes");
    let list = admin.run(&["list"]).await;
    assert_eq!(list.code, 0);
    let lines: Vec<&str> = list.stdout.lines().collect();
    assert_eq!(lines.len(), 4, "{}", list.stdout);
    let old_line = lines.iter().find(|l| l.starts_with("0409999")).unwrap();
    assert!(old_line.ends_with("expired"), "{old_line}");
    assert!(old_line.contains("45d"), "{old_line}");
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("0408888") && l.contains("no date"))
    );

    let dry = admin
        .run(&["purge", "--older-than", "30d", "--dry-run"])
        .await;
    assert_eq!(dry.code, 0);
    assert!(
        dry.stdout.starts_with("would delete 0409999"),
        "{}",
        dry.stdout
    );
    assert!(db.get("fallback", "0409999").is_some());
    let purge = admin.run(&["purge", "--older-than", "30d"]).await;
    assert_eq!(purge.code, 0);
    assert_eq!(purge.stdout.lines().count(), 1, "{}", purge.stdout);
    assert_eq!(db.get("fallback", "0409999"), None);
    assert_eq!(db.get("fallback-index-999", "0409999"), None);
    assert!(
        db.get("fallback", "0408888").is_some(),
        "undated entries stay"
    );

    let del = admin.run(&["delete", "0405678", "0401111"]).await;
    assert_eq!(del.code, 0);
    assert_eq!(
        del.stdout,
        "deleted 0405678\n0401111: not on the fallback list\n"
    );
    assert_eq!(db.get("fallback-index-678", "0405678"), None);
    let show = admin.run(&["show", "0405678"]).await;
    assert_eq!(show.stdout, "0405678: not on the fallback list\n");

    // Bad numbers are refused before anything reaches FreeSWITCH.
    let before = fs.all_command_lines().len();
    for bad in ["12/34", "", "a,b"] {
        let out = admin.run(&["add", bad]).await;
        assert_eq!(out.code, 1, "{bad:?}");
        assert!(
            out.stderr.contains("not a usable station number"),
            "{}",
            out.stderr
        );
    }
    assert_eq!(fs.all_command_lines().len(), before);
    let bad = admin.run(&["purge", "--older-than", "soon"]).await;
    assert_eq!(bad.code, 2, "{}", bad.stderr);

    // Every db command the CLI sent was well formed.
    for l in fs
        .all_command_lines()
        .iter()
        .filter(|l| l.starts_with("api db"))
    {
        assert!(
            !l.contains(' ') || l.matches(' ').count() == 2,
            "no spaces inside: {l}"
        );
        assert!(!l.contains(",") && !l.contains("//"), "{l}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_freeswitch_is_named_and_exits_1() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let addr = format!("127.0.0.1:{port}");
    let admin = Admin::new(&addr, "connecttimeout = 2s");
    for args in [&["list"][..], &["show", "0401234"], &["add", "0401234"]] {
        let out = admin.run(args).await;
        assert_eq!(out.code, 1, "{args:?}");
        assert!(out.stderr.contains(&addr), "{}", out.stderr);
        assert!(out.stdout.is_empty());
    }
    let admin = Admin::new("", "");
    let out = admin.run(&["list"]).await;
    assert_eq!(out.code, 1);
    assert!(out.stderr.contains("socket"), "{}", out.stderr);
}

/// Two nodes sharing one mod_db (mod_db in PostgreSQL): a list past mod_db's 4 KiB written
/// through node 1 is listed, shown and purged through node 2 (fsfax's index is ordinary
/// mod_db keys, nothing node-local).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_list_managed_through_one_node_is_read_through_another_sharing_its_db() {
    let shared = support::fakefs::FakeDb::default();
    let node1 = FakeFs::start(FakeConfig::new().shared_db(shared.clone())).await;
    let node2 = FakeFs::start(
        FakeConfig::new()
            .listen_on([127, 0, 0, 2].into())
            .shared_db(shared.clone()),
    )
    .await;
    let through1 = Admin::new(&node1.addr().to_string(), "");
    let through2 = Admin::new(&node2.addr().to_string(), "");
    let numbers: Vec<String> = (0..1500)
        .map(|i| format!("0{}", 402_000_000 + i * 3))
        .collect();
    let args: Vec<&str> = std::iter::once("add")
        .chain(numbers.iter().map(String::as_str))
        .collect();
    let added = through1.run(&args).await;
    assert_eq!(added.code, 0, "{}", added.stderr);
    assert!(
        node2.db().api("list/fallback").len() >= 4000,
        "past mod_db's list limit"
    );
    let list = through2.run(&["list"]).await;
    assert_eq!(list.code, 0, "{}", list.stderr);
    let want: BTreeSet<String> = numbers.iter().cloned().collect();
    assert_eq!(keys_of(&list.stdout), want, "{}", list.stderr);
    let show = through2.run(&["show", &numbers[700]]).await;
    assert_eq!(show.code, 0, "{}", show.stderr);
    assert!(show.stdout.starts_with(&numbers[700]), "{}", show.stdout);
    // Deleted through node 2, gone for node 1.
    let del = through2.run(&["delete", &numbers[0]]).await;
    assert_eq!(del.code, 0, "{}", del.stderr);
    let list = through1.run(&["list"]).await;
    assert_eq!(list.stdout.lines().count(), 1499, "{}", list.stderr);
    assert!(!keys_of(&list.stdout).contains(&numbers[0]));
    // Both nodes' command logs show the work was split as asked.
    assert!(
        node1
            .all_command_lines()
            .iter()
            .any(|l| l.starts_with("api db insert/fallback/"))
    );
    assert!(
        node2
            .all_command_lines()
            .iter()
            .any(|l| l.starts_with("api db delete/fallback/"))
    );
}

/// `fsfaxd fallback check-nodes`: nodes sharing one mod_db pass; a node with a store of its
/// own (as one started while PostgreSQL was down) and an unreachable node are named, exit 1.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_nodes_names_a_node_with_a_store_of_its_own() {
    let shared = support::fakefs::FakeDb::default();
    let node1 = FakeFs::start(FakeConfig::new().shared_db(shared.clone())).await;
    let node2 = FakeFs::start(FakeConfig::new().shared_db(shared.clone())).await;
    let loner = FakeFs::start(FakeConfig::new()).await;
    let (n1, n2, n3) = (node1.addr(), node2.addr(), loner.addr());

    let ok = Admin::new(&n1.to_string(), &format!("node = {n2}"));
    let out = ok.run(&["check-nodes"]).await;
    assert_eq!(out.code, 0, "{}{}", out.stdout, out.stderr);
    assert!(
        out.stdout
            .contains(&format!("{n2}: shares the list with {n1}")),
        "{}",
        out.stdout
    );
    assert!(out.stdout.contains("all nodes share one fallback list"));
    // The probe leaves nothing behind, and never touches the list itself.
    assert!(shared.rows().is_empty(), "{:?}", shared.rows());

    let dead = format!("127.0.0.1:{}", support::wait::free_port());
    let bad = Admin::new(
        &n1.to_string(),
        &format!("node = {n2}\nnode = {n3}\nnode = {dead}"),
    );
    let out = bad.run(&["check-nodes"]).await;
    assert_eq!(out.code, 1, "{}{}", out.stdout, out.stderr);
    assert!(
        out.stdout
            .contains(&format!("{n3}: does NOT share the list with {n1}")),
        "{}",
        out.stdout
    );
    assert!(out.stdout.contains("restart FreeSWITCH on it"));
    assert!(
        out.stdout.contains(&format!("{dead}: cannot be asked")),
        "{}",
        out.stdout
    );
    assert!(out.stdout.contains(&format!("{n2}: shares the list")));
    assert!(out.stderr.contains("do not share one fallback list"));
    assert!(loner.db().rows().is_empty());
}
