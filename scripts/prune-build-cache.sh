#!/usr/bin/env bash
# Keeps the shared cargo build cache from filling the disk: every change to the
# workspace leaves new test binaries (the kernel's are over 1 GB each) and
# incremental caches beside the old ones, which cargo never removes. This deletes
# test and example executables and incremental caches not rebuilt for PRUNE_DAYS
# days (default 2), and of each test executable all but the PRUNE_KEEP (default 2)
# newest builds (a busy day leaves dozens of them, tens of GB); cargo rebuilds any
# it still needs. Libraries (the compiled
# dependencies, which take long to build) are never touched. A fresh cache has
# nothing to delete.
set -euo pipefail
target="${CARGO_TARGET_DIR:?set CARGO_TARGET_DIR}"
days="${PRUNE_DAYS:-2}"
keep="${PRUNE_KEEP:-2}"
[ -d "$target" ] || exit 0
freed=0
for profile in "$target"/debug "$target"/release; do
	[ -d "$profile" ] || continue
	if [ -d "$profile/deps" ]; then
		while IFS= read -r -d '' file; do
			freed=$((freed + $(stat -c %s "$file")))
			rm -f -- "$file"
		done < <(find "$profile/deps" -maxdepth 1 -type f -executable ! -name '*.*' -size +20M -mtime +"$days" -print0)
		# Newest first, per name without cargo's hash: keep the first $keep of each.
		declare -A seen=()
		while IFS= read -r line; do
			file="${line#* }"
			name="$(basename "$file")"
			name="${name%-*}"
			seen[$name]=$((${seen[$name]:-0} + 1))
			if [ "${seen[$name]}" -gt "$keep" ]; then
				freed=$((freed + $(stat -c %s "$file")))
				rm -f -- "$file"
			fi
		done < <(find "$profile/deps" -maxdepth 1 -type f -executable ! -name '*.*' -size +20M -printf '%T@ %p\n' | sort -rn)
		unset seen
	fi
	if [ -d "$profile/incremental" ]; then
		while IFS= read -r -d '' dir; do
			freed=$((freed + $(du -sb "$dir" | cut -f1)))
			rm -rf -- "$dir"
		done < <(find "$profile/incremental" -mindepth 1 -maxdepth 1 -type d -mtime +"$days" -print0)
	fi
done
if [ "$freed" -gt 0 ]; then
	echo "pruned $((freed / 1024 / 1024)) MiB of old build artifacts (unused for ${days} days, or older than the ${keep} newest builds) from $target"
fi
