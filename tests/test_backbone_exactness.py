"""The backbone against the authors' implementation (shared/fixtures/transnext_official)."""
import pytest
import torch

from mmtransnext.models import TransNeXt
from mmtransnext.ops import ext_available
from mmtransnext.ops.backend import triton_status
from .conftest import golden_arch, golden_case

# the op's CPU kernels split their work over threads; that split is part of what is tested
pytestmark = pytest.mark.usefixtures('all_cores')

# every attention implementation this build has, each held to the fixtures
IMPLS = ['pytorch'] + (['ext'] if ext_available('cpu') else [])

CASES = ['same_size', 'interpolate', 'interpolate_odd', 'extrapolate', 'extrapolate_odd']

# Tolerances: about twice the worst error measured over all cases and the attn_impls on the CPU (float32):
# loss 7.2e-7 relative, input gradient 4.3e-7 and parameter gradients 5.5e-6 relative to the reference's largest
# magnitude; stage outputs 2.2e-6 absolute on one CPU and 4.8e-6 on another (the reference path itself,
# `extrapolate` stage 4, outputs up to 4.3: about 10 float32 ulps; `ext` 4.3e-6, `triton` 3.8e-6 there), so
# 1e-5. The LayerNorm eps, which moves the outputs by ~6e-6 when wrong, has its own test below.
OUTPUT_ATOL = 1e-5
LOSS_RTOL = 2e-6
INPUT_GRAD_RTOL = 1e-6
PARAM_GRAD_RTOL = 1.2e-5
# CUDA kernels sum in other orders (TF32 off)
CUDA_OUTPUT_ATOL = 2e-5
CUDA_INPUT_GRAD_RTOL = 5e-6


def _rungolden_case(golden, case, **kwargs):
    model = TransNeXt(arch=golden_arch(golden),
                      img_size=case['img_size'],
                      pretrain_size=case['pretrain_size'],
                      is_extrapolation=case['is_extrapolation'],
                      **kwargs)
    model.load_state_dict(golden['backbone_state_dict'], strict=True)
    model.eval()
    x = case['input'].clone().requires_grad_(True)
    outputs = model(x)
    loss = sum((out * w).sum() for out, w in zip(outputs, case['loss_weights']))
    loss.backward()
    return model, x, outputs, loss


def _assert_grad_close(actual, expected, name, rtol):
    tol = rtol * expected.abs().max().item()
    err = (actual - expected).abs().max().item()
    assert err <= tol, f'{name}: max error {err:.3e} > {tol:.3e}'


@pytest.mark.parametrize('attn_impl', IMPLS)
@pytest.mark.parametrize('name', CASES)
def test_outputs_loss_and_input_grad(golden, name, attn_impl):
    case = golden_case(golden, name)
    _, x, outputs, loss = _rungolden_case(golden, case, attn_impl=attn_impl)
    assert len(outputs) == len(case['outputs'])
    for i, (out, ref) in enumerate(zip(outputs, case['outputs'])):
        assert out.shape == ref.shape
        err = (out - ref).abs().max().item()
        assert err <= OUTPUT_ATOL, f'stage {i + 1} output: max error {err:.3e}'
    _assert_grad_close(loss.detach(), case['loss'], 'loss', LOSS_RTOL)
    _assert_grad_close(x.grad, case['input_grad'], 'input grad', INPUT_GRAD_RTOL)


@pytest.mark.parametrize('attn_impl', IMPLS)
def test_parameter_gradients(golden, attn_impl):
    case = golden_case(golden, 'interpolate')
    model, *_ = _rungolden_case(golden, case, attn_impl=attn_impl)
    params = dict(model.named_parameters())
    assert set(case['param_grads']) == set(params)
    largest = max(ref.abs().max().item() for ref in case['param_grads'].values())
    for name, ref in case['param_grads'].items():
        if ref.abs().max().item() < 1e-8 * largest:
            # Mathematically zero (the stage-4 cpb_fc2.bias shifts a whole softmax row): both
            # sides are float32 rounding noise, so check ours is noise too, not equal noise.
            assert params[name].grad.abs().max().item() < 1e-8 * largest, name
        else:
            _assert_grad_close(params[name].grad, ref, name, PARAM_GRAD_RTOL)


@pytest.mark.skipif(not torch.cuda.is_available(), reason='needs a GPU')
@pytest.mark.parametrize('attn_impl', ['pytorch', 'ext', 'triton'])
@pytest.mark.parametrize('name', ['interpolate_odd', 'extrapolate_odd'])
def test_fixture_cases_on_cuda(golden, name, attn_impl):
    if attn_impl == 'ext' and not ext_available('cuda'):
        pytest.skip('mmtransnext._ext was built without CUDA kernels')
    if attn_impl == 'triton' and not triton_status('cuda')[0]:
        pytest.skip(f'needs Triton: {triton_status("cuda")[1]}')
    case = golden_case(golden, name)
    model = TransNeXt(arch=golden_arch(golden),
                      img_size=case['img_size'],
                      pretrain_size=case['pretrain_size'],
                      is_extrapolation=case['is_extrapolation'],
                      attn_impl=attn_impl)
    model.load_state_dict(golden['backbone_state_dict'])
    model.cuda().eval()
    x = case['input'].cuda().requires_grad_(True)
    tf32 = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False  # float32 means float32 here
    try:
        outputs = model(x)
        sum((o * w.cuda()).sum() for o, w in zip(outputs, case['loss_weights'])).backward()
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = tf32
    for out, ref in zip(outputs, case['outputs']):
        torch.testing.assert_close(out.cpu(), ref, atol=CUDA_OUTPUT_ATOL, rtol=0)
    _assert_grad_close(x.grad.cpu(), case['input_grad'], 'input grad on cuda', CUDA_INPUT_GRAD_RTOL)


def test_activation_checkpointing_is_exact(golden):
    case = golden_case(golden, 'interpolate_odd')
    model = TransNeXt(arch=golden_arch(golden), img_size=64, pretrain_size=224, with_cp=True)
    model.load_state_dict(golden['backbone_state_dict'])
    x = case['input'].clone().requires_grad_(True)
    outputs = model(x)
    sum((o * w).sum() for o, w in zip(outputs, case['loss_weights'])).backward()
    for out, ref in zip(outputs, case['outputs']):
        torch.testing.assert_close(out, ref, atol=OUTPUT_ATOL, rtol=0)
    _assert_grad_close(x.grad, case['input_grad'], 'input grad with_cp', INPUT_GRAD_RTOL)


def test_out_indices_select_stages(golden):
    case = golden_case(golden, 'same_size')
    model = TransNeXt(arch=golden_arch(golden), img_size=64, pretrain_size=64, out_indices=(1, 3)).eval()
    model.load_state_dict(golden['backbone_state_dict'])
    with torch.no_grad():
        outputs = model(case['input'])
    assert len(outputs) == 2
    torch.testing.assert_close(outputs[0], case['outputs'][1], atol=OUTPUT_ATOL, rtol=0)
    torch.testing.assert_close(outputs[1], case['outputs'][3], atol=OUTPUT_ATOL, rtol=0)


def test_layer_norm_eps_follows_the_authors_definition():
    """1e-5 (PyTorch's default) in the patch embeddings and the pooled-key norm, 1e-6 elsewhere: the
    outputs alone move by only ~1e-5 when one is wrong."""
    model = TransNeXt(arch='micro')
    eps = {name: m.eps for name, m in model.named_modules() if isinstance(m, torch.nn.LayerNorm)}
    expected = {name: 1e-5 if name.startswith('patch_embed') or name.endswith('attn.norm') else 1e-6 for name in eps}
    assert eps == expected
    assert sum(name.endswith('attn.norm') for name in eps) == 2 + 2 + 15  # every aggregated-attention block


def _pairwise_table(query_size, key_size, pretrain_size):
    """The definition: unique log-spaced (dh, dw) over all query / pooled-key pairs (sorts Nq * Nk rows)."""
    import torch.nn.functional as F
    axes = []
    for q_len, k_len in zip(query_size, key_size):
        q = torch.arange(q_len, dtype=torch.float32)
        axes.append((q, F.adaptive_avg_pool1d(q[None], k_len)[0]))
    (qh, kh), (qw, kw) = axes
    qh, qw = (t.reshape(-1) for t in torch.meshgrid(qh, qw, indexing='ij'))
    kh, kw = (t.reshape(-1) for t in torch.meshgrid(kh, kw, indexing='ij'))
    dh = (qh[:, None] - kh[None]) / (pretrain_size[0] - 1) * 8
    dw = (qw[:, None] - kw[None]) / (pretrain_size[1] - 1) * 8
    table, index = torch.unique(torch.stack([dh, dw], -1).view(-1, 2), return_inverse=True, dim=0)
    return index, torch.sign(table) * torch.log2(table.abs() + 1.0) / torch.log2(torch.tensor(8.))


@pytest.mark.parametrize('query, key, pretrain', [
    ((16, 16), (2, 2), (56, 56)),
    ((18, 26), (2, 3), (56, 56)),
    ((7, 9), (7, 9), (7, 7)),
    ((25, 31), (6, 7), (14, 14)),
    ((1, 3), (1, 1), (2, 2)),
    ((59, 23), (7, 4), (56, 56)),
])
def test_position_table_from_sizes_is_bit_identical_to_the_pairwise_definition(query, key, pretrain):
    """Every pair's coordinates are the official ``torch.unique`` table's, bit for bit; where the pooling
    windows' centres share a parity the table is ``torch.unique``'s itself."""
    from mmtransnext.models.layers.position_bias import relative_position_table
    positions = relative_position_table(query, key, pretrain)
    assert positions.table.shape[0] == positions.shape[0] * positions.shape[1]
    index = (positions.inverse_h[:, None, :, None] * positions.shape[1] +
             positions.inverse_w[None, :, None, :]).reshape(-1)
    ref_index, ref_table = _pairwise_table(query, key, pretrain)
    assert torch.equal(positions.table[index], ref_table[ref_index])
    if positions.table.shape[0] == ref_table.shape[0]:
        assert torch.equal(positions.table, ref_table) and torch.equal(index, ref_index)
    else:  # a few offsets no pair reads: between windows of both parities
        assert positions.table.shape[0] <= 1.5 * ref_table.shape[0] and query in [(18, 26), (25, 31), (59, 23)]


def _resized_bias_definition(values, inverse_h, inverse_w, size, pool_size):
    """The official way: materialise the bias on the table's grids, then resize keys, then queries."""
    import torch.nn.functional as F
    heads, u_w = values.shape[0], values.shape[1] // (inverse_h.max().item() + 1)
    (qh, kh), (qw, kw) = inverse_h.shape, inverse_w.shape
    index = (inverse_h[:, None, :, None] * u_w + inverse_w[None, :, None, :]).reshape(-1)
    bias = values[:, index].view(heads, qh * qw, kh, kw)
    (H, W), (ph, pw) = size, pool_size
    if (kh, kw) != (ph, pw):
        bias = F.interpolate(bias, (ph, pw), mode='bilinear')
    bias = bias.reshape(heads, qh * qw, ph * pw).transpose(1, 2)
    if (qh, qw) != (H, W):
        bias = F.interpolate(bias.reshape(heads, ph * pw, qh, qw), (H, W), mode='bilinear')
    return bias.reshape(heads, ph * pw, H * W).transpose(1, 2)


@pytest.mark.parametrize(
    'grid, pool, size, pool_size',
    [
        ((16, 16), (2, 2), (16, 16), (2, 2)),  # no resizing: a pure gather, bit-identical
        ((16, 16), (2, 2), (9, 13), (1, 1)),  # smaller input
        ((12, 20), (3, 5), (31, 17), (7, 4)),  # larger and odd
        ((8, 8), (8, 8), (5, 11), (5, 11)),  # full attention (sr_ratio 1)
        ((2, 2), (1, 1), (3, 1), (1, 1)),  # degenerate grids
    ])
def test_per_axis_bias_gather_equals_materialise_and_resize(grid, pool, size, pool_size):
    from mmtransnext.models.layers.position_bias import bias_taps, gather_position_bias, relative_position_table
    inverse_h, inverse_w, table, shape = relative_position_table(grid, pool, (14, 14))
    values = torch.randn(3, table.shape[0], requires_grad=True)
    taps = bias_taps(inverse_h, inverse_w, size, pool_size, shape)
    ours = gather_position_bias(values, taps, size, pool_size)
    ref = _resized_bias_definition(values, inverse_h, inverse_w, size, pool_size)
    if (grid, pool) == (size, pool_size):
        assert taps.rows_weight is None and taps.cols_grid is None and torch.equal(ours, ref)
    # float32: the same weights, summed in another order
    torch.testing.assert_close(ours, ref, rtol=1e-5, atol=1e-6)
    grad = torch.randn_like(ref)
    ours_grad, = torch.autograd.grad(ours, values, grad)
    ref_grad, = torch.autograd.grad(ref, values, grad)
    torch.testing.assert_close(ours_grad, ref_grad, rtol=1e-5, atol=1e-5)


@pytest.mark.skipif(not ext_available('cpu'), reason='mmtransnext._ext is not built')
def test_op_and_reference_take_the_same_training_steps():
    """Six SGD steps in train mode, over two input sizes: the op path stays with the reference path to float32
    rounding, as close as the reference stays to itself with its input scaled by 1 + 1e-7. A state that the op
    path carried wrongly from step to step (the geometry cache, saved tensors) would grow past that.
    Measured, relative to the reference's total update: op 2.4e-6 - 3.1e-6, scaled input 2.5e-6 - 3.7e-6 (the
    LayerNorms absorb most of a scale: 1 + 1e-3 moves the weights by 8e-5)."""
    torch.manual_seed(0)
    arch = dict(embed_dims=[32, 64, 128, 256], depths=[1, 1, 2, 1], num_heads=[1, 2, 4, 8])
    start = TransNeXt(arch=arch, img_size=64, pretrain_size=64).state_dict()
    batches = [torch.randn(2, 3, *size) for size in [(64, 64), (64, 96), (64, 64), (64, 96), (96, 64), (64, 64)]]

    def train(attn_impl, scale=1.0):
        model = TransNeXt(arch=arch, img_size=64, pretrain_size=64, attn_impl=attn_impl)
        model.load_state_dict(start)
        model.train()
        optimizer = torch.optim.SGD(model.parameters(), lr=0.05)
        trajectory = []
        for x in batches:
            loss = sum(out.square().mean() for out in model(x * scale))
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            trajectory.append(torch.cat([p.detach().flatten() for p in model.parameters()]))
        return trajectory

    reference, op, perturbed = train('pytorch'), train('ext'), train('pytorch', 1 + 1e-7)
    initial = torch.cat([start[name].flatten() for name, _ in TransNeXt(arch=arch).named_parameters()])
    for step, (ref, ext, noise) in enumerate(zip(reference, op, perturbed)):
        update = (ref - initial).norm()
        rounding = (noise - ref).norm() / update
        assert (ext - ref).norm() / update <= 3 * rounding, f'step {step + 1}'
