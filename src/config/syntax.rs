//! The gcfg (git-config style) tokenizer GOfax.IP's `gopkg.in/gcfg.v1` implements.
//!
//! Written by hand rather than with rust-ini: rust-ini gives no line numbers, keeps one value per
//! key (or merges them) with no "bare key clears the list" rule, has no notion of a bare key
//! meaning `true`, and unescapes differently from gcfg (`\n` outside quotes, `\;`). Correct line
//! numbers and gcfg's exact quoting matter more than reuse here.
//!
//! Rules (gcfg's): `[section]` or `[section "subsection"]` headers; `name = value` or a bare
//! `name`; `;` and `#` start a comment on their own line or after a value outside quotes; values
//! are trimmed, double quotes may wrap all or part of a value and are removed; inside quotes
//! `\"`, `\\`, `\n`, `\t` and `\b` are escapes; outside quotes a backslash must end the line
//! (continuation, nothing is inserted) or escape `"` or `\`; a line break inside quotes is an
//! error; CR bytes are ignored; a leading UTF-8 BOM is skipped.

/// One statement of a gcfg file, with the line it starts on (1-based).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Item {
    /// `[name]` or `[name "subsection"]`; the name as written.
    Section {
        name: String,
        subsection: Option<String>,
        line: usize,
    },
    /// `name = value` (`Some`) or a bare `name` (`None`); the name as written.
    Entry {
        name: String,
        value: Option<String>,
        line: usize,
    },
}

/// A line the tokenizer could not read; the rest of that line is skipped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SyntaxError {
    pub line: usize,
    pub message: String,
}

/// Splits `text` into statements, collecting every syntax error instead of stopping at the first.
pub(crate) fn tokenize(text: &str) -> (Vec<Item>, Vec<SyntaxError>) {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let mut s = Scanner {
        text,
        bytes: text.as_bytes(),
        pos: 0,
        line: 1,
    };
    let mut items = Vec::new();
    let mut errors = Vec::new();
    loop {
        s.skip_blanks();
        let line = s.line;
        let result = match s.peek() {
            None => break,
            Some(b'\n') => {
                s.bump();
                continue;
            }
            Some(b';' | b'#') => {
                s.skip_line();
                continue;
            }
            Some(b'[') => s.section().map(|item| items.push(item)),
            Some(c) if is_name_byte(c) => s.entry().map(|item| items.push(item)),
            Some(_) => Err(format!(
                "expected `[section]` or `name = value`, found `{}`",
                s.current_char()
            )),
        };
        if let Err(message) = result {
            errors.push(SyntaxError { line, message });
            s.skip_line();
        }
    }
    (items, errors)
}

/// Names are ASCII letters, digits, `-`, `_` and `.`; gcfg is stricter (no `_` or `.`), but
/// reading them lets `fax_number` get a "did you mean `faxnumber`" instead of a syntax error.
fn is_name_byte(c: u8) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.')
}

struct Scanner<'a> {
    text: &'a str,
    bytes: &'a [u8],
    pos: usize,
    line: usize,
}

impl Scanner<'_> {
    fn peek(&self) -> Option<u8> {
        self.bytes.get(self.pos).copied()
    }

    fn bump(&mut self) -> Option<u8> {
        let c = self.peek()?;
        self.pos += 1;
        if c == b'\n' {
            self.line += 1;
        }
        Some(c)
    }

    /// The character at the current position, for error messages.
    fn current_char(&self) -> char {
        self.text
            .get(self.pos..)
            .and_then(|rest| rest.chars().next())
            .unwrap_or('?')
    }

    /// Spaces, tabs and CRs (CRLF files are read as LF files, as gcfg does).
    fn skip_blanks(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t' | b'\r')) {
            self.bump();
        }
    }

    /// Skips to just after the next line feed.
    fn skip_line(&mut self) {
        while let Some(c) = self.bump() {
            if c == b'\n' {
                break;
            }
        }
    }

    fn at_line_end(&self) -> bool {
        matches!(self.peek(), None | Some(b'\n' | b';' | b'#'))
    }

    /// After a statement only blanks and a comment may follow on the line.
    fn finish_line(&mut self) -> Result<(), String> {
        self.skip_blanks();
        match self.peek() {
            None => Ok(()),
            Some(b'\n' | b';' | b'#') => {
                self.skip_line();
                Ok(())
            }
            Some(_) => Err(format!("unexpected `{}`", self.current_char())),
        }
    }

    fn name(&mut self) -> String {
        let start = self.pos;
        while self.peek().is_some_and(is_name_byte) {
            self.bump();
        }
        self.text[start..self.pos].to_string()
    }

    fn section(&mut self) -> Result<Item, String> {
        let line = self.line;
        self.bump(); // '['
        self.skip_blanks();
        let name = self.name();
        if name.is_empty() {
            return Err("a section header needs a name, like `[freeswitch]`".into());
        }
        self.skip_blanks();
        let subsection = if self.peek() == Some(b'"') {
            self.bump();
            let sub = self.quoted_subsection()?;
            self.skip_blanks();
            Some(sub)
        } else {
            None
        };
        if self.peek() != Some(b']') {
            return Err(format!("expected `]` to close section `[{name}`"));
        }
        self.bump();
        self.finish_line()?;
        Ok(Item::Section {
            name,
            subsection,
            line,
        })
    }

    fn quoted_subsection(&mut self) -> Result<String, String> {
        let mut out = Vec::new();
        loop {
            match self.peek() {
                None | Some(b'\n') => return Err("subsection name not terminated".into()),
                Some(b'"') => {
                    self.bump();
                    return Ok(String::from_utf8_lossy(&out).into_owned());
                }
                Some(b'\\') => {
                    self.bump();
                    match self.bump() {
                        Some(c @ (b'"' | b'\\')) => out.push(c),
                        _ => return Err("unknown escape sequence in subsection name".into()),
                    }
                }
                Some(c) => {
                    self.bump();
                    out.push(c);
                }
            }
        }
    }

    fn entry(&mut self) -> Result<Item, String> {
        let line = self.line;
        let name = self.name();
        self.skip_blanks();
        if self.at_line_end() {
            self.finish_line()?;
            return Ok(Item::Entry {
                name,
                value: None,
                line,
            });
        }
        if self.peek() != Some(b'=') {
            return Err(format!(
                "expected `=` after `{name}`, found `{}`",
                self.current_char()
            ));
        }
        self.bump();
        self.skip_blanks();
        let value = self.value()?;
        self.finish_line()?;
        Ok(Item::Entry {
            name,
            value: Some(value),
            line,
        })
    }

    /// Reads a value up to the end of the line or a comment outside quotes, following
    /// continuations. Trailing whitespace outside quotes is dropped.
    fn value(&mut self) -> Result<String, String> {
        let mut out: Vec<u8> = Vec::new();
        // Length of `out` up to the last byte that is not unquoted whitespace.
        let mut keep = 0;
        let mut in_quote = false;
        loop {
            let Some(c) = self.peek() else {
                if in_quote {
                    return Err("closing `\"` missing at end of file".into());
                }
                break;
            };
            if !in_quote && matches!(c, b'\n' | b';' | b'#') {
                break;
            }
            if in_quote && c == b'\n' {
                return Err("closing `\"` missing before the end of the line".into());
            }
            self.bump();
            match c {
                b'\\' if in_quote => {
                    let escaped = match self.bump() {
                        Some(b'"') => b'"',
                        Some(b'\\') => b'\\',
                        Some(b'n') => b'\n',
                        Some(b't') => b'\t',
                        Some(b'b') => 0x08,
                        _ => {
                            return Err(
                                "unknown escape in quotes; only \\\" \\\\ \\n \\t \\b are allowed"
                                    .into(),
                            );
                        }
                    };
                    out.push(escaped);
                    keep = out.len();
                }
                b'\\' => {
                    if self.peek() == Some(b'\r') {
                        self.bump();
                    }
                    match self.peek() {
                        // Continuation: the backslash and the line break vanish.
                        Some(b'\n') => {
                            self.bump();
                        }
                        Some(e @ (b'"' | b'\\')) => {
                            self.bump();
                            out.push(e);
                            keep = out.len();
                        }
                        _ => {
                            return Err("a backslash outside quotes must end the line \
                                 (continuation) or escape `\"` or `\\`"
                                .into());
                        }
                    }
                }
                b'"' => {
                    in_quote = !in_quote;
                    keep = out.len();
                }
                b'\r' => {}
                _ => {
                    out.push(c);
                    if in_quote || !matches!(c, b' ' | b'\t') {
                        keep = out.len();
                    }
                }
            }
        }
        out.truncate(keep);
        // Only ASCII bytes were removed or inserted, so the bytes are still UTF-8.
        Ok(String::from_utf8_lossy(&out).into_owned())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entries(text: &str) -> Vec<(String, Option<String>, usize)> {
        let (items, errors) = tokenize(text);
        assert!(errors.is_empty(), "{errors:?}");
        items
            .into_iter()
            .filter_map(|i| match i {
                Item::Entry { name, value, line } => Some((name, value, line)),
                Item::Section { .. } => None,
            })
            .collect()
    }

    fn value(text: &str) -> String {
        let e = entries(text);
        assert_eq!(e.len(), 1, "{e:?}");
        e[0].1.clone().expect("a value")
    }

    #[test]
    fn comments_after_values_are_removed_and_values_trimmed() {
        assert_eq!(value("a =  x y  ; note\n"), "x y");
        assert_eq!(value("a = x # note\n"), "x");
        assert_eq!(value("a=x"), "x");
    }

    #[test]
    fn quotes_protect_comment_characters_and_spaces() {
        assert_eq!(value("a = \"x ; y # z\" ; c"), "x ; y # z");
        assert_eq!(value("a = \"  padded  \""), "  padded  ");
        assert_eq!(value("a = pre\"fix \"post"), "prefix post");
    }

    #[test]
    fn escapes_inside_quotes() {
        assert_eq!(
            value(r#"a = "q\"uote \\ tab\tnl\n""#),
            "q\"uote \\ tab\tnl\n"
        );
        assert_eq!(value(r#"a = out\"side"#), "out\"side");
    }

    #[test]
    fn bad_escape_and_open_quote_are_errors_with_lines() {
        let (_, errors) = tokenize("[s]\na = \"x\\q\"\nb = \"open\nc = back\\slash\n");
        let lines: Vec<usize> = errors.iter().map(|e| e.line).collect();
        assert_eq!(lines, vec![2, 3, 4], "{errors:?}");
    }

    #[test]
    fn continuation_joins_lines_and_keeps_line_numbers() {
        let e = entries("a = one \\\n  two\nb = 3\n");
        assert_eq!(e[0], ("a".into(), Some("one   two".into()), 1));
        assert_eq!(e[1], ("b".into(), Some("3".into()), 3));
    }

    #[test]
    fn bare_keys_and_empty_values_differ() {
        let e = entries("flag\nflag2 ; comment\nempty =\n");
        assert_eq!(e[0].1, None);
        assert_eq!(e[1].1, None);
        assert_eq!(e[2].1, Some(String::new()));
    }

    #[test]
    fn bom_and_crlf_are_accepted() {
        let (items, errors) = tokenize("\u{feff}[Sec]\r\nkey = v\r\n");
        assert!(errors.is_empty(), "{errors:?}");
        assert_eq!(
            items,
            vec![
                Item::Section {
                    name: "Sec".into(),
                    subsection: None,
                    line: 1
                },
                Item::Entry {
                    name: "key".into(),
                    value: Some("v".into()),
                    line: 2
                }
            ]
        );
    }

    #[test]
    fn section_headers_with_subsection_and_garbage() {
        let (items, errors) = tokenize("[ a \"b\" ]\n[c] junk\n[d\n= x\n");
        assert_eq!(
            items[0],
            Item::Section {
                name: "a".into(),
                subsection: Some("b".into()),
                line: 1
            }
        );
        let lines: Vec<usize> = errors.iter().map(|e| e.line).collect();
        assert_eq!(lines, vec![2, 3, 4]);
    }

    #[test]
    fn utf8_values_pass_through() {
        assert_eq!(value("h = \"Müller ☎\""), "Müller ☎");
        let (_, errors) = tokenize("ü = 1\n");
        assert_eq!(errors.len(), 1);
        assert!(errors[0].message.contains('ü'), "{}", errors[0].message);
    }
}
