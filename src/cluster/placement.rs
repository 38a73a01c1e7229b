//! Which node owns a key: rendezvous (highest-random-weight) hashing,
//! weighted by capacity (Thaler & Ravishankar 1998; the weighted form of
//! Schindelhauer & Schomaker 2005, `score = -w / ln(u)`).
//!
//! Why rendezvous rather than a ring: every node computes the same answer
//! from the same list of live nodes with no shared ring state, and when a
//! node leaves only the keys it owned move (each to its runner-up), which
//! is what a failover should disturb and no more. Sans-IO: a list of nodes
//! and a key in, a node out.

/// A candidate owner: its id (the hash input) and relative capacity.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Candidate<'a> {
    pub id: &'a str,
    /// Relative weight; 0 takes no new keys.
    pub capacity: u32,
}

/// The owner of `key` among `nodes`: the highest weighted score. `None`
/// when no node has capacity. Ties (practically impossible with 64-bit
/// hashes) go to the smaller id so every node agrees.
pub fn owner<'a>(key: &str, nodes: &[Candidate<'a>]) -> Option<Candidate<'a>> {
    let mut best: Option<(f64, Candidate<'a>)> = None;
    for node in nodes.iter().filter(|n| n.capacity > 0) {
        let s = score(key, node);
        let better = match &best {
            None => true,
            Some((b, c)) => s > *b || (s == *b && node.id < c.id),
        };
        if better {
            best = Some((s, *node));
        }
    }
    best.map(|(_, c)| c)
}

/// `-capacity / ln(u)` with `u` uniform in (0, 1) from the hash of
/// (node, key): larger is better, and a node's share of keys is its share
/// of the total capacity.
fn score(key: &str, node: &Candidate<'_>) -> f64 {
    let h = hash_pair(node.id, key);
    // 53 bits into (0, 1): never 0 (ln 0) nor 1 (ln 1 = 0).
    let u = ((h >> 11) as f64 + 0.5) / (1u64 << 53) as f64;
    -f64::from(node.capacity) / u.ln()
}

/// A stable 64-bit hash of `a`, a separator and `b`: FNV-1a, then the
/// SplitMix64 finaliser to spread FNV's weak low bits. Stable across
/// builds and platforms (every node must compute the same value), unlike
/// `std`'s `DefaultHasher`.
fn hash_pair(a: &str, b: &str) -> u64 {
    const OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
    const PRIME: u64 = 0x0000_0100_0000_01b3;
    let mut h = OFFSET;
    for byte in a.bytes().chain(std::iter::once(0xff)).chain(b.bytes()) {
        h ^= u64::from(byte);
        h = h.wrapping_mul(PRIME);
    }
    h = (h ^ (h >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    h = (h ^ (h >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    h ^ (h >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The simulated cameras' ids: `sim-camera --count` adds `i` to the
    /// demo device id, as the cluster acceptance test does.
    fn devices(n: u32) -> Vec<String> {
        (0..n)
            .map(|i| (34_020_000_001_320_000_001u128 + u128::from(i)).to_string())
            .collect()
    }

    fn nodes<'a>(ids: &[&'a str], capacity: u32) -> Vec<Candidate<'a>> {
        ids.iter().map(|id| Candidate { id, capacity }).collect()
    }

    fn shares(keys: &[String], nodes: &[Candidate<'_>]) -> Vec<usize> {
        let mut count = vec![0; nodes.len()];
        for k in keys {
            let o = owner(k, nodes).unwrap();
            count[nodes.iter().position(|n| n.id == o.id).unwrap()] += 1;
        }
        count
    }

    #[test]
    fn equal_nodes_share_evenly() {
        let keys = devices(30_000);
        let n = nodes(&["node-1", "node-2", "node-3"], 100);
        for c in shares(&keys, &n) {
            // 10,000 expected; binomial sd ≈ 82, so ±5 % is > 6 sd.
            assert!((9_500..=10_500).contains(&c), "{c}");
        }
        // Sixty devices (the cluster acceptance test) stay within 20–47 %.
        let sixty = shares(&devices(60), &n);
        assert!(sixty.iter().all(|&c| (12..=28).contains(&c)), "{sixty:?}");
    }

    #[test]
    fn capacity_weights_the_share() {
        let keys = devices(30_000);
        let n = vec![
            Candidate {
                id: "big",
                capacity: 200,
            },
            Candidate {
                id: "small",
                capacity: 100,
            },
        ];
        let c = shares(&keys, &n);
        assert!((19_400..=20_600).contains(&c[0]), "{c:?}");
        let none = vec![Candidate {
            id: "drained",
            capacity: 0,
        }];
        assert_eq!(owner("x", &none), None);
        assert_eq!(owner("x", &[]), None);
    }

    #[test]
    fn a_leaving_node_moves_only_its_own_keys() {
        let keys = devices(5_000);
        let before = nodes(&["a", "b", "c", "d"], 100);
        let after = nodes(&["a", "c", "d"], 100);
        let mut moved = 0;
        for k in &keys {
            let was = owner(k, &before).unwrap().id;
            let now = owner(k, &after).unwrap().id;
            if was != "b" {
                assert_eq!(was, now, "{k} moved although its owner stayed");
            } else {
                moved += 1;
            }
        }
        // b held about a quarter; exactly those moved.
        assert!((1_100..=1_400).contains(&moved), "{moved}");
        // A joining node takes keys only for itself.
        for k in &keys {
            let small = owner(k, &after).unwrap().id;
            let big = owner(k, &before).unwrap().id;
            assert!(big == small || big == "b", "{k}: {small} -> {big}");
        }
    }

    const PINNED_N1_K: u64 = 2_851_532_862_758_819_176;

    #[test]
    fn every_node_computes_the_same_owner_whatever_the_order() {
        let a = nodes(&["n1", "n2", "n3"], 100);
        let b = nodes(&["n3", "n1", "n2"], 100);
        for k in devices(500) {
            assert_eq!(owner(&k, &a).unwrap().id, owner(&k, &b).unwrap().id);
        }
        // Pinned values: the hash must never change between releases, or
        // a rolling upgrade would split the cluster's view.
        assert_eq!(hash_pair("n1", "k"), PINNED_N1_K);
        assert_ne!(hash_pair("n1", "k"), hash_pair("n1k", ""));
    }
}
