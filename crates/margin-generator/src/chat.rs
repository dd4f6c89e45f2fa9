//! Chat templates: the Jinja template a GGUF file carries in
//! `tokenizer.chat_template`, rendered as transformers renders it (jinja2
//! with `trim_blocks` and `lstrip_blocks`).

use std::path::Path;

use candle_core::quantized::gguf_file;
use margin_core::{OperationError, OperationResult};

/// One chat turn.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChatMessage {
    /// `system`, `user` or `assistant`.
    pub role: String,
    /// What was said.
    pub content: String,
}

impl ChatMessage {
    /// A turn of `role`.
    pub fn new(role: &str, content: impl Into<String>) -> ChatMessage {
        ChatMessage {
            role: role.to_string(),
            content: content.into(),
        }
    }
}

/// A model's chat template.
#[derive(Debug, Clone)]
pub struct ChatTemplate {
    source: String,
}

impl ChatTemplate {
    /// The template in `content`'s metadata; `None` for models without one
    /// (base models such as Gemma 3 270M are prompted with plain text).
    pub fn from_gguf(content: &gguf_file::Content) -> Option<ChatTemplate> {
        let source = content
            .metadata
            .get("tokenizer.chat_template")?
            .to_string()
            .ok()?;
        Some(ChatTemplate {
            source: source.clone(),
        })
    }

    /// The template of the GGUF file at `path` (its metadata only is read).
    pub fn from_gguf_file(path: &Path) -> OperationResult<Option<ChatTemplate>> {
        let mut file = std::fs::File::open(path).map_err(|e| OperationError::io(path, e))?;
        let content = gguf_file::Content::read(&mut file).map_err(|e| {
            OperationError::bad_input(path.display().to_string(), format!("not a GGUF file: {e}"))
        })?;
        Ok(ChatTemplate::from_gguf(&content))
    }

    /// A template from its Jinja source.
    pub fn new(source: impl Into<String>) -> ChatTemplate {
        ChatTemplate {
            source: source.into(),
        }
    }

    /// The prompt for `messages`; with `add_generation_prompt`, ending where
    /// the assistant's reply begins.
    pub fn render(
        &self,
        messages: &[ChatMessage],
        add_generation_prompt: bool,
    ) -> OperationResult<String> {
        let error = |e: minijinja::Error| OperationError::bad_input("chat template", e.to_string());
        let mut env = minijinja::Environment::new();
        env.set_syntax(
            minijinja::syntax::SyntaxConfig::builder()
                .trim_blocks(true)
                .lstrip_blocks(true)
                .build()
                .map_err(error)?,
        );
        env.add_template("chat", &self.source).map_err(error)?;
        env.get_template("chat")
            .and_then(|t| {
                t.render(minijinja::context! {
                    messages => messages
                        .iter()
                        .map(|m| minijinja::context! { role => m.role.as_str(), content => m.content.as_str() })
                        .collect::<Vec<_>>(),
                    add_generation_prompt => add_generation_prompt,
                })
            })
            .map_err(error)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Expected strings from jinja2 with trim_blocks and lstrip_blocks:
    /// the newline after a block tag goes, text indentation stays.
    #[test]
    fn renders_with_trimmed_blocks_and_reports_template_errors() {
        let template = ChatTemplate::new(
            "{% for m in messages %}\n  [{{ m['role'] }}] {{ m['content'] }}\n{% endfor %}\n{% if add_generation_prompt %}[assistant]{% endif %}",
        );
        let messages = [
            ChatMessage::new("user", "hi"),
            ChatMessage::new("assistant", "hello"),
        ];
        assert_eq!(
            template.render(&messages, true).unwrap(),
            "  [user] hi\n  [assistant] hello\n[assistant]"
        );
        assert_eq!(
            template.render(&messages, false).unwrap(),
            "  [user] hi\n  [assistant] hello\n"
        );
        let broken = ChatTemplate::new("{% for m in messages %}");
        assert!(broken
            .render(&messages, true)
            .unwrap_err()
            .to_string()
            .starts_with("chat template"));
    }
}
