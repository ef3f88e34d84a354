"""`check_rules` on the functions of every case of a bug suite.

    python bench/rules_on_bugsuite.py [--suite-dir ../shared/bugsuite] [--only SUBSTR]

Each case's loss `fn(params, *args)` is given to `jaxcheck.check_rules` (the case's
`grad_fn`, a hand-written gradient, is not a rule of `fn`'s and is left to `check`). Prints
one line per case (its label, whether check_rules passed, the failing checks, seconds), then
how many cases ran without error and how many correct cases passed. A case's bug lives in its
`grad_fn` or in a rule that is consistent but computes the wrong formula, so the buggy cases
are expected to pass here too: finding them is the finite-difference check's job.
"""
from __future__ import annotations

import argparse
import importlib
import os
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--suite-dir", default=os.path.join(HERE, "..", "..", "shared", "bugsuite"))
    ap.add_argument("--suite", default="public")
    ap.add_argument("--only", default=None)
    a = ap.parse_args(argv)
    sys.path.insert(0, os.path.abspath(a.suite_dir))
    sys.path.insert(0, os.path.abspath(os.path.join(HERE, "..")))  # this checkout's jaxcheck
    from cases_common import materialize  # type: ignore[import-not-found]

    import jaxcheck

    cases = importlib.import_module(f"{a.suite}_cases").CASES
    if a.only:
        cases = [c for c in cases if a.only in c.name]
    print(f"# check_rules on {len(cases)} cases of {a.suite} ({jaxcheck.__file__})")
    errors = passed_correct = passed_buggy = 0
    n_correct = sum(not c.buggy for c in cases)
    start = time.perf_counter()
    for c in cases:
        t0 = time.perf_counter()
        try:
            with materialize(c) as (params, args):
                report = jaxcheck.check_rules(c.fn, params, *args)
            status = "PASS" if report.ok else "FAIL " + ",".join(report.failed)
            if report.ok:
                passed_correct += not c.buggy
                passed_buggy += c.buggy
        except Exception as e:  # any exception is what this script counts
            errors += 1
            status = f"ERROR({type(e).__name__}: {str(e).splitlines()[0][:100]})"
        print(f"{c.name:40s} buggy={int(c.buggy)} n={c.n_params:6d} {c.dtype:7s} "
              f"{status:30s} {time.perf_counter() - t0:6.1f}s", flush=True)
    print(f"total {time.perf_counter() - start:.1f}s; ran without error: "
          f"{len(cases) - errors}/{len(cases)}; correct cases passed: "
          f"{passed_correct}/{n_correct}; buggy cases passed: "
          f"{passed_buggy}/{len(cases) - n_correct}")
    return 0 if errors == 0 and passed_correct == n_correct else 1


if __name__ == "__main__":
    sys.exit(main())
