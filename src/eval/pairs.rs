//! The LFW pairs protocol file: a header `F N`, then F folds of N same-person lines `Name i j`
//! followed by N different-person lines `NameA i NameB j` (1-based image numbers, images at
//! `DIR/Name/Name_%04d.jpg`). Also parses fold selections such as `6-10` or `1,3,5-6`.

use std::path::{Path, PathBuf};

/// One image of the dataset.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ImageRef {
    pub name: String,
    pub number: u32,
}

impl ImageRef {
    /// The image's path in an LFW-layout dataset.
    pub fn path(&self, dataset: &Path) -> PathBuf {
        dataset.join(&self.name).join(format!("{}_{:04}.jpg", self.name, self.number))
    }
}

/// One verification pair. The first image is the probe, the second the reference.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pair {
    /// 1-based fold number.
    pub fold: usize,
    pub genuine: bool,
    pub first: ImageRef,
    pub second: ImageRef,
}

#[derive(Debug, thiserror::Error)]
pub enum PairsError {
    #[error("cannot read pairs file {path}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("pairs file {path}, line {line}: {what}")]
    Syntax { path: PathBuf, line: usize, what: String },
    #[error("bad fold selection {0:?}: use numbers and ranges like 6-10 or 1,3,5-6")]
    Folds(String),
    #[error("fold {fold} is not in the pairs file (it has folds 1-{folds})")]
    NoSuchFold { fold: usize, folds: usize },
}

/// All pairs of the file, in order.
pub fn read(path: &Path) -> Result<Vec<Pair>, PairsError> {
    let text = std::fs::read_to_string(path).map_err(|source| PairsError::Read { path: path.to_owned(), source })?;
    parse(&text, path)
}

/// Parses pairs text; `path` only names the source in messages.
pub fn parse(text: &str, path: &Path) -> Result<Vec<Pair>, PairsError> {
    let syntax = |line: usize, what: String| PairsError::Syntax { path: path.to_owned(), line, what };
    let mut lines = text.lines().enumerate().filter(|(_, l)| !l.trim().is_empty());
    let (hl, header) = lines.next().ok_or_else(|| syntax(1, "empty file".into()))?;
    let nums: Vec<usize> = header
        .split_whitespace()
        .map(str::parse)
        .collect::<Result<_, _>>()
        .map_err(|_| syntax(hl + 1, format!("header {header:?} must be two numbers: folds and pairs per class")))?;
    let [folds, per_class] = nums[..] else {
        return Err(syntax(hl + 1, format!("header {header:?} must be two numbers: folds and pairs per class")));
    };
    // The header is only a claim: the lines that follow bound what is reserved and looped over
    // (`99999 99999` must be refused, not allocated: found by fuzzing, `fuzz/`, `pairs_file`).
    let left = lines.clone().count();
    let Some(announced) = folds.checked_mul(per_class).and_then(|n| n.checked_mul(2)).filter(|&n| n <= left) else {
        return Err(syntax(
            hl + 1,
            format!(
                "header {header:?} announces {folds} folds of {per_class} same-person and {per_class} \
                 different-person pairs, but only {left} lines follow"
            ),
        ));
    };
    if announced == 0 {
        return Ok(Vec::new());
    }
    let mut pairs = Vec::with_capacity(announced);
    for fold in 1..=folds {
        for k in 0..2 * per_class {
            let genuine = k < per_class;
            let (ln, line) = lines.next().ok_or_else(|| syntax(0, format!("file ends inside fold {fold}")))?;
            let t: Vec<&str> = line.split_whitespace().collect();
            let num = |s: &str| s.parse::<u32>().map_err(|_| syntax(ln + 1, format!("{s:?} is not an image number")));
            let pair = match (genuine, t.as_slice()) {
                (true, [name, i, j]) => Pair {
                    fold,
                    genuine,
                    first: ImageRef { name: name.to_string(), number: num(i)? },
                    second: ImageRef { name: name.to_string(), number: num(j)? },
                },
                (false, [a, i, b, j]) => Pair {
                    fold,
                    genuine,
                    first: ImageRef { name: a.to_string(), number: num(i)? },
                    second: ImageRef { name: b.to_string(), number: num(j)? },
                },
                _ => {
                    let want = if genuine { "`Name i j`" } else { "`NameA i NameB j`" };
                    return Err(syntax(ln + 1, format!("expected {want} in fold {fold}, got {line:?}")));
                }
            };
            pairs.push(pair);
        }
    }
    Ok(pairs)
}

/// The highest fold number a selection may name (LFW has 10). A range is expanded into a list,
/// so `1-99999999999` must be refused, not allocated (found by fuzzing: `fuzz/`, `pairs_file`).
pub const MAX_FOLD: usize = 10_000;

/// Parses a fold selection (`6-10`, `1,3,5-6`) into sorted, distinct 1-based fold numbers, each
/// at most [`MAX_FOLD`].
pub fn parse_folds(spec: &str) -> Result<Vec<usize>, PairsError> {
    let bad = || PairsError::Folds(spec.to_owned());
    // One flag per possible fold: `1-10000,1-10000,...` costs no more than `1-10000`.
    let mut chosen = vec![false; MAX_FOLD + 1];
    for part in spec.split(',').map(str::trim) {
        let (a, b) = match part.split_once('-') {
            Some((a, b)) => (a.trim().parse().map_err(|_| bad())?, b.trim().parse().map_err(|_| bad())?),
            None => {
                let n: usize = part.parse().map_err(|_| bad())?;
                (n, n)
            }
        };
        if a == 0 || b < a || b > MAX_FOLD {
            return Err(bad());
        }
        chosen[a..=b].fill(true);
    }
    Ok(chosen.iter().enumerate().filter(|&(_, &c)| c).map(|(fold, _)| fold).collect())
}

/// Keeps the pairs of the selected folds; every selected fold must exist.
pub fn select(pairs: Vec<Pair>, folds: &[usize]) -> Result<Vec<Pair>, PairsError> {
    let max = pairs.iter().map(|p| p.fold).max().unwrap_or(0);
    if let Some(&fold) = folds.iter().find(|&&f| f > max) {
        return Err(PairsError::NoSuchFold { fold, folds: max });
    }
    Ok(pairs.into_iter().filter(|p| folds.contains(&p.fold)).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    const SMALL: &str = "2 1\nAda 1 2\nAda 1 Bob 3\nCy 2 4\nDee 1 Eve 1\n";

    #[test]
    fn parses_folds_of_genuine_then_impostor_pairs() {
        let pairs = parse(SMALL, Path::new("p.txt")).unwrap();
        assert_eq!(pairs.len(), 4);
        assert!(pairs[0].genuine && !pairs[1].genuine && pairs[2].genuine);
        assert_eq!((pairs[0].fold, pairs[3].fold), (1, 2));
        assert_eq!(pairs[1].second, ImageRef { name: "Bob".into(), number: 3 });
        assert_eq!(pairs[1].second.path(Path::new("/d")), PathBuf::from("/d/Bob/Bob_0003.jpg"));
    }

    #[test]
    fn malformed_lines_name_their_line() {
        let err = parse("1 1\nAda 1 2\nAda x Bob 3\n", Path::new("p.txt")).unwrap_err();
        assert!(err.to_string().contains("line 3"), "{err}");
        assert!(parse("1 1\nAda 1 2\n", Path::new("p.txt")).is_err(), "truncated file");
        assert!(parse("ten 300\n", Path::new("p.txt")).is_err());
        // A header announcing more pairs than the file holds is refused before anything is
        // reserved, however large its numbers.
        for header in ["99999 99999\n", "18446744073709551615 2\nAda 1 2\n", "10 300\n"] {
            let err = parse(header, Path::new("p.txt")).unwrap_err();
            assert!(err.to_string().contains("line 1") && err.to_string().contains("announces"), "{err}");
        }
        assert!(parse("18446744073709551615 0\n", Path::new("p.txt")).unwrap().is_empty());
    }

    #[test]
    fn fold_selections() {
        assert_eq!(parse_folds("6-10").unwrap(), vec![6, 7, 8, 9, 10]);
        assert_eq!(parse_folds("3, 1,5-6,5").unwrap(), vec![1, 3, 5, 6]);
        for bad in ["", "0", "5-3", "a-b", "1-", "10001", "3-200000000000000005"] {
            assert!(parse_folds(bad).is_err(), "{bad}");
        }
        let pairs = parse(SMALL, Path::new("p.txt")).unwrap();
        assert_eq!(select(pairs.clone(), &[2]).unwrap().len(), 2);
        assert!(matches!(select(pairs, &[3]), Err(PairsError::NoSuchFold { fold: 3, folds: 2 })));
    }
}
