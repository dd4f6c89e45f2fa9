//! HTML: the visible text of a page, parsed as a browser would (html5ever).

use ego_tree::iter::Edge;
use scraper::{Html, Node, Selector};

use super::{normalize_whitespace, Paragraphs};

/// Elements whose content is not page text: metadata, code, embedded objects.
const HIDDEN: &[&str] = &[
    "head", "title", "script", "style", "noscript", "template", "svg", "math", "iframe", "object",
    "canvas",
];

/// Elements that start and end a paragraph (the HTML block-level elements).
#[rustfmt::skip]
const BLOCKS: &[&str] = &[
    "address", "article", "aside", "blockquote", "body", "br", "caption", "dd", "details",
    "dialog", "div", "dl", "dt", "fieldset", "figcaption", "figure", "footer", "form", "h1",
    "h2", "h3", "h4", "h5", "h6", "header", "hgroup", "hr", "html", "legend", "li", "main",
    "nav", "ol", "p", "pre", "section", "summary", "table", "tbody", "tfoot", "thead", "tr",
    "ul",
];

/// Elements that sit side by side in a row and must not run their words together.
const CELLS: &[&str] = &["td", "th"];

/// The title (`<title>`, else the first `<h1>`) and the visible text of `html`,
/// block elements separating paragraphs.
pub(super) fn extract(html: &str) -> (Option<String>, String) {
    let document = Html::parse_document(html);
    let title = ["title", "h1"].iter().find_map(|name| {
        let selector = Selector::parse(name).expect("an element name is a valid selector");
        document
            .select(&selector)
            .map(|element| normalize_whitespace(&element.text().collect::<String>()))
            .find(|text| !text.is_empty())
    });

    let mut paragraphs = Paragraphs::default();
    // Depth inside hidden elements; an iterative walk, since pages can nest
    // deeper than the stack would allow a recursive one.
    let mut hidden = 0usize;
    for edge in document.tree.root().traverse() {
        let (node, opening) = match edge {
            Edge::Open(node) => (node, true),
            Edge::Close(node) => (node, false),
        };
        match node.value() {
            Node::Element(element) => {
                let name = element.name();
                if HIDDEN.contains(&name) {
                    if opening {
                        hidden += 1;
                    } else {
                        hidden -= 1;
                    }
                } else if hidden == 0 && BLOCKS.contains(&name) {
                    paragraphs.end();
                } else if hidden == 0 && CELLS.contains(&name) {
                    paragraphs.push(" ");
                }
            }
            Node::Text(text) if opening && hidden == 0 => paragraphs.push(text),
            _ => {}
        }
    }
    (title, paragraphs.finish())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn visible_text_in_paragraphs_without_scripts_or_styles() {
        let html = r#"<!doctype html><html><head><title> Tides  explained </title>
            <style>p { color: red }</style><script>var x = "hidden";</script></head>
            <body><h1>How tides work</h1>
            <p>The Moon <b>pulls</b> on the oceans.<br>Twice a day.</p>
            <noscript>Enable JavaScript</noscript><template><p>template text</p></template>
            <ul><li>Spring tides</li><li>Neap tides</li></ul>
            <table><tr><td>High</td><td>06:12</td></tr></table>
            <div>Entities: &amp; &lt;ok&gt;<!-- a comment --></div></body></html>"#;
        let (title, text) = extract(html);
        assert_eq!(title.as_deref(), Some("Tides explained"));
        assert_eq!(
            text,
            "How tides work\n\nThe Moon pulls on the oceans.\n\nTwice a day.\n\n\
             Spring tides\n\nNeap tides\n\nHigh 06:12\n\nEntities: & <ok>"
        );
    }

    #[test]
    fn title_falls_back_to_the_first_h1() {
        let (title, text) = extract("<p>Intro</p><h1> The  Metric System</h1><h1>Second</h1>");
        assert_eq!(title.as_deref(), Some("The Metric System"));
        assert_eq!(text, "Intro\n\nThe Metric System\n\nSecond");
        let (title, _) = extract("<title>  </title><p>No headings</p>");
        assert_eq!(title, None);
    }
}
