#!/usr/bin/env bash
# Mutation testing of the core modules with mutmut 3 (configuration: [mutmut] in setup.cfg).
# Slow (~2 900 mutants, tens of minutes on 2 cores), so not part of CI. See docs/testing.md.
#   scripts/mutation.sh                       # every mutant of setup.cfg's only_mutate
#   scripts/mutation.sh 'jacnet.layers.*'     # one module (mutmut name globs)
# Results stay in mutants/ (git-ignored); `mutmut show NAME` prints one mutant's diff.
set -euo pipefail
cd "$(dirname "$0")/.."
MUTMUT="${MUTMUT:-.venv/bin/mutmut}"
unset PYTHONPATH                      # the tests must import mutants/src, not src
export OMP_NUM_THREADS=1
nice -n 19 "$MUTMUT" run --max-children "${JOBS:-2}" "$@" || true
"$MUTMUT" results --all true | python3 -c '
import collections, sys
counts = collections.defaultdict(collections.Counter)
for line in sys.stdin:
    if ": " in line:
        name, status = line.strip().rsplit(": ", 1)
        counts[name.split(".x")[0]][status] += 1
row = "%-28s %7s %8s %6s %9s"
print(row % ("module", "killed", "survived", "other", "kill rate"))
for module, c in sorted(counts.items()):
    done = c["killed"] + c["survived"]
    rate = "%.1f%%" % (100 * c["killed"] / done) if done else "-"
    print(row % (module, c["killed"], c["survived"], sum(c.values()) - done, rate))
'
