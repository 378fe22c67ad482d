//! The server side of the membership commands: `RAFT.MEMBER LIST | ADD | PROMOTE | REMOVE` and
//! `RAFT.TRANSFER` (admin category; see `auth`).
//!
//! Members are named by their `-gc` name (`D`), never by Raft id: the server maps a name to the id
//! the node's latest configuration gives it ([`crate::node::Status::members`]). The change itself
//! is the driver's (`engine::driver::admin`): only the leader proposes it, one at a time, and the
//! answer comes once the configuration entry is committed and applied on the leader.
//!
//! - `ADD name host clientPort corePort`: the new node must be reachable on its core port (a
//!   standby waiting there, `raft-kv ... -m standby`) before anything is proposed; it joins as a
//!   learner with the next unused id. Answered with that id.
//! - `PROMOTE name`: a learner that is caught up (within the core's `max_promote_lag` entries)
//!   becomes a voter; one that is behind is refused with how far it is (retry: `raft-kv member add
//!   --voter` does).
//! - `REMOVE name`: any member, the leader included (it hands leadership over once the change
//!   commits); the last voter cannot be removed.
//! - `LIST`: one line per member: `name=D id=4 kind=learner client=host:port core=host:port
//!   match=N lag=N` (match and lag on the leader only, `-` elsewhere).
//! - `TRANSFER name`: the leader hands leadership to voter `name`; answered once it leads.
//!
//! Errors are one line and say what to do: `NOTLEADER` names the leader and its address (every
//! command but LIST goes to the leader), a name that exists / does not exist, a change in flight,
//! an unreachable new node. Invariant: a command is answered exactly once, and nothing is proposed
//! for a refused one.

use std::time::Duration;

use bytes::Bytes;
use engine::kv::Reply;
use engine::{MemberChange, Request as EngineRequest, RequestError, Response};
use tokio::sync::{oneshot, OwnedSemaphorePermit};

use crate::cluster::{parse_member_entry, Member};
use crate::node::{NodeHandle, Status};

/// How long `ADD` waits for the new node's core port to accept a TCP connection.
pub const REACH_TIMEOUT: Duration = Duration::from_secs(2);

/// What an admin command becomes.
pub enum Admin {
    /// Answered at once.
    Now(Reply),
    /// Answered by a task (the receiver gets the answer).
    Later(oneshot::Receiver<Response>),
}

fn err(text: impl std::fmt::Display) -> Admin {
    Admin::Now(Reply::Error(format!("ERR {text}")))
}

fn text(b: &Bytes) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// Handles `RAFT.MEMBER ...` (`args` after the command name) or `RAFT.TRANSFER name`.
pub fn handle(name: &str, args: &[Bytes], node: &NodeHandle, permit: OwnedSemaphorePermit) -> Admin {
    let status = node.status();
    if node.is_standby() || node.is_removed() {
        return err("this node is not a member of a cluster (a standby, or removed): ask a member");
    }
    if name == "raft.transfer" {
        let [target] = args else { return err("usage: RAFT.TRANSFER name") };
        let target = text(target);
        let Some(m) = status.member_named(&target) else {
            return err(format!("no member is named '{target}' ({})", names(&status)));
        };
        if !m.voter {
            return err(format!(
                "member '{target}' is a learner: only a voter can lead (RAFT.MEMBER PROMOTE it first)"
            ));
        }
        return submit(node, &status, EngineRequest::TransferLeader(m.id), permit, None);
    }
    let Some((sub, rest)) = args.split_first() else {
        return err(
            "usage: RAFT.MEMBER LIST | ADD name host clientPort corePort | PROMOTE name | REMOVE name",
        );
    };
    match text(sub).to_ascii_lowercase().as_str() {
        "list" if rest.is_empty() && status.role != "leader" && status.leader.is_some() => {
            // Match index and lag are the leader's to know.
            Admin::Now(Reply::Error(not_leader(leader_of(&status).as_ref())))
        }
        "list" if rest.is_empty() => {
            Admin::Now(Reply::Array(list(&status).into_iter().map(|l| Reply::Bulk(l.into())).collect()))
        }
        "add" => {
            let words: Vec<String> = rest.iter().map(text).collect();
            let entry = match words.len() {
                4 => words.join(","),
                1 => words[0].clone(),
                _ => return err("usage: RAFT.MEMBER ADD name host clientPort corePort"),
            };
            let member = match parse_member_entry(&entry) {
                Ok(m) => m,
                Err(e) => return err(e),
            };
            if status.member_named(&member.name).is_some() {
                return err(format!("a member named '{}' exists already ({})", member.name, names(&status)));
            }
            let id = status.next_id.max(1);
            let change = MemberChange::Add { id, context: member.context() };
            submit(node, &status, EngineRequest::Member(change), permit, Some(member))
        }
        sub @ ("promote" | "remove") => {
            let [who] = rest else { return err(format!("usage: RAFT.MEMBER {} name", sub.to_uppercase())) };
            let who = text(who);
            let Some(m) = status.member_named(&who) else {
                return err(format!("no member is named '{who}' ({})", names(&status)));
            };
            if sub == "promote" && m.voter {
                return err(format!("member '{who}' is a voter already"));
            }
            if sub == "promote" && m.match_index == Some(0) {
                return err(format!(
                    "learner '{who}' is not caught up: it holds nothing yet (is it running and reachable?); promote it once it is"
                ));
            }
            let change =
                if sub == "promote" { MemberChange::Promote(m.id) } else { MemberChange::Remove(m.id) };
            submit(node, &status, EngineRequest::Member(change), permit, None)
        }
        _ => err("usage: RAFT.MEMBER LIST | ADD name host clientPort corePort | PROMOTE name | REMOVE name"),
    }
}

/// The members' names, for error messages.
fn names(status: &Status) -> String {
    let names: Vec<&str> = status.members.iter().map(|m| m.name()).collect();
    format!("members: {}", names.join(", "))
}

/// `RAFT.MEMBER LIST`'s lines.
pub fn list(status: &Status) -> Vec<String> {
    let last = status.members.iter().filter_map(|m| m.match_index).max().unwrap_or(0);
    status
        .members
        .iter()
        .map(|m| {
            let (client, core) = match Member::from_context(m.record.as_bytes()) {
                Ok(rec) => (rec.server_addr(), rec.core_addr()),
                Err(_) => ("?".into(), "?".into()),
            };
            let (matched, lag) = match m.match_index {
                Some(i) => (i.to_string(), last.saturating_sub(i).to_string()),
                None => ("-".into(), "-".into()),
            };
            let kind = if m.voter { "voter" } else { "learner" };
            format!(
                "name={} id={} kind={kind} client={client} core={core} match={matched} lag={lag}",
                m.name(),
                m.id
            )
        })
        .collect()
}

/// Submits `request` to the node thread from a task (after checking that `adding` is reachable),
/// turning a not-the-leader answer into one that names the leader.
fn submit(
    node: &NodeHandle,
    status: &Status,
    request: EngineRequest,
    permit: OwnedSemaphorePermit,
    adding: Option<Member>,
) -> Admin {
    let (tx, rx) = oneshot::channel();
    let node = node.clone();
    let leader = leader_of(status);
    let leads = status.role == "leader";
    tokio::spawn(async move {
        if !leads {
            drop(permit);
            let _ = tx.send(Ok(Reply::Error(not_leader(leader.as_ref()))));
            return;
        }
        if let Some(m) = &adding {
            if let Err(e) = reach(&m.core_addr()).await {
                drop(permit);
                let _ = tx.send(Ok(Reply::Error(format!(
                    "ERR cannot reach the new node {} on its core port {} ({e}): start it first with `raft-kv -gc {m} -m standby -i {} -d DIR`; nothing was done",
                    m.name,
                    m.core_addr(),
                    m.name
                ))));
                return;
            }
        }
        let response = node.submit(request, permit).await.unwrap_or(Err(RequestError::Timeout));
        let response = match response {
            Err(RequestError::NotLeader { .. }) => Ok(Reply::Error(not_leader(leader.as_ref()))),
            Err(RequestError::Timeout) => Ok(Reply::Error(
                "TIMEOUT the change was not confirmed in time; it may still take effect: check RAFT.MEMBER LIST".into(),
            )),
            other => other,
        };
        let _ = tx.send(response);
    });
    Admin::Later(rx)
}

/// The known leader's name and client address.
fn leader_of(status: &Status) -> Option<(String, String)> {
    status.leader.map(|id| {
        let m = status.members.iter().find(|m| m.id == id);
        let addr = m.and_then(|m| Member::from_context(m.record.as_bytes()).ok()).map(|m| m.server_addr());
        (status.name_of(id), addr.unwrap_or_default())
    })
}

fn not_leader(leader: Option<&(String, String)>) -> String {
    match leader {
        Some((name, addr)) => {
            format!("NOTLEADER only the leader does this: ask {name} at {addr}; nothing was done")
        }
        None => "NOTLEADER only the leader does this and no leader is known now; retry shortly".into(),
    }
}

/// Checks that `addr` accepts a TCP connection within [`REACH_TIMEOUT`].
async fn reach(addr: &str) -> Result<(), String> {
    match tokio::time::timeout(REACH_TIMEOUT, tokio::net::TcpStream::connect(addr)).await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err(format!("no answer within {REACH_TIMEOUT:?}")),
    }
}
