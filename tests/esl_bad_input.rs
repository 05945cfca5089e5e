//! The ESL layer against hostile or broken peers and unsafe input from our own callers.

use std::time::Duration;

use bytes::BytesMut;
use fsfax::esl::{
    ClientConfig, ClientError, CloseReason, Command, CommandError, EslCodec, EslError, FrameError,
    InboundClient, Limits, Message, OutboundConfig, OutboundError, OutboundSession, SessionItem,
    parse_frame,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::codec::Decoder;

// ---------------------------------------------------------------------------------------------
// Frames

fn decode_all(bytes: &[u8]) -> Result<Vec<Message>, EslError> {
    let mut codec = EslCodec::default();
    let mut buf = BytesMut::from(bytes);
    let mut out = Vec::new();
    while let Some(m) = codec.decode(&mut buf)? {
        out.push(m);
    }
    while let Some(m) = codec.decode_eof(&mut buf)? {
        out.push(m);
    }
    Ok(out)
}

fn event_plain(inner: &[u8]) -> Vec<u8> {
    let mut f = format!(
        "Content-Length: {}\nContent-Type: text/event-plain\n\n",
        inner.len()
    )
    .into_bytes();
    f.extend_from_slice(inner);
    f
}

#[test]
fn content_length_2_pow_40_is_refused_before_any_body() {
    let mut codec = EslCodec::default();
    let mut buf =
        BytesMut::from(&b"Content-Type: api/response\nContent-Length: 1099511627776\n\n"[..]);
    match codec.decode(&mut buf) {
        Err(EslError::Frame(FrameError::BodyTooLarge { length, max })) => {
            assert_eq!(length, 1 << 40);
            assert_eq!(max, 8 * 1024 * 1024);
        }
        other => panic!("{other:?}"),
    }
    assert!(
        buf.capacity() < 64 * 1024,
        "buffer grew to {}",
        buf.capacity()
    );
    // Also beyond u64.
    let e = parse_frame(
        b"Content-Type: api/response\nContent-Length: 99999999999999999999999\n\n",
        &Limits::default(),
    )
    .unwrap_err();
    assert!(matches!(e, FrameError::BodyTooLarge { .. }), "{e:?}");
}

#[test]
fn negative_and_garbage_content_length() {
    for bad in ["-5", "abc", "", "12abc", "+5", "1 2", "0x10"] {
        let frame = format!("Content-Type: api/response\nContent-Length: {bad}\n\nxxxxx");
        match parse_frame(frame.as_bytes(), &Limits::default()) {
            Err(FrameError::BadContentLength { value }) => assert_eq!(value, bad.trim()),
            other => panic!("Content-Length {bad:?}: {other:?}"),
        }
    }
    // The inner Content-Length of an event is checked too.
    let f = event_plain(b"Event-Name: BACKGROUND_JOB\nContent-Length: -1\n\nabc");
    assert!(matches!(
        parse_frame(&f, &Limits::default()),
        Err(FrameError::BadContentLength { .. })
    ));
    let f = event_plain(b"Event-Name: BACKGROUND_JOB\nContent-Length: 50\n\nabc");
    assert!(matches!(
        parse_frame(&f, &Limits::default()),
        Err(FrameError::InnerBodyTruncated {
            length: 50,
            available: 3
        })
    ));
}

#[test]
fn endless_header_block_fails_at_the_limit() {
    let mut codec = EslCodec::default();
    let mut buf = BytesMut::new();
    let line = b"X-Filler: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\n";
    let mut fed = 0;
    let err = loop {
        buf.extend_from_slice(line);
        fed += line.len();
        assert!(fed < 200 * 1024, "no error after {fed} bytes");
        match codec.decode(&mut buf) {
            Ok(None) => {}
            Ok(Some(m)) => panic!("decoded {m:?}"),
            Err(e) => break e,
        }
    };
    assert!(matches!(
        err,
        EslError::Frame(FrameError::HeaderBlockTooLarge { max: 65536 })
    ));
    assert!(fed > 64 * 1024 && fed <= 64 * 1024 + line.len());

    // One endless line without any newline, and a flood of blank lines.
    let long = vec![b'a'; 64 * 1024 + 1];
    assert!(matches!(
        parse_frame(&long, &Limits::default()),
        Err(FrameError::HeaderBlockTooLarge { .. })
    ));
    let blank = vec![b'\n'; 64 * 1024 + 1];
    assert!(matches!(
        parse_frame(&blank, &Limits::default()),
        Err(FrameError::HeaderBlockTooLarge { .. })
    ));
}

#[test]
fn custom_limits_apply() {
    let limits = Limits {
        max_header_block: 64,
        max_body: 4,
        ..Limits::default()
    };
    assert!(matches!(
        parse_frame(
            b"Content-Type: api/response\nContent-Length: 5\n\nhello",
            &limits
        ),
        Err(FrameError::BodyTooLarge { length: 5, max: 4 })
    ));
    let (m, _) = parse_frame(
        b"Content-Type: api/response\nContent-Length: 4\n\nhell",
        &limits,
    )
    .unwrap()
    .unwrap();
    assert_eq!(m, Message::ApiResponse("hell".into()));
}

#[test]
fn non_utf8_headers_and_bodies_are_lossy_not_fatal() {
    let mut frame =
        b"Content-Type: api/response\nX-Bin: a\xffb\nContent-Length: 3\n\n\xfe\xfdz".to_vec();
    let msgs = decode_all(&frame).unwrap();
    assert_eq!(msgs, [Message::ApiResponse("\u{FFFD}\u{FFFD}z".into())]);
    frame = event_plain(b"Event-Name: CUSTOM\nraw: \xc3\x28\ncoded: %FF%FE\nok: %C3%A9t%C3%A9\n\n");
    let Message::Event(e) = &decode_all(&frame).unwrap()[0] else {
        panic!()
    };
    assert_eq!(e.get("raw"), Some("\u{FFFD}("));
    assert_eq!(e.get("coded"), Some("\u{FFFD}\u{FFFD}"));
    assert_eq!(e.get("ok"), Some("été"));
}

#[test]
fn body_cut_off_by_eof_is_an_error() {
    let r = decode_all(b"Content-Type: api/response\nContent-Length: 100\n\nonly a few");
    assert!(
        matches!(r, Err(EslError::Truncated { bytes }) if bytes > 0),
        "{r:?}"
    );
    let r = decode_all(b"Content-Type: command/reply\nReply-Te");
    assert!(matches!(r, Err(EslError::Truncated { .. })), "{r:?}");
    // Trailing blank lines are not a truncated frame.
    assert_eq!(
        decode_all(b"Content-Type: auth/request\n\n\n\n").unwrap(),
        [Message::AuthRequest]
    );
}

#[test]
fn unknown_content_type_is_skipped_and_next_frame_decoded() {
    let msgs = decode_all(
        b"Content-Type: text/event-xml\nContent-Length: 7\n\n<x/>\n\n\nNo-Type: here\n\nContent-Type: command/reply\nReply-Text: +OK\n\n",
    )
    .unwrap();
    assert_eq!(msgs.len(), 3);
    match &msgs[0] {
        Message::Unknown {
            content_type,
            frame,
        } => {
            assert_eq!(content_type, "text/event-xml");
            assert_eq!(frame.body.as_deref(), Some("<x/>\n\n\n"));
        }
        other => panic!("{other:?}"),
    }
    assert!(matches!(&msgs[1], Message::Unknown { content_type, .. } if content_type.is_empty()));
    assert!(matches!(&msgs[2], Message::CommandReply(r) if r.is_ok()));
}

#[test]
fn malformed_lines_and_bad_json() {
    assert!(matches!(
        parse_frame(
            b"Content-Type: command/reply\nno colon here\n\n",
            &Limits::default()
        ),
        Err(FrameError::MalformedHeader { .. })
    ));
    assert!(matches!(
        parse_frame(b": empty name\n\n", &Limits::default()),
        Err(FrameError::MalformedHeader { .. })
    ));
    let json = b"Content-Length: 5\nContent-Type: text/event-json\n\n{\"a\":";
    assert!(matches!(
        parse_frame(json, &Limits::default()),
        Err(FrameError::BadJson { .. })
    ));
    let json = b"Content-Length: 2\nContent-Type: text/event-json\n\n[]";
    assert!(matches!(
        parse_frame(json, &Limits::default()),
        Err(FrameError::BadJson { .. })
    ));
}

#[test]
fn crlf_in_commands_is_refused() {
    let unsafe_inputs: Vec<Result<Command, CommandError>> = vec![
        Command::api("db insert/fallback/4711\nexit"),
        Command::api("x\r"),
        Command::bgapi("originate a\n\nb", "j"),
        Command::bgapi("originate", "j\nk"),
        Command::filter("Unique-ID", "u\nevent plain ALL"),
        Command::event_plain(&["ALL\n"]),
        Command::raw("status\r\n"),
        Command::execute(None, "set", "a=b\nexecute-app-name: system", None),
        Command::execute(Some("u\n"), "answer", "", None),
        Command::hangup(None, "NORMAL\nCLEARING"),
        Command::sendmsg(None, &[("x", "y\0")]),
    ];
    for r in unsafe_inputs {
        assert!(matches!(r, Err(CommandError::UnsafeInput { .. })), "{r:?}");
    }
}

// ---------------------------------------------------------------------------------------------
// Inbound client against misbehaving peers

/// Bound of every wait for something that must happen (a reply, EOF, the end of the event
/// stream), and of the client timeouts where the peer does answer. It only catches a hang:
/// each wait ends as soon as the thing happens, however loaded the machine is. Only the
/// timeouts under test (peers that stay silent on purpose) are short.
const HANG: Duration = Duration::from_secs(60);

/// `fut`, which must finish within [`HANG`]; the panic names `what`.
async fn within<T>(what: &str, fut: impl std::future::Future<Output = T>) -> T {
    match tokio::time::timeout(HANG, fut).await {
        Ok(v) => v,
        Err(_) => panic!("{what}: nothing within {HANG:?}"),
    }
}

/// A listener whose first connection is authenticated by `serve`'s caller.
async fn listen() -> (TcpListener, String) {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap().to_string();
    (l, addr)
}

/// Accepts, sends `auth/request`, reads `auth ...`, answers `+OK accepted`.
async fn accept_authed(l: &TcpListener) -> (TcpStream, Vec<u8>) {
    let (mut s, _) = l.accept().await.unwrap();
    s.write_all(b"Content-Type: auth/request\n\n")
        .await
        .unwrap();
    let mut buf = Vec::new();
    let cmd = read_command(&mut s, &mut buf).await.unwrap();
    assert!(cmd.starts_with("auth "));
    s.write_all(b"Content-Type: command/reply\nReply-Text: +OK accepted\n\n")
        .await
        .unwrap();
    (s, buf)
}

/// Reads one command (up to `\n\n`); `None` at EOF.
async fn read_command(s: &mut TcpStream, buf: &mut Vec<u8>) -> Option<String> {
    loop {
        if let Some(end) = buf.windows(2).position(|w| w == b"\n\n") {
            let cmd: Vec<u8> = buf.drain(..end + 2).collect();
            return Some(String::from_utf8(cmd).unwrap());
        }
        let mut chunk = [0u8; 4096];
        let n = s.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

/// True when the peer sees EOF (the client closed the connection) within [`HANG`].
async fn sees_eof(s: &mut TcpStream) -> bool {
    let mut chunk = [0u8; 1024];
    loop {
        match tokio::time::timeout(HANG, s.read(&mut chunk)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return true,
            Ok(Ok(_)) => {}
            Err(_) => return false,
        }
    }
}

fn api_reply(body: &str) -> Vec<u8> {
    format!(
        "Content-Type: api/response\nContent-Length: {}\n\n{body}",
        body.len()
    )
    .into_bytes()
}

fn simple_event(name: &str, extra: &str) -> Vec<u8> {
    event_plain(format!("Event-Name: {name}\n{extra}\n").as_bytes())
}

/// Connect and auth (which the peers here always answer) bounded by [`HANG`]; the command
/// timeout as the test needs it.
fn cfg(command_timeout: Duration) -> ClientConfig {
    ClientConfig {
        connect_timeout: HANG,
        auth_timeout: HANG,
        command_timeout,
        ..ClientConfig::default()
    }
}

/// An outbound config whose timeouts only catch a hang (the peers here answer).
fn out_cfg() -> OutboundConfig {
    OutboundConfig {
        connect_timeout: HANG,
        command_timeout: HANG,
        ..OutboundConfig::default()
    }
}

#[tokio::test]
async fn replies_in_order_with_events_interleaved() {
    let (l, addr) = listen().await;
    let peer = tokio::spawn(async move {
        let (mut s, mut buf) = accept_authed(&l).await;
        let mut cmds = Vec::new();
        for _ in 0..3 {
            cmds.push(read_command(&mut s, &mut buf).await.unwrap());
        }
        for (i, cmd) in cmds.iter().enumerate() {
            s.write_all(&simple_event("HEARTBEAT", &format!("Seq: {i}")))
                .await
                .unwrap();
            let body = format!("reply to {}", cmd.trim_end());
            s.write_all(&api_reply(&body)).await.unwrap();
        }
        s.write_all(b"Content-Type: text/event-xml\nContent-Length: 4\n\n<x/>")
            .await
            .unwrap();
        let cmd = read_command(&mut s, &mut buf).await.unwrap();
        s.write_all(&api_reply(&format!("reply to {}", cmd.trim_end())))
            .await
            .unwrap();
        sees_eof(&mut s).await
    });
    let (client, mut events) = InboundClient::connect(&addr, "ClueCon", &cfg(HANG))
        .await
        .unwrap();
    let (a, b, c) = tokio::join!(client.api("one"), client.api("two"), client.api("three"));
    assert_eq!(a.unwrap(), "reply to api one");
    assert_eq!(b.unwrap(), "reply to api two");
    assert_eq!(c.unwrap(), "reply to api three");
    // An unknown frame in between is skipped; the next reply still matches.
    assert_eq!(client.api("four").await.unwrap(), "reply to api four");
    for i in 0..3 {
        match within("HEARTBEAT event", events.recv()).await {
            Some(SessionItem::Event(e)) => assert_eq!(e.get("seq"), Some(i.to_string().as_str())),
            other => panic!("{other:?}"),
        }
    }
    drop(client);
    drop(events);
    assert!(
        within("the peer task", peer).await.unwrap(),
        "dropping every handle closes the socket: the peer saw no EOF"
    );
}

#[tokio::test]
async fn command_timeout_closes_connection_and_fails_pending() {
    let (l, addr) = listen().await;
    let (got_first, first_on_wire) = tokio::sync::oneshot::channel();
    let peer = tokio::spawn(async move {
        let (mut s, mut buf) = accept_authed(&l).await;
        let first = read_command(&mut s, &mut buf).await.unwrap();
        let _ = got_first.send(first);
        // Never answer; the client must hang up on us.
        sees_eof(&mut s).await
    });
    // The peer stays silent on purpose: the short command timeout is what is under test.
    let (client, mut events) =
        InboundClient::connect(&addr, "ClueCon", &cfg(Duration::from_millis(300)))
            .await
            .unwrap();
    let slow = client.api("status");
    // The second command goes out once the peer has the first (whether before or after the
    // first times out, it fails with the first one's timeout as the reason).
    let later = async {
        let first = within("the peer reading `api status`", first_on_wire)
            .await
            .unwrap();
        assert_eq!(first, "api status\n\n");
        client.api("version").await
    };
    let (first, second) = tokio::join!(slow, later);
    match first {
        Err(e @ ClientError::Timeout { .. }) => {
            let text = e.to_string();
            assert!(
                text.contains(&addr) && text.contains("api status"),
                "{text}"
            );
        }
        other => panic!("{other:?}"),
    }
    match second {
        Err(ClientError::Closed {
            reason: CloseReason::CommandTimeout { command, .. },
            ..
        }) => assert_eq!(command, "api status"),
        other => panic!("{other:?}"),
    }
    assert_eq!(
        within("the end of the event stream", events.recv()).await,
        None
    );
    assert!(
        matches!(
            events.close_reason(),
            Some(CloseReason::CommandTimeout { .. })
        ),
        "{:?}",
        events.close_reason()
    );
    assert!(matches!(
        client.api("anything").await,
        Err(ClientError::Closed { .. })
    ));
    assert!(
        within("the peer task", peer).await.unwrap(),
        "the client timed out but the peer saw no EOF"
    );
}

#[tokio::test]
async fn dropped_connection_fails_pending_calls_and_jobs() {
    let (l, addr) = listen().await;
    let peer = tokio::spawn(async move {
        let (mut s, mut buf) = accept_authed(&l).await;
        let bgapi = read_command(&mut s, &mut buf).await.unwrap();
        let job = bgapi
            .lines()
            .find_map(|l| l.strip_prefix("Job-UUID: "))
            .unwrap()
            .to_owned();
        s.write_all(
            format!(
                "Content-Type: command/reply\nReply-Text: +OK Job-UUID: {job}\nJob-UUID: {job}\n\n"
            )
            .as_bytes(),
        )
        .await
        .unwrap();
        read_command(&mut s, &mut buf).await.unwrap();
        // Drop the connection with the api call pending.
    });
    let (client, mut events) = InboundClient::connect(&addr, "ClueCon", &cfg(HANG))
        .await
        .unwrap();
    let job = client.bgapi("originate x &park").await.unwrap();
    let pending = client.api("status").await;
    match pending {
        Err(ClientError::Closed { peer, reason }) => {
            assert_eq!(peer, addr);
            assert_eq!(reason, CloseReason::PeerClosed);
        }
        other => panic!("{other:?}"),
    }
    assert!(matches!(
        job.result().await,
        Err(ClientError::Closed { .. })
    ));
    assert_eq!(
        within("the end of the event stream", events.recv()).await,
        None
    );
    assert_eq!(events.close_reason(), Some(CloseReason::PeerClosed));
    within("the peer task", peer).await.unwrap();
}

#[tokio::test]
async fn unsolicited_reply_closes_connection_without_panic() {
    let (l, addr) = listen().await;
    let peer = tokio::spawn(async move {
        let (mut s, _) = accept_authed(&l).await;
        s.write_all(b"Content-Type: command/reply\nReply-Text: -ERR nobody asked\n\n")
            .await
            .unwrap();
        sees_eof(&mut s).await
    });
    let (client, mut events) = InboundClient::connect(&addr, "ClueCon", &cfg(HANG))
        .await
        .unwrap();
    assert_eq!(
        within("the end of the event stream", events.recv()).await,
        None
    );
    match events.close_reason() {
        Some(CloseReason::Protocol(text)) => assert!(text.contains("nobody asked"), "{text}"),
        other => panic!("{other:?}"),
    }
    assert!(matches!(
        client.api("status").await,
        Err(ClientError::Closed { .. })
    ));
    assert!(
        within("the peer task", peer).await.unwrap(),
        "the client closed on the unsolicited reply but the peer saw no EOF"
    );
}

#[tokio::test]
async fn event_queue_overflow_closes_connection() {
    let (l, addr) = listen().await;
    let peer = tokio::spawn(async move {
        let (mut s, mut buf) = accept_authed(&l).await;
        read_command(&mut s, &mut buf).await.unwrap();
        for i in 0..20 {
            if s.write_all(&simple_event("HEARTBEAT", &format!("Seq: {i}")))
                .await
                .is_err()
            {
                break;
            }
        }
        read_command(&mut s, &mut buf).await
    });
    let config = ClientConfig {
        event_queue_max: 5,
        ..cfg(HANG)
    };
    let (client, mut events) = InboundClient::connect(&addr, "ClueCon", &config)
        .await
        .unwrap();
    let err = client.api("status").await.unwrap_err();
    assert!(
        matches!(
            err,
            ClientError::Closed {
                reason: CloseReason::EventQueueOverflow { max: 5 },
                ..
            }
        ),
        "{err:?}"
    );
    let mut n = 0;
    while within("the end of the event stream", events.recv())
        .await
        .is_some()
    {
        n += 1;
    }
    assert_eq!(n, 5, "the queue never holds more than event_queue_max");
    assert_eq!(
        events.close_reason(),
        Some(CloseReason::EventQueueOverflow { max: 5 })
    );
    assert_eq!(
        within("the peer task", peer).await.unwrap(),
        None,
        "client closed instead of sending more"
    );
}

#[tokio::test]
async fn oversized_frame_closes_only_that_connection() {
    let (l, addr) = listen().await;
    let peer = tokio::spawn(async move {
        let (mut s, mut buf) = accept_authed(&l).await;
        read_command(&mut s, &mut buf).await.unwrap();
        s.write_all(b"Content-Type: api/response\nContent-Length: 1099511627776\n\n")
            .await
            .unwrap();
        let first = sees_eof(&mut s).await;
        // A second connection on the same listener is unaffected.
        let (mut s2, mut buf2) = accept_authed(&l).await;
        read_command(&mut s2, &mut buf2).await.unwrap();
        s2.write_all(&api_reply("+OK fine")).await.unwrap();
        first
    });
    let config = cfg(HANG);
    let (client, _events) = InboundClient::connect(&addr, "ClueCon", &config)
        .await
        .unwrap();
    match client.api("status").await {
        Err(ClientError::Closed {
            reason: CloseReason::Protocol(text),
            ..
        }) => assert!(text.contains("1099511627776"), "{text}"),
        other => panic!("{other:?}"),
    }
    let (other, _ev) = InboundClient::connect(&addr, "ClueCon", &config)
        .await
        .unwrap();
    assert_eq!(other.api("status").await.unwrap(), "+OK fine");
    assert!(
        within("the peer task", peer).await.unwrap(),
        "the oversized frame did not close the first connection (the peer saw no EOF)"
    );
}

#[tokio::test]
async fn unsafe_commands_never_reach_the_wire() {
    let (l, addr) = listen().await;
    let peer = tokio::spawn(async move {
        let (mut s, mut buf) = accept_authed(&l).await;
        let first = read_command(&mut s, &mut buf).await;
        s.write_all(b"Content-Type: command/reply\nReply-Text: +OK bye\n\n")
            .await
            .unwrap();
        first
    });
    let (client, _events) = InboundClient::connect(&addr, "ClueCon", &cfg(HANG))
        .await
        .unwrap();
    let injected = "db insert/fallback/4711\n\napi system rm -rf /";
    assert!(matches!(
        client.api(injected).await,
        Err(ClientError::Command(CommandError::UnsafeInput { .. }))
    ));
    assert!(client.bgapi("originate a\r\nb").await.is_err());
    assert!(client.filter("Unique-ID", "x\ny").await.is_err());
    assert!(client.event_plain(&["CUSTOM\r\nexit"]).await.is_err());
    client.exit().await.unwrap();
    // The first thing the peer received after auth is the exit.
    assert_eq!(
        within("the peer task", peer).await.unwrap().as_deref(),
        Some("exit\n\n"),
        "the first command the peer received after auth"
    );
}

#[tokio::test]
async fn rude_rejection_and_auth_timeout() {
    let (l, addr) = listen().await;
    let (done, hold) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(async move {
        let (mut s, _) = l.accept().await.unwrap();
        let body = "Access Denied, go away.\n";
        s.write_all(
            format!(
                "Content-Type: text/rude-rejection\nContent-Length: {}\n\n{body}",
                body.len()
            )
            .as_bytes(),
        )
        .await
        .unwrap();
        // A peer that says nothing at all, until the test is over.
        let (_silent, _) = l.accept().await.unwrap();
        let _ = hold.await;
    });
    match InboundClient::connect(&addr, "ClueCon", &cfg(HANG)).await {
        Err(ClientError::Rejected { text, .. }) => assert_eq!(text, "Access Denied, go away."),
        other => panic!("{:?}", other.map(|_| ())),
    }
    // The peer stays silent on purpose: the short auth timeout is what is under test.
    let config = ClientConfig {
        auth_timeout: Duration::from_millis(200),
        ..cfg(HANG)
    };
    match InboundClient::connect(&addr, "ClueCon", &config).await {
        Err(ClientError::AuthTimeout { peer, .. }) => assert_eq!(peer, addr),
        other => panic!("{:?}", other.map(|_| ())),
    }
    let _ = done.send(());
}

// ---------------------------------------------------------------------------------------------
// Outbound session against a scripted FreeSWITCH

const CONNECT_REPLY: &str = "Event-Name: CHANNEL_DATA\nUnique-ID: 11111111-2222-3333-4444-555555555555\nChannel-Caller-ID-Number: %2B49%20123\nvariable_sip_h_Diversion: %3Csip%3A100%40example.com%3E%3Breason%3Dunconditional\nContent-Type: command/reply\nReply-Text: %2BOK%0A\nSocket-Mode: async\nControl: full\n\n";

fn ok() -> &'static [u8] {
    b"Content-Type: command/reply\nReply-Text: +OK\n\n"
}

fn complete(app_uuid: &str) -> Vec<u8> {
    simple_event(
        "CHANNEL_EXECUTE_COMPLETE",
        &format!(
            "Unique-ID: 11111111-2222-3333-4444-555555555555\nApplication: rxfax\nApplication-UUID: {app_uuid}\nApplication-Response: %2BOK%20done"
        ),
    )
}

/// Our side of an outbound socket plus the scripted FreeSWITCH stream.
async fn outbound_pair() -> (TcpStream, TcpStream) {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let fs = TcpStream::connect(l.local_addr().unwrap()).await.unwrap();
    let (ours, _) = l.accept().await.unwrap();
    (ours, fs)
}

#[tokio::test]
async fn outbound_execute_ignores_foreign_completions() {
    let (ours, mut fs) = outbound_pair().await;
    let (tried_tx, tried_rx) = tokio::sync::oneshot::channel::<()>();
    let script = tokio::spawn(async move {
        let mut buf = Vec::new();
        assert_eq!(
            read_command(&mut fs, &mut buf).await.unwrap(),
            "connect\n\n"
        );
        fs.write_all(CONNECT_REPLY.as_bytes()).await.unwrap();
        let exec = read_command(&mut fs, &mut buf).await.unwrap();
        let uuid = exec
            .lines()
            .find_map(|l| l.strip_prefix("Event-UUID: "))
            .unwrap()
            .to_owned();
        fs.write_all(ok()).await.unwrap();
        for other in [
            "aaaaaaaa-0000-0000-0000-000000000000",
            "bbbbbbbb-0000-0000-0000-000000000000",
        ] {
            fs.write_all(&complete(other)).await.unwrap();
        }
        fs.write_all(&complete(&uuid)).await.unwrap();
        let exec2 = read_command(&mut fs, &mut buf).await.unwrap();
        fs.write_all(ok()).await.unwrap();
        // The channel hangs up before the second application completes.
        fs.write_all(&simple_event(
            "CHANNEL_HANGUP_COMPLETE",
            "Unique-ID: 11111111-2222-3333-4444-555555555555",
        ))
        .await
        .unwrap();
        // An execute after that is refused by fsfax itself: nothing reaches the switch
        // (which would answer +OK and never run it). A short negative check, after the test
        // has tried.
        let _ = tried_rx.await;
        let exec3 =
            tokio::time::timeout(Duration::from_millis(300), read_command(&mut fs, &mut buf)).await;
        drop(fs);
        (exec, exec2, exec3.ok().flatten())
    });
    let (session, data, mut events) = OutboundSession::start(ours, &out_cfg()).await.unwrap();
    assert_eq!(data.unique_id(), "11111111-2222-3333-4444-555555555555");
    assert_eq!(data.caller_id_number(), Some("+49 123"));
    assert_eq!(
        data.get("variable_sip_h_diversion"),
        Some("<sip:100@example.com>;reason=unconditional")
    );
    let h = session.execute("rxfax", "/tmp/x.tif").await.unwrap();
    let uuid = h.application_uuid().to_owned();
    let done = within("rxfax completion", h.completed()).await.unwrap();
    assert_eq!(done.get("Application-UUID"), Some(uuid.as_str()));
    assert_eq!(done.get("Application-Response"), Some("+OK done"));

    let h2 = session
        .execute("playback", "silence_stream://1000")
        .await
        .unwrap();
    assert!(matches!(
        within("playback completion", h2.completed()).await,
        Err(OutboundError::HungUp { .. })
    ));
    assert!(session.channel_gone());
    assert!(matches!(
        session.execute("hangup", "").await,
        Err(OutboundError::HungUp { .. })
    ));
    let _ = tried_tx.send(());
    let (exec, _, exec3) = within("the scripted FreeSWITCH", script).await.unwrap();
    assert!(exec.starts_with(
        "sendmsg\ncall-command: execute\nexecute-app-name: rxfax\nexecute-app-arg: /tmp/x.tif\nevent-lock: true\nEvent-UUID: "
    ));
    assert_eq!(exec3, None, "an execute went out after the hangup");
    // All four events reached the stream too.
    let mut n = 0;
    while let Some(item) = within("the end of the event stream", events.recv()).await {
        assert!(matches!(item, SessionItem::Event(_)), "{item:?}");
        n += 1;
    }
    assert_eq!(n, 4, "events on the stream: the script sent 4");
}

#[tokio::test]
async fn outbound_without_connect_reply_times_out() {
    let (ours, _fs) = outbound_pair().await;
    // The peer stays silent on purpose: the short connect timeout is what is under test.
    let cfg = OutboundConfig {
        connect_timeout: Duration::from_millis(200),
        ..out_cfg()
    };
    match OutboundSession::start(ours, &cfg).await {
        Err(e @ OutboundError::ConnectTimeout { .. }) => assert!(e.to_string().contains("connect")),
        other => panic!("{:?}", other.map(|_| ())),
    }
}

#[tokio::test]
async fn outbound_unsafe_input_and_hangup_format() {
    let (ours, mut fs) = outbound_pair().await;
    let script = tokio::spawn(async move {
        let mut buf = Vec::new();
        read_command(&mut fs, &mut buf).await.unwrap();
        fs.write_all(CONNECT_REPLY.as_bytes()).await.unwrap();
        let next = read_command(&mut fs, &mut buf).await.unwrap();
        fs.write_all(ok()).await.unwrap();
        next
    });
    let (session, _data, _events) = OutboundSession::start(ours, &out_cfg()).await.unwrap();
    assert!(matches!(
        session
            .execute("set", "x=1\nexecute-app-name: system")
            .await,
        Err(OutboundError::Client(ClientError::Command(
            CommandError::UnsafeInput { .. }
        )))
    ));
    assert!(session.api("db exists/x\r\n").await.is_err());
    assert!(session.hangup("CALL_REJECTED\n").await.is_err());
    session.hangup("CALL_REJECTED").await.unwrap();
    assert_eq!(
        within("the scripted FreeSWITCH", script).await.unwrap(),
        "sendmsg\ncall-command: hangup\nhangup-cause: CALL_REJECTED\n\n",
        "the first command after connect that reached the wire"
    );
}
