"""Images as every inferencer and picture tool expects them."""
import sys


def read_image(path):
    """The image as 8-bit BGR whatever its channels (gray, BGR, BGRA: alpha dropped) or depth (8 / 16 bit),
    so that every inferencer gets what it expects; exits with a message naming the file otherwise."""
    import mmcv
    import numpy as np
    image = mmcv.imread(path, flag='unchanged')
    if image is None:
        sys.exit(f'image {path} cannot be decoded: not an image, or a format OpenCV does not read')
    if image.dtype == np.uint16:
        image = (image // 257).astype(np.uint8)
    elif image.dtype != np.uint8:
        sys.exit(f'image {path} has {image.dtype} pixels; 8- and 16-bit images are supported')
    if image.ndim == 2:
        return mmcv.gray2bgr(image)
    return np.ascontiguousarray(image[:, :, :3])
