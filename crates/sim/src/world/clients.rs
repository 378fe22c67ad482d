//! The simulated clients: each issues one request at a time (the workload's next step) to a live
//! node it picks, records its calls and returns in the history the linearizability checker reads,
//! and checks each answer: a read is served from a state that includes every index committed when
//! it was issued, and a request issued after the faults stopped must succeed (liveness).

use engine::Input;
use raft::{NodeId, Role};

use super::{Event, World};
use crate::linearizability::Op;
use crate::workload;

impl World {
    pub(super) fn client_issue(&mut self, c: usize) {
        if self.clients[c].outstanding.is_some() {
            return;
        }
        // Clients use the live nodes the operator has not removed (a removed node may not know it,
        // and never hears of a leader again), and none that the newest leader's configuration
        // lacks (the operator stops looking once its plan is done; a removal whose answer was
        // lost is seen there).
        let newest = self
            .nodes
            .values()
            .filter_map(|n| n.driver.as_ref())
            .filter(|d| d.node().role() == Role::Leader)
            .max_by_key(|d| d.node().term())
            .map(|d| d.node().membership().clone());
        let live: Vec<NodeId> = self
            .nodes
            .iter()
            .filter(|(id, n)| n.driver.is_some() && self.operator.serves(**id))
            .filter(|(id, _)| newest.as_ref().is_none_or(|m| m.contains(**id)))
            .map(|(id, _)| *id)
            .collect();
        if live.is_empty() {
            let delay = self.rng.range(10, 50);
            self.schedule(delay, Event::ClientWake(c as u64));
            return;
        }
        let mut node = live[self.rng.range(0, live.len() as u64) as usize];
        let step = workload::next_step(&mut self.rng, &mut self.clients[c], self.cfg.keys);
        if self.cfg.lease_reads && matches!(step.request, engine::Request::Read(_)) && self.rng.chance(0.5) {
            // Readers that found a leader keep using it, also while it stalls or is cut off (and
            // may still believe in its lease): any node that believes it leads.
            let leaders: Vec<NodeId> = live
                .iter()
                .copied()
                .filter(|id| self.nodes[id].driver.as_ref().is_some_and(|d| d.node().role() == Role::Leader))
                .collect();
            if !leaders.is_empty() {
                node = leaders[self.rng.range(0, leaders.len() as u64) as usize];
            }
        }
        let workload::Step { key, record, request, txn } = step;
        let index = match record {
            Some(op) => workload::record_call(&mut self.history, self.clients[c].id, key, op, self.now),
            None => workload::NOT_RECORDED,
        };
        let id = self.next_request;
        self.next_request += 1;
        self.requests.insert(id, c);
        self.clients[c].outstanding = Some((index, node, id));
        self.clients[c].txn = txn;
        if matches!(request, engine::Request::Read(_)) {
            self.read_floor.insert(id, self.invariants.max_commit());
        }
        self.input(node, Input::Client(id, request));
    }

    pub(super) fn client_answer(&mut self, request: u64, response: engine::Response) -> Result<(), String> {
        let Some(c) = self.requests.remove(&request) else {
            return Err(format!("answer to unknown request {request}"));
        };
        let Some((index, node, id)) = self.clients[c].outstanding.take() else {
            return Err(format!("client {c} got an answer with nothing outstanding"));
        };
        if id != request {
            return Err(format!("client {c} got the answer to {request} while waiting for {id}"));
        }
        let (call, op) = match self.history.get(index) {
            Some(h) => (h.call, h.op.clone()),
            None => (self.now, Op::Get), // The WATCH (a read, not recorded).
        };
        if let (Some(floor), Ok(_)) = (self.read_floor.remove(&request), &response) {
            let applied =
                self.nodes.get(&node).and_then(|n| n.driver.as_ref()).map_or(0, |d| d.kv().applied_index());
            if applied < floor {
                return Err(format!(
                    "stale read: node {node} answered {op:?} at applied index {applied}, but {floor} was committed when it was issued"
                ));
            }
        }
        if index == workload::NOT_RECORDED {
            workload::watch_answered(&mut self.clients[c], &response);
            let think = self.rng.range(0, 20);
            self.schedule(think, Event::ClientWake(c as u64));
            return Ok(());
        }
        let outcome = workload::outcome(&op, self.clients[c].txn, response.clone());
        workload::step_answered(&mut self.clients[c], &outcome);
        match outcome {
            Ok(Some(out)) => {
                self.history[index].ret = Some(self.now);
                self.history[index].output = Some(out);
                self.report.completed += 1;
            }
            // A node the operator removed meanwhile may never hear of a leader again.
            Ok(None) | Err(_) if call >= self.must_succeed_after && self.operator.serves(node) => {
                return Err(format!(
                    "liveness: request {op:?} issued at {call} ms, after the faults stopped, failed at {} ms: {response:?}",
                    self.now
                ));
            }
            Ok(None) => {}
            Err(_) => self.history[index].call = u64::MAX, // Did not happen: removed below.
        }
        let think = self.rng.range(0, 20);
        self.schedule(think, Event::ClientWake(c as u64));
        Ok(())
    }
}
