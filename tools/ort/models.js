'use strict';
// ONNX Runtime cases on simdattn's benchmark shapes (bench/bench_*.cc), named group/ort/shape as
// tools/bench_report.py expects: an ONNX graph, its inputs, and float64 references for sampled
// output elements. Every graph computes a full output Y; bench.js appends Reshape + Gather so a
// session returns only the sampled elements (Node copies every output into a fresh ArrayBuffer on
// each run, which would otherwise be timed). Adapted from ../shared/baselines/ort/models.js.
const { node, tensor } = require('./onnx');

function rng(seed) {  // mulberry32
  return () => {
    seed = (seed + 0x6d2b79f5) | 0;
    let t = Math.imul(seed ^ (seed >>> 15), 1 | seed);
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}
const uniform = (n, amp, rand) => Float32Array.from({ length: n }, () => (2 * rand() - 1) * amp);
const randInt = (n, rand) => Math.floor(rand() * n);
const range = (n) => Array.from({ length: n }, (_, i) => i);

function softmax64(s) {
  const m = Math.max(...s);
  let sum = 0;
  const p = s.map((x) => { const e = Math.exp(x - m); sum += e; return e; });
  return p.map((x) => x / sum);
}

// A product chain spreads the fixed cost of a run (Node binding + session, ~10 us) over many
// MatMuls: sizes up to this many multiply-adds per MatMul are timed as a chain of 2^26 in all.
const CHAIN_MAX_MACS = 256 ** 3;
const CHAIN_TOTAL_MACS = 2 ** 26;

// ---- SGEMM: Y = A B, n x n x n, both operands graph inputs (no weight prepacking) ----
// chain > 1: one run evaluates Y = (((A B) B) ... B), time per MatMul; B is scaled by sqrt(3/n) to
// keep the magnitudes steady.
function sgemm(n) {
  const chain = n ** 3 <= CHAIN_MAX_MACS ? CHAIN_TOTAL_MACS / n ** 3 : 1;
  return {
    group: 'sgemm', shape: `${n}x${n}x${n}`, flop: 2 * n ** 3 * chain, calls: chain,
    label: chain > 1 ? `MatMul, ${chain} chained per run, time per MatMul` : 'MatMul',
    build(rand) {
      const a = uniform(n * n, 1, rand), b = uniform(n * n, Math.sqrt(3 / n), rand);
      const idx = range(64).map(() => randInt(n * n, rand));
      const ref = () => idx.map((f) => {  // row i of A B^chain, then element j
        const i = Math.floor(f / n);
        let row = Float64Array.from(a.subarray(i * n, (i + 1) * n));
        for (let c = 0; c < chain; c++) {
          const next = new Float64Array(n);
          for (let k = 0; k < n; k++) { const r = row[k]; for (let j = 0; j < n; j++) next[j] += r * b[k * n + j]; }
          row = next;
        }
        return row[f % n];
      });
      const name = (c) => (c === 0 ? 'A' : c === chain ? 'Y' : `Y${c}`);
      return {
        nodes: range(chain).map((c) => node('MatMul', [name(c), 'B'], [name(c + 1)])),
        inputs: { A: [a, [n, n]], B: [b, [n, n]] }, yShape: [n, n], checks: [{ idx, ref }],
      };
    },
  };
}

// Columns of a softmax row whose outputs are checked (and gathered on every run: few, so that the
// Gather and Node's copy of its output stay small against the softmax itself).
const SAMPLED_COLS = 64;

// ---- Softmax over the last axis of rows x cols (bytes: read x, write y once) ----
function softmax(rows, cols) {
  return {
    group: 'softmax', shape: `${rows}x${cols}`, label: 'Softmax(axis=-1)', elems: rows * cols,
    build(rand) {
      const x = uniform(rows * cols, 4, rand);
      // Up to 8 distinct rows, up to SAMPLED_COLS columns of each (the whole row enters the reference).
      const picked = [...new Set([0, rows - 1, ...range(6).map(() => randInt(rows, rand))])];
      const cs = cols <= SAMPLED_COLS ? range(cols) : [0, cols - 1, ...range(SAMPLED_COLS - 2).map(() => randInt(cols, rand))];
      const checks = picked.map((r) => ({
        idx: cs.map((j) => r * cols + j),
        ref: () => { const p = softmax64(Array.from(x.subarray(r * cols, (r + 1) * cols))); return cs.map((j) => p[j]); },
      }));
      return { nodes: [node('Softmax', ['X'], ['Y'], { axis: -1 })], inputs: { X: [x, [rows, cols]] }, yShape: [rows, cols], checks };
    },
  };
}

// ---- Scaled dot-product attention, B H L D (q_len = kv_len) ----
// Non-causal: com.microsoft MultiHeadAttention (its default MLAS flash path); causal:
// com.microsoft GroupQueryAttention with kv_num_heads = H (a prompt without past is causal; flash
// path). Both take Q, K, V as [B, L, H*D]. flop as bench_sdpa.cc: 4 B H L^2 D, halved for causal.
function sdpa(B, H, L, D, causal) {
  return {
    group: 'sdpa', shape: `b${B}_h${H}_l${L}_d${D}${causal ? '_causal' : ''}`,
    label: causal ? 'GroupQueryAttention (causal)' : 'MultiHeadAttention',
    flop: (4 * B * H * L * L * D) / (causal ? 2 : 1),
    build(rand) {
      const n = B * H * L * D, scale = 1 / Math.sqrt(D);
      const q = uniform(n, 2, rand), k = uniform(n, 2, rand), v = uniform(n, 1, rand);  // [B, L, H, D]
      const at = (b, h, l, d) => ((b * L + l) * H + h) * D + d;
      const rows = [[0, 0, 0], [B - 1, H - 1, L - 1], ...range(10).map(() => [randInt(B, rand), randInt(H, rand), randInt(L, rand)])];
      const checks = rows.map(([b, h, i]) => ({
        idx: range(D).map((d) => at(b, h, i, d)),
        ref: () => {
          const s = range(causal ? i + 1 : L).map((j) => {
            let dot = 0;
            for (let d = 0; d < D; d++) dot += q[at(b, h, i, d)] * k[at(b, h, j, d)];
            return dot * scale;
          });
          const p = softmax64(s);
          return range(D).map((d) => p.reduce((acc, pj, j) => acc + pj * v[at(b, h, j, d)], 0));
        },
      }));
      const inputs = { Q: [q, [B, L, H * D]], K: [k, [B, L, H * D]], V: [v, [B, L, H * D]] };
      const g = { yShape: [B, L, H * D], checks, inputs };
      if (!causal) {
        return { ...g, nodes: [node('MultiHeadAttention', ['Q', 'K', 'V'], ['Y'], { num_heads: H }, 'com.microsoft')] };
      }
      return {
        ...g,
        nodes: [node('GroupQueryAttention', ['Q', 'K', 'V', '', '', 'seqlens_k', 'total_len'], ['Y', 'present_k', 'present_v'],
          { num_heads: H, kv_num_heads: H }, 'com.microsoft')],
        initializers: [tensor('seqlens_k', [B], new Int32Array(B).fill(L - 1)), tensor('total_len', [], new Int32Array([L]))],
      };
    },
  };
}

// ---- Multi-head self-attention layer: com.microsoft Attention (fused QKV projection + attention),
// then the output projection MatMul + Add. x is [batch, seq, E] (the op is batch-first; simdattn's
// benchmark is seq-first: same work); weights are initializers. flop as bench_mhsa.cc.
function mhsa(S, Bt, E, H) {
  const Dh = E / H;
  return {
    group: 'mhsa', shape: `s${S}_b${Bt}_e${E}_h${H}`, label: 'Attention (contrib) + MatMul + Add',
    flop: 2 * S * Bt * E * 3 * E + 2 * S * Bt * E * E + 4 * Bt * S * S * E,
    build(rand) {
      const a = Math.sqrt(3 / E);
      const x = uniform(Bt * S * E, 1, rand), w = uniform(E * 3 * E, a, rand), bias = uniform(3 * E, 0.1, rand);
      const wo = uniform(E * E, a, rand), bo = uniform(E, 0.1, rand);
      const scale = 1 / Math.sqrt(Dh);
      const W = (e, col) => w[e * 3 * E + col];
      // Row (b, s) without forming K and V: q.k_j = x_j . (Wk q) + bk . q, sum_j p_j v_j = (sum_j p_j x_j) Wv + bv.
      const refRow = (b, s) => {
        const xr = (j) => x.subarray((b * S + j) * E, (b * S + j + 1) * E);
        const o = new Float64Array(E);
        for (let h = 0; h < H; h++) {
          const qh = range(Dh).map((d) => { let t = bias[h * Dh + d]; const xs = xr(s); for (let e = 0; e < E; e++) t += xs[e] * W(e, h * Dh + d); return t; });
          const u = range(E).map((e) => { let t = 0; for (let d = 0; d < Dh; d++) t += W(e, E + h * Dh + d) * qh[d]; return t; });
          let c0 = 0;
          for (let d = 0; d < Dh; d++) c0 += bias[E + h * Dh + d] * qh[d];
          const p = softmax64(range(S).map((j) => { const xj = xr(j); let t = c0; for (let e = 0; e < E; e++) t += xj[e] * u[e]; return t * scale; }));
          const xbar = new Float64Array(E);
          for (let j = 0; j < S; j++) { const xj = xr(j); for (let e = 0; e < E; e++) xbar[e] += p[j] * xj[e]; }
          for (let d = 0; d < Dh; d++) {
            let t = bias[2 * E + h * Dh + d];
            for (let e = 0; e < E; e++) t += xbar[e] * W(e, 2 * E + h * Dh + d);
            o[h * Dh + d] = t;
          }
        }
        return range(E).map((nn) => { let t = bo[nn]; for (let m = 0; m < E; m++) t += o[m] * wo[m * E + nn]; return t; });
      };
      const rows = [[0, 0], [Bt - 1, S - 1], ...range(2).map(() => [randInt(Bt, rand), randInt(S, rand)])];
      return {
        nodes: [node('Attention', ['X', 'Wqkv', 'Bqkv'], ['A'], { num_heads: H }, 'com.microsoft'),
          node('MatMul', ['A', 'Wo'], ['AWo']), node('Add', ['AWo', 'Bo'], ['Y'])],
        initializers: [tensor('Wqkv', [E, 3 * E], w), tensor('Bqkv', [3 * E], bias), tensor('Wo', [E, E], wo), tensor('Bo', [E], bo)],
        inputs: { X: [x, [Bt, S, E]] }, yShape: [Bt, S, E],
        checks: rows.map(([b, s]) => ({ idx: range(E).map((e) => (b * S + s) * E + e), ref: () => refRow(b, s) })),
      };
    },
  };
}

// The shapes of bench/bench_sgemm.cc (square), bench_softmax.cc, bench_sdpa.cc (q_len = kv_len)
// and bench_mhsa.cc; keep them in sync (tools/bench_torch.py lists the same sdpa and mhsa shapes).
const SGEMM_SIZES = [64, 128, 256, 512, 1024, 2048];
const SOFTMAX_SHAPES = [[4096, 4096], [32 * 8 * 10, 10], [1, 100000]];
const SDPA_SEED = [32, 8, 10, 64];
const SDPA_PREFILL = [[1, 16, 512, 64], [4, 16, 1024, 64], [1, 8, 4096, 64], [1, 32, 2048, 128]];
const MHSA_SHAPES = [[10, 32, 512, 8], [128, 8, 512, 8], [512, 4, 1024, 16], [2048, 1, 2048, 16]];

function allCases() {
  return [
    ...SGEMM_SIZES.map(sgemm),
    ...SOFTMAX_SHAPES.map(([r, c]) => softmax(r, c)),
    sdpa(...SDPA_SEED, false),
    ...SDPA_PREFILL.map((s) => sdpa(...s, false)),
    ...SDPA_PREFILL.map((s) => sdpa(...s, true)),
    ...MHSA_SHAPES.map((s) => mhsa(...s)),
  ].map((c, id) => ({ ...c, id, name: `${c.group}/ort/${c.shape}` }));
}

module.exports = { allCases, rng };
