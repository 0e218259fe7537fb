import json
import os
from pathlib import Path

import pytest
import torch

SHARED = Path(os.environ.get('MMTRANSNEXT_SHARED', Path(__file__).resolve().parents[2] / 'shared'))
FIXTURES = SHARED / 'fixtures' / 'transnext_official'


def _require(path: Path) -> Path:
    if not path.exists():
        if os.environ.get('MMTRANSNEXT_REQUIRE_FIXTURES') == '1':
            raise FileNotFoundError(f'{path} is missing (CI needs ../shared beside the repo)')
        pytest.skip(f'reference fixtures not found at {path} (set MMTRANSNEXT_SHARED)')
    return path


@pytest.fixture(scope='session')
def golden():
    return torch.load(_require(FIXTURES / 'golden_mini.pt'), weights_only=True)


@pytest.fixture(scope='session')
def official_keys():
    with open(_require(FIXTURES / 'keys.json')) as f:
        return json.load(f)


def golden_arch(golden):
    """The fixture's architecture as a TransNeXt arch dict."""
    a = golden['arch']
    return dict(embed_dims=a['embed_dims'], depths=a['depths'], num_heads=a['num_heads'],
                mlp_ratios=a['mlp_ratios'], sr_ratios=a['sr_ratios'], window_size=a['window_size'])
