#!/usr/bin/env node
'use strict';
// ONNX Runtime (MLAS) CPU baseline for tools/run-bench, through onnxruntime-node (installed by
// tools/run-bench into build/ort/node_modules; NODE_PATH points there). Writes the JSON that
// tools/bench_report.py reads: group/ort/shape on simdattn's benchmark shapes (models.js).
//   node tools/ort/bench.js [--threads N] [--min-time S] [--reps R] [--filter REGEX]
//                           [--exclude REGEX] [--out FILE]
//   node tools/ort/bench.js --list
// Protocol, as tools/run-bench gives Google Benchmark: warm-up (>= WARMUP_S and one run), then
// --reps samples, each the mean of back-to-back runs lasting >= --min-time s; the median sample is
// the result, every sample is kept (samples_us). Sessions: intraOpNumThreads N, interOpNumThreads
// 1, all graph optimisations, sequential execution. Each case runs in a fresh child process (no
// thread pool or arena left over from another case). Before timing, sampled output elements are
// checked against a float64 reference: above MAX_ERROR the case is reported as an error.
const { spawnSync } = require('child_process');
const fs = require('fs');
const onnx = require('./onnx');
const { allCases, rng } = require('./models');

const WARMUP_S = 0.05;  // bench_util.h's --benchmark_min_warmup_time
// Max |ort - ref| over a check group relative to the group's RMS: float32 sums of up to 4096
// terms stay far below; a wrong graph (layout, mask) lands near 1.
const MAX_ERROR = 1e-4;

const argv = process.argv.slice(2);
const opt = (name, dflt) => { const i = argv.indexOf(name); return i < 0 ? dflt : argv[i + 1]; };
const THREADS = Number(opt('--threads', 2));
const MIN_TIME = Number(opt('--min-time', 0.2));
const REPS = Number(opt('--reps', 3));
const now = () => Number(process.hrtime.bigint()) / 1e9;
const median = (a) => { const s = [...a].sort((x, y) => x - y); const m = s.length >> 1; return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2; };

// ---------------------------------------------------------------- child: one case

// The case's graph, returning only the sampled elements of Y (Reshape + Gather).
function buildModel(g) {
  const idx = BigInt64Array.from(g.checks.flatMap((c) => c.idx), BigInt);
  return onnx.model({
    inputs: Object.entries(g.inputs).map(([name, [, dims]]) => onnx.valueInfo(name, dims)),
    outputs: [onnx.valueInfo('Ys', [idx.length])],
    nodes: [...g.nodes, onnx.node('Reshape', ['Y', 'flat'], ['Yf']), onnx.node('Gather', ['Yf', 'sample_idx'], ['Ys'], { axis: 0 })],
    initializers: [...(g.initializers || []), onnx.tensor('flat', [1], new BigInt64Array([-1n])),
      onnx.tensor('sample_idx', [idx.length], idx)],
  });
}

function checkError(g, ys) {
  let off = 0, worst = 0;
  for (const c of g.checks) {
    const ref = c.ref();
    const rms = Math.sqrt(ref.reduce((a, x) => a + x * x, 0) / ref.length) || 1;
    ref.forEach((r, i) => { worst = Math.max(worst, Math.abs(ys[off + i] - r) / rms); });
    off += ref.length;
  }
  return worst;
}

// Seconds per run: every sample (see the protocol above).
function measure(run) {
  let n = 0;
  const t0 = now();
  while (n < 1 || now() - t0 < WARMUP_S) { run(); n++; }
  const samples = [];
  for (let r = 0; r < REPS; r++) {
    let k = 0;
    const t = now();
    do { run(); k++; } while (now() - t < MIN_TIME);
    samples.push((now() - t) / k);
  }
  return samples;
}

function child(id) {
  // The synchronous binding: no event-loop hop per run (await session.run() adds ~10 us).
  const ort = require('onnxruntime-node');
  const { binding, initOrt } = require('onnxruntime-node/dist/binding');
  const c = allCases()[id];
  const g = c.build(rng(1000 + id));
  const feeds = Object.fromEntries(Object.entries(g.inputs).map(([n, [d, dims]]) => [n, new ort.Tensor('float32', d, dims)]));
  const model = buildModel(g);
  initOrt();
  const session = new binding.InferenceSession();
  session.loadModel(model.buffer, model.byteOffset, model.byteLength, {
    intraOpNumThreads: THREADS, interOpNumThreads: 1, graphOptimizationLevel: 'all', executionMode: 'sequential',
  });
  const run = () => session.run(feeds, { Ys: null }, {});
  const err = checkError(g, run().Ys.data);
  if (!(err <= MAX_ERROR)) return { error: `output differs from a float64 reference: max error ${err.toExponential(2)} > ${MAX_ERROR}` };
  return { samples: measure(run), err };
}

// ---------------------------------------------------------------- parent: every selected case

// Google Benchmark-like record: time per call in us (sgemm chains: per MatMul) and its rate.
function record(c, r) {
  if (r.error) return { name: c.name, run_name: c.name, error_occurred: true, error_message: r.error };
  const per = (s) => s / (c.calls || 1);
  const t = per(median(r.samples));
  const out = { name: c.name, run_name: c.name, real_time: t * 1e6, time_unit: 'us', label: c.label,
    samples_us: r.samples.map((s) => per(s) * 1e6), max_rel_error: r.err };
  if (c.elems) return { ...out, bytes_per_second: (8 * c.elems) / t, items_per_second: c.elems / t };
  return { ...out, flops: c.flop / (c.calls || 1) / t };
}

function runChild(c) {
  const args = ['--child', String(c.id), '--threads', String(THREADS), '--min-time', String(MIN_TIME), '--reps', String(REPS)];
  const p = spawnSync(process.execPath, [__filename, ...args], { encoding: 'utf8', maxBuffer: 1 << 26 });
  try { return JSON.parse(p.stdout.trim().split('\n').pop()); } catch {
    const line = `${p.stderr}\n${p.stdout}`.split('\n').find((l) => /error/i.test(l));
    return { error: (line || `exit status ${p.status}`).trim() };
  }
}

function main() {
  if (argv.includes('--child')) {
    let r;
    try { r = child(Number(opt('--child'))); } catch (e) { r = { error: String(e.message).split('\n')[0] }; }
    process.stdout.write(`\n${JSON.stringify(r)}\n`);
    return;
  }
  const filter = new RegExp(opt('--filter', '')), exclude = new RegExp(opt('--exclude', '(?!)'));
  const cases = allCases().filter((c) => filter.test(c.name) && !exclude.test(c.name));
  if (argv.includes('--list')) { cases.forEach((c) => console.log(`${c.name}\t${c.label}`)); return; }
  const ort = require('onnxruntime-node');
  const t0 = now();
  const benchmarks = cases.map((c, i) => {
    process.stderr.write(`  ort ${i + 1}/${cases.length} ${c.name} (${(now() - t0).toFixed(0)} s)\n`);
    return record(c, runChild(c));
  });
  const context = { ort_version: `onnxruntime-node ${ort.env.versions.node}, node ${process.version}`,
    ort_session: `intraOpNumThreads ${THREADS}, interOpNumThreads 1, graph optimisation all, sequential` };
  const text = JSON.stringify({ context, benchmarks }, null, 1);
  if (opt('--out')) fs.writeFileSync(opt('--out'), text); else console.log(text);
}

main();
