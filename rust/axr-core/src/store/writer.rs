//! Appends samples to a store's shard files, streaming: memory stays one buffer per file.

use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use super::{ShardMeta, TokenDtype, shard_file_names};
use crate::error::{Error, Result};

struct OpenShard {
    tokens: BufWriter<fs_err::File>,
    mask: BufWriter<fs_err::File>,
    offsets: BufWriter<fs_err::File>,
    meta: ShardMeta,
}

/// What a finished writer holds.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StoreContents {
    /// The shard files.
    pub shards: Vec<ShardMeta>,
    /// Samples written.
    pub samples: u64,
    /// Tokens written.
    pub tokens: u64,
    /// Trained tokens written.
    pub trainable_tokens: u64,
    /// Longest sample.
    pub longest: u64,
}

/// Writes the shard files of a store into a directory (meta.json is the caller's).
pub struct StoreWriter {
    dir: PathBuf,
    dtype: TokenDtype,
    shard_tokens: u64,
    open: Option<OpenShard>,
    contents: StoreContents,
    bytes: Vec<u8>,
}

fn create(path: PathBuf) -> Result<BufWriter<fs_err::File>> {
    Ok(BufWriter::with_capacity(1 << 20, fs_err::File::create(path)?))
}

impl StoreWriter {
    /// Create `dir` (which must not exist) for a store of `dtype` ids, starting a new shard
    /// file whenever one would pass `shard_tokens` tokens.
    pub fn create(dir: &Path, dtype: TokenDtype, shard_tokens: u64) -> Result<Self> {
        fs_err::create_dir_all(dir)?;
        Ok(Self {
            dir: dir.to_path_buf(),
            dtype,
            shard_tokens: shard_tokens.max(1),
            open: None,
            contents: StoreContents::default(),
            bytes: Vec::new(),
        })
    }

    /// The store directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The dtype of the ids.
    pub fn dtype(&self) -> TokenDtype {
        self.dtype
    }

    fn shard_for(&mut self, length: u64) -> Result<&mut OpenShard> {
        let full = self
            .open
            .as_ref()
            .is_some_and(|open| open.meta.samples > 0 && open.meta.tokens_count + length > self.shard_tokens);
        if full {
            self.close_shard()?;
        }
        if self.open.is_none() {
            let (tokens, mask, offsets) = shard_file_names(self.contents.shards.len());
            let mut shard = OpenShard {
                tokens: create(self.dir.join(&tokens))?,
                mask: create(self.dir.join(&mask))?,
                offsets: create(self.dir.join(&offsets))?,
                meta: ShardMeta {
                    tokens,
                    mask,
                    offsets,
                    samples: 0,
                    tokens_count: 0,
                },
            };
            shard.offsets.write_all(&0u64.to_le_bytes())?;
            self.open = Some(shard);
        }
        Ok(self.open.as_mut().expect("just opened"))
    }

    fn close_shard(&mut self) -> Result<()> {
        if let Some(mut shard) = self.open.take() {
            for file in [&mut shard.tokens, &mut shard.mask, &mut shard.offsets] {
                file.flush()?;
            }
            self.contents.shards.push(shard.meta);
        }
        Ok(())
    }

    /// Append one sample: its ids and one trained flag per id.
    pub fn push(&mut self, input_ids: &[u32], trainable: &[bool]) -> Result<()> {
        assert_eq!(input_ids.len(), trainable.len(), "one flag per token");
        let mut bytes = std::mem::take(&mut self.bytes);
        bytes.clear();
        match self.dtype {
            TokenDtype::Uint16 => {
                for &id in input_ids {
                    let narrow = u16::try_from(id)
                        .map_err(|_| Error::Invalid(format!("token id {id} does not fit the store's uint16 ids")))?;
                    bytes.extend_from_slice(&narrow.to_le_bytes());
                }
            }
            TokenDtype::Uint32 => {
                for &id in input_ids {
                    bytes.extend_from_slice(&id.to_le_bytes());
                }
            }
        }
        let mask_start = bytes.len();
        bytes.extend(trainable.iter().map(|&flag| u8::from(flag)));
        let result = self.push_raw(&bytes[..mask_start], &bytes[mask_start..]);
        self.bytes = bytes;
        result
    }

    /// Append one sample given as stored bytes: little-endian ids of this store's dtype and a
    /// mask of 0/1 bytes.
    pub fn push_raw(&mut self, token_bytes: &[u8], mask: &[u8]) -> Result<()> {
        let length = mask.len() as u64;
        assert_eq!(
            token_bytes.len(),
            mask.len() * self.dtype.width(),
            "ids and mask disagree"
        );
        let trainable = mask.iter().filter(|&&flag| flag != 0).count() as u64;
        let shard = self.shard_for(length)?;
        shard.tokens.write_all(token_bytes)?;
        shard.mask.write_all(mask)?;
        shard.meta.tokens_count += length;
        shard.meta.samples += 1;
        shard.offsets.write_all(&shard.meta.tokens_count.to_le_bytes())?;
        self.contents.samples += 1;
        self.contents.tokens += length;
        self.contents.trainable_tokens += trainable;
        self.contents.longest = self.contents.longest.max(length);
        Ok(())
    }

    /// Flush every file and return what was written.
    pub fn finish(mut self) -> Result<StoreContents> {
        self.close_shard()?;
        Ok(self.contents)
    }
}
