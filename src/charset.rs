//! Text encoding of outgoing HTTP-stream messages.
//!
//! The charset is taken from the `charset` parameter of the response's
//! `Content-Type` header. `encoding_rs` implements the WHATWG Encoding
//! Standard, which is designed for *decoding web pages*; several of its
//! choices are wrong for *writing* an HTTP body under a given label, so this
//! module handles these cases itself:
//!
//! * ISO-8859-1 and US-ASCII labels are aliases of windows-1252 in WHATWG
//!   (different bytes in 0x80–0x9F, and non-ASCII output under an ASCII
//!   label); both are implemented here exactly.
//! * The encoders of the UTF-16 encodings (and of `replacement`) write UTF-8;
//!   UTF-16 is implemented here with [`str::encode_utf16`].
//! * WHATWG maps the bare `utf-16` label to little-endian; here it means
//!   big-endian without a byte order mark (RFC 2781 §4.3: without a BOM,
//!   assume big-endian). No BOM is written because every message of a
//!   stream is encoded separately.
//! * ISO-8859-9 and TIS-620 (ISO-8859-11) are aliases of windows-1254 and
//!   windows-874 in WHATWG, which fill 0x80–0x9F with letters, the euro and
//!   curly quotes; both are implemented here exactly (ISO-8859-9 is Latin-1
//!   with six Turkish letters in place of six Icelandic ones).
//! * WHATWG maps the UCS-2 labels (`iso-10646-ucs-2`, `csunicode`, `ucs-2`,
//!   `unicode`) to UTF-16LE; here they mean UCS-2 in network byte order
//!   (IANA's registration: big-endian, as bare `utf-16` below), and
//!   characters beyond U+FFFF, which UCS-2 cannot hold, become `?`.
//! * Unmappable characters become `?`, never HTML numeric character
//!   references.
//!
//! The CJK labels are written as WHATWG resolves them, which is what browsers
//! decode under them: `gb2312` as GBK, `euc-kr` as windows-949 (UHC),
//! `shift_jis` as windows-31J, `big5` as Big5-HKSCS. A character outside the
//! label's own standard but in that superset (the euro under `gb2312`, say)
//! goes out as the superset's bytes, not as `?`: a browser shows it, a strict
//! GB2312 or EUC-KR decoder (Java's, Python's) rejects those bytes.
//!
//! ISO-2022-JP is stateful: a stream keeps one encoder for all its messages
//! ([`Charset::stateful_encoder`]), and returns to ASCII once, at its end
//! (RFC 1468). Encoded message by message, each ending in ASCII, two messages
//! meeting in JIS X 0208 would hold two escape sequences in a row
//! (`ESC ( B ESC $ B`), which the WHATWG decoder (browsers) reads as an error,
//! a U+FFFD between them (before stop 27, 2026-12-05). A response sent whole
//! ends in ASCII.

use crate::Text;
use bytes::Bytes;
use encoding_rs::{
    Encoder, EncoderResult, Encoding, ISO_2022_JP, REPLACEMENT, UTF_16BE, UTF_16LE, UTF_8,
};
use http::HeaderValue;

/// Labels (lower case) that mean ISO-8859-1 proper, not windows-1252.
const LATIN1_LABELS: &[&str] = &[
    "iso-8859-1",
    "iso8859-1",
    "iso88591",
    "iso_8859-1",
    "iso_8859-1:1987",
    "latin1",
    "l1",
    "iso-ir-100",
    "cp819",
    "ibm819",
    "csisolatin1",
];

/// Labels (lower case) that mean US-ASCII proper, not windows-1252.
const ASCII_LABELS: &[&str] = &[
    "us-ascii",
    "ascii",
    "ansi_x3.4-1968",
    "ansi_x3.4-1986",
    "iso-ir-6",
    "iso_646.irv:1991",
    "iso646-us",
    "us",
    "ibm367",
    "cp367",
    "csascii",
];

/// Labels (lower case) that mean ISO-8859-9 proper, not windows-1254.
const LATIN5_LABELS: &[&str] = &[
    "iso-8859-9",
    "iso8859-9",
    "iso88599",
    "iso_8859-9",
    "iso_8859-9:1989",
    "iso-ir-148",
    "latin5",
    "l5",
    "csisolatin5",
];

/// Labels (lower case) that mean TIS-620 or ISO-8859-11, not windows-874.
const THAI_LABELS: &[&str] = &["tis-620", "iso-8859-11", "iso8859-11", "iso885911"];

/// Labels (lower case) that mean UCS-2, which WHATWG takes as UTF-16LE.
const UCS2_LABELS: &[&str] = &["iso-10646-ucs-2", "csunicode", "ucs-2", "unicode"];

/// The six letters ISO-8859-9 has where ISO-8859-1 has Icelandic ones, by byte.
const LATIN5_TURKISH: [(u8, char); 6] = [
    (0xD0, '\u{11E}'),
    (0xDD, '\u{130}'),
    (0xDE, '\u{15E}'),
    (0xF0, '\u{11F}'),
    (0xFD, '\u{131}'),
    (0xFE, '\u{15F}'),
];

/// How text is turned into bytes for one HTTP stream. Cheap to copy.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Charset {
    /// UTF-8; encoding is zero-copy.
    Utf8,
    /// UTF-16, big-endian, no byte order mark (also used for the bare
    /// `utf-16` label).
    Utf16Be,
    /// UTF-16, little-endian, no byte order mark.
    Utf16Le,
    /// ISO-8859-1 proper: U+0000..=U+00FF become one byte each.
    Latin1,
    /// US-ASCII: U+0000..=U+007F become one byte each.
    Ascii,
    /// ISO-8859-9 proper (Latin-5, Turkish).
    Latin5,
    /// TIS-620 (Thai), or with `iso` ISO-8859-11: TIS-620 with the C1 controls and
    /// no-break space.
    Thai {
        /// ISO-8859-11 rather than TIS-620.
        iso: bool,
    },
    /// UCS-2, big-endian, no byte order mark: UTF-16 without surrogate pairs.
    Ucs2,
    /// Any other encoding, encoded by `encoding_rs`.
    Other(&'static Encoding),
}

impl Charset {
    /// Determines the charset from a `Content-Type` header value
    /// (e.g. `text/plain; charset="Shift_JIS"`).
    ///
    /// No header, no `charset` parameter, an empty `charset` value or an
    /// unparsable header value all give [`Charset::Utf8`]. Parameter names
    /// are case-insensitive, values may be quoted strings with backslash
    /// escapes, whitespace around `;` and `=` is allowed; the first `charset`
    /// parameter wins. Labels are matched case-insensitively after trimming.
    ///
    /// # Errors
    ///
    /// Returns the label (trimmed, unquoted, original case) if it names no
    /// encoding this module can write, including labels that WHATWG maps to
    /// the `replacement` encoding (e.g. `iso-2022-kr`).
    pub(crate) fn from_content_type(value: Option<&HeaderValue>) -> Result<Self, String> {
        let Some(raw) = value.and_then(|v| charset_param(v.as_bytes())) else {
            return Ok(Self::Utf8);
        };
        let label = String::from_utf8_lossy(raw.trim_ascii());
        if label.is_empty() {
            return Ok(Self::Utf8);
        }
        Self::from_label(&label)
    }

    /// Resolves a non-empty, trimmed charset label.
    fn from_label(label: &str) -> Result<Self, String> {
        let lower = label.to_ascii_lowercase();
        match lower.as_str() {
            "utf-8" | "utf8" => return Ok(Self::Utf8),
            "utf-16" => return Ok(Self::Utf16Be),
            l if LATIN1_LABELS.contains(&l) => return Ok(Self::Latin1),
            l if ASCII_LABELS.contains(&l) => return Ok(Self::Ascii),
            l if LATIN5_LABELS.contains(&l) => return Ok(Self::Latin5),
            l if THAI_LABELS.contains(&l) => return Ok(Self::Thai { iso: l != "tis-620" }),
            l if UCS2_LABELS.contains(&l) => return Ok(Self::Ucs2),
            _ => {}
        }
        match Encoding::for_label_no_replacement(label.as_bytes()) {
            None => Err(label.to_owned()),
            Some(enc) if enc == UTF_8 => Ok(Self::Utf8),
            Some(enc) if enc == UTF_16BE => Ok(Self::Utf16Be),
            Some(enc) if enc == UTF_16LE => Ok(Self::Utf16Le),
            Some(enc) => Ok(Self::Other(enc)),
        }
    }

    /// Encodes `text`.
    ///
    /// Each character the charset cannot represent becomes one `?`. UTF-8,
    /// and ASCII-only text under an ASCII-compatible charset, is returned
    /// without copying.
    pub(crate) fn encode(self, text: Text) -> Bytes {
        match self {
            Self::Utf8 => text.into_bytes(),
            Self::Utf16Be => encode_utf16(&text, u16::to_be_bytes),
            Self::Utf16Le => encode_utf16(&text, u16::to_le_bytes),
            Self::Latin1 => encode_single_byte(text, '\u{FF}'),
            Self::Ascii => encode_single_byte(text, '\u{7F}'),
            Self::Latin5 => encode_by_char(text, latin5_byte),
            Self::Thai { iso: false } => encode_by_char(text, |c| thai_byte(c, false)),
            Self::Thai { iso: true } => encode_by_char(text, |c| thai_byte(c, true)),
            Self::Ucs2 => {
                let bmp = text.chars().map(|c| if c > '\u{FFFF}' { '?' } else { c });
                encode_utf16(&bmp.collect::<String>(), u16::to_be_bytes)
            }
            Self::Other(enc) => encode_other(enc, text),
        }
    }

    /// An encoder that keeps its state from one message to the next, for a charset that has
    /// one (ISO-2022-JP): see [`encode_with`].
    pub(crate) fn stateful_encoder(self) -> Option<Encoder> {
        matches!(self, Self::Other(enc) if enc == ISO_2022_JP).then(|| ISO_2022_JP.new_encoder())
    }

    /// The canonical name of the charset, e.g. `UTF-8`, `ISO-8859-1`,
    /// `US-ASCII`, `UTF-16BE` or `Shift_JIS`.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Self::Utf8 => "UTF-8",
            Self::Utf16Be => "UTF-16BE",
            Self::Utf16Le => "UTF-16LE",
            Self::Latin1 => "ISO-8859-1",
            Self::Ascii => "US-ASCII",
            Self::Latin5 => "ISO-8859-9",
            Self::Thai { iso: false } => "TIS-620",
            Self::Thai { iso: true } => "ISO-8859-11",
            Self::Ucs2 => "ISO-10646-UCS-2",
            Self::Other(enc) => enc.name(),
        }
    }
}

/// Returns the raw (unquoted, unescaped, untrimmed) value of the first
/// `charset` parameter of a media type, or `None` if there is none or the
/// parameters cannot be parsed (unterminated quoted string).
fn charset_param(value: &[u8]) -> Option<Vec<u8>> {
    // The media type itself contains no `;` or quotes: skip it.
    let mut rest = &value[value.iter().position(|&b| b == b';')? + 1..];
    while !rest.is_empty() {
        let name_end = rest.iter().position(|&b| b == b'=' || b == b';').unwrap_or(rest.len());
        let name = rest[..name_end].trim_ascii();
        if rest.get(name_end) != Some(&b'=') {
            // Parameter without a value (or empty segment): ignore.
            rest = rest.get(name_end + 1..).unwrap_or_default();
            continue;
        }
        rest = rest[name_end + 1..].trim_ascii_start();
        let param_value = if let Some(quoted) = rest.strip_prefix(b"\"") {
            let mut unescaped = Vec::new();
            let mut i = 0;
            loop {
                match *quoted.get(i)? {
                    b'"' => break,
                    b'\\' => {
                        unescaped.push(*quoted.get(i + 1)?);
                        i += 2;
                    }
                    b => {
                        unescaped.push(b);
                        i += 1;
                    }
                }
            }
            rest = &quoted[i + 1..];
            unescaped
        } else {
            let end = rest.iter().position(|&b| b == b';').unwrap_or(rest.len());
            let token = rest[..end].to_vec();
            rest = &rest[end..];
            token
        };
        // Skip to after the next `;` (tolerating junk after a quoted string).
        rest = rest.iter().position(|&b| b == b';').map_or(&[][..], |p| &rest[p + 1..]);
        if name.eq_ignore_ascii_case(b"charset") {
            return Some(param_value);
        }
    }
    None
}

/// Encodes `text` as UTF-16 code units with the given byte order, no BOM.
fn encode_utf16(text: &str, to_bytes: fn(u16) -> [u8; 2]) -> Bytes {
    let mut out = Vec::with_capacity(text.len().saturating_mul(2));
    for unit in text.encode_utf16() {
        out.extend_from_slice(&to_bytes(unit));
    }
    Bytes::from(out)
}

/// Encodes `text` one byte per character for characters up to and including
/// `max` (U+007F or U+00FF); every other character becomes one `?`.
fn encode_single_byte(text: Text, max: char) -> Bytes {
    if text.is_ascii() {
        return text.into_bytes();
    }
    text.chars()
        .map(|c| if c <= max { u8::try_from(u32::from(c)).unwrap_or(b'?') } else { b'?' })
        .collect::<Vec<u8>>()
        .into()
}

/// Encodes `text` one byte per character with `byte`, `?` where it gives none.
fn encode_by_char(text: Text, byte: impl Fn(char) -> Option<u8>) -> Bytes {
    if text.is_ascii() {
        return text.into_bytes();
    }
    text.chars().map(|c| byte(c).unwrap_or(b'?')).collect::<Vec<u8>>().into()
}

/// A character's byte in ISO-8859-9.
fn latin5_byte(c: char) -> Option<u8> {
    if let Some(&(byte, _)) = LATIN5_TURKISH.iter().find(|&&(_, turkish)| turkish == c) {
        return Some(byte);
    }
    let byte = u8::try_from(u32::from(c)).ok()?;
    // The Icelandic letters ISO-8859-1 has at those bytes are not in ISO-8859-9.
    (!LATIN5_TURKISH.iter().any(|&(b, _)| b == byte)).then_some(byte)
}

/// A character's byte in TIS-620, or with `iso` in ISO-8859-11.
fn thai_byte(c: char, iso: bool) -> Option<u8> {
    let code = u32::from(c);
    match code {
        0..=0x7F => Some(code as u8),
        0x80..=0xA0 if iso => Some(code as u8),
        // Thai letters, vowels and tone marks, U+0E01..=U+0E3A and U+0E3F..=U+0E5B, at
        // 0xA1..=0xDA and 0xDF..=0xFB (the code point less 0x0D60).
        0x0E01..=0x0E3A | 0x0E3F..=0x0E5B => Some((code - 0x0D60) as u8),
        _ => None,
    }
}

/// Encodes `text` with an `encoding_rs` encoder, writing `?` for unmappable
/// characters.
fn encode_other(enc: &'static Encoding, text: Text) -> Bytes {
    // Encodings whose encoding_rs encoder would write UTF-8.
    if enc == UTF_8 {
        return text.into_bytes();
    }
    if enc == UTF_16BE {
        return encode_utf16(&text, u16::to_be_bytes);
    }
    if enc == UTF_16LE {
        return encode_utf16(&text, u16::to_le_bytes);
    }
    if enc == REPLACEMENT {
        // Can represent nothing (only reachable by constructing it by hand).
        return text.chars().map(|_| b'?').collect::<Vec<u8>>().into();
    }
    // ASCII-compatible encoders map ASCII to itself.
    if enc.is_ascii_compatible() && text.is_ascii() {
        return text.into_bytes();
    }

    // `last`: the input is complete, so once it is consumed the encoder finishes (ISO-2022-JP
    // returns to ASCII).
    encode_with(&mut enc.new_encoder(), &text, true)
}

/// Encodes `text` with `encoder`, writing `?` for unmappable characters. Unless `last`, the
/// encoder stays in the state the text left it in (ISO-2022-JP: JIS X 0208 after a kanji),
/// so that the next message goes on without an escape sequence; `last` with empty text
/// gives what returns it to ASCII.
pub(crate) fn encode_with(encoder: &mut Encoder, text: &str, last: bool) -> Bytes {
    let mut buf: Vec<u8> = Vec::new();
    let mut written = 0;
    let mut rest = text;
    let mut slack: usize = 0;
    loop {
        let needed = encoder
            .max_buffer_length_from_utf8_without_replacement(rest.len())
            .unwrap_or(rest.len())
            .saturating_add(slack);
        if buf.len() - written < needed {
            buf.resize(written.saturating_add(needed), 0);
        }
        let (result, read, wrote) =
            encoder.encode_from_utf8_without_replacement(rest, &mut buf[written..], last);
        written += wrote;
        rest = &rest[read..];
        match result {
            EncoderResult::InputEmpty => break,
            EncoderResult::OutputFull => slack = slack.saturating_mul(2).max(16),
            EncoderResult::Unmappable(_) => {
                // encoding_rs leaves ISO-2022-JP in the ASCII state before
                // reporting an unmappable character, so a raw `?` is valid
                // in every encoding that gets here.
                if written == buf.len() {
                    buf.push(b'?');
                } else {
                    buf[written] = b'?';
                }
                written += 1;
            }
        }
    }
    buf.truncate(written);
    Bytes::from(buf)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ct(value: &str) -> Result<Charset, String> {
        Charset::from_content_type(Some(&HeaderValue::from_str(value).unwrap()))
    }

    fn enc(value: &str, text: &str) -> Vec<u8> {
        ct(value).unwrap().encode(text.into()).to_vec()
    }

    #[test]
    fn no_header_is_utf8() {
        assert_eq!(Charset::from_content_type(None), Ok(Charset::Utf8));
        assert_eq!(Charset::Utf8.encode("é€".into()).as_ref(), "é€".as_bytes());
    }

    #[test]
    fn no_charset_param_is_utf8() {
        assert_eq!(ct("text/plain"), Ok(Charset::Utf8));
        assert_eq!(ct("text/plain; format=flowed"), Ok(Charset::Utf8));
        assert_eq!(ct("text/plain; charset="), Ok(Charset::Utf8));
        assert_eq!(ct("text/plain; charset=\"\""), Ok(Charset::Utf8));
        assert_eq!(ct("text/plain; charset"), Ok(Charset::Utf8));
        assert_eq!(ct(""), Ok(Charset::Utf8));
    }

    #[test]
    fn unparsable_is_utf8() {
        // Unterminated quoted string.
        assert_eq!(ct("text/plain; charset=\"shift_jis"), Ok(Charset::Utf8));
        assert_eq!(ct("text/plain; a=\"x; charset=shift_jis"), Ok(Charset::Utf8));
    }

    #[test]
    fn utf8_labels() {
        assert_eq!(ct("text/plain; charset=utf-8"), Ok(Charset::Utf8));
        assert_eq!(ct("text/plain; charset=UTF8"), Ok(Charset::Utf8));
        assert_eq!(ct("text/plain; charset=unicode-1-1-utf-8"), Ok(Charset::Utf8));
        assert_eq!(enc("text/plain; charset=utf-8", "a€"), b"a\xE2\x82\xAC");
    }

    #[test]
    fn latin1_cafe_euro() {
        assert_eq!(
            enc("text/plain;charset=ISO-8859-1", "café €"),
            [0x63, 0x61, 0x66, 0xE9, 0x20, 0x3F]
        );
    }

    #[test]
    fn latin1_labels_and_c1_controls() {
        for label in ["latin1", "L1", "iso_8859-1", "ISO-IR-100", "cp819", "IBM819", "csISOLatin1"]
        {
            assert_eq!(ct(&format!("text/plain; charset={label}")), Ok(Charset::Latin1), "{label}");
        }
        // ISO-8859-1 proper, not windows-1252: U+0085 is byte 0x85, U+00FF is 0xFF.
        assert_eq!(enc("text/plain; charset=latin1", "\u{85}\u{ff}"), [0x85, 0xFF]);
    }

    #[test]
    fn latin1_emoji_is_one_question_mark() {
        assert_eq!(enc("text/plain; charset=latin1", "a😀b"), b"a?b");
    }

    #[test]
    fn quoted_uppercase_and_whitespace() {
        assert_eq!(
            ct("text/plain; charset=\"Shift_JIS\""),
            Ok(Charset::Other(encoding_rs::SHIFT_JIS))
        );
        assert_eq!(ct("TEXT/PLAIN ; CHARSET = \"ISO-8859-1\" "), Ok(Charset::Latin1));
        assert_eq!(ct("text/plain;Charset=\" us-ascii \""), Ok(Charset::Ascii));
        assert_eq!(ct("text/plain;\tcharset=\tUS-ASCII\t;q=1"), Ok(Charset::Ascii));
        // Backslash escapes inside a quoted string.
        assert_eq!(ct(r#"text/plain; charset="us\-ascii""#), Ok(Charset::Ascii));
        // `;` and `charset=` inside another parameter's quoted value.
        assert_eq!(
            ct(r#"text/plain; foo="a;charset=\"latin1\""; charset=us-ascii"#),
            Ok(Charset::Ascii)
        );
        // First charset parameter wins.
        assert_eq!(ct("text/plain; charset=latin1; charset=utf-8"), Ok(Charset::Latin1));
        // Empty segments are skipped.
        assert_eq!(ct("text/plain;; ;charset=latin1"), Ok(Charset::Latin1));
    }

    #[test]
    fn shift_jis() {
        assert_eq!(enc("text/plain; charset=Shift_JIS", "日本"), [0x93, 0xFA, 0x96, 0x7B]);
        assert_eq!(enc("text/plain; charset=Shift_JIS", "日😀本"), [0x93, 0xFA, b'?', 0x96, 0x7B]);
        assert_eq!(enc("text/plain; charset=Shift_JIS", "😀"), b"?");
        // Unmappable Latin letters, two in a row: one `?` each.
        assert_eq!(enc("text/plain; charset=Shift_JIS", "éé"), b"??");
    }

    #[test]
    fn windows_1252_euro() {
        assert_eq!(enc("text/plain; charset=windows-1252", "€"), [0x80]);
        // U+0080 is not in windows-1252 (0x80 is the euro sign there).
        assert_eq!(enc("text/plain; charset=windows-1252", "\u{80}"), b"?");
    }

    #[test]
    fn utf16() {
        assert_eq!(enc("text/plain; charset=UTF-16BE", "a€"), [0x00, 0x61, 0x20, 0xAC]);
        assert_eq!(enc("text/plain; charset=utf-16le", "a€"), [0x61, 0x00, 0xAC, 0x20]);
        // Bare utf-16: big-endian, no BOM.
        assert_eq!(ct("text/plain; charset=utf-16"), Ok(Charset::Utf16Be));
        assert_eq!(enc("text/plain; charset=utf-16", "a"), [0x00, 0x61]);
        // Surrogate pair.
        assert_eq!(enc("text/plain; charset=utf-16be", "😀"), [0xD8, 0x3D, 0xDE, 0x00]);
        // Never UTF-8 under a UTF-16 label, even when built by hand.
        assert_eq!(Charset::Other(UTF_16LE).encode("a".into()).as_ref(), [0x61, 0x00]);
    }

    #[test]
    fn us_ascii() {
        assert_eq!(enc("text/plain; charset=us-ascii", "é"), b"?");
        assert_eq!(enc("text/plain; charset=ASCII", "aé😀\u{80}z"), b"a???z");
        for label in ["ansi_x3.4-1968", "iso646-us", "csASCII"] {
            assert_eq!(ct(&format!("text/plain; charset={label}")), Ok(Charset::Ascii), "{label}");
        }
    }

    #[test]
    fn iso_8859_9_is_not_windows_1254() {
        for label in ["ISO-8859-9", "latin5", "l5", "iso_8859-9:1989", "csISOLatin5"] {
            assert_eq!(ct(&format!("text/plain; charset={label}")), Ok(Charset::Latin5), "{label}");
        }
        // The Turkish letters; no euro or curly quotes (windows-1254's 0x80, 0x91, 0x92); the
        // C1 control U+0085 as byte 0x85; the Icelandic letters ISO-8859-1 has at 0xD0..0xFE.
        assert_eq!(
            enc("text/plain; charset=ISO-8859-9", "ĞİŞğışç€‘\u{85}ÐÝÞðýþÿ"),
            [
                0xD0, 0xDD, 0xDE, 0xF0, 0xFD, 0xFE, 0xE7, b'?', b'?', 0x85, b'?', b'?', b'?', b'?',
                b'?', b'?', 0xFF
            ]
        );
        // windows-1254 stays itself.
        assert_eq!(enc("text/plain; charset=windows-1254", "€"), [0x80]);
    }

    #[test]
    fn tis_620_and_iso_8859_11_are_not_windows_874() {
        assert_eq!(ct("text/plain; charset=TIS-620"), Ok(Charset::Thai { iso: false }));
        assert_eq!(ct("text/plain; charset=iso-8859-11"), Ok(Charset::Thai { iso: true }));
        // ก (U+0E01) is 0xA1, ฿ (U+0E3F) 0xDF, ๛ (U+0E5B) 0xFB; no euro or curly quotes
        // (windows-874's 0x80, 0x93); U+0E3B..U+0E3E are unassigned.
        assert_eq!(
            enc("text/plain; charset=TIS-620", "กฺ฿๛€“\u{E3B}"),
            [0xA1, 0xDA, 0xDF, 0xFB, b'?', b'?', b'?']
        );
        // ISO-8859-11 adds the C1 controls and the no-break space; TIS-620 has neither.
        assert_eq!(enc("text/plain; charset=ISO-8859-11", "\u{85}\u{A0}ก"), [0x85, 0xA0, 0xA1]);
        assert_eq!(enc("text/plain; charset=TIS-620", "\u{85}\u{A0}"), b"??");
        // Decoded back by encoding_rs's windows-874, which agrees on 0xA1..=0xFB.
        let thai = "สวัสดีครับ ๑๒๓";
        let bytes = enc("text/plain; charset=TIS-620", thai);
        let (decoded, had_errors) = encoding_rs::WINDOWS_874.decode_without_bom_handling(&bytes);
        assert!(!had_errors);
        assert_eq!(decoded, thai);
        assert_eq!(enc("text/plain; charset=windows-874", "€"), [0x80]);
    }

    #[test]
    fn ucs_2_labels_are_big_endian_and_bmp_only() {
        for label in ["ISO-10646-UCS-2", "csUnicode", "ucs-2", "unicode"] {
            assert_eq!(ct(&format!("text/plain; charset={label}")), Ok(Charset::Ucs2), "{label}");
            assert_eq!(enc(&format!("text/plain; charset={label}"), "a€"), [0, 0x61, 0x20, 0xAC]);
        }
        // Beyond U+FFFF: no surrogate pairs in UCS-2.
        assert_eq!(enc("text/plain; charset=ucs-2", "a😀"), [0, 0x61, 0, b'?']);
    }

    #[test]
    fn iso_2022_jp() {
        let label = "text/plain; charset=ISO-2022-JP";
        assert_eq!(
            enc(label, "a日本"),
            b"a\x1B$B\x46\x7C\x4B\x5C\x1B(B",
            "must end in the ASCII state"
        );
        // Unmappable inside the JIS X 0208 state: the encoder returns to
        // ASCII before the `?`.
        assert_eq!(enc(label, "日😀本"), b"\x1B$B\x46\x7C\x1B(B?\x1B$B\x4B\x5C\x1B(B");
        // ESC itself is unmappable.
        assert_eq!(enc(label, "a\x1Bb"), b"a?b");

        let text = "aé日本b😀ｶﾀｶﾅ¥~";
        let bytes = enc(label, text);
        let (decoded, had_errors) = encoding_rs::ISO_2022_JP.decode_without_bom_handling(&bytes);
        assert!(!had_errors);
        assert_eq!(decoded, "a?日本b?カタカナ¥~");
    }

    #[test]
    fn other_encodings() {
        assert_eq!(enc("text/plain; charset=euc-kr", "한"), [0xC7, 0xD1]);
        assert_eq!(enc("text/plain; charset=gbk", "中€😀"), [0xD6, 0xD0, 0x80, b'?']);
        assert_eq!(enc("text/plain; charset=big5", "中"), [0xA4, 0xA4]);
        assert_eq!(enc("text/plain; charset=x-user-defined", "a\u{F780}é"), [b'a', 0x80, b'?']);
        // gb18030 can encode everything.
        assert_eq!(enc("text/plain; charset=gb18030", "😀"), [0x94, 0x39, 0xFC, 0x36]);
    }

    #[test]
    fn long_text_with_many_unmappables() {
        let text = "日😀".repeat(1000);
        let bytes = enc("text/plain; charset=shift_jis", &text);
        assert_eq!(bytes, [0x93, 0xFA, b'?'].repeat(1000));
        let bytes = enc("text/plain; charset=iso-2022-jp", &text);
        let (decoded, _) = encoding_rs::ISO_2022_JP.decode_without_bom_handling(&bytes);
        assert_eq!(decoded, "日?".repeat(1000));
    }

    #[test]
    fn unknown_and_replacement_labels_are_errors() {
        assert_eq!(ct("text/plain; charset=\" X-Nope \""), Err("X-Nope".to_owned()));
        assert_eq!(ct("text/plain; charset=ISO-2022-KR"), Err("ISO-2022-KR".to_owned()));
        assert_eq!(ct("text/plain; charset=replacement"), Err("replacement".to_owned()));
        // Non-UTF-8 bytes in the header value.
        let value = HeaderValue::from_bytes(b"text/plain; charset=l\xE9").unwrap();
        assert_eq!(Charset::from_content_type(Some(&value)), Err("l\u{FFFD}".to_owned()));
    }

    #[test]
    fn names() {
        assert_eq!(Charset::Utf8.name(), "UTF-8");
        assert_eq!(Charset::Utf16Be.name(), "UTF-16BE");
        assert_eq!(Charset::Utf16Le.name(), "UTF-16LE");
        assert_eq!(Charset::Latin1.name(), "ISO-8859-1");
        assert_eq!(Charset::Ascii.name(), "US-ASCII");
        assert_eq!(Charset::Latin5.name(), "ISO-8859-9");
        assert_eq!(Charset::Thai { iso: false }.name(), "TIS-620");
        assert_eq!(Charset::Ucs2.name(), "ISO-10646-UCS-2");
        assert_eq!(ct("text/plain; charset=sjis").unwrap().name(), "Shift_JIS");
        assert_eq!(ct("text/plain; charset=cp1252").unwrap().name(), "windows-1252");
    }
}
