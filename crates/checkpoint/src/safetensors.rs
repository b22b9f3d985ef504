//! A small, exact safetensors layer: a validating header parser, a memory-mapped reader over one
//! file or a sharded set, and a streaming writer whose header is computed from shapes up front.
//!
//! Own parser rather than the `safetensors` crate's so that every failure names the file, the
//! tensor and the reason; the crate is used in tests to check that what we write is what it reads.

use crate::dtype::{self, Dtype};
use crate::error::{CheckpointError, Result, io_err};
use memmap2::Mmap;
use ndarray::{ArrayD, ArrayViewD, IxDyn};
use std::collections::BTreeMap;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

/// Largest header accepted; the reference implementation uses the same bound.
const MAX_HEADER: u64 = 100_000_000;

/// One tensor's entry in a safetensors header.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TensorInfo {
    /// Element type.
    pub dtype: Dtype,
    /// Shape, outermost first.
    pub shape: Vec<usize>,
    /// Byte range inside the data section.
    pub data_offsets: (usize, usize),
}

impl TensorInfo {
    /// Number of elements.
    pub fn numel(&self) -> usize {
        self.shape.iter().product()
    }
}

/// A parsed and validated header.
#[derive(Clone, Debug, Default)]
pub struct Header {
    /// Length of the JSON header in bytes (the data section starts at 8 + this).
    pub header_len: usize,
    /// Tensors by name.
    pub tensors: BTreeMap<String, TensorInfo>,
    /// The optional `__metadata__` string map.
    pub metadata: BTreeMap<String, String>,
}

/// Parses and validates the header of the safetensors bytes `buf`; `path` only names errors.
///
/// Checks: the length prefix fits the file, the header is a JSON object of the documented form,
/// every dtype is known, every byte range matches its shape and lies inside the data section, and
/// no two ranges overlap.
pub fn parse_header(path: &Path, buf: &[u8]) -> Result<Header> {
    let len = buf.len() as u64;
    let trunc = |needed: u64, what: &str| CheckpointError::Truncated {
        path: path.to_owned(),
        len,
        needed,
        what: what.to_owned(),
    };
    let bad = |reason: String| CheckpointError::Header {
        path: path.to_owned(),
        reason,
    };
    if buf.len() < 8 {
        return Err(trunc(8, "the 8-byte header length"));
    }
    let n = u64::from_le_bytes(buf[..8].try_into().expect("8 bytes"));
    if n > MAX_HEADER {
        return Err(bad(format!(
            "header length {n} exceeds the {MAX_HEADER}-byte limit"
        )));
    }
    if 8 + n > len {
        return Err(trunc(8 + n, &format!("the {n}-byte header")));
    }
    let n = n as usize;
    let text = std::str::from_utf8(&buf[8..8 + n])
        .map_err(|e| bad(format!("header is not UTF-8: {e}")))?;
    let value: serde_json::Value =
        serde_json::from_str(text).map_err(|e| bad(format!("header is not valid JSON: {e}")))?;
    let obj = value
        .as_object()
        .ok_or_else(|| bad("header is not a JSON object".into()))?;
    let data_len = buf.len() - 8 - n;
    let mut header = Header {
        header_len: n,
        ..Header::default()
    };
    for (name, entry) in obj {
        if name == "__metadata__" {
            let m = entry
                .as_object()
                .ok_or_else(|| bad("`__metadata__` is not an object".into()))?;
            for (k, v) in m {
                let v = v
                    .as_str()
                    .ok_or_else(|| bad(format!("`__metadata__.{k}` is not a string")))?;
                header.metadata.insert(k.clone(), v.to_owned());
            }
            continue;
        }
        let info = parse_entry(entry).map_err(|reason| CheckpointError::Tensor {
            path: path.to_owned(),
            tensor: name.clone(),
            reason,
        })?;
        let (b, e) = info.data_offsets;
        if e > data_len {
            return Err(CheckpointError::Tensor {
                path: path.to_owned(),
                tensor: name.clone(),
                reason: format!(
                    "data offsets [{b}, {e}] lie outside the data section of {data_len} bytes (file truncated?)"
                ),
            });
        }
        header.tensors.insert(name.clone(), info);
    }
    let mut spans: Vec<(&String, (usize, usize))> = header
        .tensors
        .iter()
        .map(|(k, v)| (k, v.data_offsets))
        .filter(|(_, (b, e))| e > b)
        .collect();
    spans.sort_by_key(|(_, r)| *r);
    for w in spans.windows(2) {
        if w[1].1.0 < w[0].1.1 {
            return Err(CheckpointError::Tensor {
                path: path.to_owned(),
                tensor: w[1].0.clone(),
                reason: format!(
                    "data offsets [{}, {}] overlap tensor `{}` at [{}, {}]",
                    w[1].1.0, w[1].1.1, w[0].0, w[0].1.0, w[0].1.1
                ),
            });
        }
    }
    Ok(header)
}

fn parse_entry(entry: &serde_json::Value) -> std::result::Result<TensorInfo, String> {
    let o = entry.as_object().ok_or("entry is not a JSON object")?;
    let dtype_name = o
        .get("dtype")
        .and_then(|d| d.as_str())
        .ok_or("entry has no string `dtype`")?;
    let dtype =
        Dtype::from_name(dtype_name).ok_or_else(|| format!("unknown dtype `{dtype_name}`"))?;
    let shape = o
        .get("shape")
        .and_then(|s| s.as_array())
        .ok_or("entry has no array `shape`")?
        .iter()
        .map(|d| d.as_u64().and_then(|d| usize::try_from(d).ok()))
        .collect::<Option<Vec<usize>>>()
        .ok_or("`shape` holds something other than non-negative integers")?;
    let offs = o
        .get("data_offsets")
        .and_then(|s| s.as_array())
        .ok_or("entry has no array `data_offsets`")?;
    let offs: Vec<usize> = offs
        .iter()
        .map(|d| d.as_u64().and_then(|d| usize::try_from(d).ok()))
        .collect::<Option<Vec<usize>>>()
        .filter(|v| v.len() == 2)
        .ok_or("`data_offsets` is not two non-negative integers")?;
    let (b, e) = (offs[0], offs[1]);
    if b > e {
        return Err(format!("data offsets [{b}, {e}] run backwards"));
    }
    // ndarray needs the product of the non-zero dims to fit in isize, even for an empty tensor.
    let nonzero = shape
        .iter()
        .filter(|&&d| d != 0)
        .try_fold(dtype.size(), |acc, &d| acc.checked_mul(d))
        .filter(|&n| n <= isize::MAX as usize);
    if nonzero.is_none() {
        return Err(format!("shape {shape:?} overflows the address space"));
    }
    let bytes = shape
        .iter()
        .try_fold(dtype.size(), |acc, &d| acc.checked_mul(d))
        .ok_or("shape overflows the address space")?;
    if e - b != bytes {
        return Err(format!(
            "data offsets [{b}, {e}] hold {} bytes, but {dtype} {shape:?} needs {bytes}",
            e - b
        ));
    }
    Ok(TensorInfo {
        dtype,
        shape,
        data_offsets: (b, e),
    })
}

/// The bytes behind a safetensors file: a read-only map of the file, or a buffer in memory.
enum Backing {
    Mapped(Mmap),
    Owned(Vec<u8>),
}

impl std::ops::Deref for Backing {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        match self {
            Self::Mapped(m) => m,
            Self::Owned(v) => v,
        }
    }
}

/// One memory-mapped safetensors file with its validated header.
pub struct SafetensorsFile {
    path: PathBuf,
    mmap: Backing,
    header: Header,
}

impl SafetensorsFile {
    /// Opens, maps and validates `path`.
    pub fn open(path: &Path) -> Result<Self> {
        Self::open_with(path, true)
    }

    /// Opens, maps and validates `path`; `populate` faults the whole map in up front.
    pub fn open_with(path: &Path, populate: bool) -> Result<Self> {
        let file = File::open(path).map_err(io_err(path))?;
        // SAFETY: the map is read-only; a file changed underneath us by another process can only
        // yield wrong numbers, which the finiteness and shape checks partly catch.
        // Populate: every tensor is read once, so fault the whole map in one kernel call rather
        // than one page at a time (page faults are what reading costs on the project's VMs).
        // Streaming readers skip it: they read a few tensors at a time and release them.
        let mut opts = memmap2::MmapOptions::new();
        if populate {
            opts.populate();
        }
        let mmap = unsafe { opts.map(&file) }.map_err(io_err(path))?;
        let header = parse_header(path, &mmap)?;
        Ok(Self {
            path: path.to_owned(),
            mmap: Backing::Mapped(mmap),
            header,
        })
    }

    /// Validates safetensors bytes already in memory; `path` only names errors.
    pub fn from_bytes(path: &Path, bytes: Vec<u8>) -> Result<Self> {
        let header = parse_header(path, &bytes)?;
        Ok(Self {
            path: path.to_owned(),
            mmap: Backing::Owned(bytes),
            header,
        })
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The validated header.
    pub fn header(&self) -> &Header {
        &self.header
    }

    /// The raw little-endian bytes of tensor `name`, if present.
    pub fn bytes(&self, name: &str) -> Option<&[u8]> {
        let info = self.header.tensors.get(name)?;
        let start = 8 + self.header.header_len;
        Some(&self.mmap[start + info.data_offsets.0..start + info.data_offsets.1])
    }

    /// Drops the mapped pages of tensor `name` from this process (they stay in the page cache
    /// and are read again if touched), so a streaming reader's resident memory stays small.
    pub fn release(&self, name: &str) {
        let (Some(info), Backing::Mapped(m)) = (self.header.tensors.get(name), &self.mmap) else {
            return;
        };
        let start = 8 + self.header.header_len + info.data_offsets.0;
        let len = info.data_offsets.1 - info.data_offsets.0;
        if len == 0 {
            return;
        }
        // SAFETY: a private read-only file map: MADV_DONTNEED only unmaps the pages, a later
        // read faults them in again from the file, so no data is lost and no reference breaks.
        // A failure is only memory not given back early.
        let _ = unsafe { m.unchecked_advise_range(memmap2::UncheckedAdvice::DontNeed, start, len) };
    }
}

/// All tensors of a model folder: one `model.safetensors` or a sharded set behind
/// `model.safetensors.index.json`.
pub struct TensorStore {
    root: PathBuf,
    files: Vec<SafetensorsFile>,
    by_name: BTreeMap<String, usize>,
}

/// Name of the single-file weights in a Hugging Face folder.
pub const WEIGHTS_FILE: &str = "model.safetensors";
/// Name of the shard index in a Hugging Face folder.
pub const INDEX_FILE: &str = "model.safetensors.index.json";

impl TensorStore {
    /// Opens the weights of model folder `dir`.
    pub fn open_dir(dir: &Path) -> Result<Self> {
        Self::open_dir_with(dir, true)
    }

    /// Opens the weights of model folder `dir` for streaming: nothing is read up front, and
    /// [`TensorStore::release`] gives a tensor's pages back after use.
    pub fn open_dir_streaming(dir: &Path) -> Result<Self> {
        Self::open_dir_with(dir, false)
    }

    fn open_dir_with(dir: &Path, populate: bool) -> Result<Self> {
        let single = dir.join(WEIGHTS_FILE);
        let index = dir.join(INDEX_FILE);
        if single.is_file() {
            return Self::from_files(
                single.clone(),
                vec![SafetensorsFile::open_with(&single, populate)?],
            );
        }
        if !index.is_file() {
            return Err(CheckpointError::MissingWeights {
                path: dir.to_owned(),
            });
        }
        let text = std::fs::read_to_string(&index).map_err(io_err(&index))?;
        let v: serde_json::Value =
            serde_json::from_str(&text).map_err(|source| CheckpointError::Json {
                path: index.clone(),
                source,
            })?;
        let map = v
            .get("weight_map")
            .and_then(|m| m.as_object())
            .ok_or_else(|| CheckpointError::ConfigField {
                path: index.clone(),
                field: "weight_map".into(),
                expected: "an object of tensor name to shard file",
            })?;
        let mut shard_names: Vec<(&str, &str)> = Vec::new();
        for (tensor, f) in map {
            let f = f.as_str().ok_or_else(|| CheckpointError::ConfigInvalid {
                path: index.clone(),
                reason: format!("weight_map entry for `{tensor}` is not a file name"),
            })?;
            if f.contains('/') || f.contains("..") {
                return Err(CheckpointError::ConfigInvalid {
                    path: index.clone(),
                    reason: format!("shard `{f}` for `{tensor}` is not a plain file name"),
                });
            }
            if !shard_names.iter().any(|(s, _)| *s == f) {
                shard_names.push((f, tensor));
            }
        }
        let files = shard_names
            .iter()
            .map(|(f, tensor)| {
                let shard = dir.join(f);
                if !shard.is_file() {
                    return Err(CheckpointError::MissingShard {
                        path: index.clone(),
                        shard: (*f).to_owned(),
                        tensor: (*tensor).to_owned(),
                    });
                }
                SafetensorsFile::open_with(&shard, populate)
            })
            .collect::<Result<Vec<_>>>()?;
        let store = Self::from_files(index.clone(), files)?;
        for (tensor, f) in map {
            let held = store
                .file_of(tensor)
                .map(|p| p.file_name().unwrap_or_default().to_owned());
            if held.as_deref() != Some(std::ffi::OsStr::new(f.as_str().unwrap_or_default())) {
                return Err(CheckpointError::MissingTensor {
                    path: dir.join(f.as_str().unwrap_or_default()),
                    tensor: tensor.clone(),
                });
            }
        }
        Ok(store)
    }

    /// A store over safetensors bytes in memory (tests, fuzzing, data from elsewhere); `path`
    /// only names errors.
    pub fn from_bytes(path: &Path, bytes: Vec<u8>) -> Result<Self> {
        Self::from_files(
            path.to_owned(),
            vec![SafetensorsFile::from_bytes(path, bytes)?],
        )
    }

    /// Opens one standalone safetensors file.
    pub fn open_file(path: &Path) -> Result<Self> {
        Self::from_files(path.to_owned(), vec![SafetensorsFile::open(path)?])
    }

    fn from_files(root: PathBuf, files: Vec<SafetensorsFile>) -> Result<Self> {
        let mut by_name = BTreeMap::new();
        for (i, f) in files.iter().enumerate() {
            for name in f.header.tensors.keys() {
                if let Some(j) = by_name.insert(name.clone(), i) {
                    return Err(CheckpointError::Tensor {
                        path: f.path.clone(),
                        tensor: name.clone(),
                        reason: format!("also stored in {}", files[j].path.display()),
                    });
                }
            }
        }
        Ok(Self {
            root,
            files,
            by_name,
        })
    }

    /// The weights file (or shard index) this store was opened from.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// All tensor names, sorted.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.by_name.keys().map(String::as_str)
    }

    /// Whether tensor `name` exists.
    pub fn contains(&self, name: &str) -> bool {
        self.by_name.contains_key(name)
    }

    /// Header entry of tensor `name`.
    pub fn info(&self, name: &str) -> Option<&TensorInfo> {
        self.by_name
            .get(name)
            .and_then(|&i| self.files[i].header.tensors.get(name))
    }

    /// The file that holds tensor `name`.
    pub fn file_of(&self, name: &str) -> Option<&Path> {
        self.by_name
            .get(name)
            .map(|&i| self.files[i].path.as_path())
    }

    /// Drops the mapped pages of tensor `name` from this process (see
    /// [`SafetensorsFile::release`]).
    pub fn release(&self, name: &str) {
        if let Some(&i) = self.by_name.get(name) {
            self.files[i].release(name);
        }
    }

    /// Raw bytes of tensor `name`.
    pub fn bytes(&self, name: &str) -> Option<&[u8]> {
        self.by_name
            .get(name)
            .and_then(|&i| self.files[i].bytes(name))
    }

    /// Bytes that reading every float tensor as f32 takes: the resident size of the typed model.
    /// The mapped files themselves are paged in and out by the OS and are not counted.
    pub fn total_f32_bytes(&self) -> usize {
        self.float_infos().map(|i| i.numel() * 4).sum()
    }

    /// Bytes of the largest float tensor as f32: the most [`TensorStore::read_f32`] holds beyond
    /// what the caller keeps, since tensors are converted one at a time.
    pub fn largest_f32_bytes(&self) -> usize {
        self.float_infos().map(|i| i.numel() * 4).max().unwrap_or(0)
    }

    fn float_infos(&self) -> impl Iterator<Item = &TensorInfo> {
        self.files
            .iter()
            .flat_map(|f| f.header.tensors.values())
            .filter(|i| i.dtype.is_weight_float())
    }

    /// The most common float dtype over all tensors, weighted by element count.
    pub fn dominant_float_dtype(&self) -> Option<Dtype> {
        let mut counts: BTreeMap<&'static str, (usize, Dtype)> = BTreeMap::new();
        for f in &self.files {
            for info in f
                .header
                .tensors
                .values()
                .filter(|i| i.dtype.is_weight_float())
            {
                counts.entry(info.dtype.name()).or_insert((0, info.dtype)).0 += info.numel();
            }
        }
        counts.into_values().max_by_key(|(n, _)| *n).map(|(_, d)| d)
    }

    /// Reads tensor `name` as f32, checking that it is a float tensor with finite values.
    pub fn read_f32(&self, name: &str) -> Result<ArrayD<f32>> {
        let i = *self
            .by_name
            .get(name)
            .ok_or_else(|| CheckpointError::MissingTensor {
                path: self.root.clone(),
                tensor: name.to_owned(),
            })?;
        let file = &self.files[i];
        let info = &file.header.tensors[name];
        if !info.dtype.is_weight_float() {
            return Err(CheckpointError::Tensor {
                path: file.path.clone(),
                tensor: name.to_owned(),
                reason: format!(
                    "dtype {} is not a float type (F32, F16, BF16 or F64 expected)",
                    info.dtype
                ),
            });
        }
        let bytes = file.bytes(name).expect("validated");
        let mut out = vec![0f32; info.numel()];
        dtype::decode_into(info.dtype, bytes, &mut out);
        check_finite_slice(&file.path, name, &out)?;
        Ok(ArrayD::from_shape_vec(IxDyn(&info.shape), out).expect("shape matches numel"))
    }
}

impl TensorStore {
    /// [`TensorStore::read_f32`] of each of `names`, in order, decoded on all cores when there
    /// is enough data to be worth a thread: reading is page faults on fresh memory and the
    /// decode, both of which scale with cores.
    pub fn read_many_f32(&self, names: &[&str]) -> Vec<Result<ArrayD<f32>>> {
        /// Below this many bytes in all, one thread is as fast as several.
        const PAR_MIN_BYTES: usize = 16 << 20;
        let bytes: usize = names
            .iter()
            .filter_map(|n| self.info(n))
            .map(|i| i.numel() * 4)
            .sum();
        let threads = std::thread::available_parallelism()
            .map_or(1, usize::from)
            .min(names.len());
        if threads <= 1 || bytes < PAR_MIN_BYTES {
            return names.iter().map(|n| self.read_f32(n)).collect();
        }
        // Largest first, handed out one at a time, so the threads finish together.
        let mut order: Vec<usize> = (0..names.len()).collect();
        order.sort_by_key(|&i| std::cmp::Reverse(self.info(names[i]).map_or(0, TensorInfo::numel)));
        let next = std::sync::atomic::AtomicUsize::new(0);
        let mut out: Vec<Option<Result<ArrayD<f32>>>> = names.iter().map(|_| None).collect();
        std::thread::scope(|s| {
            let workers: Vec<_> = (0..threads)
                .map(|_| {
                    s.spawn(|| {
                        let mut done = Vec::new();
                        loop {
                            let k = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                            let Some(&i) = order.get(k) else { break };
                            done.push((i, self.read_f32(names[i])));
                        }
                        done
                    })
                })
                .collect();
            for w in workers {
                for (i, r) in w.join().expect("decode thread panicked") {
                    out[i] = Some(r);
                }
            }
        });
        out.into_iter()
            .map(|r| r.expect("every index handed out"))
            .collect()
    }
}

/// Errors with the tensor's name if any value is NaN or infinite.
pub fn check_finite<'a>(
    path: &Path,
    name: &str,
    values: impl IntoIterator<Item = &'a f32>,
) -> Result<()> {
    let mut bad = values
        .into_iter()
        .enumerate()
        .filter(|(_, v)| !v.is_finite());
    if let Some((index, &first)) = bad.next() {
        return Err(CheckpointError::NonFinite {
            path: path.to_owned(),
            tensor: name.to_owned(),
            count: 1 + bad.count(),
            index,
            first,
        });
    }
    Ok(())
}

/// [`check_finite`] for values in memory, several times faster: blocks are tested without
/// branches (vectorised), and only a tensor with a bad value is walked again for the error.
pub fn check_finite_slice(path: &Path, name: &str, values: &[f32]) -> Result<()> {
    if all_finite(values) {
        return Ok(());
    }
    check_finite(path, name, values)
}

/// Whether no value is NaN or infinite.
fn all_finite(values: &[f32]) -> bool {
    // A sum of 0/1 flags per block has no branch in the loop, so it vectorises; blocks stay
    // small enough that a u32 cannot overflow and a bad value stops the scan early.
    values
        .chunks(4096)
        .all(|b| b.iter().map(|v| u32::from(!v.is_finite())).sum::<u32>() == 0)
}

/// Name, dtype and shape of one tensor to be written.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TensorSpec {
    /// Tensor name.
    pub name: String,
    /// Element type on disk.
    pub dtype: Dtype,
    /// Shape, outermost first.
    pub shape: Vec<usize>,
}

/// Writes a safetensors file tensor by tensor: the header is computed from the specs up front,
/// the file is sized once, and each tensor goes to its slot with positioned writes, so no more
/// than one tensor's bytes are in flight.
pub struct SafetensorsWriter {
    path: PathBuf,
    file: File,
    data_start: u64,
    slots: BTreeMap<String, (TensorSpec, u64, bool)>,
    /// Bytes written since writeback was last started.
    unflushed: u64,
}

/// Bytes written between two starts of writeback. Starting the disk writes while later tensors
/// are still being produced leaves [`SafetensorsWriter::finish`]'s fsync little to wait for
/// (measured on the project VM: 0.4 s for 1.34 GB without, 0.01 s with 64 MiB kicks).
const WRITE_BEHIND: u64 = 64 << 20;

/// Bytes encoded per positioned write; bounds the writer's buffer.
const CHUNK_ELEMS: usize = 1 << 18;
/// Bytes per positioned write of data already in its on-disk form. Measured on the project VM
/// (ext4, Linux 6.18): 1.34 GB written in 128 MiB calls took 1.1 to 2.5 s, in 1 MiB calls 0.25
/// s; a huge call asks the page cache for large folios, which costs more than the extra calls.
/// Aligning the 1 MiB calls to 1 MiB file offsets made the writes slow again (1.4 to 2.7 s), and
/// 256 KiB calls were no faster; so the calls start wherever a tensor starts.
const CHUNK_BYTES: usize = 1 << 20;

impl SafetensorsWriter {
    /// Creates `path` (truncating it) with room for every tensor in `specs`.
    pub fn create(
        path: &Path,
        specs: &[TensorSpec],
        metadata: &BTreeMap<String, String>,
    ) -> Result<Self> {
        let mut header = serde_json::Map::new();
        if !metadata.is_empty() {
            header.insert(
                "__metadata__".into(),
                serde_json::to_value(metadata).expect("strings"),
            );
        }
        let mut slots = BTreeMap::new();
        let mut offset = 0u64;
        for s in specs {
            let bytes = (s.shape.iter().product::<usize>() * s.dtype.size()) as u64;
            header.insert(
                s.name.clone(),
                serde_json::json!({
                    "dtype": s.dtype.name(),
                    "shape": s.shape,
                    "data_offsets": [offset, offset + bytes],
                }),
            );
            if slots
                .insert(s.name.clone(), (s.clone(), offset, false))
                .is_some()
            {
                return Err(CheckpointError::InvalidModel(format!(
                    "tensor `{}` written twice",
                    s.name
                )));
            }
            offset += bytes;
        }
        let mut text = serde_json::to_string(&header).expect("serialisable");
        // Pad with spaces to a multiple of 8 so the data section is aligned, as the reference does.
        while !text.len().is_multiple_of(8) {
            text.push(' ');
        }
        let file = File::create(path).map_err(io_err(path))?;
        let data_start = 8 + text.len() as u64;
        file.set_len(data_start + offset).map_err(io_err(path))?;
        let mut head = (text.len() as u64).to_le_bytes().to_vec();
        head.extend_from_slice(text.as_bytes());
        file.write_all_at(&head, 0).map_err(io_err(path))?;
        Ok(Self {
            path: path.to_owned(),
            file,
            data_start,
            slots,
            unflushed: 0,
        })
    }

    /// Writes tensor `name` from f32 values in logical (row-major) order, converting to its dtype.
    pub fn write_f32(&mut self, name: &str, values: ArrayViewD<'_, f32>) -> Result<()> {
        let (spec, offset) = self.slot(name, values.shape())?;
        if !spec.dtype.is_weight_float() {
            return Err(CheckpointError::InvalidModel(format!(
                "tensor `{name}` has non-float dtype {}; write it raw",
                spec.dtype
            )));
        }
        let dtype = spec.dtype;
        let mut buf = Vec::with_capacity(CHUNK_ELEMS.min(values.len()) * dtype.size());
        let mut pos = self.data_start + offset;
        let mut write = |buf: &mut Vec<u8>, pos: &mut u64| -> Result<()> {
            self.put(buf, pos)?;
            buf.clear();
            Ok(())
        };
        if let (Dtype::F32, true, Some(slice)) =
            (dtype, cfg!(target_endian = "little"), values.as_slice())
        {
            // On little-endian machines f32 values are already their safetensors bytes: write
            // them straight from the caller's buffer, skipping an encode copy of every byte.
            // SAFETY: f32 has no padding and every byte is a valid u8; the length covers exactly
            // the slice's memory, which lives for the whole call.
            let bytes = unsafe {
                std::slice::from_raw_parts(
                    slice.as_ptr().cast::<u8>(),
                    std::mem::size_of_val(slice),
                )
            };
            for chunk in bytes.chunks(CHUNK_BYTES) {
                self.put(chunk, &mut pos)?;
            }
        } else if let Some(slice) = values.as_slice() {
            for chunk in slice.chunks(CHUNK_ELEMS) {
                dtype::encode_slice(dtype, chunk, &mut buf);
                write(&mut buf, &mut pos)?;
            }
        } else {
            let mut it = values.iter().copied().peekable();
            while it.peek().is_some() {
                dtype::encode_extend(dtype, it.by_ref().take(CHUNK_ELEMS), &mut buf);
                write(&mut buf, &mut pos)?;
            }
        }
        self.mark(name);
        Ok(())
    }

    /// Writes tensor `name` from row-major f32 values like [`SafetensorsWriter::write_f32`], but
    /// refuses NaN and infinity ([`CheckpointError::NonFinite`]). Each chunk is checked just
    /// before it is written, while it is in cache, rather than in a separate pass over the
    /// tensor. On error, part of the tensor may be on disk: discard the file (as an
    /// [`crate::AtomicDir`] does).
    pub fn write_finite_f32(&mut self, name: &str, shape: &[usize], values: &[f32]) -> Result<()> {
        let (spec, offset) = self.slot(name, shape)?;
        if !spec.dtype.is_weight_float() {
            return Err(CheckpointError::InvalidModel(format!(
                "tensor `{name}` has non-float dtype {}; write it raw",
                spec.dtype
            )));
        }
        let need = spec.shape.iter().product::<usize>();
        if values.len() != need {
            return Err(CheckpointError::InvalidModel(format!(
                "tensor `{name}`: {} values given, {need} needed",
                values.len()
            )));
        }
        let dtype = spec.dtype;
        let mut pos = self.data_start + offset;
        let mut buf = Vec::new();
        let le_f32 = dtype == Dtype::F32 && cfg!(target_endian = "little");
        let per_chunk = if le_f32 { CHUNK_BYTES / 4 } else { CHUNK_ELEMS };
        for chunk in values.chunks(per_chunk) {
            if !all_finite(chunk) {
                return check_finite(&self.path, name, values);
            }
            let bytes = if le_f32 {
                // SAFETY: as in `write_f32`: f32 has no padding, every byte is a valid u8, and
                // the length covers exactly the chunk's memory.
                unsafe {
                    std::slice::from_raw_parts(
                        chunk.as_ptr().cast::<u8>(),
                        std::mem::size_of_val(chunk),
                    )
                }
            } else {
                buf.clear();
                dtype::encode_slice(dtype, chunk, &mut buf);
                &buf[..]
            };
            self.put(bytes, &mut pos)?;
        }
        self.mark(name);
        Ok(())
    }

    /// Writes tensor `name` from bytes already in its dtype.
    pub fn write_raw(&mut self, name: &str, shape: &[usize], bytes: &[u8]) -> Result<()> {
        let (spec, offset) = self.slot(name, shape)?;
        let need = spec.shape.iter().product::<usize>() * spec.dtype.size();
        if bytes.len() != need {
            return Err(CheckpointError::InvalidModel(format!(
                "tensor `{name}`: {} bytes given, {need} needed",
                bytes.len()
            )));
        }
        let mut pos = self.data_start + offset;
        for chunk in bytes.chunks(CHUNK_BYTES) {
            self.put(chunk, &mut pos)?;
        }
        self.mark(name);
        Ok(())
    }

    /// Writes `bytes` at `*pos` and advances it; every [`WRITE_BEHIND`] bytes, starts writeback.
    fn put(&mut self, bytes: &[u8], pos: &mut u64) -> Result<()> {
        self.file
            .write_all_at(bytes, *pos)
            .map_err(io_err(&self.path))?;
        *pos += bytes.len() as u64;
        self.unflushed += bytes.len() as u64;
        if self.unflushed >= WRITE_BEHIND {
            self.unflushed = 0;
            self.start_writeback();
        }
        Ok(())
    }

    /// Asks the kernel to start writing the file's dirty pages to disk, without waiting.
    fn start_writeback(&self) {
        #[cfg(target_os = "linux")]
        {
            use std::os::fd::AsRawFd;
            // SAFETY: plain FFI on an open descriptor; offset 0 and length 0 mean the whole file.
            // A failure here is only a missed head start: `finish` fsyncs and reports errors.
            unsafe {
                libc::sync_file_range(self.file.as_raw_fd(), 0, 0, libc::SYNC_FILE_RANGE_WRITE);
            }
        }
    }

    fn slot(&self, name: &str, shape: &[usize]) -> Result<(TensorSpec, u64)> {
        let (spec, offset, _) = self.slots.get(name).ok_or_else(|| {
            CheckpointError::InvalidModel(format!("tensor `{name}` was not declared"))
        })?;
        if spec.shape != shape {
            return Err(CheckpointError::InvalidModel(format!(
                "tensor `{name}` declared as {:?}, written as {shape:?}",
                spec.shape
            )));
        }
        Ok((spec.clone(), *offset))
    }

    fn mark(&mut self, name: &str) {
        if let Some(s) = self.slots.get_mut(name) {
            s.2 = true;
        }
    }

    /// Checks that every declared tensor was written and flushes the file to disk.
    pub fn finish(self) -> Result<()> {
        if let Some((name, _)) = self.slots.iter().find(|(_, s)| !s.2) {
            return Err(CheckpointError::InvalidModel(format!(
                "tensor `{name}` was declared but never written"
            )));
        }
        self.file.sync_all().map_err(io_err(&self.path))
    }
}

/// Hugging Face's default largest shard (`max_shard_size="5GB"`, decimal).
pub const DEFAULT_MAX_SHARD_BYTES: u64 = 5_000_000_000;

/// Writes the weights of a model folder tensor by tensor: one `model.safetensors`, or, when the
/// tensors exceed the shard size, Hugging Face shards `model-0000i-of-0000n.safetensors` (in
/// order, each below the limit unless one tensor alone exceeds it) plus
/// `model.safetensors.index.json`.
pub struct FolderWriter {
    dir: PathBuf,
    shards: Vec<Option<SafetensorsWriter>>,
    files: Vec<String>,
    /// Tensor name -> shard index.
    shard_of: BTreeMap<String, usize>,
    /// Tensors not yet written, per shard: a shard is finished (fsynced) with its last tensor.
    left: Vec<usize>,
    total_bytes: u64,
}

impl FolderWriter {
    /// Creates the weight files for `specs` in folder `dir`; `max_shard_bytes` `None` means one
    /// file whatever the size.
    pub fn create(dir: &Path, specs: &[TensorSpec], max_shard_bytes: Option<u64>) -> Result<Self> {
        let bytes = |s: &TensorSpec| (s.shape.iter().product::<usize>() * s.dtype.size()) as u64;
        let limit = max_shard_bytes.unwrap_or(u64::MAX).max(1);
        let mut groups: Vec<Vec<TensorSpec>> = vec![Vec::new()];
        let mut size = 0u64;
        for s in specs {
            let b = bytes(s);
            let cur = groups.last_mut().expect("one group");
            if !cur.is_empty() && size + b > limit {
                groups.push(Vec::new());
                size = 0;
            }
            groups.last_mut().expect("one group").push(s.clone());
            size += b;
        }
        let n = groups.len();
        let files: Vec<String> = if n == 1 {
            vec![WEIGHTS_FILE.to_owned()]
        } else {
            (1..=n)
                .map(|i| format!("model-{i:05}-of-{n:05}.safetensors"))
                .collect()
        };
        let meta = BTreeMap::from([("format".to_owned(), "pt".to_owned())]);
        let mut shards = Vec::with_capacity(n);
        let mut shard_of = BTreeMap::new();
        let mut left = Vec::with_capacity(n);
        for (i, (g, f)) in groups.iter().zip(&files).enumerate() {
            shards.push(Some(SafetensorsWriter::create(&dir.join(f), g, &meta)?));
            for s in g {
                shard_of.insert(s.name.clone(), i);
            }
            left.push(g.len());
        }
        Ok(Self {
            dir: dir.to_owned(),
            shards,
            files,
            shard_of,
            left,
            total_bytes: specs.iter().map(bytes).sum(),
        })
    }

    /// The weight file names, in order (one `model.safetensors`, or the shards).
    pub fn files(&self) -> &[String] {
        &self.files
    }

    /// [`SafetensorsWriter::write_finite_f32`] into the shard that holds `name`; the shard is
    /// finished (checked complete, fsynced) when its last tensor is written.
    pub fn write_finite_f32(&mut self, name: &str, shape: &[usize], values: &[f32]) -> Result<()> {
        let i = *self.shard_of.get(name).ok_or_else(|| {
            CheckpointError::InvalidModel(format!("tensor `{name}` was not declared"))
        })?;
        let w = self.shards[i].as_mut().ok_or_else(|| {
            CheckpointError::InvalidModel(format!("tensor `{name}`: its shard is already finished"))
        })?;
        w.write_finite_f32(name, shape, values)?;
        self.left[i] -= 1;
        if self.left[i] == 0 {
            self.shards[i].take().expect("open").finish()?;
        }
        Ok(())
    }

    /// Finishes every shard and, when sharded, writes the index.
    pub fn finish(mut self) -> Result<()> {
        for w in self.shards.iter_mut().filter_map(Option::take) {
            w.finish()?;
        }
        if self.files.len() > 1 {
            let weight_map: serde_json::Map<String, serde_json::Value> = self
                .shard_of
                .iter()
                .map(|(n, &i)| (n.clone(), serde_json::Value::from(self.files[i].clone())))
                .collect();
            let index = serde_json::json!({
                "metadata": { "total_size": self.total_bytes },
                "weight_map": weight_map,
            });
            let path = self.dir.join(INDEX_FILE);
            let text = serde_json::to_string_pretty(&index).expect("serialisable") + "\n";
            std::fs::write(&path, text).map_err(io_err(&path))?;
        }
        Ok(())
    }
}
