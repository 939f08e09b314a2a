//! Placing one round's new replicas: the scheduler, with each slot pinned
//! to the node that holds its named volumes (see [`crate::volumes::pin_of`]).
//! A volume not made yet goes where its first replica goes, and later
//! slots of the round that share it follow. A pinned replica whose node is
//! down, drained or gone waits for it (it never starts elsewhere empty),
//! and says so.

use std::collections::{BTreeMap, HashMap};

use api::spec::ServiceSpec;

use crate::control::schedule::{demand_of, unplaced_message, Demand, Scheduler};
use crate::store::VolumeRecord;
use crate::volumes::{pin_of, volumes_of, waiting_message, Pin};

/// One plan's placements for `spec`.
pub(crate) struct Placer<'a> {
    spec: &'a ServiceSpec,
    demand: Demand<'a>,
    held: &'a BTreeMap<String, VolumeRecord>,
    busy: &'a BTreeMap<String, String>,
    /// Volumes placed this round, before any record exists.
    chosen: HashMap<String, String>,
    /// Why the last unplaced replica was not placed, when the scheduler's
    /// reasons do not say it: its volume's node.
    pub waiting: Option<String>,
    /// The scheduler's reasons for the last unplaced replica.
    pub rejected: Option<scheduler::Rejections>,
}

impl<'a> Placer<'a> {
    pub fn new(
        spec: &'a ServiceSpec,
        held: &'a BTreeMap<String, VolumeRecord>,
        busy: &'a BTreeMap<String, String>,
    ) -> Self {
        Placer {
            spec,
            demand: demand_of(spec),
            held,
            busy,
            chosen: HashMap::new(),
            waiting: None,
            rejected: None,
        }
    }

    pub fn demand(&self) -> &Demand<'a> {
        &self.demand
    }

    /// The node for a new replica of `slot`, reserved on `scheduler`.
    pub fn place(&mut self, scheduler: &mut Scheduler, slot: u32) -> Option<String> {
        if let Some(why) = volumes_of(self.spec, slot)
            .iter()
            .find_map(|k| self.busy.get(k).map(|w| format!("volume {k} is {w}")))
        {
            self.waiting = Some(why);
            return None;
        }
        let pin = pin_of(self.spec, slot, &|key| {
            self.held
                .get(key)
                .map(|v| v.node.clone())
                .or_else(|| self.chosen.get(key).cloned())
        });
        match pin {
            Pin::Free => match scheduler.place(&self.demand) {
                Ok(node) => {
                    for key in volumes_of(self.spec, slot) {
                        self.chosen.insert(key, node.clone());
                    }
                    Some(node)
                }
                Err(r) => {
                    self.rejected = Some(r);
                    None
                }
            },
            Pin::Node { node, volume } => {
                let mut demand = self.demand;
                demand.node = Some(node.as_str());
                match scheduler.place(&demand) {
                    Ok(n) => Some(n),
                    Err(r) => {
                        let usable = scheduler
                            .nodes()
                            .iter()
                            .any(|c| c.id == node && c.ready && !c.drained);
                        if usable {
                            self.rejected = Some(r);
                        } else {
                            self.waiting = Some(waiting_message(&node, &volume));
                        }
                        None
                    }
                }
            }
            Pin::Nowhere(why) => {
                self.waiting = Some(why);
                None
            }
        }
    }

    /// Why `unplaced` replicas have no node.
    pub fn unplaced(&self, unplaced: u32) -> Option<String> {
        if unplaced == 0 {
            return None;
        }
        self.waiting.clone().or_else(|| {
            self.rejected
                .as_ref()
                .map(|r| unplaced_message(unplaced, r, &self.demand))
        })
    }
}
