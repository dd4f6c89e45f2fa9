//! Markdown: the text a reader sees once the document is rendered.

use pulldown_cmark::{Event, Options, Parser, Tag, TagEnd};

use super::{normalize_whitespace, Paragraphs};

/// The first heading (if any) and the rendered text of `markdown`, each block
/// (heading, paragraph, list item, code block, table row) a paragraph.
///
/// Raw HTML is left out: it is markup, and its text is rarely prose. Front
/// matter (YAML `---` or TOML `+++` blocks) is metadata and is left out too.
pub(super) fn extract(markdown: &str) -> (Option<String>, String) {
    let options = Options::ENABLE_TABLES
        | Options::ENABLE_FOOTNOTES
        | Options::ENABLE_STRIKETHROUGH
        | Options::ENABLE_YAML_STYLE_METADATA_BLOCKS
        | Options::ENABLE_PLUSES_DELIMITED_METADATA_BLOCKS;
    let mut paragraphs = Paragraphs::default();
    let mut title: Option<String> = None;
    let mut in_first_heading = false;
    let mut in_metadata = false;

    for event in Parser::new_ext(markdown, options) {
        match event {
            Event::Start(Tag::MetadataBlock(_)) => in_metadata = true,
            Event::End(TagEnd::MetadataBlock(_)) => in_metadata = false,
            Event::Start(tag) => {
                if matches!(tag, Tag::Heading { .. }) && title.is_none() {
                    in_first_heading = true;
                    title = Some(String::new());
                }
                separate(&mut paragraphs, &tag.to_end());
            }
            Event::End(end) => {
                if matches!(end, TagEnd::Heading(_)) {
                    in_first_heading = false;
                }
                separate(&mut paragraphs, &end);
            }
            Event::Text(text) | Event::Code(text) if !in_metadata => {
                paragraphs.push(&text);
                if in_first_heading {
                    title.get_or_insert_default().push_str(&text);
                }
            }
            Event::SoftBreak | Event::HardBreak => paragraphs.push(" "),
            Event::Rule => paragraphs.end(),
            _ => {}
        }
    }
    let title = title.map(|t| normalize_whitespace(&t));
    (title, paragraphs.finish())
}

/// Ends the paragraph at the edge of a block; keeps inline elements in it.
fn separate(paragraphs: &mut Paragraphs, tag: &TagEnd) {
    match tag {
        TagEnd::Emphasis
        | TagEnd::Strong
        | TagEnd::Strikethrough
        | TagEnd::Superscript
        | TagEnd::Subscript
        | TagEnd::Link
        | TagEnd::Image => {}
        // Cells of a row stay in one paragraph, but their words must not run together.
        TagEnd::TableCell => paragraphs.push(" "),
        _ => paragraphs.end(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headings_and_blocks_become_paragraphs() {
        let markdown = "---\nauthor: x\n---\n\n# The *Printing* Press\n\nGutenberg built it\naround 1440.\n\n\
            ## Spread\n\n- Venice had **many** presses.\n- So did [Paris](https://example.org).\n\n\
            | City | Year |\n|---|---|\n| Mainz | 1450 |\n\n<div>raw html</div>\n\n```\ncode line\n```\n";
        let (title, text) = extract(markdown);
        assert_eq!(title.as_deref(), Some("The Printing Press"));
        assert_eq!(
            text,
            "The Printing Press\n\nGutenberg built it around 1440.\n\nSpread\n\n\
             Venice had many presses.\n\nSo did Paris.\n\nCity Year\n\nMainz 1450\n\ncode line"
        );
    }

    #[test]
    fn no_heading_means_no_title() {
        let (title, text) = extract("Just a paragraph with `code`.");
        assert_eq!(title, None);
        assert_eq!(text, "Just a paragraph with code.");
    }
}
