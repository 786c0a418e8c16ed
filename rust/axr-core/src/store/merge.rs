//! Reading several stores as one: the parts of a sharded run (`axr preprocess --shard I/N`),
//! in shard order, are the staging store a single run would have written, so the merge copies
//! samples out of them exactly as a single run copies them out of its staging store.

use std::path::Path;

use super::StoreReader;
use crate::doctor::{SampleSource, SourcesReader};
use crate::error::{Error, Result};

/// What copying samples needs of a store: how many, one sample's stored bytes, and its source.
pub trait RawSamples {
    /// Number of samples.
    fn sample_count(&self) -> u64;
    /// Read sample `index` as stored bytes (little-endian ids, 0/1 mask) into the buffers.
    fn read_sample(&self, index: u64, token_bytes: &mut Vec<u8>, mask: &mut Vec<u8>) -> Result<()>;
    /// Where sample `index` came from (`sources.bin`).
    fn source(&self, index: u64) -> Result<SampleSource>;
}

/// A staging store with its samples' sources.
pub struct Staged {
    store: StoreReader,
    sources: SourcesReader,
}

impl Staged {
    /// Open the store in `dir` and its `sources.bin`.
    pub fn open(dir: &Path) -> Result<Self> {
        Ok(Self {
            store: StoreReader::open(dir)?,
            sources: SourcesReader::open(dir)?,
        })
    }
}

impl RawSamples for Staged {
    fn sample_count(&self) -> u64 {
        self.store.len()
    }

    fn read_sample(&self, index: u64, token_bytes: &mut Vec<u8>, mask: &mut Vec<u8>) -> Result<()> {
        self.store.read_raw(index, token_bytes, mask)
    }

    fn source(&self, index: u64) -> Result<SampleSource> {
        self.sources.get(index)
    }
}

/// Stores read back to back: sample `i` of the whole is sample `i - start` of the store that
/// holds it. Every store must have the same token dtype.
pub struct ConcatStores {
    stores: Vec<Staged>,
    /// First global sample index of each store, plus the total at the end.
    starts: Vec<u64>,
    /// Per store, per file: the lines of that file in the stores before it. A part numbers the
    /// lines of a file it reads from a byte range from that range; this makes them the file's own.
    line_offsets: Vec<Vec<u64>>,
}

impl ConcatStores {
    /// Join `stores` in order, each with its per-file line offsets; an error names the first
    /// whose token dtype differs.
    pub fn new(stores: Vec<Staged>, line_offsets: Vec<Vec<u64>>) -> Result<Self> {
        assert_eq!(stores.len(), line_offsets.len(), "line offsets per store");
        let mut starts = vec![0u64];
        for Staged { store, .. } in &stores {
            if store.dtype() != stores[0].store.dtype() {
                return Err(Error::Format {
                    path: store.dir().to_path_buf(),
                    message: format!(
                        "token dtype {:?}, the first part has {:?}: the parts come from different tokenizers",
                        store.dtype(),
                        stores[0].store.dtype()
                    ),
                });
            }
            starts.push(starts.last().expect("non-empty") + store.len());
        }
        Ok(Self {
            stores,
            starts,
            line_offsets,
        })
    }

    fn locate(&self, index: u64) -> (usize, u64) {
        assert!(index < self.sample_count(), "sample {index} of {}", self.sample_count());
        let store = self.starts.partition_point(|&start| start <= index) - 1;
        (store, index - self.starts[store])
    }
}

impl RawSamples for ConcatStores {
    fn sample_count(&self) -> u64 {
        *self.starts.last().expect("non-empty")
    }

    fn read_sample(&self, index: u64, token_bytes: &mut Vec<u8>, mask: &mut Vec<u8>) -> Result<()> {
        let (store, local) = self.locate(index);
        self.stores[store].read_sample(local, token_bytes, mask)
    }

    fn source(&self, index: u64) -> Result<SampleSource> {
        let (store, local) = self.locate(index);
        let mut source = self.stores[store].source(local)?;
        source.line += self.line_offsets[store].get(source.file as usize).copied().unwrap_or(0);
        Ok(source)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{StoreMeta, StoreWriter, TokenDtype};

    /// A staging store of `samples`, each from file 0 at the given (range-local) line.
    fn store(dir: &std::path::Path, samples: &[(&[u32], u64)]) -> Staged {
        let mut writer = StoreWriter::create(dir, TokenDtype::Uint16, 1 << 20).unwrap();
        let mut sources = crate::doctor::SourceWriter::create(dir).unwrap();
        for (ids, line) in samples {
            writer.push(ids, &vec![true; ids.len()]).unwrap();
            sources
                .push(SampleSource {
                    dataset: 0,
                    file: 0,
                    line: *line,
                })
                .unwrap();
        }
        sources.finish().unwrap();
        let contents = writer.finish().unwrap();
        let meta = StoreMeta {
            format_version: crate::store::FORMAT_VERSION,
            data_version: crate::store::DATA_VERSION,
            axr_version: String::new(),
            split: "staging".into(),
            fingerprint: String::new(),
            tokenizer_hash: String::new(),
            token_dtype: TokenDtype::Uint16,
            vocab_size: 100,
            samples: contents.samples,
            tokens: contents.tokens,
            trainable_tokens: contents.trainable_tokens,
            longest: contents.longest,
            shards: contents.shards,
            counts: crate::store::RunCounts::default(),
            doctor: None,
            source_files: Vec::new(),
            options: serde_json::Value::Null,
        };
        meta.write(dir).unwrap();
        Staged::open(dir).unwrap()
    }

    #[test]
    fn samples_run_across_stores_in_order_and_empty_stores_are_skipped() {
        let dir = tempfile::tempdir().unwrap();
        let first = store(&dir.path().join("a"), &[(&[1, 2], 1), (&[3], 4)]);
        let empty = store(&dir.path().join("b"), &[]);
        let last = store(&dir.path().join("c"), &[(&[4, 5, 6], 2)]);
        // The first part read 5 lines of file 0, the empty one 3: the last part's line 2 is line 10.
        let offsets = vec![vec![0], vec![5], vec![8]];
        let joined = ConcatStores::new(vec![first, empty, last], offsets).unwrap();
        assert_eq!(joined.sample_count(), 3);
        let (mut ids, mut mask) = (Vec::new(), Vec::new());
        let mut seen = Vec::new();
        for index in 0..3 {
            joined.read_sample(index, &mut ids, &mut mask).unwrap();
            let narrow: Vec<u16> = ids
                .chunks_exact(2)
                .map(|pair| u16::from_le_bytes([pair[0], pair[1]]))
                .collect();
            seen.push(narrow);
        }
        assert_eq!(seen, [vec![1, 2], vec![3], vec![4, 5, 6]]);
        let lines: Vec<u64> = (0..3).map(|index| joined.source(index).unwrap().line).collect();
        assert_eq!(lines, [1, 4, 10]);
    }
}
