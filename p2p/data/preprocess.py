"""The preprocessing modes of the official pix2pix code: which size an image is brought to.

Sizes are (height, width). ``stride`` is what every side the generator sees must be a multiple of
(2^num_downs for the U-Net).

- ``resize_and_crop`` (the default, the published runs): resize to ``load_size``, then a random
  crop of ``crop_size``.
- ``crop``: a random crop of ``crop_size`` from the image as it is (it must be at least as large).
- ``scale_width``: the width becomes ``load_size`` and the height follows the aspect ratio (at
  least the crop height, as the official code), then both sides are resized to the nearest
  multiple of the stride (the official code leaves them, and its U-Net fails unless they fit).
- ``scale_width_and_crop``: the same scaling (without the rounding), then a random crop.
- ``none``: each side resized to the nearest multiple of the stride (at least one stride), as the
  official ``__make_power_2`` does with its base of 4.

At test time (``test_size``) an image is brought to the scale the model was trained at: the crop
size for ``resize_and_crop``; its own size (padded to the stride by translate) for ``crop``; the
training rule rounded to the stride for the others.
"""

from dataclasses import dataclass

from p2p.errors import ImageTooLarge, P2PError, shown
from p2p.limits import MAX_PIXELS, MAX_SIDE

MODES = ("resize_and_crop", "crop", "scale_width", "scale_width_and_crop", "none")
Size = tuple[int, int]  # (height, width)


def as_size(value: int | list[int] | tuple[int, int], what: str = "a size") -> Size:
    """An int (a square) or [height, width] as (height, width).

    Sizes come from recipes, checkpoints and model folders, so anything else is a P2PError that
    names ``what``: another type or length, a side that is not positive, a side above MAX_SIDE or
    an area above limits.MAX_PIXELS (a model of that size would not run on an image p2p reads).
    """
    sides = [value, value] if isinstance(value, int) else value
    if not (isinstance(sides, list | tuple) and len(sides) == 2
            and all(type(side) is int for side in sides)):  # not bool, not float, not text
        raise P2PError(f"{what} is one number or [height, width], got {shown(value)}")
    height, width = sides
    if height <= 0 or width <= 0:
        raise P2PError(f"{what} must be positive, got {shown(value)}")
    if max(sides) > MAX_SIDE or height * width > MAX_PIXELS:
        raise P2PError(f"{what} must be at most {MAX_SIDE} per side and {MAX_PIXELS} pixels in "
                       f"all, got {shown(value)}")
    return height, width


def round_to_stride(size: Size, stride: int) -> Size:
    """Each side to the nearest multiple of ``stride``, at least ``stride``."""
    return tuple(max(stride, int(round(side / stride)) * stride) for side in size)


@dataclass(frozen=True)
class Preprocess:
    mode: str = "resize_and_crop"
    load_size: Size = (286, 286)  # scale_width modes: only the width, load_size[1], is used
    crop_size: Size = (256, 256)

    @property
    def crops(self) -> bool:
        return self.mode in ("resize_and_crop", "crop", "scale_width_and_crop")

    def loaded_size(self, size: Size, stride: int, label: str = "an image") -> Size:
        """The size an image of ``size`` is resized to before cropping (and kept at). Scaling a
        thin image's width up can make it larger than p2p runs on: ImageTooLarge names
        ``label``."""
        height, width = size
        if self.mode == "resize_and_crop":
            return self.load_size
        if self.mode == "crop":
            return size
        if self.mode == "none":
            return round_to_stride(size, stride)
        target = self.load_size[1]
        scaled = size if width == target and height >= self.crop_size[0] else \
            (max(int(target * height / width), self.crop_size[0]), target)
        if scaled[0] * scaled[1] > MAX_PIXELS:
            raise ImageTooLarge(f"{label}: {width}x{height} (width x height) scaled to width "
                                f"{target} would be {scaled[1]}x{scaled[0]} pixels, over the "
                                f"limit of {MAX_PIXELS}", "crop it to a wider shape first")
        return round_to_stride(scaled, stride) if self.mode == "scale_width" else scaled

    def check_fits(self, loaded: Size, label: str) -> None:
        """A crop needs an image at least as large."""
        if self.crops and (loaded[0] < self.crop_size[0] or loaded[1] < self.crop_size[1]):
            raise P2PError(f"{label}: {loaded[1]}x{loaded[0]} (width x height) after "
                           f"{self.mode} is smaller than the crop, {self.crop_size[1]}x"
                           f"{self.crop_size[0]}",
                           "lower data.crop_size, or use data.preprocess resize_and_crop")

    def at_test_time(self) -> "Preprocess":
        """The preprocessing that brings an image to a model's test-time size: resize_and_crop
        -> the crop size; the scale_width modes -> the width scaled, rounded to the stride; crop
        and none as in training."""
        if self.mode == "resize_and_crop":
            return Preprocess("resize_and_crop", self.crop_size, self.crop_size)
        if self.mode == "scale_width_and_crop":
            return Preprocess("scale_width", self.load_size, self.crop_size)
        return self

    def test_size(self, size: Size, stride: int, label: str = "an image") -> Size | None:
        """The size translate resizes an input of ``size`` to; None: keep it (pad to the
        stride)."""
        if self.mode == "crop":
            return None
        return self.at_test_time().loaded_size(size, stride, label)

    def to_dict(self) -> dict:
        return {"mode": self.mode, "load_size": list(self.load_size),
                "crop_size": list(self.crop_size)}

    @classmethod
    def from_dict(cls, values: dict) -> "Preprocess":
        """``to_dict``'s form, as checkpoints and model folders record it (checked: P2PError)."""
        if not isinstance(values, dict) or values.get("mode") not in MODES:
            raise P2PError(f"preprocess is {{mode, load_size, crop_size}} with mode one of "
                           f"{', '.join(MODES)}, got {shown(values)}")
        return cls(values["mode"], as_size(values.get("load_size"), "preprocess.load_size"),
                   as_size(values.get("crop_size"), "preprocess.crop_size"))
