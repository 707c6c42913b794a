//! A node's output that is a JSON list, as templates see it: read from its stored text, with its
//! length known from an index of where each item is, and an item built only when a template
//! reads it. `{{ nodes.each.output | length }}` over the output of a `foreach` of a million
//! leads then costs the text the run already holds and 16 bytes an item, not a tree of it.

use std::ops::Range;
use std::sync::Arc;

use minijinja::value::{Enumerator, Object, ObjectRepr};
use serde_json::value::RawValue;

use crate::store::{Json, json};

/// A stored JSON list, item by item.
pub struct JsonList {
    text: Json,
    /// Where each item is in `text`.
    spans: Vec<Range<usize>>,
}

impl JsonList {
    /// The list `text` holds; `None` when it holds anything else (or nests deeper than the
    /// index reads: the caller then builds the value as a whole).
    pub fn of(text: &Json) -> Option<JsonList> {
        let whole = text.text();
        // Most outputs are not lists: tell them apart without a failed parse.
        if !whole.trim_start().starts_with('[') {
            return None;
        }
        let items: Vec<&RawValue> = serde_json::from_str(whole).ok()?;
        let base = whole.as_ptr() as usize;
        let spans = items
            .iter()
            .map(|item| {
                // Each item borrows from `whole`: its offset is where its text starts.
                let start = (item.get().as_ptr() as usize).saturating_sub(base);
                start..start.saturating_add(item.get().len())
            })
            .collect();
        Some(JsonList {
            text: text.clone(),
            spans,
        })
    }

    fn item(&self, index: usize) -> Option<minijinja::Value> {
        let text = self.text.text().get(self.spans.get(index)?.clone())?;
        // Checked readable when the output was stored or read; were it not, the item is absent.
        let item = json::parse("node output", text).ok()?;
        Some(minijinja::Value::from(minijinja::value::Serde(&item)))
    }
}

impl std::fmt::Debug for JsonList {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(formatter, "JsonList({} items)", self.spans.len())
    }
}

impl Object for JsonList {
    fn repr(self: &Arc<Self>) -> ObjectRepr {
        ObjectRepr::Seq
    }

    fn get_value(self: &Arc<Self>, key: &minijinja::Value) -> Option<minijinja::Value> {
        self.item(key.as_usize()?)
    }

    fn enumerate(self: &Arc<Self>) -> Enumerator {
        Enumerator::Seq(self.spans.len())
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn list(value: serde_json::Value) -> Option<minijinja::Value> {
        JsonList::of(&Json::from(value)).map(minijinja::Value::from_object)
    }

    #[test]
    fn a_list_reads_like_the_value_it_holds() -> Result<(), minijinja::Error> {
        let value = json!([{ "email": "a@x", "n": [1, 2] }, 2, "three", null, [4.5]]);
        let lazy = list(value.clone()).expect("a list");
        let built = minijinja::Value::from(minijinja::value::Serde(&value));
        assert_eq!(lazy.len(), Some(5));
        assert_eq!(lazy, built);
        assert_eq!(
            lazy.get_item(&minijinja::Value::from(0))?,
            built.get_item(&0.into())?
        );
        assert_eq!(
            lazy.get_item(&minijinja::Value::from(-1))?,
            built.get_item(&(-1).into())?
        );
        assert!(lazy.get_item(&minijinja::Value::from(5))?.is_undefined());
        let mut environment = minijinja::Environment::new();
        environment.add_template(
            "t",
            "{{ xs | length }} {{ xs[0].email }} {{ xs[-1] }} {{ xs }} {% for x in xs %}{{ loop.index }}{% endfor %}",
        )?;
        let template = environment.get_template("t")?;
        assert_eq!(
            template.render(minijinja::context! { xs => lazy })?,
            template.render(minijinja::context! { xs => built })?
        );
        Ok(())
    }

    #[test]
    fn anything_but_a_list_is_not_one() {
        assert!(list(json!({ "a": [1] })).is_none());
        assert!(list(json!("[1]")).is_none());
        assert!(list(json!(7)).is_none());
        assert_eq!(list(json!([])).and_then(|empty| empty.len()), Some(0));
    }
}
