//! Fault injection against a scripted HTTP server on loopback.

use super::*;
use crate::dialogue::Message;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::sync::Arc;

/// What the scripted server does with the i-th request it receives.
#[derive(Clone)]
enum Script {
    Status(u16, &'static str),
    Ok(&'static str),
    Hang,
    Drop,
    /// 422 naming the field when the request has it, else a reply.
    RejectField(&'static str),
    /// 401 whose body echoes the request's headers (some proxies do).
    EchoHeaders,
    /// Replies with the JSON of the request's field (`null` when absent).
    EchoField(&'static str),
}

fn ok_body(text: &str) -> String {
    serde_json::json!({
        "choices": [{"message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 5, "completion_tokens": 2}
    })
    .to_string()
}

/// Serves `script` in order (the last entry repeats); returns the base URL and a counter.
fn serve(script: Vec<Script>) -> (String, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let count = Arc::new(AtomicUsize::new(0));
    let seen = count.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let i = seen.fetch_add(1, Ordering::SeqCst);
            let step = script[i.min(script.len() - 1)].clone();
            std::thread::spawn(move || {
                let mut reader = BufReader::new(stream.try_clone().unwrap());
                let mut len = 0;
                let mut headers = String::new();
                loop {
                    let mut line = String::new();
                    if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                        break;
                    }
                    headers.push_str(&line);
                    if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                        len = v.trim().parse().unwrap_or(0);
                    }
                }
                let mut body = vec![0; len];
                let _ = reader.read_exact(&mut body);
                let (status, text) = match step {
                    Script::Status(s, t) => (s, t.to_string()),
                    Script::Ok(t) => (200, ok_body(t)),
                    Script::Hang => {
                        std::thread::sleep(Duration::from_secs(5));
                        return;
                    }
                    Script::Drop => return,
                    Script::EchoHeaders => (401, format!("unauthorized; you sent: {headers}")),
                    Script::EchoField(f) => {
                        let req: serde_json::Value =
                            serde_json::from_slice(&body).unwrap_or_default();
                        (200, ok_body(&req[f].to_string()))
                    }
                    Script::RejectField(f) => {
                        let body = String::from_utf8_lossy(&body).to_string();
                        if body.contains(&format!("\"{f}\"")) {
                            (422, format!("{{\"detail\":\"Unexpected fields in the request: {{'{f}'}}\"}}"))
                        } else {
                            (200, ok_body("fine"))
                        }
                    }
                };
                let _ = write!(
                    stream,
                    "HTTP/1.1 {status} X\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{text}",
                    text.len()
                );
            });
        }
    });
    (url, count)
}

fn backend(url: &str) -> HttpBackend {
    let mut o = HttpOptions::new(url, "test-model");
    o.timeout = Duration::from_millis(800);
    o.backoff = Duration::from_millis(10);
    o.max_retries = 3;
    o.in_flight = 2;
    // The scripted server counts every connection; the liveness check has its own test.
    o.liveness_timeout = None;
    HttpBackend::new(o)
}

fn one_request() -> Vec<Request> {
    vec![Request::new(vec![Message::user("hi")], 1)]
}

#[test]
fn retries_429_and_5xx_then_succeeds() {
    let (url, count) = serve(vec![
        Script::Status(429, "{}"),
        Script::Status(503, "{}"),
        Script::Drop,
        Script::Ok("hello"),
    ]);
    let out = backend(&url)
        .generate(&one_request(), &SamplingParams::greedy(8))
        .unwrap();
    assert_eq!(out[0][0].text, "hello");
    assert_eq!(out[0][0].completion_tokens, 2);
    assert_eq!(count.load(Ordering::SeqCst), 4);
}

#[test]
fn other_4xx_is_a_clear_error_without_retry() {
    let (url, count) = serve(vec![Script::Status(404, r#"{"error": "model not found"}"#)]);
    let e = backend(&url)
        .generate(&one_request(), &SamplingParams::greedy(8))
        .unwrap_err()
        .to_string();
    assert!(e.contains("404") && e.contains("model not found"), "{e}");
    assert_eq!(count.load(Ordering::SeqCst), 1);
}

#[test]
fn garbage_json_is_a_clear_error() {
    let (url, _) = serve(vec![Script::Status(200, "<html>oops</html>")]);
    let e = backend(&url)
        .generate(&one_request(), &SamplingParams::greedy(8))
        .unwrap_err()
        .to_string();
    assert!(e.contains("not JSON"), "{e}");
}

#[test]
fn a_hanging_server_times_out_and_gives_up() {
    let (url, count) = serve(vec![Script::Hang]);
    let start = std::time::Instant::now();
    let e = backend(&url)
        .generate(&one_request(), &SamplingParams::greedy(8))
        .unwrap_err()
        .to_string();
    assert!(e.contains("gave up after 4 attempts"), "{e}");
    assert_eq!(count.load(Ordering::SeqCst), 4);
    assert!(start.elapsed() < Duration::from_secs(10));
}

#[test]
fn many_requests_keep_their_order() {
    let (url, _) = serve(vec![Script::Ok("same")]);
    let reqs: Vec<Request> = (0..7)
        .map(|i| Request::new(vec![Message::user(format!("q{i}"))], i))
        .collect();
    let mut p = SamplingParams::greedy(8);
    p.n = 2;
    let out = backend(&url).generate(&reqs, &p).unwrap();
    assert_eq!(out.len(), 7);
    assert!(out.iter().all(|c| c.len() == 2));
}

#[test]
fn a_strict_server_refusing_an_extension_field_is_retried_without_it() {
    let (url, count) = serve(vec![Script::RejectField("repetition_penalty")]);
    let b = backend(&url);
    let params = SamplingParams {
        repetition_penalty: 1.1,
        ..SamplingParams::default()
    };
    let r = b.generate(&one_request(), &params).unwrap();
    assert_eq!(r[0][0].text, "fine");
    assert_eq!(count.load(Ordering::SeqCst), 2);
    // Later requests leave it out from the start.
    b.generate(&one_request(), &params).unwrap();
    assert_eq!(count.load(Ordering::SeqCst), 3);
    // Other client errors stay errors.
    let (url, _) = serve(vec![Script::Status(422, "{\"detail\":\"bad messages\"}")]);
    assert!(backend(&url).generate(&one_request(), &params).is_err());
}

#[test]
fn secrets_never_reach_messages_or_descriptions() {
    let (url, _) = serve(vec![Script::EchoHeaders]);
    // The same server, addressed with credentials in the URL and a key in the query.
    let with_creds = url.replace("http://", "http://alice:hunter2@") + "/v1?api_key=qwerty";
    let mut o = HttpOptions::new(with_creds, "test-model");
    o.api_key = Some("sk-very-secret".into());
    o.max_retries = 0;
    o.liveness_timeout = None;
    let b = HttpBackend::new(o);
    let shown = b.describe();
    let e = b
        .generate(&one_request(), &SamplingParams::greedy(8))
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("401") && e.contains("Bearer ***"),
        "the echo is shown, scrubbed: {e}"
    );
    for secret in ["sk-very-secret", "hunter2", "alice", "qwerty"] {
        assert!(!e.contains(secret), "{secret} in the error: {e}");
        assert!(!shown.contains(secret), "{secret} in describe(): {shown}");
    }
}

#[test]
fn urls_lose_their_credentials() {
    let cases = [
        ("http://h:8000/v1", "http://h:8000/v1", vec![]),
        ("https://u:p@h/v1", "https://***@h/v1", vec!["u:p", "p"]),
        ("http://tok@h", "http://***@h", vec!["tok"]),
        (
            "http://h/v1?x=1&API_KEY=k1#f",
            "http://h/v1?x=1&API_KEY=***#f",
            vec!["k1"],
        ),
    ];
    for (url, shown, secrets) in cases {
        let (s, found) = redact_url(url);
        assert_eq!(s, shown, "{url}");
        assert_eq!(found, secrets, "{url}");
    }
}

#[test]
fn a_server_that_never_answers_is_noticed_by_the_liveness_check() {
    let (url, count) = serve(vec![Script::Hang]);
    let mut o = HttpOptions::new(url, "test-model");
    o.liveness_timeout = Some(Duration::from_millis(300));
    let start = std::time::Instant::now();
    let b = HttpBackend::new(o);
    let e = b
        .generate(&one_request(), &SamplingParams::greedy(8))
        .unwrap_err()
        .to_string();
    assert!(e.contains("did not answer"), "{e}");
    // One check, no completion request, well within the 120 s request timeout.
    assert_eq!(count.load(Ordering::SeqCst), 1);
    assert!(start.elapsed() < Duration::from_secs(5));
    // A server that answers anything (here 404) is alive: requests go out.
    let (url, count) = serve(vec![Script::Status(404, "no such route"), Script::Ok("hi")]);
    let mut o = HttpOptions::new(url, "test-model");
    o.liveness_timeout = Some(Duration::from_secs(5));
    let out = HttpBackend::new(o)
        .generate(&one_request(), &SamplingParams::greedy(8))
        .unwrap();
    assert_eq!(out[0][0].text, "hi");
    assert_eq!(count.load(Ordering::SeqCst), 2);
}

#[test]
fn template_arguments_are_sent_as_chat_template_kwargs() {
    let (url, _) = serve(vec![Script::EchoField("chat_template_kwargs")]);
    let params = SamplingParams::default();
    let r = backend(&url).generate(&one_request(), &params).unwrap();
    assert_eq!(r[0][0].text, "null", "not sent when there are none");
    let mut o = HttpOptions::new(&url, "test-model");
    o.chat_template_kwargs = [("enable_thinking".to_string(), serde_json::json!(false))]
        .into_iter()
        .collect();
    let r = HttpBackend::new(o)
        .generate(&one_request(), &params)
        .unwrap();
    assert_eq!(r[0][0].text, r#"{"enable_thinking":false}"#);
}

/// llama.cpp's servers read the penalty as `repeat_penalty` only (and
/// `llama-cpp-python`'s applies 1.1 when it is missing); the others read
/// `repetition_penalty`.
#[test]
fn the_repetition_penalty_reaches_llama_cpp_under_its_own_name() {
    let echo = |field, params: &SamplingParams| {
        let (url, _) = serve(vec![Script::EchoField(field)]);
        let r = backend(&url).generate(&one_request(), params).unwrap();
        serde_json::from_str::<serde_json::Value>(&r[0][0].text).unwrap()
    };
    let penalized = SamplingParams {
        repetition_penalty: 1.3,
        ..SamplingParams::default()
    };
    let want = serde_json::json!(f64::from(1.3f32));
    assert_eq!(echo("repetition_penalty", &penalized), want);
    assert_eq!(echo("repeat_penalty", &penalized), want);
    // No penalty: said explicitly to llama.cpp, left out for the rest.
    let greedy = SamplingParams::greedy(8);
    assert_eq!(echo("repeat_penalty", &greedy), serde_json::json!(1.0));
    assert_eq!(echo("repetition_penalty", &greedy), serde_json::Value::Null);
}

/// A strict server (`transformers serve`) refuses both names; the request goes through
/// without them, and later requests leave them out from the start.
#[test]
fn a_strict_server_refusing_both_penalty_names_gets_neither() {
    let (url, count) = serve(vec![Script::RejectField("repeat_penalty")]);
    let b = backend(&url);
    let r = b
        .generate(&one_request(), &SamplingParams::greedy(8))
        .unwrap();
    assert_eq!(r[0][0].text, "fine");
    assert_eq!(count.load(Ordering::SeqCst), 2);
    b.generate(&one_request(), &SamplingParams::greedy(8))
        .unwrap();
    assert_eq!(count.load(Ordering::SeqCst), 3);
    assert_eq!(*b.dropped.lock().unwrap(), vec!["repeat_penalty"]);
}

/// A server that answers each request after `20 + seed % 5 * 15` ms with the text
/// `seed S, N messages`, and records how many requests were in flight as each arrived.
fn serve_slowly() -> (String, Arc<Mutex<Vec<usize>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let arrivals = Arc::new(Mutex::new(Vec::new()));
    let seen = Arc::clone(&arrivals);
    let in_flight = Arc::new(AtomicUsize::new(0));
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let (seen, in_flight) = (Arc::clone(&seen), Arc::clone(&in_flight));
            std::thread::spawn(move || {
                let mut reader = BufReader::new(stream.try_clone().unwrap());
                let mut len = 0;
                loop {
                    let mut line = String::new();
                    if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                        break;
                    }
                    if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                        len = v.trim().parse().unwrap_or(0);
                    }
                }
                let mut body = vec![0; len];
                let _ = reader.read_exact(&mut body);
                let now = in_flight.fetch_add(1, Ordering::SeqCst);
                seen.lock().unwrap().push(now);
                let req: serde_json::Value = serde_json::from_slice(&body).unwrap();
                let seed = req["seed"].as_u64().unwrap();
                let n = req["messages"].as_array().unwrap().len();
                std::thread::sleep(Duration::from_millis(20 + seed % 5 * 15));
                let text = ok_body(&format!("seed {seed}, {n} messages"));
                in_flight.fetch_sub(1, Ordering::SeqCst);
                let _ = write!(
                    stream,
                    "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{text}",
                    text.len()
                );
            });
        }
    });
    (url, arrivals)
}

/// Dialogues of `turns` turns; each next turn is ready once the previous reply is in.
struct Dialogues {
    messages: Vec<Vec<Message>>,
    turns: usize,
    ready: std::collections::VecDeque<usize>,
    tickets: Vec<usize>,
    replies: Vec<Vec<String>>,
    /// Per request handed out: requests in flight then, and dialogues not finished.
    handed_at: Vec<(usize, usize)>,
    answered: usize,
}

impl Feed for Dialogues {
    fn next(&mut self) -> Option<(Request, SamplingParams)> {
        let i = self.ready.pop_front()?;
        let unfinished = self.replies.iter().filter(|r| r.len() < self.turns).count();
        self.handed_at
            .push((self.tickets.len() - self.answered, unfinished));
        self.messages[i].push(Message::user(format!("dialogue {i}")));
        self.tickets.push(i);
        let turn = self.replies[i].len() as u64;
        let request = Request::new(self.messages[i].clone(), i as u64 * 10 + turn);
        Some((request, SamplingParams::greedy(8)))
    }

    fn done(&mut self, ticket: usize, replies: Vec<Reply>) -> Result<()> {
        let i = self.tickets[ticket];
        self.answered += 1;
        self.messages[i].push(Message::assistant(replies[0].text.clone()));
        self.replies[i].push(replies[0].text.clone());
        if self.replies[i].len() < self.turns {
            self.ready.push_back(i);
        }
        Ok(())
    }
}

/// `generate_each` keeps the in-flight window full across turns: each answer's slot goes
/// at once to the next ready turn (never waiting for the other requests of its turn), at
/// most 3 requests reach the server at once, and every dialogue's turns arrive in order
/// with its earlier replies.
#[test]
fn the_in_flight_window_stays_full_across_turns() {
    let (url, arrivals) = serve_slowly();
    let mut o = HttpOptions::new(&url, "test-model");
    (o.in_flight, o.liveness_timeout) = (3, None);
    let b = HttpBackend::new(o);
    let (dialogues, turns) = (7, 4);
    let mut feed = Dialogues {
        messages: vec![Vec::new(); dialogues],
        turns,
        ready: (0..dialogues).collect(),
        tickets: Vec::new(),
        replies: vec![Vec::new(); dialogues],
        handed_at: Vec::new(),
        answered: 0,
    };
    b.generate_each(&mut feed).unwrap();
    // The window filled at the start; then every request went out with the other two
    // still in flight, until fewer than 3 dialogues were left.
    let at = &feed.handed_at;
    assert_eq!(at[..3], [(0, 7), (1, 7), (2, 7)]);
    assert!(
        at[3..].iter().all(|&(n, left)| n == 2 || left < 3),
        "{at:?}"
    );
    for (i, replies) in feed.replies.iter().enumerate() {
        let want: Vec<String> = (0..turns)
            .map(|t| {
                let seed = candidate_seed((i * 10 + t) as u64, 0);
                format!("seed {seed}, {} messages", 2 * t + 1)
            })
            .collect();
        assert_eq!(replies, &want, "dialogue {i}");
    }
    let arrivals = arrivals.lock().unwrap();
    assert_eq!(arrivals.len(), dialogues * turns);
    assert!(
        arrivals.iter().all(|&n| n < 3),
        "at most 3 in flight: {arrivals:?}"
    );
}
