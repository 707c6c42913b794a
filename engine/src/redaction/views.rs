//! Decoded views of a text: percent-decoding, HTML character references and JSON string
//! escapes, each byte remembering the range of the text it came from, so a secret found in a
//! view is redacted where it was written, however its characters were escaped.

/// One way of escaping characters in text.
#[derive(Debug, Clone, Copy)]
pub enum Decoding {
    /// `%2F`, either hex case (a `+` is left alone; spaces written as `+` have their own needle).
    Percent,
    /// `&amp;`, `&lt;`, `&gt;`, `&quot;`, `&apos;`, `&#39;`, `&#x27;`: named and numeric.
    Html,
    /// `\"`, `\\`, `\/`, `\n`… and `\u00e9`, surrogate pairs included.
    Json,
}

impl Decoding {
    pub const ALL: [Decoding; 3] = [Decoding::Percent, Decoding::Html, Decoding::Json];

    /// The byte every escape of this kind starts with; a text without it has nothing to decode.
    fn marker(self) -> u8 {
        match self {
            Decoding::Percent => b'%',
            Decoding::Html => b'&',
            Decoding::Json => b'\\',
        }
    }

    /// The escape starting at `at`, if there is one: what it stands for and its length.
    fn decode(self, text: &[u8], at: usize) -> Option<(Unit, usize)> {
        match self {
            Decoding::Percent => percent(text, at),
            Decoding::Html => html(text, at),
            Decoding::Json => json(text, at),
        }
    }
}

/// What one escape stands for.
enum Unit {
    Byte(u8),
    Char(char),
}

/// A decoded text and, per byte, the range of the original text it came from.
#[derive(Debug)]
pub struct View {
    pub bytes: Vec<u8>,
    starts: Vec<u32>,
    ends: Vec<u32>,
}

impl View {
    /// The range of the original text that view bytes `start..end` came from.
    pub fn origin(&self, start: usize, end: usize) -> (usize, usize) {
        let last = end.saturating_sub(1).max(start);
        (self.starts[start] as usize, self.ends[last] as usize)
    }

    fn push(&mut self, bytes: &[u8], start: usize, end: usize) {
        // Texts are bounded by the body limit, far below 4 GiB; saturating keeps this total.
        let start = u32::try_from(start).unwrap_or(u32::MAX);
        let end = u32::try_from(end).unwrap_or(u32::MAX);
        for &byte in bytes {
            self.bytes.push(byte);
            self.starts.push(start);
            self.ends.push(end);
        }
    }
}

/// Where [`walk`] writes a decoded text.
trait Sink {
    /// A run of text that is not an escape, starting at byte `at`.
    fn literal(&mut self, bytes: &[u8], at: usize);
    /// What the escape at `start..end` stands for.
    fn escape(&mut self, bytes: &[u8], start: usize, end: usize);
}

impl Sink for Vec<u8> {
    fn literal(&mut self, bytes: &[u8], _: usize) {
        self.extend_from_slice(bytes);
    }

    fn escape(&mut self, bytes: &[u8], _: usize, _: usize) {
        self.extend_from_slice(bytes);
    }
}

impl Sink for View {
    fn literal(&mut self, bytes: &[u8], at: usize) {
        for (offset, byte) in bytes.iter().enumerate() {
            self.push(&[*byte], at + offset, at + offset + 1);
        }
    }

    fn escape(&mut self, bytes: &[u8], start: usize, end: usize) {
        self.push(bytes, start, end);
    }
}

/// `text` decoded, or `None` when it holds no escape of this kind (the common case, at the cost
/// of one `memchr`-like scan). Only the bytes: see [`view`] for where each came from.
pub fn decoded(text: &str, decoding: Decoding) -> Option<Vec<u8>> {
    let mut bytes = Vec::with_capacity(text.len());
    walk(text, decoding, &mut bytes).then_some(bytes)
}

/// `text` decoded with the origin of every byte, or `None` when there is nothing to decode.
pub fn view(text: &str, decoding: Decoding) -> Option<View> {
    let mut view = View {
        bytes: Vec::new(),
        starts: Vec::new(),
        ends: Vec::new(),
    };
    walk(text, decoding, &mut view).then_some(view)
}

/// Writes `text` decoded into `sink`; false (and nothing written) when it has no marker at all.
fn walk(text: &str, decoding: Decoding, sink: &mut impl Sink) -> bool {
    let bytes = text.as_bytes();
    let marker = decoding.marker();
    if !bytes.contains(&marker) {
        return false;
    }
    let mut copied = 0;
    let mut at = 0;
    while let Some(offset) = bytes[at..].iter().position(|b| *b == marker) {
        at += offset;
        match decoding.decode(bytes, at) {
            Some((unit, length)) => {
                sink.literal(&bytes[copied..at], copied);
                match unit {
                    Unit::Byte(byte) => sink.escape(&[byte], at, at + length),
                    Unit::Char(c) => {
                        sink.escape(c.encode_utf8(&mut [0; 4]).as_bytes(), at, at + length);
                    }
                }
                at += length;
                copied = at;
            }
            None => at += 1,
        }
    }
    sink.literal(&bytes[copied..], copied);
    true
}

fn hex_value(digits: &[u8]) -> Option<u32> {
    let digits = std::str::from_utf8(digits).ok()?;
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    u32::from_str_radix(digits, 16).ok()
}

fn percent(text: &[u8], at: usize) -> Option<(Unit, usize)> {
    if text[at] != b'%' {
        return None;
    }
    let value = hex_value(text.get(at + 1..at + 3)?)?;
    Some((Unit::Byte(u8::try_from(value).ok()?), 3))
}

/// The longest character reference looked at: `&#x10FFFF;` and `&#1114111;` are ten bytes.
const LONGEST_REFERENCE: usize = 10;

fn html(text: &[u8], at: usize) -> Option<(Unit, usize)> {
    if text[at] != b'&' {
        return None;
    }
    let window = &text[at + 1..text.len().min(at + LONGEST_REFERENCE)];
    let semicolon = window.iter().position(|&b| b == b';')?;
    let name = &window[..semicolon];
    let c = match name {
        b"amp" => '&',
        b"lt" => '<',
        b"gt" => '>',
        b"quot" => '"',
        b"apos" => '\'',
        [b'#', b'x' | b'X', digits @ ..] => char::from_u32(hex_value(digits)?)?,
        [b'#', digits @ ..] => {
            let digits = std::str::from_utf8(digits).ok()?;
            if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
                return None;
            }
            char::from_u32(digits.parse().ok()?)?
        }
        _ => return None,
    };
    Some((Unit::Char(c), semicolon + 2))
}

fn json(text: &[u8], at: usize) -> Option<(Unit, usize)> {
    if text[at] != b'\\' {
        return None;
    }
    let c = match *text.get(at + 1)? {
        b'"' => '"',
        b'\\' => '\\',
        b'/' => '/',
        b'b' => '\u{8}',
        b'f' => '\u{c}',
        b'n' => '\n',
        b'r' => '\r',
        b't' => '\t',
        b'u' => return json_unicode(text, at),
        _ => return None,
    };
    Some((Unit::Char(c), 2))
}

/// `\uXXXX`, or a surrogate pair `\uD83D\uDE00` as one character.
fn json_unicode(text: &[u8], at: usize) -> Option<(Unit, usize)> {
    let unit = hex_value(text.get(at + 2..at + 6)?)?;
    if let Some(c) = char::from_u32(unit) {
        return Some((Unit::Char(c), 6));
    }
    let low = match text.get(at + 6..at + 8) {
        Some(b"\\u") => hex_value(text.get(at + 8..at + 12)?)?,
        _ => return None,
    };
    let high = unit.checked_sub(0xD800).filter(|h| *h < 0x400)?;
    let low = low.checked_sub(0xDC00).filter(|l| *l < 0x400)?;
    let c = char::from_u32(0x10000 + (high << 10) + low)?;
    Some((Unit::Char(c), 12))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decoded(text: &str, decoding: Decoding) -> String {
        let view = view(text, decoding).expect("has escapes");
        String::from_utf8(view.bytes).expect("UTF-8")
    }

    #[test]
    fn percent_escapes_decode_in_either_hex_case_and_map_back() {
        assert_eq!(decoded("a%2Fb%2fc%zz%4", Decoding::Percent), "a/b/c%zz%4");
        let view = view("x%41y", Decoding::Percent).expect("escapes");
        assert_eq!(view.origin(1, 2), (1, 4));
        assert_eq!(view.origin(1, 3), (1, 5));
        assert!(super::view("plain", Decoding::Percent).is_none());
    }

    #[test]
    fn html_references_decode_named_and_numeric() {
        assert_eq!(
            decoded(
                "&amp;&lt;&gt;&quot;&apos;&#39;&#x27;&#X41;&#233;&bogus;&",
                Decoding::Html
            ),
            "&<>\"'''Aé&bogus;&"
        );
    }

    #[test]
    fn json_escapes_decode_with_surrogate_pairs() {
        assert_eq!(
            decoded(r#"\"\\\/\n\u0041\ud83d\ude00\ud83d\q"#, Decoding::Json),
            "\"\\/\nA😀\\ud83d\\q"
        );
    }
}
