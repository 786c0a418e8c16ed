use proptest::prelude::*;

use super::*;

fn meta_for(dir: &Path, contents: &StoreContents, dtype: TokenDtype) -> StoreMeta {
    StoreMeta {
        format_version: FORMAT_VERSION,
        data_version: DATA_VERSION,
        axr_version: crate::VERSION.into(),
        split: "train".into(),
        fingerprint: "0".repeat(32),
        tokenizer_hash: "0".repeat(32),
        token_dtype: dtype,
        vocab_size: if dtype == TokenDtype::Uint16 { 1 << 16 } else { 1 << 20 },
        samples: contents.samples,
        tokens: contents.tokens,
        trainable_tokens: contents.trainable_tokens,
        longest: contents.longest,
        shards: contents.shards.clone(),
        counts: RunCounts::default(),
        doctor: None,
        source_files: Vec::new(),
        options: serde_json::json!({"dir": dir}),
    }
}

fn sample_strategy() -> impl Strategy<Value = Vec<(Vec<u32>, Vec<bool>)>> {
    prop::collection::vec(
        prop::collection::vec((0u32..70_000, any::<bool>()), 0..40).prop_map(|pairs| pairs.into_iter().unzip()),
        0..30,
    )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    #[test]
    fn round_trip(samples in sample_strategy(), shard_tokens in 1u64..100, wide in any::<bool>()) {
        let dtype = if wide { TokenDtype::Uint32 } else { TokenDtype::Uint16 };
        let samples: Vec<(Vec<u32>, Vec<bool>)> = samples
            .into_iter()
            .map(|(ids, flags)| (ids.into_iter().map(|id| if wide { id } else { id % 65_536 }).collect(), flags))
            .collect();
        let dir = tempfile::tempdir().unwrap();
        let store = dir.path().join("store");
        let mut writer = StoreWriter::create(&store, dtype, shard_tokens).unwrap();
        for (ids, flags) in &samples {
            writer.push(ids, flags).unwrap();
        }
        let contents = writer.finish().unwrap();
        meta_for(&store, &contents, dtype).write(&store).unwrap();

        let reader = StoreReader::open(&store).unwrap();
        prop_assert_eq!(reader.len(), samples.len() as u64);
        let lengths: Vec<u64> = samples.iter().map(|(ids, _)| ids.len() as u64).collect();
        prop_assert_eq!(reader.lengths(), lengths);
        for (index, (ids, flags)) in samples.iter().enumerate() {
            let (read_ids, read_flags) = reader.read(index as u64).unwrap();
            prop_assert_eq!(&read_ids, ids);
            prop_assert_eq!(&read_flags, flags);
        }
        prop_assert_eq!(contents.trainable_tokens, samples.iter().flat_map(|(_, f)| f).filter(|&&f| f).count() as u64);
        // A shard passes its token budget only when one sample alone is longer.
        for shard in &contents.shards {
            prop_assert!(shard.tokens_count <= shard_tokens || shard.samples == 1);
        }
    }
}

#[test]
fn a_truncated_file_is_a_format_error() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    let mut writer = StoreWriter::create(&store, TokenDtype::Uint16, 1 << 20).unwrap();
    writer.push(&[1, 2, 3], &[false, true, true]).unwrap();
    let contents = writer.finish().unwrap();
    meta_for(&store, &contents, TokenDtype::Uint16).write(&store).unwrap();
    fs_err::write(store.join("tokens-00000.bin"), [1u8, 0]).unwrap();
    let error = StoreReader::open(&store).err().unwrap().to_string();
    assert!(
        error.contains("tokens-00000.bin") && error.contains("expected 6 bytes"),
        "{error}"
    );
}

#[test]
fn fingerprints_follow_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (dir.path().join("a"), dir.path().join("b"));
    fs_err::write(&a, "same").unwrap();
    fs_err::write(&b, "same").unwrap();
    let hash = |path: &Path| {
        let mut hasher = Fingerprinter::new();
        hasher.add("x", b"1");
        hasher.add_file(path, |_| true).unwrap();
        hasher.hex()
    };
    assert_eq!(hash(&a), hash(&b));
    fs_err::write(&b, "samE").unwrap();
    assert_ne!(hash(&a), hash(&b));
}
