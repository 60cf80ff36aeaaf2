//! The hit path allocates nothing: a counting allocator for this test
//! binary, counting only on the thread that asks and only while it asks.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

use super::*;

struct Counting;

thread_local! {
    /// Allocations on this thread since counting began (`None`: not counting).
    static COUNT: Cell<Option<usize>> = const { Cell::new(None) };
}

fn counted() {
    let _ = COUNT.try_with(|count| {
        if let Some(n) = count.get() {
            count.set(Some(n + 1));
        }
    });
}

// SAFETY: every call is forwarded unchanged to the system allocator, which
// upholds GlobalAlloc's contract; counting touches only a thread-local
// `Cell` that needs no allocation (const-initialised, no destructor).
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        counted();
        // SAFETY: the caller's layout contract is passed on as is.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` came from `System` with this layout (see `alloc`).
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        counted();
        // SAFETY: as for `dealloc`; the new size is the caller's.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// How many allocations `f` makes on this thread.
fn allocations(f: impl FnOnce()) -> usize {
    COUNT.with(|count| count.set(Some(0)));
    f();
    COUNT.with(|count| count.replace(None)).unwrap_or(0)
}

#[test]
fn a_cache_hit_allocates_nothing() {
    let topo = topology();
    let core = core(H1);
    let mut actions = Vec::with_capacity(16);
    let mut scratch = CoreScratch::default();
    let routed = ping(mac(1), mac(0xa1), "10.0.1.10", "10.0.2.10");
    let flood = ping(mac(1), [0xff; 6], "10.0.1.10", "10.0.1.255");
    let local = ping(mac(1), mac(4), "10.0.1.10", "10.0.1.12");
    let frames = [routed, flood, local];
    // Warm up: the misses cache the flows and size the scratch buffers.
    for now in 0..2 {
        for frame in &frames {
            core.process(
                &topo,
                A1,
                &mut frame.clone(),
                VnetHeader::NONE,
                now,
                &mut scratch,
                &mut actions,
            );
            actions.clear();
        }
    }
    for (i, original) in frames.iter().enumerate() {
        let mut frame = original.clone();
        let n = allocations(|| {
            let fate = core.process(
                &topo,
                A1,
                &mut frame,
                VnetHeader::NONE,
                10,
                &mut scratch,
                &mut actions,
            );
            assert_eq!(fate, Fate::Sent);
        });
        assert_eq!(n, 0, "frame {i}: {actions:?}");
        assert!(!actions.is_empty());
        actions.clear();
    }
    assert_eq!(core.stats().flows.misses, 3);
}

#[test]
fn borrowing_a_port_workspace_allocates_nothing() {
    use crate::datapath::WorkspacePool;
    let pool = WorkspacePool::default();
    // Two tasks at once make two workspaces; after that none is made.
    let (a, b) = (pool.take(), pool.take());
    pool.put(a);
    pool.put(b);
    let n = allocations(|| {
        let a = pool.take();
        let b = pool.take();
        pool.put(b);
        pool.put(a);
    });
    assert_eq!(n, 0);
    assert_eq!(pool.free(), 2);
}

#[test]
fn a_batch_visits_only_its_own_egress_ports_and_allocates_nothing() {
    use crate::datapath::PortSends;
    let mut sends = PortSends::default();
    let ports: Vec<Uuid> = (0..3).map(|_| Uuid::new_v4()).collect();
    for (i, port) in ports.iter().enumerate() {
        sends.push(*port, i);
        sends.push(*port, i + 10);
    }
    sends.clear();
    let n = allocations(|| {
        sends.push(ports[2], 0);
        sends.push(ports[0], 1);
        sends.push(ports[2], 2);
    });
    assert_eq!(n, 0);
    let batch: Vec<(Uuid, Vec<usize>)> = sends.iter_mut().map(|(p, l)| (*p, l.clone())).collect();
    assert_eq!(batch, vec![(ports[2], vec![0, 2]), (ports[0], vec![1])]);
}

#[test]
fn an_ipv6_routed_cache_hit_allocates_nothing() {
    let topo = super::ipv6::dual_stack();
    let core = core(H1);
    let mut actions = Vec::with_capacity(16);
    let mut scratch = CoreScratch::default();
    let routed = super::ipv6::ping6("2001:db8:1::10", "2001:db8:2::10", 100);
    for now in 0..2 {
        core.process(
            &topo,
            A1,
            &mut routed.clone(),
            VnetHeader::NONE,
            now,
            &mut scratch,
            &mut actions,
        );
        actions.clear();
    }
    let mut frame = routed.clone();
    let n = allocations(|| {
        let fate = core.process(
            &topo,
            A1,
            &mut frame,
            VnetHeader::NONE,
            10,
            &mut scratch,
            &mut actions,
        );
        assert_eq!(fate, Fate::Sent);
    });
    assert_eq!(n, 0, "{actions:?}");
    assert_eq!(frame[14 + 7], 63, "the hop limit, rewritten in place");
    assert_eq!(core.stats().flows.misses, 1);
}

#[test]
fn an_ipv6_masqueraded_cache_hit_allocates_nothing() {
    let topo = super::ipv6::masquerading6();
    let core = core(H1);
    let mut actions = Vec::with_capacity(16);
    let mut scratch = CoreScratch::default();
    let routed = super::ipv6::ping6("2001:db8:1::10", "2001:db8:2::10", 100);
    // The first packet commits the connection; the next is cached.
    for now in 0..3 {
        core.process(
            &topo,
            A1,
            &mut routed.clone(),
            VnetHeader::NONE,
            now,
            &mut scratch,
            &mut actions,
        );
        actions.clear();
    }
    let misses = core.stats().flows.misses;
    let mut frame = routed.clone();
    let n = allocations(|| {
        let fate = core.process(
            &topo,
            A1,
            &mut frame,
            VnetHeader::NONE,
            10,
            &mut scratch,
            &mut actions,
        );
        assert_eq!(fate, Fate::Sent);
    });
    assert_eq!(n, 0, "{actions:?}");
    assert_eq!(core.stats().flows.misses, misses, "a hit");
    let ip = crate::wire::Ipv6Packet::new_checked(&frame[14..]).unwrap();
    assert_eq!(
        ip.src_addr(),
        "2001:db8:2::1".parse::<std::net::Ipv6Addr>().unwrap(),
        "masqueraded in place"
    );
    assert_eq!(ip.hop_limit(), 63);
}
