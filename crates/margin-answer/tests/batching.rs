//! Questions answered together in one batch (as the server's queue does) get
//! the answers they get alone, in both modes, with the real SmolLM2 (skipped,
//! and said so, without it).

use margin_answer::{Answerer, AskSettings, LoadedGenerator, RagMode};
use margin_core::config::RagConfig;
use margin_core::{Config, Passage};
use margin_generator::gguf::GgufModel;
use margin_index::SearchHit;
use margin_rag::sequence::SequenceDecoding;
use margin_testkit::real_model;

fn answerer() -> Option<Answerer> {
    let dir = real_model("answer_batching", "smollm2-135m-instruct")?;
    let gguf = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|x| x == "gguf"))
        .unwrap();
    let model = GgufModel::load("smollm2", &gguf, &candle_core::Device::Cpu).unwrap();
    let generator = LoadedGenerator {
        name: "smollm2".into(),
        tokenizer: tokenizers::Tokenizer::from_file(dir.join("tokenizer.json")).unwrap(),
        chat_template: model.chat_template().cloned(),
        prompt_bos: model.with_bos(vec![]).first().copied(),
        model: Box::new(model),
    };
    Some(Answerer::new(generator, rag()))
}

fn rag() -> RagConfig {
    Config::load(&Default::default()).unwrap().rag
}

fn hit(doc: &str, text: &str, score: f64) -> SearchHit {
    SearchHit {
        passage: Passage {
            id: format!("{doc}#0"),
            doc_id: doc.into(),
            title: doc.into(),
            text: text.into(),
            source: format!("{doc}.txt"),
            position: 0,
        },
        score,
    }
}

#[test]
fn a_batch_answers_each_question_as_it_would_be_answered_alone() {
    let Some(answerer) = answerer() else { return };
    let questions = [
        (
            "When is the Zorblax festival?",
            vec![
                hit(
                    "zorblax",
                    "The Zorblax festival is held every June in Quillmere.",
                    0.8,
                ),
                hit(
                    "pears",
                    "The orchard at Wendlow Hill grows forty kinds of pear.",
                    0.3,
                ),
            ],
        ),
        (
            "How many kinds of pear grow at Wendlow Hill?",
            vec![
                hit(
                    "pears",
                    "The orchard at Wendlow Hill grows forty kinds of pear.",
                    0.7,
                ),
                hit(
                    "bridge",
                    "The old stone bridge in Quillmere has nine arches.",
                    0.2,
                ),
            ],
        ),
        (
            "How many arches does the bridge have?",
            vec![
                hit(
                    "bridge",
                    "The old stone bridge in Quillmere has nine arches, built in 1790.",
                    0.75,
                ),
                hit(
                    "zorblax",
                    "The Zorblax festival is held every June in Quillmere.",
                    0.35,
                ),
            ],
        ),
    ];
    for mode in [RagMode::Token, RagMode::Sequence(SequenceDecoding::Fast)] {
        let settings = AskSettings {
            beams: 2,
            max_new_tokens: 12,
            ..AskSettings::from_config(&rag(), mode)
        };
        let prepared: Vec<_> = questions
            .iter()
            .map(|(q, hits)| {
                let mut p = answerer.prepare(q, hits.clone(), settings).unwrap();
                p.previews = true;
                p
            })
            .collect();
        let mut previews = vec![0usize; prepared.len()];
        let together = answerer
            .answer(&prepared, &mut |q, _| previews[q] += 1)
            .unwrap();
        assert!(
            previews.iter().all(|&n| n > 0),
            "{mode:?}: every question hears previews: {previews:?}"
        );
        for (i, p) in prepared.iter().enumerate() {
            let alone = answerer
                .answer(std::slice::from_ref(p), &mut |_, _| {})
                .unwrap()
                .remove(0);
            assert_eq!(together[i].answer, alone.answer, "{mode:?}, question {i}");
            assert_eq!(together[i].timings.batch, 3);
            for (a, b) in together[i].citations.iter().zip(&alone.citations) {
                assert_eq!(a.passage_id, b.passage_id, "{mode:?}, question {i}");
                assert!(
                    (a.posterior - b.posterior).abs() < 1e-3,
                    "{mode:?}, question {i}: {} vs {}",
                    a.posterior,
                    b.posterior
                );
            }
        }
        assert!(
            together[0].answer.contains("June"),
            "{mode:?}: {}",
            together[0].answer
        );
        assert_eq!(together[0].citations[0].doc_id, "zorblax");
    }
    // Questions with other settings or passage counts are refused together.
    let token = AskSettings::from_config(&rag(), RagMode::Token);
    let a = answerer
        .prepare("a?", questions[0].1.clone(), token)
        .unwrap();
    let b = answerer
        .prepare("b?", questions[1].1[..1].to_vec(), token)
        .unwrap();
    assert!(!a.batches_with(&b));
    assert!(answerer.answer(&[a, b], &mut |_, _| {}).is_err());
}

#[test]
fn closed_book_answers_from_the_question_alone() {
    let Some(answerer) = answerer() else { return };
    let settings = AskSettings {
        beams: 1,
        max_new_tokens: 12,
        ..AskSettings::from_config(&rag(), RagMode::Token)
    };
    let question = "What is the capital of France?";
    let prepared = answerer.prepare_closed_book(question, settings).unwrap();
    assert!(prepared.hits.is_empty());
    assert_eq!(prepared.rag.contexts.len(), 1);
    assert_eq!(prepared.rag.doc_log_prior, vec![0.0]);
    // The prompt is rag.closed_book_prompt through the chat template: the
    // question, and none of the per-passage prompt's wording.
    let prompt = answerer
        .generator()
        .tokenizer
        .decode(&prepared.rag.contexts[0], false)
        .unwrap();
    assert!(prompt.contains(question), "{prompt}");
    assert!(!prompt.contains("Passage:"), "{prompt}");
    assert!(prompt.contains("<|im_start|>assistant"), "{prompt}");

    let answers = answerer
        .answer(&[prepared.clone(), prepared], &mut |_, _| {})
        .unwrap();
    assert!(answers[0].citations.is_empty());
    assert_eq!(answers[0].answer, answers[1].answer);
    assert!(answers[0].answer.contains("Paris"), "{}", answers[0].answer);
    // A closed-book question cannot share a batch with one over passages.
    let over_passages = answerer
        .prepare(
            question,
            vec![hit("paris", "Paris is the capital of France.", 0.9)],
            settings,
        )
        .unwrap();
    let closed = answerer.prepare_closed_book(question, settings).unwrap();
    assert!(closed.batches_with(&answerer.prepare_closed_book("Who?", settings).unwrap()));
    assert!(!closed.batches_with(&{
        let mut two = over_passages.clone();
        two.rag.contexts.push(two.rag.contexts[0].clone());
        two.rag.doc_log_prior = vec![-0.7, -0.7];
        two
    }));
}

#[test]
fn one_prefill_answers_every_mode_as_each_mode_alone() {
    let Some(answerer) = answerer() else { return };
    let base = AskSettings {
        beams: 2,
        max_new_tokens: 12,
        ..AskSettings::from_config(&rag(), RagMode::Token)
    };
    let hits = vec![
        hit(
            "zorblax",
            "The Zorblax festival is held every June in Quillmere.",
            0.8,
        ),
        hit(
            "bridge",
            "The old stone bridge in Quillmere has nine arches.",
            0.4,
        ),
    ];
    let prepared = answerer
        .prepare("When is the Zorblax festival?", hits, base)
        .unwrap();
    let modes = [
        RagMode::Sequence(SequenceDecoding::Thorough),
        RagMode::Token,
        RagMode::Sequence(SequenceDecoding::Fast),
    ];
    let together = answerer
        .answer_in_modes(std::slice::from_ref(&prepared), &modes)
        .unwrap();
    assert_eq!(together.len(), modes.len());
    for (mode, answers) in modes.iter().zip(&together) {
        let mut alone = prepared.clone();
        alone.settings.mode = *mode;
        let alone = answerer.answer(&[alone], &mut |_, _| {}).unwrap().remove(0);
        assert_eq!(answers[0].answer, alone.answer, "{mode:?}");
        for (a, b) in answers[0].citations.iter().zip(&alone.citations) {
            assert_eq!(a.passage_id, b.passage_id, "{mode:?}");
            assert!((a.posterior - b.posterior).abs() < 1e-3, "{mode:?}");
        }
        // One prefill, reported with every mode.
        assert_eq!(answers[0].timings.prefill, together[0][0].timings.prefill);
    }
    assert!(
        together[1][0].answer.contains("June"),
        "{}",
        together[1][0].answer
    );
}
