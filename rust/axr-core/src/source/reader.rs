//! Streaming reader: files → chunks of raw rows, each with its file and 1-based line.
//!
//! JSON lines are only split here (a memchr scan); parsing happens in the
//! parallel stage, so the reader thread never limits throughput. JSON arrays
//! are split the same way: a scan that follows strings and nesting finds where
//! each element ends, and the workers parse the elements. Neither kind holds
//! more than a chunk in memory.

use std::io::{BufRead, BufReader, Read, Seek, SeekFrom};
use std::ops::Range;
use std::sync::{Arc, Mutex};

use serde_json::{Map, Value};

use super::columnar::BatchRows;
use super::resolve::{FileKind, SourceFile};
use crate::error::{Error, Result};

/// How one row's content is held in its chunk.
#[derive(Debug, Clone, PartialEq)]
pub enum RowData {
    /// A JSON line, not parsed yet: a byte range of [`RawChunk::bytes`].
    JsonLine(Range<usize>),
    /// A plain text line (ds_type text): a byte range of [`RawChunk::bytes`].
    TextLine(Range<usize>),
    /// A row already parsed: a parquet or Arrow row, or one a caller built itself.
    Parsed(Map<String, Value>),
}

/// One row of input with where it came from.
#[derive(Debug, Clone, PartialEq)]
pub struct RawRow {
    /// Index of the dataset (entry of `datasets`) it belongs to.
    pub dataset: usize,
    /// Index of its file in [`RowReader::files`].
    pub file: usize,
    /// 1-based line of the row's start.
    pub line: u64,
    /// The row.
    pub data: RowData,
}

/// A batch of consecutive rows; line bytes share one buffer.
#[derive(Debug, Default)]
pub struct RawChunk {
    /// Bytes of all JSON/text lines of the chunk.
    pub bytes: Vec<u8>,
    /// The rows, in input order.
    pub rows: Vec<RawRow>,
    /// Input bytes consumed so far, over all files (for progress).
    pub bytes_read: u64,
    /// Rows left out because they belong to another `shards` shard.
    pub rows_outside_shard: u64,
}

const BYTE_ORDER_MARK: &[u8] = b"\xEF\xBB\xBF";

/// Counts newlines and bytes of what passes through, for line numbers and progress.
struct CountingReader<R> {
    inner: R,
    newlines: u64,
    bytes: u64,
}

impl<R: BufRead> CountingReader<R> {
    /// Next non-whitespace byte, without consuming it.
    fn peek_non_whitespace(&mut self) -> std::io::Result<Option<u8>> {
        loop {
            let buffer = self.inner.fill_buf()?;
            if buffer.is_empty() {
                return Ok(None);
            }
            let whitespace = buffer.iter().take_while(|byte| byte.is_ascii_whitespace()).count();
            self.newlines += count_newlines(&buffer[..whitespace]);
            self.bytes += whitespace as u64;
            let found = buffer.get(whitespace).copied();
            self.inner.consume(whitespace);
            if found.is_some() {
                return Ok(found);
            }
        }
    }

    /// Skips a UTF-8 byte-order mark at the start of the file: editors on Windows write one,
    /// and it is no part of the first row.
    fn skip_byte_order_mark(&mut self) -> std::io::Result<()> {
        if self.inner.fill_buf()?.starts_with(BYTE_ORDER_MARK) {
            self.inner.consume(BYTE_ORDER_MARK.len());
            self.bytes += BYTE_ORDER_MARK.len() as u64;
        }
        Ok(())
    }

    fn consume_byte(&mut self) {
        self.inner.consume(1);
        self.bytes += 1;
    }

    /// Copies the next JSON value into `out` without parsing it: strings (with their escapes) and
    /// nesting are followed only far enough to find where the value ends, so the workers can parse
    /// it in parallel. A scalar ends before the `,`, `]` or whitespace after it. False when the
    /// file ends first.
    fn copy_json_value(&mut self, out: &mut Vec<u8>) -> std::io::Result<bool> {
        let (mut depth, mut in_string, mut escaped, mut started) = (0usize, false, false, false);
        loop {
            let buffer = self.inner.fill_buf()?;
            if buffer.is_empty() {
                // A number or literal may end the file; the array's missing `]` is reported after.
                return Ok(started && depth == 0 && !in_string);
            }
            let mut end = None;
            for (index, &byte) in buffer.iter().enumerate() {
                if in_string {
                    if escaped {
                        escaped = false;
                    } else if byte == b'\\' {
                        escaped = true;
                    } else if byte == b'"' {
                        in_string = false;
                        if depth == 0 {
                            end = Some(index + 1);
                            break;
                        }
                    }
                    continue;
                }
                match byte {
                    b'"' => in_string = true,
                    b'{' | b'[' => depth += 1,
                    b'}' | b']' if depth > 0 => {
                        depth -= 1;
                        if depth == 0 {
                            end = Some(index + 1);
                            break;
                        }
                    }
                    b',' | b']' | b'}' if depth == 0 => {
                        end = Some(index);
                        break;
                    }
                    byte if depth == 0 && started && byte.is_ascii_whitespace() => {
                        end = Some(index);
                        break;
                    }
                    _ => {}
                }
                started = true;
            }
            let taken = end.unwrap_or(buffer.len());
            out.extend_from_slice(&buffer[..taken]);
            self.newlines += count_newlines(&buffer[..taken]);
            self.bytes += taken as u64;
            self.inner.consume(taken);
            if end.is_some() {
                return Ok(true);
            }
        }
    }
}

impl<R: BufRead> Read for CountingReader<R> {
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        let read = self.inner.read(out)?;
        self.newlines += count_newlines(&out[..read]);
        self.bytes += read as u64;
        Ok(read)
    }
}

#[expect(
    clippy::naive_bytecount,
    reason = "line counting is far from the hot path; no extra crate for it"
)]
fn count_newlines(bytes: &[u8]) -> u64 {
    bytes.iter().filter(|&&byte| byte == b'\n').count() as u64
}

/// The files of one dataset and, with `shards`, which interleaved shard of its rows to keep.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DatasetFiles {
    /// The files, in reading order.
    pub files: Vec<SourceFile>,
    /// `(shards, index)`: keep rows whose index within the dataset is `index` modulo `shards`.
    pub shard: Option<(u64, u64)>,
}

enum Mode {
    Batches(BatchRows),
    Lines,
    ArrayStart,
    ArrayNext,
    Done,
}

struct OpenFile {
    /// The text reader of JSON and text files (`None` for parquet and Arrow files).
    reader: Option<CountingReader<BufReader<fs_err::File>>>,
    mode: Mode,
    /// 1-based number of the next line to read in line mode (counted from the range's first
    /// line when only a byte range of the file is read).
    next_line: u64,
    rows: u64,
    /// With a byte range: the file offset the reader started at, and the range's end (rows that
    /// start at or after it belong to the next range).
    window: Option<(u64, u64)>,
}

impl OpenFile {
    fn bytes(&self) -> u64 {
        match (&self.mode, &self.reader) {
            (Mode::Batches(batches), _) => batches.bytes_done(),
            (_, Some(reader)) => reader.bytes,
            (_, None) => 0,
        }
    }

    fn text(&mut self) -> &mut CountingReader<BufReader<fs_err::File>> {
        self.reader.as_mut().expect("JSON and text files have a reader")
    }
}

/// Reads the rows of several datasets, in order, in chunks.
pub struct RowReader {
    /// Every file, all datasets together, in reading order.
    pub files: Vec<SourceFile>,
    /// Dataset index of each file.
    dataset_of_file: Vec<usize>,
    /// `(shards, index)` per dataset: keep rows whose index within the dataset is `index` mod `shards`.
    shard_of_dataset: Vec<Option<(u64, u64)>>,
    rows_in_dataset: Vec<u64>,
    next_file: usize,
    current: Option<OpenFile>,
    bytes_done: u64,
    chunk_rows: usize,
    chunk_bytes: usize,
    /// Per file: `None` reads it whole; `Some(range)` reads only the rows (lines) that start in
    /// that byte range, an empty range none ([`Self::with_ranges`]).
    pub ranges: Vec<Option<Range<u64>>>,
    /// Files whose byte range held no row (not an error for a range: the rows may lie in others).
    empty_ranges: Arc<Mutex<Vec<usize>>>,
    /// Per file read as a byte range: the lines it read (blank ones included), filled while reading.
    lines_read: Arc<Mutex<Vec<(usize, u64)>>>,
    /// Text bytes of the parquet and Arrow rows of the chunk being filled (they hold their values
    /// outside `RawChunk::bytes`), so `chunk_bytes` bounds them too.
    parsed_bytes: usize,
}

fn data_error(file: &SourceFile, line: u64, message: impl Into<String>) -> Error {
    Error::Data {
        path: file.path.clone(),
        line,
        field: "-".into(),
        message: message.into(),
    }
}

impl RowReader {
    /// A reader over `datasets` (files and interleaved shard of each) yielding chunks of at most
    /// `chunk_rows` rows and about `chunk_bytes` bytes.
    pub fn new(datasets: Vec<DatasetFiles>, chunk_rows: usize, chunk_bytes: usize) -> Self {
        let mut files = Vec::new();
        let mut dataset_of_file = Vec::new();
        let mut shard_of_dataset = Vec::new();
        for (index, dataset) in datasets.into_iter().enumerate() {
            dataset_of_file.extend(std::iter::repeat_n(index, dataset.files.len()));
            files.extend(dataset.files);
            shard_of_dataset.push(dataset.shard);
        }
        let rows_in_dataset = vec![0; shard_of_dataset.len()];
        Self {
            files,
            dataset_of_file,
            shard_of_dataset,
            rows_in_dataset,
            next_file: 0,
            current: None,
            bytes_done: 0,
            chunk_rows: chunk_rows.max(1),
            chunk_bytes: chunk_bytes.max(1),
            ranges: Vec::new(),
            empty_ranges: Arc::default(),
            lines_read: Arc::default(),
            parsed_bytes: 0,
        }
    }

    /// Reads only part of the files (one shard of a sharded run): per file, `None` for all of it,
    /// or the byte range whose rows to read. A line belongs to the range holding its first byte,
    /// so ranges that tile a file read each line exactly once; only JSON-lines and text files may
    /// be given a partial range. Line numbers then count from the range's first line
    /// ([`absolute_line`] turns them into the file's).
    #[must_use]
    pub fn with_ranges(mut self, ranges: Vec<Option<Range<u64>>>) -> Self {
        assert_eq!(ranges.len(), self.files.len(), "one range per file");
        self.ranges = ranges;
        self
    }

    /// The list of files (indices) whose byte range turned out to hold no row, filled while reading.
    pub fn empty_ranges(&self) -> Arc<Mutex<Vec<usize>>> {
        Arc::clone(&self.empty_ranges)
    }

    /// `(file index, lines read)` of each file read as a byte range, filled while reading: the
    /// ranges before a part's own hold that many lines, which a merge adds to the part's numbers.
    pub fn lines_read(&self) -> Arc<Mutex<Vec<(usize, u64)>>> {
        Arc::clone(&self.lines_read)
    }

    fn range_of(&self, file: usize) -> Option<Range<u64>> {
        let range = self.ranges.get(file).cloned().flatten()?;
        // A range covering the whole file reads it as a whole (byte-order mark, empty-file check).
        (range.start > 0 || range.end < self.files[file].size).then_some(range)
    }

    /// Per file, where its rows' line numbers count from: `Some(start)` for a range starting
    /// inside the file (see [`absolute_line`]), `None` when they are the file's own.
    pub fn line_origins(&self) -> Vec<Option<u64>> {
        (0..self.files.len())
            .map(|index| self.range_of(index).map(|range| range.start).filter(|&start| start > 0))
            .collect()
    }

    /// Total bytes to read, over all files (or their ranges).
    pub fn bytes_total(&self) -> u64 {
        (0..self.files.len())
            .map(|index| match self.range_of(index) {
                Some(range) => range.end.min(self.files[index].size).saturating_sub(range.start),
                None => self.files[index].size,
            })
            .sum()
    }

    /// Opens the file from the start of the first line that starts in `range`.
    fn open_range(&mut self, range: Range<u64>) -> Result<()> {
        let file = &self.files[self.next_file];
        let mut handle = fs_err::File::open(&file.path)?;
        let mut start = range.start;
        if start > 0 {
            handle.seek(SeekFrom::Start(start - 1))?;
        }
        let mut reader = CountingReader {
            inner: BufReader::with_capacity(1 << 20, handle),
            newlines: 0,
            bytes: 0,
        };
        if start == 0 {
            reader.skip_byte_order_mark()?;
        } else {
            // The line under the range's first byte started before it, unless the byte before
            // ends a line: that line is the previous range's.
            let mut partial = Vec::new();
            reader.inner.read_until(b'\n', &mut partial)?;
            let ends_line = partial.first() == Some(&b'\n');
            if ends_line {
                partial.truncate(1);
            }
            start += partial.len() as u64 - 1;
        }
        self.current = Some(OpenFile {
            reader: Some(reader),
            mode: Mode::Lines,
            next_line: 1,
            rows: 0,
            window: Some((start, range.end)),
        });
        Ok(())
    }

    fn open_next(&mut self) -> Result<bool> {
        while self
            .ranges
            .get(self.next_file)
            .is_some_and(|range| range.as_ref().is_some_and(Range::is_empty))
        {
            self.next_file += 1;
        }
        if self.next_file >= self.files.len() {
            return Ok(false);
        }
        if let Some(range) = self.range_of(self.next_file) {
            self.open_range(range)?;
            self.next_file += 1;
            return Ok(true);
        }
        let file = &self.files[self.next_file];
        let batches = match file.kind {
            FileKind::Parquet => Some(BatchRows::parquet(&file.path)?),
            FileKind::Arrow => Some(BatchRows::arrow(&file.path)?),
            FileKind::Json | FileKind::Text => None,
        };
        if let Some(batches) = batches {
            self.current = Some(OpenFile {
                reader: None,
                mode: Mode::Batches(batches),
                next_line: 1,
                rows: 0,
                window: None,
            });
            self.next_file += 1;
            return Ok(true);
        }
        let handle = fs_err::File::open(&file.path)?;
        let mut reader = CountingReader {
            inner: BufReader::with_capacity(1 << 20, handle),
            newlines: 0,
            bytes: 0,
        };
        reader.skip_byte_order_mark()?;
        let mode = match (file.kind, reader.peek_non_whitespace()?) {
            (_, None) => return Err(data_error(file, 0, "the file is empty: it has no rows")),
            (FileKind::Json, Some(b'[')) => Mode::ArrayStart,
            _ => Mode::Lines,
        };
        // Line mode rereads from the start so line numbers and blank lines stay exact.
        let reader = if matches!(mode, Mode::Lines) {
            let mut reader = CountingReader {
                inner: BufReader::with_capacity(1 << 20, fs_err::File::open(&file.path)?),
                newlines: 0,
                bytes: 0,
            };
            reader.skip_byte_order_mark()?;
            reader
        } else {
            reader
        };
        self.current = Some(OpenFile {
            reader: Some(reader),
            mode,
            next_line: 1,
            rows: 0,
            window: None,
        });
        self.next_file += 1;
        Ok(true)
    }

    /// Whether the row just read (the next of `dataset`) is in the dataset's shard.
    fn in_shard(&mut self, dataset: usize) -> bool {
        let index = self.rows_in_dataset[dataset];
        self.rows_in_dataset[dataset] += 1;
        self.shard_of_dataset[dataset].is_none_or(|(shards, keep)| index % shards == keep)
    }

    /// The next chunk, or `None` at the end of all files.
    pub fn next_chunk(&mut self) -> Result<Option<RawChunk>> {
        let mut chunk = RawChunk::default();
        self.parsed_bytes = 0;
        while chunk.rows.len() < self.chunk_rows && chunk.bytes.len() + self.parsed_bytes < self.chunk_bytes {
            if self.current.is_none() && !self.open_next()? {
                break;
            }
            let file_index = self.next_file - 1;
            if !self.read_row(file_index, &mut chunk)? {
                let finished = self.current.take().expect("a file is open");
                self.bytes_done += finished.bytes();
                if finished.window.is_some() {
                    let lines = finished.next_line - 1;
                    self.lines_read.lock().expect("not poisoned").push((file_index, lines));
                }
                if finished.rows == 0 && finished.window.is_some() {
                    self.empty_ranges.lock().expect("not poisoned").push(file_index);
                } else if finished.rows == 0 {
                    return Err(data_error(
                        &self.files[file_index],
                        0,
                        "the file is empty: it has no rows",
                    ));
                }
            }
        }
        chunk.bytes_read = self.bytes_done + self.current.as_ref().map_or(0, OpenFile::bytes);
        Ok(if chunk.rows.is_empty() && chunk.rows_outside_shard == 0 {
            None
        } else {
            Some(chunk)
        })
    }

    /// Reads one row (or skips blank lines up to one) into `chunk`; false at the end of the file.
    fn read_row(&mut self, file_index: usize, chunk: &mut RawChunk) -> Result<bool> {
        let dataset = self.dataset_of_file[file_index];
        let kind = self.files[file_index].kind;
        let open = self.current.as_mut().expect("a file is open");
        match open.mode {
            Mode::Lines => loop {
                if let Some((first, end)) = open.window {
                    let position = first + open.reader.as_ref().map_or(0, |reader| reader.bytes);
                    if position >= end {
                        return Ok(false);
                    }
                }
                let start = chunk.bytes.len();
                let read = open.text().inner.read_until(b'\n', &mut chunk.bytes)?;
                if read == 0 {
                    return Ok(false);
                }
                open.text().bytes += read as u64;
                let line = open.next_line;
                open.next_line += 1;
                let mut end = chunk.bytes.len();
                while end > start && matches!(chunk.bytes[end - 1], b'\n' | b'\r') {
                    end -= 1;
                }
                let blank = chunk.bytes[start..end].iter().all(u8::is_ascii_whitespace);
                if kind == FileKind::Json && blank {
                    chunk.bytes.truncate(start);
                    continue;
                }
                open.rows += 1;
                if !self.in_shard(dataset) {
                    chunk.bytes.truncate(start);
                    chunk.rows_outside_shard += 1;
                    return Ok(true);
                }
                chunk.bytes.truncate(end);
                let data = if kind == FileKind::Json {
                    RowData::JsonLine(start..end)
                } else {
                    RowData::TextLine(start..end)
                };
                chunk.rows.push(RawRow {
                    dataset,
                    file: file_index,
                    line,
                    data,
                });
                return Ok(true);
            },
            Mode::ArrayStart => {
                open.text().consume_byte();
                open.mode = Mode::ArrayNext;
                if open.text().peek_non_whitespace()? == Some(b']') {
                    return Err(data_error(
                        &self.files[file_index],
                        open.text().newlines + 1,
                        "the JSON array is empty: it has no rows",
                    ));
                }
                self.read_array_element(file_index, chunk)
            }
            Mode::ArrayNext => self.read_array_element(file_index, chunk),
            Mode::Batches(ref mut batches) => {
                let (rows, text_bytes) = match batches.next_rows() {
                    Ok(Some(rows)) => rows,
                    Ok(None) => return Ok(false),
                    Err((row, message)) => return Err(data_error(&self.files[file_index], row, message)),
                };
                self.parsed_bytes += text_bytes;
                let first_line = open.rows + 1;
                open.rows += rows.len() as u64;
                for (offset, row) in rows.into_iter().enumerate() {
                    if self.in_shard(dataset) {
                        let line = first_line + offset as u64;
                        chunk.rows.push(RawRow {
                            dataset,
                            file: file_index,
                            line,
                            data: RowData::Parsed(row),
                        });
                    } else {
                        chunk.rows_outside_shard += 1;
                    }
                }
                Ok(true)
            }
            Mode::Done => Ok(false),
        }
    }

    fn read_array_element(&mut self, file_index: usize, chunk: &mut RawChunk) -> Result<bool> {
        let dataset = self.dataset_of_file[file_index];
        let file = &self.files[file_index];
        let open = self.current.as_mut().expect("a file is open");
        let reader = open.reader.as_mut().expect("JSON files have a reader");
        if open.rows > 0 {
            match reader.peek_non_whitespace()? {
                Some(b',') => reader.consume_byte(),
                Some(b']') => {
                    reader.consume_byte();
                    if let Some(byte) = reader.peek_non_whitespace()? {
                        return Err(data_error(
                            file,
                            reader.newlines + 1,
                            format!("unexpected `{}` after the end of the JSON array", byte as char),
                        ));
                    }
                    open.mode = Mode::Done;
                    return Ok(false);
                }
                Some(byte) => {
                    return Err(data_error(
                        file,
                        reader.newlines + 1,
                        format!(
                            "malformed JSON array: expected `,` or `]` between rows, found `{}`",
                            byte as char
                        ),
                    ));
                }
                None => {
                    return Err(data_error(
                        file,
                        reader.newlines + 1,
                        "malformed JSON array: it ends without `]`",
                    ));
                }
            }
        }
        if reader.peek_non_whitespace()?.is_none() {
            return Err(data_error(
                file,
                reader.newlines + 1,
                "malformed JSON array: it ends without `]`",
            ));
        }
        let line = reader.newlines + 1;
        let start = chunk.bytes.len();
        if !reader.copy_json_value(&mut chunk.bytes)? {
            return Err(data_error(
                file,
                reader.newlines + 1,
                "malformed JSON array: it ends inside a row, without `]`",
            ));
        }
        open.rows += 1;
        if self.in_shard(dataset) {
            // Parsed by the workers like a JSON line: a malformed element is a bad row (file:line).
            chunk.rows.push(RawRow {
                dataset,
                file: file_index,
                line,
                data: RowData::JsonLine(start..chunk.bytes.len()),
            });
        } else {
            chunk.bytes.truncate(start);
            chunk.rows_outside_shard += 1;
        }
        Ok(true)
    }
}

/// The file's own 1-based line number of the `local`-th line of a byte range that starts at
/// `origin` ([`RowReader::line_origins`]). It counts the line breaks before the range, so it
/// reads the file up to there: called for messages only, never for every row.
pub fn absolute_line(path: &std::path::Path, origin: Option<u64>, local: u64) -> Result<u64> {
    let Some(start) = origin else { return Ok(local) };
    let mut reader = BufReader::with_capacity(1 << 20, fs_err::File::open(path)?).take(start - 1);
    let mut before = 0u64;
    loop {
        let buffer = reader.fill_buf()?;
        if buffer.is_empty() {
            break;
        }
        before += count_newlines(buffer);
        let length = buffer.len();
        reader.consume(length);
    }
    // The range's first line starts after the line break at or after byte `start - 1`.
    Ok(before + 1 + local)
}

/// serde_json's message without its "at line L column C" suffix (lines are ours to count).
pub(crate) fn json_message(error: &serde_json::Error) -> String {
    let text = error.to_string();
    let suffix = format!(" at line {} column {}", error.line(), error.column());
    match text.strip_suffix(&suffix) {
        Some(message) => format!("{message} (column {})", error.column()),
        None => text,
    }
}

/// A JSON value's type in words.
pub(crate) fn json_type(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn file(dir: &Path, name: &str, content: &[u8], kind: FileKind) -> SourceFile {
        let path = dir.join(name);
        fs_err::write(&path, content).unwrap();
        SourceFile {
            path,
            kind,
            size: content.len() as u64,
        }
    }

    fn read_all(reader: &mut RowReader) -> Result<Vec<(u64, String)>> {
        let mut rows = Vec::new();
        while let Some(chunk) = reader.next_chunk()? {
            for row in chunk.rows {
                let text = match row.data {
                    RowData::JsonLine(range) | RowData::TextLine(range) => {
                        String::from_utf8(chunk.bytes[range].to_vec()).unwrap()
                    }
                    RowData::Parsed(map) => Value::Object(map).to_string(),
                };
                rows.push((row.line, text));
            }
        }
        Ok(rows)
    }

    #[test]
    fn lines_keep_their_numbers_across_blank_lines_and_chunks() {
        let dir = tempfile::tempdir().unwrap();
        let source = file(
            dir.path(),
            "a.jsonl",
            b"{\"a\":1}\n\n{\"a\":2}\r\n  \n{\"a\":3}",
            FileKind::Json,
        );
        let mut reader = RowReader::new(
            vec![DatasetFiles {
                files: vec![source],
                shard: None,
            }],
            2,
            1 << 20,
        );
        let rows = read_all(&mut reader).unwrap();
        assert_eq!(
            rows,
            [
                (1, "{\"a\":1}".into()),
                (3, "{\"a\":2}".into()),
                (5, "{\"a\":3}".into())
            ]
        );
    }

    #[test]
    fn a_byte_order_mark_is_skipped_in_json_lines_arrays_and_text() {
        let dir = tempfile::tempdir().unwrap();
        let cases: [(&str, &[u8], FileKind, &str); 3] = [
            ("a.jsonl", b"\xEF\xBB\xBF{\"a\":1}\n", FileKind::Json, "{\"a\":1}"),
            ("b.json", b"\xEF\xBB\xBF[{\"a\":1}]", FileKind::Json, "{\"a\":1}"),
            ("c.txt", b"\xEF\xBB\xBFhello\n", FileKind::Text, "hello"),
        ];
        for (name, content, kind, expected) in cases {
            let source = file(dir.path(), name, content, kind);
            let mut reader = RowReader::new(
                vec![DatasetFiles {
                    files: vec![source],
                    shard: None,
                }],
                8,
                1 << 20,
            );
            assert_eq!(read_all(&mut reader).unwrap(), [(1, expected.to_owned())], "{name}");
        }
    }

    #[test]
    fn json_arrays_are_read_element_by_element() {
        let dir = tempfile::tempdir().unwrap();
        let source = file(
            dir.path(),
            "a.json",
            b"  [\n {\"a\": 1},\n\n {\"a\":\n 2}\n]\n",
            FileKind::Json,
        );
        let mut reader = RowReader::new(
            vec![DatasetFiles {
                files: vec![source],
                shard: None,
            }],
            1,
            1 << 20,
        );
        let rows = read_all(&mut reader).unwrap();
        // The elements' own bytes: the workers parse them.
        assert_eq!(rows, [(2, "{\"a\": 1}".into()), (4, "{\"a\":\n 2}".into())]);
    }

    #[test]
    fn elements_are_split_without_parsing_strings_or_nesting() {
        let dir = tempfile::tempdir().unwrap();
        let content = b"[{\"a\": \"x],}\\\"{\"}, {\"b\": [1, {\"c\": \"]\"}]},\n 3 ,\"s\", true,{\"a\": }]";
        let source = file(dir.path(), "a.json", content, FileKind::Json);
        let mut reader = RowReader::new(
            vec![DatasetFiles {
                files: vec![source],
                shard: None,
            }],
            100,
            1 << 20,
        );
        let rows = read_all(&mut reader).unwrap();
        let texts: Vec<&str> = rows.iter().map(|(_, text)| text.as_str()).collect();
        // Not-object and malformed elements reach the workers, which report them as bad rows.
        assert_eq!(
            texts,
            [
                "{\"a\": \"x],}\\\"{\"}",
                "{\"b\": [1, {\"c\": \"]\"}]}",
                "3",
                "\"s\"",
                "true",
                "{\"a\": }"
            ]
        );
        assert_eq!(rows[2].0, 2);
    }

    #[test]
    fn malformed_arrays_name_the_line() {
        let dir = tempfile::tempdir().unwrap();
        for (content, line, needle) in [
            (&b"[\n{\"a\": 1}\n{\"a\": 2}]"[..], 3, "expected `,`"),
            (b"[]", 1, "empty"),
            (b"[{\"a\": 1}", 1, "without `]`"),
            (b"[{\"a\": 1},\n{\"a\": [2}", 2, "without `]`"),
        ] {
            let source = file(dir.path(), "bad.json", content, FileKind::Json);
            let mut reader = RowReader::new(
                vec![DatasetFiles {
                    files: vec![source],
                    shard: None,
                }],
                10,
                1 << 20,
            );
            match read_all(&mut reader).unwrap_err() {
                Error::Data { line: got, message, .. } => {
                    assert_eq!(got, line, "{message}");
                    assert!(message.contains(needle), "{message}");
                }
                other => panic!("{other}"),
            }
        }
    }

    #[test]
    fn empty_files_are_errors_and_shards_interleave() {
        let dir = tempfile::tempdir().unwrap();
        let empty = file(dir.path(), "empty.jsonl", b"\n \n", FileKind::Json);
        let mut reader = RowReader::new(
            vec![DatasetFiles {
                files: vec![empty],
                shard: None,
            }],
            10,
            1 << 20,
        );
        let error = read_all(&mut reader).unwrap_err().to_string();
        assert!(error.contains("empty.jsonl") && error.contains("empty"), "{error}");

        let text = file(dir.path(), "t.txt", b"a\nb\nc\nd\ne\n", FileKind::Text);
        let mut reader = RowReader::new(
            vec![DatasetFiles {
                files: vec![text],
                shard: Some((2, 1)),
            }],
            10,
            1 << 20,
        );
        let rows = read_all(&mut reader).unwrap();
        assert_eq!(rows, [(2, "b".into()), (4, "d".into())]);
    }
}

#[cfg(test)]
mod columnar_tests {
    use std::path::Path;
    use std::sync::Arc;

    use arrow_array::{ArrayRef, Int64Array, RecordBatch, StringArray};

    use super::*;
    use crate::options::SourceOptions;
    use crate::source::resolve;

    fn batch(start: i64, rows: i64) -> RecordBatch {
        let texts: Vec<Option<String>> = (start..start + rows)
            .map(|index| (index % 5 != 4).then(|| format!("row {index}")))
            .collect();
        let ids: Vec<i64> = (start..start + rows).collect();
        RecordBatch::try_from_iter_with_nullable([
            ("text", Arc::new(StringArray::from(texts)) as ArrayRef, true),
            ("id", Arc::new(Int64Array::from(ids)) as ArrayRef, false),
        ])
        .unwrap()
    }

    fn source(path: &Path) -> SourceOptions {
        SourceOptions {
            path: path.to_str().unwrap().into(),
            ds_type: None,
            data_files: vec![],
            split: None,
            shards: None,
            shards_idx: None,
            key: String::new(),
            origin: None,
        }
    }

    fn rows_of(path: &Path, split: Option<&str>) -> Vec<(u64, Value)> {
        let mut options = source(path);
        options.split = split.map(str::to_owned);
        let files = resolve(&options, "d", &mut Vec::new()).unwrap();
        let mut reader = RowReader::new(vec![DatasetFiles { files, shard: None }], 7, 1 << 20);
        let mut rows = Vec::new();
        while let Some(chunk) = reader.next_chunk().unwrap() {
            for row in chunk.rows {
                let RowData::Parsed(map) = row.data else {
                    panic!("columnar rows come parsed")
                };
                rows.push((row.line, Value::Object(map)));
            }
        }
        rows
    }

    fn expected(count: i64) -> Vec<(u64, Value)> {
        (0..count)
            .map(|index| {
                let row = if index % 5 == 4 {
                    serde_json::json!({"id": index})
                } else {
                    serde_json::json!({"text": format!("row {index}"), "id": index})
                };
                (index as u64 + 1, row)
            })
            .collect()
    }

    #[test]
    fn parquet_rows_read_as_json_with_nulls_missing() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("data.parquet");
        let mut writer = parquet::arrow::ArrowWriter::try_new(
            fs_err::File::create(&path).unwrap().into_parts().0,
            batch(0, 1).schema(),
            None,
        )
        .unwrap();
        writer.write(&batch(0, 1500)).unwrap();
        writer.write(&batch(1500, 20)).unwrap();
        writer.close().unwrap();
        assert_eq!(rows_of(&path, None), expected(1520));
    }

    /// The rows read from Arrow arrays equal the rows of the same batch written as JSON lines by
    /// arrow-json (how the reader worked before): strings with escapes and line separators,
    /// nested lists of structs, numbers, booleans, nulls inside and outside structs.
    #[test]
    fn parquet_rows_equal_the_batch_written_as_json_lines() {
        let lines = concat!(
            r#"{"text":"a \"q\"\n\t\u2028 ü <s>","messages":[{"role":"user","content":"hi"},{"role":"assistant","content":null}],"n":3,"x":1.5,"ok":true,"tags":["a","b"]}"#,
            "\n",
            r#"{"messages":[],"n":-1,"x":0.1,"ok":false,"tags":null,"meta":{"k":"v","z":null}}"#,
            "\n",
            r#"{"text":"","n":9007199254740993,"x":-2e-300,"meta":{"k":"w","z":4}}"#,
            "\n",
        );
        let (schema, _) = arrow_json::reader::infer_json_schema(lines.as_bytes(), None).unwrap();
        let schema = Arc::new(schema);
        let batch = arrow_json::ReaderBuilder::new(Arc::clone(&schema))
            .build(lines.as_bytes())
            .unwrap()
            .next()
            .unwrap()
            .unwrap();
        let mut written = Vec::new();
        let mut writer = arrow_json::LineDelimitedWriter::new(&mut written);
        writer.write(&batch).unwrap();
        writer.finish().unwrap();
        let expected: Vec<(u64, Value)> = written
            .split(|&byte| byte == b'\n')
            .filter(|line| !line.is_empty())
            .enumerate()
            .map(|(index, line)| (index as u64 + 1, serde_json::from_slice(line).unwrap()))
            .collect();
        assert_eq!(expected.len(), 3);
        assert_eq!(expected[0].1["messages"][1], serde_json::json!({"role": "assistant"}));

        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("data.parquet");
        let file = fs_err::File::create(&path).unwrap().into_parts().0;
        let mut parquet_writer = parquet::arrow::ArrowWriter::try_new(file, schema, None).unwrap();
        parquet_writer.write(&batch).unwrap();
        parquet_writer.close().unwrap();
        assert_eq!(rows_of(&path, None), expected);
    }

    #[test]
    fn save_to_disk_folders_read_their_arrow_stream_files_by_split() {
        let dir = tempfile::tempdir().unwrap();
        let saved = dir.path().join("saved");
        for (split, start, count) in [("train", 0, 30), ("test", 100, 3)] {
            let folder = saved.join(split);
            fs_err::create_dir_all(&folder).unwrap();
            let mut names = Vec::new();
            for (part, (first, rows)) in [(start, count - 1), (start + count - 1, 1)].into_iter().enumerate() {
                let name = format!("data-{part:05}-of-00002.arrow");
                let file = fs_err::File::create(folder.join(&name)).unwrap().into_parts().0;
                let mut writer = arrow_ipc::writer::StreamWriter::try_new(file, &batch(0, 1).schema()).unwrap();
                writer.write(&batch(first, rows)).unwrap();
                writer.finish().unwrap();
                names.push(serde_json::json!({"filename": name}));
            }
            fs_err::write(
                folder.join("state.json"),
                serde_json::json!({"_data_files": names}).to_string(),
            )
            .unwrap();
        }
        fs_err::write(saved.join("dataset_dict.json"), r#"{"splits": ["train", "test"]}"#).unwrap();
        // Row numbers count within each file: the second file's row is its row 1.
        let mut train_expected = expected(30);
        train_expected[29].0 = 1;
        assert_eq!(rows_of(&saved, None), train_expected);
        let test_rows = rows_of(&saved, Some("test"));
        assert_eq!(test_rows.len(), 3);
        assert_eq!(test_rows[2], (1, serde_json::json!({"text": "row 102", "id": 102})));
        assert_eq!(rows_of(&saved.join("train"), None).len(), 30);
    }

    #[test]
    fn a_corrupt_parquet_file_is_a_data_error_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("broken.parquet");
        fs_err::write(&path, b"PAR1 this is not parquet").unwrap();
        let files = resolve(&source(&path), "d", &mut Vec::new()).unwrap();
        let mut reader = RowReader::new(vec![DatasetFiles { files, shard: None }], 7, 1 << 20);
        let error = reader.next_chunk().unwrap_err().to_string();
        assert!(
            error.contains("broken.parquet") && error.contains("cannot read"),
            "{error}"
        );
    }
}
