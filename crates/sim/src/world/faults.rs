//! The nemesis: crashes (power failures), leader churn (Figure 8) and the faults it picks at
//! random (partitions, stalls, slow disks, transfers; see the module docs of [`super`]).

use engine::Input;
use raft::{NodeId, Role};
use storage::FaultOp;

use super::{Event, World};

impl World {
    pub(super) fn crash(&mut self, id: NodeId) {
        let seed = self.rng.next_u64();
        let node = self.nodes.get_mut(&id).expect("node exists");
        let Some(dead) = node.driver.take() else {
            return;
        };
        let st = dead.snapshot_stats();
        self.report.snapshots.0 += st.taken;
        self.report.snapshots.1 += st.installed;
        self.report.snapshots.2 += st.chunks_sent;
        node.job = None;
        node.restore = None;
        node.sync = None;
        node.inbox.clear();
        node.run_scheduled = false;
        node.fs.crash(seed);
        self.trace.note(self.now, id, "crashes (power failure: unsynced data lost)");
        self.operator.crashed(id);
        // A fault armed for the dead incarnation does not carry over to the next one.
        node.fs.fail_next(FaultOp::Sync, 0);
        node.fault_armed = false;
        self.report.crashes += 1;
        // A power failure also loses what sat in the node's socket buffers: each of its messages
        // not delivered yet is lost with probability 1/2. Its connections are gone: what the
        // restarted node sends, and what is sent to it, goes on new ones.
        let mut lost = Vec::new();
        for (key, event) in &self.events {
            if matches!(event, Event::Deliver(m) if m.from() == id) && self.rng.chance(0.5) {
                lost.push(*key);
            }
        }
        for key in lost {
            self.events.remove(&key);
        }
        self.net.reconnect_node(id);
        // Requests held by the crashed node are now indeterminate; their clients move on.
        for c in 0..self.clients.len() {
            if let Some((_, n, req)) = self.clients[c].outstanding {
                if n == id {
                    self.clients[c].outstanding = None;
                    self.clients[c].watch = None;
                    self.requests.remove(&req);
                    self.read_floor.remove(&req);
                    let delay = self.rng.range(0, 20);
                    self.schedule(delay, Event::ClientWake(c as u64));
                }
            }
        }
    }

    /// Leader churn (Figure 8): a new leader is sometimes crashed before its no-op reaches a
    /// majority, so later leaders inherit logs holding uncommitted entries of several older terms.
    pub(super) fn churn(&mut self) {
        if self.calm || !self.cfg.crashes {
            return;
        }
        let newest = self.last_leader_term;
        let new = self.nodes.iter().find_map(|(id, n)| {
            let d = n.driver.as_ref()?;
            (d.node().role() == Role::Leader && d.node().term() > newest).then(|| (*id, d.node().term()))
        });
        if let Some((id, term)) = new {
            self.last_leader_term = term;
            if self.rng.chance(self.cfg.churn) {
                let delay = self.rng.range(0, 20);
                self.schedule(delay, Event::Crash(id));
            }
        }
    }

    pub(super) fn nemesis(&mut self) -> Result<(), String> {
        let all: Vec<NodeId> = self.nodes.keys().copied().collect();
        let n = all.len() as u64;
        // Lease runs also stall the leader (5) and transfer leadership (6, 7).
        let pick = self.rng.range(0, if self.cfg.lease_reads { 8 } else { 6 });
        let before = self.net.cut.clone();
        let duration = self.rng.range(50, 1000);
        match pick {
            0 | 1 if self.cfg.crashes => {
                // Crash the leader (often) or anyone, and restart it later.
                let leader = self
                    .nodes
                    .iter()
                    .find(|(_, nd)| nd.driver.as_ref().is_some_and(|d| d.node().role() == Role::Leader));
                let victim = match (pick, leader) {
                    (0, Some((id, _))) => *id,
                    _ => all[self.rng.range(0, n) as usize],
                };
                self.crash(victim);
                self.schedule(duration, Event::Restart(victim));
            }
            2 | 3 if self.cfg.partitions => {
                // A random split into two sides, or one node isolated.
                let mut side = Vec::new();
                for &id in &all {
                    if self.rng.chance(0.5) {
                        side.push(id);
                    }
                }
                let mut duration = duration;
                if pick == 3 {
                    // One node isolated, the leader if there is one: the others elect a new leader
                    // while the old one may go on serving clients.
                    let leader = self.nodes.iter().find_map(|(id, nd)| {
                        nd.driver.as_ref().filter(|d| d.node().role() == Role::Leader).map(|_| *id)
                    });
                    let random = all[self.rng.range(0, n) as usize];
                    side = vec![leader.unwrap_or(random)];
                    duration = self.rng.range(300, 1500);
                }
                self.net.partition(&side, &all);
                self.report.partitions += 1;
                let added = self.net.cut.difference(&before).copied().collect();
                self.schedule(duration, Event::Heal(added));
            }
            4 if self.cfg.partitions => {
                // One-way cuts.
                for _ in 0..self.rng.range(1, n) {
                    let a = all[self.rng.range(0, n) as usize];
                    let b = all[self.rng.range(0, n) as usize];
                    if a != b {
                        self.net.cut.insert((a, b));
                    }
                }
                self.report.partitions += 1;
                let added = self.net.cut.difference(&before).copied().collect();
                self.schedule(duration, Event::Heal(added));
            }
            6 | 7 if self.cfg.lease_reads => {
                // A leadership transfer while clients read at the old leader: its lease must end
                // before the target campaigns (voters grant a transfer despite the lease).
                let leader = self.nodes.iter().find_map(|(id, nd)| {
                    nd.driver.as_ref().filter(|d| d.node().role() == Role::Leader).map(|d| (*id, d))
                });
                if let Some((id, d)) = leader {
                    // The most caught-up voter: the leader sends it TimeoutNow soon.
                    let target = d
                        .node()
                        .membership()
                        .voters()
                        .into_iter()
                        .filter(|&v| v != id)
                        .max_by_key(|&v| d.node().progress(v).map_or(0, |p| p.match_index));
                    if let Some(target) = target {
                        let request = self.next_request;
                        self.next_request += 1;
                        self.nemesis_requests.insert(request);
                        self.report.transfers += 1;
                        self.trace.note(self.now, id, format!("nemesis asks for a transfer to {target}"));
                        self.input(id, Input::Client(request, engine::Request::TransferLeader(target)));
                        if self.cfg.partitions && self.rng.chance(0.5) {
                            // The old leader stops hearing anyone (a one-way cut): it may go on
                            // believing it leads while the target takes over.
                            for &other in all.iter().filter(|&&o| o != id) {
                                self.net.cut.insert((other, id));
                            }
                            self.report.partitions += 1;
                            let added = self.net.cut.difference(&before).copied().collect();
                            let duration = self.rng.range(100, 400);
                            self.schedule(duration, Event::Heal(added));
                        }
                    }
                }
            }
            5 if self.cfg.lease_reads => {
                // The leader's thread stalls past its lease (a VM pause) and its links go silent
                // meanwhile, so it hears nothing of the new leader the others elect: the reads
                // queued at it must not be served from its old lease when it wakes up.
                let leader = self.nodes.iter().find_map(|(id, nd)| {
                    nd.driver.as_ref().filter(|d| d.node().role() == Role::Leader).map(|_| *id)
                });
                if let Some(id) = leader {
                    if let Some(n) = self.nodes.get_mut(&id) {
                        n.stall_next = true;
                    }
                    self.report.leader_stalls += 1;
                    if self.cfg.partitions {
                        self.net.partition(&[id], &all);
                        self.report.partitions += 1;
                        let added = self.net.cut.difference(&before).copied().collect();
                        let duration = self.rng.range(150, 600);
                        self.schedule(duration, Event::Heal(added));
                    }
                }
            }
            _ => {}
        }
        if self.net.cut != before {
            self.trace.cuts(self.now, "nemesis partitions", &self.net.cut);
        }
        Ok(())
    }
}
