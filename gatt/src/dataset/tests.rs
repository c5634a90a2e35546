use super::*;
use crate::dialogue::{Constraint, ConstraintKind, Message};

fn records() -> Vec<Dialogue> {
    let mut a = Dialogue::new(
        "a",
        vec![
            Message::system("Always answer in French."),
            Message::user("Salut 😀, ça va ?\nnouvelle ligne"),
            Message::assistant("Oui !"),
        ],
    );
    a.instruction = "Always answer in French.".into();
    a.constraints = vec![
        Constraint::new(ConstraintKind::Language, "French"),
        Constraint {
            kind: ConstraintKind::Format,
            value: "max_words".into(),
            param: Some("20".into()),
        },
    ];
    a.meta.seed = Some(7);
    a.meta
        .other
        .insert("source".into(), serde_json::json!({"n": [1, 2]}));
    let b = Dialogue::new(
        "b",
        vec![Message::user("日本語"), Message::assistant("はい")],
    );
    vec![a, b]
}

fn round_trip(format: Format) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(format!("d.{}", format.extension()));
    let mut w = DialogueWriter::create(&path, format).unwrap();
    for d in records() {
        w.write(&d).unwrap();
    }
    assert!(!path.exists(), "nothing appears before finish");
    w.finish().unwrap();
    assert_eq!(read_all(&path).unwrap(), records());
}

#[test]
fn jsonl_round_trip() {
    round_trip(Format::Jsonl);
}

#[test]
fn parquet_round_trip() {
    round_trip(Format::Parquet);
}

#[test]
fn unfinished_writer_leaves_no_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("d.parquet");
    {
        let mut w = DialogueWriter::create(&path, Format::Parquet).unwrap();
        w.write(&records()[0]).unwrap();
    }
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
}

#[test]
fn sharegpt_is_accepted() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.jsonl");
    std::fs::write(
        &path,
        r#"{"conversations": [{"from": "human", "value": "hi"}, {"from": "gpt", "value": "hello"}]}"#,
    )
    .unwrap();
    let d = &read_all(&path).unwrap()[0];
    assert_eq!(
        d.messages,
        vec![Message::user("hi"), Message::assistant("hello")]
    );
    assert_eq!(d.id, "row-1");
}

#[test]
fn a_sharegpt_system_field_is_the_system_message() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.jsonl");
    std::fs::write(
        &path,
        concat!(
            r#"{"system": "Answer in French.", "conversations": [{"from": "human", "value": "hi"}, {"from": "gpt", "value": "salut"}]}"#,
            "\n",
            r#"{"system": "", "conversations": [{"from": "human", "value": "hi"}, {"from": "gpt", "value": "hello"}]}"#,
            "\n",
            r#"{"id": "both", "system": "A", "conversations": [{"from": "system", "value": "B"}, {"from": "human", "value": "hi"}, {"from": "gpt", "value": "hello"}]}"#,
            "\n",
        ),
    )
    .unwrap();
    let results: Vec<_> = read_dialogues(&path).unwrap().collect();
    let (_, d) = results[0].as_ref().unwrap();
    assert_eq!(
        d.messages,
        vec![
            Message::system("Answer in French."),
            Message::user("hi"),
            Message::assistant("salut")
        ]
    );
    let (_, d) = results[1].as_ref().unwrap();
    assert_eq!(d.messages[0], Message::user("hi"));
    let e = results[2].as_ref().unwrap_err();
    assert!(e.is_input(), "{e}");
    let e = e.to_string();
    assert!(e.contains("s.jsonl:3") && e.contains("system"), "{e}");
}

/// The same from Parquet, as Hugging Face datasets store ShareGPT records
/// (`scripts/compat/make_sharegpt_parquet.py` wrote the file with pyarrow).
#[test]
fn a_sharegpt_system_column_is_the_system_message() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/fixtures/sharegpt_system.parquet");
    let all = read_all(&path).unwrap();
    assert_eq!(
        all[0].messages,
        vec![
            Message::system("Answer in French."),
            Message::user("hi"),
            Message::assistant("salut")
        ]
    );
    assert_eq!(all[1].messages[0], Message::user("hi"));
}

#[test]
fn a_record_with_messages_and_conversations_is_an_input_error() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("b.jsonl");
    std::fs::write(
        &path,
        concat!(
            r#"{"id": "ok", "messages": [{"role": "user", "content": "hi"}]}"#,
            "\n",
            r#"{"id": "twice", "messages": [{"role": "user", "content": "hi"}], "conversations": [{"from": "human", "value": "hello"}]}"#,
            "\n",
        ),
    )
    .unwrap();
    let results: Vec<_> = read_dialogues(&path).unwrap().collect();
    assert!(results[0].is_ok());
    let e = results[1].as_ref().unwrap_err();
    assert!(e.is_input(), "{e}");
    let e = e.to_string();
    assert!(e.contains("b.jsonl:2") && e.contains("twice"), "{e}");
    assert!(e.contains("both `messages` and `conversations`"), "{e}");
}

#[test]
fn errors_name_file_line_and_field() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.jsonl");
    std::fs::write(
        &path,
        "{\"id\": \"ok\", \"messages\": [{\"role\": \"user\", \"content\": \"hi\"}]}\n\n{\"id\": \"x\", \"messages\": [{\"role\": \"bot\", \"content\": \"hi\"}]}\n{not json\n",
    )
    .unwrap();
    let results: Vec<_> = read_dialogues(&path).unwrap().collect();
    assert!(results[0].is_ok());
    let e = results[1].as_ref().unwrap_err().to_string();
    assert!(e.contains("bad.jsonl:3"), "{e}");
    assert!(e.contains("messages[0].role"), "{e}");
    let e = results[2].as_ref().unwrap_err().to_string();
    assert!(
        e.contains("bad.jsonl:4") && e.contains("invalid JSON"),
        "{e}"
    );
}

#[test]
fn missing_file_is_an_input_error() {
    let e = read_all(Path::new("/nonexistent/x.jsonl")).unwrap_err();
    assert!(e.is_input());
    assert!(e.to_string().contains("/nonexistent/x.jsonl"));
}

#[test]
fn samples_round_trip_in_both_formats() {
    let samples = vec![
        MaskedSample {
            id: "a".into(),
            input_ids: vec![1, 2, 3],
            labels: vec![-100, 2, 3],
            attention_mask: vec![1, 1, 1],
        },
        MaskedSample {
            id: "a#2".into(),
            input_ids: vec![5],
            labels: vec![5],
            attention_mask: vec![1],
        },
    ];
    for format in [Format::Parquet, Format::Jsonl] {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(format!("m.{}", format.extension()));
        let mut w = SampleWriter::create(&path, format).unwrap();
        for s in &samples {
            w.write(s).unwrap();
        }
        w.finish().unwrap();
        assert_eq!(read_samples(&path).unwrap(), samples);
    }
}

#[test]
fn a_malformed_meta_key_names_the_record_and_field() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("d.jsonl");
    std::fs::write(
        &path,
        "{\"messages\": [{\"role\": \"user\", \"content\": \"hi\"}], \"meta\": {\"seed\": 1}}\n\
         {\"messages\": [{\"role\": \"user\", \"content\": \"hi\"}], \"meta\": {\"seed\": \"x\"}}\n",
    )
    .unwrap();
    let results: Vec<_> = read_dialogues(&path).unwrap().collect();
    assert_eq!(results[0].as_ref().unwrap().1.meta.seed, Some(1));
    let e = results[1].as_ref().unwrap_err();
    assert!(e.is_input());
    assert!(
        e.to_string().starts_with(&format!(
            "{}:2 (row 1): field `meta.seed`: ",
            path.display()
        )),
        "{e}"
    );

    // The same in Parquet, where `meta` is a JSON string: the row is named.
    let path = dir.path().join("d.parquet");
    let mut w = DialogueWriter::create(&path, Format::Parquet).unwrap();
    let mut bad = records()[1].clone();
    bad.meta
        .other
        .insert("terse".into(), serde_json::json!("yes"));
    for d in [records()[0].clone(), bad] {
        w.write(&d).unwrap();
    }
    w.finish().unwrap();
    let e = read_all(&path).unwrap_err();
    let loc = e.location().unwrap();
    assert_eq!((loc.row, loc.line), (Some(1), None));
    assert_eq!(loc.field.as_deref(), Some("meta.terse"));
    assert!(
        e.to_string()
            .starts_with(&format!("{}: row 1: field `meta.terse`: ", path.display())),
        "{e}"
    );
}

/// `n` distinct dialogue records, unlike enough to catch rows out of place.
fn many_records(n: usize) -> Vec<Dialogue> {
    (0..n)
        .map(|i| {
            let mut d = records()[i % 2].clone();
            d.id = format!("r{i}");
            d.messages[0].content = format!("{} #{i}", d.messages[0].content);
            d
        })
        .collect()
}

/// `n` distinct masked samples of various lengths.
fn many_samples(n: usize) -> Vec<MaskedSample> {
    (0..n)
        .map(|i| {
            let len = 1 + i % 5;
            let input_ids: Vec<u32> = (0..len as u32).map(|t| t + i as u32).collect();
            let labels = input_ids
                .iter()
                .enumerate()
                .map(|(j, t)| if j % 2 == 0 { -100 } else { i64::from(*t) })
                .collect();
            MaskedSample {
                id: format!("s{i}"),
                input_ids,
                labels,
                attention_mask: vec![1; len],
            }
        })
        .collect()
}

/// Row counts to try: none, one, two, and around a row group's end (a last row group of
/// one row).
fn row_counts() -> [usize; 6] {
    let chunk = parquet_out::CHUNK;
    [0, 1, 2, chunk - 1, chunk, chunk + 1]
}

/// Issue 16: a Parquet file of one row (or whose last row group has one row) panicked in
/// polars, writing or reading; every row count writes and reads back equal.
#[test]
fn dialogue_parquet_of_any_row_count_reads_back_equal() {
    let dir = tempfile::tempdir().unwrap();
    for n in row_counts() {
        let path = dir.path().join(format!("d{n}.parquet"));
        let want = many_records(n);
        let mut w = DialogueWriter::create(&path, Format::Parquet).unwrap();
        for d in &want {
            w.write(d).unwrap();
        }
        w.finish().unwrap();
        assert!(read_all(&path).unwrap() == want, "{n} rows differ");
    }
}

/// Issue 16, for masked samples (where the u8 attention mask made polars panic).
#[test]
fn sample_parquet_of_any_row_count_reads_back_equal() {
    let dir = tempfile::tempdir().unwrap();
    for n in row_counts() {
        let path = dir.path().join(format!("m{n}.parquet"));
        let want = many_samples(n);
        let mut w = SampleWriter::create(&path, Format::Parquet).unwrap();
        for s in &want {
            w.write(s).unwrap();
        }
        w.finish().unwrap();
        assert!(read_samples(&path).unwrap() == want, "{n} rows differ");
    }
}

/// The Arrow schema `path` stores for readers (its `ARROW:schema` key), as stored: not
/// converted to the types polars reads into, as `infer_schema` does.
fn stored_schema(path: &Path) -> polars_arrow::datatypes::ArrowSchema {
    stored_schema_and_metadata(path).0
}

/// The stored Arrow schema of `path` and that schema's own metadata (what pyarrow reads
/// as the file's metadata).
fn stored_schema_and_metadata(
    path: &Path,
) -> (
    polars_arrow::datatypes::ArrowSchema,
    Option<polars_arrow::datatypes::Metadata>,
) {
    use base64::Engine as _;
    let mut f = std::fs::File::open(path).unwrap();
    let meta = polars_parquet::read::read_metadata(&mut f).unwrap();
    let pairs = meta.key_value_metadata().clone().unwrap_or_default();
    let encoded = pairs
        .iter()
        .find(|kv| kv.key == "ARROW:schema")
        .and_then(|kv| kv.value.clone())
        .expect("an ARROW:schema key");
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(encoded)
        .unwrap();
    // A legacy IPC message: a continuation marker and a length, then the schema.
    let message = if bytes[..4] == [255; 4] {
        &bytes[8..]
    } else {
        &bytes[..]
    };
    let (schema, _, metadata) = polars_arrow::io::ipc::read::deserialize_schema(message).unwrap();
    (schema, metadata)
}

/// Each column's name and stored Arrow type.
fn stored_types(path: &Path) -> Vec<(String, polars_arrow::datatypes::ArrowDataType)> {
    stored_schema(path)
        .iter_values()
        .map(|f| (f.name.to_string(), f.dtype.clone()))
        .collect()
}

/// Whether `dtype` or a type inside it is one `datasets` 4.0 and older or pyarrow's
/// `Table.filter` do not take.
fn has_view_or_large(dtype: &polars_arrow::datatypes::ArrowDataType) -> bool {
    use polars_arrow::datatypes::ArrowDataType as D;
    match dtype {
        D::Utf8View | D::BinaryView | D::LargeUtf8 | D::LargeBinary | D::LargeList(_) => true,
        D::List(f) | D::FixedSizeList(f, _) | D::Map(f, _) => has_view_or_large(&f.dtype),
        D::Struct(fields) => fields.iter().any(|f| has_view_or_large(&f.dtype)),
        _ => false,
    }
}

/// Issue 17: files store `string` and `list` (32-bit offsets), not polars' `string_view`
/// and `large_list`, in every column, with rows or without.
#[test]
fn parquet_files_store_string_and_list_types() {
    use polars_arrow::datatypes::{ArrowDataType as D, Field};
    let list = |item: D| D::List(Box::new(Field::new("item".into(), item, true)));
    let texts = |names: &[&str]| {
        D::Struct(
            names
                .iter()
                .map(|n| Field::new((*n).into(), D::Utf8, true))
                .collect(),
        )
    };
    let dialogue_types = vec![
        ("id".to_string(), D::Utf8),
        ("messages".into(), list(texts(&["role", "content"]))),
        ("instruction".into(), D::Utf8),
        (
            "constraints".into(),
            list(texts(&["kind", "value", "param"])),
        ),
        ("meta".into(), D::Utf8),
    ];
    let sample_types = vec![
        ("id".to_string(), D::Utf8),
        ("input_ids".into(), list(D::UInt32)),
        ("labels".into(), list(D::Int64)),
        ("attention_mask".into(), list(D::UInt8)),
        ("n_tokens".into(), D::UInt32),
        ("n_loss_tokens".into(), D::UInt32),
    ];
    let dir = tempfile::tempdir().unwrap();
    for n in [0, 3] {
        let path = dir.path().join(format!("d{n}.parquet"));
        let mut w = DialogueWriter::create(&path, Format::Parquet).unwrap();
        for d in many_records(n) {
            w.write(&d).unwrap();
        }
        w.finish().unwrap();
        let types = stored_types(&path);
        assert!(
            !types.iter().any(|(_, t)| has_view_or_large(t)),
            "{types:?}"
        );
        assert_eq!(types, dialogue_types);

        let path = dir.path().join(format!("m{n}.parquet"));
        let mut w = SampleWriter::create(&path, Format::Parquet).unwrap();
        for s in many_samples(n) {
            w.write(&s).unwrap();
        }
        w.finish().unwrap();
        let types = stored_types(&path);
        assert!(
            !types.iter().any(|(_, t)| has_view_or_large(t)),
            "{types:?}"
        );
        assert_eq!(types, sample_types);
    }
}

/// Files written before issue 17 (polars' writer: `string_view`, `large_list`) are still
/// read, dialogues and samples (the u8 attention mask included).
#[test]
fn files_with_view_and_large_types_are_still_read() {
    use polars::prelude::*;
    let dir = tempfile::tempdir().unwrap();

    // Dialogues, as the old writer made them: JSON rows through polars' JSON reader.
    let message = DataType::Struct(vec![
        polars::prelude::Field::new("role".into(), DataType::String),
        polars::prelude::Field::new("content".into(), DataType::String),
    ]);
    let constraint = DataType::Struct(vec![
        polars::prelude::Field::new("kind".into(), DataType::String),
        polars::prelude::Field::new("value".into(), DataType::String),
        polars::prelude::Field::new("param".into(), DataType::String),
    ]);
    let schema = Schema::from_iter([
        polars::prelude::Field::new("id".into(), DataType::String),
        polars::prelude::Field::new("messages".into(), DataType::List(Box::new(message))),
        polars::prelude::Field::new("instruction".into(), DataType::String),
        polars::prelude::Field::new("constraints".into(), DataType::List(Box::new(constraint))),
        polars::prelude::Field::new("meta".into(), DataType::String),
    ]);
    let mut json = String::new();
    for d in records() {
        let mut row = serde_json::to_value(&d).unwrap();
        row["meta"] = serde_json::Value::String(serde_json::to_string(&d.meta).unwrap());
        json += &format!("{row}\n");
    }
    let mut df = JsonReader::new(std::io::Cursor::new(json))
        .with_json_format(JsonFormat::JsonLines)
        .with_schema(Arc::new(schema))
        .finish()
        .unwrap();
    let path = dir.path().join("old_d.parquet");
    ParquetWriter::new(std::fs::File::create(&path).unwrap())
        .finish(&mut df)
        .unwrap();
    let types = stored_types(&path);
    assert!(types.iter().any(|(_, t)| has_view_or_large(t)), "{types:?}");
    assert_eq!(read_all(&path).unwrap(), records());

    // Samples, as the old writer made them: u32, i64 and u8 lists.
    let mut ids =
        ListPrimitiveChunkedBuilder::<UInt32Type>::new("input_ids".into(), 2, 4, DataType::UInt32);
    let mut labels =
        ListPrimitiveChunkedBuilder::<Int64Type>::new("labels".into(), 2, 4, DataType::Int64);
    let mut mask = ListPrimitiveChunkedBuilder::<UInt8Type>::new(
        "attention_mask".into(),
        2,
        4,
        DataType::UInt8,
    );
    let want = many_samples(2);
    for s in &want {
        ids.append_slice(&s.input_ids);
        labels.append_slice(&s.labels);
        mask.append_slice(&s.attention_mask);
    }
    let mut df = DataFrame::new(
        2,
        vec![
            Column::new("id".into(), ["s0", "s1"]),
            ids.finish().into_column(),
            labels.finish().into_column(),
            mask.finish().into_column(),
        ],
    )
    .unwrap();
    let path = dir.path().join("old_m.parquet");
    ParquetWriter::new(std::fs::File::create(&path).unwrap())
        .finish(&mut df)
        .unwrap();
    let types = stored_types(&path);
    assert!(types.iter().any(|(_, t)| has_view_or_large(t)), "{types:?}");
    assert_eq!(read_samples(&path).unwrap(), want);
}

/// A dialogue file from elsewhere, `rows` records: `id` and `messages`, then
/// `instruction` as bytes (`instructions`), and columns no record is made of, of types
/// polars' frames cannot hold one row of (lists of u8) or at all (u8).
fn foreign_dialogues(path: &Path, rows: usize, instructions: &[&[u8]]) {
    use polars_arrow::array::Utf8ViewArray;
    use polars_arrow::array::{Array, BinaryViewArray, ListArray, PrimitiveArray, StructArray};
    use polars_arrow::datatypes::{ArrowDataType as D, Field};
    use polars_arrow::offset::OffsetsBuffer;
    let list_of = |item: D| D::List(Box::new(Field::new("item".into(), item, true)));
    let message = D::Struct(vec![
        Field::new("role".into(), D::Utf8View, true),
        Field::new("content".into(), D::Utf8View, true),
    ]);
    let ids: Vec<String> = (0..rows).map(|i| format!("f{i}")).collect();
    let roles = Utf8ViewArray::from_slice_values(vec!["user"; rows]).boxed();
    let contents = Utf8ViewArray::from_slice_values(vec!["hi"; rows]).boxed();
    let messages = StructArray::new(message.clone(), rows, vec![roles, contents], None).boxed();
    let one_each =
        || OffsetsBuffer::<i32>::try_from((0..=rows as i32).collect::<Vec<_>>()).unwrap();
    let fields = vec![
        Field::new("id".into(), D::Utf8View, true),
        Field::new("messages".into(), list_of(message.clone()), true),
        Field::new("instruction".into(), D::BinaryView, true),
        Field::new("scores".into(), list_of(D::UInt8), true),
        Field::new("flag".into(), D::UInt8, true),
    ];
    let columns: Vec<Box<dyn Array>> = vec![
        Utf8ViewArray::from_slice_values(&ids).boxed(),
        ListArray::<i32>::new(list_of(message), one_each(), messages, None).boxed(),
        BinaryViewArray::from_slice_values(instructions).boxed(),
        ListArray::<i32>::new(
            list_of(D::UInt8),
            one_each(),
            PrimitiveArray::from_vec(vec![7u8; rows]).boxed(),
            None,
        )
        .boxed(),
        PrimitiveArray::from_vec(vec![1u8; rows]).boxed(),
    ];
    parquet_out::write_columns(path, fields, rows, columns).unwrap();
}

/// Issue 16, in reading: a dialogue file of one row whose other columns are lists of u8
/// made polars panic; only the record columns are read now, as Arrow arrays.
#[test]
fn other_columns_of_any_type_do_not_stop_a_one_row_file() {
    let dir = tempfile::tempdir().unwrap();
    for rows in [1, 2] {
        let path = dir.path().join(format!("f{rows}.parquet"));
        foreign_dialogues(&path, rows, &vec![b"Be brief.".as_slice(); rows]);
        let got = read_all(&path).unwrap();
        assert_eq!(got.len(), rows);
        assert_eq!(got[0].id, "f0");
        assert_eq!(got[0].messages, vec![Message::user("hi")]);
        assert_eq!(got[0].instruction, "Be brief.");
    }
}

/// A value with no JSON form (bytes that are not UTF-8) refuses its record, at its row
/// and field; the records around it are read.
#[test]
fn a_value_that_cannot_be_read_refuses_only_its_record() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("f.parquet");
    foreign_dialogues(&path, 3, &[b"ok", b"\xff\xfe", b"ok"]);
    let results: Vec<_> = read_dialogues(&path).unwrap().collect();
    assert_eq!(results.len(), 3);
    assert!(results[0].is_ok() && results[2].is_ok());
    let e = results[1].as_ref().unwrap_err();
    assert!(e.is_input());
    let loc = e.location().unwrap();
    assert_eq!(
        (loc.row, loc.field.as_deref()),
        (Some(1), Some("instruction"))
    );
    assert!(e.to_string().contains("not UTF-8"), "{e}");
}

#[test]
fn sample_files_carry_the_tokenizer_stamp_in_parquet_only() {
    let stamp = TokenizerStamp {
        vocab_sha256: "ab".repeat(32),
        vocab_size: 49152,
    };
    let sample = MaskedSample {
        id: "a".into(),
        input_ids: vec![1, 2],
        labels: vec![-100, 2],
        attention_mask: vec![1, 1],
    };
    let dir = tempfile::tempdir().unwrap();
    for (name, stamped) in [("s.parquet", true), ("u.parquet", false), ("s.jsonl", true)] {
        let path = dir.path().join(name);
        let mut w = SampleWriter::create(&path, Format::from_path(&path).unwrap()).unwrap();
        if stamped {
            w.stamp(&stamp);
        }
        w.write(&sample).unwrap();
        w.finish().unwrap();
        let want = (name == "s.parquet").then(|| stamp.clone());
        assert_eq!(read_stamp(&path).unwrap(), want, "{name}");
        // The stamp changes nothing else: the samples read back the same.
        assert_eq!(
            read_samples(&path).unwrap(),
            std::slice::from_ref(&sample),
            "{name}"
        );
    }
    // The stored Arrow schema holds the stamp too (pyarrow and `datasets` read a file's
    // metadata from there alone, and keep it when they write the file again), and its
    // columns are those of an unstamped file.
    let (schema, metadata) = stored_schema_and_metadata(&dir.path().join("s.parquet"));
    let json = serde_json::to_string(&stamp).unwrap();
    let got = metadata.unwrap_or_default();
    assert_eq!(
        got.get(TOKENIZER_KEY).map(|v| v.as_str()),
        Some(json.as_str())
    );
    let (plain, none) = stored_schema_and_metadata(&dir.path().join("u.parquet"));
    assert_eq!(schema, plain);
    assert!(none.unwrap_or_default().is_empty());
    // Another vocabulary is refused with both sizes; the same one passes.
    let path = dir.path().join("s.parquet");
    stamp.check_against(&stamp, &path).unwrap();
    let other = TokenizerStamp {
        vocab_sha256: "cd".repeat(32),
        vocab_size: 32000,
    };
    let shouted = TokenizerStamp {
        vocab_sha256: stamp.vocab_sha256.to_uppercase(),
        ..stamp.clone()
    };
    shouted.check_against(&stamp, &path).unwrap();
    // A stamp spoiled by hand is refused, saying what it should hold.
    let spoiled = dir.path().join("spoiled.parquet");
    let bytes = std::fs::read(&path).unwrap();
    let at = bytes
        .windows(14)
        .position(|w| w == b"\"vocab_sha256\"")
        .expect("the stamp in the footer");
    let mut bytes = bytes;
    bytes[at + 1..at + 13].copy_from_slice(b"vocab_sha25X");
    std::fs::write(&spoiled, bytes).unwrap();
    let e = read_stamp(&spoiled).unwrap_err();
    assert!(e.is_input(), "{e}");
    assert!(
        e.to_string().contains("not readable")
            && e.to_string().contains("mask the dialogues again"),
        "{e}"
    );
    let e = stamp.check_against(&other, &path).unwrap_err();
    assert!(e.is_input());
    assert!(
        e.to_string().contains("49152 tokens") && e.to_string().contains("32000"),
        "{e}"
    );
}
