#!/usr/bin/env bash
# The README's quick start is itself tested: this reads the two commands of the README's
# first code block, checks that one is the test command (.ci/test.sh, which runs this script,
# so it is not run again here) and runs the other, the demo, failing if it exits non-zero or
# runs longer than $README_DEMO_TIMEOUT seconds (default 600, including its release build).
set -euo pipefail
cd "$(dirname "$0")/.."

fail() {
    echo "readme.sh: $*" >&2
    exit 1
}

[ -f README.md ] || fail "README.md not found"

# The quick start must come first: no section heading before the first code block.
first_fence=$(grep -n '^```' README.md | head -n1 | cut -d: -f1)
[ -n "$first_fence" ] || fail "README.md has no code block"
if head -n "$first_fence" README.md | grep -q '^## '; then
    fail "the first code block must come before the first section heading"
fi

# The non-empty lines of the first code block, trimmed.
mapfile -t commands < <(awk '
    /^```/ { if (inside) exit; inside = 1; next }
    inside { sub(/\r$/, ""); gsub(/^[ \t]+|[ \t]+$/, ""); if (length($0)) print }
' README.md)
[ "${#commands[@]}" -eq 2 ] || fail "the first code block must hold exactly two commands, found ${#commands[@]}"

demo=""
has_test=0
for c in "${commands[@]}"; do
    if [ "$c" = ".ci/test.sh" ]; then
        has_test=1
    else
        demo="$c"
    fi
done
[ "$has_test" -eq 1 ] || fail "the first code block must contain the test command .ci/test.sh"
[ -n "$demo" ] || fail "the first code block must contain the demo command"

echo "README quick start: ${commands[0]} ; ${commands[1]}"
echo "+ $demo"
start=$(date +%s)
status=0
timeout --kill-after=10 "${README_DEMO_TIMEOUT:-600}" bash -c "$demo" </dev/null || status=$?
if [ "$status" -eq 124 ] || [ "$status" -eq 137 ]; then
    fail "the demo command timed out after ${README_DEMO_TIMEOUT:-600} s"
elif [ "$status" -ne 0 ]; then
    fail "the demo command exited with status $status"
fi
echo "readme.sh: the demo command passed in $(($(date +%s) - start)) s"
