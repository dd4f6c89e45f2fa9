//! Splitting documents into passages of about a fixed number of words.

use margin_core::config::ChunkingConfig;
use margin_core::{Document, OperationResult, Passage};
use unicode_segmentation::UnicodeSegmentation;

/// Splits documents into DPR-style passages of about `words` words.
///
/// A word is a run of non-whitespace characters, as in DPR's 100-word passages.
/// The rules, in order:
/// - a passage ends at the last sentence end (Unicode UAX #29 sentence bounds)
///   that keeps it between half of `words` and `words` long;
/// - when there is no such sentence end (a sentence longer than the room left),
///   it ends after exactly `words` words, at a word boundary;
/// - the next passage starts with the last `overlap` words of the previous one;
/// - a remainder of fewer than `words / 4` new words is merged into the passage
///   before it rather than becoming a passage of its own, so no passage holds
///   more than [`Chunker::max_passage_words`] words.
///
/// Passage text is the passage's words joined by single spaces. The same
/// document always gives the same passages and ids.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Chunker {
    words: usize,
    overlap: usize,
}

impl Chunker {
    /// A chunker for `config`; `words` must be at least 1 and `overlap` below `words`.
    pub fn new(config: ChunkingConfig) -> OperationResult<Self> {
        config.validate()?;
        Ok(Self {
            words: config.words,
            overlap: config.overlap,
        })
    }

    /// The most words a passage can hold: `words`, plus a merged remainder.
    pub fn max_passage_words(&self) -> usize {
        self.words + self.shortest_tail().saturating_sub(1)
    }

    /// Splits `document` into passages numbered from 0; none if it has no words.
    pub fn chunk(&self, document: &Document) -> Vec<Passage> {
        let text = document.text.as_str();
        let spans = word_spans(text);
        let ends = sentence_ends(text, &spans);
        let words: Vec<&str> = spans.iter().map(|&(s, e)| &text[s..e]).collect();

        let mut passages = Vec::new();
        let mut start = 0;
        while start < words.len() {
            let end = self.cut(start, &ends);
            let position = passages.len();
            passages.push(Passage {
                id: Passage::make_id(&document.id, position),
                doc_id: document.id.clone(),
                title: document.title.clone(),
                text: words[start..end].join(" "),
                source: document.source.clone(),
                position,
            });
            if end == words.len() {
                break;
            }
            start = end - self.overlap;
        }
        passages
    }

    /// Splits each of `documents` in turn, keeping their order.
    pub fn chunk_all(&self, documents: &[Document]) -> Vec<Passage> {
        documents.iter().flat_map(|d| self.chunk(d)).collect()
    }

    /// Where the passage starting at word `start` ends (exclusive), given which
    /// words end a sentence.
    fn cut(&self, start: usize, ends: &[bool]) -> usize {
        let total = ends.len();
        let limit = start + self.words;
        if limit >= total {
            return total;
        }
        // A sentence end closer to `start` than this would leave a stub passage;
        // past the overlap it also guarantees the next passage starts further on.
        let shortest = (self.words / 2).max(self.overlap + 1);
        let end = (start + shortest..=limit)
            .rev()
            .find(|&e| ends[e - 1])
            .unwrap_or(limit);
        if total - end < self.shortest_tail() {
            total
        } else {
            end
        }
    }

    /// Fewest new words a final passage may have before it is merged into the one before.
    fn shortest_tail(&self) -> usize {
        self.words / 4
    }
}

/// Byte ranges of the whitespace-separated words of `text`.
fn word_spans(text: &str) -> Vec<(usize, usize)> {
    let mut spans = Vec::new();
    let mut word_start = None;
    for (i, c) in text.char_indices() {
        match (c.is_whitespace(), word_start) {
            (true, Some(s)) => {
                spans.push((s, i));
                word_start = None;
            }
            (false, None) => word_start = Some(i),
            _ => {}
        }
    }
    if let Some(s) = word_start {
        spans.push((s, text.len()));
    }
    spans
}

/// For each word, whether a sentence ends after it. A sentence bound that falls
/// inside a word (`end?The`, or text without spaces) is ignored, so cutting
/// never splits a word.
fn sentence_ends(text: &str, spans: &[(usize, usize)]) -> Vec<bool> {
    let mut bounds = text
        .split_sentence_bound_indices()
        .map(|(offset, sentence)| offset + sentence.len())
        .peekable();
    spans
        .iter()
        .enumerate()
        .map(|(i, &(_, word_end))| {
            let next_word = spans.get(i + 1).map_or(text.len(), |&(s, _)| s);
            while bounds.next_if(|&b| b < word_end).is_some() {}
            bounds.peek().is_some_and(|&b| b <= next_word)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn chunker(words: usize, overlap: usize) -> Chunker {
        Chunker::new(ChunkingConfig { words, overlap }).unwrap()
    }

    fn doc(text: &str) -> Document {
        Document {
            id: "doc".into(),
            title: "Title".into(),
            text: text.into(),
            source: "test.txt".into(),
        }
    }

    /// A sentence of `n` words `W{from}..W{from+n-1}`, ending with a full stop.
    /// (Capitals matter: UAX #29 sees no sentence end in `end. next`.)
    fn sentence(from: usize, n: usize) -> String {
        let words: Vec<String> = (from..from + n).map(|i| format!("W{i}")).collect();
        format!("{}.", words.join(" "))
    }

    fn lengths(passages: &[Passage]) -> Vec<usize> {
        passages.iter().map(|p| p.text.split(' ').count()).collect()
    }

    #[test]
    fn rejects_zero_words_and_overlap_not_below_words() {
        let err = Chunker::new(ChunkingConfig {
            words: 0,
            overlap: 0,
        })
        .unwrap_err();
        assert!(err.to_string().contains("chunking.words"), "{err}");
        let err = Chunker::new(ChunkingConfig {
            words: 10,
            overlap: 10,
        })
        .unwrap_err();
        assert!(err.to_string().contains("chunking.overlap"), "{err}");
    }

    #[test]
    fn cuts_at_the_last_sentence_end_that_fits() {
        // Sentences of 6, 3 and 4 words: 6 + 3 = 9 fits in 10, the third does not.
        let text = format!("{} {} {}", sentence(0, 6), sentence(6, 3), sentence(9, 4));
        let passages = chunker(10, 0).chunk(&doc(&text));
        let texts: Vec<&str> = passages.iter().map(|p| p.text.as_str()).collect();
        assert_eq!(texts, ["W0 W1 W2 W3 W4 W5. W6 W7 W8.", "W9 W10 W11 W12."]);
    }

    #[test]
    fn ignores_a_sentence_end_that_would_leave_a_stub() {
        // The only sentence end within 10 words is after word 2 (< 10 / 2), so
        // the cut falls at 10 words, inside the long second sentence.
        let text = format!("{} {}", sentence(0, 2), sentence(2, 12));
        let passages = chunker(10, 0).chunk(&doc(&text));
        assert_eq!(lengths(&passages), [10, 4]);
        assert!(passages[0].text.starts_with("W0 W1. W2"));
        assert_eq!(passages[1].text, "W10 W11 W12 W13.");
    }

    #[test]
    fn splits_a_long_sentence_at_word_boundaries() {
        let passages = chunker(100, 0).chunk(&doc(&sentence(0, 250)));
        assert_eq!(lengths(&passages), [100, 100, 50]);
        assert!(passages[1].text.starts_with("W100 W101 "));
        assert!(passages[2].text.ends_with("W249."));
    }

    #[test]
    fn merges_a_tiny_remainder_into_the_last_passage() {
        // 110 words, no sentence end before the last word: a 10-word tail is
        // shorter than 100 / 4, so it joins the first passage.
        let passages = chunker(100, 0).chunk(&doc(&sentence(0, 110)));
        assert_eq!(lengths(&passages), [110]);
        // A 25-word tail is long enough to stand alone.
        let passages = chunker(100, 0).chunk(&doc(&sentence(0, 125)));
        assert_eq!(lengths(&passages), [100, 25]);
    }

    #[test]
    fn overlap_repeats_the_last_words_of_the_previous_passage() {
        let text: Vec<String> = (0..30).map(|i| sentence(i * 7, 7)).collect();
        let passages = chunker(50, 10).chunk(&doc(&text.join(" ")));
        assert!(passages.len() > 3, "{}", passages.len());
        for pair in passages.windows(2) {
            let prev: Vec<&str> = pair[0].text.split(' ').collect();
            let next: Vec<&str> = pair[1].text.split(' ').collect();
            assert_eq!(next[..10], prev[prev.len() - 10..], "{pair:?}");
        }
        // Without the overlap, the passages still cover every word once.
        let covered: Vec<&str> = passages
            .iter()
            .enumerate()
            .flat_map(|(i, p)| p.text.split(' ').skip(if i == 0 { 0 } else { 10 }))
            .collect();
        assert_eq!(covered.join(" "), text.join(" "));
    }

    #[test]
    fn passages_carry_document_fields_and_stable_ids() {
        let document = doc(&format!("{}\n\n{}", sentence(0, 60), sentence(60, 60)));
        let first = chunker(100, 0).chunk(&document);
        let again = chunker(100, 0).chunk(&document);
        assert_eq!(first, again);
        let ids: Vec<&str> = first.iter().map(|p| p.id.as_str()).collect();
        assert_eq!(ids, ["doc#0", "doc#1"]);
        assert_eq!(first[1].position, 1);
        assert_eq!(first[1].doc_id, "doc");
        assert_eq!(first[1].title, "Title");
        assert_eq!(first[1].source, "test.txt");
    }

    #[test]
    fn normalises_whitespace_and_handles_empty_text() {
        let passages = chunker(100, 0).chunk(&doc("  One\ttwo\n\n three.\r\n"));
        assert_eq!(passages.len(), 1);
        assert_eq!(passages[0].text, "One two three.");
        assert!(chunker(100, 0).chunk(&doc(" \n\t ")).is_empty());
    }

    #[test]
    fn sentence_bounds_inside_words_are_not_cut_points() {
        let text = "Really?Yes it is";
        let spans = word_spans(text);
        assert_eq!(sentence_ends(text, &spans), [false, false, true]);
    }

    proptest! {
        #[test]
        fn without_overlap_passages_partition_the_words(
            text in "([A-Za-z]{1,8}[.!?]? {1,2}\n?){0,400}",
            words in 1usize..120,
        ) {
            let chunker = chunker(words, 0);
            let passages = chunker.chunk(&doc(&text));
            let joined: Vec<&str> = passages.iter().flat_map(|p| p.text.split(' ')).collect();
            let original: Vec<&str> = text.split_whitespace().collect();
            prop_assert_eq!(joined, original);
            for p in &passages {
                let n = p.text.split(' ').count();
                prop_assert!(n >= 1 && n <= chunker.max_passage_words(), "{} words", n);
            }
        }

        #[test]
        fn with_overlap_every_passage_is_bounded_and_overlaps(
            text in "([A-Za-z]{1,8}[.!?]? {1,2}\n?){0,400}",
            words in 2usize..120,
            overlap_fraction in 0.0f64..1.0,
        ) {
            let overlap = ((words as f64) * overlap_fraction) as usize;
            let chunker = chunker(words, overlap);
            let passages = chunker.chunk(&doc(&text));
            for p in &passages {
                prop_assert!(p.text.split(' ').count() <= chunker.max_passage_words());
            }
            for pair in passages.windows(2) {
                let prev: Vec<&str> = pair[0].text.split(' ').collect();
                let next: Vec<&str> = pair[1].text.split(' ').collect();
                prop_assert_eq!(&next[..overlap], &prev[prev.len() - overlap..]);
            }
            let last = passages.last().map(|p| p.text.split(' ').next_back().unwrap());
            prop_assert_eq!(last, text.split_whitespace().next_back());
        }
    }
}
