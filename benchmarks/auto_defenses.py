"""The default ``auto`` portfolio on registered defenses, one version of the code beside another, in one run.

For every model of ``--models`` a checkpoint is trained once on ``--data`` (``rbgeo train M DATA``, seed
0; reused from ``--checkpoints`` when present), then for every code version of ``--code`` (``LABEL=PATH``:
a checkout whose ``robustbench_geo`` is imported through ``PYTHONPATH``) the exact command a user types
runs as a child process::

    rbgeo attack CK DATA --attack auto --budget 0.05

with one torch thread (``--train-each``: every code version trains its own checkpoint, for a change to
a model's training or forward; ``--attack-code LABEL``: every attack runs with that version's code,
for a change to a model's training alone, or where an older version cannot attack the model; ``--skip LABEL:MODEL``:
that version is not run on that model, e.g. a "before" known to take half an hour, and its cells read "not run").
Its CPU seconds (user + system, from ``getrusage`` of the child) and wall seconds are measured, and the robust
accuracy is read from its output. Versions alternate per model (and their order per repeat), so both see the same
machine load. Run, e.g. (``before`` a checkout of an earlier commit)::

    git worktree add /tmp/before 0bd4a65
    python benchmarks/auto_defenses.py --models gcn gcn_jaccard gcn_svd --code before=/tmp/before after=. \\
        --results benchmarks/results/graph-adaptive/auto-seconds.json
"""

from __future__ import annotations

import argparse
import os
import re
import resource
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from results_file import print_table, write_results  # noqa: E402


def run(cmd: list[str], pythonpath: str) -> tuple[str, float, float]:
    """``(stdout + stderr, CPU seconds, wall seconds)`` of a child process."""
    env = {**os.environ, "PYTHONPATH": str(Path(pythonpath).resolve()), "OMP_NUM_THREADS": "1"}
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    if proc.returncode:
        raise RuntimeError(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stderr[-2000:]}")
    return proc.stdout + proc.stderr, cpu, wall


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--models", nargs="+", default=["gcn", "gcn_jaccard", "gcn_svd"])
    ap.add_argument("--data", default="cora")
    ap.add_argument("--code", nargs="+", default=["now=."], help="LABEL=PATH of each code version")
    ap.add_argument("--repeats", type=int, default=1, help="runs per model and version (the order alternates)")
    ap.add_argument("--checkpoints", default=os.path.join(os.environ.get("RBGEO_CACHE", "."), "auto_defenses"))
    ap.add_argument("--train-each", action="store_true",
                    help="train a checkpoint with every code version (default: one, with the last version)")
    ap.add_argument("--attack-code", default=None,
                    help="LABEL of --code whose code runs every attack (default: each version attacks with its own)")
    ap.add_argument("--skip", nargs="+", default=[], metavar="LABEL:MODEL",
                    help="do not run the code version LABEL on MODEL (its cells read 'not run')")
    ap.add_argument("--results", default=None, help="write the table to this results file")
    args = ap.parse_args(argv)
    codes = dict(c.split("=", 1) for c in args.code)
    skip = set()
    for item in args.skip:
        label, _, model = item.partition(":")
        if label not in codes or model not in args.models:
            ap.error(f"--skip: expected LABEL:MODEL with LABEL one of {', '.join(codes)} and MODEL one of "
                     f"{', '.join(args.models)}, got {item!r}")
        skip.add((label, model))
    if args.attack_code is not None and args.attack_code not in codes:
        ap.error(f"--attack-code: expected one of {', '.join(codes)}, got {args.attack_code!r}")
    # -P: the child imports robustbench_geo from PYTHONPATH (the version under test), not from the working directory
    rbgeo = [sys.executable, "-P", "-c", "from robustbench_geo.cli import main; main()"]
    runs = []
    for model in args.models:
        cks = {}
        for label, path in (codes.items() if args.train_each else [list(codes.items())[-1]]):
            ck = Path(args.checkpoints) / (f"{model}_{args.data}_{label}" if args.train_each else f"{model}_{args.data}")
            if not ck.with_suffix(".json").exists():
                run([*rbgeo, "train", model, args.data, "--out", str(ck)], path)
            cks[label] = ck
        for rep in range(args.repeats):
            order = list(codes.items()) if rep % 2 == 0 else list(codes.items())[::-1]
            for label, path in order:
                if (label, model) in skip:
                    continue
                ck = cks[label] if args.train_each else next(iter(cks.values()))
                attacker = codes[args.attack_code] if args.attack_code else path
                out, cpu, wall = run([*rbgeo, "attack", str(ck), args.data, "--attack", "auto", "--budget", "0.05"], attacker)
                m = re.search(r"clean accuracy ([\d.]+) %, robust accuracy ([\d.]+) %", out)
                runs.append({"model": model, "code": label, "repeat": rep, "clean": float(m.group(1)),
                             "robust": float(m.group(2)), "cpu_seconds": cpu, "wall_seconds": wall})
                print(runs[-1], flush=True)
    labels = list(codes)
    columns = (["model"] + ([f"clean ({c})" for c in labels] if args.train_each else ["clean"])
               + [f"CPU s ({c})" for c in labels] + [f"after auto ({c})" for c in labels])
    rows = []
    for model in args.models:
        rs = {c: [r for r in runs if r["model"] == model and r["code"] == c] for c in labels}
        cpu = {c: " / ".join(f"{r['cpu_seconds']:.0f}" for r in rs[c]) or "not run" for c in labels}
        any_run = [r for c in labels for r in rs[c]]
        clean = ([f"{rs[c][0]['clean']:.1f} %" if rs[c] else "not run" for c in labels] if args.train_each
                 else [f"{any_run[0]['clean']:.1f} %" if any_run else "not run"])
        rows.append([model] + clean + [cpu[c] for c in labels]
                    + [" / ".join(sorted({f"{r['robust']:.1f} %" for r in rs[c]})) or "not run" for c in labels])
    print_table(columns, rows)
    if args.results:
        trained = "by each code version" if args.train_each else "once"
        attacked = f", every attack run with the {args.attack_code!r} code" if args.attack_code else ""
        what = (f"rbgeo attack CK {args.data} --attack auto --budget 0.05 (the default portfolio, seed 0, evasion) on a "
                f"checkpoint of each model trained with rbgeo train (seed 0, {trained}{attacked}): CPU seconds of the command (one thread) "
                f"and test accuracy after the attack, for each code version ({', '.join(labels)}), {args.repeats} run(s) each "
                f"(CPU seconds per run, in the order run; the versions alternate)")
        if skip:
            what += "; not run: " + ", ".join(f"{label} on {model}" for label, model in sorted(skip))
        write_results(args.results, what, columns, rows,
                      data={"runs": runs, "code": codes, "attack_code": args.attack_code,
                            "skipped": [f"{label}:{model}" for label, model in sorted(skip)]})


if __name__ == "__main__":
    main()
