//! The scheduler's filters, scores and messages, one situation each.
use super::*;

const GI: u64 = 1 << 30;

fn node(id: &str, cpu: f64, memory: u64) -> Candidate {
    Candidate {
        id: id.into(),
        labels: BTreeMap::new(),
        ready: true,
        drained: false,
        capacity: Capacity {
            cpu,
            memory_bytes: memory,
        },
        reserved: Capacity::default(),
        cpu_limits: 0.0,
        of_service: 0,
        host_access: true,
    }
}

fn demand(labels: &BTreeMap<String, String>) -> Demand<'_> {
    Demand {
        node: None,
        labels,
        strategy: PlacementStrategy::Spread,
        reserve: Capacity::default(),
        cpu_limit: 0.0,
    }
}

fn place_n(s: &mut Scheduler, d: &Demand, n: usize) -> Vec<String> {
    (0..n).map(|_| s.place(d).unwrap()).collect()
}

#[test]
fn spread_puts_replicas_on_every_node() {
    let none = BTreeMap::new();
    let mut s = Scheduler::new(vec![
        node("a", 2.0, GI),
        node("b", 2.0, GI),
        node("c", 2.0, GI),
    ]);
    let mut placed = place_n(&mut s, &demand(&none), 6);
    placed.sort();
    assert_eq!(placed, ["a", "a", "b", "b", "c", "c"]);
}

#[test]
fn spread_counts_replicas_already_there() {
    let none = BTreeMap::new();
    let mut a = node("a", 2.0, GI);
    a.of_service = 2;
    let mut s = Scheduler::new(vec![a, node("b", 2.0, GI)]);
    assert_eq!(place_n(&mut s, &demand(&none), 2), ["b", "b"]);
    assert_eq!(s.place(&demand(&none)).unwrap(), "a");
}

#[test]
fn binpack_fills_the_fullest_node_that_fits() {
    let none = BTreeMap::new();
    let mut a = node("a", 4.0, 4 * GI);
    a.reserved.memory_bytes = GI;
    let mut s = Scheduler::new(vec![node("b", 4.0, 4 * GI), a]);
    let d = Demand {
        strategy: PlacementStrategy::Binpack,
        reserve: Capacity {
            cpu: 0.0,
            memory_bytes: GI,
        },
        ..demand(&none)
    };
    // a has room for 3 more, then b takes the rest.
    assert_eq!(place_n(&mut s, &d, 5), ["a", "a", "a", "b", "b"]);
}

#[test]
fn only_nodes_that_allow_its_host_paths_take_it() {
    let none = BTreeMap::new();
    let mut a = node("a", 2.0, GI);
    a.host_access = false;
    let mut s = Scheduler::new(vec![a.clone(), node("b", 2.0, GI)]);
    assert_eq!(place_n(&mut s, &demand(&none), 3), ["b", "b", "b"]);
    let mut s = Scheduler::new(vec![a]);
    let r = s.place(&demand(&none)).unwrap_err();
    assert_eq!(r.host_access, 1);
    assert_eq!(
        unplaced_message(1, &r, &demand(&none)),
        "1 replica unplaced: 1 node not allowing its host paths or devices ([volumes] in their config)"
    );
}

#[test]
fn pinned_node_and_labels_filter() {
    let mut labels = BTreeMap::new();
    labels.insert("zone".to_string(), "edge".to_string());
    let mut b = node("b", 2.0, GI);
    b.labels = labels.clone();
    let mut s = Scheduler::new(vec![node("a", 2.0, GI), b, node("c", 2.0, GI)]);
    assert_eq!(place_n(&mut s, &demand(&labels), 3), ["b", "b", "b"]);
    let none = BTreeMap::new();
    let pinned = Demand {
        node: Some("c"),
        ..demand(&none)
    };
    assert_eq!(place_n(&mut s, &pinned, 2), ["c", "c"]);
    let missing = Demand {
        node: Some("z"),
        ..demand(&none)
    };
    let r = s.place(&missing).unwrap_err();
    assert_eq!(r.not_pinned, 3);
    assert_eq!(
        unplaced_message(1, &r, &missing),
        "1 replica unplaced: 3 nodes not z"
    );
}

#[test]
fn never_more_than_a_node_has() {
    let none = BTreeMap::new();
    let mut s = Scheduler::new(vec![node("a", 1.0, 2 * GI), node("b", 1.0, GI)]);
    let d = Demand {
        reserve: Capacity {
            cpu: 0.25,
            memory_bytes: 512 << 20,
        },
        ..demand(&none)
    };
    // 4 fit on a by memory and CPU, 2 on b by memory.
    let placed = place_n(&mut s, &d, 6);
    assert_eq!(placed.iter().filter(|n| *n == "a").count(), 4);
    let r = s.place(&d).unwrap_err();
    assert_eq!(r.memory, 2);
    assert_eq!(
        unplaced_message(1, &r, &d),
        "1 replica unplaced: 2 nodes lack 512Mi of memory to reserve"
    );
    for n in s.nodes() {
        assert!(n.reserved.memory_bytes <= n.capacity.memory_bytes);
        assert!(n.reserved.cpu <= n.capacity.cpu + CPU_EPSILON);
    }
}

#[test]
fn a_cpu_reservation_needs_room_and_a_cpu_limit_does_not() {
    let none = BTreeMap::new();
    let mut s = Scheduler::new(vec![node("a", 1.0, 64 * GI)]);
    let reserving = Demand {
        reserve: Capacity {
            cpu: 0.5,
            memory_bytes: 0,
        },
        ..demand(&none)
    };
    place_n(&mut s, &reserving, 2);
    let r = s.place(&reserving).unwrap_err();
    assert_eq!(r.cpu, 1);
    assert_eq!(
        unplaced_message(1, &r, &reserving),
        "1 replica unplaced: 1 node lacks 0.5 CPU to reserve"
    );
    // Capped at a whole core each, reserving nothing: no limit to how many.
    let capped = Demand {
        cpu_limit: 1.0,
        ..demand(&none)
    };
    place_n(&mut s, &capped, 10);
    assert!((s.nodes()[0].cpu_limits - 10.0).abs() < 1e-9);
    assert!((s.nodes()[0].reserved.cpu - 1.0).abs() < 1e-9);
}

#[test]
fn spread_weighs_cpu_limits_as_load() {
    let none = BTreeMap::new();
    let mut busy = node("a", 2.0, GI);
    busy.cpu_limits = 3.0;
    let mut s = Scheduler::new(vec![busy, node("b", 2.0, GI)]);
    // Both run none of the service: the one whose caps add up to less wins.
    assert_eq!(s.place(&demand(&none)).unwrap(), "b");
    // Then spread by the service's own count comes first.
    assert_eq!(s.place(&demand(&none)).unwrap(), "a");
}

#[test]
fn not_ready_and_drained_nodes_take_nothing() {
    let none = BTreeMap::new();
    let mut down = node("a", 2.0, GI);
    down.ready = false;
    let mut drained = node("b", 2.0, GI);
    drained.drained = true;
    let mut s = Scheduler::new(vec![down, drained]);
    let r = s.place(&demand(&none)).unwrap_err();
    assert_eq!((r.not_ready, r.drained), (1, 1));
    assert_eq!(
        unplaced_message(2, &r, &demand(&none)),
        "2 replicas unplaced: 1 node not ready, 1 node drained"
    );
    let mut empty = Scheduler::new(Vec::new());
    let r = empty.place(&demand(&none)).unwrap_err();
    assert_eq!(
        unplaced_message(1, &r, &demand(&none)),
        "1 replica unplaced: no node in the cluster"
    );
}
