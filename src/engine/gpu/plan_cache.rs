//! Plans kept for recordings that run again. A training loop runs the same recording chunk after
//! chunk; planning it (fusion, lowering, pipeline and bind-group lookups) each time would cost
//! more host time than encoding it. A plan is found by the recording's ops (the same ops on the
//! same tensors); tensor ids are never reused and a live tensor keeps its buffer, so a plan
//! found is the plan that planning again would make, as long as its tensors are alive (the
//! engine checks) and the params buffer its bind groups point at is the current one.

use super::Prepared;
use crate::engine::Op;
use crate::engine::fusion::Fusion;
use std::collections::VecDeque;

/// Recordings whose plans are kept: more than a training loop and its evaluation use at once.
const PLANS_KEPT: usize = 16;

/// One recording's plan, ready to encode.
pub(super) struct CachedPlan {
    pub ops: Vec<Op>,
    pub fusion: Fusion,
    pub params_generation: u64,
    /// The ids of every tensor the ops name, once each.
    pub tensor_ids: Vec<u32>,
    /// One params slot's words per dispatch, slot after slot.
    pub params: Vec<u32>,
    pub dispatches: Vec<Prepared>,
    /// Tells plans apart for the params buffer's contents (unique per plan made).
    pub serial: u64,
}

#[derive(Default)]
pub(super) struct PlanCache {
    plans: VecDeque<CachedPlan>,
    next_serial: u64,
}

impl PlanCache {
    /// Makes the plan kept for these ops under these settings the newest; false if none is.
    pub fn promote(&mut self, ops: &[Op], fusion: Fusion, params_generation: u64) -> bool {
        let found = self.plans.iter().position(|plan| {
            plan.fusion == fusion
                && plan.params_generation == params_generation
                && plan.ops[..] == *ops
        });
        if let Some(at) = found.filter(|&at| at > 0) {
            let plan = self.plans.remove(at).expect("found");
            self.plans.push_front(plan);
        }
        found.is_some()
    }

    /// Keeps `plan` as the newest with a new serial, forgetting the oldest beyond the limit.
    pub fn insert(&mut self, mut plan: CachedPlan) {
        plan.serial = self.next_serial;
        self.next_serial += 1;
        if self.plans.len() == PLANS_KEPT {
            self.plans.pop_back();
        }
        self.plans.push_front(plan);
    }

    /// Plans made since the engine was created.
    pub fn made(&self) -> u64 {
        self.next_serial
    }

    /// The plan found or inserted last.
    pub fn newest(&self) -> Option<&CachedPlan> {
        self.plans.front()
    }

    /// Forgets every plan (their bind groups point at a params buffer that was replaced).
    pub fn clear(&mut self) {
        self.plans.clear();
    }
}
