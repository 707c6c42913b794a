//! Which IP addresses are not on the public internet, and networks written as `10.0.0.0/8`.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::str::FromStr;

/// Why an address is not a public one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AddressClass {
    /// 127.0.0.0/8, ::1: this machine, including the engine's own API.
    Loopback,
    /// 0.0.0.0/8, `::`: reaches this machine on most systems.
    Unspecified,
    /// 10/8, 172.16/12, 192.168/16, fc00::/7 (and the old site-local fec0::/10).
    Private,
    /// 100.64.0.0/10, the carrier-grade NAT range (also Alibaba Cloud's metadata service).
    Shared,
    /// 169.254/16, fe80::/10, where cloud metadata services answer; and Azure's 168.63.129.16.
    LinkLocal,
    /// 224/4, ff00::/8.
    Multicast,
    /// 255.255.255.255.
    Broadcast,
    /// 192.0.0.0/24 (Oracle Cloud's metadata is 192.0.0.192), 198.18/15 and 240/4: never
    /// a public host.
    Reserved,
}

impl AddressClass {
    /// The class in words, for error messages.
    pub fn describe(self) -> &'static str {
        match self {
            AddressClass::Loopback => "loopback",
            AddressClass::Unspecified => "unspecified (this host)",
            AddressClass::Private => "private",
            AddressClass::Shared => "shared (carrier-grade NAT)",
            AddressClass::LinkLocal => "link-local (cloud metadata)",
            AddressClass::Multicast => "multicast",
            AddressClass::Broadcast => "broadcast",
            AddressClass::Reserved => "reserved",
        }
    }
}

impl fmt::Display for AddressClass {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.describe())
    }
}

/// Why `address` is not public, or `None` when it is. IPv6 forms that carry an IPv4 address
/// (mapped `::ffff:a.b.c.d`, compatible `::a.b.c.d`, NAT64 `64:ff9b::/96`, 6to4 `2002::/16`)
/// are judged by that address, since they reach it.
pub fn classify(address: IpAddr) -> Option<AddressClass> {
    match address {
        IpAddr::V4(v4) => classify_v4(v4),
        IpAddr::V6(v6) => match embedded_v4(v6) {
            Some(v4) => classify_v4(v4),
            None => classify_v6(v6),
        },
    }
}

fn classify_v4(address: Ipv4Addr) -> Option<AddressClass> {
    let [a, b, c, _] = address.octets();
    match (a, b, c) {
        (0, _, _) => Some(AddressClass::Unspecified),
        (127, _, _) => Some(AddressClass::Loopback),
        (10, _, _) | (172, 16..=31, _) | (192, 168, _) => Some(AddressClass::Private),
        (100, 64..=127, _) => Some(AddressClass::Shared),
        (169, 254, _) => Some(AddressClass::LinkLocal),
        // Azure's wire server and metadata proxy: a public-looking address inside every VM.
        (168, 63, 129) if address.octets()[3] == 16 => Some(AddressClass::LinkLocal),
        (192, 0, 0) | (198, 18..=19, _) => Some(AddressClass::Reserved),
        (224..=239, _, _) => Some(AddressClass::Multicast),
        _ if address.is_broadcast() => Some(AddressClass::Broadcast),
        (240..=255, _, _) => Some(AddressClass::Reserved),
        _ => None,
    }
}

fn classify_v6(address: Ipv6Addr) -> Option<AddressClass> {
    let first = address.segments()[0];
    if address.is_loopback() {
        Some(AddressClass::Loopback)
    } else if address.is_unspecified() {
        Some(AddressClass::Unspecified)
    } else if first & 0xfe00 == 0xfc00 || first & 0xffc0 == 0xfec0 {
        Some(AddressClass::Private)
    } else if first & 0xffc0 == 0xfe80 {
        Some(AddressClass::LinkLocal)
    } else if first & 0xff00 == 0xff00 {
        Some(AddressClass::Multicast)
    } else {
        None
    }
}

/// The IPv4 address an IPv6 address stands for, if it is one of the forms that carry one.
fn embedded_v4(address: Ipv6Addr) -> Option<Ipv4Addr> {
    let segments = address.segments();
    let octets = address.octets();
    let last_four = Ipv4Addr::new(octets[12], octets[13], octets[14], octets[15]);
    match segments {
        // ::ffff:a.b.c.d (mapped)
        [0, 0, 0, 0, 0, 0xffff, _, _] => Some(last_four),
        // ::a.b.c.d (compatible, deprecated); `::` and `::1` are IPv6's own.
        [0, 0, 0, 0, 0, 0, _, _] if !address.is_loopback() && !address.is_unspecified() => {
            Some(last_four)
        }
        // 64:ff9b::a.b.c.d (NAT64 well-known prefix)
        [0x64, 0xff9b, 0, 0, 0, 0, _, _] => Some(last_four),
        // 2002:aabb:ccdd::/48 (6to4)
        [0x2002, _, _, _, _, _, _, _] => {
            Some(Ipv4Addr::new(octets[2], octets[3], octets[4], octets[5]))
        }
        _ => None,
    }
}

/// An address or a network (`10.1.0.0/16`, `fd00::/8`, `127.0.0.2`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Network {
    address: IpAddr,
    prefix: u8,
}

/// A network that does not read as `address` or `address/prefix`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{0}` is not an IP address or network such as 10.0.0.0/8 or fd00::/8")]
pub struct ParseNetworkError(String);

impl Network {
    /// Whether `address` is inside this network. IPv4-mapped IPv6 addresses count as IPv4.
    pub fn contains(&self, address: IpAddr) -> bool {
        let address = match address {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(address, IpAddr::V4),
            v4 => v4,
        };
        match (self.address, address) {
            (IpAddr::V4(network), IpAddr::V4(address)) => same_prefix(
                network.to_bits().into(),
                address.to_bits().into(),
                self.prefix,
                32,
            ),
            (IpAddr::V6(network), IpAddr::V6(address)) => {
                same_prefix(network.to_bits(), address.to_bits(), self.prefix, 128)
            }
            _ => false,
        }
    }
}

/// Whether the first `prefix` of `width` bits of `a` and `b` are equal.
fn same_prefix(a: u128, b: u128, prefix: u8, width: u32) -> bool {
    let ignored = width.saturating_sub(u32::from(prefix));
    a.checked_shr(ignored).unwrap_or(0) == b.checked_shr(ignored).unwrap_or(0)
}

impl FromStr for Network {
    type Err = ParseNetworkError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let error = || ParseNetworkError(text.to_owned());
        let (address, prefix) = match text.trim().split_once('/') {
            Some((address, prefix)) => (address, Some(prefix)),
            None => (text.trim(), None),
        };
        let address: IpAddr = address.parse().map_err(|_| error())?;
        let width = if address.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            Some(prefix) => prefix.parse::<u8>().map_err(|_| error())?,
            None => width,
        };
        if prefix > width {
            return Err(error());
        }
        Ok(Self { address, prefix })
    }
}

impl fmt::Display for Network {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.address, self.prefix)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn class(text: &str) -> Option<AddressClass> {
        classify(text.parse().expect("an address"))
    }

    #[test]
    fn classifies_the_ranges_that_are_not_public() {
        let cases = [
            ("127.0.0.1", Some(AddressClass::Loopback)),
            ("127.255.0.9", Some(AddressClass::Loopback)),
            ("0.0.0.0", Some(AddressClass::Unspecified)),
            ("10.0.0.1", Some(AddressClass::Private)),
            ("172.16.0.1", Some(AddressClass::Private)),
            ("172.31.255.255", Some(AddressClass::Private)),
            ("172.32.0.1", None),
            ("192.168.1.1", Some(AddressClass::Private)),
            ("100.64.0.1", Some(AddressClass::Shared)),
            ("100.100.100.200", Some(AddressClass::Shared)),
            ("100.128.0.1", None),
            ("169.254.169.254", Some(AddressClass::LinkLocal)),
            ("168.63.129.16", Some(AddressClass::LinkLocal)),
            ("192.0.0.192", Some(AddressClass::Reserved)),
            ("224.0.0.1", Some(AddressClass::Multicast)),
            ("255.255.255.255", Some(AddressClass::Broadcast)),
            ("240.0.0.1", Some(AddressClass::Reserved)),
            ("8.8.8.8", None),
            ("::1", Some(AddressClass::Loopback)),
            ("::", Some(AddressClass::Unspecified)),
            ("fe80::1", Some(AddressClass::LinkLocal)),
            ("fd00:ec2::254", Some(AddressClass::Private)),
            ("fc00::1", Some(AddressClass::Private)),
            ("ff02::1", Some(AddressClass::Multicast)),
            ("::ffff:127.0.0.1", Some(AddressClass::Loopback)),
            ("::ffff:169.254.169.254", Some(AddressClass::LinkLocal)),
            ("::127.0.0.1", Some(AddressClass::Loopback)),
            ("64:ff9b::a00:1", Some(AddressClass::Private)),
            ("2002:7f00:1::", Some(AddressClass::Loopback)),
            ("::ffff:8.8.8.8", None),
            ("2606:4700::1111", None),
        ];
        for (address, expected) in cases {
            assert_eq!(class(address), expected, "{address}");
        }
    }

    #[test]
    fn parses_and_matches_networks() {
        let network: Network = "10.1.0.0/16".parse().expect("a network");
        assert!(network.contains("10.1.200.3".parse().expect("an address")));
        assert!(!network.contains("10.2.0.1".parse().expect("an address")));
        assert!(network.contains("::ffff:10.1.0.1".parse().expect("an address")));
        let host: Network = "127.0.0.2".parse().expect("an address");
        assert!(host.contains("127.0.0.2".parse().expect("an address")));
        assert!(!host.contains("127.0.0.1".parse().expect("an address")));
        let all: Network = "0.0.0.0/0".parse().expect("every IPv4 address");
        assert!(all.contains("8.8.8.8".parse().expect("an address")));
        let v6: Network = "fd00::/8".parse().expect("a network");
        assert!(v6.contains("fd12::1".parse().expect("an address")));
        assert!(!v6.contains("10.0.0.1".parse().expect("an address")));
        for bad in ["10.0.0.0/33", "example.com", "10.0.0.0/x", "::/129"] {
            assert!(bad.parse::<Network>().is_err(), "{bad}");
        }
    }
}
