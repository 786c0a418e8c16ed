//! The fingerprint of a store: xxh3-128 over everything that decides its contents.
//!
//! Inputs are hashed by their bytes, never their names, so an edited data file
//! rebuilds the store and a renamed or moved one does not.

use std::io::Read;
use std::path::Path;

use xxhash_rust::xxh3::Xxh3Default;

use crate::error::Result;

/// Streaming hasher; every part is length-prefixed so parts cannot run into each other.
pub struct Fingerprinter {
    hasher: Xxh3Default,
    buffer: Vec<u8>,
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
            buffer: Vec::new(),
        }
    }

    /// Add a labelled piece of bytes.
    pub fn add(&mut self, label: &str, bytes: &[u8]) {
        self.hasher.update(&(label.len() as u64).to_le_bytes());
        self.hasher.update(label.as_bytes());
        self.hasher.update(&(bytes.len() as u64).to_le_bytes());
        self.hasher.update(bytes);
    }

    /// Add the bytes of a file, calling `on_bytes` with each block's size (for progress); it
    /// returns false to stop, and then this returns `Ok(false)`.
    pub fn add_file(&mut self, path: &Path, mut on_bytes: impl FnMut(u64) -> bool) -> Result<bool> {
        let mut file = fs_err::File::open(path)?;
        let size = file.metadata()?.len();
        self.hasher.update(b"file");
        self.hasher.update(&size.to_le_bytes());
        self.buffer.resize(1 << 20, 0);
        loop {
            let read = file.read(&mut self.buffer)?;
            if read == 0 {
                return Ok(true);
            }
            self.hasher.update(&self.buffer[..read]);
            if !on_bytes(read as u64) {
                return Ok(false);
            }
        }
    }

    /// The fingerprint as 32 hex digits.
    pub fn hex(&self) -> String {
        format!("{:032x}", self.hasher.digest128())
    }
}
