"""NumPy bindings for libsimdattn (ctypes; standard library + NumPy only).

The library is found through, in order: the environment variable SIMDATTN_LIBRARY (a path);
where `meson install` put this module, the installed library at the same place relative to it
(so also under a `meson install --destdir` staging root); build/src/libsimdattn.so of the checkout
this file lives in; then the system loader.

Every function computes in float32 (the library's only compute type). Inputs may be float32 or
float64; the result has the inputs' common dtype (float32 in -> float32 out, float64 in -> float64
out, computed in float32 either way). `cast` is the exception: it converts between float32,
bfloat16 and float16, the 16-bit types as uint16 arrays of their bits. Arrays are passed by strides where the library can express them
(last dimension contiguous, non-negative strides, broadcast leading dimensions as stride 0) and
copied otherwise.

Errors: every non-OK library status raises `Error` (a RuntimeError with `.status`,
`.status_name` and the library's message); SIMDATTN_ERR_BAD_SHAPE and shape mismatches found on
the Python side raise `ShapeError`, a subclass of both `Error` and `ValueError`.
"""

import ctypes
import ctypes.util
import math
import os

import numpy as np

__all__ = [
    "Error", "ShapeError", "scaled_dot_product_attention", "softmax", "matmul",
    "MultiheadSelfAttention", "attention_merge", "cast", "KVCache", "CacheFullError",
    "set_num_threads", "get_num_threads", "version", "simd_target", "status_name",
]

# simdattn_status values (include/simdattn.h).
OK, ERR_NULL_POINTER, ERR_BAD_SHAPE, ERR_BAD_ARGUMENT, ERR_OUT_OF_MEMORY, ERR_INTERNAL = range(6)
_CAUSAL = {"top_left": 1, "bottom_right": 2}  # SIMDATTN_CAUSAL_TOP_LEFT / _BOTTOM_RIGHT
_F32 = np.dtype(np.float32)
_ITEM = _F32.itemsize

# ---------------------------------------------------------------------------- loading the library


# Filled in by `meson install` (tools/python/meson.build configures this file): the directory the
# module is installed to and the installed library's path. In the source tree they stay "@...@".
_INSTALLED_MODULE_DIR = "@SIMDATTN_PYTHON_DIR@"
_INSTALLED_LIBRARY = "@SIMDATTN_LIBRARY_PATH@"


def _installed_library():
    """The installed library at its install-time position relative to this module, or None."""
    if _INSTALLED_LIBRARY.startswith("@"):
        return None
    here = os.path.dirname(os.path.abspath(__file__))
    path = os.path.join(here, os.path.relpath(_INSTALLED_LIBRARY, _INSTALLED_MODULE_DIR))
    return os.path.normpath(path) if os.path.exists(path) else None


def _load_library():
    env = os.environ.get("SIMDATTN_LIBRARY")
    if env:
        try:
            return ctypes.CDLL(env)
        except OSError as e:
            raise ImportError(f"simdattn: SIMDATTN_LIBRARY={env!r} cannot be loaded: {e}") from e
    installed = _installed_library()
    if installed:
        return ctypes.CDLL(installed)
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    local = os.path.join(root, "build", "src", "libsimdattn.so")
    if os.path.exists(local):
        return ctypes.CDLL(local)
    found = ctypes.util.find_library("simdattn")
    if found:
        return ctypes.CDLL(found)
    raise ImportError(
        "simdattn: libsimdattn not found: SIMDATTN_LIBRARY is unset, " + local +
        " does not exist and the system loader knows no 'simdattn'. Build it (tools/run-tests) "
        "or set SIMDATTN_LIBRARY to the .so path.")


_lib = _load_library()
_fptr = ctypes.POINTER(ctypes.c_float)
_i64 = ctypes.c_int64


class _Strides(ctypes.Structure):
    _fields_ = [("batch", _i64), ("head", _i64), ("seq", _i64)]


class _SdpaOptions(ctypes.Structure):
    _fields_ = [
        ("struct_size", ctypes.c_size_t), ("scale", ctypes.c_float), ("causal", ctypes.c_int32),
        ("kv_heads", _i64), ("mask", _fptr), ("mask_strides", _Strides),
        ("kv_lens", ctypes.POINTER(_i64)), ("q_strides", _Strides), ("k_strides", _Strides),
        ("v_strides", _Strides), ("out_strides", _Strides), ("lse", _fptr), ("weights", _fptr),
        # version 0.2
        ("window", ctypes.c_int32), ("softcap", ctypes.c_float), ("window_left", _i64),
        ("window_right", _i64), ("alibi_slopes", _fptr), ("sinks", _fptr),
    ]


class _KvCache(ctypes.Structure):
    _fields_ = [
        ("struct_size", ctypes.c_size_t), ("dtype", ctypes.c_int32), ("k", ctypes.c_void_p),
        ("v", ctypes.c_void_p), ("num_blocks", _i64), ("block_size", _i64), ("kv_heads", _i64),
        ("block_table", ctypes.POINTER(ctypes.c_int32)), ("max_blocks_per_seq", _i64),
        ("seq_lens", ctypes.POINTER(_i64)),
    ]


class _MhaWeights(ctypes.Structure):
    _fields_ = [("in_proj_weight", _fptr), ("in_proj_bias", _fptr),
                ("out_proj_weight", _fptr), ("out_proj_bias", _fptr)]


class _MhaOptions(ctypes.Structure):
    _fields_ = [
        ("struct_size", ctypes.c_size_t), ("batch_first", ctypes.c_int32),
        ("causal", ctypes.c_int32), ("key_padding_mask", ctypes.POINTER(ctypes.c_uint8)),
        ("attn_mask", _fptr), ("attn_weights", _fptr),
    ]


def _declare(name, restype, *argtypes):
    fn = getattr(_lib, name)
    fn.restype = restype
    fn.argtypes = list(argtypes)
    return fn


_status = ctypes.c_int  # a C enum is int-sized
_status_name = _declare("simdattn_status_name", ctypes.c_char_p, _status)
_last_error = _declare("simdattn_last_error", ctypes.c_char_p)
_version = _declare("simdattn_version", ctypes.c_char_p)
_simd_target = _declare("simdattn_simd_target", ctypes.c_char_p)
_set_num_threads = _declare("simdattn_set_num_threads", _status, ctypes.c_int32)
_get_num_threads = _declare("simdattn_get_num_threads", ctypes.c_int32)
_sgemm_batched = _declare(
    "simdattn_sgemm_batched", _status, ctypes.c_int32, ctypes.c_int32, _i64, _i64, _i64, _i64,
    ctypes.c_float, _fptr, _i64, _i64, _fptr, _i64, _i64, ctypes.c_float, _fptr, _i64, _i64)
_softmax = _declare("simdattn_softmax", _status, _i64, _i64, _fptr, _i64, _fptr, _i64)
_sdpa_options_init = _declare("simdattn_sdpa_options_init", None, ctypes.POINTER(_SdpaOptions))
_sdpa = _declare("simdattn_sdpa", _status, _fptr, _fptr, _fptr, _fptr, _i64, _i64, _i64, _i64,
                 _i64, _i64, ctypes.POINTER(_SdpaOptions))
_sdpa_varlen = _declare("simdattn_sdpa_varlen", _status, _fptr, _fptr, _fptr, _fptr, _i64, _i64,
                        ctypes.POINTER(_i64), ctypes.POINTER(_i64), _i64, _i64,
                        ctypes.POINTER(_SdpaOptions))
_attention_merge = _declare(
    "simdattn_attention_merge", _status, _i64, _i64, _i64, ctypes.POINTER(_fptr), _i64,
    ctypes.POINTER(_fptr), _fptr, _i64, _fptr)
_kv_cache_init = _declare("simdattn_kv_cache_init", None, ctypes.POINTER(_KvCache))
_sdpa_kvcache = _declare("simdattn_sdpa_kvcache", _status, _fptr, ctypes.POINTER(_KvCache), _fptr,
                         _i64, _i64, _i64, _i64, _i64, ctypes.POINTER(_SdpaOptions))
_mha_options_init = _declare("simdattn_mha_options_init", None, ctypes.POINTER(_MhaOptions))
_cast = _declare("simdattn_cast", _status, _i64, ctypes.c_void_p, ctypes.c_int32, ctypes.c_void_p,
                 ctypes.c_int32)
_mhsa = _declare("simdattn_mhsa", _status, _fptr, _fptr, _i64, _i64, _i64, _i64,
                 ctypes.POINTER(_MhaWeights), ctypes.POINTER(_MhaOptions))


def _init_options(cls, init):
    """A default options struct; checks that the ctypes layout matches the library's."""
    opts = cls()
    init(ctypes.byref(opts))
    if opts.struct_size != ctypes.sizeof(cls):
        raise ImportError(f"simdattn: {cls.__name__} is {ctypes.sizeof(cls)} bytes here but "
                          f"{opts.struct_size} in the library: binding and library disagree")
    return opts


_init_options(_SdpaOptions, _sdpa_options_init)
_init_options(_MhaOptions, _mha_options_init)
_init_options(_KvCache, _kv_cache_init)

# ---------------------------------------------------------------------------- errors


def status_name(status):
    """The library's name for a status code, e.g. 'SIMDATTN_ERR_BAD_SHAPE'."""
    return _status_name(int(status)).decode()


class Error(RuntimeError):
    """A failed library call: .status (int), .status_name and .message (the library's text)."""

    def __init__(self, status, message):
        self.status = int(status)
        self.status_name = status_name(status)
        self.message = message
        super().__init__(f"{self.status_name}: {message}")


class ShapeError(Error, ValueError):
    """SIMDATTN_ERR_BAD_SHAPE, or shapes that do not fit together on the Python side."""

    def __init__(self, message, status=ERR_BAD_SHAPE):
        super().__init__(status, message)


def _check(status):
    if status == OK:
        return
    message = _last_error().decode()
    if status == ERR_BAD_SHAPE:
        raise ShapeError(message)
    raise Error(status, message)


# ---------------------------------------------------------------------------- library state


def set_num_threads(n):
    """Threads used inside each call; 0 = every CPU this process may run on."""
    _check(_set_num_threads(int(n)))


def get_num_threads():
    return int(_get_num_threads())


def version():
    return _version().decode()


def simd_target():
    """The Highway target chosen at run time, e.g. 'AVX2'."""
    return _simd_target().decode()

# ---------------------------------------------------------------------------- array helpers


def _ptr(a):
    return a.ctypes.data_as(_fptr) if a is not None else None


def _result_dtype(*arrays):
    """The common dtype of the inputs; only float32 and float64 are accepted."""
    dtype = np.result_type(*(np.asarray(a) for a in arrays))
    if dtype not in (np.float32, np.float64):
        raise TypeError(f"simdattn: expected float32 or float64 arrays, got {dtype}")
    return dtype


def _as_f32(a, name):
    a = np.asarray(a)
    if a.dtype not in (np.float32, np.float64):
        raise TypeError(f"simdattn: {name} must be float32 or float64, got {a.dtype}")
    return a.astype(np.float32, copy=False)


def _elem_strides(a):
    """Element strides of a float32 view, or None when some stride is negative or unaligned."""
    if any(s < 0 or s % _ITEM for s in a.strides):
        return None
    return [s // _ITEM for s in a.strides]


def _rows_contiguous(a):
    """a (float32) with a contiguous last dimension and non-negative element strides: a copy
    only where the view has neither."""
    s = _elem_strides(a)
    if s is None or (a.ndim and a.shape[-1] > 1 and s[-1] != 1):
        return np.ascontiguousarray(a)
    return a


def _collapse(lead, views, max_dims):
    """Merges the leading dimensions `lead` (shared by every view) into at most `max_dims`
    dimensions, right-aligned: returns (sizes, [strides per view]) in elements, or None when the
    views' strides do not allow it. Size-1 dimensions are dropped; neighbours merge when the
    outer stride is the inner stride times the inner size in every view."""
    strides = [_elem_strides(v) for v in views]
    if any(s is None for s in strides):
        return None
    merged = []  # [size, [stride per view]]
    for i, n in enumerate(lead):
        if n == 1:
            continue
        ss = [s[i] for s in strides]
        if merged and all(o == s * n for o, s in zip(merged[-1][1], ss)):
            merged[-1] = [merged[-1][0] * n, ss]
        else:
            merged.append([n, ss])
    if len(merged) > max_dims:
        return None
    merged = [[1, [0] * len(views)]] * (max_dims - len(merged)) + merged
    return [m[0] for m in merged], [[m[1][j] for m in merged] for j in range(len(views))]


def _broadcast_lead(shapes, names):
    try:
        return tuple(np.broadcast_shapes(*shapes))
    except ValueError:
        listed = ", ".join(f"{n} {s}" for n, s in zip(names, shapes))
        raise ShapeError(f"leading (batch) dimensions do not broadcast: {listed}") from None

# ---------------------------------------------------------------------------- merge


def attention_merge(outs, lses):
    """Exact merge of partial attention results over disjoint key sets
    (simdattn_attention_merge): outs, a sequence of n arrays [..., d_v] of the same shape, and
    lses, n arrays of that shape without the last dimension (the pieces' log-sum-exps).
    Returns (out, lse): lse = log(sum_i exp(lses[i])), out = sum_i exp(lses[i] - lse) outs[i].
    A piece whose lse is -inf adds nothing (its output is not read); a row with every piece -inf
    gives out 0 and lse -inf. Pieces are combined in order."""
    if len(outs) != len(lses) or len(outs) == 0:
        raise ShapeError(f"attention_merge: {len(outs)} outs and {len(lses)} lses (need n >= 1 "
                         "of each)")
    dtype = _result_dtype(*outs, *lses)
    shape = np.shape(outs[0])
    if len(shape) < 1 or any(np.shape(o) != shape for o in outs) or any(
            np.shape(l) != shape[:-1] for l in lses):
        raise ShapeError(f"attention_merge: outs must share one shape [..., d_v] and lses be "
                         f"that shape without d_v; got {[np.shape(o) for o in outs]} and "
                         f"{[np.shape(l) for l in lses]}")
    d_v = shape[-1]
    rows = int(np.prod(shape[:-1], dtype=np.int64))
    o32 = [np.ascontiguousarray(_as_f32(o, "outs[i]")).reshape(rows, d_v) for o in outs]
    l32 = [np.ascontiguousarray(_as_f32(l, "lses[i]")).reshape(rows) for l in lses]
    out = np.empty((rows, d_v), np.float32)
    lse = np.empty(rows, np.float32)
    out_ptrs = (_fptr * len(o32))(*[_ptr(o) for o in o32])
    lse_ptrs = (_fptr * len(l32))(*[_ptr(l) for l in l32])
    ld = max(1, d_v)
    _check(_attention_merge(len(o32), rows, d_v, out_ptrs, ld, lse_ptrs, _ptr(out), ld, _ptr(lse)))
    return out.reshape(shape).astype(dtype, copy=False), lse.reshape(shape[:-1]).astype(dtype,
                                                                                        copy=False)

# ---------------------------------------------------------------------------- casts

# SIMDATTN_DTYPE_* by name. bfloat16 and float16 values travel as uint16 arrays of their bits.
_DTYPES = {"float32": 0, "bfloat16": 1, "float16": 2}


def cast(x, dtype, src_dtype=None):
    """x converted to `dtype` ('float32', 'bfloat16' or 'float16') by simdattn_cast: to float32
    exactly, to the 16-bit types rounded once to nearest even (overflow -> +-inf; subnormals
    kept). Returns float32 for 'float32', else uint16 holding the bits (float16 bits view as
    np.float16 with .view). x is float32, float16, or uint16 bits of src_dtype ('bfloat16' or
    'float16', required for uint16); the result has x's shape and is a new array."""
    if dtype not in _DTYPES:
        raise ValueError(f"cast: dtype must be one of {sorted(_DTYPES)}, got {dtype!r}")
    x = np.asarray(x)
    kinds = {np.dtype(np.float32): "float32", np.dtype(np.float16): "float16"}
    if x.dtype == np.uint16:
        if src_dtype not in ("bfloat16", "float16"):
            raise ValueError("cast: a uint16 x holds bfloat16 or float16 bits: pass "
                             f"src_dtype='bfloat16' or 'float16' (got {src_dtype!r})")
    elif x.dtype in kinds:
        if src_dtype not in (None, kinds[x.dtype]):
            raise ValueError(f"cast: x is {x.dtype} but src_dtype is {src_dtype!r}")
        src_dtype = kinds[x.dtype]
    else:
        raise TypeError(f"cast: x must be float32, float16 or uint16 (16-bit bits), got {x.dtype}")
    src = np.ascontiguousarray(x).view(np.float32 if src_dtype == "float32" else np.uint16)
    out = np.empty(x.shape, np.float32 if dtype == "float32" else np.uint16)
    _check(_cast(src.size, src.ctypes.data, _DTYPES[src_dtype], out.ctypes.data, _DTYPES[dtype]))
    return out

# ---------------------------------------------------------------------------- softmax, matmul


def softmax(x, axis=-1):
    """exp(x - max) / sum(exp(x - max)) along `axis` (simdattn_softmax): a row of all -inf gives
    zeros, a row with NaN or +inf gives NaN."""
    dtype = _result_dtype(x)
    moved = np.moveaxis(_as_f32(x, "x"), axis, -1)
    if moved.size == 0:
        return np.zeros(np.shape(x), dtype)
    cols = moved.shape[-1]
    rows2d = _rows_contiguous(moved).reshape(-1, cols)  # a view when the rows are evenly spaced
    ld = _elem_strides(rows2d)[0] if rows2d.shape[0] > 1 else cols
    if ld < cols:  # e.g. a stride-0 broadcast view
        rows2d, ld = np.ascontiguousarray(rows2d), cols
    y = np.empty((rows2d.shape[0], cols), np.float32)
    _check(_softmax(rows2d.shape[0], cols, _ptr(rows2d), ld, _ptr(y), cols))
    return np.moveaxis(y.reshape(moved.shape), -1, axis).astype(dtype, copy=False)


def _gemm_operand(a):
    """(a, trans, ld) for a matrix stack [..., rows, cols]: row-major (trans 0), column-major
    (trans 1, e.g. a transposed view), else a row-major copy."""
    rows, cols = a.shape[-2:]
    s = _elem_strides(a)
    if s is not None:
        sr, sc = s[-2], s[-1]
        if cols == 1:
            sc = 1  # the stride of a size-1 dimension is never used
        if rows == 1:
            sr = max(1, cols) if sc == 1 else 1
        if sc == 1 and sr >= max(1, cols):
            return a, 0, sr
        if sr == 1 and sc >= max(1, rows):
            return a, 1, sc
    return np.ascontiguousarray(a), 0, max(1, cols)


def matmul(a, b):
    """a @ b with NumPy's matmul semantics (1-D operands promoted, leading dimensions broadcast),
    via simdattn_sgemm_batched; broadcast operands are passed with stride 0."""
    dtype = _result_dtype(a, b)
    a, b = _as_f32(a, "a"), _as_f32(b, "b")
    if a.ndim == 0 or b.ndim == 0:
        raise ShapeError("matmul: operands must have at least 1 dimension")
    a2 = a[np.newaxis, :] if a.ndim == 1 else a
    b2 = b[:, np.newaxis] if b.ndim == 1 else b
    (m, k), (k2, n) = a2.shape[-2:], b2.shape[-2:]
    if k != k2:
        raise ShapeError(f"matmul: inner dimensions differ: a {a.shape}, b {b.shape}")
    lead = _broadcast_lead([a2.shape[:-2], b2.shape[:-2]], ["a", "b"])
    c = np.zeros(lead + (m, n), np.float32)
    if c.size:
        _batched_gemm(a2, b2, c, lead)
    if a.ndim == 1:
        c = c[..., 0, :]
    if b.ndim == 1:
        c = c[..., 0]
    return c.astype(dtype, copy=False)


def _batched_gemm(a, b, c, lead):
    (m, k), n = a.shape[-2:], b.shape[-1]
    (a, ta, lda), (b, tb, ldb) = _gemm_operand(a), _gemm_operand(b)
    av, bv = np.broadcast_to(a, lead + a.shape[-2:]), np.broadcast_to(b, lead + b.shape[-2:])
    plan = _collapse(lead, [av, bv, c], 1)
    if plan is None:  # leading strides that no single batch stride describes: copy
        (av, ta, lda), (bv, tb, ldb) = (_gemm_operand(np.ascontiguousarray(t)) for t in (av, bv))
        plan = _collapse(lead, [av, bv, c], 1)
    (batch,), ((sa,), (sb,), (sc,)) = plan
    _check(_sgemm_batched(ta, tb, batch, m, n, k, 1.0, _ptr(av), lda, sa, _ptr(bv), ldb, sb, 0.0,
                          _ptr(c), n, sc))

# ---------------------------------------------------------------------------- attention


def _additive_mask(mask, true_means_attend, name):
    """A float32 additive mask: boolean masks become 0 / -inf (True = may attend when
    true_means_attend, else True = masked); float masks are used as they are."""
    mask = np.asarray(mask)
    if mask.dtype == np.bool_:
        allowed = mask if true_means_attend else ~mask
        return np.where(allowed, np.float32(0), np.float32(-np.inf))
    return _as_f32(mask, name)


def _sdpa_mask(attn_mask, lq, lkv):
    """The mask as float32 [..., 1 or lq, lkv] with a contiguous last dimension."""
    if attn_mask is None:
        return None
    mask = _additive_mask(attn_mask, True, "attn_mask")
    mask = mask.reshape((1,) * max(0, 2 - mask.ndim) + mask.shape)
    if mask.shape[-2] not in (1, lq) or mask.shape[-1] not in (1, lkv):
        raise ShapeError(f"attn_mask {mask.shape} does not broadcast to (..., {lq}, {lkv})")
    if mask.shape[-1] != lkv:  # broadcast over keys: the library wants a contiguous key row
        mask = np.broadcast_to(mask, mask.shape[:-1] + (lkv,))
    return _rows_contiguous(mask)


def scaled_dot_product_attention(q, k, v, attn_mask=None, is_causal=False, scale=None,
                                 causal_alignment="top_left", return_lse=False, window=None,
                                 softcap=0.0, alibi_slopes=None, sinks=None):
    """softmax(q k^T * scale + mask) v over the last two dimensions, like
    torch.nn.functional.scaled_dot_product_attention.

    q (..., Lq, d_k), k (..., Lkv, d_k), v (..., Lkv, d_v); leading dimensions (any number,
    including none) broadcast with each other and with attn_mask's. attn_mask: boolean (True =
    may attend) or additive float, broadcastable to (..., Lq, Lkv). is_causal may be combined
    with attn_mask; causal_alignment 'top_left' (key j visible to query i iff j <= i, torch's
    is_causal) or 'bottom_right' (j <= i + Lkv - Lq). scale: None = 1/sqrt(d_k); else > 0.
    A query whose keys are all masked gives 0 (torch gives NaN) and lse -inf.
    Returns out (..., Lq, d_v), or (out, lse) with lse (..., Lq) = log sum exp of the scores.
    d_k == 0 with a non-empty output raises ShapeError (the default scale is undefined).

    Variants (include/simdattn.h's exact semantics; d_i, query i's key position, is i with
    is_causal and causal_alignment 'top_left', else i + Lkv - Lq):
    window=(left, right): key j visible only if d_i - left <= j <= d_i + right (ints >= 0;
    e.g. Mistral's 4096 window is (4095, 0) with is_causal). softcap > 0: each score s (after
    the scale) becomes softcap * tanh(s / softcap) (Gemma 2). alibi_slopes: per query head,
    broadcastable to the leading dimensions (shape (H,) for (..., H, L, d) inputs): s -=
    slope * |j - d_i| (finite slopes). sinks: per query head likewise: a logit (finite or -inf)
    that joins the softmax normaliser and has no value (gpt-oss). Invalid values raise Error
    (ERR_BAD_ARGUMENT) with the library's message."""
    dtype = _result_dtype(q, k, v)
    q, k, v = (_as_f32(t, n) for t, n in ((q, "q"), (k, "k"), (v, "v")))
    for name, t in (("q", q), ("k", k), ("v", v)):
        if t.ndim < 2:
            raise ShapeError(f"{name} must have at least 2 dimensions (..., seq, feature), "
                             f"got shape {t.shape}")
    (lq, dk), (lkv, dv) = q.shape[-2:], v.shape[-2:]
    if k.shape[-1] != dk:
        raise ShapeError(f"q and k feature sizes differ: q {q.shape}, k {k.shape}")
    if k.shape[-2] != lkv:
        raise ShapeError(f"k and v sequence lengths differ: k {k.shape}, v {v.shape}")
    variants = _SdpaVariants(window, softcap, causal_alignment, scale)
    mask = _sdpa_mask(attn_mask, lq, lkv)
    operands = [q, k, v] + ([mask] if mask is not None else [])
    lead = _broadcast_lead([t.shape[:-2] for t in operands], ["q", "k", "v", "attn_mask"])
    variants.per_head = _per_head_views(lead, alibi_slopes=alibi_slopes, sinks=sinks)
    out = np.zeros(lead + (lq, dv), np.float32)
    lse = np.full(lead + (lq,), -np.inf, np.float32)
    if lse.size and (out.size or return_lse):
        _sdpa_call([_rows_contiguous(t) for t in operands], lead, out, lse if return_lse else None,
                   _CAUSAL[causal_alignment] if is_causal else 0, variants)
    out = out.astype(dtype, copy=False)
    return (out, lse.astype(dtype, copy=False)) if return_lse else out


class _SdpaVariants:
    """The scale and 0.2 options of one call: window (None or (left, right)), softcap, and the
    per-head arrays {name: lead + (1, 1) float32 view} (alibi_slopes, sinks); checks
    causal_alignment and scale on the way, as every attention entry point takes them."""

    def __init__(self, window, softcap, causal_alignment="top_left", scale=None):
        if causal_alignment not in _CAUSAL:
            raise ValueError(f"causal_alignment must be 'top_left' or 'bottom_right', "
                             f"got {causal_alignment!r}")
        if scale is not None and not scale > 0:
            raise Error(ERR_BAD_ARGUMENT, f"scale must be > 0 (got {scale}); None = 1/sqrt(d_k)")
        if window is not None:
            if len(window) != 2 or not all(isinstance(w, (int, np.integer)) for w in window):
                raise ValueError(f"window must be None or (left, right) integers, got {window!r}")
            if not all(-2**63 <= int(w) < 2**63 for w in window):
                raise Error(ERR_BAD_ARGUMENT, f"window sides must fit int64, got {window!r}")
        self.window = None if window is None else (int(window[0]), int(window[1]))
        self.softcap = float(softcap)
        self.scale = scale
        self.per_head = {}

    def flat_per_head(self, heads, alibi_slopes, sinks):
        """For the entry points that take one [heads] array per option (varlen, KV cache):
        alibi_slopes and sinks broadcast to (heads,) and contiguous, as {name: array}."""
        per_head = _per_head_views((heads,), alibi_slopes=alibi_slopes, sinks=sinks)
        return {n: np.ascontiguousarray(a.reshape(heads)) for n, a in per_head.items()}

    def options(self, causal, heads_views):
        """A default _SdpaOptions with the scale, causal (SIMDATTN_CAUSAL_*), the window, the
        softcap and the per-head arrays {name: contiguous [heads] view} set."""
        opts = _init_options(_SdpaOptions, _sdpa_options_init)
        opts.scale = 0.0 if self.scale is None else float(self.scale)
        opts.causal = causal
        if self.window is not None:
            opts.window = 1
            opts.window_left, opts.window_right = self.window
        opts.softcap = self.softcap
        for name, view in heads_views.items():
            setattr(opts, name, _ptr(view))
        return opts


def _per_head_views(lead, **arrays):
    """Per-query-head arrays broadcast over the leading dimensions, as lead + (1, 1) views (so
    they collapse with q, k, v); None entries are left out."""
    views = {}
    for name, a in arrays.items():
        if a is None:
            continue
        a = _as_f32(a, name)
        try:
            views[name] = np.broadcast_to(a, lead)[..., None, None]
        except ValueError:
            raise ShapeError(f"{name} {a.shape} does not broadcast to the leading dimensions "
                             f"{lead} (one value per query head)") from None
    return views


def _per_head_ok(sizes, strides):
    """The library reads a per-head array as [heads] contiguous, the same for every batch."""
    return all((sizes[0] == 1 or s[0] == 0) and (sizes[1] == 1 or s[1] == 1) for s in strides)


def _sdpa_views(operands, lead, per_head=()):
    """Broadcast views of q, k, v (and the mask) over `lead`, with the leading dimensions
    collapsed to (batch, heads): ((batch, heads), views, [(batch, head) strides per view]).
    per_head: lead + (1, 1) views that must collapse to a [heads] array (else all are copied)."""
    views = [np.broadcast_to(t, lead + t.shape[-2:]) for t in operands] + list(per_head)
    plan = _collapse(lead, views, 2)
    n = len(per_head)
    if plan is None or not _per_head_ok(plan[0], plan[1][len(views) - n:]):
        # no (batch, heads) strides describe the layout: copy
        views = [np.ascontiguousarray(t) for t in views]
        plan = _collapse(lead, views, 2)
    sizes, strides = plan
    return sizes, views, strides


def _tensor_strides(view, lead_strides):
    """simdattn_strides for a [batch, heads, seq, feature] view (a size-1 seq dimension gets a
    non-zero stride: it is never used, and all-zero strides mean 'contiguous' to the library)."""
    seq = _elem_strides(view)[-2] if view.shape[-2] > 1 else view.shape[-1]
    return _Strides(lead_strides[0], lead_strides[1], seq)


def _sdpa_call(operands, lead, out, lse, causal, variants):
    names = list(variants.per_head)
    (batch, heads), views, strides = _sdpa_views(
        operands, lead, [variants.per_head[n] for n in names])
    heads_views = dict(zip(names, views[len(operands):]))
    views, strides = views[:len(operands)], strides[:len(operands)]
    tensors = [_tensor_strides(v, s) for v, s in zip(views, strides)]
    for i in range(3):  # a stride-0 broadcast in every dimension: copy (all zero = contiguous)
        if (tensors[i].batch, tensors[i].head, tensors[i].seq) == (0, 0, 0):
            views[i] = np.ascontiguousarray(views[i])
            tensors[i] = _Strides(0, 0, 0)
    lq, dv = out.shape[-2:]
    opts = variants.options(causal, heads_views)
    opts.q_strides, opts.k_strides, opts.v_strides = tensors[:3]
    opts.out_strides = _Strides(heads * lq * dv, lq * dv, dv)
    if len(views) == 4:
        opts.mask = _ptr(views[3])
        mask_rows = views[3].shape[-2]  # 1 when the mask broadcasts over queries
        opts.mask_strides = _Strides(strides[3][0], strides[3][1],
                                     _elem_strides(views[3])[-2] if mask_rows > 1 else 0)
    opts.lse = _ptr(lse)
    q, k, v = views[:3]
    _check(_sdpa(_ptr(q), _ptr(k), _ptr(v), _ptr(out), batch, heads, lq, k.shape[-2],
                 q.shape[-1], v.shape[-1], ctypes.byref(opts)))


def _token_major(t, name, heads_axis_name):
    """A [tokens, heads, d] float32 array the library can read: rows of d contiguous, token and
    head strides non-negative (a copy otherwise); returns (array, simdattn_strides)."""
    t = _as_f32(t, name)
    if t.ndim != 3:
        raise ShapeError(f"{name} must be [tokens, {heads_axis_name}, d], got shape {t.shape}")
    s = _elem_strides(t)
    if s is None or (t.shape[2] > 1 and s[2] != 1):
        t = np.ascontiguousarray(t)
        s = _elem_strides(t)
    # A size-1 dimension's stride is never used: give it a nonzero value (all zero = packed).
    seq = s[0] if t.shape[0] > 1 else t.shape[1] * t.shape[2]
    head = s[1] if t.shape[1] > 1 else t.shape[2]
    return t, _Strides(0, head, max(seq, 1))


def varlen_attention(q, k, v, cu_seqlens_q, cu_seqlens_kv, scale=None, is_causal=False,
                     causal_alignment="bottom_right", return_lse=False, window=None, softcap=0.0,
                     alibi_slopes=None, sinks=None):
    """Attention over a ragged batch in flash-attn's varlen (packed, token-major) layout, through
    simdattn_sdpa_varlen: q (total_q, heads, d_k), k (total_kv, kv_heads, d_k), v (total_kv,
    kv_heads, d_v); cu_seqlens_q / cu_seqlens_kv (batch + 1) integer offsets starting at 0.
    Sequence b is q rows cu_seqlens_q[b]:cu_seqlens_q[b+1] against k/v rows
    cu_seqlens_kv[b]:cu_seqlens_kv[b+1], independently, with the semantics and options of
    scaled_dot_product_attention (causal_alignment defaults to 'bottom_right': the queries are
    the last positions of their sequence, flash-attn's convention). alibi_slopes and sinks:
    one value per query head. Returns out (total_q, heads, d_v), or (out, lse) with lse
    (total_q, heads)."""
    dtype = _result_dtype(q, k, v)
    q, qs = _token_major(q, "q", "heads")
    k, ks = _token_major(k, "k", "kv_heads")
    v, vs = _token_major(v, "v", "kv_heads")
    cu_q = np.ascontiguousarray(cu_seqlens_q, dtype=np.int64)
    cu_kv = np.ascontiguousarray(cu_seqlens_kv, dtype=np.int64)
    if cu_q.ndim != 1 or cu_kv.shape != cu_q.shape or cu_q.size < 1:
        raise ShapeError(f"cu_seqlens_q {cu_q.shape} and cu_seqlens_kv {cu_kv.shape} must both "
                         f"be (batch + 1,)")
    heads, dk, kv_heads, dv = q.shape[1], q.shape[2], k.shape[1], v.shape[2]
    if k.shape[2] != dk or v.shape[:2] != k.shape[:2]:
        raise ShapeError(f"q {q.shape}, k {k.shape}, v {v.shape}: k must be (total_kv, "
                         f"kv_heads, {dk}) and v (total_kv, kv_heads, d_v)")
    if cu_q[-1] != q.shape[0] or cu_kv[-1] != k.shape[0]:
        raise ShapeError(f"cu_seqlens_q[-1] = {cu_q[-1]} and cu_seqlens_kv[-1] = {cu_kv[-1]} must "
                         f"be the token counts of q ({q.shape[0]}) and k ({k.shape[0]})")
    variants = _SdpaVariants(window, softcap, causal_alignment, scale)
    heads_views = variants.flat_per_head(heads, alibi_slopes, sinks)
    out = np.zeros((q.shape[0], heads, dv), np.float32)
    lse = np.full((q.shape[0], heads), -np.inf, np.float32)
    opts = variants.options(_CAUSAL[causal_alignment] if is_causal else 0, heads_views)
    opts.kv_heads = kv_heads
    opts.q_strides, opts.k_strides, opts.v_strides = qs, ks, vs
    opts.out_strides = _Strides(0, dv, heads * dv) if dv else _Strides(0, 0, 0)
    opts.lse = _ptr(lse) if return_lse else None
    i64p = ctypes.POINTER(_i64)
    _check(_sdpa_varlen(_ptr(q), _ptr(k), _ptr(v), _ptr(out), cu_q.size - 1, heads,
                        cu_q.ctypes.data_as(i64p), cu_kv.ctypes.data_as(i64p), dk, dv,
                        ctypes.byref(opts)))
    out = out.astype(dtype, copy=False)
    return (out, lse.astype(dtype, copy=False)) if return_lse else out


# ---------------------------------------------------------------------------- KV cache

class CacheFullError(Error):
    """KVCache.append needs more blocks than are free (status SIMDATTN_ERR_OUT_OF_MEMORY: the
    cache is the memory that ran out). Nothing was appended."""

    def __init__(self, message):
        super().__init__(ERR_OUT_OF_MEMORY, message)


class KVCache:
    """A paged KV cache (vLLM's PagedAttention layout) for simdattn_sdpa_kvcache, with its blocks
    managed here: a free-block list and, per sequence (any hashable id), its block list and
    length.

    k: [num_blocks, block_size, kv_heads, d_k] and v: [num_blocks, block_size, kv_heads, d_v]
    NumPy arrays of the cache's dtype ('float32', 'bfloat16' or 'float16'; the 16-bit types
    stored as uint16 bit patterns), zero-initialised. Key j of a sequence lies in row
    j % block_size of its block j // block_size. Blocks are taken from the free list in
    increasing index order at first and returned to it by free(); which physical block a
    sequence gets is not part of the contract (blocks(seq) says).
    Errors: dtype unknown -> Error (SIMDATTN_ERR_BAD_ARGUMENT); num_blocks < 0, block_size < 1,
    kv_heads < 1, d_k < 1, d_v < 0, num_blocks above 2^31 (the block table is int32) ->
    ShapeError."""

    def __init__(self, num_blocks, block_size, kv_heads, d_k, d_v, dtype="bfloat16"):
        if dtype not in _DTYPES:
            raise Error(ERR_BAD_ARGUMENT, f"KVCache: dtype must be one of {sorted(_DTYPES)}, "
                        f"got {dtype!r}")
        sizes = dict(num_blocks=num_blocks, block_size=block_size, kv_heads=kv_heads, d_k=d_k,
                     d_v=d_v)
        minimum = dict(num_blocks=0, block_size=1, kv_heads=1, d_k=1, d_v=0)
        for name, n in sizes.items():
            if not isinstance(n, (int, np.integer)) or n < minimum[name]:
                raise ShapeError(f"KVCache: {name} must be an integer >= {minimum[name]}, "
                                 f"got {n!r}")
        if num_blocks > 2**31:
            raise ShapeError(f"KVCache: num_blocks {num_blocks} does not fit the int32 block "
                             "table")
        self.dtype = dtype
        self.num_blocks, self.block_size, self.kv_heads, self.d_k, self.d_v = (
            int(n) for n in sizes.values())
        storage = np.float32 if dtype == "float32" else np.uint16  # 16-bit types: their bits
        self.k = np.zeros((self.num_blocks, self.block_size, self.kv_heads, self.d_k), storage)
        self.v = np.zeros((self.num_blocks, self.block_size, self.kv_heads, self.d_v), storage)
        self._free = list(range(self.num_blocks - 1, -1, -1))  # a stack: pop() takes the lowest
        self._blocks = {}  # sequence id -> [physical block]
        self._lens = {}    # sequence id -> tokens

    @property
    def num_free_blocks(self):
        return len(self._free)

    def seq_len(self, seq):
        """Tokens appended to sequence seq; KeyError if it is unknown (never appended, or
        freed)."""
        return self._lens[self._known(seq)]

    def blocks(self, seq):
        """The physical blocks of sequence seq, in order (a copy); KeyError if unknown."""
        return list(self._blocks[self._known(seq)])

    def _known(self, seq):
        if seq not in self._lens:
            raise KeyError(f"KVCache: unknown sequence {seq!r}")
        return seq

    def append(self, seq, k, v):
        """Appends tokens to sequence seq (created by its first append, also of 0 tokens):
        k float32 [tokens, kv_heads, d_k], v float32 [tokens, kv_heads, d_v], converted to the
        cache's dtype by simdattn_cast (rounded once to nearest even, overflow to +-inf, NaN
        kept; see cast) into the rows after the sequence's last, taking blocks from the free
        list as needed.
        Errors (nothing appended, no block taken): k or v not float32 -> TypeError; shapes ->
        ShapeError; fewer free blocks than needed -> CacheFullError."""
        k, v = np.asarray(k), np.asarray(v)
        for name, a, d in (("k", k, self.d_k), ("v", v, self.d_v)):
            if a.dtype != np.float32:
                raise TypeError(f"KVCache.append: {name} must be float32, got {a.dtype}")
            if a.ndim != 3 or a.shape[1:] != (self.kv_heads, d) or a.shape[0] != k.shape[0]:
                raise ShapeError(f"KVCache.append: k must be [tokens, {self.kv_heads}, "
                                 f"{self.d_k}] and v [tokens, {self.kv_heads}, {self.d_v}], got "
                                 f"k {k.shape}, v {v.shape}")
        tokens, start = k.shape[0], self._lens.get(seq, 0)
        blocks = self._blocks.get(seq, [])
        need = max(0, -(-(start + tokens) // self.block_size) - len(blocks))
        if need > len(self._free):
            raise CacheFullError(f"KVCache.append: sequence {seq!r} needs {need} more blocks "
                                 f"for {tokens} tokens, {len(self._free)} of {self.num_blocks} "
                                 "are free")
        blocks = blocks + [self._free.pop() for _ in range(need)]
        self._blocks[seq], self._lens[seq] = blocks, start + tokens
        pos = np.arange(start, start + tokens)
        phys, rows = np.asarray(blocks, np.int64)[pos // self.block_size], pos % self.block_size
        self.k[phys, rows] = cast(k, self.dtype)
        self.v[phys, rows] = cast(v, self.dtype)

    def free(self, seq):
        """Forgets sequence seq and returns its blocks to the free list (the next appends reuse
        them first); KeyError if it is unknown."""
        self._free.extend(reversed(self._blocks.pop(self._known(seq))))
        del self._lens[seq]

    def attention(self, q, seq_ids, causal=True, scale=None, window=None, softcap=0.0,
                  alibi_slopes=None, sinks=None, return_lse=False):
        """Attention of q over the cached keys and values of the sequences seq_ids, through
        simdattn_sdpa_kvcache (the block table [batch, max blocks] and seq_lens are built here):
        q float32 or float64 [batch, heads, q_len, d_k] with batch = len(seq_ids) (an id may
        repeat), heads a multiple of kv_heads (query head h reads kv head
        h // (heads // kv_heads)). The q_len queries are the last q_len positions of each
        sequence: causal True or 'bottom_right' lets query i see keys j <= i + seq_len - q_len,
        'top_left' keys j <= i, False or None every key. scale, window, softcap, alibi_slopes
        and sinks as in scaled_dot_product_attention (d_i as for 'bottom_right' unless causal is
        'top_left'). Q and every sum stay float32 over the exactly widened cache values.
        Returns out [batch, heads, q_len, d_v] in q's dtype, or (out, lse) with lse
        [batch, heads, q_len] (-inf for a query that sees no key and no sink).
        Errors: an unknown sequence -> KeyError; shapes -> ShapeError; option values -> Error
        (SIMDATTN_ERR_BAD_ARGUMENT), as in scaled_dot_product_attention."""
        dtype = _result_dtype(q)
        q = np.ascontiguousarray(_as_f32(q, "q"))
        seq_ids = [self._known(s) for s in seq_ids]
        if q.ndim != 4 or q.shape[0] != len(seq_ids) or q.shape[3] != self.d_k:
            raise ShapeError(f"KVCache.attention: q must be [{len(seq_ids)} (one per sequence), "
                             f"heads, q_len, {self.d_k}], got {q.shape}")
        if causal in (False, None, True):
            causal = "bottom_right" if causal else None
        variants = _SdpaVariants(window, softcap, causal or "bottom_right", scale)
        batch, heads, q_len, _ = q.shape
        lens = np.array([self._lens[s] for s in seq_ids], np.int64)
        table = np.full((batch, max((len(self._blocks[s]) for s in seq_ids), default=0)), -1,
                        np.int32)  # -1 past a sequence's blocks: never read
        for b, s in enumerate(seq_ids):
            table[b, :len(self._blocks[s])] = self._blocks[s]
        heads_views = variants.flat_per_head(heads, alibi_slopes, sinks)
        out = np.zeros((batch, heads, q_len, self.d_v), np.float32)
        lse = np.full((batch, heads, q_len), -np.inf, np.float32)
        opts = variants.options(_CAUSAL[causal] if causal else 0, heads_views)
        opts.lse = _ptr(lse) if return_lse else None
        cache = _init_options(_KvCache, _kv_cache_init)
        cache.dtype = _DTYPES[self.dtype]
        cache.k, cache.v = self.k.ctypes.data, self.v.ctypes.data
        cache.num_blocks, cache.block_size, cache.kv_heads = (
            self.num_blocks, self.block_size, self.kv_heads)
        cache.block_table = table.ctypes.data_as(ctypes.POINTER(ctypes.c_int32))
        cache.max_blocks_per_seq = table.shape[1]
        cache.seq_lens = lens.ctypes.data_as(ctypes.POINTER(_i64))
        _check(_sdpa_kvcache(_ptr(q), ctypes.byref(cache), _ptr(out), batch, heads, q_len,
                             self.d_k, self.d_v, ctypes.byref(opts)))
        out = out.astype(dtype, copy=False)
        return (out, lse.astype(dtype, copy=False)) if return_lse else out


class MultiheadSelfAttention:
    """torch.nn.MultiheadAttention(embed_dim, num_heads, bias=bias, batch_first=batch_first)
    used as self-attention in eval mode (no dropout), over simdattn_mhsa.

    Parameters are NumPy float32 arrays named like torch's: in_proj_weight [3E, E],
    in_proj_bias [3E], out_proj_weight [E, E], out_proj_bias [E] (the biases are None when
    bias=False). Initialised like torch (xavier_uniform_ in_proj, Linear's default out_proj
    weight, zero biases); load_state_dict() takes torch's state dict converted to NumPy."""

    def __init__(self, embed_dim, num_heads, bias=True, batch_first=False, rng=None):
        if num_heads < 1 or embed_dim % num_heads:
            raise ShapeError(f"embed_dim ({embed_dim}) must be divisible by num_heads "
                             f"({num_heads} >= 1)")
        self.embed_dim, self.num_heads = int(embed_dim), int(num_heads)
        self.head_dim = self.embed_dim // self.num_heads
        self.batch_first = bool(batch_first)
        rng = np.random.default_rng() if rng is None else rng
        e = self.embed_dim
        xavier = math.sqrt(6.0 / (e + 3 * e))  # xavier_uniform_ on [3E, E]
        self.in_proj_weight = rng.uniform(-xavier, xavier, (3 * e, e)).astype(np.float32)
        # torch.nn.Linear's kaiming_uniform_(a=sqrt(5)) bound is 1/sqrt(fan_in).
        linear = 1.0 / math.sqrt(e) if e else 0.0
        self.out_proj_weight = rng.uniform(-linear, linear, (e, e)).astype(np.float32)
        self.in_proj_bias = np.zeros(3 * e, np.float32) if bias else None
        self.out_proj_bias = np.zeros(e, np.float32) if bias else None

    _KEYS = {"in_proj_weight": "in_proj_weight", "in_proj_bias": "in_proj_bias",
             "out_proj.weight": "out_proj_weight", "out_proj.bias": "out_proj_bias"}

    def state_dict(self):
        """torch's keys -> NumPy arrays (the biases only when the module has them)."""
        return {key: getattr(self, attr) for key, attr in self._KEYS.items()
                if getattr(self, attr) is not None}

    def load_state_dict(self, state):
        """Copies torch's state dict (values as NumPy arrays); keys must match exactly."""
        expected = set(self.state_dict())
        missing, unexpected = expected - set(state), set(state) - expected
        if missing or unexpected:
            raise KeyError(f"state dict keys differ: missing {sorted(missing)}, "
                           f"unexpected {sorted(unexpected)}")
        for key in expected:
            current = getattr(self, self._KEYS[key])
            value = np.ascontiguousarray(_as_f32(state[key], key))
            if value.shape != current.shape:
                raise ShapeError(f"{key} has shape {value.shape}, expected {current.shape}")
            setattr(self, self._KEYS[key], value.copy() if value is state[key] else value)

    def __call__(self, x, key_padding_mask=None, attn_mask=None, need_weights=False,
                 is_causal=False):
        """Returns (y, weights or None) like torch's forward(x, x, x, ...).

        x: [L, N, E] ([N, L, E] when batch_first) or unbatched [L, E]. key_padding_mask [N, L]
        ([L] unbatched): True = ignore that key (float: 0 or -inf). attn_mask [L, L]: boolean
        True = NOT allowed (torch's MHA convention), or additive float. is_causal adds the
        causal mask (key j visible to query i iff j <= i) to attn_mask. need_weights: weights
        averaged over heads, [N, L, L] ([L, L] unbatched). A query whose keys are all masked gives
        y = out_proj_bias and weights 0 (torch gives NaN)."""
        dtype = _result_dtype(x)
        x = np.asarray(x)
        unbatched = x.ndim == 2
        if x.ndim not in (2, 3) or x.shape[-1] != self.embed_dim:
            raise ShapeError(f"x must be [L, N, {self.embed_dim}], [N, L, {self.embed_dim}] or "
                             f"[L, {self.embed_dim}], got shape {x.shape}")
        x3 = np.ascontiguousarray(_as_f32(x, "x")).reshape(
            (x.shape[0], 1, self.embed_dim) if unbatched else x.shape)
        batch_first = self.batch_first and not unbatched
        seq, batch = (x3.shape[1], x3.shape[0]) if batch_first else x3.shape[:2]
        kpm = self._key_padding(key_padding_mask, batch, seq, unbatched)
        mask = self._attn_mask(attn_mask, seq)
        y = np.empty_like(x3)
        weights = np.zeros((batch, seq, seq), np.float32) if need_weights else None
        self._run(x3, y, seq, batch, batch_first, is_causal, kpm, mask, weights)
        y = y.reshape(x.shape).astype(dtype, copy=False)
        if weights is not None:
            weights = (weights[0] if unbatched else weights).astype(dtype, copy=False)
        return y, weights

    @staticmethod
    def _key_padding(kpm, batch, seq, unbatched):
        """uint8 [batch, seq], nonzero = padding; float masks must be 0 / -inf."""
        if kpm is None:
            return None
        kpm = np.asarray(kpm)
        want = (seq,) if unbatched else (batch, seq)
        if kpm.shape != want:
            raise ShapeError(f"key_padding_mask must have shape {want}, got {kpm.shape}")
        if kpm.dtype.kind == "f":
            if not np.all((kpm == 0) | (kpm == -np.inf)):
                raise ValueError("a float key_padding_mask must hold only 0 and -inf here "
                                 "(the C API takes a boolean mask)")
            kpm = kpm == -np.inf
        return np.ascontiguousarray(kpm != 0, dtype=np.uint8).reshape(batch, seq)

    @staticmethod
    def _attn_mask(attn_mask, seq):
        if attn_mask is None:
            return None
        mask = np.ascontiguousarray(_additive_mask(attn_mask, False, "attn_mask"))
        if mask.shape != (seq, seq):
            raise ShapeError(f"attn_mask must have shape {(seq, seq)} (per-head 3-D masks are "
                             f"not supported), got {mask.shape}")
        return mask

    def _run(self, x, y, seq, batch, batch_first, is_causal, kpm, mask, weights):
        w = _MhaWeights(_ptr(self.in_proj_weight), _ptr(self.in_proj_bias),
                        _ptr(self.out_proj_weight), _ptr(self.out_proj_bias))
        opts = _init_options(_MhaOptions, _mha_options_init)
        opts.batch_first = int(batch_first)
        opts.causal = _CAUSAL["top_left"] if is_causal else 0
        if kpm is not None:
            opts.key_padding_mask = kpm.ctypes.data_as(ctypes.POINTER(ctypes.c_uint8))
        opts.attn_mask = _ptr(mask)
        opts.attn_weights = _ptr(weights)
        _check(_mhsa(_ptr(x), _ptr(y), seq, batch, self.embed_dim, self.num_heads,
                     ctypes.byref(w), ctypes.byref(opts)))
