"""Will it fit on my GPU? The peak GPU memory of one training step of any mmdet / mmseg / mmpretrain config,
counted without a GPU.

    python tools/analysis/gpu_memory.py CONFIG [--batch N] [--size H W] [--attn-impl IMPL] [--amp bf16|fp16]
                                        [--with-cp] [--gpu-memory GIB] [--json] [--cfg-options ...]

The model is built as the config builds it (backbone, neck, heads, the optimizer from ``optim_wrapper``), moved to
meta tensors (shapes, no data), and one training step runs on them: forward with the losses, backward, the
optimizer's step. ``mmtransnext.utils.memory_count`` counts every storage alive, rounded as CUDA's caching allocator
rounds, so the peak is what ``torch.cuda.max_memory_allocated`` reports for that step on a GPU (within about 3%,
held against an H200 in tests/test_memory_count.py). TransNeXt's ops run their GPU backends' fake kernels, which
allocate what the GPU kernels allocate. ``--amp`` applies CUDA autocast's rules (``mmtransnext.utils.cuda_autocast``).

The batch is the config's ``train_dataloader.batch_size`` (per GPU) unless ``--batch``; the image size is the
largest its train pipeline makes (the last crop, else the largest resize scale), padded as its data preprocessor
pads, unless ``--size``. Detection batches carry ``--objects`` boxes and masks per image.

Without ``--attn-impl`` a TransNeXt config gets a table over the backends and ``with_cp``; with it, one step and what
its peak is made of. ``--gpu-memory GIB`` says whether the step fits in GIB and, if not, which settings make it fit.
``--json`` ends the output with one line of JSON (``peak_bytes`` and the rest).

What a meta tensor cannot run (ops whose output shape depends on values: sampling, matching) is replaced by its
largest case, and the output lists what was replaced; see ``mmtransnext/utils/memory_count.py``.
"""
import argparse
import copy
import json
import os.path as osp
import sys
import warnings
from contextlib import ExitStack, contextmanager
from typing import Callable, Dict, List, NamedTuple, Optional, Tuple

sys.path[:0] = [osp.dirname(osp.dirname(osp.abspath(__file__))), osp.dirname(osp.abspath(__file__))]
warnings.filterwarnings('ignore')

import torch  # noqa: E402

import mmtransnext  # noqa: E402,F401
from mmtransnext.ops.backend import ATTN_IMPLS, planning_for  # noqa: E402
from mmtransnext.utils.cuda_autocast import CudaAutocast  # noqa: E402
from mmtransnext.utils.memory_count import CATEGORIES, MemoryCounter  # noqa: E402

MiB, GiB = 2**20, 2**30
AMP = {'bf16': torch.bfloat16, 'fp16': torch.float16}
# the part of a GPU's memory a step may take: the rest goes to the CUDA context, cuBLAS / cuDNN workspaces and the
# caching allocator's fragmentation
USABLE = 0.9
CROPS = ('RandomCrop', 'RandomResizedCrop', 'CenterCrop', 'RandomSizeCrop', 'FixedShapeResize')
RESIZES = ('Resize', 'RandomResize', 'RandomChoiceResize', 'ResizeEdge', 'RandomResizedCrop')


class Setting(NamedTuple):
    attn_impl: Optional[str]  # None: the config's (or not a TransNeXt backbone)
    with_cp: bool
    amp: Optional[str]
    batch: int


class Plan(NamedTuple):
    setting: Setting
    size: Tuple[int, int]
    peak: int
    categories: Dict[str, int]
    module: str
    phase: str
    approximations: Dict[str, int]
    approximated: int  # bytes: the most of the replaced ops' results alive at once


# ----------------------------------------------------------------------------- the config


def read_config(path: str, cfg_options=None):
    from script_utils.model_input import read_config as read
    try:
        cfg = read(path, cfg_options)
    except SystemExit:
        raise
    except Exception as error:  # a syntax error, a missing base config, a bad --cfg-options
        sys.exit(f'{path} does not load as a config: {type(error).__name__}: {error}')
    scope = cfg.get('default_scope')
    if scope not in ('mmdet', 'mmseg', 'mmpretrain'):
        sys.exit(f'{path}: default_scope {scope!r} is not mmdet, mmseg or mmpretrain, so the planner cannot tell '
                 'which library builds the model')
    return cfg


def _transforms(pipeline):
    """The pipeline's transforms in order, those inside RandomChoice / RandomApply / RandomOrder included."""
    for transform in pipeline or []:
        yield transform
        for key in ('transforms', 'transform'):
            inner = transform.get(key)
            if isinstance(inner, dict):
                inner = [inner]
            for item in inner or []:
                yield from _transforms(item if isinstance(item, list) else [item])


def _dataset_pipeline(dataset) -> list:
    while dataset is not None and 'pipeline' not in dataset:
        dataset = dataset.get('dataset') or (dataset.get('datasets') or [None])[0]
    return [] if dataset is None else dataset['pipeline']


def _scales(transform) -> List[Tuple[int, int]]:
    """The (short, long) sides a resize can produce (its largest ratio applied)."""
    scales = transform.get('scale') or transform.get('scales') or transform.get('img_scale') or []
    if isinstance(scales, int):
        scales = [(scales, scales)]
    elif scales and isinstance(scales[0], int):
        scales = [tuple(scales)]
    ratio = max(transform.get('ratio_range') or (1., 1.))
    return [(int(min(s) * ratio), int(max(s) * ratio)) for s in scales]


def train_size(cfg) -> Tuple[int, int]:
    """The largest (H, W) the train pipeline makes, padded as the data preprocessor pads (landscape)."""
    size = None
    for transform in _transforms(_dataset_pipeline(cfg.train_dataloader.dataset)):
        kind = transform.get('type', '')
        if kind in CROPS and transform.get('crop_size'):
            crop = transform['crop_size']
            crop = (crop, crop) if isinstance(crop, int) else tuple(crop)
            size = crop if size is None else (min(size[0], crop[0]), min(size[1], crop[1]))
        elif kind in RESIZES:
            scales = _scales(transform)
            if scales:
                size = max(scales, key=lambda s: s[0] * s[1])
    if size is None:
        sys.exit('cannot tell the image size from the config\'s train pipeline: give --size H W')
    preprocessor = cfg.model.get('data_preprocessor') or {}
    if preprocessor.get('size'):  # mmseg pads every image to the crop size
        size = tuple(max(a, b) for a, b in zip(size, preprocessor['size']))
    divisor = preprocessor.get('pad_size_divisor') or 1
    return tuple(-(-side // divisor) * divisor for side in size)


def is_transnext(cfg) -> bool:
    backbone = cfg.model.get('backbone') or {}
    return backbone.get('type') in ('TransNeXt', 'mmtransnext.TransNeXt')


# ----------------------------------------------------------------------------- one step


def build(cfg, setting: Setting):
    """The model on meta tensors (built on the CPU: some constructors read values) and its optimizer."""
    from mmengine.logging import MMLogger
    from mmengine.optim import build_optim_wrapper
    from mmengine.registry import MODELS, init_default_scope
    init_default_scope(cfg.default_scope)
    MMLogger.get_current_instance().setLevel('WARNING')  # the optimizer constructor's per-parameter lines
    model_cfg = copy.deepcopy(cfg.model)  # some detectors (DINO) write into their config while they build
    backbone = model_cfg.get('backbone')
    if setting.attn_impl is not None:
        backbone['attn_impl'] = setting.attn_impl
    if setting.with_cp:
        backbone['with_cp'] = True
    try:
        model = MODELS.build(model_cfg)
    except Exception as error:
        sys.exit(f'the config\'s model does not build: {type(error).__name__}: {error}')
    model = model.to('meta')
    model.train()
    optim_wrapper = cfg.optim_wrapper.copy()
    if optim_wrapper.get('type') == 'AmpOptimWrapper':  # its autocast is --amp here; it refuses to build without a GPU
        optim_wrapper = dict(optim_wrapper, type='OptimWrapper')
        for key in ('loss_scale', 'dtype', 'use_fsdp'):
            optim_wrapper.pop(key, None)
    optimizer = build_optim_wrapper(model, optim_wrapper).optimizer
    return model, optimizer


def config_amp(cfg) -> Optional[str]:
    """The autocast type the config trains in: AmpOptimWrapper's (float16 unless it says bfloat16), else None."""
    optim_wrapper = cfg.get('optim_wrapper') or {}
    if optim_wrapper.get('type') != 'AmpOptimWrapper':
        return None
    return 'bf16' if str(optim_wrapper.get('dtype')) in ('bfloat16', 'torch.bfloat16') else 'fp16'


def synthetic_batch(cfg, model, batch: int, size: Tuple[int, int], objects: int):
    """Images (meta) and ground truth of the config's task (CPU tensors with values: moved to meta inside the
    count, they keep their values there, so that what depends on them, such as the number of classes present or
    of denoising queries, is exact). ``objects`` boxes / masks per image, or classes per segmentation map."""
    H, W = size
    inputs = torch.empty(batch, 3, H, W, device='meta')
    g = torch.Generator().manual_seed(0)
    scope = cfg.default_scope
    head = next(
        (getattr(model, name)
         for name in ('roi_head', 'bbox_head', 'decode_head', 'head') if getattr(model, name, None) is not None), None)
    classes = _num_classes(head) or 80
    samples = []
    for _ in range(batch):
        if scope == 'mmdet':
            import numpy as np
            from mmdet.structures import DetDataSample
            from mmdet.structures.mask import BitmapMasks
            from mmengine.structures import InstanceData
            sample = DetDataSample(metainfo=dict(
                img_shape=size, pad_shape=size, batch_input_shape=size, ori_shape=size, scale_factor=(1., 1.)))
            corner = torch.rand(objects, 2, generator=g) * torch.tensor([W * .8, H * .8])
            extent = 16 + torch.rand(objects, 2, generator=g) * torch.tensor([W * .2, H * .2])
            sample.gt_instances = InstanceData(bboxes=torch.cat([corner, corner + extent], 1),
                                               labels=torch.randint(0, classes, (objects, ), generator=g),
                                               masks=BitmapMasks(np.zeros((objects, H, W), np.uint8), H, W))
            sample.ignored_instances = InstanceData(bboxes=torch.empty(0, 4), labels=torch.empty(0, dtype=torch.long))
        elif scope == 'mmseg':
            from mmengine.structures import PixelData
            from mmseg.structures import SegDataSample
            sample = SegDataSample(metainfo=dict(img_shape=size, pad_shape=size, ori_shape=size))
            blocks = torch.randint(0, classes, (1, 1, 4, -(-objects // 4)), generator=g).float()
            label = torch.nn.functional.interpolate(blocks, size, mode='nearest')[0].long()
            sample.gt_sem_seg = PixelData(data=label)
        else:
            from mmpretrain.structures import DataSample
            sample = DataSample().set_gt_label(torch.randint(0, classes, (1, ), generator=g))
        samples.append(sample)
    return inputs, samples


def _num_classes(head) -> Optional[int]:
    for owner in (head, getattr(head, 'bbox_head', None)):
        classes = getattr(owner, 'num_classes', None)
        if isinstance(classes, int):
            return classes
    return None


@contextmanager
def mmcv_kernels_skipped_on_meta():
    """mmcv's ops allocate their outputs in Python, then call a compiled kernel to fill them: on meta tensors the
    kernel is skipped (what it would allocate is allocated). NMS keeps every box, its largest case. Undone on
    exit."""
    patched = []
    for name, module in list(sys.modules.items()):
        ext = getattr(module, 'ext_module', None) if name.startswith('mmcv.ops') else None
        if ext is not None and not isinstance(ext, _SkipOnMeta):
            patched.append((module, ext))
            module.ext_module = _SkipOnMeta(ext)
    deform = sys.modules.get('mmcv.ops.multi_scale_deform_attn')
    if deform is not None:  # on a GPU, deformable attention runs mmcv's CUDA op, not its PyTorch fallback
        fallback = deform.multi_scale_deformable_attn_pytorch
        deform.multi_scale_deformable_attn_pytorch = _deformable_attention_op
    try:
        yield
    finally:
        for module, ext in patched:
            module.ext_module = ext
        if deform is not None:
            deform.multi_scale_deformable_attn_pytorch = fallback


def _deformable_attention_op(value, spatial_shapes, sampling_locations, attention_weights):
    from mmcv.ops.multi_scale_deform_attn import MultiScaleDeformableAttnFunction
    starts = torch.cat([spatial_shapes.new_zeros(1), spatial_shapes.prod(1).cumsum(0)[:-1]])
    return MultiScaleDeformableAttnFunction.apply(value, spatial_shapes, starts, sampling_locations, attention_weights,
                                                  64)


class _MetaTensorType(type):
    """``isinstance(t, MetaLongTensor)``: a meta tensor of that dtype (``torch.LongTensor`` names CPU ones only)."""

    def __instancecheck__(cls, obj):
        return isinstance(obj, torch.Tensor) and obj.is_meta and obj.dtype == cls.dtype


@contextmanager
def meta_index_types():
    """mmengine's ``InstanceData`` indexes with tensors it recognises by their legacy CPU / CUDA types; these also
    accept meta tensors of the same dtype. Undone on exit."""
    from typing import Union

    from mmengine.structures import instance_data
    meta_long = _MetaTensorType('MetaLongTensor', (), dict(dtype=torch.long))
    meta_bool = _MetaTensorType('MetaBoolTensor', (), dict(dtype=torch.bool))
    bools, longs, indices = instance_data.BoolTypeTensor, instance_data.LongTypeTensor, instance_data.IndexType
    saved = dict(BoolTypeTensor=bools, LongTypeTensor=longs, IndexType=indices)
    instance_data.BoolTypeTensor = Union[bools, meta_bool]
    instance_data.LongTypeTensor = Union[longs, meta_long]
    instance_data.IndexType = Union[indices, meta_long, meta_bool]
    try:
        yield
    finally:
        for name, value in saved.items():
            setattr(instance_data, name, value)


class _SkipOnMeta:

    def __init__(self, ext):
        self._ext = ext

    def __getattr__(self, name):
        kernel = getattr(self._ext, name)

        def run(*args, **kwargs):
            if not any(isinstance(a, torch.Tensor) and a.is_meta for a in (*args, *kwargs.values())):
                return kernel(*args, **kwargs)
            if name == 'nms':  # kernels that return what they compute: at most every box is kept
                return torch.empty(args[0].shape[0], dtype=torch.long, device='meta')
            if name == 'ms_deform_attn_forward':  # (batch, queries, heads * channels), as the CUDA kernel makes it
                value, locations = args[0], args[3]
                return value.new_empty(*locations.shape[:2], value.shape[2] * value.shape[3])
            return None

        return run


def count_step(cfg, setting: Setting, size: Tuple[int, int], objects: int = 20) -> Plan:
    """One training step of ``cfg`` under ``setting``, counted on meta tensors."""
    model, optimizer = build(cfg, setting)
    params = [p for p in model.parameters() if p.requires_grad]
    # the optimizer's state exists from the first step on: make it, then free the gradients as mmengine does
    for p in params:
        p.grad = torch.empty_like(p)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    inputs, samples = synthetic_batch(cfg, model, setting.batch, size, objects)
    state = list(model.parameters()) + list(model.buffers())
    for group in optimizer.state.values():
        state += [v for v in group.values() if isinstance(v, torch.Tensor)]

    on_meta = []  # the batch's ground truth, alive through the step as in training

    def loss():
        on_meta.extend(sample.to('meta') for sample in samples)  # inside the count: they keep their values
        return model.parse_losses(model.loss(inputs, on_meta))[0]

    def optimizer_step():
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    counter = MemoryCounter('meta')
    # gradients are state once autograd has accumulated them
    hooks = [p.register_post_accumulate_grad_hook(lambda p: counter.track([p.grad], 'state')) for p in params]
    count_training_step(counter, state, inputs, setting.amp, loss, optimizer_step,
                        (mmcv_kernels_skipped_on_meta(), meta_index_types()))
    for hook in hooks:
        hook.remove()
    return Plan(setting, size, counter.peak, dict(counter.peak_categories), counter.peak_module, counter.peak_phase,
                dict(counter.approximations), counter.approximated_peak)


def count_training_step(counter: MemoryCounter,
                        state: List[torch.Tensor],
                        inputs: torch.Tensor,
                        amp: Optional[str],
                        loss: Callable[[], torch.Tensor],
                        optimizer_step: Optional[Callable[[], None]] = None,
                        contexts=()) -> None:
    """Count ``loss()`` (the forward, under CUDA autocast's rules with ``amp``), its backward and
    ``optimizer_step()`` on meta tensors, as on a GPU (``planning_for('cuda')``), with ``state`` (parameters,
    gradients, optimizer state) and ``inputs`` alive throughout; ``contexts`` are entered around it."""
    counter.track(state, 'state')
    counter.track([inputs])
    with ExitStack() as stack:
        stack.enter_context(planning_for('cuda'))
        for context in contexts:
            stack.enter_context(context)
        stack.enter_context(counter)
        counter.phase = 'forward'
        autocast = stack.enter_context(CudaAutocast(AMP[amp])) if amp else None
        value = loss()
        counter.phase = 'backward'
        if autocast is not None:
            autocast.backward_phase()
        value.backward()
        del value
        if optimizer_step is not None:
            counter.phase = 'optimizer step'
            optimizer_step()


# ----------------------------------------------------------------------------- the benchmark's rows

# torch.cuda.max_memory_allocated of tools/analysis/benchmark.py's training step on an H200 (docs/benchmark.md):
# batch 2, 800 x 1216, torch 2.11; Swin-T there is torchvision's swin_t features (mmdet was not installed).
# bash tools/gpu_check.sh, 2026-12-04 (the reference row was 23497 MiB in an earlier measurement of older code)
H200_MIB = {
    ('torchvision_swin_t', None): 4406,
    ('torchvision_swin_t', 'bf16'): 3074,
    ('transnext_pytorch', None): 23038,
    ('transnext_ext', None): 5557,
    ('transnext_triton', None): 5574,
    ('transnext_ext', 'bf16'): 3961,
    ('transnext_triton', 'bf16'): 3861,
}
BENCHMARK_SIZE = (800, 1216)


def benchmark_step(row: str, amp: Optional[str] = None, batch: int = 2, size=BENCHMARK_SIZE) -> MemoryCounter:
    """tools/analysis/benchmark.py's training step of ``row`` ('transnext_<attn_impl>', 'mmdet_swin_t',
    'torchvision_swin_t'), counted: the backbone alone, in training mode, loss = the sum of its outputs' means, its
    gradients alive from the step before (the benchmark repeats the step without zeroing them)."""
    import benchmark
    if row == 'torchvision_swin_t':
        import torchvision
        model = torchvision.models.swin_t().features
    else:
        model = benchmark.build('swin' if row == 'mmdet_swin_t' else row, img_size=min(size))
    model = model.to('meta')
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    for p in params:
        p.grad = torch.empty_like(p)
    x = torch.empty(batch, 3, *size, device='meta')

    def loss():
        outputs = model(x)
        return sum(o.float().mean() for o in (outputs if isinstance(outputs, (tuple, list)) else [outputs]))

    counter = MemoryCounter('meta')
    count_training_step(counter,
                        list(model.parameters()) + [p.grad for p in params] + list(model.buffers()), x, amp, loss)
    return counter


def print_benchmark_rows() -> dict:
    """The H200's rows counted here, then TransNeXt-T's kernel paths against mmdet's Swin-T (counted alike)."""
    print(f'tools/analysis/benchmark.py\'s training step, batch 2, {BENCHMARK_SIZE[0]} x {BENCHMARK_SIZE[1]}, counted '
          'on meta tensors:')
    print('| backbone | autocast | counted (MiB) | H200 max_memory_allocated (MiB) | difference |')
    print('|---|---|---|---|---|')
    result = {}
    for (row, amp), measured in H200_MIB.items():
        counted = benchmark_step(row, amp).peak / MiB
        result[f'{row}_{amp or "fp32"}'] = dict(counted_mib=round(counted), measured_mib=measured)
        print(f'| {row} | {amp or "fp32"} | {counted:.0f} | {measured} | {100 * (counted / measured - 1):+.1f}% |')
    print()
    print('| backbone | autocast | counted (MiB) | / mmdet Swin-T |')
    print('|---|---|---|---|')
    for amp in (None, 'bf16'):
        swin = benchmark_step('mmdet_swin_t', amp).peak / MiB
        print(f'| mmdet_swin_t | {amp or "fp32"} | {swin:.0f} | 1.00x |')
        for row in ('transnext_ext', 'transnext_triton', 'transnext_auto', 'transnext_pytorch'):
            counted = benchmark_step(row, amp).peak / MiB
            result[f'{row}_{amp or "fp32"}'] = dict(counted_mib=round(counted), swin_ratio=round(counted / swin, 3))
            print(f'| {row} | {amp or "fp32"} | {counted:.0f} | {counted / swin:.2f}x |')
    return result


# ----------------------------------------------------------------------------- the paper's configs

PAPER_CONFIGS = ('maskrcnn_transnext_tiny', 'maskrcnn_transnext_small', 'maskrcnn_transnext_base',
                 'dino-4scale_transnext_tiny', 'dino-5scale_transnext_tiny', 'upernet_transnext_tiny',
                 'upernet_transnext_small', 'upernet_transnext_base', 'mask2former_transnext_tiny',
                 'mask2former_transnext_small', 'mask2former_transnext_base')
# upstream TransNeXt issue #19: the small models' ADE20K configs at 1024 x 1024
LARGE_CROPS = (('upernet_transnext_small', (1024, 1024)), ('mask2former_transnext_small', (1024, 1024)))
TABLE_IMPLS = ('pytorch', 'auto', 'ext', 'triton')


def print_paper_table() -> dict:
    """README's table: every paper config at its training settings (per-GPU batch, largest train size, fp32), each
    attention backend; then issue #19's 1024 x 1024 crops."""
    configs = osp.join(osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__)))), 'configs')
    print('| config | per-GPU batch x input | ' + ' | '.join(f"'{impl}'" for impl in TABLE_IMPLS) + ' |')
    print('|---|---|' + '---|' * len(TABLE_IMPLS))
    result = {}
    for name, size in [(name, None) for name in PAPER_CONFIGS] + list(LARGE_CROPS):
        cfg = read_config(osp.join(configs, f'{name}.py'))
        size = size or train_size(cfg)
        batch = cfg.train_dataloader.batch_size
        amp = config_amp(cfg)
        peaks = [count_step(cfg, Setting(impl, False, amp, batch), size).peak for impl in TABLE_IMPLS]
        key = f'{name}@{size[0]}x{size[1]}'
        result[key] = dict(zip(TABLE_IMPLS, peaks))
        print(f'| {name} | {batch} x {size[0]} x {size[1]} | ' + ' | '.join(f'{p / GiB:.1f} GiB' for p in peaks) + ' |',
              flush=True)
    return result


# ----------------------------------------------------------------------------- output


def describe(setting: Setting) -> str:
    parts = [] if setting.attn_impl is None else [f"attn_impl='{setting.attn_impl}'"]
    parts += [
        'with_cp' if setting.with_cp else 'no with_cp', f'{setting.amp} autocast' if setting.amp else 'fp32',
        f'batch {setting.batch}'
    ]
    return ', '.join(parts)


def plan_dict(plan: Plan, gpu_memory: Optional[float] = None) -> dict:
    result = dict(setting=plan.setting._asdict(),
                  size=list(plan.size),
                  peak_bytes=plan.peak,
                  peak_mib=round(plan.peak / MiB),
                  categories_bytes=plan.categories,
                  peak_module=plan.module,
                  peak_phase=plan.phase,
                  approximations=plan.approximations,
                  approximated_bytes=plan.approximated)
    if gpu_memory is not None:
        result['fits'] = fits(plan, gpu_memory)
    return result


def fits(plan: Plan, gpu_memory: float) -> bool:
    return plan.peak <= USABLE * gpu_memory * GiB


def print_plan(plan: Plan) -> None:
    print(f'peak GPU memory of one training step: {plan.peak / MiB:.0f} MiB ({plan.peak / GiB:.2f} GiB)')
    names = dict(state='parameters + gradients + optimizer state',
                 activations='activations',
                 workspaces='kernel workspaces')
    for name in CATEGORIES:
        print(f'  {names[name]:<42} {plan.categories[name] / MiB:9.0f} MiB')
    print(f'  reached in: {where(plan)}')


def print_approximations(plan: Plan) -> None:
    if plan.approximations:
        ops = ', '.join(f'{op} x{n}' for op, n in sorted(plan.approximations.items()))
        print(f'approximated: data-dependent ops on values the meta tensors do not have ({ops}) took their largest '
              f'case, so sampling, assignment and matching are counted at their largest; their results: at most '
              f'{plan.approximated / MiB:.0f} MiB alive at once')
    print('not counted: cuBLAS / cuDNN workspaces and kernels\' temporaries (2-4% of a step against an H200), the CUDA '
          f'context, the allocator\'s fragmentation; "fits" leaves {1 - USABLE:.0%} of the GPU for them')


def table(plans: List[Plan]) -> str:
    lines = [
        '| attn_impl | with_cp | peak (MiB) | params + grads + optimizer | activations | workspaces | reached in |',
        '|---|---|---|---|---|---|---|'
    ]
    for plan in plans:
        c = plan.categories
        lines.append(f'| {plan.setting.attn_impl or "-"} | {plan.setting.with_cp} | {plan.peak / MiB:.0f} | '
                     f'{c["state"] / MiB:.0f} | {c["activations"] / MiB:.0f} | {c["workspaces"] / MiB:.0f} | '
                     f'{where(plan)} |')
    return '\n'.join(lines)


def where(plan: Plan) -> str:
    """The phase and module of the peak."""
    module = plan.module or ('the losses' if plan.phase == 'forward' else '')
    return plan.phase + (f', {module}' if module else '')


def fitting_settings(cfg, setting: Setting, size, objects, gpu_memory: float) -> List[Plan]:
    """Settings that fit, fewest changes first, and among those a kernel backend (exact, the same results) before
    with_cp (slower) before bf16 autocast (other rounding); then smaller batches with all three."""
    impls = [setting.attn_impl] if setting.attn_impl is None else [setting.attn_impl, 'triton', 'ext']
    combos = {
        Setting(impl, cp, amp, setting.batch)
        for impl in impls
        for cp in (setting.with_cp, True)
        for amp in (setting.amp, 'bf16')
    }

    def changes(s: Setting):
        changed = (s.attn_impl != setting.attn_impl, s.with_cp != setting.with_cp, s.amp != setting.amp)
        return sum(changed), changed[2], changed[1], impls.index(s.attn_impl)

    candidates = sorted(combos - {setting}, key=changes)
    batch = setting.batch // 2
    while batch >= 1:
        candidates.append(
            setting._replace(batch=batch, with_cp=True, amp='bf16', attn_impl=impls[-1] if setting.attn_impl else None))
        batch //= 2
    found = []
    for candidate in dict.fromkeys(candidates):
        plan = count_step(cfg, candidate, size, objects)
        if fits(plan, gpu_memory):
            found.append(plan)
            if len(found) == 3:
                break
    return found


def positive_gib(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f'--gpu-memory is the GPU\'s memory in GiB and must be > 0, got {text}')
    return value


def parse_args(argv=None):
    from mmengine.config import DictAction
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('config',
                        nargs='?',
                        help='a config file, or a packaged one such as mmdet::swin/...py (not with --benchmark-rows)')
    parser.add_argument('--paper-table',
                        action='store_true',
                        help='README\'s table: every paper config at its training settings, each attention backend')
    parser.add_argument('--benchmark-rows',
                        action='store_true',
                        help='count docs/benchmark.md\'s GPU rows (batch 2, 800 x 1216) beside the H200\'s '
                        'measurements, and TransNeXt-T against mmdet\'s Swin-T')
    parser.add_argument('--batch', type=int, help='images per GPU (default: the train dataloader\'s batch_size)')
    parser.add_argument('--size', type=int, nargs=2, metavar=('H', 'W'), help='input size (default: from the pipeline)')
    parser.add_argument('--attn-impl', choices=[i for i in ATTN_IMPLS], help='TransNeXt\'s attention backend')
    parser.add_argument('--amp', choices=sorted(AMP), help='CUDA autocast in this type (default: float32)')
    parser.add_argument('--with-cp', action='store_true', help='activation checkpointing in the backbone')
    parser.add_argument('--gpu-memory', type=positive_gib, metavar='GIB', help='say whether it fits in GIB GiB')
    parser.add_argument('--objects', type=int, default=20, help='ground-truth objects per image (detection)')
    parser.add_argument('--json', action='store_true', help='end with one line of JSON')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction, help='override config entries')
    args = parser.parse_args(argv)
    if (args.config is None) == (not (args.benchmark_rows or args.paper_table)):
        parser.error('give a CONFIG, or --benchmark-rows / --paper-table')
    if args.batch is not None and args.batch < 1:
        parser.error(f'--batch must be at least 1, got {args.batch}')
    if args.size is not None and min(args.size) < 1:
        parser.error(f'--size must be positive, got {args.size}')
    return args


def print_auto_assumptions() -> None:
    """Which backend the count took for each attention op under attn_impl='auto', and where that came from (a
    decision measured on this machine for the planned GPU, else the static table)."""
    from mmtransnext.ops import autotune
    for (op, config), choice in sorted(autotune.assumed.items()):
        print(f"attn_impl='auto' assumed {choice.backend} for {op} ({config}): {choice.reason}")


def main(argv=None):
    args = parse_args(argv)
    if args.benchmark_rows or args.paper_table:
        result = print_benchmark_rows() if args.benchmark_rows else print_paper_table()
        if args.json:
            print(json.dumps(result))
        return result
    cfg = read_config(args.config, args.cfg_options)
    transnext = is_transnext(cfg)
    if args.attn_impl and not transnext:
        sys.exit(f'--attn-impl applies to TransNeXt backbones; {args.config}\'s backbone is '
                 f'{cfg.model.get("backbone", {}).get("type")!r}')
    batch = args.batch or cfg.train_dataloader.batch_size
    if args.amp is None and config_amp(cfg):
        args.amp = config_amp(cfg)
        print(f'autocast {args.amp}: the config trains with AmpOptimWrapper')
    size = tuple(args.size) if args.size else train_size(cfg)
    print(f'{args.config}: one training step, batch {batch} of {size[0]} x {size[1]} images, on meta tensors '
          '(no GPU; CUDA kernels\' allocations)')
    try:
        if args.attn_impl is None and transnext:
            settings = [
                Setting(impl, cp, args.amp, batch) for impl in ('auto', 'pytorch', 'ext', 'triton')
                for cp in (False, True)
            ]
            plans = [count_step(cfg, s, size, args.objects) for s in settings]
            print(table(plans))
            plan = plans[0]
        else:
            plan = count_step(cfg, Setting(args.attn_impl, args.with_cp, args.amp, batch), size, args.objects)
            print(describe(plan.setting))
            print_plan(plan)
    except ValueError as error:  # what the model says of its input (too small, not divisible ...)
        sys.exit(f'a training step on {size[0]} x {size[1]} inputs fails: {error}')
    print_auto_assumptions()
    print_approximations(plan)
    result = plan_dict(plan, args.gpu_memory)
    if args.gpu_memory is not None:
        if fits(plan, args.gpu_memory):
            print(f'fits in {args.gpu_memory:g} GiB ({describe(plan.setting)}; at most {USABLE:.0%} of the GPU\'s '
                  'memory for the step)')
        else:
            print(f'does NOT fit in {args.gpu_memory:g} GiB ({describe(plan.setting)}: {plan.peak / GiB:.1f} GiB '
                  f'> {USABLE:.0%} of {args.gpu_memory:g})')
            found = fitting_settings(cfg, plan.setting, size, args.objects, args.gpu_memory)
            for other in found:
                print(f'  fits with {describe(other.setting)}: {other.peak / GiB:.1f} GiB')
            if not found:
                print('  no setting tried fits (kernel backends, with_cp, bf16, smaller batches)')
            result['fitting_settings'] = [plan_dict(p) for p in found]
    if args.json:
        print(json.dumps(result))
    return result


if __name__ == '__main__':
    main()
