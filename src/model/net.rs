//! Network values of the configuration and of tokens.

use ipnet::IpNet;
use std::net::IpAddr;

/// An address or a network (`10.0.0.0/8`, `2001:db8::/32`); a bare address is a host network.
pub fn parse_net(s: &str) -> Option<IpNet> {
    let s = s.trim();
    s.parse::<IpNet>()
        .ok()
        .or_else(|| s.parse::<IpAddr>().ok().map(IpNet::from))
}
