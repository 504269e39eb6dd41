"""One image's bytes as the readers hand them on: decoded by PIL, or (``data.decode: device``) a JPEG
left encoded, with the size read from its header, for the device to decode in a batch
(:meth:`~gsg_zoo.data.batch_augment.PackedImages.crops`).

Every reader (folder, shards by index and streamed, Hugging Face) goes through :func:`open_image`, so
an unreadable or unidentifiable file raises here, in the loader worker, whichever way it decodes.
"""

from __future__ import annotations

import io
from dataclasses import dataclass

from PIL import Image

DEVICE_MODES = ("RGB", "L")  # JPEG modes decoded to RGB on the device; CMYK/YCCK are decoded by PIL
JPEG_END = b"\xff\xd9"  # the EOI marker: a JPEG without it at the end (truncated) is decoded by PIL


@dataclass(frozen=True)
class EncodedImage:
    """A JPEG left encoded: its bytes and the ``height`` x ``width`` its header gives."""

    data: bytes
    height: int
    width: int


def open_image(data: bytes, encoded: bool = False) -> Image.Image | EncodedImage:
    """``data`` decoded to an RGB PIL image; with ``encoded``, a JPEG the device decodes (mode RGB or L,
    ending with its EOI marker) is left encoded, only its header read (PIL's ``Image.open`` without
    ``load``). Other formats and modes are decoded as without ``encoded``.

    Raises what PIL raises for data it cannot identify or decode (``OSError``,
    ``UnidentifiedImageError``, ``SyntaxError``, ``ValueError``): the readers skip and count those.
    """
    image = Image.open(io.BytesIO(data))
    if encoded and image.format == "JPEG" and image.mode in DEVICE_MODES and data.endswith(JPEG_END):
        return EncodedImage(data, image.height, image.width)
    return image.convert("RGB")
