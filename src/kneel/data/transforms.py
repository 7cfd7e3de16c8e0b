"""The fixed (non-random) geometry between a prepared image and the network input, as exact affine transforms.

Validation and inference see: [rescale to the input spacing] -> pad to ``pad x pad`` (centred, zeros) -> centre crop
``input_size x input_size``. The helpers live in :mod:`kneel.geometry` (the one module where coordinates change frame)
and are re-exported here for the datasets and augmentations.
"""

from kneel.geometry import centre_crop_offset, pad_crop, pad_offset, rescale

__all__ = ["rescale", "pad_offset", "pad_crop", "centre_crop_offset"]
