"""A Single-Tower reference scorer in the X-Pool style, for cost comparisons only.

Single-Tower retrieval lets every (query, video) pair interact online. The reference here is X-Pool's
text-conditioned attention pooling (the same block that PIG runs offline with its pseudo-query, see
docs/pig-method.md §5): the text embedding is the query, the T frame embeddings of a video are the keys
and values of a 1-head D-wide cross-attention, and the score is the cosine between the text and the
pooled video. It has to run for every pair, so a gallery must keep all T frame embeddings per video.

``XPoolScorer.score`` is the faithful form (keys/values are projected from the stored frames at query
time, once per video per query batch, as X-Pool does). ``precompute_keys_values`` +
``score_from_keys_values`` is a cheaper variant that stores the projected keys and values instead (2·T·D
numbers per video) and runs only the text-dependent part per pair: a fair lower bound for this family.
"""

from __future__ import annotations

import math

import torch
from torch import nn


class XPoolScorer(nn.Module):
    """Text-conditioned attention pooling over frame features + cosine score (X-Pool, 1 head).

    ``q = Wq LN1(t)``, ``K = Wk LN1(F)``, ``V = Wv LN1(F)``, ``a = softmax(K q / sqrt(D))``,
    ``o = LN2(Wo Σ a V)``, ``v = LN3(o + W_lin o)``, ``score = cos(t, v)``.
    Random weights are fine: the cost does not depend on the values.
    """

    def __init__(self, embed_dim: int):
        super().__init__()
        self.embed_dim = embed_dim
        self.layer_norm1 = nn.LayerNorm(embed_dim)
        self.q_proj = nn.Linear(embed_dim, embed_dim)
        self.k_proj = nn.Linear(embed_dim, embed_dim)
        self.v_proj = nn.Linear(embed_dim, embed_dim)
        self.out_proj = nn.Linear(embed_dim, embed_dim)
        self.layer_norm2 = nn.LayerNorm(embed_dim)
        self.linear_proj = nn.Linear(embed_dim, embed_dim)
        self.layer_norm3 = nn.LayerNorm(embed_dim)

    def precompute_keys_values(self, frame_embeds: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Project frames to keys and values. ``frame_embeds`` [N, T, D] -> (K, V), each [N, T, D]."""
        frames = self.layer_norm1(frame_embeds)
        return self.k_proj(frames), self.v_proj(frames)

    def pool_from_keys_values(self, text_embeds: torch.Tensor, keys: torch.Tensor,
                              values: torch.Tensor) -> torch.Tensor:
        """Text-conditioned video embeddings of every (text, video) pair.

        ``text_embeds`` [Q, D], ``keys``/``values`` [N, T, D] -> pooled video embeddings [N, Q, D].
        """
        if text_embeds.shape[-1] != self.embed_dim or keys.shape[-1] != self.embed_dim:
            raise ValueError(f"XPoolScorer(embed_dim={self.embed_dim}) got text {tuple(text_embeds.shape)} "
                             f"and keys {tuple(keys.shape)}")
        query = self.q_proj(self.layer_norm1(text_embeds))                            # [Q, D]
        logits = torch.einsum("qd,ntd->nqt", query, keys) / math.sqrt(self.embed_dim)  # [N, Q, T]
        attention = logits.softmax(dim=-1)
        pooled = torch.einsum("nqt,ntd->nqd", attention, values)                      # [N, Q, D]
        pooled = self.layer_norm2(self.out_proj(pooled))
        return self.layer_norm3(pooled + self.linear_proj(pooled))                    # [N, Q, D], per pair

    def score_from_keys_values(self, text_embeds: torch.Tensor, keys: torch.Tensor,
                               values: torch.Tensor) -> torch.Tensor:
        """Cosine scores of every (text, video) pair from projected keys/values.

        ``text_embeds`` [Q, D], ``keys``/``values`` [N, T, D] -> scores [Q, N].
        """
        video = nn.functional.normalize(self.pool_from_keys_values(text_embeds, keys, values), dim=-1)  # [N, Q, D]
        text = nn.functional.normalize(text_embeds, dim=-1)                           # [Q, D]
        return torch.einsum("qd,nqd->qn", text, video)                                # [Q, N]

    def score(self, text_embeds: torch.Tensor, frame_embeds: torch.Tensor) -> torch.Tensor:
        """Scores of every (text, video) pair. ``text_embeds`` [Q, D], ``frame_embeds`` [N, T, D] -> [Q, N]."""
        if frame_embeds.dim() != 3:
            raise ValueError(f"frame_embeds must be [num_videos, num_frames, dim], got {tuple(frame_embeds.shape)}")
        keys, values = self.precompute_keys_values(frame_embeds)
        return self.score_from_keys_values(text_embeds, keys, values)
