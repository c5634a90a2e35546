//! "You enjoy tennis": on a probe turn ("What is your favorite hobby?") the reply names
//! the hobby or one of its catalog keywords ("racket"), as whole words, ignoring case.

use super::{text, Check};
use gatt::catalog::Hobby;

pub fn check(hobby: &Hobby, reply: &str) -> Check {
    let words = text::words(reply);
    match text::first_phrase(&words, std::iter::once(&hobby.name).chain(&hobby.keywords)) {
        Some(word) => Check::pass(format!("mentions \"{word}\"")),
        None => Check::fail(format!(
            "mentions neither {} nor any of its keywords",
            hobby.name
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checks::Verdict;

    #[test]
    fn name_or_keyword_as_whole_words() {
        let h = Hobby {
            name: "Rock climbing".into(),
            keywords: vec!["climb".into(), "boulder".into()],
        };
        assert_eq!(check(&h, "ROCK CLIMBING, always.").verdict, Verdict::Pass);
        assert_eq!(check(&h, "I climb on weekends.").verdict, Verdict::Pass);
        assert_eq!(
            check(&h, "I love climbers and boulders.").verdict,
            Verdict::Fail
        );
    }
}
