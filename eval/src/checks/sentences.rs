//! Counting sentences for "answer in one sentence only".
//!
//! A sentence ends at terminal punctuation (`.` `!` `?` and their CJK forms) followed by
//! a space, a line end or the end of the text, and at every line break (a list or a
//! second paragraph is more than one sentence). A period after a known abbreviation
//! ("e.g.", "Dr.") or a single capital initial ("J. R. R. Tolkien") does not end one, and
//! neither does an ellipsis inside the text ("Well... maybe").

/// Lowercase abbreviations, without their final period, that do not end a sentence.
const ABBREVIATIONS: &[&str] = &[
    "e.g", "i.e", "etc", "vs", "cf", "mr", "mrs", "ms", "dr", "prof", "st", "jr", "sr", "mt",
    "approx", "ca", "fig", "vol", "no", "inc", "ltd", "co", "a.m", "p.m", "u.s", "u.k",
];

/// Characters that end a sentence wherever they are, with or without a following space.
fn is_cjk_terminal(c: char) -> bool {
    matches!(c, '。' | '！' | '？')
}

fn is_terminal(c: char) -> bool {
    matches!(c, '.' | '!' | '?') || is_cjk_terminal(c)
}

/// Closing quotes and brackets that may follow the terminal punctuation ("... end.").
fn is_closer(c: char) -> bool {
    matches!(c, '"' | '\'' | '”' | '’' | '»' | ')' | ']' | '*' | '_')
}

/// Number of sentences in `prose` (a segment counts when it holds a letter or digit).
pub fn count(prose: &str) -> usize {
    prose.lines().map(count_in_line).sum()
}

fn count_in_line(line: &str) -> usize {
    let chars: Vec<char> = line.chars().collect();
    let mut sentences = 0;
    let mut has_content = false;
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if c.is_alphanumeric() {
            has_content = true;
        }
        if !is_terminal(c) && c != '…' {
            i += 1;
            continue;
        }
        // The whole run of punctuation and closers: "?!", "...", `."`.
        let start = i;
        while i < chars.len() && (is_terminal(chars[i]) || chars[i] == '…' || is_closer(chars[i]))
        {
            i += 1;
        }
        let at_end = i == chars.len();
        let before_space = chars.get(i).is_some_and(|c| c.is_whitespace());
        let run: String = chars[start..i].iter().collect();
        let ellipsis = run.contains("..") || run.contains('…');
        let lone_period = run == ".";
        let ends = run.chars().any(is_cjk_terminal)
            || at_end
            || (before_space && !ellipsis && !(lone_period && is_abbreviation(&chars[..start])));
        if ends && has_content {
            sentences += 1;
            has_content = false;
        }
    }
    sentences + usize::from(has_content)
}

/// True when the word just before a period is an abbreviation or a capital initial.
fn is_abbreviation(before: &[char]) -> bool {
    let word: String = before
        .iter()
        .rev()
        .take_while(|c| !c.is_whitespace() && !matches!(c, '(' | '"' | '“' | '\''))
        .collect::<Vec<_>>()
        .into_iter()
        .rev()
        .collect();
    let mut letters = word.chars();
    if let (Some(first), None) = (letters.next(), letters.next()) {
        return first.is_uppercase();
    }
    ABBREVIATIONS.contains(&word.to_lowercase().as_str())
}

#[cfg(test)]
mod tests {
    use super::count;

    #[test]
    fn counts_terminal_punctuation() {
        assert_eq!(count("One. Two! Three?"), 3);
        assert_eq!(count("Just one sentence without a period"), 1);
        assert_eq!(count("i love tennis. it is fun."), 2);
        assert_eq!(count(""), 0);
    }

    #[test]
    fn abbreviations_initials_and_numbers_do_not_split() {
        assert_eq!(count("Fruits, e.g. apples, are healthy."), 1);
        assert_eq!(
            count("Ask Dr. Smith about J. R. R. Tolkien at 3.5 p.m. today."),
            1
        );
        assert_eq!(count("Well... I think so."), 1);
    }

    #[test]
    fn quotes_after_the_period_and_line_breaks() {
        assert_eq!(count("He said \"stop.\" Then he left."), 2);
        assert_eq!(count("Here is a list:\n- apples\n- pears"), 3);
        assert_eq!(count("我喜欢网球。它很有趣。"), 2);
    }
}
