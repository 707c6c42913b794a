//! The built-in node types, one per file.

mod http_request;
mod transform;

pub use http_request::HttpRequest;
pub use transform::Transform;
