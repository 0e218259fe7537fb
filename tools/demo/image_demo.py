"""Draw a model's predictions on an image: detections / instance masks (mmdet), segmentation (mmseg)
or the predicted class (mmpretrain), whichever the config's default_scope names.

    python tools/demo/image_demo.py IMAGE CONFIG CHECKPOINT [--out result.png] [--device cpu]
"""
import argparse
import glob
import os
import os.path as osp
import sys
import tempfile
import warnings

warnings.filterwarnings('ignore', message='pkg_resources is deprecated', category=UserWarning)

from mmengine.config import Config  # noqa: E402

import mmtransnext  # noqa: E402,F401

sys.path.insert(0, osp.dirname(osp.dirname(osp.abspath(__file__))))  # tools/, for script_utils
from script_utils.config import add_trust_checkpoint_argument, apply_trust_checkpoint  # noqa: E402
from script_utils.images import read_image  # noqa: E402


def build_inferencer(config, checkpoint, device):
    scope = Config.fromfile(config).get('default_scope')
    if scope == 'mmdet':
        from mmdet.apis import DetInferencer
        return DetInferencer(model=config, weights=checkpoint, device=device, show_progress=False)
    if scope == 'mmseg':
        from mmseg.apis import MMSegInferencer
        return MMSegInferencer(model=config, weights=checkpoint, device=device)
    if scope == 'mmpretrain':
        from mmpretrain.apis import ImageClassificationInferencer
        return ImageClassificationInferencer(model=config, pretrained=checkpoint, device=device)
    raise ValueError(f'{config}: default_scope {scope!r} is not mmdet, mmseg or mmpretrain')


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('image')
    parser.add_argument('config')
    parser.add_argument('checkpoint')
    parser.add_argument('--out', default='result.png', help='PNG to write')
    parser.add_argument('--device', default='cuda:0' if __import__('torch').cuda.is_available() else 'cpu')
    add_trust_checkpoint_argument(parser)
    args = parser.parse_args()
    apply_trust_checkpoint(args)
    for path, what in ((args.image, 'image'), (args.config, 'config'), (args.checkpoint, 'checkpoint')):
        if not osp.isfile(path):
            sys.exit(f'{what} {path} not found')
    image = read_image(args.image)
    inferencer = build_inferencer(args.config, args.checkpoint, args.device)
    with tempfile.TemporaryDirectory() as tmp:
        if type(inferencer).__name__ == 'ImageClassificationInferencer':
            inferencer(image, show_dir=tmp)
        else:
            inferencer(image, out_dir=tmp)
        drawn = glob.glob(osp.join(tmp, '**', '*.*'), recursive=True)
        drawn = [p for p in drawn if p.lower().endswith(('.png', '.jpg', '.jpeg'))]
        if not drawn:
            sys.exit('the inferencer drew nothing')
        os.makedirs(osp.dirname(osp.abspath(args.out)), exist_ok=True)
        from PIL import Image
        Image.open(drawn[0]).save(args.out)
    print(f'wrote {args.out}')


if __name__ == '__main__':
    main()
