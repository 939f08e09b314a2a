#![cfg_attr(test, allow(clippy::unwrap_used))]

//! Where a new replica goes, pure: filters (the pinned node, labels, the
//! host paths and devices it needs allowed, ready and undrained, room for
//! its reservation), then a score (`spread` or
//! `binpack`). Only reservations count towards room: limits are caps the
//! kernel enforces by time-sharing (CPU) and are not set aside. A
//! placement holds the replica's reservation (and adds its CPU limit to
//! the node's load) on the node it picks, so the next placement sees
//! them. What cannot be placed says which filter ruled out how many nodes.

use std::collections::BTreeMap;

/// CPUs and memory: what a node has, what is reserved on it, what a
/// replica reserves.
#[derive(Debug, Clone, Copy, PartialEq, Default, serde::Serialize, serde::Deserialize)]
pub struct Capacity {
    pub cpu: f64,
    pub memory_bytes: u64,
}

/// What replicas hold on a node: their reservations, which placement
/// counts, and their CPU limits summed, which `spread` weighs as load.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Load {
    pub reserved: Capacity,
    pub cpu_limits: f64,
}

impl Load {
    /// Adds `other` (one more replica, or another node's share).
    pub fn add(&mut self, other: Load) {
        self.reserved.cpu += other.reserved.cpu;
        self.reserved.memory_bytes += other.reserved.memory_bytes;
        self.cpu_limits += other.cpu_limits;
    }
}

/// `placement.strategy`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum PlacementStrategy {
    /// Replicas of a service on as many nodes as possible.
    #[default]
    Spread,
    /// Fill the fullest node that fits.
    Binpack,
}

/// A node as the scheduler sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct Candidate {
    pub id: String,
    pub labels: BTreeMap<String, String>,
    /// Connected, with its inventory known.
    pub ready: bool,
    pub drained: bool,
    pub capacity: Capacity,
    /// Reserved by the replicas placed there (never their usage).
    pub reserved: Capacity,
    /// The CPU limits of the replicas placed there, summed: how much of
    /// the node they may take when busy. `spread` weighs it as load; it
    /// never rules a node out.
    pub cpu_limits: f64,
    /// Replicas of the service being placed that run there.
    pub of_service: u32,
    /// It allows the host paths and devices the service needs (its
    /// `[volumes]` lists).
    pub host_access: bool,
}

impl Candidate {
    /// One more replica of the service, holding `load`.
    pub fn hold(&mut self, load: Load) {
        self.reserved.cpu += load.reserved.cpu;
        self.reserved.memory_bytes += load.reserved.memory_bytes;
        self.cpu_limits += load.cpu_limits;
        self.of_service += 1;
    }

    /// One replica of the service fewer, and what it held (a what-if).
    pub fn release(&mut self, load: Load) {
        self.reserved.cpu = (self.reserved.cpu - load.reserved.cpu).max(0.0);
        self.reserved.memory_bytes = self
            .reserved
            .memory_bytes
            .saturating_sub(load.reserved.memory_bytes);
        self.cpu_limits = (self.cpu_limits - load.cpu_limits).max(0.0);
        self.of_service = self.of_service.saturating_sub(1);
    }
}

/// What one replica asks for.
#[derive(Debug, Clone, Copy)]
pub struct Demand<'a> {
    pub node: Option<&'a str>,
    pub labels: &'a BTreeMap<String, String>,
    pub strategy: PlacementStrategy,
    /// What it reserves: the only part that needs room.
    pub reserve: Capacity,
    /// Its CPU limit (0: none), load for `spread`.
    pub cpu_limit: f64,
}

impl Demand<'_> {
    /// What a replica of this demand holds on its node.
    pub fn load(&self) -> Load {
        Load {
            reserved: self.reserve,
            cpu_limits: self.cpu_limit,
        }
    }
}

/// How many nodes each filter ruled out (each node counts once, at the
/// first filter it fails).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Rejections {
    pub not_pinned: u32,
    pub labels: u32,
    pub host_access: u32,
    pub not_ready: u32,
    pub drained: u32,
    pub memory: u32,
    pub cpu: u32,
}

/// Slack for float sums of CPU shares.
const CPU_EPSILON: f64 = 1e-9;

/// See the module doc.
#[derive(Debug, Clone)]
pub struct Scheduler {
    nodes: Vec<Candidate>,
}

impl Scheduler {
    pub fn new(nodes: Vec<Candidate>) -> Self {
        Self { nodes }
    }

    /// The nodes with what has been placed so far.
    pub fn nodes(&self) -> &[Candidate] {
        &self.nodes
    }

    /// The nodes, with what has been placed.
    pub fn into_nodes(self) -> Vec<Candidate> {
        self.nodes
    }

    /// Picks a node for one replica and reserves its resources there.
    pub fn place(&mut self, demand: &Demand) -> Result<String, Rejections> {
        let mut rejected = Rejections::default();
        let mut best: Option<(usize, (u32, f64))> = None;
        for (index, node) in self.nodes.iter().enumerate() {
            if let Err(why) = fits(node, demand) {
                *why.counter(&mut rejected) += 1;
                continue;
            }
            let key = score(node, demand);
            let better = best.as_ref().is_none_or(|(_, b)| key < *b);
            if better {
                best = Some((index, key));
            }
        }
        let (index, _) = best.ok_or(rejected)?;
        let node = &mut self.nodes[index];
        node.hold(demand.load());
        Ok(node.id.clone())
    }
}

#[derive(Debug, Clone, Copy)]
enum Filter {
    NotPinned,
    Labels,
    HostAccess,
    NotReady,
    Drained,
    Memory,
    Cpu,
}

impl Filter {
    fn counter(self, r: &mut Rejections) -> &mut u32 {
        match self {
            Filter::NotPinned => &mut r.not_pinned,
            Filter::Labels => &mut r.labels,
            Filter::HostAccess => &mut r.host_access,
            Filter::NotReady => &mut r.not_ready,
            Filter::Drained => &mut r.drained,
            Filter::Memory => &mut r.memory,
            Filter::Cpu => &mut r.cpu,
        }
    }
}

fn fits(node: &Candidate, demand: &Demand) -> Result<(), Filter> {
    if demand.node.is_some_and(|n| n != node.id) {
        return Err(Filter::NotPinned);
    }
    if !demand
        .labels
        .iter()
        .all(|(k, v)| node.labels.get(k) == Some(v))
    {
        return Err(Filter::Labels);
    }
    if !node.host_access {
        return Err(Filter::HostAccess);
    }
    if !node.ready {
        return Err(Filter::NotReady);
    }
    if node.drained {
        return Err(Filter::Drained);
    }
    let memory = demand.reserve.memory_bytes;
    if memory > 0 && node.reserved.memory_bytes.saturating_add(memory) > node.capacity.memory_bytes
    {
        return Err(Filter::Memory);
    }
    let cpu = demand.reserve.cpu;
    if cpu > 0.0 && node.reserved.cpu + cpu > node.capacity.cpu + CPU_EPSILON {
        return Err(Filter::Cpu);
    }
    Ok(())
}

/// Lower is better: for `spread`, fewest replicas of the service and then
/// the least loaded node, by its reservations and by the CPU limits placed
/// there (a node whose caps add up to twice its cores is busier when
/// everything runs hot than one whose caps add up to half); for
/// `binpack`, the fullest node by reservations.
fn score(node: &Candidate, demand: &Demand) -> (u32, f64) {
    let reserved = share(node.reserved.cpu, node.capacity.cpu)
        + share(
            node.reserved.memory_bytes as f64,
            node.capacity.memory_bytes as f64,
        );
    match demand.strategy {
        PlacementStrategy::Spread => (
            node.of_service,
            reserved + share(node.cpu_limits, node.capacity.cpu),
        ),
        PlacementStrategy::Binpack => (0, -reserved),
    }
}

fn share(used: f64, total: f64) -> f64 {
    if total > 0.0 {
        used / total
    } else {
        0.0
    }
}

/// Why `count` replicas could not be placed, as status says it: "2
/// replicas unplaced: 1 node not ready, 2 nodes lack 512Mi of memory to
/// reserve".
pub fn unplaced_message(count: u32, r: &Rejections, demand: &Demand) -> String {
    let nodes = |n: u32| {
        if n == 1 {
            "1 node".into()
        } else {
            format!("{n} nodes")
        }
    };
    let mut why = Vec::new();
    if r.not_pinned > 0 {
        why.push(format!(
            "{} not {}",
            nodes(r.not_pinned),
            demand.node.unwrap_or_default()
        ));
    }
    if r.labels > 0 {
        why.push(format!("{} without the labels", nodes(r.labels)));
    }
    if r.host_access > 0 {
        why.push(format!(
            "{} not allowing its host paths or devices ([volumes] in their config)",
            nodes(r.host_access)
        ));
    }
    if r.not_ready > 0 {
        why.push(format!("{} not ready", nodes(r.not_ready)));
    }
    if r.drained > 0 {
        why.push(format!("{} drained", nodes(r.drained)));
    }
    let lack = |n: u32| if n == 1 { "lacks" } else { "lack" };
    if r.memory > 0 {
        why.push(format!(
            "{} {} {} of memory to reserve",
            nodes(r.memory),
            lack(r.memory),
            mebibytes(demand.reserve.memory_bytes)
        ));
    }
    if r.cpu > 0 {
        why.push(format!(
            "{} {} {} CPU to reserve",
            nodes(r.cpu),
            lack(r.cpu),
            demand.reserve.cpu
        ));
    }
    if why.is_empty() {
        why.push(match demand.node {
            Some(n) => format!("node {n} is not in the cluster"),
            None => "no node in the cluster".into(),
        });
    }
    let replicas = if count == 1 { "replica" } else { "replicas" };
    format!("{count} {replicas} unplaced: {}", why.join(", "))
}

fn mebibytes(bytes: u64) -> String {
    if bytes % (1 << 30) == 0 && bytes > 0 {
        format!("{}Gi", bytes >> 30)
    } else {
        format!("{}Mi", bytes.div_ceil(1 << 20))
    }
}

#[cfg(test)]
mod tests;
