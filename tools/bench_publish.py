#!/usr/bin/python3
"""Writes tools/run-bench's report.md, results.json and plots from the raw benchmark JSON.

Usage: tools/bench_publish.py --out DIR RAW_DIR

RAW_DIR/*.json is the main run (bench_*.json from Google Benchmark, bench_torch.json,
bench_ort.json: the format tools/bench_report.py reads); RAW_DIR/threads-<t>/*.json is the
thread-scaling pass on t threads (simdattn only). Writes into DIR:

  results.json  {"schema": 1, "date", "mode", "threads", "machine": {...}, "results": [entry...]}
                with one entry per group/impl/shape/threads: its rate ("value", in "unit"), every
                run's rate ("runs", with "min" and "max": the spread tools/bench-compare tests
                against), the median time per call ("time_us", "time_us_runs"), "bytes" moved per
                call where the benchmark counts them, "label" and "error" where given
  report.md     the machine, then one table per op: simdattn, every peer, simdattn / the best
                peer, % of the measured FMA peak (or of the measured read bandwidth), the
                thread-scaling table and the plots
  *.png         tools/bench_plots.py (when matplotlib is installed)

The rate of a group is bench_report.py's: the first of flops, bytes_per_second, items_per_second
that its results carry; the median is bench_report.pick's (Google Benchmark's median aggregate,
else the median run); runs are Google Benchmark's iteration runs, or a script's samples_us (the
rate of each sample is the median rate scaled by median time / sample time).
"""
import argparse
import datetime
import glob
import json
import os
import sys

import bench_report as br

SCHEMA = 1
SCRIPT_FILES = ("bench_torch.json", "bench_ort.json")
# simdattn's own alternative paths and the bandwidth bound: columns, never "the best peer".
NOT_PEERS = {"unfused", "bshd", "memcpy"}
# bench_variants: simdattn's own modes (window vs full causal, softcap/ALiBi/sinks vs plain,
# varlen vs padded vs one call per sequence), compared with each other, never peers.
NOT_PEERS |= {"causal", "window4096", "plain", "softcap", "alibi", "sinks", "all", "varlen",
              "padded", "one_by_one"}
# Groups whose memcpy copies the bytes the operation reads (bench_cast): their tables also show
# simdattn's speed relative to that copy, memcpy's time over simdattn's (1.00x = as fast).
MEMCPY_SPEED_GROUPS = {"cast"}
# Report labels of the machine section: context key -> label, in this order.
MACHINE_KEYS = [("cpu_model", "CPU"), ("num_cpus", "CPUs"), ("threads", "threads used"),
                ("caches", "caches"), ("cpu_mhz", "cpu MHz (/proc/cpuinfo)"),
                ("simdattn_version", "simdattn"), ("simdattn_simd_target", "SIMD target chosen"),
                ("simdattn_gemm_blocking", "simdattn GEMM blocking"),
                ("openblas_corename", "OpenBLAS kernel"), ("openblas_config", "OpenBLAS build"),
                ("onednn_version", "oneDNN"), ("torch_version", "PyTorch"),
                ("ort_version", "ONNX Runtime"), ("ort_session", "ONNX Runtime session"),
                ("load_avg", "load average at start"), ("host_name", "host")]
TIME_UNIT_US = {"ns": 1e-3, "us": 1.0, "ms": 1e3, "s": 1e6}


def time_us(result):
    if "real_time" not in result:
        return None
    return result["real_time"] * TIME_UNIT_US.get(result.get("time_unit", "ns"), 1e-3)


def run_values(runs, chosen, counter, scale):
    """(rates, times in us) of every run: Google Benchmark's iteration runs, else the chosen
    result's samples_us (a script's samples), else the chosen result alone."""
    plain = [r for r in runs if r.get("run_type", "iteration") == "iteration" and counter in r]
    if len(plain) > 1 or not chosen.get("samples_us"):
        plain = plain or [chosen]
        return ([r[counter] / scale for r in plain if counter in r],
                [t for t in map(time_us, plain) if t is not None])
    median_time = time_us(chosen)
    value = chosen[counter] / scale
    samples = [s for s in chosen["samples_us"] if s > 0]
    return [value * median_time / s for s in samples], samples


def make_entry(key, runs, metric, threads):
    group, impl, shape = key
    chosen = br.pick(runs)
    counter, unit, scale = metric
    entry = {"name": "/".join(key), "group": group, "impl": impl, "shape": shape,
             "threads": threads, "metric": counter, "unit": unit}
    if chosen.get("error_occurred"):
        entry["error"] = chosen.get("error_message", "error")
        return entry
    if counter == "flops" and group == br.PEAK_GROUP:
        counter = "best_flops" if "best_flops" in chosen else counter
    if counter not in chosen:
        entry["error"] = f"no {counter} counter"
        return entry
    values, times = run_values(runs, chosen, counter, scale)
    entry.update(value=chosen[counter] / scale, runs=values, min=min(values, default=None),
                 max=max(values, default=None), time_us=time_us(chosen), time_us_runs=times)
    if "bytes_per_second" in chosen and entry["time_us"]:
        entry["bytes"] = chosen["bytes_per_second"] * entry["time_us"] * 1e-6
    if chosen.get("label"):
        entry["label"] = chosen["label"]
    return entry


def entries(records, threads):
    """One entry per (group, impl, shape) of records (bench_report.load's), in its order."""
    metrics = {}
    for (group, _, _), runs in records.items():
        metrics.setdefault(group, []).append(br.pick(runs))
    metrics = {g: br.group_metric(rs) for g, rs in metrics.items()}
    return [make_entry(key, runs, metrics[key[0]], threads)
            for key, runs in records.items() if metrics[key[0]] is not None]


def context_threads(contexts, default):
    for ctx in contexts:
        try:
            return int(ctx["threads"])
        except (KeyError, TypeError, ValueError):
            continue
    return default


def machine_info(context, records, membw):
    machine = {label: context[key] for key, label in MACHINE_KEYS if key in context}
    peak, _ = br.peak_flops(records)
    machine["FMA peak (measured)"] = f"{peak / 1e9:.1f} GFLOP/s" if peak else "not measured"
    machine["read bandwidth (measured)"] = f"{membw:.1f} GB/s" if membw else "not measured"
    machine.setdefault("ONNX Runtime", "not available")
    return machine, (peak / 1e9 if peak else None)


def ordered_files(directory):
    """Its *.json, the scripts' (PyTorch's, ONNX Runtime's: columns after the programs') last."""
    files = sorted(glob.glob(os.path.join(directory, "*.json")))
    return sorted(files, key=lambda f: os.path.basename(f) in SCRIPT_FILES)


def collect(raw_dir):
    """The results.json document from a raw directory."""
    contexts, records = br.load(ordered_files(raw_dir))
    context = br.merged_context(contexts)
    threads = context_threads(contexts, None)
    results = entries(records, threads)
    for sub in sorted(glob.glob(os.path.join(raw_dir, "threads-*"))):
        sub_contexts, sub_records = br.load(ordered_files(sub))
        t = context_threads(sub_contexts, int(sub.rsplit("-", 1)[1]))
        results += entries(sub_records, t)
    membw = max((e["value"] for e in results if e["group"] == br.MEMBW_GROUP and "value" in e
                 and e["threads"] == threads), default=None)
    machine, peak = machine_info(context, records, membw)
    date = next((c["date"] for c in contexts if isinstance(c, dict) and "date" in c), None)
    return {"schema": SCHEMA, "date": date or datetime.datetime.now().astimezone().isoformat(),
            "threads": threads, "peak_gflops": peak, "read_gbps": membw, "machine": machine,
            "results": results}


# ---------------------------------------------------------------- report.md

def fmt(value):
    if value is None:
        return "-"
    return f"{value:.3g}" if value < 100 else f"{value:.0f}"


def value_cell(entry):
    """'217 ±2%' (half the min-max range of its runs, relative), 'error', or '-'."""
    if entry is None:
        return "-"
    if "error" in entry:
        return "error"
    text = fmt(entry["value"])
    if len(entry.get("runs", [])) > 1 and entry["value"]:
        text += f" ±{50 * (entry['max'] - entry['min']) / entry['value']:.0f}%"
    return text


def main_entries(doc):
    return [e for e in doc["results"] if e["threads"] == doc["threads"]]


def group_table(group, items, doc):
    """Markdown lines of one op's table."""
    impls = br.ordered_unique(e["impl"] for e in items)
    if br.PRIMARY_IMPL in impls:
        impls = [br.PRIMARY_IMPL] + [i for i in impls if i != br.PRIMARY_IMPL]
    impls, _ = br.split_variants(impls)  # torch_<config>: results.json only
    primary, others = impls[0], impls[1:]
    peers = [i for i in others if i not in NOT_PEERS]
    by_key = {(e["impl"], e["shape"]): e for e in items}
    unit = items[0]["unit"]
    flops = items[0]["metric"] == "flops"
    bound = doc["peak_gflops"] if flops else doc["read_gbps"]
    bound_head = "% of peak" if flops else "% of read bandwidth"
    show_read = flops and doc["read_gbps"] and any("bytes" in e for e in items if e["impl"] == primary)
    head = ["shape"] + impls + ([f"{primary} / best peer"] if peers else [])
    head += [bound_head] if bound else []
    head += ["x read time"] if show_read else []
    copy_speed = group in MEMCPY_SPEED_GROUPS and "memcpy" in impls
    head += [f"{primary} speed / memcpy"] if copy_speed else []
    lines = [f"## {group} ({unit}, higher is better)", "",
             "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for shape in br.ordered_unique(e["shape"] for e in items):
        mine = by_key.get((primary, shape))
        mine_value = mine.get("value") if mine else None
        row = [shape] + [value_cell(by_key.get((i, shape))) for i in impls]
        best = max(((by_key[(p, shape)]["value"], p) for p in peers
                    if by_key.get((p, shape), {}).get("value")), default=None)
        if peers:
            row.append(f"{mine_value / best[0]:.2f}x ({best[1]})" if mine_value and best else "-")
        if bound:
            row.append(f"{100 * mine_value / bound:.0f}%" if mine_value else "-")
        if show_read:  # time / (bytes / bandwidth)
            read_us = mine.get("bytes", 0) / (doc["read_gbps"] * 1e3) if mine else 0
            row.append(f"{mine['time_us'] / read_us:.2f}x" if read_us else "-")
        if copy_speed:
            copy = by_key.get(("memcpy", shape)) or {}
            both = mine and mine.get("time_us") and copy.get("time_us")
            row.append(f"{copy['time_us'] / mine['time_us']:.2f}x" if both else "-")
        lines.append("| " + " | ".join(row) + " |")
    return lines + [""]


def scaling_lines(doc):
    scaled = [e for e in doc["results"] if e["threads"] != doc["threads"] and "value" in e]
    if not scaled:
        return ["## Thread scaling", "", "Not run (a FILTER was given, or 1 thread).", ""]
    counts = sorted({e["threads"] for e in scaled} | {doc["threads"]})
    rows = {}
    for e in doc["results"]:
        if "value" in e and any(s["name"] == e["name"] for s in scaled):
            rows.setdefault(e["name"], {})[e["threads"]] = e
    head = ["benchmark", "unit"] + [f"{t} thr" for t in counts] + [f"speed-up {counts[-1]} / 1"]
    lines = ["## Thread scaling (simdattn)", "", "| " + " | ".join(head) + " |",
             "|" + "---|" * len(head)]
    for name, by_t in rows.items():
        first, last = by_t.get(counts[0]), by_t.get(counts[-1])
        speedup = f"{last['value'] / first['value']:.2f}x" if first and last else "-"
        unit = next(iter(by_t.values()))["unit"]
        lines.append("| " + " | ".join([name, unit] + [value_cell(by_t.get(t)) for t in counts] +
                                       [speedup]) + " |")
    return lines + [""]


HOW_TO_READ = """\
Each figure is the median of the runs (full mode: 3 runs of >= 0.2 s, interleaved at random;
`--quick`: one 0.05 s run, no spread); `±` is half the min-max range of the runs, relative.
Rates are per call of the whole operation: GFLOP/s counts the multiply-adds the operation must do
(causal attention: the unmasked half), GB/s counts the bytes it must read and write once.
`simdattn / best peer` > 1 means simdattn is faster than every other library in the row (OpenBLAS,
oneDNN, PyTorch, ONNX Runtime, naive compositions; not simdattn's own `unfused` and `bshd` paths
nor `memcpy`, a bound). `% of peak` divides by the FMA peak measured in the same run; `x read
time` is the time over the time to read the operation's bytes once at the measured bandwidth
(1.00x = as fast as reading K and V once). Every implementation runs on the same thread count.
The C++ programs interleave their implementations' runs, so their ratios (OpenBLAS, oneDNN, the
naive compositions) see the same load; PyTorch, ONNX Runtime and the thread-scaling pass run
later in their own processes, so on a shared machine their ratios also carry any change of load.
Figures taken while other processes share the cores are unreliable: check the load average.
"""


def render(doc, plots):
    date = doc["date"][:16].replace("T", " ")
    lines = ["# simdattn benchmark report", "",
             f"{date}, {doc['threads']} threads, {doc.get('mode', 'full')} mode. "
             "Compare two runs with `tools/bench-compare A/results.json B/results.json`.", "",
             "## Machine", "", "| | |", "|---|---|"]
    lines += [f"| {k} | {v} |" for k, v in doc["machine"].items()]
    lines += ["", "## How to read it", "", HOW_TO_READ]
    items = main_entries(doc)
    for group in br.ordered_unique(e["group"] for e in items):
        if group in (br.PEAK_GROUP, br.MEMBW_GROUP):
            continue
        lines += group_table(group, [e for e in items if e["group"] == group], doc)
    lines += scaling_lines(doc)
    errors = [e for e in doc["results"] if "error" in e]
    if errors:
        lines += ["## Errors", ""] + [f"- {e['name']} ({e['threads']} thr): {e['error']}"
                                      for e in errors] + [""]
    lines += ["## Plots", ""]
    lines += [f"![{os.path.splitext(p)[0]}]({p})" for p in plots] or [
        "None: matplotlib is not installed (apt-get install python3-matplotlib)."]
    return "\n".join(lines) + "\n"


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, help="output directory")
    parser.add_argument("--mode", default=None, help="'quick' or 'full', for the report")
    parser.add_argument("raw", help="directory of the raw benchmark JSON")
    args = parser.parse_args()
    doc = collect(args.raw)
    if not doc["results"]:
        print(f"error: no benchmark results in {args.raw}", file=sys.stderr)
        return 1
    if args.mode:
        doc["mode"] = args.mode
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "results.json"), "w") as f:
        json.dump(doc, f, indent=1)
    try:
        import bench_plots
        plots = bench_plots.write_all(doc, args.out)
    except ImportError as e:
        print(f"warning: no plots: {e}", file=sys.stderr)
        plots = []
    with open(os.path.join(args.out, "report.md"), "w") as f:
        f.write(render(doc, plots))
    return 0


if __name__ == "__main__":
    sys.exit(main())
