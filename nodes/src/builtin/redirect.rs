//! How `http.request` follows redirects itself: the shared client follows none, so that every
//! hop passes the egress policy and a hop to another origin loses the headers that may carry
//! the first origin's credentials (reqwest's redirect policy can refuse a hop but not edit it).

use reqwest::header::{CONTENT_LENGTH, CONTENT_TYPE, HeaderMap, LOCATION};
use reqwest::{Method, StatusCode, Url};

use crate::egress;

/// Which redirects a request follows (`redirects` in the `with` block).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(super) enum Follow {
    /// None: a 3xx answer is the response.
    None,
    /// Only to the same scheme, host and port; a redirect elsewhere fails the attempt.
    #[default]
    SameOrigin,
    /// Any `http`/`https` URL; headers other than [`egress::CROSS_ORIGIN_SAFE_HEADERS`] are
    /// dropped when the origin changes.
    Any,
}

/// The spellings of [`Follow`], as the `with` block writes them.
pub(super) const FOLLOW_VALUES: [&str; 3] = ["none", "same_origin", "any"];

/// Redirects followed before the attempt fails (browsers stop at 20, curl at 50; an API that
/// needs more is looping).
pub(super) const MAX_REDIRECTS: usize = 10;

impl Follow {
    pub(super) fn parse(text: &str) -> Result<Self, String> {
        match text {
            "none" => Ok(Self::None),
            "same_origin" => Ok(Self::SameOrigin),
            "any" => Ok(Self::Any),
            other => Err(format!(
                "unknown value `{other}`; expected one of {}",
                FOLLOW_VALUES.join(", ")
            )),
        }
    }
}

/// One request of a chain of redirects.
#[derive(Debug, Clone)]
pub(super) struct Hop {
    pub(super) method: Method,
    pub(super) url: Url,
    pub(super) headers: HeaderMap,
    /// False once a 301, 302 or 303 turned the request into a GET without a body.
    pub(super) with_body: bool,
}

/// What to do with a response.
#[derive(Debug)]
pub(super) enum Next {
    /// It is the answer.
    Done,
    /// Send this request instead.
    Follow(Hop),
    /// A redirect the request may not follow; the reason, for the error message.
    Refuse(String),
}

/// What `response` (status and headers) of `hop` leads to under `follow`.
pub(super) fn next(follow: Follow, hop: &Hop, status: StatusCode, headers: &HeaderMap) -> Next {
    let redirect = matches!(status.as_u16(), 301 | 302 | 303 | 307 | 308);
    if !redirect || follow == Follow::None {
        return Next::Done;
    }
    let Some(location) = headers.get(LOCATION).and_then(|value| value.to_str().ok()) else {
        // A redirect without a usable target is an answer like any other 3xx.
        return Next::Done;
    };
    let url = match hop.url.join(location) {
        Ok(url) if matches!(url.scheme(), "http" | "https") => url,
        Ok(url) => return Next::Refuse(format!("it redirected to a `{}` URL", url.scheme())),
        Err(error) => return Next::Refuse(format!("its redirect target is not a URL: {error}")),
    };
    let same_origin = url.origin() == hop.url.origin();
    if !same_origin && follow == Follow::SameOrigin {
        return Next::Refuse(format!(
            "it redirected to another origin ({}); set `redirects: any` to follow it",
            super::http_request::url_for_messages(&url)
        ));
    }
    let mut headers = if same_origin {
        hop.headers.clone()
    } else {
        egress::cross_origin_headers(&hop.headers)
    };
    // 301 and 302 turn a POST into a GET as every client does; 303 turns anything but HEAD
    // into a GET. 307 and 308 repeat the request as it was.
    let becomes_get = match status.as_u16() {
        301 | 302 => hop.method == Method::POST,
        303 => hop.method != Method::HEAD,
        _ => false,
    };
    let (method, with_body) = if becomes_get {
        headers.remove(CONTENT_TYPE);
        headers.remove(CONTENT_LENGTH);
        (Method::GET, false)
    } else {
        (hop.method.clone(), hop.with_body)
    };
    Next::Follow(Hop {
        method,
        url,
        headers,
        with_body,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hop(method: Method, url: &str) -> Hop {
        let mut headers = HeaderMap::new();
        headers.insert("x-api-key", "k".parse().expect("a value"));
        headers.insert(CONTENT_TYPE, "application/json".parse().expect("a value"));
        Hop {
            method,
            url: Url::parse(url).expect("a URL"),
            headers,
            with_body: true,
        }
    }

    fn to(location: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(LOCATION, location.parse().expect("a value"));
        headers
    }

    fn followed(next: Next) -> Hop {
        match next {
            Next::Follow(hop) => hop,
            other => panic!("expected a hop, got {other:?}"),
        }
    }

    #[test]
    fn same_origin_keeps_headers_and_cross_origin_drops_them() {
        let first = hop(Method::PUT, "https://api.example.com/a");
        let status = StatusCode::TEMPORARY_REDIRECT;
        let same = followed(next(Follow::SameOrigin, &first, status, &to("/b")));
        assert_eq!(same.url.as_str(), "https://api.example.com/b");
        assert!(same.headers.contains_key("x-api-key"));
        assert_eq!((same.method, same.with_body), (Method::PUT, true));
        let other = followed(next(
            Follow::Any,
            &first,
            status,
            &to("https://else.example/"),
        ));
        assert!(!other.headers.contains_key("x-api-key"));
        assert!(other.headers.contains_key(CONTENT_TYPE));
        let port = next(
            Follow::SameOrigin,
            &first,
            status,
            &to("https://api.example.com:8443/"),
        );
        assert!(matches!(port, Next::Refuse(_)), "{port:?}");
    }

    #[test]
    fn see_other_and_found_turn_a_post_into_a_get() {
        let post = hop(Method::POST, "https://api.example.com/a");
        for status in [StatusCode::FOUND, StatusCode::SEE_OTHER] {
            let next = followed(next(Follow::SameOrigin, &post, status, &to("/b")));
            assert_eq!((next.method, next.with_body), (Method::GET, false));
            assert!(!next.headers.contains_key(CONTENT_TYPE));
        }
    }

    #[test]
    fn stops_where_it_must() {
        let get = hop(Method::GET, "https://api.example.com/a");
        let found = StatusCode::FOUND;
        assert!(matches!(
            next(Follow::None, &get, found, &to("/b")),
            Next::Done
        ));
        assert!(matches!(
            next(Follow::Any, &get, StatusCode::OK, &to("/b")),
            Next::Done
        ));
        assert!(matches!(
            next(Follow::Any, &get, found, &HeaderMap::new()),
            Next::Done
        ));
        let file = next(Follow::Any, &get, found, &to("file:///etc/passwd"));
        assert!(matches!(file, Next::Refuse(_)), "{file:?}");
        assert_eq!(Follow::parse("any"), Ok(Follow::Any));
        assert!(Follow::parse("all").is_err());
    }
}
