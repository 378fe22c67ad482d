//! A data directory's identity: which cluster and which node it belongs to, recorded once in
//! `raft-kv.meta` and never recomputed from the command line.
//!
//! # Format (version 2)
//! ```text
//! raft-kv data directory v2
//! node=A                               the member's name (-i)
//! cluster=00c0ffee00c0ffee             16 hex digits; absent while a standby waits to be added
//! id=1                                 the Raft node id; absent while a standby waits
//! member=1,A,localhost,10001,20001     the bootstrap membership (a voter per line, as of log
//! member=2,B,localhost,10002,20002     index 0); absent on a node that joined a running cluster
//! ```
//! Every later membership is data in the Raft log and in snapshots; the `-gc` list is read only
//! when a directory is first used to bootstrap a cluster.
//!
//! # Lifecycle
//! - Empty directory, `group-member`/`standalone`: bootstrap. The id is the member's position
//!   among the sorted `-gc` names, the cluster id [`Group::bootstrap_cluster_id`], and the `-gc`
//!   members are the bootstrap membership.
//! - Empty directory, `standby`: only the name is recorded; the node waits to be added. The first
//!   leader that reaches it tells it the cluster id and its node id ([`Identity::adopt`]), which are
//!   recorded before it takes part in anything.
//! - Version 1 (written before membership changes: `node=A` and `members=A,B,C`): upgraded in
//!   place. The ids stay what version 1 computed (sorted names), the cluster id stays the one it
//!   derived from the names ([`Group::cluster_id`]), so upgraded and not yet upgraded members of
//!   one cluster still recognise each other, and the members' addresses come from `-gc` (which
//!   version 1 required to list exactly these members).
//!
//! Invariants: a directory never changes cluster, node name or node id once recorded; the file is
//! replaced atomically (written to a temporary file, synced, renamed, directory synced); anything
//! unreadable is refused with the file's path, never guessed.

use std::path::{Path, PathBuf};

use raft::{Membership, NodeId, Suffrage};

use crate::cluster::{Group, Member};

/// The identity file in a data directory.
pub const META_FILE: &str = "raft-kv.meta";
const V1_HEADER: &str = "raft-kv data directory v1";
const V2_HEADER: &str = "raft-kv data directory v2";

/// Who a data directory belongs to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Identity {
    /// The member's name.
    pub name: String,
    /// The cluster id; `None` while a standby waits to be added.
    pub cluster_id: Option<u64>,
    /// The Raft node id; `None` while a standby waits to be added.
    pub node_id: Option<NodeId>,
    /// The membership as of log index 0 (empty for a node that joined a running cluster).
    pub bootstrap: Membership,
    /// This start upgraded a version 1 file.
    pub upgraded: bool,
}

/// How the node was asked to start.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StartAs {
    /// A member of the `-gc` cluster (bootstraps it on an empty directory).
    Member,
    /// A node that waits to be added to a running cluster.
    Standby,
}

impl Identity {
    /// True while the node waits to be added (it knows no cluster yet).
    pub fn is_waiting(&self) -> bool {
        self.node_id.is_none()
    }

    /// A standby was reached by the leader of cluster `cluster_id`, which knows it as `node_id`:
    /// records both (durably) before the node takes part in anything.
    pub fn adopt(&mut self, dir: &Path, cluster_id: u64, node_id: NodeId) -> Result<(), String> {
        if node_id == 0 || cluster_id == 0 {
            return Err("cluster id and node id must not be 0".into());
        }
        if let (Some(c), Some(n)) = (self.cluster_id, self.node_id) {
            if (c, n) == (cluster_id, node_id) {
                return Ok(());
            }
            return Err(format!(
                "data directory {} already belongs to node {n} of cluster {c:016x}, not node {node_id} of cluster {cluster_id:016x}",
                dir.display()
            ));
        }
        let mut next = self.clone();
        next.cluster_id = Some(cluster_id);
        next.node_id = Some(node_id);
        write(dir, &next.encode())?;
        *self = next;
        Ok(())
    }

    fn encode(&self) -> String {
        let mut s = format!("{V2_HEADER}\nnode={}\n", self.name);
        if let Some(c) = self.cluster_id {
            s.push_str(&format!("cluster={c:016x}\n"));
        }
        if let Some(id) = self.node_id {
            s.push_str(&format!("id={id}\n"));
        }
        for (id, m) in self.bootstrap.members() {
            let member = String::from_utf8_lossy(&m.context);
            s.push_str(&format!("member={id},{member}\n"));
        }
        s
    }

    fn decode(path: &Path, text: &str) -> Result<Identity, String> {
        let bad = |what: String| format!("{} is damaged: {what}", path.display());
        let mut lines = text.lines();
        if lines.next() != Some(V2_HEADER) {
            return Err(bad("no version line".into()));
        }
        let mut id = Identity {
            name: String::new(),
            cluster_id: None,
            node_id: None,
            bootstrap: Membership::new(),
            upgraded: false,
        };
        for line in lines {
            let Some((key, value)) = line.split_once('=') else {
                return Err(bad(format!("line '{line}'")));
            };
            match key {
                "node" => id.name = value.to_string(),
                "cluster" => {
                    let c =
                        u64::from_str_radix(value, 16).map_err(|_| bad(format!("cluster id '{value}'")))?;
                    id.cluster_id = Some(c);
                }
                "id" => {
                    let n: NodeId = value.parse().map_err(|_| bad(format!("node id '{value}'")))?;
                    id.node_id = Some(n);
                }
                "member" => {
                    let (n, entry) = value.split_once(',').ok_or_else(|| bad(format!("member '{value}'")))?;
                    let n: NodeId = n.parse().map_err(|_| bad(format!("member id in '{value}'")))?;
                    let member = Member::from_context(entry.as_bytes()).map_err(|e| bad(e.to_string()))?;
                    if n == 0 || id.bootstrap.contains(n) {
                        return Err(bad(format!("member id {n} reused")));
                    }
                    id.bootstrap.insert(n, Suffrage::Voter, member.context());
                }
                _ => return Err(bad(format!("unknown key '{key}'"))),
            }
        }
        if id.name.is_empty() || id.cluster_id.is_some() != id.node_id.is_some() || id.node_id == Some(0) {
            return Err(bad("node name, cluster id or node id missing".into()));
        }
        Ok(id)
    }
}

/// Opens (or records) the identity of `dir` for node `name` started as `start_as`, with `group`
/// the `-gc` members and `token` the `--cluster-token`. See the module docs.
pub fn open(
    dir: &Path,
    name: &str,
    group: &Group,
    start_as: StartAs,
    token: &str,
) -> Result<Identity, String> {
    let path = dir.join(META_FILE);
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return create(dir, name, group, start_as, token)
        }
        Err(e) => return Err(format!("cannot read {}: {e}", path.display())),
    };
    let mine = |found: &str| -> Result<(), String> {
        if found != name {
            return Err(format!(
                "data directory {} belongs to node '{found}', not '{name}': give each node its own directory",
                dir.display()
            ));
        }
        Ok(())
    };
    if text.starts_with(V1_HEADER) {
        let field = |key: &str| text.lines().find_map(|l| l.strip_prefix(key)).unwrap_or("?").to_string();
        let (node, members) = (field("node="), field("members="));
        mine(&node)?;
        if members != group.names() {
            return Err(format!(
                "data directory {} belongs to a cluster with members {members}, not {} (written by an earlier version, which recorded no addresses: give -gc exactly those members to upgrade it)",
                dir.display(),
                group.names()
            ));
        }
        if start_as == StartAs::Standby {
            return Err(format!(
                "data directory {} belongs to a member of a cluster: do not start it as a standby",
                dir.display()
            ));
        }
        let node_id = group.node_id(name)?;
        let upgraded = Identity {
            name: name.to_string(),
            cluster_id: Some(group.cluster_id()),
            node_id: Some(node_id),
            bootstrap: group.bootstrap_membership(),
            upgraded: true,
        };
        write(dir, &upgraded.encode())?;
        return Ok(upgraded);
    }
    let id = Identity::decode(&path, &text)?;
    mine(&id.name)?;
    if id.is_waiting() && start_as == StartAs::Member {
        return Err(format!(
            "data directory {} belongs to a standby that has not been added to a cluster yet: start it with -m standby (or --standby)",
            dir.display()
        ));
    }
    Ok(id)
}

fn create(dir: &Path, name: &str, group: &Group, start_as: StartAs, token: &str) -> Result<Identity, String> {
    // The lock, and our own temporary left by a crash while the identity was first written, are
    // not data.
    let tmp = format!("{META_FILE}.tmp");
    let has_data = std::fs::read_dir(dir)
        .map(|mut it| {
            it.any(|e| {
                e.is_ok_and(|e| {
                    e.file_name() != "LOCK" && e.file_name() != ".lock" && e.file_name() != tmp.as_str()
                })
            })
        })
        .unwrap_or(false);
    if has_data {
        return Err(format!(
            "data directory {} holds files but no {META_FILE}: it is not a raft-kv directory",
            dir.display()
        ));
    }
    let id = match start_as {
        StartAs::Standby => Identity {
            name: name.to_string(),
            cluster_id: None,
            node_id: None,
            bootstrap: Membership::new(),
            upgraded: false,
        },
        StartAs::Member => Identity {
            name: name.to_string(),
            cluster_id: Some(group.bootstrap_cluster_id(token)),
            node_id: Some(group.node_id(name)?),
            bootstrap: group.bootstrap_membership(),
            upgraded: false,
        },
    };
    write(dir, &id.encode())?;
    Ok(id)
}

/// Replaces `dir/raft-kv.meta` atomically and durably.
fn write(dir: &Path, contents: &str) -> Result<(), String> {
    let path = dir.join(META_FILE);
    let tmp: PathBuf = dir.join(format!("{META_FILE}.tmp"));
    let run = || -> std::io::Result<()> {
        use std::io::Write;
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(contents.as_bytes())?;
        f.sync_all()?;
        std::fs::rename(&tmp, &path)?;
        std::fs::File::open(dir)?.sync_all()
    };
    run().map_err(|e| format!("cannot write {}: {e}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn group(s: &str) -> Group {
        Group::parse(&s.split_whitespace().map(String::from).collect::<Vec<_>>()).unwrap()
    }

    const GC: &str = "A,localhost,1,2 B,localhost,3,4 C,localhost,5,6";

    #[test]
    fn a_new_directory_bootstraps_and_is_enforced_afterwards() {
        let dir = tempfile::tempdir().unwrap();
        let g = group(GC);
        let id = open(dir.path(), "B", &g, StartAs::Member, "").unwrap();
        assert_eq!(id.node_id, Some(2));
        assert_eq!(id.cluster_id, Some(g.bootstrap_cluster_id("")));
        assert_eq!(id.bootstrap, g.bootstrap_membership());
        assert!(!id.upgraded);
        // A later start reads what was recorded, whatever -gc says now.
        let other = group("B,elsewhere,7,8 Z,h,9,10");
        assert_eq!(open(dir.path(), "B", &other, StartAs::Member, "").unwrap(), id);
        assert_eq!(
            open(dir.path(), "B", &other, StartAs::Standby, "").unwrap(),
            id,
            "a member stays a member"
        );
        let err = open(dir.path(), "A", &g, StartAs::Member, "").unwrap_err();
        assert!(err.contains("belongs to node 'B'"), "{err}");
        // A crash while the identity was first written leaves only its temporary: a fresh start.
        let crashed = tempfile::tempdir().unwrap();
        std::fs::write(crashed.path().join("raft-kv.meta.tmp"), b"raft-kv data dir").unwrap();
        assert_eq!(open(crashed.path(), "B", &g, StartAs::Member, "").unwrap().node_id, Some(2));
        let foreign = tempfile::tempdir().unwrap();
        std::fs::write(foreign.path().join("something"), b"x").unwrap();
        let err = open(foreign.path(), "A", &g, StartAs::Member, "").unwrap_err();
        assert!(err.contains("not a raft-kv directory"), "{err}");
    }

    #[test]
    fn a_version_1_file_is_upgraded_in_place_keeping_ids_and_cluster_id() {
        let dir = tempfile::tempdir().unwrap();
        // Exactly what version 1 wrote.
        std::fs::write(dir.path().join(META_FILE), "raft-kv data directory v1\nnode=C\nmembers=A,B,C\n")
            .unwrap();
        let g = group("C,localhost,5,6 A,localhost,1,2 B,localhost,3,4");
        let err = open(dir.path(), "C", &group("A,h,1,2 C,h,5,6"), StartAs::Member, "").unwrap_err();
        assert!(err.contains("members A,B,C"), "{err}");
        let err = open(dir.path(), "C", &g, StartAs::Standby, "").unwrap_err();
        assert!(err.contains("standby"), "{err}");
        let id = open(dir.path(), "C", &g, StartAs::Member, "").unwrap();
        assert!(id.upgraded);
        assert_eq!(id.node_id, Some(3));
        assert_eq!(id.cluster_id, Some(g.cluster_id()), "the id version 1 used, so peers still match");
        assert_eq!(id.bootstrap, g.bootstrap_membership());
        let text = std::fs::read_to_string(dir.path().join(META_FILE)).unwrap();
        assert!(text.starts_with(V2_HEADER) && text.contains("member=3,C,localhost,5,6"), "{text}");
        let again = open(dir.path(), "C", &g, StartAs::Member, "").unwrap();
        assert_eq!((again.node_id, again.cluster_id, again.upgraded), (Some(3), Some(g.cluster_id()), false));
    }

    #[test]
    fn a_standby_waits_until_it_is_adopted_by_a_cluster() {
        let dir = tempfile::tempdir().unwrap();
        let g = group("D,localhost,7,8");
        let mut id = open(dir.path(), "D", &g, StartAs::Standby, "").unwrap();
        assert!(id.is_waiting() && id.bootstrap.is_empty());
        let err = open(dir.path(), "D", &g, StartAs::Member, "").unwrap_err();
        assert!(err.contains("-m standby"), "{err}");
        assert_eq!(open(dir.path(), "D", &g, StartAs::Standby, "").unwrap(), id);
        id.adopt(dir.path(), 0xabc, 4).unwrap();
        id.adopt(dir.path(), 0xabc, 4).unwrap();
        let err = id.adopt(dir.path(), 0xabc, 5).unwrap_err();
        assert!(err.contains("already belongs to node 4"), "{err}");
        let back = open(dir.path(), "D", &g, StartAs::Member, "").unwrap();
        assert_eq!((back.cluster_id, back.node_id), (Some(0xabc), Some(4)));
        assert!(back.bootstrap.is_empty());
    }

    #[test]
    fn damage_is_refused_with_the_path() {
        let dir = tempfile::tempdir().unwrap();
        let g = group(GC);
        for bad in [
            "raft-kv data directory v2\nnode=A\ncluster=zz\nid=1\n",
            "raft-kv data directory v2\nnode=A\ncluster=0a\n",
            "raft-kv data directory v2\nnode=A\ncluster=0a\nid=1\nmember=1,garbage\n",
            "raft-kv data directory v2\nnode=A\nwhat=1\n",
            "raft-kv data directory v3\nnode=A\n",
        ] {
            std::fs::write(dir.path().join(META_FILE), bad).unwrap();
            let err = open(dir.path(), "A", &g, StartAs::Member, "").unwrap_err();
            assert!(err.contains(META_FILE), "{bad}: {err}");
        }
    }
}
