//! Answer scoring as SQuAD v1.1's `evaluate-v1.1.py` does it, and DPR's test of
//! whether a passage contains an answer.
//!
//! Scores are set beside published numbers, so the normalisation copies the
//! Python script's behaviour, Unicode corners included, rather than improving
//! on it.

use std::collections::HashMap;

use unicode_normalization::{char::is_combining_mark, UnicodeNormalization};

/// The answer as the official script compares it: lower-cased, ASCII
/// punctuation (Python's `string.punctuation`) removed, the articles a/an/the
/// removed as whole words, whitespace collapsed to single spaces.
pub fn normalize_answer(text: &str) -> String {
    let without_punctuation: String = text
        .to_lowercase()
        .chars()
        .filter(|c| !c.is_ascii_punctuation())
        .collect();
    remove_articles(&without_punctuation)
        .split(is_python_space)
        .filter(|token| !token.is_empty())
        .collect::<Vec<_>>()
        .join(" ")
}

/// Whether the prediction equals one of the references once both are normalised.
pub fn exact_match(prediction: &str, references: &[String]) -> bool {
    let prediction = normalize_answer(prediction);
    references.iter().any(|r| normalize_answer(r) == prediction)
}

/// Token-level F1 of the prediction against its best reference; 0 when there
/// are no references.
pub fn f1(prediction: &str, references: &[String]) -> f64 {
    let prediction = normalize_answer(prediction);
    let prediction_tokens = tokens(&prediction);
    references
        .iter()
        .map(|r| token_f1(&prediction_tokens, &tokens(&normalize_answer(r))))
        .fold(0.0, f64::max)
}

/// Whether the passage contains one of the answers as whole words, the way
/// DPR counts a retrieved passage as a hit.
pub fn has_answer(answers: &[String], passage_text: &str) -> bool {
    let passage = normalize_for_match(passage_text);
    let passage_tokens = tokens(&passage);
    answers.iter().any(|answer| {
        let answer = normalize_for_match(answer);
        let answer_tokens = tokens(&answer);
        // An answer that normalises to nothing (say "The") would match every passage.
        !answer_tokens.is_empty()
            && passage_tokens
                .windows(answer_tokens.len())
                .any(|window| window == answer_tokens)
    })
}

/// DPR decomposes both sides first, so that a precomposed "é" in the
/// passage and a decomposed one in the answer compare equal.
fn normalize_for_match(text: &str) -> String {
    normalize_answer(&text.nfd().collect::<String>())
}

/// Tokens of an already normalised string, which holds single spaces only.
fn tokens(normalized: &str) -> Vec<&str> {
    normalized.split_whitespace().collect()
}

/// `f1_score` of the official script: common tokens counted with multiplicity.
fn token_f1(prediction: &[&str], reference: &[&str]) -> f64 {
    let mut unmatched: HashMap<&str, usize> = HashMap::new();
    for token in reference {
        *unmatched.entry(token).or_default() += 1;
    }
    let common = prediction
        .iter()
        .filter(|token| match unmatched.get_mut(*token) {
            Some(left) if *left > 0 => {
                *left -= 1;
                true
            }
            _ => false,
        })
        .count();
    if common == 0 {
        return 0.0;
    }
    let precision = common as f64 / prediction.len() as f64;
    let recall = common as f64 / reference.len() as f64;
    2.0 * precision * recall / (precision + recall)
}

/// `re.sub(r'\b(a|an|the)\b', ' ', text)`: an article only matches when it is
/// a whole run of word characters, so the text is walked run by run.
fn remove_articles(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(first) = rest.chars().next() {
        let in_word = is_word_char(first);
        let end = rest
            .find(|c| is_word_char(c) != in_word)
            .unwrap_or(rest.len());
        let (run, tail) = rest.split_at(end);
        let is_article = in_word && matches!(run, "a" | "an" | "the");
        out.push_str(if is_article { " " } else { run });
        rest = tail;
    }
    out
}

/// Python's `\w` on `str`: letters, numbers and `_`. Rust's Alphabetic property
/// is wider: it also takes combining marks (which NFD text is full of) and
/// the enclosed letters Ⓐ 🄰 🅐 🅰, none of which Python counts.
fn is_word_char(c: char) -> bool {
    let enclosed_letter = matches!(
        c,
        '\u{24B6}'..='\u{24E9}'
            | '\u{1F130}'..='\u{1F149}'
            | '\u{1F150}'..='\u{1F169}'
            | '\u{1F170}'..='\u{1F189}'
    );
    (c.is_alphabetic() && !is_combining_mark(c) && !enclosed_letter) || c.is_numeric() || c == '_'
}

/// Python's `str.split()` also splits on the ASCII separators U+001C..U+001F,
/// which Rust does not count as whitespace.
fn is_python_space(c: char) -> bool {
    c.is_whitespace() || ('\u{1C}'..='\u{1F}').contains(&c)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn strings(items: &[&str]) -> Vec<String> {
        items.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn normalizes_like_the_official_script() {
        // Expected values are the output of evaluate-v1.1.py's normalize_answer
        // under Python 3.11.
        let cases = [
            ("The  Beatles!", "beatles"),
            ("a.m.", "am"),
            ("An apple a day", "apple day"),
            ("Theatre", "theatre"),
            ("Anne", "anne"),
            ("rock-n-roll", "rocknroll"),
            ("O'Neil", "oneil"),
            ("Mr. Smith's", "mr smiths"),
            ("1,000", "1000"),
            ("$5.00", "500"),
            ("U.S.A.", "usa"),
            ("THE END.", "end"),
            ("theory of the an-ti", "theory of anti"),
            ("the the the", ""),
            ("", ""),
            ("  \t\n ", ""),
            ("the_end", "theend"),
            ("1990–1995", "1990–1995"),
            ("“Hello”", "“hello”"),
            ("a‐b", "‐b"),
            ("Über the top", "über top"),
            ("ΣΑΣ", "σας"),
            ("a\u{a0}b", "b"),
            ("x\u{1c}y", "x y"),
            ("1.5\u{2009}million", "15 million"),
            ("aⓐ", "ⓐ"),
            ("a\u{301} b", "\u{301} b"),
        ];
        for (input, expected) in cases {
            assert_eq!(normalize_answer(input), expected, "input {input:?}");
        }
    }

    #[test]
    fn exact_match_takes_any_reference() {
        let references = strings(&["Paris, France", "The Paris"]);
        assert!(exact_match("paris", &references));
        assert!(!exact_match("Lyon", &references));
        assert!(!exact_match("paris", &[]));
    }

    #[test]
    fn f1_matches_the_official_script() {
        // (prediction, reference, evaluate-v1.1.py's f1_score)
        let cases = [
            ("the cat sat", "a cat sat down", 0.8),
            ("red red blue", "red blue blue", 2.0 / 3.0),
            ("Paris", "paris, france", 2.0 / 3.0),
            ("the", "a", 0.0),
            ("x y", "z", 0.0),
        ];
        for (prediction, reference, expected) in cases {
            let score = f1(prediction, &strings(&[reference]));
            assert!(
                (score - expected).abs() < 1e-12,
                "{prediction:?} vs {reference:?}: {score}"
            );
        }
        assert_eq!(f1("Paris", &strings(&["Lyon", "Paris"])), 1.0);
        assert_eq!(f1("Paris", &[]), 0.0);
    }

    #[test]
    fn has_answer_matches_whole_words() {
        let passage = "The Eiffel Tower was built in Paris, France, for the 1889 World's Fair.";
        let cases: [(&[&str], bool); 9] = [
            (&["Paris"], true),
            (&["Par"], false),
            (&["Paris France"], true),
            (&["France Paris"], false),
            (&["the eiffel TOWER"], true),
            (&["An Eiffel tower"], true),
            (&["Worlds fair"], true),
            (&["Lyon", "1889"], true),
            (&["The", ""], false),
        ];
        for (answers, expected) in cases {
            assert_eq!(
                has_answer(&strings(answers), passage),
                expected,
                "{answers:?}"
            );
        }
    }

    #[test]
    fn has_answer_ignores_unicode_composition() {
        let decomposed = "Pele\u{301} played for Santos";
        assert!(has_answer(&strings(&["Pelé"]), decomposed));
        assert!(has_answer(
            &strings(&["Pele\u{301}"]),
            "Pelé played for Santos"
        ));
    }

    /// Phrases built from words that exercise articles, case and punctuation,
    /// so that distinct phrases often normalise alike.
    fn phrase() -> impl Strategy<Value = String> {
        let words = [
            "The",
            "a",
            "an",
            "Paris",
            "paris,",
            "rock-n-roll",
            "1,000",
            "“x”",
            "Σ",
        ];
        prop::collection::vec(prop::sample::select(words.to_vec()), 0..5).prop_map(|w| w.join(" "))
    }

    proptest! {
        #[test]
        fn normalization_is_idempotent(text in any::<String>()) {
            let once = normalize_answer(&text);
            prop_assert_eq!(normalize_answer(&once), once);
        }

        #[test]
        fn exact_match_implies_full_f1(prediction in phrase(), references in prop::collection::vec(phrase(), 1..4)) {
            // Two answers that both normalise to nothing are an exact match
            // with F1 0 in the official script too.
            prop_assume!(!normalize_answer(&prediction).is_empty());
            if exact_match(&prediction, &references) {
                prop_assert_eq!(f1(&prediction, &references), 1.0);
            }
        }

        #[test]
        fn an_answer_is_found_in_itself(answer in any::<String>()) {
            prop_assume!(!normalize_answer(&answer).is_empty());
            prop_assert!(has_answer(std::slice::from_ref(&answer), &answer));
        }
    }
}
