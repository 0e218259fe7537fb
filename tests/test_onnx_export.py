"""tools/deployment/export_onnx.py: each kind of model exports, and ONNX Runtime reproduces PyTorch."""
import re

import pytest

from mmtransnext.ops import ext_available
from .helpers import ROOT, run_tool

pytestmark = pytest.mark.slow  # each case exports through subprocesses (5-10 s per file)
pytest.importorskip('onnxruntime')
pytest.importorskip('onnxscript')

TOY = ROOT / 'configs/toy'
EXPORT = 'tools/deployment/export_onnx.py'
CHECK = re.compile(r'^(\S+): (\d+) x (\d+), ONNX Runtime vs PyTorch: max abs difference / output scale = (\S+) ok$')


def checked_files(stdout):
    """{(H, W): relative difference} of the files the tool checked in ONNX Runtime."""
    found = {}
    for line in stdout.splitlines():
        match = CHECK.match(line)
        if match:
            found[int(match[2]), int(match[3])] = float(match[4])
    return found


@pytest.mark.parametrize('extrapolation', [False, True], ids=['interpolation', 'extrapolation'])
def test_classifier_exports_one_file_per_size(tmp_path, extrapolation):
    # the export size (img_size), a smaller one and one that is not a multiple of 32
    args = [
        EXPORT, TOY / 'transnext_toy_cls.py', '--out', 'cls.onnx', '--shape', '64', '64', '--shape', '48', '48',
        '--shape', '72', '100'
    ]
    if extrapolation:
        args += ['--cfg-options', 'model.backbone.is_extrapolation=True']
    result = run_tool(*args, cwd=tmp_path)
    differences = checked_files(result.stdout)
    assert sorted(differences) == [(48, 48), (64, 64), (72, 100)]
    assert all(d <= 1e-5 for d in differences.values()), differences  # measured: about 1e-6
    assert all((tmp_path / f'cls_{h}x{w}.onnx').stat().st_size > 0 for h, w in differences)


def test_upernet_segmentor_exports_logits_at_input_size(tmp_path):
    import onnx
    result = run_tool(EXPORT,
                      TOY / 'upernet_transnext_toy.py',
                      '--out',
                      'seg.onnx',
                      '--shape',
                      '96',
                      '128',
                      cwd=tmp_path)
    assert list(checked_files(result.stdout)) == [(96, 128)]
    (output, ) = onnx.load(str(tmp_path / 'seg.onnx')).graph.output
    assert output.name == 'seg_logits'
    assert [d.dim_value for d in output.type.tensor_type.shape.dim][2:] == [96, 128]


def test_detector_backbone_exports_and_whole_detector_is_refused(tmp_path):
    result = run_tool(EXPORT,
                      TOY / 'maskrcnn_transnext_toy.py',
                      '--backbone',
                      '--out',
                      'backbone.onnx',
                      '--shape',
                      '96',
                      '96',
                      cwd=tmp_path)
    assert list(checked_files(result.stdout)) == [(96, 96)]
    refused = run_tool(EXPORT, TOY / 'maskrcnn_transnext_toy.py', '--out', 'det.onnx', cwd=tmp_path, check=False)
    assert refused.returncode == 1 and 'mmdeploy' in refused.stderr and '--backbone' in refused.stderr
    assert not (tmp_path / 'det.onnx').exists()


def test_dynamic_is_refused_with_the_reason(tmp_path):
    result = run_tool(EXPORT, TOY / 'transnext_toy_cls.py', '--out', 'cls.onnx', '--dynamic', cwd=tmp_path, check=False)
    assert result.returncode == 1 and 'position-bias geometry' in result.stderr and '--shape' in result.stderr


@pytest.mark.skipif(not ext_available('cpu'), reason='the custom-domain export is of the op path (needs the build)')
def test_custom_attention_exports_mmtransnext_nodes(tmp_path):
    import onnx
    result = run_tool(EXPORT, TOY / 'transnext_toy_cls.py', '--out', 'cls.onnx', '--custom-attention', cwd=tmp_path)
    assert 'onnx.checker passed' in result.stdout
    model = onnx.load(str(tmp_path / 'cls.onnx'))
    counts = {}
    for node in model.graph.node:
        if node.domain == 'mmtransnext':
            counts[node.op_type] = counts.get(node.op_type, 0) + 1
    # the toy classifier has depths [1, 1, 2, 1]: 4 aggregated-attention blocks and 1 full-attention block
    assert counts == {'LocalSimilarity': 4, 'LocalAggregation': 4, 'PooledAttention': 5}
    pooled = next(n for n in model.graph.node if n.op_type == 'PooledAttention')
    assert {a.name for a in pooled.attribute} == {'height', 'width'} and len(pooled.output) == 3


@pytest.mark.parametrize(
    'config, args',
    [
        ('transnext_micro_in1k', []),  # the ImageNet classifier at its 224 px
        ('upernet_transnext_tiny', ['--backbone', '--shape', '256', '320']),  # TransNeXt-T, interpolation from 512
    ],
    ids=['micro-classifier', 'tiny-backbone'])
def test_paper_sized_models_export(tmp_path, config, args):
    result = run_tool(EXPORT, ROOT / 'configs' / f'{config}.py', '--out', 'model.onnx', *args, cwd=tmp_path)
    (difference, ) = checked_files(result.stdout).values()
    assert difference <= 1e-5
