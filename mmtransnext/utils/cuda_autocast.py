"""CUDA autocast's type rules for tensors that are not on a GPU (the memory counter's meta tensors).

``torch.autocast('cuda')`` acts only on CUDA tensors, and autocast knows no meta device. :class:`CudaAutocast` applies
the same rules (``ATen/autocast_mode.h``, torch 2.14) at the level of torch's Python functions, above autograd as
autocast is, so that autograd keeps what it keeps under autocast:

* matrix products and convolutions run in the reduced type; the casts of parameters are cached for the region, as
  autocast caches them;
* ops that need range (normalisations, softmax, reductions, losses, ``exp`` / ``log``, resizing) run in float32;
  those that take a ``dtype`` get ``dtype=float32`` instead of a cast input, as autocast gives them;
* ops that mix types (``cat``, ``stack``, ``addcmul`` ...) take the widest one;
* everything else runs in the type it is given.

While active it also switches on CUDA autocast's flags (without a GPU these change nothing in torch), so that code
that asks ``torch.is_autocast_enabled('cuda')`` sees what it would see on a GPU.

Limits: a function written in Python that calls listed ops inside (``F.multi_head_attention_forward``) is seen as one
call and runs in the types it is given; ``F.normalize`` is spelled out as autocast would run it.
"""
from contextlib import contextmanager

import torch
import torch.utils.checkpoint
from torch.overrides import TorchFunctionMode
from torch.utils._pytree import tree_flatten, tree_map

from ..ops.backend import autocast_state, set_autocast_state

# ATen/autocast_mode.h: AT_FORALL_LOWER_PRECISION_FP (with the Python names of the same ops)
LOWER_PRECISION = frozenset({
    '_convolution', 'conv1d', 'conv2d', 'conv3d', 'conv_tbc', 'conv_transpose1d', 'conv_transpose2d',
    'conv_transpose3d', 'convolution', 'prelu', 'addmm', 'addmv', 'addr', 'matmul', '__matmul__', '__rmatmul__',
    'einsum', 'mm', 'mv', 'linalg_vecdot', 'vecdot', 'linear', 'addbmm', 'baddbmm', 'bmm', 'chain_matmul',
    'linalg_multi_dot', 'multi_dot', 'lstm_cell', 'gru_cell', 'rnn_tanh_cell', 'rnn_relu_cell',
    'scaled_dot_product_attention'
})
# AT_FORALL_FP32 (+ the Python spellings of its losses and of resizing)
FLOAT32 = frozenset({
    'acos', 'asin', 'cosh', 'erfinv', 'exp', 'expm1', 'log', 'log10', 'log2', 'log1p', 'reciprocal', 'rsqrt', 'sinh',
    'tan', 'pow', '__pow__', '__rpow__', 'softplus', 'layer_norm', 'rms_norm', 'group_norm', 'frobenius_norm',
    'nuclear_norm', 'cosine_similarity', 'poisson_nll_loss', 'cosine_embedding_loss', 'nll_loss', 'nll_loss2d',
    'hinge_embedding_loss', 'kl_div', 'l1_loss', 'smooth_l1_loss', 'huber_loss', 'mse_loss', 'margin_ranking_loss',
    'multilabel_margin_loss', 'soft_margin_loss', 'triplet_margin_loss', 'multi_margin_loss',
    'binary_cross_entropy_with_logits', 'cross_entropy', 'dist', 'pdist', 'cdist', 'renorm', 'logsumexp',
    'upsample_nearest1d', 'upsample_nearest2d', 'upsample_nearest3d', 'upsample_linear1d', 'upsample_bilinear2d',
    'upsample_trilinear3d', 'upsample_bicubic2d', 'upsample', 'upsample_nearest', 'upsample_bilinear'
})
# AT_FORALL_FP32_SET_OPT_DTYPE and the norms of AT_FORALL_DIFFERENT_REDISPATCH_SIGNATURE: float32 through ``dtype``
FLOAT32_DTYPE_ARG = frozenset(
    {'prod', 'softmax', 'log_softmax', 'cumprod', 'cumsum', 'linalg_vector_norm', 'vector_norm', 'sum', 'norm'})
# AT_FORALL_PROMOTE
PROMOTE = frozenset({
    'addcdiv', 'addcmul', 'atan2', 'bilinear', 'cross', 'dot', 'vdot', 'grid_sampler', 'grid_sample', 'index_put',
    'index_put_', 'tensordot', 'scatter_add', 'cat', 'concat', 'concatenate', 'stack'
})


def _floating(t) -> bool:
    return isinstance(t, torch.Tensor) and t.is_floating_point() and t.dtype != torch.float64


class CudaAutocast(TorchFunctionMode):
    """``torch.autocast('cuda', dtype)``'s rules on any device (see the module docstring)."""

    def __init__(self, dtype: torch.dtype = torch.bfloat16):
        super().__init__()
        if dtype not in (torch.float16, torch.bfloat16):
            raise ValueError(f'autocast runs in float16 or bfloat16, not {dtype}')
        self.dtype = dtype
        self._cache = {}  # parameter -> its reduced copy, for the region (autocast's cached casts)
        self._flags = None

    def __enter__(self):
        self._flags = autocast_state('cuda')
        set_autocast_state('cuda', True, self.dtype)
        self._checkpoint = torch.utils.checkpoint.checkpoint
        torch.utils.checkpoint.checkpoint = self._checkpointed
        return super().__enter__()

    def __exit__(self, *exc):
        set_autocast_state('cuda', *self._flags)
        torch.utils.checkpoint.checkpoint = self._checkpoint
        self._cache.clear()
        return super().__exit__(*exc)

    def _checkpointed(self, function, *args, **kwargs):
        """``torch.utils.checkpoint.checkpoint`` whose recomputation (in backward, where no mode of the forward is
        active) runs under these rules again, as torch's runs under the forward's autocast state."""

        def under_autocast(*inputs, **options):
            if any(mode is self for mode in torch.overrides._get_current_function_mode_stack()):
                return function(*inputs, **options)
            set_autocast_state('cuda', True, self.dtype)
            try:
                with self._active():  # recomputing
                    return function(*inputs, **options)
            finally:
                set_autocast_state('cuda', False, self.dtype)

        return self._checkpoint(under_autocast, *args, **kwargs)

    @contextmanager
    def _active(self):
        """The mode on torch's stack again (inside its own handler, or in backward), without entering the region."""
        TorchFunctionMode.__enter__(self)
        try:
            yield
        finally:
            TorchFunctionMode.__exit__(self, None, None, None)

    def backward_phase(self) -> None:
        """The forward is over, as when autocast's region is left before ``backward()``. Backward runs without torch
        function modes; what activation checkpointing recomputes there runs under these rules again (torch runs it
        under the forward's autocast state)."""
        self._cache.clear()
        set_autocast_state('cuda', False, self.dtype)

    def _to(self, t, dtype):
        if not _floating(t) or t.dtype == dtype:
            return t
        if dtype == self.dtype and t.is_leaf and t.requires_grad and torch.is_grad_enabled():
            cached = self._cache.get(t)
            if cached is None:
                cached = self._cache[t] = t.to(dtype)
            return cached
        return t.to(dtype)

    def _cast(self, args, kwargs, dtype):
        return tree_map(lambda t: self._to(t, dtype), (args, kwargs))

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        name = getattr(func, '__name__', '').split('.')[-1]
        if not autocast_state('cuda')[0] or not any(_floating(t) for t in _tensors((args, kwargs))):
            return func(*args, **kwargs)
        if name in LOWER_PRECISION:
            args, kwargs = self._cast(args, kwargs, self.dtype)
        elif name in FLOAT32_DTYPE_ARG and kwargs.get('dtype') is None and _reduced(args):
            kwargs = dict(kwargs, dtype=torch.float32)
        elif name in FLOAT32 or (name == 'interpolate' and kwargs.get('mode', _arg(args, 3, 'nearest')) != 'area'):
            args, kwargs = self._cast(args, kwargs, torch.float32)
        elif name in PROMOTE:
            widest = None
            for t in _tensors((args, kwargs)):
                if _floating(t):
                    widest = t.dtype if widest is None else torch.promote_types(widest, t.dtype)
            args, kwargs = self._cast(args, kwargs, widest)
        elif name == 'normalize':  # F.normalize's arithmetic, its norm in float32 as autocast runs it
            with self._active():
                return _normalize(*args, **kwargs)
        return func(*args, **kwargs)


def _tensors(tree):
    return [t for t in tree_flatten(tree)[0] if isinstance(t, torch.Tensor)]


def _reduced(args) -> bool:
    return bool(args) and isinstance(args[0], torch.Tensor) and args[0].dtype in (torch.float16, torch.bfloat16)


def _arg(args, index, default):
    return args[index] if len(args) > index else default


def _normalize(input, p=2.0, dim=1, eps=1e-12, out=None):
    denom = input.norm(p, dim, keepdim=True).clamp_min(eps).expand_as(input)
    return torch.div(input, denom, out=out)
