//! Unit tests of redaction: every encoded form, the secrets a template reads, derived values.

use std::collections::BTreeMap;

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use serde_json::json;

use super::*;

const TOKEN: &str = "s3cr3t/Tok+en&'x";
const OTHER: &str = "another-secret-value";

fn redaction() -> Redaction {
    Redaction::new(&Secrets::new(BTreeMap::from([
        ("TOKEN".to_owned(), TOKEN.to_owned()),
        ("OTHER".to_owned(), OTHER.to_owned()),
        ("EMPTY".to_owned(), String::new()),
    ])))
}

fn all(redaction: &Redaction) -> SecretUse {
    redaction.read_by(&[], &["{{ secrets | tojson }}"])
}

fn redacted(text: &str) -> String {
    let redaction = redaction();
    redaction.text(text, &all(&redaction)).into_owned()
}

#[test]
fn the_value_itself_in_any_ascii_case() {
    assert_eq!(redacted(&format!("a {TOKEN} b")), "a [redacted] b");
    assert_eq!(redacted(&TOKEN.to_uppercase()), "[redacted]");
    assert_eq!(
        redacted(&format!("x{}y", TOKEN.to_lowercase())),
        "x[redacted]y"
    );
}

#[test]
fn percent_encoding_in_both_styles_and_hex_cases() {
    // encodeURIComponent style, upper-case hex.
    assert_eq!(
        redacted("?t=s3cr3t%2FTok%2Ben%26%27x&u=1"),
        "?t=[redacted]&u=1"
    );
    // Lower-case hex, some characters left as they are.
    assert_eq!(redacted("s3cr3t%2fTok%2ben&%27x"), "[redacted]");
    // Every character escaped.
    let every: String = TOKEN.bytes().map(|b| format!("%{b:02X}")).collect();
    assert_eq!(redacted(&format!("q={every}")), "q=[redacted]");
    // Form encoding writes spaces as `+` (and `%20` in the other style).
    let redaction = Redaction::new(&Secrets::new(BTreeMap::from([(
        "PHRASE".to_owned(),
        "correct horse battery".to_owned(),
    )])));
    let used = redaction.read_by(&[], &["{{ secrets.PHRASE }}"]);
    for text in ["correct+horse+battery", "correct%20horse%20battery"] {
        assert_eq!(redaction.text(text, &used), "[redacted]", "{text}");
    }
}

#[test]
fn json_and_html_escaping() {
    assert_eq!(
        redacted(r#"{"t":"s3cr3t\/Tok+en&'x"}"#),
        r#"{"t":"[redacted]"}"#
    );
    assert_eq!(
        redacted(r"s3cr3t\u002fTok\u002Ben\u0026\u0027x"),
        "[redacted]"
    );
    assert_eq!(
        redacted("<b>s3cr3t/Tok+en&amp;&#x27;x</b>"),
        "<b>[redacted]</b>"
    );
    assert_eq!(redacted("s3cr3t&#47;Tok+en&amp;&#39;x"), "[redacted]");
}

#[test]
fn base64_in_both_alphabets_at_every_alignment() {
    for prefix in ["", "u:", "us:", "user:"] {
        let payload = format!("{prefix}{OTHER}");
        for encoded in [STANDARD.encode(&payload), URL_SAFE_NO_PAD.encode(&payload)] {
            assert_eq!(
                redacted(&format!("Basic {encoded}")),
                "Basic [redacted]",
                "{payload}"
            );
        }
    }
}

#[test]
fn only_the_secrets_a_template_reads_are_searched_for() {
    let redaction = redaction();
    let used = redaction.read_by(&[&json!({"h": "Bearer {{ secrets.OTHER }}"})], &[]);
    let text = format!("{TOKEN} {OTHER}");
    assert_eq!(redaction.text(&text, &used), format!("{TOKEN} [redacted]"));
    assert_eq!(redaction.text(&text, &SecretUse::none()), text);
}

#[test]
fn values_redact_nested_strings_and_keys_and_leave_other_text_alone() {
    let redaction = redaction();
    let value = json!({OTHER: ["Bearer another-secret-value", 1, {"x": "plain"}], "n": null});
    assert_eq!(
        redaction.value(value, &all(&redaction)),
        json!({"[redacted]": ["Bearer [redacted]", 1, {"x": "plain"}], "n": null})
    );
}

#[test]
fn derived_values_are_shown_as_stored_wherever_they_come_back() {
    let redaction = redaction();
    let used = redaction.read_by(&[], &["{{ secrets.OTHER }}"]);
    let real = json!({"v": "ANOTHER_SECRET_VALUE!", "short": "abc", "n": 3});
    let shown = json!({"v": "[REDACTED]!", "short": "xyz", "n": 3});
    let (stored, redactor) = compared(&redaction, used, real, Some(shown.clone()));
    assert_eq!(stored, shown);
    assert_eq!(
        redactor.value(json!({"echo": "got ANOTHER_SECRET_VALUE!", "short": "abc"})),
        json!({"echo": "got [REDACTED]!", "short": "abc"})
    );
    assert_eq!(
        redactor.text("failed: another-secret-value"),
        "failed: [redacted]"
    );
}

#[test]
fn a_failed_rendering_falls_back_to_searching_the_real_value() {
    let redaction = redaction();
    let used = redaction.read_by(&[], &["{{ secrets.OTHER }}"]);
    let (stored, _) = compared(&redaction, used, json!({"v": OTHER}), None);
    assert_eq!(stored, json!({"v": "[redacted]"}));
}

#[test]
fn redaction_of_a_megabyte_stays_cheap() {
    let redaction = redaction();
    let used = all(&redaction);
    let text = format!("{}{OTHER}{}", "a%b&c\\d ".repeat(130_000), "e".repeat(10));
    let started = std::time::Instant::now();
    let result = redaction.text(&text, &used);
    assert!(result.contains(REDACTED) && !result.contains(OTHER));
    // Debug build on a shared 2-core machine: generous, but quadratic work would blow it.
    assert!(started.elapsed() < std::time::Duration::from_secs(5));
}

#[test]
fn long_derived_values_are_left_to_the_needles() {
    let redaction = redaction();
    let used = redaction.read_by(&[], &["{{ secrets.OTHER }}"]);
    let body = "x".repeat(derived::MAX_DERIVED_LENGTH);
    let real = json!(format!("{body}{OTHER}"));
    let shown = json!(format!("{body}[redacted]"));
    let (_, redactor) = compared(&redaction, used, real.clone(), Some(shown.clone()));
    // Not recorded as derived (too long), yet the secret inside is still found.
    assert_eq!(redactor.value(real), shown);
    let reversed: String = OTHER.chars().rev().collect();
    assert_eq!(
        redactor.value(json!(format!("{body}{reversed}"))),
        json!(format!("{body}{reversed}"))
    );
}

#[test]
fn two_secrets_with_one_value_are_each_found() {
    let redaction = Redaction::new(&Secrets::new(BTreeMap::from([
        ("A".to_owned(), "same-value-1".to_owned()),
        ("B".to_owned(), "same-value-1".to_owned()),
    ])));
    for text in ["{{ secrets.A }}", "{{ secrets.B }}"] {
        let used = redaction.read_by(&[], &[text]);
        assert_eq!(
            redaction.text("x same-value-1", &used),
            "x [redacted]",
            "{text}"
        );
    }
}
