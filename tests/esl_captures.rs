//! The ESL layer against real FreeSWITCH captures (tests/fixtures/esl/, see its README).
//!
//! Decoding: every `.from-fs.raw` decodes whole, in any chunking, to the same frames as its
//! `.txt` transcript's `<FS` records. Sockets: an in-test peer replays a capture's `<FS` bytes
//! after reading each command our client sends (`>FS` records), rewriting only the UUIDs we
//! choose (Job-UUID, Event-UUID), which have the same length so every Content-Length holds.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use bytes::BytesMut;
use fsfax::esl::{
    ClientConfig, ClientError, Command, EslCodec, Event, InboundClient, Limits, Message,
    OutboundConfig, OutboundError, OutboundSession, SessionItem, parse_frame,
};
use rand::{Rng, SeedableRng, rngs::StdRng};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::codec::Decoder;

// ---------------------------------------------------------------------------------------------
// Capture files

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/esl")
}

fn capture_names() -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(fixtures())
        .unwrap()
        .filter_map(|e| {
            let name = e.unwrap().file_name().into_string().unwrap();
            name.strip_suffix(".from-fs.raw").map(str::to_owned)
        })
        .collect();
    names.sort();
    assert!(
        names.len() >= 29,
        "expected the vendored captures, found {}",
        names.len()
    );
    names
}

fn raw(name: &str) -> Vec<u8> {
    std::fs::read(fixtures().join(format!("{name}.from-fs.raw"))).unwrap()
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Dir {
    ToFs,
    FromFs,
}

/// Parses a `.txt` transcript: `# ...` lines, a blank line, then
/// `@@ <seq> +<ms> <dir> <nbytes>\n` + nbytes + `\n` records.
fn records(name: &str) -> Vec<(Dir, Vec<u8>)> {
    let data = std::fs::read(fixtures().join(format!("{name}.txt"))).unwrap();
    let mut pos = 0;
    while data[pos] == b'#' {
        pos += data[pos..].iter().position(|&b| b == b'\n').unwrap() + 1;
    }
    assert_eq!(data[pos], b'\n', "{name}: blank line after the # header");
    pos += 1;
    let mut out = Vec::new();
    while pos < data.len() {
        let nl = pos + data[pos..].iter().position(|&b| b == b'\n').unwrap();
        let line = std::str::from_utf8(&data[pos..nl]).unwrap();
        let fields: Vec<&str> = line.split(' ').collect();
        assert_eq!(fields[0], "@@", "{name}: bad record line {line:?}");
        let dir = match fields[3] {
            ">FS" => Dir::ToFs,
            "<FS" => Dir::FromFs,
            other => panic!("{name}: bad direction {other}"),
        };
        let n: usize = fields[4].parse().unwrap();
        out.push((dir, data[nl + 1..nl + 1 + n].to_vec()));
        assert_eq!(data[nl + 1 + n], b'\n', "{name}: record not followed by LF");
        pos = nl + 1 + n + 1;
    }
    out
}

fn from_fs(name: &str) -> Vec<Vec<u8>> {
    records(name)
        .into_iter()
        .filter(|(d, _)| *d == Dir::FromFs)
        .map(|(_, b)| b)
        .collect()
}

/// Decodes `bytes` fed to the codec in the given chunk sizes, then EOF.
fn decode_chunked(bytes: &[u8], mut next_chunk: impl FnMut() -> usize) -> Vec<Message> {
    let mut codec = EslCodec::new(Limits::default());
    let mut buf = BytesMut::new();
    let mut out = Vec::new();
    let mut pos = 0;
    while pos < bytes.len() {
        let n = next_chunk().clamp(1, bytes.len() - pos);
        buf.extend_from_slice(&bytes[pos..pos + n]);
        pos += n;
        while let Some(m) = codec.decode(&mut buf).unwrap() {
            out.push(m);
        }
    }
    while let Some(m) = codec.decode_eof(&mut buf).unwrap() {
        out.push(m);
    }
    assert!(buf.is_empty(), "bytes left after EOF");
    out
}

fn events_of(msgs: &[Message]) -> impl Iterator<Item = &Event> {
    msgs.iter().filter_map(|m| match m {
        Message::Event(e) => Some(e),
        _ => None,
    })
}

fn header_in(record: &[u8], name: &str) -> String {
    let text = String::from_utf8_lossy(record);
    let prefix = format!("\n{name}: ");
    let start = text
        .find(&prefix)
        .unwrap_or_else(|| panic!("no {name} header"))
        + prefix.len();
    let end = start + text[start..].find('\n').unwrap();
    text[start..end].to_owned()
}

// ---------------------------------------------------------------------------------------------
// Decoding

#[test]
fn every_capture_decodes_whole_and_matches_its_transcript() {
    for name in capture_names() {
        let bytes = raw(&name);
        let whole = decode_chunked(&bytes, || usize::MAX);
        assert!(!whole.is_empty(), "{name}: no frames");
        for m in &whole {
            assert!(
                !matches!(m, Message::Unknown { .. }),
                "{name}: unexpected Unknown frame {m:?}"
            );
        }
        let recs = from_fs(&name);
        assert_eq!(
            recs.concat(),
            bytes,
            "{name}: <FS records differ from .from-fs.raw"
        );
        assert_eq!(
            recs.len(),
            whole.len(),
            "{name}: one message per <FS record"
        );
        for (i, rec) in recs.iter().enumerate() {
            let (msg, used) = parse_frame(rec, &Limits::default())
                .unwrap_or_else(|e| panic!("{name} record {i}: {e}"))
                .unwrap_or_else(|| panic!("{name} record {i}: incomplete"));
            assert_eq!(
                used,
                rec.len(),
                "{name} record {i}: not exactly one message"
            );
            assert_eq!(
                msg, whole[i],
                "{name} record {i}: differs from the stream decode"
            );
        }
    }
}

#[test]
fn every_capture_decodes_one_byte_at_a_time() {
    for name in capture_names() {
        let bytes = raw(&name);
        let whole = decode_chunked(&bytes, || usize::MAX);
        let bytewise = decode_chunked(&bytes, || 1);
        assert_eq!(bytewise, whole, "{name}: byte-at-a-time decode differs");
    }
}

#[test]
fn every_capture_decodes_in_random_chunks() {
    for name in capture_names() {
        let bytes = raw(&name);
        let whole = decode_chunked(&bytes, || usize::MAX);
        for seed in [1u64, 7, 42, 2026] {
            let mut rng = StdRng::seed_from_u64(seed);
            let chunked = decode_chunked(&bytes, || rng.gen_range(1..=3000));
            assert_eq!(chunked, whole, "{name}: random chunks (seed {seed}) differ");
        }
    }
}

#[test]
fn spandsp_lower_case_headers_read_case_insensitively() {
    let msgs = decode_chunked(&raw("inbound-txfax-t38-ok"), || usize::MAX);
    let result = events_of(&msgs)
        .find(|e| e.subclass() == Some("spandsp::txfaxresult"))
        .expect("txfaxresult event");
    assert_eq!(result.name(), Some("CUSTOM"));
    assert_eq!(result.get("Fax-Success"), Some("1"));
    assert_eq!(result.get("fax-success"), Some("1"));
    assert_eq!(result.get("FAX-RESULT-CODE"), Some("0"));
    // Sent as `%2B1%20337`: decoded exactly once, `+` kept.
    assert_eq!(result.get("Fax-Local-Station-ID"), Some("+1 337"));
    let names: Vec<&str> = result.headers.iter().map(|(n, _)| n).collect();
    assert!(names.contains(&"fax-success"), "wire case is preserved");
}

#[test]
fn background_job_inner_body() {
    let msgs = decode_chunked(&raw("inbound-originate-gateway-unknown"), || usize::MAX);
    let job = events_of(&msgs)
        .find(|e| e.name() == Some("BACKGROUND_JOB"))
        .expect("BACKGROUND_JOB");
    assert_eq!(job.body.as_deref(), Some("-ERR INVALID_GATEWAY\n"));
    assert!(job.job_uuid().is_some_and(|u| u.len() == 36));

    let msgs = decode_chunked(&raw("inbound-txfax-t38-ok"), || usize::MAX);
    let job = events_of(&msgs)
        .find(|e| e.name() == Some("BACKGROUND_JOB"))
        .unwrap();
    let uuid = events_of(&msgs)
        .find(|e| e.name() == Some("CHANNEL_OUTGOING"))
        .and_then(|e| e.unique_id())
        .unwrap();
    assert_eq!(job.body_str(), format!("+OK {uuid}\n"));
}

#[test]
fn json_events_and_body() {
    let msgs = decode_chunked(&raw("inbound-txfax-t38-ok-json"), || usize::MAX);
    let job = events_of(&msgs)
        .find(|e| e.name() == Some("BACKGROUND_JOB"))
        .unwrap();
    assert!(job.body_str().starts_with("+OK "), "{:?}", job.body);
    let result = events_of(&msgs)
        .find(|e| e.subclass() == Some("spandsp::txfaxresult"))
        .unwrap();
    assert_eq!(result.get("Fax-Success"), Some("1"));
    assert_eq!(result.get("fax-local-station-id"), Some("+1 337"));
    // JSON values are not URL-encoded: a JSON event keeps its raw text.
    let date = events_of(&msgs)
        .next()
        .unwrap()
        .get("Event-Date-Local")
        .unwrap();
    assert!(date.contains(' '), "{date}");
}

#[test]
fn api_and_reply_bodies_are_byte_exact() {
    let msgs = decode_chunked(&raw("inbound-api-db"), || usize::MAX);
    let bodies: Vec<&str> = msgs
        .iter()
        .filter_map(|m| match m {
            Message::ApiResponse(b) => Some(b.as_str()),
            _ => None,
        })
        .collect();
    assert!(bodies.contains(&"-ERR no reply\n"));
    assert!(bodies.contains(&"false"));
    assert!(bodies.contains(&"!err!"));
    assert!(fsfax::esl::is_err_reply("-ERR no reply\n"));
    assert!(!fsfax::esl::is_err_reply("!err!"));
    let Some(Message::CommandReply(auth)) = msgs.get(1) else {
        panic!("second message is the auth reply")
    };
    assert_eq!(auth.text(), "+OK accepted");
}

#[test]
fn outbound_connect_reply_is_channel_data() {
    for name in capture_names()
        .iter()
        .filter(|n| n.starts_with("outbound-"))
    {
        let recs = from_fs(name);
        let msgs = decode_chunked(&raw(name), || usize::MAX);
        let Message::CommandReply(reply) = &msgs[0] else {
            panic!("{name}: first message is not the connect reply")
        };
        assert_eq!(
            reply.text(),
            "+OK",
            "{name}: Reply-Text %2BOK%0A decodes and trims"
        );
        assert!(reply.is_ok());
        assert_eq!(reply.get("Socket-Mode"), Some("async"));
        assert_eq!(reply.get("Control"), Some("full"));
        assert_eq!(reply.get("Event-Name"), Some("CHANNEL_DATA"));
        assert_eq!(
            reply.get("unique-id").unwrap(),
            header_in(&recs[0], "Unique-ID"),
            "{name}"
        );
        // Values are URL-decoded: `sofia/fax/4711%40127.0.0.1`.
        let chan = reply.get("Channel-Name").unwrap();
        assert!(
            chan.contains('@') && !chan.contains("%40"),
            "{name}: {chan}"
        );
        assert_eq!(
            reply.get("variable_sip_to_user").unwrap(),
            header_in(&recs[0], "variable_sip_to_user"),
        );
    }
}

#[test]
fn disconnect_notices() {
    let msgs = decode_chunked(&raw("outbound-linger-forever"), || usize::MAX);
    let notice = msgs
        .iter()
        .find_map(|m| match m {
            Message::DisconnectNotice(n) => Some(n),
            _ => None,
        })
        .unwrap();
    assert_eq!(notice.disposition(), Some("linger"));
    assert_eq!(notice.linger_time(), Some(-1));

    let msgs = decode_chunked(&raw("inbound-auth-bad-password"), || usize::MAX);
    let Some(Message::DisconnectNotice(n)) = msgs.last() else {
        panic!()
    };
    assert_eq!(n.body.as_ref().map(String::len), Some(67));
    assert!(n.body_str().starts_with("Disconnected, goodbye."));
}

// ---------------------------------------------------------------------------------------------
// Encoding: our commands are byte-identical to what the capture clients sent with LF framing.

#[test]
fn encoder_matches_capture_commands() {
    let mut seen = 0;
    for name in capture_names() {
        for (dir, rec) in records(&name) {
            if dir != Dir::ToFs || rec.ends_with(b"\r\n\r\n") {
                continue;
            }
            let text = std::str::from_utf8(&rec).unwrap();
            let first = text.lines().next().unwrap();
            let ours = if let Some(rest) = first.strip_prefix("filter ") {
                let (h, v) = rest.split_once(' ').unwrap();
                Command::filter(h, v).unwrap()
            } else if let Some(rest) = first.strip_prefix("bgapi ") {
                match text
                    .lines()
                    .nth(1)
                    .and_then(|l| l.strip_prefix("Job-UUID: "))
                {
                    Some(job) => Command::bgapi(rest, job).unwrap(),
                    None => Command::raw(first).unwrap(),
                }
            } else if first == "sendmsg" {
                let get = |k: &str| {
                    text.lines()
                        .find_map(|l| l.strip_prefix(&format!("{k}: ")))
                        .unwrap_or("")
                };
                if get("event-lock") != "true" {
                    continue;
                }
                // fsfaxd's own captures carry the Event-UUID it matches completions by.
                let event_uuid = Some(get("Event-UUID")).filter(|u| !u.is_empty());
                Command::execute(
                    None,
                    get("execute-app-name"),
                    get("execute-app-arg"),
                    event_uuid,
                )
                .unwrap()
            } else if let Some(rest) = first.strip_prefix("event plain ") {
                Command::event_plain(&rest.split(' ').collect::<Vec<_>>()).unwrap()
            } else if first == "exit" {
                Command::exit()
            } else if first == "linger" {
                Command::linger(None)
            } else if let Some(pw) = first.strip_prefix("auth ") {
                Command::auth(pw).unwrap()
            } else {
                Command::raw(first).unwrap()
            };
            assert_eq!(
                String::from_utf8_lossy(ours.as_bytes()),
                text,
                "{name}: encoder output differs"
            );
            seen += 1;
        }
    }
    assert!(seen > 50, "only {seen} LF-framed commands compared");
}

// ---------------------------------------------------------------------------------------------
// A replaying peer

/// Plays `recs` on `stream`: for each `>FS` record reads one command (up to `\n\n`), for each
/// `<FS` record writes its bytes with our UUIDs substituted. Returns the commands received.
async fn replay(mut stream: TcpStream, recs: Vec<(Dir, Vec<u8>)>) -> Vec<String> {
    let exec_uuids = capture_exec_uuids(&recs);
    let mut rewrite: Vec<(String, String)> = Vec::new();
    let mut got = Vec::new();
    let mut buf = Vec::new();
    for (i, (dir, rec)) in recs.iter().enumerate() {
        match dir {
            Dir::ToFs => {
                let cmd = loop {
                    if let Some(end) = buf.windows(2).position(|w| w == b"\n\n") {
                        let cmd: Vec<u8> = buf.drain(..end + 2).collect();
                        break String::from_utf8(cmd).unwrap();
                    }
                    let mut chunk = [0u8; 4096];
                    let n = stream.read(&mut chunk).await.unwrap_or(0);
                    if n == 0 {
                        return got;
                    }
                    buf.extend_from_slice(&chunk[..n]);
                };
                if let Some(ours) = header_value(&cmd, "Job-UUID") {
                    let next = recs[i + 1..]
                        .iter()
                        .find(|(d, _)| *d == Dir::FromFs)
                        .unwrap();
                    let theirs = String::from_utf8_lossy(&next.1);
                    let at = theirs.find("Job-UUID: ").unwrap() + "Job-UUID: ".len();
                    rewrite.push((theirs[at..at + 36].to_owned(), ours));
                }
                if let (Some(ours), Some(theirs)) =
                    (header_value(&cmd, "Event-UUID"), exec_uuids.get(&i))
                {
                    rewrite.push((theirs.clone(), ours));
                }
                got.push(cmd);
            }
            Dir::FromFs => {
                let mut text = rec.clone();
                for (from, to) in &rewrite {
                    text = replace_all(&text, from.as_bytes(), to.as_bytes());
                }
                if stream.write_all(&text).await.is_err() {
                    return got;
                }
            }
        }
    }
    got
}

/// For each `sendmsg execute` record index, the Application-UUID FreeSWITCH gave that app
/// (the first later CHANNEL_EXECUTE of the same application not yet assigned).
fn capture_exec_uuids(recs: &[(Dir, Vec<u8>)]) -> HashMap<usize, String> {
    let mut assigned = HashMap::new();
    let mut taken: Vec<String> = Vec::new();
    for (i, (dir, rec)) in recs.iter().enumerate() {
        let text = String::from_utf8_lossy(rec);
        if *dir != Dir::ToFs || !text.starts_with("sendmsg") {
            continue;
        }
        let Some(app) = header_value(&text, "execute-app-name") else {
            continue;
        };
        for (d, later) in &recs[i + 1..] {
            if *d != Dir::FromFs {
                continue;
            }
            let Ok(Some((Message::Event(e), _))) = parse_frame(later, &Limits::default()) else {
                continue;
            };
            if e.name() == Some("CHANNEL_EXECUTE") && e.get("Application") == Some(app.as_str()) {
                let uuid = e.get("Application-UUID").unwrap().to_owned();
                if !taken.contains(&uuid) {
                    taken.push(uuid.clone());
                    assigned.insert(i, uuid);
                    break;
                }
            }
        }
    }
    assigned
}

fn header_value(cmd: &str, name: &str) -> Option<String> {
    cmd.lines()
        .find_map(|l| l.strip_prefix(&format!("{name}: ")))
        .map(str::to_owned)
}

fn replace_all(hay: &[u8], from: &[u8], to: &[u8]) -> Vec<u8> {
    assert_eq!(from.len(), to.len(), "substitution must keep lengths");
    let mut out = hay.to_vec();
    let mut i = 0;
    while i + from.len() <= out.len() {
        if &out[i..i + from.len()] == from {
            out[i..i + from.len()].copy_from_slice(to);
            i += from.len();
        } else {
            i += 1;
        }
    }
    out
}

/// Listener + peer task replaying `name` as FreeSWITCH's inbound event socket.
async fn inbound_peer(name: &str) -> (String, tokio::task::JoinHandle<Vec<String>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let recs = records(name);
    let peer = tokio::spawn(async move {
        let (stream, _) = listener.accept().await.unwrap();
        replay(stream, recs).await
    });
    (addr, peer)
}

/// FreeSWITCH side of an outbound socket: connects to our listener and replays `name`.
async fn outbound_peer(
    recs: Vec<(Dir, Vec<u8>)>,
) -> (TcpStream, tokio::task::JoinHandle<Vec<String>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let peer = tokio::spawn(async move {
        let stream = TcpStream::connect(addr).await.unwrap();
        replay(stream, recs).await
    });
    let (ours, _) = listener.accept().await.unwrap();
    (ours, peer)
}

/// Bound of every wait here: the replaying peer answers everything the capture answered, so
/// each wait ends as soon as the reply or event arrives; the bound only catches a hang.
const HANG: Duration = Duration::from_secs(60);

/// `fut`, which must finish within [`HANG`]; the panic names `what`.
async fn within<T>(what: &str, fut: impl std::future::Future<Output = T>) -> T {
    match tokio::time::timeout(HANG, fut).await {
        Ok(v) => v,
        Err(_) => panic!("{what}: nothing within {HANG:?}"),
    }
}

/// Client timeouts that only catch a hang.
fn client_cfg() -> ClientConfig {
    ClientConfig {
        connect_timeout: HANG,
        auth_timeout: HANG,
        command_timeout: HANG,
        ..ClientConfig::default()
    }
}

/// Outbound timeouts that only catch a hang.
fn out_cfg() -> OutboundConfig {
    OutboundConfig {
        connect_timeout: HANG,
        command_timeout: HANG,
        ..OutboundConfig::default()
    }
}

// ---------------------------------------------------------------------------------------------
// Inbound client against replayed captures

#[tokio::test]
async fn inbound_auth_and_api_db_replay() {
    let name = "inbound-api-db";
    let (addr, peer) = inbound_peer(name).await;
    let (client, mut events) = InboundClient::connect(&addr, "ClueCon", &client_cfg())
        .await
        .unwrap();
    let recs = records(name);
    let mut calls = 0;
    for (i, (dir, rec)) in recs.iter().enumerate().skip(2) {
        if *dir != Dir::ToFs {
            continue;
        }
        let line = String::from_utf8_lossy(rec).trim_end().to_owned();
        if let Some(cmd) = line.strip_prefix("api ") {
            let expected = match parse_frame(&recs[i + 1].1, &Limits::default()) {
                Ok(Some((Message::ApiResponse(body), _))) => body,
                other => panic!("record {i}: {other:?}"),
            };
            let body = client.api(cmd).await.unwrap();
            assert_eq!(body, expected, "api {cmd}");
            calls += 1;
        } else if line == "exit" {
            let reply = client.exit().await.unwrap();
            assert_eq!(reply.text(), "+OK bye");
        }
    }
    assert!(calls >= 10);
    match within("the disconnect notice", events.recv()).await {
        Some(SessionItem::Disconnect(n)) => assert!(n.body_str().contains("goodbye")),
        other => panic!("expected the disconnect notice, got {other:?}"),
    }
    assert_eq!(
        within("the end of the event stream", events.recv()).await,
        None
    );
    assert_eq!(
        events.close_reason(),
        Some(fsfax::esl::CloseReason::PeerClosed)
    );
    let sent = within("the replaying peer", peer).await.unwrap();
    assert_eq!(
        sent[0], "auth ClueCon\n\n",
        "commands the peer received: {sent:?}"
    );
    // After EOF every call fails with Closed, naming the peer.
    match client.api("status").await {
        Err(ClientError::Closed { peer, .. }) => assert_eq!(peer, addr),
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn inbound_auth_bad_password() {
    let (addr, peer) = inbound_peer("inbound-auth-bad-password").await;
    match InboundClient::connect(&addr, "WrongPassword", &client_cfg()).await {
        Err(e @ ClientError::AuthFailed { .. }) => {
            let text = e.to_string();
            assert!(text.contains(&addr), "{text}");
            assert!(!text.contains("WrongPassword"), "password leaked: {text}");
        }
        other => panic!("expected AuthFailed, got {:?}", other.map(|_| ())),
    }
    assert_eq!(
        within("the replaying peer", peer).await.unwrap(),
        ["auth WrongPassword\n\n"],
        "commands the peer received"
    );
}

#[tokio::test]
async fn inbound_bgapi_resolves_with_its_background_job() {
    let name = "inbound-txfax-t38-ok";
    let (addr, peer) = inbound_peer(name).await;
    let (client, mut events) = InboundClient::connect(&addr, "ClueCon", &client_cfg())
        .await
        .unwrap();
    client.event_plain(&["ALL"]).await.unwrap();
    let recs = records(name);
    let originate = recs
        .iter()
        .find_map(|(d, r)| {
            let t = String::from_utf8_lossy(r);
            (*d == Dir::ToFs && t.starts_with("bgapi "))
                .then(|| t.trim_end()["bgapi ".len()..].to_owned())
        })
        .unwrap();
    let job = client.bgapi(&originate).await.unwrap();
    let job_uuid = job.job_uuid().to_owned();
    let result = within("the BACKGROUND_JOB", job.result()).await.unwrap();
    // The capture's channel UUID (origination_uuid in the dial string).
    let expected_uuid = originate
        .split("origination_uuid='")
        .nth(1)
        .unwrap()
        .split('\'')
        .next()
        .unwrap()
        .to_owned();
    assert_eq!(result, format!("+OK {expected_uuid}\n"));

    // Every event still arrives, in order, except the BACKGROUND_JOB the job consumed.
    let capture_events = from_fs(name)
        .iter()
        .filter(|r| {
            r.starts_with(b"Content-Length") && r.windows(14).any(|w| w == b"text/event-pla")
        })
        .count();
    client.exit().await.unwrap();
    let mut got = Vec::new();
    while let Some(item) = within("the end of the event stream", events.recv()).await {
        if let SessionItem::Event(e) = item {
            got.push(e);
        }
    }
    assert_eq!(
        got.len(),
        capture_events - 1,
        "events on the stream: {:?}",
        got.iter().map(|e| e.name()).collect::<Vec<_>>()
    );
    assert!(got.iter().all(|e| e.name() != Some("BACKGROUND_JOB")));
    assert!(
        got.iter()
            .any(|e| e.subclass() == Some("spandsp::txfaxresult"))
    );
    let sent = within("the replaying peer", peer).await.unwrap();
    let bgapi = sent
        .iter()
        .find(|c| c.starts_with("bgapi "))
        .unwrap_or_else(|| panic!("no bgapi among the commands the peer received: {sent:?}"));
    assert!(
        bgapi.ends_with(&format!("\nJob-UUID: {job_uuid}\n\n")),
        "{bgapi}"
    );
}

#[tokio::test]
async fn inbound_bgapi_error_result() {
    let name = "inbound-originate-gateway-unknown";
    let (addr, _peer) = inbound_peer(name).await;
    let (client, _events) = InboundClient::connect(&addr, "ClueCon", &client_cfg())
        .await
        .unwrap();
    client.event_plain(&["ALL"]).await.unwrap();
    let job = client
        .bgapi("originate sofia/gateway/nosuchgw/1234 &txfax(/tmp/x.tif)")
        .await
        .unwrap();
    let body = within("the BACKGROUND_JOB", job.result()).await.unwrap();
    assert_eq!(body, "-ERR INVALID_GATEWAY\n");
    assert!(fsfax::esl::is_err_reply(&body));
}

// ---------------------------------------------------------------------------------------------
// Outbound sessions against replayed captures

#[tokio::test]
async fn outbound_full_session_execute_completions() {
    let name = "outbound-rxfax-t38-ok-all-events";
    let recs = records(name);
    let connect_reply = recs[1].1.clone();
    let (stream, peer) = outbound_peer(recs.clone()).await;
    let (session, data, mut events) = OutboundSession::start(stream, &out_cfg()).await.unwrap();
    assert_eq!(data.unique_id(), header_in(&connect_reply, "Unique-ID"));
    assert_eq!(
        data.caller_id_number(),
        Some(header_in(&connect_reply, "Channel-Caller-ID-Number").as_str())
    );
    assert_eq!(
        data.get("variable_sip_to_user"),
        Some(header_in(&connect_reply, "variable_sip_to_user").as_str())
    );
    assert_eq!(session.channel_uuid(), data.unique_id());

    session.linger(None).await.unwrap();
    session.subscribe(data.unique_id(), &["ALL"]).await.unwrap();
    let mut handles = Vec::new();
    for (dir, rec) in &recs {
        let text = String::from_utf8_lossy(rec);
        if *dir == Dir::ToFs && text.starts_with("sendmsg") {
            let app = header_value(&text, "execute-app-name").unwrap();
            let arg = header_value(&text, "execute-app-arg").unwrap_or_default();
            handles.push(session.execute(&app, &arg).await.unwrap());
        }
    }
    assert_eq!(handles.len(), 6);
    // Nobody reads the event stream while the completions are awaited.
    for h in handles {
        let app = h.app().to_owned();
        let uuid = h.application_uuid().to_owned();
        let done = within(&format!("completion of {app}"), h.completed())
            .await
            .unwrap();
        assert_eq!(done.name(), Some("CHANNEL_EXECUTE_COMPLETE"));
        assert_eq!(done.get("Application"), Some(app.as_str()));
        assert_eq!(done.get("Application-UUID"), Some(uuid.as_str()));
        assert!(done.get("Application-Response").is_some());
    }
    // The completions also went to the event stream, followed by the linger notice.
    let mut completes = 0;
    let mut notice = None;
    while let Some(item) = within("the end of the event stream", events.recv()).await {
        match item {
            SessionItem::Event(e) if e.name() == Some("CHANNEL_EXECUTE_COMPLETE") => completes += 1,
            SessionItem::Event(_) => {}
            SessionItem::Disconnect(n) => notice = Some(n),
        }
    }
    assert_eq!(completes, 7, "6 apps plus the dialplan's socket app");
    assert_eq!(notice.unwrap().disposition(), Some("linger"));
    let sent = within("the replaying peer", peer).await.unwrap();
    assert_eq!(
        sent[0], "connect\n\n",
        "commands the peer received: {sent:?}"
    );
    assert_eq!(sent[1], "linger\n\n");
    assert_eq!(
        sent[2],
        format!("filter Unique-ID {}\n\n", data.unique_id())
    );
    assert_eq!(sent[3], "event plain ALL\n\n");
    assert!(sent[4].contains("\nEvent-UUID: "));
}

#[tokio::test]
async fn outbound_refuses_socket_that_is_not_async_full() {
    let name = "outbound-rxfax-t38-ok";
    for (from, to) in [
        ("\nSocket-Mode: async\n", "\nSocket-Mode: static\n"),
        ("\nControl: full\n", "\nControl: readonly\n"),
    ] {
        let mut recs = records(name);
        let text = String::from_utf8(recs[1].1.clone()).unwrap();
        assert!(text.contains(from));
        recs[1].1 = text.replace(from, to).into_bytes();
        recs.truncate(2);
        let (stream, _peer) = outbound_peer(recs).await;
        match OutboundSession::start(stream, &out_cfg()).await {
            Err(e @ OutboundError::NotAsyncFull { .. }) => {
                let msg = e.to_string();
                assert!(msg.contains("async full"), "{msg}");
                assert!(msg.contains(to.trim().split(": ").nth(1).unwrap()), "{msg}");
            }
            other => panic!("expected NotAsyncFull, got {:?}", other.map(|_| ())),
        }
    }
}

#[tokio::test]
async fn outbound_reject_then_exit_delivers_disconnect_notice() {
    let name = "outbound-reject-respond-404";
    let recs = records(name);
    let (stream, peer) = outbound_peer(recs.clone()).await;
    let (session, data, mut events) = OutboundSession::start(stream, &out_cfg()).await.unwrap();
    session.linger(None).await.unwrap();
    session
        .subscribe(
            data.unique_id(),
            &["CHANNEL_CALLSTATE", "CUSTOM", "spandsp::rxfaxresult"],
        )
        .await
        .unwrap();
    let respond = session.execute("respond", "404").await.unwrap();
    let bye = session.exit().await.unwrap();
    assert_eq!(bye.text(), "+OK bye");
    let mut notice = None;
    while let Some(item) = within("the end of the event stream", events.recv()).await {
        if let SessionItem::Disconnect(n) = item {
            notice = Some(n);
        }
    }
    let notice = notice.expect("disconnect notice on the stream");
    assert_eq!(notice.disposition(), Some("disconnect"));
    assert_eq!(
        notice.get("Controlled-Session-UUID"),
        Some(data.unique_id())
    );
    // No CHANNEL_EXECUTE_COMPLETE arrived before the disconnect: the execute fails, not hangs.
    assert!(matches!(
        within("the respond completion", respond.completed()).await,
        Err(OutboundError::HungUp { .. })
    ));
    let sent = within("the replaying peer", peer).await.unwrap();
    // FreeSWITCH takes every word after CUSTOM as a subclass: the added events come first.
    assert!(
        sent[3].starts_with(
            "event plain CHANNEL_EXECUTE_COMPLETE CHANNEL_HANGUP_COMPLETE CHANNEL_CALLSTATE CUSTOM \
         spandsp::rxfaxresult"
        ),
        "commands the peer received: {sent:?}"
    );
}

#[tokio::test]
async fn outbound_linger_notice_has_linger_time() {
    let name = "outbound-linger-forever";
    let recs = records(name);
    let (stream, _peer) = outbound_peer(recs.clone()).await;
    let (session, data, mut events) = OutboundSession::start(stream, &out_cfg()).await.unwrap();
    session.linger(None).await.unwrap();
    session.subscribe(data.unique_id(), &["ALL"]).await.unwrap();
    let mut apps = Vec::new();
    for (dir, rec) in &recs {
        let text = String::from_utf8_lossy(rec);
        if *dir == Dir::ToFs && text.starts_with("sendmsg") {
            let app = header_value(&text, "execute-app-name").unwrap();
            let arg = header_value(&text, "execute-app-arg").unwrap_or_default();
            apps.push(session.execute(&app, &arg).await.unwrap());
        }
    }
    let notice = loop {
        match within("the linger notice", events.recv()).await {
            Some(SessionItem::Disconnect(n)) => break n,
            Some(SessionItem::Event(_)) => {}
            None => panic!("stream ended without a linger notice"),
        }
    };
    assert_eq!(notice.disposition(), Some("linger"));
    assert_eq!(notice.linger_time(), Some(-1));
    for h in apps {
        let app = h.app().to_owned();
        let done = within(&format!("completion of {app}"), h.completed())
            .await
            .unwrap();
        assert_eq!(done.get("Application"), Some(app.as_str()));
    }
}
