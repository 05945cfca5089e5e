//! freeswitch-conf/: every XML file is well-formed, and every setting fsfax relies on is there
//! and agrees with the sample config/fsfax.conf (event socket address and password, the
//! `socket ... async full` dialplan at fsfaxd's address, the modules, the gateways).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use fsfax::config::Config;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("freeswitch-conf")
}

fn xml_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            xml_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "xml") {
            out.push(path);
        }
    }
    out.sort();
}

fn read(rel: &str) -> String {
    let path = root().join(rel);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn sample_config() -> Config {
    Config::load(&Path::new(env!("CARGO_MANIFEST_DIR")).join("config/fsfax.conf"))
        .unwrap_or_else(|e| panic!("config/fsfax.conf: {:?}", e.problems()))
}

/// The `$${name}` variables vars.xml sets with `<X-PRE-PROCESS cmd="set" data="name=value"/>`.
fn vars() -> BTreeMap<String, String> {
    let text = read("vars.xml");
    let doc = roxmltree::Document::parse(&text).unwrap();
    doc.descendants()
        .filter(|n| n.has_tag_name("X-PRE-PROCESS") && n.attribute("cmd") == Some("set"))
        .map(|n| {
            let (k, v) = n.attribute("data").unwrap().split_once('=').unwrap();
            (k.to_owned(), v.to_owned())
        })
        .collect()
}

/// Replaces every `$${name}` with its vars.xml value; an unknown name fails the test.
fn expand(value: &str, vars: &BTreeMap<String, String>) -> String {
    let mut out = String::new();
    let mut rest = value;
    while let Some(i) = rest.find("$${") {
        out.push_str(&rest[..i]);
        let end = rest[i..].find('}').expect("unclosed $${") + i;
        let name = &rest[i + 3..end];
        out.push_str(
            vars.get(name)
                .unwrap_or_else(|| panic!("$${{{name}}} is not set in vars.xml")),
        );
        rest = &rest[end + 1..];
    }
    out.push_str(rest);
    out
}

/// `<param name=... value=...>` of the first element named `parent` (or of the whole file).
fn params(doc: &roxmltree::Document, parent: &str) -> BTreeMap<String, String> {
    let node = doc
        .descendants()
        .find(|n| n.has_tag_name(parent))
        .unwrap_or_else(|| panic!("no <{parent}>"));
    node.children()
        .filter(|n| n.has_tag_name("param"))
        .map(|n| {
            (
                n.attribute("name").unwrap().to_owned(),
                n.attribute("value").unwrap().to_owned(),
            )
        })
        .collect()
}

#[test]
fn every_xml_file_is_well_formed() {
    let mut files = Vec::new();
    xml_files(&root(), &mut files);
    assert!(files.len() >= 10, "only {} XML files found", files.len());
    for path in &files {
        let text = std::fs::read_to_string(path).unwrap();
        let doc = roxmltree::Document::parse(&text)
            .unwrap_or_else(|e| panic!("{}: not well-formed: {e}", path.display()));
        // Commented-out examples must still be valid once uncommented.
        for comment in doc.descendants().filter(|n| n.is_comment()) {
            let body = comment.text().unwrap_or("");
            if let Some(start) = body.find('<') {
                roxmltree::Document::parse(&format!("<x>{}</x>", &body[start..])).unwrap_or_else(
                    |e| {
                        panic!(
                            "{}: commented example is not well-formed: {e}",
                            path.display()
                        )
                    },
                );
            }
        }
        // Every file under autoload_configs is a <configuration name="X.conf"> named after it.
        if path.parent().unwrap().ends_with("autoload_configs") {
            let name = path.file_name().unwrap().to_str().unwrap();
            assert_eq!(
                doc.root_element().attribute("name"),
                Some(name.trim_end_matches(".xml")),
                "{}",
                path.display()
            );
        }
    }
}

#[test]
fn freeswitch_xml_includes_vars_and_autoload_configs() {
    let text = read("freeswitch.xml");
    let doc = roxmltree::Document::parse(&text).unwrap();
    let includes: Vec<&str> = doc
        .descendants()
        .filter(|n| n.has_tag_name("X-PRE-PROCESS") && n.attribute("cmd") == Some("include"))
        .filter_map(|n| n.attribute("data"))
        .collect();
    assert_eq!(includes, ["vars.xml", "autoload_configs/*.xml"]);
    // vars.xml sets every variable the other files use.
    let vars = vars();
    let mut files = Vec::new();
    xml_files(&root(), &mut files);
    for path in files {
        let text = std::fs::read_to_string(&path).unwrap();
        let doc = roxmltree::Document::parse(&text).unwrap();
        for n in doc.descendants() {
            for a in n.attributes() {
                expand(a.value(), &vars);
            }
        }
    }
}

#[test]
fn modules_fsfax_needs_are_loaded() {
    let text = read("autoload_configs/modules.conf.xml");
    let doc = roxmltree::Document::parse(&text).unwrap();
    let loaded: Vec<&str> = doc
        .descendants()
        .filter(|n| n.has_tag_name("load"))
        .filter_map(|n| n.attribute("module"))
        .collect();
    for m in [
        "mod_event_socket",
        "mod_sofia",
        "mod_commands",
        "mod_dptools",
        "mod_spandsp",
        "mod_db",
        "mod_tone_stream",
    ] {
        assert!(loaded.contains(&m), "{m} is not loaded: {loaded:?}");
    }
    // mod_event_socket must come before anything that could accept calls.
    let pos = |m: &str| loaded.iter().position(|l| *l == m).unwrap();
    assert!(pos("mod_event_socket") < pos("mod_sofia"));
}

#[test]
fn event_socket_matches_fsfax_conf() {
    let cfg = sample_config();
    let vars = vars();
    let text = read("autoload_configs/event_socket.conf.xml");
    let doc = roxmltree::Document::parse(&text).unwrap();
    let p = params(&doc, "settings");
    let ip = expand(&p["listen-ip"], &vars);
    let port = expand(&p["listen-port"], &vars);
    assert_eq!(ip, "127.0.0.1", "the event socket must stay on loopback");
    assert_eq!(format!("{ip}:{port}"), cfg.freeswitch.socket);
    assert_eq!(expand(&p["password"], &vars), cfg.freeswitch.password);
    assert!(!cfg.freeswitch.password.is_empty());
    assert!(
        p.get("apply-inbound-acl")
            .is_some_and(|a| a.starts_with("loopback")),
        "inbound ACL: {p:?}"
    );
}

#[test]
fn sofia_profile_hands_every_call_to_fsfaxd() {
    let cfg = sample_config();
    let vars = vars();
    let text = read("autoload_configs/sofia.conf.xml");
    let doc = roxmltree::Document::parse(&text).unwrap();
    let profiles: Vec<_> = doc
        .descendants()
        .filter(|n| n.has_tag_name("profile"))
        .collect();
    assert_eq!(profiles.len(), 1, "one SIP profile");
    let settings = profiles[0]
        .children()
        .find(|n| n.has_tag_name("settings"))
        .unwrap();
    let p: BTreeMap<_, _> = settings
        .children()
        .filter(|n| n.has_tag_name("param"))
        .map(|n| (n.attribute("name").unwrap(), n.attribute("value").unwrap()))
        .collect();
    let dialplan = expand(p["dialplan"], &vars);
    // inline dialplan: `app:data`; fsfaxd needs the outbound socket in async full mode.
    let data = dialplan
        .strip_prefix("inline:socket:")
        .unwrap_or_else(|| panic!("dialplan is not an inline socket: {dialplan}"));
    assert!(!data.contains(','), "one application only: {dialplan}");
    let mut words = data.split_whitespace();
    assert_eq!(words.next(), Some(cfg.gofaxd.socket.as_str()));
    assert_eq!(words.collect::<Vec<_>>(), ["async", "full"]);
    // The profile must not demand registrations or authentication from trunks by default,
    // and listens where vars.xml says.
    assert_eq!(p["auth-calls"], "false");
    assert_eq!(expand(p["sip-ip"], &vars), vars["fax_sip_ip"]);
    // Gateways come from gateways/*.xml.
    let include = profiles[0]
        .descendants()
        .find(|n| n.has_tag_name("X-PRE-PROCESS"))
        .and_then(|n| n.attribute("data"));
    assert_eq!(include, Some("../gateways/*.xml"));
}

#[test]
fn gateways_named_in_fsfax_conf_exist() {
    let cfg = sample_config();
    let mut defined = Vec::new();
    let mut commented = Vec::new();
    for entry in std::fs::read_dir(root().join("gateways")).unwrap() {
        let text = std::fs::read_to_string(entry.unwrap().path()).unwrap();
        let doc = roxmltree::Document::parse(&text).unwrap();
        for n in doc.descendants() {
            if n.has_tag_name("gateway") {
                defined.push(n.attribute("name").unwrap().to_owned());
            } else if n.is_comment() && n.text().unwrap_or("").contains("<gateway") {
                let body = n.text().unwrap();
                let wrapped = format!("<x>{}</x>", &body[body.find('<').unwrap()..]);
                let inner = roxmltree::Document::parse(&wrapped).unwrap();
                for g in inner.descendants().filter(|g| g.has_tag_name("gateway")) {
                    let p: BTreeMap<_, _> = g
                        .children()
                        .filter(|c| c.has_tag_name("param"))
                        .map(|c| (c.attribute("name").unwrap(), c.attribute("value").unwrap()))
                        .collect();
                    commented.push((
                        g.attribute("name").unwrap().to_owned(),
                        p["register"] == "true",
                    ));
                }
            }
        }
    }
    for gw in &cfg.freeswitch.gateways {
        assert!(
            defined.contains(gw),
            "gateway {gw} of fsfax.conf is not defined: {defined:?}"
        );
    }
    // The commented examples show a trunk with registration.
    assert!(commented.iter().any(|(_, reg)| *reg), "{commented:?}");
}

/// The shared fallback list (README, "Several FreeSWITCH nodes"): the PostgreSQL variant of
/// db.conf.xml has a `pgsql://` DSN with every part mod_pgsql needs, and the stock files carry the
/// two lines a node must switch on: mod_pgsql loaded before mod_db, and its own switchname.
#[test]
fn shared_fallback_list_variant_is_complete() {
    let text = read("shared-db/db.conf.xml");
    let doc = roxmltree::Document::parse(&text).unwrap();
    assert_eq!(doc.root_element().attribute("name"), Some("db.conf"));
    let dsn = params(&doc, "settings")
        .remove("odbc-dsn")
        .expect("odbc-dsn param");
    let conninfo = dsn.strip_prefix("pgsql://").expect("a pgsql:// DSN");
    for key in ["hostaddr=", "dbname=", "user=", "password="] {
        assert!(conninfo.contains(key), "{key} missing in {dsn}");
    }
    let modules = read("autoload_configs/modules.conf.xml");
    let pgsql = modules
        .find(r#"<load module="mod_pgsql"/>"#)
        .expect("the mod_pgsql line, commented out");
    let db = modules.find(r#"<load module="mod_db"/>"#).unwrap();
    assert!(pgsql < db, "mod_pgsql must load before mod_db");
    assert!(read("autoload_configs/switch.conf.xml").contains(r#"name="switchname""#));
    let readme =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md")).unwrap();
    assert!(readme.contains("freeswitch-conf/shared-db/db.conf.xml"));
}
