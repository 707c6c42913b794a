//! `enrich.email`: normalises an address and says what it is: valid or not (and why), its
//! domain, and whether that is a free-mail provider, a disposable domain or a role mailbox.
//!
//! Normalising trims the address, lowercases both parts and writes the domain in ASCII, with
//! internationalised labels in punycode (UTS #46). The local part is lowercased too although
//! RFC 5321 lets a server tell `Ada@` from `ada@`: no mainstream provider does, and a lead must
//! have one key to be deduplicated by. Dots and `+tags` are kept, because only some providers
//! ignore them. An invalid address is an answer, not an error: `valid: false` with a `reason`.
//! The output is described in `docs/nodes.md`.

use std::collections::HashSet;
use std::sync::LazyLock;

use async_trait::async_trait;
use idna::uts46::{AsciiDenyList, DnsLength, Hyphens, Uts46};
use serde_json::{Value, json};

use super::config::{Fields, Phase, Read, describe, rendered};
use crate::{ConfigError, Node, NodeContext, NodeError};

/// Normalises and classifies an email address; its `with` block is `{email}`.
#[derive(Debug, Clone, Copy, Default)]
pub struct EnrichEmail;

const KEYS: [&str; 1] = ["email"];

/// RFC 5321 limits: a local part of 64 octets, a path of 256 octets including its angle
/// brackets, hence 254 for the address, and 255 for a domain, of which 253 are written.
const MAX_LOCAL_BYTES: usize = 64;
const MAX_ADDRESS_BYTES: usize = 254;
const MAX_DOMAIN_BYTES: usize = 253;
const MAX_LABEL_BYTES: usize = 63;

/// Printable ASCII that RFC 5322 allows in a dot-atom besides letters, digits and dots.
const ATEXT_SYMBOLS: &str = "!#$%&'*+-/=?^_`{|}~";

/// The embedded lists, parsed on first use.
struct Lists {
    free_mail: HashSet<&'static str>,
    disposable: HashSet<&'static str>,
    roles: HashSet<&'static str>,
}

static LISTS: LazyLock<Lists> = LazyLock::new(|| Lists {
    free_mail: entries(FREE_MAIL).collect(),
    disposable: entries(DISPOSABLE).collect(),
    roles: entries(ROLES).collect(),
});

const FREE_MAIL: &str = include_str!("../../data/free_email_domains.txt");
const DISPOSABLE: &str = include_str!("../../data/disposable_email_domains.txt");
const ROLES: &str = include_str!("../../data/role_local_parts.txt");

/// The entries of a data file: trimmed lines, without blank lines and `#` comments.
fn entries(text: &'static str) -> impl Iterator<Item = &'static str> {
    text.lines()
        .map(str::trim)
        .filter(|line| !line.is_empty() && !line.starts_with('#'))
}

/// Why an address is not valid; its code is the output's `reason`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Reason {
    Empty,
    MissingAt,
    MultipleAt,
    LocalEmpty,
    LocalTooLong,
    LocalInvalid,
    DomainEmpty,
    DomainInvalid,
    DomainTooLong,
    DomainTldInvalid,
    TooLong,
}

impl Reason {
    pub(super) fn code(self) -> &'static str {
        match self {
            Reason::Empty => "empty",
            Reason::MissingAt => "missing_at",
            Reason::MultipleAt => "multiple_at",
            Reason::LocalEmpty => "local_empty",
            Reason::LocalTooLong => "local_too_long",
            Reason::LocalInvalid => "local_invalid",
            Reason::DomainEmpty => "domain_empty",
            Reason::DomainInvalid => "domain_invalid",
            Reason::DomainTooLong => "domain_too_long",
            Reason::DomainTldInvalid => "domain_tld_invalid",
            Reason::TooLong => "too_long",
        }
    }
}

/// A valid address, normalised.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct Address {
    /// Lowercase.
    pub(super) local: String,
    /// Lowercase ASCII; internationalised labels in punycode (`xn--…`).
    pub(super) domain: String,
    /// The same domain with punycode labels decoded, for showing to people.
    pub(super) domain_unicode: String,
}

#[async_trait]
impl Node for EnrichEmail {
    fn check_config(&self, with: &Value) -> Result<(), ConfigError> {
        read(Phase::Load, with).map(drop)
    }

    async fn execute(&self, _ctx: &NodeContext, with: Value) -> Result<Value, NodeError> {
        let email = rendered(read(Phase::Run, &with))?;
        Ok(enrich(email.as_deref()))
    }
}

/// The `email` to enrich: a string, or null for a lead without one (reported as `empty`).
fn read(phase: Phase, with: &Value) -> Read<Option<String>> {
    if phase.is_pending(with) {
        return Ok(None);
    }
    let fields = Fields::read(with, "", "a map with the key `email`")?;
    fields.only(&KEYS)?;
    let email = fields.required("email")?;
    if phase.is_pending(email) {
        return Ok(None);
    }
    match email {
        Value::String(text) => Ok(Some(Some(text.clone()))),
        Value::Null => Ok(Some(None)),
        other => Err(ConfigError::new(
            "email",
            format!("expected an email address, found {}", describe(other)),
        )),
    }
}

/// The node's output for one address.
fn enrich(email: Option<&str>) -> Value {
    let trimmed = email.map(str::trim);
    match parse(trimmed.unwrap_or_default()) {
        Ok(address) => {
            let lists = &*LISTS;
            json!({
                "email": format!("{}@{}", address.local, address.domain),
                "valid": true,
                "reason": null,
                "local": address.local,
                "domain": address.domain,
                "domain_unicode": address.domain_unicode,
                "free_mail": lists.free_mail.contains(address.domain.as_str()),
                "disposable": is_disposable(&lists.disposable, &address.domain),
                "role": lists.roles.contains(without_tag(&address.local)),
            })
        }
        Err(invalid) => json!({
            "email": trimmed,
            "valid": false,
            "reason": invalid.code(),
            "local": null,
            "domain": null,
            "domain_unicode": null,
            "free_mail": null,
            "disposable": null,
            "role": null,
        }),
    }
}

/// A dot-atom local part (RFC 5322, with UTF-8 as RFC 6531 allows) at a DNS domain. Quoted
/// local parts, comments and address literals (`[192.0.2.1]`) are refused: they are legal but
/// no lead form produces them on purpose.
pub(super) fn parse(text: &str) -> Result<Address, Reason> {
    if text.is_empty() {
        return Err(Reason::Empty);
    }
    // Refused before any Unicode processing, so a huge value costs nothing.
    if text.len() > 4 * MAX_ADDRESS_BYTES {
        return Err(Reason::TooLong);
    }
    let (local, domain) = match text.split('@').collect::<Vec<_>>()[..] {
        [_] => return Err(Reason::MissingAt),
        [local, domain] => (local, domain),
        _ => return Err(Reason::MultipleAt),
    };
    check_local(local)?;
    let domain = ascii_domain(domain)?;
    let local = local.to_lowercase();
    if local.len() + 1 + domain.len() > MAX_ADDRESS_BYTES {
        return Err(Reason::TooLong);
    }
    let (domain_unicode, _) = Uts46::new().to_unicode(
        domain.as_bytes(),
        AsciiDenyList::STD3,
        Hyphens::CheckFirstLast,
    );
    Ok(Address {
        local,
        domain_unicode: domain_unicode.into_owned(),
        domain,
    })
}

fn check_local(local: &str) -> Result<(), Reason> {
    if local.is_empty() {
        return Err(Reason::LocalEmpty);
    }
    if local.len() > MAX_LOCAL_BYTES {
        return Err(Reason::LocalTooLong);
    }
    let allowed = |c: char| {
        if c.is_ascii() {
            c.is_ascii_alphanumeric() || c == '.' || ATEXT_SYMBOLS.contains(c)
        } else {
            !c.is_control() && !c.is_whitespace()
        }
    };
    let dots_ok = !local.starts_with('.') && !local.ends_with('.') && !local.contains("..");
    if dots_ok && local.chars().all(allowed) {
        Ok(())
    } else {
        Err(Reason::LocalInvalid)
    }
}

/// The domain in lowercase ASCII: mapped and punycoded by UTS #46 with the STD3 rules
/// (letters, digits and hyphens), then held to DNS lengths and a plausible top-level domain.
pub(super) fn ascii_domain(domain: &str) -> Result<String, Reason> {
    if domain.is_empty() {
        return Err(Reason::DomainEmpty);
    }
    let ascii = Uts46::new()
        .to_ascii(
            domain.as_bytes(),
            AsciiDenyList::STD3,
            Hyphens::CheckFirstLast,
            DnsLength::Ignore,
        )
        .map_err(|_| Reason::DomainInvalid)?
        .into_owned();
    let labels: Vec<&str> = ascii.split('.').collect();
    if labels.iter().any(|label| label.is_empty()) {
        return Err(Reason::DomainInvalid);
    }
    if ascii.len() > MAX_DOMAIN_BYTES || labels.iter().any(|label| label.len() > MAX_LABEL_BYTES) {
        return Err(Reason::DomainTooLong);
    }
    // A single label is a local host name; an all-digit last label is an IP address.
    let tld = labels.last().copied().unwrap_or_default();
    if labels.len() < 2 || tld.len() < 2 || tld.bytes().all(|byte| byte.is_ascii_digit()) {
        return Err(Reason::DomainTldInvalid);
    }
    Ok(ascii)
}

/// Whether a normalised domain is a free-mail provider's, where addresses are people's, not a
/// company's (`leads.upsert` keeps no organisation for them).
pub(super) fn is_free_mail(domain: &str) -> bool {
    LISTS.free_mail.contains(domain)
}

/// Whether `domain` or one of its parent domains (not the top-level one) is listed.
fn is_disposable(listed: &HashSet<&'static str>, domain: &str) -> bool {
    let mut rest = domain;
    while rest.contains('.') {
        if listed.contains(rest) {
            return true;
        }
        rest = rest.split_once('.').map_or("", |(_, parent)| parent);
    }
    false
}

/// The local part without its sub-address: `sales+eu` is `sales`.
fn without_tag(local: &str) -> &str {
    local.split('+').next().unwrap_or(local)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::builtin::testing::context;

    fn parsed(text: &str) -> Result<(String, String, String), Reason> {
        parse(text).map(|address| (address.local, address.domain, address.domain_unicode))
    }

    #[test]
    fn normalises_valid_addresses() {
        let cases = [
            ("ada@example.com", "ada", "example.com", "example.com"),
            (
                "Ada.Lovelace@Example.COM",
                "ada.lovelace",
                "example.com",
                "example.com",
            ),
            (
                "a+tag@sub.example.co.uk",
                "a+tag",
                "sub.example.co.uk",
                "sub.example.co.uk",
            ),
            ("o'neil@example.ie", "o'neil", "example.ie", "example.ie"),
            (
                "x!#$%&*/=?^_`{|}~-y@example.org",
                "x!#$%&*/=?^_`{|}~-y",
                "example.org",
                "example.org",
            ),
            ("ada@bücher.de", "ada", "xn--bcher-kva.de", "bücher.de"),
            ("ada@BÜCHER.DE", "ada", "xn--bcher-kva.de", "bücher.de"),
            (
                "ada@xn--bcher-kva.de",
                "ada",
                "xn--bcher-kva.de",
                "bücher.de",
            ),
            ("info@例え.jp", "info", "xn--r8jz45g.jp", "例え.jp"),
            ("ada@münchen。de", "ada", "xn--mnchen-3ya.de", "münchen.de"),
            ("JÖRG@example.com", "jörg", "example.com", "example.com"),
            ("ada@my-company.io", "ada", "my-company.io", "my-company.io"),
            ("1@2.example", "1", "2.example", "2.example"),
        ];
        for (input, local, domain, unicode) in cases {
            let expected = (local.to_owned(), domain.to_owned(), unicode.to_owned());
            assert_eq!(parsed(input), Ok(expected), "for {input}");
        }
    }

    #[test]
    fn says_why_an_address_is_invalid() {
        let long_local = format!("{}@example.com", "a".repeat(65));
        let long_label = format!("ada@{}.com", "a".repeat(64));
        let long_domain = format!("ada@{}com", "abcdefghi.".repeat(26));
        let long_address = format!("{}@{}com", "a".repeat(64), "abcdefghi.".repeat(19));
        let huge = "a".repeat(5000);
        let cases = [
            ("", Reason::Empty),
            ("ada.example.com", Reason::MissingAt),
            ("ada@@example.com", Reason::MultipleAt),
            ("\"a@b\"@example.com", Reason::MultipleAt),
            ("@example.com", Reason::LocalEmpty),
            (long_local.as_str(), Reason::LocalTooLong),
            (".ada@example.com", Reason::LocalInvalid),
            ("ada.@example.com", Reason::LocalInvalid),
            ("a..da@example.com", Reason::LocalInvalid),
            ("a da@example.com", Reason::LocalInvalid),
            ("\"ada\"@example.com", Reason::LocalInvalid),
            ("ada(comment)@example.com", Reason::LocalInvalid),
            ("a\u{7}@example.com", Reason::LocalInvalid),
            ("ada@", Reason::DomainEmpty),
            ("ada@exa mple.com", Reason::DomainInvalid),
            ("ada@exa_mple.com", Reason::DomainInvalid),
            ("ada@-example.com", Reason::DomainInvalid),
            ("ada@example-.com", Reason::DomainInvalid),
            ("ada@example..com", Reason::DomainInvalid),
            ("ada@.example.com", Reason::DomainInvalid),
            ("ada@example.com.", Reason::DomainInvalid),
            ("ada@[192.0.2.1]", Reason::DomainInvalid),
            ("ada@xn--zz.com", Reason::DomainInvalid),
            (long_label.as_str(), Reason::DomainTooLong),
            (long_domain.as_str(), Reason::DomainTooLong),
            ("ada@localhost", Reason::DomainTldInvalid),
            ("ada@192.168.0.1", Reason::DomainTldInvalid),
            ("ada@example.c", Reason::DomainTldInvalid),
            (long_address.as_str(), Reason::TooLong),
            (huge.as_str(), Reason::TooLong),
        ];
        for (input, invalid) in cases {
            assert_eq!(parsed(input), Err(invalid), "for {input}");
        }
    }

    #[test]
    fn classifies_the_domain_and_the_local_part() {
        let cases = [
            // (address, free_mail, disposable, role)
            ("ada@gmail.com", true, false, false),
            ("Ada@GoogleMail.com", true, false, false),
            ("ada@acme.com", false, false, false),
            ("ada@mailinator.com", false, true, false),
            ("ada@inbox.mailinator.com", false, true, false),
            ("ada@notmailinator.org", false, false, false),
            ("ada@gmail.com.evil.example", false, false, false),
            ("info@acme.com", false, false, true),
            ("Sales+EU@acme.com", false, false, true),
            ("no-reply@acme.com", false, false, true),
            ("support@gmail.com", true, false, true),
            ("salesperson@acme.com", false, false, false),
            ("+info@acme.com", false, false, false),
        ];
        for (input, free_mail, disposable, role) in cases {
            let output = enrich(Some(input));
            let flags = (&output["free_mail"], &output["disposable"], &output["role"]);
            let expected = (&json!(free_mail), &json!(disposable), &json!(role));
            assert_eq!(flags, expected, "for {input}");
        }
    }

    #[tokio::test]
    async fn outputs_the_documented_shape() {
        let with = json!({"email": "  Info@Bücher.DE "});
        let output = EnrichEmail
            .execute(&context(), with)
            .await
            .expect("an output");
        assert_eq!(
            output,
            json!({
                "email": "info@xn--bcher-kva.de",
                "valid": true,
                "reason": null,
                "local": "info",
                "domain": "xn--bcher-kva.de",
                "domain_unicode": "bücher.de",
                "free_mail": false,
                "disposable": false,
                "role": true,
            })
        );
        let invalid = EnrichEmail
            .execute(&context(), json!({"email": " Ada(at)Example.com "}))
            .await;
        assert_eq!(
            invalid.expect("an output"),
            json!({
                "email": "Ada(at)Example.com",
                "valid": false,
                "reason": "missing_at",
                "local": null,
                "domain": null,
                "domain_unicode": null,
                "free_mail": null,
                "disposable": null,
                "role": null,
            })
        );
        let missing = EnrichEmail
            .execute(&context(), json!({"email": null}))
            .await;
        let missing = missing.expect("an output");
        assert_eq!(
            (&missing["email"], &missing["reason"]),
            (&json!(null), &json!("empty"))
        );
        let blank = EnrichEmail
            .execute(&context(), json!({"email": "   "}))
            .await;
        assert_eq!(blank.expect("an output")["reason"], json!("empty"));
    }

    #[tokio::test]
    async fn a_rendered_value_that_is_not_text_fails_for_good() {
        let error = EnrichEmail
            .execute(&context(), json!({"email": {"address": "a@b.co"}}))
            .await
            .expect_err("not an address");
        assert!(!error.is_retryable());
        assert_eq!(
            error.message,
            "`with.email`: expected an email address, found a map"
        );
    }

    #[test]
    fn check_config_accepts_text_templates_and_null() {
        for email in [
            json!("ada@example.com"),
            json!("{{ trigger.body.email }}"),
            json!(null),
            json!("not valid"),
        ] {
            assert_eq!(
                EnrichEmail.check_config(&json!({"email": email})),
                Ok(()),
                "for {email}"
            );
        }
        let cases = [
            (json!({}), "email", "missing required key `email`"),
            (
                json!({"email": 1}),
                "email",
                "expected an email address, found the number 1",
            ),
            (
                json!({"email": "a@b.co", "strict": true}),
                "strict",
                "unknown key `strict`; expected one of email",
            ),
            (
                json!(["a@b.co"]),
                "",
                "expected a map with the key `email`, found a list",
            ),
        ];
        for (with, path, message) in cases {
            let error = EnrichEmail.check_config(&with).expect_err("a bad block");
            assert_eq!(
                (error.path.as_str(), error.message.as_str()),
                (path, message),
                "for {with}"
            );
        }
    }

    /// Every entry of a data file, with its line number, for the sanity checks.
    fn lines(text: &'static str) -> Vec<(usize, &'static str)> {
        text.lines()
            .enumerate()
            .map(|(index, line)| (index + 1, line.trim()))
            .filter(|(_, line)| !line.is_empty() && !line.starts_with('#'))
            .collect()
    }

    fn assert_listed_once(name: &str, text: &'static str) {
        let mut seen = HashSet::new();
        for (line, entry) in lines(text) {
            assert!(
                seen.insert(entry),
                "{name}:{line}: `{entry}` is listed twice"
            );
            assert_eq!(entry, entry.to_lowercase(), "{name}:{line}: not lowercase");
        }
    }

    #[test]
    fn domain_lists_hold_distinct_lowercase_domains() {
        for (name, text) in [
            ("free_email_domains.txt", FREE_MAIL),
            ("disposable_email_domains.txt", DISPOSABLE),
        ] {
            assert_listed_once(name, text);
            for (line, entry) in lines(text) {
                assert_eq!(
                    ascii_domain(entry).as_deref(),
                    Ok(entry),
                    "{name}:{line}: not a normalised domain"
                );
            }
        }
        let free: HashSet<&str> = entries(FREE_MAIL).collect();
        let both: Vec<&str> = entries(DISPOSABLE)
            .filter(|domain| free.contains(domain))
            .collect();
        assert_eq!(
            both,
            Vec::<&str>::new(),
            "domains listed as free-mail and disposable"
        );
        assert!(LISTS.free_mail.len() >= 150 && LISTS.disposable.len() >= 250);
    }

    #[test]
    fn role_list_holds_distinct_valid_local_parts() {
        assert_listed_once("role_local_parts.txt", ROLES);
        for (line, entry) in lines(ROLES) {
            assert_eq!(
                check_local(entry),
                Ok(()),
                "role_local_parts.txt:{line}: not a local part"
            );
            assert!(
                !entry.contains('+'),
                "role_local_parts.txt:{line}: tags are stripped before matching"
            );
        }
        assert!(LISTS.roles.contains("info") && LISTS.roles.contains("sales"));
    }

    #[test]
    fn sorted_lists_stay_sorted() {
        for (name, text) in [
            ("disposable_email_domains.txt", DISPOSABLE),
            ("role_local_parts.txt", ROLES),
        ] {
            let entries: Vec<&str> = entries(text).collect();
            let mut sorted = entries.clone();
            sorted.sort_unstable();
            assert_eq!(entries, sorted, "{name} is not sorted");
        }
    }
}
