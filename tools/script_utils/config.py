"""Config handling shared by tools/train.py and tools/test.py."""
import argparse
import os
import os.path as osp

from mmengine.config import Config, DictAction

from mmtransnext.utils.mmengine_compat import TRUST_ENV


def add_runner_args(parser: argparse.ArgumentParser, what: str):
    """Options both tools take: --work-dir, --cfg-options, --launcher, --local-rank."""
    parser.add_argument('--work-dir', help=f'where {what} go (default: work_dirs/CONFIG_NAME)')
    parser.add_argument('--cfg-options',
                        nargs='+',
                        action=DictAction,
                        help='override config entries, e.g. train_dataloader.batch_size=4')
    parser.add_argument('--launcher', choices=['none', 'pytorch', 'slurm', 'mpi'], default='none')
    parser.add_argument('--local_rank', '--local-rank', type=int, default=0)
    add_trust_checkpoint_argument(parser)


def add_trust_checkpoint_argument(parser: argparse.ArgumentParser):
    parser.add_argument('--trust-checkpoint',
                        action='store_true',
                        help='load checkpoints that the safe unpickler refuses with full unpickling, which can run '
                        'code: only for files from a source you trust')


def apply_trust_checkpoint(args):
    """--trust-checkpoint: this process (and the processes it starts) may fully unpickle checkpoints."""
    if args.trust_checkpoint:
        os.environ[TRUST_ENV] = '1'


def parse_runner_args(parser: argparse.ArgumentParser):
    args = parser.parse_args()
    os.environ.setdefault('LOCAL_RANK', str(args.local_rank))
    apply_trust_checkpoint(args)
    return args


def load_config(path: str, cfg_options=None, work_dir=None, launcher='none') -> Config:
    """Read ``path``, apply ``--cfg-options`` and choose the work dir as the mm* tools do."""
    if not osp.isfile(path):
        raise FileNotFoundError(f'config {path} does not exist')
    cfg = Config.fromfile(path)
    cfg.launcher = launcher
    if cfg_options:
        cfg.merge_from_dict(cfg_options)
    if work_dir is not None:
        cfg.work_dir = work_dir
    elif cfg.get('work_dir') is None:
        cfg.work_dir = osp.join('./work_dirs', osp.splitext(osp.basename(path))[0])
    return cfg


def enable_visualization(cfg: Config, show_dir: str):
    """Make the test loop draw predictions into ``show_dir`` (each library names it differently)."""
    hook = cfg.default_hooks.get('visualization')
    if hook is None:
        raise KeyError('the config has no default_hooks.visualization; add '
                       "visualization=dict(type='VisualizationHook') to default_hooks to use --show-dir")
    scope = cfg.get('default_scope')
    if scope == 'mmdet':
        hook.update(draw=True, test_out_dir=osp.abspath(show_dir))
    elif scope == 'mmseg':
        hook.update(draw=True, interval=1)  # mmseg draws every 50th batch by default
        cfg.visualizer['save_dir'] = show_dir
    elif scope == 'mmpretrain':
        hook.update(enable=True, out_dir=show_dir)
    else:
        raise ValueError(f'--show-dir does not know default_scope {scope!r}')
