//! Normalising what is looked up. The normal form is also the cache key, so `Stripe.com`,
//! `https://www.stripe.com/` and `stripe.com` cost one lookup.

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
    ascii_host(host, text)
}

/// A host name in lowercase ASCII, checked; `text` is what the user gave, for messages.
fn ascii_host(host: &str, text: &str) -> Result<String, String> {
    let host = host.trim_end_matches('.');
    if host.is_empty() {
        return Err("the domain is empty".into());
    }
    let ascii = idna::domain_to_ascii(host).map_err(|_| not_a_domain(text))?;
    let characters_ok = ascii
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.');
    if !characters_ok || !ascii.contains('.') || ascii.split('.').any(str::is_empty) {
        return Err(not_a_domain(text));
    }
    Ok(ascii)
}

fn not_a_domain(text: &str) -> String {
    format!("`{}` is not a domain name such as example.com", text.trim())
}

/// An email address, trimmed and lowercased, its domain in ASCII. Only the shape is checked;
/// `enrich.email` says more about an address.
pub(in crate::builtin) fn normalise_email(text: &str) -> Result<String, String> {
    let lower = text.trim().to_lowercase();
    let not_an_email = || format!("`{}` is not an email address", text.trim());
    let (local, domain) = lower.rsplit_once('@').ok_or_else(not_an_email)?;
    if local.is_empty() || local.contains('@') || local.contains(char::is_whitespace) {
        return Err(not_an_email());
    }
    let domain = ascii_host(domain, text).map_err(|_| not_an_email())?;
    Ok(format!("{local}@{domain}"))
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
