//! Greedy search, beam search and nucleus sampling over any model that gives next-token
//! log-probabilities for a batch of rows, with Hugging Face's semantics
//! (logits processors, beam bookkeeping, length penalty, early stopping), so
//! that margin's outputs can be checked token for token against transformers.

use margin_core::OperationResult;

/// Score that rules a token out (as the processors' -inf).
const BANNED: f32 = f32::NEG_INFINITY;

/// Penalty transformers adds to scores that must not win a top-k.
const OUT: f32 = -1.0e9;

/// Constraints on every step, Hugging Face's logits processors. Lengths
/// count the rows as the decoding functions get them: for BART the decoder
/// start token and the output; for decoder-only models only the output
/// (transformers would count the prompt too), and `forced_bos_token_id`
/// forces the token after the first.
#[derive(Debug, Clone, Default)]
pub struct StepRules {
    /// End-of-sequence token.
    pub eos_token_id: u32,
    /// Longest sequence, decoder start token included.
    pub max_length: usize,
    /// EOS is banned while a sequence is shorter than this.
    pub min_length: usize,
    /// N-grams of this size may occur only once (0: off).
    pub no_repeat_ngram_size: usize,
    /// Token forced as the first generated one.
    pub forced_bos_token_id: Option<u32>,
    /// Token forced as the last one at `max_length`.
    pub forced_eos_token_id: Option<u32>,
}

impl StepRules {
    /// Refuses token ids the model's vocabulary of `vocab` does not have.
    pub fn check(&self, vocab: usize) -> OperationResult<()> {
        let ids = [
            Some(self.eos_token_id),
            self.forced_bos_token_id,
            self.forced_eos_token_id,
        ];
        match ids.into_iter().flatten().find(|&t| t as usize >= vocab) {
            Some(bad) => Err(margin_core::OperationError::bad_input(
                "decoding",
                format!("token {bad} is outside the vocabulary of {vocab}"),
            )),
            None => Ok(()),
        }
    }

    /// Applies the rules to the log-probabilities of the token after `sequence`.
    pub fn apply(&self, sequence: &[u32], log_probs: &mut [f32]) {
        let len = sequence.len();
        if len < self.min_length {
            log_probs[self.eos_token_id as usize] = BANNED;
        }
        for token in self.repeated_ngram_ends(sequence) {
            log_probs[token as usize] = BANNED;
        }
        let forced = match len {
            1 => self.forced_bos_token_id,
            _ if len + 1 == self.max_length => self.forced_eos_token_id,
            _ => None,
        };
        if let Some(token) = forced {
            log_probs.iter_mut().for_each(|p| *p = BANNED);
            log_probs[token as usize] = 0.0;
        }
    }

    /// Tokens that would complete an n-gram already in `sequence`.
    fn repeated_ngram_ends(&self, sequence: &[u32]) -> Vec<u32> {
        let n = self.no_repeat_ngram_size;
        if n == 0 || sequence.len() + 1 < n {
            return Vec::new();
        }
        let prefix = &sequence[sequence.len() + 1 - n..];
        sequence
            .windows(n)
            .filter(|w| &w[..n - 1] == prefix)
            .map(|w| w[n - 1])
            .collect()
    }
}

/// For each of `rows`, the index of its parent among `previous`: the row it
/// extends by one token, within the same group of `group` rows (beams of one
/// input). Beam search extends, drops and duplicates rows; a session is
/// reordered to these parents before the new tokens run.
pub fn find_parents(
    previous: &[Vec<u32>],
    rows: &[Vec<u32>],
    group: usize,
) -> OperationResult<Vec<usize>> {
    let group = group.max(1);
    rows.iter()
        .enumerate()
        .map(|(r, row)| {
            let prefix = &row[..row.len().saturating_sub(1)];
            (0..previous.len())
                .find(|&p| p / group == r / group && previous[p] == prefix)
                .ok_or_else(|| {
                    margin_core::OperationError::bad_input(
                        "decoding",
                        format!("row {r} extends no row of the previous step"),
                    )
                })
        })
        .collect()
}

/// Greedy search from one start sequence per row: the most likely token at
/// each step; a row that produced EOS is padded with `pad_token_id`.
pub fn greedy_search(
    starts: Vec<Vec<u32>>,
    rules: &StepRules,
    pad_token_id: u32,
    next_log_probs: impl FnMut(&[Vec<u32>]) -> OperationResult<Vec<Vec<f32>>>,
) -> OperationResult<Vec<Vec<u32>>> {
    extend_rows(starts, rules, pad_token_id, argmax, next_log_probs)
}

/// How tokens are sampled.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SamplingSettings {
    /// Log-probabilities are divided by this before sampling (> 0).
    pub temperature: f32,
    /// Nucleus: sample from the fewest most likely tokens whose probability
    /// adds up to at least this (0 < top_p <= 1).
    pub top_p: f32,
    /// Seed of the random generator: the same seed gives the same output.
    pub seed: u64,
}

/// Like [`greedy_search`], but each token is drawn from the temperature-
/// scaled nucleus of the distribution.
pub fn sample_search(
    starts: Vec<Vec<u32>>,
    rules: &StepRules,
    pad_token_id: u32,
    settings: SamplingSettings,
    next_log_probs: impl FnMut(&[Vec<u32>]) -> OperationResult<Vec<Vec<f32>>>,
) -> OperationResult<Vec<Vec<u32>>> {
    use rand::SeedableRng;
    if !(settings.temperature > 0.0 && settings.temperature.is_finite()) {
        return Err(margin_core::OperationError::bad_input(
            "temperature",
            "must be a number above 0",
        ));
    }
    if !(settings.top_p > 0.0 && settings.top_p <= 1.0) {
        return Err(margin_core::OperationError::bad_input(
            "top_p",
            "must be above 0 and at most 1",
        ));
    }
    let mut rng = rand::rngs::StdRng::seed_from_u64(settings.seed);
    let choose = |log_probs: &[f32]| sample_nucleus(log_probs, settings, &mut rng);
    extend_rows(starts, rules, pad_token_id, choose, next_log_probs)
}

/// Extends every row by one `choose`n token a step until each has produced
/// EOS (then padded) or `max_length` is reached.
fn extend_rows(
    starts: Vec<Vec<u32>>,
    rules: &StepRules,
    pad_token_id: u32,
    mut choose: impl FnMut(&[f32]) -> u32,
    mut next_log_probs: impl FnMut(&[Vec<u32>]) -> OperationResult<Vec<Vec<f32>>>,
) -> OperationResult<Vec<Vec<u32>>> {
    let mut rows = starts;
    let mut done = vec![false; rows.len()];
    while rows.first().is_some_and(|r| r.len() < rules.max_length) && !done.iter().all(|d| *d) {
        let mut scores = next_log_probs(&rows)?;
        if let Some(row) = scores.first() {
            rules.check(row.len())?;
        }
        for ((row, log_probs), finished) in rows.iter_mut().zip(&mut scores).zip(&mut done) {
            let token = if *finished {
                pad_token_id
            } else {
                rules.apply(row, log_probs);
                choose(log_probs)
            };
            *finished |= token == rules.eos_token_id;
            row.push(token);
        }
    }
    Ok(rows)
}

/// Draws a token from softmax(log_probs / temperature) cut to its top-p nucleus.
fn sample_nucleus(log_probs: &[f32], settings: SamplingSettings, rng: &mut impl rand::Rng) -> u32 {
    let scaled: Vec<f32> = log_probs.iter().map(|p| p / settings.temperature).collect();
    let max = scaled.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let weights: Vec<f32> = scaled.iter().map(|s| (s - max).exp()).collect();
    let total: f32 = weights.iter().sum();
    let mut order: Vec<usize> = (0..weights.len()).collect();
    order.sort_by(|&a, &b| weights[b].total_cmp(&weights[a]).then(a.cmp(&b)));
    let mut nucleus = Vec::new();
    let mut mass = 0.0;
    for token in order {
        nucleus.push(token);
        mass += weights[token] / total;
        if mass >= settings.top_p {
            break;
        }
    }
    let kept: f32 = nucleus.iter().map(|&t| weights[t]).sum();
    let mut draw = rng.random::<f32>() * kept;
    for &token in &nucleus {
        draw -= weights[token];
        if draw <= 0.0 {
            return token as u32;
        }
    }
    // Rounding can leave a sliver of mass: it belongs to the last kept token.
    *nucleus
        .last()
        .expect("the nucleus holds at least one token") as u32
}

/// Index of the largest value; the first one on ties, as torch.argmax.
pub fn argmax(values: &[f32]) -> u32 {
    let mut best = 0;
    for (i, v) in values.iter().enumerate() {
        if *v > values[best] {
            best = i;
        }
    }
    best as u32
}

/// How beam search runs.
#[derive(Debug, Clone)]
pub struct BeamSettings {
    /// Beams kept per input.
    pub num_beams: usize,
    /// Finished hypotheses are scored sum(log p) / length^length_penalty.
    pub length_penalty: f32,
    /// Stop an input once `num_beams` hypotheses are finished.
    pub early_stopping: bool,
    /// Hypotheses returned per input, best first.
    pub num_return_sequences: usize,
    /// Token filling sequences shorter than the longest returned.
    pub pad_token_id: u32,
}

/// One returned hypothesis.
#[derive(Debug, Clone, PartialEq)]
pub struct Hypothesis {
    /// Tokens, the start sequence included, padded to the longest returned.
    pub tokens: Vec<u32>,
    /// Length-normalised score.
    pub score: f32,
    /// The model's own log-probability of each generated token (before the
    /// step rules), so that log p(hypothesis) needs no second pass.
    pub token_log_probs: Vec<f32>,
}

#[derive(Clone)]
struct Slot {
    tokens: Vec<u32>,
    score: f32,
    finished: bool,
    raw: Vec<f32>,
}

/// Indices of the `k` largest scores, best first; ties keep the lower index;
/// NaN ranks as -inf (total_cmp would put it above +inf).
fn top_k(scores: &[f32], k: usize) -> Vec<usize> {
    let key = |i: usize| {
        if scores[i].is_nan() {
            f32::NEG_INFINITY
        } else {
            scores[i]
        }
    };
    let mut order: Vec<usize> = (0..scores.len()).collect();
    order.sort_by(|&a, &b| key(b).total_cmp(&key(a)).then(a.cmp(&b)));
    order.truncate(k);
    order
}

/// Beam search from one start sequence per input, as transformers'
/// `_beam_search`; `next_log_probs` sees `num_beams` rows per input (row
/// `i * num_beams + j` is beam `j` of input `i`).
pub fn beam_search(
    starts: Vec<Vec<u32>>,
    rules: &StepRules,
    settings: &BeamSettings,
    mut next_log_probs: impl FnMut(&[Vec<u32>]) -> OperationResult<Vec<Vec<f32>>>,
) -> OperationResult<Vec<Vec<Hypothesis>>> {
    let beams = settings.num_beams;
    let keep = 2 * beams;
    let prompt_len = starts.first().map_or(0, Vec::len);
    let mut running: Vec<Vec<Slot>> = starts
        .iter()
        .map(|s| {
            (0..beams)
                .map(|j| Slot {
                    tokens: s.clone(),
                    score: if j == 0 { 0.0 } else { OUT },
                    finished: false,
                    raw: Vec::new(),
                })
                .collect()
        })
        .collect();
    let mut finished: Vec<Vec<Slot>> = starts
        .iter()
        .map(|s| {
            vec![
                Slot {
                    tokens: s.clone(),
                    score: OUT,
                    finished: false,
                    raw: Vec::new(),
                };
                beams
            ]
        })
        .collect();
    let mut improvable = vec![true; starts.len()];
    let mut cur_len = prompt_len;
    loop {
        let rows: Vec<Vec<u32>> = running.iter().flatten().map(|s| s.tokens.clone()).collect();
        let mut scores = next_log_probs(&rows)?;
        if let Some(row) = scores.first() {
            rules.check(row.len())?;
        }
        let mut all_hit = true;
        for (b, (beams_of_input, finished_of_input)) in
            running.iter_mut().zip(&mut finished).enumerate()
        {
            let vocab = scores[b * beams].len();
            let mut accumulated = Vec::with_capacity(beams * vocab);
            let mut raw_rows = Vec::with_capacity(beams);
            for (j, slot) in beams_of_input.iter().enumerate() {
                let log_probs = &mut scores[b * beams + j];
                raw_rows.push(log_probs.clone());
                rules.apply(&slot.tokens, log_probs);
                accumulated.extend(log_probs.iter().map(|p| p + slot.score));
            }
            let candidates: Vec<(Slot, bool)> = top_k(&accumulated, keep)
                .into_iter()
                .map(|flat| {
                    let parent = &beams_of_input[flat / vocab];
                    let mut tokens = parent.tokens.clone();
                    let token = (flat % vocab) as u32;
                    tokens.push(token);
                    let mut raw = parent.raw.clone();
                    raw.push(raw_rows[flat / vocab][token as usize]);
                    let hit = token == rules.eos_token_id || tokens.len() >= rules.max_length;
                    (
                        Slot {
                            tokens,
                            score: accumulated[flat],
                            finished: false,
                            raw,
                        },
                        hit,
                    )
                })
                .collect();
            all_hit &= candidates.iter().all(|(_, hit)| *hit);

            let penalised: Vec<f32> = candidates
                .iter()
                .map(|(s, hit)| s.score + if *hit { OUT } else { 0.0 })
                .collect();
            *beams_of_input = top_k(&penalised, beams)
                .into_iter()
                .map(|i| Slot {
                    score: penalised[i],
                    ..candidates[i].0.clone()
                })
                .collect();

            let input_full =
                settings.early_stopping && finished_of_input.iter().all(|s| s.finished);
            let norm = ((cur_len + 1 - prompt_len) as f32).powf(settings.length_penalty);
            let mut merged: Vec<Slot> = finished_of_input.clone();
            for (i, (slot, hit)) in candidates.into_iter().enumerate() {
                let just_finished = hit && i < beams;
                // Each reason adds its own penalty, as transformers does.
                let penalties = [input_full, !improvable[b], !just_finished];
                let score =
                    slot.score / norm + OUT * penalties.iter().filter(|p| **p).count() as f32;
                merged.push(Slot {
                    score,
                    finished: just_finished,
                    ..slot
                });
            }
            let scores: Vec<f32> = merged.iter().map(|s| s.score).collect();
            *finished_of_input = top_k(&scores, beams)
                .into_iter()
                .map(|i| merged[i].clone())
                .collect();
        }
        cur_len += 1;
        for (b, ok) in improvable.iter_mut().enumerate() {
            let best_running =
                running[b][0].score / ((cur_len - prompt_len) as f32).powf(settings.length_penalty);
            let worst = finished[b]
                .iter()
                .map(|s| s.score)
                .fold(f32::INFINITY, f32::min);
            *ok &= finished[b]
                .iter()
                .any(|s| best_running > if s.finished { worst } else { OUT });
        }
        let any_improvable = improvable.iter().any(|i| *i);
        let all_full = settings.early_stopping && finished.iter().flatten().all(|s| s.finished);
        if !any_improvable || all_full || all_hit {
            break;
        }
    }
    let mut out: Vec<Vec<Hypothesis>> = finished
        .into_iter()
        .map(|slots| {
            slots
                .into_iter()
                .take(settings.num_return_sequences)
                .map(|s| Hypothesis {
                    tokens: s.tokens,
                    score: s.score,
                    token_log_probs: s.raw,
                })
                .collect()
        })
        .collect();
    let longest = out
        .iter()
        .flatten()
        .map(|h| h.tokens.len())
        .max()
        .unwrap_or(0);
    for h in out.iter_mut().flatten() {
        h.tokens.resize(longest, settings.pad_token_id);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules() -> StepRules {
        StepRules {
            eos_token_id: 2,
            max_length: 8,
            min_length: 4,
            no_repeat_ngram_size: 2,
            forced_bos_token_id: Some(0),
            forced_eos_token_id: Some(2),
        }
    }

    fn banned(sequence: &[u32]) -> Vec<usize> {
        let mut log_probs = vec![-1.0; 6];
        rules().apply(sequence, &mut log_probs);
        (0..6).filter(|&t| log_probs[t] == BANNED).collect()
    }

    #[test]
    fn rules_ban_short_eos_repeated_ngrams_and_force_bos_and_eos() {
        assert_eq!(
            banned(&[2]),
            vec![1, 2, 3, 4, 5],
            "BOS forced after the start token"
        );
        assert_eq!(banned(&[2, 0, 3]), vec![2], "EOS banned below min_length");
        assert_eq!(
            banned(&[2, 0, 3, 4, 3]),
            vec![4],
            "3 4 happened: 4 may not follow 3 again"
        );
        assert_eq!(
            banned(&[2, 0, 3, 4, 3, 5, 1]),
            vec![0, 1, 3, 4, 5],
            "EOS forced at max_length"
        );
    }

    fn distribution() -> Vec<f32> {
        [0.5f32, 0.3, 0.15, 0.05].iter().map(|p| p.ln()).collect()
    }

    #[test]
    fn sampling_follows_the_distribution_and_its_nucleus() {
        use rand::SeedableRng;
        let mut rng = rand::rngs::StdRng::seed_from_u64(1);
        let mut counts = [0usize; 4];
        let all = SamplingSettings {
            temperature: 1.0,
            top_p: 1.0,
            seed: 0,
        };
        for _ in 0..20_000 {
            counts[sample_nucleus(&distribution(), all, &mut rng) as usize] += 1;
        }
        for (count, p) in counts.iter().zip([0.5, 0.3, 0.15, 0.05]) {
            assert!((*count as f64 / 20_000.0 - p).abs() < 0.015, "{counts:?}");
        }
        // top_p 0.7: the nucleus is {0, 1} (0.5 + 0.3 >= 0.7), renormalised.
        let nucleus = SamplingSettings { top_p: 0.7, ..all };
        let mut counts = [0usize; 4];
        for _ in 0..20_000 {
            counts[sample_nucleus(&distribution(), nucleus, &mut rng) as usize] += 1;
        }
        assert_eq!(counts[2] + counts[3], 0);
        assert!(
            (counts[0] as f64 / 20_000.0 - 0.625).abs() < 0.015,
            "{counts:?}"
        );
        // A tiny top_p or temperature leaves only the most likely token.
        for narrow in [
            SamplingSettings { top_p: 1e-6, ..all },
            SamplingSettings {
                temperature: 1e-4,
                ..all
            },
        ] {
            assert!((0..200).all(|_| sample_nucleus(&distribution(), narrow, &mut rng) == 0));
        }
    }

    #[test]
    fn sampling_is_reproducible_per_seed() {
        let model = |rows: &[Vec<u32>]| -> OperationResult<Vec<Vec<f32>>> {
            Ok(rows
                .iter()
                .map(|_| {
                    let mut p = vec![(0.1f32).ln(); 6];
                    p[2] = (0.5f32).ln();
                    p
                })
                .collect())
        };
        let rules = StepRules {
            eos_token_id: 2,
            max_length: 12,
            ..StepRules::default()
        };
        let run = |seed| {
            let settings = SamplingSettings {
                temperature: 1.0,
                top_p: 1.0,
                seed,
            };
            sample_search(vec![vec![0]; 4], &rules, 1, settings, model).unwrap()
        };
        assert_eq!(run(7), run(7));
        // An end-of-sequence token the vocabulary lacks is an error, not a panic.
        let outside = StepRules {
            eos_token_id: 6,
            ..rules.clone()
        };
        let plain = SamplingSettings {
            temperature: 1.0,
            top_p: 1.0,
            seed: 0,
        };
        let err = sample_search(vec![vec![0]], &outside, 1, plain, model).unwrap_err();
        assert!(err.to_string().contains("outside the vocabulary"), "{err}");
        assert_ne!(run(7), run(8));
        for (temperature, top_p, field) in [
            (0.0, 1.0, "temperature"),
            (1.0, 0.0, "top_p"),
            (1.0, 1.5, "top_p"),
        ] {
            let settings = SamplingSettings {
                temperature,
                top_p,
                seed: 0,
            };
            let err = sample_search(vec![vec![0]], &rules, 1, settings, model).unwrap_err();
            assert!(err.to_string().starts_with(field), "{err}");
        }
    }

    #[test]
    fn beam_search_with_one_beam_is_greedy_search() {
        // A fixed table of next-token log-probs, chosen by the last token.
        let table = |last: u32| -> Vec<f32> {
            let mut p = vec![-5.0; 6];
            p[((last as usize * 7) + 3) % 6] = -0.1;
            p[((last as usize * 5) + 1) % 6] = -0.7;
            p
        };
        let model = |rows: &[Vec<u32>]| -> OperationResult<Vec<Vec<f32>>> {
            Ok(rows.iter().map(|r| table(*r.last().unwrap())).collect())
        };
        let starts = vec![vec![2], vec![2]];
        let greedy = greedy_search(starts.clone(), &rules(), 1, model).unwrap();
        let settings = BeamSettings {
            num_beams: 1,
            length_penalty: 1.0,
            early_stopping: true,
            num_return_sequences: 1,
            pad_token_id: 1,
        };
        let beams = beam_search(starts, &rules(), &settings, model).unwrap();
        let beams: Vec<Vec<u32>> = beams.into_iter().map(|mut h| h.remove(0).tokens).collect();
        assert_eq!(beams, greedy);
    }
}
