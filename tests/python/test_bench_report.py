#!/usr/bin/python3
"""tools/bench_report.py on saved benchmark JSON: every Google Benchmark context field type
(the "caches" list of dicts that crashed the report on AMD, load_avg lists, strings, numbers),
missing and extra fields, and the ratios it prints from known rates."""
import json
import os
import subprocess
import sys
import tempfile
import unittest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
REPORT = os.path.join(ROOT, "tools", "bench_report.py")

# The context Google Benchmark 1.7 writes on a Zen 4 VM (abridged), with the cache list.
GBENCH_CONTEXT = {
    "date": "2026-12-02T13:10:00+00:00", "host_name": "vm", "executable": "build/bench/bench_sgemm",
    "num_cpus": 2, "mhz_per_cpu": 2596, "cpu_scaling_enabled": False,
    "caches": [{"type": "Data", "level": 1, "size": 32768, "num_sharing": 1},
               {"type": "Instruction", "level": 1, "size": 32768, "num_sharing": 1},
               {"type": "Unified", "level": 2, "size": 1048576, "num_sharing": 1},
               {"type": "Unified", "level": 3, "size": 33554432, "num_sharing": 2}],
    "load_avg": [0.25, 0.5, 0.75], "library_build_type": "release", "json_schema_version": 1,
    "cpu_model": "AMD EPYC", "simdattn_simd_target": "AVX3", "an_extra_field": {"nested": [1, 2.5]},
}


def run_report(*docs):
    with tempfile.TemporaryDirectory() as tmp:
        paths = []
        for i, doc in enumerate(docs):
            path = os.path.join(tmp, f"r{i}.json")
            with open(path, "w") as f:
                f.write(doc if isinstance(doc, str) else json.dumps(doc))
            paths.append(path)
        return subprocess.run([sys.executable, REPORT] + paths, capture_output=True, text=True)


class BenchReportTest(unittest.TestCase):
    def test_google_benchmark_context_with_caches(self):
        doc = {"context": GBENCH_CONTEXT, "benchmarks": [
            {"name": "sgemm/simdattn/64x64x64/real_time", "run_name": "sgemm/simdattn/64x64x64/real_time",
             "run_type": "iteration", "real_time": 2.0, "time_unit": "us", "flops": 200e9},
            {"name": "sgemm/openblas/64x64x64/real_time", "real_time": 4.0, "time_unit": "us",
             "flops": 100e9, "family_index": 1, "an_extra_counter": 3},
        ]}
        r = run_report(doc)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn("== sgemm", r.stdout)
        self.assertIn("2.00x", r.stdout)  # 200 / 100 GFLOP/s
        self.assertIn("L2 Unified 1024 KiB", r.stdout)  # the caches line, not a crash
        self.assertNotIn("Traceback", r.stderr)

    def test_missing_fields(self):
        doc = {"benchmarks": [
            {"name": "softmax/simdattn/4096x4096", "bytes_per_second": 3e10},  # no time, no context
            {"name": "softmax/memcpy/4096x4096", "bytes_per_second": 2e10, "real_time": 1.0},
            {"name": "too/short"},                                             # not group/impl/shape
            {"run_type": "iteration"},                                         # no name at all
            {"name": "softmax/naive/4096x4096"},                               # no rate at all
        ]}
        r = run_report(doc, {"context": {"load_avg": "high", "num_cpus": "two"}}, "", "[1, 2]")
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn("== softmax", r.stdout)
        self.assertIn("1.50x", r.stdout)  # 30 / 20 GB/s
        self.assertNotIn("Traceback", r.stderr)

    def test_no_results_fails(self):
        r = run_report({"context": GBENCH_CONTEXT, "benchmarks": []})
        self.assertNotEqual(r.returncode, 0)
        self.assertNotIn("Traceback", r.stderr)


if __name__ == "__main__":
    unittest.main()
