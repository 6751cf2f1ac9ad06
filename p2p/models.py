"""The pix2pix networks: U-Net and ResNet generators, PatchGAN discriminator (Isola et al., 2017).

The layers, channel widths, biases and init match the official PyTorch implementation exactly,
so published weights load after a key rename (see zoo.py). The U-Net is written as two flat lists
of blocks, ``down`` (encoder) and ``up`` (decoder), instead of the official recursion:
``down[i]`` halves the resolution, ``up[i]`` doubles it, and ``up[i]`` reads the concatenation
of ``down[i]``'s output (the skip) and ``up[i + 1]``'s output. The ResNet generator (the official
``resnet_6blocks`` / ``resnet_9blocks``) is ``stem``, two ``down`` blocks, residual ``blocks`` and
two ``up`` blocks, then ``head``. ``build_generator`` builds either from a ``GeneratorConfig``.

Both generators double the resolution with the published transposed convolutions, or, with
``upsample: resize``, with nearest-neighbour x2 followed by a 3x3 convolution (Odena et al.,
Distill 2016: every output pixel then gets the same number of kernel taps, so no checkerboard).
The discriminator is one PatchGAN, or ``DiscriminatorConfig.scales`` of them on the input
average-pooled 0, 1, 2, ... times (``MultiscaleDiscriminator``, as pix2pixHD, Wang et al. 2018).
"""

import contextlib
import functools
from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import asdict, dataclass, fields

import torch
import torch.nn.functional as F
from torch import nn

from p2p.errors import P2PError, shown

NORMS = ("batch", "instance", "none")
# How a generator runs at test time: "paper" as the paper's code (dropout on, each batch's own
# batch-norm statistics), "eval" as usual (running statistics, no dropout).
TEST_MODES = ("paper", "eval")
ARCHITECTURES = ("unet", "resnet")
UPSAMPLINGS = ("transpose", "resize")  # how the generators' decoders double the resolution
# The generators p2p builds, from a recipe, a checkpoint, a model folder or a published file.
# U-Nets of 5 (unet_32) to 9 (unet_512) levels. The published networks use ngf = 64; at 1024 a
# unet_256 alone has ~14 billion parameters (~220 GB for its fp32 weights, gradients and Adam
# state), beyond any single GPU or ordinary machine, so a wider one is a slip. The published
# ResNets have 6 and 9 blocks. The bounds also keep building one on the meta device, to read its
# shapes, quick.
UNET_DEPTHS = range(5, 10)
MAX_WIDTH = 1024  # ngf, ndf and channel counts
MAX_BLOCKS = 64
_KINDS = {int: "an integer", str: "text", bool: "true or false"}


def norm_layer(norm: str, channels: int) -> nn.Module:
    if norm == "batch":
        return nn.BatchNorm2d(channels)
    if norm == "instance":  # the official choice: no affine parameters, no running statistics
        return nn.InstanceNorm2d(channels, affine=False, track_running_stats=False)
    if norm == "none":
        return nn.Identity()
    raise ValueError(f"unknown norm {norm!r}; expected one of {NORMS}")


def _block(**layers: nn.Module) -> nn.Sequential:
    return nn.Sequential(OrderedDict(layers))


def _doubling(upsample: str, in_channels: int, out_channels: int, bias: bool,
              **transposed: int) -> dict[str, nn.Module]:
    """The layers of a decoder block that double the resolution: the published transposed
    convolution (stride 2; ``transposed``: its kernel and paddings), or for ``resize``,
    nearest-neighbour x2 and a 3x3 convolution that keeps the size."""
    if upsample == "resize":
        return {"upsample": nn.Upsample(scale_factor=2, mode="nearest"),
                "conv": nn.Conv2d(in_channels, out_channels, 3, 1, 1, bias=bias)}
    return {"conv": nn.ConvTranspose2d(in_channels, out_channels, stride=2, bias=bias,
                                       **transposed)}


@dataclass(frozen=True)
class GeneratorConfig:
    in_channels: int = 3
    out_channels: int = 3
    num_downs: int = 8  # 8 = unet_256, 7 = unet_128
    ngf: int = 64
    norm: str = "batch"
    dropout: bool = True
    architecture: str = "unet"  # or "resnet"; checkpoints saved before ResNets hold no key: unet
    blocks: int = 9  # resnet: residual blocks (6 = resnet_6blocks, 9 = resnet_9blocks)
    upsample: str = "transpose"  # or "resize"; files without the key: transpose

    @classmethod
    def from_dict(cls, values: dict) -> "GeneratorConfig":
        """A config as checkpoints and model folders record it (``asdict``), checked."""
        names = [f.name for f in fields(cls)]
        if not (isinstance(values, dict) and set(values) <= set(names)):
            raise P2PError(f"generator_config is a mapping of {', '.join(names)}, got "
                           f"{shown(values)}")
        return cls(**values).checked()

    def to_dict(self) -> dict:
        """The config as checkpoints and model folders record it. ``upsample`` is left out when
        it is the published transposed convolution, so that the files of published-layout
        generators stay as they were, readable by earlier p2p versions."""
        values = asdict(self)
        if self.upsample == "transpose":
            del values["upsample"]
        return values

    def checked(self) -> "GeneratorConfig":
        """This config, if every field has its type and lies within the bounds above; else a
        P2PError. Configs read from files are checked before anything is built from them."""
        for f in fields(self):
            value = getattr(self, f.name)
            if type(value) is not type(f.default):  # bool is no int here, nor 8.0 an int
                raise P2PError(f"generator_config.{f.name} must be "
                               f"{_KINDS[type(f.default)]}, got {shown(value)}")
        choices = {"norm": (self.norm, NORMS), "architecture": (self.architecture, ARCHITECTURES),
                   "upsample": (self.upsample, UPSAMPLINGS)}
        for name, (value, allowed) in choices.items():
            if value not in allowed:
                raise P2PError(f"generator_config.{name} must be one of {', '.join(allowed)}, "
                               f"got {shown(value)}")
        depth = ("num_downs", self.num_downs, UNET_DEPTHS.start, UNET_DEPTHS.stop - 1)
        ranges = [("in_channels", self.in_channels, 1, MAX_WIDTH),
                  ("out_channels", self.out_channels, 1, MAX_WIDTH),
                  ("ngf", self.ngf, 1, MAX_WIDTH),
                  depth if self.architecture == "unet" else ("blocks", self.blocks, 1, MAX_BLOCKS)]
        for name, value, low, high in ranges:
            if not low <= value <= high:
                raise P2PError(f"generator_config.{name} must be between {low} and {high}, got "
                               f"{shown(value)}")
        return self


def unet_widths(num_downs: int, ngf: int) -> list[int]:
    """Output channels of the U-Net's encoder levels (the decoder mirrors them)."""
    return [ngf, ngf * 2, ngf * 4] + [ngf * 8] * (num_downs - 3)


class UnetGenerator(nn.Module):
    def __init__(self, config: GeneratorConfig = GeneratorConfig()):
        super().__init__()
        self.config = config
        n, ngf, norm = config.num_downs, config.ngf, config.norm
        if n < 5:
            raise ValueError(f"num_downs must be at least 5, got {n}")
        # Batch norm has its own shift, so the convs before it carry no bias.
        bias = norm != "batch"
        widths = unet_widths(n, ngf)  # output channels of down[i]

        down = [_block(conv=nn.Conv2d(config.in_channels, widths[0], 4, 2, 1, bias=bias))]
        for i in range(1, n):
            layers = {"act": nn.LeakyReLU(0.2, True),
                      "conv": nn.Conv2d(widths[i - 1], widths[i], 4, 2, 1, bias=bias)}
            if i < n - 1:  # the innermost (1x1) level has no norm
                layers["norm"] = norm_layer(norm, widths[i])
            down.append(_block(**layers))

        kernel = {"kernel_size": 4, "padding": 1}  # the transposed convolutions'
        up = [_block(act=nn.ReLU(True),
                     **_doubling(config.upsample, widths[0] * 2, config.out_channels, True,
                                 **kernel),
                     tanh=nn.Tanh())]
        for i in range(1, n):
            in_channels = widths[i] if i == n - 1 else widths[i] * 2  # innermost: no skip yet
            layers = {"act": nn.ReLU(True),
                      **_doubling(config.upsample, in_channels, widths[i - 1], bias, **kernel),
                      "norm": norm_layer(norm, widths[i - 1])}
            # Dropout in the 512-channel levels next to the innermost one (3 of them in unet_256).
            if config.dropout and 4 <= i < n - 1:
                layers["dropout"] = nn.Dropout(0.5)
            up.append(_block(**layers))

        self.down = nn.ModuleList(down)
        self.up = nn.ModuleList(up)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skips = []
        for block in self.down:
            x = block(x)
            skips.append(x)
        x = self.up[-1](skips[-1])
        for i in range(len(self.up) - 2, -1, -1):
            x = self.up[i](torch.cat([skips[i], x], 1))
        return x


class ResnetBlock(nn.Module):
    """x + (pad, conv 3x3, norm, ReLU, [dropout], pad, conv 3x3, norm)(x), reflection padding."""

    def __init__(self, channels: int, norm: str, dropout: bool, bias: bool):
        super().__init__()
        layers = {"pad1": nn.ReflectionPad2d(1),
                  "conv1": nn.Conv2d(channels, channels, 3, bias=bias),
                  "norm1": norm_layer(norm, channels), "act": nn.ReLU(True)}
        if dropout:
            layers["dropout"] = nn.Dropout(0.5)
        layers |= {"pad2": nn.ReflectionPad2d(1),
                   "conv2": nn.Conv2d(channels, channels, 3, bias=bias),
                   "norm2": norm_layer(norm, channels)}
        self.body = _block(**layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


class ResnetGenerator(nn.Module):
    """The official ResnetGenerator (Johnson et al.'s style-transfer network): a 7x7 stem, two
    stride-2 convolutions, ``config.blocks`` residual blocks at 1/4 resolution, two transposed
    convolutions back, a 7x7 head and tanh. Sides must be multiples of 4."""

    def __init__(self, config: GeneratorConfig):
        super().__init__()
        self.config = config
        ngf, norm = config.ngf, config.norm
        if config.blocks < 1:
            raise ValueError(f"a ResNet generator needs at least 1 block, got {config.blocks}")
        # The official rule: a bias only before instance norm (none included: no bias either).
        bias = norm == "instance"
        self.stem = _block(pad=nn.ReflectionPad2d(3),
                           conv=nn.Conv2d(config.in_channels, ngf, 7, bias=bias),
                           norm=norm_layer(norm, ngf), act=nn.ReLU(True))
        self.down = nn.ModuleList(
            _block(conv=nn.Conv2d(ngf * m, ngf * m * 2, 3, 2, 1, bias=bias),
                   norm=norm_layer(norm, ngf * m * 2), act=nn.ReLU(True)) for m in (1, 2))
        self.blocks = nn.ModuleList(ResnetBlock(ngf * 4, norm, config.dropout, bias)
                                    for _ in range(config.blocks))
        self.up = nn.ModuleList(
            _block(**_doubling(config.upsample, ngf * m, ngf * m // 2, bias, kernel_size=3,
                               padding=1, output_padding=1),
                   norm=norm_layer(norm, ngf * m // 2), act=nn.ReLU(True)) for m in (4, 2))
        self.head = _block(pad=nn.ReflectionPad2d(3),
                           conv=nn.Conv2d(ngf, config.out_channels, 7), tanh=nn.Tanh())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        for block in (*self.down, *self.blocks, *self.up):
            x = block(x)
        return self.head(x)


def build_generator(config: GeneratorConfig) -> nn.Module:
    """The generator ``config`` describes (every place that builds one goes through here)."""
    if config.architecture == "unet":
        return UnetGenerator(config)
    if config.architecture == "resnet":
        return ResnetGenerator(config)
    raise ValueError(f"unknown generator architecture {config.architecture!r}; "
                     f"expected one of {ARCHITECTURES}")


@functools.lru_cache(maxsize=8)
def state_shapes(config: GeneratorConfig) -> dict[str, torch.Size]:
    """The names and shapes of the state_dict of the generator ``config`` describes, built on
    the meta device: no memory, no init cost (a few ms, once per config: the dict is shared)."""
    with torch.device("meta"):
        return {name: value.shape for name, value in build_generator(config).state_dict().items()}


def input_multiple(config: GeneratorConfig) -> int:
    """Input sides must be multiples of this: 2**num_downs for a U-Net, 4 for a ResNet."""
    return 2**config.num_downs if config.architecture == "unet" else 4


@dataclass(frozen=True)
class DiscriminatorConfig:
    in_channels: int = 6  # concat(A, B)
    ndf: int = 64
    n_layers: int = 3  # 3 = the 70x70 PatchGAN; 0 = the 1x1 "pixel" GAN
    norm: str = "batch"
    scales: int = 1  # PatchGANs judging the pair at 1, 1/2, 1/4, ... of its size


class PatchDiscriminator(nn.Module):
    """PatchGAN: one real/fake logit per overlapping patch (70x70 with n_layers=3)."""

    def __init__(self, config: DiscriminatorConfig = DiscriminatorConfig()):
        super().__init__()
        self.config = config
        ndf, norm = config.ndf, config.norm
        bias = norm != "batch"
        if config.n_layers == 0:  # pixel GAN: 1x1 convolutions only
            layers = [nn.Conv2d(config.in_channels, ndf, 1), nn.LeakyReLU(0.2, True),
                      nn.Conv2d(ndf, ndf * 2, 1, bias=bias), norm_layer(norm, ndf * 2),
                      nn.LeakyReLU(0.2, True), nn.Conv2d(ndf * 2, 1, 1, bias=bias)]
        else:
            layers = [nn.Conv2d(config.in_channels, ndf, 4, 2, 1), nn.LeakyReLU(0.2, True)]
            width = ndf
            for n in range(1, config.n_layers + 1):
                stride = 2 if n < config.n_layers else 1  # the last hidden conv keeps the size
                next_width = ndf * min(2**n, 8)
                layers += [nn.Conv2d(width, next_width, 4, stride, 1, bias=bias),
                           norm_layer(norm, next_width), nn.LeakyReLU(0.2, True)]
                width = next_width
            layers.append(nn.Conv2d(width, 1, 4, 1, 1))
        self.model = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor, features: bool = False) -> torch.Tensor | list:
        """The logits; with ``features``, the list of the hidden features (the output of each
        LeakyReLU: n_layers + 1 of them in a PatchGAN) followed by the logits."""
        if not features:
            return self.model(x)
        outputs = []
        for layer in self.model:
            x = layer(x)
            if isinstance(layer, nn.LeakyReLU):
                outputs.append(x)
        return [*outputs, x]


def downsample(x: torch.Tensor) -> torch.Tensor:
    """Halve a batch for the next discriminator scale: 3x3 average pooling, stride 2, padding 1,
    the padding left out of each average (so borders are not darkened)."""
    return F.avg_pool2d(x, 3, stride=2, padding=1, count_include_pad=False)


class MultiscaleDiscriminator(nn.Module):
    """``config.scales`` PatchGANs of the same config; the k-th judges the pair downsampled k
    times. Returns a list with one PatchGAN output (logits, or features and logits) per scale."""

    def __init__(self, config: DiscriminatorConfig):
        super().__init__()
        self.config = config
        self.scales = nn.ModuleList(PatchDiscriminator(config) for _ in range(config.scales))

    def forward(self, x: torch.Tensor, features: bool = False) -> list:
        outputs = []
        for k, discriminator in enumerate(self.scales):
            if k:
                x = downsample(x)
            outputs.append(discriminator(x, features))
        return outputs


def build_discriminator(config: DiscriminatorConfig) -> nn.Module:
    """One PatchGAN (the published layout and keys), or a ``MultiscaleDiscriminator``."""
    return PatchDiscriminator(config) if config.scales == 1 else MultiscaleDiscriminator(config)


def init_weights(model: nn.Module, std: float = 0.02) -> nn.Module:
    """The pix2pix init: conv weights ~ N(0, std), batch-norm weights ~ N(1, std), biases 0."""
    for module in model.modules():
        if isinstance(module, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)):
            nn.init.normal_(module.weight, 0.0, std)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.BatchNorm2d):
            nn.init.normal_(module.weight, 1.0, std)
            nn.init.zeros_(module.bias)
    return model


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


@contextlib.contextmanager
def buffers_restored(model: nn.Module) -> Iterator[nn.Module]:
    """Run ``model`` in training mode without keeping what that does to its buffers (batch-norm
    running statistics), e.g. for test-time generation in the paper's mode."""
    saved = {name: b.clone() for name, b in model.named_buffers()}
    try:
        yield model
    finally:
        with torch.no_grad():
            for name, b in model.named_buffers():
                b.copy_(saved[name])
