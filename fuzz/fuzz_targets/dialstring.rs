//! Dial-string builder: whatever the qfile, DynamicConfig or mod_db override says, a built
//! originate is ONE ESL command placing ONE leg on the named gateway that runs `txfax` on the
//! given file, with exactly the variables the builder meant to set. The ESL command wrappers
//! (`api`, `bgapi`, `sendmsg`/`execute`) likewise never put a second command on the wire.
#![no_main]

use std::path::PathBuf;

use fsfax::esl::Command;
use fsfax::fax::{ChannelVars, OriginateRequest};
use libfuzzer_sys::fuzz_target;

/// Splits the input into text fields at NUL bytes (lossy UTF-8, so every field is a `&str`).
fn fields(data: &[u8]) -> Vec<String> {
    data.split(|&b| b == 0)
        .map(|f| String::from_utf8_lossy(f).into_owned())
        .collect()
}

/// FreeSWITCH's `switch_separate_string(.., ' ', ..)` as mod_commands uses it on the api
/// argument: spaces split, single quotes protect, `\` escapes the next character.
fn fs_tokens(s: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut quoted = false;
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => {
                cur.push(c);
                if let Some(n) = chars.next() {
                    cur.push(n);
                }
            }
            '\'' => {
                quoted = !quoted;
                cur.push(c);
            }
            ' ' if !quoted => {
                if !cur.is_empty() {
                    out.push(std::mem::take(&mut cur));
                }
            }
            _ => cur.push(c),
        }
    }
    if !cur.is_empty() {
        out.push(cur);
    }
    out
}

/// One ESL command: the bytes end in the only blank line and hold no CR or NUL.
fn assert_one_esl_command(cmd: &Command) {
    let wire = std::str::from_utf8(cmd.as_bytes()).expect("commands are UTF-8");
    assert!(wire.ends_with("\n\n"), "{wire:?}");
    assert_eq!(wire.matches("\n\n").count(), 1, "two commands in {wire:?}");
    assert!(!wire.contains(['\r', '\0']), "{wire:?}");
}

fn check_originate(req: &OriginateRequest, line: &str) {
    assert!(!line.contains(['\r', '\n', '\0']), "{line:?}");
    let vars = req.variables().expect("build succeeded, so variables do");
    let rest = line.strip_prefix("originate {").expect("originate {");
    let close = rest.find('}').expect("a closing brace");
    let (block, after) = (&rest[..close], &rest[close + 1..]);
    // The variable block: split at ',' and each item at its first '=', as FreeSWITCH does.
    let items: Vec<&str> = block.split(',').collect();
    assert_eq!(items.len(), vars.len(), "variable count in {line:?}");
    for (item, (name, value)) in items.iter().zip(&vars) {
        let (k, v) = item.split_once('=').expect("name=value");
        assert_eq!(k, *name);
        assert_eq!(v, format!("'{value}'"), "{line:?}");
        assert!(
            !value.contains(['\'', '{', '}', ',', '^', '$', '\\']),
            "{value:?}"
        );
    }
    // The dial string (up to the space before `&txfax`): no leg separators or per-leg blocks.
    let (dial_part, _) = after
        .split_once(' ')
        .expect("a space before the application");
    assert!(
        !dial_part.contains([
            '{', '}', '[', ']', '<', '>', '|', ',', '\'', '"', '\\', '^', '$'
        ]),
        "{dial_part:?}"
    );
    // The whole argument splits into exactly: {vars}<dial string>, &txfax(<path>).
    let toks = fs_tokens(line.strip_prefix("originate ").unwrap_or(line));
    assert_eq!(toks.len(), 2, "tokens {toks:?} of {line:?}");
    let dial = toks[0].rsplit('}').next().unwrap_or("");
    let expected_prefix = format!("sofia/gateway/{}/", req.gateway);
    let number = dial
        .strip_prefix(&expected_prefix)
        .unwrap_or_else(|| panic!("leg {dial:?}"));
    assert!(
        !number.is_empty() && !number.contains('/'),
        "number {number:?}"
    );
    let app = toks[1]
        .strip_prefix("&txfax(")
        .and_then(|a| a.strip_suffix(')'));
    let path = app.unwrap_or_else(|| panic!("app {:?}", toks[1]));
    assert!(!path.contains(['(', ')', '$']), "path {path:?}");
    assert_eq!(Some(path), req.txfax_path.to_str());

    let bg = Command::bgapi(line, "0b8f3a94-0f3e-4f0e-8d11-2f1c8b7d9a11").expect("bgapi");
    assert_one_esl_command(&bg);
    let api = Command::api(line).expect("api");
    assert_one_esl_command(&api);
}

fuzz_target!(|data: &[u8]| {
    let f = fields(data);
    let get = |i: usize| f.get(i).cloned().unwrap_or_default();
    let opt = |i: usize| f.get(i).filter(|s| !s.is_empty()).cloned();
    let mut vars = ChannelVars::new();
    vars.caller_id_number = opt(3).filter(|_| data.first().is_some_and(|b| b & 1 == 1));
    vars.caller_id_name = opt(4);
    vars.fax_ident = opt(5);
    vars.fax_header = opt(6);
    // Per-destination overrides from mod_db (name, value pairs) are untrusted too.
    let mut i = 9;
    while i + 1 < f.len() {
        let _ = vars.apply_override(&f[i], &f[i + 1]);
        i += 2;
    }
    let page = |i: usize| get(i).bytes().next().map(|b| u32::from(b) % 16);
    let req = OriginateRequest {
        uuid: uuid::Uuid::from_u128(0x1234_5678_9abc_def0_1234_5678_9abc_def0),
        gateway: get(1),
        number: get(0),
        vars,
        txfax_path: PathBuf::from(get(2)),
        start_page: page(7),
        end_page: page(8),
    };
    if let Ok(line) = req.build() {
        check_originate(&req, &line);
    }

    // The raw ESL constructors with hostile text.
    let text = get(0);
    for cmd in [
        Command::api(&text),
        Command::raw(&text),
        Command::bgapi(&text, &get(1)),
        Command::filter(&get(1), &text),
        Command::execute(Some(&get(1)), &get(2), &text, Some(&get(3))),
        Command::hangup(Some(&get(1)), &text),
        Command::sendmsg(None, &[(get(2).as_str(), text.as_str())]),
    ]
    .into_iter()
    .flatten()
    {
        assert_one_esl_command(&cmd);
    }
});
