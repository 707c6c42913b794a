//! Where nodes may connect: the egress policy (private networks refused unless allowed), the
//! limits of every outbound HTTP call, and the one HTTP client built from them.
//!
//! A workflow renders URLs from trigger data, so without a policy anyone who can call a webhook
//! can make the engine call its own API on loopback, a cloud metadata service or anything else
//! on the private network (SSRF). The policy is checked on the addresses a connection would
//! actually use: after DNS resolution (a resolver that drops refused addresses, so a name that
//! re-binds to 127.0.0.1 between two lookups is still refused) and on IP-literal URLs, which
//! never reach a resolver. Nodes get the policy through [`crate::NodeContext`]; they never read
//! flags or the environment.

mod address;

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use reqwest::Url;
use reqwest::dns::{Addrs, Name, Resolve, Resolving};
use reqwest::header::HeaderMap;
use reqwest::redirect;

pub use address::{AddressClass, Network, ParseNetworkError, classify};

/// Where outbound calls may go and how long and large they may be. Plain data: the engine builds
/// it from its command line and hands it to every attempt.
#[derive(Debug, Clone)]
pub struct Policy {
    /// Refuse loopback, private, link-local (cloud metadata), shared (CGNAT), unspecified,
    /// multicast, broadcast and reserved addresses, unless [`Policy::allowed`] names them.
    pub deny_private_networks: bool,
    /// Networks reachable even when private networks are refused (an internal SMTP relay, a
    /// test server).
    pub allowed: Arc<[Network]>,
    /// Longest wait for a TCP (and TLS) connection.
    pub connect_timeout: Duration,
    /// Longest HTTP exchange, from connecting to reading the whole body, for a node that sets
    /// no `timeout` of its own.
    pub request_timeout: Duration,
    /// Largest response body a node reads; a larger one fails the attempt.
    pub max_response_bytes: usize,
}

/// [`Policy::connect_timeout`] by default.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// [`Policy::request_timeout`] by default.
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// [`Policy::max_response_bytes`] by default: 10 MiB.
pub const DEFAULT_MAX_RESPONSE_BYTES: usize = 10 * 1024 * 1024;

impl Default for Policy {
    /// Private networks refused, default limits.
    fn default() -> Self {
        Self {
            deny_private_networks: true,
            allowed: Arc::from(Vec::new()),
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            request_timeout: DEFAULT_REQUEST_TIMEOUT,
            max_response_bytes: DEFAULT_MAX_RESPONSE_BYTES,
        }
    }
}

/// A call the policy does not let out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// The host as the URL or the server setting names it.
    pub host: String,
    /// The literal address, when the host is one. A name's resolved addresses are not shown:
    /// whoever reads the run would learn the internal DNS.
    pub literal: Option<IpAddr>,
    /// Why the (first refused) address is refused.
    pub class: AddressClass,
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.literal {
            Some(address) => write!(f, "the address {address} is {}", self.class)?,
            None => write!(
                f,
                "`{}` resolves only to refused addresses ({})",
                self.host, self.class
            )?,
        }
        f.write_str(
            "; calls to private networks are refused (allow it with --egress-allow, or set \
             --deny-private-networks=false)",
        )
    }
}

impl std::error::Error for Refusal {}

/// Why a destination could not be used.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The policy refuses it.
    #[error(transparent)]
    Refused(#[from] Refusal),
    /// The name does not resolve.
    #[error("`{host}` cannot be resolved: {source}")]
    Resolve {
        /// The name.
        host: String,
        /// What the system resolver said.
        source: std::io::Error,
    },
}

impl Policy {
    /// A policy that lets every address through (tests, tools, trusted networks), with the
    /// default limits.
    pub fn allow_private_networks() -> Self {
        Self {
            deny_private_networks: false,
            ..Self::default()
        }
    }

    /// Why `address` may not be used, if it may not.
    pub fn check(&self, address: IpAddr) -> Result<(), AddressClass> {
        if !self.deny_private_networks || self.allowed.iter().any(|n| n.contains(address)) {
            return Ok(());
        }
        match classify(address) {
            Some(class) => Err(class),
            None => Ok(()),
        }
    }

    /// Checks a URL whose host is an IP literal (`http://127.0.0.1/`, `http://[::1]/`; the url
    /// crate has already turned `2130706433` or `0x7f.1` into `127.0.0.1`). Names are left to
    /// the resolver of [`Policy::client`], which sees the addresses actually connected to.
    pub fn check_url(&self, url: &Url) -> Result<(), Refusal> {
        // `host_str` writes IPv6 literals in brackets; a name never parses as an address.
        let host = url.host_str().unwrap_or_default();
        let Ok(literal) = host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<IpAddr>()
        else {
            return Ok(());
        };
        self.check(literal).map_err(|class| Refusal {
            host: literal.to_string(),
            literal: Some(literal),
            class,
        })
    }

    /// The addresses of `host` that may be used, in the resolver's order; an error when there
    /// are none. For connections reqwest does not make (SMTP): connect to what this returns,
    /// never to the name, or a second lookup could answer differently.
    pub async fn resolve(&self, host: &str, port: u16) -> Result<Vec<SocketAddr>, Error> {
        if let Ok(literal) = host.trim_matches(['[', ']']).parse::<IpAddr>() {
            self.check(literal).map_err(|class| Refusal {
                host: host.to_owned(),
                literal: Some(literal),
                class,
            })?;
            return Ok(vec![SocketAddr::new(literal, port)]);
        }
        let found = tokio::net::lookup_host((host, port))
            .await
            .map_err(|source| Error::Resolve {
                host: host.to_owned(),
                source,
            })?;
        Ok(self.filter(host, found)?)
    }

    /// Keeps the addresses the policy allows. A name with some refused addresses is still usable
    /// through the others; one with only refused addresses is refused.
    fn filter(
        &self,
        host: &str,
        found: impl IntoIterator<Item = SocketAddr>,
    ) -> Result<Vec<SocketAddr>, Refusal> {
        let mut refused = None;
        let mut allowed = Vec::new();
        for address in found {
            match self.check(address.ip()) {
                Ok(()) => allowed.push(address),
                Err(class) => refused = refused.or(Some(class)),
            }
        }
        match (allowed.is_empty(), refused) {
            (true, Some(class)) => Err(Refusal {
                host: host.to_owned(),
                literal: None,
                class,
            }),
            _ => Ok(allowed),
        }
    }

    /// The HTTP client every node shares: addresses filtered after resolution, no redirects
    /// followed (`http.request` follows them itself, checking each hop), no `Referer`, no
    /// environment proxy while private networks are refused (a proxy would resolve the target
    /// itself, out of the policy's sight), and the connect and request timeouts.
    pub fn client(&self) -> Result<reqwest::Client, reqwest::Error> {
        let mut builder = reqwest::Client::builder()
            .user_agent(concat!("enrichflow/", env!("CARGO_PKG_VERSION")))
            .dns_resolver(Arc::new(Resolver {
                policy: self.clone(),
            }))
            .redirect(redirect::Policy::none())
            .referer(false)
            .connect_timeout(self.connect_timeout)
            .timeout(self.request_timeout);
        if self.deny_private_networks {
            builder = builder.no_proxy();
        }
        builder.build()
    }

    /// Sends `request` with `client` unless its URL is a refused IP literal. Every node sends
    /// through here, so no call skips the literal check the resolver cannot make.
    pub async fn send(
        &self,
        client: &reqwest::Client,
        request: reqwest::Request,
    ) -> Result<reqwest::Response, SendError> {
        self.check_url(request.url())?;
        Ok(client.execute(request).await?)
    }
}

/// Why [`Policy::send`] got no response.
#[derive(Debug, thiserror::Error)]
pub enum SendError {
    /// The policy refused the destination before anything was sent.
    #[error(transparent)]
    Refused(#[from] Refusal),
    /// The exchange failed; a refusal by the resolver is found by [`refusal_in`].
    #[error(transparent)]
    Http(#[from] reqwest::Error),
}

/// The refusal inside an error chain, if the resolver refused the connection.
pub fn refusal_in<'a>(error: &'a (dyn std::error::Error + 'static)) -> Option<&'a Refusal> {
    let mut current = Some(error);
    while let Some(error) = current {
        if let Some(refusal) = error.downcast_ref::<Refusal>() {
            return Some(refusal);
        }
        current = error.source();
    }
    None
}

/// The resolver of [`Policy::client`]: the system's, minus the addresses the policy refuses.
struct Resolver {
    policy: Policy,
}

impl Resolve for Resolver {
    fn resolve(&self, name: Name) -> Resolving {
        let policy = self.policy.clone();
        Box::pin(async move {
            let host = name.as_str().to_owned();
            // Port 0: reqwest puts the URL's port in afterwards.
            let found = tokio::net::lookup_host((host.as_str(), 0)).await?;
            let allowed = policy.filter(&host, found)?;
            Ok(Box::new(allowed.into_iter()) as Addrs)
        })
    }
}

/// Headers a request keeps when a redirect leads to another origin; all others (Authorization,
/// Cookie, X-Api-Key, any custom header) may carry credentials meant for the first origin only.
pub const CROSS_ORIGIN_SAFE_HEADERS: [&str; 6] = [
    "accept",
    "accept-encoding",
    "accept-language",
    "content-language",
    "content-type",
    "user-agent",
];

/// `headers` without everything but [`CROSS_ORIGIN_SAFE_HEADERS`].
pub fn cross_origin_headers(headers: &HeaderMap) -> HeaderMap {
    let mut kept = HeaderMap::new();
    for (name, value) in headers {
        if CROSS_ORIGIN_SAFE_HEADERS.contains(&name.as_str()) {
            kept.append(name.clone(), value.clone());
        }
    }
    kept
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use super::*;

    fn url(text: &str) -> Url {
        Url::parse(text).expect("a URL")
    }

    #[test]
    fn refuses_every_spelling_of_loopback_in_a_url() {
        let policy = Policy::default();
        for text in [
            "http://127.0.0.1/",
            "http://0.0.0.0/",
            "http://2130706433/",
            "http://0x7f.1/",
            "http://0177.0.0.1/",
            "http://127.1/",
            "http://[::1]/",
            "http://[::ffff:127.0.0.1]/",
            "http://[::ffff:7f00:1]/",
            "http://169.254.169.254/latest/meta-data/",
            "http://[fd00:ec2::254]/",
            "http://10.1.2.3:8080/",
        ] {
            let refusal = policy.check_url(&url(text)).expect_err(text);
            assert!(refusal.literal.is_some(), "{text}");
        }
        assert_eq!(policy.check_url(&url("https://example.com/")), Ok(()));
        assert_eq!(policy.check_url(&url("http://93.184.215.14/")), Ok(()));
        let open = Policy::allow_private_networks();
        assert_eq!(open.check_url(&url("http://127.0.0.1/")), Ok(()));
    }

    #[test]
    fn allowed_networks_are_exceptions() {
        let policy = Policy {
            allowed: Arc::from(vec!["127.0.0.2".parse::<Network>().expect("a network")]),
            ..Policy::default()
        };
        assert_eq!(
            policy.check(IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2))),
            Ok(())
        );
        assert_eq!(
            policy.check(IpAddr::V4(Ipv4Addr::LOCALHOST)),
            Err(AddressClass::Loopback)
        );
    }

    #[test]
    fn the_message_names_the_class_and_the_flags() {
        let refusal = Policy::default()
            .check_url(&url("http://169.254.169.254/"))
            .expect_err("link-local");
        assert_eq!(
            refusal.to_string(),
            "the address 169.254.169.254 is link-local (cloud metadata); calls to private \
             networks are refused (allow it with --egress-allow, or set \
             --deny-private-networks=false)"
        );
    }

    #[test]
    fn a_name_with_only_refused_addresses_is_refused_without_showing_them() {
        let policy = Policy::default();
        let loopback = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 0);
        let public = SocketAddr::new(IpAddr::V4(Ipv4Addr::new(93, 184, 215, 14)), 0);
        let refusal = policy
            .filter("internal.example", [loopback])
            .expect_err("only loopback");
        assert!(!refusal.to_string().contains("127.0.0.1"), "{refusal}");
        assert_eq!(refusal.class, AddressClass::Loopback);
        let kept = policy.filter("mixed.example", [loopback, public]);
        assert_eq!(kept, Ok(vec![public]));
    }

    #[tokio::test]
    async fn resolves_names_for_smtp_through_the_policy() {
        let policy = Policy::default();
        let error = policy.resolve("localhost", 25).await.expect_err("loopback");
        assert!(matches!(error, Error::Refused(_)), "{error}");
        let error = policy
            .resolve("127.0.0.1", 25)
            .await
            .expect_err("a literal");
        assert!(matches!(error, Error::Refused(_)), "{error}");
        let open = Policy::allow_private_networks();
        let found = open.resolve("127.0.0.1", 25).await.expect("allowed");
        assert_eq!(found, vec![SocketAddr::from(([127, 0, 0, 1], 25))]);
    }

    #[test]
    fn cross_origin_redirects_keep_only_safe_headers() {
        let mut headers = HeaderMap::new();
        for (name, value) in [
            ("authorization", "Bearer t"),
            ("cookie", "a=1"),
            ("x-api-key", "k"),
            ("proxy-authorization", "p"),
            ("accept", "application/json"),
            ("user-agent", "enrichflow"),
        ] {
            headers.insert(name, value.parse().expect("a value"));
        }
        let kept = cross_origin_headers(&headers);
        let names: Vec<&str> = kept.keys().map(|name| name.as_str()).collect();
        assert_eq!(names, ["accept", "user-agent"]);
    }
}
