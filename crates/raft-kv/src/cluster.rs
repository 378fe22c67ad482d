//! The group configuration given on the command line in the seed's format
//! (`-gc A,localhost,10001,20001 B,localhost,10002,20002 ...`: `id,host,serverPort,corePort` per
//! member), and how a member is recorded in the cluster's membership.
//!
//! The `-gc` list only *bootstraps* a new cluster (see [`crate::identity`]): node ids are assigned
//! once, by the sorted member names (1, 2, ...), so every bootstrap member computes the same ids
//! whatever order it lists them in, and are recorded in each data directory. From then on the
//! membership is data in the Raft log and in snapshots ([`raft::Membership`]), where each member's
//! context is its `-gc` entry ([`Member::context`]); a new member gets the next unused id.
//!
//! Invariants:
//! - Member names are unique, non-empty, and made of `[A-Za-z0-9_-]`; ports are non-zero; no two
//!   members share a (host, port).

use std::fmt;

use raft::NodeId;

/// One member of the group.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Member {
    /// The member's name (the seed's node id, e.g. `A`).
    pub name: String,
    /// Host name or address.
    pub host: String,
    /// Client (RESP) port.
    pub server_port: u16,
    /// Peer (Raft) port.
    pub core_port: u16,
}

impl Member {
    /// `host:server_port`.
    pub fn server_addr(&self) -> String {
        format!("{}:{}", self.host, self.server_port)
    }

    /// `host:core_port`.
    pub fn core_addr(&self) -> String {
        format!("{}:{}", self.host, self.core_port)
    }
}

impl Member {
    /// The member's record in a [`raft::Membership`]: its `-gc` entry, `name,host,serverPort,corePort`.
    pub fn context(&self) -> bytes::Bytes {
        bytes::Bytes::from(self.to_string())
    }

    /// Reads a [`Member::context`] back.
    pub fn from_context(context: &[u8]) -> Result<Member, String> {
        let text = std::str::from_utf8(context).map_err(|_| "a member record is not UTF-8".to_string())?;
        parse_member(text)
    }
}

impl fmt::Display for Member {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{},{},{},{}", self.name, self.host, self.server_port, self.core_port)
    }
}

/// The group: every member, sorted by name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Group {
    /// Members sorted by name; member `k` has Raft node id `k + 1`.
    pub members: Vec<Member>,
}

impl Group {
    /// Parses the `-gc` entries. Each entry is `id,host,serverPort,corePort`; entries may also be
    /// given as one argument separated by spaces or semicolons.
    pub fn parse(entries: &[String]) -> Result<Group, String> {
        let mut members = Vec::new();
        for arg in entries {
            for entry in arg.split([' ', ';']).filter(|s| !s.is_empty()) {
                members.push(parse_member(entry)?);
            }
        }
        if members.is_empty() {
            return Err("the group configuration (-gc) lists no member".into());
        }
        members.sort_by(|a, b| a.name.cmp(&b.name));
        for pair in members.windows(2) {
            if pair[0].name == pair[1].name {
                return Err(format!("member '{}' appears twice in the group configuration", pair[0].name));
            }
        }
        let mut endpoints = Vec::new();
        for m in &members {
            for port in [m.server_port, m.core_port] {
                let ep = (m.host.to_ascii_lowercase(), port);
                if endpoints.contains(&ep) {
                    return Err(format!(
                        "port {port} on host {} is used twice in the group configuration",
                        m.host
                    ));
                }
                endpoints.push(ep);
            }
        }
        Ok(Group { members })
    }

    /// The member called `name`.
    pub fn member(&self, name: &str) -> Result<&Member, String> {
        self.members.iter().find(|m| m.name == name).ok_or_else(|| {
            let names: Vec<&str> = self.members.iter().map(|m| m.name.as_str()).collect();
            format!("node id '{name}' is not in the group configuration (members: {})", names.join(", "))
        })
    }

    /// The Raft node id of member `name`.
    pub fn node_id(&self, name: &str) -> Result<NodeId, String> {
        self.member(name)?;
        Ok(self.members.iter().position(|m| m.name == name).map_or(0, |p| p as u64 + 1))
    }

    /// The member with Raft node id `id`.
    pub fn by_id(&self, id: NodeId) -> Option<&Member> {
        self.members.get((id as usize).checked_sub(1)?)
    }

    /// Every Raft node id.
    pub fn node_ids(&self) -> Vec<NodeId> {
        (1..=self.members.len() as u64).collect()
    }

    /// A one-member group made of `name` alone (standalone mode).
    pub fn only(&self, name: &str) -> Result<Group, String> {
        Ok(Group { members: vec![self.member(name)?.clone()] })
    }

    /// The member names, sorted, comma-separated: the cluster's identity.
    pub fn names(&self) -> String {
        self.members.iter().map(|m| m.name.as_str()).collect::<Vec<_>>().join(",")
    }

    /// The cluster id versions before membership changes used (FNV-1a of the member names): kept
    /// by directories upgraded from them, so upgraded and not yet upgraded members still talk.
    pub fn cluster_id(&self) -> u64 {
        fnv1a(self.names().as_bytes())
    }

    /// The cluster id a new cluster bootstrapped from this group gets: FNV-1a of every member's
    /// full entry (names, hosts, ports) and of `token` (`--cluster-token`, empty by default).
    /// Computed once at bootstrap by every member alike and stored; membership changes never
    /// change it. Two clusters with the same names but other addresses (or tokens) differ.
    pub fn bootstrap_cluster_id(&self, token: &str) -> u64 {
        let entries: Vec<String> = self.members.iter().map(|m| m.to_string()).collect();
        fnv1a(format!("raft-kv cluster\n{token}\n{}", entries.join(" ")).as_bytes()).max(1)
    }

    /// The membership of a cluster bootstrapped from this group: every member a voter, with the
    /// id [`Group::node_id`] gives it.
    pub fn bootstrap_membership(&self) -> raft::Membership {
        let mut m = raft::Membership::new();
        for (k, member) in self.members.iter().enumerate() {
            m.insert(k as u64 + 1, raft::Suffrage::Voter, member.context());
        }
        m
    }
}

/// 64-bit FNV-1a.
fn fnv1a(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in bytes {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

/// Parses one `id,host,serverPort,corePort` entry (the `-gc` format, also `member add`'s).
pub fn parse_member_entry(entry: &str) -> Result<Member, String> {
    parse_member(entry.trim())
}

/// Reads the members of a [`raft::Membership`] back: id, record, suffrage. A member whose record
/// does not parse (never written by raft-kv) is an error.
pub fn members_of(m: &raft::Membership) -> Result<Vec<(NodeId, Member, raft::Suffrage)>, String> {
    m.members()
        .iter()
        .map(|(&id, rec)| {
            let member = Member::from_context(&rec.context).map_err(|e| format!("member {id}: {e}"))?;
            Ok((id, member, rec.suffrage))
        })
        .collect()
}

fn parse_member(entry: &str) -> Result<Member, String> {
    let parts: Vec<&str> = entry.split(',').collect();
    if parts.len() != 4 {
        return Err(format!(
            "bad group member '{entry}': expected id,host,serverPort,corePort (e.g. A,localhost,10001,20001)"
        ));
    }
    let name = parts[0].trim();
    if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_') {
        return Err(format!("bad member id '{name}' in '{entry}': use letters, digits, '-' or '_'"));
    }
    let host = parts[1].trim();
    if host.is_empty() {
        return Err(format!("bad group member '{entry}': empty host"));
    }
    let port = |s: &str, what: &str| -> Result<u16, String> {
        match s.trim().parse::<u16>() {
            Ok(p) if p > 0 => Ok(p),
            _ => Err(format!("bad {what} '{s}' in '{entry}': expected a number from 1 to 65535")),
        }
    };
    let server_port = port(parts[2], "server port")?;
    let core_port = port(parts[3], "core port")?;
    if server_port == core_port {
        return Err(format!("member '{name}' uses port {server_port} for both server and core"));
    }
    Ok(Member { name: name.to_string(), host: host.to_string(), server_port, core_port })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(s: &str) -> Vec<String> {
        s.split_whitespace().map(String::from).collect()
    }

    #[test]
    fn parses_the_seed_group_and_sorts_members() {
        let g =
            Group::parse(&args("C,localhost,10003,20003 A,localhost,10001,20001 B,localhost,10002,20002"))
                .unwrap();
        assert_eq!(g.names(), "A,B,C");
        assert_eq!(g.node_id("A").unwrap(), 1);
        assert_eq!(g.node_id("C").unwrap(), 3);
        assert_eq!(g.by_id(2).unwrap().server_addr(), "localhost:10002");
        assert_eq!(g.member("B").unwrap().core_port, 20002);
        assert!(g.node_id("D").unwrap_err().contains("not in the group"));
    }

    #[test]
    fn rejects_bad_configurations() {
        let bad = [
            ("A,localhost,10001", "expected id,host"),
            ("A,localhost,10001,20001 A,localhost,10002,20002", "appears twice"),
            ("A,localhost,x,20001", "bad server port"),
            ("A,localhost,0,20001", "bad server port"),
            ("A,localhost,10001,70000", "bad core port"),
            ("A,localhost,10001,10001", "both server and core"),
            ("A,localhost,10001,20001 B,localhost,10001,20002", "used twice"),
            ("A b,localhost,1,2", "expected id,host"),
            (",localhost,1,2", "bad member id"),
        ];
        for (input, want) in bad {
            let err = Group::parse(&[input.to_string()]).unwrap_err();
            assert!(err.contains(want), "{input}: {err}");
        }
        assert!(Group::parse(&[]).is_err());
    }

    #[test]
    fn members_are_recorded_by_their_gc_entry_and_bootstrap_ids_follow_sorted_names() {
        let g = Group::parse(&args("B,h2,3,4 A,h1,1,2 C,h3,5,6")).unwrap();
        let m = g.bootstrap_membership();
        assert_eq!(m.voters(), vec![1, 2, 3]);
        let back = members_of(&m).unwrap();
        assert_eq!(back[0].1.name, "A");
        assert_eq!(back[2].1, *g.member("C").unwrap());
        assert_eq!(Member::from_context(b"D,host,7,8").unwrap().core_addr(), "host:8");
        assert!(Member::from_context(b"nonsense").is_err());
        // The legacy id depends on names only; a bootstrap id on addresses and the token too.
        let moved = Group::parse(&args("A,h9,1,2 B,h2,3,4 C,h3,5,6")).unwrap();
        assert_eq!(g.cluster_id(), moved.cluster_id());
        assert_ne!(g.bootstrap_cluster_id(""), moved.bootstrap_cluster_id(""));
        assert_ne!(g.bootstrap_cluster_id(""), g.bootstrap_cluster_id("prod"));
        assert_eq!(
            g.bootstrap_cluster_id("x"),
            Group::parse(&args("C,h3,5,6 A,h1,1,2 B,h2,3,4")).unwrap().bootstrap_cluster_id("x")
        );
    }
}
