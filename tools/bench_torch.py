#!/usr/bin/python3
"""Times PyTorch (CPU) on the sdpa and mhsa benchmark shapes; writes bench_report.py's JSON.

Usage: tools/bench_torch.py [--out FILE] [--quick] [--filter REGEX] [--exclude REGEX]

  --filter  regex searched in each name group/impl/shape (as --benchmark_filter), e.g. 'mhsa'
  --exclude regex: names it matches are skipped (as --benchmark_filter=-REGEX)
  --quick   one 0.05 s repetition per configuration instead of the median of five 0.3 s ones
  --out     JSON path (default: stdout)

Configurations: torch's GEMMs run on OpenBLAS, whose thread pool is separate from torch's
intra-op (OpenMP) pool and untouched by torch.set_num_threads. Each shape is timed with torch
threads T and 1, OpenBLAS threads T (set through openblas_set_num_threads; in a full run on this
2-core machine OpenBLAS on 1 thread never won, and torch on T threads with OpenBLAS on T loses up
to 4x on small shapes, the pools spinning against each other: hence both torch counts). mhsa:
each with batch_first False ([seq, batch, E] input) and True ([batch, seq, E]: torch's fused
eval fast path). sdpa: with preallocated score, probability and output tensors (out=), and once
(T threads) with fresh tensors per call, the composition as usually written. Configurations are
reported as impl torch_<config> ([bf<0|1>_ | fresh_] then t<N> when both pools have N threads,
else t<N>_blas<M>), and the fastest per shape as impl torch (the configuration is its "label").
T is SIMDATTN_BENCH_THREADS, else 2 (this machine's cores, the C++ programs' default).

mhsa: torch.nn.MultiheadAttention in eval mode under torch.no_grad(), self-attention with
biases (it allocates its intermediates per call, as simdattn_mhsa does). sdpa: torch 1.13 has
no F.scaled_dot_product_attention, so impl torch is the composition
softmax(q k^T * scale (+ causal mask)) v in torch ops.

Shapes and names match bench/bench_sdpa.cc and bench/bench_mhsa.cc; keep them in sync. Once per
group (one shape each) the output is compared with simdattn's through tools/python/simdattn.py
(context key torch_check); a disagreement marks that benchmark as an error.
"""
import argparse
import ctypes
import json
import math
import os
import re
import statistics
import sys
import time

import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
THREADS_ENV = "SIMDATTN_BENCH_THREADS"
# This machine's cores: the thread count when SIMDATTN_BENCH_THREADS is unset.
DEFAULT_THREADS = 2
# Timing (noise-robust): warm up for WARMUP_S (at least one call), then REPETITIONS samples,
# each the mean over calls that together last at least MIN_TIME_S; the median sample is kept.
WARMUP_S = 0.1
MIN_TIME_S, REPETITIONS = 0.3, 5
QUICK_MIN_TIME_S, QUICK_REPETITIONS = 0.05, 1
# A call longer than this is its own long sample (little relative noise): 3 samples suffice,
# which keeps the largest shapes' 4-8 configurations within tools/run-bench's time budget.
LONG_CALL_S, LONG_CALL_REPETITIONS = 0.3, 3
# The composition materialises the score tensor (and softmax's copy): above this it would
# measure memory allocation, and crowd the machine.
MAX_SCORE_BYTES = 2 << 30
# Outputs are O(1) (see the weight scale below); as in the C++ programs' checks.
TOLERANCE = 1e-4
FLOAT_BYTES = 4

# (batch, heads, kv_heads, q_len, kv_len, d, causal): bench/bench_sdpa.cc's cases, same order.
PREFILL = [(1, 16, 16, 512, 512, 64), (4, 16, 16, 1024, 1024, 64), (1, 8, 8, 4096, 4096, 64),
           (1, 32, 32, 2048, 2048, 128)]
SDPA_CASES = ([(32, 8, 8, 10, 10, 64, False)] + [s + (False,) for s in PREFILL] +
              [s + (True,) for s in PREFILL] +
              [(1, 32, 8, 1, 4096, 128, False), (1, 32, 8, 1, 32768, 128, False)])
# (seq, batch, E, heads): bench/bench_mhsa.cc's shapes.
MHSA_SHAPES = [(10, 32, 512, 8), (128, 8, 512, 8), (512, 4, 1024, 16), (2048, 1, 2048, 16)]
# The shape of each group whose output is checked against simdattn's: masking, and the headline.
SDPA_CHECKED = (1, 16, 16, 512, 512, 64, True)
MHSA_CHECKED = MHSA_SHAPES[0]


def sdpa_name(case):
    b, h, kvh, lq, lkv, d, causal = case
    name = f"b{b}_h{h}" + (f"_kvh{kvh}" if kvh != h else "")
    name += f"_l{lq}" if lq == lkv else f"_q{lq}_kv{lkv}"
    return name + f"_d{d}" + ("_causal" if causal else "")


def mhsa_name(shape):
    seq, batch, e, heads = shape
    return f"s{seq}_b{batch}_e{e}_h{heads}"


def sdpa_flops(case):
    b, h, _, lq, lkv, d, causal = case
    flops = 4.0 * b * h * lq * lkv * d
    return flops / 2 if causal else flops


def mhsa_flops(shape):
    seq, batch, e, heads = shape
    rows = seq * batch
    return (2.0 * rows * e * 3 * e + 4.0 * batch * heads * seq * seq * (e // heads) +
            2.0 * rows * e * e)


class Timer:
    def __init__(self, min_time, repetitions):
        self.min_time, self.repetitions = min_time, repetitions

    def samples(self, fn):
        """Seconds per call of every sample (their median is the result)."""
        start = time.perf_counter()
        fn()
        first = time.perf_counter() - start
        while time.perf_counter() - start < WARMUP_S:
            fn()
        repetitions = self.repetitions
        if first > LONG_CALL_S:
            repetitions = min(repetitions, LONG_CALL_REPETITIONS)
        samples = []
        for _ in range(repetitions):
            calls, start = 0, time.perf_counter()
            while True:
                fn()
                calls += 1
                elapsed = time.perf_counter() - start
                if elapsed >= self.min_time:
                    break
            samples.append(elapsed / calls)
        return samples


class Threads:
    """Sets torch's intra-op and OpenBLAS's thread counts."""

    def __init__(self):
        self.openblas = None
        try:  # the OpenBLAS torch links (libblas.so.3 -> OpenBLAS on Debian); already loaded
            lib = ctypes.CDLL("libopenblas.so.0")
            lib.openblas_set_num_threads.argtypes = [ctypes.c_int]
            lib.openblas_get_corename.restype = ctypes.c_char_p
            self.openblas = lib
        except (OSError, AttributeError):
            pass

    def configs(self, t):
        """[(torch threads, OpenBLAS threads or None)]: torch's t and 1, OpenBLAS's t."""
        return [(n, None if self.openblas is None else t) for n in dict.fromkeys([t, 1])]

    def set(self, config):
        torch_threads, blas_threads = config
        torch.set_num_threads(torch_threads)
        if blas_threads is not None:
            self.openblas.openblas_set_num_threads(blas_threads)

    @staticmethod
    def name(config):
        n, m = config
        return f"t{n}" if m is None or m == n else f"t{n}_blas{m}"

    def describe(self):
        if self.openblas is None:
            return "torch.set_num_threads only (OpenBLAS not found in the process)"
        core = self.openblas.openblas_get_corename().decode()
        return f"torch.set_num_threads x openblas_set_num_threads (OpenBLAS core {core})"


def result(name, seconds, flops, extra=None):
    r = {"name": name, "run_name": name, "real_time": seconds * 1e6, "time_unit": "us",
         "flops": flops / seconds}
    r.update(extra or {})
    return r


def error_result(name, message):
    return {"name": name, "run_name": name, "error_occurred": True, "error_message": message}


def bench_configs(group, shape_name, configs, selected, timer, flops, extra=None):
    """Times every selected configuration (name, set_up() -> fn) of one shape; returns their
    results as impl torch_<name> and the fastest as impl torch. extra(seconds) -> more keys."""
    extra = extra or (lambda seconds: {})
    results, best = [], None
    samples_us = {}
    for config, set_up in configs:
        impl = f"torch_{config}"
        if not (selected(f"{group}/torch/{shape_name}") or
                selected(f"{group}/{impl}/{shape_name}")):
            continue
        fn = set_up()
        with torch.no_grad():
            samples = timer.samples(fn)
        del fn
        seconds = statistics.median(samples)
        samples_us[config] = [s * 1e6 for s in samples]
        results.append(result(f"{group}/{impl}/{shape_name}", seconds, flops,
                              dict(extra(seconds), samples_us=samples_us[config])))
        if best is None or seconds < best[0]:
            best = (seconds, config)
    if best is not None:
        seconds, config = best
        results.append(result(f"{group}/torch/{shape_name}", seconds, flops,
                              dict(extra(seconds), label=config, samples_us=samples_us[config])))
    return results


def scaled_max_diff(got, want):
    """max |got - want| / max(1, max |want|), as the C++ programs' ScaledMaxDiff."""
    got, want = got.double(), want.double()
    return (got - want).abs().max().item() / max(1.0, want.abs().max().item())


def load_simdattn():
    sys.path.insert(0, os.path.join(ROOT, "tools", "python"))
    try:
        import simdattn  # noqa: E402 (tools/python is not a package)
        return simdattn, None
    except ImportError as e:
        return None, str(e)


# ---------------------------------------------------------------------------------------- sdpa


def sdpa_inputs(case, gen):
    b, h, kvh, lq, lkv, d, _ = case
    q = torch.rand(b, h, lq, d, generator=gen) * 2 - 1
    k = torch.rand(b, kvh, lkv, d, generator=gen) * 2 - 1
    v = torch.rand(b, kvh, lkv, d, generator=gen) * 2 - 1
    return q, k, v


def sdpa_fn(case, q, k, v, preallocated):
    """The torch composition; preallocated: scores, probabilities and output are written into
    tensors made once here (out=), as the C++ naive baseline's score buffer, else every call
    makes fresh ones (as users write it; each is a fresh mmap whose page faults this machine
    pays on every call). GQA: the query heads of one group are consecutive in [batch, heads,
    seq, d], so q is viewed as [batch, kv_heads, group * q_len, d] against each kv head: exact
    without causal masking, and K and V are never copied."""
    b, h, kvh, lq, lkv, d, causal = case
    scale = 1.0 / math.sqrt(d)
    assert not (causal and kvh != h), "causal GQA would need per-row mask offsets"
    qg = q.reshape(b, kvh, (h // kvh) * lq, d)
    mask = torch.ones(lq, lkv, dtype=torch.bool).triu(1) if causal else None
    if preallocated:
        scores, probs = (torch.empty(b, kvh, (h // kvh) * lq, lkv) for _ in range(2))
        out = torch.empty(qg.shape)

    def run():
        # Scaling q costs L d multiplies, scaling the scores L^2.
        qs, kt = qg * scale, k.transpose(-1, -2)
        s = torch.matmul(qs, kt, out=scores) if preallocated else torch.matmul(qs, kt)
        if mask is not None:
            s.masked_fill_(mask, -math.inf)
        if preallocated:  # torch._softmax(..., out=): torch.softmax's out= form (no public one)
            o = torch.matmul(torch._softmax(s, -1, False, out=probs), v, out=out)
        else:
            o = torch.matmul(torch.softmax(s, dim=-1), v)
        return o.reshape(b, h, lq, d)

    return run


def check_sdpa(case, simdattn):
    q, k, v = sdpa_inputs(case, torch.Generator().manual_seed(7))
    want = simdattn.scaled_dot_product_attention(q.numpy(), k.numpy(), v.numpy(),
                                                 is_causal=case[6])
    fresh, preallocated = (sdpa_fn(case, q, k, v, p)() for p in (False, True))
    return max(scaled_max_diff(t, torch.from_numpy(want)) for t in (fresh, preallocated))


def bench_sdpa(selected, timer, threads, thread_configs, checks):
    results = []
    for case in SDPA_CASES:
        name = sdpa_name(case)
        b, h, kvh, lq, lkv, d, _ = case
        if b * h * lq * lkv * FLOAT_BYTES > MAX_SCORE_BYTES:
            continue
        if case in checks and checks[case] > TOLERANCE:
            results.append(error_result(f"sdpa/torch/{name}", "output differs from simdattn's: "
                                        f"scaled max |diff| {checks[case]:.3g} > {TOLERANCE}"))
            continue
        q, k, v = sdpa_inputs(case, torch.Generator().manual_seed(1))

        def set_up(config, preallocated):
            threads.set(config)
            return sdpa_fn(case, q, k, v, preallocated)

        # Fresh tensors only on T threads (the faster for the large shapes, whose calls take
        # seconds); every thread configuration with preallocated ones.
        configs = [(f"fresh_{Threads.name(thread_configs[0])}",
                    lambda: set_up(thread_configs[0], False))]
        configs += [(Threads.name(c), lambda c=c: set_up(c, True)) for c in thread_configs]
        kv_bytes = 2 * b * kvh * lkv * d * FLOAT_BYTES
        # decode: the bytes of K and V read once, as bench_sdpa's counter
        extra = (lambda seconds: {"bytes_per_second": kv_bytes / seconds}) if lq == 1 else None
        results += bench_configs("sdpa", name, configs, selected, timer, sdpa_flops(case), extra)
        del q, k, v
    return results


# ---------------------------------------------------------------------------------------- mhsa


def mhsa_module(shape, batch_first, gen):
    """Weights and biases uniform in [-1, 1) / sqrt(E), as bench_mhsa.cc (torch's init scale;
    non-zero biases so they are exercised)."""
    _, _, e, heads = shape
    m = torch.nn.MultiheadAttention(e, heads, bias=True, batch_first=batch_first).eval()
    with torch.no_grad():
        for p in m.parameters():
            p.copy_((torch.rand(p.shape, generator=gen) * 2 - 1) / math.sqrt(e))
    return m


def mhsa_input(shape, batch_first, gen):
    seq, batch, e, _ = shape
    x = torch.rand(seq, batch, e, generator=gen) * 2 - 1
    return x.transpose(0, 1).contiguous() if batch_first else x


def check_mhsa(shape, simdattn):
    seq, batch, e, heads = shape
    m = mhsa_module(shape, False, torch.Generator().manual_seed(7))
    x = mhsa_input(shape, False, torch.Generator().manual_seed(8))
    with torch.no_grad():
        got = m(x, x, x, need_weights=False)[0]
    mine = simdattn.MultiheadSelfAttention(e, heads, bias=True, batch_first=False)
    mine.load_state_dict({k: v.detach().numpy() for k, v in m.state_dict().items()})
    return scaled_max_diff(got, torch.from_numpy(mine(x.numpy())[0]))


def bench_mhsa(selected, timer, threads, thread_configs, checks):
    results = []
    for shape in MHSA_SHAPES:
        name = mhsa_name(shape)
        if shape in checks and checks[shape] > TOLERANCE:
            results.append(error_result(f"mhsa/torch/{name}", "output differs from simdattn's: "
                                        f"scaled max |diff| {checks[shape]:.3g} > {TOLERANCE}"))
            continue

        def set_up(batch_first, config):
            threads.set(config)
            m = mhsa_module(shape, batch_first, torch.Generator().manual_seed(1))
            x = mhsa_input(shape, batch_first, torch.Generator().manual_seed(2))
            return lambda: m(x, x, x, need_weights=False)

        configs = [(f"bf{int(bf)}_{Threads.name(c)}", lambda bf=bf, c=c: set_up(bf, c))
                   for bf in (False, True) for c in thread_configs]
        results += bench_configs("mhsa", name, configs, selected, timer, mhsa_flops(shape))
    return results


def run_checks(selected):
    """(sdpa checks, mhsa checks, context text): scaled max |diff| against simdattn per checked
    shape (empty dicts when simdattn cannot be loaded)."""
    simdattn, why = load_simdattn()
    if simdattn is None:
        return {}, {}, f"not checked: {why}"
    sdpa, mhsa, lines = {}, {}, []
    if selected(f"sdpa/torch/{sdpa_name(SDPA_CHECKED)}"):
        sdpa[SDPA_CHECKED] = check_sdpa(SDPA_CHECKED, simdattn)
        lines.append(f"sdpa {sdpa_name(SDPA_CHECKED)} {sdpa[SDPA_CHECKED]:.2g}")
    if selected(f"mhsa/torch/{mhsa_name(MHSA_CHECKED)}"):
        mhsa[MHSA_CHECKED] = check_mhsa(MHSA_CHECKED, simdattn)
        lines.append(f"mhsa {mhsa_name(MHSA_CHECKED)} {mhsa[MHSA_CHECKED]:.2g}")
    if not lines:
        return sdpa, mhsa, "no checked shape selected"
    worst = max(list(sdpa.values()) + list(mhsa.values()))
    verdict = "ok" if worst <= TOLERANCE else "DISAGREES"
    return sdpa, mhsa, (f"scaled max |torch - simdattn|: {', '.join(lines)} "
                        f"(tolerance {TOLERANCE}: {verdict})")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--filter", default="", help="regex on group/impl/shape")
    parser.add_argument("--exclude", help="regex on group/impl/shape: skip the matches")
    parser.add_argument("--quick", action="store_true", help="one short repetition")
    parser.add_argument("--out", help="JSON output path (default: stdout)")
    args = parser.parse_args()
    pattern, exclude = re.compile(args.filter), re.compile(args.exclude or "(?!)")
    selected = lambda name: pattern.search(name) is not None and not exclude.search(name)
    env = os.environ.get(THREADS_ENV, "")
    t = int(env) if env.isdigit() and int(env) > 0 else DEFAULT_THREADS
    timer = Timer(QUICK_MIN_TIME_S, QUICK_REPETITIONS) if args.quick else Timer(MIN_TIME_S,
                                                                                  REPETITIONS)
    threads = Threads()
    thread_configs = threads.configs(t)
    context = {"torch_version": torch.__version__, "torch_threads": threads.describe(),
               "load_avg": list(os.getloadavg()), "num_cpus": os.cpu_count(),
               "executable": "tools/bench_torch.py"}
    torch.manual_seed(0)
    sdpa_checks, mhsa_checks, context["torch_check"] = run_checks(selected)
    benchmarks = bench_mhsa(selected, timer, threads, thread_configs, mhsa_checks)
    benchmarks += bench_sdpa(selected, timer, threads, thread_configs, sdpa_checks)
    text = json.dumps({"context": context, "benchmarks": benchmarks}, indent=1)
    if args.out:
        with open(args.out, "w") as f:
            f.write(text + "\n")
    else:
        print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
