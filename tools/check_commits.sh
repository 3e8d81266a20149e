#!/usr/bin/env bash
# The commit-message convention from issue 76 on, checked by .ci/run: a subject of at most 72 characters shaped
# "area: what changed", then a blank line and a body (the measurement and the reason).
#   bash tools/check_commits.sh [FIRST]    FIRST: the first commit held to it (default: the convention's first)
set -euo pipefail
FIRST=${1:-f46c9a98b3a08d6cb8b1628639f80423106f78a5}  # tools/gpu_kit: carry Warp and the missing wheels ...
if ! git rev-parse -q --verify "$FIRST^{commit}" >/dev/null; then
    echo "check_commits: $FIRST is not in this clone's history (a shallow clone?): nothing checked"
    exit 0
fi
range=("$FIRST^..HEAD")
bad=0
while read -r sha; do
    subject=$(git log -1 --format=%s "$sha")
    second=$(git log -1 --format=%B "$sha" | sed -n 2p)
    body=$(git log -1 --format=%b "$sha")
    problems=()
    [ "${#subject}" -le 72 ] || problems+=("subject of ${#subject} characters (at most 72)")
    [[ "$subject" =~ ^[A-Za-z0-9_./,\ -]+:\ .+ ]] || problems+=("subject not shaped 'area: what changed'")
    [ -z "$second" ] || problems+=("no blank line after the subject")
    [ -n "${body//[[:space:]]/}" ] || problems+=("no body (the measurement and the reason)")
    if [ "$(git rev-list --parents -n 1 "$sha" | wc -w)" -gt 2 ]; then problems=(); fi  # merges: their parents are checked
    for p in "${problems[@]}"; do echo "${sha:0:10} $p: $subject"; bad=1; done
done < <(git rev-list "${range[@]}")
[ "$bad" = 0 ] && echo "check_commits: every commit since ${FIRST:0:10} follows the convention"
exit "$bad"
