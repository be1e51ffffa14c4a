"""Model helpers: batch-norm folding for a frozen teacher."""

import pytest
import torch
import torch.nn as nn

from rkd_tutorial.models import EmbeddingNet, ResNetBackbone, SmallCNN, fold_batchnorm


def _randomise_running_stats(model: nn.Module, seed: int = 0) -> None:
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.1)
            m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
            m.weight.data.copy_(torch.rand(m.num_features, generator=g) + 0.5)
            m.bias.data.copy_(torch.randn(m.num_features, generator=g) * 0.1)


@pytest.mark.parametrize("backbone", [lambda: SmallCNN((8, 16, 16)), lambda: ResNetBackbone(18, in_channels=1)],
                         ids=["small-cnn", "resnet18"])
def test_fold_batchnorm_keeps_the_function_and_removes_every_batchnorm(backbone):
    torch.manual_seed(0)
    net = EmbeddingNet(backbone(), 32, normalize=True)
    _randomise_running_stats(net)
    net.eval()
    x = torch.randn(6, 1, 28, 28)
    with torch.no_grad():
        before = net(x)
        folded = fold_batchnorm(net)
        after = folded(x)
    assert folded is net
    assert not any(isinstance(m, nn.BatchNorm2d) for m in folded.modules())
    torch.testing.assert_close(after.embedding, before.embedding, rtol=1e-4, atol=1e-5)
    for a, b in zip(after.stages, before.stages):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)


def test_fold_batchnorm_refuses_a_model_in_training_mode():
    with pytest.raises(ValueError, match="eval"):
        fold_batchnorm(SmallCNN((4, 8)).train())
