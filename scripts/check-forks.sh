#!/usr/bin/env bash
# The crates ferrolab builds from a fork (`[patch.crates-io]` in Cargo.toml) must be
# exactly their published release plus the patch beside them (FORK/ferrolab.patch,
# explained in FORK/PATCHES.md), with the release's tests, benches, examples, its
# own docs (README), lock file and packaging files left out. This script checks that (run by `make test`);
# with --write it rewrites each patch from the tree as it is.
#
#   scripts/check-forks.sh [--write]
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
write=false
[ "${1:-}" = "--write" ] && write=true

# fork folder, crate, version
forks=(
  "kernel/evcxr evcxr 0.22.0"
  "magics/data/polars-expr polars-expr 0.55.2"
  "magics/data/polars-sql polars-sql 0.55.2"
  "magics/llm/candle-core candle-core 0.11.1"
)
# What the forks leave out of a release.
left_out=(tests benches examples README.md HOW_IT_WORKS.md Cargo.lock Cargo.toml.orig .cargo_vcs_info.json .cargo-ok)

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

# A throwaway crate that depends on the releases, so that cargo downloads them (from
# whatever registry it is set up with) and says where their sources are.
mkdir -p "$tmp/probe/src"
touch "$tmp/probe/src/lib.rs"
{
  printf '[package]\nname = "fork-probe"\nversion = "0.0.0"\nedition = "2021"\n\n[dependencies]\n'
  for fork in "${forks[@]}"; do
    read -r _ crate version <<<"$fork"
    printf '%s = "=%s"\n' "$crate" "$version"
  done
  printf '\n[workspace]\n'
} >"$tmp/probe/Cargo.toml"
# Our lock file pins the releases' own dependencies, so nothing new is resolved.
cp Cargo.lock "$tmp/probe/Cargo.lock"
host=$(rustc -vV | sed -n 's/^host: //p')
cargo metadata --format-version 1 --filter-platform "$host" \
  --manifest-path "$tmp/probe/Cargo.toml" >"$tmp/metadata.json" 2>"$tmp/metadata.err" || {
  cat "$tmp/metadata.err" >&2
  exit 1
}

failed=0
for fork in "${forks[@]}"; do
  read -r dir crate version <<<"$fork"
  source=$(python3 - "$tmp/metadata.json" "$crate" "$version" <<'PY'
import json, os, sys
meta = json.load(open(sys.argv[1]))
for p in meta["packages"]:
    if p["name"] == sys.argv[2] and p["version"] == sys.argv[3]:
        print(os.path.dirname(p["manifest_path"]))
        break
PY
)
  if [ -z "$source" ]; then
    echo "check-forks: cargo did not fetch $crate $version" >&2
    exit 1
  fi
  release="$tmp/release/$crate"
  mkdir -p "$(dirname "$release")"
  cp -R "$source" "$release"
  for name in "${left_out[@]}"; do rm -rf "${release:?}/$name"; done
  ours="$tmp/ours/$crate"
  mkdir -p "$(dirname "$ours")"
  cp -R "$dir" "$ours"
  rm -f "$ours/PATCHES.md" "$ours/ferrolab.patch"
  if $write; then
    (cd "$tmp" && git -c core.quotepath=false diff --no-index --no-color --no-ext-diff \
      "release/$crate" "ours/$crate" || true) >"$dir/ferrolab.patch"
    echo "check-forks: wrote $dir/ferrolab.patch ($(grep -c '^+++ ' "$dir/ferrolab.patch") files)"
    continue
  fi
  if [ ! -f "$dir/PATCHES.md" ] || [ ! -f "$dir/ferrolab.patch" ]; then
    echo "check-forks: $dir needs PATCHES.md (why) and ferrolab.patch (what)" >&2
    failed=1
    continue
  fi
  (cd "$release" && patch --quiet --force -p3 <"$root/$dir/ferrolab.patch") || {
    echo "check-forks: $dir/ferrolab.patch does not apply to $crate $version" >&2
    failed=1
    continue
  }
  if ! diff -r "$release" "$ours" >"$tmp/diff.txt"; then
    echo "check-forks: $dir is not $crate $version plus its ferrolab.patch:" >&2
    head -40 "$tmp/diff.txt" >&2
    echo "  (change the fork only together with its patch: scripts/check-forks.sh --write," >&2
    echo "   and say why in PATCHES.md)" >&2
    failed=1
    continue
  fi
  echo "check-forks: $dir is $crate $version plus ferrolab.patch ($(grep -c '^+++ ' "$dir/ferrolab.patch") files)"
done
exit $failed
