#!/usr/bin/python3
"""Prints the simdattn benchmark report: one table per group, simdattn against each baseline.

Usage: tools/bench_report.py RESULTS.json [MORE.json ...]

Input: Google Benchmark JSON (--benchmark_format=json / --benchmark_out=FILE), or a file of the
same shape written by any script (e.g. a torch timing script), which needs only:

    {
      "context": {"torch_version": "1.13.1", ...},          # optional, merged into the header
      "benchmarks": [
        {"name": "sdpa/torch/b32_h8_l10_d64",                 # group/impl/shape
         "real_time": 12.5, "time_unit": "us",                # optional: time per call
         "flops": 3.1e9},                                     # FLOP/s, and/or:
        {"name": "softmax/torch/4096x4096",
         "bytes_per_second": 2.0e10, "items_per_second": 2.5e9}
      ]
    }

Names are group/impl/shape; the shape must not contain ':' (Google Benchmark appends suffixes
such as /real_time and /min_time:0.2, which are dropped). Each group's table has a row per shape
(first-seen order) and, for the primary implementation ("simdattn", else the group's first),
its rate, time, and the ratio primary / baseline for every other implementation (> 1: simdattn
is faster). The rate is the first of flops (GFLOP/s), bytes_per_second (GB/s, read + write),
items_per_second (Gelem/s) that the group's results carry. FLOP/s groups also show the primary's
% of the measured peak (group "peak": the highest best_flops, else flops, of all its runs).
Memory-bound rows: in a group whose rate is not bytes_per_second, a primary result that also
carries bytes_per_second (the bytes it must move at least once, e.g. decode's K and V) gets a
"x read time" column when a "membw" group exists: its time over the time to read those bytes at
the measured bandwidth (the highest bytes_per_second in group membw), i.e. membw / its rate
(1.00x = as fast as reading the bytes once).
Variants: an implementation named base_config (e.g. torch_bf1_t2) beside an implementation base
in the same group is one configuration of it (base being the fastest); variants get their own
compact table of rates under the group's table instead of ratio columns.
Repetitions: a "median" aggregate is used when present, else the median of the runs.
"""
import argparse
import json
import statistics
import sys

PRIMARY_IMPL = "simdattn"
PEAK_GROUP = "peak"
MEMBW_GROUP = "membw"
# (counter, unit label, scale): the first present in a group is its rate.
METRICS = [("flops", "GFLOP/s", 1e9), ("bytes_per_second", "GB/s", 1e9),
           ("items_per_second", "Gelem/s", 1e9)]
ITEMS_METRIC = METRICS[2]
# Header lines, in this order; other custom context keys follow, then Google Benchmark's own.
HEADER_KEYS = [("cpu_model", "CPU"), ("num_cpus", "CPUs"), ("cpu_mhz", "cpu MHz (/proc/cpuinfo)"),
               ("threads", "threads"), ("simdattn_version", "simdattn"),
               ("simdattn_simd_target", "simdattn SIMD target"),
               ("simdattn_gemm_blocking", "simdattn GEMM blocking"),
               ("openblas_corename", "OpenBLAS core"), ("openblas_config", "OpenBLAS config"),
               ("openblas_threads", "OpenBLAS threads"), ("onednn_version", "oneDNN"),
               ("caches", "caches"), ("load_avg", "load average at start"),
               ("host_name", "host")]
# Google Benchmark context keys not worth a header line.
SKIPPED_CONTEXT = {"date", "executable", "mhz_per_cpu", "cpu_scaling_enabled",
                   "library_build_type", "json_schema_version", "peak_fma_formula",
                   "peak_fma_target"}
TIME_UNIT_NS = {"ns": 1.0, "us": 1e3, "ms": 1e6, "s": 1e9}


def parse_name(name):
    """'sgemm/simdattn/64x64x64/real_time' -> ('sgemm', 'simdattn', '64x64x64'), else None."""
    parts = [p for p in name.split("/")
             if p not in ("real_time", "process_time", "manual_time") and ":" not in p]
    if len(parts) < 3:
        return None
    return parts[0], parts[1], "/".join(parts[2:])


def load(paths):
    """Returns (contexts, records): records maps (group, impl, shape) -> list of result dicts,
    in registration order (Google Benchmark's family_index, else file order): with
    --benchmark_enable_random_interleaving the file order is random."""
    contexts, records, order = [], {}, {}
    for file_index, path in enumerate(paths):
        try:
            with open(path) as f:
                text = f.read()
            if not text.strip():
                continue  # a program whose benchmarks the filter all removed
            data = json.loads(text)
        except (OSError, ValueError) as e:
            print(f"warning: skipping {path}: {e}", file=sys.stderr)
            continue
        if not isinstance(data, dict):
            print(f"warning: skipping {path}: not a JSON object", file=sys.stderr)
            continue
        contexts.append(data.get("context") or {})
        for position, b in enumerate(data.get("benchmarks") or []):
            name = b.get("run_name", b.get("name")) if isinstance(b, dict) else None
            key = parse_name(name) if isinstance(name, str) else None
            if key is not None:
                records.setdefault(key, []).append(b)
                order.setdefault(key, (file_index, b.get("family_index", position)))
    return contexts, dict(sorted(records.items(), key=lambda item: order[item[0]]))


def pick(runs):
    """One result from repetitions: the median aggregate, else the median iteration run."""
    medians = [r for r in runs if r.get("aggregate_name") == "median"]
    if medians:
        return medians[0]
    plain = [r for r in runs if r.get("run_type", "iteration") == "iteration"] or runs
    if len(plain) == 1:
        return plain[0]
    metric = next((m for m, _, _ in METRICS if m in plain[0]), None)
    if metric is None:
        return plain[0]
    ordered = sorted(plain, key=lambda r: r.get(metric, 0.0))
    return ordered[(len(ordered) - 1) // 2]


def cache_text(cache):
    """A Google Benchmark "caches" entry as 'L2 Unified 1024 KiB'; anything else as text."""
    try:
        return f"L{cache['level']} {cache['type']} {int(cache['size']) // 1024} KiB"
    except (KeyError, TypeError, ValueError):
        return context_text(cache)


def context_text(value, key=None):
    """One header value as text, whatever JSON type Google Benchmark (or a script) gave it:
    numbers in a list to 2 decimals (load_avg), dicts as key=value (the "caches" entries), lists
    of anything joined."""
    if isinstance(value, float):
        return f"{value:.2f}"
    if isinstance(value, dict):
        return " ".join(f"{k}={context_text(v)}" for k, v in value.items())
    if isinstance(value, list) and key == "caches":
        return ", ".join(cache_text(v) for v in value)
    if isinstance(value, list):
        sep = ", " if any(isinstance(v, (dict, list)) for v in value) else " "
        return sep.join(context_text(v) for v in value)
    return str(value)


def merged_context(contexts):
    """key -> ' | '.join of its distinct values across files (first-seen order)."""
    merged = {}
    for ctx in contexts:
        if not isinstance(ctx, dict):
            continue
        for key, value in ctx.items():
            text = context_text(value, key)
            values = merged.setdefault(key, [])
            if text not in values:
                values.append(text)
    return {k: " | ".join(v) for k, v in merged.items()}


def print_load_warning(contexts):
    """Warns when the cores were busy before a program started (1-minute load > CPUs)."""
    for ctx in contexts:
        load, cpus = ctx.get("load_avg"), ctx.get("num_cpus")
        load = load[0] if isinstance(load, list) and load else load
        if not isinstance(load, (int, float)) or not isinstance(cpus, (int, float)):
            continue
        if cpus and load > cpus:
            print(f"warning: load average {load:.1f} on {cpus} CPUs when "
                  f"{ctx.get('executable', 'a program')} started: other processes shared the "
                  "cores, the figures are unreliable")


def print_header(context):
    known = [k for k, _ in HEADER_KEYS]
    lines = [(label, context[k]) for k, label in HEADER_KEYS if k in context]
    lines += [(k, v) for k, v in context.items() if k not in known and k not in SKIPPED_CONTEXT]
    width = max((len(label) for label, _ in lines), default=0)
    for label, value in lines:
        print(f"{label:<{width}} : {value}")


def peak_flops(records):
    """(best measured peak FLOP/s over every run of the peak group, that run), or (None, None).
    The best, not the median: the peak is a ceiling, and slow runs only mean the cores were shared.
    """
    best, best_run = None, None
    for (group, _, _), runs in records.items():
        for run in runs if group == PEAK_GROUP else []:
            value = run.get("best_flops", run.get("flops"))
            if value is not None and (best is None or value > best):
                best, best_run = value, run
    return best, best_run


def print_peak(peak, result, context):
    if peak is None:
        print("peak FMA: not measured (run bench_peak_fma for % of peak)")
        return
    print(f"peak FMA ({context.get('peak_fma_target', '?')}): measured {peak / 1e9:.1f} GFLOP/s"
          f" (fastest iteration; mean {result.get('flops', 0.0) / 1e9:.1f})")
    expected = result.get("expected_flops")
    if not expected:
        return
    print(f"peak FMA model: {context.get('peak_fma_formula', '')}")
    line = f"measured / model = {peak / expected:.2f}"
    try:  # the clock at which the model would match the measurement
        line += f" (effective clock {peak / expected * float(context['cpu_mhz']):.0f} MHz)"
    except (KeyError, ValueError):
        pass
    print(line)


def format_time(result):
    if "real_time" not in result:
        return "-"
    ns = result["real_time"] * TIME_UNIT_NS.get(result.get("time_unit", "ns"), 1.0)
    for unit, scale in (("s", 1e9), ("ms", 1e6), ("us", 1e3)):
        if ns >= scale:
            return f"{ns / scale:.3g} {unit}"
    return f"{ns:.3g} ns"


def group_metric(rows):
    for metric in METRICS:
        if any(metric[0] in r for r in rows):
            return metric
    return None


def rate(result, metric):
    if result is None:
        return None
    if result.get("error_occurred"):
        return "error"
    return result.get(metric[0])


def cell(value, scale):
    if value is None:
        return "-"
    return value if isinstance(value, str) else f"{value / scale:.1f}"


def ratio(a, b):
    if isinstance(a, (int, float)) and isinstance(b, (int, float)) and b > 0:
        return f"{a / b:.2f}x"
    return "-"


def memory_bandwidth(results):
    """The highest bytes_per_second of the membw group (the measured read bandwidth), or None."""
    rates = [r.get("bytes_per_second") for (g, _, _), r in results.items()
             if g == MEMBW_GROUP and not r.get("error_occurred")]
    return max((x for x in rates if x), default=None)


def table_rows(group, shapes, impls, results, metric, peak, membw=None):
    """The header row and one row per shape of a group's table."""
    primary, baselines = impls[0], impls[1:]
    _, unit, scale = metric
    show_items = metric[0] == "bytes_per_second"
    show_peak = metric[0] == "flops" and peak is not None
    bytes_metric = METRICS[1]
    show_read = (membw is not None and metric != bytes_metric and
                 any(isinstance(rate(results.get((group, primary, s)), bytes_metric), float)
                     for s in shapes))
    head = ["shape", f"{primary} {unit}", "time"]
    head += [f"{primary} Gelem/s"] if show_items else []
    for b in baselines:
        head += [f"{b} {unit}", f"{primary}/{b}"]
    head += ["% peak"] if show_peak else []
    head += ["x read time"] if show_read else []
    rows = [head]
    for shape in shapes:
        mine = results.get((group, primary, shape))
        mine_rate = rate(mine, metric)
        row = [shape, cell(mine_rate, scale), format_time(mine) if mine else "-"]
        row += [cell(rate(mine, ITEMS_METRIC), ITEMS_METRIC[2])] if show_items else []
        for b in baselines:
            theirs = rate(results.get((group, b, shape)), metric)
            row += [cell(theirs, scale), ratio(mine_rate, theirs)]
        if show_peak:
            row += [f"{100 * mine_rate / peak:.0f}%" if isinstance(mine_rate, float) else "-"]
        if show_read:  # time / (bytes / membw) = membw / bytes rate
            row += [ratio(membw, rate(mine, bytes_metric))]
        rows.append(row)
    return rows


def print_table(rows):
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    line = lambda r: "  ".join(c.ljust(w) if i == 0 else c.rjust(w)
                               for i, (c, w) in enumerate(zip(r, widths)))
    print(line(rows[0]))
    print("  ".join("-" * w for w in widths))
    for r in rows[1:]:
        print(line(r))


def ordered_unique(items):
    return list(dict.fromkeys(items))


def split_variants(impls):
    """(main implementations, {base: [its variants]}): "torch_bf1_t2" is a variant of "torch"
    when the group also has "torch" (a script's per-configuration results beside its best)."""
    variants = {}
    for impl in impls:
        bases = [b for b in impls if b != impl and impl.startswith(b + "_")]
        if bases:
            base = min(bases, key=len)  # torch_bf1_t2_blas1 belongs to torch, not torch_bf1_t2
            variants.setdefault(base, []).append(impl)
    hidden = {v for vs in variants.values() for v in vs}
    return [i for i in impls if i not in hidden], variants


def variant_rows(group, shapes, variants, results, metric):
    """A compact table of every variant's rate (no ratios), one row per shape."""
    _, unit, scale = metric
    rows = [["shape"] + [f"{v} {unit}" for v in variants]]
    for shape in shapes:
        rows.append([shape] + [cell(rate(results.get((group, v, shape)), metric), scale)
                               for v in variants])
    return rows


def print_groups(results, peak):
    membw = memory_bandwidth(results)
    for group in ordered_unique(g for g, _, _ in results if g != PEAK_GROUP):
        keys = [k for k in results if k[0] == group]
        impls = ordered_unique(i for _, i, _ in keys)
        if PRIMARY_IMPL in impls:
            impls = [PRIMARY_IMPL] + [i for i in impls if i != PRIMARY_IMPL]
        impls, variants = split_variants(impls)
        metric = group_metric([results[k] for k in keys])
        if metric is None:
            continue
        print(f"\n== {group} ({metric[1]}; ratio > 1: {impls[0]} faster)")
        shapes = ordered_unique(s for _, _, s in keys)
        rows = table_rows(group, shapes, impls, results, metric, peak, membw)
        print_table(rows)
        if "x read time" in rows[0]:
            print(f"x read time: {impls[0]}'s time / the time to read its bytes once at the "
                  f"measured {membw / 1e9:.1f} GB/s ({MEMBW_GROUP})")
        for base, names in variants.items():
            print(f"{group}/{base} is the fastest of its configurations:")
            print_table(variant_rows(group, shapes, names, results, metric))


def print_errors(results):
    for (group, impl, shape), r in results.items():
        if r.get("error_occurred"):
            print(f"error: {group}/{impl}/{shape}: {r.get('error_message', '')}")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("files", nargs="+", help="benchmark JSON files")
    args = parser.parse_args()
    contexts, records = load(args.files)
    results = {key: pick(runs) for key, runs in records.items()}
    context = merged_context(contexts)
    print_header(context)
    print_load_warning(contexts)
    peak, peak_result = peak_flops(records)
    print_peak(peak, peak_result, context)
    print_groups(results, peak)
    print_errors(results)
    return 0 if results else 1


if __name__ == "__main__":
    sys.exit(main())
