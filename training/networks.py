"""The networks of the paper (Sec. 4.1): visual encoders, classification head, sequence encoder.

```
image clip  float32[B, T_c*C, H, W] --ResNet18--> [B, 8*width]      (512 at the paper's width 64)
vector clip float32[B, T_c, D]      --GRUEncoder-> [B, hidden]       (mean of top-layer outputs)
Classifier: encoder + linear        -> (logits [B, L], representation [B, D])
window of clip features [B, T_w, D] --SequenceEncoder-> (logits [B, T_w, L+1], repr [B, T_w, H])
Detector: encoder per clip + SequenceEncoder over [B, T_w, *clip]
```

Forward passes have no data-dependent Python control flow, so the visual encoder and the
sequence encoder export to ONNX with a dynamic batch axis.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

# Channels per frame of each image modality; frames of a clip are stacked as channels.
IMAGE_CHANNELS = {"depth": 1, "rgb": 3, "flow": 2}


class NetworkConfigError(ValueError):
    """A network was configured with an impossible size."""


def _require_positive(**sizes: int) -> None:
    for name, value in sizes.items():
        if value < 1:
            raise NetworkConfigError(f"{name} must be >= 1, got {value}")


def conv3x3(in_planes: int, out_planes: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_planes, out_planes, 3, stride=stride, padding=1, bias=False)


def conv1x1(in_planes: int, out_planes: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_planes, out_planes, 1, stride=stride, bias=False)


class BasicBlock(nn.Module):
    """Two 3x3 convolutions with a residual connection (projected when the shape changes)."""

    def __init__(self, in_planes: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = conv3x3(in_planes, planes, stride)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = conv3x3(planes, planes)
        self.bn2 = nn.BatchNorm2d(planes)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or in_planes != planes:
            self.shortcut = nn.Sequential(
                conv1x1(in_planes, planes, stride), nn.BatchNorm2d(planes)
            )

    def forward(self, x: Tensor) -> Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + self.shortcut(x))


class ResNet18(nn.Module):
    """ResNet-18 without its final FC: the visual encoder for image modalities.

    `in_channels` = T_c * C (a clip's frames stacked as channels). Stage widths are
    width, 2w, 4w, 8w, so the representation has `out_dim = 8 * width` features (512 at the
    paper's width 64). Global average pooling makes it accept any input size.
    """

    def __init__(self, in_channels: int, width: int = 64) -> None:
        super().__init__()
        _require_positive(in_channels=in_channels, width=width)
        self.in_channels = in_channels
        self.width = width
        self.out_dim = 8 * width
        self.conv1 = nn.Conv2d(in_channels, width, 7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)
        self.layer1 = self._stage(width, width, stride=1)
        self.layer2 = self._stage(width, 2 * width, stride=2)
        self.layer3 = self._stage(2 * width, 4 * width, stride=2)
        self.layer4 = self._stage(4 * width, 8 * width, stride=2)
        self.avgpool = nn.AdaptiveAvgPool2d(1)

        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    @staticmethod
    def _stage(in_planes: int, planes: int, stride: int) -> nn.Sequential:
        return nn.Sequential(BasicBlock(in_planes, planes, stride), BasicBlock(planes, planes))

    def forward(self, x: Tensor) -> Tensor:
        """float32[B, in_channels, H, W] -> float32[B, out_dim]."""
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return torch.flatten(self.avgpool(x), 1)


class GRUEncoder(nn.Module):
    """The visual encoder for vector modalities (skeleton features): a multi-layer GRU over the
    T_c frames of a clip; the representation is the mean over time of the top layer's outputs."""

    def __init__(
        self, input_dim: int, hidden_size: int = 512, num_layers: int = 3, dropout: float = 0.5
    ) -> None:
        super().__init__()
        _require_positive(input_dim=input_dim, hidden_size=hidden_size, num_layers=num_layers)
        self.out_dim = hidden_size
        # torch warns about dropout on a 1-layer GRU (it would do nothing), hence the guard.
        self.gru = nn.GRU(
            input_dim,
            hidden_size,
            num_layers=num_layers,
            batch_first=True,
            dropout=dropout if num_layers > 1 else 0.0,
        )

    def forward(self, x: Tensor) -> Tensor:
        """float32[B, T_c, input_dim] -> float32[B, hidden_size]."""
        outputs, _ = self.gru(x)
        return outputs.mean(dim=1)


def build_encoder(
    modality: str, clip_len: int, width: int = 64, vector_dim: int | None = None
) -> ResNet18 | GRUEncoder:
    """The visual encoder of a modality: ResNet-18 for depth/rgb/flow, else a GRU over
    `vector_dim`-d frames with hidden size 8 * width (the image encoder's output size)."""
    if modality in IMAGE_CHANNELS:
        return ResNet18(clip_len * IMAGE_CHANNELS[modality], width)
    if vector_dim is None:
        raise NetworkConfigError(
            f"modality {modality!r} is not an image modality ({', '.join(IMAGE_CHANNELS)}); "
            "a vector modality needs vector_dim"
        )
    return GRUEncoder(vector_dim, hidden_size=8 * width)


class Classifier(nn.Module):
    """An encoder (anything with `out_dim`) and a linear layer over L classes."""

    def __init__(self, encoder: nn.Module, num_classes: int) -> None:
        super().__init__()
        _require_positive(num_classes=num_classes)
        self.encoder = encoder
        self.fc = nn.Linear(encoder.out_dim, num_classes)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """A batch of clips -> (logits [B, L], representation [B, out_dim])."""
        representation = self.encoder(x)
        return self.fc(representation), representation


class SequenceEncoder(nn.Module):
    """A 1-layer GRU over the T_w clip features of a window, then linear to L+1 classes
    (index 0 = background).

    Bidirectional by default, the two directions' outputs summed (the released code);
    `causal=True` runs forward in time only, so a clip's output never depends on later clips.
    """

    def __init__(
        self, in_dim: int, num_actions: int, hidden_size: int = 512, causal: bool = False
    ) -> None:
        super().__init__()
        _require_positive(in_dim=in_dim, num_actions=num_actions, hidden_size=hidden_size)
        self.causal = causal
        self.hidden_size = hidden_size
        self.num_classes = num_actions + 1
        self.gru = nn.GRU(in_dim, hidden_size, batch_first=True, bidirectional=not causal)
        self.fc = nn.Linear(hidden_size, self.num_classes)

    def forward(self, features: Tensor) -> tuple[Tensor, Tensor]:
        """float32[B, T_w, in_dim] -> (logits [B, T_w, L+1], representation [B, T_w, hidden])."""
        outputs, _ = self.gru(features)
        if not self.causal:  # fixed at construction, not data-dependent
            outputs = outputs[..., : self.hidden_size] + outputs[..., self.hidden_size :]
        return self.fc(outputs), outputs


class Detector(nn.Module):
    """Visual encoder run on each clip of a window, then the sequence encoder."""

    def __init__(self, encoder: nn.Module, sequence: SequenceEncoder) -> None:
        super().__init__()
        self.encoder = encoder
        self.sequence = sequence

    def forward(self, windows: Tensor) -> tuple[Tensor, Tensor]:
        """[B, T_w, *clip] (clip = (T_c*C, H, W) or (T_c, D)) -> (logits [B, T_w, L+1],
        representation [B, T_w, hidden])."""
        features = self.encoder(windows.flatten(0, 1))
        return self.sequence(features.unflatten(0, windows.shape[:2]))
