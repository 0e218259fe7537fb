"""The backbone against the authors' implementation (shared/fixtures/transnext_official)."""
import pytest
import torch

from mmtransnext.models import TransNeXt

from .conftest import golden_arch

CASES = ['same_size', 'interpolate', 'interpolate_odd', 'extrapolate', 'extrapolate_odd']


def _case(golden, name):
    return next(c for c in golden['cases'] if c['name'] == name)


def _run_case(golden, case, **kwargs):
    model = TransNeXt(arch=golden_arch(golden), img_size=case['img_size'], pretrain_size=case['pretrain_size'],
                      is_extrapolation=case['is_extrapolation'], **kwargs)
    model.load_state_dict(golden['backbone_state_dict'], strict=True)
    model.eval()
    x = case['input'].clone().requires_grad_(True)
    outputs = model(x)
    loss = sum((out * w).sum() for out, w in zip(outputs, case['loss_weights']))
    loss.backward()
    return model, x, outputs, loss


def _assert_grad_close(actual, expected, name):
    tol = 1e-4 * expected.abs().max().item()
    err = (actual - expected).abs().max().item()
    assert err <= tol, f'{name}: max error {err:.3e} > {tol:.3e}'


@pytest.mark.parametrize('name', CASES)
def test_outputs_loss_and_input_grad(golden, name):
    case = _case(golden, name)
    _, x, outputs, loss = _run_case(golden, case)
    assert len(outputs) == len(case['outputs'])
    for i, (out, ref) in enumerate(zip(outputs, case['outputs'])):
        assert out.shape == ref.shape
        err = (out - ref).abs().max().item()
        assert err <= 1e-4, f'stage {i + 1} output: max error {err:.3e}'
    _assert_grad_close(loss.detach(), case['loss'], 'loss')
    _assert_grad_close(x.grad, case['input_grad'], 'input grad')


def test_parameter_gradients(golden):
    case = _case(golden, 'interpolate')
    model, *_ = _run_case(golden, case)
    params = dict(model.named_parameters())
    assert set(case['param_grads']) == set(params)
    largest = max(ref.abs().max().item() for ref in case['param_grads'].values())
    for name, ref in case['param_grads'].items():
        if ref.abs().max().item() < 1e-8 * largest:
            # Mathematically zero (the stage-4 cpb_fc2.bias shifts a whole softmax row): both
            # sides are float32 rounding noise, so check ours is noise too, not equal noise.
            assert params[name].grad.abs().max().item() < 1e-8 * largest, name
        else:
            _assert_grad_close(params[name].grad, ref, name)


def test_activation_checkpointing_is_exact(golden):
    case = _case(golden, 'interpolate_odd')
    model = TransNeXt(arch=golden_arch(golden), img_size=64, pretrain_size=224, with_cp=True)
    model.load_state_dict(golden['backbone_state_dict'])
    x = case['input'].clone().requires_grad_(True)
    outputs = model(x)
    sum((o * w).sum() for o, w in zip(outputs, case['loss_weights'])).backward()
    for out, ref in zip(outputs, case['outputs']):
        torch.testing.assert_close(out, ref, atol=1e-4, rtol=0)
    _assert_grad_close(x.grad, case['input_grad'], 'input grad with_cp')


def test_out_indices_select_stages(golden):
    case = _case(golden, 'same_size')
    model = TransNeXt(arch=golden_arch(golden), img_size=64, pretrain_size=64, out_indices=(1, 3)).eval()
    model.load_state_dict(golden['backbone_state_dict'])
    with torch.no_grad():
        outputs = model(case['input'])
    assert len(outputs) == 2
    torch.testing.assert_close(outputs[0], case['outputs'][1], atol=1e-4, rtol=0)
    torch.testing.assert_close(outputs[1], case['outputs'][3], atol=1e-4, rtol=0)


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


@pytest.mark.parametrize('query, key, pretrain', [((16, 16), (2, 2), (56, 56)), ((18, 26), (2, 3), (56, 56)),
                                                  ((7, 9), (7, 9), (7, 7)), ((25, 31), (6, 7), (14, 14)),
                                                  ((1, 3), (1, 1), (2, 2))])
def test_per_axis_position_table_is_bit_identical_to_the_pairwise_definition(query, key, pretrain):
    from mmtransnext.models.layers import relative_position_table
    index, table = relative_position_table(query, key, pretrain)
    ref_index, ref_table = _pairwise_table(query, key, pretrain)
    assert torch.equal(table, ref_table) and torch.equal(index, ref_index)
