//! Normalising what is looked up. The normal form is also the cache key, so `Stripe.com`,
//! `https://www.stripe.com/` and `stripe.com` cost one lookup.

use crate::builtin::enrich_email::{ascii_domain, parse};

/// A domain in lowercase ASCII (internationalised labels in punycode), without scheme, `www.`,
/// port, path or trailing dot.
pub(in crate::builtin) fn normalise_domain(text: &str) -> Result<String, String> {
    let lower = text.trim().to_lowercase();
    let without_scheme = ["https://", "http://"]
        .iter()
        .find_map(|scheme| lower.strip_prefix(scheme))
        .unwrap_or(&lower);
    let host = without_scheme
        .split(['/', '?', '#', ':'])
        .next()
        .unwrap_or_default();
    let host = host.strip_prefix("www.").unwrap_or(host);
    if host.contains('@') {
        return Err(format!(
            "expected a domain such as example.com, found the email address `{}`",
            text.trim()
        ));
    }
    let host = host.trim_end_matches('.');
    if host.is_empty() {
        return Err("the domain is empty".into());
    }
    // The same normal form `enrich.email` and `leads.upsert` give a domain.
    ascii_domain(host)
        .map_err(|_| format!("`{}` is not a domain name such as example.com", text.trim()))
}

/// An email address, trimmed and lowercased, its domain in ASCII: the normal form and checks of
/// `enrich.email`, so a lead has one cache key and one contact whichever node saw it first.
pub(in crate::builtin) fn normalise_email(text: &str) -> Result<String, String> {
    let address =
        parse(text.trim()).map_err(|_| format!("`{}` is not an email address", text.trim()))?;
    Ok(format!("{}@{}", address.local, address.domain))
}

/// A person's name as given, trimmed; it must not be empty.
pub(in crate::builtin) fn normalise_name(text: &str) -> Result<String, String> {
    let name = text.split_whitespace().collect::<Vec<_>>().join(" ");
    if name.is_empty() {
        return Err("the name is empty".into());
    }
    Ok(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn domains_have_one_spelling() {
        for text in [
            "stripe.com",
            " Stripe.COM ",
            "https://www.stripe.com/about?x=1",
            "http://stripe.com:443",
            "stripe.com.",
        ] {
            assert_eq!(
                normalise_domain(text).as_deref(),
                Ok("stripe.com"),
                "{text}"
            );
        }
        assert_eq!(
            normalise_domain("Bücher.de").as_deref(),
            Ok("xn--bcher-kva.de")
        );
    }

    #[test]
    fn rejects_what_is_not_a_domain() {
        for text in ["", "  ", "localhost", "a..b", "ex ample.com", "https://"] {
            assert!(normalise_domain(text).is_err(), "{text:?}");
        }
        let error = normalise_domain("ada@stripe.com").expect_err("an email");
        assert!(error.contains("found the email address"), "{error}");
    }

    #[test]
    fn emails_are_lowercased_with_a_normal_domain() {
        assert_eq!(
            normalise_email(" Ada@Stripe.COM ").as_deref(),
            Ok("ada@stripe.com")
        );
        for text in [
            "ada",
            "@stripe.com",
            "ada@",
            "a@b@c.com",
            "a b@c.com",
            "ada@localhost",
        ] {
            assert!(normalise_email(text).is_err(), "{text:?}");
        }
    }

    #[test]
    fn names_are_trimmed() {
        assert_eq!(normalise_name("  Mary  Ann ").as_deref(), Ok("Mary Ann"));
        assert!(normalise_name(" ").is_err());
    }
}
