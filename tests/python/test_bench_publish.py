#!/usr/bin/python3
"""tools/bench_publish.py, tools/bench_plots.py and tools/bench-compare on made-up raw results
whose expected figures are computed here from the inputs: results.json keeps every run (min,
max, medians), report.md's ratios to the best peer, % of peak / bandwidth, read-time factor and
thread speed-up, the PNG plots, and bench-compare's flags against the spread; tools/run-bench's
option checks."""
import json
import os
import struct
import subprocess
import sys
import tempfile
import unittest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
PUBLISH = os.path.join(ROOT, "tools", "bench_publish.py")
COMPARE = os.path.join(ROOT, "tools", "bench-compare")
RUN_BENCH = os.path.join(ROOT, "tools", "run-bench")
G = 1e9
CONTEXT = {"date": "2026-12-02T16:00:00+00:00", "cpu_model": "Test CPU (vendor family 25)",
           "num_cpus": 2, "threads": "2", "simdattn_simd_target": "AVX3",
           "caches": [{"type": "Data", "level": 1, "size": 32768, "num_sharing": 1}]}


def runs(name, rates, counter="flops", time_us=None, extra=None):
    """Google Benchmark's output for one benchmark: every iteration run, then the median."""
    out = []
    for r in rates:
        run = {"name": name, "run_name": name, "run_type": "iteration", counter: r,
               "real_time": time_us or 1.0, "time_unit": "us"}
        run.update(extra or {})
        out.append(run)
    median = sorted(rates)[(len(rates) - 1) // 2]
    if len(rates) > 1:
        out.append(dict(out[0], run_type="aggregate", aggregate_name="median", **{counter: median}))
    return out


def write(path, context, benchmarks):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        json.dump({"context": context, "benchmarks": benchmarks}, f)


DECODE = "b1_h32_kvh8_q1_kv4096_d128"


def make_raw(raw):
    write(os.path.join(raw, "bench_peak_fma.json"), CONTEXT, [
        {"name": "peak/fma/avx3", "run_type": "iteration", "flops": 190 * G, "best_flops": 200 * G}])
    write(os.path.join(raw, "bench_sgemm.json"), CONTEXT,
          runs("sgemm/simdattn/64x64x64/real_time", [100 * G, 120 * G, 110 * G]) +
          runs("sgemm/openblas/64x64x64/real_time", [50 * G, 55 * G, 60 * G]) +
          runs("sgemm/onednn/64x64x64/real_time", [80 * G]) +
          runs("sgemm/simdattn/1024x1024x1024/real_time", [150 * G]) +
          runs("sgemm/openblas/1024x1024x1024/real_time", [100 * G]))
    write(os.path.join(raw, "bench_softmax.json"), CONTEXT,
          runs("softmax/simdattn/4096x4096", [15 * G], "bytes_per_second") +
          runs("softmax/naive/4096x4096", [5 * G], "bytes_per_second") +
          runs("softmax/memcpy/4096x4096", [20 * G], "bytes_per_second"))
    # cast: 96 MB in 8 ms (12 GB/s) against memcpy's 128 MB in 10 ms (12.8 GB/s).
    write(os.path.join(raw, "bench_cast.json"), CONTEXT,
          runs("cast/simdattn/f32_to_bf16_64MiB", [12 * G], "bytes_per_second", time_us=8000.0) +
          runs("cast/memcpy/f32_to_bf16_64MiB", [12.8 * G], "bytes_per_second", time_us=10000.0))
    # decode: 15 GB/s of K and V for 2000 us = 3e7 bytes; read at 30 GB/s in 1000 us.
    write(os.path.join(raw, "bench_sdpa.json"), CONTEXT,
          runs(f"sdpa/simdattn/{DECODE}", [10 * G], time_us=2000.0,
               extra={"bytes_per_second": 15 * G}) +
          runs("sdpa/simdattn/b1_h8_l512_d64", [150 * G]) +
          runs("sdpa/simdattn/b1_h8_l512_d64_causal", [140 * G]) +
          runs("membw/read/268435456", [30 * G], "bytes_per_second"))
    # A script's result: the median sample and every sample in us (rates scale as 1 / time).
    write(os.path.join(raw, "bench_torch.json"), {"torch_version": "1.13.1"}, [
        {"name": "sdpa/torch/b1_h8_l512_d64", "real_time": 4000.0, "time_unit": "us",
         "flops": 40 * G, "samples_us": [3125.0, 4000.0, 5000.0]},
        {"name": "sdpa/torch_t2/b1_h8_l512_d64", "real_time": 4000.0, "time_unit": "us",
         "flops": 40 * G}])
    write(os.path.join(raw, "bench_ort.json"), {"ort_version": "not available (test)"}, [])
    write(os.path.join(raw, "threads-1", "bench_sgemm.json"), dict(CONTEXT, threads="1"),
          runs("sgemm/simdattn/1024x1024x1024/real_time", [60 * G]))


def png_size(path):
    with open(path, "rb") as f:
        head = f.read(24)
    assert head[:8] == b"\x89PNG\r\n\x1a\n", path
    return struct.unpack(">II", head[16:24])


class PublishTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.TemporaryDirectory()
        raw, cls.out = os.path.join(cls.tmp.name, "raw"), os.path.join(cls.tmp.name, "out")
        make_raw(raw)
        r = subprocess.run([sys.executable, PUBLISH, "--out", cls.out, "--mode", "full", raw],
                           capture_output=True, text=True)
        assert r.returncode == 0, r.stderr
        with open(os.path.join(cls.out, "results.json")) as f:
            cls.doc = json.load(f)
        with open(os.path.join(cls.out, "report.md")) as f:
            cls.report = f.read()

    @classmethod
    def tearDownClass(cls):
        cls.tmp.cleanup()

    def entry(self, name, threads=2):
        return next(e for e in self.doc["results"] if e["name"] == name and e["threads"] == threads)

    def row(self, shape_prefix):
        return next(line for line in self.report.splitlines() if line.startswith(f"| {shape_prefix} |"))

    def test_results_keep_every_run(self):
        e = self.entry("sgemm/simdattn/64x64x64")
        self.assertEqual(e["unit"], "GFLOP/s")
        self.assertAlmostEqual(e["value"], 110)
        self.assertEqual(sorted(e["runs"]), [100, 110, 120])
        self.assertEqual((e["min"], e["max"]), (100, 120))
        self.assertEqual(self.doc["peak_gflops"], 200)   # best_flops, not the mean
        self.assertEqual(self.doc["read_gbps"], 30)
        self.assertEqual(self.doc["threads"], 2)

    def test_script_samples_become_runs(self):
        e = self.entry("sdpa/torch/b1_h8_l512_d64")
        # 40 GFLOP/s at the median 4000 us: 40 * 4000 / t per sample.
        self.assertEqual(sorted(round(x, 6) for x in e["runs"]), [32.0, 40.0, 51.2])
        self.assertEqual(e["time_us_runs"], [3125.0, 4000.0, 5000.0])

    def test_scaling_entries(self):
        self.assertAlmostEqual(self.entry("sgemm/simdattn/1024x1024x1024", threads=1)["value"], 60)
        self.assertIn("| sgemm/simdattn/1024x1024x1024 | GFLOP/s | 60 | 150 | 2.50x |", self.report)

    def test_report_ratios(self):
        # 110 / max(55, 80) against oneDNN; 110 of a 200 GFLOP/s peak; ± half of (120 - 100) / 110.
        self.assertEqual(self.row("64x64x64"),
                         "| 64x64x64 | 110 ±9% | 55 ±9% | 80 | 1.38x (onednn) | 55% |")
        # memcpy is a bound, not a peer: 15 / 5 against naive; 15 of 30 GB/s read bandwidth.
        self.assertEqual(self.row("4096x4096"), "| 4096x4096 | 15 | 5 | 20 | 3.00x (naive) | 50% |")
        # torch's configurations (torch_t2) are not columns; 150 / 40 against torch; torch's
        # runs 32 .. 51.2: ± 50 * 19.2 / 40 = 24%.
        self.assertIn("| b1_h8_l512_d64 | 150 | 40 ±24% | 3.75x (torch) | 75% | - |", self.report)
        self.assertNotIn("torch_t2", self.report)

    def test_report_cast_speed_against_memcpy(self):
        # memcpy is no peer; 12 of 30 GB/s read bandwidth; speed: 10000 us / 8000 us.
        self.assertEqual(self.row("f32_to_bf16_64MiB"),
                         "| f32_to_bf16_64MiB | 12 | 12.8 | 40% | 1.25x |")
        self.assertIn("| shape | simdattn | memcpy | % of read bandwidth | simdattn speed / memcpy |",
                      self.report)

    def test_report_read_time(self):
        # 2000 us over 3e7 bytes / 30 GB/s = 1000 us.
        self.assertTrue(self.row(DECODE).endswith("| 2.00x |"), self.row(DECODE))

    def test_report_machine(self):
        self.assertIn("| FMA peak (measured) | 200.0 GFLOP/s |", self.report)
        self.assertIn("| read bandwidth (measured) | 30.0 GB/s |", self.report)
        self.assertIn("| ONNX Runtime | not available (test) |", self.report)
        self.assertIn("| SIMD target chosen | AVX3 |", self.report)
        self.assertIn("| PyTorch | 1.13.1 |", self.report)

    def test_plots(self):
        try:
            import matplotlib  # noqa: F401
        except ImportError:
            self.skipTest("matplotlib not installed (apt-get install python3-matplotlib)")
        for name in ("sgemm", "sdpa", "softmax", "decode", "scaling"):
            path = os.path.join(self.out, f"{name}.png")
            self.assertEqual(png_size(path), (800, 450), name)
            self.assertIn(f"![{name}]({name}.png)", self.report)
        self.assertFalse(os.path.exists(os.path.join(self.out, "mhsa.png")))  # no mhsa results


def result(name, rates, threads=2):
    mid = sorted(rates)[len(rates) // 2]
    return {"name": name, "threads": threads, "unit": "GFLOP/s", "value": mid, "runs": rates,
            "min": min(rates), "max": max(rates)}


class CompareTest(unittest.TestCase):
    def compare(self, a, b, *flags):
        with tempfile.TemporaryDirectory() as tmp:
            paths = []
            for label, results in (("a", a), ("b", b)):
                paths.append(os.path.join(tmp, f"{label}.json"))
                with open(paths[-1], "w") as f:
                    json.dump({"date": "d", "threads": 2, "results": results}, f)
            return subprocess.run([sys.executable, COMPARE, *flags, *paths], capture_output=True,
                                  text=True)

    def line(self, out, name):
        return next(line for line in out.splitlines() if line.startswith(name))

    def test_flags_beyond_spread(self):
        a = [result("x/simdattn/up", [100, 101, 102]), result("x/simdattn/down", [100, 101, 102]),
             result("x/simdattn/same", [100, 101, 103]), result("x/simdattn/one", [100]),
             result("x/simdattn/gone", [1, 2])]
        b = [result("x/simdattn/up", [110, 111, 112]), result("x/simdattn/down", [90, 91, 92]),
             result("x/simdattn/same", [102, 104, 106]), result("x/simdattn/one", [150]),
             result("x/simdattn/new", [1, 2])]
        r = self.compare(a, b)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn("1.099", self.line(r.stdout, "x/simdattn/up"))   # 111 / 101
        self.assertTrue(self.line(r.stdout, "x/simdattn/up").endswith("faster"))
        self.assertTrue(self.line(r.stdout, "x/simdattn/down").endswith("slower"))
        self.assertTrue(self.line(r.stdout, "x/simdattn/same").endswith("1.030"))  # overlap
        self.assertTrue(self.line(r.stdout, "x/simdattn/one").endswith("no spread"))
        self.assertIn("only in A: x/simdattn/gone (2 thr)", r.stdout)
        self.assertIn("only in B: x/simdattn/new (2 thr)", r.stdout)
        self.assertEqual(self.compare(a, b, "--fail-on-slower").returncode, 1)
        self.assertEqual(self.compare(a[:1], b[:1], "--fail-on-slower").returncode, 0)

    def test_threads_are_part_of_the_key(self):
        r = self.compare([result("x/simdattn/s", [1, 2], threads=1)],
                         [result("x/simdattn/s", [1, 2], threads=2)])
        self.assertIn("0 compared", r.stdout)

    def test_not_results_json(self):
        r = self.compare([], [])
        self.assertEqual(r.returncode, 0)
        with tempfile.NamedTemporaryFile("w", suffix=".json") as f:
            f.write("[1]")
            f.flush()
            r = subprocess.run([sys.executable, COMPARE, f.name, f.name], capture_output=True,
                               text=True)
        self.assertEqual(r.returncode, 2)
        self.assertIn("not a tools/run-bench results.json", r.stderr)


class RunBenchOptionsTest(unittest.TestCase):
    def test_bad_options_fail_before_any_work(self):
        for args in (["--threads", "0"], ["--threads", "x"], ["--bogus"], ["--out", ""]):
            r = subprocess.run([RUN_BENCH, *args], capture_output=True, text=True, timeout=30)
            self.assertEqual(r.returncode, 2, args)
            self.assertIn("usage: tools/run-bench", r.stderr)


if __name__ == "__main__":
    unittest.main()
