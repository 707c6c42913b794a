//! Reading provider bodies leniently: a field that is missing, null, empty or of another type
//! than expected reads as absent, because providers leave out what they do not know and a lead
//! is better enriched partly than not at all.

use serde_json::Value;

/// A non-empty string at a JSON pointer (`/geo/city`), trimmed.
pub(in crate::builtin) fn text_at(value: &Value, pointer: &str) -> Option<String> {
    value
        .pointer(pointer)
        .and_then(Value::as_str)
        .map(str::trim)
        .filter(|text| !text.is_empty())
        .map(str::to_owned)
}

/// The non-empty strings of a list at a JSON pointer.
pub(in crate::builtin) fn texts_at(value: &Value, pointer: &str) -> Vec<String> {
    let Some(items) = value.pointer(pointer).and_then(Value::as_array) else {
        return Vec::new();
    };
    items
        .iter()
        .filter_map(Value::as_str)
        .map(str::trim)
        .filter(|text| !text.is_empty())
        .map(str::to_owned)
        .collect()
}

/// A whole, non-negative number at a JSON pointer.
pub(in crate::builtin) fn count_at(value: &Value, pointer: &str) -> Option<u64> {
    value.pointer(pointer).and_then(Value::as_u64)
}

/// Any finite number at a JSON pointer.
pub(in crate::builtin) fn number_at(value: &Value, pointer: &str) -> Option<f64> {
    value
        .pointer(pointer)
        .and_then(Value::as_f64)
        .filter(|number| number.is_finite())
}

/// A LinkedIn profile as a URL: Clearbit gives a handle (`company/stripe`, `in/ada`), Hunter a
/// URL.
pub(in crate::builtin) fn linkedin_url(handle: Option<String>) -> Option<String> {
    let handle = handle?;
    if handle.starts_with("http://") || handle.starts_with("https://") {
        return Some(handle);
    }
    Some(format!(
        "https://www.linkedin.com/{}",
        handle.trim_start_matches('/')
    ))
}

/// An ISO 3166-1 alpha-2 code in capitals; anything else is not a code and reads as absent.
pub(in crate::builtin) fn country_code(code: Option<String>) -> Option<String> {
    code.filter(|code| code.len() == 2 && code.chars().all(|c| c.is_ascii_alphabetic()))
        .map(|code| code.to_ascii_uppercase())
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn absent_and_empty_values_read_as_absent() {
        let value = json!({"a": {"b": " x ", "empty": "", "n": 3, "list": ["t", "", 1, " u"]}});
        assert_eq!(text_at(&value, "/a/b"), Some("x".into()));
        assert_eq!(text_at(&value, "/a/empty"), None);
        assert_eq!(text_at(&value, "/a/n"), None);
        assert_eq!(text_at(&value, "/missing/b"), None);
        assert_eq!(texts_at(&value, "/a/list"), ["t", "u"]);
        assert!(texts_at(&value, "/a/b").is_empty());
        assert_eq!(count_at(&value, "/a/n"), Some(3));
        assert_eq!(count_at(&value, "/a/b"), None);
        assert_eq!(number_at(&value, "/a/n"), Some(3.0));
    }

    #[test]
    fn normalises_links_and_countries() {
        let url = linkedin_url(Some("company/stripe".into()));
        assert_eq!(
            url.as_deref(),
            Some("https://www.linkedin.com/company/stripe")
        );
        let given = "https://linkedin.com/in/ada".to_owned();
        assert_eq!(linkedin_url(Some(given.clone())), Some(given));
        assert_eq!(linkedin_url(None), None);
        assert_eq!(country_code(Some("us".into())).as_deref(), Some("US"));
        assert_eq!(country_code(Some("United States".into())), None);
    }
}
