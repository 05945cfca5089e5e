//! Parsing of `originate` arguments the way FreeSWITCH reads them (independent of fsfax).

/// One dialled leg: `[per-leg vars]sofia/gateway/<gw>/<number>`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Leg {
    /// The leg's endpoint string, e.g. `sofia/gateway/b/5000`.
    pub endpoint: String,
    /// Gateway name for `sofia/gateway/<gw>/...`, else "".
    pub gateway: String,
    /// Dialled number (last part of the endpoint).
    pub number: String,
    /// `[k=v,...]` variables of this leg (quotes removed), in order.
    pub vars: Vec<(String, String)>,
}

/// A parsed `originate <dialstring> <app>` argument.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Originate {
    /// The full argument as received.
    pub raw: String,
    /// The dial string part (before the application).
    pub dialstring: String,
    /// `{k=v,...}` global variables (quotes removed), in order.
    pub vars: Vec<(String, String)>,
    /// Sequential groups (`|`), each a list of parallel legs (`,`; empty legs dropped).
    pub groups: Vec<Vec<Leg>>,
    /// Application name after `&` (e.g. `txfax`), if any.
    pub app: Option<String>,
    /// Application argument (inside the parentheses), if any.
    pub app_arg: Option<String>,
}

impl Originate {
    /// Global variable by name.
    pub fn var(&self, name: &str) -> Option<&str> {
        self.vars
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// All legs in dial order (sequential groups flattened).
    pub fn legs(&self) -> Vec<&Leg> {
        self.groups.iter().flatten().collect()
    }

    /// Parses an originate argument. Errors are FreeSWITCH-style usage problems.
    pub fn parse(raw: &str) -> Result<Originate, String> {
        let raw_trim = raw.trim();
        let (dial, app_part) = split_app(raw_trim);
        let (vars, rest) = if dial.starts_with('{') {
            let close = matching(dial, 0, '{', '}').ok_or("unterminated {")?;
            (parse_vars(&dial[1..close]), &dial[close + 1..])
        } else {
            (Vec::new(), dial)
        };
        let mut groups = Vec::new();
        for g in split_top(rest, '|') {
            let mut legs = Vec::new();
            for l in split_top(&g, ',') {
                let l = l.trim();
                if l.is_empty() {
                    continue;
                }
                let (lvars, ep) = if l.starts_with('[') {
                    let close = matching(l, 0, '[', ']').ok_or("unterminated [")?;
                    (parse_vars(&l[1..close]), l[close + 1..].trim())
                } else {
                    (Vec::new(), l)
                };
                let (gateway, number) = match ep.strip_prefix("sofia/gateway/") {
                    Some(r) => match r.split_once('/') {
                        Some((g, n)) => (g.to_string(), n.to_string()),
                        None => (r.to_string(), String::new()),
                    },
                    None => (
                        String::new(),
                        ep.rsplit('/').next().unwrap_or("").to_string(),
                    ),
                };
                legs.push(Leg {
                    endpoint: ep.to_string(),
                    gateway,
                    number,
                    vars: lvars,
                });
            }
            if !legs.is_empty() {
                groups.push(legs);
            }
        }
        if groups.is_empty() {
            return Err("no leg in dial string".into());
        }
        let (app, app_arg) = match app_part {
            Some(a) => {
                let a = a.trim().trim_start_matches('&');
                match a.find('(') {
                    Some(p) if a.ends_with(')') => (
                        Some(a[..p].to_string()),
                        Some(a[p + 1..a.len() - 1].to_string()),
                    ),
                    _ => match a.split_once(' ') {
                        Some((n, r)) => (Some(n.to_string()), Some(r.trim().to_string())),
                        None => (Some(a.to_string()), None),
                    },
                }
            }
            None => (None, None),
        };
        Ok(Originate {
            raw: raw.to_string(),
            dialstring: dial.to_string(),
            vars,
            groups,
            app,
            app_arg,
        })
    }
}

/// Splits `dialstring app` at the first whitespace outside quotes/brackets followed by `&`
/// (or any word: FreeSWITCH takes the second argument as the application).
fn split_app(s: &str) -> (&str, Option<&str>) {
    let b = s.as_bytes();
    let mut depth = 0i32;
    let mut quote: Option<u8> = None;
    for (i, &c) in b.iter().enumerate() {
        match quote {
            Some(q) if c == q => quote = None,
            Some(_) => {}
            None => match c {
                b'\'' | b'"' => quote = Some(c),
                b'{' | b'[' | b'<' => depth += 1,
                b'}' | b']' | b'>' => depth -= 1,
                c if c.is_ascii_whitespace() && depth <= 0 => {
                    let rest = s[i..].trim();
                    return (&s[..i], if rest.is_empty() { None } else { Some(rest) });
                }
                _ => {}
            },
        }
    }
    (s, None)
}

fn matching(s: &str, start: usize, open: char, close: char) -> Option<usize> {
    let mut depth = 0;
    let mut quote: Option<char> = None;
    for (i, c) in s.char_indices().skip_while(|(i, _)| *i < start) {
        match quote {
            Some(q) if c == q => quote = None,
            Some(_) => {}
            None if c == '\'' || c == '"' => quote = Some(c),
            None if c == open => depth += 1,
            None if c == close => {
                depth -= 1;
                if depth == 0 {
                    return Some(i);
                }
            }
            None => {}
        }
    }
    None
}

/// Splits on `sep` outside quotes and `{}`/`[]`.
fn split_top(s: &str, sep: char) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut depth = 0i32;
    let mut quote: Option<char> = None;
    for c in s.chars() {
        match quote {
            Some(q) => {
                if c == q {
                    quote = None;
                }
                cur.push(c);
            }
            None => {
                if c == '\'' || c == '"' {
                    quote = Some(c);
                    cur.push(c);
                } else if c == '{' || c == '[' {
                    depth += 1;
                    cur.push(c);
                } else if c == '}' || c == ']' {
                    depth -= 1;
                    cur.push(c);
                } else if c == sep && depth <= 0 {
                    out.push(std::mem::take(&mut cur));
                } else {
                    cur.push(c);
                }
            }
        }
    }
    out.push(cur);
    out
}

fn parse_vars(s: &str) -> Vec<(String, String)> {
    split_top(s, ',')
        .into_iter()
        .filter_map(|kv| {
            let kv = kv.trim().to_string();
            if kv.is_empty() {
                return None;
            }
            let (k, v) = kv.split_once('=').unwrap_or((&kv, ""));
            let v = v.trim();
            let v = if v.len() >= 2
                && ((v.starts_with('\'') && v.ends_with('\''))
                    || (v.starts_with('"') && v.ends_with('"')))
            {
                &v[1..v.len() - 1]
            } else {
                v
            };
            Some((k.trim().to_string(), v.to_string()))
        })
        .collect()
}
