//! Reads samples of a store with positional reads. Not a memory map: copying a
//! whole store in shuffled order through a map would keep every page it touched
//! resident, and the pipeline's memory must not grow with the corpus.

use std::path::{Path, PathBuf};

use fs_err::os::unix::fs::FileExt;

use super::{StoreMeta, TokenDtype};
use crate::error::{Error, Result};

struct Shard {
    tokens: fs_err::File,
    mask: fs_err::File,
    offsets: Vec<u64>,
}

/// An open store: metadata, offsets in memory, token and mask files read on demand.
pub struct StoreReader {
    /// Its `meta.json`.
    pub meta: StoreMeta,
    dir: PathBuf,
    shards: Vec<Shard>,
    /// First global sample index of each shard, plus the total at the end.
    starts: Vec<u64>,
}

fn format_error(path: &Path, message: String) -> Error {
    Error::Format {
        path: path.to_path_buf(),
        message,
    }
}

impl StoreReader {
    /// Open the store at `dir` and check its files against `meta.json`.
    pub fn open(dir: &Path) -> Result<Self> {
        let meta = StoreMeta::read(dir)?;
        let width = meta.token_dtype.width() as u64;
        let mut shards = Vec::with_capacity(meta.shards.len());
        let mut starts = vec![0u64];
        for shard in &meta.shards {
            let offsets_path = dir.join(&shard.offsets);
            let raw = fs_err::read(&offsets_path)?;
            // meta.json may be damaged: sizes computed from it must not overflow.
            if Some(raw.len() as u64) != shard.samples.checked_add(1).and_then(|count| count.checked_mul(8)) {
                return Err(format_error(
                    &offsets_path,
                    format!("expected {} offsets, found {} bytes", shard.samples + 1, raw.len()),
                ));
            }
            let offsets: Vec<u64> = raw
                .chunks_exact(8)
                .map(|bytes| u64::from_le_bytes(bytes.try_into().expect("8 bytes")))
                .collect();
            if offsets.first() != Some(&0)
                || offsets.last() != Some(&shard.tokens_count)
                || offsets.windows(2).any(|pair| pair[0] > pair[1])
            {
                return Err(format_error(
                    &offsets_path,
                    "offsets are not increasing from 0 to the token count".into(),
                ));
            }
            let tokens = fs_err::File::open(dir.join(&shard.tokens))?;
            let mask = fs_err::File::open(dir.join(&shard.mask))?;
            for (file, expected) in [
                (&tokens, shard.tokens_count.checked_mul(width)),
                (&mask, Some(shard.tokens_count)),
            ] {
                let size = file.metadata()?.len();
                if Some(size) != expected {
                    let expected = expected.map_or_else(|| "an impossible number of".into(), |bytes| bytes.to_string());
                    return Err(format_error(
                        file.path(),
                        format!("expected {expected} bytes, found {size}"),
                    ));
                }
            }
            let start = starts.last().expect("non-empty").checked_add(shard.samples);
            let Some(start) = start else {
                return Err(format_error(
                    &dir.join(super::META_FILE),
                    "shard sample counts overflow".into(),
                ));
            };
            starts.push(start);
            shards.push(Shard { tokens, mask, offsets });
        }
        if *starts.last().expect("non-empty") != meta.samples {
            return Err(format_error(
                &dir.join(super::META_FILE),
                "shard sample counts do not add up".into(),
            ));
        }
        Ok(Self {
            meta,
            dir: dir.to_path_buf(),
            shards,
            starts,
        })
    }

    /// The store directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Number of samples.
    pub fn len(&self) -> u64 {
        self.meta.samples
    }

    /// Whether the store has no samples.
    pub fn is_empty(&self) -> bool {
        self.meta.samples == 0
    }

    /// The dtype of the ids.
    pub fn dtype(&self) -> TokenDtype {
        self.meta.token_dtype
    }

    fn locate(&self, index: u64) -> (&Shard, usize) {
        assert!(index < self.len(), "sample {index} of {}", self.len());
        let shard = self.starts.partition_point(|&start| start <= index) - 1;
        (&self.shards[shard], (index - self.starts[shard]) as usize)
    }

    /// Length in tokens of every sample, in order.
    pub fn lengths(&self) -> Vec<u64> {
        self.shards
            .iter()
            .flat_map(|shard| shard.offsets.windows(2).map(|pair| pair[1] - pair[0]))
            .collect()
    }

    /// Read sample `index` as stored bytes (little-endian ids, 0/1 mask) into the buffers.
    pub fn read_raw(&self, index: u64, token_bytes: &mut Vec<u8>, mask: &mut Vec<u8>) -> Result<()> {
        let (shard, local) = self.locate(index);
        let (start, end) = (shard.offsets[local], shard.offsets[local + 1]);
        let width = self.dtype().width() as u64;
        token_bytes.resize(((end - start) * width) as usize, 0);
        mask.resize((end - start) as usize, 0);
        shard.tokens.read_exact_at(token_bytes, start * width)?;
        shard.mask.read_exact_at(mask, start)?;
        Ok(())
    }

    /// Read sample `index` as ids and trained flags.
    pub fn read(&self, index: u64) -> Result<(Vec<u32>, Vec<bool>)> {
        let (mut token_bytes, mut mask) = (Vec::new(), Vec::new());
        self.read_raw(index, &mut token_bytes, &mut mask)?;
        let ids = match self.dtype() {
            TokenDtype::Uint16 => token_bytes
                .chunks_exact(2)
                .map(|pair| u32::from(u16::from_le_bytes([pair[0], pair[1]])))
                .collect(),
            TokenDtype::Uint32 => token_bytes
                .chunks_exact(4)
                .map(|four| u32::from_le_bytes(four.try_into().expect("4 bytes")))
                .collect(),
        };
        Ok((ids, mask.into_iter().map(|flag| flag != 0).collect()))
    }
}
