//! The paging that the list endpoints share: the `limit` and `cursor` query parameters, read
//! from text so that each bad value gets its own message, and the `next_cursor` of a page.

use super::error::{Error, Result};
use crate::store::RunQuery;

/// The value of a query parameter; an empty one counts as absent, so `?status=` from a form
/// means no filter.
pub(super) fn non_empty(value: &Option<String>) -> Option<&str> {
    value.as_deref().filter(|text| !text.is_empty())
}

/// The page size: [`RunQuery::DEFAULT_LIMIT`] when absent, else a whole number from 1 to
/// [`RunQuery::MAX_LIMIT`] or 400.
pub(super) fn limit(value: &Option<String>) -> Result<u32> {
    let Some(text) = non_empty(value) else {
        return Ok(RunQuery::DEFAULT_LIMIT);
    };
    text.parse::<u32>()
        .ok()
        .filter(|limit| (1..=RunQuery::MAX_LIMIT).contains(limit))
        .ok_or_else(|| {
            Error::BadRequest(format!(
                "`limit` must be a whole number from 1 to {}; got `{text}`",
                RunQuery::MAX_LIMIT
            ))
        })
}

/// The id the page starts after, or 400 saying it must be `what` (`a run id`).
pub(super) fn cursor(value: &Option<String>, what: &str) -> Result<Option<String>> {
    let Some(text) = non_empty(value) else {
        return Ok(None);
    };
    uuid::Uuid::parse_str(text)
        .map_err(|_| Error::BadRequest(format!("`cursor` must be {what}; got `{text}`")))?;
    Ok(Some(text.to_owned()))
}

/// The cursor of the page after `page`: the id of its last item when the page is full and
/// `any_after(that id)` finds more, else `None`. `any_after` looks one item further; asking the
/// store for `limit + 1` instead would be clamped away at the largest page size.
pub(super) async fn next_cursor<Item>(
    page: &[Item],
    limit: u32,
    id: impl Fn(&Item) -> &str,
    any_after: impl AsyncFnOnce(String) -> Result<bool>,
) -> Result<Option<String>> {
    match page.last() {
        Some(last) if page.len() == limit as usize => {
            let last_id = id(last).to_owned();
            Ok(any_after(last_id.clone()).await?.then_some(last_id))
        }
        _ => Ok(None),
    }
}
