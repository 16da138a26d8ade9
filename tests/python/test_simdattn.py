#!/usr/bin/env python3
"""Tests of the ctypes binding tools/python/simdattn.py, and through it of the library's SDPA,
softmax, GEMM and MHSA, against float64 NumPy references and PyTorch (1.13 CPU).

A plain unittest script (pytest is not installed for /usr/bin/python3); meson runs it with
SIMDATTN_LIBRARY pointing at the freshly built library. Exit status 77 (meson: skipped) when
NumPy is missing; the PyTorch comparisons are skipped when torch is missing.

Tolerances follow the float32 rounding model (u = 2^-24, Higham's gamma_k = k u / (1 - k u)):
a k-term dot product is off by at most gamma_k * sum |terms|. Each check states its bound.
"""

import ctypes
import math
import os
import sys
import unittest



def reexec_with_sanitizer_runtimes():
    """A library built with -Db_sanitize=address,undefined needs the ASan runtime loaded before
    anything else (else dlopen aborts the process): rerun this script with its runtimes in
    LD_PRELOAD (sonames, resolved by the loader), leak detection off (CPython's own leaks)."""
    import re
    lib = os.environ.get("SIMDATTN_LIBRARY")
    if not lib or os.environ.get("SIMDATTN_TEST_REEXEC") or not os.path.exists(lib):
        return
    with open(lib, "rb") as f:
        runtimes = sorted(set(re.findall(rb"lib(?:asan|ubsan)\.so\.\d+", f.read())))
    if not runtimes:
        return
    env = dict(os.environ, SIMDATTN_TEST_REEXEC="1",
               LD_PRELOAD=" ".join(r.decode() for r in runtimes),
               ASAN_OPTIONS="detect_leaks=0:" + os.environ.get("ASAN_OPTIONS", ""))
    os.execve(sys.executable, [sys.executable] + sys.argv, env)


reexec_with_sanitizer_runtimes()

try:
    import numpy as np
except ImportError:  # pragma: no cover
    print("NumPy missing: skipping the Python binding tests")
    sys.exit(77)

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "tools",
                                "python"))
import simdattn  # noqa: E402

try:
    import torch
    torch.set_num_threads(2)
except ImportError:  # pragma: no cover
    torch = None
needs_torch = unittest.skipUnless(torch is not None, "PyTorch is not installed")

U32 = 2.0 ** -24  # float32 unit roundoff


def gamma(k):
    return k * U32 / (1 - k * U32)


def rand(rng, *shape, scale=1.0):
    return (rng.standard_normal(shape) * scale).astype(np.float32)


def max_err(a, b):
    return float(np.max(np.abs(np.asarray(a, np.float64) - np.asarray(b, np.float64)), initial=0))


# ---------------------------------------------------------------------------- SDPA references


def sdpa_ref(q, k, v, mask=None, scale=None, causal=None, window=None, softcap=0.0,
             alibi_slopes=None, sinks=None):
    """float64 softmax(q k^T scale + mask) v with causal 'top_left' / 'bottom_right' and the
    variants of include/simdattn.h, literally: d_i = i for top_left, else i + Lkv - Lq; window
    (left, right): d_i - left <= j <= d_i + right; softcap: s = c tanh(s / c); ALiBi:
    s -= slope[h] * |j - d_i|; sinks[h] joins the normaliser. Rows with nothing in the
    normaliser give 0 and lse -inf. Returns (out, lse, probabilities)."""
    q, k, v = (np.asarray(t, np.float64) for t in (q, k, v))
    scale = 1.0 / math.sqrt(q.shape[-1]) if scale is None else scale
    s = q @ np.swapaxes(k, -1, -2) * scale
    lq, lkv = s.shape[-2:]
    pos = np.arange(lq)[:, None] + (0 if causal == "top_left" else lkv - lq)  # d_i
    key = np.arange(lkv)[None, :]
    if softcap:
        s = softcap * np.tanh(s / softcap)
    if alibi_slopes is not None:
        s = s - np.asarray(alibi_slopes, np.float64)[..., None, None] * np.abs(key - pos)
    if mask is not None:
        mask = np.asarray(mask)
        s = s + (np.where(mask, 0.0, -np.inf) if mask.dtype == np.bool_ else mask)
    visible = np.ones((lq, lkv), bool)
    if causal is not None:
        visible &= key <= pos
    if window is not None:
        visible &= (pos - key <= window[0]) & (key - pos <= window[1])
    s = np.where(visible, s, -np.inf)
    sink = np.full(s.shape[:-1] + (1,), -np.inf)
    if sinks is not None:
        sink = np.broadcast_to(np.asarray(sinks, np.float64)[..., None, None], sink.shape)
    m = np.maximum(np.max(s, axis=-1, keepdims=True, initial=-np.inf), sink)
    m = np.where(np.isfinite(m), m, 0.0)
    e = np.exp(s - m)
    z = np.sum(e, axis=-1, keepdims=True) + np.exp(sink - m)
    p = np.divide(e, z, out=np.zeros_like(e), where=z > 0)
    with np.errstate(divide="ignore"):
        lse = np.where(z[..., 0] > 0, np.log(z[..., 0]) + m[..., 0], -np.inf)
    return p @ v, lse, p


def sdpa_tol(q, k, v, scale=None):
    """Bound on |out - out_ref|: each score is a d_k-term dot product, off by
    gamma_{d_k+1} * S with S = scale * max_ij sum |q_i k_j|; the probabilities then carry a
    relative error <= 2 * that + gamma_{L_kv + 4} (exp, running max/sum, division), and
    out = sum p_j v_j adds gamma_{L_kv} max|v|. Twice the sum, for the online rescaling."""
    q, k, v = (np.asarray(t, np.float64) for t in (q, k, v))
    dk, lkv = q.shape[-1], k.shape[-2]
    scale = 1.0 / math.sqrt(dk) if scale is None else scale
    s_abs = scale * float(np.max(np.abs(q) @ np.swapaxes(np.abs(k), -1, -2), initial=0))
    vmax = float(np.max(np.abs(v), initial=0))
    return 2 * vmax * (2 * gamma(dk + 1) * s_abs + gamma(lkv + 4) + gamma(lkv))


TANH_ULPS = 5  # the kernel's rational tanh: at most 4.9 ulp (src/kernels/attention-inl.h)


def variant_tols(q, k, v, scale=None, softcap=0.0, alibi_slopes=None, sinks=None):
    """(out, lse) bounds with the variants, as sdpa_tol: the logit error E = gamma_{d_k+1} S
    plus, for a softcap c (c tanh(s/c) is 1-Lipschitz: the dot product's error passes through),
    2u S (s * fl(1/c)) + (2 TANH_ULPS + 1) u c (tanh's ulps of |tanh| <= 1, the product by c);
    for ALiBi u S + 2u max|bias| (the bias product and the subtraction, one rounding each);
    a sink is one more normaliser term. out: 2 max|v| (2E + gamma_{L_kv+5} + gamma_{L_kv});
    lse: 2 (E + gamma_{L_kv+5}) + 4u max|lse| (the final additions)."""
    q, k = (np.asarray(t, np.float64) for t in (q, k))
    dk, lq, lkv = q.shape[-1], q.shape[-2], k.shape[-2]
    scale = 1.0 / math.sqrt(dk) if scale is None else scale
    s_abs = scale * float(np.max(np.abs(q) @ np.swapaxes(np.abs(k), -1, -2), initial=0))
    e = gamma(dk + 1) * s_abs
    if softcap:
        e += 2 * U32 * s_abs + (2 * TANH_ULPS + 1) * U32 * softcap
    if alibi_slopes is not None:
        bias = float(np.max(np.abs(alibi_slopes), initial=0)) * (lq + lkv)
        e += U32 * s_abs + 2 * U32 * bias
    vmax = float(np.max(np.abs(np.asarray(v, np.float64)), initial=0))
    rel = 2 * e + gamma(lkv + 5) + gamma(lkv)
    return 2 * vmax * rel, 2 * (e + gamma(lkv + 5)), 4 * U32


def torch_math_sdpa(q, k, v, mask=None, scale=None):
    """torch's math composition in float32: softmax(q @ k^T * scale + mask) @ v."""
    q, k, v = (torch.from_numpy(np.array(t, np.float32)) for t in (q, k, v))
    scale = 1.0 / math.sqrt(q.shape[-1]) if scale is None else scale
    s = q @ k.transpose(-1, -2) * scale
    if mask is not None:
        mask = np.asarray(mask)
        if mask.dtype == np.bool_:
            mask = np.where(mask, 0.0, -np.inf)
        s = s + torch.from_numpy(np.array(mask, np.float32))
    return (torch.softmax(s, dim=-1) @ v).numpy()


class TestWorkedExamples(unittest.TestCase):
    """The two published single-batch examples, scale 1/sqrt(d_k)."""

    def check(self, q, k, v, truth, published):
        q, k, v = (np.array(t, np.float32) for t in (q, k, v))
        out = simdattn.scaled_dot_product_attention(q, k, v)
        ref = sdpa_ref(q, k, v)[0]
        self.assertLessEqual(max_err(out, ref), sdpa_tol(q, k, v))
        # The quoted true values have 4 decimals: rounding 5e-5 plus float32 error.
        self.assertLessEqual(max_err(out, truth), 1e-4)
        self.assertGreater(max_err(out, published), 0.05)

    def test_example_1(self):
        # Published output [[0.378, 0.421, 0.463], [0.152, 0.175, 0.200]] is impossible: every
        # output row is p V0 + (1 - p) V1 (convex weights), and both rows of V rise by exactly
        # 0.1 per column, so each output row must rise by exactly 0.1 too (0.378 -> 0.421 does
        # not); 0.175 is also below min(V[:, 1]) = 0.2, outside the convex hull of V's rows.
        # True: scores/sqrt(3) = [0.2887, 0.1155] and [0.6812, 0.2309] give
        # p = sigmoid(0.1732) = 0.5432 and sigmoid(0.4503) = 0.6107, out = 0.1 + 0.4 p + col/10.
        self.check([[0.1, 0.2, 0.3], [0.4, 0.5, 0.6]], [[0.7, 0.8, 0.9], [0.2, 0.3, 0.4]],
                   [[0.5, 0.6, 0.7], [0.1, 0.2, 0.3]],
                   [[0.3173, 0.4173, 0.5173], [0.3426, 0.4426, 0.5426]],
                   [[0.378, 0.421, 0.463], [0.152, 0.175, 0.200]])

    def test_example_2(self):
        # Published [[9.5, 10.5], [11.5, 12.5]] is impossible: 11.5 and 12.5 exceed the largest
        # values of V's columns (11, 12), and a convex combination of rows cannot; and 9.5 would
        # put weight 0.75 on key 0 although key 1 scores higher (23 vs 17 before scaling).
        # True: (23 - 17)/sqrt(2) = 4.243 -> p1 = 0.98584, out = 9 + 2 p1 = 10.9717; row 2:
        # (53 - 39)/sqrt(2) = 9.899 -> p1 = 0.99995 -> 10.9999.
        self.check([[1, 2], [3, 4]], [[5, 6], [7, 8]], [[9, 10], [11, 12]],
                   [[10.9717, 11.9717], [10.9999, 11.9999]], [[9.5, 10.5], [11.5, 12.5]])


class TestSdpa(unittest.TestCase):
    def setUp(self):
        self.rng = np.random.default_rng(1234)

    def assert_sdpa(self, q, k, v, out, mask=None, scale=None, causal=None, lse=None,
                    torch_too=False):
        ref, ref_lse, _ = sdpa_ref(q, k, v, mask, scale, causal)
        self.assertEqual(out.shape, ref.shape)
        tol = sdpa_tol(q, k, v, scale)
        self.assertLessEqual(max_err(out, ref), tol)
        if lse is not None:
            self.assertTrue(np.array_equal(np.isneginf(lse), np.isneginf(ref_lse)))
            finite = np.isfinite(ref_lse)
            # lse = m + log z: error <= gamma_{d_k+1} S (scores) + gamma_{L_kv + 4} (log, sum).
            self.assertLessEqual(max_err(lse[finite], ref_lse[finite]), tol + 1e-6)
        if torch_too and torch is not None:
            # torch's float32 result has an error of the same bound: allow both.
            self.assertLessEqual(max_err(out, torch_math_sdpa(q, k, v, mask, scale)), 2 * tol)

    def test_random_shapes_vs_reference_and_torch(self):
        for lead, lq, lkv, dk, dv in [((), 7, 5, 3, 3), ((3,), 1, 33, 16, 8),
                                      ((2, 3), 65, 70, 64, 64), ((2, 2, 2), 17, 9, 8, 24),
                                      ((1, 4), 130, 257, 32, 5)]:
            with self.subTest(lead=lead, lq=lq, lkv=lkv, dk=dk, dv=dv):
                q, k, v = (rand(self.rng, *lead, n, d) for n, d in ((lq, dk), (lkv, dk),
                                                                     (lkv, dv)))
                out, lse = simdattn.scaled_dot_product_attention(q, k, v, return_lse=True)
                self.assertEqual(out.dtype, np.float32)
                self.assert_sdpa(q, k, v, out, lse=lse, torch_too=True)

    def test_explicit_scale_and_errors(self):
        q, k, v = rand(self.rng, 2, 4, 8), rand(self.rng, 2, 6, 8), rand(self.rng, 2, 6, 8)
        out = simdattn.scaled_dot_product_attention(q, k, v, scale=0.3)
        self.assert_sdpa(q, k, v, out, scale=0.3, torch_too=True)
        with self.assertRaises(simdattn.Error) as cm:
            simdattn.scaled_dot_product_attention(q, k, v, scale=0.0)
        self.assertEqual(cm.exception.status_name, "SIMDATTN_ERR_BAD_ARGUMENT")
        with self.assertRaises(simdattn.Error) as cm:
            simdattn.scaled_dot_product_attention(q, k, v, scale=float("inf"))
        self.assertEqual(cm.exception.status, simdattn.ERR_BAD_ARGUMENT)
        self.assertIn("scale", str(cm.exception))

    def test_masks_bool_float_and_broadcast(self):
        b, h, lq, lkv, d = 2, 3, 9, 11, 16
        q, k, v = rand(self.rng, b, h, lq, d), rand(self.rng, b, h, lkv, d), rand(
            self.rng, b, h, lkv, d)
        allowed = self.rng.random((b, 1, lq, lkv)) < 0.7
        allowed[..., 0] = True  # every row keeps a key (torch would give NaN otherwise)
        additive = np.where(allowed, 0.0, -np.inf).astype(np.float32)
        out_bool = simdattn.scaled_dot_product_attention(q, k, v, attn_mask=allowed)
        out_float = simdattn.scaled_dot_product_attention(q, k, v, attn_mask=additive)
        self.assertTrue(np.array_equal(out_bool, out_float))
        self.assert_sdpa(q, k, v, out_bool, mask=allowed, torch_too=True)
        soft = rand(self.rng, h, lq, lkv, scale=2.0)  # finite additive values, heads broadcast
        out = simdattn.scaled_dot_product_attention(q, k, v, attn_mask=soft)
        self.assert_sdpa(q, k, v, out, mask=soft, torch_too=True)
        for shape in [(lkv,), (1, lkv), (lq, 1), (b, 1, 1, lkv), (1,)]:
            with self.subTest(mask_shape=shape):
                m = rand(self.rng, *shape)
                out = simdattn.scaled_dot_product_attention(q, k, v, attn_mask=m)
                self.assert_sdpa(q, k, v, out, mask=m)

    def test_causal_alignments(self):
        for lq, lkv in [(5, 5), (4, 9), (9, 4)]:
            for align in ("top_left", "bottom_right"):
                with self.subTest(lq=lq, lkv=lkv, align=align):
                    q, k, v = rand(self.rng, 2, lq, 8), rand(self.rng, 2, lkv, 8), rand(
                        self.rng, 2, lkv, 8)
                    out, lse = simdattn.scaled_dot_product_attention(
                        q, k, v, is_causal=True, causal_alignment=align, return_lse=True)
                    self.assert_sdpa(q, k, v, out, causal=align, lse=lse)
        # is_causal combines with attn_mask.
        q, k, v = rand(self.rng, 6, 4), rand(self.rng, 6, 4), rand(self.rng, 6, 4)
        m = rand(self.rng, 6, 6)
        out = simdattn.scaled_dot_product_attention(q, k, v, attn_mask=m, is_causal=True)
        self.assert_sdpa(q, k, v, out, mask=m, causal="top_left")
        with self.assertRaises(ValueError):
            simdattn.scaled_dot_product_attention(q, k, v, is_causal=True, causal_alignment="x")

    def test_fully_masked_rows_give_zero_and_lse_minus_inf(self):
        q, k, v = rand(self.rng, 3, 4), rand(self.rng, 5, 4), rand(self.rng, 5, 2)
        allowed = np.ones((3, 5), bool)
        allowed[1] = False
        out, lse = simdattn.scaled_dot_product_attention(q, k, v, attn_mask=allowed,
                                                         return_lse=True)
        self.assertTrue(np.all(out[1] == 0) and lse[1] == -np.inf)
        self.assertTrue(np.all(np.isfinite(out)))
        self.assert_sdpa(q, k, v, out, mask=allowed, lse=lse)
        # bottom-right with q_len > kv_len: the first q_len - kv_len rows see no key.
        out, lse = simdattn.scaled_dot_product_attention(
            rand(self.rng, 6, 4), k[:2], v[:2], is_causal=True, causal_alignment="bottom_right",
            return_lse=True)
        self.assertTrue(np.all(out[:4] == 0) and np.all(lse[:4] == -np.inf))
        self.assertTrue(np.all(np.isfinite(lse[4:])))

    def test_broadcast_leading_dims(self):
        b, h, lq, lkv, d = 2, 3, 5, 7, 8
        cases = [((b, h), (1, h), (b, 1)),           # stride-0 batch / heads
                 ((h,), (b, h), (b, h)),             # q without batch dim
                 ((2, 1, 3), (1, 4, 3), (2, 4, 1)),  # three leading dims, inner broadcasts
                 ((4, 1, 2, 3), (1, 1, 2, 3), ())]
        for ql, kl, vl in cases:
            with self.subTest(q=ql, k=kl, v=vl):
                q, k, v = rand(self.rng, *ql, lq, d), rand(self.rng, *kl, lkv, d), rand(
                    self.rng, *vl, lkv, d)
                lead = np.broadcast_shapes(ql, kl, vl)
                out = simdattn.scaled_dot_product_attention(q, k, v)
                qb, kb, vb = (np.broadcast_to(t, lead + t.shape[-2:]) for t in (q, k, v))
                self.assert_sdpa(qb, kb, vb, out, torch_too=True)

    def test_non_contiguous_inputs(self):
        base = rand(self.rng, 3, 10, 2, 16)
        q = base.transpose(0, 2, 1, 3)                # (3, 2, 10, 16): permuted lead/seq
        k = rand(self.rng, 3, 2, 24, 32)[:, :, ::2, 5:21]  # seq step 2, offset, wide rows
        v = rand(self.rng, 3, 2, 12, 32)[..., ::2]    # last dim stride 2: copied
        out, lse = simdattn.scaled_dot_product_attention(q, k, v, return_lse=True)
        self.assert_sdpa(q, k, v, out, lse=lse, torch_too=True)
        mask = rand(self.rng, 12, 10).T               # non-contiguous mask (10, 12)
        out = simdattn.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        self.assert_sdpa(q, k, v, out, mask=mask)
        row = rand(self.rng, 1, 16)
        q_bcast = np.broadcast_to(row, (3, 2, 10, 16))  # stride 0 everywhere but the feature
        out = simdattn.scaled_dot_product_attention(q_bcast, k, v)
        self.assert_sdpa(q_bcast, k, v, out)

    def test_dv_differs_from_dk_and_2d(self):
        q, k, v = rand(self.rng, 4, 6), rand(self.rng, 9, 6), rand(self.rng, 9, 13)
        out = simdattn.scaled_dot_product_attention(q, k, v)
        self.assertEqual(out.shape, (4, 13))
        self.assert_sdpa(q, k, v, out, torch_too=True)

    def test_large_magnitudes(self):
        # Scores of order 1e4: the softmax must subtract the max (exp would overflow otherwise).
        q, k, v = rand(self.rng, 2, 8, 16, scale=30), rand(self.rng, 2, 12, 16, scale=30), rand(
            self.rng, 2, 12, 16, scale=1e3)
        out, lse = simdattn.scaled_dot_product_attention(q, k, v, return_lse=True)
        self.assertTrue(np.all(np.isfinite(out)) and np.all(np.isfinite(lse)))
        self.assert_sdpa(q, k, v, out, lse=lse)

    def test_float64_in_float64_out(self):
        q, k, v = (self.rng.standard_normal((2, 5, 4)) for _ in range(3))
        out, lse = simdattn.scaled_dot_product_attention(q, k, v, return_lse=True)
        self.assertEqual((out.dtype, lse.dtype), (np.float64, np.float64))
        self.assert_sdpa(q, k, v, out, lse=lse)  # computed in float32: the float32 bound
        with self.assertRaises(TypeError):
            simdattn.scaled_dot_product_attention(np.ones((2, 2), int), q[0], v[0])

    def test_empty(self):
        d = 4
        cases = [((0, 3, d), (0, 5, d), (0, 5, d)),  # batch 0
                 ((2, 0, d), (2, 5, d), (2, 5, 6)),  # q_len 0
                 ((2, 3, d), (2, 5, d), (2, 5, 0))]  # d_v 0
        for qs, ks, vs in cases:
            with self.subTest(q=qs, k=ks, v=vs):
                out, lse = simdattn.scaled_dot_product_attention(
                    np.ones(qs, np.float32), np.ones(ks, np.float32), np.ones(vs, np.float32),
                    return_lse=True)
                self.assertEqual(out.shape, qs[:-1] + vs[-1:])
                self.assertEqual(lse.shape, qs[:-1])
        # d_v == 0 still gives the lse.
        q, k = rand(self.rng, 3, d), rand(self.rng, 5, d)
        _, lse = simdattn.scaled_dot_product_attention(q, k, np.zeros((5, 0), np.float32),
                                                       return_lse=True)
        self.assertLessEqual(max_err(lse, sdpa_ref(q, k, np.zeros((5, 1)))[1]), 1e-5)
        # kv_len 0: every query sees no key -> zeros and lse -inf.
        out, lse = simdattn.scaled_dot_product_attention(
            q, np.zeros((0, d), np.float32), np.zeros((0, 6), np.float32), return_lse=True)
        self.assertEqual(out.shape, (3, 6))
        self.assertTrue(np.all(out == 0) and np.all(lse == -np.inf))

    def test_shape_errors(self):
        q, k, v = rand(self.rng, 2, 3, 4), rand(self.rng, 2, 5, 4), rand(self.rng, 2, 5, 4)
        bad = [(q, k[..., :3], v), (q, k, v[:, :4]), (q, rand(self.rng, 3, 5, 4), v),
               (q[0, 0], k, v)]
        for args in bad:
            with self.assertRaises(simdattn.ShapeError) as cm:
                simdattn.scaled_dot_product_attention(*args)
            self.assertIsInstance(cm.exception, ValueError)
            self.assertEqual(cm.exception.status_name, "SIMDATTN_ERR_BAD_SHAPE")
        with self.assertRaises(ValueError):
            simdattn.scaled_dot_product_attention(q, k, v, attn_mask=np.zeros((3, 4)))
        # d_k == 0: the library rejects it (the default scale 1/sqrt(0) is undefined).
        with self.assertRaises(simdattn.ShapeError) as cm:
            simdattn.scaled_dot_product_attention(q[..., :0], k[..., :0], v)
        self.assertIn("d_k", cm.exception.message)


class TestSdpaVariants(unittest.TestCase):
    """window, softcap, alibi_slopes and sinks against sdpa_ref (float64, the header's
    semantics literally) within variant_tols."""

    def setUp(self):
        self.rng = np.random.default_rng(99)

    def check(self, q, k, v, causal=None, mask=None, **variants):
        out, lse = simdattn.scaled_dot_product_attention(
            q, k, v, attn_mask=mask, is_causal=causal is not None,
            causal_alignment=causal or "top_left", return_lse=True, **variants)
        ref, ref_lse, _ = sdpa_ref(q, k, v, mask, None, causal, **variants)
        tol_out, tol_lse, rel_lse = variant_tols(
            q, k, v, softcap=variants.get("softcap", 0.0),
            alibi_slopes=variants.get("alibi_slopes"), sinks=variants.get("sinks"))
        self.assertEqual(out.shape, ref.shape)
        self.assertLessEqual(max_err(out, ref), tol_out)
        self.assertTrue(np.array_equal(np.isneginf(lse), np.isneginf(ref_lse)))
        finite = np.isfinite(ref_lse)
        lse_bound = tol_lse + rel_lse * float(np.max(np.abs(ref_lse[finite]), initial=0))
        self.assertLessEqual(max_err(lse[finite], ref_lse[finite]), lse_bound)
        return out, lse

    def variants(self, heads):
        slopes = np.array([0.5, 0.0, -0.125, 0.25][:heads], np.float32)
        sinks = np.array([1.0, -np.inf, 4.0, -1.0][:heads], np.float32)
        return [dict(window=(3, 0)), dict(window=(0, 0)), dict(window=(2, 1)),
                dict(window=(2**63 - 1, 2**63 - 1)), dict(window=(0, 10**6)),
                dict(softcap=2.0), dict(alibi_slopes=slopes), dict(sinks=sinks),
                dict(window=(4, 2), softcap=1.5, alibi_slopes=slopes, sinks=sinks)]

    def test_each_variant_and_combined(self):
        heads = 3
        for lq, lkv in ((5, 12), (12, 5), (40, 70), (1, 300)):
            q = rand(self.rng, 2, heads, lq, 16, scale=1.5)
            k = rand(self.rng, 2, heads, lkv, 16, scale=1.5)
            v = rand(self.rng, 2, heads, lkv, 8)
            for causal in (None, "top_left", "bottom_right"):
                for variant in self.variants(heads):
                    with self.subTest(lq=lq, lkv=lkv, causal=causal, variant=str(variant)):
                        self.check(q, k, v, causal, **variant)

    def test_per_head_arrays_broadcast_and_strides(self):
        q, k = rand(self.rng, 2, 4, 9, 8), rand(self.rng, 2, 4, 11, 8)
        v = rand(self.rng, 2, 4, 11, 8)
        slopes = np.array([0.5, 0.25, 0.0, -0.1], np.float32)
        sinks = np.array([0.0, 2.0, -np.inf, 1.0], np.float32)
        self.check(q, k, v, "bottom_right", alibi_slopes=slopes, sinks=sinks)
        # Non-contiguous q (transposed heads and queries), a broadcast mask.
        qt = np.swapaxes(rand(self.rng, 2, 9, 4, 8), 1, 2)
        mask = rand(self.rng, 9, 11)
        self.check(qt, k, v, "top_left", mask=mask, alibi_slopes=slopes, sinks=sinks)
        # Values that differ per batch entry too: (2, 4) slopes (the binding copies as needed).
        per_batch = rand(self.rng, 2, 4, scale=0.2)
        self.check(q, k, v, None, alibi_slopes=per_batch, sinks=per_batch * 3)
        # One leading dimension: the heads.
        self.check(q[0], k[0], v[0], "bottom_right", alibi_slopes=slopes, window=(2, 0))
        with self.assertRaises(simdattn.ShapeError):
            simdattn.scaled_dot_product_attention(q, k, v, alibi_slopes=slopes[:3])

    def test_rows_without_keys_give_zero_and_lse_of_the_sink(self):
        q, k, v = rand(self.rng, 3, 6, 8), rand(self.rng, 3, 4, 8), rand(self.rng, 3, 4, 8)
        sinks = np.array([0.5, -np.inf, 2.0], np.float32)
        # bottom_right with Lq 6 > Lkv 4: queries 0 and 1 see no key.
        out, lse = self.check(q, k, v, "bottom_right", sinks=sinks)
        self.assertTrue(np.all(out[:, :2] == 0))
        self.assertTrue(np.array_equal(lse[:, :2], np.repeat(sinks[:, None], 2, axis=1)))

    def test_errors(self):
        q, k, v = rand(self.rng, 2, 3, 4), rand(self.rng, 2, 5, 4), rand(self.rng, 2, 5, 4)
        sdpa = simdattn.scaled_dot_product_attention
        bad = [(dict(window=(-1, 0)), "options->window_left must be >= 0 (got -1)"),
               (dict(window=(1, -2)), "options->window_right must be >= 0 (got -2)"),
               (dict(softcap=float("nan")), "options->softcap must be finite"),
               (dict(softcap=-1.0), "got -1"),
               (dict(alibi_slopes=[0.5, float("nan")]), "options->alibi_slopes[1] = nan"),
               (dict(sinks=[float("inf"), 0.0]), "options->sinks[0] = inf"),
               (dict(window=(2**63, 0)), "window sides must fit int64")]
        for kwargs, message in bad:
            with self.subTest(kwargs=str(kwargs)):
                with self.assertRaises(simdattn.Error) as cm:
                    sdpa(q, k, v, **kwargs)
                self.assertEqual(cm.exception.status_name, "SIMDATTN_ERR_BAD_ARGUMENT")
                self.assertNotIsInstance(cm.exception, ValueError)
                self.assertIn(message, str(cm.exception))
        for window in ((1,), (1, 2, 3), (1.5, 0)):
            with self.assertRaises(ValueError):
                sdpa(q, k, v, window=window)
        with self.assertRaises(simdattn.ShapeError):
            sdpa(q, k, v, sinks=np.zeros(3, np.float32))

    def test_ctypes_gets_the_0_2_initialiser(self):
        # A lookup by name (dlsym) binds the default SIMDATTN_0.2 version: 216 bytes written,
        # struct_size 216; the bytes after them untouched.
        init = simdattn._lib.simdattn_sdpa_options_init
        init.restype, init.argtypes = None, [ctypes.c_void_p]
        buf = (ctypes.c_ubyte * 256)(*([0xAB] * 256))
        init(buf)
        raw = bytes(buf)
        self.assertEqual(int.from_bytes(raw[:8], "little"), 216)
        self.assertEqual(raw[8:216], bytes(208))
        self.assertEqual(raw[216:], bytes([0xAB]) * 40)
        self.assertEqual(ctypes.sizeof(simdattn._SdpaOptions), 216)


class TestVarlen(unittest.TestCase):
    """varlen_attention per sequence against sdpa_ref (float64) within variant_tols."""

    def run_case(self, q_lens, kv_lens, heads=4, kv_heads=2, dk=16, dv=12, **kw):
        rng = np.random.default_rng(sum(q_lens) + 7 * sum(kv_lens))
        cu_q, cu_kv = np.cumsum([0] + q_lens), np.cumsum([0] + kv_lens)
        q = rand(rng, cu_q[-1], heads, dk)
        k, v = rand(rng, cu_kv[-1], kv_heads, dk), rand(rng, cu_kv[-1], kv_heads, dv)
        out, lse = simdattn.varlen_attention(q, k, v, cu_q, cu_kv, return_lse=True, **kw)
        self.assertEqual(out.shape, (cu_q[-1], heads, dv))
        self.assertEqual(lse.shape, (cu_q[-1], heads))
        group = heads // kv_heads
        ref_kw = {n: kw[n] for n in ("window", "softcap", "alibi_slopes", "sinks") if n in kw}
        causal = kw.get("causal_alignment", "bottom_right") if kw.get("is_causal") else None
        for b in range(len(q_lens)):
            qs = np.swapaxes(q[cu_q[b]:cu_q[b + 1]], 0, 1)  # (heads, Lq, dk)
            ks = np.repeat(np.swapaxes(k[cu_kv[b]:cu_kv[b + 1]], 0, 1), group, axis=0)
            vs = np.repeat(np.swapaxes(v[cu_kv[b]:cu_kv[b + 1]], 0, 1), group, axis=0)
            want, want_lse, _ = sdpa_ref(qs, ks, vs, causal=causal, **ref_kw)
            tol_out, tol_lse, _ = variant_tols(
                qs, ks, vs, **{n: a for n, a in ref_kw.items() if n != "window"})
            got = np.swapaxes(out[cu_q[b]:cu_q[b + 1]], 0, 1)
            got_lse = np.swapaxes(lse[cu_q[b]:cu_q[b + 1]], 0, 1)
            self.assertLessEqual(max_err(got, want), tol_out, f"sequence {b}")
            finite = np.isfinite(want_lse)
            np.testing.assert_array_equal(np.isfinite(got_lse), finite)
            if finite.any():
                self.assertLessEqual(float(np.max(np.abs(got_lse[finite] - want_lse[finite]))),
                                     tol_lse + 4 * U32 * float(np.max(np.abs(want_lse[finite]))))

    def test_ragged_with_empty_sequences(self):
        self.run_case([3, 0, 40, 1, 17], [5, 9, 40, 0, 70])

    def test_causal_and_variants(self):
        self.run_case([6, 33, 1], [6, 50, 90], is_causal=True, window=(10, 0), softcap=2.0,
                      alibi_slopes=np.array([0.5, 0.25, 0.0, -0.125], np.float32),
                      sinks=np.array([0.0, -np.inf, 1.0, 2.0], np.float32))

    def test_top_left_and_strided_input(self):
        rng = np.random.default_rng(3)
        q = rand(rng, 9, 2, 8)[:, :, ::2]  # non-contiguous feature dimension: copied
        k = rand(rng, 12, 1, 4)
        v = rand(rng, 12, 1, 4)
        out = simdattn.varlen_attention(q, k, v, [0, 4, 9], [0, 5, 12], is_causal=True,
                                        causal_alignment="top_left")
        for b, (q0, q1, k0, k1) in enumerate([(0, 4, 0, 5), (4, 9, 5, 12)]):
            for h in range(2):
                qs, ks, vs = q[q0:q1, h], k[k0:k1, 0], v[k0:k1, 0]
                want, _, _ = sdpa_ref(qs, ks, vs, causal="top_left")
                self.assertLessEqual(max_err(out[q0:q1, h], want), sdpa_tol(qs, ks, vs),
                                     f"sequence {b} head {h}")

    def test_errors(self):
        q = np.zeros((4, 2, 8), np.float32)
        with self.assertRaises(simdattn.ShapeError):
            simdattn.varlen_attention(q, q, q, [0, 3], [0, 4])  # cu_q[-1] != total_q
        with self.assertRaises(simdattn.Error) as cm:
            simdattn.varlen_attention(q, q, q, [0, 3, 2, 4], [0, 1, 2, 4])
        self.assertEqual(cm.exception.status_name, "SIMDATTN_ERR_BAD_SHAPE")
        self.assertIn("non-decreasing", cm.exception.message)
        with self.assertRaises(simdattn.Error):
            simdattn.varlen_attention(q, q, q, [0, 4], [0, 4], softcap=float("nan"))


def bf16_round_ref(a):
    """float32 -> bf16 bits, nearest with ties to even, by comparing the two neighbours with
    16 low zero bits in float64 (independent of the binding's and the library's integer
    rounding; finite inputs whose rounding stays finite)."""
    bits = np.asarray(a, np.float32).view(np.uint32)
    lo = bits & np.uint32(0xFFFF0000)
    hi = lo + np.uint32(0x10000)
    x = np.asarray(a, np.float64)
    d_lo = np.abs(x - lo.view(np.float32).astype(np.float64))
    d_hi = np.abs(hi.view(np.float32).astype(np.float64) - x)
    even_hi = ((hi >> 16) & 1) == 0
    take_hi = (d_hi < d_lo) | ((d_hi == d_lo) & even_hi)
    return (np.where(take_hi, hi, lo) >> 16).astype(np.uint16)


def kv_narrow_ref(a, dtype):
    """The cache's stored elements for float32 rows a (bit patterns for the 16-bit types)."""
    if dtype == "bfloat16":
        return bf16_round_ref(a)
    if dtype == "float16":
        return np.asarray(a, np.float32).astype(np.float16).view(np.uint16)  # NumPy rounds RNE
    return np.asarray(a, np.float32)


def kv_widen(stored, dtype):
    """The exact float32 values of stored cache elements: bf16 bits << 16, f16 through NumPy."""
    if dtype == "bfloat16":
        return (stored.astype(np.uint32) << 16).view(np.float32)
    if dtype == "float16":
        return stored.view(np.float16).astype(np.float32)
    return stored


class TestKVCache(unittest.TestCase):
    """KVCache: appends placed and converted exactly (against an independent rounding), and
    attention against sdpa_ref (float64) over the widened cache values within variant_tols."""

    HEADS, KV_HEADS, DK, DV = 4, 2, 16, 8

    def cached(self, cache, seq):
        """Sequence seq's widened keys and values gathered from the cache's arrays through its
        blocks: [seq_len, kv_heads, d]."""
        n, blocks = cache.seq_len(seq), cache.blocks(seq)
        k = cache.k[blocks].reshape(-1, cache.kv_heads, cache.d_k)[:n]
        v = cache.v[blocks].reshape(-1, cache.kv_heads, cache.d_v)[:n]
        return k, v

    def check(self, cache, q, seq_ids, history=None, causal="bottom_right", **kw):
        """cache.attention(q, seq_ids) per sequence against sdpa_ref over the cache's widened
        values; with history {seq: (k rows, v rows)}, the stored elements must be exactly the
        reference rounding of the appended rows."""
        out, lse = cache.attention(q, seq_ids, causal=causal, return_lse=True, **kw)
        self.assertEqual(out.shape, q.shape[:3] + (cache.d_v,))
        self.assertEqual(lse.shape, q.shape[:3])
        group = q.shape[1] // cache.kv_heads
        for b, s in enumerate(seq_ids):
            k, v = self.cached(cache, s)
            if history is not None and s in history:
                for got, rows in zip((k, v), history[s]):
                    np.testing.assert_array_equal(got, kv_narrow_ref(np.array(rows), cache.dtype))
            k, v = (np.repeat(np.swapaxes(kv_widen(t, cache.dtype), 0, 1), group, axis=0)
                    for t in (k, v))  # [heads, seq_len, d]
            want, want_lse, _ = sdpa_ref(q[b], k, v, causal=causal, **kw)
            tol_out, tol_lse, rel_lse = variant_tols(
                q[b], k, v, **{n: a for n, a in kw.items() if n != "window"})
            self.assertLessEqual(max_err(out[b], want), tol_out, f"sequence {s!r}")
            finite = np.isfinite(want_lse)
            np.testing.assert_array_equal(np.isfinite(lse[b]), finite)
            bound = tol_lse + rel_lse * float(np.max(np.abs(want_lse[finite]), initial=0))
            self.assertLessEqual(max_err(lse[b][finite], want_lse[finite]), bound)
        return out, lse

    def test_decode_loop(self):
        # Three sequences decoded one token at a time, interleaved (their blocks alternate in
        # the cache), each step's query against everything cached so far.
        lens = {0: 23, 1: 40, "c": 11}
        for dtype in ("float32", "bfloat16", "float16"):
            for block_size in (16, 5):
                with self.subTest(dtype=dtype, block_size=block_size):
                    rng = np.random.default_rng(block_size)
                    blocks = sum(-(-n // block_size) for n in lens.values())
                    cache = simdattn.KVCache(blocks + 2, block_size, self.KV_HEADS, self.DK,
                                             self.DV, dtype)
                    history = {s: ([], []) for s in lens}
                    for step in range(max(lens.values())):
                        active = [s for s, n in lens.items() if step < n]
                        for s in active:
                            k = rand(rng, 1, self.KV_HEADS, self.DK, scale=1.5)
                            v = rand(rng, 1, self.KV_HEADS, self.DV)
                            cache.append(s, k, v)
                            history[s][0].append(k[0])
                            history[s][1].append(v[0])
                        self.assertEqual([cache.seq_len(s) for s in active],
                                         [step + 1] * len(active))
                        q = rand(rng, len(active), self.HEADS, 1, self.DK, scale=1.5)
                        out, _ = self.check(cache, q, active, history)
                        np.testing.assert_array_equal(cache.attention(q, active), out)
                    self.assertEqual(cache.num_free_blocks, 2)

    def rows(self, rng, n):
        """n tokens' float32 keys and values."""
        return rand(rng, n, self.KV_HEADS, self.DK), rand(rng, n, self.KV_HEADS, self.DV)

    def prefilled(self, dtype="bfloat16", block_size=5, lens=(12, 7), seed=5):
        rng = np.random.default_rng(seed)
        cache = simdattn.KVCache(12, block_size, self.KV_HEADS, self.DK, self.DV, dtype)
        for s, n in enumerate(lens):
            cache.append(s, *self.rows(rng, n))
        return cache, rng

    def test_prefill_queries_causal_and_variants(self):
        cache, rng = self.prefilled()
        q = rand(rng, 2, self.HEADS, 9, self.DK)  # 9 > 7: with bottom_right 2 queries see nothing
        slopes = np.array([0.5, 0.0, -0.125, 0.25], np.float32)
        sinks = np.array([1.0, -np.inf, 2.0, -1.0], np.float32)
        for causal in ("bottom_right", "top_left", None):
            for kw in ({}, dict(window=(3, 1)), dict(softcap=2.0), dict(alibi_slopes=slopes),
                       dict(sinks=sinks), dict(scale=0.3),
                       dict(window=(4, 0), softcap=1.5, alibi_slopes=slopes, sinks=sinks)):
                with self.subTest(causal=causal, variant=str(kw)):
                    self.check(cache, q, [0, 1], causal=causal, **kw)
        out, lse = cache.attention(q, [0, 1], return_lse=True)
        self.assertTrue(np.all(out[1, :, :2] == 0) and np.all(lse[1, :, :2] == -np.inf))
        self.assertTrue(np.isfinite(lse[1, :, 2:]).all())
        # True is bottom_right, False no mask; float64 in, float64 out; a repeated sequence.
        np.testing.assert_array_equal(cache.attention(q, [0, 1], causal=True), out)
        self.assertEqual(cache.attention(q.astype(np.float64), [0, 1]).dtype, np.float64)
        self.check(cache, q, [1, 1], causal=None)
        self.check(cache, q[:, :, :1], [1, 0], causal=False)

    def test_free_and_reuse_of_blocks(self):
        rng = np.random.default_rng(11)
        cache = simdattn.KVCache(4, 5, self.KV_HEADS, self.DK, self.DV, "float16")
        def rows(n):
            return self.rows(rng, n)
        cache.append(0, *rows(15))                      # 3 full blocks
        cache.append(1, *rows(5))                       # the last block, full
        self.assertEqual(cache.num_free_blocks, 0)
        old = cache.blocks(0)
        cache.free(0)
        self.assertEqual(cache.num_free_blocks, 3)
        for call in (lambda: cache.seq_len(0), lambda: cache.free(0), lambda: cache.blocks(0)):
            with self.assertRaises(KeyError):
                call()
        history = {2: ([], [])}
        k, v = rows(11)  # 3 blocks: rows 1-4 of the last still hold sequence 0's keys
        cache.append(2, k, v)
        history[2][0].extend(k)
        history[2][1].extend(v)
        self.assertEqual(cache.blocks(2), old)
        self.assertEqual(cache.seq_len(2), 11)
        self.assertTrue(np.all(cache.k[old[2], 1:] != 0))  # stale keys that must not be read
        self.check(cache, rand(rng, 2, self.HEADS, 3, self.DK), [2, 1], history)
        # Appending 0 tokens creates a sequence without taking a block.
        cache.append("empty", *rows(0))
        self.assertEqual((cache.seq_len("empty"), cache.blocks("empty")), (0, []))
        out, lse = cache.attention(rand(rng, 1, self.HEADS, 2, self.DK), ["empty"], return_lse=True)
        self.assertTrue(np.all(out == 0) and np.all(lse == -np.inf))

    def test_cache_full_appends_nothing(self):
        rng = np.random.default_rng(2)
        cache = simdattn.KVCache(3, 4, self.KV_HEADS, self.DK, self.DV, "bfloat16")
        cache.append(0, *self.rows(rng, 6))
        cache.append(1, *self.rows(rng, 3))
        k, v, free = cache.k.copy(), cache.v.copy(), cache.num_free_blocks
        # Sequence 0 has 2 rows left in its last block: 3 tokens need 1 block, none is free.
        with self.assertRaises(simdattn.CacheFullError) as cm:
            cache.append(0, *self.rows(rng, 3))
        self.assertIsInstance(cm.exception, simdattn.Error)
        self.assertEqual(cm.exception.status_name, "SIMDATTN_ERR_OUT_OF_MEMORY")
        self.assertIn("needs 1 more blocks for 3 tokens, 0 of 3 are free", str(cm.exception))
        with self.assertRaises(simdattn.CacheFullError):
            cache.append(7, *self.rows(rng, 1))
        self.assertEqual((cache.seq_len(0), cache.num_free_blocks), (6, free))
        with self.assertRaises(KeyError):
            cache.seq_len(7)
        np.testing.assert_array_equal(cache.k, k)
        np.testing.assert_array_equal(cache.v, v)
        # What still fits is appended: the 2 rows left in sequence 0's last block.
        cache.append(0, *self.rows(rng, 2))
        self.assertEqual(cache.seq_len(0), 8)

    def test_errors(self):
        with self.assertRaises(simdattn.Error) as cm:
            simdattn.KVCache(4, 16, 2, 8, 8, "int8")
        self.assertEqual(cm.exception.status_name, "SIMDATTN_ERR_BAD_ARGUMENT")
        self.assertNotIsInstance(cm.exception, ValueError)
        for sizes in ((-1, 16, 2, 8, 8), (4, 0, 2, 8, 8), (4, 16, 0, 8, 8), (4, 16, 2, 0, 8),
                      (4, 16, 2, 8, -1), (2**31 + 1, 1, 1, 1, 0)):
            with self.subTest(sizes=sizes), self.assertRaises(simdattn.ShapeError):
                simdattn.KVCache(*sizes)
        cache, rng = self.prefilled()
        k, v = self.rows(rng, 2)
        with self.assertRaises(TypeError):
            cache.append(0, k.astype(np.float64), v)
        for bad_k, bad_v in ((k[:, :1], v), (k, v[:1]), (k[0], v[0]), (k[..., :-1], v)):
            with self.assertRaises(simdattn.ShapeError):
                cache.append(0, bad_k, bad_v)
        self.assertEqual(cache.seq_len(0), 12)
        q = rand(rng, 2, self.HEADS, 1, self.DK)
        with self.assertRaises(KeyError):
            cache.attention(q, [0, 5])
        with self.assertRaises(simdattn.ShapeError):
            cache.attention(q, [0])  # batch 2 != 1 sequence
        with self.assertRaises(simdattn.ShapeError):
            cache.attention(q[..., :-1], [0, 1])
        with self.assertRaises(simdattn.ShapeError) as cm:
            cache.attention(rand(rng, 2, 3, 1, self.DK), [0, 1])  # 3 heads, 2 kv heads
        self.assertIn("kv_heads", cm.exception.message)
        with self.assertRaises(simdattn.Error) as cm:
            cache.attention(q, [0, 1], softcap=float("nan"))
        self.assertEqual(cm.exception.status_name, "SIMDATTN_ERR_BAD_ARGUMENT")
        with self.assertRaises(ValueError):
            cache.attention(q, [0, 1], causal="diagonal")
        self.assertEqual(ctypes.sizeof(simdattn._KvCache), 80)


class TestAttentionMerge(unittest.TestCase):
    def test_merge_of_key_pieces_equals_sdpa_over_all_keys(self):
        rng = np.random.default_rng(7)
        q, k, v = rand(rng, 2, 3, 9, 16), rand(rng, 2, 3, 50, 16), rand(rng, 2, 3, 50, 8)
        cuts = [0, 20, 20, 37, 50]  # one empty piece (lse -inf, output 0)
        pieces = [simdattn.scaled_dot_product_attention(q, k[..., a:b, :], v[..., a:b, :],
                                                        return_lse=True)
                  for a, b in zip(cuts, cuts[1:])]
        out, lse = simdattn.attention_merge([p[0] for p in pieces], [p[1] for p in pieces])
        ref, ref_lse, _ = sdpa_ref(q, k, v, None, None, None)
        # Each piece's out is within t = sdpa_tol of its exact value and its lse within t + 1e-6
        # (assert_sdpa's bounds; each piece has fewer keys, so the whole-K bound covers it);
        # a merged weight exp(lse_i - lse) moves by both lse errors: out is within
        # t + expm1(2 (t + 1e-6)) max|v| (+ the merge's own few roundings, 1e-6), and lse within
        # t + 1e-6 plus those roundings.
        t = sdpa_tol(q, k, v, None)
        v_max = float(np.max(np.abs(v)))
        self.assertLessEqual(max_err(out, ref), t + math.expm1(2 * (t + 1e-6)) * v_max + 1e-6)
        self.assertLessEqual(max_err(lse, ref_lse), t + 2e-6)

    def test_errors_and_minus_inf(self):
        out, lse = simdattn.attention_merge([np.full((2, 3), np.nan, np.float32)],
                                            [np.full(2, -np.inf, np.float32)])
        self.assertTrue(np.all(out == 0) and np.all(lse == -np.inf))
        with self.assertRaises(simdattn.ShapeError):
            simdattn.attention_merge([np.zeros((2, 3))], [np.zeros(3)])
        with self.assertRaises(simdattn.ShapeError):
            simdattn.attention_merge([], [])


class TestCast(unittest.TestCase):
    """simdattn.cast bit-exact against NumPy: astype(np.float16) for f16 (NumPy rounds to nearest
    even, subnormals and overflow included), an RNE on the float bits for bf16."""

    @staticmethod
    def inputs():
        """Every f16 value, every midpoint between neighbouring f16 values (ties; 65520 is the
        one past 65504) and the floats just around them, specials, float subnormals and 2^20
        random float bit patterns."""
        f16 = np.arange(0x7C00, dtype=np.uint16).view(np.float16).astype(np.float64)
        mids = (f16 + np.append(f16[1:], 65536.0)) / 2
        near = np.concatenate([f16, mids]).astype(np.float32)
        near = np.concatenate([near, np.nextafter(near, np.float32(np.inf)),
                               np.nextafter(near, np.float32(0))])
        specials = np.array([0.0, np.inf, np.nan, 65504.0, 65519.99, 65520.0, 2.0 ** -24,
                             2.0 ** -25, 3 * 2.0 ** -25, 2.0 ** -14, np.finfo(np.float32).max,
                             np.finfo(np.float32).tiny], np.float32)
        bits = np.array([1, 0x7FFFFF, 0x400000, 0x7F800001, 0x7FFFFFFF, 0x7F7F8000, 0x7F7F8001,
                         0x00008000, 0x00018000], np.uint32).view(np.float32)
        rand = np.random.default_rng(5).integers(0, 2 ** 32, 1 << 20, np.uint64)
        x = np.concatenate([near, specials, bits, rand.astype(np.uint32).view(np.float32)])
        return np.concatenate([x, -x])

    def assert_bits(self, got, want, nan, exp_mask, man_mask):
        """got == want where the input is not NaN; a NaN pattern where it is."""
        self.assertEqual(got.dtype, np.uint16)
        bad = np.flatnonzero((got != want) & ~nan)
        self.assertEqual(bad.size, 0, f"first mismatches at {bad[:5]}: got "
                         f"{[hex(v) for v in got[bad[:5]]]}, want {[hex(v) for v in want[bad[:5]]]}")
        g = got[nan]
        self.assertTrue(np.all(((g & exp_mask) == exp_mask) & ((g & man_mask) != 0)))

    def test_ties_by_hand(self):
        # 1 + 2^-11 is halfway between 1 (0x3C00, even) and its successor; 65520 between 65504
        # and inf (even); 2^-25 between 0 and the least subnormal; 3 * 2^-25 between 0x1 and 0x2.
        x = np.array([1 + 2.0 ** -11, 1 + 3 * 2.0 ** -11, 65520, 2.0 ** -25, 3 * 2.0 ** -25],
                     np.float32)
        want = [0x3C00, 0x3C02, 0x7C00, 0x0000, 0x0002]
        self.assertEqual(simdattn.cast(x, "float16").tolist(), want)
        with np.errstate(over="ignore"):
            self.assertEqual(x.astype(np.float16).view(np.uint16).tolist(), want)  # NumPy agrees
        # bf16: 1 + 2^-8 is halfway between 1 (0x3F80, even) and 0x3F81; 1 + 3 * 2^-8 -> 0x3F82.
        b = np.array([1 + 2.0 ** -8, 1 + 3 * 2.0 ** -8, -(1 + 2.0 ** -8)], np.float32)
        self.assertEqual(simdattn.cast(b, "bfloat16").tolist(), [0x3F80, 0x3F82, 0xBF80])

    def test_float16_matches_numpy(self):
        x = self.inputs()
        with np.errstate(over="ignore"):
            want = x.astype(np.float16).view(np.uint16)
        self.assert_bits(simdattn.cast(x, "float16"), want, np.isnan(x), 0x7C00, 0x03FF)

    def test_bfloat16_matches_rne_on_the_bits(self):
        x = self.inputs()
        u = x.view(np.uint32)
        top, rest = u >> 16, u & 0xFFFF
        up = (rest > 0x8000) | ((rest == 0x8000) & (top & 1 == 1))
        want = (top + up).astype(np.uint16)
        self.assert_bits(simdattn.cast(x, "bfloat16"), want, np.isnan(x), 0x7F80, 0x007F)

    def test_widening_every_pattern(self):
        h = np.arange(1 << 16, dtype=np.uint32).astype(np.uint16)
        f16 = simdattn.cast(h, "float32", src_dtype="float16")
        want16 = h.view(np.float16).astype(np.float32)
        nan = np.isnan(want16)
        self.assertTrue(np.array_equal(f16.view(np.uint32)[~nan], want16.view(np.uint32)[~nan]))
        self.assertTrue(np.all(np.isnan(f16[nan])))
        self.assertTrue(np.array_equal(simdattn.cast(h.view(np.float16), "float32"), f16,
                                       equal_nan=True))
        bf = simdattn.cast(h, "float32", src_dtype="bfloat16")
        self.assertTrue(np.array_equal(bf.view(np.uint32)[~np.isnan(bf)],
                                       (h.astype(np.uint32) << 16)[~np.isnan(bf)]))

    def test_half_to_half_rounds_once(self):
        h = np.arange(1 << 16, dtype=np.uint32).astype(np.uint16)
        wide = simdattn.cast(h, "float32", src_dtype="bfloat16")
        with np.errstate(over="ignore"):
            want = wide.astype(np.float16).view(np.uint16)
        self.assert_bits(simdattn.cast(h, "float16", src_dtype="bfloat16"), want, np.isnan(wide),
                         0x7C00, 0x03FF)
        same = simdattn.cast(h, "bfloat16", src_dtype="bfloat16")  # a copy, NaN bits included
        self.assertTrue(np.array_equal(same, h))
        self.assertEqual(simdattn.cast(np.zeros((2, 0), np.float32), "float16").shape, (2, 0))

    def test_errors(self):
        with self.assertRaises(ValueError):
            simdattn.cast(np.zeros(3, np.float32), "int8")
        with self.assertRaises(ValueError):
            simdattn.cast(np.zeros(3, np.uint16), "float32")
        with self.assertRaises(TypeError):
            simdattn.cast(np.zeros(3), "float16")
        a = np.zeros(8, np.float32)  # in place: the library refuses it
        status = simdattn._cast(8, a.ctypes.data, 0, a.ctypes.data, 1)
        self.assertEqual(simdattn.status_name(status), "SIMDATTN_ERR_BAD_ARGUMENT")
        self.assertIn("overlaps src", simdattn._last_error().decode())


class TestSoftmaxMatmul(unittest.TestCase):
    def setUp(self):
        self.rng = np.random.default_rng(99)

    def test_softmax(self):
        x = rand(self.rng, 7, 33, 19, scale=5)
        for axis in (-1, 0, 1):
            with self.subTest(axis=axis):
                y = simdattn.softmax(x, axis=axis)
                xd = x.astype(np.float64)
                e = np.exp(xd - xd.max(axis=axis, keepdims=True))
                ref = e / e.sum(axis=axis, keepdims=True)
                # exp and the division: a few u each; the sum: gamma_n relative.
                self.assertLessEqual(max_err(y, ref), gamma(x.shape[axis] + 4))
        row = np.array([[-np.inf] * 4, [0, 1, np.nan, 2]], np.float32)
        y = simdattn.softmax(row)
        self.assertTrue(np.all(y[0] == 0) and np.all(np.isnan(y[1])))
        wide = rand(self.rng, 5, 40)[:, 3:20]  # rows with a leading dimension of 40
        ref = np.exp(wide - wide.max(1, keepdims=True))
        self.assertLessEqual(max_err(simdattn.softmax(wide), ref / ref.sum(1, keepdims=True)),
                             gamma(21))
        self.assertEqual(simdattn.softmax(x.astype(np.float64)).dtype, np.float64)
        self.assertEqual(simdattn.softmax(np.zeros((3, 0), np.float32)).shape, (3, 0))

    def matmul_check(self, a, b):
        c = simdattn.matmul(a, b)
        ref = np.matmul(a.astype(np.float64), b.astype(np.float64))
        self.assertEqual(c.shape, ref.shape)
        k = a.shape[-1]
        # gamma_k * (|a| @ |b|) elementwise bound of a k-term dot product.
        bound = gamma(k) * np.matmul(np.abs(a).astype(np.float64), np.abs(b).astype(np.float64))
        self.assertTrue(np.all(np.abs(c - ref) <= bound + 1e-30))

    def test_matmul(self):
        r = self.rng
        self.matmul_check(rand(r, 37, 50), rand(r, 50, 29))
        self.matmul_check(rand(r, 50, 37).T, rand(r, 29, 50).T)            # transposed views
        self.matmul_check(rand(r, 4, 1, 6, 9), rand(r, 3, 9, 5))           # broadcast batch
        self.matmul_check(rand(r, 2, 3, 6, 9)[:, ::2], rand(r, 9, 5))      # strided batch
        self.matmul_check(rand(r, 3, 2, 6, 9).transpose(1, 0, 2, 3), rand(r, 9, 5))  # copy
        self.matmul_check(rand(r, 9), rand(r, 2, 9, 4))                    # 1-D operands
        self.matmul_check(rand(r, 3, 9), rand(r, 9))
        self.matmul_check(rand(r, 1, 9), rand(r, 9, 1))
        c = simdattn.matmul(np.ones((3, 0), np.float32), np.ones((0, 4), np.float32))
        self.assertTrue(c.shape == (3, 4) and np.all(c == 0))
        self.assertEqual(simdattn.matmul(np.ones((2, 3)), np.ones((3, 2))).dtype, np.float64)
        with self.assertRaises(simdattn.ShapeError):
            simdattn.matmul(rand(r, 3, 4), rand(r, 5, 2))
        with self.assertRaises(simdattn.ShapeError):
            simdattn.matmul(rand(r, 2, 3, 4), rand(r, 3, 4, 2))


# ---------------------------------------------------------------------------- MHSA


def torch_mha(e, h, bias, batch_first, seed):
    torch.manual_seed(seed)
    m = torch.nn.MultiheadAttention(e, h, bias=bias, batch_first=batch_first).eval()
    if bias:  # torch initialises the biases to 0: make them count
        with torch.no_grad():
            m.in_proj_bias.normal_()
            m.out_proj.bias.normal_()
    ours = simdattn.MultiheadSelfAttention(e, h, bias=bias, batch_first=batch_first)
    ours.load_state_dict({k: t.detach().numpy() for k, t in m.state_dict().items()})
    return m, ours


def causal_bool(seq):
    return np.triu(np.ones((seq, seq), bool), 1)  # True = not allowed (torch's MHA convention)


@needs_torch
class TestMhsa(unittest.TestCase):
    # y tolerance, relative to max|y_torch|: y is three chained float32 dot products of length
    # <= E = 512 (in_proj, q.k and p.v, out_proj) plus a softmax; each is within gamma_512 =
    # 3.1e-5 of its inputs' magnitude, so 1e-4 covers the chain for both implementations.
    # The averaged weights are probabilities (scale 1): the same 1e-4, absolute.
    TOL = 1e-4

    def compare(self, e, h, seq, batch, bias=True, batch_first=False, kpm=None, mask=None,
                causal=False, need_weights=False, seed=0):
        m, ours = torch_mha(e, h, bias, batch_first, seed)
        rng = np.random.default_rng(seed)
        x = rand(rng, *((batch, seq, e) if batch_first else (seq, batch, e)))
        torch_mask = mask
        if causal:  # torch 1.13's MHA has no is_causal: pass the causal mask explicitly
            c = causal_bool(seq)
            torch_mask = c if mask is None else (
                (mask | c) if mask.dtype == np.bool_ else np.where(c, -np.inf, mask))
        with torch.no_grad():
            xt = torch.from_numpy(x)
            yt, wt = m(xt, xt, xt, need_weights=need_weights,
                       key_padding_mask=None if kpm is None else torch.from_numpy(kpm),
                       attn_mask=None if torch_mask is None else torch.from_numpy(torch_mask))
        y, w = ours(x, key_padding_mask=kpm, attn_mask=mask, need_weights=need_weights,
                    is_causal=causal)
        yt = yt.numpy()
        self.assertEqual(y.shape, yt.shape)
        err = max_err(y, yt) / float(np.max(np.abs(yt)))
        self.assertLessEqual(err, self.TOL)
        if need_weights:
            self.assertLessEqual(max_err(w, wt.numpy()), self.TOL)
        else:
            self.assertIsNone(w)
        return err

    def test_reference_case_10x32x512_8_heads(self):
        err = self.compare(512, 8, 10, 32, need_weights=True)
        print(f"\n  MHSA (10, 32, 512), 8 heads: max |y - y_torch| / max |y_torch| = {err:.2e}")

    def test_random_shapes_and_options(self):
        rng = np.random.default_rng(2024)
        worst = 0.0
        for case in range(16):
            e = int(rng.choice([8, 64, 96, 512]))
            h = int(rng.choice([d for d in (1, 2, 3, 4, 8, 12, 16) if e % d == 0]))
            seq = int(rng.integers(1, 301))
            batch = int(rng.integers(1, 6))
            opts = dict(bias=bool(case % 3), batch_first=bool(case % 2),
                        causal=case % 4 == 1 or case % 7 == 3, need_weights=case % 5 < 2)
            if case % 3 == 0:
                kpm = rng.random((batch, seq)) < 0.3
                kpm[:, 0] = False  # key 0 stays: no fully masked query (torch: NaN)
                opts["kpm"] = kpm
            if case % 4 in (2, 3):
                bad = rng.random((seq, seq)) < 0.3
                bad[:, 0] = False
                opts["mask"] = bad if case % 4 == 2 else np.where(
                    bad, -np.inf, rng.standard_normal((seq, seq))).astype(np.float32)
            with self.subTest(e=e, h=h, seq=seq, batch=batch, **{
                    k: v for k, v in opts.items() if not isinstance(v, np.ndarray)}):
                worst = max(worst, self.compare(e, h, seq, batch, seed=case, **opts))
                print(f"\n    E={e} heads={h} seq={seq} batch={batch} "
                      f"{sorted(k for k, v in opts.items() if v is not False)}", end="")
        print(f"\n  MHSA random shapes: worst max |y - y_torch| / max |y_torch| = {worst:.2e}")

    def test_unbatched_and_float64(self):
        m, ours = torch_mha(64, 4, True, False, 5)
        x = np.random.default_rng(5).standard_normal((17, 64))
        kpm = np.zeros(17, bool)
        kpm[3:6] = True
        with torch.no_grad():
            yt, wt = m(*(torch.from_numpy(x.astype(np.float32)),) * 3,
                       key_padding_mask=torch.from_numpy(kpm))
        y, w = ours(x, key_padding_mask=kpm, need_weights=True)
        self.assertEqual((y.shape, w.shape, y.dtype), ((17, 64), (17, 17), np.float64))
        self.assertLessEqual(max_err(y, yt.numpy()) / float(yt.abs().max()), self.TOL)
        self.assertLessEqual(max_err(w, wt.numpy()), self.TOL)

    def test_fully_padded_batch_entry(self):
        # Every key of batch entry 1 is padding. Ours: attention 0 there, so y = out_proj_bias
        # and weights 0. torch.nn.MultiheadAttention gives NaN for those rows instead (softmax of
        # all -inf), so only the other entries are compared with torch.
        seq, batch, e = 6, 3, 16
        kpm = np.zeros((batch, seq), bool)
        kpm[1] = True
        m, ours = torch_mha(e, 2, True, False, 7)
        x = rand(np.random.default_rng(7), seq, batch, e)
        y, w = ours(x, key_padding_mask=kpm, need_weights=True)
        np.testing.assert_array_equal(y[:, 1], np.broadcast_to(ours.out_proj_bias, (seq, e)))
        self.assertTrue(np.all(w[1] == 0))
        with torch.no_grad():
            xt = torch.from_numpy(x)
            yt, wt = m(xt, xt, xt, key_padding_mask=torch.from_numpy(kpm))
        keep = [0, 2]
        yk = yt.numpy()[:, keep]
        self.assertLessEqual(max_err(y[:, keep], yk) / float(np.max(np.abs(yk))), self.TOL)
        self.assertLessEqual(max_err(w[keep], wt.numpy()[keep]), self.TOL)

    def test_thread_count_does_not_change_results(self):
        _, ours = torch_mha(96, 3, True, True, 11)
        x = rand(np.random.default_rng(11), 4, 50, 96)
        before = simdattn.get_num_threads()
        try:
            results = []
            for n in (1, 2, 3, 7, 16):  # the project's determinism thread counts
                simdattn.set_num_threads(n)
                self.assertEqual(simdattn.get_num_threads(), n)
                results.append(ours(x, need_weights=True, is_causal=True))
        finally:
            simdattn.set_num_threads(before)
        for y, w in results[1:]:
            self.assertTrue(np.array_equal(results[0][0], y))
            self.assertTrue(np.array_equal(results[0][1], w))


class TestMhsaErrors(unittest.TestCase):
    def setUp(self):
        self.mha = simdattn.MultiheadSelfAttention(8, 2, rng=np.random.default_rng(3))
        self.x = rand(np.random.default_rng(3), 4, 2, 8)

    def call_c(self, x, y, seq=4, batch=2, e=8, heads=2, weights=True, **options):
        """simdattn_mhsa directly (what the class cannot express); returns the status."""
        m = self.mha
        w = simdattn._MhaWeights(simdattn._ptr(m.in_proj_weight), simdattn._ptr(m.in_proj_bias),
                                 simdattn._ptr(m.out_proj_weight),
                                 simdattn._ptr(m.out_proj_bias))
        opts = simdattn._init_options(simdattn._MhaOptions, simdattn._mha_options_init)
        for key, value in options.items():
            setattr(opts, key, value)
        return simdattn._mhsa(x, y, seq, batch, e, heads,
                              ctypes.byref(w) if weights else None, ctypes.byref(opts))

    def ptr(self, a, offset=0):
        return ctypes.cast(a.ctypes.data + 4 * offset, simdattn._fptr)

    def expect(self, status, name, *message_parts, **call):
        y = np.full((4, 2, 8), 7.0, np.float32)
        x = self.x.copy()
        got = self.call_c(self.ptr(self.x), call.pop("y", self.ptr(y)), **call)
        self.assertEqual((got, simdattn.status_name(got)), (status, name))
        text = simdattn._last_error().decode()
        for part in message_parts:
            self.assertIn(part, text)
        # Nothing written on error.
        self.assertTrue(np.all(y == 7.0) and np.array_equal(x, self.x))

    def test_c_api_validation(self):
        self.expect(simdattn.ERR_BAD_SHAPE, "SIMDATTN_ERR_BAD_SHAPE", "embed_dim (8)",
                    "num_heads (3)", heads=3)
        self.expect(simdattn.ERR_BAD_SHAPE, "SIMDATTN_ERR_BAD_SHAPE", "num_heads", heads=0)
        self.expect(simdattn.ERR_BAD_SHAPE, "SIMDATTN_ERR_BAD_SHAPE", "seq_len", seq=-1)
        self.expect(simdattn.ERR_BAD_SHAPE, "SIMDATTN_ERR_BAD_SHAPE", "overflows",
                    seq=1 << 40, batch=1 << 20)
        self.expect(simdattn.ERR_NULL_POINTER, "SIMDATTN_ERR_NULL_POINTER", "weights",
                    weights=False)
        self.expect(simdattn.ERR_NULL_POINTER, "SIMDATTN_ERR_NULL_POINTER", "y", y=None)
        self.expect(simdattn.ERR_BAD_ARGUMENT, "SIMDATTN_ERR_BAD_ARGUMENT", "batch_first",
                    batch_first=2)
        self.expect(simdattn.ERR_BAD_ARGUMENT, "SIMDATTN_ERR_BAD_ARGUMENT", "causal", causal=3)
        self.expect(simdattn.ERR_BAD_ARGUMENT, "SIMDATTN_ERR_BAD_ARGUMENT", "struct_size",
                    struct_size=8)
        self.expect(simdattn.ERR_BAD_ARGUMENT, "SIMDATTN_ERR_BAD_ARGUMENT", "y overlaps x",
                    y=self.ptr(self.x, 1))
        self.expect(simdattn.ERR_BAD_ARGUMENT, "SIMDATTN_ERR_BAD_ARGUMENT", "in_proj_weight",
                    y=self.ptr(self.mha.in_proj_weight))
        weights_out = np.zeros(2 * 4 * 4, np.float32)
        self.expect(simdattn.ERR_BAD_ARGUMENT, "SIMDATTN_ERR_BAD_ARGUMENT", "attn_weights",
                    attn_weights=self.ptr(self.x, 3))
        # Empty problems are no-ops even without weights.
        self.assertEqual(self.call_c(None, None, seq=0, weights=False), simdattn.OK)
        self.assertEqual(simdattn._last_error().decode(), "")
        # In place (y == x) gives the same bits as a separate y.
        y = np.empty_like(self.x)
        self.assertEqual(self.call_c(self.ptr(self.x), self.ptr(y),
                                     attn_weights=self.ptr(weights_out)), simdattn.OK)
        x = self.x.copy()
        self.assertEqual(self.call_c(self.ptr(x), self.ptr(x),
                                     attn_weights=self.ptr(weights_out)), simdattn.OK)
        np.testing.assert_array_equal(x, y)
        self.assertLessEqual(max_err(y, self.mha(self.x)[0]), 1e-5)

    def test_python_side_errors(self):
        with self.assertRaises(simdattn.ShapeError) as cm:
            simdattn.MultiheadSelfAttention(10, 3)
        self.assertIn("10", str(cm.exception))
        with self.assertRaises(simdattn.ShapeError):
            self.mha(rand(np.random.default_rng(0), 4, 2, 9))
        with self.assertRaises(simdattn.ShapeError):
            self.mha(self.x, attn_mask=np.zeros((2, 4, 4), np.float32))
        with self.assertRaises(simdattn.ShapeError):
            self.mha(self.x, key_padding_mask=np.zeros((4, 2), bool))
        with self.assertRaises(KeyError):
            self.mha.load_state_dict({"in_proj_weight": self.mha.in_proj_weight})
        with self.assertRaises(simdattn.ShapeError):
            state = self.mha.state_dict()
            state["out_proj.bias"] = np.zeros(9, np.float32)
            self.mha.load_state_dict(state)
        with self.assertRaises(simdattn.Error) as cm:
            simdattn.set_num_threads(-1)
        self.assertEqual(cm.exception.status_name, "SIMDATTN_ERR_BAD_ARGUMENT")
        self.assertNotIsInstance(cm.exception, ValueError)

    def test_library_info(self):
        self.assertRegex(simdattn.version(), r"^\d+\.\d+\.\d+$")
        self.assertTrue(simdattn.simd_target())
        self.assertEqual(simdattn.status_name(2), "SIMDATTN_ERR_BAD_SHAPE")
        self.assertEqual(simdattn.status_name(42), "SIMDATTN_UNKNOWN_STATUS")


if __name__ == "__main__":
    unittest.main(verbosity=2)
