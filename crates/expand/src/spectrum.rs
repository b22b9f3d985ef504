//! Symmetry diagnostics (feature `linalg`): singular spectra of grown matrices.
