#!/usr/bin/python3
"""The PNG plots of tools/run-bench, drawn from a results.json document (tools/bench_publish.py).

Usage: tools/bench_plots.py RESULTS.json [OUT_DIR]   (default: the directory of RESULTS.json)

sgemm.png    GFLOP/s vs size (square n x n x n) for every implementation, and the measured peak
sdpa.png     GFLOP/s vs sequence length (q_len = kv_len), non-causal solid, causal dashed
mhsa.png     time per call for each shape and implementation (log scale)
softmax.png  GB/s (read + write) for each shape and implementation, and the measured read bandwidth
decode.png   time vs cached length (one query), and the time to read K and V once at that bandwidth
scaling.png  simdattn's speed-up over 1 thread vs threads, one line per op, and the ideal line
A plot whose data the run did not produce (a FILTER) is skipped. Titles carry the machine and date.
"""
import json
import os
import re
import sys

import matplotlib

matplotlib.use("Agg")  # files only, no display
import matplotlib.pyplot as plt  # noqa: E402

import bench_report as br  # noqa: E402

# 100 dpi at 8 x 4.5 in: 800 x 450 px, readable on a page, a few tens of KiB each.
FIGSIZE, DPI = (8, 4.5), 100
# One colour per implementation across every plot.
COLORS = {"simdattn": "tab:red", "openblas": "tab:blue", "onednn": "tab:green", "ort": "tab:purple",
          "torch": "tab:orange", "naive_openblas": "tab:gray", "unfused": "tab:pink",
          "bshd": "tab:brown", "naive": "tab:gray", "memcpy": "tab:olive"}
LABELS = {"ort": "ONNX Runtime", "torch": "PyTorch", "naive_openblas": "naive (OpenBLAS)",
          "openblas": "OpenBLAS", "onednn": "oneDNN", "unfused": "simdattn unfused",
          "bshd": "simdattn BSHD", "naive": "naive loop"}


def main_entries(doc, group, leave_out=()):
    """{impl: {shape: entry}} of a group at the main thread count, variants (torch_t2) and the
    implementations in leave_out left out."""
    out = {}
    for e in doc["results"]:
        if (e["group"] == group and e["threads"] == doc["threads"] and "value" in e and
                e["impl"] not in leave_out):
            out.setdefault(e["impl"], {})[e["shape"]] = e
    mains, _ = br.split_variants(list(out))
    ordered = [i for i in ([br.PRIMARY_IMPL] + mains) if i in out]
    return {i: out[i] for i in br.ordered_unique(ordered)}


def title(doc, what):
    cpu = str(doc["machine"].get("CPU", "unknown CPU")).split(" (")[0]
    return f"{what}\n{cpu}, {doc['threads']} threads, {doc['date'][:10]}"


def figure():
    fig, ax = plt.subplots(figsize=FIGSIZE, dpi=DPI)
    ax.grid(True, alpha=0.3)
    return fig, ax


def save(fig, ax, out_dir, name):
    ax.legend(fontsize=8, loc="best")
    fig.tight_layout()
    path = os.path.join(out_dir, name)
    fig.savefig(path)
    plt.close(fig)
    return name


def line_plot(ax, series, x_of, y_of, style="-o", suffix=""):
    """One line per implementation over the shapes x_of accepts (x_of(shape) -> x or None);
    returns {x: shape} of the points drawn."""
    drawn = {}
    for impl, shapes in series.items():
        points = sorted((x_of(s), y_of(e), s) for s, e in shapes.items() if x_of(s) is not None)
        if points:
            xs, ys, names = zip(*points)
            ax.plot(xs, ys, style, color=COLORS.get(impl), label=LABELS.get(impl, impl) + suffix)
            drawn.update(zip(xs, names))
    return drawn


def log2_axis(ax, ticks, label=str):
    """A log2 x axis with a tick (label(x)) at every x drawn, not at powers of two."""
    ax.set_xscale("log", base=2)
    ax.set_xticks(sorted(ticks))
    ax.set_xticklabels([label(x) for x in sorted(ticks)], fontsize=8)
    ax.minorticks_off()


def plot_sgemm(doc, out_dir):
    series = main_entries(doc, "sgemm")
    square = lambda s: int(s.split("x")[0]) if re.fullmatch(r"(\d+)x\1x\1", s) else None
    fig, ax = figure()
    drawn = line_plot(ax, series, square, lambda e: e["value"])
    if not drawn:
        plt.close(fig)
        return None
    if doc.get("peak_gflops"):
        ax.axhline(doc["peak_gflops"], color="black", ls=":", label="measured FMA peak")
    log2_axis(ax, drawn)
    ax.set_xlabel("n (C = A B, n x n x n)")
    ax.set_ylabel("GFLOP/s")
    ax.set_ylim(bottom=0)
    ax.set_title(title(doc, "SGEMM"), fontsize=10)
    return save(fig, ax, out_dir, "sgemm.png")


def plot_sdpa(doc, out_dir):
    # simdattn's own unfused and BSHD paths stay in the table: the plot compares libraries.
    series = main_entries(doc, "sdpa", leave_out=("unfused", "bshd"))
    fig, ax = figure()
    drawn = {}
    for causal, style in ((False, "-o"), (True, "--s")):
        def seq_len(shape, causal=causal):
            m = re.fullmatch(r"b\d+_h\d+_l(\d+)_d\d+(_causal)?", shape)
            return int(m.group(1)) if m and bool(m.group(2)) == causal else None
        drawn.update(line_plot(ax, series, seq_len, lambda e: e["value"], style,
                               " causal" if causal else ""))
    if not drawn:
        plt.close(fig)
        return None
    if doc.get("peak_gflops"):
        ax.axhline(doc["peak_gflops"], color="black", ls=":", label="measured FMA peak")
    shape_text = lambda x: re.sub(r"b(\d+)_h(\d+)_l\d+_d(\d+).*", r"B\1 H\2 D\3",
                                  drawn[x]).join((f"{x}\n", ""))
    log2_axis(ax, drawn, shape_text)
    ax.set_xlabel("sequence length L = q_len = kv_len (batch B, heads H, head dim D as marked)")
    ax.set_ylabel("GFLOP/s (causal: the unmasked half)")
    ax.set_ylim(bottom=0)
    ax.set_title(title(doc, "Scaled dot-product attention"), fontsize=10)
    return save(fig, ax, out_dir, "sdpa.png")


def bar_plot(doc, out_dir, group, y_of, ylabel, what, name, log=False, hline=None):
    series = main_entries(doc, group)
    shapes = br.ordered_unique(s for shapes in series.values() for s in shapes)
    if not shapes:
        return None
    fig, ax = figure()
    width = 0.8 / len(series)
    for k, (impl, by_shape) in enumerate(series.items()):
        xs = [i + (k - (len(series) - 1) / 2) * width for i, s in enumerate(shapes) if s in by_shape]
        ys = [y_of(by_shape[s]) for s in shapes if s in by_shape]
        ax.bar(xs, ys, width, color=COLORS.get(impl), label=LABELS.get(impl, impl))
    if hline:
        ax.axhline(hline[0], color="black", ls=":", label=hline[1])
    ax.set_xticks(range(len(shapes)))
    ax.set_xticklabels(shapes, fontsize=8)
    if log:
        ax.set_yscale("log")
    ax.set_ylabel(ylabel)
    ax.set_title(title(doc, what), fontsize=10)
    return save(fig, ax, out_dir, name)


def plot_mhsa(doc, out_dir):
    return bar_plot(doc, out_dir, "mhsa", lambda e: e["time_us"] / 1e3,
                    "time per call, ms (log scale; lower is better)",
                    "Multi-head self-attention layer (seq, batch, embed, heads)", "mhsa.png", log=True)


def plot_softmax(doc, out_dir):
    bw = doc.get("read_gbps")
    return bar_plot(doc, out_dir, "softmax", lambda e: e["value"], "GB/s (read x + write y)",
                    "Row softmax (rows x cols)", "softmax.png",
                    hline=(bw, "measured read bandwidth") if bw else None)


def plot_decode(doc, out_dir):
    series = main_entries(doc, "sdpa")
    kv = lambda s: (int(m.group(1)) if (m := re.fullmatch(r"b\d+_h\d+_kvh\d+_q1_kv(\d+)_d\d+", s))
                    else None)
    fig, ax = figure()
    drawn = line_plot(ax, series, kv, lambda e: e["time_us"] / 1e3)
    if not drawn:
        plt.close(fig)
        return None
    mine = series.get(br.PRIMARY_IMPL, {})
    bw = doc.get("read_gbps")
    points = sorted((kv(s), e["bytes"] / (bw * 1e9) * 1e3) for s, e in mine.items()
                    if kv(s) is not None and "bytes" in e) if bw else []
    if points:
        xs, ys = zip(*points)
        ax.plot(xs, ys, ":", color="black", label="reading K and V once at the measured bandwidth")
    log2_axis(ax, drawn)
    ax.set_yscale("log")
    ax.set_xlabel("cached length (keys), one query")
    ax.set_ylabel("time per call, ms (log scale)")
    ax.set_title(title(doc, "SDPA decode (GQA, H32 / KV H8, D128)"), fontsize=10)
    return save(fig, ax, out_dir, "decode.png")


def plot_scaling(doc, out_dir):
    by_name = {}
    for e in doc["results"]:
        if e["impl"] == br.PRIMARY_IMPL and "value" in e:
            by_name.setdefault(e["name"], {})[e["threads"]] = e["value"]
    by_name = {n: v for n, v in by_name.items() if len(v) > 1 and 1 in v}
    if not by_name:
        return None
    fig, ax = figure()
    top = max(max(v) for v in by_name.values())
    ax.plot([1, top], [1, top], ":", color="black", label="ideal")
    for name, values in by_name.items():
        ts = sorted(values)
        ax.plot(ts, [values[t] / values[1] for t in ts], "-o", label=name.replace("/simdattn/", " "))
    ax.set_xlabel("threads")
    ax.set_ylabel("speed-up over 1 thread")
    ax.set_xticks(sorted({t for v in by_name.values() for t in v}))
    ax.set_title(title(doc, "simdattn thread scaling"), fontsize=10)
    return save(fig, ax, out_dir, "scaling.png")


PLOTS = [plot_sgemm, plot_sdpa, plot_mhsa, plot_softmax, plot_decode, plot_scaling]


def write_all(doc, out_dir):
    """Writes every plot the document has data for; returns their file names."""
    return [name for name in (plot(doc, out_dir) for plot in PLOTS) if name]


def main():
    if len(sys.argv) not in (2, 3):
        print(__doc__, file=sys.stderr)
        return 2
    with open(sys.argv[1]) as f:
        doc = json.load(f)
    out_dir = sys.argv[2] if len(sys.argv) == 3 else os.path.dirname(sys.argv[1]) or "."
    for name in write_all(doc, out_dir):
        print(os.path.join(out_dir, name))
    return 0


if __name__ == "__main__":
    sys.exit(main())
