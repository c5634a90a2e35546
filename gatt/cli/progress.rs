//! Progress bars on stderr (hidden automatically when stderr is not a terminal).

use indicatif::{ProgressBar, ProgressStyle};

pub fn bar(len: Option<u64>, what: &str) -> ProgressBar {
    let pb = match len {
        Some(n) => ProgressBar::new(n),
        None => ProgressBar::no_length(),
    };
    let template = if len.is_some() {
        format!("{{spinner}} {what} {{pos}}/{{len}} [{{bar:30}}] {{per_sec}} ETA {{eta}} {{msg}}")
    } else {
        format!("{{spinner}} {what} {{pos}} {{per_sec}} {{msg}}")
    };
    pb.set_style(
        ProgressStyle::with_template(&template)
            .expect("valid template")
            .progress_chars("=> "),
    );
    pb
}
