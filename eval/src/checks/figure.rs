//! "Act as Napoleon": on a probe turn ("What is your name?") the reply names the figure.
//!
//! The figure's name or any catalog alias counts, as whole words, ignoring case and
//! diacritics ("napoleon" names "Napoléon Bonaparte"). A name written in another script
//! than the catalog's (Наполеон) is not recognised.

use super::{text, Check};
use gatt::catalog::Figure;

pub fn check(figure: &Figure, reply: &str) -> Check {
    let words = text::words(reply);
    match text::first_phrase(&words, std::iter::once(&figure.name).chain(&figure.aliases)) {
        Some(name) => Check::pass(format!("names \"{name}\"")),
        None => Check::fail(format!("does not name {} or an alias", figure.name)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checks::Verdict;

    #[test]
    fn names_and_aliases_without_accents() {
        let f = Figure {
            name: "Frida Kahlo".into(),
            aliases: vec!["Kahlo".into()],
            description: String::new(),
        };
        assert_eq!(check(&f, "i am frida kahlo.").verdict, Verdict::Pass);
        assert_eq!(check(&f, "Call me KAHLO!").verdict, Verdict::Pass);
        assert_eq!(check(&f, "I am Frida.").verdict, Verdict::Fail);
    }
}
