//! Streaming reader: files → chunks of raw rows, each with its file and 1-based line.
//!
//! JSON lines are only split here (a memchr scan); parsing happens in the
//! parallel stage, so the reader thread never limits throughput. JSON arrays
//! are parsed element by element from a buffered reader, so neither kind
//! holds more than a chunk in memory.

use std::io::{BufRead, BufReader, Read};
use std::ops::Range;

use serde::Deserialize;
use serde_json::{Map, Value};

use super::resolve::{FileKind, SourceFile};
use crate::error::{Error, Result};

/// How one row's content is held in its chunk.
#[derive(Debug, Clone, PartialEq)]
pub enum RowData {
    /// A JSON line, not parsed yet: a byte range of [`RawChunk::bytes`].
    JsonLine(Range<usize>),
    /// A plain text line (ds_type text): a byte range of [`RawChunk::bytes`].
    TextLine(Range<usize>),
    /// An element of a JSON array, already parsed by the reader.
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

    fn consume_byte(&mut self) {
        self.inner.consume(1);
        self.bytes += 1;
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
    Lines,
    ArrayStart,
    ArrayNext,
    Done,
}

struct OpenFile {
    reader: CountingReader<BufReader<fs_err::File>>,
    mode: Mode,
    /// 1-based number of the next line to read in line mode.
    next_line: u64,
    rows: u64,
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
        }
    }

    /// Total bytes of all files.
    pub fn bytes_total(&self) -> u64 {
        self.files.iter().map(|file| file.size).sum()
    }

    fn open_next(&mut self) -> Result<bool> {
        if self.next_file >= self.files.len() {
            return Ok(false);
        }
        let file = &self.files[self.next_file];
        let handle = fs_err::File::open(&file.path)?;
        let mut reader = CountingReader {
            inner: BufReader::with_capacity(1 << 20, handle),
            newlines: 0,
            bytes: 0,
        };
        let mode = match (file.kind, reader.peek_non_whitespace()?) {
            (_, None) => return Err(data_error(file, 0, "the file is empty: it has no rows")),
            (FileKind::Json, Some(b'[')) => Mode::ArrayStart,
            _ => Mode::Lines,
        };
        // Line mode rereads from the start so line numbers and blank lines stay exact.
        let reader = if matches!(mode, Mode::Lines) {
            CountingReader {
                inner: BufReader::with_capacity(1 << 20, fs_err::File::open(&file.path)?),
                newlines: 0,
                bytes: 0,
            }
        } else {
            reader
        };
        self.current = Some(OpenFile {
            reader,
            mode,
            next_line: 1,
            rows: 0,
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
        while chunk.rows.len() < self.chunk_rows && chunk.bytes.len() < self.chunk_bytes {
            if self.current.is_none() && !self.open_next()? {
                break;
            }
            let file_index = self.next_file - 1;
            if !self.read_row(file_index, &mut chunk)? {
                let finished = self.current.take().expect("a file is open");
                self.bytes_done += finished.reader.bytes;
                if finished.rows == 0 {
                    return Err(data_error(
                        &self.files[file_index],
                        0,
                        "the file is empty: it has no rows",
                    ));
                }
            }
        }
        chunk.bytes_read = self.bytes_done + self.current.as_ref().map_or(0, |file| file.reader.bytes);
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
                let start = chunk.bytes.len();
                let read = open.reader.inner.read_until(b'\n', &mut chunk.bytes)?;
                if read == 0 {
                    return Ok(false);
                }
                open.reader.bytes += read as u64;
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
                open.reader.consume_byte();
                open.mode = Mode::ArrayNext;
                if open.reader.peek_non_whitespace()? == Some(b']') {
                    return Err(data_error(
                        &self.files[file_index],
                        open.reader.newlines + 1,
                        "the JSON array is empty: it has no rows",
                    ));
                }
                self.read_array_element(file_index, chunk)
            }
            Mode::ArrayNext => self.read_array_element(file_index, chunk),
            Mode::Done => Ok(false),
        }
    }

    fn read_array_element(&mut self, file_index: usize, chunk: &mut RawChunk) -> Result<bool> {
        let dataset = self.dataset_of_file[file_index];
        let file = &self.files[file_index];
        let open = self.current.as_mut().expect("a file is open");
        let reader = &mut open.reader;
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
        let value = {
            let mut deserializer = serde_json::Deserializer::from_reader(&mut *reader);
            Value::deserialize(&mut deserializer)
        };
        let value = value.map_err(|error| {
            data_error(
                file,
                line + error.line().saturating_sub(1) as u64,
                format!("malformed JSON: {}", json_message(&error)),
            )
        })?;
        let Value::Object(map) = value else {
            return Err(data_error(
                file,
                line,
                format!("row is a JSON {}, expected an object", json_type(&value)),
            ));
        };
        open.rows += 1;
        if self.in_shard(dataset) {
            chunk.rows.push(RawRow {
                dataset,
                file: file_index,
                line,
                data: RowData::Parsed(map),
            });
        } else {
            chunk.rows_outside_shard += 1;
        }
        Ok(true)
    }
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
        assert_eq!(rows, [(2, "{\"a\":1}".into()), (4, "{\"a\":2}".into())]);
    }

    #[test]
    fn malformed_arrays_name_the_line() {
        let dir = tempfile::tempdir().unwrap();
        for (content, line, needle) in [
            (&b"[\n{\"a\": 1}\n{\"a\": 2}]"[..], 3, "expected `,`"),
            (b"[\n{\"a\": 1},\n3]", 3, "row is a JSON number"),
            (b"[\n{\"a\": }]", 2, "malformed JSON"),
            (b"[]", 1, "empty"),
            (b"[{\"a\": 1}", 1, "without `]`"),
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
