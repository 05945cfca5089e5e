use super::*;

const FIXTURE: &str = include_str!("../../tests/fixtures/config/gofax.conf");

fn parse(text: &str) -> Result<Config, ConfigErrors> {
    Config::parse(text, Path::new("test.conf"))
}

fn errors(text: &str) -> Vec<Problem> {
    match parse(text) {
        Ok(c) => panic!("expected errors, got {c:?}"),
        Err(e) => e.problems.into_iter().filter(Problem::is_error).collect(),
    }
}

fn one_error(text: &str) -> Problem {
    let e = errors(text);
    assert_eq!(e.len(), 1, "{e:#?}");
    e.into_iter().next().unwrap()
}

#[test]
fn fixture_loads_with_every_value() {
    let c = parse(FIXTURE).unwrap();
    assert!(c.source.warnings.is_empty(), "{:?}", c.source.warnings);
    let fs = &c.freeswitch;
    assert_eq!(fs.socket, "127.0.0.1:8021");
    assert_eq!(fs.password, "ClueCon");
    assert_eq!(fs.gateways, ["default", "backup-gw"]);
    assert_eq!(fs.ident, "+1 337");
    assert_eq!(fs.header, "ACME Fax Services");
    assert!(!fs.verbose);
    assert!(fs.softmodem_fallback);
    let hf = &c.hylafax;
    assert_eq!(hf.spooldir, Path::new("/var/spool/hylafax"));
    assert_eq!(hf.modems, 5);
    assert_eq!(hf.xferfaxlog.as_deref(), Some(Path::new("log/xferfaxlog")));
    let d = &c.gofaxd;
    assert_eq!(d.socket, "127.0.0.1:8022");
    assert!(d.enable_t38 && d.request_t38);
    assert!(!d.recipient_from_diversion_header);
    assert_eq!(d.answer_after, Duration::from_millis(2000));
    assert_eq!(d.wait_time, Duration::from_millis(1000));
    assert_eq!(
        d.dynamic_config.as_deref(),
        Some(Path::new("etc/DynamicConfig"))
    );
    assert_eq!(d.faxrcvd_cmd, Path::new("bin/faxrcvd"));
    assert!(d.allocate_inbound_devices);
    let s = &c.gofaxsend;
    assert!(s.enable_t38 && s.request_t38);
    assert_eq!(s.fax_number, "4711");
    assert_eq!(s.call_prefix, "0");
    assert_eq!(
        s.dynamic_config.as_deref(),
        Some(Path::new("etc/DynamicConfigOutgoing"))
    );
    assert_eq!(s.disable_v17_after_retry, 2);
    assert_eq!(s.disable_ecm_after_retry, 3);
    assert_eq!(s.cid_name, "sender");
    assert_eq!(s.failed_response, ["UNALLOCATED_NUMBER", "CALL_REJECTED"]);
    // fsfax's own keys are absent from the fixture: defaults.
    assert_eq!(s.failover_causes, DEFAULT_FAILOVER_CAUSES);
    assert_eq!(d.allowed_peers, default_peers());
    assert_eq!(d.reject_cause, 404);
    assert_eq!(
        c.source.key_lines.get("gofaxsend.disableecmafterretry"),
        Some(&41)
    );
}

#[test]
fn defaults_match_gofaxip_and_the_brief() {
    let c = parse("").unwrap();
    assert_eq!(c.freeswitch.connect_timeout, Duration::from_secs(5));
    assert_eq!(c.freeswitch.command_timeout, Duration::from_secs(10));
    assert_eq!(
        c.freeswitch.softmodem_fallback_expiry,
        Some(Duration::from_secs(7 * 24 * 3600))
    );
    assert_eq!(c.freeswitch.fallback_lookup_timeout, Duration::from_secs(2));
    assert_eq!(c.gofaxd.faxrcvd_cmd, Path::new("bin/faxrcvd"));
    assert_eq!(c.gofaxd.max_inbound, 0);
    assert_eq!(
        c.gofaxd.dynamic_config_failure,
        DynamicConfigFailure::Accept
    );
    assert_eq!(c.gofaxd.faxrcvd_timeout, Duration::from_secs(300));
    assert_eq!(c.gofaxd.max_call_duration, Duration::from_secs(3600));
    assert_eq!(c.gofaxd.shutdown_timeout, Duration::from_secs(300));
    assert_eq!(c.gofaxd.recipient_headers, RecipientHeader::ALL);
    assert_eq!(c.gofaxsend.originate_timeout, Duration::from_secs(90));
    assert_eq!(c.gofaxsend.tiffcp_timeout, Duration::from_secs(60));
    assert_eq!(c.gofaxsend.cid_name, "");
    assert!(c.freeswitch.gateways.is_empty());
}

#[test]
fn comments_quotes_escapes_and_continuations() {
    let c = parse(
        "[freeswitch]\n\
         ident = +49 30 ; trailing comment\n\
         header = \"Semi;colon # hash\" # comment\n\
         password = \"tab\\there\\\\\"\n\
         socket = 127.0.0.1:\\\n8021\n",
    )
    .unwrap();
    assert_eq!(c.freeswitch.ident, "+49 30");
    assert_eq!(c.freeswitch.header, "Semi;colon # hash");
    assert_eq!(c.freeswitch.password, "tab\there\\");
    assert_eq!(c.freeswitch.socket, "127.0.0.1:8021");
}

#[test]
fn newline_escape_is_refused_because_values_reach_the_esl_wire() {
    let p = one_error("[freeswitch]\nheader = \"a\\nb\"\n");
    assert_eq!(p.line, Some(2));
    assert!(p.message.contains("line break"), "{p}");
}

#[test]
fn bare_boolean_key_means_true_and_empty_value_is_an_error() {
    let c = parse("[gofaxd]\nenablet38\n[freeswitch]\nverbose ; on\n").unwrap();
    assert!(c.gofaxd.enable_t38);
    assert!(c.freeswitch.verbose);
    let p = one_error("[gofaxd]\nenablet38 =\n");
    assert!(p.message.contains("not a boolean"), "{p}");
    let p = one_error("[hylafax]\nmodems\n");
    assert!(p.message.contains("needs a value"), "{p}");
}

#[test]
fn bare_multi_key_clears_the_list() {
    let c = parse("[freeswitch]\ngateway = a\ngateway = b\ngateway\ngateway = c\n").unwrap();
    assert_eq!(c.freeswitch.gateways, ["c"]);
    let c = parse("[gofaxsend]\nfailedresponse = USER_BUSY\nfailedresponse\n").unwrap();
    assert!(c.gofaxsend.failed_response.is_empty());
}

#[test]
fn failover_causes_replace_defaults_then_append_and_take_commas() {
    let c = parse("[gofaxsend]\nfailovercauses = GATEWAY_DOWN, INVALID_GATEWAY\nfailovercauses = NETWORK_OUT_OF_ORDER\n").unwrap();
    assert_eq!(
        c.gofaxsend.failover_causes,
        ["GATEWAY_DOWN", "INVALID_GATEWAY", "NETWORK_OUT_OF_ORDER"]
    );
    let c = parse("[gofaxsend]\nfailovercauses\n").unwrap();
    assert!(c.gofaxsend.failover_causes.is_empty());
}

#[test]
fn unknown_hangup_cause_is_a_warning_with_a_suggestion() {
    let c = parse("[gofaxsend]\nfailedresponse = call_rejected\nfailedresponse = USER_BUSYY\n")
        .unwrap();
    let w = &c.source.warnings;
    assert_eq!(w.len(), 2, "{w:?}");
    assert_eq!(w[0].line, Some(2));
    assert!(w[0].message.contains("CALL_REJECTED"));
    assert!(
        w[1].message.contains("did you mean `USER_BUSY`"),
        "{}",
        w[1]
    );
    assert_eq!(w[1].severity, Severity::Warning);
}

#[test]
fn integers_hex_leading_zero_and_negative() {
    assert_eq!(
        parse("[hylafax]\nmodems = 0x10\n").unwrap().hylafax.modems,
        16
    );
    assert_eq!(
        parse("[hylafax]\nmodems = 010\n").unwrap().hylafax.modems,
        10
    );
    let p = one_error("[hylafax]\nmodems = -5\n");
    assert_eq!(p.line, Some(2));
    assert_eq!(p.key.as_deref(), Some("modems"));
    assert!(p.message.contains("negative"), "{p}");
    let c = parse("[gofaxd]\nanswerafter = 0x7d0\n").unwrap();
    assert_eq!(c.gofaxd.answer_after, Duration::from_millis(2000));
}

#[test]
fn bom_and_case_insensitive_names() {
    let c = parse("\u{feff}[FreeSWITCH]\nGateWay = x\n[GOFAXSEND]\nDisableECMAfterRetry = 0x3\n")
        .unwrap();
    assert_eq!(c.freeswitch.gateways, ["x"]);
    assert_eq!(c.gofaxsend.disable_ecm_after_retry, 3);
}

#[test]
fn failedresponsemap_is_rejected() {
    let p = one_error("[gofaxsend]\nfailedresponsemap = x\n");
    assert!(p.message.contains("failedresponse"), "{p}");
}

#[test]
fn unknown_key_gets_a_suggestion_and_misplaced_key_its_section() {
    let p = one_error("[freeswitch]\nsocket = a:1\ngatway = x\n");
    assert_eq!(p.line, Some(3));
    assert_eq!(
        p.to_string(),
        "test.conf:3: error: [freeswitch] gatway: unknown key `gatway` in [freeswitch]; did you mean `gateway`?"
    );
    let p = one_error("[hylafax]\ncidname = sender\n");
    assert!(p.message.contains("belongs in [gofaxsend]"), "{p}");
}

#[test]
fn unknown_section_suggests_and_silences_its_keys() {
    let p = one_error("[gofaxdd]\nsocket = x\nwhatever = 1\n");
    assert_eq!(p.line, Some(1));
    assert!(p.message.contains("did you mean `[gofaxd]`"), "{p}");
    let p = one_error("socket = x\n");
    assert!(p.message.contains("outside any section"), "{p}");
}

#[test]
fn bad_bool_reports_its_line_and_allowed_values() {
    let p = one_error("[freeswitch]\n\n\nverbose = maybe\n");
    assert_eq!(p.line, Some(4));
    assert_eq!(p.section.as_deref(), Some("freeswitch"));
    assert!(p.message.contains("true/yes/on/1"), "{p}");
}

#[test]
fn every_problem_is_reported_at_once_in_line_order() {
    let text = "[freeswitch]\n\
                gatway = x\n\
                verbose = perhaps\n\
                [nosuch]\n\
                a = b\n\
                [hylafax]\n\
                modems = -1\n\
                spooldir = \"open\n\
                [gofaxd]\n\
                answerafter = 2s\n\
                rejectcause = 200\n\
                allowedpeers = 10.0.0.0/40\n\
                recipientheaders = to, from\n\
                dynamicconfigfailure = maybe\n\
                maxcallduration = 0\n";
    let lines: Vec<usize> = errors(text).iter().filter_map(|p| p.line).collect();
    assert_eq!(lines, vec![2, 3, 4, 7, 8, 10, 11, 12, 13, 14, 15]);
}

#[test]
fn repeated_single_key_warns_and_last_wins() {
    let c = parse("[hylafax]\nmodems = 1\nmodems = 2\n").unwrap();
    assert_eq!(c.hylafax.modems, 2);
    assert_eq!(c.source.warnings.len(), 1);
    assert_eq!(c.source.warnings[0].line, Some(3));
    assert!(c.source.warnings[0].message.contains("line 2"));
}

#[test]
fn fsfax_keys_parse() {
    let c = parse(
        "[freeswitch]\nsoftmodemfallbackexpiry = 30d\nconnecttimeout = 500ms\n\
         [gofaxd]\nallowedpeers = 10.0.0.0/8, ::1\nrecipientheaders = p-called-party-id, to\n\
         dynamicconfigfailure = Reject\nrejectcause = 0x25b\nhangupafterresult = 0\n\
         [gofaxsend]\noriginatetimeout = 2m\ndisablev17afterretry =\n",
    )
    .unwrap();
    assert_eq!(
        c.freeswitch.softmodem_fallback_expiry,
        Some(Duration::from_secs(30 * 86400))
    );
    assert_eq!(c.freeswitch.connect_timeout, Duration::from_millis(500));
    assert_eq!(c.gofaxd.allowed_peers.len(), 2);
    assert!(c.gofaxd.allowed_peers[0].contains("10.9.8.7".parse().unwrap()));
    assert_eq!(
        c.gofaxd.recipient_headers,
        [RecipientHeader::PCalledPartyId, RecipientHeader::To]
    );
    assert_eq!(
        c.gofaxd.dynamic_config_failure,
        DynamicConfigFailure::Reject
    );
    assert_eq!(c.gofaxd.reject_cause, 603);
    assert_eq!(c.gofaxd.hangup_after_result, Duration::ZERO);
    assert_eq!(c.gofaxsend.originate_timeout, Duration::from_secs(120));
    assert_eq!(c.gofaxsend.disable_v17_after_retry, 0);
}

#[test]
fn effective_text_round_trips_and_redacts_the_password() {
    let c = parse(FIXTURE).unwrap();
    let text = c.effective_text();
    assert!(text.contains("password = ********"), "{text}");
    assert!(!text.contains("ClueCon"));
    assert!(text.contains("header = ACME Fax Services\n"), "{text}");
    let mut back = parse(&text).unwrap();
    assert_eq!(back.freeswitch.password, "********");
    back.freeswitch.password = c.freeswitch.password.clone();
    assert_eq!(back.freeswitch, c.freeswitch);
    assert_eq!(back.hylafax, c.hylafax);
    assert_eq!(back.gofaxd, c.gofaxd);
    assert_eq!(back.gofaxsend, c.gofaxsend);
}

#[test]
fn effective_text_lists_every_key_and_round_trips_non_defaults() {
    let c = parse(
        "[freeswitch]\nsoftmodemfallbackexpiry = 90m\nsoftmodemfallbackclearonsuccess\n\
         header = \" odd;\\\"value\"\n\
         [gofaxd]\nallowedpeers = 192.168.0.0/16\nmaxinbound = 7\nwaittime = 1500\n\
         dynamicconfigfailure = reject\nrecipientheaders = to\n\
         [gofaxsend]\nfailovercauses\ntiffcptimeout = 1500ms\n",
    )
    .unwrap();
    let text = c.effective_text();
    for (section, keys) in KEYS {
        assert!(text.contains(&format!("[{section}]")));
        for key in *keys {
            assert!(
                text.lines()
                    .any(|l| l == *key || l.starts_with(&format!("{key} = "))),
                "{key} missing from\n{text}"
            );
        }
    }
    let back = parse(&text).unwrap();
    assert_eq!(back.freeswitch, c.freeswitch);
    assert_eq!(back.gofaxd, c.gofaxd);
    assert_eq!(back.gofaxsend, c.gofaxsend);
    assert!(back.gofaxsend.failover_causes.is_empty());
}

#[test]
fn validate_flags_a_missing_spool_only_for_the_fixture() {
    let mut c = parse(FIXTURE).unwrap();
    let dir = tempfile::tempdir().unwrap();
    c.hylafax.spooldir = dir.path().join("absent");
    let problems = c.validate();
    assert_eq!(problems.len(), 1, "{problems:#?}");
    assert!(problems[0].is_error());
    assert_eq!(problems[0].line, Some(19));
    assert!(problems[0].message.contains("does not exist"));
    c.hylafax.spooldir = dir.path().to_path_buf();
    assert!(c.validate().is_empty());
    assert!(c.validate_for(Program::Send).is_empty());
}

#[test]
fn validate_semantic_checks() {
    let dir = tempfile::tempdir().unwrap();
    let text = format!(
        "[hylafax]\nspooldir = {}\nmodems = 0\n[freeswitch]\nsocket = 127.0.0.1:8021\n\
         [gofaxd]\nsocket = 0.0.0.0:8022\nanswerafter = 2\n",
        dir.path().display()
    );
    let c = parse(&text).unwrap();
    let problems = c.validate();
    let find = |key: &str| {
        problems
            .iter()
            .find(|p| p.key.as_deref() == Some(key))
            .unwrap_or_else(|| panic!("no problem for {key}: {problems:#?}"))
    };
    assert_eq!(find("modems").severity, Severity::Warning);
    assert_eq!(find("gateway").severity, Severity::Warning);
    assert!(find("answerafter").message.contains("milliseconds"));
    assert!(find("socket").message.contains("allowedpeers"));
    assert!(problems.iter().all(|p| !p.is_error()), "{problems:#?}");
    let send = c.validate_for(Program::Send);
    assert!(
        send.iter()
            .any(|p| p.is_error() && p.key.as_deref() == Some("gateway"))
    );

    let c = parse("[freeswitch]\nsoftmodemfallback = true\ngateway = a b\n").unwrap();
    let problems = c.validate();
    let errors: Vec<_> = problems.iter().filter(|p| p.is_error()).collect();
    let keys: Vec<_> = errors.iter().filter_map(|p| p.key.as_deref()).collect();
    assert_eq!(
        keys,
        ["spooldir", "socket", "gateway", "socket"],
        "{errors:#?}"
    );

    let c = parse("[freeswitch]\nsocket = nocolon\n[gofaxd]\nsocket = localhost:8022\n").unwrap();
    let problems = c.validate();
    assert!(
        problems
            .iter()
            .any(|p| p.is_error() && p.message.contains("host:port"))
    );
    assert!(!problems.iter().any(|p| p.message.contains("allowedpeers")));
}

#[test]
fn socket_address_checks() {
    assert!(check_socket_address("127.0.0.1:8021").is_ok());
    assert!(check_socket_address("[::1]:8021").is_ok());
    assert!(check_socket_address("fs.example:8021").is_ok());
    assert!(check_socket_address("::1:8021").is_err());
    assert!(check_socket_address("host:0").is_err());
    assert!(check_socket_address("host").is_err());
    assert!(check_listen_address("127.0.0.1:0").is_ok());
    assert!(check_listen_address("[::1]:0").is_ok());
    assert!(check_listen_address("::1:0").is_err());
    assert!(check_listen_address("127.0.0.1:8022").is_ok());
    assert!(is_loopback_address("[::1]:1"));
    assert!(is_loopback_address("127.0.0.2:1"));
    assert!(!is_loopback_address(":8022"));
    assert!(!is_loopback_address("0.0.0.0:8022"));
}

#[test]
fn spool_path_resolves_relative_paths_under_the_spool() {
    let mut c = Config::default();
    c.hylafax.spooldir = PathBuf::from("/var/spool/hylafax");
    assert_eq!(
        c.spool_path(Path::new("log/xferfaxlog")),
        Path::new("/var/spool/hylafax/log/xferfaxlog")
    );
    assert_eq!(c.spool_path(Path::new("/tmp/x")), Path::new("/tmp/x"));
}

#[test]
fn load_reports_missing_file_and_bad_utf8() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("nope.conf");
    let e = Config::load(&missing).unwrap_err();
    assert!(matches!(e, ConfigError::Read { .. }));
    assert!(e.problems()[0].to_string().contains("nope.conf"));
    let file = dir.path().join("latin1.conf");
    std::fs::write(&file, b"[freeswitch]\nheader = M\xfcller\n").unwrap();
    let c = Config::load(&file).unwrap();
    assert_eq!(c.freeswitch.header, "M\u{fffd}ller");
    assert_eq!(c.source.warnings[0].line, Some(2));
}

#[test]
fn sample_config_parses_and_documents_every_key() {
    let text = include_str!("../../config/fsfax.conf");
    let c = parse(text).unwrap();
    assert!(c.source.warnings.is_empty(), "{:?}", c.source.warnings);
    for (section, keys) in KEYS {
        for key in *keys {
            assert!(
                c.source.key_lines.contains_key(&format!("{section}.{key}"))
                    || text.contains(&format!(";{key} ="))
                    || text.contains(&format!("; {key} =")),
                "sample config lacks [{section}] {key}"
            );
        }
    }
    // The defaults the sample states for fsfax's keys are the code's defaults.
    let d = Config::default();
    let fs = FreeSwitchSection {
        socket: d.freeswitch.socket.clone(),
        password: d.freeswitch.password.clone(),
        gateways: vec![],
        ident: String::new(),
        header: String::new(),
        verbose: false,
        softmodem_fallback: false,
        ..c.freeswitch.clone()
    };
    assert_eq!(fs, d.freeswitch);
    let g = &c.gofaxd;
    assert_eq!(g.allowed_peers, d.gofaxd.allowed_peers);
    assert_eq!(g.max_inbound, d.gofaxd.max_inbound);
    assert_eq!(g.reject_cause, d.gofaxd.reject_cause);
    assert_eq!(g.dynamic_config_timeout, d.gofaxd.dynamic_config_timeout);
    assert_eq!(g.dynamic_config_failure, d.gofaxd.dynamic_config_failure);
    assert_eq!(g.faxrcvd_timeout, d.gofaxd.faxrcvd_timeout);
    assert_eq!(g.max_call_duration, d.gofaxd.max_call_duration);
    assert_eq!(g.hangup_after_result, d.gofaxd.hangup_after_result);
    assert_eq!(g.shutdown_timeout, d.gofaxd.shutdown_timeout);
    assert_eq!(g.recipient_headers, d.gofaxd.recipient_headers);
    assert_eq!(g.faxrcvd_cmd, d.gofaxd.faxrcvd_cmd);
    let s = GofaxsendSection {
        enable_t38: false,
        request_t38: false,
        fax_number: String::new(),
        cid_name: CidName::None,
        failed_response: vec![],
        ..c.gofaxsend.clone()
    };
    assert_eq!(s, d.gofaxsend);
}

#[test]
fn several_nodes_their_passwords_order_and_spool_path() {
    let dir = tempfile::tempdir().unwrap();
    let text = format!(
        "[hylafax]\nspooldir = {}\nmodems = 1\n[freeswitch]\ngateway = gw\npassword = shared\n\
         socket = 10.0.0.1:8021\nnode = [::1]:8021\nnodepassword = [::1]:8021 own secret\n\
         nodeselection = spread\nspoolpath = /mnt/hylafax\n",
        dir.path().display()
    );
    let c = parse(&text).unwrap();
    let fs = &c.freeswitch;
    assert_eq!(fs.socket, "10.0.0.1:8021", "socket is the first node");
    assert_eq!(fs.node_list()[0].socket, "10.0.0.1:8021");
    assert_eq!(fs.nodes, ["[::1]:8021"]);
    assert_eq!(fs.node_list().len(), 2);
    assert_eq!(fs.node_selection, NodeSelection::Spread);
    let nodes = fs.node_list();
    assert_eq!(nodes[0].password, "shared");
    assert_eq!(
        nodes[1].password, "own secret",
        "a password may hold spaces"
    );
    assert!(
        c.validate_for(Program::Send).is_empty(),
        "{:#?}",
        c.validate()
    );
    // Paths in the spool are given to FreeSWITCH under its mount point, and back.
    let spool = dir.path();
    let doc = spool.join("docq/doc7.tif");
    let theirs = fs.to_switch_path(spool, &doc);
    assert_eq!(theirs, Path::new("/mnt/hylafax/docq/doc7.tif"));
    assert_eq!(fs.from_switch_path(spool, &theirs), doc);
    assert_eq!(
        fs.to_switch_path(spool, Path::new("/elsewhere/x.tif")),
        Path::new("/elsewhere/x.tif"),
        "a path outside the spool is left alone"
    );
    // The effective configuration lists every node and never shows a node's password.
    let shown = c.effective_text();
    assert!(
        shown.contains("socket = 10.0.0.1:8021\n") && shown.contains("node = [::1]:8021\n"),
        "{shown}"
    );
    assert!(
        shown.contains("nodepassword = [::1]:8021 ********"),
        "{shown}"
    );
    assert!(!shown.contains("own secret"), "{shown}");
    // One node, as gofax.conf has it: the node list is that one.
    let c = parse("[freeswitch]\nsocket = 127.0.0.1:8021\npassword = p\n").unwrap();
    assert_eq!(c.freeswitch.node_list().len(), 1);
    assert_eq!(c.freeswitch.node_list()[0].password, "p");
    assert_eq!(c.freeswitch.to_switch_path(spool, &doc), doc);
}

#[test]
fn node_keys_that_cannot_work_are_errors_naming_the_node() {
    let problems = |text: &str| -> Vec<Problem> {
        parse(text)
            .unwrap()
            .validate()
            .into_iter()
            .filter(|p| p.is_error() && p.section.as_deref() == Some("freeswitch"))
            .collect()
    };
    let p = problems("[freeswitch]\nsocket = a:1\nnode = b:2\nnode = a:1\n");
    assert_eq!(p[0].key.as_deref(), Some("node"));
    assert_eq!(p.len(), 1, "{p:#?}");
    assert!(p[0].message.contains("a:1 is listed twice"), "{p:#?}");
    let p = problems("[freeswitch]\nsocket = a:1\nnodepassword = b:2 x\n");
    assert_eq!(p[0].key.as_deref(), Some("nodepassword"));
    assert!(p[0].message.contains("b:2 is not a node"), "{p:#?}");
    assert!(p[0].message.contains("the nodes are: a:1"), "{p:#?}");
    let p = problems("[freeswitch]\nsocket = a:1\nspoolpath = mnt/hylafax\n");
    assert_eq!(p[0].key.as_deref(), Some("spoolpath"));
    assert!(p[0].message.contains("not an absolute path"), "{p:#?}");
    let e = one_error("[freeswitch]\nnodepassword = a:1\n");
    assert!(e.message.contains("<host:port> <password>"), "{e:?}");
    let e = one_error("[freeswitch]\nnodeselection = random\n");
    assert!(e.message.contains("`order` or `spread`"), "{e:?}");
}
