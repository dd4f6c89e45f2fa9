//! SmolLM2's chat template from its GGUF file, rendered as transformers'
//! jinja2 renders it. Expected strings made with jinja2 3 (sandboxed
//! environment, trim_blocks and lstrip_blocks, as transformers):
//! `env.from_string(template).render(messages=..., add_generation_prompt=...)`.

use margin_generator::chat::{ChatMessage, ChatTemplate};
use margin_testkit::real_model;

#[test]
fn smollm2_template_renders_chatml_like_transformers() {
    let Some(dir) = real_model("chat_template", "smollm2-135m-instruct") else {
        return;
    };
    let template = ChatTemplate::from_gguf_file(&dir.join("SmolLM2-135M-Instruct.Q4_1.gguf"))
        .unwrap()
        .expect("SmolLM2 carries a chat template");
    let question = [ChatMessage::new(
        "user",
        "who got the first nobel prize in physics",
    )];
    assert_eq!(
        template.render(&question, true).unwrap(),
        "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n\
         <|im_start|>user\nwho got the first nobel prize in physics<|im_end|>\n<|im_start|>assistant\n"
    );
    let with_system = [
        ChatMessage::new("system", "Answer from the passage."),
        ChatMessage::new("user", "Passage: Röntgen won in 1901.\nQuestion: who won?"),
    ];
    assert_eq!(
        template.render(&with_system, false).unwrap(),
        "<|im_start|>system\nAnswer from the passage.<|im_end|>\n\
         <|im_start|>user\nPassage: Röntgen won in 1901.\nQuestion: who won?<|im_end|>\n"
    );
}

#[test]
fn gemma3_base_has_no_template() {
    let Some(dir) = real_model("chat_template", "gemma3-270m") else {
        return;
    };
    assert!(
        ChatTemplate::from_gguf_file(&dir.join("gemma-3-270m-q4_k_m.gguf"))
            .unwrap()
            .is_none()
    );
}
