"""Load (and try) an AOTInductor package of tools/deployment/export_aoti.py where only torch and mmtransnext's op
library are: the library is loaded first, and a package whose ops nobody loaded fails with an error that says
which file to load and how.

    python tools/deployment/load_aoti.py FILE.pt2 [--op-library SO] [--shape B C H W] [--device DEVICE]

runs the package once on a random input and prints its outputs' shapes. From Python (this file imports only torch:
copy it beside the package)::

    from load_aoti import load_package
    model = load_package('FILE.pt2')  # or load_package('FILE.pt2', op_library='.../_ext....so')
    features = model(images)  # refused (ValueError) outside the sizes the package was compiled for

It does what two lines of torch do, which a deployment may write itself::

    torch.ops.load_library('.../mmtransnext/_ext.cpython-311-x86_64-linux-gnu.so')
    model = torch._inductor.aoti_load_package('FILE.pt2')

Without the first line, torch says only "Could not find schema for mmtransnext::local_similarity".
The library is the one built for the torch that runs the package (``pip install mmtransnext`` or
``bash tools/setup_env.sh`` builds it): ``--op-library`` / ``op_library``, else ``$MMTRANSNEXT_OP_LIBRARY``, else the
``_ext`` module of an installed mmtransnext (found, not imported).
"""
import argparse
import glob
import importlib.machinery
import importlib.util
import os
import os.path as osp
import re
import sys
import time
from typing import Optional

import torch

LIBRARY_VARIABLE = 'MMTRANSNEXT_OP_LIBRARY'
# the package's metadata keys (export_aoti.py writes them): the heights and widths it was compiled for, 'low-high'
HEIGHTS, WIDTHS = 'mmtransnext.heights', 'mmtransnext.widths'
MISSING_OP = re.compile(r'Could not find schema for (mmtransnext::\w+)')


def find_op_library() -> Optional[str]:
    """$MMTRANSNEXT_OP_LIBRARY, else the built ``_ext`` module of an installed mmtransnext (its package is located,
    not imported), else None."""
    if os.environ.get(LIBRARY_VARIABLE):
        return os.environ[LIBRARY_VARIABLE]
    spec = importlib.util.find_spec('mmtransnext')
    for folder in (spec.submodule_search_locations or []) if spec else []:
        for suffix in importlib.machinery.EXTENSION_SUFFIXES:
            found = sorted(glob.glob(osp.join(folder, f'_ext{suffix}')))
            if found:
                return found[0]
    return None


def op_library_loaded() -> bool:
    """Whether mmtransnext's ops are defined in this process (its library loaded, or mmtransnext imported)."""
    return hasattr(torch.ops.mmtransnext, 'local_similarity')


class SizeCheckedPackage:
    """A loaded package whose calls refuse an input outside the heights and widths it was compiled for. The package
    itself checks sizes only where AOTI_RUNTIME_CHECK_INPUTS=1, and otherwise computes something (wrong) for any."""

    def __init__(self, package: str, runner):
        self.package, self.runner = package, runner
        meta = runner.get_metadata()
        self.sides = [tuple(map(int, meta[key].split('-'))) if key in meta else None for key in (HEIGHTS, WIDTHS)]

    def __call__(self, image: torch.Tensor):
        for name, side, allowed in zip(('height', 'width'), image.shape[-2:], self.sides):
            if allowed is not None and not allowed[0] <= side <= allowed[1]:
                heights, widths = (f'{low}' if low == high else f'{low} to {high}' for low, high in self.sides)
                raise ValueError(f'{self.package}: input {name} {side} is outside what the package was compiled for '
                                 f'(heights {heights}, widths {widths} pixels). Compile one that holds it: '
                                 'export_aoti.py --min-size / --max-size, or --static --shape H W')
        return self.runner(image)


def load_package(package: str, op_library: Optional[str] = None) -> SizeCheckedPackage:
    """``torch._inductor.aoti_load_package(package)`` after loading mmtransnext's op library (``op_library``, else
    :func:`find_op_library`'s) unless it is loaded already; its calls check the input size (SizeCheckedPackage)."""
    library = None
    if not op_library_loaded():
        library = op_library or find_op_library()
        if library is not None:
            if not osp.isfile(library):
                raise FileNotFoundError(f'op library {library} not found')
            torch.ops.load_library(library)  # loading a second copy would define the ops twice
    try:
        runner = torch._inductor.aoti_load_package(package)
    except RuntimeError as error:
        missing = MISSING_OP.search(str(error))
        if missing is None:
            raise
        found = (f'{library} does not define it' if library else
                 f'no library was loaded (none given, ${LIBRARY_VARIABLE} unset, no mmtransnext installed)')
        raise RuntimeError(
            f'{package} calls {missing[1]}, an op of mmtransnext\'s library, and {found}. Load the library before the '
            'package: torch.ops.load_library("<mmtransnext>/_ext.<python tag>.so"), the module that `pip install '
            'mmtransnext` (or `bash tools/setup_env.sh`) builds for the torch that runs the package; or give it to '
            f'load_package(op_library=...) / --op-library, or set ${LIBRARY_VARIABLE}') from error
    return SizeCheckedPackage(package, runner)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('package', help='.pt2 file of export_aoti.py')
    parser.add_argument('--op-library',
                        help=f'mmtransnext/_ext*.so (default: ${LIBRARY_VARIABLE}, else the installed '
                        'mmtransnext\'s)')
    parser.add_argument('--shape',
                        nargs=4,
                        type=int,
                        default=(1, 3, 224, 224),
                        metavar=('B', 'C', 'H', 'W'),
                        help='random input to run (default: 1 3 224 224)')
    parser.add_argument('--device', default='cpu', help='the device the package was compiled for (default: cpu)')
    args = parser.parse_args()
    if not osp.isfile(args.package):
        sys.exit(f'package {args.package} not found')
    try:
        model = load_package(args.package, args.op_library)
    except (RuntimeError, FileNotFoundError) as error:
        sys.exit(str(error))
    image = torch.randn(*args.shape, generator=torch.Generator().manual_seed(0)).to(args.device)
    start = time.perf_counter()
    with torch.no_grad():
        try:
            outputs = model(image)
        except ValueError as error:
            sys.exit(str(error))
    seconds = time.perf_counter() - start
    outputs = outputs if isinstance(outputs, (list, tuple)) else [outputs]
    shapes = ', '.join('x'.join(map(str, o.shape)) for o in outputs)
    loaded = 'mmtransnext' in sys.modules
    print(f'{args.package}: input {"x".join(map(str, args.shape))} -> {shapes} in {seconds:.3f} s '
          f'(mmtransnext {"imported" if loaded else "not imported"})')


if __name__ == '__main__':
    main()
