//! The integration tests of the built-in nodes: one binary, one module per node family.

mod egress;
mod enrich_providers;
mod http_request;
mod notify_email;
mod notify_http;
mod smtp;
mod support;
