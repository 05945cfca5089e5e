//! Turning capture events into per-call event plans: value substitution and step lists.

use super::capture::{Capture, Event, url_encode};
use super::dial::Originate;
use super::scripts::{CallScript, DropPoint, FaxParams, T38, cause_codes};

/// Values of one capture that must be replaced by the new call's values.
#[derive(Clone, Debug, Default)]
pub(crate) struct SourceInfo {
    pub uuid: String,
    pub job: Option<String>,
    pub arg: String,
    pub vars: Vec<(String, String)>,
    pub file: String,
    pub number: String,
    pub gateway: String,
    pub cid_num: String,
    pub cid_name: String,
    pub first_ts_us: i64,
}

impl SourceInfo {
    pub fn of(cap: &Capture) -> SourceInfo {
        let arg = cap.originate_arg().unwrap_or_default();
        let orig = Originate::parse(&arg).ok();
        let (vars, number, gateway, file) = match &orig {
            Some(o) => {
                let leg = o.legs().first().map(|l| (*l).clone());
                (
                    o.vars.clone(),
                    leg.as_ref().map(|l| l.number.clone()).unwrap_or_default(),
                    leg.as_ref().map(|l| l.gateway.clone()).unwrap_or_default(),
                    o.app_arg.clone().unwrap_or_default(),
                )
            }
            None => Default::default(),
        };
        let var = |k: &str| {
            vars.iter()
                .find(|(n, _)| n == k)
                .map(|(_, v)| v.clone())
                .unwrap_or_default()
        };
        let first_ts_us = cap
            .events_ref()
            .first()
            .and_then(|(_, e)| e.get("Event-Date-Timestamp").and_then(|t| t.parse().ok()))
            .unwrap_or(0);
        SourceInfo {
            uuid: cap.origination_uuid().unwrap_or_default(),
            job: cap.job_uuid(),
            cid_num: var("origination_caller_id_number"),
            cid_name: var("origination_caller_id_name"),
            arg,
            vars,
            file,
            number,
            gateway,
            first_ts_us,
        }
    }
}

/// The new call's values.
#[derive(Clone, Debug, Default)]
pub(crate) struct CallValues {
    pub uuid: String,
    pub job: Option<String>,
    pub arg: String,
    pub vars: Vec<(String, String)>,
    pub file: String,
    pub number: String,
    pub gateway: String,
    pub cid_num: String,
    pub cid_name: String,
    pub now_us: i64,
}

fn is_party_header(name: &str) -> bool {
    // The same few hundred names come back in every event of every call: each is judged once
    // (27 substring searches per header were a good part of the fake's time per call).
    thread_local! {
        static JUDGED: std::cell::RefCell<std::collections::HashMap<String, bool, Fnv>> =
            std::cell::RefCell::default();
    }
    if let Some(yes) = JUDGED.with_borrow(|j| j.get(name).copied()) {
        return yes;
    }
    let yes = judge_party_header(name);
    JUDGED.with_borrow_mut(|j| j.insert(name.to_owned(), yes));
    yes
}

/// FNV-1a for the memo of header names: std's SipHash (built against hostile keys) was a
/// visible part of the fake's time per call, and these keys are the captures' own names.
#[derive(Default)]
struct Fnv;

impl std::hash::BuildHasher for Fnv {
    type Hasher = FnvHasher;
    fn build_hasher(&self) -> FnvHasher {
        FnvHasher(0xcbf2_9ce4_8422_2325)
    }
}

struct FnvHasher(u64);

impl std::hash::Hasher for FnvHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0 ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
        }
    }
}

fn judge_party_header(name: &str) -> bool {
    const YES: [&str; 20] = [
        "Caller-",
        "Channel-Name",
        "channel_name",
        "sip_to",
        "sip_req",
        "sip_contact",
        "sip_destination",
        "recover_contact",
        "caller_id",
        "allee",
        "sip_full",
        "sip_from",
        "Destination",
        "pre_transfer",
        "origination_caller",
        "Channel-Caller",
        "ANI",
        "Username",
        "Remote-Party",
        "Channel-Orig",
    ];
    const NO: [&str; 7] = ["Time", "port", "cseq", "tag", "call_id", "Index", "Hold"];
    YES.iter().any(|y| name.contains(y)) && !NO.iter().any(|n| name.contains(n))
}

fn boundary_ok(v: &str, start: usize, end: usize) -> bool {
    let b = v.as_bytes();
    let before = start == 0
        || !b[start - 1].is_ascii_alphanumeric()
        || (start >= 3 && b[start - 3] == b'%' && b[start - 2].is_ascii_hexdigit());
    let after = end >= b.len() || !b[end].is_ascii_alphanumeric() || b[end] == b'%';
    before && after
}

/// Replaces whole-token occurrences of `old` (a `%XX` escape counts as a separator).
pub(crate) fn replace_token(v: &str, old: &str, new: &str) -> String {
    if old.is_empty() || old == new || !v.contains(old) {
        return v.to_string();
    }
    let mut out = String::new();
    let mut i = 0;
    while let Some(p) = v[i..].find(old) {
        let s = i + p;
        let e = s + old.len();
        out.push_str(&v[i..s]);
        if boundary_ok(v, s, e) {
            out.push_str(new);
        } else {
            out.push_str(old);
        }
        i = e;
    }
    out.push_str(&v[i..]);
    out
}

fn shift_time(name: &str, v: &str, off_us: i64) -> Option<String> {
    if name == "Event-Date-Timestamp" || !v.bytes().all(|c| c.is_ascii_digit()) || v == "0" {
        return None;
    }
    let n: i64 = v.parse().ok()?;
    if (name.ends_with("-Time") || name.contains("uepoch") || name.ends_with("_stamp"))
        && v.len() == 16
    {
        return Some((n + off_us).to_string());
    }
    if name.contains("epoch") && v.len() == 10 {
        return Some((n + off_us / 1_000_000).to_string());
    }
    None
}

/// Renders a capture event for the new call: per-call values substituted, wire order kept.
pub(crate) fn render(src: &SourceInfo, ev: &Event, cv: &CallValues) -> Event {
    Renderer::new(src, cv).render(ev)
}

/// What [`render`] substitutes for one call, worked out once for all of its events (encoding
/// the call's values and building the searchers again for each event was half of the fake's
/// work per call, all of it before the call's first event went out).
pub(crate) struct Renderer<'a> {
    src: &'a SourceInfo,
    cv: &'a CallValues,
    /// Microseconds between the capture's first event and this call.
    off: i64,
    /// Every plain substitution (old, new), with its searcher.
    swaps: Vec<(String, String, memchr::memmem::Finder<'static>)>,
    /// The parties' numbers and name as they appear on the wire (old, new).
    party: [(String, String); 3],
    gateway: String,
    arg: String,
}

impl<'a> Renderer<'a> {
    pub(crate) fn new(src: &'a SourceInfo, cv: &'a CallValues) -> Renderer<'a> {
        let off = if src.first_ts_us > 0 {
            cv.now_us - src.first_ts_us
        } else {
            0
        };
        let mut swaps: Vec<(String, String)> = Vec::new();
        if !src.uuid.is_empty() {
            swaps.push((src.uuid.clone(), cv.uuid.clone()));
        }
        if let (Some(o), Some(n)) = (&src.job, &cv.job) {
            swaps.push((o.clone(), n.clone()));
        }
        if !src.file.is_empty() {
            swaps.push((url_encode(&src.file), url_encode(&cv.file)));
        }
        if !(src.gateway.is_empty() || src.gateway == cv.gateway) {
            let (o, n) = (&src.gateway, &cv.gateway);
            swaps.push((format!("gateway/{o}/"), format!("gateway/{n}/")));
            swaps.push((format!("gw%2B{o}%40"), format!("gw%2B{}%40", url_encode(n))));
            swaps.push((format!("gw%3D{o}%3E"), format!("gw%3D{}%3E", url_encode(n))));
        }
        let swaps = swaps
            .into_iter()
            .map(|(o, n)| {
                let finder = memchr::memmem::Finder::new(o.as_bytes()).into_owned();
                (o, n, finder)
            })
            .collect();
        Renderer {
            src,
            cv,
            off,
            swaps,
            party: [
                (src.number.clone(), url_encode(&cv.number)),
                (src.cid_num.clone(), url_encode(&cv.cid_num)),
                (url_encode(&src.cid_name), url_encode(&cv.cid_name)),
            ],
            gateway: url_encode(&cv.gateway),
            arg: url_encode(&cv.arg),
        }
    }

    /// One capture event for this call.
    pub(crate) fn render(&self, ev: &Event) -> Event {
        let (src, cv, off) = (self.src, self.cv, self.off);
        // Each header's new value is built once (cloning the event and then replacing every
        // value allocated each twice).
        let headers = ev
            .headers
            .iter()
            .map(|(k, v)| {
                let mut nv: std::borrow::Cow<'_, str> = std::borrow::Cow::Borrowed(v);
                for (o, n, f) in &self.swaps {
                    if f.find(nv.as_bytes()).is_some() {
                        nv = nv.replace(o.as_str(), n).into();
                    }
                }
                if is_party_header(k) {
                    for (o, n) in &self.party {
                        if !o.is_empty() && o != n && nv.contains(o.as_str()) {
                            nv = replace_token(&nv, o, n).into();
                        }
                    }
                }
                if k == "variable_sip_gateway_name" {
                    nv = self.gateway.as_str().into();
                }
                if (k == "API-Command-Argument" || k == "Job-Command-Arg") && !src.arg.is_empty() {
                    nv = self.arg.as_str().into();
                }
                if let Some(t) = shift_time(k, &nv, off) {
                    nv = t.into();
                }
                (k.clone(), nv.into_owned())
            })
            .collect();
        let mut out = Event {
            headers,
            body: ev.body.clone(),
        };
        // Dial-string variables: follow the new call's set, in the captured position. Most events
        // carry none of them, which one pass over the names tells without allocating.
        let has_dial_vars = out.headers.iter().any(|(k, _)| {
            k.strip_prefix("variable_")
                .is_some_and(|name| src.vars.iter().any(|(n, _)| n == name))
        });
        if has_dial_vars {
            // One pass: each captured dial variable takes the new call's (last) value or goes.
            // The new call's other variables then follow the kept one that came last in the
            // captured dial string (`variable_uuid` when none is kept).
            let mut anchor: Option<(usize, String)> = None;
            out.headers.retain_mut(|(name, value)| {
                let Some(k) = name.strip_prefix("variable_") else {
                    return true;
                };
                let Some(at) = src.vars.iter().rposition(|(n, _)| n == k) else {
                    return true;
                };
                match cv.vars.iter().rev().find(|(n, _)| n == k) {
                    Some((_, v)) => {
                        *value = url_encode(v);
                        if anchor.as_ref().is_none_or(|(last, _)| at > *last) {
                            anchor = Some((at, name.clone()));
                        }
                        true
                    }
                    None => false,
                }
            });
            let mut anchor = anchor.map(|(_, name)| name);
            for (k, v) in &cv.vars {
                if src.vars.iter().any(|(n, _)| n == k) {
                    continue;
                }
                let name = format!("variable_{k}");
                let value = url_encode(v);
                if out.set(&name, &value) {
                    continue;
                }
                let a = anchor.take().unwrap_or_else(|| "variable_uuid".into());
                out.insert_after(&a, &name, &value);
                anchor = Some(name);
            }
        }
        out
    }
}

/// What the runner does at a step.
#[derive(Clone, Debug)]
pub(crate) enum StepKind {
    /// Publish this (rendered) event.
    Ev(Event),
    /// The originate result: BACKGROUND_JOB (bgapi) or the api/response (api). Holds the
    /// rendered BACKGROUND_JOB template.
    Result(Event),
    /// Wait until uuid_kill.
    WaitKill,
    /// Close the originating connection abruptly and stop (FreeSWITCH died).
    Drop,
}

/// One step: wait `delay_ms` capture milliseconds (scaled) plus `extra`, then act.
#[derive(Clone, Debug)]
pub(crate) struct Step {
    pub delay_ms: u64,
    pub extra: std::time::Duration,
    pub kind: StepKind,
}

impl Step {
    pub fn event(&self) -> Option<&Event> {
        match &self.kind {
            StepKind::Ev(e) | StepKind::Result(e) => Some(e),
            _ => None,
        }
    }
    fn is(&self, name: &str, sub: &str) -> bool {
        matches!(&self.kind, StepKind::Ev(e) if e.name() == name && (sub.is_empty() || e.subclass() == sub))
    }
}

/// The call's events of a capture (by Unique-ID, plus its API originate/uuid_kill and
/// BACKGROUND_JOB events), rendered for the new call, as steps.
pub(crate) fn capture_steps(cap: &Capture, cv: &CallValues) -> Vec<Step> {
    let src = cap.source();
    let mut prev = None;
    let mut out = Vec::new();
    let renderer = Renderer::new(src, cv);
    // By reference: cloning every event of the capture for each call (all-events captures hold
    // other channels' events too) was most of the fake's work per call.
    for (ms, ev) in cap.events_ref() {
        let ms = *ms;
        let mine = ev.uuid() == Some(src.uuid.as_str())
            || ev.name() == "BACKGROUND_JOB"
            || (ev.name() == "API"
                && matches!(ev.get("API-Command"), Some("originate") | Some("uuid_kill")));
        if !mine {
            continue;
        }
        let delay_ms = prev.map(|p| ms.saturating_sub(p)).unwrap_or(0);
        prev = Some(ms);
        let r = renderer.render(ev);
        let kind = if r.name() == "BACKGROUND_JOB" {
            StepKind::Result(r)
        } else {
            StepKind::Ev(r)
        };
        out.push(Step {
            delay_ms,
            extra: Default::default(),
            kind,
        });
    }
    out
}

fn replace_cause(steps: &mut [Step], old: &str, new: &str) {
    if old == new {
        return;
    }
    let (oq, os) = cause_codes(old);
    let (nq, ns) = cause_codes(new);
    for s in steps.iter_mut() {
        if let StepKind::Ev(e) | StepKind::Result(e) = &mut s.kind {
            for (k, v) in e.headers.iter_mut() {
                *v = v.replace(old, new);
                match k.as_str() {
                    "variable_hangup_cause_q850" | "variable_sip_term_cause"
                        if *v == oq.to_string() =>
                    {
                        *v = nq.to_string()
                    }
                    "variable_sip_term_status" if *v == os.to_string() => *v = ns.to_string(),
                    "variable_proto_specific_hangup_cause" => {
                        *v = v.replace(&format!("sip%3A{os}"), &format!("sip%3A{ns}"))
                    }
                    "variable_sip_reason" => {
                        *v = v.replace(&format!("cause%3D{oq}%3B"), &format!("cause%3D{nq}%3B"))
                    }
                    _ => {}
                }
            }
        }
    }
}

/// The API event template (originate) from the T.38 capture, for captures recorded with a
/// filter that hid it.
fn api_originate_step(cv: &CallValues) -> Step {
    let cap = Capture::load("inbound-txfax-t38-ok");
    capture_steps(&cap, cv)
        .into_iter()
        .find(|s| s.is("API", ""))
        .map(|mut s| {
            s.delay_ms = 0;
            s
        })
        .expect("fakefs: API event template in inbound-txfax-t38-ok")
}

fn insert_api_before_result(steps: &mut Vec<Step>, cv: &CallValues) {
    if steps.iter().any(|s| s.is("API", "")) {
        return;
    }
    if let Some(p) = steps
        .iter()
        .position(|s| matches!(s.kind, StepKind::Result(_)))
    {
        steps.insert(p, api_originate_step(cv));
    }
}

/// Expands/cuts the `spandsp::txfaxpageresult` steps to `n` pages.
fn set_page_count(steps: &mut Vec<Step>, n: u32) {
    let idx: Vec<usize> = steps
        .iter()
        .enumerate()
        .filter(|(_, s)| s.is("CUSTOM", "spandsp::txfaxpageresult"))
        .map(|(i, _)| i)
        .collect();
    let Some(&first) = idx.first() else { return };
    let templates: Vec<Step> = idx.iter().map(|&i| steps[i].clone()).collect();
    let after_last = idx.last().map(|&i| i + 1).unwrap_or(first);
    let tail_delay_fix = if after_last < steps.len() {
        Some(steps[after_last].delay_ms)
    } else {
        None
    };
    for &i in idx.iter().rev() {
        steps.remove(i);
    }
    let mut new_pages = Vec::new();
    for p in 1..=n {
        let t = templates[((p - 1) as usize).min(templates.len() - 1)].clone();
        let mut s = t;
        if p > 1 && (p as usize) > templates.len() {
            s.delay_ms = templates.get(1).map(|t| t.delay_ms).unwrap_or(s.delay_ms);
        }
        if let StepKind::Ev(e) = &mut s.kind {
            e.set("fax-document-transferred-pages", &p.to_string());
        }
        new_pages.push(s);
    }
    let count = new_pages.len();
    for (k, s) in new_pages.into_iter().enumerate() {
        steps.insert(first + k, s);
    }
    if let Some(d) = tail_delay_fix {
        if let Some(s) = steps.get_mut(first + count) {
            s.delay_ms = d;
        }
    }
}

/// Fax outcome reported by the runner on spandsp events.
#[derive(Clone, Debug)]
pub(crate) struct FaxOutcome {
    pub success: bool,
    pub code: u32,
    pub transferred: u32,
    pub t38: T38,
    pub rate: u32,
    pub ecm: bool,
    /// `fax-encoding-name` to report; `None`: the capture's.
    pub encoding: Option<String>,
}

/// Steps and fax outcome for one leg running `script`. `pages`/`total` come from the TIFF.
pub(crate) fn leg_steps(
    script: &CallScript,
    cv: &CallValues,
    pages: u32,
) -> (Vec<Step>, FaxOutcome) {
    let ok = |p: &FaxParams| FaxOutcome {
        success: true,
        code: 0,
        transferred: p.pages.unwrap_or(pages),
        t38: p.t38,
        rate: p.rate,
        ecm: p.ecm,
        encoding: p.encoding.clone(),
    };
    let fail = |code: u32, t38: T38| FaxOutcome {
        success: false,
        code,
        transferred: 0,
        t38,
        rate: 14400,
        ecm: true,
        encoding: None,
    };
    match script {
        CallScript::FaxOk(p) | CallScript::Hang(p) => {
            let cap = match (p.t38 == T38::Negotiated, p.ring) {
                (true, true) => "inbound-txfax-t38-ok",
                (true, false) => "inbound-txfax-t38-ok-outbound-all-events",
                (false, _) => "inbound-txfax-g711-ok",
            };
            let mut steps = capture_steps(&Capture::load(cap), cv);
            insert_api_before_result(&mut steps, cv);
            let o = ok(p);
            set_page_count(&mut steps, o.transferred);
            if matches!(script, CallScript::Hang(_)) {
                let cut = steps
                    .iter()
                    .rposition(|s| s.is("CUSTOM", "spandsp::txfaxpageresult"))
                    .or_else(|| {
                        steps
                            .iter()
                            .position(|s| s.is("CUSTOM", "spandsp::txfaxnegociateresult"))
                    })
                    .map(|i| i + 1)
                    .unwrap_or(steps.len());
                steps.truncate(cut);
                steps.push(Step {
                    delay_ms: 0,
                    extra: Default::default(),
                    kind: StepKind::WaitKill,
                });
                let mut o = o;
                o.success = false;
                o.code = 49;
                return (steps, o);
            }
            (steps, o)
        }
        CallScript::DropAfter(pt) => {
            let (mut steps, o) = leg_steps(&CallScript::fax_ok(), cv, pages);
            let drop = Step {
                delay_ms: 0,
                extra: Default::default(),
                kind: StepKind::Drop,
            };
            let at = match pt {
                DropPoint::OnOriginate => Some(0),
                DropPoint::AfterAnswer => steps
                    .iter()
                    .position(|s| s.is("CHANNEL_ANSWER", ""))
                    .map(|i| i + 1),
                DropPoint::AfterPage(n) => steps
                    .iter()
                    .enumerate()
                    .filter(|(_, s)| s.is("CUSTOM", "spandsp::txfaxpageresult"))
                    .nth((*n as usize).saturating_sub(1))
                    .map(|(i, _)| i + 1),
                DropPoint::BeforeResult => steps
                    .iter()
                    .position(|s| s.is("CUSTOM", "spandsp::txfaxresult")),
            };
            steps.insert(at.unwrap_or(steps.len()), drop);
            (steps, o)
        }
        CallScript::Busy => (
            capture_steps(&Capture::load("inbound-originate-busy-486"), cv),
            fail(0, T38::Off),
        ),
        CallScript::Rejected(cause) => {
            let (cap, old) = match cause.as_str() {
                "UNALLOCATED_NUMBER" => {
                    ("inbound-txfax-rejected-by-socket-404", "UNALLOCATED_NUMBER")
                }
                _ => ("inbound-originate-rejected-603", "CALL_REJECTED"),
            };
            let mut steps = capture_steps(&Capture::load(cap), cv);
            replace_cause(&mut steps, old, cause);
            (steps, fail(0, T38::Off))
        }
        CallScript::NoAnswer(after) => {
            let mut steps = capture_steps(&Capture::load("inbound-originate-rejected-603"), cv);
            replace_cause(&mut steps, "CALL_REJECTED", "NO_ANSWER");
            if let Some(s) = steps.iter_mut().find(|s| s.is("CHANNEL_HANGUP", "")) {
                s.extra = *after;
            }
            (steps, fail(0, T38::Off))
        }
        CallScript::Unreachable => (
            capture_steps(&Capture::load("inbound-originate-gateway-unreachable"), cv),
            fail(0, T38::Off),
        ),
        CallScript::GatewayDown => (
            capture_steps(&Capture::load("inbound-originate-gateway-unregistered"), cv),
            fail(0, T38::Off),
        ),
        CallScript::InvalidGateway => (
            capture_steps(&Capture::load("inbound-originate-gateway-unknown"), cv),
            fail(0, T38::Off),
        ),
        CallScript::MidFaxHangup { after_pages, t38 } => {
            let cap = if *t38 {
                "inbound-txfax-t38-remote-hangup-midfax"
            } else {
                "inbound-txfax-g711-remote-hangup-midfax"
            };
            let mut steps = capture_steps(&Capture::load(cap), cv);
            if let Some(s) = steps.iter_mut().find(|s| s.is("CHANNEL_HANGUP", "")) {
                s.delay_ms = s.delay_ms.saturating_mul((*after_pages).max(1) as u64);
            }
            (
                steps,
                fail(49, if *t38 { T38::Negotiated } else { T38::Off }),
            )
        }
        CallScript::FileMissing => {
            let mut steps = capture_steps(&Capture::load("inbound-txfax-file-missing"), cv);
            insert_api_before_result(&mut steps, cv);
            (steps, fail(0, T38::Negotiated))
        }
        CallScript::NonFaxEndpoint => {
            let mut steps = capture_steps(&Capture::load("inbound-txfax-to-non-fax-endpoint"), cv);
            insert_api_before_result(&mut steps, cv);
            (steps, fail(2, T38::Refused))
        }
        CallScript::TrainingFailure => {
            let mut steps = capture_steps(&Capture::load("inbound-txfax-to-non-fax-endpoint"), cv);
            insert_api_before_result(&mut steps, cv);
            let neg = capture_steps(&Capture::load("inbound-txfax-t38-ok"), cv)
                .into_iter()
                .find(|s| s.is("CUSTOM", "spandsp::txfaxnegociateresult"))
                .expect("fakefs: negotiation template");
            let exec = steps
                .iter()
                .position(|s| s.is("CHANNEL_EXECUTE", ""))
                .unwrap_or(0);
            let at = steps
                .iter()
                .enumerate()
                .skip(exec)
                .find(|(_, s)| s.is("CODEC", ""))
                .map(|(i, _)| i + 1)
                .unwrap_or(exec + 1);
            steps.insert(at.min(steps.len()), neg);
            // The failure ends the fax soon after negotiation, not after the 60 s T0 timeout.
            if let Some(s) = steps.get_mut(at + 1) {
                s.delay_ms = 3000;
            }
            (steps, fail(6, T38::Negotiated))
        }
        CallScript::Silent => (Vec::new(), fail(0, T38::Off)),
    }
}

/// Steps after a `uuid_kill`: from CHANNEL_HANGUP on, like capture
/// `inbound-txfax-t38-local-kill-midfax` once answered, else like the 603 rejection.
pub(crate) fn kill_steps(answered: bool, cause: &str, cv: &CallValues) -> Vec<Step> {
    if answered {
        let mut steps = capture_steps(&Capture::load("inbound-txfax-t38-local-kill-midfax"), cv);
        let from = steps
            .iter()
            .position(|s| s.is("CHANNEL_HANGUP", ""))
            .unwrap_or(0);
        steps.drain(..from);
        replace_cause(&mut steps, "NORMAL_CLEARING", cause);
        steps.retain(|s| !matches!(s.kind, StepKind::Result(_)));
        steps
    } else {
        let mut steps = capture_steps(&Capture::load("inbound-originate-rejected-603"), cv);
        let from = steps
            .iter()
            .position(|s| s.is("CHANNEL_HANGUP", ""))
            .unwrap_or(0);
        steps.drain(..from);
        replace_cause(&mut steps, "CALL_REJECTED", cause);
        steps
    }
}

/// Applies the fax state to a call event at publish time: spandsp `fax-*` headers and the
/// mirrored `variable_fax_*` channel variables.
pub(crate) fn apply_fax(
    ev: &mut Event,
    o: &FaxOutcome,
    so_far: u32,
    total: u32,
    local: &str,
    remote: &str,
) {
    let sub = ev.subclass();
    let is_result = sub.ends_with("faxresult");
    let is_page = sub.ends_with("faxpageresult");
    let is_neg = sub.ends_with("faxnegociateresult");
    let set_if = |ev: &mut Event, k: &str, v: &str| {
        ev.set(k, &url_encode(v));
    };
    let ecm = if o.ecm { "on" } else { "off" };
    for k in ["fax-t38-status", "variable_fax_t38_status"] {
        set_if(ev, k, o.t38.as_str());
    }
    if o.t38 != T38::Refused || is_neg || is_page || is_result {
        for k in ["fax-transfer-rate", "variable_fax_transfer_rate"] {
            set_if(ev, k, &o.rate.to_string());
        }
        for k in ["fax-ecm-used", "variable_fax_ecm_used"] {
            set_if(ev, k, ecm);
        }
    }
    if let Some(enc) = &o.encoding {
        for k in ["fax-encoding-name", "variable_fax_encoding_name"] {
            if ev.get(k).is_some() {
                set_if(ev, k, enc);
            }
        }
    }
    for k in ["fax-local-station-id", "variable_fax_local_station_id"] {
        set_if(ev, k, local);
    }
    for k in ["fax-remote-station-id", "variable_fax_remote_station_id"] {
        if ev.get(k).is_some_and(|v| !v.is_empty()) {
            set_if(ev, k, remote);
        }
    }
    set_if(
        ev,
        "variable_fax_document_transferred_pages",
        &so_far.to_string(),
    );
    for k in [
        "fax-document-total-pages",
        "variable_fax_document_total_pages",
    ] {
        if ev.get(k).is_some_and(|v| v != "0") {
            set_if(ev, k, &total.to_string());
        }
    }
    if is_result {
        let text = super::scripts::result_text(o.code);
        let succ = if o.success { "1" } else { "0" };
        for (k, v) in [
            ("fax-success", succ.to_string()),
            ("fax-result-code", o.code.to_string()),
            ("fax-result-text", text.to_string()),
            ("fax-document-transferred-pages", so_far.to_string()),
        ] {
            set_if(ev, k, &v);
        }
    }
    if ev.get("variable_fax_result_code").is_some() {
        let text = super::scripts::result_text(o.code);
        set_if(
            ev,
            "variable_fax_success",
            if o.success { "1" } else { "0" },
        );
        set_if(ev, "variable_fax_result_code", &o.code.to_string());
        set_if(ev, "variable_fax_result_text", text);
    }
}
