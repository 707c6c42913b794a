//! Templating (minijinja). Being written by the workflow helper.
