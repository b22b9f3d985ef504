//! Output folders against the inputs they must not destroy: a write into the folder being read,
//! into a folder inside it, or into one that contains it is refused before anything is touched.

use crate::error::{CheckpointError, Result};
use std::os::unix::fs::MetadataExt;
use std::path::{Component, Path, PathBuf};

/// How an output folder overlaps an input.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Overlap {
    /// The output is the input.
    Same,
    /// The output lies inside the input.
    Inside,
    /// The output contains the input.
    Contains,
}

impl Overlap {
    /// The relation in words, as in "the output folder {is inside} the source".
    pub fn phrase(self) -> &'static str {
        match self {
            Self::Same => "is",
            Self::Inside => "is inside",
            Self::Contains => "contains",
        }
    }
}

/// `path` made absolute with every link resolved, whether or not it exists yet: its nearest
/// existing ancestor is canonicalized and the rest appended, with `.` and `..` applied to the
/// names that do not exist (they cannot be links).
pub fn resolve(path: &Path) -> std::io::Result<PathBuf> {
    let abs = if path.is_absolute() {
        path.to_owned()
    } else {
        std::env::current_dir()?.join(path)
    };
    let mut existing = abs.as_path();
    let mut rest = Vec::new();
    loop {
        match existing.canonicalize() {
            Ok(mut base) => {
                for c in rest.iter().rev() {
                    match c {
                        Component::ParentDir => {
                            base.pop();
                        }
                        Component::Normal(n) => base.push(n),
                        _ => {}
                    }
                }
                return Ok(base);
            }
            Err(e) => {
                let (Some(parent), Some(last)) =
                    (existing.parent(), existing.components().next_back())
                else {
                    return Err(e);
                };
                rest.push(last);
                existing = parent;
            }
        }
    }
}

/// (device, inode) of an existing path, which identifies a folder whatever the path to it (links,
/// bind mounts).
fn identity(path: &Path) -> Option<(u64, u64)> {
    std::fs::metadata(path).ok().map(|m| (m.dev(), m.ino()))
}

/// Whether `output` is, lies inside, or contains `input` (resolved paths, with folder identities
/// compared along the way, so another spelling or a link to the same folder is caught).
pub fn overlap(output: &Path, input: &Path) -> std::io::Result<Option<Overlap>> {
    let out = resolve(output)?;
    let inp = resolve(input)?;
    if out == inp {
        return Ok(Some(Overlap::Same));
    }
    if out.starts_with(&inp) {
        return Ok(Some(Overlap::Inside));
    }
    if inp.starts_with(&out) {
        return Ok(Some(Overlap::Contains));
    }
    // Different paths may still be the same folder (a bind mount): compare identities of the
    // existing ancestors.
    let (Some(inp_id), out_id) = (identity(&inp), identity(&out)) else {
        return Ok(None);
    };
    if out_id == Some(inp_id) {
        return Ok(Some(Overlap::Same));
    }
    if out.ancestors().skip(1).any(|a| identity(a) == Some(inp_id)) {
        return Ok(Some(Overlap::Inside));
    }
    if let Some(out_id) = out_id
        && inp.ancestors().skip(1).any(|a| identity(a) == Some(out_id))
    {
        return Ok(Some(Overlap::Contains));
    }
    Ok(None)
}

/// Refuses an `output` folder that is, lies inside, or contains `input` (the `role` of which, such
/// as "source", names it in the error). An input that does not exist is not checked: reading it
/// will fail with its own error.
pub fn check_disjoint(output: &Path, input: &Path, role: &str) -> Result<()> {
    if !input.exists() {
        return Ok(());
    }
    let relation = overlap(output, input).map_err(|source| CheckpointError::Io {
        path: output.to_owned(),
        source,
    })?;
    match relation {
        None => Ok(()),
        Some(relation) => Err(CheckpointError::OutputOverlapsInput {
            output: output.to_owned(),
            input: resolve(input).unwrap_or_else(|_| input.to_owned()),
            role: role.to_owned(),
            relation,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolves_missing_paths_through_their_nearest_existing_ancestor() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().canonicalize().unwrap();
        std::fs::create_dir(root.join("a")).unwrap();
        std::os::unix::fs::symlink(root.join("a"), root.join("link")).unwrap();
        assert_eq!(resolve(&root.join("a/./x/../y")).unwrap(), root.join("a/y"));
        assert_eq!(
            resolve(&root.join("link/new/z")).unwrap(),
            root.join("a/new/z")
        );
        assert_eq!(resolve(&root.join("nope/..")).unwrap(), root);
    }

    #[test]
    fn equal_inside_and_containing_are_found_through_links() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path();
        let src = root.join("src");
        std::fs::create_dir_all(src.join("sub")).unwrap();
        std::os::unix::fs::symlink(&src, root.join("alias")).unwrap();
        let cases = [
            (root.join("src"), Some(Overlap::Same)),
            (root.join("alias"), Some(Overlap::Same)),
            (root.join("src/../src/"), Some(Overlap::Same)),
            (root.join("alias/sub"), Some(Overlap::Inside)),
            (root.join("alias/new/deeper"), Some(Overlap::Inside)),
            (root.to_owned(), Some(Overlap::Contains)),
            (root.join("srcx"), None),
            (root.join("out"), None),
        ];
        for (out, want) in cases {
            assert_eq!(overlap(&out, &src).unwrap(), want, "{}", out.display());
        }
        let err = check_disjoint(&root.join("alias"), &src, "source").unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.contains("alias") && msg.contains("is the source") && msg.contains("src"),
            "{msg}"
        );
        check_disjoint(&root.join("out"), &src, "source").unwrap();
        check_disjoint(&src, &root.join("missing"), "source").unwrap();
    }
}
