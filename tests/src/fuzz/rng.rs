//! The fuzzer's PRNG: SplitMix64, seeded per stream (thread or child) from the run's seed,
//! so that a seed replays the same choices for every stream.

/// SplitMix64 (Steele, Lea, Flood 2014): tiny, fast, good enough for choosing test inputs.
#[derive(Debug, Clone)]
pub struct Rng(u64);

const GOLDEN: u64 = 0x9e37_79b9_7f4a_7c15;

fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

impl Rng {
    /// A generator for `seed`.
    pub fn new(seed: u64) -> Rng {
        Rng(mix(seed.wrapping_add(GOLDEN)))
    }

    /// The generator of stream `stream` (a thread's or a child's index) of the run `seed`.
    pub fn stream(seed: u64, stream: u64) -> Rng {
        Rng::new(mix(seed) ^ mix(stream.wrapping_mul(GOLDEN).wrapping_add(0x5bd1_e995)))
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(GOLDEN);
        mix(self.0)
    }

    /// The next 32 random bits.
    pub fn next_u32(&mut self) -> u32 {
        (self.next_u64() >> 32) as u32
    }

    /// Uniform in `0..n` (`n > 0`; 0 for `n == 0`).
    pub fn below(&mut self, n: u64) -> u64 {
        if n == 0 {
            return 0;
        }
        // Multiply-shift: unbiased enough for test input choices.
        ((self.next_u64() as u128 * n as u128) >> 64) as u64
    }

    /// Uniform in `lo..=hi`.
    pub fn range(&mut self, lo: u64, hi: u64) -> u64 {
        if hi <= lo {
            return lo;
        }
        match (hi - lo).checked_add(1) {
            Some(n) => lo + self.below(n),
            None => self.next_u64(),
        }
    }

    /// True with probability `percent`/100.
    pub fn pct(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }

    /// True with probability 1/`n`.
    pub fn one_in(&mut self, n: u64) -> bool {
        self.below(n) == 0
    }

    /// A random element of a non-empty slice.
    pub fn pick<T: Copy>(&mut self, s: &[T]) -> T {
        s[self.below(s.len() as u64) as usize]
    }

    /// A random item of `(item, weight)` pairs, by weight (the first item if all are 0).
    pub fn weighted<T: Copy>(&mut self, items: &[(T, u32)]) -> T {
        let total: u64 = items.iter().map(|&(_, w)| w as u64).sum();
        let mut x = self.below(total);
        for &(t, w) in items {
            if x < w as u64 {
                return t;
            }
            x -= w as u64;
        }
        items[0].0
    }

    /// Random bytes.
    pub fn fill(&mut self, buf: &mut [u8]) {
        for chunk in buf.chunks_mut(8) {
            let v = self.next_u64().to_le_bytes();
            chunk.copy_from_slice(&v[..chunk.len()]);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn streams_are_reproducible_and_distinct() {
        let a: Vec<u64> = (0..8).map({
            let mut r = Rng::stream(42, 0);
            move |_| r.next_u64()
        }).collect();
        let mut r = Rng::stream(42, 0);
        assert!(a.iter().all(|&v| v == r.next_u64()));
        let mut other = Rng::stream(42, 1);
        assert_ne!(a[0], other.next_u64());
        let mut seed2 = Rng::stream(43, 0);
        assert_ne!(a[0], seed2.next_u64());
    }

    #[test]
    fn bounded_draws_stay_in_range() {
        let mut r = Rng::new(7);
        for _ in 0..10_000 {
            assert!(r.below(10) < 10);
            let v = r.range(5, 9);
            assert!((5..=9).contains(&v));
        }
        assert_eq!(r.below(0), 0);
        let _ = r.range(0, u64::MAX);
        let w = [(1u8, 0), (2u8, 5)];
        for _ in 0..100 {
            assert_eq!(r.weighted(&w), 2);
        }
        let mut b = [0u8; 13];
        r.fill(&mut b);
        assert!(b.iter().any(|&x| x != 0));
    }
}
