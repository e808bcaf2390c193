//! Verification metrics on similarity scores (higher = more similar, e.g. cosine similarity):
//! d', ROC AUC, the ROC curve, TAR at a fixed FAR, and the LFW 10-fold accuracy protocol. This
//! module owns only the arithmetic; producing scores and plotting curves live elsewhere.
//!
//! Conventions shared by every function here: a pair is *accepted* at threshold `t` iff
//! `score >= t`; a NaN score never panics and is treated as the lowest possible score (it is
//! mapped to −∞, so it ties with a genuine −∞ score and is accepted only at threshold −∞); `-0.0`
//! and `0.0` are the same score.

/// One scored pair of the verification protocol.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ScoredPair {
    /// Cross-validation fold the pair belongs to (LFW: 0..10); any ids, need not be contiguous.
    pub fold: usize,
    /// True for a same-person pair, false for an impostor pair.
    pub genuine: bool,
    /// Similarity score; higher means more similar. NaN is treated as the lowest score.
    pub score: f64,
}

/// One operating point of a ROC curve.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RocPoint {
    /// False accept rate: fraction of impostor scores `>= threshold`, in `[0, 1]`.
    pub far: f64,
    /// True accept rate: fraction of genuine scores `>= threshold`, in `[0, 1]`.
    pub tar: f64,
    /// The threshold giving this point (accept iff `score >= threshold`).
    pub threshold: f64,
}

/// Accuracy under the LFW cross-validation protocol.
#[derive(Debug, Clone, PartialEq)]
pub struct FoldAccuracy {
    /// Mean of the per-fold accuracies.
    pub mean: f64,
    /// Sample standard deviation (divisor `k - 1`, as in the LFW paper) of the per-fold accuracies.
    pub std: f64,
    /// `(fold, threshold chosen on the other folds, accuracy on this fold)`, ascending by fold.
    pub per_fold: Vec<(usize, f64, f64)>,
}

/// The score as it is ranked: NaN becomes −∞ and `-0.0` becomes `0.0`, so `total_cmp` on keys
/// agrees with `==`/`<` and never sees a NaN.
fn key(score: f64) -> f64 {
    if score.is_nan() {
        f64::NEG_INFINITY
    } else {
        score + 0.0
    }
}

fn sorted_keys(scores: &[f64]) -> Vec<f64> {
    let mut keys: Vec<f64> = scores.iter().map(|&s| key(s)).collect();
    keys.sort_by(f64::total_cmp);
    keys
}

/// Decidability index d' = |μ_g − μ_i| / sqrt((σ²_g + σ²_i) / 2), where σ² is the unbiased
/// sample variance (divisor `n - 1`).
///
/// Returns `None` if either slice has fewer than 2 values, if any value is non-finite (a NaN,
/// i.e. a "lowest possible" score, makes the moments undefined), or if the denominator is 0.
pub fn d_prime(genuine: &[f64], impostor: &[f64]) -> Option<f64> {
    let (mu_g, var_g) = mean_and_sample_var(genuine)?;
    let (mu_i, var_i) = mean_and_sample_var(impostor)?;
    let denom = ((var_g + var_i) / 2.0).sqrt();
    let d = (mu_g - mu_i).abs() / denom;
    (denom > 0.0 && d.is_finite()).then_some(d)
}

fn mean_and_sample_var(xs: &[f64]) -> Option<(f64, f64)> {
    if xs.len() < 2 || xs.iter().any(|x| !x.is_finite()) {
        return None;
    }
    let n = xs.len() as f64;
    let mean = xs.iter().sum::<f64>() / n;
    let var = xs.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1.0);
    Some((mean, var))
}

/// Area under the ROC curve as the Mann–Whitney statistic: the probability that a random genuine
/// score exceeds a random impostor score, ties counting 1/2. Equals the trapezoidal area under
/// [`roc_curve`]. O(n log n). `None` if either slice is empty.
pub fn roc_auc(genuine: &[f64], impostor: &[f64]) -> Option<f64> {
    if genuine.is_empty() || impostor.is_empty() {
        return None;
    }
    let imp = sorted_keys(impostor);
    // Twice the U statistic, kept integral so large tables lose no precision.
    let twice_u: u64 = genuine
        .iter()
        .map(|&g| {
            let g = key(g);
            let below = imp.partition_point(|&x| x < g);
            let not_above = imp.partition_point(|&x| x <= g);
            (2 * below + (not_above - below)) as u64
        })
        .sum();
    Some(twice_u as f64 / (2.0 * genuine.len() as f64 * impostor.len() as f64))
}

/// ROC curve over every distinct score used as threshold, in order of decreasing threshold
/// (increasing FAR and TAR).
///
/// The first point is `(far 0, tar 0, threshold +∞)` — accept nothing (when no score is +∞) —
/// followed by one point per distinct score; the last point is `(1, 1)` at the lowest score.
/// Empty if either slice is empty (rates are undefined).
pub fn roc_curve(genuine: &[f64], impostor: &[f64]) -> Vec<RocPoint> {
    if genuine.is_empty() || impostor.is_empty() {
        return Vec::new();
    }
    let (n_g, n_i) = (genuine.len() as f64, impostor.len() as f64);
    let mut all: Vec<(f64, bool)> =
        genuine.iter().map(|&s| (key(s), true)).chain(impostor.iter().map(|&s| (key(s), false))).collect();
    all.sort_by(|a, b| b.0.total_cmp(&a.0));

    let mut points = Vec::with_capacity(all.len() + 1);
    if all.first().is_some_and(|&(top, _)| top < f64::INFINITY) {
        points.push(RocPoint { far: 0.0, tar: 0.0, threshold: f64::INFINITY });
    }
    let (mut tp, mut fp) = (0usize, 0usize);
    for (i, &(score, is_genuine)) in all.iter().enumerate() {
        if is_genuine {
            tp += 1;
        } else {
            fp += 1;
        }
        let group_ends = all.get(i + 1).is_none_or(|&(next, _)| next != score);
        if group_ends {
            points.push(RocPoint { far: fp as f64 / n_i, tar: tp as f64 / n_g, threshold: score });
        }
    }
    points
}

/// Highest TAR over all thresholds whose FAR is `<= far` (the threshold is placed strictly above
/// as many of the top impostor scores as needed).
///
/// Resolution: with `n` impostor pairs FAR only takes the values `k / n`, so the target is
/// effectively `floor(far * n) / n`. With 1,500 impostors, FAR = 1e-3 allows at most 1 false
/// accept, and any `far < 1/n` (e.g. 1e-4 with 1,500 impostors) means zero false accepts, i.e.
/// the TAR above the single highest impostor score — a noisy estimate worth reporting with `n`.
///
/// `None` if either slice is empty, or `far` is NaN or negative.
pub fn tar_at_far(genuine: &[f64], impostor: &[f64], far: f64) -> Option<f64> {
    if far.is_nan() || far < 0.0 {
        return None;
    }
    roc_curve(genuine, impostor).iter().filter(|p| p.far <= far).map(|p| p.tar).max_by(f64::total_cmp)
}

/// Threshold maximising accuracy (accept iff `score >= t`) on `pairs`.
///
/// Candidates are the midpoints between consecutive distinct sorted scores (the upper score where
/// the midpoint is not representable strictly between them, e.g. next to −∞), plus +∞ (reject
/// all) and −∞ (accept all). Ties in accuracy go to the highest threshold (fewest false accepts).
/// Empty input returns +∞.
pub fn best_threshold(pairs: &[&ScoredPair]) -> f64 {
    let mut sorted: Vec<(f64, bool)> = pairs.iter().map(|p| (key(p.score), p.genuine)).collect();
    sorted.sort_by(|a, b| b.0.total_cmp(&a.0));

    // Start by rejecting everything: every impostor is correct.
    let mut correct = sorted.iter().filter(|&&(_, g)| !g).count();
    let (mut best_correct, mut best_t) = (correct, f64::INFINITY);
    for (i, &(score, is_genuine)) in sorted.iter().enumerate() {
        if is_genuine {
            correct += 1;
        } else {
            correct -= 1;
        }
        let threshold = match sorted.get(i + 1) {
            Some(&(next, _)) if next == score => continue,
            Some(&(next, _)) => midpoint(next, score),
            None => f64::NEG_INFINITY,
        };
        if correct > best_correct {
            (best_correct, best_t) = (correct, threshold);
        }
    }
    best_t
}

/// A threshold in `(lo, hi]`, the midpoint when it is representable there.
fn midpoint(lo: f64, hi: f64) -> f64 {
    let m = lo / 2.0 + hi / 2.0;
    if m > lo && m <= hi {
        m
    } else {
        hi
    }
}

/// Accuracy on the pairs of one fold at a fixed threshold.
fn accuracy_at(pairs: &[&ScoredPair], threshold: f64) -> f64 {
    let correct = pairs.iter().filter(|p| (key(p.score) >= threshold) == p.genuine).count();
    correct as f64 / pairs.len() as f64
}

/// LFW protocol: for each fold `f` present, choose the threshold with [`best_threshold`] on all
/// pairs of the *other* folds and measure accuracy on fold `f`; report mean and sample std over
/// folds, plus the per-fold thresholds.
///
/// `None` if fewer than two distinct folds are present: with one fold there is nothing held out,
/// and a threshold tuned on the test pairs would report an optimistic accuracy.
pub fn lfw_accuracy(pairs: &[ScoredPair]) -> Option<FoldAccuracy> {
    let mut folds: Vec<usize> = pairs.iter().map(|p| p.fold).collect();
    folds.sort_unstable();
    folds.dedup();
    if folds.len() < 2 {
        return None;
    }
    let per_fold: Vec<(usize, f64, f64)> = folds
        .iter()
        .map(|&f| {
            let (test, train): (Vec<&ScoredPair>, Vec<&ScoredPair>) = pairs.iter().partition(|p| p.fold == f);
            let threshold = best_threshold(&train);
            (f, threshold, accuracy_at(&test, threshold))
        })
        .collect();
    let k = per_fold.len() as f64;
    let mean = per_fold.iter().map(|&(_, _, a)| a).sum::<f64>() / k;
    let var = per_fold.iter().map(|&(_, _, a)| (a - mean).powi(2)).sum::<f64>() / (k - 1.0);
    Some(FoldAccuracy { mean, std: var.sqrt(), per_fold })
}

#[cfg(test)]
mod tests {
    use super::*;

    const EPS: f64 = 1e-12;
    // Hand table. Sorted: 0.9g 0.8g 0.7g 0.5i 0.4g 0.3i 0.2i 0.1i.
    const G: [f64; 4] = [0.9, 0.8, 0.7, 0.4];
    const I: [f64; 4] = [0.5, 0.3, 0.2, 0.1];

    fn pair(fold: usize, genuine: bool, score: f64) -> ScoredPair {
        ScoredPair { fold, genuine, score }
    }

    #[test]
    fn auc_and_d_prime_by_hand() {
        // 0.9, 0.8, 0.7 beat all 4 impostors; 0.4 beats 0.3, 0.2, 0.1: U = 15, AUC = 15/16.
        assert!((roc_auc(&G, &I).unwrap() - 15.0 / 16.0).abs() < EPS);
        // mu_g = 0.7, squared deviations .04 .01 0 .09 -> var_g = 0.14/3.
        // mu_i = 0.275, squared deviations .050625 .000625 .005625 .030625 -> var_i = 0.0875/3.
        // d' = 0.425 / sqrt((0.14 + 0.0875) / 6) = 0.425 / 0.194722... = 2.182598...
        let expected = 0.425 / (0.2275f64 / 6.0).sqrt();
        assert!((d_prime(&G, &I).unwrap() - expected).abs() < 1e-9);
        assert!((expected - 2.182_598_5).abs() < 1e-6);
    }

    #[test]
    fn d_prime_degenerate_inputs() {
        assert_eq!(d_prime(&[0.5], &I), None);
        assert_eq!(d_prime(&G, &[]), None);
        assert_eq!(d_prime(&[0.5, 0.5], &[0.1, 0.1]), None); // zero variance
        assert_eq!(d_prime(&[f64::NAN, 0.5], &I), None);
    }

    #[test]
    fn auc_ties_count_half() {
        assert_eq!(roc_auc(&[0.5, 0.5], &[0.5, 0.5]), Some(0.5));
        // 0.6>0.5, 0.6>0.4, 0.5=0.5 (1/2), 0.5>0.4: 3.5 / 4.
        assert_eq!(roc_auc(&[0.6, 0.5], &[0.5, 0.4]), Some(0.875));
        assert_eq!(roc_auc(&[0.0], &[-0.0]), Some(0.5));
        assert_eq!(roc_auc(&[], &I), None);
    }

    #[test]
    fn roc_curve_by_hand() {
        let curve = roc_curve(&G, &I);
        let col = |f: fn(&RocPoint) -> f64| curve.iter().map(f).collect::<Vec<_>>();
        assert_eq!(col(|p| p.far), [0.0, 0.0, 0.0, 0.0, 0.25, 0.25, 0.5, 0.75, 1.0]);
        assert_eq!(col(|p| p.tar), [0.0, 0.25, 0.5, 0.75, 0.75, 1.0, 1.0, 1.0, 1.0]);
        let inf = f64::INFINITY;
        assert_eq!(col(|p| p.threshold), [inf, 0.9, 0.8, 0.7, 0.5, 0.4, 0.3, 0.2, 0.1]);
        assert!(roc_curve(&G, &[]).is_empty());
    }

    #[test]
    fn auc_matches_trapezoid_and_brute_force_with_ties() {
        let mut state = 12345u64;
        let mut next = || {
            state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            ((state >> 33) % 20) as f64 / 20.0 // coarse: many ties
        };
        let g: Vec<f64> = (0..57).map(|_| next() * 0.7 + 0.3).collect();
        let i: Vec<f64> = (0..43).map(|_| next() * 0.8).collect();
        let auc = roc_auc(&g, &i).unwrap();
        let brute: f64 = g
            .iter()
            .flat_map(|a| i.iter().map(move |b| (a, b)))
            .map(|(a, b)| {
                if a > b {
                    1.0
                } else if a == b {
                    0.5
                } else {
                    0.0
                }
            })
            .sum::<f64>()
            / (g.len() * i.len()) as f64;
        let curve = roc_curve(&g, &i);
        let trapezoid: f64 = curve.windows(2).map(|w| (w[1].far - w[0].far) * (w[1].tar + w[0].tar) / 2.0).sum();
        assert!((auc - brute).abs() < EPS && (auc - trapezoid).abs() < EPS);
    }

    #[test]
    fn tar_at_far_edges() {
        assert_eq!(tar_at_far(&G, &I, 0.0), Some(0.75)); // above the top impostor 0.5
        assert_eq!(tar_at_far(&G, &I, 0.1), Some(0.75)); // resolution 1/4: same as 0
        assert_eq!(tar_at_far(&G, &I, 0.25), Some(1.0)); // one false accept (0.5) allowed
        assert_eq!(tar_at_far(&G, &I, 1.0), Some(1.0));
        assert_eq!(tar_at_far(&G, &I, -0.1), None);
        assert_eq!(tar_at_far(&G, &I, f64::NAN), None);
        assert_eq!(tar_at_far(&[], &I, 0.1), None);
        // Top impostor above every genuine: nothing is accepted at FAR 0.
        assert_eq!(tar_at_far(&[0.5, 0.6], &[0.9, 0.1], 0.0), Some(0.0));
    }

    #[test]
    fn best_threshold_by_hand() {
        let pairs: Vec<ScoredPair> =
            G.iter().map(|&s| pair(0, true, s)).chain(I.iter().map(|&s| pair(0, false, s))).collect();
        let refs: Vec<&ScoredPair> = pairs.iter().collect();
        // 7/8 correct at 0.6 (between 0.5i and 0.7g) and at 0.35; the tie goes to the higher.
        assert!((best_threshold(&refs) - 0.6).abs() < EPS);
        assert_eq!(best_threshold(&[]), f64::INFINITY);
        let all_genuine = [pair(0, true, 0.3), pair(0, true, 0.2)];
        assert_eq!(best_threshold(&all_genuine.iter().collect::<Vec<_>>()), f64::NEG_INFINITY);
    }

    #[test]
    fn lfw_three_folds_by_hand() {
        // (fold, genuine scores, impostor scores)
        let table = [(0, [0.9, 0.6], [0.4, 0.1]), (1, [0.8, 0.5], [0.3, 0.2]), (2, [0.7, 0.35], [0.46, 0.0])];
        let pairs: Vec<ScoredPair> = table
            .iter()
            .flat_map(|&(f, g, i)| g.map(|s| pair(f, true, s)).into_iter().chain(i.map(|s| pair(f, false, s))))
            .collect();
        let acc = lfw_accuracy(&pairs).unwrap();
        // Fold 0, train 1+2: 0.8g 0.7g 0.5g 0.46i 0.35g 0.3i 0.2i 0.0i; 7/8 at 0.48 and 0.325
        //   -> 0.48; test 0.9 0.6 accepted, 0.4 0.1 rejected: 4/4.
        // Fold 1, train 0+2: 0.9g 0.7g 0.6g 0.46i 0.4i 0.35g 0.1i 0.0i; 7/8 only at 0.53;
        //   test 0.8 ok, 0.5 rejected (wrong), 0.3 0.2 ok: 3/4.
        // Fold 2, train 0+1: perfectly separated at 0.45; test 0.7 ok, 0.35 wrong, 0.46 wrong,
        //   0.0 ok: 2/4.
        let want = [(0, 0.48, 1.0), (1, 0.53, 0.75), (2, 0.45, 0.5)];
        assert_eq!(acc.per_fold.len(), 3);
        for (got, want) in acc.per_fold.iter().zip(want) {
            assert_eq!((got.0, got.2), (want.0, want.2));
            assert!((got.1 - want.1).abs() < EPS);
        }
        // Mean 0.75; sample std sqrt((0.25² + 0 + 0.25²) / 2) = 0.25.
        assert!((acc.mean - 0.75).abs() < EPS && (acc.std - 0.25).abs() < EPS);
    }

    #[test]
    fn perfect_separation() {
        let pairs: Vec<ScoredPair> =
            (0..4).flat_map(|f| [pair(f * 3, true, 0.9 - f as f64 * 0.01), pair(f * 3, false, 0.1)]).collect();
        let acc = lfw_accuracy(&pairs).unwrap();
        assert_eq!((acc.mean, acc.std), (1.0, 0.0));
        assert_eq!(acc.per_fold.iter().map(|p| p.0).collect::<Vec<_>>(), [0, 3, 6, 9]);
        assert_eq!(roc_auc(&[0.9, 0.8], &[0.1, 0.2]), Some(1.0));
        assert_eq!(lfw_accuracy(&[pair(0, true, 0.9), pair(0, false, 0.1)]), None);
        assert_eq!(lfw_accuracy(&[]), None);
    }

    #[test]
    fn nan_is_the_lowest_score() {
        let g = [f64::NAN, 0.9];
        let i = [0.1];
        // NaN loses to 0.1, 0.9 wins: AUC 1/2. Two NaNs tie.
        assert_eq!(roc_auc(&g, &i), Some(0.5));
        assert_eq!(roc_auc(&[f64::NAN], &[f64::NAN]), Some(0.5));
        let curve = roc_curve(&g, &i);
        let last = curve.last().unwrap();
        assert_eq!((last.far, last.tar, last.threshold), (1.0, 1.0, f64::NEG_INFINITY));
        assert_eq!(tar_at_far(&g, &i, 0.0), Some(0.5));
        let pairs = [pair(0, true, f64::NAN), pair(0, false, 0.1), pair(1, true, 0.8), pair(1, false, f64::NAN)];
        let refs: Vec<&ScoredPair> = pairs.iter().collect();
        assert!((best_threshold(&refs) - 0.45).abs() < EPS);
        let acc = lfw_accuracy(&pairs).unwrap();
        assert!(acc.per_fold.iter().all(|p| !p.1.is_nan() && !p.2.is_nan()));
    }
}
