//! Checks of a config against the safetensors headers, run before the loaders allocate anything
//! whose size the config decides: a config claiming a billion layers over a three-layer file is
//! an error naming the field, not an allocation failure.

use crate::error::{CheckpointError, Result};
use crate::safetensors::TensorStore;
use std::collections::BTreeSet;
use std::path::Path;

/// The layer indices present in `store`: `N` of every name `{prefix}N.rest`.
pub(crate) fn layer_indices(store: &TensorStore, prefix: &str) -> BTreeSet<usize> {
    store
        .names()
        .filter_map(|name| {
            let (index, _) = name.strip_prefix(prefix)?.split_once('.')?;
            // Only plain decimal indices ("+1" is not a layer name transformers writes).
            if index.is_empty() || !index.bytes().all(|b| b.is_ascii_digit()) {
                return None;
            }
            index.parse().ok()
        })
        .collect()
}

/// Refuses a config whose `field` (`claimed` layers) disagrees with the layers `{prefix}N.*` in
/// `store`: the highest index must be `claimed - 1`. (A gap below it is left to the loader,
/// which names the missing tensor.)
pub(crate) fn check_layer_count(
    config_path: &Path,
    field: &'static str,
    claimed: usize,
    store: &TensorStore,
    prefix: &str,
) -> Result<()> {
    let found = layer_indices(store, prefix);
    let held = found.last().map_or(0, |&h| h + 1);
    if held == claimed {
        return Ok(());
    }
    let p = prefix;
    let found = match found.last() {
        None => format!("no layers (no tensor named {p}N.*)"),
        Some(&h) if found.len() == h + 1 => format!("{} layer(s) ({p}0 to {p}{h})", h + 1),
        Some(&h) => format!("{} layer(s), the highest {p}{h}", found.len()),
    };
    Err(CheckpointError::LayerCount {
        path: config_path.to_owned(),
        field,
        claimed,
        weights: store.root().to_owned(),
        found,
    })
}
