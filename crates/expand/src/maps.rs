//! Index maps (spec section 2): which source unit each target unit copies, and layer orders
//! for depth growth (spec section 7).

use crate::options::{Depth, GrowOptions, MapKind, Target};
use bert2bert_checkpoint::random::SplitMix64;

/// A map from target units to source units; old units keep their place.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IndexMap {
    /// The rule that chose the new units.
    pub kind: MapKind,
    /// `map[i]` = the source unit that target unit `i` copies.
    map: Vec<usize>,
    /// `counts[k]` = C_k, how many target units copy source unit `k`.
    counts: Vec<u32>,
}

/// What a map is for; part of its seed, so every map has its own random stream.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MapRole {
    /// The one hidden map g of the whole model.
    Hidden,
    /// The head map h_l of layer `l` (source numbering).
    Heads(usize),
    /// The FFN map f_l of layer `l` (source numbering).
    Ffn(usize),
    /// The KV-head map of layer `l` (grouped-query attention; source numbering).
    KvHeads(usize),
}

impl MapRole {
    fn tag(self) -> u64 {
        match self {
            Self::Hidden => 1,
            Self::Heads(l) => (2 << 32) | l as u64,
            Self::Ffn(l) => (3 << 32) | l as u64,
            Self::KvHeads(l) => (4 << 32) | l as u64,
        }
    }
}

/// The seed of the map for `role` under the user's `seed`: a SplitMix64 step over both, so
/// neighbouring seeds and layers give unrelated streams.
fn role_seed(seed: u64, role: MapRole) -> u64 {
    let mut r = SplitMix64::new(seed ^ role.tag().wrapping_mul(0xD1B5_4A32_D192_ED03));
    r.next_u64()
}

impl IndexMap {
    /// The map of `role` from `source` to `target` units (`target >= source >= 1`), seeded.
    pub fn new(kind: MapKind, source: usize, target: usize, seed: u64, role: MapRole) -> Self {
        assert!(
            source >= 1 && target >= source,
            "index map needs 1 <= source <= target"
        );
        let mut rng = SplitMix64::new(role_seed(seed, role));
        let mut map: Vec<usize> = (0..source).collect();
        map.reserve(target - source);
        match kind {
            // Exact growth uses balanced rounds: the first k D_s units are k whole rounds
            // (every unit k times); the family's plan turns the partial round into mean-units.
            MapKind::Balanced | MapKind::Exact => {
                // Without replacement, cycling: a fresh shuffled round of all source units each
                // time the previous round is used up.
                let mut round: Vec<usize> = Vec::new();
                while map.len() < target {
                    if round.is_empty() {
                        round = (0..source).collect();
                        shuffle(&mut round, &mut rng);
                    }
                    map.push(round.pop().expect("non-empty round"));
                }
            }
            MapKind::Random => {
                while map.len() < target {
                    map.push(rng.below(source));
                }
            }
        }
        Self::from_map(kind, source, map)
    }

    /// A map given unit by unit: `map[i]` = the source unit (< `source`) of target unit `i`.
    ///
    /// # Panics
    /// If an entry is not below `source`.
    pub fn from_parts(kind: MapKind, source: usize, map: Vec<usize>) -> Self {
        assert!(map.iter().all(|&k| k < source), "map entry out of range");
        Self::from_map(kind, source, map)
    }

    /// A map with copy counts given rather than counted: a reader's in-map whose extra units
    /// (exact mode's zero units) carry a source row divided like the copies.
    ///
    /// # Panics
    /// If an entry is not below `counts.len()`.
    pub fn with_counts(kind: MapKind, map: Vec<usize>, counts: Vec<u32>) -> Self {
        assert!(
            map.iter().all(|&k| k < counts.len()),
            "map entry out of range"
        );
        Self { kind, map, counts }
    }

    /// The identity map on `n` units.
    pub fn identity(n: usize) -> Self {
        Self::from_map(MapKind::Balanced, n, (0..n).collect())
    }

    fn from_map(kind: MapKind, source: usize, map: Vec<usize>) -> Self {
        let mut counts = vec![0u32; source];
        for &k in &map {
            counts[k] += 1;
        }
        Self { kind, map, counts }
    }

    /// A head map expanded to units of `head_dim`: u(i) = h(i div d_h) * d_h + (i mod d_h).
    pub fn expand_heads(&self, head_dim: usize) -> Self {
        let map = self
            .map
            .iter()
            .flat_map(|&h| (0..head_dim).map(move |r| h * head_dim + r))
            .collect();
        Self::from_map(self.kind, self.source() * head_dim, map)
    }

    /// Number of source units.
    pub fn source(&self) -> usize {
        self.counts.len()
    }

    /// Number of target units.
    pub fn target(&self) -> usize {
        self.map.len()
    }

    /// Target unit -> source unit.
    pub fn map(&self) -> &[usize] {
        &self.map
    }

    /// Source unit -> copy count C_k.
    pub fn counts(&self) -> &[u32] {
        &self.counts
    }

    /// Whether every source unit has the same copy count (what exactness through LayerNorm needs).
    pub fn is_uniform(&self) -> bool {
        self.counts.iter().all(|&c| c == self.counts[0])
    }

    /// Whether the map adds no unit.
    pub fn is_identity(&self) -> bool {
        self.map.len() == self.counts.len()
    }
}

/// Fisher-Yates with the project's generator.
fn shuffle(v: &mut [usize], rng: &mut SplitMix64) {
    for i in (1..v.len()).rev() {
        let j = rng.below(i + 1);
        v.swap(i, j);
    }
}

/// For each target layer, the source layer it is grown from (0-based), by `rule`.
///
/// `Stack`: k = L_t div L_s copies of 0..L_s, then the top r = L_t - k L_s layers
/// (6 -> 16: 1..6, 1..6, 3..6 in 1-based numbering). `Interleave`: every layer k times in place,
/// and the top r layers once more, so both rules copy the same layers the same number of times.
pub fn layer_order(rule: Depth, source: usize, target: usize) -> Vec<usize> {
    assert!(
        source >= 1 && target >= source,
        "layer order needs 1 <= source <= target"
    );
    let k = target / source;
    let r = target - k * source;
    match rule {
        Depth::Stack => (0..k)
            .flat_map(|_| 0..source)
            .chain(source - r..source)
            .collect(),
        // Identity places its new blocks like Interleave (the plan zeroes their outputs).
        Depth::Interleave | Depth::Identity => (0..source)
            .flat_map(|l| std::iter::repeat_n(l, k + usize::from(l >= source - r)))
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paper_example_six_to_sixteen() {
        let one_based: Vec<usize> = layer_order(Depth::Stack, 6, 16)
            .into_iter()
            .map(|l| l + 1)
            .collect();
        assert_eq!(one_based, [1, 2, 3, 4, 5, 6, 1, 2, 3, 4, 5, 6, 3, 4, 5, 6]);
        let inter: Vec<usize> = layer_order(Depth::Interleave, 3, 7)
            .into_iter()
            .map(|l| l + 1)
            .collect();
        assert_eq!(inter, [1, 1, 2, 2, 3, 3, 3]);
    }

    #[test]
    fn head_expansion_copies_whole_heads() {
        let h = IndexMap::new(MapKind::Balanced, 2, 3, 5, MapRole::Heads(0));
        let u = h.expand_heads(4);
        assert_eq!(u.target(), 12);
        let extra = h.map()[2];
        assert_eq!(
            &u.map()[8..],
            &[extra * 4, extra * 4 + 1, extra * 4 + 2, extra * 4 + 3]
        );
        assert_eq!(u.counts()[extra * 4], 2);
    }
}

/// The per-layer index maps and the layer order of one growth, for any family: head map h_l,
/// its expansion to units u_l, FFN map f_l per source layer, and target layer -> source layer.
#[derive(Clone, Debug)]
pub(crate) struct LayerMapSet {
    /// h_l per source layer.
    pub(crate) heads: Vec<IndexMap>,
    /// u_l: h_l expanded to the units of each head.
    pub(crate) head_units: Vec<IndexMap>,
    /// f_l per source layer.
    pub(crate) ffn: Vec<IndexMap>,
    /// Target layer -> source layer.
    pub(crate) order: Vec<usize>,
}

impl LayerMapSet {
    /// The maps of a source of `layers` layers with `heads` heads of `head_dim` units and an FFN
    /// of `ffn` units, grown to `target` with `opts`' map rule, seed and depth rule.
    pub(crate) fn new(
        opts: &GrowOptions,
        target: &Target,
        layers: usize,
        heads: usize,
        head_dim: usize,
        ffn: usize,
    ) -> Self {
        let (kind, seed) = (opts.map, opts.seed);
        let head_maps: Vec<IndexMap> = (0..layers)
            .map(|l| IndexMap::new(kind, heads, target.heads, seed, MapRole::Heads(l)))
            .collect();
        Self {
            head_units: head_maps.iter().map(|h| h.expand_heads(head_dim)).collect(),
            heads: head_maps,
            ffn: (0..layers)
                .map(|l| IndexMap::new(kind, ffn, target.intermediate, seed, MapRole::Ffn(l)))
                .collect(),
            order: layer_order(opts.depth, layers, target.layers),
        }
    }
}
