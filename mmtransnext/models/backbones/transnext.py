"""TransNeXt backbone (CVPR 2024, "Robust Foveal Visual Perception for Vision Transformers")."""
import difflib
import inspect
from collections import OrderedDict
from typing import Dict, Sequence, Tuple, Union

import torch
import torch.nn as nn
import torch.utils.checkpoint as cp
from mmcv.cnn.bricks import DropPath
from mmengine.model import BaseModule
from mmengine.model.weight_init import trunc_normal_
from mmengine.registry import MODELS

from ...ops import check_attn_impl
from ...ops.backend import in_traced_graph
from ...utils.checkpoint import load_backbone_weights
from ..layers import AggregatedAttention, ConvolutionalGLU, FullAttention, OverlapPatchEmbed, StageGeometry
from ..layers.position_bias import geometry_in
from ..layers.position_bias import stage_geometry as build_stage_geometry  # the method of that name caches it


class TransNeXtBlock(nn.Module):
    """Pre-norm block: attention and a convolutional GLU, each with a residual.

    Stages with ``sr_ratio == 1`` use full attention, the others aggregated attention.

    Args:
        embed_dims (int): embedding dimension.
        num_heads (int): attention heads.
        mlp_ratio (float): nominal hidden width of the GLU relative to ``embed_dims``.
        sr_ratio (int): pooling ratio of the aggregated attention; 1 selects full attention.
        window_size (int): local window of the aggregated attention. Defaults to 3.
        qkv_bias (bool): bias in the query / key / value projections. Defaults to True.
        drop (float): dropout rate after projections. Defaults to 0.
        attn_drop (float): dropout rate on attention weights. Defaults to 0.
        drop_path (float): stochastic depth rate. Defaults to 0.
        attn_impl (str): see :class:`AggregatedAttention`. Defaults to 'auto'.
    """

    def __init__(self,
                 embed_dims,
                 num_heads,
                 mlp_ratio,
                 sr_ratio,
                 window_size=3,
                 qkv_bias=True,
                 drop=0.,
                 attn_drop=0.,
                 drop_path=0.,
                 attn_impl='auto'):
        super().__init__()
        self.norm1 = nn.LayerNorm(embed_dims, eps=1e-6)
        if sr_ratio == 1:
            self.attn = FullAttention(embed_dims,
                                      num_heads,
                                      qkv_bias=qkv_bias,
                                      attn_drop=attn_drop,
                                      proj_drop=drop,
                                      attn_impl=attn_impl)
        else:
            self.attn = AggregatedAttention(embed_dims,
                                            num_heads,
                                            window_size=window_size,
                                            sr_ratio=sr_ratio,
                                            qkv_bias=qkv_bias,
                                            attn_drop=attn_drop,
                                            proj_drop=drop,
                                            attn_impl=attn_impl)
        self.norm2 = nn.LayerNorm(embed_dims, eps=1e-6)
        self.mlp = ConvolutionalGLU(embed_dims, int(embed_dims * mlp_ratio), drop=drop, attn_impl=attn_impl)
        self.drop_path = DropPath(drop_path) if drop_path > 0. else nn.Identity()

    def forward(self, x: torch.Tensor, geometry: StageGeometry) -> torch.Tensor:
        x = x + self.drop_path(self.attn(self.norm1(x), geometry))
        return x + self.drop_path(self.mlp(self.norm2(x), *geometry.size))


def _unknown_arguments_message(unknown) -> str:
    valid = [name for name in inspect.signature(TransNeXt.__init__).parameters if name not in ('self', 'unknown')]
    named = []
    for name in unknown:
        close = difflib.get_close_matches(name, valid, n=1)
        named.append(repr(name) + (f' (did you mean {close[0]!r}?)' if close else ''))
    return f'TransNeXt got unknown argument(s) {", ".join(named)}; its arguments are: {", ".join(valid)}'


_STANDARD = dict(mlp_ratios=[8, 8, 4, 4], sr_ratios=[8, 4, 2, 1], window_size=3)


@MODELS.register_module()
class TransNeXt(BaseModule):
    """TransNeXt backbone for detection, segmentation and classification.

    A four-stage pyramid: overlapping patch embedding, then blocks of aggregated attention (local
    window + pooled keys; full attention where ``sr_ratio`` is 1) and convolutional GLU. State-dict
    keys match the official release, so its checkpoints load without conversion.

    Args:
        arch (str | dict): a name in :attr:`arch_zoo` ('micro', 'tiny', 'small', 'base',
            'micro_aaaa') or a dict with ``embed_dims``, ``depths``, ``num_heads`` and optionally
            ``mlp_ratios`` (default [8, 8, 4, 4]), ``sr_ratios`` (default [8, 4, 2, 1]) and
            ``window_size`` (an odd int or one per stage, default 3; ignored where ``sr_ratio`` is 1,
            which selects full attention). Defaults to 'tiny'.
        img_size (int | tuple[int]): image size the continuous position bias is generated for; in
            interpolation mode it is resized bilinearly from this grid to each input's. Set it near
            the inputs' typical size (800 for COCO, 512 for ADE20K crops). Defaults to 224.
        pretrain_size (int | tuple[int]): image size of ImageNet pretraining; relative coordinates
            are normalised by it. Defaults to 224.
        is_extrapolation (bool): generate the position bias at each input's real feature size
            (normalised by ``pretrain_size``) instead of resizing it from ``img_size``.
            Defaults to False.
        in_channels (int): input image channels. Defaults to 3.
        patch_size (int): stride of the first patch embedding; only 4 (the released models' stage strides
            4, 8, 16, 32 assume it). Defaults to 4.
        out_indices (Sequence[int]): stages whose (normalised) outputs are returned.
            Defaults to (0, 1, 2, 3).
        qkv_bias (bool): bias in the query / key / value projections. Defaults to True.
        drop_rate (float): dropout rate after projections. Defaults to 0.
        attn_drop_rate (float): dropout rate on attention weights. Defaults to 0.
        drop_path_rate (float): stochastic depth rate, increasing linearly over blocks.
            Defaults to 0.
        with_cp (bool): activation checkpointing per block, trading compute for memory.
            Defaults to False.
        attn_impl (str): attention implementation: 'auto' (per op, device and mode the fastest
            measured backend that can run, ``mmtransnext.ops.backend``), 'ext' (the C++/CUDA op
            ``mmtransnext._ext``; an error naming how to build it if it is missing), 'triton' (the
            Triton kernels: on a GPU, or on the CPU under ``TRITON_INTERPRET=1``) or 'pytorch'
            (the reference, exactly the official arithmetic). Defaults to 'auto'.
        frozen_stages (int): -1 freezes nothing, 0 the first patch embedding (the stem), k >= 1
            stages 1..k entirely (patch embedding, blocks, norm). Defaults to -1.
        init_cfg (dict, optional): ``dict(type='Pretrained', checkpoint=PATH)`` loads a released
            ImageNet classifier (``head.*`` ignored), a downstream checkpoint (``backbone.*``) or a
            bare backbone state dict. Any other missing or unexpected key is an error naming it,
            unless ``strict=False`` is added, which loads what matches and warns. Defaults to None.
    """
    # yapf: disable
    arch_zoo = {
        **dict.fromkeys(['m', 'micro'], dict(embed_dims=[48, 96, 192, 384], depths=[2, 2, 15, 2],
                                             num_heads=[2, 4, 8, 16], **_STANDARD)),
        **dict.fromkeys(['t', 'tiny'], dict(embed_dims=[72, 144, 288, 576], depths=[2, 2, 15, 2],
                                            num_heads=[3, 6, 12, 24], **_STANDARD)),
        **dict.fromkeys(['s', 'small'], dict(embed_dims=[72, 144, 288, 576], depths=[5, 5, 22, 5],
                                             num_heads=[3, 6, 12, 24], **_STANDARD)),
        **dict.fromkeys(['b', 'base'], dict(embed_dims=[96, 192, 384, 768], depths=[5, 5, 23, 5],
                                            num_heads=[4, 8, 16, 32], **_STANDARD)),
        # A-A-A-A: aggregated attention in all four stages (256 px ImageNet model)
        'micro_aaaa': dict(embed_dims=[48, 96, 192, 384], depths=[2, 2, 15, 2], num_heads=[2, 4, 8, 16],
                           mlp_ratios=[8, 8, 4, 4], sr_ratios=[16, 8, 4, 2], window_size=3),
    }
    # yapf: enable
    # the named variants, without their one-letter aliases
    variants = tuple(name for name in arch_zoo if len(name) > 1)
    # Parameters the paper trains without weight decay (besides norms and biases).
    no_weight_decay_keywords = ('query_embedding', 'relative_pos_bias_local', 'cpb', 'temperature')
    # Sizes whose per-size geometry (masks, scales, bias coordinates) is kept; bounds memory
    # under multi-scale training while keeping every size of a typical pipeline warm.
    geometry_cache_size = 32

    def __init__(self,
                 arch: Union[str, Dict] = 'tiny',
                 img_size: Union[int, Tuple[int, int]] = 224,
                 pretrain_size: Union[int, Tuple[int, int]] = 224,
                 is_extrapolation: bool = False,
                 in_channels: int = 3,
                 patch_size: int = 4,
                 out_indices: Sequence[int] = (0, 1, 2, 3),
                 qkv_bias: bool = True,
                 drop_rate: float = 0.,
                 attn_drop_rate: float = 0.,
                 drop_path_rate: float = 0.,
                 with_cp: bool = False,
                 attn_impl: str = 'auto',
                 frozen_stages: int = -1,
                 init_cfg=None,
                 **unknown):
        if unknown:  # a misspelt config key: say which, and what the valid ones are
            raise TypeError(_unknown_arguments_message(unknown))
        super().__init__(init_cfg=init_cfg)
        if patch_size != 4:  # the stage strides 4, 8, 16, 32 (position bias, pooling grids) assume it, as upstream
            raise ValueError(f'patch_size must be 4 (stage strides 4, 8, 16, 32, as in the released models), got '
                             f'{patch_size}')
        self.arch_settings = self._resolve_arch(arch)
        s = self.arch_settings
        self.embed_dims = s['embed_dims']
        self.depths = s['depths']
        self.sr_ratios = s['sr_ratios']
        self.num_stages = len(self.depths)
        self.window_sizes = s['window_sizes']
        self.in_channels = in_channels
        self.img_size = _pair(img_size)
        self.pretrain_size = _pair(pretrain_size)
        self.is_extrapolation = is_extrapolation
        self.out_indices = self._check_indices(out_indices)
        if not -1 <= frozen_stages <= self.num_stages:
            raise ValueError(f'frozen_stages must be in [-1, {self.num_stages}], got {frozen_stages}')
        self.frozen_stages = frozen_stages
        self.with_cp = with_cp
        check_attn_impl(attn_impl)  # an unknown name, or a backend that is not installed, fails here saying why
        self.attn_impl = attn_impl

        dpr = torch.linspace(0, drop_path_rate, sum(self.depths)).tolist()
        for i in range(self.num_stages):
            first = i == 0
            patch_embed = OverlapPatchEmbed(patch_size=patch_size * 2 - 1 if first else 3,
                                            stride=patch_size if first else 2,
                                            in_channels=in_channels if first else self.embed_dims[i - 1],
                                            embed_dims=self.embed_dims[i])
            start = sum(self.depths[:i])
            blocks = nn.ModuleList([
                TransNeXtBlock(self.embed_dims[i],
                               s['num_heads'][i],
                               s['mlp_ratios'][i],
                               self.sr_ratios[i],
                               window_size=self.window_sizes[i],
                               qkv_bias=qkv_bias,
                               drop=drop_rate,
                               attn_drop=attn_drop_rate,
                               drop_path=dpr[start + j],
                               attn_impl=attn_impl) for j in range(self.depths[i])
            ])
            setattr(self, f'patch_embed{i + 1}', patch_embed)
            setattr(self, f'block{i + 1}', blocks)
            setattr(self, f'norm{i + 1}', nn.LayerNorm(self.embed_dims[i], eps=1e-6))
        self._geometry_cache: 'OrderedDict[tuple, StageGeometry]' = OrderedDict()
        self.min_input_size = self._smallest_side()
        self._check_bias_grids()
        self._freeze_stages()

    # ----------------------------------------------------------------------------- construction
    @classmethod
    def _resolve_arch(cls, arch) -> dict:
        if isinstance(arch, str):
            key = arch.lower().replace('-', '_')
            if key not in cls.arch_zoo:
                names = sorted(k for k in cls.arch_zoo if len(k) > 1)
                raise KeyError(f'unknown TransNeXt arch {arch!r}; choose one of {names} or pass a dict '
                               'with embed_dims, depths and num_heads')
            return cls._with_window_sizes(dict(cls.arch_zoo[key]))
        if not isinstance(arch, dict):
            raise TypeError(f'arch must be a str or a dict, got {type(arch).__name__}')
        required = {'embed_dims', 'depths', 'num_heads'}
        missing = required - set(arch)
        if missing:
            raise KeyError(f'custom arch dict lacks {sorted(missing)}; it needs {sorted(required)}')
        settings = dict(_STANDARD, **arch)
        unknown = set(settings) - required - set(_STANDARD)
        if unknown:
            raise KeyError(f'custom arch dict has unknown keys {sorted(unknown)}')
        num_stages = len(settings['depths'])
        for key in ('embed_dims', 'num_heads', 'mlp_ratios', 'sr_ratios'):
            if len(settings[key]) != num_stages:
                raise ValueError(f'arch {key} has {len(settings[key])} entries but depths has {num_stages}')
        for dim, heads in zip(settings['embed_dims'], settings['num_heads']):
            if dim % heads:
                raise ValueError(f'arch embed_dims {dim} is not divisible by num_heads {heads}')
        return cls._with_window_sizes(settings)

    @staticmethod
    def _with_window_sizes(settings: dict) -> dict:
        """Per-stage local windows: None on full-attention stages (``sr_ratio`` 1)."""
        window = settings['window_size']
        windows = list(window) if isinstance(window, (list, tuple)) else [window] * len(settings['sr_ratios'])
        if len(windows) != len(settings['sr_ratios']):
            raise ValueError(f'arch window_size {window} does not give one window per stage')
        settings['window_sizes'] = []
        for stage, (w, r) in enumerate(zip(windows, settings['sr_ratios'])):
            if r > 1 and not (isinstance(w, int) and w % 2 == 1):
                raise ValueError(f'stage {stage} uses aggregated attention (sr_ratio {r}) and needs an odd '
                                 f'int window_size, got {w}')
            settings['window_sizes'].append(None if r == 1 else w)
        return settings

    def stage_sides(self, side: int):
        """Feature-map side of each stage for an input side (the patch embeddings' arithmetic)."""
        sides = []
        for i in range(self.num_stages):
            proj = getattr(self, f'patch_embed{i + 1}').proj
            k, stride, pad = proj.kernel_size[0], proj.stride[0], proj.padding[0]
            side = (side + 2 * pad - k) // stride + 1
            sides.append(side)
        return sides

    def _smallest_side(self) -> int:
        """Smallest input side whose every stage has at least one pooled key."""
        side = 1
        while any(s // r < 1 for s, r in zip(self.stage_sides(side), self.sr_ratios)):
            side += 1
        return side

    def _check_bias_grids(self):
        for i, r in enumerate(self.sr_ratios):
            scale = 2**(i + 2)
            if min(self.pretrain_size) // scale < 2:
                raise ValueError(f'pretrain_size {self.pretrain_size} gives stage {i + 1} a grid under 2 x 2; '
                                 'use the resolution the weights were pretrained at (224 for the released ones)')
            if not self.is_extrapolation and min(self.img_size) // scale // r < 1:
                raise ValueError(f'img_size {self.img_size} is too small for stage {i + 1} (stride {scale}, '
                                 f'sr_ratio {r}); use at least {scale * r} or is_extrapolation=True')

    def _check_indices(self, out_indices) -> Tuple[int, ...]:
        if isinstance(out_indices, int):
            out_indices = [out_indices]
        indices = tuple(i + self.num_stages if i < 0 else i for i in out_indices)
        bad = [i for i in indices if not 0 <= i < self.num_stages]
        if bad or not indices:
            raise ValueError(f'out_indices {tuple(out_indices)} must name stages in [0, {self.num_stages - 1}]')
        return indices

    def _freeze_stages(self):
        frozen = []
        if self.frozen_stages >= 0:
            frozen.append(self.patch_embed1)
        for i in range(1, self.frozen_stages + 1):
            frozen += [getattr(self, f'{name}{i}') for name in ('patch_embed', 'block', 'norm')]
        for module in frozen:
            module.eval()
            for param in module.parameters():
                param.requires_grad = False

    def train(self, mode: bool = True):
        super().train(mode)
        self._freeze_stages()
        return self

    # ---------------------------------------------------------------------------- weights
    def init_weights(self):
        if isinstance(self.init_cfg, dict) and self.init_cfg.get('type') == 'Pretrained':
            load_backbone_weights(self,
                                  self.init_cfg['checkpoint'],
                                  strict=self.init_cfg.get('strict', True),
                                  map_location=self.init_cfg.get('map_location', 'cpu'))
            self._is_init = True
            return
        if self.init_cfg is not None:
            super().init_weights()
            return
        # the official initialisation
        for m in self.modules():
            if isinstance(m, nn.Linear):
                trunc_normal_(m.weight, std=.02)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Conv2d):
                fan_out = m.kernel_size[0] * m.kernel_size[1] * m.out_channels // m.groups
                nn.init.normal_(m.weight, 0, (2.0 / fan_out)**0.5)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.LayerNorm):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        self._is_init = True

    def no_decay_parameters(self, biases: bool = True):
        """Parameters the paper trains without weight decay: TransNeXt's special ones
        (``no_weight_decay_keywords``), the norms and, unless ``biases=False`` (the Mask R-CNN and
        UperNet recipes), the biases."""
        norms = {id(p) for m in self.modules() if isinstance(m, nn.LayerNorm) for p in m.parameters()}
        for name, param in self.named_parameters():
            special = any(k in name for k in self.no_weight_decay_keywords)
            if special or id(param) in norms or (biases and name.endswith('.bias')):
                yield param

    # ---------------------------------------------------------------------------- forward
    def stage_geometry(self, stage: int, size: Tuple[int, int], device, dtype=torch.float32) -> StageGeometry:
        """Masks, scales and bias coordinates of ``stage`` for a feature map of ``size`` (cached), their floating
        tensors in ``dtype`` (the parameters' type: float32 under autocast too).

        Where the forward is traced (``torch.compile``, ``torch.export``), the geometry is built inside the graph
        from the (possibly symbolic) size, past the cache: it is a function of the size alone."""
        if in_traced_graph():
            return self._build_stage_geometry(stage, size, device, dtype, traced=True)
        key = (stage, size, torch.device(device), dtype)
        geometry = self._geometry_cache.get(key)
        if geometry is None:
            geometry = self._build_stage_geometry(stage, size, device, dtype)
            self._geometry_cache[key] = geometry
            while len(self._geometry_cache) > self.geometry_cache_size:
                self._geometry_cache.popitem(last=False)
        else:
            self._geometry_cache.move_to_end(key)
        return geometry

    def _build_stage_geometry(self, stage, size, device, dtype, traced=False) -> StageGeometry:
        scale = 2**(stage + 2)
        pretrain_grid = (self.pretrain_size[0] // scale, self.pretrain_size[1] // scale)
        trained_grid = None if self.is_extrapolation else (self.img_size[0] // scale, self.img_size[1] // scale)
        # meta tensors (the memory count) have no values to build it from: built on the CPU, then moved
        build_on = 'cpu' if torch.device(device).type == 'meta' else device
        geometry = build_stage_geometry(size,
                                        self.sr_ratios[stage],
                                        self.window_sizes[stage],
                                        pretrain_grid,
                                        trained_grid,
                                        build_on,
                                        traced=traced)
        if dtype != torch.float32 or build_on != device:
            geometry = geometry_in(geometry, dtype, device)
        return geometry

    def _check_input(self, x: torch.Tensor):
        if x.dim() != 4 or x.shape[1] != self.in_channels:
            raise ValueError(f'TransNeXt expects images (B, {self.in_channels}, H, W), got shape '
                             f'{tuple(x.shape)}; convert grayscale / RGBA images to {self.in_channels} '
                             'channels (or set in_channels)')
        if x.shape[0] == 0:
            raise ValueError('TransNeXt got an empty batch (batch size 0)')
        # a value check: not inside a traced graph (torch.export / ONNX export), where it cannot branch, nor on meta
        # tensors (the memory count), which have no values
        if not in_traced_graph() and not x.is_meta and not torch.isfinite(x).all():
            raise ValueError('TransNeXt input contains NaN or inf values; check the image loading and the data '
                             'preprocessor (mean / std), or the previous iteration for a diverged loss')
        if min(x.shape[-2:]) < self.min_input_size:
            raise ValueError(f'input {tuple(x.shape[-2:])} is too small: this TransNeXt needs at least '
                             f'{self.min_input_size} x {self.min_input_size} pixels, so that every stage keeps '
                             'at least one pooled key (feature side // sr_ratio >= 1); resize or pad the image')

    def forward(self, x: torch.Tensor) -> Tuple[torch.Tensor, ...]:
        self._check_input(x)
        B = x.shape[0]
        outs = []
        for i in range(self.num_stages):
            x, size = getattr(self, f'patch_embed{i + 1}')(x)
            geometry = self.stage_geometry(i, size, x.device, getattr(self, f'norm{i + 1}').weight.dtype)
            for block in getattr(self, f'block{i + 1}'):
                if self.with_cp and x.requires_grad:
                    x = cp.checkpoint(block, x, geometry, use_reentrant=False)
                else:
                    x = block(x, geometry)
            x = getattr(self, f'norm{i + 1}')(x)
            x = x.reshape(B, *size, -1).permute(0, 3, 1, 2).contiguous()
            if i in self.out_indices:
                outs.append(x)
        return tuple(outs)


def _pair(value) -> Tuple[int, int]:
    if isinstance(value, int):
        return (value, value)
    value = tuple(value)
    if len(value) != 2:
        raise ValueError(f'expected an int or (H, W), got {value}')
    return value
