//! "Did you mean …?" for misspelt node types, node ids and timezones.

/// The longest word a suggestion is looked for.
const MAX_WORD: usize = 64;

/// The candidate closest to `word` by edit distance, if it is close enough to be a likely typo
/// (at most one edit per three characters, and at least one).
pub fn closest<'a>(word: &str, candidates: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    let length = word.chars().count();
    // Nobody misspells a 100-character name; the distance would cost length².
    if length > MAX_WORD {
        return None;
    }
    let limit = (length / 3).max(1);
    candidates
        .into_iter()
        // Lengths further apart than `limit` are further apart than `limit` edits.
        .filter(|candidate| candidate.chars().count().abs_diff(length) <= limit)
        .map(|candidate| {
            (
                distance(&word.to_lowercase(), &candidate.to_lowercase()),
                candidate,
            )
        })
        .filter(|(distance, _)| *distance <= limit)
        .min_by_key(|(distance, _)| *distance)
        .map(|(_, candidate)| candidate)
}

/// Levenshtein distance over characters.
fn distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut previous: Vec<usize> = (0..=b.len()).collect();
    for (i, a_char) in a.chars().enumerate() {
        let mut current = vec![i + 1; b.len() + 1];
        for (j, b_char) in b.iter().enumerate() {
            let substitution = previous[j] + usize::from(a_char != *b_char);
            current[j + 1] = substitution.min(previous[j + 1] + 1).min(current[j] + 1);
        }
        previous = current;
    }
    previous[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_likely_typos_only() {
        let kinds = ["http.request", "transform", "enrich.email"];
        assert_eq!(closest("transfrom", kinds), Some("transform"));
        assert_eq!(closest("enrich.emial", kinds), Some("enrich.email"));
        assert_eq!(closest("HTTP.request", kinds), Some("http.request"));
        assert_eq!(closest("slack", kinds), None);
        assert_eq!(
            closest("Europe/Berln", ["Europe/Berlin", "Europe/Bern"]),
            Some("Europe/Berlin")
        );
        assert_eq!(closest(&"a".repeat(65), ["a".repeat(65).as_str()]), None);
        assert_eq!(
            closest(&"a".repeat(64), ["a".repeat(63).as_str()]),
            Some("a".repeat(63).as_str())
        );
        assert_eq!(distance("kitten", "sitting"), 3);
        assert_eq!(distance("", "abc"), 3);
    }
}
