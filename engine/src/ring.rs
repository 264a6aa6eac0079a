//! Consistent hashing of client ids onto shards.
//!
//! Each shard owns [`VIRTUAL_NODES`] points on a 64-bit ring; a key belongs to the
//! first point at or after its hash. Adding a shard moves only the keys that land on
//! the new shard's points (about 1/n of them), which is what lets shards later move
//! between nodes with little hand-off. The hash is a fixed FNV-1a + splitmix64 finish,
//! stable across Rust versions and processes (unlike `DefaultHasher`).

/// Points per shard: enough that shards stay within a few percent of even.
pub const VIRTUAL_NODES: u32 = 160;

/// A stable 64-bit hash of bytes.
pub fn stable_hash(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in bytes {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    // splitmix64 finaliser: spreads FNV's weak high bits.
    h ^= h >> 30;
    h = h.wrapping_mul(0xbf58_476d_1ce4_e5b9);
    h ^= h >> 27;
    h = h.wrapping_mul(0x94d0_49bb_1331_11eb);
    h ^ (h >> 31)
}

/// The ring: sorted points, each naming a shard index.
#[derive(Debug, Clone)]
pub struct HashRing {
    points: Vec<(u64, u32)>,
    shard_count: u32,
}

impl HashRing {
    /// A ring over shards `0..shard_count` (at least one).
    pub fn new(shard_count: u32) -> Self {
        let shard_count = shard_count.max(1);
        let mut points = Vec::with_capacity((shard_count * VIRTUAL_NODES) as usize);
        for shard in 0..shard_count {
            for v in 0..VIRTUAL_NODES {
                let label = format!("shard-{shard}-vnode-{v}");
                points.push((stable_hash(label.as_bytes()), shard));
            }
        }
        points.sort_unstable();
        Self { points, shard_count }
    }

    /// How many shards the ring spreads over.
    pub fn shard_count(&self) -> u32 {
        self.shard_count
    }

    /// The shard owning `key`.
    pub fn shard_for(&self, key: &[u8]) -> u32 {
        let h = stable_hash(key);
        let i = self.points.partition_point(|&(p, _)| p < h);
        self.points.get(i).unwrap_or(&self.points[0]).1
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn keys(seed: u64, n: usize) -> Vec<String> {
        (0..n).map(|i| format!("tgc_{seed:08}{i:012}")).collect()
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(24))]

        #[test]
        fn keys_spread_evenly_across_shards(shards in 2u32..16, seed in any::<u64>()) {
            let ring = HashRing::new(shards);
            let n = 20_000;
            let mut counts = vec![0usize; shards as usize];
            for k in keys(seed, n) {
                counts[ring.shard_for(k.as_bytes()) as usize] += 1;
            }
            let mean = n as f64 / f64::from(shards);
            for c in counts {
                prop_assert!((c as f64) > mean * 0.6 && (c as f64) < mean * 1.4, "{c} vs mean {mean}");
            }
        }

        #[test]
        fn adding_a_shard_moves_few_keys_and_only_to_it(shards in 1u32..16, seed in any::<u64>()) {
            let before = HashRing::new(shards);
            let after = HashRing::new(shards + 1);
            let n = 10_000;
            let mut moved = 0;
            for k in keys(seed, n) {
                let (a, b) = (before.shard_for(k.as_bytes()), after.shard_for(k.as_bytes()));
                if a != b {
                    prop_assert_eq!(b, shards, "a moved key must go to the new shard");
                    moved += 1;
                }
            }
            let ideal = n as f64 / f64::from(shards + 1);
            prop_assert!((moved as f64) < ideal * 1.6, "moved {moved}, ideal {ideal}");
        }
    }

    const PINNED_EXAMPLE_HASH: u64 = 11_025_251_375_902_184_820;

    #[test]
    fn the_hash_is_stable() {
        // Pinned so that a change of hash (which would re-home every integration
        // across nodes) cannot slip in unnoticed.
        assert_eq!(stable_hash(b"tgc_example"), PINNED_EXAMPLE_HASH);
    }
}
