//! An OpenAI-compatible `/v1/chat/completions` client: N requests in flight, timeouts,
//! and retries with exponential backoff and jitter on 429, 5xx and dropped connections.

use super::{candidate_seed, ChatBackend, Feed, Reply, Request, SamplingParams};
use crate::error::{Error, Result};
use rand::{Rng, SeedableRng};
use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::time::Duration;

/// Where the server is and how hard to push it.
#[derive(Debug, Clone)]
pub struct HttpOptions {
    /// Base URL, e.g. `http://127.0.0.1:8000` (with or without `/v1`).
    pub endpoint: String,
    /// The `model` field of each request.
    pub model: String,
    /// The API key's value (read from the environment variable the user names).
    pub api_key: Option<String>,
    /// Requests sent concurrently (one thread each); 0 counts as 1.
    pub in_flight: usize,
    /// Longest a request may take, connection to last byte (a whole reply, generated
    /// without streaming); a timed-out request is retried.
    pub timeout: Duration,
    /// Retries after the first attempt, on timeouts, dropped connections, 429 and 5xx.
    pub max_retries: u32,
    /// First backoff delay; doubles with each retry.
    pub backoff: Duration,
    /// Longest wait for a connection to the server.
    pub connect_timeout: Duration,
    /// Before the first request, check that the server answers at all (`GET
    /// {base}/v1/models`, any HTTP status counts), waiting at most this long: a server
    /// that accepts connections but never answers is then reported in seconds, not
    /// after `timeout` x retries. `None` skips the check.
    pub liveness_timeout: Option<Duration>,
    /// Keyword arguments of the server's chat template, sent as `chat_template_kwargs`
    /// (vLLM, SGLang and llama.cpp's server read it) when not empty.
    pub chat_template_kwargs: crate::template::TemplateArgs,
}

impl HttpOptions {
    /// Requests in flight of [`HttpOptions::new`].
    pub const DEFAULT_IN_FLIGHT: usize = 8;
    /// Time a request may take before it is abandoned (and retried), in
    /// [`HttpOptions::new`].
    pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(120);
    /// Longest wait for a connection, in [`HttpOptions::new`].
    pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
    /// Longest wait for the liveness check's answer, in [`HttpOptions::new`].
    pub const DEFAULT_LIVENESS_TIMEOUT: Duration = Duration::from_secs(15);

    /// Options for `model` at `endpoint`, with the default limits: no API key,
    /// [`HttpOptions::DEFAULT_IN_FLIGHT`] requests in flight,
    /// [`HttpOptions::DEFAULT_TIMEOUT`], 5 retries from a 500 ms backoff.
    pub fn new(endpoint: impl Into<String>, model: impl Into<String>) -> Self {
        HttpOptions {
            endpoint: endpoint.into(),
            model: model.into(),
            api_key: None,
            in_flight: Self::DEFAULT_IN_FLIGHT,
            timeout: Self::DEFAULT_TIMEOUT,
            max_retries: 5,
            backoff: Duration::from_millis(500),
            connect_timeout: Self::DEFAULT_CONNECT_TIMEOUT,
            liveness_timeout: Some(Self::DEFAULT_LIVENESS_TIMEOUT),
            chat_template_kwargs: Default::default(),
        }
    }
}

/// A [`ChatBackend`] over an OpenAI-compatible `/v1/chat/completions` endpoint (vLLM,
/// SGLang, TGI, llama.cpp's server, `transformers serve`).
///
/// The server applies the model's chat template. Each candidate is its own request
/// with its own `seed`, so candidates repeat only on servers that honour seeds. A 400 or
/// 422 that names `top_k`, `repetition_penalty` or `repeat_penalty` drops that field
/// (with a warning, unless its value was the neutral 1.0) and retries; other error
/// statuses are input errors, and retries that run out a runtime error.
///
/// The repetition penalty goes out under two names: `repetition_penalty` (vLLM, SGLang,
/// TGI) when it is not 1.0, and `repeat_penalty` (llama.cpp's server and
/// `llama-cpp-python`'s, which ignore `repetition_penalty` without a word) always, since
/// `llama-cpp-python` applies 1.1 when it is missing.
pub struct HttpBackend {
    opts: HttpOptions,
    url: String,
    /// `url` as shown in messages, `describe` and every file: credentials redacted.
    shown: String,
    /// Texts never to show: the API key, and credentials written in the URL.
    secrets: Vec<String>,
    /// `GET {base}/v1/models`, the liveness check's URL.
    models_url: String,
    /// The liveness check's outcome, once made.
    alive: std::sync::OnceLock<std::result::Result<(), String>>,
    agent: ureq::Agent,
    /// Sampling fields beyond OpenAI's own that the server refused; left out from then on.
    dropped: Mutex<Vec<&'static str>>,
}

/// Fields many servers (vLLM, SGLang, TGI, llama.cpp) accept beyond OpenAI's schema;
/// strict servers (e.g. `transformers serve`) refuse them with a 4xx naming the field.
/// `repeat_penalty` is llama.cpp's name for `repetition_penalty`.
const EXTENSION_FIELDS: [&str; 3] = ["top_k", "repetition_penalty", "repeat_penalty"];

impl HttpBackend {
    /// A client for `opts.endpoint`; nothing is sent until the first request.
    pub fn new(opts: HttpOptions) -> Self {
        let base = opts.endpoint.trim_end_matches('/');
        // Paths go before a query (`?api-version=...`); a fragment is never sent.
        let base = base.split('#').next().unwrap_or_default();
        let (base, query) = match base.split_once('?') {
            Some((b, q)) => (b.trim_end_matches('/'), format!("?{q}")),
            None => (base, String::new()),
        };
        let v1 = if base.ends_with("/v1") {
            base.to_string()
        } else {
            format!("{base}/v1")
        };
        let url = format!("{v1}/chat/completions{query}");
        let config = ureq::Agent::config_builder()
            .timeout_global(Some(opts.timeout))
            .timeout_connect(Some(opts.connect_timeout))
            .http_status_as_error(false)
            .build();
        let (shown, mut secrets) = redact_url(&url);
        secrets.extend(opts.api_key.iter().cloned());
        // Replacing a very short "secret" would garble every message it occurs in.
        secrets.retain(|s| s.len() >= MIN_SCRUBBED_LEN);
        HttpBackend {
            agent: ureq::Agent::new_with_config(config),
            url,
            shown,
            secrets,
            models_url: format!("{v1}/models{query}"),
            alive: std::sync::OnceLock::new(),
            opts,
            dropped: Mutex::new(Vec::new()),
        }
    }

    /// One completion, retried on transient failures.
    fn complete(&self, req: &Request, params: &SamplingParams, seed: u64) -> Result<Reply> {
        let mut body = serde_json::json!({
            "model": self.opts.model,
            "messages": req.messages,
            "max_tokens": params.max_new_tokens,
            "temperature": params.temperature,
            "seed": seed,
        });
        if let Some(p) = params.top_p {
            body["top_p"] = p.into();
        }
        if let Some(k) = params.top_k {
            body["top_k"] = k.into();
        }
        if !self.opts.chat_template_kwargs.is_empty() {
            body["chat_template_kwargs"] = serde_json::json!(self.opts.chat_template_kwargs);
        }
        let penalty = f64::from(params.repetition_penalty);
        if params.repetition_penalty != 1.0 {
            body["repetition_penalty"] = penalty.into();
        }
        // llama.cpp's servers read only this name, and `llama-cpp-python`'s applies 1.1
        // when it is missing: sent even at 1.0 so that "no penalty" means none there too.
        body["repeat_penalty"] = penalty.into();
        // Stream: HttpRetry (parent: this candidate's seed): the backoff jitter.
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(crate::seed::derive(
            seed,
            crate::seed::Stream::HttpRetry,
            0,
        ));
        let mut attempt = 0;
        loop {
            for f in self.dropped.lock().expect("dropped fields").iter() {
                if let Some(m) = body.as_object_mut() {
                    m.remove(*f);
                }
            }
            let outcome = self.send(&body);
            match outcome {
                Ok(reply) => return Ok(reply),
                Err(Attempt::Fatal(e)) => return Err(e),
                // A strict server refusing an extension field: go on without it.
                Err(Attempt::Refused { error, body: text }) => {
                    match EXTENSION_FIELDS
                        .into_iter()
                        .find(|f| body.get(*f).is_some() && text.contains(f))
                    {
                        Some(f) => {
                            // Leaving out a neutral value changes nothing worth a warning.
                            let neutral = body.get(f).and_then(|v| v.as_f64()) == Some(1.0);
                            self.drop_field(f, !neutral)
                        }
                        None => return Err(error),
                    }
                }
                Err(Attempt::Retry(why)) if attempt >= self.opts.max_retries => {
                    return Err(Error::runtime(self.scrub(&format!(
                        "{}: gave up after {} attempts: {why}",
                        self.shown,
                        attempt + 1
                    ))))
                }
                Err(Attempt::Retry(_)) => {
                    let base = self.opts.backoff.as_secs_f64() * 2f64.powi(attempt as i32);
                    let jitter = rng.random_range(0.5..1.5);
                    std::thread::sleep(Duration::from_secs_f64(base * jitter));
                    attempt += 1;
                }
            }
        }
    }

    /// The liveness check ([`HttpOptions::liveness_timeout`]), made once.
    fn check_alive(&self) -> Result<()> {
        let Some(wait) = self.opts.liveness_timeout else {
            return Ok(());
        };
        let outcome = self.alive.get_or_init(|| {
            let mut r = self
                .agent
                .get(&self.models_url)
                .config()
                .timeout_global(Some(wait))
                .build();
            if let Some(key) = &self.opts.api_key {
                r = r.header("Authorization", format!("Bearer {key}"));
            }
            match r.call() {
                Ok(_) => Ok(()),
                Err(ureq::Error::Timeout(_)) => Err(format!(
                    "the server accepts connections but did not answer a request for its \
                     models within {wait:?}; is it still starting, or stuck?"
                )),
                Err(e) => Err(format!("cannot reach the server: {e}")),
            }
        });
        outcome
            .clone()
            .map_err(|why| Error::runtime(self.scrub(&format!("{}: {why}", self.shown))))
    }

    fn drop_field(&self, field: &'static str, warn: bool) {
        let mut d = self.dropped.lock().expect("dropped fields");
        if !d.contains(&field) && warn {
            eprintln!(
                "gatt: warning: {} does not accept `{field}`; sampling without it from now on",
                self.shown
            );
        }
        if !d.contains(&field) {
            d.push(field);
        }
    }

    fn send(&self, body: &serde_json::Value) -> std::result::Result<Reply, Attempt> {
        let mut r = self
            .agent
            .post(&self.url)
            .header("Content-Type", "application/json");
        if let Some(key) = &self.opts.api_key {
            r = r.header("Authorization", format!("Bearer {key}"));
        }
        let mut resp = match r.send_json(body) {
            Ok(resp) => resp,
            Err(ureq::Error::Timeout(_)) => {
                return Err(Attempt::Retry(format!(
                    "no answer within {:?}",
                    self.opts.timeout
                )))
            }
            Err(e) => {
                return Err(Attempt::Retry(
                    self.scrub(&format!("connection failed: {e}")),
                ))
            }
        };
        let status = resp.status().as_u16();
        let text = resp
            .body_mut()
            .read_to_string()
            .map_err(|e| Attempt::Retry(format!("reading the response failed: {e}")))?;
        match status {
            200..=299 => parse_completion(&text)
                .map(|mut reply| {
                    // A server that echoes the request (headers, URL) into the reply must
                    // not get the key into datasets and reports.
                    reply.text = self.scrub(&reply.text);
                    reply
                })
                .map_err(|e| {
                    Attempt::Fatal(Error::runtime(self.scrub(&format!("{}: {e}", self.shown))))
                }),
            429 | 500..=599 => Err(Attempt::Retry(format!("HTTP {status}"))),
            // How servers report request fields they do not know.
            400 | 422 => Err(Attempt::Refused {
                error: self.client_error(status, &text),
                body: text,
            }),
            _ => Err(Attempt::Fatal(self.client_error(status, &text))),
        }
    }

    /// An error status, with the start of the server's answer (secrets scrubbed: some
    /// servers echo the request's headers).
    fn client_error(&self, status: u16, body: &str) -> Error {
        let start: String = body.chars().take(300).collect();
        Error::input(self.scrub(&format!("{}: HTTP {status}: {start}", self.shown)))
    }

    /// `text` with every secret replaced by `***`.
    fn scrub(&self, text: &str) -> String {
        let mut out = text.to_string();
        for secret in &self.secrets {
            out = out.replace(secret.as_str(), "***");
        }
        out
    }
}

/// Secrets shorter than this are not scrubbed from text (a 1-character key would
/// garble every message); real API keys are far longer.
const MIN_SCRUBBED_LEN: usize = 6;

/// Query parameters whose values are credentials.
const SECRET_PARAMS: [&str; 7] = [
    "key",
    "api_key",
    "apikey",
    "api-key",
    "token",
    "access_token",
    "auth",
];

/// `url` as it may be shown or stored, and the secrets taken out of it: credentials in
/// the authority (`http://user:pass@host` becomes `http://***@host`) and the values of
/// query parameters named like keys (`?api_key=...`).
pub fn redact_url(url: &str) -> (String, Vec<String>) {
    let mut secrets = Vec::new();
    let (scheme, rest) = match url.find("://") {
        Some(i) => (&url[..i + 3], &url[i + 3..]),
        None => ("", url),
    };
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(end);
    let authority = match authority.rfind('@') {
        Some(at) => {
            let creds = &authority[..at];
            secrets.push(creds.to_string());
            if let Some((_, password)) = creds.split_once(':') {
                secrets.push(password.to_string());
            }
            format!("***{}", &authority[at..])
        }
        None => authority.to_string(),
    };
    let tail = match tail.split_once('?') {
        Some((path, query)) => {
            let (query, fragment) = match query.split_once('#') {
                Some((q, f)) => (q, Some(f)),
                None => (query, None),
            };
            let params: Vec<String> = query
                .split('&')
                .map(|p| match p.split_once('=') {
                    Some((k, v)) if SECRET_PARAMS.contains(&k.to_ascii_lowercase().as_str()) => {
                        secrets.push(v.to_string());
                        format!("{k}=***")
                    }
                    _ => p.to_string(),
                })
                .collect();
            let fragment = fragment.map(|f| format!("#{f}")).unwrap_or_default();
            format!("{path}?{}{fragment}", params.join("&"))
        }
        None => tail.to_string(),
    };
    secrets.retain(|s| !s.is_empty());
    (format!("{scheme}{authority}{tail}"), secrets)
}

enum Attempt {
    Retry(String),
    Fatal(Error),
    /// 400/422: fatal unless the body names a field we can leave out.
    Refused {
        error: Error,
        body: String,
    },
}

fn parse_completion(text: &str) -> std::result::Result<Reply, String> {
    let v: serde_json::Value = serde_json::from_str(text).map_err(|e| {
        format!(
            "the server's answer is not JSON ({e}): {}",
            text.chars().take(200).collect::<String>()
        )
    })?;
    let choice = v
        .get("choices")
        .and_then(|c| c.get(0))
        .ok_or("the server's answer has no `choices[0]`")?;
    let content = choice
        .pointer("/message/content")
        .and_then(|c| c.as_str())
        .ok_or("the server's answer has no `choices[0].message.content`")?;
    let usage = |k: &str| {
        v.pointer(&format!("/usage/{k}"))
            .and_then(|x| x.as_u64())
            .unwrap_or(0) as usize
    };
    Ok(Reply {
        text: content.trim().to_string(),
        prompt_tokens: usage("prompt_tokens"),
        completion_tokens: usage("completion_tokens"),
        finished: choice.get("finish_reason").and_then(|f| f.as_str()) != Some("length"),
    })
}

impl ChatBackend for HttpBackend {
    fn describe(&self) -> String {
        format!("{} ({})", self.opts.model, self.shown)
    }

    fn check_ready(&self) -> Result<()> {
        self.check_alive()
    }

    fn preferred_batch(&self) -> usize {
        self.opts.in_flight.max(1) * 2
    }

    fn generate(&self, requests: &[Request], params: &SamplingParams) -> Result<Vec<Vec<Reply>>> {
        if requests.is_empty() {
            return Ok(Vec::new());
        }
        self.check_alive()?;
        let n = params.n.max(1);
        let jobs: Vec<(usize, usize)> = (0..requests.len())
            .flat_map(|r| (0..n).map(move |c| (r, c)))
            .collect();
        let results: Mutex<Vec<Option<Result<Reply>>>> =
            Mutex::new((0..jobs.len()).map(|_| None).collect());
        let next = AtomicUsize::new(0);
        std::thread::scope(|s| {
            for _ in 0..self.opts.in_flight.max(1).min(jobs.len()) {
                s.spawn(|| loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some(&(r, c)) = jobs.get(i) else { break };
                    let req = &requests[r];
                    let out = self.complete(req, params, candidate_seed(req.seed, c));
                    let failed = out.is_err();
                    results.lock().expect("no poisoned lock")[i] = Some(out);
                    if failed {
                        // Stop handing out work; the first error is reported.
                        next.store(jobs.len(), Ordering::Relaxed);
                    }
                });
            }
        });
        let results = results.into_inner().expect("no poisoned lock");
        let mut replies: Vec<Vec<Reply>> = vec![Vec::with_capacity(n); requests.len()];
        for ((r, _), out) in jobs.iter().zip(results) {
            if let Some(reply) = out {
                replies[*r].push(reply?);
            }
        }
        if let Some(missing) = replies.iter().position(|v| v.len() != n) {
            return Err(Error::runtime(format!("request {missing} got no reply")));
        }
        Ok(replies)
    }

    /// Keeps [`HttpOptions::in_flight`] completions in flight (one thread each) for as
    /// long as `feed` has requests: each finished completion frees its thread for the
    /// next candidate, and a request's replies go to `feed` once all its candidates are
    /// in (so its dialogue's next turn can go out at once).
    fn generate_each(&self, feed: &mut dyn Feed) -> Result<()> {
        let width = self.opts.in_flight.max(1);
        // Work for the threads: (request number, candidate, request, sampling).
        type Task = (usize, usize, Arc<Request>, Arc<SamplingParams>);
        let (to_threads, tasks) = mpsc::channel::<Task>();
        let tasks = Mutex::new(tasks);
        let (to_main, finished) = mpsc::channel::<(usize, usize, Result<Reply>)>();
        let stop = AtomicBool::new(false);
        std::thread::scope(|s| {
            for _ in 0..width {
                let to_main = to_main.clone();
                let (tasks, stop) = (&tasks, &stop);
                s.spawn(move || loop {
                    let task = tasks.lock().expect("no poisoned lock").recv();
                    let Ok((ticket, c, req, params)) = task else {
                        break;
                    };
                    if stop.load(Ordering::Relaxed) {
                        continue;
                    }
                    let out = self.complete(&req, &params, candidate_seed(req.seed, c));
                    if to_main.send((ticket, c, out)).is_err() {
                        break;
                    }
                });
            }
            drop(to_main);
            let result = self.feed_threads(feed, width, &to_threads, &finished);
            // Threads finish the completion they are in and take no more.
            stop.store(true, Ordering::Relaxed);
            drop(to_threads);
            result
        })
    }
}

impl HttpBackend {
    /// [`HttpBackend::generate_each`]'s dispatcher, on the caller's thread: hands out at
    /// most `width` candidates at a time through `to_threads`, collects `finished` ones
    /// and gives each request's replies to `feed`.
    fn feed_threads(
        &self,
        feed: &mut dyn Feed,
        width: usize,
        to_threads: &mpsc::Sender<(usize, usize, Arc<Request>, Arc<SamplingParams>)>,
        finished: &mpsc::Receiver<(usize, usize, Result<Reply>)>,
    ) -> Result<()> {
        let mut queued: VecDeque<(usize, usize, Arc<Request>, Arc<SamplingParams>)> =
            VecDeque::new();
        // Each open request's candidates so far.
        let mut open: HashMap<usize, Vec<Option<Reply>>> = HashMap::new();
        let mut tickets = 0;
        let mut in_flight = 0;
        loop {
            while in_flight < width {
                if let Some(task) = queued.pop_front() {
                    to_threads
                        .send(task)
                        .map_err(|_| Error::runtime("the request threads stopped"))?;
                    in_flight += 1;
                    continue;
                }
                let Some((request, params)) = feed.next() else {
                    break;
                };
                if tickets == 0 {
                    self.check_alive()?;
                }
                let n = params.n.max(1);
                let (request, params) = (Arc::new(request), Arc::new(params));
                for c in 0..n {
                    queued.push_back((tickets, c, Arc::clone(&request), Arc::clone(&params)));
                }
                open.insert(tickets, vec![None; n]);
                tickets += 1;
            }
            if in_flight == 0 {
                return Ok(());
            }
            let (ticket, c, out) = finished
                .recv()
                .map_err(|_| Error::runtime("the request threads stopped"))?;
            in_flight -= 1;
            let slots = open.get_mut(&ticket).expect("an open request");
            slots[c] = Some(out?);
            if slots.iter().all(Option::is_some) {
                let replies = open
                    .remove(&ticket)
                    .into_iter()
                    .flatten()
                    .flatten()
                    .collect();
                feed.done(ticket, replies)?;
            }
        }
    }
}

#[cfg(test)]
mod tests;
