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
