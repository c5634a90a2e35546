//! `gatt synth --judge-endpoint` end to end against a local OpenAI-compatible server: the
//! judge's verdicts choose the kept candidates.

mod common;

use common::{gatt, read_json, read_jsonl, stderr, tempdir};

/// An OpenAI-compatible server for `gatt synth --endpoint` and `--judge-endpoint`: the
/// k-th request with a given conversation gets "Candidate {k mod 3} answers ..."; a
/// judge's question gets "Yes." when it is about "Candidate 2", "No." otherwise.
fn candidates_server() -> String {
    let seen = std::sync::Mutex::new(std::collections::HashMap::<String, usize>::new());
    common::chat_server(move |req| {
        let messages = &req["messages"];
        let first = messages[0]["content"].as_str().unwrap_or("");
        if first.starts_with("You are a strict evaluator") {
            let q = messages[1]["content"].as_str().unwrap_or("");
            let yes = q.contains("Assistant: Candidate 2 answers");
            return if yes { "Yes." } else { "No." }.to_string();
        }
        let mut seen = seen.lock().unwrap();
        let k = seen.entry(messages.to_string()).or_default();
        *k += 1;
        format!(
            "Candidate {} answers the question with some care.",
            (*k - 1) % 3
        )
    })
}

/// `--judge-endpoint` end to end: the judge's verdicts choose the kept replies (without
/// it the first candidate is kept) and are counted in run.json and report.md.
#[test]
fn synth_keeps_the_candidates_the_judge_endpoint_says_yes_to() {
    let url = candidates_server();
    let dir = tempdir();
    let run = |name: &str, judge: &[&str]| {
        let out = dir.path().join(name);
        let mut args = vec![
            "synth",
            "--out",
            out.to_str().unwrap(),
            "--endpoint",
            &url,
            "--api-model",
            "m",
            // One request at a time: the k-th of a conversation is its candidate k.
            "--in-flight",
            "1",
            "--dialogues",
            "2",
            "--turns",
            "2",
            "--candidates",
            "3",
            "--constraints",
            "figure",
            "--format",
            "jsonl",
        ];
        args.extend_from_slice(judge);
        let o = gatt(&args);
        assert!(o.status.success(), "{}", stderr(&o));
        let kept: Vec<String> = read_jsonl(out.join("dialogues.jsonl"))
            .iter()
            .flat_map(|r| r["messages"].as_array().unwrap().clone())
            .filter(|m| m["role"] == "assistant")
            .map(|m| m["content"].as_str().unwrap()[..11].to_string())
            .collect();
        (kept, read_json(out.join("run.json")), out)
    };
    let (kept, manifest, _) = run("plain", &[]);
    assert_eq!(kept, vec!["Candidate 0"; 4]);
    assert_eq!(manifest["gate"]["judge"]["questions"], 0);
    let (kept, manifest, out) = run(
        "judged",
        &["--judge-endpoint", &url, "--judge-api-model", "j"],
    );
    assert_eq!(kept, vec!["Candidate 2"; 4]);
    // 2 dialogues x 2 turns x 3 candidates, one figure each.
    let j = &manifest["gate"]["judge"];
    assert_eq!(
        [
            &j["candidates_judged"],
            &j["candidates_rejected"],
            &j["yes"],
            &j["no"],
            &j["picks_changed"]
        ],
        [12, 8, 4, 8, 4]
    );
    assert!(
        manifest["fingerprint"]["judge"]
            .as_str()
            .unwrap()
            .starts_with("j ("),
        "{manifest}"
    );
    let report = std::fs::read_to_string(out.join("report.md")).unwrap();
    assert!(
        report.contains("12 candidates judged, 8 rejected"),
        "{report}"
    );
}
