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
LOAD = 'tools/deployment/load_onnx.py'
CHECK = re.compile(r'^(\S+): (\d+) x (\d+) \(batch (\d+)\), ONNX Runtime vs PyTorch: max abs difference / output '
                   r'scale = (\S+) ok$')


def checked_files(stdout):
    """{(H, W): relative difference} of the inputs the tool checked in ONNX Runtime."""
    return {size: difference for size, (_, difference) in checked_runs(stdout).items()}


def checked_runs(stdout):
    """{(H, W): (batch, relative difference)} of the inputs the tool checked in ONNX Runtime."""
    found = {}
    for line in stdout.splitlines():
        match = CHECK.match(line)
        if match:
            found[int(match[2]), int(match[3])] = int(match[4]), float(match[5])
    return found


def test_classifier_exports_one_file_per_size(tmp_path):
    # a size under the export size (img_size 64; its stage-1 pooled grid is 1 x 1, which no --dynamic file takes) and
    # one that is not a multiple of 32 (the export size itself is checked by the --dynamic test's traced size), with
    # the position bias extrapolated: the interpolated one (the default) is the detector's and the segmentor's below
    result = run_tool(EXPORT,
                      TOY / 'transnext_toy_cls.py',
                      '--out',
                      'cls.onnx',
                      '--shape',
                      '48',
                      '48',
                      '--shape',
                      '72',
                      '100',
                      '--cfg-options',
                      'model.backbone.is_extrapolation=True',
                      cwd=tmp_path)
    differences = checked_files(result.stdout)
    assert sorted(differences) == [(48, 48), (72, 100)]
    assert all(d <= 1e-5 for d in differences.values()), differences  # measured: about 1e-6
    assert all((tmp_path / f'cls_{h}x{w}.onnx').stat().st_size > 0 for h, w in differences)


def test_dynamic_segmentor_is_one_file_for_a_range_of_sizes(tmp_path):
    """--dynamic: one UperNet file (encode_decode, logits at the input's size) with a symbolic batch, height and
    width, checked in ONNX Runtime against PyTorch at the traced size and at a size of odd sides (not a multiple of
    32) with batch 2; its range is in its metadata, and load_onnx.py refuses an input outside it, naming it."""
    import onnx
    result = run_tool(EXPORT,
                      TOY / 'upernet_transnext_toy.py',
                      '--dynamic',
                      '--out',
                      'seg.onnx',
                      '--shape',
                      '96',
                      '128',
                      cwd=tmp_path)
    runs = checked_runs(result.stdout)
    assert sorted(runs) == [(96, 128), (121, 97)], result.stdout  # other_size: odd sides, 5/4 and 3/4 of the traced
    assert [runs[96, 128][0], runs[121, 97][0]] == [1, 2]  # batches
    assert all(d <= 1e-5 for _, d in runs.values()), runs  # measured: about 1e-6
    assert 'every height / width from 61 to 2048 pixels' in result.stdout
    assert not list(tmp_path.glob('seg_*.onnx'))  # one file
    model = onnx.load(str(tmp_path / 'seg.onnx'))
    (image, ), (output, ) = model.graph.input, model.graph.output

    def dims(value):
        return [d.dim_param or d.dim_value for d in value.type.tensor_type.shape.dim]

    assert dims(image) == ['batch', 3, 'height', 'width'] and output.name == 'seg_logits'
    assert dims(output) == ['batch', 5, 'height', 'width']  # logits at the input's size
    meta = {p.key: p.value for p in model.metadata_props}
    assert (meta['mmtransnext.min_side'], meta['mmtransnext.max_side']) == ('61', '2048')

    ran = run_tool(LOAD, 'seg.onnx', '--shape', '1', '3', '61', '2048', '--repeats', '2', cwd=tmp_path)  # the ends
    assert 'input 1x3x61x2048 -> 1x5x61x2048' in ran.stdout
    assert re.search(r'^median of 2 more runs: \d+\.\d{3} s$', ran.stdout, re.M), ran.stdout
    refused = run_tool(LOAD, 'seg.onnx', '--shape', '1', '3', '60', '96', cwd=tmp_path, check=False)
    assert refused.returncode == 1 and 'height and width from 61 to 2048 pixels' in refused.stderr
    negative = run_tool(LOAD, 'seg.onnx', '--repeats', '-1', cwd=tmp_path, check=False)
    assert negative.returncode == 2 and '--repeats must be 0 or more' in negative.stderr, negative.stderr


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


def test_dynamic_custom_attention_is_refused_with_the_reason(tmp_path):
    result = run_tool(EXPORT,
                      TOY / 'transnext_toy_cls.py',
                      '--out',
                      'cls.onnx',
                      '--dynamic',
                      '--custom-attention',
                      cwd=tmp_path,
                      check=False)
    assert result.returncode == 1 and 'attributes' in result.stderr and 'one file per size' in result.stderr
    assert not (tmp_path / 'cls.onnx').exists()


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
