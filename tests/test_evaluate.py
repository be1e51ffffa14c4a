"""Recall@K against brute force; accuracy and embed."""

import pytest
import torch

from rkd_tutorial.evaluate import accuracy, embed, recall_at_k
from rkd_tutorial.models import Classifier, EmbeddingNet, SmallCNN


def brute_force_recall(x, y, ks):
    d = torch.cdist(x.double(), x.double())
    d.fill_diagonal_(float("inf"))
    order = d.argsort(dim=1)
    return {k: sum(bool((y[order[i, :k]] == y[i]).any()) for i in range(len(x))) / len(x) for k in ks}


@pytest.mark.parametrize("n,chunk", [(50, 7), (200, 1024), (301, 64)])
def test_recall_matches_brute_force(n, chunk):
    torch.manual_seed(n)
    x, y = torch.randn(n, 8), torch.randint(0, 6, (n,))
    assert recall_at_k(x, y, (1, 2, 4, 8), chunk_size=chunk) == pytest.approx(brute_force_recall(x, y, (1, 2, 4, 8)))


def test_recall_excludes_the_query_itself():
    x = torch.tensor([[0.0], [10.0], [20.0]])
    y = torch.tensor([0, 1, 2])  # every point is its own class: no other example shares its label
    assert recall_at_k(x, y, (1, 2)) == {1: 0.0, 2: 0.0}


def test_recall_bad_input():
    with pytest.raises(ValueError, match="1..N-1"):
        recall_at_k(torch.randn(4, 2), torch.zeros(4, dtype=torch.long), (8,))
    with pytest.raises(ValueError, match="expects 4 labels"):
        recall_at_k(torch.randn(4, 2), torch.zeros(5, dtype=torch.long))
    with pytest.raises(ValueError, match="N x D"):
        recall_at_k(torch.randn(4), torch.zeros(4, dtype=torch.long))


def test_embed_and_accuracy_shapes():
    x, y = torch.randn(10, 1, 28, 28), torch.randint(0, 10, (10,))
    batches = [(x[:6], y[:6]), (x[6:], y[6:])]
    e, labels = embed(EmbeddingNet(SmallCNN((4, 8, 8)), 5), batches)
    assert e.shape == (10, 5) and torch.equal(labels, y)
    acc = accuracy(Classifier(SmallCNN((4, 8, 8)), 10), batches)
    assert 0.0 <= acc <= 1.0
