"""CIFAR-size ResNet-18 (3x3 stem, no max-pool) with optional deformable last stage.

The deformable ConvNets paper makes the 3x3 convolutions of the last stage (res5a, res5b, res5c
of ResNet-101) deformable. ResNet-18's last stage (``layer4``) has two basic blocks; with
``deform_blocks=k`` both 3x3 convolutions of its last ``k`` blocks become deformable.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from robustbench_geo.models.deformable import DeformableConv
from robustbench_geo.models.registry import register_model


def _conv3x3(cin, cout, stride, deform: str | None):
    if deform:
        return DeformableConv(cin, cout, 3, stride, padding=1, bias=False, version=deform)
    return nn.Conv2d(cin, cout, 3, stride, padding=1, bias=False)


class BasicBlock(nn.Module):
    def __init__(self, cin, cout, stride=1, deform: str | None = None):
        super().__init__()
        self.conv1, self.bn1 = _conv3x3(cin, cout, stride, deform), nn.BatchNorm2d(cout)
        self.conv2, self.bn2 = _conv3x3(cout, cout, 1, deform), nn.BatchNorm2d(cout)
        self.shortcut = nn.Sequential()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        return F.relu(self.bn2(self.conv2(out)) + self.shortcut(x))


class ResNet18(nn.Module):
    def __init__(self, in_channels=3, num_classes=10, image_size=(32, 32), width: int = 64,
                 deform_blocks: int = 0, deform: str = "v1"):
        super().__init__()
        if not 0 <= deform_blocks <= 2:
            raise ValueError(f"deform_blocks: expected 0, 1 or 2 (blocks of the last stage), got {deform_blocks}")
        w = width
        self.stem = nn.Sequential(nn.Conv2d(in_channels, w, 3, 1, 1, bias=False), nn.BatchNorm2d(w), nn.ReLU(inplace=True))
        stages, cin = [], w
        for i, (cout, stride) in enumerate([(w, 1), (2 * w, 2), (4 * w, 2), (8 * w, 2)]):
            blocks = []
            for j in range(2):
                use = deform if (i == 3 and j >= 2 - deform_blocks) else None
                blocks.append(BasicBlock(cin, cout, stride if j == 0 else 1, use))
                cin = cout
            stages.append(nn.Sequential(*blocks))
        self.layer1, self.layer2, self.layer3, self.layer4 = stages
        self.head = nn.Linear(cin, num_classes)

    def forward(self, x):
        x = self.layer4(self.layer3(self.layer2(self.layer1(self.stem(x)))))
        return self.head(x.mean(dim=(2, 3)))


@register_model("resnet18", task="image")
def resnet18(in_channels=3, num_classes=10, image_size=(32, 32), width: int = 64) -> ResNet18:
    """CIFAR ResNet-18 (3x3 stem, no max-pool)."""
    return ResNet18(in_channels, num_classes, image_size, width)


@register_model("deform_resnet18", task="image")
def deform_resnet18(in_channels=3, num_classes=10, image_size=(32, 32), width: int = 64, deform_blocks: int = 2,
                    deform: str = "v1") -> ResNet18:
    """CIFAR ResNet-18 whose last stage (res5) uses deformable 3x3 convolutions."""
    return ResNet18(in_channels, num_classes, image_size, width, deform_blocks, deform)
