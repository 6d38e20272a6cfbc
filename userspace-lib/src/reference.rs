//! Host-side reference implementations of what the device computes, so that a
//! program can predict, byte for byte, what a job leaves in memory.
//!
//! - [`fnv1a64`]: the result of a `HASH` op (FNV-1a, 64-bit).
//! - [`pattern_byte`] / [`fill_pattern`] / [`pattern`]: what `WRITE_PATTERN`
//!   writes (`vgpu_svm_protocol.h`: byte `i` of an op with seed `s` is
//!   `(u8)(((s + i) * VGPU_SVM_PATTERN_MUL) >> 56)` in 64-bit arithmetic).
//!
//! ```
//! use vgpu::reference::{fnv1a64, pattern, pattern_byte};
//!
//! assert_eq!(fnv1a64(b""), 0xcbf2_9ce4_8422_2325);
//! let p = pattern(7, 4096);
//! assert_eq!(p[100], pattern_byte(7, 100));
//! // A pattern written at `dst` with seed `s` shows, at `dst + off`, the
//! // pattern with seed `s + off`:
//! assert_eq!(&p[100..], &pattern(7 + 100, 4096 - 100)[..]);
//! ```

/// The FNV-1a 64-bit offset basis.
pub const FNV1A64_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;

/// The FNV-1a 64-bit prime.
pub const FNV1A64_PRIME: u64 = 0x0000_0100_0000_01b3;

/// `VGPU_SVM_PATTERN_MUL`, as an unsigned 64-bit multiplier.
// bindgen types the constant as i64 (it does not fit i64's positive range);
// the bits are what matter.
pub const PATTERN_MUL: u64 = vgpu_uapi::VGPU_SVM_PATTERN_MUL as u64;

/// FNV-1a 64 of `data`: what a `HASH` op over these bytes returns.
pub fn fnv1a64(data: &[u8]) -> u64 {
    fnv1a64_update(FNV1A64_OFFSET, data)
}

/// Continues an FNV-1a 64 hash `state` over `data` (start with
/// [`FNV1A64_OFFSET`]), for data that arrives in pieces.
///
/// ```
/// use vgpu::reference::{fnv1a64, fnv1a64_update, FNV1A64_OFFSET};
/// let h = fnv1a64_update(fnv1a64_update(FNV1A64_OFFSET, b"foo"), b"bar");
/// assert_eq!(h, fnv1a64(b"foobar"));
/// ```
pub fn fnv1a64_update(mut state: u64, data: &[u8]) -> u64 {
    for &b in data {
        state ^= u64::from(b);
        state = state.wrapping_mul(FNV1A64_PRIME);
    }
    state
}

/// FNV-1a 64 of `len` zero bytes (the hash of freshly zeroed memory).
pub fn fnv1a64_zeros(len: usize) -> u64 {
    let mut state = FNV1A64_OFFSET;
    for _ in 0..len {
        state = state.wrapping_mul(FNV1A64_PRIME); // state ^= 0 is a no-op
    }
    state
}

/// Byte `i` of a `WRITE_PATTERN` op with seed `seed`.
pub const fn pattern_byte(seed: u64, i: u64) -> u8 {
    (seed.wrapping_add(i).wrapping_mul(PATTERN_MUL) >> 56) as u8
}

/// Fills `buf` as a `WRITE_PATTERN` op with seed `seed` over it would.
pub fn fill_pattern(buf: &mut [u8], seed: u64) {
    for (i, b) in buf.iter_mut().enumerate() {
        *b = pattern_byte(seed, i as u64);
    }
}

/// The first `len` bytes of the pattern with seed `seed`.
pub fn pattern(seed: u64, len: usize) -> Vec<u8> {
    let mut v = vec![0u8; len];
    fill_pattern(&mut v, seed);
    v
}

/// The index of the first byte of `buf` that differs from the pattern with
/// seed `seed`, or `None` if `buf` is exactly that pattern.
pub fn find_pattern_mismatch(buf: &[u8], seed: u64) -> Option<usize> {
    buf.iter()
        .enumerate()
        .find(|&(i, &b)| b != pattern_byte(seed, i as u64))
        .map(|(i, _)| i)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fnv1a64_known_vectors() {
        // The published FNV-1a 64 test vectors.
        assert_eq!(fnv1a64(b""), 0xcbf29ce484222325);
        assert_eq!(fnv1a64(b"a"), 0xaf63dc4c8601ec8c);
        assert_eq!(fnv1a64(b"foobar"), 0x85944171f73967e8);
    }

    #[test]
    fn fnv1a64_zeros_matches_general_form() {
        for len in [0, 1, 7, 4096, 4097] {
            assert_eq!(fnv1a64_zeros(len), fnv1a64(&vec![0u8; len]), "len {len}");
        }
    }

    #[test]
    fn fnv1a64_incremental() {
        let data = pattern(3, 10_000);
        let (a, b) = data.split_at(4321);
        assert_eq!(
            fnv1a64_update(fnv1a64_update(FNV1A64_OFFSET, a), b),
            fnv1a64(&data)
        );
    }

    #[test]
    fn pattern_multiplier_is_the_protocol_constant() {
        assert_eq!(PATTERN_MUL, 0x9e37_79b9_7f4a_7c15);
    }

    #[test]
    fn pattern_formula() {
        // Worked by hand: (0 * MUL) >> 56 = 0; (1 * MUL) >> 56 = 0x9e;
        // (2 * MUL) mod 2^64 = 0x3c6ef372fe94f82a -> 0x3c.
        assert_eq!(pattern_byte(0, 0), 0);
        assert_eq!(pattern_byte(0, 1), 0x9e);
        assert_eq!(pattern_byte(1, 0), 0x9e);
        assert_eq!(pattern_byte(0, 2), 0x3c);
        // Wrapping seed arithmetic.
        assert_eq!(pattern_byte(u64::MAX, 1), pattern_byte(0, 0));
    }

    #[test]
    fn pattern_is_shift_invariant() {
        let p = pattern(1234, 8192);
        for off in [0usize, 1, 4095, 4096, 8191] {
            assert_eq!(p[off..], pattern(1234 + off as u64, 8192 - off)[..]);
        }
    }

    #[test]
    fn pattern_varies_and_detects_mismatch() {
        let mut p = pattern(99, 4096);
        // Not a constant page (zram and KSM treat same-filled pages specially).
        assert!(p.iter().any(|&b| b != p[0]));
        assert_ne!(pattern(1, 4096), pattern(2, 4096));
        assert_eq!(find_pattern_mismatch(&p, 99), None);
        p[777] ^= 1;
        assert_eq!(find_pattern_mismatch(&p, 99), Some(777));
    }
}
