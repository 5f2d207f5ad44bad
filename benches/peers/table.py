#!/usr/bin/env python3
"""One table of specdef's CPU engine against its JAX peers, from records of one run.

    table.py --specdef SPECDEF.jsonl --jax JAX.jsonl [JAX.jsonl ...] [--markdown OUT.md]

One row per workload of the specdef file (and per specdef engine, where it holds several):
specdef's median steps/s, each JAX engine's median, the best JAX median, specdef / best JAX, and
specdef's GFLOP/s (median x flop_per_step / 1e9; flop_per_step from the specdef record, or else
from the JAX records of the same workload, which copy it from the export's manifest).
Standard library only.
"""

import argparse
import json
import os
import sys
from machine import cpu_model


def read_records(path):
    out = []
    with open(path) as f:
        for n, line in enumerate(f, 1):
            line = line.strip()
            if not line:
                continue
            try:
                rec = json.loads(line)
            except json.JSONDecodeError as e:
                sys.exit(f"{path}:{n}: {e}")
            if rec.get("schema") != "specdef.bench/1":
                sys.exit(f"{path}:{n}: schema {rec.get('schema')!r}, expected 'specdef.bench/1'")
            out.append(rec)
    return out




def num(x, digits=1):
    if x is None:
        return "-"
    return f"{x:.{digits}f}"


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--specdef", required=True, help="specdef bench records (JSON lines)")
    ap.add_argument("--jax", required=True, nargs="+", help="jax_peer.py records (JSON lines)")
    ap.add_argument("--markdown", help="also write the table as markdown here")
    args = ap.parse_args()

    spec = read_records(args.specdef)
    jax_recs = [r for path in args.jax for r in read_records(path)]
    if not spec:
        sys.exit(f"{args.specdef}: no records")

    jax_engines = []
    for r in jax_recs:
        if r["engine"] not in jax_engines:
            jax_engines.append(r["engine"])
    by_key = {}
    for r in jax_recs:
        key = (r["workload"], r["engine"])
        if key in by_key:
            sys.exit(f"two JAX records for {key}: give each engine's file once")
        by_key[key] = r

    spec_engines = []
    for r in spec:
        if r["engine"] not in spec_engines:
            spec_engines.append(r["engine"])
    several = len(spec_engines) > 1

    header = ["workload"] + (["specdef engine"] if several else []) + ["specdef"]
    header += jax_engines
    header += ["best JAX", "specdef / best JAX", "specdef GFLOP/s"]
    rows, notes = [], []
    for r in spec:
        w = r["workload"]
        if r.get("unit") != "steps/s":
            notes.append(f"{w} ({r['engine']}): unit {r.get('unit')!r}, not compared")
            continue
        jaxes = [by_key.get((w, e)) for e in jax_engines]
        medians = [j["median"] for j in jaxes if j is not None]
        best = max(medians) if medians else None
        flop = r.get("flop_per_step")
        if flop is None:
            flop = next((j.get("flop_per_step") for j in jaxes
                         if j is not None and j.get("flop_per_step") is not None), None)
        row = [w] + ([r["engine"]] if several else []) + [num(r["median"])]
        row += [num(j["median"]) if j is not None else "-" for j in jaxes]
        row += [num(best), f"{r['median'] / best:.2f}" if best else "-",
                num(r["median"] * flop / 1e9, 2) if flop else "-"]
        rows.append(row)
        if not medians:
            notes.append(f"{w}: no JAX record")
    for (w, e) in by_key:
        if not any(r["workload"] == w for r in spec):
            notes.append(f"{w} ({e}): JAX record with no specdef record, not shown")

    # The machine: what this script runs on, and what the records say they ran on.
    here = cpu_model()
    adapters = sorted({r["adapter"] for r in jax_recs})
    host_adapters = sorted({r["adapter"] for r in jax_recs if r.get("device_type") == "host"})
    jax_versions = sorted({r["crate_version"] for r in jax_recs})
    drivers = sorted({r["driver"] for r in spec})
    lines = [
        f"CPU: {here}; {os.cpu_count()} cores (os.cpu_count()); "
        f"JAX records' adapter: {', '.join(adapters) or '-'}",
        f"jax {', '.join(jax_versions) or '-'}; specdef {', '.join(spec_engines)} "
        f"({'; '.join(drivers)})",
        "medians of steps/s, higher is better; specdef / best JAX > 1: specdef is faster",
    ]
    if host_adapters and host_adapters != [here]:
        notes.append("the JAX records name another CPU than this machine's: the figures are "
                     "only comparable from one run on one machine")
    quick = [f"{r['engine']}" for r in jax_recs if r.get("warmup_samples", 2) < 2
             or len(r.get("samples", [])) < 5]
    if quick:
        notes.append("smoke-test records (--quick: fewer samples) from "
                     + ", ".join(sorted(set(quick))) + ": not benchmark figures")

    widths = [max(len(h), *(len(row[i]) for row in rows)) if rows else len(h)
              for i, h in enumerate(header)]

    def text_line(cells):
        return "  ".join(c.ljust(widths[0]) if i == 0 else c.rjust(widths[i])
                         for i, c in enumerate(cells))

    for line in lines:
        print(line)
    print()
    print(text_line(header))
    print("  ".join("-" * n for n in widths))
    for row in rows:
        print(text_line(row))
    for note in notes:
        print(f"note: {note}")

    if args.markdown:
        with open(args.markdown, "w") as f:
            for line in lines:
                f.write(line + "\n\n")
            f.write("| " + " | ".join(header) + " |\n")
            f.write("|" + "|".join(["---"] + ["---:"] * (len(header) - 1)) + "|\n")
            for row in rows:
                f.write("| " + " | ".join(row) + " |\n")
            if notes:
                f.write("\n")
                for note in notes:
                    f.write(f"- note: {note}\n")


if __name__ == "__main__":
    main()
