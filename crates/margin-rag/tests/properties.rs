//! Properties of the marginalisations on the tiny random BART, for random
//! passages and document scores: one passage reduces both models to plain
//! generation; posteriors are distributions; fast RAG-Sequence decoding
//! never scores a hypothesis above thorough decoding.

use candle_core::{DType, Device};
use margin_generator::bart::Bart;
use margin_generator::decoding::{beam_search, greedy_search};
use margin_generator::{Generator, Stepper};
use margin_rag::attribution::{answer_likelihoods, posterior};
use margin_rag::sequence::{self, SequenceDecoding};
use margin_rag::{document_log_prior, token, DecodeSettings, Prefilled, Question, Timings};
use proptest::prelude::*;

fn bart() -> Bart {
    let dir = margin_testkit::workspace_root().join("tests/fixtures/bart/tiny-gelu");
    Bart::load(&dir, &Device::Cpu, DType::F32).unwrap()
}

fn settings(num_beams: usize) -> DecodeSettings {
    DecodeSettings {
        num_beams,
        max_length: 8,
        min_length: 0,
        no_repeat_ngram_size: 2,
        length_penalty: 1.0,
        early_stopping: true,
        forced_bos_token_id: None,
        forced_eos_token_id: Some(2),
    }
}

/// A context of the tiny vocabulary: BOS, 1–8 ordinary tokens, EOS.
fn context() -> impl Strategy<Value = Vec<u32>> {
    prop::collection::vec(3u32..96, 1..8).prop_map(|mut body| {
        body.insert(0, 0);
        body.push(2);
        body
    })
}

fn question(contexts: Vec<Vec<u32>>, scores: &[f32]) -> Question {
    Question {
        contexts,
        doc_log_prior: document_log_prior(scores, 1.0).unwrap(),
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    #[test]
    fn one_passage_is_plain_generation(ctx in context(), score in -5.0f32..5.0, beams in 1usize..4) {
        let bart = bart();
        let q = question(vec![ctx.clone()], &[score]);
        let s = settings(beams);
        let rules = s.rules(bart.special_tokens().eos);
        let start = vec![bart.output_start()];
        let mut stepper = Stepper::new(bart.prepare(std::slice::from_ref(&ctx)).unwrap(), beams);
        let plain: Vec<u32> = if beams == 1 {
            greedy_search(start, &rules, 1, |r| stepper.next_log_probs(r)).unwrap().remove(0)
        } else {
            beam_search(start, &rules, &s.beams(1, 1), |r| stepper.next_log_probs(r)).unwrap().remove(0).remove(0).tokens
        };
        let rag = token::generate(&bart, std::slice::from_ref(&q), &s, &mut Timings::default(), &mut |_, _| {}).unwrap().remove(0);
        prop_assert_eq!(&rag.tokens, &plain);
        // Its score is the answer's likelihood, end of sequence included.
        let alone = answer_likelihoods(&bart, &q, &plain[1..]).unwrap()[0];
        prop_assert!((rag.per_doc[0] - alone).abs() < 1e-3, "{} vs {}", rag.per_doc[0], alone);
        // RAG-Sequence: p(y|x) is p(y|x,z), scored exactly as the beams did.
        for decoding in [SequenceDecoding::Thorough, SequenceDecoding::Fast] {
            let answers = sequence::generate(&bart, std::slice::from_ref(&q), &s, decoding, 10, &mut Timings::default(), &mut |_, _| {}).unwrap().remove(0);
            for a in &answers {
                prop_assert!((a.log_prob - a.per_doc[0]).abs() < 1e-5);
                let alone = answer_likelihoods(&bart, &q, &a.tokens[1..]).unwrap()[0];
                prop_assert!((a.per_doc[0] - alone).abs() < 1e-3, "{} vs {}", a.per_doc[0], alone);
            }
        }
    }

    #[test]
    fn posteriors_are_distributions(
        contexts in prop::collection::vec(context(), 1..5),
        scores in prop::collection::vec(-5.0f32..5.0, 5),
    ) {
        let bart = bart();
        let n = contexts.len();
        let q = question(contexts, &scores[..n]);
        let answer = token::generate(&bart, std::slice::from_ref(&q), &settings(1), &mut Timings::default(), &mut |_, _| {}).unwrap().remove(0);
        let per_doc = answer_likelihoods(&bart, &q, &answer.tokens[1..]).unwrap();
        for (batched, alone) in answer.per_doc.iter().zip(&per_doc) {
            prop_assert!((batched - alone).abs() < 1e-3, "{batched} vs {alone}");
        }
        let post = posterior(&q.doc_log_prior, &per_doc);
        prop_assert!((post.iter().sum::<f32>() - 1.0).abs() < 1e-5);
        prop_assert!(post.iter().all(|p| (0.0..=1.0).contains(p)));
    }

    #[test]
    fn fast_never_scores_above_thorough(
        contexts in prop::collection::vec(context(), 2..5),
        scores in prop::collection::vec(-5.0f32..5.0, 5),
    ) {
        let bart = bart();
        let n = contexts.len();
        let q = question(contexts, &scores[..n]);
        let s = settings(3);
        let thorough = sequence::generate(&bart, std::slice::from_ref(&q), &s, SequenceDecoding::Thorough, 100, &mut Timings::default(), &mut |_, _| {}).unwrap().remove(0);
        let fast = sequence::generate(&bart, std::slice::from_ref(&q), &s, SequenceDecoding::Fast, 100, &mut Timings::default(), &mut |_, _| {}).unwrap().remove(0);
        prop_assert_eq!(fast.len(), thorough.len());
        for f in &fast {
            let t = thorough.iter().find(|t| t.tokens == f.tokens).expect("the same candidates");
            prop_assert!(f.log_prob <= t.log_prob + 1e-4, "{} > {}", f.log_prob, t.log_prob);
            // Where fast has a score, the beam's own log-probability is the forced one.
            for (a, b) in f.per_doc.iter().zip(&t.per_doc) {
                if a.is_finite() {
                    prop_assert!((a - b).abs() < 1e-3, "{} vs {}", a, b);
                }
            }
        }
    }

    #[test]
    fn one_prefill_serves_every_mode(
        contexts in prop::collection::vec(context(), 1..4),
        scores in prop::collection::vec(-5.0f32..5.0, 4),
        beams in 1usize..3,
    ) {
        let bart = bart();
        let n = contexts.len();
        let questions = [question(contexts.clone(), &scores[..n]), question(contexts.into_iter().rev().collect(), &scores[..n])];
        let s = settings(beams);
        let quiet = &mut |_: usize, _: &[u32]| {};
        let alone_token = token::generate(&bart, &questions, &s, &mut Timings::default(), quiet).unwrap();
        let alone_thorough = sequence::generate(&bart, &questions, &s, SequenceDecoding::Thorough, 100, &mut Timings::default(), quiet).unwrap();
        let alone_fast = sequence::generate(&bart, &questions, &s, SequenceDecoding::Fast, 100, &mut Timings::default(), quiet).unwrap();

        let mut timings = Timings::default();
        let prefilled = Prefilled::new(&bart, questions.to_vec(), &mut timings).unwrap();
        let prefill = timings.prefill;
        // Every mode in turn, token last again: none may disturb the prefill.
        let thorough = sequence::generate_prefilled(&bart, &prefilled, &s, SequenceDecoding::Thorough, 100, &mut timings, quiet).unwrap();
        let token_first = token::generate_prefilled(&bart, &prefilled, &s, &mut timings, quiet).unwrap();
        let fast = sequence::generate_prefilled(&bart, &prefilled, &s, SequenceDecoding::Fast, 100, &mut timings, quiet).unwrap();
        let token_again = token::generate_prefilled(&bart, &prefilled, &s, &mut timings, quiet).unwrap();
        prop_assert_eq!(timings.prefill, prefill, "decoding never prefills again");
        for (shared, alone) in [(&token_first, &alone_token), (&token_again, &alone_token)] {
            for (a, b) in shared.iter().zip(alone) {
                prop_assert_eq!(&a.tokens, &b.tokens);
                for (x, y) in a.per_doc.iter().zip(&b.per_doc) {
                    prop_assert!((x - y).abs() < 1e-4, "{} vs {}", x, y);
                }
            }
        }
        for (shared, alone) in [(&thorough, &alone_thorough), (&fast, &alone_fast)] {
            for (a, b) in shared.iter().zip(alone) {
                prop_assert_eq!(a.len(), b.len());
                for (x, y) in a.iter().zip(b) {
                    prop_assert_eq!(&x.tokens, &y.tokens);
                    prop_assert!((x.log_prob - y.log_prob).abs() < 1e-4, "{} vs {}", x.log_prob, y.log_prob);
                }
            }
        }
    }
}
