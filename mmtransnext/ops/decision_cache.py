"""Where ``attn_impl='auto'`` keeps what it measured: one JSON file per cache directory, one section per device.

``$MMTRANSNEXT_CACHE_DIR/backends.json`` (default ``~/.cache/mmtransnext``)::

    {"format": "mmtransnext-backends", "version": 1,
     "devices": {"<device>": {"software": {...}, "decisions": {"<key>": {...}}, "rejected": {"<op>/<backend>": why}}}}

A device's section holds only while the software it was measured with (:func:`software_versions`) is the software
running now: a new torch, Triton, CUDA, mmtransnext or a rebuilt kernel makes it stale, and it is measured again.

* Writes are atomic (a temporary file in the same directory, then ``os.replace``) and, where ``fcntl`` exists,
  read-merge-write under a lock file, so processes of one node that decide at once neither corrupt the file nor drop
  each other's sections.
* A file that does not parse, or is not ours, is ignored with a warning (and replaced at the next write).
* A directory that cannot be written costs one warning: the decisions stay in memory for this process.
"""
import hashlib
import json
import os
import os.path as osp
import tempfile
from contextlib import contextmanager
from functools import lru_cache
from typing import Dict, Optional

FORMAT = 'mmtransnext-backends'
VERSION = 1
FILE_NAME = 'backends.json'


def cache_dir() -> str:
    return os.environ.get('MMTRANSNEXT_CACHE_DIR') or osp.join(osp.expanduser('~'), '.cache', 'mmtransnext')


def cache_path() -> str:
    return osp.join(cache_dir(), FILE_NAME)


def _distribution_version(name: str) -> Optional[str]:
    from importlib import metadata
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


@lru_cache(maxsize=None)
def _kernel_code() -> str:
    """A digest of the kernels' code: the built extension (size and time), the Triton kernels' sources and the rules
    that verify and choose (autotune.py), so that a rebuilt or edited kernel, or a changed tolerance, of the same
    package version is measured and verified again."""
    from . import ext_loader
    digest = hashlib.sha256()
    if ext_loader.ext is not None and getattr(ext_loader.ext, '__file__', None):
        stat = os.stat(ext_loader.ext.__file__)
        digest.update(f'{ext_loader.ext.__file__}:{stat.st_size}:{stat.st_mtime_ns}'.encode())
    here = osp.dirname(osp.abspath(__file__))
    kernels = osp.join(here, 'triton_kernels')
    sources = [osp.join(kernels, name) for name in sorted(os.listdir(kernels)) if name.endswith('.py')]
    for path in sources + [osp.join(here, 'autotune.py')]:
        with open(path, 'rb') as f:
            digest.update(f.read())
    return digest.hexdigest()[:16]


def software_versions() -> Dict[str, Optional[str]]:
    """What a measurement holds for: torch, CUDA, Triton, mmtransnext and its kernels' code."""
    import torch

    from ..version import __version__
    return {
        'torch': torch.__version__,
        'cuda': torch.version.cuda,
        'triton': _distribution_version('triton'),
        'mmtransnext': __version__,
        'kernels': _kernel_code(),
    }


def read(warn) -> Dict[str, dict]:
    """Every device's section of the file (empty when there is none); ``warn(message)`` hears why a file is
    ignored."""
    path = cache_path()
    try:
        with open(path) as f:
            data = json.load(f)
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as error:  # unreadable, or not JSON (a torn or foreign file)
        warn(f'ignoring the backend cache {path}: it does not parse ({type(error).__name__}: {error}); '
             'measuring again')
        return {}
    if not (isinstance(data, dict) and data.get('format') == FORMAT and isinstance(data.get('devices'), dict)):
        warn(f'ignoring the backend cache {path}: it is not an mmtransnext backend cache; measuring again')
        return {}
    if data.get('version') != VERSION:
        warn(f'ignoring the backend cache {path}: format version {data.get("version")!r}, this mmtransnext reads '
             f'{VERSION}; measuring again')
        return {}
    return {device: section for device, section in data['devices'].items() if _is_section(section)}


def _is_section(section) -> bool:
    return (isinstance(section, dict) and isinstance(section.get('software'), dict)
            and isinstance(section.get('decisions'), dict) and isinstance(section.get('rejected', {}), dict))


@contextmanager
def _locked(directory: str):
    try:
        import fcntl
    except ImportError:  # not POSIX: the atomic replace alone (a concurrent writer's section may be lost)
        yield
        return
    with open(osp.join(directory, FILE_NAME + '.lock'), 'a') as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def write_section(device: str, section: dict, warn) -> bool:
    """Replace ``device``'s section of the file, keeping the others; False (after ``warn``) where it cannot."""
    directory = cache_dir()
    try:
        os.makedirs(directory, exist_ok=True)
        with _locked(directory):
            devices = read(lambda message: None)  # a broken file was reported when it was read; replaced here
            devices[device] = section
            text = json.dumps({'format': FORMAT, 'version': VERSION, 'devices': devices}, indent=1, sort_keys=True)
            handle, temporary = tempfile.mkstemp(prefix=FILE_NAME + '.', suffix='.tmp', dir=directory)
            try:
                with os.fdopen(handle, 'w') as f:
                    f.write(text)
                os.replace(temporary, cache_path())
            except BaseException:
                os.unlink(temporary)
                raise
    except OSError as error:
        warn(f'cannot write the backend cache in {directory} ({type(error).__name__}: {error}): the decisions are '
             'kept in memory for this process only; set MMTRANSNEXT_CACHE_DIR to a writable directory to keep them')
        return False
    return True
