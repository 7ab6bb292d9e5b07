"""Weighted k-nearest-neighbour classification of frozen features (DINO's k-NN protocol).

Features are L2-normalised; each test image's k most cosine-similar training images vote for
their class with weight ``exp(similarity / T)``, ``T = 0.07``; classes are ranked by total vote.
This is ``knn_classifier`` of DINO's ``eval_knn.py`` written as a pure function of tensors.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..protocols import DINO_K_VALUES, DINO_TEMPERATURE


@torch.inference_mode()
def knn_votes(
    train_features: torch.Tensor,
    train_labels: torch.Tensor,
    test_features: torch.Tensor,
    num_classes: int,
    k_values: tuple[int, ...] = DINO_K_VALUES,
    temperature: float = DINO_TEMPERATURE,
    chunk_size: int = 1024,
) -> dict[int, torch.Tensor]:
    """Class votes `(N_test, num_classes)` for each k (capped at the number of training images).

    One similarity top-k per test chunk serves every k (the neighbours of a smaller k are the
    first ones of a larger k). Training labels of -1 (a class absent from the class list) vote
    for nothing.
    """
    if train_features.shape[0] == 0:
        raise ValueError("k-NN needs at least one training example")
    train = F.normalize(train_features.float(), dim=1)
    test = F.normalize(test_features.float(), dim=1).to(train.device)
    labels = train_labels.to(train.device)
    max_k = min(max(k_values), train.shape[0])
    votes = {k: [] for k in k_values}
    for start in range(0, test.shape[0], chunk_size):
        similarity = test[start : start + chunk_size] @ train.T
        top_similarity, top_index = similarity.topk(max_k, dim=1, largest=True, sorted=True)
        weights = (top_similarity / temperature).exp()
        neighbour_labels = labels[top_index]
        valid = neighbour_labels >= 0
        weights = weights * valid
        for k in k_values:
            kk = min(k, max_k)
            scores = torch.zeros(top_index.shape[0], num_classes, device=train.device)
            scores.scatter_add_(1, neighbour_labels[:, :kk].clamp_min(0), weights[:, :kk])
            votes[k].append(scores.cpu())
    return {k: torch.cat(chunks) for k, chunks in votes.items()}


def ranked_classes(scores: torch.Tensor, top: int = 5) -> torch.Tensor:
    """`(N, min(top, C))` class ids by decreasing score: what the top-k accuracy metric reads."""
    return scores.topk(min(top, scores.shape[1]), dim=1, largest=True, sorted=True).indices
