//! End to end: real files of every format, good and bad, through the batch API.
//!
//! Fixtures are written into a temporary directory by the test that uses them,
//! so each test shows its input; PDFs are built with lopdf (the library
//! pdf-extract reads them with), text drawn in the standard Helvetica font.

use std::fs;
use std::path::{Path, PathBuf};

use lopdf::content::{Content, Operation};
use lopdf::{
    dictionary, Document as Pdf, EncryptionState, EncryptionVersion, Object, Permissions, Stream,
};
use margin_core::config::ChunkingConfig;
use margin_core::{stable_id, Passage};
use margin_ingest::{
    ingest_file, ingest_paths, read_documents, Chunker, FileOutcome, FileReport, Format,
    IngestReport,
};

fn chunker() -> Chunker {
    Chunker::new(ChunkingConfig {
        words: 100,
        overlap: 0,
    })
    .unwrap()
}

fn write(dir: &Path, name: &str, contents: impl AsRef<[u8]>) -> PathBuf {
    let path = dir.join(name);
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    fs::write(&path, contents).unwrap();
    path
}

/// How a test PDF departs from a plain, valid one.
#[derive(PartialEq)]
enum Variant<'a> {
    Plain,
    /// Encrypted with this user password.
    Encrypted(&'a str),
    /// Without the page size it must have, on which pdf-extract 0.12 panics.
    NoMediaBox,
}

/// A one-page PDF showing `lines`, one under another.
fn pdf(lines: &[&str], variant: Variant) -> Vec<u8> {
    let mut doc = Pdf::with_version("1.5");
    let pages_id = doc.new_object_id();
    let font_id = doc.add_object(dictionary! {
        "Type" => "Font",
        "Subtype" => "Type1",
        "BaseFont" => "Helvetica",
    });
    let resources_id = doc.add_object(dictionary! {
        "Font" => dictionary! { "F1" => font_id },
    });
    let mut operations = vec![
        Operation::new("BT", vec![]),
        Operation::new("Tf", vec!["F1".into(), 12.into()]),
        Operation::new("TL", vec![16.into()]),
        Operation::new("Td", vec![72.into(), 720.into()]),
    ];
    for line in lines {
        operations.push(Operation::new("Tj", vec![Object::string_literal(*line)]));
        operations.push(Operation::new("T*", vec![]));
    }
    operations.push(Operation::new("ET", vec![]));
    let content = Content { operations };
    let content_id = doc.add_object(Stream::new(dictionary! {}, content.encode().unwrap()));
    let page_id = doc.add_object(dictionary! {
        "Type" => "Page",
        "Parent" => pages_id,
        "Contents" => content_id,
    });
    let mut pages = dictionary! {
        "Type" => "Pages",
        "Kids" => vec![page_id.into()],
        "Count" => 1,
        "Resources" => resources_id,
    };
    if variant != Variant::NoMediaBox {
        pages.set("MediaBox", vec![0.into(), 0.into(), 612.into(), 792.into()]);
    }
    doc.objects.insert(pages_id, Object::Dictionary(pages));
    let catalog_id = doc.add_object(dictionary! {
        "Type" => "Catalog",
        "Pages" => pages_id,
    });
    doc.trailer.set("Root", catalog_id);
    doc.trailer.set(
        "ID",
        vec![
            Object::string_literal("margin-test-id-0"),
            Object::string_literal("margin-test-id-0"),
        ],
    );
    if let Variant::Encrypted(password) = variant {
        let state = EncryptionState::try_from(EncryptionVersion::V2 {
            document: &doc,
            owner_password: "owner",
            user_password: password,
            key_length: 128,
            permissions: Permissions::all(),
        })
        .unwrap();
        doc.encrypt(&state).unwrap();
    }
    let mut bytes = Vec::new();
    doc.save_to(&mut bytes).unwrap();
    bytes
}

fn outcome_of<'a>(report: &'a IngestReport, name: &str) -> &'a FileReport {
    report
        .files
        .iter()
        .find(|f| f.path.ends_with(name))
        .unwrap_or_else(|| panic!("no report for {name}: {:#?}", report.files))
}

fn error_of(report: &IngestReport, name: &str) -> String {
    match &outcome_of(report, name).outcome {
        FileOutcome::Failed { error } => error.clone(),
        other => panic!("{name} should have failed, got {other:?}"),
    }
}

fn passages_of<'a>(report: &'a IngestReport, name: &str) -> Vec<&'a Passage> {
    report
        .passages
        .iter()
        .filter(|p| p.source.ends_with(name) || p.source.contains(&format!("{name}:")))
        .collect()
}

#[test]
fn text_file_is_one_document_titled_by_its_stem() {
    let dir = tempfile::tempdir().unwrap();
    let path = write(
        dir.path(),
        "honeybees.txt",
        "\u{feff}A colony has one queen.\n\nWorkers  forage for\tnectar.\n",
    );
    let passages = ingest_file(&path, &chunker()).unwrap();
    let source = path.to_string_lossy().to_string();
    assert_eq!(
        passages,
        [Passage {
            id: format!("{}#0", stable_id(&source)),
            doc_id: stable_id(&source),
            title: "honeybees".into(),
            text: "A colony has one queen. Workers forage for nectar.".into(),
            source,
            position: 0,
        }]
    );
}

#[test]
fn markdown_is_read_as_rendered_text_titled_by_its_first_heading() {
    let dir = tempfile::tempdir().unwrap();
    let path = write(
        dir.path(),
        "tides.md",
        "# How *tides* work\n\nThe Moon's **gravity** pulls the ocean.\n\n## Spring tides\n\n\
         - Sun and Moon align\n- [More](http://example.org)\n",
    );
    let documents = read_documents(&path).unwrap();
    assert_eq!(documents.len(), 1);
    assert_eq!(documents[0].title, "How tides work");
    assert_eq!(
        documents[0].text,
        "How tides work\n\nThe Moon's gravity pulls the ocean.\n\nSpring tides\n\nSun and Moon align\n\nMore"
    );
    // A Markdown file without headings is titled by its stem.
    let path = write(dir.path(), "notes.markdown", "Only a paragraph.");
    assert_eq!(read_documents(&path).unwrap()[0].title, "notes");
}

#[test]
fn html_is_read_as_visible_text() {
    let dir = tempfile::tempdir().unwrap();
    let path = write(
        dir.path(),
        "press.html",
        "<html><head><title>The Printing Press</title><script>track()</script></head>\
         <body><nav>Home</nav><h1>Gutenberg</h1><p>Movable type, about 1440.</p>\
         <style>.x{}</style><p>It spread to <i>Venice</i>.</p></body></html>",
    );
    let documents = read_documents(&path).unwrap();
    assert_eq!(documents[0].title, "The Printing Press");
    assert_eq!(
        documents[0].text,
        "Home\n\nGutenberg\n\nMovable type, about 1440.\n\nIt spread to Venice."
    );
    let path = write(
        dir.path(),
        "untitled.htm",
        "<p>No title or heading here.</p>",
    );
    assert_eq!(read_documents(&path).unwrap()[0].title, "untitled");
}

#[test]
fn pdf_text_is_extracted() {
    let dir = tempfile::tempdir().unwrap();
    let path = write(
        dir.path(),
        "lighthouse.pdf",
        pdf(
            &[
                "The Pharos of Alexandria was among the first lighthouses.",
                "Fresnel lenses later made the beams visible for miles.",
            ],
            Variant::Plain,
        ),
    );
    let passages = ingest_file(&path, &chunker()).unwrap();
    assert_eq!(passages.len(), 1);
    assert_eq!(passages[0].title, "lighthouse");
    assert_eq!(
        passages[0].text,
        "The Pharos of Alexandria was among the first lighthouses. \
         Fresnel lenses later made the beams visible for miles."
    );
}

#[test]
fn jsonl_records_keep_their_ids_and_are_sourced_by_line() {
    let dir = tempfile::tempdir().unwrap();
    let path = write(
        dir.path(),
        "corpus.jsonl",
        concat!(
            r#"{"id": "bees-1", "title": "Honeybee", "text": "Bees dance to share directions.", "source": "demo"}"#,
            "\n\n",
            r#"{"id": 7, "title": "Tide", "text": "Tides rise twice a day."}"#,
            "\r\n",
        ),
    );
    let passages = ingest_file(&path, &chunker()).unwrap();
    let shown: Vec<(&str, &str, &str, &str)> = passages
        .iter()
        .map(|p| {
            (
                p.id.as_str(),
                p.doc_id.as_str(),
                p.title.as_str(),
                p.text.as_str(),
            )
        })
        .collect();
    assert_eq!(
        shown,
        [
            (
                "bees-1#0",
                "bees-1",
                "Honeybee",
                "Bees dance to share directions."
            ),
            ("7#0", "7", "Tide", "Tides rise twice a day."),
        ]
    );
    let display = path.display();
    assert_eq!(passages[0].source, format!("{display}:1"));
    assert_eq!(passages[1].source, format!("{display}:3"));
}

#[test]
fn dpr_tsv_rows_are_documents_with_quoting_undone() {
    let dir = tempfile::tempdir().unwrap();
    let path = write(
        dir.path(),
        "psgs_w100.tsv",
        "id\ttext\ttitle\n\
         1\t\"Aaron Aaron ( or ; \"\"Ahärôn\"\") is a prophet, high priest, and the brother of Moses.\"\tAaron\n\
         2\tSo the Moon pulls the sea.\tTide\n",
    );
    let documents = read_documents(&path).unwrap();
    assert_eq!(documents.len(), 2);
    assert_eq!(documents[0].id, "1");
    assert_eq!(documents[0].title, "Aaron");
    assert_eq!(
        documents[0].text,
        "Aaron Aaron ( or ; \"Ahärôn\") is a prophet, high priest, and the brother of Moses."
    );
    assert_eq!(documents[1].source, format!("{}:3", path.display()));
}

#[test]
fn a_batch_reports_each_bad_file_and_goes_on() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    write(
        d,
        "a_good.txt",
        "The metric system was adopted in France in 1795.",
    );
    write(d, "binary.txt", b"MZ\x90\x00\x03\x00\x00\x00");
    write(d, "latin1.md", b"# Caf\xe9\n\nOpen late.");
    write(d, "blank.html", "<html><body>  <p> </p>\n</body></html>");
    write(d, "empty.txt", "");
    write(
        d,
        "secret.pdf",
        pdf(&["Classified text."], Variant::Encrypted("swordfish")),
    );
    write(d, "panics.pdf", pdf(&["Never shown."], Variant::NoMediaBox));
    write(
        d,
        "broken.pdf",
        b"%PDF-1.4\n1 0 obj\n<< /Type /Catalog /Pages 2 0 R >>\nendobj\ntrailer\n",
    );
    write(d, "notapdf.pdf", "just some words, no PDF at all");
    write(
        d,
        "records.jsonl",
        "{\"id\": \"r1\", \"title\": \"T\", \"text\": \"Fine.\"}\n{\"id\": \"r2\", \"title\": \"T\"\n",
    );
    write(d, "empty.jsonl", "\n\n");
    write(
        d,
        "psgs.tsv",
        "id\ttext\ttitle\n1\tFine text.\tT\n2\tonly two fields\n",
    );
    write(
        d,
        "z_good.md",
        "# Last\n\nStill read after all the failures.",
    );

    let report = ingest_paths(&[d.to_path_buf()], &chunker());

    let error = error_of(&report, "binary.txt");
    assert!(
        error.contains("binary.txt") && error.contains("binary file"),
        "{error}"
    );
    let error = error_of(&report, "latin1.md");
    assert!(
        error.contains("latin1.md") && error.contains("not valid UTF-8"),
        "{error}"
    );
    for name in ["blank.html", "empty.txt"] {
        let error = error_of(&report, name);
        assert!(
            error.contains(name) && error.contains("empty or only whitespace"),
            "{error}"
        );
    }
    let error = error_of(&report, "secret.pdf");
    assert!(
        error.contains("secret.pdf") && error.contains("encrypted"),
        "{error}"
    );
    for name in ["broken.pdf", "notapdf.pdf"] {
        let error = error_of(&report, name);
        assert!(
            error.contains(name) && error.contains("not a readable PDF"),
            "{error}"
        );
    }
    let error = error_of(&report, "panics.pdf");
    assert!(
        error.contains("panics.pdf") && error.contains("pdf-extract failed"),
        "{error}"
    );
    let error = error_of(&report, "records.jsonl");
    assert!(
        error.contains("records.jsonl: line 2: EOF while parsing"),
        "{error}"
    );
    let error = error_of(&report, "empty.jsonl");
    assert!(error.contains("no records"), "{error}");
    let error = error_of(&report, "psgs.tsv");
    assert!(
        error.contains("psgs.tsv: line 3: expected 3 tab-separated fields"),
        "{error}"
    );

    // The good files on either side of the bad ones are read in full, and a
    // failed file contributes no passages, not even from its good lines.
    let texts: Vec<&str> = report.passages.iter().map(|p| p.text.as_str()).collect();
    assert_eq!(
        texts,
        [
            "The metric system was adopted in France in 1795.",
            "Last Still read after all the failures."
        ]
    );
    assert_eq!(report.totals.files_ingested, 2);
    assert_eq!(report.totals.files_failed, 11);
    assert_eq!(report.totals.passages, 2);
    assert!(passages_of(&report, "records.jsonl").is_empty());
}

#[test]
fn directories_are_walked_in_order_skipping_hidden_and_unknown_files() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    write(d, "b.txt", "Second file.");
    write(d, "a/inner.md", "First file, in a subdirectory.");
    write(d, "c.docx", "not read");
    write(d, "LICENSE", "no extension");
    write(d, ".hidden.txt", "never read");
    write(d, ".git/config.txt", "never read");
    let missing = d.join("missing.txt");

    let report = ingest_paths(
        &[d.to_path_buf(), d.join("b.txt"), missing.clone()],
        &chunker(),
    );
    let shown: Vec<(String, &str)> = report
        .files
        .iter()
        .map(|f| {
            let name = Path::new(&f.path)
                .strip_prefix(d)
                .unwrap()
                .display()
                .to_string();
            let status = match &f.outcome {
                FileOutcome::Ingested => "ingested",
                FileOutcome::Skipped { .. } => "skipped",
                FileOutcome::Failed { .. } => "failed",
            };
            (name, status)
        })
        .collect();
    let expected = [
        ("LICENSE", "skipped"),
        ("a/inner.md", "ingested"),
        ("b.txt", "ingested"),
        ("c.docx", "skipped"),
        ("b.txt", "skipped"),
        ("missing.txt", "failed"),
    ];
    let expected: Vec<(String, &str)> = expected.iter().map(|&(n, s)| (n.to_string(), s)).collect();
    assert_eq!(shown, expected);

    match &outcome_of(&report, "c.docx").outcome {
        FileOutcome::Skipped { reason } => {
            assert!(reason.contains("unsupported file type"), "{reason}")
        }
        other => panic!("{other:?}"),
    }
    assert!(error_of(&report, "missing.txt").contains("missing.txt"));
    assert_eq!(
        outcome_of(&report, "inner.md").format,
        Some(Format::Markdown)
    );
    assert_eq!(report.totals.files_skipped, 3);
    assert_eq!(report.totals.documents, 2);
}

#[cfg(unix)]
#[test]
fn links_to_directories_are_not_followed_but_links_to_files_are() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    write(d, "docs/real.txt", "Read through the link.");
    std::os::unix::fs::symlink(d.join("docs"), d.join("docs/loop")).unwrap();
    std::os::unix::fs::symlink(d.join("docs/real.txt"), d.join("docs/alias.txt")).unwrap();
    let report = ingest_paths(&[d.join("docs")], &chunker());
    match &outcome_of(&report, "loop").outcome {
        FileOutcome::Skipped { reason } => assert!(reason.contains("not followed"), "{reason}"),
        other => panic!("{other:?}"),
    }
    // The alias is another path to the same file, so both are read, with distinct ids.
    assert_eq!(
        outcome_of(&report, "alias.txt").outcome,
        FileOutcome::Ingested
    );
    assert_eq!(
        outcome_of(&report, "real.txt").outcome,
        FileOutcome::Ingested
    );
    assert_eq!(report.passages.len(), 2);
}

#[test]
fn same_input_gives_same_passages_and_ids() {
    let dir = tempfile::tempdir().unwrap();
    let sentence = "The lighthouse keeper trimmed the wick at dusk. ";
    let path = write(dir.path(), "keeper.txt", sentence.repeat(40));
    let first = ingest_paths(std::slice::from_ref(&path), &chunker());
    let second = ingest_paths(std::slice::from_ref(&path), &chunker());
    assert_eq!(first.passages, second.passages);
    let doc_id = stable_id(&path.to_string_lossy());
    let ids: Vec<String> = first.passages.iter().map(|p| p.id.clone()).collect();
    // 320 words in 8-word sentences: cuts after 12 sentences (96 words), leaving 32.
    assert_eq!(
        ids,
        [
            format!("{doc_id}#0"),
            format!("{doc_id}#1"),
            format!("{doc_id}#2"),
            format!("{doc_id}#3")
        ]
    );
    let lengths: Vec<usize> = first
        .passages
        .iter()
        .map(|p| p.text.split(' ').count())
        .collect();
    assert_eq!(lengths, [96, 96, 96, 32]);
}

#[test]
fn a_document_id_used_by_an_earlier_file_fails_the_later_file() {
    let dir = tempfile::tempdir().unwrap();
    let record = "{\"id\": \"x1\", \"title\": \"T\", \"text\": \"Some text.\"}\n";
    let first = write(dir.path(), "one.jsonl", record);
    let second = write(dir.path(), "two.jsonl", record);
    let report = ingest_paths(&[first, second], &chunker());
    let error = error_of(&report, "two.jsonl");
    assert!(
        error.contains("document id `x1` was already read from") && error.contains("one.jsonl"),
        "{error}"
    );
    assert_eq!(report.passages.len(), 1);
}

#[test]
fn a_repeated_id_inside_a_corpus_file_names_both_lines() {
    let dir = tempfile::tempdir().unwrap();
    let path = write(
        dir.path(),
        "dup.jsonl",
        "{\"id\": \"x1\", \"title\": \"T\", \"text\": \"A.\"}\n{\"id\": \"x1\", \"title\": \"T\", \"text\": \"B.\"}\n",
    );
    let error = read_documents(&path).unwrap_err().to_string();
    assert!(
        error.ends_with("line 2: id `x1` was already used on line 1"),
        "{error}"
    );
}

#[test]
fn corpus_file_errors_name_the_line_and_what_is_wrong() {
    let dir = tempfile::tempdir().unwrap();
    let cases: [(&str, &[u8], &str); 6] = [
        (
            "header.tsv",
            b"pid\tbody\n1\tText\n",
            "line 1: the header must name the columns id, text and title",
        ),
        ("only_header.tsv", b"id\ttext\ttitle\n", "no records"),
        (
            "null_id.jsonl",
            b"{\"id\": null, \"title\": \"T\", \"text\": \"x\"}\n",
            "line 1: `id` must be a string or a number, not null",
        ),
        (
            "no_text.jsonl",
            b"{\"id\": \"a\", \"title\": \"T\", \"text\": \"x\"}\n{\"id\": \"b\", \"title\": \"T\", \"text\": \" \"}\n",
            "line 2: record `b` has no text",
        ),
        (
            "missing_title.jsonl",
            b"{\"id\": \"a\", \"text\": \"x\"}\n",
            "line 1: missing field `title`",
        ),
        (
            "latin1.jsonl",
            b"{\"id\": \"a\", \"title\": \"T\", \"text\": \"x\"}\n{\"id\": \"b\", \"title\": \"Caf\xe9\", \"text\": \"x\"}\n",
            "line 2: not valid UTF-8 (bad byte at column 26)",
        ),
    ];
    for (name, contents, expected) in cases {
        let path = write(dir.path(), name, contents);
        let error = read_documents(&path).unwrap_err().to_string();
        assert!(error.starts_with(&path.display().to_string()), "{error}");
        assert!(error.contains(expected), "{name}: {error}");
    }
}

#[test]
fn report_serializes_as_a_summary_with_a_status_per_file() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "a.txt", "Hello there.");
    write(dir.path(), "b.txt", "");
    let report = ingest_paths(&[dir.path().to_path_buf()], &chunker());
    let json = serde_json::to_value(&report).unwrap();
    assert_eq!(json["files"][0]["status"], "ingested");
    assert_eq!(json["files"][0]["format"], "text");
    assert_eq!(json["files"][0]["passages"], 1);
    assert_eq!(json["files"][1]["status"], "failed");
    assert!(json["files"][1]["error"]
        .as_str()
        .unwrap()
        .contains("b.txt"));
    assert_eq!(json["totals"]["files_failed"], 1);
    assert!(json.get("passages").is_none());
}
