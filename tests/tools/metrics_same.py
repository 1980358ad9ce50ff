"""Checks that a run's metrics.jsonl logs steps 1..N once each and, apart from the
timing fields (images_per_s, elapsed), equals a reference run's line for line
(preempted and resumed runs against an uninterrupted one).

usage: metrics_same.py RUN_METRICS.jsonl REF_METRICS.jsonl N
Prints "N steps" and exits 0, or fails an assertion naming the first difference."""
import json
import sys

run = [json.loads(l) for l in open(sys.argv[1])]
ref = [json.loads(l) for l in open(sys.argv[2])]
n = int(sys.argv[3])
assert [r["step"] for r in run] == list(range(1, n + 1)), [r["step"] for r in run]
drop = {"images_per_s", "elapsed"}
for a, b in zip(run, ref):
    a = {k: v for k, v in a.items() if k not in drop}
    b = {k: v for k, v in b.items() if k not in drop}
    assert a == b, (a, b)
print(f"{len(run)} steps")
