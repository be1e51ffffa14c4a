"""Model zoo: backbones, an embedding head, a classifier head.

Every model returns an :class:`Output` with everything a distillation loss may
look at: the final vector (``embedding``), the ``logits`` of a classifier, the
``pooled`` penultimate features, and the feature maps of each ``stage`` (for
FitNets and attention transfer). One forward pass serves every method.

* :class:`SmallCNN`: a family of small convolutional backbones for 28x28
  images (Fashion-MNIST), fast on a CPU. Teachers are wide, students narrow.
* :class:`ResNetBackbone`: torchvision's ResNet-18/50, optionally with
  ImageNet weights, with a stem adapted to small images (3x3 convolution,
  stride 1, no max-pooling) and to grey images.
* :class:`EmbeddingNet`: backbone + linear head + optional L2 normalisation,
  the metric-learning model of the RKD paper (the official code normalises
  the teacher's embedding and not the student's).
* :class:`Classifier`: backbone + linear classifier; RKD acts on its pooled
  penultimate features (``Output.embedding``), HKD on its logits.
* :func:`fold_batchnorm`: a frozen (eval-mode) network with every batch norm
  folded into the convolution before it: same function, fewer kernels.
"""

from __future__ import annotations

from typing import List, NamedTuple, Optional, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

__all__ = [
    "Output",
    "SmallCNN",
    "ResNetBackbone",
    "EmbeddingNet",
    "Classifier",
    "build_backbone",
    "count_parameters",
    "fold_batchnorm",
]


class Output(NamedTuple):
    """What every model of this package returns."""

    embedding: torch.Tensor  # N x D: the vector distilled by RKD / DarkRank
    logits: Optional[torch.Tensor]  # N x classes for classifiers, else None
    pooled: torch.Tensor  # N x C: globally pooled last feature map
    stages: List[
        torch.Tensor
    ]  # feature maps after each stage (FitNet, attention)


class SmallCNN(nn.Module):
    """Stages of (conv 3x3, BN, ReLU, 2x2 max-pooling), one per width.

    ``widths=(32, 64, 128)`` (the quick profile's teacher) has 94 k parameters,
    ``(8, 16, 32)`` (its student) 6 k. Input ``N x C x 28 x 28``; stage outputs
    14x14, 7x7, 3x3. Small enough to train on a laptop's CPU in seconds.
    """

    def __init__(
        self, widths: Sequence[int] = (32, 64, 128), in_channels: int = 1
    ):
        super().__init__()
        layers, c = [], in_channels
        for w in widths:
            layers.append(
                nn.Sequential(
                    nn.Conv2d(c, w, 3, padding=1, bias=False),
                    nn.BatchNorm2d(w),
                    nn.ReLU(inplace=True),
                    nn.MaxPool2d(2),
                )
            )
            c = w
        self.stages = nn.ModuleList(layers)
        self.stage_channels = list(widths)
        self.out_channels = widths[-1]

    def forward(self, x: torch.Tensor):
        stages = []
        for stage in self.stages:
            x = stage(x)
            stages.append(x)
        return x.mean(dim=(2, 3)), stages


class ResNetBackbone(nn.Module):
    """A torchvision ResNet without its classifier; returns (pooled, [layer1..layer4]).

    Args:
        depth: 18 or 50.
        pretrained: load ImageNet weights (needs the network once; cached by torchvision).
        small_images: replace the 7x7/stride-2 stem and max-pooling with a 3x3/stride-1
            convolution, for 28x28 or 32x32 inputs.
        in_channels: 1 for grey images (the stem is rebuilt; pretrained weights of
            the stem are averaged over RGB).
    """

    def __init__(
        self,
        depth: int = 18,
        pretrained: bool = False,
        small_images: bool = True,
        in_channels: int = 3,
    ):
        super().__init__()
        import torchvision

        builders = {
            18: (torchvision.models.resnet18, "IMAGENET1K_V1"),
            50: (torchvision.models.resnet50, "IMAGENET1K_V2"),
        }
        if depth not in builders:
            raise ValueError(
                f"ResNetBackbone: depth must be 18 or 50, got {depth}"
            )
        build, weights = builders[depth]
        net = build(weights=weights if pretrained else None)
        if small_images or in_channels != 3:
            old = net.conv1
            k, s, p = (3, 1, 1) if small_images else (7, 2, 3)
            net.conv1 = nn.Conv2d(in_channels, 64, k, s, p, bias=False)
            if pretrained and not small_images:
                with torch.no_grad():
                    net.conv1.weight.copy_(
                        old.weight.mean(1, keepdim=True).expand_as(
                            net.conv1.weight
                        )
                    )
        if small_images:
            net.maxpool = nn.Identity()
        self.stem = nn.Sequential(net.conv1, net.bn1, net.relu, net.maxpool)
        self.stages = nn.ModuleList(
            [net.layer1, net.layer2, net.layer3, net.layer4]
        )
        expansion = 4 if depth == 50 else 1
        self.stage_channels = [
            64 * expansion,
            128 * expansion,
            256 * expansion,
            512 * expansion,
        ]
        self.out_channels = self.stage_channels[-1]

    def forward(self, x: torch.Tensor):
        x = self.stem(x)
        stages = []
        for stage in self.stages:
            x = stage(x)
            stages.append(x)
        return x.mean(dim=(2, 3)), stages


def build_backbone(
    name: str,
    in_channels: int = 1,
    pretrained: bool = False,
    small_images: bool = True,
) -> nn.Module:
    """Backbone by name: ``cnn-<w1>-<w2>-<w3>`` (e.g. ``cnn-64-128-256``), ``resnet18``, ``resnet50``."""
    if name.startswith("cnn-"):
        try:
            widths = [int(w) for w in name.split("-")[1:]]
        except ValueError:
            widths = []
        if not widths:
            raise ValueError(
                f"backbone {name!r}: write the stage widths as integers, e.g. 'cnn-32-64-128'"
            )
        return SmallCNN(widths, in_channels)
    if name in ("resnet18", "resnet50"):
        return ResNetBackbone(
            int(name[6:]), pretrained, small_images, in_channels
        )
    raise ValueError(
        f"unknown backbone {name!r}: use 'cnn-<widths>' (e.g. 'cnn-32-64-128'), 'resnet18' or 'resnet50'"
    )


class EmbeddingNet(nn.Module):
    """Backbone + linear embedding head + optional L2 normalisation (metric learning)."""

    def __init__(
        self,
        backbone: nn.Module,
        embedding_dim: int = 128,
        normalize: bool = False,
    ):
        super().__init__()
        self.backbone = backbone
        self.head = nn.Linear(backbone.out_channels, embedding_dim)
        self.normalize = normalize
        self.embedding_dim = embedding_dim

    def forward(self, x: torch.Tensor) -> Output:
        pooled, stages = self.backbone(x)
        e = self.head(pooled)
        if self.normalize:
            e = F.normalize(e, dim=1)
        return Output(e, None, pooled, stages)


class Classifier(nn.Module):
    """Backbone + linear classifier.

    ``Output.embedding`` is the pooled penultimate layer. With
    ``normalize_features=True`` the embedding is L2-normalised (the paper's
    CIFAR-100 runs apply RKD to normalised pooled features); the classifier
    always sees the raw pooled features.
    """

    def __init__(
        self,
        backbone: nn.Module,
        num_classes: int = 10,
        normalize_features: bool = False,
    ):
        super().__init__()
        self.backbone = backbone
        self.fc = nn.Linear(backbone.out_channels, num_classes)
        self.normalize_features = normalize_features

    def forward(self, x: torch.Tensor) -> Output:
        pooled, stages = self.backbone(x)
        e = F.normalize(pooled, dim=1) if self.normalize_features else pooled
        return Output(e, self.fc(pooled), pooled, stages)


def count_parameters(model: nn.Module) -> int:
    """Number of trainable parameters."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def fold_batchnorm(model: nn.Module) -> nn.Module:
    """Fold every eval-mode ``BatchNorm2d`` into the ``Conv2d`` that feeds it, in place; returns ``model``.

    In eval mode a batch norm is a fixed per-channel affine map,
    ``y = gamma (x - mean) / sqrt(var + eps) + beta``, so it can be merged
    into the preceding convolution's weights and bias
    (:func:`torch.nn.utils.fusion.fuse_conv_bn_eval`); the batch norm
    becomes ``nn.Identity``. The network computes the same function (up to
    rounding) with one kernel less per convolution: useful for a frozen
    teacher that is run at every training step. Pairs are found where this
    package's models (and torchvision's ResNets) put them: consecutive
    ``(Conv2d, BatchNorm2d)`` in an ``nn.Sequential``, and attributes
    ``convK`` / ``bnK`` of one module (``bnK`` applied to ``convK``'s output).
    Raises ``ValueError`` for a model in training mode (its batch norms use
    batch statistics, which cannot be folded).
    """
    from torch.nn.utils.fusion import fuse_conv_bn_eval

    if model.training:
        raise ValueError(
            "fold_batchnorm: call model.eval() first; training-mode batch norm cannot be folded"
        )
    for module in list(model.modules()):
        children = module._modules
        if isinstance(module, nn.Sequential):
            pairs = list(zip(list(children), list(children)[1:]))
        else:
            pairs = [
                ("conv" + name[2:], name)
                for name in list(children)
                if name.startswith("bn")
            ]
        for conv_name, bn_name in pairs:
            conv, bn = children.get(conv_name), children.get(bn_name)
            if (
                isinstance(conv, nn.Conv2d)
                and isinstance(bn, nn.BatchNorm2d)
                and bn.track_running_stats
            ):
                children[conv_name] = fuse_conv_bn_eval(conv, bn)
                children[bn_name] = nn.Identity()
    return model
