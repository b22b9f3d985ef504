//! `run` refuses an output folder that is, lies inside, or contains one of its inputs (the
//! assets folder, a setting's bundled source folder) before it writes or removes anything:
//! `restart` deletes `<out>/runs`, and every call writes the plan there.

use bert2bert_experiment::{ExperimentError, Options, Preset, run};
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

/// Every path under `dir`, to check that a refused call created and removed nothing.
fn tree(dir: &Path) -> BTreeSet<PathBuf> {
    let mut out = BTreeSet::new();
    let mut stack = vec![dir.to_owned()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p.clone());
            }
            out.insert(p);
        }
    }
    out
}

#[test]
fn an_output_overlapping_the_assets_or_a_source_folder_is_refused_before_anything_is_written() {
    // A workspace of its own: the mini preset's width setting reads assets/bundled-bert under
    // the root; a `runs` folder there stands for what `restart` would delete.
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("ws");
    let bundled = root.join("assets/bundled-bert");
    std::fs::create_dir_all(bundled.join("runs")).unwrap();
    std::fs::write(bundled.join("config.json"), "{}").unwrap();
    let assets = tmp.path().join("corpus-assets");
    std::fs::create_dir_all(assets.join("runs")).unwrap();
    std::fs::write(assets.join("keep.txt"), "corpus").unwrap();
    let before = tree(tmp.path());
    let cases = [
        (bundled.clone(), "is the source model folder"),
        (bundled.join("sub"), "is inside the source model folder"),
        (root.join("assets"), "contains the source model folder"),
        (assets.clone(), "is the assets folder (--assets)"),
        (
            assets.join("results"),
            "is inside the assets folder (--assets)",
        ),
        (
            tmp.path().to_owned(),
            "contains the assets folder (--assets)",
        ),
    ];
    for (out, needle) in cases {
        let mut options = Options::new(Preset::Mini, &root);
        options.out = Some(out.clone());
        options.assets = Some(assets.clone());
        options.restart = true;
        options.quiet = true;
        let err = run(&options).unwrap_err();
        let msg = err.to_string();
        assert!(
            matches!(err, ExperimentError::OutputOverlapsInput(_)),
            "{}: {err:?}",
            out.display()
        );
        assert!(
            msg.starts_with("--out ") && msg.contains(needle),
            "{}: {msg}",
            out.display()
        );
        assert_eq!(tree(tmp.path()), before, "{}: files changed", out.display());
    }
}
