//! `path` / `data_files` / `ds_type` / `split` of one dataset → an ordered list of local files.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::options::SourceOptions;

/// How a file's rows are read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileKind {
    /// JSON lines, or one JSON array of objects (told apart by the first byte).
    Json,
    /// Plain text: every line is a row `{"text": line}`.
    Text,
    /// A parquet file.
    Parquet,
    /// An Arrow IPC file (stream or file format), as `datasets` `save_to_disk` writes.
    Arrow,
}

/// One input file of a dataset.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceFile {
    /// The file.
    pub path: PathBuf,
    /// How to read it.
    pub kind: FileKind,
    /// Its size in bytes when resolved (for progress).
    pub size: u64,
}

const REMOTE_PREFIXES: [&str; 8] = [
    "http://", "https://", "s3://", "gs://", "gcs://", "hf://", "az://", "abfs://",
];
const LOADER_NAMES: [&str; 6] = ["json", "jsonl", "text", "parquet", "arrow", "csv"];

/// HF `datasets` infers a file's split from these words at the start of a path component.
const SPLIT_WORDS: [(&str, &[&str]); 3] = [
    ("train", &["train", "training"]),
    ("validation", &["validation", "valid", "val", "dev"]),
    ("test", &["test", "testing", "eval", "evaluation"]),
];

fn config_error(key: &str, field: &str, message: String) -> Error {
    Error::Config {
        key: format!("{key}.{field}"),
        message,
    }
}

fn canonical_split(name: &str) -> String {
    let lower = name.to_ascii_lowercase();
    for (canonical, words) in SPLIT_WORDS {
        if words.contains(&lower.as_str()) {
            return canonical.to_string();
        }
    }
    lower
}

/// The split a path component names, e.g. `train-00000-of-00002.jsonl` → `train`.
fn split_of_component(component: &str) -> Option<&'static str> {
    let lower = component.to_ascii_lowercase();
    for (canonical, words) in SPLIT_WORDS {
        for word in words {
            if let Some(rest) = lower.strip_prefix(word)
                && rest.chars().next().is_none_or(|c| "-._ 0123456789".contains(c))
            {
                return Some(canonical);
            }
        }
    }
    None
}

fn split_of(relative: &Path) -> Option<&'static str> {
    relative
        .components()
        .filter_map(|component| component.as_os_str().to_str())
        .find_map(split_of_component)
}

fn extension_of(path: &Path) -> String {
    path.file_name()
        .and_then(|name| name.to_str())
        .map_or_else(String::new, |name| {
            let lower = name.to_ascii_lowercase();
            lower
                .rsplit_once('.')
                .map(|(_, ext)| ext.to_string())
                .unwrap_or_default()
        })
}

fn unsupported_file(key: &str, path: &Path, what: &str) -> Error {
    config_error(
        key,
        "path",
        format!(
            "{}: {what} input is not supported yet; convert it to JSON lines (for example with pandas: \
             pd.read_csv(file).to_json(out, orient=\"records\", lines=True)) and point `path` at the .jsonl file",
            path.display()
        ),
    )
}

/// Checks a file's extension against the dataset's kind; `None` when a directory walk should ignore it.
fn file_kind(key: &str, path: &Path, kind: FileKind, explicit: bool) -> Result<Option<FileKind>> {
    match extension_of(path).as_str() {
        "parquet" => Ok(Some(FileKind::Parquet)),
        "arrow" => Ok(Some(FileKind::Arrow)),
        "csv" | "tsv" => Err(unsupported_file(key, path, "CSV")),
        "gz" | "zst" | "bz2" | "xz" | "zip" => Err(unsupported_file(key, path, "compressed")),
        "json" | "jsonl" | "ndjson" if kind == FileKind::Json => Ok(Some(kind)),
        "txt" | "text" if kind == FileKind::Text => Ok(Some(kind)),
        _ if explicit => Ok(Some(kind)),
        _ => Ok(None),
    }
}

fn kind_of(key: &str, ds_type: Option<&str>) -> Result<FileKind> {
    match ds_type.map(str::to_ascii_lowercase).as_deref() {
        None | Some("json" | "jsonl") => Ok(FileKind::Json),
        Some("text") => Ok(FileKind::Text),
        Some("parquet") => Ok(FileKind::Parquet),
        Some("arrow") => Ok(FileKind::Arrow),
        Some(other @ "csv") => Err(config_error(
            key,
            "ds_type",
            format!("ds_type `{other}` is not supported yet; convert the data to JSON lines (ds_type json)"),
        )),
        Some(other) => Err(config_error(
            key,
            "ds_type",
            format!("unknown ds_type `{other}`; use json, text, parquet or arrow"),
        )),
    }
}

fn has_glob(pattern: &str) -> bool {
    pattern.contains(['*', '?', '['])
}

fn expand_glob(key: &str, field: &str, pattern: &str) -> Result<Vec<PathBuf>> {
    let paths =
        glob::glob(pattern).map_err(|error| config_error(key, field, format!("bad glob `{pattern}`: {error}")))?;
    let mut found = Vec::new();
    for entry in paths {
        found.push(entry.map_err(|error| Error::Io(error.into()))?);
    }
    found.sort();
    if found.is_empty() {
        return Err(config_error(key, field, format!("no file matches `{pattern}`")));
    }
    Ok(found)
}

/// What a directory walk has seen: real (canonical) directories on the current descent and
/// real files already listed, so a symlink loop or a second link to a file reads nothing twice.
#[derive(Default)]
struct Walk {
    ancestors: Vec<PathBuf>,
    files: HashSet<PathBuf>,
}

fn walk(dir: &Path, state: &mut Walk, out: &mut Vec<PathBuf>, warnings: &mut Vec<String>) -> Result<()> {
    let real = fs_err::canonicalize(dir)?;
    if state.ancestors.contains(&real) {
        warnings.push(format!(
            "{} is a symlink loop (it leads back to {}); not followed",
            dir.display(),
            real.display()
        ));
        return Ok(());
    }
    state.ancestors.push(real);
    let mut entries = fs_err::read_dir(dir)?
        .map(|entry| entry.map(|entry| entry.path()))
        .collect::<Result<Vec<_>, _>>()?;
    entries.sort();
    for path in entries {
        if path
            .file_name()
            .and_then(|name| name.to_str())
            .is_some_and(|name| name.starts_with('.'))
        {
            continue;
        }
        if path.is_dir() {
            walk(&path, state, out, warnings)?;
        } else if path.is_file() {
            let real = fs_err::canonicalize(&path)?;
            if state.files.insert(real.clone()) {
                out.push(path);
            } else {
                warnings.push(format!(
                    "{} is another link to {}, already read; read once",
                    path.display(),
                    real.display()
                ));
            }
        } else if path.is_symlink() {
            warnings.push(format!("{} is a dangling symlink; skipped", path.display()));
        }
    }
    state.ancestors.pop();
    Ok(())
}

fn looks_like_hub_id(path: &str) -> bool {
    let parts: Vec<&str> = path.split('/').collect();
    parts.len() == 2 && parts.iter().all(|part| !part.is_empty() && !part.starts_with('.')) && !path.contains('\\')
}

fn remote_error(key: &str, path: &str) -> Error {
    // The Python layer fetches hub ids and remote URLs into local caches before the native reader
    // runs, so reaching here means the core was called directly with an unfetched name.
    config_error(
        key,
        "path",
        format!(
            "`{path}` is not a local file or folder; the native reader reads local files only (`axr \
             preprocess` and `axr train` fetch hub datasets and s3://, gs://, https:// paths into a local cache \
             first)"
        ),
    )
}

/// Files of a directory for the requested split, by HF's naming rules.
fn select_split(key: &str, dir: &Path, files: Vec<PathBuf>, split: &str) -> Result<Vec<PathBuf>> {
    let named: Vec<(PathBuf, Option<&str>)> = files
        .into_iter()
        .map(|path| {
            let split_name = split_of(path.strip_prefix(dir).unwrap_or(&path));
            (path, split_name)
        })
        .collect();
    if named.iter().all(|(_, split_name)| split_name.is_none()) {
        if split == "train" {
            return Ok(named.into_iter().map(|(path, _)| path).collect());
        }
        return Err(config_error(
            key,
            "split",
            format!(
                "{} has no files named for split `{split}`; its files are all split `train`",
                dir.display()
            ),
        ));
    }
    let chosen: Vec<PathBuf> = named
        .iter()
        .filter(|(_, split_name)| *split_name == Some(split))
        .map(|(path, _)| path.clone())
        .collect();
    if chosen.is_empty() {
        let mut found: Vec<&str> = named.iter().filter_map(|(_, split_name)| *split_name).collect();
        found.sort_unstable();
        found.dedup();
        return Err(config_error(
            key,
            "split",
            format!(
                "{} has no files for split `{split}`; it has: {}",
                dir.display(),
                found.join(", ")
            ),
        ));
    }
    Ok(chosen)
}

fn read_json(path: &Path) -> Result<serde_json::Value> {
    serde_json::from_str(&fs_err::read_to_string(path)?).map_err(|error| Error::Format {
        path: path.to_path_buf(),
        message: format!("not valid JSON: {error}"),
    })
}

/// The Arrow files of a `datasets` `save_to_disk` folder, for the split: a `Dataset` folder
/// (`state.json` lists its files) or a `DatasetDict` folder (`dataset_dict.json`, one folder
/// per split). `None` when `dir` is neither.
fn saved_dataset_files(key: &str, dir: &Path, split: &str) -> Result<Option<Vec<PathBuf>>> {
    let dict = dir.join("dataset_dict.json");
    if dict.is_file() {
        let splits: Vec<String> = read_json(&dict)?
            .get("splits")
            .and_then(serde_json::Value::as_array)
            .map(|names| {
                names
                    .iter()
                    .filter_map(|name| name.as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default();
        let chosen = splits
            .iter()
            .find(|name| name.as_str() == split)
            .or_else(|| splits.iter().find(|name| canonical_split(name) == split))
            .ok_or_else(|| {
                config_error(
                    key,
                    "split",
                    format!(
                        "{} has no split `{split}`; it has: {}",
                        dir.display(),
                        splits.join(", ")
                    ),
                )
            })?;
        let files = saved_dataset_files(key, &dir.join(chosen), "train")?;
        return files.map(Some).ok_or_else(|| Error::Format {
            path: dir.join(chosen),
            message: "not a datasets save_to_disk folder (no state.json)".into(),
        });
    }
    let state = dir.join("state.json");
    if !state.is_file() {
        return Ok(None);
    }
    if split != "train" {
        return Err(config_error(
            key,
            "split",
            format!("{} is one saved split; `{split}` is not available", dir.display()),
        ));
    }
    let listed = read_json(&state)?;
    let names: Vec<&str> = listed
        .get("_data_files")
        .and_then(serde_json::Value::as_array)
        .map(|files| {
            files
                .iter()
                .filter_map(|file| file.get("filename").and_then(serde_json::Value::as_str))
                .collect()
        })
        .unwrap_or_default();
    if names.is_empty() {
        return Err(Error::Format {
            path: state,
            message: "lists no `_data_files`".into(),
        });
    }
    Ok(Some(names.into_iter().map(|name| dir.join(name)).collect()))
}

/// The files a dataset names, before their kinds are checked.
fn gather(
    options: &SourceOptions,
    key: &str,
    path: &str,
    is_loader_name: bool,
    kind: FileKind,
    split: &str,
    warnings: &mut Vec<String>,
) -> Result<Vec<PathBuf>> {
    let mut files: Vec<PathBuf> = Vec::new();
    if !options.data_files.is_empty() {
        let base = if is_loader_name {
            None
        } else {
            Some(Path::new(path)).filter(|base| base.is_dir())
        };
        for pattern in &options.data_files {
            let joined = match base {
                Some(base) if Path::new(pattern).is_relative() => base.join(pattern),
                _ => PathBuf::from(pattern),
            };
            let text = joined.to_string_lossy().into_owned();
            if has_glob(&text) {
                files.extend(expand_glob(key, "data_files", &text)?);
            } else if joined.is_file() {
                files.push(joined);
            } else {
                return Err(config_error(
                    key,
                    "data_files",
                    format!("no such file: {}", joined.display()),
                ));
            }
        }
        if split != "train" {
            return Err(config_error(
                key,
                "split",
                format!("data_files are split `train`; `{split}` is not available"),
            ));
        }
    } else if is_loader_name {
        return Err(config_error(
            key,
            "data_files",
            format!("path `{path}` names a loader; list the files in data_files"),
        ));
    } else {
        let as_path = Path::new(path);
        if as_path.is_file() {
            if split != "train" {
                return Err(config_error(
                    key,
                    "split",
                    format!("{path} is one file, split `train`; `{split}` is not available"),
                ));
            }
            files.push(as_path.to_path_buf());
        } else if as_path.is_dir() {
            if let Some(saved) = saved_dataset_files(key, as_path, split)? {
                return Ok(saved);
            }
            let mut found = Vec::new();
            walk(as_path, &mut Walk::default(), &mut found, warnings)?;
            let mut data = Vec::new();
            for file in found {
                if file_kind(key, &file, kind, false)?.is_some() {
                    data.push(file);
                }
            }
            if data.is_empty() {
                return Err(config_error(
                    key,
                    "path",
                    format!("{path} holds no .jsonl/.json (or .txt for ds_type text) files"),
                ));
            }
            files = select_split(key, as_path, data, split)?;
        } else if has_glob(path) {
            files = expand_glob(key, "path", path)?;
            if split != "train" {
                return Err(config_error(
                    key,
                    "split",
                    format!("files of a glob are split `train`; `{split}` is not available"),
                ));
            }
        } else if looks_like_hub_id(path) {
            return Err(remote_error(key, path));
        } else {
            return Err(config_error(key, "path", format!("no such file or folder: {path}")));
        }
    }
    Ok(files)
}

/// Resolve one dataset's source keys to its files, in reading order. `key` names the entry in
/// messages (e.g. `datasets[1]`). Each real file is listed once, whatever links lead to it; what
/// was left out that way (a symlink loop, a second link to a file) is added to `warnings`.
pub fn resolve(options: &SourceOptions, key: &str, warnings: &mut Vec<String>) -> Result<Vec<SourceFile>> {
    let path = options.path.trim();
    if REMOTE_PREFIXES
        .iter()
        .any(|prefix| path.to_ascii_lowercase().starts_with(prefix))
    {
        return Err(remote_error(key, path));
    }
    let is_loader_name = LOADER_NAMES.contains(&path) && !Path::new(path).exists();
    let ds_type = options
        .ds_type
        .as_deref()
        .or(if is_loader_name { Some(path) } else { None });
    let kind = kind_of(key, ds_type)?;
    let split = canonical_split(options.split.as_deref().unwrap_or("train"));

    let files = gather(options, key, path, is_loader_name, kind, &split, warnings)?;

    let mut resolved = Vec::with_capacity(files.len());
    let mut seen = HashSet::new();
    for file in files {
        if file.is_dir() {
            continue;
        }
        let file_kind = file_kind(key, &file, kind, true)?.unwrap_or(kind);
        let size = fs_err::metadata(&file)?.len();
        if seen.insert(fs_err::canonicalize(&file)?) {
            resolved.push(SourceFile {
                path: file,
                kind: file_kind,
                size,
            });
        }
    }
    Ok(resolved)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn source(path: &str) -> SourceOptions {
        SourceOptions {
            path: path.into(),
            ds_type: None,
            data_files: vec![],
            split: None,
            shards: None,
            shards_idx: None,
            key: String::new(),
            origin: None,
        }
    }

    fn touch(path: &Path) {
        fs_err::create_dir_all(path.parent().unwrap()).unwrap();
        fs_err::write(path, "{}\n").unwrap();
    }

    #[test]
    fn directory_glob_and_data_files() {
        let dir = tempfile::tempdir().unwrap();
        for name in ["b.jsonl", "a.json", "sub/c.jsonl", "README.md"] {
            touch(&dir.path().join(name));
        }
        let root = dir.path().to_str().unwrap();
        let names = |files: Vec<SourceFile>| {
            files
                .iter()
                .map(|file| {
                    file.path
                        .strip_prefix(dir.path())
                        .unwrap()
                        .to_str()
                        .unwrap()
                        .to_string()
                })
                .collect::<Vec<_>>()
        };
        assert_eq!(
            names(resolve(&source(root), "d", &mut Vec::new()).unwrap()),
            ["a.json", "b.jsonl", "sub/c.jsonl"]
        );
        assert_eq!(
            names(resolve(&source(&format!("{root}/*.jsonl")), "d", &mut Vec::new()).unwrap()),
            ["b.jsonl"]
        );
        let mut with_files = source(root);
        with_files.data_files = vec!["sub/c.jsonl".into(), "a.json".into()];
        assert_eq!(
            names(resolve(&with_files, "d", &mut Vec::new()).unwrap()),
            ["sub/c.jsonl", "a.json"]
        );
    }

    #[test]
    fn splits_follow_file_names() {
        let dir = tempfile::tempdir().unwrap();
        for name in ["train-00000.jsonl", "train-00001.jsonl", "validation.jsonl"] {
            touch(&dir.path().join(name));
        }
        let mut options = source(dir.path().to_str().unwrap());
        assert_eq!(resolve(&options, "d", &mut Vec::new()).unwrap().len(), 2);
        options.split = Some("val".into());
        assert!(
            resolve(&options, "d", &mut Vec::new()).unwrap()[0]
                .path
                .ends_with("validation.jsonl")
        );
        options.split = Some("test".into());
        let error = resolve(&options, "d", &mut Vec::new()).unwrap_err().to_string();
        assert!(
            error.contains("split `test`") && error.contains("train, validation"),
            "{error}"
        );
    }

    #[test]
    fn remote_and_unsupported_inputs_are_clear_errors() {
        for path in ["https://example.com/data.jsonl", "tatsu-lab/alpaca", "s3://bucket/x"] {
            let error = resolve(&source(path), "datasets[0]", &mut Vec::new())
                .unwrap_err()
                .to_string();
            assert!(
                error.contains("datasets[0].path") && error.contains("reads local files only"),
                "{error}"
            );
        }
        let dir = tempfile::tempdir().unwrap();
        let csv = dir.path().join("x.csv");
        touch(&csv);
        let error = resolve(&source(csv.to_str().unwrap()), "d", &mut Vec::new())
            .unwrap_err()
            .to_string();
        assert!(
            error.contains("x.csv") && error.contains("not supported yet"),
            "{error}"
        );
        let error = resolve(&source("missing/file.jsonl/x"), "d", &mut Vec::new())
            .unwrap_err()
            .to_string();
        assert!(error.contains("no such file"), "{error}");
    }

    #[cfg(unix)]
    #[test]
    fn symlink_loops_and_second_links_are_read_once_with_a_warning() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("ds");
        touch(&root.join("data.jsonl"));
        fs_err::create_dir_all(root.join("sub")).unwrap();
        std::os::unix::fs::symlink("..", root.join("sub/up")).unwrap();
        std::os::unix::fs::symlink("../data.jsonl", root.join("sub/again.jsonl")).unwrap();
        let mut warnings = Vec::new();
        let files = resolve(&source(root.to_str().unwrap()), "d", &mut warnings).unwrap();
        assert_eq!(files.len(), 1, "{files:?}");
        assert!(files[0].path.ends_with("ds/data.jsonl"));
        assert_eq!(warnings.len(), 2, "{warnings:?}");
        assert!(
            warnings
                .iter()
                .any(|warning| warning.contains("sub/up") && warning.contains("symlink loop"))
        );
        assert!(warnings.iter().any(|warning| warning.contains("sub/again.jsonl")));

        // data_files naming one file twice (once through a link) read it once too.
        let mut listed = source(root.to_str().unwrap());
        listed.data_files = vec!["data.jsonl".into(), "sub/again.jsonl".into()];
        assert_eq!(resolve(&listed, "d", &mut Vec::new()).unwrap().len(), 1);
    }
}
