//! GOfax.IP-compatible configuration (`gofax.conf` syntax and keys) plus fsfax's own keys.
//!
//! The file is git-config style INI read the way GOfax.IP's `gcfg` library reads it (see
//! [`syntax`] for the exact rules). Every GOfax.IP key keeps its meaning and default; fsfax adds
//! timeouts, peer filtering and failover keys in the same sections. Unlike GOfax.IP, every
//! problem in the file is reported at once, with its line, and [`Config::validate`] catches
//! settings that parse but cannot work (an unset spool, no gateway, `answerafter` in seconds).
//!
//! ```no_run
//! use fsfax::config::Config;
//! let config = Config::load(std::path::Path::new("/etc/fsfax.conf"))?;
//! for problem in config.validate() {
//!     eprintln!("{problem}");
//! }
//! # Ok::<(), fsfax::config::ConfigError>(())
//! ```

mod syntax;
mod values;

use std::collections::BTreeMap;
use std::fmt;
use std::io;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

pub use values::{
    DEFAULT_FAILOVER_CAUSES, DynamicConfigFailure, HANGUP_CAUSES, PeerNet, RecipientHeader,
    format_duration, parse_duration,
};

use syntax::{Item, tokenize};
use values::{
    check_hangup_cause, nearest, parse_bool, parse_dynamic_config_failure, parse_peers,
    parse_recipient_headers, parse_uint, quote, split_list,
};

/// Where fsfax looks for its configuration when `-c` is not given.
pub const DEFAULT_CONFIG_PATH: &str = "/etc/fsfax.conf";
/// GOfax.IP's path, used when [`DEFAULT_CONFIG_PATH`] does not exist (drop-in replacement).
pub const LEGACY_CONFIG_PATH: &str = "/etc/gofax.conf";

/// The configuration path to use without `-c`: `/etc/fsfax.conf`, or `/etc/gofax.conf` if only
/// that one exists.
pub fn default_config_path() -> PathBuf {
    let primary = Path::new(DEFAULT_CONFIG_PATH);
    let legacy = Path::new(LEGACY_CONFIG_PATH);
    if !primary.exists() && legacy.exists() {
        legacy.to_path_buf()
    } else {
        primary.to_path_buf()
    }
}

/// One table for every key: its section and name, its kind, how its value is shown in
/// `--check-config` and how it is parsed. [`KEYS`] (the names, by section, in the order
/// [`Config::effective_text`] prints them) is made from the same table.
macro_rules! key_table {
    ($($section:literal { $($name:literal : $kind:expr, $show:expr, $set:expr;)* })*) => {
        /// Every section and key fsfax accepts, in the order [`Config::effective_text`] prints
        /// them.
        pub const KEYS: &[(&str, &[&str])] = &[$(($section, &[$($name),*])),*];

        /// How each key is parsed and shown.
        const TABLE: &[Key] = &[$($(Key {
            section: $section,
            name: $name,
            kind: $kind,
            show: $show,
            set: $set,
        },)*)*];
    };
}

/// One configuration key.
struct Key {
    section: &'static str,
    name: &'static str,
    kind: Kind,
    /// The value(s) as they would be written in the file.
    show: fn(&Config) -> Vec<String>,
    /// Parses one value and stores it (`line` for warnings).
    set: fn(&mut Builder<'_>, &str, usize) -> Result<(), String>,
}

/// How a key is written.
enum Kind {
    /// `key = value`; set again, the last value wins.
    Value,
    /// Boolean: a bare key (no `=`) means `true`.
    Bool,
    /// May be repeated: each occurrence appends, a bare key clears the list (this function).
    List(fn(&mut Builder<'_>)),
}

fn key(section: &str, name: &str) -> Option<&'static Key> {
    TABLE
        .iter()
        .find(|k| k.section == section && k.name == name)
}

fn one(v: String) -> Vec<String> {
    vec![v]
}

fn path_text(p: &Path) -> String {
    quote(&p.to_string_lossy())
}

fn opt_path_text(p: &Option<PathBuf>) -> String {
    p.as_deref().map_or_else(|| quote(""), path_text)
}

fn dur(v: Duration) -> Vec<String> {
    one(format_duration(v))
}

fn ms(v: Duration) -> Vec<String> {
    one(v.as_millis().to_string())
}

fn list(v: &[String]) -> Vec<String> {
    v.iter().map(|x| quote(x)).collect()
}

key_table! {
    "freeswitch" {
        "socket": Kind::Value,
            |c| one(quote(&c.freeswitch.socket)),
            |b, v, _| {
                b.config.freeswitch.socket = v.into();
                Ok(())
            };
        "node": Kind::List(|b| b.config.freeswitch.nodes.clear()),
            |c| list(&c.freeswitch.nodes),
            |b, v, _| {
                b.config.freeswitch.nodes.push(v.into());
                Ok(())
            };
        "nodepassword": Kind::List(|b| b.config.freeswitch.node_passwords.clear()),
            |c| {
                c.freeswitch
                    .node_passwords
                    .iter()
                    .map(|(node, _)| format!("{node} ********"))
                    .collect()
            },
            |b, v, _| {
                let (node, password) = v.trim().split_once(char::is_whitespace).ok_or_else(|| {
                    format!("`{v}`: expected `<host:port> <password>`")
                })?;
                b.config
                    .freeswitch
                    .node_passwords
                    .push((node.to_owned(), password.trim().to_owned()));
                Ok(())
            };
        "nodeselection": Kind::Value,
            |c| one(c.freeswitch.node_selection.as_str().into()),
            |b, v, _| {
                b.config.freeswitch.node_selection = match v.trim() {
                    "order" => NodeSelection::Order,
                    "spread" => NodeSelection::Spread,
                    other => return Err(format!("`{other}`: expected `order` or `spread`")),
                };
                Ok(())
            };
        "spoolpath": Kind::Value,
            |c| one(opt_path_text(&c.freeswitch.spool_path)),
            |b, v, _| {
                b.config.freeswitch.spool_path = (!v.is_empty()).then(|| PathBuf::from(v));
                Ok(())
            };
        "password": Kind::Value,
            |c| match c.freeswitch.password.as_str() {
                "" => one(quote("")),
                _ => one("********".into()),
            },
            |b, v, _| {
                b.config.freeswitch.password = v.into();
                Ok(())
            };
        "gateway": Kind::List(|b| b.config.freeswitch.gateways.clear()),
            |c| list(&c.freeswitch.gateways),
            |b, v, _| {
                b.config.freeswitch.gateways.push(v.into());
                Ok(())
            };
        "ident": Kind::Value,
            |c| one(quote(&c.freeswitch.ident)),
            |b, v, _| {
                b.config.freeswitch.ident = v.into();
                Ok(())
            };
        "header": Kind::Value,
            |c| one(quote(&c.freeswitch.header)),
            |b, v, _| {
                b.config.freeswitch.header = v.into();
                Ok(())
            };
        "verbose": Kind::Bool,
            |c| one(c.freeswitch.verbose.to_string()),
            |b, v, _| {
                b.config.freeswitch.verbose = parse_bool(v)?;
                Ok(())
            };
        "softmodemfallback": Kind::Bool,
            |c| one(c.freeswitch.softmodem_fallback.to_string()),
            |b, v, _| {
                b.config.freeswitch.softmodem_fallback = parse_bool(v)?;
                Ok(())
            };
        "connecttimeout": Kind::Value,
            |c| dur(c.freeswitch.connect_timeout),
            |b, v, _| {
                b.config.freeswitch.connect_timeout = timeout(v)?;
                Ok(())
            };
        "commandtimeout": Kind::Value,
            |c| dur(c.freeswitch.command_timeout),
            |b, v, _| {
                b.config.freeswitch.command_timeout = timeout(v)?;
                Ok(())
            };
        "softmodemfallbackexpiry": Kind::Value,
            |c| {
                let expiry = c.freeswitch.softmodem_fallback_expiry;
                one(expiry.map_or_else(|| "never".into(), format_duration))
            },
            |b, v, _| {
                let never = v.trim().eq_ignore_ascii_case("never");
                b.config.freeswitch.softmodem_fallback_expiry = if never {
                    None
                } else {
                    Some(timeout(v).map_err(|e| format!("{e}, or `never`"))?)
                };
                Ok(())
            };
        "softmodemfallbackclearonsuccess": Kind::Bool,
            |c| one(c.freeswitch.softmodem_fallback_clear_on_success.to_string()),
            |b, v, _| {
                b.config.freeswitch.softmodem_fallback_clear_on_success = parse_bool(v)?;
                Ok(())
            };
        "fallbacklookuptimeout": Kind::Value,
            |c| dur(c.freeswitch.fallback_lookup_timeout),
            |b, v, _| {
                b.config.freeswitch.fallback_lookup_timeout = timeout(v)?;
                Ok(())
            };
    }
    "hylafax" {
        "spooldir": Kind::Value,
            |c| one(path_text(&c.hylafax.spooldir)),
            |b, v, _| {
                b.config.hylafax.spooldir = PathBuf::from(v);
                Ok(())
            };
        "modems": Kind::Value,
            |c| one(c.hylafax.modems.to_string()),
            |b, v, _| {
                b.config.hylafax.modems = uint32(v)?;
                Ok(())
            };
        "xferfaxlog": Kind::Value,
            |c| one(opt_path_text(&c.hylafax.xferfaxlog)),
            |b, v, _| {
                b.config.hylafax.xferfaxlog = opt_path(v);
                Ok(())
            };
    }
    "gofaxd" {
        "socket": Kind::Value,
            |c| one(quote(&c.gofaxd.socket)),
            |b, v, _| {
                b.config.gofaxd.socket = v.into();
                Ok(())
            };
        "enablet38": Kind::Bool,
            |c| one(c.gofaxd.enable_t38.to_string()),
            |b, v, _| {
                b.config.gofaxd.enable_t38 = parse_bool(v)?;
                Ok(())
            };
        "requestt38": Kind::Bool,
            |c| one(c.gofaxd.request_t38.to_string()),
            |b, v, _| {
                b.config.gofaxd.request_t38 = parse_bool(v)?;
                Ok(())
            };
        "recipientfromdiversionheader": Kind::Bool,
            |c| one(c.gofaxd.recipient_from_diversion_header.to_string()),
            |b, v, _| {
                b.config.gofaxd.recipient_from_diversion_header = parse_bool(v)?;
                Ok(())
            };
        "answerafter": Kind::Value,
            |c| ms(c.gofaxd.answer_after),
            |b, v, _| {
                b.config.gofaxd.answer_after = millis(v)?;
                Ok(())
            };
        "waittime": Kind::Value,
            |c| ms(c.gofaxd.wait_time),
            |b, v, _| {
                b.config.gofaxd.wait_time = millis(v)?;
                Ok(())
            };
        "dynamicconfig": Kind::Value,
            |c| one(opt_path_text(&c.gofaxd.dynamic_config)),
            |b, v, _| {
                b.config.gofaxd.dynamic_config = opt_path(v);
                Ok(())
            };
        "faxrcvdcmd": Kind::Value,
            |c| one(path_text(&c.gofaxd.faxrcvd_cmd)),
            |b, v, _| {
                // GOfax.IP: empty means the default.
                let cmd = opt_path(v).unwrap_or_else(|| PathBuf::from("bin/faxrcvd"));
                b.config.gofaxd.faxrcvd_cmd = cmd;
                Ok(())
            };
        "allocateinbounddevices": Kind::Bool,
            |c| one(c.gofaxd.allocate_inbound_devices.to_string()),
            |b, v, _| {
                b.config.gofaxd.allocate_inbound_devices = parse_bool(v)?;
                Ok(())
            };
        "allowedpeers": Kind::Value,
            |c| one(join(&c.gofaxd.allowed_peers)),
            |b, v, _| {
                b.config.gofaxd.allowed_peers = parse_peers(v)?;
                Ok(())
            };
        "maxinbound": Kind::Value,
            |c| one(c.gofaxd.max_inbound.to_string()),
            |b, v, _| {
                b.config.gofaxd.max_inbound = uint32(v)?;
                Ok(())
            };
        "rejectcause": Kind::Value,
            |c| one(c.gofaxd.reject_cause.to_string()),
            |b, v, _| {
                b.config.gofaxd.reject_cause = parse_uint(v, 699)
                    .ok()
                    .filter(|n| *n >= 400)
                    .and_then(|n| u16::try_from(n).ok())
                    .ok_or_else(|| {
                        format!("`{v}` is not a SIP rejection; use a response code from 400 to 699")
                    })?;
                Ok(())
            };
        "dynamicconfigtimeout": Kind::Value,
            |c| dur(c.gofaxd.dynamic_config_timeout),
            |b, v, _| {
                b.config.gofaxd.dynamic_config_timeout = timeout(v)?;
                Ok(())
            };
        "dynamicconfigfailure": Kind::Value,
            |c| one(c.gofaxd.dynamic_config_failure.to_string()),
            |b, v, _| {
                b.config.gofaxd.dynamic_config_failure = parse_dynamic_config_failure(v)?;
                Ok(())
            };
        "faxrcvdtimeout": Kind::Value,
            |c| dur(c.gofaxd.faxrcvd_timeout),
            |b, v, _| {
                b.config.gofaxd.faxrcvd_timeout = timeout(v)?;
                Ok(())
            };
        "maxcallduration": Kind::Value,
            |c| dur(c.gofaxd.max_call_duration),
            |b, v, _| {
                b.config.gofaxd.max_call_duration = timeout(v)?;
                Ok(())
            };
        "hangupafterresult": Kind::Value,
            |c| dur(c.gofaxd.hangup_after_result),
            |b, v, _| {
                b.config.gofaxd.hangup_after_result = parse_duration(v)?;
                Ok(())
            };
        "shutdowntimeout": Kind::Value,
            |c| dur(c.gofaxd.shutdown_timeout),
            |b, v, _| {
                b.config.gofaxd.shutdown_timeout = parse_duration(v)?;
                Ok(())
            };
        "recipientheaders": Kind::Value,
            |c| one(join(&c.gofaxd.recipient_headers)),
            |b, v, _| {
                b.config.gofaxd.recipient_headers = parse_recipient_headers(v)?;
                Ok(())
            };
        "metrics": Kind::Value,
            |c| one(quote(&c.gofaxd.metrics)),
            |b, v, _| {
                b.config.gofaxd.metrics = v.trim().into();
                Ok(())
            };
        "metricspeers": Kind::Value,
            |c| one(join(&c.gofaxd.metrics_peers)),
            |b, v, _| {
                b.config.gofaxd.metrics_peers = parse_peers(v)?;
                Ok(())
            };
    }
    "gofaxsend" {
        "enablet38": Kind::Bool,
            |c| one(c.gofaxsend.enable_t38.to_string()),
            |b, v, _| {
                b.config.gofaxsend.enable_t38 = parse_bool(v)?;
                Ok(())
            };
        "requestt38": Kind::Bool,
            |c| one(c.gofaxsend.request_t38.to_string()),
            |b, v, _| {
                b.config.gofaxsend.request_t38 = parse_bool(v)?;
                Ok(())
            };
        "faxnumber": Kind::Value,
            |c| one(quote(&c.gofaxsend.fax_number)),
            |b, v, _| {
                b.config.gofaxsend.fax_number = v.into();
                Ok(())
            };
        "callprefix": Kind::Value,
            |c| one(quote(&c.gofaxsend.call_prefix)),
            |b, v, _| {
                b.config.gofaxsend.call_prefix = v.into();
                Ok(())
            };
        "dynamicconfig": Kind::Value,
            |c| one(opt_path_text(&c.gofaxsend.dynamic_config)),
            |b, v, _| {
                b.config.gofaxsend.dynamic_config = opt_path(v);
                Ok(())
            };
        "disablev17afterretry": Kind::Value,
            |c| one(c.gofaxsend.disable_v17_after_retry.to_string()),
            |b, v, _| {
                b.config.gofaxsend.disable_v17_after_retry = retry_count(v)?;
                Ok(())
            };
        "disableecmafterretry": Kind::Value,
            |c| one(c.gofaxsend.disable_ecm_after_retry.to_string()),
            |b, v, _| {
                b.config.gofaxsend.disable_ecm_after_retry = retry_count(v)?;
                Ok(())
            };
        "cidname": Kind::Value,
            |c| one(quote(c.gofaxsend.cid_name.as_str())),
            |b, v, _| {
                b.config.gofaxsend.cid_name = CidName::from(v);
                Ok(())
            };
        "failedresponse": Kind::List(|b| b.config.gofaxsend.failed_response.clear()),
            |c| list(&c.gofaxsend.failed_response),
            |b, v, line| {
                let causes = b.causes("failedresponse", v, line);
                b.config.gofaxsend.failed_response.extend(causes);
                Ok(())
            };
        "failovercauses": Kind::List(|b| {
                b.failover_seen = true;
                b.config.gofaxsend.failover_causes.clear();
            }),
            |c| list(&c.gofaxsend.failover_causes),
            |b, v, line| {
                if !b.failover_seen {
                    b.failover_seen = true;
                    b.config.gofaxsend.failover_causes.clear();
                }
                let causes = b.causes("failovercauses", v, line);
                b.config.gofaxsend.failover_causes.extend(causes);
                Ok(())
            };
        "originatetimeout": Kind::Value,
            |c| dur(c.gofaxsend.originate_timeout),
            |b, v, _| {
                b.config.gofaxsend.originate_timeout = timeout(v)?;
                Ok(())
            };
        "maxcallduration": Kind::Value,
            |c| dur(c.gofaxsend.max_call_duration),
            |b, v, _| {
                b.config.gofaxsend.max_call_duration = timeout(v)?;
                Ok(())
            };
        "dynamicconfigtimeout": Kind::Value,
            |c| dur(c.gofaxsend.dynamic_config_timeout),
            |b, v, _| {
                b.config.gofaxsend.dynamic_config_timeout = timeout(v)?;
                Ok(())
            };
        "tiffcptimeout": Kind::Value,
            |c| dur(c.gofaxsend.tiffcp_timeout),
            |b, v, _| {
                b.config.gofaxsend.tiffcp_timeout = timeout(v)?;
                Ok(())
            };
        "hangupafterresult": Kind::Value,
            |c| dur(c.gofaxsend.hangup_after_result),
            |b, v, _| {
                b.config.gofaxsend.hangup_after_result = parse_duration(v)?;
                Ok(())
            };
        "taglinefailure": Kind::Value,
            |c| one(c.gofaxsend.tag_line_failure.as_str().into()),
            |b, v, _| {
                b.config.gofaxsend.tag_line_failure = TagLineFailure::parse(v)?;
                Ok(())
            };
    }
}

/// The whole configuration: one struct per INI section.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Config {
    /// `[freeswitch]`: the inbound Event Socket and call defaults.
    pub freeswitch: FreeSwitchSection,
    /// `[hylafax]`: the spool and virtual modems.
    pub hylafax: HylafaxSection,
    /// `[gofaxd]`: the receive daemon (fsfaxd).
    pub gofaxd: GofaxdSection,
    /// `[gofaxsend]`: the send command (fsfaxsend).
    pub gofaxsend: GofaxsendSection,
    /// Where the values came from: file, line of each key, warnings found while parsing.
    pub source: Source,
}

/// Where a [`Config`] was read from.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Source {
    /// The file (as given to [`Config::load`] or [`Config::parse`]).
    pub path: PathBuf,
    /// Line of the last occurrence of each key set in the file, keyed `"section.key"`.
    pub key_lines: BTreeMap<String, usize>,
    /// Warnings found while parsing (a repeated single-valued key, an unknown hangup cause).
    /// [`Config::validate`] returns them too.
    pub warnings: Vec<Problem>,
}

/// `[freeswitch]`.
#[derive(Debug, Clone, PartialEq)]
pub struct FreeSwitchSection {
    /// `socket`: `host:port` of FreeSWITCH's inbound Event Socket (GOfax.IP: no default): the
    /// first node. fsfaxd's own connection (the fallback list, recovery) uses this one.
    pub socket: String,
    /// `node` (fsfax, repeatable): further FreeSWITCH nodes fsfaxsend may send through, after
    /// `socket`, in order.
    pub nodes: Vec<String>,
    /// `nodepassword` (fsfax, repeatable, `<host:port> <password>`): a node's own `auth`
    /// password instead of `password`.
    pub node_passwords: Vec<(String, String)>,
    /// `nodeselection` (fsfax, default `order`): which node a send tries first.
    pub node_selection: NodeSelection,
    /// `spoolpath` (fsfax, default: `[hylafax] spooldir`): the HylaFAX spool's path as
    /// FreeSWITCH sees it (an NFS mount point on another host).
    pub spool_path: Option<PathBuf>,
    /// `password`: Event Socket `auth` password.
    pub password: String,
    /// `gateway` (repeatable): sofia gateway names for outbound calls, tried in order.
    pub gateways: Vec<String>,
    /// `ident`: default TSI (send) and CSI (receive), becomes `fax_ident`.
    pub ident: String,
    /// `header`: default page header for sending, becomes `fax_header`.
    pub header: String,
    /// `verbose`: sets `fax_verbose` on outbound calls.
    pub verbose: bool,
    /// `softmodemfallback`: remember stations that failed with T.38 (mod_db) and use audio.
    pub softmodem_fallback: bool,
    /// `connecttimeout` (fsfax, default 5s): TCP connect plus `auth` to the Event Socket.
    pub connect_timeout: Duration,
    /// `commandtimeout` (fsfax, default 10s): wait for the reply to one ESL command.
    pub command_timeout: Duration,
    /// `softmodemfallbackexpiry` (fsfax, default 7 days; `never` = `None`): forget a fallback
    /// entry after this. Not `never` by default: one bad call must not pin a station to audio
    /// for good.
    pub softmodem_fallback_expiry: Option<Duration>,
    /// `softmodemfallbackclearonsuccess` (fsfax, default false): drop a station's fallback entry
    /// after a successful T.38 fax with it.
    pub softmodem_fallback_clear_on_success: bool,
    /// `fallbacklookuptimeout` (fsfax, default 2s): a fallback lookup that takes longer is
    /// treated as "no entry" so a call is never held up by mod_db.
    pub fallback_lookup_timeout: Duration,
}

/// `[freeswitch] nodeselection`: the node a send tries first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum NodeSelection {
    /// The nodes in the order they are listed; the next only when one cannot take the call.
    #[default]
    Order,
    /// Jobs spread over the nodes, stable per job (a retry starts on the same node).
    Spread,
}

impl NodeSelection {
    /// The value as written in the file.
    pub fn as_str(self) -> &'static str {
        match self {
            NodeSelection::Order => "order",
            NodeSelection::Spread => "spread",
        }
    }
}

/// One FreeSWITCH node as fsfaxsend reaches it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Node {
    /// `host:port` of its inbound Event Socket.
    pub socket: String,
    /// Its `auth` password.
    pub password: String,
}

impl FreeSwitchSection {
    /// Every node (`socket`, then each `node`), in the configured order, each with its
    /// password.
    pub fn node_list(&self) -> Vec<Node> {
        std::iter::once(&self.socket)
            .chain(&self.nodes)
            .map(|socket| Node {
                socket: socket.clone(),
                password: self.password_of(socket),
            })
            .collect()
    }

    /// The `auth` password of the node at `socket`: its `nodepassword`, else `password`.
    pub fn password_of(&self, socket: &str) -> String {
        self.node_passwords
            .iter()
            .rev()
            .find(|(n, _)| n == socket)
            .map_or_else(|| self.password.clone(), |(_, p)| p.clone())
    }

    /// `path` (in the HylaFAX spool at `spooldir`) as FreeSWITCH sees it: under
    /// [`spool_path`](Self::spool_path) when set, unchanged otherwise or outside the spool.
    pub fn to_switch_path(&self, spooldir: &Path, path: &Path) -> PathBuf {
        match (&self.spool_path, path.strip_prefix(spooldir)) {
            (Some(theirs), Ok(rel)) => theirs.join(rel),
            _ => path.to_path_buf(),
        }
    }

    /// A path FreeSWITCH reported (under [`spool_path`](Self::spool_path)) as it is here.
    pub fn from_switch_path(&self, spooldir: &Path, path: &Path) -> PathBuf {
        match &self.spool_path {
            Some(theirs) => match path.strip_prefix(theirs) {
                Ok(rel) => spooldir.join(rel),
                Err(_) => path.to_path_buf(),
            },
            None => path.to_path_buf(),
        }
    }
}

impl Default for FreeSwitchSection {
    fn default() -> Self {
        FreeSwitchSection {
            socket: String::new(),
            nodes: Vec::new(),
            node_passwords: Vec::new(),
            node_selection: NodeSelection::Order,
            spool_path: None,
            password: String::new(),
            gateways: Vec::new(),
            ident: String::new(),
            header: String::new(),
            verbose: false,
            softmodem_fallback: false,
            connect_timeout: Duration::from_secs(5),
            command_timeout: Duration::from_secs(10),
            softmodem_fallback_expiry: Some(DEFAULT_FALLBACK_EXPIRY),
            softmodem_fallback_clear_on_success: false,
            fallback_lookup_timeout: Duration::from_secs(2),
        }
    }
}

/// `[hylafax]`.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct HylafaxSection {
    /// `spooldir`: the HylaFAX spool root; empty if unset (an error for both programs).
    pub spooldir: PathBuf,
    /// `modems`: number of virtual modems fsfaxd creates (`freeswitch0` ...).
    pub modems: u32,
    /// `xferfaxlog`: transfer log, relative paths are under the spool; `None` = no records.
    pub xferfaxlog: Option<PathBuf>,
}

/// `[gofaxd]`.
#[derive(Debug, Clone, PartialEq)]
pub struct GofaxdSection {
    /// `socket`: listen address for FreeSWITCH's outbound-socket connections.
    pub socket: String,
    /// `enablet38`: `fax_enable_t38` on receive.
    pub enable_t38: bool,
    /// `requestt38`: `fax_enable_t38_request` on receive (we send the T.38 re-INVITE).
    pub request_t38: bool,
    /// `recipientfromdiversionheader`: take the recipient from `recipient_headers` instead of To.
    pub recipient_from_diversion_header: bool,
    /// `answerafter` (milliseconds in the file): ring this long before answering; zero = at once.
    pub answer_after: Duration,
    /// `waittime` (milliseconds in the file): silence after answering, before `rxfax`.
    pub wait_time: Duration,
    /// `dynamicconfig`: incoming-call DynamicConfig program; `None` = off.
    pub dynamic_config: Option<PathBuf>,
    /// `faxrcvdcmd`: program run after each reception (default `bin/faxrcvd`, under the spool).
    pub faxrcvd_cmd: PathBuf,
    /// `allocateinbounddevices`: every reception takes a free virtual modem (always, in fsfax);
    /// when this is true and none is free, the call is rejected (503) instead of being received
    /// under the overflow name `freeswitch-overflow`.
    pub allocate_inbound_devices: bool,
    /// `allowedpeers` (fsfax, default `127.0.0.1, ::1`): who may connect to `socket`.
    pub allowed_peers: Vec<PeerNet>,
    /// `maxinbound` (fsfax, default 0 = no cap): concurrent receptions; more are rejected.
    pub max_inbound: u32,
    /// `rejectcause` (fsfax, default 404 as GOfax.IP): SIP response for a DynamicConfig reject.
    pub reject_cause: u16,
    /// `dynamicconfigtimeout` (fsfax, default 10s): DynamicConfig is killed after this.
    pub dynamic_config_timeout: Duration,
    /// `dynamicconfigfailure` (fsfax, default accept): what a failed DynamicConfig means.
    pub dynamic_config_failure: DynamicConfigFailure,
    /// `faxrcvdtimeout` (fsfax, default 300s): faxrcvd is killed after this.
    pub faxrcvd_timeout: Duration,
    /// `maxcallduration` (fsfax, default 1h): a reception is hung up after this.
    pub max_call_duration: Duration,
    /// `hangupafterresult` (fsfax, default 5s): wait for the hangup after the fax result.
    pub hangup_after_result: Duration,
    /// `shutdowntimeout` (fsfax, default 300s): on SIGTERM, calls in progress get this long.
    pub shutdown_timeout: Duration,
    /// `recipientheaders` (fsfax, default diversion, history-info, p-called-party-id, to):
    /// headers tried in order when `recipient_from_diversion_header` is on.
    pub recipient_headers: Vec<RecipientHeader>,
    /// `metrics` (fsfax, default empty = off): `host:port` of the HTTP endpoint for
    /// Prometheus (`/metrics`), the health checks (`/healthz`, `/readyz`) and `fsfaxd status`.
    pub metrics: String,
    /// `metricspeers` (fsfax, default `127.0.0.1, ::1`): who may connect to `metrics`.
    pub metrics_peers: Vec<PeerNet>,
}

impl Default for GofaxdSection {
    fn default() -> Self {
        GofaxdSection {
            socket: String::new(),
            enable_t38: false,
            request_t38: false,
            recipient_from_diversion_header: false,
            answer_after: Duration::ZERO,
            wait_time: Duration::ZERO,
            dynamic_config: None,
            faxrcvd_cmd: PathBuf::from("bin/faxrcvd"),
            allocate_inbound_devices: false,
            allowed_peers: default_peers(),
            max_inbound: 0,
            reject_cause: 404,
            dynamic_config_timeout: Duration::from_secs(10),
            dynamic_config_failure: DynamicConfigFailure::Accept,
            faxrcvd_timeout: Duration::from_secs(300),
            max_call_duration: Duration::from_secs(3600),
            hangup_after_result: Duration::from_secs(5),
            shutdown_timeout: Duration::from_secs(300),
            recipient_headers: RecipientHeader::ALL.to_vec(),
            metrics: String::new(),
            metrics_peers: default_peers(),
        }
    }
}

fn default_peers() -> Vec<PeerNet> {
    vec![
        PeerNet {
            addr: IpAddr::from([127, 0, 0, 1]),
            prefix_len: 32,
        },
        PeerNet {
            addr: IpAddr::from([0u16, 0, 0, 0, 0, 0, 0, 1]),
            prefix_len: 128,
        },
    ]
}

/// `[gofaxsend]`.
#[derive(Debug, Clone, PartialEq)]
pub struct GofaxsendSection {
    /// `enablet38`: `fax_enable_t38` on send.
    pub enable_t38: bool,
    /// `requestt38`: `fax_enable_t38_request` on send.
    pub request_t38: bool,
    /// `faxnumber`: default caller-ID number.
    pub fax_number: String,
    /// `callprefix`: prepended to the dialled number.
    pub call_prefix: String,
    /// `dynamicconfig`: outgoing DynamicConfig program; `None` = off.
    pub dynamic_config: Option<PathBuf>,
    /// `disablev17afterretry`: from this try on, V.17 is off; 0 = never. (GOfax.IP silently
    /// ignored a non-number here; fsfax reports it.)
    pub disable_v17_after_retry: u32,
    /// `disableecmafterretry`: from this try on, ECM is off; 0 = never.
    pub disable_ecm_after_retry: u32,
    /// `cidname`: caller-ID name: `sender`, `number`, `cidnum` or literal text; empty if absent
    /// (GOfax.IP's behaviour, not its README's).
    pub cid_name: CidName,
    /// `failedresponse` (repeatable, or comma list): hangup causes that fail the job for good.
    pub failed_response: Vec<String>,
    /// `failovercauses` (fsfax, repeatable or comma list; default [`DEFAULT_FAILOVER_CAUSES`]):
    /// hangup causes after which the next gateway is tried.
    pub failover_causes: Vec<String>,
    /// `originatetimeout` (fsfax, default 90s): wait for the originate to be answered.
    pub originate_timeout: Duration,
    /// `maxcallduration` (fsfax, default 1h): a transmission is hung up after this.
    pub max_call_duration: Duration,
    /// `dynamicconfigtimeout` (fsfax, default 10s): DynamicConfigOutgoing is killed after this.
    pub dynamic_config_timeout: Duration,
    /// `tiffcptimeout` (fsfax, default 60s): document conversion is killed after this.
    pub tiffcp_timeout: Duration,
    /// `hangupafterresult` (fsfax, default 5s): wait for the hangup after the fax result.
    pub hangup_after_result: Duration,
    /// `taglinefailure` (fsfax, `send` or `retry`, default `send`): what a job does when its
    /// configured tag line cannot be imaged (bad font, unreadable or unsupported document).
    pub tag_line_failure: TagLineFailure,
}

/// What to do with a job whose tag line cannot be imaged.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TagLineFailure {
    /// Send the document without tag line (and say so in the log and the job's status), as
    /// HylaFAX's faxsend does when its TagLineFont is unusable.
    #[default]
    Send,
    /// Requeue the job (`returned:0`) until an admin fixes the font or the document.
    Retry,
}

impl TagLineFailure {
    /// The word as written in the configuration.
    pub fn as_str(self) -> &'static str {
        match self {
            TagLineFailure::Send => "send",
            TagLineFailure::Retry => "retry",
        }
    }

    /// `send` or `retry`, in any case.
    fn parse(v: &str) -> Result<TagLineFailure, String> {
        match v.trim().to_ascii_lowercase().as_str() {
            "send" => Ok(TagLineFailure::Send),
            "retry" => Ok(TagLineFailure::Retry),
            _ => Err(format!("{v:?} is neither send nor retry")),
        }
    }
}

impl Default for GofaxsendSection {
    fn default() -> Self {
        GofaxsendSection {
            enable_t38: false,
            request_t38: false,
            fax_number: String::new(),
            call_prefix: String::new(),
            dynamic_config: None,
            disable_v17_after_retry: 0,
            disable_ecm_after_retry: 0,
            cid_name: CidName::default(),
            failed_response: Vec::new(),
            failover_causes: DEFAULT_FAILOVER_CAUSES
                .iter()
                .map(|c| c.to_string())
                .collect(),
            originate_timeout: Duration::from_secs(90),
            max_call_duration: Duration::from_secs(3600),
            dynamic_config_timeout: Duration::from_secs(10),
            tiffcp_timeout: Duration::from_secs(60),
            hangup_after_result: Duration::from_secs(5),
            tag_line_failure: TagLineFailure::Send,
        }
    }
}

/// How bad a [`Problem`] is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Severity {
    /// Works, but probably not as meant.
    Warning,
    /// Cannot work; the program refuses to start.
    Error,
}

impl fmt::Display for Severity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Severity::Warning => "warning",
            Severity::Error => "error",
        })
    }
}

/// One thing wrong with a configuration. Displays as
/// `FILE:LINE: error: [section] key: message`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// Error or warning.
    pub severity: Severity,
    /// The configuration file.
    pub file: PathBuf,
    /// 1-based line, if the problem belongs to one.
    pub line: Option<usize>,
    /// Section name (lower case), if any.
    pub section: Option<String>,
    /// Key name as written in the file, if any.
    pub key: Option<String>,
    /// What is wrong and what is allowed.
    pub message: String,
}

impl Problem {
    /// True for [`Severity::Error`].
    pub fn is_error(&self) -> bool {
        self.severity == Severity::Error
    }
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file.display())?;
        if let Some(line) = self.line {
            write!(f, ":{line}")?;
        }
        write!(f, ": {}: ", self.severity)?;
        match (&self.section, &self.key) {
            (Some(s), Some(k)) => write!(f, "[{s}] {k}: ")?,
            (Some(s), None) => write!(f, "[{s}]: ")?,
            (None, Some(k)) => write!(f, "{k}: ")?,
            (None, None) => {}
        }
        f.write_str(&self.message)
    }
}

/// Every problem found in a configuration file that could not be used (at least one error;
/// warnings found on the way are included).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigErrors {
    /// Errors and warnings in file order.
    pub problems: Vec<Problem>,
}

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, p) in self.problems.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{p}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

/// Why [`Config::load`] failed.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read configuration file {}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: io::Error,
    },
    /// The file was read but has errors.
    #[error(transparent)]
    Invalid(#[from] ConfigErrors),
}

impl ConfigError {
    /// The problems to show, one per line (a read error becomes a single problem).
    pub fn problems(&self) -> Vec<Problem> {
        match self {
            ConfigError::Read { path, source } => vec![Problem {
                severity: Severity::Error,
                file: path.clone(),
                line: None,
                section: None,
                key: None,
                message: format!("cannot read configuration file: {source}"),
            }],
            ConfigError::Invalid(errors) => errors.problems.clone(),
        }
    }
}

/// Which program a [`Config::validate_for`] check is for: some settings only matter to one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Program {
    /// fsfaxd; send-side gaps are warnings (`fsfaxd --check-config` checks the whole file).
    Receive,
    /// fsfaxsend; receive-side keys are not checked, send-side gaps are errors.
    Send,
}

impl Config {
    /// Reads and parses `path`. Invalid UTF-8 is replaced (with a warning), as GOfax.IP passes
    /// bytes through.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let bytes = std::fs::read(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let (text, bad_utf8) = match String::from_utf8(bytes) {
            Ok(text) => (text, None),
            Err(e) => {
                let valid = e.utf8_error().valid_up_to();
                let bytes = e.into_bytes();
                let line = bytes[..valid].iter().filter(|b| **b == b'\n').count() + 1;
                (String::from_utf8_lossy(&bytes).into_owned(), Some(line))
            }
        };
        let utf8_warning = bad_utf8.map(|line| Problem {
            severity: Severity::Warning,
            file: path.to_path_buf(),
            line: Some(line),
            section: None,
            key: None,
            message: "invalid UTF-8; bytes replaced with U+FFFD".into(),
        });
        match Config::parse(&text, path) {
            Ok(mut config) => {
                config.source.warnings.extend(utf8_warning);
                Ok(config)
            }
            Err(mut errors) => {
                errors.problems.extend(utf8_warning);
                Err(errors.into())
            }
        }
    }

    /// Parses configuration text; `source` names the file in problems. Reports every syntax
    /// error, unknown section or key and bad value at once.
    pub fn parse(text: &str, source: &Path) -> Result<Config, ConfigErrors> {
        let (items, syntax_errors) = tokenize(text);
        let mut b = Builder {
            config: Config::default(),
            problems: Vec::new(),
            file: source,
            failover_seen: false,
        };
        b.config.source.path = source.to_path_buf();
        for e in syntax_errors {
            b.problem(Severity::Error, e.line, None, None, e.message);
        }
        let mut current = Current::NotYet;
        for item in items {
            match item {
                Item::Section {
                    name,
                    subsection,
                    line,
                } => current = b.section(&name, subsection.as_deref(), line),
                Item::Entry { name, value, line } => match current {
                    Current::NotYet => b.problem(
                        Severity::Error,
                        line,
                        None,
                        Some(&name),
                        "key outside any section; put it under [freeswitch], [hylafax], \
                         [gofaxd] or [gofaxsend]"
                            .into(),
                    ),
                    // The section header was already reported; its keys would only add noise.
                    Current::Unknown => {}
                    Current::Known(section) => b.entry(section, &name, value.as_deref(), line),
                },
            }
        }
        b.problems.sort_by_key(|p| p.line);
        if b.problems.iter().any(Problem::is_error) {
            return Err(ConfigErrors {
                problems: b.problems,
            });
        }
        b.config.source.warnings = b.problems;
        Ok(b.config)
    }

    /// Semantic checks for fsfaxd (and `--check-config`): see [`Config::validate_for`].
    pub fn validate(&self) -> Vec<Problem> {
        self.validate_for(Program::Receive)
    }

    /// Semantic checks: settings that parse but cannot work (errors) or look mistaken
    /// (warnings). Includes the warnings found while parsing. Checks the file system (spool).
    pub fn validate_for(&self, program: Program) -> Vec<Problem> {
        let mut out = self.source.warnings.clone();
        let mut add = |severity, section: &str, key: &str, message: String| {
            out.push(Problem {
                severity,
                file: self.source.path.clone(),
                line: self.line_of(section, key),
                section: Some(section.into()),
                key: Some(key.into()),
                message,
            });
        };
        // Send-side gaps stop fsfaxsend, but only warn in fsfaxd, which does not send.
        let send_gap = match program {
            Program::Receive => Severity::Warning,
            Program::Send => Severity::Error,
        };

        let spool = &self.hylafax.spooldir;
        if spool.as_os_str().is_empty() {
            add(
                Severity::Error,
                "hylafax",
                "spooldir",
                "not set; set it to the HylaFAX spool, e.g. /var/spool/hylafax".into(),
            );
        } else if !spool.is_dir() {
            let what = if spool.exists() {
                "is not a directory"
            } else {
                "does not exist"
            };
            add(
                Severity::Error,
                "hylafax",
                "spooldir",
                format!("{} {what}", spool.display()),
            );
        }

        let fs = &self.freeswitch;
        if fs.socket.is_empty() {
            let severity = if program == Program::Receive && !fs.softmodem_fallback {
                Severity::Warning
            } else {
                Severity::Error
            };
            add(
                severity,
                "freeswitch",
                "socket",
                "not set; fsfaxsend (and the softmodem fallback) need FreeSWITCH's event \
                 socket, e.g. 127.0.0.1:8021"
                    .into(),
            );
        } else {
            let all: Vec<&String> = std::iter::once(&fs.socket).chain(&fs.nodes).collect();
            for (i, node) in all.iter().enumerate() {
                let key = if i == 0 { "socket" } else { "node" };
                if let Err(e) = check_socket_address(node) {
                    add(Severity::Error, "freeswitch", key, e);
                } else if all[..i].contains(node) {
                    add(
                        Severity::Error,
                        "freeswitch",
                        key,
                        format!("{node} is listed twice"),
                    );
                }
            }
        }
        let all: Vec<&String> = std::iter::once(&fs.socket).chain(&fs.nodes).collect();
        for (node, password) in &fs.node_passwords {
            if !all.contains(&node) {
                add(
                    Severity::Error,
                    "freeswitch",
                    "nodepassword",
                    format!(
                        "{node} is not a node (neither `socket` nor a `node` line); the nodes \
                         are: {}",
                        all.iter()
                            .map(|n| n.as_str())
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                );
            } else if password.is_empty() {
                add(
                    Severity::Error,
                    "freeswitch",
                    "nodepassword",
                    format!("{node}: empty password"),
                );
            }
        }
        if let Some(p) = &fs.spool_path {
            if !p.is_absolute() {
                add(
                    Severity::Error,
                    "freeswitch",
                    "spoolpath",
                    format!(
                        "{} is not an absolute path (the spool as FreeSWITCH sees it, e.g. \
                         /mnt/hylafax)",
                        p.display()
                    ),
                );
            }
        }
        if fs.gateways.is_empty() {
            add(
                send_gap,
                "freeswitch",
                "gateway",
                "no gateway; every fax sent will fail (add `gateway = <sofia gateway name>`)"
                    .into(),
            );
        }
        for gw in &fs.gateways {
            if gw.is_empty() || gw.contains(|c: char| c.is_whitespace() || ",|/".contains(c)) {
                add(
                    Severity::Error,
                    "freeswitch",
                    "gateway",
                    format!(
                        "`{gw}` is not a gateway name (no spaces, `,`, `|` or `/`); \
                         repeat the key for each gateway"
                    ),
                );
            }
        }

        if self.hylafax.modems == 0 {
            add(
                Severity::Warning,
                "hylafax",
                "modems",
                "0 virtual modems: HylaFAX has no modem to send with".into(),
            );
        }

        if program == Program::Receive {
            self.validate_receive(&mut add);
        }
        out
    }

    fn validate_receive(&self, add: &mut impl FnMut(Severity, &str, &str, String)) {
        let d = &self.gofaxd;
        if d.socket.is_empty() {
            add(
                Severity::Error,
                "gofaxd",
                "socket",
                "not set; fsfaxd listens here for FreeSWITCH, e.g. 127.0.0.1:8022".into(),
            );
        } else if let Err(e) = check_listen_address(&d.socket) {
            add(Severity::Error, "gofaxd", "socket", e);
        } else if !is_loopback_address(&d.socket)
            && self.line_of("gofaxd", "allowedpeers").is_none()
        {
            add(
                Severity::Warning,
                "gofaxd",
                "socket",
                format!(
                    "`{}` is reachable from other hosts, but `allowedpeers` is the default \
                     (127.0.0.1, ::1): a FreeSWITCH elsewhere will be refused; set allowedpeers",
                    d.socket
                ),
            );
        }
        if !d.metrics.is_empty() {
            if let Err(e) = check_listen_address(&d.metrics) {
                add(Severity::Error, "gofaxd", "metrics", e);
            } else if !is_loopback_address(&d.metrics)
                && self.line_of("gofaxd", "metricspeers").is_none()
            {
                add(
                    Severity::Warning,
                    "gofaxd",
                    "metrics",
                    format!(
                        "`{}` is reachable from other hosts, but `metricspeers` is the default \
                         (127.0.0.1, ::1): a Prometheus elsewhere will be refused; set metricspeers",
                        d.metrics
                    ),
                );
            }
        }
        for (key, value) in [("answerafter", d.answer_after), ("waittime", d.wait_time)] {
            if !value.is_zero() && value < Duration::from_millis(100) {
                add(
                    Severity::Warning,
                    "gofaxd",
                    key,
                    format!(
                        "{} ms is very short: the value is in milliseconds, not seconds",
                        value.as_millis()
                    ),
                );
            }
        }
    }

    fn line_of(&self, section: &str, key: &str) -> Option<usize> {
        self.source
            .key_lines
            .get(&format!("{section}.{key}"))
            .copied()
    }

    /// Resolves a path from the configuration the way fsfax uses it: absolute paths as they
    /// are, relative ones under the spool (GOfax.IP used the working directory, which differs
    /// between programs).
    pub fn spool_path(&self, path: &Path) -> PathBuf {
        if path.is_absolute() {
            path.to_path_buf()
        } else {
            self.hylafax.spooldir.join(path)
        }
    }

    /// The effective configuration in the file's own syntax: every key, defaults included,
    /// the password shown as `********`. Parsing it gives the same configuration back
    /// (except the password).
    pub fn effective_text(&self) -> String {
        let mut out = String::new();
        out.push_str(&format!(
            "; effective configuration read from {}\n",
            self.source.path.display()
        ));
        for (section, keys) in KEYS {
            out.push_str(&format!("\n[{section}]\n"));
            for key in *keys {
                let values = self.value_text(section, key);
                if is_multi(section, key) && values.is_empty() {
                    out.push_str(&format!("{key}\n"));
                }
                for value in values {
                    out.push_str(&format!("{key} = {value}\n"));
                }
            }
        }
        out
    }

    /// The value(s) of one key as they would be written in the file.
    fn value_text(&self, section: &str, name: &str) -> Vec<String> {
        key(section, name).map_or_else(Vec::new, |k| (k.show)(self))
    }
}

fn join<T: fmt::Display>(items: &[T]) -> String {
    items
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

fn is_multi(section: &str, name: &str) -> bool {
    key(section, name).is_some_and(|k| matches!(k.kind, Kind::List(_)))
}

fn is_bool(section: &str, name: &str) -> bool {
    key(section, name).is_some_and(|k| matches!(k.kind, Kind::Bool))
}

/// `host:port` or `[v6]:port` with a port from 1 to 65535.
fn check_socket_address(s: &str) -> Result<(), String> {
    let bad = || format!("`{s}` is not host:port (IPv6 as [::1]:8021)");
    let (host, port) = s.rsplit_once(':').ok_or_else(bad)?;
    let port_ok = port.parse::<u16>().is_ok_and(|p| p != 0);
    let host_ok = if let Some(v6) = host.strip_prefix('[') {
        v6.strip_suffix(']')
            .is_some_and(|a| a.parse::<std::net::Ipv6Addr>().is_ok())
    } else {
        !host.contains(':') && !host.contains(char::is_whitespace)
    };
    if port_ok && host_ok {
        Ok(())
    } else {
        Err(bad())
    }
}

/// A listen address: as [`check_socket_address`], but port 0 (the OS picks a free port, logged
/// at start-up) is allowed, which lets tests run many daemons at once without racing for ports.
fn check_listen_address(s: &str) -> Result<(), String> {
    match s.strip_suffix(":0") {
        Some(host) => check_socket_address(&format!("{host}:1"))
            .map_err(|_| format!("`{s}` is not host:port (IPv6 as [::1]:8021)")),
        None => check_socket_address(s),
    }
}

/// True if a listen address only accepts local connections.
fn is_loopback_address(s: &str) -> bool {
    let host = s.rsplit_once(':').map_or(s, |(h, _)| h);
    let host = host.trim_start_matches('[').trim_end_matches(']');
    host.eq_ignore_ascii_case("localhost") || host.parse::<IpAddr>().is_ok_and(|a| a.is_loopback())
}

enum Current {
    NotYet,
    Unknown,
    Known(&'static str),
}

struct Builder<'a> {
    config: Config,
    problems: Vec<Problem>,
    file: &'a Path,
    /// The first `failovercauses` line replaces the defaults; later ones append.
    failover_seen: bool,
}

impl Builder<'_> {
    fn problem(
        &mut self,
        severity: Severity,
        line: usize,
        section: Option<&str>,
        key: Option<&str>,
        message: String,
    ) {
        self.problems.push(Problem {
            severity,
            file: self.file.to_path_buf(),
            line: Some(line),
            section: section.map(str::to_string),
            key: key.map(str::to_string),
            message,
        });
    }

    fn section(&mut self, name: &str, subsection: Option<&str>, line: usize) -> Current {
        let lower = name.to_ascii_lowercase();
        let known = KEYS.iter().map(|(s, _)| *s).find(|s| *s == lower);
        match (known, subsection) {
            (Some(section), None) => Current::Known(section),
            (Some(section), Some(sub)) => {
                self.problem(
                    Severity::Error,
                    line,
                    Some(section),
                    None,
                    format!(
                        "subsections are not used: write `[{section}]`, not `[{name} \"{sub}\"]`"
                    ),
                );
                Current::Unknown
            }
            (None, _) => {
                let mut message = format!("unknown section `[{name}]`");
                if let Some(near) = nearest(&lower, KEYS.iter().map(|(s, _)| *s)) {
                    message.push_str(&format!("; did you mean `[{near}]`?"));
                } else {
                    message
                        .push_str("; sections are [freeswitch], [hylafax], [gofaxd], [gofaxsend]");
                }
                self.problem(Severity::Error, line, None, None, message);
                Current::Unknown
            }
        }
    }

    fn entry(&mut self, section: &'static str, name: &str, value: Option<&str>, line: usize) {
        let lower = name.to_ascii_lowercase();
        let keys = KEYS
            .iter()
            .find(|(s, _)| *s == section)
            .map_or(&[][..], |(_, k)| *k);
        let Some(key) = keys.iter().copied().find(|k| *k == lower) else {
            let message = unknown_key_message(section, name, &lower, keys);
            self.problem(Severity::Error, line, Some(section), Some(name), message);
            return;
        };
        let id = format!("{section}.{key}");
        if !is_multi(section, key) {
            if let Some(first) = self.config.source.key_lines.get(&id) {
                let message = format!(
                    "set again (first at line {first}); the last value wins, as in GOfax.IP"
                );
                self.problem(Severity::Warning, line, Some(section), Some(name), message);
            }
        }
        self.config.source.key_lines.insert(id, line);
        let result = match value {
            None if is_multi(section, key) => {
                self.clear(section, key);
                Ok(())
            }
            None if is_bool(section, key) => self.set(section, key, "true", line),
            None => Err(format!("needs a value: `{name} = ...`")),
            Some(v) if v.contains(['\n', '\r']) => {
                Err("contains a line break (from a `\\n` escape); no value may".into())
            }
            Some(v) => self.set(section, key, v, line),
        };
        if let Err(message) = result {
            self.problem(Severity::Error, line, Some(section), Some(name), message);
        }
    }

    fn clear(&mut self, section: &str, name: &str) {
        if let Some(Kind::List(clear)) = key(section, name).map(|k| &k.kind) {
            clear(self);
        }
    }

    /// Parses `v` for one known key and stores it.
    fn set(&mut self, section: &str, name: &str, v: &str, line: usize) -> Result<(), String> {
        let key = key(section, name).ok_or("known key without a handler (fsfax bug)")?;
        (key.set)(self, v, line)
    }

    /// Splits a hangup-cause list (fsfax also takes commas) and warns about unknown names.
    fn causes(&mut self, key: &str, v: &str, line: usize) -> Vec<String> {
        let causes: Vec<String> = split_list(v).map(str::to_string).collect();
        for cause in &causes {
            if let Some(warning) = check_hangup_cause(cause) {
                self.problem(
                    Severity::Warning,
                    line,
                    Some("gofaxsend"),
                    Some(key),
                    warning,
                );
            }
        }
        causes
    }
}

fn unknown_key_message(section: &str, name: &str, lower: &str, keys: &[&str]) -> String {
    if lower == "failedresponsemap" {
        return "`failedresponsemap` is not a key (GOfax.IP derives it); use `failedresponse`"
            .into();
    }
    let elsewhere: Vec<&str> = KEYS
        .iter()
        .filter(|(s, ks)| *s != section && ks.contains(&lower))
        .map(|(s, _)| *s)
        .collect();
    let mut message = format!("unknown key `{name}` in [{section}]");
    if let Some(near) = nearest(lower, keys.iter().copied()) {
        message.push_str(&format!("; did you mean `{near}`?"));
    } else if let Some(other) = elsewhere.first() {
        message.push_str(&format!("; `{lower}` belongs in [{other}]"));
    }
    message
}

/// A timeout-like duration: zero would make the operation fail at once, so it is refused.
fn timeout(v: &str) -> Result<Duration, String> {
    let d = parse_duration(v)?;
    if d.is_zero() {
        return Err(format!("`{v}` is zero; give a duration greater than zero"));
    }
    Ok(d)
}

fn uint32(v: &str) -> Result<u32, String> {
    parse_uint(v, u64::from(u32::MAX)).map(|n| n as u32)
}

/// GOfax.IP's millisecond integers (`answerafter`, `waittime`).
fn millis(v: &str) -> Result<Duration, String> {
    parse_uint(v, u64::from(u32::MAX))
        .map(Duration::from_millis)
        .map_err(|e| format!("{e} (milliseconds)"))
}

/// GOfax.IP read these as strings at use, an empty one meaning "never"; that stays allowed.
fn retry_count(v: &str) -> Result<u32, String> {
    if v.trim().is_empty() {
        return Ok(0);
    }
    uint32(v).map_err(|e| format!("{e}; 0 or empty means never"))
}

fn opt_path(v: &str) -> Option<PathBuf> {
    (!v.is_empty()).then(|| PathBuf::from(v))
}

/// `[gofaxsend] cidname`: where the caller-ID name of a send comes from.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum CidName {
    /// `sender`: the job's sender (qfile `sender:`).
    Sender,
    /// `number`: the number dialled (qfile `number:`).
    Number,
    /// `cidnum`: the caller-ID number.
    CidNumber,
    /// Any other text, sent as it is; empty sends no name.
    Fixed(String),
    /// Not set: no name (GOfax.IP's behaviour).
    #[default]
    None,
}

impl CidName {
    /// The word or text as written in the configuration.
    pub fn as_str(&self) -> &str {
        match self {
            CidName::Sender => "sender",
            CidName::Number => "number",
            CidName::CidNumber => "cidnum",
            CidName::Fixed(text) => text,
            CidName::None => "",
        }
    }
}

impl From<&str> for CidName {
    fn from(v: &str) -> CidName {
        match v {
            "sender" => CidName::Sender,
            "number" => CidName::Number,
            "cidnum" => CidName::CidNumber,
            "" => CidName::None,
            other => CidName::Fixed(other.to_owned()),
        }
    }
}

impl PartialEq<&str> for CidName {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

#[cfg(test)]
mod tests;

/// The default `softmodemfallbackexpiry`: a week. Long enough that a station that really needs
/// audio costs at most one failed T.38 call a week; short enough that one bad call (a peer
/// that vanished, a trunk's bad day) cannot pin a healthy station to audio for good.
pub const DEFAULT_FALLBACK_EXPIRY: Duration = Duration::from_secs(7 * 24 * 3600);
