//! Holds the fake FreeSWITCH against the real captures in tests/fixtures/esl.
//!
//! Each scenario replays the client side of a capture against the fake with a minimal raw-TCP
//! client, then compares what the fake sent with what the real switch sent: the interleaved
//! sequence of replies and call events (Event-Name, Event-Subclass), the header order of the
//! spandsp events, and byte-exact mod_db replies. UUIDs, timestamps and paths are masked.
mod support;

use std::path::{Path, PathBuf};
use std::time::Duration;

use support::fakefs::{
    CallScript, CallSetup, Capture, Event, FakeCall, FakeConfig, FakeFs, FaxParams, Message,
    RxScript, T38, url_encode,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const FAST: f64 = 0.0002;

/// Bound of every wait for something that must arrive (a reply, an event, EOF, a record of
/// the fake). It only catches a hang: a working fake ends each wait as soon as the thing
/// arrives, however loaded the machine is.
const HANG: Duration = Duration::from_secs(60);

/// Negative checks ("nothing more arrives"): under load they can only pass falsely, never
/// fail, so they stay short.
const QUIET: Duration = Duration::from_millis(200);

/// Minimal ESL client for the tests: its own framing, nothing shared with fsfax.
struct Raw {
    s: TcpStream,
    buf: Vec<u8>,
    /// One line per message received, for failure messages.
    seen: Vec<String>,
}

/// A one-line summary of a message as the fake sent it.
fn summary(m: &Message) -> String {
    match m.content_type() {
        Some("command/reply") => format!(
            "reply {:?}{}",
            m.get("Reply-Text").unwrap_or(""),
            m.get("Event-Name")
                .map(|n| format!(" ({n})"))
                .unwrap_or_default()
        ),
        Some("api/response") => format!("api {:?}", m.body_text()),
        Some("text/disconnect-notice") => format!(
            "notice {}",
            m.get("Content-Disposition").unwrap_or("(none)")
        ),
        _ => match event_of(m) {
            Some(e) => {
                let sub = e.subclass();
                let extra = match e.name() {
                    "CHANNEL_STATE" => e.get("Channel-State").unwrap_or("").to_string(),
                    "CHANNEL_EXECUTE" | "CHANNEL_EXECUTE_COMPLETE" => {
                        e.get("Application").unwrap_or("").to_string()
                    }
                    _ => sub,
                };
                format!("event {} {extra}", e.name())
            }
            None => format!("{:?}", m.content_type()),
        },
    }
}

impl Raw {
    async fn connect(addr: std::net::SocketAddr) -> Raw {
        Raw::new(TcpStream::connect(addr).await.unwrap())
    }
    fn new(s: TcpStream) -> Raw {
        Raw {
            s,
            buf: Vec::new(),
            seen: Vec::new(),
        }
    }
    async fn send(&mut self, b: &[u8]) {
        self.s.write_all(b).await.unwrap();
    }
    fn parse_one(&mut self) -> Option<Vec<u8>> {
        let end = self.buf.windows(2).position(|w| w == b"\n\n")?;
        let head = String::from_utf8_lossy(&self.buf[..end]).to_string();
        let clen: usize = head
            .lines()
            .find_map(|l| l.strip_prefix("Content-Length: "))
            .map(|v| v.trim().parse().unwrap())
            .unwrap_or(0);
        if self.buf.len() < end + 2 + clen {
            return None;
        }
        Some(self.buf.drain(..end + 2 + clen).collect())
    }
    /// Next whole message, `None` on timeout; `Some(empty)` on EOF.
    async fn read(&mut self, timeout: Duration) -> Option<Vec<u8>> {
        loop {
            if let Some(m) = self.parse_one() {
                self.seen.push(
                    Message::parse(&m)
                        .map(|m| summary(&m))
                        .unwrap_or_else(|| "unparsable".into()),
                );
                return Some(m);
            }
            let mut chunk = [0u8; 65536];
            match tokio::time::timeout(timeout, self.s.read(&mut chunk)).await {
                Err(_) => return None,
                Ok(Ok(0)) | Ok(Err(_)) => {
                    self.seen.push("EOF".into());
                    return Some(Vec::new());
                }
                Ok(Ok(n)) => self.buf.extend_from_slice(&chunk[..n]),
            }
        }
    }
    /// What the fake sent on this connection so far (the last 40 messages), one per line.
    fn history(&self) -> String {
        let skip = self.seen.len().saturating_sub(40);
        let mut out = format!("{} message(s) from the fake", self.seen.len());
        if skip > 0 {
            out.push_str(&format!(", the first {skip} left out"));
        }
        for l in &self.seen[skip..] {
            out.push_str("\n    ");
            out.push_str(l);
        }
        out
    }
    /// The next message (empty at EOF); panics naming `what` and what the fake sent if
    /// nothing comes within [`HANG`].
    async fn next(&mut self, what: &str) -> Vec<u8> {
        match self.read(HANG).await {
            Some(m) => m,
            None => panic!(
                "waiting for {what}: the fake sent nothing for {HANG:?}; {}",
                self.history()
            ),
        }
    }
    /// The next message, which must come (no EOF) within [`HANG`].
    async fn next_msg(&mut self, what: &str) -> Message {
        let m = self.next(what).await;
        if m.is_empty() {
            panic!(
                "waiting for {what}: the fake closed the connection; {}",
                self.history()
            );
        }
        Message::parse(&m).unwrap()
    }
}

fn is_reply(m: &Message) -> bool {
    matches!(
        m.content_type(),
        Some("command/reply") | Some("api/response") | Some("auth/request")
    )
}

fn event_of(m: &Message) -> Option<Event> {
    match m.content_type() {
        Some("text/event-plain") => m.event(),
        Some("text/event-json") => {
            let v: serde_json::Value = serde_json::from_slice(&m.body).ok()?;
            let headers = v
                .as_object()?
                .iter()
                .map(|(k, v)| (k.clone(), url_encode(v.as_str().unwrap_or(""))))
                .collect();
            Some(Event {
                headers,
                body: None,
            })
        }
        _ => None,
    }
}

/// Replaces every UUID-shaped token with `U`.
fn mask(s: &str) -> String {
    let b: Vec<char> = s.chars().collect();
    let mut out = String::new();
    let mut i = 0;
    let shape = |w: &[char]| {
        w.len() == 36
            && w.iter().enumerate().all(|(j, c)| {
                if [8, 13, 18, 23].contains(&j) {
                    *c == '-'
                } else {
                    c.is_ascii_hexdigit()
                }
            })
    };
    while i < b.len() {
        if i + 36 <= b.len() && shape(&b[i..i + 36]) {
            out.push('U');
            i += 36;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    out
}

/// The token sequence of a message stream: replies by text, call events by name/subclass.
fn tokens(msgs: &[Message], uuids: &[String]) -> Vec<String> {
    let mut out = Vec::new();
    for m in msgs {
        if is_reply(m) {
            let t = match m.content_type() {
                Some("api/response") => format!("api:{}", mask(&m.body_text())),
                Some("auth/request") => "auth/request".into(),
                _ => format!("reply:{}", mask(m.get("Reply-Text").unwrap_or(""))),
            };
            out.push(t);
        } else if m.content_type() == Some("text/disconnect-notice") {
            out.push(format!(
                "notice:{}",
                m.get("Content-Disposition").unwrap_or("")
            ));
        } else if let Some(e) = event_of(m) {
            let relevant = e.uuid().is_some_and(|u| uuids.iter().any(|x| x == u))
                || e.name() == "BACKGROUND_JOB"
                || (e.name() == "API"
                    && matches!(e.get("API-Command"), Some("originate") | Some("uuid_kill")));
            if relevant {
                let extra = match e.name() {
                    "CHANNEL_STATE" => e.get("Channel-State").unwrap_or("").to_string(),
                    "CHANNEL_CALLSTATE" => e.get("Channel-Call-State").unwrap_or("").to_string(),
                    "CHANNEL_EXECUTE" | "CHANNEL_EXECUTE_COMPLETE" => {
                        e.get("Application").unwrap_or("").to_string()
                    }
                    "BACKGROUND_JOB" => {
                        mask(&String::from_utf8_lossy(e.body.as_deref().unwrap_or(b"")))
                    }
                    "CUSTOM" => format!(
                        "{} ok={} code={} pages={}",
                        e.subclass(),
                        e.get("fax-success").unwrap_or("-"),
                        e.get("fax-result-code").unwrap_or("-"),
                        e.get("fax-document-transferred-pages").unwrap_or("-")
                    ),
                    _ => String::new(),
                };
                out.push(format!("ev:{} {}", e.name(), extra));
            }
        }
    }
    out
}

fn capture_messages(cap: &Capture) -> Vec<Message> {
    cap.messages_from_fs().into_iter().map(|(_, m)| m).collect()
}

/// Header names of the spandsp events, in order. With `full == false` the `variable_*`
/// headers are left out: their order depends on the SIP exchange of each real call (two real
/// captures of the same scenario differ there), so only the template capture can match them.
fn spandsp_header_names(msgs: &[Message], full: bool) -> Vec<(String, Vec<String>)> {
    msgs.iter()
        .filter_map(event_of)
        .filter(|e| e.subclass().starts_with("spandsp::"))
        .map(|e| {
            (
                e.subclass(),
                e.header_names()
                    .into_iter()
                    .filter(|h| full || !h.starts_with("variable_"))
                    .collect(),
            )
        })
        .collect()
}

/// Captures the fake uses as event templates: their header order must match exactly.
const TEMPLATES: &[&str] = &[
    "inbound-txfax-t38-ok",
    "inbound-txfax-g711-ok",
    "inbound-txfax-t38-ok-outbound-all-events",
    "inbound-txfax-t38-remote-hangup-midfax",
    "inbound-txfax-g711-remote-hangup-midfax",
    "inbound-txfax-to-non-fax-endpoint",
    "outbound-rxfax-t38-ok-all-events",
    "outbound-rxfax-t38-sender-hangup-linger-all-events",
    "outbound-rxfax-no-fax-sender",
    "outbound-rxfax-sender-hangup-after-answer",
];

fn fax(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/fax")
        .join(name)
}

/// The fake's own records of its calls, for failure messages.
fn calls_recorded(fs: &FakeFs) -> String {
    format!(
        "active calls {:?}, originates {:?}, kills {:?}",
        fs.active_calls(),
        fs.originates()
            .iter()
            .map(|o| (o.leg_uuids.clone(), o.result.clone()))
            .collect::<Vec<_>>(),
        fs.kills()
    )
}

/// Replays the client side of an inbound capture against `fs`, rewriting the lab's fax path
/// to a real file. Returns every message the fake sent.
///
/// The end of each step is read off the wire, never off the clock: after each command the
/// capture says how many replies and call events (see [`tokens`]) the switch sent before the
/// client's next command; they are read (each within [`HANG`]), and after an originate the
/// fake's own records must show the call over. After the last command the connection must
/// close when the capture's switch closed it (`exit`: `+OK bye`, notice, EOF); when the
/// capture's client hung up instead, a short [`QUIET`] check catches extra messages.
async fn replay_inbound(fs: &FakeFs, cap: &Capture, on_page: Option<&str>) -> Vec<Message> {
    let uuids = vec![cap.origination_uuid().unwrap_or_default()];
    // Each command with the number of tokens the switch sent until the next command.
    let mut steps: Vec<(Vec<u8>, usize, bool)> = Vec::new();
    for r in &cap.records {
        if r.to_fs {
            steps.push((r.bytes.clone(), 0, false));
        } else if let (Some(step), Some(m)) = (steps.last_mut(), Message::parse(&r.bytes)) {
            step.1 += tokens(std::slice::from_ref(&m), &uuids).len();
            step.2 |= m.content_type() == Some("text/disconnect-notice");
        }
    }
    // Where the stream stands in the capture's sequence: at the first deviation the replay
    // stops, and the caller's comparison shows it (instead of waiting for what won't come).
    let want_all = tokens(&capture_messages(cap), &uuids);
    let mut pos = 0;
    let mut c = Raw::connect(fs.addr()).await;
    let mut got = vec![c.next_msg("auth/request").await];
    pos += tokens(&got, &uuids).len();
    let mut killed = false;
    for (cmd, want, closes) in &steps {
        let mut text = String::from_utf8_lossy(cmd).to_string();
        for f in ["test3.tif", "test12.tif"] {
            text = text.replace(
                &format!("/data/faxlab0/faxfiles/{f}"),
                fax(f).to_str().unwrap(),
            );
        }
        let first = text.lines().next().unwrap_or("").to_string();
        c.send(text.as_bytes()).await;
        let what = format!(
            "{}: {want} replies/call events after `{first}` (as in the capture)",
            cap.name
        );
        let mut n = 0;
        while n < *want {
            let m = c.next(&what).await;
            if m.is_empty() {
                // Closed early: the sequence comparison names what is missing.
                return got;
            }
            let msg = Message::parse(&m).unwrap();
            for t in tokens(std::slice::from_ref(&msg), &uuids) {
                if want_all.get(pos) != Some(&t) {
                    got.push(msg);
                    return got;
                }
                pos += 1;
                n += 1;
            }
            if let (Some(sub), false) = (on_page, killed) {
                if event_of(&msg).is_some_and(|e| e.subclass() == sub) {
                    // A second connection kills the call (capture local-kill).
                    killed = true;
                    let uuid = cap.origination_uuid().unwrap();
                    let mut k = Raw::connect(fs.addr()).await;
                    k.next_msg("auth/request on the killing connection").await;
                    k.send(b"auth ClueCon\n\n").await;
                    k.next_msg("the auth reply on the killing connection").await;
                    k.send(format!("api uuid_kill {uuid}\n\n").as_bytes()).await;
                    let r = k.next_msg("the uuid_kill reply").await;
                    assert_eq!(r.body_text(), "+OK\n", "uuid_kill {uuid}: {}", k.history());
                }
            }
            got.push(msg);
        }
        if first.contains("originate ") {
            let over = fs
                .wait_for(HANG, |f| {
                    f.active_calls().is_empty() && f.originates().iter().all(|o| o.result.is_some())
                })
                .await;
            assert!(
                over,
                "{}: the call is not over {HANG:?} after its last captured event: {}; {}",
                cap.name,
                calls_recorded(fs),
                c.history()
            );
        }
        if *closes {
            // The switch closes after the notice: anything before EOF is compared too.
            loop {
                let m = c.next(&format!("{}: EOF after `{first}`", cap.name)).await;
                if m.is_empty() {
                    return got;
                }
                got.push(Message::parse(&m).unwrap());
            }
        }
    }
    // The capture's client hung up without `exit`: nothing more may come.
    while let Some(m) = c.read(QUIET).await {
        if m.is_empty() {
            break;
        }
        got.push(Message::parse(&m).unwrap());
    }
    got
}

async fn check_inbound(
    name: &str,
    cfg: FakeConfig,
    on_page: Option<&str>,
) -> (FakeFs, Vec<Message>) {
    let cap = Capture::load(name);
    let fs = FakeFs::start(cfg.time_scale(FAST)).await;
    let got = replay_inbound(&fs, &cap, on_page).await;
    let want = capture_messages(&cap);
    let uuids = vec![cap.origination_uuid().unwrap_or_default()];
    assert_eq!(
        tokens(&got, &uuids),
        tokens(&want, &uuids),
        "{name}: reply/event sequence differs"
    );
    let full = TEMPLATES.contains(&name);
    assert_eq!(
        spandsp_header_names(&got, full),
        spandsp_header_names(&want, full),
        "{name}: spandsp headers differ"
    );
    (fs, got)
}

#[test]
fn every_captured_event_round_trips_byte_exact() {
    let dir = support::fakefs::capture::fixtures_dir();
    let mut n = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let p = entry.unwrap().path();
        if p.extension().and_then(|e| e.to_str()) != Some("txt") {
            continue;
        }
        let name = p.file_stem().unwrap().to_str().unwrap().to_string();
        let cap = Capture::load(&name);
        for r in cap.records.iter().filter(|r| !r.to_fs) {
            let m = Message::parse(&r.bytes).unwrap();
            if let Some(e) = m.event() {
                assert_eq!(
                    e.to_plain_message(),
                    r.bytes,
                    "{name}: re-serialised event differs"
                );
                n += 1;
            }
        }
    }
    assert!(n > 500, "only {n} events checked");
}

#[tokio::test]
async fn bad_password_is_byte_identical() {
    let cap = Capture::load("inbound-auth-bad-password");
    let fs = FakeFs::start(FakeConfig::new()).await;
    let mut c = Raw::connect(fs.addr()).await;
    let mut got = Vec::new();
    let first = c.next("auth/request").await;
    got.extend(first);
    c.send(b"auth WrongPassword\n\n").await;
    // The switch closes after its notice: read to EOF.
    loop {
        let m = c.next("-ERR invalid, the notice and EOF").await;
        if m.is_empty() {
            break;
        }
        got.extend(m);
    }
    let want = std::fs::read(
        support::fakefs::capture::fixtures_dir().join("inbound-auth-bad-password.from-fs.raw"),
    )
    .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&got),
        String::from_utf8_lossy(&want),
        "bytes the fake sent after a bad password"
    );
    assert!(cap.records.len() == 4);
}

#[tokio::test]
async fn mod_db_replies_are_byte_identical() {
    let cap = Capture::load("inbound-api-db");
    let fs = FakeFs::start(FakeConfig::new()).await;
    let got = replay_inbound(&fs, &cap, None).await;
    let got_bytes: Vec<u8> = got
        .iter()
        .flat_map(|m| {
            let mut b = Vec::new();
            for (k, v) in &m.headers {
                b.extend_from_slice(format!("{k}: {v}\n").as_bytes());
            }
            b.push(b'\n');
            b.extend_from_slice(&m.body);
            b
        })
        .collect();
    let want =
        std::fs::read(support::fakefs::capture::fixtures_dir().join("inbound-api-db.from-fs.raw"))
            .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&got_bytes),
        String::from_utf8_lossy(&want),
        "mod_db replies the fake sent (left) against the capture (right)"
    );
    assert!(
        fs.db().rows().is_empty(),
        "the capture deletes everything it inserts"
    );
}

#[tokio::test]
async fn mod_db_list_truncates_like_freeswitch() {
    let fs = FakeFs::start(FakeConfig::new()).await;
    for i in 0..2000 {
        fs.db().seed("big", &format!("4930{i:07}"), "1");
    }
    assert_eq!(fs.db().api("count/big"), "2000");
    let l = fs.db().api("list/big");
    assert_eq!(l.len(), 4094);
    assert_eq!(l.split(',').count(), 342);
    assert_ne!(l.split(',').next_back().unwrap().len(), 11, "cut mid-key");
    assert_eq!(fs.db().api("list/"), "big");
    assert_eq!(fs.db().api("insert/r/k/a/b"), "+OK");
    assert_eq!(fs.db().api("select/r/k"), "a/b");
}

#[tokio::test]
async fn txfax_t38_ok_matches_capture() {
    let (fs, got) = check_inbound("inbound-txfax-t38-ok", FakeConfig::new(), None).await;
    let o = &fs.originates()[0];
    assert!(o.background);
    assert_eq!(o.var("fax_ident").as_deref(), Some("+1 337"));
    assert_eq!(o.originate.legs()[0].gateway, "b");
    // Values substituted from the call: the file and the 3 pages of test3.tif.
    let res = got
        .iter()
        .filter_map(event_of)
        .find(|e| e.subclass() == "spandsp::txfaxresult")
        .unwrap();
    assert_eq!(res.get("fax-document-total-pages"), Some("3"));
    assert_eq!(res.get("fax-local-station-id"), Some("%2B1%20337"));
    let file = url_encode(fax("test3.tif").to_str().unwrap());
    assert_eq!(res.get("variable_fax_filename"), Some(file.as_str()));
}

#[tokio::test]
async fn txfax_g711_ok_matches_capture() {
    let cfg = FakeConfig::new().gateway("b", CallScript::fax_ok_g711());
    let (_fs, got) = check_inbound("inbound-txfax-g711-ok", cfg, None).await;
    let res = got
        .iter()
        .filter_map(event_of)
        .find(|e| e.subclass() == "spandsp::txfaxresult")
        .unwrap();
    assert_eq!(res.get("fax-t38-status"), Some("off"));
}

#[tokio::test]
async fn txfax_t38_ok_json_matches_capture() {
    let direct = CallScript::FaxOk(FaxParams {
        ring: false,
        ..FaxParams::default()
    });
    check_inbound(
        "inbound-txfax-t38-ok-json",
        FakeConfig::new().number("1234", direct),
        None,
    )
    .await;
}

#[tokio::test]
async fn busy_matches_capture() {
    check_inbound(
        "inbound-originate-busy-486",
        FakeConfig::new().number("486", CallScript::Busy),
        None,
    )
    .await;
}

#[tokio::test]
async fn rejected_603_matches_capture() {
    let cfg = FakeConfig::new().number("603", CallScript::Rejected("CALL_REJECTED".into()));
    check_inbound("inbound-originate-rejected-603", cfg, None).await;
}

#[tokio::test]
async fn rejected_404_matches_capture() {
    let cfg = FakeConfig::new().number("5404", CallScript::Rejected("UNALLOCATED_NUMBER".into()));
    check_inbound("inbound-txfax-rejected-by-socket-404", cfg, None).await;
}

#[tokio::test]
async fn unreachable_gateway_matches_capture() {
    check_inbound(
        "inbound-originate-gateway-unreachable",
        FakeConfig::new().gateway("dead", CallScript::Unreachable),
        None,
    )
    .await;
}

#[tokio::test]
async fn invalid_gateway_matches_capture() {
    let cfg = FakeConfig::new().gateway("nosuchgw", CallScript::InvalidGateway);
    check_inbound("inbound-originate-gateway-unknown", cfg, None).await;
}

#[tokio::test]
async fn gateway_down_matches_capture() {
    check_inbound(
        "inbound-originate-gateway-unregistered",
        FakeConfig::new().gateway("unreg", CallScript::GatewayDown),
        None,
    )
    .await;
}

#[tokio::test]
async fn failover_503_then_ok_is_destination_out_of_order() {
    let cfg = FakeConfig::new().number(
        "503",
        CallScript::Rejected("NORMAL_TEMPORARY_FAILURE".into()),
    );
    let (fs, _) = check_inbound("inbound-originate-failover-503-then-ok", cfg, None).await;
    let o = &fs.originates()[0];
    assert_eq!(o.result.as_deref(), Some("-ERR DESTINATION_OUT_OF_ORDER\n"));
    assert_eq!(o.originate.legs().len(), 2);
    assert_eq!(o.leg_uuids.len(), 1, "leg 2 is never created");
}

#[tokio::test]
async fn failover_gwdown_then_ok_reuses_uuid_filtered() {
    let answer_at_once = CallScript::FaxOk(FaxParams {
        ring: false,
        ..FaxParams::default()
    });
    let cfg = FakeConfig::new()
        .gateway("unreg", CallScript::GatewayDown)
        .gateway("b", answer_at_once);
    let (fs, _) = check_inbound(
        "inbound-originate-failover-gwdown-then-ok-filtered",
        cfg,
        None,
    )
    .await;
    let o = &fs.originates()[0];
    assert_eq!(o.leg_uuids.len(), 2);
    assert_eq!(o.leg_uuids[0], o.leg_uuids[1]);
    assert!(o.result.as_deref().unwrap().starts_with("+OK "));
}

#[tokio::test]
async fn failover_603_then_ok_filtered() {
    let cfg = FakeConfig::new().number("603", CallScript::Rejected("CALL_REJECTED".into()));
    check_inbound("inbound-originate-failover-603-then-ok-filtered", cfg, None).await;
}

#[tokio::test]
async fn remote_hangup_midfax_reports_zero_pages() {
    let cfg = FakeConfig::new().gateway(
        "b",
        CallScript::MidFaxHangup {
            after_pages: 1,
            t38: true,
        },
    );
    check_inbound("inbound-txfax-t38-remote-hangup-midfax", cfg, None).await;
}

#[tokio::test]
async fn g711_remote_hangup_midfax_matches_capture() {
    let cfg = FakeConfig::new().gateway(
        "b",
        CallScript::MidFaxHangup {
            after_pages: 1,
            t38: false,
        },
    );
    check_inbound("inbound-txfax-g711-remote-hangup-midfax", cfg, None).await;
}

#[tokio::test]
async fn local_uuid_kill_midfax_matches_capture() {
    let cfg = FakeConfig::new().gateway(
        "b",
        CallScript::Hang(FaxParams {
            pages: Some(1),
            ..FaxParams::default()
        }),
    );
    let (fs, got) = check_inbound(
        "inbound-txfax-t38-local-kill-midfax",
        cfg,
        Some("spandsp::txfaxpageresult"),
    )
    .await;
    let res = got
        .iter()
        .filter_map(event_of)
        .find(|e| e.subclass() == "spandsp::txfaxresult")
        .unwrap();
    assert_eq!(res.get("fax-document-total-pages"), Some("12"));
    assert_eq!(fs.kills().len(), 1);
}

#[tokio::test]
async fn missing_file_matches_capture() {
    check_inbound("inbound-txfax-file-missing", FakeConfig::new(), None).await;
}

#[tokio::test]
async fn non_fax_endpoint_matches_capture() {
    check_inbound(
        "inbound-txfax-to-non-fax-endpoint",
        FakeConfig::new().number("6013", CallScript::NonFaxEndpoint),
        None,
    )
    .await;
}

#[tokio::test]
async fn gofaxsend_t38_ok_matches_capture() {
    let (fs, _) = check_inbound("inbound-gofaxsend-txfax-t38-ok", FakeConfig::new(), None).await;
    let o = &fs.originates()[0];
    assert!(!o.background);
    assert_eq!(o.originate.groups.len(), 1, "the stray comma adds no leg");
    assert_eq!(o.originate.app.as_deref(), Some("txfax"));
    assert!(
        fs.commands()[0].iter().skip(1).all(|c| c.crlf()),
        "go-eventsocket framing after auth"
    );
}

#[tokio::test]
async fn gofaxsend_rejected_reply_comes_before_held_back_events() {
    let cfg = FakeConfig::new().number("603", CallScript::Rejected("CALL_REJECTED".into()));
    check_inbound("inbound-gofaxsend-originate-rejected-603", cfg, None).await;
}

#[tokio::test]
async fn gofaxsend_invalid_gateway_matches_capture() {
    let cfg = FakeConfig::new().gateway("nosuchgw", CallScript::InvalidGateway);
    check_inbound("inbound-gofaxsend-originate-gateway-unknown", cfg, None).await;
}

#[tokio::test]
async fn gofaxsend_failover_503_matches_capture() {
    let cfg = FakeConfig::new().number(
        "503",
        CallScript::Rejected("NORMAL_TEMPORARY_FAILURE".into()),
    );
    check_inbound(
        "inbound-gofaxsend-originate-failover-503-then-ok",
        cfg,
        None,
    )
    .await;
}

#[tokio::test]
async fn uuid_kill_of_unknown_channel_and_unknown_api() {
    let fs = FakeFs::start(FakeConfig::new()).await;
    let mut c = Raw::connect(fs.addr()).await;
    c.next_msg("auth/request").await;
    c.send(b"auth ClueCon\n\n").await;
    c.next_msg("the auth reply").await;
    c.send(b"api uuid_kill 00000000-0000-0000-0000-000000000000\n\n")
        .await;
    assert_eq!(
        c.next_msg("the uuid_kill reply").await.body_text(),
        "-ERR No such channel!\n"
    );
    c.send(b"api frobnicate\n\n").await;
    assert_eq!(
        c.next_msg("the api frobnicate reply").await.body_text(),
        "-ERR frobnicate Command not found!\n"
    );
    c.send(b"bgapi status\n\n").await;
    let r = c.next_msg("the bgapi reply").await;
    assert!(
        r.get("Reply-Text")
            .unwrap_or("")
            .starts_with("+OK Job-UUID: "),
        "{}",
        c.history()
    );
}

#[tokio::test]
async fn silent_never_answers_and_drop_after_closes() {
    let fs = FakeFs::start(FakeConfig::new().gateway("s", CallScript::Silent)).await;
    let mut c = Raw::connect(fs.addr()).await;
    c.next_msg("auth/request").await;
    c.send(b"auth ClueCon\n\n").await;
    c.next_msg("the auth reply").await;
    c.send(
        format!(
            "api originate sofia/gateway/s/1 &txfax({})\n\n",
            fax("test3.tif").display()
        )
        .as_bytes(),
    )
    .await;
    // The fake records the originate when it reads it; then it must stay silent (a
    // negative check: under load it can only pass falsely).
    assert!(
        fs.wait_for(HANG, |f| f.originates().len() == 1).await,
        "the fake did not record the originate: {}",
        calls_recorded(&fs)
    );
    assert!(
        c.read(QUIET).await.is_none(),
        "silent switch replied; {}",
        c.history()
    );
    assert_eq!(
        fs.originates()[0].result,
        None,
        "silent originate got a result"
    );

    let fs = FakeFs::start(FakeConfig::new().default_script(CallScript::DropAfter(
        support::fakefs::DropPoint::AfterPage(1),
    )))
    .await;
    let mut c = Raw::connect(fs.addr()).await;
    c.next_msg("auth/request").await;
    c.send(b"auth ClueCon\n\nevent plain ALL\n\n").await;
    c.next_msg("the auth reply").await;
    c.next_msg("the event reply").await;
    c.send(
        format!(
            "bgapi originate sofia/gateway/x/1 &txfax({})\n\n",
            fax("test3.tif").display()
        )
        .as_bytes(),
    )
    .await;
    let mut pages = 0;
    loop {
        let m = c.next("the drop after page 1 (EOF)").await;
        if m.is_empty() {
            break;
        }
        if event_of(&Message::parse(&m).unwrap())
            .is_some_and(|e| e.subclass() == "spandsp::txfaxpageresult")
        {
            pages += 1;
        }
    }
    assert_eq!(pages, 1, "page results before the drop; {}", c.history());
}

#[tokio::test]
async fn dial_string_parsing_keeps_quotes_legs_and_page_range() {
    let fs = FakeFs::start(FakeConfig::new().time_scale(FAST)).await;
    let mut c = Raw::connect(fs.addr()).await;
    c.next_msg("auth/request").await;
    c.send(b"auth ClueCon\n\nevent plain CUSTOM spandsp::txfaxresult\n\n")
        .await;
    c.next_msg("the auth reply").await;
    c.next_msg("the event reply").await;
    let cmd = format!(
        "bgapi originate {{fax_ident='+1 337, x',fax_start_page=1,fax_end_page=1,fax_enable_t38='false'}}[leg_var=1]sofia/gateway/g1/42|sofia/gateway/g2/42,, &txfax({})\nJob-UUID: 11111111-2222-3333-4444-555555555555\n\n",
        fax("test12.tif").display()
    );
    c.send(cmd.as_bytes()).await;
    let r = c.next_msg("the bgapi reply").await;
    assert_eq!(
        r.get("Job-UUID"),
        Some("11111111-2222-3333-4444-555555555555"),
        "{}",
        c.history()
    );
    let res = loop {
        let m = c.next_msg("spandsp::txfaxresult").await;
        if let Some(e) = event_of(&m) {
            break e;
        }
    };
    assert_eq!(res.get("fax-document-transferred-pages"), Some("1"));
    assert_eq!(res.get("fax-document-total-pages"), Some("12"));
    assert_eq!(res.get("variable_fax_start_page"), Some("1"));
    assert_eq!(
        res.get_decoded("variable_fax_ident").as_deref(),
        Some("+1 337, x")
    );
    let o = &fs.originates()[0];
    assert_eq!(o.var("fax_enable_t38").as_deref(), Some("false"));
    assert_eq!(o.var("leg_var").as_deref(), Some("1"));
    assert_eq!(o.originate.groups.len(), 2);
    assert_eq!(o.originate.legs()[1].gateway, "g2");
    assert_eq!(
        o.job_uuid.as_deref(),
        Some("11111111-2222-3333-4444-555555555555")
    );
}

// ---------------------------------------------------------------- outbound mode

/// Plays fsfaxd's side of an outbound capture against a `FakeCall`.
async fn replay_outbound(
    name: &str,
    script: RxScript,
    dir: &Path,
) -> (FakeCall, Vec<Message>, PathBuf) {
    let cap = Capture::load(name);
    let connect = capture_messages(&cap)
        .into_iter()
        .find(|m| m.get("Event-Name") == Some("CHANNEL_DATA"))
        .unwrap();
    let uuid = connect.get("Unique-ID").unwrap().to_string();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let setup = CallSetup {
        uuid: uuid.clone(),
        to_user: connect
            .get("Channel-Destination-Number")
            .unwrap()
            .to_string(),
        script,
        time_scale: FAST,
        ..CallSetup::default()
    };
    let call = FakeCall::connect(listener.local_addr().unwrap(), setup)
        .await
        .unwrap();
    let (s, _) = listener.accept().await.unwrap();
    let mut c = Raw::new(s);
    let rx_path = dir.join("rx.tif");
    let mut got = Vec::new();
    // Consecutive sendmsgs go out in one write, as a client queues them: the fake's channel
    // starts the first app only after they are all on the wire, however slow this side is.
    let mut batches: Vec<Vec<String>> = Vec::new();
    for (_, cmd) in cap.commands_to_fs() {
        let mut text = String::from_utf8_lossy(&cmd).to_string();
        if text.contains("execute-app-name: rxfax") {
            let old = text
                .lines()
                .find_map(|l| l.strip_prefix("execute-app-arg: "))
                .unwrap()
                .to_string();
            text = text.replace(&old, rx_path.to_str().unwrap());
        }
        match batches.last_mut() {
            Some(b) if text.starts_with("sendmsg") && b[0].starts_with("sendmsg") => b.push(text),
            _ => batches.push(vec![text]),
        }
    }
    for batch in batches {
        let first = batch[0].lines().next().unwrap_or("").to_string();
        if first.starts_with("api uuid_kill") {
            // The capture's server kills after the first page: wait for it.
            loop {
                let m = c
                    .next_msg(&format!("{name}: spandsp::rxfaxpageresult"))
                    .await;
                let page = event_of(&m).is_some_and(|e| e.subclass() == "spandsp::rxfaxpageresult");
                got.push(m);
                if page {
                    break;
                }
            }
        }
        c.send(batch.concat().as_bytes()).await;
        let what = format!("{name}: {} repl(ies) to `{first}`", batch.len());
        let mut replies = 0;
        while replies < batch.len() {
            let m = c.next(&what).await;
            if m.is_empty() {
                return (call, got, rx_path);
            }
            let msg = Message::parse(&m).unwrap();
            replies += usize::from(is_reply(&msg));
            got.push(msg);
        }
    }
    // The end, read off the wire: as many replies and call events as the capture has (each
    // within HANG); then EOF where the switch closes (no linger, exit), or a short QUIET check
    // for extra messages where it lingers (the fake then never closes, like the real one).
    let uuids = [uuid.clone()];
    let want = capture_messages(&cap);
    let want_n = tokens(&want, &uuids).len();
    let closes = want.iter().any(|m| {
        m.content_type() == Some("text/disconnect-notice")
            && m.get("Content-Disposition") == Some("disconnect")
    });
    // Replies and events are each a prefix of the capture's (they interleave by timing); at
    // the first deviation the replay stops and the caller's comparison shows it.
    let split = |msgs: &[Message]| -> (Vec<String>, Vec<String>) {
        tokens(msgs, &uuids)
            .into_iter()
            .partition(|t| !t.starts_with("ev:"))
    };
    let (want_r, want_e) = split(&want);
    let on_track = |got: &[Message]| {
        let (r, e) = split(got);
        want_r.starts_with(&r) && want_e.starts_with(&e)
    };
    let mut n = tokens(&got, &uuids).len();
    while n < want_n && on_track(&got) {
        let what = format!("{name}: {want_n} replies/events as in the capture, {n} so far");
        let m = c.next(&what).await;
        if m.is_empty() {
            return (call, got, rx_path);
        }
        let msg = Message::parse(&m).unwrap();
        n += tokens(std::slice::from_ref(&msg), &uuids).len();
        got.push(msg);
    }
    if !on_track(&got) {
        return (call, got, rx_path);
    }
    if closes {
        loop {
            let m = c.next(&format!("{name}: EOF after the notice")).await;
            if m.is_empty() {
                break;
            }
            got.push(Message::parse(&m).unwrap());
        }
    } else {
        while let Some(m) = c.read(QUIET).await {
            if m.is_empty() {
                break;
            }
            got.push(Message::parse(&m).unwrap());
        }
    }
    (call, got, rx_path)
}

fn out_tokens(msgs: &[Message], uuid: &str) -> Vec<String> {
    let mut toks = tokens(msgs, &[uuid.to_string()]);
    // The connect reply (CHANNEL_DATA) has no Content-Type of its own kind; name it.
    if msgs
        .first()
        .is_some_and(|m| m.get("Event-Name") == Some("CHANNEL_DATA"))
    {
        toks.insert(0, "connect".into());
    }
    toks
}

async fn check_outbound(
    name: &str,
    script: RxScript,
) -> (FakeCall, Vec<Message>, PathBuf, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let (call, got, rx) = replay_outbound(name, script, dir.path()).await;
    let cap = Capture::load(name);
    let want = capture_messages(&cap);
    let uuid = want
        .iter()
        .find_map(|m| m.get("Unique-ID"))
        .unwrap()
        .to_string();
    // Replies to async sendmsgs and the channel's events interleave by timing: compare each.
    let (gr, ge): (Vec<String>, Vec<String>) = out_tokens(&got, &uuid)
        .into_iter()
        .partition(|t| !t.starts_with("ev:"));
    let (wr, we): (Vec<String>, Vec<String>) = out_tokens(&want, &uuid)
        .into_iter()
        .partition(|t| !t.starts_with("ev:"));
    // Both in one message: a replay stops at the first deviation, so either may be cut.
    assert!(
        gr == wr && ge == we,
        "{name}: the fake's stream differs from the capture's\n replies (fake):    {gr:?}\n replies (capture): {wr:?}\n events (fake):    {ge:?}\n events (capture): {we:?}\n the fake recorded commands {:?}, apps run {:?}",
        call.command_lines(),
        call.executed()
    );
    let full = TEMPLATES.contains(&name);
    assert_eq!(
        spandsp_header_names(&got, full),
        spandsp_header_names(&want, full),
        "{name}: spandsp headers differ"
    );
    (call, got, rx, dir)
}

fn pages(p: &Path) -> Option<usize> {
    support::fakefs::tiff::count_pages(p)
}

#[tokio::test]
async fn outbound_connect_reply_has_the_captured_header_set() {
    let (call, got, rx, _d) = check_outbound(
        "outbound-rxfax-t38-ok",
        RxScript::RxOk {
            pages: 3,
            t38: T38::Negotiated,
        },
    )
    .await;
    let want = capture_messages(&Capture::load("outbound-rxfax-t38-ok"));
    let names = |m: &Message| m.headers.iter().map(|(k, _)| k.clone()).collect::<Vec<_>>();
    assert_eq!(names(&got[0]), names(&want[0]));
    assert_eq!(got[0].get("Reply-Text"), Some("%2BOK%0A"));
    assert_eq!(pages(&rx), Some(3));
    let log = call.log();
    assert!(log.linger);
    assert_eq!(
        log.executed
            .iter()
            .map(|(a, _)| a.as_str())
            .collect::<Vec<_>>(),
        [
            "ring_ready",
            "sleep",
            "answer",
            "playback",
            "set",
            "set",
            "set",
            "rxfax",
            "hangup"
        ]
    );
    assert!(log.vars.contains(&("fax_ident".into(), "+1 337".into())));
}

#[tokio::test]
async fn outbound_all_events_ok_matches_capture() {
    let (_c, _g, rx, _d) = check_outbound(
        "outbound-rxfax-t38-ok-all-events",
        RxScript::RxOk {
            pages: 3,
            t38: T38::Negotiated,
        },
    )
    .await;
    assert_eq!(pages(&rx), Some(3));
}

#[tokio::test]
async fn outbound_myevents_gets_no_custom_events() {
    check_outbound(
        "outbound-rxfax-t38-ok-myevents",
        RxScript::RxOk {
            pages: 3,
            t38: T38::Negotiated,
        },
    )
    .await;
}

#[tokio::test]
async fn outbound_sender_hangup_with_linger() {
    let (_c, _g, rx, _d) = check_outbound(
        "outbound-rxfax-t38-sender-hangup-linger-all-events",
        RxScript::SenderHangsUpMidFax { after_pages: 1 },
    )
    .await;
    assert_eq!(pages(&rx), Some(1));
}

#[tokio::test]
async fn outbound_sender_hangup_without_linger_only_disconnects() {
    let (call, got, _rx, _d) = check_outbound(
        "outbound-rxfax-t38-sender-hangup-nolinger-all-events",
        RxScript::SenderHangsUpMidFax { after_pages: 1 },
    )
    .await;
    assert_eq!(
        got.last().and_then(|m| m.get("Content-Disposition")),
        Some("disconnect")
    );
    assert!(
        call.wait_finished(HANG).await,
        "the fake's connection never ended; it sent: {:?}",
        got.iter().map(summary).collect::<Vec<_>>()
    );
    assert!(!call.log().client_closed, "the fake closed, not the client");
}

#[tokio::test]
async fn outbound_respond_404_with_linger() {
    check_outbound(
        "outbound-reject-respond-404-linger-all-events",
        RxScript::RxOk {
            pages: 3,
            t38: T38::Negotiated,
        },
    )
    .await;
}

#[tokio::test]
async fn outbound_respond_404_then_exit() {
    check_outbound(
        "outbound-reject-respond-404",
        RxScript::RxOk {
            pages: 3,
            t38: T38::Negotiated,
        },
    )
    .await;
}

#[tokio::test]
async fn outbound_no_fax_sender_leaves_no_tiff() {
    let (_c, _g, rx, _d) =
        check_outbound("outbound-rxfax-no-fax-sender", RxScript::NoFaxSender).await;
    assert!(!rx.exists());
}

#[tokio::test]
async fn outbound_sender_hangs_up_after_answer() {
    let (_c, _g, rx, _d) = check_outbound(
        "outbound-rxfax-sender-hangup-after-answer",
        RxScript::SenderHangsUpAfterAnswer,
    )
    .await;
    assert!(!rx.exists());
}

#[tokio::test]
async fn outbound_vanish_closes_without_notice() {
    let dir = tempfile::tempdir().unwrap();
    let (call, got, _) = replay_outbound(
        "outbound-rxfax-t38-ok",
        RxScript::Vanish { after_pages: 2 },
        dir.path(),
    )
    .await;
    assert!(
        got.iter()
            .all(|m| m.content_type() != Some("text/disconnect-notice"))
    );
    let n = got
        .iter()
        .filter_map(event_of)
        .filter(|e| e.subclass() == "spandsp::rxfaxpageresult")
        .count();
    assert_eq!(n, 2, "{:?}", got.iter().map(summary).collect::<Vec<_>>());
    assert!(
        call.wait_finished(HANG).await,
        "the fake's connection never ended"
    );
}

// ---------------------------------------------------------------- further behaviours

/// Authenticates, subscribes to everything and bgapi-originates `dial`; returns the client.
async fn start_call(fs: &FakeFs, dial: &str) -> Raw {
    let mut c = Raw::connect(fs.addr()).await;
    c.next_msg("auth/request").await;
    c.send(b"auth ClueCon\n\nevent plain ALL\n\n").await;
    c.next_msg("the auth reply").await;
    c.next_msg("the event reply").await;
    c.send(
        format!(
            "bgapi originate {dial} &txfax({})\n\n",
            fax("test3.tif").display()
        )
        .as_bytes(),
    )
    .await;
    let r = c.next_msg("the bgapi reply").await;
    assert!(is_reply(&r), "bgapi: {}", c.history());
    c
}

/// Reads events until `pred` matches one (which is returned); `what` names it on failure.
async fn read_until(c: &mut Raw, what: &str, pred: impl Fn(&Event) -> bool) -> Event {
    loop {
        if let Some(e) = event_of(&c.next_msg(what).await) {
            if pred(&e) {
                return e;
            }
        }
    }
}

#[tokio::test]
async fn training_failure_reports_code_6_after_negotiation() {
    let fs = FakeFs::start(
        FakeConfig::new()
            .time_scale(FAST)
            .default_script(CallScript::TrainingFailure),
    )
    .await;
    let mut c = start_call(
        &fs,
        "{origination_uuid=aaaaaaaa-0000-4000-8000-000000000001}sofia/gateway/b/1",
    )
    .await;
    read_until(&mut c, "txfaxnegociateresult", |e| {
        e.subclass() == "spandsp::txfaxnegociateresult"
    })
    .await;
    let r = read_until(&mut c, "txfaxresult", |e| {
        e.subclass() == "spandsp::txfaxresult"
    })
    .await;
    assert_eq!(r.get("fax-result-code"), Some("6"));
    assert_eq!(r.get("fax-success"), Some("0"));
    assert_eq!(r.get("fax-t38-status"), Some("negotiated"));
    assert_eq!(r.uuid(), Some("aaaaaaaa-0000-4000-8000-000000000001"));
}

#[tokio::test]
async fn no_answer_fails_after_the_delay() {
    let cfg = FakeConfig::new()
        .time_scale(FAST)
        .default_script(CallScript::NoAnswer(Duration::from_millis(50)));
    let fs = FakeFs::start(cfg).await;
    let mut c = start_call(&fs, "sofia/gateway/b/1").await;
    let j = read_until(&mut c, "BACKGROUND_JOB", |e| e.name() == "BACKGROUND_JOB").await;
    assert_eq!(j.body.as_deref(), Some(&b"-ERR NO_ANSWER\n"[..]));
    assert_eq!(
        fs.originates()[0].leg_uuids.len(),
        1,
        "a fresh UUID when none is given"
    );
}

#[tokio::test]
async fn hang_waits_for_uuid_kill_then_reports_pages_so_far() {
    let cfg = FakeConfig::new()
        .time_scale(FAST)
        .default_script(CallScript::Hang(FaxParams::default()));
    let fs = FakeFs::start(cfg).await;
    let uuid = "aaaaaaaa-0000-4000-8000-000000000002";
    let mut c = start_call(
        &fs,
        &format!("{{origination_uuid={uuid}}}sofia/gateway/b/1"),
    )
    .await;
    read_until(&mut c, "txfaxpageresult of page 3", |e| {
        e.subclass() == "spandsp::txfaxpageresult"
            && e.get("fax-document-transferred-pages") == Some("3")
    })
    .await;
    // Negative check (can only pass falsely under load): nothing while the call hangs.
    assert!(
        c.read(QUIET).await.is_none(),
        "a hung call must stay silent; {}",
        c.history()
    );
    assert_eq!(
        fs.active_calls(),
        vec![uuid.to_string()],
        "{}",
        calls_recorded(&fs)
    );
    c.send(format!("api uuid_kill {uuid}\n\n").as_bytes()).await;
    // On the wire: the fake answers the kill before the events it causes, so no result may
    // come before this reply (the call hung until killed, whatever the timing).
    loop {
        let m = c.next_msg("the uuid_kill reply").await;
        assert!(
            event_of(&m).is_none_or(|e| e.subclass() != "spandsp::txfaxresult"),
            "txfaxresult before the uuid_kill reply: the call did not hang; {}",
            c.history()
        );
        if m.content_type() == Some("api/response") {
            assert_eq!(m.body_text(), "+OK\n", "{}", c.history());
            break;
        }
    }
    let r = read_until(&mut c, "txfaxresult", |e| {
        e.subclass() == "spandsp::txfaxresult"
    })
    .await;
    assert_eq!(r.get("fax-result-code"), Some("49"));
    assert_eq!(r.get("fax-document-transferred-pages"), Some("3"));
    read_until(&mut c, "CHANNEL_DESTROY", |e| e.name() == "CHANNEL_DESTROY").await;
    assert!(
        fs.wait_for(HANG, |f| f.active_calls().is_empty()).await,
        "the killed call is still active: {}",
        calls_recorded(&fs)
    );
}

#[tokio::test]
async fn injected_malformed_frame_follows_the_reply() {
    let inj = support::fakefs::Injection::malformed(1);
    let fs = FakeFs::start(FakeConfig::new().inject(inj.clone())).await;
    let mut c = Raw::connect(fs.addr()).await;
    c.next_msg("auth/request").await;
    c.send(b"auth ClueCon\n\n").await;
    assert!(
        fs.wait_for(HANG, |f| f.raw_sent(0).ends_with(&inj.frame))
            .await,
        "the fake's bytes sent do not end with the injected frame: {:?}",
        String::from_utf8_lossy(&fs.raw_sent(0))
    );
}

#[tokio::test]
async fn outbound_connect_carries_diversion_gateway_and_socket_mode() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let setup = CallSetup {
        caller_number: "+49301234".into(),
        caller_name: "Alice Example".into(),
        to_user: "777".into(),
        diversion: Some("<sip:1234@example.com>;reason=unconditional".into()),
        gateway: Some("carrier".into()),
        socket_mode: "static".into(),
        control_full: false,
        ..CallSetup::default()
    };
    let call = FakeCall::connect(listener.local_addr().unwrap(), setup)
        .await
        .unwrap();
    let (s, _) = listener.accept().await.unwrap();
    let mut c = Raw::new(s);
    c.send(b"connect\r\n\r\n").await;
    let m = c.next_msg("the connect reply").await;
    let get = |k: &str| m.get(k).map(support::fakefs::url_decode);
    assert_eq!(
        get("variable_sip_h_Diversion").as_deref(),
        Some("<sip:1234@example.com>;reason=unconditional")
    );
    assert_eq!(get("variable_sip_gateway").as_deref(), Some("carrier"));
    assert_eq!(
        get("Channel-Caller-ID-Number").as_deref(),
        Some("+49301234")
    );
    assert_eq!(
        get("Channel-Caller-ID-Name").as_deref(),
        Some("Alice Example")
    );
    assert_eq!(get("variable_sip_to_user").as_deref(), Some("777"));
    assert_eq!(get("Unique-ID").as_deref(), Some(call.uuid()));
    assert_eq!(m.get("Socket-Mode"), Some("static"));
    assert_eq!(m.get("Control"), None);
    assert_eq!(m.get("Content-Type"), Some("command/reply"));
}

#[tokio::test]
async fn outbound_t38_hang_until_client_kills_and_app_uuid_is_echoed() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let setup = CallSetup {
        script: RxScript::T38Hang { pages: 2 },
        time_scale: FAST,
        ..CallSetup::default()
    };
    let call = FakeCall::connect(listener.local_addr().unwrap(), setup)
        .await
        .unwrap();
    let uuid = call.uuid().to_string();
    let (s, _) = listener.accept().await.unwrap();
    let mut c = Raw::new(s);
    c.send(b"connect\r\n\r\n").await;
    c.next_msg("the connect reply").await;
    c.send(b"linger\r\n\r\n").await;
    c.next_msg("the linger reply").await;
    c.send(format!("filter Unique-ID {uuid}\r\n\r\n").as_bytes())
        .await;
    c.next_msg("the filter reply").await;
    c.send(b"event plain ALL\r\n\r\n").await;
    c.next_msg("the event reply").await;
    let rx = dir.path().join("r.tif");
    // One write: all three are queued before the channel picks up the first.
    let mut queued = String::new();
    for (app, arg) in [
        ("answer", String::new()),
        ("rxfax", rx.display().to_string()),
        ("hangup", String::new()),
    ] {
        let mut m = format!("sendmsg\ncall-command: execute\nexecute-app-name: {app}\n");
        if !arg.is_empty() {
            m.push_str(&format!("execute-app-arg: {arg}\n"));
        }
        m.push_str(&format!(
            "event-lock: true\nEvent-UUID: 00000000-0000-4000-8000-00000000000{}\n\n",
            app.len()
        ));
        queued.push_str(&m);
    }
    c.send(queued.as_bytes()).await;
    let ex = read_until(&mut c, "CHANNEL_EXECUTE rxfax", |e| {
        e.name() == "CHANNEL_EXECUTE" && e.get("Application") == Some("rxfax")
    })
    .await;
    assert_eq!(
        ex.get("Application-UUID"),
        Some("00000000-0000-4000-8000-000000000005")
    );
    read_until(&mut c, "rxfaxresult", |e| {
        e.subclass() == "spandsp::rxfaxresult"
    })
    .await;
    // Negative check (can only pass falsely under load): nothing while rxfax hangs.
    assert!(
        c.read(QUIET).await.is_none(),
        "rxfax must hang after its result; {}",
        c.history()
    );
    c.send(format!("api uuid_kill {uuid}\r\n\r\n").as_bytes())
        .await;
    // On the wire: the fake answers the kill before the hangup it causes, so nothing of the
    // hangup may come before this reply (rxfax hung until killed, whatever the timing).
    loop {
        let m = c.next_msg("the uuid_kill reply").await;
        assert!(
            event_of(&m).is_none_or(|e| !matches!(
                e.name(),
                "CHANNEL_HANGUP" | "CHANNEL_EXECUTE_COMPLETE" | "CHANNEL_HANGUP_COMPLETE"
            )),
            "the call ended before the uuid_kill reply: rxfax did not hang; {}",
            c.history()
        );
        if m.content_type() == Some("api/response") {
            assert_eq!(m.body_text(), "+OK\n", "{}", c.history());
            break;
        }
    }
    read_until(&mut c, "CHANNEL_HANGUP_COMPLETE", |e| {
        e.name() == "CHANNEL_HANGUP_COMPLETE"
    })
    .await;
    assert_eq!(pages(&rx), Some(2));
    assert!(
        !call.executed().iter().any(|(a, _)| a == "hangup"),
        "the queued hangup never runs"
    );
}

/// The caller gives up while the application screens the call: the hangup events and the
/// linger notice come at once; a later `execute` gets `+OK` and never completes; the switch
/// closes the socket when the linger ends (`FakeCall::linger_expires`).
#[tokio::test]
async fn outbound_caller_cancels_during_screening_matches_capture() {
    let name = "outbound-caller-cancels-during-screening";
    let cap = Capture::load(name);
    let want = capture_messages(&cap);
    let connect = want
        .iter()
        .find(|m| m.get("Event-Name") == Some("CHANNEL_DATA"))
        .unwrap();
    let uuid = connect.get("Unique-ID").unwrap().to_string();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let setup = CallSetup {
        uuid: uuid.clone(),
        to_user: connect
            .get("Channel-Destination-Number")
            .unwrap()
            .to_string(),
        time_scale: FAST,
        ..CallSetup::default()
    };
    let call = FakeCall::connect(listener.local_addr().unwrap(), setup)
        .await
        .unwrap();
    let (s, _) = listener.accept().await.unwrap();
    let mut c = Raw::new(s);
    let cmds: Vec<String> = cap
        .commands_to_fs()
        .into_iter()
        .map(|(_, b)| String::from_utf8_lossy(&b).to_string())
        .collect();
    let mut got = Vec::new();
    // connect, linger 30, filter, event: one reply each, before the caller gives up.
    let (before, after) = cmds.split_at(4);
    for cmd in before {
        c.send(cmd.as_bytes()).await;
        got.push(c.next_msg(&format!("{name}: reply to {cmd:?}")).await);
    }
    call.cancel();
    loop {
        let m = c
            .next_msg(&format!("{name}: events up to the linger notice"))
            .await;
        let notice = m.get("Content-Disposition") == Some("linger");
        got.push(m);
        if notice {
            break;
        }
    }
    // `execute answer` on the gone channel: +OK, then only the end of the linger.
    assert!(
        after[0].contains("execute-app-name: answer"),
        "{:?}",
        after[0]
    );
    c.send(after[0].as_bytes()).await;
    got.push(
        c.next_msg(&format!("{name}: reply to execute answer"))
            .await,
    );
    // Nothing else until the linger ends (a short negative check, as elsewhere).
    assert!(c.read(QUIET).await.is_none(), "{}", c.history());
    call.linger_expires();
    loop {
        let m = c
            .next(&format!("{name}: +OK, the disconnect notice, EOF"))
            .await;
        if m.is_empty() {
            break;
        }
        got.push(Message::parse(&m).unwrap());
    }
    let (gr, ge): (Vec<String>, Vec<String>) = out_tokens(&got, &uuid)
        .into_iter()
        .partition(|t| !t.starts_with("ev:"));
    let (wr, we): (Vec<String>, Vec<String>) = out_tokens(&want, &uuid)
        .into_iter()
        .partition(|t| !t.starts_with("ev:"));
    assert!(
        gr == wr && ge == we,
        "{name}: the fake's stream differs from the capture's\n replies (fake):    {gr:?}\n replies (capture): {wr:?}\n events (fake):    {ge:?}\n events (capture): {we:?}\n the fake recorded commands {:?}, apps run {:?}",
        call.command_lines(),
        call.executed()
    );
    let linger = got
        .iter()
        .find(|m| m.get("Content-Disposition") == Some("linger"))
        .unwrap();
    assert_eq!(linger.get("Linger-Time"), Some("30"));
    assert!(call.executed().is_empty(), "{:?}", call.executed());
}
