//! The scheduler's throughput on fake nodes: 10,000 replicas (100
//! services of 100, half spread and half binpack, each asking for CPU and
//! memory) placed on 1,000 nodes of mixed sizes, some labelled, some
//! drained or not ready, as the control plane does it: one scheduler over
//! every node per service, each placement reserving what it asks.
//!
//! `cargo bench --bench scheduler`. Nothing else needed.

use std::collections::BTreeMap;
use std::time::Instant;

use scheduler::{Candidate, Capacity, Demand, PlacementStrategy, Scheduler};

const NODES: usize = 1_000;
const SERVICES: usize = 100;
const REPLICAS: usize = 100;

fn nodes() -> Vec<Candidate> {
    (0..NODES)
        .map(|i| {
            let mut labels = BTreeMap::new();
            labels.insert("zone".to_string(), format!("z{}", i % 4));
            Candidate {
                id: format!("node-{i:04}"),
                labels,
                ready: i % 97 != 0,
                drained: i % 101 == 0,
                capacity: Capacity {
                    cpu: [4.0, 8.0, 16.0][i % 3],
                    memory_bytes: [8u64, 16, 32][i % 3] << 30,
                },
                reserved: Capacity::default(),
                cpu_limits: 0.0,
                of_service: 0,
                host_access: true,
            }
        })
        .collect()
}

fn main() {
    let mut table = nodes();
    let none = BTreeMap::new();
    let mut zone = BTreeMap::new();
    zone.insert("zone".to_string(), "z1".to_string());
    let mut placed = 0usize;
    let mut unplaced = 0usize;
    let started = Instant::now();
    for s in 0..SERVICES {
        let demand = Demand {
            node: None,
            labels: if s % 10 == 0 { &zone } else { &none },
            strategy: if s % 2 == 0 {
                PlacementStrategy::Spread
            } else {
                PlacementStrategy::Binpack
            },
            reserve: Capacity {
                cpu: 0.1,
                memory_bytes: 128 << 20,
            },
            cpu_limit: 0.5,
        };
        // A fresh view per service, as each worker builds its own.
        for n in &mut table {
            n.of_service = 0;
        }
        let mut scheduler = Scheduler::new(table.clone());
        for _ in 0..REPLICAS {
            match scheduler.place(&demand) {
                Ok(_) => placed += 1,
                Err(_) => unplaced += 1,
            }
        }
        table = scheduler.into_nodes();
    }
    let elapsed = started.elapsed();
    let total = placed + unplaced;
    println!(
        "scheduler: {total} placements ({placed} placed, {unplaced} unplaced) on {NODES} nodes in {:.1} ms: {:.0} placements/s",
        elapsed.as_secs_f64() * 1e3,
        total as f64 / elapsed.as_secs_f64()
    );
    let used: f64 = table.iter().map(|n| n.reserved.cpu).sum();
    assert!(
        (used - placed as f64 * 0.1).abs() < 1e-6,
        "every placement reserved its CPU"
    );
    assert!(table
        .iter()
        .all(|n| n.reserved.memory_bytes <= n.capacity.memory_bytes));
}
