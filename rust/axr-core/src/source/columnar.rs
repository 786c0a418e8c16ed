//! Parquet files and Arrow IPC files (what `datasets` `save_to_disk` writes) → rows as JSON
//! objects, one record batch at a time. String columns are taken from the Arrow arrays directly;
//! only other types go through arrow-json, one column at a time, so every value reads as it would
//! from the file written as JSON lines. Null values are left out of a row, so they read as
//! missing keys.

use std::io::{BufReader, Read};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use arrow_array::cast::AsArray;
use arrow_array::{GenericStringArray, RecordBatch, StringViewArray};
use arrow_ipc::reader::{FileReader, StreamReader};
use arrow_json::writer::{EncoderOptions, NullableEncoder, make_encoder};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use serde_json::{Map, Value};

use crate::error::{Error, Result};

/// Rows per parquet batch; a pipeline chunk holds one batch or more.
const PARQUET_BATCH_ROWS: usize = 1024;
const ARROW_FILE_MAGIC: &[u8] = b"ARROW1";

type Batches = Box<dyn Iterator<Item = Result<RecordBatch, String>> + Send>;

/// Counts the bytes read through it, for progress while an Arrow reader owns the file.
struct Counted<R> {
    inner: R,
    bytes: Arc<AtomicU64>,
}

impl<R: Read> Read for Counted<R> {
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        let read = self.inner.read(out)?;
        self.bytes.fetch_add(read as u64, Ordering::Relaxed);
        Ok(read)
    }
}

/// The record batches of one parquet or Arrow file.
pub(super) struct BatchRows {
    batches: Batches,
    size: u64,
    /// Parquet: rows in the file (progress is the share of rows done).
    rows_total: Option<u64>,
    /// Arrow: bytes read so far.
    bytes_read: Option<Arc<AtomicU64>>,
    rows_done: u64,
}

fn format_error(path: &Path, error: impl std::fmt::Display) -> Error {
    Error::Data {
        path: path.to_path_buf(),
        line: 0,
        field: "-".into(),
        message: format!("cannot read the file: {error}"),
    }
}

thread_local! {
    static IN_GUARD: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// The default panic hook prints every panic to stderr, caught or not: a caught one in `guarded`
/// becomes the data error naming the file, and printing it too would show users a Rust panic
/// message for a damaged input. Panics anywhere else go to the hook that was installed before.
fn quiet_panics_in_guard() {
    static INSTALL: std::sync::Once = std::sync::Once::new();
    INSTALL.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if !IN_GUARD.with(std::cell::Cell::get) {
                previous(info);
            }
        }));
    });
}

/// Runs `work`, turning a panic into an error message: arrow and parquet panic on some damaged
/// files (out-of-range buffer slices) instead of returning an error, and a damaged input must be
/// a data error naming the file, never a crash.
fn guarded<T>(work: impl FnOnce() -> T) -> Result<T, String> {
    quiet_panics_in_guard();
    IN_GUARD.with(|flag| flag.set(true));
    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(work));
    IN_GUARD.with(|flag| flag.set(false));
    outcome.map_err(|panic| {
        let detail = panic
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| panic.downcast_ref::<&str>().copied())
            .unwrap_or("no detail");
        format!("the file is damaged ({detail})")
    })
}

impl BatchRows {
    /// Open a parquet file.
    pub(super) fn parquet(path: &Path) -> Result<Self> {
        let file = fs_err::File::open(path)?;
        let size = file.metadata()?.len();
        let builder = guarded(|| ParquetRecordBatchReaderBuilder::try_new(file.into_parts().0))
            .map_err(|message| format_error(path, message))?
            .map_err(|error| format_error(path, error))?;
        let rows_total = u64::try_from(builder.metadata().file_metadata().num_rows()).ok();
        let reader = guarded(|| builder.with_batch_size(PARQUET_BATCH_ROWS).build())
            .map_err(|message| format_error(path, message))?
            .map_err(|error| format_error(path, error))?;
        Ok(Self {
            batches: Box::new(reader.map(|batch| batch.map_err(|error| error.to_string()))),
            size,
            rows_total,
            bytes_read: None,
            rows_done: 0,
        })
    }

    /// Open an Arrow IPC file: the stream format `datasets` writes, or the file format.
    pub(super) fn arrow(path: &Path) -> Result<Self> {
        let mut file = fs_err::File::open(path)?;
        let size = file.metadata()?.len();
        let mut magic = [0u8; 6];
        let is_file_format = file.read_exact(&mut magic).is_ok() && magic == ARROW_FILE_MAGIC;
        let bytes = Arc::new(AtomicU64::new(0));
        let batches: Batches = if is_file_format {
            // The file format needs seeking to its footer; it is read whole, so progress counts it at the end.
            let file = fs_err::File::open(path)?.into_parts().0;
            let reader = guarded(|| FileReader::try_new(file, None))
                .map_err(|message| format_error(path, message))?
                .map_err(|error| format_error(path, error))?;
            Box::new(reader.map(|batch| batch.map_err(|error| error.to_string())))
        } else {
            let counted = Counted {
                inner: fs_err::File::open(path)?.into_parts().0,
                bytes: Arc::clone(&bytes),
            };
            let reader = guarded(|| StreamReader::try_new(BufReader::with_capacity(1 << 20, counted), None))
                .map_err(|message| format_error(path, message))?
                .map_err(|error| format_error(path, error))?;
            Box::new(reader.map(|batch| batch.map_err(|error| error.to_string())))
        };
        Ok(Self {
            batches,
            size,
            rows_total: None,
            bytes_read: Some(bytes),
            rows_done: 0,
        })
    }

    /// Bytes of the file accounted as read.
    pub(super) fn bytes_done(&self) -> u64 {
        match (&self.bytes_read, self.rows_total) {
            (Some(bytes), _) => bytes.load(Ordering::Relaxed).min(self.size),
            (None, Some(total)) if total > 0 => (self.size as f64 * self.rows_done as f64 / total as f64) as u64,
            _ => 0,
        }
    }

    /// The next batch's rows, each a JSON object as the formatters take it, and about how many
    /// bytes of text they hold; `None` after the last batch. An error names the row it is about.
    pub(super) fn next_rows(&mut self) -> Result<Option<RowsAndBytes>, RowError> {
        let first_row = self.rows_done + 1;
        let Some(batch) = guarded(|| self.batches.next()).map_err(|message| (first_row, message))? else {
            return Ok(None);
        };
        let batch = batch.map_err(|message| (first_row, message))?;
        let rows = guarded(|| batch_rows(&batch, first_row)).map_err(|message| (first_row, message))??;
        self.rows_done += rows.0.len() as u64;
        Ok(Some(rows))
    }
}

/// A batch's rows as JSON objects, and the bytes of text they hold.
type RowsAndBytes = (Vec<Map<String, Value>>, usize);
/// The row (1-based) an error is about, and the message.
type RowError = (u64, String);

/// How one column's values become JSON values.
enum Column<'a> {
    /// Strings are taken from the array as they are: no JSON text in between.
    Utf8(&'a GenericStringArray<i32>),
    LargeUtf8(&'a GenericStringArray<i64>),
    Utf8View(&'a StringViewArray),
    /// Any other type (numbers, lists of structs such as `messages`, dates) is written by
    /// arrow-json, one value at a time, and parsed back: the values arrow-json gives a whole
    /// record batch, for this column only.
    Encoded(NullableEncoder<'a>),
}

/// The rows of `batch` as JSON objects; a null value is left out of its row, as arrow-json does.
fn batch_rows(batch: &RecordBatch, first_row: u64) -> Result<RowsAndBytes, RowError> {
    let schema = batch.schema();
    let options = EncoderOptions::default();
    let mut columns = Vec::with_capacity(batch.num_columns());
    for (field, array) in schema.fields().iter().zip(batch.columns()) {
        let column = if let Some(strings) = array.as_string_opt::<i32>() {
            Column::Utf8(strings)
        } else if let Some(strings) = array.as_string_opt::<i64>() {
            Column::LargeUtf8(strings)
        } else if let Some(strings) = array.as_string_view_opt() {
            Column::Utf8View(strings)
        } else {
            Column::Encoded(
                make_encoder(field, array.as_ref(), &options).map_err(|error| (first_row, error.to_string()))?,
            )
        };
        columns.push((field.name(), array.as_ref(), column));
    }
    let mut rows = Vec::with_capacity(batch.num_rows());
    let mut text_bytes = 0;
    let mut encoded = Vec::new();
    for index in 0..batch.num_rows() {
        let mut row = Map::new();
        for (name, array, column) in &mut columns {
            let null = match column {
                Column::Encoded(values) => values.is_null(index),
                _ => array.is_null(index),
            };
            if null {
                continue;
            }
            let value = match column {
                Column::Utf8(strings) => text(strings.value(index), &mut text_bytes),
                Column::LargeUtf8(strings) => text(strings.value(index), &mut text_bytes),
                Column::Utf8View(strings) => text(strings.value(index), &mut text_bytes),
                Column::Encoded(values) => {
                    encoded.clear();
                    values.encode(index, &mut encoded);
                    text_bytes += encoded.len();
                    serde_json::from_slice(&encoded).map_err(|error| {
                        (
                            first_row + index as u64,
                            format!("column `{name}`: arrow-json wrote a value serde_json cannot read: {error}"),
                        )
                    })?
                }
            };
            row.insert((*name).clone(), value);
        }
        rows.push(row);
    }
    Ok((rows, text_bytes))
}

fn text(value: &str, bytes: &mut usize) -> Value {
    *bytes += value.len();
    Value::String(value.to_owned())
}
