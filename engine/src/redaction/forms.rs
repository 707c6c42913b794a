//! The encoded forms of a secret that redaction searches for directly. Percent-encoding, HTML
//! entities and JSON escapes are not listed here: they are decoded out of the text instead (see
//! [`super::views`]), which catches every mix of escaped and literal characters.

use base64::Engine as _;
use base64::engine::GeneralPurpose;
use base64::engine::general_purpose::{STANDARD_NO_PAD, URL_SAFE_NO_PAD};

/// How a needle relates to the secret it stands for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Form {
    /// The value itself, or with spaces written as `+` (form encoding).
    Plain,
    /// A run of base64 characters that only the secret's bytes determine.
    Base64,
}

/// Every needle for one secret. Matching is ASCII case-insensitive, so `upper`/`lower` of the
/// value and both hex cases need no needle of their own.
pub fn needles(secret: &str) -> Vec<(Vec<u8>, Form)> {
    if secret.is_empty() {
        return Vec::new();
    }
    let mut needles = vec![(secret.as_bytes().to_vec(), Form::Plain)];
    if secret.contains(' ') {
        needles.push((secret.replace(' ', "+").into_bytes(), Form::Plain));
    }
    for engine in [&STANDARD_NO_PAD, &URL_SAFE_NO_PAD] {
        for offset in 0..3 {
            if let Some(core) = base64_core(engine, secret.as_bytes(), offset) {
                needles.push((core, Form::Base64));
            }
        }
    }
    needles.sort();
    needles.dedup();
    needles
}

/// The base64 characters that depend only on `secret` when it starts `offset` bytes into a
/// 3-byte group of a longer payload (such as `user:password` in HTTP Basic). The characters
/// that mix in bits of the bytes before or after it are left out: they differ per payload.
fn base64_core(engine: &GeneralPurpose, secret: &[u8], offset: usize) -> Option<Vec<u8>> {
    let mut shifted = vec![0; offset];
    shifted.extend_from_slice(secret);
    let encoded = engine.encode(&shifted);
    let first = (offset * 8).div_ceil(6);
    let end = shifted.len() * 8 / 6;
    (end > first).then(|| encoded.as_bytes()[first..end].to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::engine::general_purpose::STANDARD;

    fn contains(haystack: &str, needle: &[u8]) -> bool {
        haystack
            .as_bytes()
            .windows(needle.len())
            .any(|w| w == needle)
    }

    #[test]
    fn a_base64_core_is_found_at_every_alignment_and_in_both_alphabets() {
        let secret = "p4ss~w?rd>>";
        let cores: Vec<Vec<u8>> = needles(secret)
            .into_iter()
            .filter(|(_, form)| *form == Form::Base64)
            .map(|(needle, _)| needle)
            .collect();
        for prefix in ["", "u:", "us:", "user:"] {
            for suffix in ["", "x", "xy"] {
                let payload = format!("{prefix}{secret}{suffix}");
                for encoded in [STANDARD.encode(&payload), URL_SAFE_NO_PAD.encode(&payload)] {
                    assert!(
                        cores.iter().any(|core| contains(&encoded, core)),
                        "{payload:?} as {encoded} has no core"
                    );
                }
            }
        }
    }

    #[test]
    fn spaces_also_appear_as_plus_and_empty_values_have_no_needles() {
        let needles = needles("two words here");
        assert!(needles.contains(&(b"two+words+here".to_vec(), Form::Plain)));
        assert!(super::needles("").is_empty());
    }
}
