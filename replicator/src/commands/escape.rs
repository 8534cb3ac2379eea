//! Printing keys and values safely, and reading them back.
//!
//! Keys and values are arbitrary bytes, often written by the web, so a command never writes
//! them to a terminal as they are (an escape sequence in a session value could rewrite the
//! screen, a newline in a key would fake a second line of `keys`). [`escape`] turns bytes into
//! one line of text:
//!
//! - valid UTF-8 stays as it is, except:
//! - `\` becomes `\\`; newline, carriage return, tab and NUL become `\n`, `\r`, `\t`, `\0`;
//! - other ASCII control characters become `\xHH`;
//! - C1 controls and the invisible characters that reorder or hide text (bidirectional
//!   overrides and isolates, zero-width characters, line and paragraph separators, BOM)
//!   become `\u{HHHH}`;
//! - each byte that is not part of valid UTF-8 becomes `\xHH`.
//!
//! So a plain key (`sid:4f2a`, `user/éloïse`) prints unchanged, and [`unescape`] reverses
//! every output exactly: `unescape(escape(b)) == b` for all bytes `b`. The commands' `--escaped`
//! flag runs a KEY, VALUE or PREFIX argument through [`unescape`], so a key printed by
//! `gardenstate keys` can be passed back to `get` or `del` whatever bytes it holds.

use std::fmt::Write;

/// Characters that change how surrounding text is displayed without being visible.
fn is_invisible_format(c: char) -> bool {
    matches!(
        c,
        '\u{061C}'
            | '\u{200B}'..='\u{200F}'
            | '\u{2028}'..='\u{202E}'
            | '\u{2060}'..='\u{2069}'
            | '\u{FEFF}'
    )
}

/// The one-line, terminal-safe form of `bytes` (see the module comment).
pub fn escape(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len());
    for chunk in bytes.utf8_chunks() {
        for c in chunk.valid().chars() {
            match c {
                '\\' => out.push_str("\\\\"),
                '\n' => out.push_str("\\n"),
                '\r' => out.push_str("\\r"),
                '\t' => out.push_str("\\t"),
                '\0' => out.push_str("\\0"),
                c if c.is_ascii_control() => {
                    let _ = write!(out, "\\x{:02x}", c as u32);
                }
                c if c.is_control() || is_invisible_format(c) => {
                    let _ = write!(out, "\\u{{{:04x}}}", c as u32);
                }
                c => out.push(c),
            }
        }
        for b in chunk.invalid() {
            let _ = write!(out, "\\x{b:02x}");
        }
    }
    out
}

/// Whether [`escape`] leaves `bytes` unchanged.
pub fn is_plain(bytes: &[u8]) -> bool {
    escape(bytes).as_bytes() == bytes
}

/// The bytes that `text` (in the [`escape`] syntax) stands for.
pub fn unescape(text: &[u8]) -> Result<Vec<u8>, String> {
    let mut out = Vec::with_capacity(text.len());
    let mut i = 0;
    let hex = |s: &[u8]| std::str::from_utf8(s).ok().and_then(|s| u32::from_str_radix(s, 16).ok());
    while i < text.len() {
        let b = text[i];
        if b != b'\\' {
            out.push(b);
            i += 1;
            continue;
        }
        let at = i;
        let bad = |why: &str| format!("bad escape at byte {at}: {why}");
        match text.get(i + 1) {
            Some(b'\\') => out.push(b'\\'),
            Some(b'n') => out.push(b'\n'),
            Some(b'r') => out.push(b'\r'),
            Some(b't') => out.push(b'\t'),
            Some(b'0') => out.push(0),
            Some(b'x') => {
                let digits = text.get(i + 2..i + 4).filter(|d| d.iter().all(u8::is_ascii_hexdigit));
                let v = digits.and_then(hex).ok_or_else(|| bad("\\x needs two hex digits, as in \\x00"))?;
                out.push(v as u8);
                i += 4;
                continue;
            }
            Some(b'u') => {
                let close = text[i..].iter().position(|&b| b == b'}').map(|p| i + p);
                let code = match (text.get(i + 2), close) {
                    (Some(b'{'), Some(end)) if end > i + 3 && end <= i + 9 => hex(&text[i + 3..end]),
                    _ => None,
                };
                let c = code
                    .and_then(char::from_u32)
                    .ok_or_else(|| bad("\\u needs a Unicode scalar in hex braces, as in \\u{202e}"))?;
                let mut buf = [0; 4];
                out.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
                i = close.map_or(text.len(), |e| e + 1);
                continue;
            }
            Some(_) => return Err(bad("use \\\\, \\n, \\r, \\t, \\0, \\xHH or \\u{HHHH}")),
            None => return Err(bad("a lone \\ at the end (write \\\\ for a backslash)")),
        }
        i += 2;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_text_is_unchanged() {
        for s in ["sid:4f2a", "user/éloïse", "ключ", "日本語 key", "{\"cart\": 3}", "a b"] {
            assert_eq!(escape(s.as_bytes()), s);
            assert!(is_plain(s.as_bytes()));
        }
    }

    #[test]
    fn unsafe_bytes_are_escaped() {
        let cases: [(&[u8], &str); 9] = [
            (b"a\\b", "a\\\\b"),
            (b"line1\nline2", "line1\\nline2"),
            (b"\0\r\t", "\\0\\r\\t"),
            (b"\x1b[2J", "\\x1b[2J"),
            (b"\x7f", "\\x7f"),
            (b"\xff\xfe", "\\xff\\xfe"),
            ("ab\u{202e}cd".as_bytes(), "ab\\u{202e}cd"),
            ("\u{85}".as_bytes(), "\\u{0085}"),
            (b"ok\xc3", "ok\\xc3"),
        ];
        for (raw, want) in cases {
            assert_eq!(escape(raw), want);
            assert!(!is_plain(raw));
            assert_eq!(unescape(want.as_bytes()).unwrap(), raw);
        }
    }

    #[test]
    fn every_byte_string_round_trips() {
        let mut x: u64 = 0x2545_f491_4f6c_dd1d;
        for round in 0..5_000 {
            let len = round % 40;
            let bytes: Vec<u8> = (0..len)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    // Bias towards the interesting bytes: ASCII, backslash, UTF-8 lead bytes.
                    [x as u8, b'\\', 0xe2, 0x80, 0xae, b'u', b'{'][(x >> 32) as usize % 7]
                })
                .collect();
            let text = escape(&bytes);
            assert!(!text.contains('\n') && !text.chars().any(|c| c.is_control()), "{text:?}");
            assert_eq!(unescape(text.as_bytes()).unwrap(), bytes, "{text:?}");
        }
    }

    #[test]
    fn bad_escapes_are_refused() {
        for bad in ["\\", "a\\q", "\\x1", "\\xzz", "\\u{}", "\\u{110000}", "\\u{d800}", "\\u1234", "\\u{1234"]
        {
            assert!(unescape(bad.as_bytes()).is_err(), "{bad}");
        }
        assert_eq!(unescape(b"\\x41\\u{263a}").unwrap(), "A☺".as_bytes());
    }
}
