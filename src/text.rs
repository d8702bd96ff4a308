//! Text that came from an attacker (file names, keys) made safe for one-line messages: control
//! characters would otherwise break the line (`\n`), fake a second `error:` line, or drive the
//! terminal (`\x1b`).

use std::fmt::Write;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

/// `s` with every control character (C0, DEL, C1) written as an escape (`\n`, `\t`, `\r`, `\0`,
/// `\x1b`, `\u{85}`), and the bidirectional overrides that reorder what a reader sees
/// (`\u{202e}`) likewise. Everything else, backslashes included, is left as it is.
pub fn escape_control(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        push_char(&mut out, c);
    }
    out
}

/// A path as [`escape_control`] writes it; bytes that are not UTF-8 become `\xNN`.
pub fn escape_path(p: &Path) -> String {
    let mut out = String::new();
    for chunk in p.as_os_str().as_bytes().utf8_chunks() {
        for c in chunk.valid().chars() {
            push_char(&mut out, c);
        }
        for b in chunk.invalid() {
            let _ = write!(out, "\\x{b:02x}");
        }
    }
    out
}

fn push_char(out: &mut String, c: char) {
    match c {
        '\n' => out.push_str("\\n"),
        '\t' => out.push_str("\\t"),
        '\r' => out.push_str("\\r"),
        '\0' => out.push_str("\\0"),
        c if (c as u32) < 0x80 && c.is_control() => {
            let _ = write!(out, "\\x{:02x}", c as u32);
        }
        c if c.is_control() || is_bidi_control(c) => {
            let _ = write!(out, "\\u{{{:x}}}", c as u32);
        }
        c => out.push(c),
    }
}

fn is_bidi_control(c: char) -> bool {
    matches!(c, '\u{061c}' | '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::ffi::OsStr;

    #[test]
    fn control_characters_are_escaped_and_the_rest_kept() {
        assert_eq!(escape_control("x\nerror: fake"), "x\\nerror: fake");
        assert_eq!(escape_control("a\tb\rc\0d\x1b[31m\x7f"), "a\\tb\\rc\\0d\\x1b[31m\\x7f");
        assert_eq!(
            escape_control("\u{85}\u{9b}\u{202e}txt.js"),
            "\\u{85}\\u{9b}\\u{202e}txt.js"
        );
        assert_eq!(escape_control("grüße/日本語 \\ ok"), "grüße/日本語 \\ ok");
    }

    #[test]
    fn paths_that_are_not_utf8_show_their_bytes() {
        let p = Path::new(OsStr::from_bytes(b"dir/caf\xe9\n.js"));
        assert_eq!(escape_path(p), "dir/caf\\xe9\\n.js");
    }
}
