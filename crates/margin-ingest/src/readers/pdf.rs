//! PDF: the text pdf-extract finds on the pages.

use std::panic::{self, AssertUnwindSafe};

use pdf_extract::{output_doc, Document, PlainTextOutput};

/// The text of the PDF in `bytes`, or a message saying why there is none.
///
/// pdf-extract panics on some malformed files instead of returning an error;
/// the panic is caught here so that one bad file does not end a batch. (The
/// default panic hook still prints the panic to stderr.)
pub(super) fn extract(bytes: &[u8]) -> Result<String, String> {
    panic::catch_unwind(AssertUnwindSafe(|| extract_unguarded(bytes))).unwrap_or_else(|payload| {
        let reason = payload
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| payload.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "unknown panic".to_string());
        Err(format!(
            "the PDF could not be read (pdf-extract failed: {reason}); it may be damaged or use \
             features pdf-extract does not support"
        ))
    })
}

fn extract_unguarded(bytes: &[u8]) -> Result<String, String> {
    let document = Document::load_mem(bytes).map_err(|e| {
        format!("not a readable PDF ({e}); the file may be damaged or not a PDF at all")
    })?;
    // lopdf has already tried the empty user password; an `Encrypt` entry left
    // in the trailer means the file needs a real one.
    if document.trailer.get(b"Encrypt").is_ok() {
        return Err(
            "the PDF is encrypted and needs a password; decrypt it first \
                    (e.g. `qpdf --decrypt --password=PASSWORD in.pdf out.pdf`)"
                .to_string(),
        );
    }
    let mut text = String::new();
    output_doc(&document, &mut PlainTextOutput::new(&mut text))
        .map_err(|e| format!("text extraction failed ({e})"))?;
    if text.trim().is_empty() {
        return Err("the PDF has no extractable text; a scanned PDF needs OCR first".to_string());
    }
    Ok(text)
}
