//! `sources.bin`: where each sample of a store came from, so `axr inspect` names a sample's row
//! without reading or encoding the corpus again. One 16-byte little-endian record per sample, in
//! store order: dataset index (u32), file index (u32, into `meta.json` → `source_files`), 1-based
//! line (u64).

use std::io::{BufWriter, Write};
use std::path::Path;

use fs_err::os::unix::fs::FileExt;

use crate::error::{Error, Result};

/// File name of the per-sample sources of a store.
pub const SOURCES_FILE: &str = "sources.bin";
const RECORD: usize = 16;

/// Where one sample came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SampleSource {
    /// Index of its dataset in `datasets` (or `test_datasets` for an eval store of its own).
    pub dataset: u32,
    /// Index of its file in the store's `source_files`.
    pub file: u32,
    /// 1-based line (row number for columnar files).
    pub line: u64,
}

impl SampleSource {
    fn bytes(self) -> [u8; RECORD] {
        let mut out = [0; RECORD];
        out[..4].copy_from_slice(&self.dataset.to_le_bytes());
        out[4..8].copy_from_slice(&self.file.to_le_bytes());
        out[8..].copy_from_slice(&self.line.to_le_bytes());
        out
    }

    fn from_bytes(bytes: &[u8]) -> Self {
        let word = |range: std::ops::Range<usize>| {
            let mut out = [0; 8];
            out[..range.len()].copy_from_slice(&bytes[range]);
            u64::from_le_bytes(out)
        };
        Self {
            dataset: word(0..4) as u32,
            file: word(4..8) as u32,
            line: word(8..16),
        }
    }
}

/// Appends sample sources to `<store>/sources.bin`, in the order samples are pushed.
pub struct SourceWriter {
    out: BufWriter<fs_err::File>,
}

impl SourceWriter {
    /// Create `dir/sources.bin` (the store folder exists).
    pub fn create(dir: &Path) -> Result<Self> {
        Ok(Self {
            out: BufWriter::new(fs_err::File::create(dir.join(SOURCES_FILE))?),
        })
    }

    /// Record the next sample's source.
    pub fn push(&mut self, source: SampleSource) -> Result<()> {
        self.out.write_all(&source.bytes())?;
        Ok(())
    }

    /// Flush to disk.
    pub fn finish(mut self) -> Result<()> {
        self.out.flush()?;
        Ok(())
    }
}

/// Reads `sources.bin` of a store with positioned reads (nothing held in memory).
pub struct SourcesReader {
    file: fs_err::File,
    len: u64,
}

impl SourcesReader {
    /// Open `dir/sources.bin`.
    pub fn open(dir: &Path) -> Result<Self> {
        let path = dir.join(SOURCES_FILE);
        let file = fs_err::File::open(&path)?;
        let size = file.metadata()?.len();
        if size % RECORD as u64 != 0 {
            return Err(Error::Format {
                path,
                message: format!("size is not a multiple of {RECORD} bytes"),
            });
        }
        Ok(Self {
            file,
            len: size / RECORD as u64,
        })
    }

    /// Samples recorded.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// Whether no sample is recorded.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The source of sample `index`.
    pub fn get(&self, index: u64) -> Result<SampleSource> {
        let mut record = [0; RECORD];
        self.file.read_exact_at(&mut record, index * RECORD as u64)?;
        Ok(SampleSource::from_bytes(&record))
    }
}
