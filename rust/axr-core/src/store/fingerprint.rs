//! The fingerprint of a store: xxh3-128 over everything that decides its contents.
//!
//! Inputs are hashed by their bytes, never their names, so an edited data file
//! rebuilds the store and a renamed or moved one does not.
//!
//! A file enters the hash as its size and the xxh3-128 digests of its blocks of
//! [`HASH_BLOCK`] bytes, not as one stream: the parts of a sharded run
//! (`axr preprocess --shard I/N`) each hash only the blocks they read, and the
//! merge composes the fingerprint a single run computes from those digests.

use std::io::{Read, Seek, SeekFrom};
use std::ops::Range;
use std::path::Path;

use xxhash_rust::xxh3::{Xxh3Default, xxh3_128};

use crate::error::Result;

/// Bytes per hashed block of an input file.
pub const HASH_BLOCK: u64 = 1 << 20;

/// Number of [`HASH_BLOCK`] blocks of a file of `size` bytes.
pub fn block_count(size: u64) -> u64 {
    size.div_ceil(HASH_BLOCK)
}

/// Digests of the blocks `blocks` of the file at `path`, calling `on_bytes` with each block's
/// size (for progress); it returns false to stop, and then this returns `Ok(None)`.
pub fn block_digests(
    path: &Path,
    blocks: Range<u64>,
    mut on_bytes: impl FnMut(u64) -> bool,
) -> Result<Option<Vec<u128>>> {
    let mut file = fs_err::File::open(path)?;
    let size = file.metadata()?.len();
    let end = blocks.end.min(block_count(size));
    let mut digests = Vec::with_capacity(end.saturating_sub(blocks.start) as usize);
    if blocks.start >= end {
        return Ok(Some(digests));
    }
    file.seek(SeekFrom::Start(blocks.start * HASH_BLOCK))?;
    let mut buffer = vec![0u8; HASH_BLOCK as usize];
    for block in blocks.start..end {
        let length = (size - block * HASH_BLOCK).min(HASH_BLOCK) as usize;
        file.read_exact(&mut buffer[..length])?;
        digests.push(xxh3_128(&buffer[..length]));
        if !on_bytes(length as u64) {
            return Ok(None);
        }
    }
    Ok(Some(digests))
}

/// Streaming hasher; every part is length-prefixed so parts cannot run into each other.
pub struct Fingerprinter {
    hasher: Xxh3Default,
}

impl Default for Fingerprinter {
    fn default() -> Self {
        Self::new()
    }
}

impl Fingerprinter {
    /// A fresh hasher.
    pub fn new() -> Self {
        Self {
            hasher: Xxh3Default::new(),
        }
    }

    /// Add a labelled piece of bytes.
    pub fn add(&mut self, label: &str, bytes: &[u8]) {
        self.hasher.update(&(label.len() as u64).to_le_bytes());
        self.hasher.update(label.as_bytes());
        self.hasher.update(&(bytes.len() as u64).to_le_bytes());
        self.hasher.update(bytes);
    }

    /// Add the bytes of a file (as its size and block digests), calling `on_bytes` with each
    /// block's size (for progress); it returns false to stop, and then this returns `Ok(false)`.
    pub fn add_file(&mut self, path: &Path, on_bytes: impl FnMut(u64) -> bool) -> Result<bool> {
        let size = fs_err::metadata(path)?.len();
        match block_digests(path, 0..block_count(size), on_bytes)? {
            Some(digests) => {
                self.add_file_digests(size, &digests);
                Ok(true)
            }
            None => Ok(false),
        }
    }

    /// Add a file given by its size and the digests of all its blocks ([`block_digests`]): the
    /// same as [`Self::add_file`] on that file.
    pub fn add_file_digests(&mut self, size: u64, digests: &[u128]) {
        debug_assert_eq!(digests.len() as u64, block_count(size), "one digest per block");
        self.hasher.update(b"file");
        self.hasher.update(&size.to_le_bytes());
        for digest in digests {
            self.hasher.update(&digest.to_le_bytes());
        }
    }

    /// The fingerprint as 32 hex digits.
    pub fn hex(&self) -> String {
        format!("{:032x}", self.hasher.digest128())
    }
}
