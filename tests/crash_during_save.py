"""Imported by a toy run (custom_imports) in tests/test_reliability.py: the process dies while it writes
iter_3's checkpoint, with half of the file written, as a kill during a save would leave it."""
import os

from mmengine.fileio import LocalBackend

_put = LocalBackend.put


def _put_half_and_die(self, obj, filepath):
    if 'iter_3.pth' in str(filepath):
        with open(filepath, 'wb') as f:
            f.write(obj[:len(obj) // 2])
        os._exit(137)
    return _put(self, obj, filepath)


LocalBackend.put = _put_half_and_die
