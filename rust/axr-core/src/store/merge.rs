//! Reading several stores as one: the parts of a sharded run (`axr preprocess --shard I/N`),
//! in shard order, are the staging store a single run would have written, so the merge copies
//! samples out of them exactly as a single run copies them out of its staging store.

use super::StoreReader;
use crate::error::{Error, Result};

/// What copying samples needs of a store: how many, and one sample's stored bytes.
pub trait RawSamples {
    /// Number of samples.
    fn sample_count(&self) -> u64;
    /// Read sample `index` as stored bytes (little-endian ids, 0/1 mask) into the buffers.
    fn read_sample(&self, index: u64, token_bytes: &mut Vec<u8>, mask: &mut Vec<u8>) -> Result<()>;
}

impl RawSamples for StoreReader {
    fn sample_count(&self) -> u64 {
        self.len()
    }

    fn read_sample(&self, index: u64, token_bytes: &mut Vec<u8>, mask: &mut Vec<u8>) -> Result<()> {
        self.read_raw(index, token_bytes, mask)
    }
}

/// Stores read back to back: sample `i` of the whole is sample `i - start` of the store that
/// holds it. Every store must have the same token dtype.
pub struct ConcatStores {
    stores: Vec<StoreReader>,
    /// First global sample index of each store, plus the total at the end.
    starts: Vec<u64>,
}

impl ConcatStores {
    /// Join `stores` in order; an error names the first whose token dtype differs.
    pub fn new(stores: Vec<StoreReader>) -> Result<Self> {
        let mut starts = vec![0u64];
        for store in &stores {
            if store.dtype() != stores[0].dtype() {
                return Err(Error::Format {
                    path: store.dir().to_path_buf(),
                    message: format!(
                        "token dtype {:?}, the first part has {:?}: the parts come from different tokenizers",
                        store.dtype(),
                        stores[0].dtype()
                    ),
                });
            }
            starts.push(starts.last().expect("non-empty") + store.len());
        }
        Ok(Self { stores, starts })
    }
}

impl RawSamples for ConcatStores {
    fn sample_count(&self) -> u64 {
        *self.starts.last().expect("non-empty")
    }

    fn read_sample(&self, index: u64, token_bytes: &mut Vec<u8>, mask: &mut Vec<u8>) -> Result<()> {
        assert!(index < self.sample_count(), "sample {index} of {}", self.sample_count());
        let store = self.starts.partition_point(|&start| start <= index) - 1;
        self.stores[store].read_raw(index - self.starts[store], token_bytes, mask)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{StoreMeta, StoreWriter, TokenDtype};

    fn store(dir: &std::path::Path, samples: &[&[u32]]) -> StoreReader {
        let mut writer = StoreWriter::create(dir, TokenDtype::Uint16, 1 << 20).unwrap();
        for ids in samples {
            writer.push(ids, &vec![true; ids.len()]).unwrap();
        }
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
            options: serde_json::Value::Null,
        };
        meta.write(dir).unwrap();
        StoreReader::open(dir).unwrap()
    }

    #[test]
    fn samples_run_across_stores_in_order_and_empty_stores_are_skipped() {
        let dir = tempfile::tempdir().unwrap();
        let first = store(&dir.path().join("a"), &[&[1, 2], &[3]]);
        let empty = store(&dir.path().join("b"), &[]);
        let last = store(&dir.path().join("c"), &[&[4, 5, 6]]);
        let joined = ConcatStores::new(vec![first, empty, last]).unwrap();
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
    }
}
