"""Derive the compact copy of the reference fixtures that ships in the repo (tests/data/).

    python tools/data/make_compact_fixtures.py [--src ../shared/fixtures/transnext_official/golden_mini.pt]

The full set (the authors' implementation's outputs, ../shared) is what CI tests against. A user who clones the
repo has no ../shared; the compact copy keeps the exactness contract running for them: the weights, and three
of the five cases (stage outputs, loss, input gradient) in both position-bias modes, without the parameter
gradients and the classifier (tests that need those say so when they skip). Float32, unchanged values.
keys.json (the released checkpoints' key layouts) is copied as it is.
"""
import argparse
import shutil
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[2]
CASES = ('same_size', 'interpolate_odd', 'extrapolate_odd')
CASE_KEYS = ('name', 'img_size', 'pretrain_size', 'is_extrapolation', 'input', 'outputs', 'loss_weights', 'loss',
             'input_grad')


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--src', default=ROOT.parent / 'shared/fixtures/transnext_official/golden_mini.pt')
    parser.add_argument('--out', default=ROOT / 'tests/data/golden_compact.pt')
    args = parser.parse_args()
    full = torch.load(args.src, weights_only=True)
    compact = dict(arch=full['arch'],
                   backbone_state_dict=full['backbone_state_dict'],
                   compact=True,
                   cases=[{
                       k: case[k]
                       for k in CASE_KEYS
                   } for case in full['cases'] if case['name'] in CASES])
    torch.save(compact, args.out)
    print(f'wrote {args.out} ({Path(args.out).stat().st_size / 2**20:.1f} MiB, cases {", ".join(CASES)})')
    keys = Path(args.out).parent / 'keys.json'
    shutil.copyfile(Path(args.src).parent / 'keys.json', keys)
    print(f'wrote {keys}')


if __name__ == '__main__':
    main()
