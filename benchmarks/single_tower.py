"""A Single-Tower reference scorer in the X-Pool style, for cost comparisons only.

Single-Tower retrieval lets every (query, video) pair interact online. The reference here is X-Pool's
text-conditioned attention pooling (the same block that PIG runs offline with its pseudo-query, see
docs/pig-method.md §5): the text embedding is the query, the T frame embeddings of a video are the keys
and values of a 1-head D-wide cross-attention, and the score is the cosine between the text and the
pooled video. It has to run for every pair, so a gallery must keep T vectors per video, not one.

Two forms, equal in value (tested):

* ``XPoolScorer.score`` is the faithful form: the gallery stores the T frame embeddings and keys/values are
  projected from them at query time (once per video per query batch, as X-Pool's evaluation does), then the
  output projection, LN, linear and LN run per pair.
* ``precompute_keys_values`` + ``score_from_keys_values`` is the cheapest form of the same function that we
  know: the gallery stores the keys and the *out-projected* values (``Wo·V + bo``; since the attention weights
  sum to 1, ``Wo·(Σ a V) + bo = Σ a (Wo·V + bo)``), i.e. 2·T·D numbers per video, and only the text-dependent
  part runs per pair: the T attention logits, the pooling, LN2, the D x D ``linear_proj`` and LN3 (LN2 and LN3
  are not linear, so ``linear_proj`` cannot be folded away). A fair lower bound for this family.
"""

from __future__ import annotations

import math

import torch
from torch import nn


class XPoolScorer(nn.Module):
    """Text-conditioned attention pooling over frame features + cosine score (X-Pool, 1 head).

    ``q = Wq LN1(t)``, ``K = Wk LN1(F)``, ``V = Wv LN1(F)``, ``a = softmax(K q / sqrt(D))``,
    ``o = LN2(Wo Σ a V + bo)``, ``v = LN3(o + W_lin o)``, ``score = cos(t, v)``.
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

    def _check(self, text_embeds: torch.Tensor, video_tensor: torch.Tensor, name: str) -> None:
        if text_embeds.dim() != 2 or text_embeds.shape[-1] != self.embed_dim:
            raise ValueError(f"XPoolScorer(embed_dim={self.embed_dim}): text_embeds must be [Q, {self.embed_dim}], "
                             f"got {tuple(text_embeds.shape)}")
        if video_tensor.dim() != 3 or video_tensor.shape[-1] != self.embed_dim:
            raise ValueError(f"XPoolScorer(embed_dim={self.embed_dim}): {name} must be [N, T, {self.embed_dim}], "
                             f"got {tuple(video_tensor.shape)}")

    def attend(self, text_embeds: torch.Tensor, keys: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
        """Text-conditioned pooling ``Σ_t a_t V_t`` of every pair: [Q, D], [N, T, D] x 2 -> [N, Q, D]."""
        query = self.q_proj(self.layer_norm1(text_embeds))                               # [Q, D]
        logits = torch.einsum("qd,ntd->nqt", query, keys) / math.sqrt(self.embed_dim)    # [N, Q, T]
        return torch.bmm(logits.softmax(dim=-1), values)                                # [N, Q, D]

    def _finish(self, text_embeds: torch.Tensor, pooled: torch.Tensor) -> torch.Tensor:
        """LN2, linear, LN3 per pair, then the cosine to the text: [Q, D], [N, Q, D] -> scores [Q, N]."""
        pooled = self.layer_norm2(pooled)
        video = self.layer_norm3(pooled + self.linear_proj(pooled))                     # [N, Q, D], per pair
        video = nn.functional.normalize(video, dim=-1)
        text = nn.functional.normalize(text_embeds, dim=-1)                              # [Q, D]
        return torch.einsum("qd,nqd->qn", text, video)                                   # [Q, N]

    def score(self, text_embeds: torch.Tensor, frame_embeds: torch.Tensor) -> torch.Tensor:
        """Faithful X-Pool scores of every (text, video) pair from the stored frame embeddings.

        ``text_embeds`` [Q, D], ``frame_embeds`` [N, T, D] -> [Q, N].
        """
        self._check(text_embeds, frame_embeds, "frame_embeds")
        frames = self.layer_norm1(frame_embeds)
        keys, values = self.k_proj(frames), self.v_proj(frames)                         # [N, T, D] each
        pooled = self.out_proj(self.attend(text_embeds, keys, values))                 # [N, Q, D], per pair
        return self._finish(text_embeds, pooled)

    def precompute_keys_values(self, frame_embeds: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Offline part of the cheap form: ``frame_embeds`` [N, T, D] -> (keys, out-projected values), each
        [N, T, D]. ``values = Wo (Wv LN1(F) + bv) + bo`` (the output projection folded into the values)."""
        if frame_embeds.dim() != 3 or frame_embeds.shape[-1] != self.embed_dim:
            raise ValueError(f"frame_embeds must be [N, T, {self.embed_dim}], got {tuple(frame_embeds.shape)}")
        frames = self.layer_norm1(frame_embeds)
        return self.k_proj(frames), self.out_proj(self.v_proj(frames))

    def score_from_keys_values(self, text_embeds: torch.Tensor, keys: torch.Tensor,
                               values: torch.Tensor) -> torch.Tensor:
        """Scores of every (text, video) pair from ``precompute_keys_values``' output (equal to ``score``).

        ``text_embeds`` [Q, D], ``keys``/``values`` [N, T, D] -> scores [Q, N].
        """
        self._check(text_embeds, keys, "keys")
        if values.shape != keys.shape:
            raise ValueError(f"values {tuple(values.shape)} must have the shape of keys {tuple(keys.shape)}")
        return self._finish(text_embeds, self.attend(text_embeds, keys, values))
