"""PIG: Hybrid-Tower text-to-video retrieval (ICCV 2025) on Hugging Face CLIP.

Method specification: docs/pig-method.md (section numbers "§" below refer to it); module map: docs/model.md.

Video side (offline, one vector per video):
    pixel_values [B, T, 3, H, W]
      -> ViP tower (§2): CLIP's vision transformer over [video CLS, proxies, T x (frame-CLS + P patches)]
         with the proxy-guided attention pattern (`PIGViPEncoderLayer`: block-wise under SDPA, no S x S mask)
      -> ITS (§3): top-k patches by the last layer's video-CLS attention (parameter-free)
      -> pseudo-query generator (§4): causal copy of CLIP's text transformer over
         [bos, CLS, proxies, frame-CLS x T, ITS top-k, eos] -> pseudo-query at the eos slot
      -> pseudo interaction (§5): pseudo-query attends [CLS, proxies, frame-CLS] -> the video embedding
Text side (online): CLIP's text tower, unchanged.

Baselines in the same class: `use_pseudo_query=False` is CLIP-ViP (video embedding = projected video CLS) and
`video_tower="meanp"` is CLIP4Clip meanP.

One model, one modeling file, as transformers does (`modeling_clip.py`, `modeling_x_clip.py`): every layer of the
model is read here top to bottom, which is why this file is longer than the package's usual ~450 lines.

This file must import only `torch`, `transformers` and relative modules: it is copied next to saved checkpoints
so that `AutoModel.from_pretrained(dir, trust_remote_code=True)` works without this package installed.
"""

import contextlib
import inspect
import math
import os
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from transformers import AutoModel, CLIPConfig, CLIPModel, PreTrainedModel
from transformers import initialization as init
from transformers.masking_utils import create_causal_mask
from transformers.modeling_outputs import BaseModelOutput, BaseModelOutputWithPooling
from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS
from transformers.models.clip.modeling_clip import (
    CLIPEncoder,
    CLIPEncoderLayer,
    CLIPVisionConfig,
    CLIPVisionEmbeddings,
    eager_attention_forward,
)
from transformers.utils import ModelOutput, can_return_tuple
from transformers.utils import logging as hf_logging

from .configuration_pig import PIGConfig
from .model_card import write_minimal_model_card

# transformers renamed `create_causal_mask(past_key_values=...)` to `cache=...` within 5.x (the old name warns).
_CAUSAL_MASK_CACHE_ARGUMENT = "cache" if "cache" in inspect.signature(create_causal_mask).parameters else "past_key_values"

# ---------------------------------------------------------------------------------------------------------- outputs


@dataclass
class PIGOutput(ModelOutput):
    r"""Output of [`PIGModel.forward`].

    Args:
        loss (`torch.FloatTensor` of shape `()`, *optional*, returned when `return_loss=True`):
            `contrastive_loss + generation_loss_weight * generation_loss` (§6.2), over the global batch when
            torch.distributed is initialised.
        contrastive_loss (`torch.FloatTensor` of shape `()`, *optional*):
            Symmetric InfoNCE, the two directions summed (§10 row 11).
        generation_loss (`torch.FloatTensor` of shape `()`, *optional*):
            `mean(2 - 2 cos(pseudo_query, text))` (§4.3), unweighted; `None` for the baselines.
        logits_per_text (`torch.FloatTensor` of shape `(n_text, n_video)`):
            `exp(logit_scale) * cos(text, video)` for this process's inputs.
        logits_per_video (`torch.FloatTensor` of shape `(n_video, n_text)`):
            The transpose of `logits_per_text`.
        text_embeds (`torch.FloatTensor` of shape `(n_text, projection_dim)`):
            L2-normalised text embeddings (float32).
        video_embeds (`torch.FloatTensor` of shape `(n_video, projection_dim)`):
            L2-normalised video embeddings (float32): the pseudo-interaction output for PIG, the projected video
            CLS for CLIP-ViP, the mean frame embedding for meanP.
        pseudo_query_embeds (`torch.FloatTensor` of shape `(n_video, projection_dim)`, *optional*):
            L2-normalised pseudo-queries (float32); `None` for the baselines.
        text_model_output (`BaseModelOutputWithPooling`):
            The output of [`PIGModel.get_text_features`] (hidden states / attentions when asked), as in CLIP.
        video_model_output (`PIGVideoOutput`):
            The output of [`PIGModel.get_video_features`].
    """

    loss: torch.FloatTensor | None = None
    contrastive_loss: torch.FloatTensor | None = None
    generation_loss: torch.FloatTensor | None = None
    logits_per_text: torch.FloatTensor | None = None
    logits_per_video: torch.FloatTensor | None = None
    text_embeds: torch.FloatTensor | None = None
    video_embeds: torch.FloatTensor | None = None
    pseudo_query_embeds: torch.FloatTensor | None = None
    text_model_output: BaseModelOutputWithPooling | None = None
    video_model_output: BaseModelOutputWithPooling | None = None

    def to_tuple(self) -> tuple:
        """As `CLIPOutput.to_tuple`: the nested tower outputs become tuples too."""
        return tuple(
            self[key].to_tuple() if key in ("text_model_output", "video_model_output") else self[key]
            for key in self.keys()
        )


@dataclass
class PIGViPEncoderOutput(BaseModelOutput):
    r"""Output of [`PIGModel.encode_vip`]: CLIP's encoder output plus the attention ITS reads.

    Args:
        cls_attention (`torch.FloatTensor` of shape `(batch, heads, sequence)`, *optional*):
            The last layer's post-softmax attention of the video CLS over all tokens (float32, no gradient).
    """

    cls_attention: torch.FloatTensor | None = None


@dataclass
class PIGVideoOutput(BaseModelOutputWithPooling):
    r"""Output of [`PIGModel.get_video_features`].

    Args:
        last_hidden_state (`torch.FloatTensor` of shape `(batch, sequence, vision_hidden)`):
            Last vision layer, before CLIP's post-LN. ViP: `sequence = M + T * (1 + P)` in the §2.3 layout.
            meanP: the frames' sequences one after the other (`T * (1 + P)`).
        pooler_output (`torch.FloatTensor` of shape `(batch, projection_dim)`):
            The video embedding, not normalised: the vector to store for retrieval.
        pseudo_query_embeds (`torch.FloatTensor` of shape `(batch, projection_dim)`, *optional*):
            The generator's pseudo-query `t_p` (not normalised); `None` for the baselines.
        informative_token_indices (`torch.LongTensor` of shape `(batch, its_top_k)`, *optional*):
            Positions (in `last_hidden_state`) of the ITS tokens, in descending score order.
        hidden_states (`tuple(torch.FloatTensor)`, *optional*, returned when `output_hidden_states=True`):
            The vision tower's input (after CLIP's pre-LN) and each layer's output, shaped as
            `last_hidden_state`.
        attentions (`tuple(torch.FloatTensor)`, *optional*, returned when `output_attentions=True`):
            Each vision layer's post-softmax weights, eager attention only (as CLIP): ViP `(batch, heads, S, S)`,
            meanP per frame `(batch * frames, heads, 1 + P, 1 + P)`.
    """

    pseudo_query_embeds: torch.FloatTensor | None = None
    informative_token_indices: torch.LongTensor | None = None


# ----------------------------------------------------------------------------------------------------------- losses


def gather_features(*features: torch.Tensor | None) -> tuple[torch.Tensor | None, ...]:
    """All-gather `[n_local, ...]` tensors from every process, with gradients, concatenated in rank order.

    The one place where PIG talks to torch.distributed; `forward` calls it only when its caller asks
    (`gather_across_processes=True`), because a collective called on one rank alone waits forever. Without an
    initialised process group (or with one process) the inputs come back unchanged. `None` entries pass
    through. The backward of the gather sums the gradients that every process's loss sends to this process's
    rows; with DDP's gradient averaging this gives exactly the gradient of the loss over the global batch (§6.2).
    """
    if not (torch.distributed.is_available() and torch.distributed.is_initialized()):
        return features
    if torch.distributed.get_world_size() == 1:
        return features
    return tuple(None if feature is None else _all_gather_with_grad(feature) for feature in features)


def _all_gather_with_grad(tensor: torch.Tensor) -> torch.Tensor:
    """`[n, ...]` on each of W processes -> `[W * n, ...]` in rank order; the backward sums over processes."""
    from torch.distributed import _functional_collectives as funcol

    if hasattr(funcol, "all_gather_single"):
        # torch >= 2.13: differentiable; the replacement the deprecation of the function below points to
        group = torch.distributed.group.WORLD
        return funcol.all_gather_single(tensor.contiguous(), 0, group)
    from torch.distributed.nn.functional import all_gather

    return torch.cat(all_gather(tensor), dim=0)


def contrastive_loss(text_embeds: torch.Tensor, video_embeds: torch.Tensor, logit_scale: torch.Tensor) -> torch.Tensor:
    """Symmetric InfoNCE with the two directions summed, not averaged (§6.2, §10 row 11).

    Args:
        text_embeds: `[N, D]` L2-normalised; row i is the caption of video i.
        video_embeds: `[N, D]` L2-normalised.
        logit_scale: scalar, already exponentiated (the temperature's inverse).
    """
    logits_per_text = logit_scale * text_embeds @ video_embeds.t()  # [N, N]
    labels = torch.arange(logits_per_text.shape[0], device=logits_per_text.device)
    return F.cross_entropy(logits_per_text, labels) + F.cross_entropy(logits_per_text.t(), labels)


def generation_loss(pseudo_query_embeds: torch.Tensor, text_embeds: torch.Tensor) -> torch.Tensor:
    """Reconstruction loss `mean_i(2 - 2 cos(t_p,i, t_i))` (§4.3): squared L2 between unit vectors.

    Args:
        pseudo_query_embeds: `[N, D]` generator outputs (any norm).
        text_embeds: `[N, D]` caption embeddings (any norm), the targets.
    """
    cosine = (F.normalize(pseudo_query_embeds, dim=-1) * F.normalize(text_embeds, dim=-1)).sum(dim=-1)  # [N]
    return (2.0 - 2.0 * cosine).mean()


# --------------------------------------------------------------------------------------------------- ViP tower (§2)


class PIGViPEmbeddings(nn.Module):
    """The new parameters of the ViP tower (§2.2) and the token layout of §2.3.

    CLIP's own patch, class and position embeddings are passed in at call time (they stay under `clip.`):
    this module holds only `proxy_tokens` [N, D] (std-1 init, §10 row 17), the shared `frame_cls` [D]
    (a copy of CLIP's class embedding, §10 row 12; absent with `use_frame_cls=False`, the original CLIP-ViP
    layout) and `temporal_embedding` [1, num_frames, D] (zeros).
    """

    def __init__(self, config: PIGConfig):
        super().__init__()
        hidden_size = config.clip_config.vision_config.hidden_size
        self.proxy_tokens = nn.Parameter(torch.empty(config.num_proxy_tokens, hidden_size))
        self.frame_cls = nn.Parameter(torch.empty(hidden_size)) if config.use_frame_cls else None
        self.temporal_embedding = nn.Parameter(torch.zeros(1, config.num_frames, hidden_size))

    def temporal_table(self, num_frames: int) -> torch.Tensor:
        """`[num_frames, D]`: the table itself, or its linear interpolation along time for another frame count."""
        table = self.temporal_embedding  # [1, T0, D]
        if num_frames != table.shape[1]:
            table = F.interpolate(table.transpose(1, 2), size=num_frames, mode="linear").transpose(1, 2)
        return table[0]

    def forward(self, pixel_values: torch.Tensor, clip_embeddings: CLIPVisionEmbeddings) -> torch.Tensor:
        """`[B, T, 3, H, W]` -> `[B, M + T * (1 + P), D]` (before CLIP's pre-LN); `[B, M + T * P, D]` without
        frame-CLS tokens."""
        batch, num_frames = pixel_values.shape[:2]
        frames = pixel_values.flatten(0, 1).to(clip_embeddings.patch_embedding.weight.dtype)  # [B*T, 3, H, W]
        patches = clip_embeddings.patch_embedding(frames).flatten(2).transpose(1, 2)  # [B*T, P, D]
        num_patches, hidden = patches.shape[1:]
        positions = clip_embeddings.position_embedding.weight  # [1 + P, D]
        temporal = self.temporal_table(num_frames)  # [T, D]

        frames = patches.view(batch, num_frames, num_patches, hidden) + positions[1:] + temporal[:, None]
        if self.frame_cls is not None:
            frame_cls = (self.frame_cls + positions[0] + temporal)[None, :, None]  # [1, T, 1, D]
            frame_cls = frame_cls.expand(batch, -1, -1, -1)
            frames = torch.cat([frame_cls.to(frames.dtype), frames], dim=2)  # [B, T, 1 + P, D]
        frames = frames.reshape(batch, -1, hidden)  # [B, T*L, D]

        global_tokens = torch.cat([clip_embeddings.class_embedding[None], self.proxy_tokens], dim=0) + positions[0]
        global_tokens = global_tokens[None].expand(batch, -1, -1).to(frames.dtype)  # [B, M, D]
        return torch.cat([global_tokens, frames], dim=1)  # [B, M + T*L, D]


def vip_attention_mask(num_global_tokens: int, num_frames: int, tokens_per_frame: int, dtype: torch.dtype,
                       device: torch.device | None = None) -> torch.Tensor:
    """The additive `[1, 1, S, S]` mask of the ViP attention pattern (§2.4), `S = M + T * L`.

    `allowed[q, k] = q < M or k < M or frame(q) == frame(k)`: the global tokens (video CLS, proxies) see and are
    seen by every token; a frame token sees the globals and its own frame. Allowed entries are 0, the others the
    dtype's minimum (not -inf, so that a softmax in any dtype stays finite).
    """
    seq_len = num_global_tokens + num_frames * tokens_per_frame
    frame_of = torch.full((seq_len,), -1, device=device)
    frame_of[num_global_tokens:] = torch.arange(num_frames, device=device).repeat_interleave(tokens_per_frame)
    is_global = frame_of < 0
    allowed = is_global[:, None] | is_global[None, :] | (frame_of[:, None] == frame_of[None, :])  # [S, S]
    mask = torch.zeros(seq_len, seq_len, dtype=dtype, device=device)
    return mask.masked_fill(~allowed, torch.finfo(dtype).min)[None, None]


class PIGViPEncoderLayer(CLIPEncoderLayer):
    """A CLIP vision encoder layer with the ViP attention pattern (§2.4); the ViP tower is a stack of these.

    It is a `CLIPEncoderLayer`: the same children (`self_attn`, `layer_norm1`, `mlp`, `layer_norm2`), so parameter
    names and every saved checkpoint stay CLIP's, and checkpointing comes from CLIP's `GradientCheckpointingLayer`
    (`model.activation_checkpointing_enable()`). The attention follows the vision config's `_attn_implementation`:

    * `"eager"`: full attention over the `S` tokens with the explicit mask of `vip_attention_mask`; it can return
      the attention weights `[B, heads, S, S]` (`output_attentions=True`).
    * any other implementation (`"sdpa"`, ...): block-wise, two calls of that attention function and no `S x S`
      matrix (S = 2,368 at B/16). The global queries (the first `M`) attend all `S` keys; the frame queries are
      batched as `B * T` sequences whose keys are `[globals, own frame]`. The result equals the masked one.

    Without a video layout (`num_frames=None`) the layer is CLIP's own (e.g. `model.clip.get_image_features`).
    """

    def __init__(self, config: CLIPVisionConfig, num_global_tokens: int):
        super().__init__(config)
        self.num_global_tokens = num_global_tokens

    @classmethod
    def from_clip_layer(cls, layer: CLIPEncoderLayer, num_global_tokens: int) -> "PIGViPEncoderLayer":
        """A ViP layer made of `layer`'s modules: the very same parameter tensors, no new ones, no random draws
        (a model built under a seed gets the same weights with or without this swap)."""
        with torch.device("meta"):  # the children built here are replaced at once by `layer`'s
            vip_layer = cls(layer.self_attn.config, num_global_tokens)
        for name, module in layer.named_children():
            setattr(vip_layer, name, module)
        return vip_layer.train(layer.training)

    def forward(
        self,
        hidden_states: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        num_frames: int | None = None,
        output_attentions: bool = False,
        return_cls_attention: bool = False,
        **kwargs,
    ):
        """`[B, S, D]` with `S = M + T * L` -> `(hidden_states [B, S, D], attention weights, CLS attention)`.

        Args:
            num_frames: `T`; `None` runs CLIP's plain layer (then `attention_mask` and `kwargs` are CLIP's and the
                return value is CLIP's, a tensor).
            output_attentions: return the post-softmax weights `[B, heads, S, S]` (eager only; `None` otherwise,
                as CLIP does under SDPA).
            return_cls_attention: return the video CLS query's post-softmax attention over all S tokens
                `[B, heads, S]` (float32, no gradient), which ITS reads from the last layer (§3).
        """
        if num_frames is None:
            return super().forward(hidden_states, attention_mask, **kwargs)
        residual = hidden_states
        attn_output, attn_weights, cls_attention = self._vip_attention(
            self.layer_norm1(hidden_states), num_frames, output_attentions, return_cls_attention
        )
        hidden_states = residual + attn_output
        hidden_states = hidden_states + self.mlp(self.layer_norm2(hidden_states))
        return hidden_states, attn_weights, cls_attention

    def _vip_attention(self, hidden_states, num_frames, output_attentions, return_cls_attention):
        """CLIP's attention projections with the §2.4 pattern: `[B, S, D]` -> `([B, S, D], weights, CLS attention)`."""
        attention = self.self_attn
        batch, seq_len, width = hidden_states.shape
        heads, head_dim = attention.num_heads, attention.head_dim
        num_global = self.num_global_tokens
        tokens_per_frame = (seq_len - num_global) // num_frames
        dropout = attention.dropout if self.training else 0.0
        query = attention.q_proj(hidden_states).view(batch, seq_len, heads, head_dim)
        key = attention.k_proj(hidden_states).view(batch, seq_len, heads, head_dim)
        value = attention.v_proj(hidden_states).view(batch, seq_len, heads, head_dim)
        all_keys, all_values = key.transpose(1, 2), value.transpose(1, 2)  # [B, H, S, hd]

        attn_weights = None
        implementation = attention.config._attn_implementation
        if implementation in (None, "eager"):
            mask = vip_attention_mask(num_global, num_frames, tokens_per_frame, query.dtype, query.device)
            attn_output, attn_weights = eager_attention_forward(
                attention, query.transpose(1, 2), all_keys, all_values, mask, scaling=attention.scale, dropout=dropout
            )  # [B, S, H, hd], [B, H, S, S]
            attn_output = attn_output.reshape(batch, seq_len, width)
            if not output_attentions:
                attn_weights = None
        else:
            attend = ALL_ATTENTION_FUNCTIONS.get_interface(implementation, eager_attention_forward)
            options = dict(scaling=attention.scale, dropout=dropout, is_causal=False, output_attentions=output_attentions)
            # Global queries over all keys.
            global_query = query[:, :num_global].transpose(1, 2)  # [B, H, M, hd]
            global_out, _ = attend(attention, global_query, all_keys, all_values, None, **options)  # [B, M, H, hd]

            # Frame queries over [globals, own frame], one sequence per (video, frame).
            def per_frame(tensor):  # [B, S, H, hd] -> [B*T, H, L, hd]
                tensor = tensor[:, num_global:].reshape(batch, num_frames, tokens_per_frame, heads, head_dim)
                return tensor.permute(0, 1, 3, 2, 4).reshape(batch * num_frames, heads, tokens_per_frame, head_dim)

            def globals_per_frame(tensor):  # [B, S, H, hd] -> [B*T, H, M, hd]
                tensor = tensor[:, :num_global].transpose(1, 2)[:, None]  # [B, 1, H, M, hd]
                return tensor.expand(-1, num_frames, -1, -1, -1).reshape(batch * num_frames, heads, num_global, head_dim)

            frame_keys = torch.cat([globals_per_frame(key), per_frame(key)], dim=2)  # [B*T, H, M+L, hd]
            frame_values = torch.cat([globals_per_frame(value), per_frame(value)], dim=2)  # [B*T, H, M+L, hd]
            frame_out, _ = attend(attention, per_frame(query), frame_keys, frame_values, None, **options)  # [B*T, L, H, hd]
            attn_output = torch.cat(
                [global_out.reshape(batch, num_global, width), frame_out.reshape(batch, num_frames * tokens_per_frame, width)],
                dim=1,
            )  # [B, S, D]

        cls_attention = None
        if return_cls_attention:
            with torch.no_grad():
                # The video CLS is a global query, so its row is unmasked: a softmax over all S keys (§11).
                cls_query = query[:, :1].transpose(1, 2).float()  # [B, H, 1, hd]
                scores = (cls_query @ all_keys.float().transpose(-1, -2)) * attention.scale  # [B, H, 1, S]
                cls_attention = scores.softmax(dim=-1)[:, :, 0]  # [B, H, S]
        return attention.out_proj(attn_output), attn_weights, cls_attention


# ------------------------------------------------------------------------------------------------------ ITS (§3)


def select_informative_tokens(
    cls_attention: torch.Tensor,
    num_global_tokens: int,
    num_frames: int,
    top_k: int,
    head_reduction: str = "max",
) -> torch.LongTensor:
    """Informativeness Token Selector (§3): the `top_k` patch positions the video CLS attends to most.

    Args:
        cls_attention: `[B, heads, S]` post-softmax attention of the video CLS in the last layer.
        head_reduction: `"max"` (paper) or `"mean"` over heads.
    Returns:
        `[B, top_k]` positions into the §2.3 sequence, patches only (globals and frame-CLS excluded), pooled over
        all frames, in descending score order. Hard selection: no gradient flows through it.
    """
    with torch.no_grad():
        if head_reduction == "max":
            scores = cls_attention.amax(dim=1)  # [B, S]
        elif head_reduction == "mean":
            scores = cls_attention.mean(dim=1)
        else:
            raise ValueError(f"its_head_reduction must be 'max' or 'mean', got {head_reduction!r}")
        seq_len = scores.shape[1]
        tokens_per_frame = (seq_len - num_global_tokens) // num_frames
        candidate = torch.ones(seq_len, dtype=torch.bool, device=scores.device)
        candidate[:num_global_tokens] = False
        candidate[num_global_tokens::tokens_per_frame] = False  # frame-CLS positions M + f*L
        scores = scores.masked_fill(~candidate, float("-inf"))
        return scores.topk(top_k, dim=-1, sorted=True).indices  # [B, k]


# ------------------------------------------------------------------------------------ pseudo-query generator (§4)


class PIGPseudoQueryGenerator(nn.Module):
    """Causal copy of CLIP's text transformer that turns video tokens into one pseudo-query (§4).

    Parameters (under `generator.`): `video_mapper` (Linear projection_dim -> text width), `bos_embedding` /
    `eos_embedding` (slots initialised from CLIP's `<|startoftext|>` / `<|endoftext|>` token rows; trainable unless
    `learnable_bos_eos=False`; no `bos_embedding` with `generator_use_bos=False`), `position_embedding`,
    `encoder.layers.*` and `final_layer_norm` (CLIP text names),
    `text_projection` (copy of CLIP's, if `generator_output_projection`). No token-embedding table (§10 row 18).
    """

    def __init__(self, config: PIGConfig, text_config):
        super().__init__()
        width = text_config.hidden_size
        projection_dim = config.clip_config.projection_dim
        self.text_config = text_config  # for the causal-mask helper (attention implementation)
        self.video_mapper = nn.Linear(projection_dim, width)
        slots = ("bos_embedding", "eos_embedding") if config.generator_use_bos else ("eos_embedding",)
        if not config.generator_use_bos:
            self.bos_embedding = None
        for name in slots:
            if config.learnable_bos_eos:
                setattr(self, name, nn.Parameter(torch.empty(width)))
            else:
                self.register_buffer(name, torch.empty(width))
        self.position_embedding = nn.Embedding(text_config.max_position_embeddings, width)
        self.encoder = CLIPEncoder(text_config)
        self.final_layer_norm = nn.LayerNorm(width, eps=text_config.layer_norm_eps)
        self.text_projection = (
            nn.Linear(width, projection_dim, bias=False) if config.generator_output_projection else None
        )

    def clip_weight_pairs(self, clip: CLIPModel, bos_token_id: int, eos_token_id: int):
        """`(generator tensor, CLIP tensor)` pairs: the copy that initialises the generator from CLIP's text tower."""
        text = clip.text_model
        modules = [
            (self.encoder, text.encoder),
            (self.final_layer_norm, text.final_layer_norm),
            (self.position_embedding, text.embeddings.position_embedding),
        ]
        if self.text_projection is not None:
            modules.append((self.text_projection, clip.text_projection))
        pairs = []
        for target, source in modules:
            source_params = dict(source.named_parameters())
            pairs.extend((param, source_params[name]) for name, param in target.named_parameters())
        token_table = text.embeddings.token_embedding.weight
        if self.bos_embedding is not None:
            pairs.append((self.bos_embedding, token_table[bos_token_id]))
        pairs.append((self.eos_embedding, token_table[eos_token_id]))
        return pairs

    def forward(self, video_tokens: torch.Tensor) -> torch.Tensor:
        """`[B, n, projection_dim]` tokens in the order [CLS, proxies, frame-CLS, ITS] -> pseudo-query `[B, dim]`."""
        mapped = self.video_mapper(video_tokens)  # [B, n, W]
        batch = mapped.shape[0]
        eos = self.eos_embedding.to(mapped.dtype).expand(batch, 1, -1)
        pieces = [mapped, eos]
        if self.bos_embedding is not None:
            pieces.insert(0, self.bos_embedding.to(mapped.dtype).expand(batch, 1, -1))
        sequence = torch.cat(pieces, dim=1)  # [B, n + 2, W] ([B, n + 1, W] without [bos])
        positions = torch.arange(sequence.shape[1], device=sequence.device)
        sequence = sequence + self.position_embedding(positions)
        no_cache = {_CAUSAL_MASK_CACHE_ARGUMENT: None}
        causal_mask = create_causal_mask(
            config=self.text_config, inputs_embeds=sequence, attention_mask=None, **no_cache
        )  # None under SDPA (is_causal is used instead)
        hidden = self.encoder(inputs_embeds=sequence, attention_mask=causal_mask, is_causal=True).last_hidden_state
        pseudo_query = self.final_layer_norm(hidden[:, -1])  # the [eos] slot, [B, W]
        if self.text_projection is not None:
            pseudo_query = self.text_projection(pseudo_query)  # [B, projection_dim]
        return pseudo_query


# --------------------------------------------------------------------------------------- pseudo interaction (§5)


class PIGIdentityInitLinear(nn.Linear):
    """A Linear layer whose weight starts as the identity and bias as zero (the pseudo interaction's init, §5)."""


class PIGPseudoInteraction(nn.Module):
    """One-layer, one-head X-Pool cross-attention: the pseudo-query attends the video's global tokens (§5).

    `q = Wq LN1(t_p)`, `K, V = Wk, Wv LN1(tokens)` (the same LN1), `a = softmax(K q / sqrt(d) / temp)`,
    `o = LN2(Wo a V)`, `v = LN3(o + Dropout(W_lin o))`. No residual from `t_p`: the output depends on the
    pseudo-query only through the attention weights and the query.
    """

    def __init__(self, config: PIGConfig):
        super().__init__()
        dim = config.clip_config.projection_dim
        self.attn_temp = config.interaction_attn_temp
        self.layer_norm1 = nn.LayerNorm(dim)
        self.q_proj = PIGIdentityInitLinear(dim, dim)
        self.k_proj = PIGIdentityInitLinear(dim, dim)
        self.v_proj = PIGIdentityInitLinear(dim, dim)
        self.out_proj = PIGIdentityInitLinear(dim, dim)
        self.layer_norm2 = nn.LayerNorm(dim)
        self.linear_proj = PIGIdentityInitLinear(dim, dim)
        self.dropout = nn.Dropout(config.interaction_dropout)
        self.layer_norm3 = nn.LayerNorm(dim)

    def forward(self, pseudo_query: torch.Tensor, video_tokens: torch.Tensor) -> torch.Tensor:
        """`[B, D]` pseudo-queries and `[B, n, D]` tokens of the same videos -> video embeddings `[B, D]`."""
        query = self.q_proj(self.layer_norm1(pseudo_query))  # [B, D]
        normed_tokens = self.layer_norm1(video_tokens)
        key, value = self.k_proj(normed_tokens), self.v_proj(normed_tokens)  # [B, n, D]
        logits = torch.einsum("bd,bnd->bn", query, key) / math.sqrt(query.shape[-1]) / self.attn_temp  # [B, n]
        weights = logits.softmax(dim=-1)
        attended = torch.einsum("bn,bnd->bd", weights, value)  # [B, D]
        attended = self.layer_norm2(self.out_proj(attended))
        return self.layer_norm3(attended + self.dropout(self.linear_proj(attended)))


# ---------------------------------------------------------------------------------------------------- base model


class PIGPreTrainedModel(PreTrainedModel):
    """Weight init, checkpointing flags and the config class shared by PIG models."""

    config: PIGConfig
    config_class = PIGConfig
    base_model_prefix = "clip"
    input_modalities = ("video", "text")
    supports_gradient_checkpointing = True
    _supports_sdpa = True
    _no_split_modules = ["CLIPEncoderLayer", "PIGViPEncoderLayer", "CLIPTextEmbeddings", "CLIPVisionEmbeddings"]

    @torch.no_grad()
    def _init_weights(self, module):
        """Special inits of the new modules; CLIP's modules are initialised by CLIP's own `_init_weights`.

        Only `transformers.initialization` functions are used: they skip tensors loaded from a checkpoint, so
        loading never clobbers a value and a missing tensor gets its proper init (§10 rows 12, 17).
        """
        if isinstance(module, PIGViPEmbeddings):
            init.normal_(module.proxy_tokens, mean=0.0, std=1.0)
            init.zeros_(module.temporal_embedding)
            if module.frame_cls is not None:
                init.copy_(module.frame_cls, self.clip.vision_model.embeddings.class_embedding)
        elif isinstance(module, PIGPseudoQueryGenerator):
            for target, source in module.clip_weight_pairs(
                self.clip, self.config.generator_bos_token_id, self.config.generator_eos_token_id
            ):
                init.copy_(target, source)
            # The authors' video_mapper is a plain nn.Linear: PyTorch's default init.
            init.kaiming_uniform_(module.video_mapper.weight, a=math.sqrt(5))
            bound = 1.0 / math.sqrt(module.video_mapper.in_features)
            init.uniform_(module.video_mapper.bias, -bound, bound)
        elif isinstance(module, PIGIdentityInitLinear):
            init.eye_(module.weight)
            init.zeros_(module.bias)
        else:
            super()._init_weights(module)


# ---------------------------------------------------------------------------------------------------------- model


def _describe_mismatch(mismatch) -> str:
    """`(name, checkpoint_shape, model_shape)` from the loading info -> readable text."""
    if isinstance(mismatch, tuple) and len(mismatch) == 3:
        name, checkpoint_shape, model_shape = mismatch
        return f"{name}: checkpoint {list(checkpoint_shape)} vs model {list(model_shape)}"
    return str(mismatch)


@contextlib.contextmanager
def _transformers_errors_only():
    """Show only errors from transformers' loggers for the duration of the block."""
    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    try:
        yield
    finally:
        hf_logging.set_verbosity(verbosity)


class PIGModel(PIGPreTrainedModel):
    """PIG (Hybrid-Tower text-to-video retrieval) and its Two-Tower baselines, on a CLIP backbone.

    Parameters: `clip.*` (CLIP's own names, so a CLIP checkpoint loads with no key surgery), `vip.*` (ViP tower
    additions), `generator.*` (pseudo-query generator), `interaction.*` (pseudo interaction). The generator and
    the interaction exist only with `use_pseudo_query=True`; `vip` only with `video_tower="vip"`.
    """

    def __init__(self, config: PIGConfig):
        super().__init__(config)
        config.check()
        self.clip = CLIPModel._from_config(config.clip_config)
        self.vip = None
        if config.video_tower == "vip":
            self.vip = PIGViPEmbeddings(config)
            vision_layers = self.clip.vision_model.encoder.layers
            for index, layer in enumerate(vision_layers):  # same modules and names, ViP attention (§2.4)
                vision_layers[index] = PIGViPEncoderLayer.from_clip_layer(layer, config.num_global_tokens)
        if config.use_pseudo_query:
            self.generator = PIGPseudoQueryGenerator(config, self.clip.config.text_config)
            self.interaction = PIGPseudoInteraction(config)
        else:
            self.generator = None
            self.interaction = None
        self.post_init()

    # ------------------------------------------------------------------------------------------------ loading
    @classmethod
    def from_clip(cls, pretrained_model_name_or_path, *, dtype=None, attn_implementation=None, **config_overrides):
        """Build a PIG model from a CLIP checkpoint (a hub id or a local `CLIPModel.save_pretrained` folder).

        CLIP's weights load into `clip.*` (both towers, projections). The new modules are then initialised from
        them: the generator is a copy of the text transformer (layers, final LN, positions, `text_projection`),
        its [bos]/[eos] slots are the token-embedding rows of the bos/eos ids, and the ViP frame-CLS is CLIP's
        class embedding. The logit scale is reset to `logit_scale_init_value` (4.60, §2.2).

        Args:
            pretrained_model_name_or_path: CLIP checkpoint.
            dtype, attn_implementation: passed to `from_pretrained`.
            **config_overrides: `PIGConfig` fields (e.g. `num_frames=12`, `use_pseudo_query=False`).
        """
        clip_config = CLIPConfig.from_pretrained(pretrained_model_name_or_path)
        config = PIGConfig(clip_config=clip_config.to_dict(), **config_overrides)
        # Mismatched shapes are collected (not raised by transformers) so that the error below can list them.
        load_kwargs = {"config": config, "output_loading_info": True, "ignore_mismatched_sizes": True}
        if dtype is not None:
            load_kwargs["dtype"] = dtype
        if attn_implementation is not None:
            load_kwargs["attn_implementation"] = attn_implementation
        # The load report would list every new (vip/generator/interaction) tensor as MISSING, which is expected
        # here; the loading info is checked below instead, and real problems raise.
        with _transformers_errors_only():
            model, info = cls.from_pretrained(pretrained_model_name_or_path, **load_kwargs)

        new_prefixes = ("vip.", "generator.", "interaction.")
        missing_clip = sorted(key for key in info["missing_keys"] if not key.startswith(new_prefixes))
        problems = {"CLIP weights missing": missing_clip, "unexpected weights": sorted(info["unexpected_keys"]),
                    "weights of the wrong shape": sorted(_describe_mismatch(m) for m in info["mismatched_keys"])}
        problems = {kind: keys for kind, keys in problems.items() if keys}
        if problems:
            raise ValueError(
                f"{pretrained_model_name_or_path!s} is not a CLIP checkpoint that matches its config: {problems}"
            )
        model.init_new_weights_from_clip_()
        return model

    def save_pretrained(self, save_directory, *args, **kwargs):
        """`PreTrainedModel.save_pretrained`, plus a minimal README.md model card (Hub metadata, loading code) when
        the folder has none yet; a card already there (e.g. training's fuller one) is kept."""
        if kwargs.get("is_main_process", True) and not os.path.isfile(save_directory):
            write_minimal_model_card(save_directory, self.config, model_id=kwargs.get("repo_id"))
        return super().save_pretrained(save_directory, *args, **kwargs)

    @torch.no_grad()
    def init_new_weights_from_clip_(self):
        """Copy the current CLIP weights into the generator copy and the ViP frame-CLS; reset the logit scale.

        `from_clip` calls this after loading CLIP (the same copies `_init_weights` makes at construction).
        Never call it on a trained PIG model: it overwrites the generator.
        """
        if self.vip is not None and self.vip.frame_cls is not None:
            self.vip.frame_cls.copy_(self.clip.vision_model.embeddings.class_embedding)
        if self.generator is not None:
            for target, source in self.generator.clip_weight_pairs(
                self.clip, self.config.generator_bos_token_id, self.config.generator_eos_token_id
            ):
                target.copy_(source)
        self.clip.logit_scale.fill_(self.config.logit_scale_init_value)

    @torch.no_grad()
    def clamp_logit_scale_(self):
        """Clamp the log-temperature to [0, logit_scale_max] in place; call after every optimiser step (§6.2)."""
        self.clip.logit_scale.clamp_(0.0, self.config.logit_scale_max)

    def get_logit_scale(self) -> torch.Tensor:
        """The contrastive logits' scale: `exp` of the learnable log-temperature clamped to [0, logit_scale_max],
        float32 scalar (with gradients)."""
        return self.clip.logit_scale.float().clamp(0.0, self.config.logit_scale_max).exp()

    def loss_from_embeddings(self, text_embeds: torch.Tensor, video_embeds: torch.Tensor,
                             pseudo_query_embeds: torch.Tensor | None, logit_scale: torch.Tensor,
                             gather_across_processes: bool = False):
        """`(loss, contrastive_loss, generation_loss)` of L2-normalised float32 embeddings `[n, D]` (row i of each
        belongs together): InfoNCE + generation_loss_weight * L_recon, the loss `forward(return_loss=True)`
        returns. `generation_loss` is None without pseudo-queries. With `gather_across_processes` the rows of
        every process are all-gathered with gradients first (call it on every process). Gradient caching
        (training/) computes the loss of a whole batch from embeddings encoded in chunks with it.
        """
        if gather_across_processes:
            text_embeds, video_embeds, pseudo_query_embeds = gather_features(text_embeds, video_embeds,
                                                                             pseudo_query_embeds)
        contrastive = contrastive_loss(text_embeds, video_embeds, logit_scale)
        if pseudo_query_embeds is None:
            return contrastive, contrastive, None
        target = text_embeds.detach() if self.config.detach_generation_target else text_embeds
        reconstruction = generation_loss(pseudo_query_embeds, target)
        return contrastive + self.config.generation_loss_weight * reconstruction, contrastive, reconstruction

    # -------------------------------------------------------------------------------------------- validation
    def _check_pixel_values(self, pixel_values) -> torch.Tensor:
        vision = self.config.clip_config.vision_config
        if not isinstance(pixel_values, torch.Tensor):
            raise TypeError(f"pixel_values must be a torch.Tensor, got {type(pixel_values).__name__}")
        expected = f"[batch, frames, {vision.num_channels}, {vision.image_size}, {vision.image_size}]"
        if pixel_values.dim() != 5:
            raise ValueError(f"pixel_values must be 5-D {expected}, got shape {tuple(pixel_values.shape)}")
        batch, frames, channels, height, width = pixel_values.shape
        if channels != vision.num_channels or height != vision.image_size or width != vision.image_size:
            raise ValueError(f"pixel_values must have shape {expected}, got {tuple(pixel_values.shape)}")
        if batch == 0 or frames == 0:
            raise ValueError(f"pixel_values needs at least one video and one frame, got {tuple(pixel_values.shape)}")
        if self.config.use_pseudo_query and self.config.its_top_k > frames * self.config.num_patches_per_frame:
            raise ValueError(
                f"its_top_k={self.config.its_top_k} exceeds the {frames} * {self.config.num_patches_per_frame} "
                f"patch tokens of pixel_values with {frames} frames"
            )
        return pixel_values

    @staticmethod
    def _check_text_inputs(input_ids, attention_mask):
        if not isinstance(input_ids, torch.Tensor) or input_ids.dim() != 2:
            shape = tuple(input_ids.shape) if isinstance(input_ids, torch.Tensor) else type(input_ids).__name__
            raise ValueError(f"input_ids must be a 2-D tensor [n_text, length], got {shape}")
        if attention_mask is not None and tuple(attention_mask.shape) != tuple(input_ids.shape):
            raise ValueError(
                f"attention_mask shape {tuple(attention_mask.shape)} differs from input_ids {tuple(input_ids.shape)}"
            )

    # ------------------------------------------------------------------------------------------------ towers
    def _output_flags(self, output_hidden_states, output_attentions) -> tuple[bool, bool]:
        """The flags as given, or the config's defaults (`config.output_hidden_states`, ...) as CLIP does."""
        if output_hidden_states is None:
            output_hidden_states = self.config.output_hidden_states
        if output_attentions is None:
            output_attentions = self.config.output_attentions
        return bool(output_hidden_states), bool(output_attentions)

    @can_return_tuple
    def get_text_features(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        output_hidden_states: bool | None = None,
        output_attentions: bool | None = None,
        **kwargs,
    ) -> BaseModelOutputWithPooling:
        """CLIP text tower. Returns `BaseModelOutputWithPooling` with `.pooler_output` `[n_text, projection_dim]`
        (projected EOT state, not normalised), CLIP's `hidden_states` / `attentions` when asked, and a tuple with
        `return_dict=False`."""
        self._check_text_inputs(input_ids, attention_mask)
        output_hidden_states, output_attentions = self._output_flags(output_hidden_states, output_attentions)
        return self.clip.get_text_features(
            input_ids=input_ids,
            attention_mask=attention_mask,
            output_hidden_states=output_hidden_states,
            output_attentions=output_attentions,
            return_dict=True,
            **kwargs,
        )

    def encode_vip(
        self,
        pixel_values: torch.Tensor,
        return_cls_attention: bool = False,
        output_hidden_states: bool = False,
        output_attentions: bool = False,
    ) -> PIGViPEncoderOutput:
        """ViP vision tower (§2): `[B, T, 3, H, W]` -> `PIGViPEncoderOutput` with the last hidden state
        `[B, M + T*(1+P), D]` (before CLIP's post-LN), the last layer's video-CLS attention `[B, heads, S]` for ITS
        when `return_cls_attention`, and CLIP's `hidden_states` / `attentions` tuples when asked."""
        if self.vip is None:
            raise ValueError(f"encode_vip needs video_tower='vip', this model has {self.config.video_tower!r}")
        vision = self.clip.vision_model
        num_frames = pixel_values.shape[1]
        hidden_states = vision.pre_layrnorm(self.vip(pixel_values, vision.embeddings))  # [B, S, D]
        all_hidden_states = (hidden_states,) if output_hidden_states else None
        all_attentions = () if output_attentions else None
        layers = vision.encoder.layers
        cls_attention = None
        for index, layer in enumerate(layers):
            hidden_states, attn_weights, cls_attention = layer(
                hidden_states,
                num_frames=num_frames,
                output_attentions=output_attentions,
                return_cls_attention=return_cls_attention and index == len(layers) - 1,
            )
            if output_hidden_states:
                all_hidden_states += (hidden_states,)
            if output_attentions and attn_weights is not None:  # None under SDPA, as for CLIP
                all_attentions += (attn_weights,)
        return PIGViPEncoderOutput(
            last_hidden_state=hidden_states,
            hidden_states=all_hidden_states,
            attentions=all_attentions,
            cls_attention=cls_attention,
        )

    def _project_tokens(self, hidden_states: torch.Tensor) -> torch.Tensor:
        """CLIP's post-LN + visual projection, token-wise: `[..., D]` -> `[..., projection_dim]` (§2.5)."""
        return self.clip.visual_projection(self.clip.vision_model.post_layernorm(hidden_states))

    @can_return_tuple
    def get_video_features(
        self,
        pixel_values: torch.Tensor,
        output_hidden_states: bool | None = None,
        output_attentions: bool | None = None,
    ) -> PIGVideoOutput:
        """Video tower. `pixel_values` `[n_video, T, 3, H, W]` -> `PIGVideoOutput` whose `.pooler_output`
        `[n_video, projection_dim]` (not normalised) is the vector to store. It depends on the video only.
        The vision tower's `hidden_states` / `attentions` when asked; a tuple with `return_dict=False`."""
        pixel_values = self._check_pixel_values(pixel_values)
        output_hidden_states, output_attentions = self._output_flags(output_hidden_states, output_attentions)
        if self.config.video_tower == "meanp":
            return self._meanp_video_features(pixel_values, output_hidden_states, output_attentions)

        vip = self.encode_vip(
            pixel_values,
            return_cls_attention=self.config.use_pseudo_query,
            output_hidden_states=output_hidden_states,
            output_attentions=output_attentions,
        )
        hidden_states = vip.last_hidden_state
        tower_outputs = {"last_hidden_state": hidden_states, "hidden_states": vip.hidden_states,
                         "attentions": vip.attentions}
        if not self.config.use_pseudo_query:  # CLIP-ViP: projected post-LN video CLS
            video_embeds = self._project_tokens(hidden_states[:, 0])  # [B, projection_dim]
            return PIGVideoOutput(pooler_output=video_embeds, **tower_outputs)

        num_global, num_frames = self.config.num_global_tokens, pixel_values.shape[1]
        tokens_per_frame = 1 + self.config.num_patches_per_frame
        informative = select_informative_tokens(
            vip.cls_attention, num_global, num_frames, self.config.its_top_k, self.config.its_head_reduction
        )  # [B, k]
        frame_cls_positions = num_global + tokens_per_frame * torch.arange(num_frames, device=hidden_states.device)
        informative_states = hidden_states.gather(
            1, informative[..., None].expand(-1, -1, hidden_states.shape[-1])
        )  # [B, k, D]; gradients flow into the gathered features, not into the selection
        selected = torch.cat(
            [hidden_states[:, :num_global], hidden_states[:, frame_cls_positions], informative_states], dim=1
        )  # [B, M + T + k, D]: [video CLS, proxies, frame-CLS x T, ITS top-k] (§4.2, the generator's order)
        video_tokens = self._project_tokens(selected)  # [B, M + T + k, projection_dim]
        pseudo_query = self.generator(video_tokens)  # [B, projection_dim]
        video_embeds = self.interaction(pseudo_query, video_tokens[:, : num_global + num_frames])  # [B, proj]
        return PIGVideoOutput(
            pooler_output=video_embeds,
            pseudo_query_embeds=pseudo_query,
            informative_token_indices=informative,
            **tower_outputs,
        )

    def _meanp_video_features(self, pixel_values, output_hidden_states, output_attentions) -> PIGVideoOutput:
        """CLIP4Clip meanP: plain CLIP per frame; mean of the L2-normalised projected frame embeddings."""
        batch, num_frames = pixel_values.shape[:2]
        frames_out = self.clip.vision_model(
            pixel_values=pixel_values.flatten(0, 1),
            output_hidden_states=output_hidden_states,
            output_attentions=output_attentions,
            return_dict=True,
        )  # B*T images
        frame_embeds = self.clip.visual_projection(frames_out.pooler_output)  # [B*T, proj]
        frame_embeds = F.normalize(frame_embeds, dim=-1).view(batch, num_frames, -1)  # [B, T, proj]

        def per_video(states):  # [B*T, 1 + P, D] -> [B, T * (1 + P), D]
            return states.reshape(batch, num_frames * states.shape[1], states.shape[2])

        hidden_states = frames_out.hidden_states
        return PIGVideoOutput(
            last_hidden_state=per_video(frames_out.last_hidden_state),
            pooler_output=frame_embeds.mean(dim=1),
            hidden_states=tuple(per_video(states) for states in hidden_states) if hidden_states else None,
            attentions=frames_out.attentions or None,
        )

    # ----------------------------------------------------------------------------------------------- forward
    @can_return_tuple
    def forward(
        self,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        pixel_values: torch.Tensor | None = None,
        return_loss: bool = False,
        gather_across_processes: bool = False,
        output_hidden_states: bool | None = None,
        output_attentions: bool | None = None,
    ) -> PIGOutput:
        """Texts `[n_text, length]` and videos `[n_video, T, 3, H, W]` -> `PIGOutput`.

        With `return_loss=True` (needs `n_text == n_video`, caption i belongs to video i) the loss is
        `InfoNCE + generation_loss_weight * L_recon` over this call's batch. With `gather_across_processes=True`
        as well (a data-parallel trainer, on every process at once) it spans the global batch: the features of
        every process are all-gathered with gradients first (`gather_features`). Without it no collective runs,
        so a forward on one rank alone never waits for the others. Loss math runs in float32, also under
        autocast. As in CLIP, the towers' hidden states / attentions (when asked) are in `text_model_output` /
        `video_model_output`, and `return_dict=False` gives a tuple.
        """
        if input_ids is None or pixel_values is None:
            raise ValueError(
                "PIGModel.forward needs both input_ids and pixel_values; use get_text_features / "
                "get_video_features for one side"
            )
        flags = dict(output_hidden_states=output_hidden_states, output_attentions=output_attentions, return_dict=True)
        text_out = self.get_text_features(input_ids=input_ids, attention_mask=attention_mask, **flags)
        video_out = self.get_video_features(pixel_values=pixel_values, **flags)
        n_text, n_video = text_out.pooler_output.shape[0], video_out.pooler_output.shape[0]
        if return_loss and n_text != n_video:
            raise ValueError(
                f"return_loss=True needs one caption per video (caption i <-> video i), got {n_text} texts "
                f"and {n_video} videos"
            )

        with torch.autocast(device_type=text_out.pooler_output.device.type, enabled=False):
            text_embeds = F.normalize(text_out.pooler_output.float(), dim=-1)  # [n_text, proj]
            video_embeds = F.normalize(video_out.pooler_output.float(), dim=-1)  # [n_video, proj]
            pseudo_query_embeds = None
            if video_out.pseudo_query_embeds is not None:
                pseudo_query_embeds = F.normalize(video_out.pseudo_query_embeds.float(), dim=-1)
            logit_scale = self.get_logit_scale()
            logits_per_text = logit_scale * text_embeds @ video_embeds.t()  # [n_text, n_video]

            loss = contrastive = reconstruction = None
            if return_loss:
                loss, contrastive, reconstruction = self.loss_from_embeddings(
                    text_embeds, video_embeds, pseudo_query_embeds, logit_scale, gather_across_processes)

        return PIGOutput(
            loss=loss,
            contrastive_loss=contrastive,
            generation_loss=reconstruction,
            logits_per_text=logits_per_text,
            logits_per_video=logits_per_text.t(),
            text_embeds=text_embeds,
            video_embeds=video_embeds,
            pseudo_query_embeds=pseudo_query_embeds,
            text_model_output=text_out,
            video_model_output=video_out,
        )


AutoModel.register(PIGConfig, PIGModel, exist_ok=True)
PIGModel.register_for_auto_class("AutoModel")

__all__ = [
    "PIGModel",
    "PIGOutput",
    "PIGPreTrainedModel",
    "PIGVideoOutput",
    "PIGViPEncoderOutput",
    "contrastive_loss",
    "gather_features",
    "generation_loss",
    "select_informative_tokens",
    "PIGViPEncoderLayer",
    "vip_attention_mask",
]
