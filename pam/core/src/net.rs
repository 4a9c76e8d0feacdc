//! Source networks (`from = ["10.20.0.0/16", "2001:db8::/48", "192.0.2.7"]`): which remote
//! hosts a rule holds for. PAM_RHOST is what sshd says the client's address is; a rule with
//! `from` holds only when it is an IP address inside one of the networks. No rhost (su, a
//! console) or a host name never matches: a name is whatever the resolver said, and a rule
//! about networks must not depend on DNS.

use std::net::IpAddr;

/// One network: an address and a prefix length, host bits zero.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Network {
    addr: IpAddr,
    prefix: u8,
}

impl Network {
    /// `ADDR/PREFIX`, or a single `ADDR` (a /32 or /128). Host bits set below the prefix
    /// are refused rather than masked: `10.0.0.1/8` is more likely a typo than a wish.
    pub fn parse(text: &str) -> Result<Network, String> {
        let (addr_text, prefix_text) = match text.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (text, None),
        };
        let addr: IpAddr = addr_text
            .parse()
            .map_err(|_| format!("{text:?} is not an IP address or ADDRESS/PREFIX network"))?;
        // An IPv4-mapped IPv6 network is the IPv4 network it maps.
        let (addr, mapped_bits) = match addr {
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => (IpAddr::V4(v4), 96u8),
                None => (addr, 0),
            },
            v4 => (v4, 0),
        };
        let max = max_prefix(addr);
        let prefix = match prefix_text {
            None => max,
            Some(p) => {
                let written: u8 = p
                    .parse()
                    .ok()
                    .filter(|n: &u8| *n <= max.saturating_add(mapped_bits) && *n >= mapped_bits)
                    .ok_or_else(|| {
                        format!(
                            "{text:?}: the prefix must be a number from {mapped_bits} to {}",
                            max.saturating_add(mapped_bits)
                        )
                    })?;
                written.saturating_sub(mapped_bits)
            }
        };
        let network = Network { addr, prefix };
        if network.masked(addr) != addr {
            return Err(format!(
                "{text:?} has bits set after the first {prefix}; write the network's first \
                 address, {}/{prefix}",
                network.masked(addr)
            ));
        }
        Ok(network)
    }

    /// Whether `host` (PAM_RHOST) is an address inside this network. An IPv4-mapped IPv6
    /// address counts as its IPv4 address; anything that is not an address never matches.
    pub fn contains_host(&self, host: &str) -> bool {
        // sshd writes IPv6 addresses bare; a bracketed or zone-scoped form is not ours to guess.
        let Ok(ip) = host.parse::<IpAddr>() else {
            return false;
        };
        let ip = ip.to_canonical();
        matches!(
            (ip, self.addr),
            (IpAddr::V4(_), IpAddr::V4(_)) | (IpAddr::V6(_), IpAddr::V6(_))
        ) && self.masked(ip) == self.addr
    }

    /// `ip` with the bits after the prefix cleared (same family as the network).
    fn masked(&self, ip: IpAddr) -> IpAddr {
        match ip {
            IpAddr::V4(v4) => {
                let bits = u32::from(v4);
                let mask = u32::MAX
                    .checked_shl(32u32.saturating_sub(u32::from(self.prefix)))
                    .unwrap_or(0);
                IpAddr::V4((bits & mask).into())
            }
            IpAddr::V6(v6) => {
                let bits = u128::from(v6);
                let mask = u128::MAX
                    .checked_shl(128u32.saturating_sub(u32::from(self.prefix)))
                    .unwrap_or(0);
                IpAddr::V6((bits & mask).into())
            }
        }
    }
}

fn max_prefix(addr: IpAddr) -> u8 {
    match addr {
        IpAddr::V4(_) => 32,
        IpAddr::V6(_) => 128,
    }
}

impl std::fmt::Display for Network {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

/// Whether `rhost` is inside any of `networks`.
pub fn any_contains(networks: &[Network], rhost: Option<&str>) -> bool {
    rhost.is_some_and(|h| networks.iter().any(|n| n.contains_host(h)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(s: &str) -> Network {
        Network::parse(s).unwrap()
    }

    #[test]
    fn prefixes_at_the_edges() {
        assert!(net("0.0.0.0/0").contains_host("203.0.113.9"));
        assert!(!net("0.0.0.0/0").contains_host("2001:db8::1"));
        assert!(net("::/0").contains_host("2001:db8::1"));
        assert!(net("192.0.2.7/32").contains_host("192.0.2.7"));
        assert!(!net("192.0.2.7/32").contains_host("192.0.2.8"));
        assert!(net("192.0.2.7").contains_host("192.0.2.7"));
        assert!(net("2001:db8::7/128").contains_host("2001:db8::7"));
        assert!(!net("2001:db8::7/128").contains_host("2001:db8::8"));
        assert!(net("10.20.0.0/16").contains_host("10.20.255.1"));
        assert!(!net("10.20.0.0/16").contains_host("10.21.0.1"));
        assert!(net("2001:db8::/48").contains_host("2001:db8:0:ffff::1"));
        assert!(!net("2001:db8::/48").contains_host("2001:db8:1::1"));
        assert!(net("10.0.0.0/9").contains_host("10.127.0.1"));
        assert!(!net("10.0.0.0/9").contains_host("10.128.0.1"));
    }

    #[test]
    fn v4_mapped_v6_is_its_v4_address() {
        assert!(net("10.0.0.0/8").contains_host("::ffff:10.1.2.3"));
        assert!(!net("10.0.0.0/8").contains_host("::ffff:11.1.2.3"));
        // A mapped network is the v4 network it maps.
        assert_eq!(net("::ffff:10.0.0.0/104"), net("10.0.0.0/8"));
        assert!(net("::ffff:10.0.0.0/104").contains_host("10.9.9.9"));
    }

    #[test]
    fn host_names_garbage_and_no_rhost_never_match() {
        let all = [net("0.0.0.0/0"), net("::/0")];
        for host in [
            "localhost",
            "runner.example.org",
            "",
            "10.0.0.1:22",
            "[::1]",
            "fe80::1%eth0",
        ] {
            assert!(!any_contains(&all, Some(host)), "{host:?}");
        }
        assert!(!any_contains(&all, None));
        assert!(any_contains(&all, Some("::1")));
    }

    #[test]
    fn bad_networks_are_refused_with_a_hint() {
        for (text, says) in [
            (
                "10.0.0.1/8",
                "write the network's first address, 10.0.0.0/8",
            ),
            ("10.0.0.0/33", "from 0 to 32"),
            ("2001:db8::/129", "from 0 to 128"),
            ("10.0.0.0/", "prefix"),
            ("10.0.0.0/-1", "prefix"),
            ("runners.example.org", "not an IP address"),
            ("10.0.0/8", "not an IP address"),
            ("::ffff:10.0.0.0/8", "from 96 to 128"),
        ] {
            let e = Network::parse(text).unwrap_err();
            assert!(e.contains(says), "{text}: {e}");
        }
    }
}
