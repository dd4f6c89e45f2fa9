//! Contextualised inputs: a passage and the question as one generator input.

/// Hugging Face RAG's input for a seq2seq generator: title + " / " + text +
/// " // " + question, one pair of quotes stripped from around the title,
/// double spaces collapsed once (as `RagRetriever.postprocess_docs` does;
/// truncation to the configured length happens on tokens).
pub fn bart_context(title: &str, text: &str, question: &str) -> String {
    let title = title.strip_prefix('"').unwrap_or(title);
    let title = title.strip_suffix('"').unwrap_or(title);
    format!("{title} / {text} // {question}").replace("  ", " ")
}

/// `template` with `{title}`, `{text}` and `{question}` filled in.
pub fn fill_prompt(template: &str, title: &str, text: &str, question: &str) -> String {
    template
        .replace("{title}", title)
        .replace("{text}", text)
        .replace("{question}", question)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bart_contexts_follow_hugging_face() {
        assert_eq!(
            bart_context("\"Moon\"", "The Moon  pulls the sea.", "why tides?"),
            "Moon / The Moon pulls the sea. // why tides?"
        );
        // Only one pair of quotes, and only around the title.
        assert_eq!(bart_context("\"\"A\"\"", "t", "q"), "\"A\" / t // q");
    }

    #[test]
    fn prompts_fill_every_placeholder() {
        let template = "Passage: {title}\n{text}\n\nQuestion: {question}";
        let p = fill_prompt(template, "Tides", "The Moon pulls.", "why?");
        assert!(p.contains("Passage: Tides\nThe Moon pulls.") && p.ends_with("Question: why?"));
    }
}
