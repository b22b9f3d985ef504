//! What a growth did: maps, copy counts, layer order, and whether it is expected to be exact.

use crate::maps::{IndexMap, LayerMapSet};
use crate::options::{GrowOptions, MapKind, Target};
use serde::Serialize;
use std::collections::BTreeMap;
use std::fmt;

/// One index map in a report.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct MapSummary {
    /// The rule that chose the new units.
    pub kind: MapKind,
    /// Source units.
    pub source: usize,
    /// Target units (for `exact` maps including the mean-units, which copy no single unit).
    pub target: usize,
    /// Smallest copy count over the source units.
    pub min_copies: u32,
    /// Largest copy count.
    pub max_copies: u32,
    /// Copy count -> how many source units have it.
    pub copy_histogram: BTreeMap<u32, usize>,
}

impl MapSummary {
    /// The summary of `map`.
    pub fn of(map: &IndexMap) -> Self {
        let mut copy_histogram = BTreeMap::new();
        for &c in map.counts() {
            *copy_histogram.entry(c).or_insert(0) += 1;
        }
        Self {
            kind: map.kind,
            source: map.source(),
            target: map.target(),
            min_copies: map.counts().iter().copied().min().unwrap_or(0),
            max_copies: map.counts().iter().copied().max().unwrap_or(0),
            copy_histogram,
        }
    }

    /// Whether every source unit is copied the same number of times.
    pub fn uniform(&self) -> bool {
        self.min_copies == self.max_copies
    }
}

impl fmt::Display for MapSummary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} -> {} ({}", self.source, self.target, self.kind)?;
        // Exact growth: target units beyond the copies hold the mean of the source units.
        let copied: usize = self
            .copy_histogram
            .iter()
            .map(|(&c, &n)| c as usize * n)
            .sum();
        if self.target > copied {
            write!(f, ", {} mean-units", self.target - copied)?;
        }
        if self.uniform() {
            write!(f, ", every unit x{})", self.min_copies)
        } else {
            let parts: Vec<String> = self
                .copy_histogram
                .iter()
                .map(|(c, n)| format!("{n} units x{c}"))
                .collect();
            write!(f, ", {})", parts.join(", "))
        }
    }
}

/// How one target layer was made.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct LayerReport {
    /// Target layer (0-based).
    pub layer: usize,
    /// The source layer it was grown from (0-based).
    pub source_layer: usize,
    /// Whether this is a second or later copy of its source layer (depth growth).
    pub repeat: bool,
    /// The layer whose weights fill the new units (AKI), if any.
    pub knowledge_from: Option<usize>,
    /// Head map h_l (heads, not units).
    pub head_map: MapSummary,
    /// FFN map f_l.
    pub ffn_map: MapSummary,
    /// Whether this layer maps a copied input stream to a copied output stream exactly.
    pub exact: bool,
}

/// A non-encoder module and how it was grown.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ModuleReport {
    /// Module name.
    pub module: String,
    /// Which maps grow which dimensions.
    pub maps: String,
    /// Whether it is exact given an exactly copied input stream.
    pub exact: bool,
}

/// The report of one growth.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct GrowReport {
    /// Model family.
    pub family: &'static str,
    /// Source shape.
    pub source: Target,
    /// Target shape.
    pub target: Target,
    /// Head size (never changes).
    pub head_dim: usize,
    /// The options used.
    pub options: GrowOptions,
    /// The hidden map g.
    pub hidden_map: MapSummary,
    /// Target layer -> source layer.
    pub layer_order: Vec<usize>,
    /// Per target layer.
    pub layers: Vec<LayerReport>,
    /// Embeddings and heads.
    pub modules: Vec<ModuleReport>,
    /// Parameters of the source.
    pub source_parameters: usize,
    /// Parameters of the grown model.
    pub grown_parameters: usize,
    /// Whether the grown model computes the source's function (up to float rounding).
    pub expected_exact: bool,
    /// Why not, when it is not.
    pub inexact_reasons: Vec<String>,
}

impl GrowReport {
    /// A few human-readable lines.
    pub fn summary(&self) -> String {
        self.to_string()
    }
}

impl fmt::Display for GrowReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let o = &self.options;
        writeln!(
            f,
            "{}: {} -> {} (head size {})",
            self.family, self.source, self.target, self.head_dim
        )?;
        writeln!(
            f,
            "method {}, {} maps, AKI scope {}, depth {}, seed {}",
            o.method, o.map, o.aki_scope, o.depth, o.seed
        )?;
        writeln!(
            f,
            "parameters {} -> {}",
            self.source_parameters, self.grown_parameters
        )?;
        writeln!(f, "hidden map {}", self.hidden_map)?;
        let order: Vec<String> = self
            .layer_order
            .iter()
            .map(|l| (l + 1).to_string())
            .collect();
        writeln!(f, "layers (1-based source layers): {}", order.join(" "))?;
        if let Some(l) = self.layers.first() {
            writeln!(f, "layer 1: heads {}, FFN {}", l.head_map, l.ffn_map)?;
        }
        let aki: Vec<String> = self
            .layers
            .iter()
            .filter(|l| !l.repeat)
            .filter_map(|l| {
                l.knowledge_from
                    .map(|u| format!("{}<-{}", l.source_layer + 1, u + 1))
            })
            .collect();
        if !aki.is_empty() {
            writeln!(f, "AKI new units from the layer above: {}", aki.join(" "))?;
        }
        if self.expected_exact {
            write!(
                f,
                "expected exact: yes (function-preserving up to float rounding)"
            )
        } else {
            write!(
                f,
                "expected exact: no ({})",
                self.inexact_reasons.join("; ")
            )
        }
    }
}

/// The maps of one planned growth that the per-layer report reads, whatever the family.
pub(crate) struct LayerMaps<'a> {
    /// Head and FFN maps per source layer, and the layer order.
    pub maps: &'a LayerMapSet,
    /// The hidden map g.
    pub hidden: &'a IndexMap,
    /// Whether AKI also applies to the hidden out-dims.
    pub aki_all: bool,
    /// Whether the residual stream is preserved exactly (uniform counts or exact mode).
    pub hidden_ok: bool,
    /// Target layers that are exact identities by construction (pre-LN identity depth).
    pub identity: &'a [bool],
}

impl LayerMaps<'_> {
    /// One report per target layer, and the reason to give when AKI changed some layers.
    /// `upper_of(l)` is the source layer AKI takes layer `l`'s new units from, if any.
    pub(crate) fn reports(
        &self,
        upper_of: impl Fn(usize) -> Option<usize>,
    ) -> (Vec<LayerReport>, Option<String>) {
        let mut seen = vec![false; self.maps.heads.len()];
        let mut aki_layers = Vec::new();
        let layers = self
            .maps
            .order
            .iter()
            .enumerate()
            .map(|(t, &l)| {
                let repeat = std::mem::replace(&mut seen[l], true);
                let up = upper_of(l);
                let new_internal =
                    !self.maps.heads[l].is_identity() || !self.maps.ffn[l].is_identity();
                let new_hidden = !self.hidden.is_identity();
                let aki_changes = up.is_some() && (new_internal || (self.aki_all && new_hidden));
                if aki_changes && !repeat {
                    aki_layers.push((l + 1).to_string());
                }
                let identity = self.identity.get(t).copied().unwrap_or(false);
                LayerReport {
                    layer: t,
                    source_layer: l,
                    repeat,
                    knowledge_from: up,
                    head_map: MapSummary::of(&self.maps.heads[l]),
                    ffn_map: MapSummary::of(&self.maps.ffn[l]),
                    exact: identity || (self.hidden_ok && !aki_changes && !repeat),
                }
            })
            .collect();
        let reason = (!aki_layers.is_empty()).then(|| {
            format!(
                "AKI fills new units of layer(s) {} from the layer above (by design)",
                aki_layers.join(", ")
            )
        });
        (layers, reason)
    }
}
