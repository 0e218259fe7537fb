"""Run an ONNX file of tools/deployment/export_onnx.py in ONNX Runtime, refusing an input outside the sizes it was
exported for.

    python tools/deployment/load_onnx.py FILE.onnx [--shape B C H W] [--repeats N]

runs the file once on a random input and prints its outputs' shapes and the time (``--repeats N``: then the median
of N more runs). From Python (this file imports only numpy and
onnxruntime: copy it beside the model)::

    from load_onnx import load_model
    model = load_model('FILE.onnx')  # an onnxruntime.InferenceSession underneath (model.session)
    outputs = model(images)          # (B, 3, H, W) float32 array -> list of arrays

A ``--dynamic`` file serves every batch and every height / width in a range; the range is stored in the file's
``metadata_props`` (:data:`MIN_SIDE`, :data:`MAX_SIDE`). ONNX has no operator that checks a size, so ONNX Runtime
itself runs any size: outside the range the outputs are not what PyTorch gives, or not guaranteed to be.
:func:`load_model` reads the range and refuses such an input with an error naming it. A per-size file (no range in
its metadata) serves the size of its input's static shape, which ONNX Runtime checks itself.
"""
import argparse
import os.path as osp
import statistics
import sys
import time
from typing import Optional, Tuple

import numpy as np

# the keys of the range in a --dynamic file's metadata_props (smallest and largest height / width, pixels)
MIN_SIDE = 'mmtransnext.min_side'
MAX_SIDE = 'mmtransnext.max_side'


def size_range(session) -> Optional[Tuple[int, int]]:
    """(smallest, largest) height / width of a --dynamic file, from its metadata; None for a per-size file."""
    meta = session.get_modelmeta().custom_metadata_map
    if MIN_SIDE not in meta or MAX_SIDE not in meta:
        return None
    return int(meta[MIN_SIDE]), int(meta[MAX_SIDE])


def check_input_size(path: str, shape, sides: Optional[Tuple[int, int]]):
    """Raises ValueError naming the range when ``shape`` (B, C, H, W) has a height or width outside ``sides``."""
    if sides is None:
        return
    low, high = sides
    height, width = shape[-2:]
    if not (low <= height <= high and low <= width <= high):
        raise ValueError(f'{path}: input {height} x {width} is outside the sizes this file was exported for: height '
                         f'and width from {low} to {high} pixels (metadata_props {MIN_SIDE} / {MAX_SIDE}); ONNX '
                         'Runtime would run it, but the outputs are not guaranteed. Export a file whose range holds '
                         'it (export_onnx.py --dynamic --min-size / --max-size), or one for its size.')


class RangeCheckedModel:
    """An ``onnxruntime.InferenceSession`` of one image input whose calls check the input's size against the file's
    range (see :func:`load_model`)."""

    def __init__(self, path: str, providers=('CPUExecutionProvider', )):
        import onnxruntime
        self.path = path
        self.session = onnxruntime.InferenceSession(path, providers=list(providers))
        self.input_name = self.session.get_inputs()[0].name
        self.sides = size_range(self.session)

    def __call__(self, image: np.ndarray):
        check_input_size(self.path, image.shape, self.sides)
        return self.session.run(None, {self.input_name: image})


def load_model(path: str, providers=('CPUExecutionProvider', )) -> RangeCheckedModel:
    """The ONNX file ``path`` in ONNX Runtime; calling it refuses an input outside a --dynamic file's range."""
    if not osp.isfile(path):
        raise FileNotFoundError(f'ONNX file {path} not found')
    return RangeCheckedModel(path, providers)


def median_seconds(fn, runs: int, warm_up: bool = True) -> float:
    return median_seconds_interleaved([fn], runs, warm_up)[0]


def median_seconds_interleaved(fns, runs: int, warm_up: bool = True):
    """Median seconds of each of ``fns`` over ``runs`` calls (after one untimed call each unless ``warm_up`` is
    False), taken in turns (one of each, ``runs`` times), so that a change in the machine's load weighs on all of them
    alike."""
    for fn in fns if warm_up else ():
        fn()
    times = [[] for _ in fns]
    for _ in range(runs):
        for fn, spent in zip(fns, times):
            start = time.perf_counter()
            fn()
            spent.append(time.perf_counter() - start)
    return [statistics.median(spent) for spent in times]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('model', help='.onnx file of export_onnx.py')
    parser.add_argument('--shape',
                        nargs=4,
                        type=int,
                        metavar=('B', 'C', 'H', 'W'),
                        help="random input to run (default: the file's static input shape, else 1 3 224 224)")
    parser.add_argument('--repeats',
                        type=int,
                        default=0,
                        metavar='N',
                        help='run N more times and print their median time as well (the first run warms up)')
    args = parser.parse_args()
    if args.repeats < 0:
        parser.error(f'--repeats must be 0 or more (runs after the first), got {args.repeats}')
    try:
        model = load_model(args.model)
    except FileNotFoundError as error:
        sys.exit(str(error))
    static = [d if isinstance(d, int) else None for d in model.session.get_inputs()[0].shape]
    shape = args.shape or (static if None not in static else (1, 3, 224, 224))
    image = np.random.default_rng(0).standard_normal(shape, dtype=np.float32)
    start = time.perf_counter()
    try:
        outputs = model(image)
    except ValueError as error:
        sys.exit(str(error))
    seconds = time.perf_counter() - start
    sides = 'per-size file' if model.sides is None else f'height and width from {model.sides[0]} to {model.sides[1]}'
    shapes = ', '.join('x'.join(map(str, o.shape)) for o in outputs)
    print(f'{args.model} ({sides}): input {"x".join(map(str, shape))} -> {shapes} in {seconds:.3f} s')
    if args.repeats > 0:  # the run above was the warm-up
        median = median_seconds(lambda: model(image), args.repeats, warm_up=False)
        print(f'median of {args.repeats} more runs: {median:.3f} s')


if __name__ == '__main__':
    main()
