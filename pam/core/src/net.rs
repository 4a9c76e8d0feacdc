//! Source networks (`from = ["10.20.0.0/16", "2001:db8::/48", "192.0.2.7"]`): which remote
//! hosts a rule holds for. PAM_RHOST is what the application says the client is: sshd sets
//! the client's address, or with `UseDNS yes` the name its reverse lookup found; su sets
//! none. Whether an rhost is inside a network has three answers: yes, no, and "cannot tell"
//! (no rhost, or a host name: a name is whatever the resolver said, and a rule about
//! networks must not depend on DNS). A granting rule needs a yes; a deny rule holds on
//! anything but a no (SPEC v3: a deny fails closed).

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
                // Digits only: `str::parse` would take `+8`, which no one means as a prefix.
                let digits = !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit());
                let written: u8 = digits
                    .then(|| p.parse().ok())
                    .flatten()
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
        rhost_address(host).is_some_and(|ip| self.contains(ip))
    }

    /// Whether the address is inside this network.
    pub fn contains(&self, ip: IpAddr) -> bool {
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

impl Network {
    pub fn is_ipv4(&self) -> bool {
        self.addr.is_ipv4()
    }

    /// Whether this is the IPv6 "every address" network, which IPv4 clients are not in.
    pub fn is_all_ipv6(&self) -> bool {
        self.prefix == 0 && self.addr.is_ipv6()
    }
}

/// PAM_RHOST as an IP address, when it is one: a bare IPv4 or IPv6 address, an IPv6 zone
/// (`fe80::1%eth0`, as sshd writes link-local clients) removed first. Brackets, ports and
/// host names are not addresses.
pub fn rhost_address(host: &str) -> Option<IpAddr> {
    let bare = match host.split_once('%') {
        Some((addr, zone)) if addr.contains(':') && !zone.is_empty() => addr,
        Some(_) => return None,
        None => host,
    };
    bare.parse::<IpAddr>().ok()
}

/// Where the rhost stands against a rule's networks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RhostMatch {
    Inside,
    Outside,
    /// No rhost, or one that is not an IP address: nothing can be said about its network.
    Unknown,
}

/// Whether `rhost` is inside any of `networks`.
pub fn rhost_match(networks: &[Network], rhost: Option<&str>) -> RhostMatch {
    match rhost.and_then(rhost_address) {
        None => RhostMatch::Unknown,
        Some(ip) if networks.iter().any(|n| n.contains(ip)) => RhostMatch::Inside,
        Some(_) => RhostMatch::Outside,
    }
}

/// Whether `rhost` is known to be inside any of `networks` (a granting rule's test).
pub fn any_contains(networks: &[Network], rhost: Option<&str>) -> bool {
    rhost_match(networks, rhost) == RhostMatch::Inside
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
            "%eth0",
            "10.0.0.1%eth0",
            "fe80::1%",
        ] {
            assert!(!any_contains(&all, Some(host)), "{host:?}");
            assert_eq!(
                rhost_match(&all, Some(host)),
                RhostMatch::Unknown,
                "{host:?}"
            );
        }
        assert!(!any_contains(&all, None));
        assert_eq!(rhost_match(&all, None), RhostMatch::Unknown);
        assert!(any_contains(&all, Some("::1")));
    }

    /// sshd writes a link-local client as `fe80::1%eth0`: the zone names the interface, the
    /// address is what a network contains.
    #[test]
    fn an_ipv6_zone_is_removed_before_parsing() {
        let link_local = [net("fe80::/10")];
        assert_eq!(
            rhost_match(&link_local, Some("fe80::1%eth0")),
            RhostMatch::Inside
        );
        assert_eq!(
            rhost_match(&[net("10.0.0.0/8")], Some("fe80::1%eth0")),
            RhostMatch::Outside
        );
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
            ("10.0.0.0/+8", "prefix"),
            ("10.0.0.0/ 8", "prefix"),
        ] {
            let e = Network::parse(text).unwrap_err();
            assert!(e.contains(says), "{text}: {e}");
        }
    }
}
