//! The cluster's static membership, as given on the command line in the seed's format
//! (`-gc A,localhost,10001,20001 B,localhost,10002,20002 ...`: `id,host,serverPort,corePort` per
//! member), and the identity record kept in each data directory.
//!
//! Invariants:
//! - Member names are unique, non-empty, and made of `[A-Za-z0-9_-]`; ports are non-zero; no two
//!   members share a (host, port).
//! - Raft node ids are assigned by the *sorted* member names (1, 2, ...), so listing the members in a
//!   different order on another node, or on restart, names the same nodes.
//! - A data directory belongs to exactly one (cluster, node): the first start records both in
//!   `raft-kv.meta`; later starts with another node id or membership are refused.

use std::fmt;
use std::path::Path;

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

    /// A 64-bit id of the cluster (FNV-1a of the member names), exchanged in peer handshakes.
    pub fn cluster_id(&self) -> u64 {
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        for b in self.names().bytes() {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
        h
    }
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

/// The identity file in a data directory.
pub const META_FILE: &str = "raft-kv.meta";

/// Checks that `dir` belongs to node `name` of `group`, recording it on first use.
pub fn check_data_dir(dir: &Path, name: &str, group: &Group) -> Result<(), String> {
    let path = dir.join(META_FILE);
    let want = format!("raft-kv data directory v1\nnode={name}\nmembers={}\n", group.names());
    match std::fs::read_to_string(&path) {
        Ok(found) => {
            if found == want {
                return Ok(());
            }
            let field =
                |key: &str| found.lines().find_map(|l| l.strip_prefix(key)).unwrap_or("?").to_string();
            let (node, members) = (field("node="), field("members="));
            if node != name {
                return Err(format!(
                    "data directory {} belongs to node '{node}', not '{name}': give each node its own directory",
                    dir.display()
                ));
            }
            Err(format!(
                "data directory {} belongs to a cluster with members {members}, not {}",
                dir.display(),
                group.names()
            ))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let has_data = std::fs::read_dir(dir)
                .map(|mut it| {
                    it.any(|e| e.is_ok_and(|e| e.file_name() != "LOCK" && e.file_name() != ".lock"))
                })
                .unwrap_or(false);
            if has_data {
                return Err(format!(
                    "data directory {} holds files but no {META_FILE}: it is not a raft-kv directory (or from an older version)",
                    dir.display()
                ));
            }
            let tmp = dir.join(format!("{META_FILE}.tmp"));
            let write = || -> std::io::Result<()> {
                use std::io::Write;
                let mut f = std::fs::File::create(&tmp)?;
                f.write_all(want.as_bytes())?;
                f.sync_all()?;
                std::fs::rename(&tmp, &path)?;
                std::fs::File::open(dir)?.sync_all()
            };
            write().map_err(|e| format!("cannot write {}: {e}", path.display()))
        }
        Err(e) => Err(format!("cannot read {}: {e}", path.display())),
    }
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
    fn data_dir_identity_is_recorded_and_enforced() {
        let dir = tempfile::tempdir().unwrap();
        let g = Group::parse(&args("A,localhost,1,2 B,localhost,3,4 C,localhost,5,6")).unwrap();
        check_data_dir(dir.path(), "A", &g).unwrap();
        check_data_dir(dir.path(), "A", &g).unwrap();
        let err = check_data_dir(dir.path(), "B", &g).unwrap_err();
        assert!(err.contains("belongs to node 'A'"), "{err}");
        let other = Group::parse(&args("A,localhost,1,2 B,localhost,3,4")).unwrap();
        let err = check_data_dir(dir.path(), "A", &other).unwrap_err();
        assert!(err.contains("members A,B,C"), "{err}");
        let foreign = tempfile::tempdir().unwrap();
        std::fs::write(foreign.path().join("something"), b"x").unwrap();
        assert!(check_data_dir(foreign.path(), "A", &g).unwrap_err().contains("not a raft-kv directory"));
    }
}
