"""Tiny re-creations of the source models that `pig convert` reads, written for the tests from the sources' code.

Module names and tensor shapes follow the sources (so that `state_dict()` has their keys); the forward passes are
written here independently of modeling_pig, in the sources' own formulation where it differs from ours:

* the authors' PIG / F-Pig (`PIG` / `FK`: `encoder.clipmodel`, `generator.clip_reconstructor`, `fusioner`) and
  CLIP-ViP's `VidCLIP` (`clipmodel`): transformers-style CLIP names; the ViP attention is computed here as full
  attention with an explicit mask; X-Pool runs on every (pseudo-query, video) pair and keeps the diagonal;
* CLIP4Clip (`clip.*`): OpenAI's CLIP layout on `torch.nn.MultiheadAttention` in sequence-first layout.
"""

from collections import OrderedDict

import torch
import torch.nn.functional as F
from torch import nn

VOCAB = 49408  # CLIP's; `dims["vocab"]` overrides it (the last two rows are <|startoftext|>, <|endoftext|>)


def vocab(dims):
    return dims.get("vocab", VOCAB)


def text_heads(dims):
    return dims.get("text_heads", dims.get("heads"))


def vision_heads(dims):
    return dims.get("vision_heads", dims.get("heads"))


def quick_gelu(x):
    return x * torch.sigmoid(1.702 * x)


def randomise_(module: nn.Module, seed: int):
    """Random weights that make every tensor matter (LayerNorm weights away from 1, embeddings large)."""
    generator = torch.Generator().manual_seed(seed)
    modules = dict(module.named_modules())
    with torch.no_grad():
        for name, param in module.named_parameters():
            noise = torch.randn(param.shape, generator=generator)
            if isinstance(modules.get(name.rsplit(".", 1)[0]), nn.LayerNorm):
                param.copy_(1.0 + 0.2 * noise if name.endswith("weight") else 0.2 * noise)
            elif param.dim() <= 1 or "embedding" in name or "added_cls" in name or "tokens" in name:
                param.copy_(0.5 * noise)
            else:
                param.copy_(noise / param.shape[-1] ** 0.5)
    return module


# ------------------------------------------------------------------------ transformers-style CLIP (authors' code)


class Attention(nn.Module):
    def __init__(self, width, heads):
        super().__init__()
        self.heads = heads
        self.k_proj, self.v_proj = nn.Linear(width, width), nn.Linear(width, width)
        self.q_proj, self.out_proj = nn.Linear(width, width), nn.Linear(width, width)

    def forward(self, x, mask):
        """`x` [B, S, D], additive `mask` [B or 1, 1, S, S] -> output and the post-softmax weights [B, H, S, S]."""
        batch, length, width = x.shape
        head = width // self.heads

        def split(t):
            return t.view(batch, length, self.heads, head).transpose(1, 2)

        q, k, v = split(self.q_proj(x) * head ** -0.5), split(self.k_proj(x)), split(self.v_proj(x))
        weights = (q @ k.transpose(-1, -2) + mask).softmax(-1)
        return self.out_proj((weights @ v).transpose(1, 2).reshape(batch, length, width)), weights


class MLP(nn.Module):
    def __init__(self, width, inner):
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(width, inner), nn.Linear(inner, width)

    def forward(self, x):
        return self.fc2(quick_gelu(self.fc1(x)))


class Layer(nn.Module):
    def __init__(self, width, heads, inner):
        super().__init__()
        self.self_attn, self.layer_norm1 = Attention(width, heads), nn.LayerNorm(width)
        self.mlp, self.layer_norm2 = MLP(width, inner), nn.LayerNorm(width)

    def forward(self, x, mask):
        attended, weights = self.self_attn(self.layer_norm1(x), mask)
        x = x + attended
        return x + self.mlp(self.layer_norm2(x)), weights


class Encoder(nn.Module):
    def __init__(self, width, heads, inner, layers):
        super().__init__()
        self.layers = nn.ModuleList(Layer(width, heads, inner) for _ in range(layers))

    def forward(self, x, mask):
        weights = None
        for layer in self.layers:
            x, weights = layer(x, mask)
        return x, weights  # the last layer's attention


def causal_mask(length, padding=None):
    mask = torch.full((length, length), float("-inf")).triu(1)[None, None]
    if padding is not None:  # [B, L] 1 = token
        mask = mask + (1.0 - padding[:, None, None, :].float()) * torch.finfo(torch.float32).min
    return mask


class TextEmbeddings(nn.Module):
    def __init__(self, width, positions, vocab_size=VOCAB, token_table=True):
        super().__init__()
        if token_table:
            self.token_embedding = nn.Embedding(vocab_size, width)
        self.position_embedding = nn.Embedding(positions, width)
        self.register_buffer("position_ids", torch.arange(positions).expand((1, -1)))  # persistent, as then


class TextTransformer(nn.Module):
    def __init__(self, width, heads, layers, vocab_size=VOCAB, positions=77):
        super().__init__()
        self.embeddings = TextEmbeddings(width, positions, vocab_size)
        self.encoder = Encoder(width, heads, 4 * width, layers)
        self.final_layer_norm = nn.LayerNorm(width)

    def forward(self, input_ids, attention_mask):
        x = self.embeddings.token_embedding(input_ids)
        x = x + self.embeddings.position_embedding(self.embeddings.position_ids[:, : input_ids.shape[1]])
        x, _ = self.encoder(x, causal_mask(input_ids.shape[1], attention_mask))
        x = self.final_layer_norm(x)
        return x[torch.arange(x.shape[0]), input_ids.argmax(-1)]  # EOT = the highest id


class ViPEmbeddings(nn.Module):
    """`CLIPVisionViPEmbeddings`: PIG / F-Pig (with `cls_in_frames`) or CLIP-ViP (without)."""

    def __init__(self, width, image, patch, frames, proxies, frame_cls=True, temporal=True):
        super().__init__()
        self.added_cls = nn.Parameter(torch.randn(proxies, width))
        self.class_embedding = nn.Parameter(torch.randn(width))
        if frame_cls:
            self.cls_in_frames = nn.Parameter(torch.randn(width))
        self.patch_embedding = nn.Conv2d(3, width, patch, patch, bias=False)
        positions = (image // patch) ** 2 + 1
        self.position_embedding = nn.Embedding(positions, width)
        self.register_buffer("position_ids", torch.arange(positions).expand((1, -1)))
        if temporal:
            self.temporal_embedding = nn.Parameter(torch.zeros(1, frames, width))
        self.frame_cls, self.temporal = frame_cls, temporal

    def forward(self, video):
        batch, frames = video.shape[:2]
        pos = self.position_embedding.weight
        patches = self.patch_embedding(video.flatten(0, 1)).flatten(2).transpose(1, 2)
        patches = patches.reshape(batch, frames, -1, patches.shape[-1]) + pos[1:]
        time = self.temporal_embedding[0][:, None] if self.temporal else 0.0  # [T, 1, D]
        patches = patches + time
        if self.frame_cls:
            cls_in_frames = (self.cls_in_frames + pos[0] + time).expand(batch, frames, 1, -1)
            patches = torch.cat([cls_in_frames, patches], dim=2)
        globals_ = torch.cat([self.class_embedding[None], self.added_cls]) + pos[0]
        tokens_per_frame = patches.shape[2]
        sequence = torch.cat([globals_.expand(batch, -1, -1), patches.flatten(1, 2)], dim=1)
        return sequence, (globals_.shape[0], frames, tokens_per_frame)


def vip_mask(num_global, frames, per_frame):
    """Additive mask of the proxy-guided attention: globals see all, frame tokens see globals + own frame."""
    frame = torch.cat([torch.full((num_global,), -1), torch.arange(frames).repeat_interleave(per_frame)])
    allowed = (frame[:, None] < 0) | (frame[None, :] < 0) | (frame[:, None] == frame[None, :])
    return torch.zeros(allowed.shape).masked_fill(~allowed, float("-inf"))[None, None]


class VisionTransformer(nn.Module):
    def __init__(self, width, heads, layers, image, patch, frames, proxies, frame_cls=True, temporal=True):
        super().__init__()
        self.embeddings = ViPEmbeddings(width, image, patch, frames, proxies, frame_cls, temporal)
        self.pre_layrnorm = nn.LayerNorm(width)
        self.encoder = Encoder(width, heads, 4 * width, layers)
        self.post_layernorm = nn.LayerNorm(width)

    def forward(self, video):
        x, (num_global, frames, per_frame) = self.embeddings(video)
        x, weights = self.encoder(self.pre_layrnorm(x), vip_mask(num_global, frames, per_frame))
        return x, weights[:, :, :num_global]  # last layer, global queries' attention [B, H, M, S]


class CLIPModel(nn.Module):
    def __init__(self, dims, frame_cls=True, temporal=True):
        super().__init__()
        self.text_model = TextTransformer(dims["text"], text_heads(dims), dims["layers"], vocab(dims))
        self.vision_model = VisionTransformer(dims["vision"], vision_heads(dims), dims["layers"], dims["image"],
                                              dims["patch"], dims["frames"], dims["proxies"], frame_cls, temporal)
        self.visual_projection = nn.Linear(dims["vision"], dims["proj"], bias=False)
        self.text_projection = nn.Linear(dims["text"], dims["proj"], bias=False)
        self.logit_scale = nn.Parameter(torch.tensor(4.6))


class VidCLIP(nn.Module):
    """CLIP-ViP's `VidCLIP`, and the authors' `encoder`."""

    def __init__(self, dims, frame_cls=True, temporal=True):
        super().__init__()
        self.clipmodel = CLIPModel(dims, frame_cls, temporal)

    def text_embeds(self, input_ids, attention_mask):
        return self.clipmodel.text_projection(self.clipmodel.text_model(input_ids, attention_mask))

    def video_embeds(self, video):
        hidden, _ = self.clipmodel.vision_model(video)
        return self.clipmodel.visual_projection(self.clipmodel.vision_model.post_layernorm(hidden[:, 0]))


# ----------------------------------------------------------------------------- the authors' PIG / F-Pig heads


class CLIPFeatureReconstructor(nn.Module):
    def __init__(self, dims, fpig):
        super().__init__()
        self.embeddings = TextEmbeddings(dims["text"], 77, vocab(dims), token_table=not fpig)  # F-Pig deletes it
        self.encoder = Encoder(dims["text"], text_heads(dims), 4 * dims["text"], dims["layers"])
        self.final_layer_norm = nn.LayerNorm(dims["text"])
        if fpig:
            self.text_projection = nn.Linear(dims["text"], dims["proj"], bias=False)
        self.video_mapper = nn.Linear(dims["text"], dims["text"])


class FeatureReconstructor(nn.Module):
    def __init__(self, dims, fpig, use_bos):
        super().__init__()
        self.fpig, self.use_bos = fpig, use_bos
        self.clip_reconstructor = CLIPFeatureReconstructor(dims, fpig)
        if fpig:  # trainable slots
            self.bos_tokens = nn.Parameter(torch.randn(dims["text"]))
            self.query_tokens = nn.Parameter(torch.randn(dims["text"]))

    def slots(self):
        if self.fpig:
            return self.bos_tokens, self.query_tokens
        table = self.clip_reconstructor.embeddings.token_embedding.weight  # PIG: fixed rows, never saved
        return table[-2].detach(), table[-1].detach()

    def forward(self, tokens):
        net = self.clip_reconstructor
        bos, eos = self.slots()
        x = net.video_mapper(tokens)
        pieces = [bos.expand(x.shape[0], 1, -1)] if self.use_bos else []
        x = torch.cat(pieces + [x, eos.expand(x.shape[0], 1, -1)], dim=1)
        x = x + net.embeddings.position_embedding(net.embeddings.position_ids[:, : x.shape[1]])
        x, _ = net.encoder(x, causal_mask(x.shape[1]))
        x = net.final_layer_norm(x)
        if self.fpig:
            x = net.text_projection(x)
        return x[:, -1]


class XPoolMultiHeadedAttention(nn.Module):
    def __init__(self, dim, heads, temp):
        super().__init__()
        self.heads, self.temp = heads, temp
        self.q_proj, self.k_proj = nn.Linear(dim, dim), nn.Linear(dim, dim)
        self.v_proj, self.out_proj = nn.Linear(dim, dim), nn.Linear(dim, dim)

    def forward(self, texts, videos):
        """[N_t, D], [N_v, F, D] -> [N_v, N_t, D] (every pair, as the authors compute it)."""
        n_t, dim = texts.shape
        n_v, n_f, _ = videos.shape
        head = dim // self.heads
        q = self.q_proj(texts).reshape(n_t, self.heads, head).permute(1, 2, 0)  # [H, h, N_t]
        k = self.k_proj(videos).reshape(n_v, n_f, self.heads, head).permute(0, 2, 1, 3)  # [N_v, H, F, h]
        v = self.v_proj(videos).reshape(n_v, n_f, self.heads, head).permute(0, 2, 3, 1)  # [N_v, H, h, F]
        weights = ((k @ q) / head ** 0.5 / self.temp).softmax(dim=2)  # [N_v, H, F, N_t]
        out = (v @ weights).permute(0, 3, 1, 2).reshape(n_v, n_t, dim)
        return self.out_proj(out)


class XPoolCrossAttentionPooler(nn.Module):
    def __init__(self, dim, heads=1, temp=1.0):
        super().__init__()
        self.cross_attn = XPoolMultiHeadedAttention(dim, heads, temp)
        self.linear_proj = nn.Linear(dim, dim)
        self.layer_norm1, self.layer_norm2, self.layer_norm3 = nn.LayerNorm(dim), nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.dropout = nn.Dropout(0.1)

    def forward(self, texts, videos):
        out = self.layer_norm2(self.cross_attn(self.layer_norm1(texts), self.layer_norm1(videos)))
        out = self.layer_norm3(out + self.dropout(self.linear_proj(out)))
        return torch.diagonal(out, dim1=0, dim2=1).permute(1, 0)  # the matched pairs


class AuthorsViPBaseline(nn.Module):
    """The authors' CLIP-ViP baseline run (`PIG` built from msrvtt_retrieval_vip_base_32.json): only `encoder`."""

    def __init__(self, dims):
        super().__init__()
        self.encoder = VidCLIP(dims)  # with frame-CLS tokens (keep_frame_cls = 1)


class AuthorsPIG(nn.Module):
    """`PIG` (lbx73737373/PIG) or `FK` (lbx73737373/fpig): encoder + generator + fusioner."""

    def __init__(self, dims, fpig=False, use_bos=True, top_k=5, reduction="max", temp=1.0):
        super().__init__()
        self.dims, self.top_k, self.reduction = dims, top_k, reduction
        self.encoder = VidCLIP(dims)
        self.generator = FeatureReconstructor(dims, fpig, use_bos)
        self.fusioner = XPoolCrossAttentionPooler(dims["proj"], temp=temp)

    def text_embeds(self, input_ids, attention_mask):
        return self.encoder.text_embeds(input_ids, attention_mask)

    def video_outputs(self, video):
        """-> (video embedding, pseudo-query, ITS indices) as the authors' forward computes them."""
        clip = self.encoder.clipmodel
        hidden, attention = clip.vision_model(video)
        feats = clip.visual_projection(clip.vision_model.post_layernorm(hidden))  # [B, S, P]
        num_global, frames = 1 + self.dims["proxies"], video.shape[1]
        per_frame = (feats.shape[1] - num_global) // frames
        scores = attention.amax(1) if self.reduction == "max" else attention.mean(1)
        scores = scores[:, 0].clone()
        skip = list(range(num_global)) + [num_global + f * per_frame for f in range(frames)]
        scores[:, skip] = float("-inf")
        top = scores.topk(self.top_k, dim=-1, sorted=True).indices
        frame_cls = feats[:, num_global::per_frame]
        chosen = feats[torch.arange(feats.shape[0])[:, None], top]
        pseudo_query = self.generator(torch.cat([feats[:, :num_global], frame_cls, chosen], dim=1))
        video_embeds = self.fusioner(pseudo_query, torch.cat([feats[:, :num_global], frame_cls], dim=1))
        return video_embeds, pseudo_query, top


# ------------------------------------------------------------------------------------- CLIP4Clip (OpenAI CLIP)


class ResidualAttentionBlock(nn.Module):
    def __init__(self, width, heads):
        super().__init__()
        self.attn = nn.MultiheadAttention(width, heads)
        self.ln_1 = nn.LayerNorm(width)
        self.mlp = nn.Sequential(OrderedDict([("c_fc", nn.Linear(width, 4 * width)), ("gelu", nn.Identity()),
                                              ("c_proj", nn.Linear(4 * width, width))]))
        self.ln_2 = nn.LayerNorm(width)

    def forward(self, x, mask):  # x [L, N, D]
        x = x + self.attn(*(self.ln_1(x),) * 3, need_weights=False, attn_mask=mask)[0]
        hidden = self.mlp.c_fc(self.ln_2(x))
        return x + self.mlp.c_proj(quick_gelu(hidden))


class Transformer(nn.Module):
    def __init__(self, width, heads, layers):
        super().__init__()
        self.resblocks = nn.Sequential(*[ResidualAttentionBlock(width, heads) for _ in range(layers)])

    def forward(self, x, mask=None):
        for block in self.resblocks:
            x = block(x, mask)
        return x


class VisualTransformer(nn.Module):
    def __init__(self, width, heads, layers, image, patch, proj):
        super().__init__()
        self.conv1 = nn.Conv2d(3, width, patch, patch, bias=False)
        self.class_embedding = nn.Parameter(torch.randn(width))
        self.positional_embedding = nn.Parameter(torch.randn((image // patch) ** 2 + 1, width))
        self.ln_pre = nn.LayerNorm(width)
        self.transformer = Transformer(width, heads, layers)
        self.ln_post = nn.LayerNorm(width)
        self.proj = nn.Parameter(torch.randn(width, proj))


class OpenAICLIP(nn.Module):
    def __init__(self, dims):
        super().__init__()
        self.visual = VisualTransformer(dims["vision"], vision_heads(dims), dims["layers"], dims["image"],
                                        dims["patch"], dims["proj"])
        self.transformer = Transformer(dims["text"], text_heads(dims), dims["layers"])
        self.token_embedding = nn.Embedding(vocab(dims), dims["text"])
        self.positional_embedding = nn.Parameter(torch.empty(77, dims["text"]))
        self.ln_final = nn.LayerNorm(dims["text"])
        self.text_projection = nn.Parameter(torch.empty(dims["text"], dims["proj"]))
        self.logit_scale = nn.Parameter(torch.ones([]))

    def encode_image(self, images):
        v = self.visual
        x = v.conv1(images).flatten(2).permute(0, 2, 1)
        x = torch.cat([v.class_embedding.expand(x.shape[0], 1, -1), x], dim=1) + v.positional_embedding
        x = v.transformer(v.ln_pre(x).permute(1, 0, 2)).permute(1, 0, 2)
        return v.ln_post(x[:, 0]) @ v.proj

    def encode_text(self, text):
        x = self.token_embedding(text) + self.positional_embedding[: text.shape[1]]
        mask = torch.full((text.shape[1], text.shape[1]), float("-inf")).triu(1)
        x = self.transformer(x.permute(1, 0, 2), mask).permute(1, 0, 2)
        return (self.ln_final(x) @ self.text_projection)[torch.arange(x.shape[0]), text.argmax(-1)]


class CLIP4Clip(nn.Module):
    """CLIP4Clip with `--sim_header meanP --loose_type`: only `clip.*` holds weights."""

    def __init__(self, dims):
        super().__init__()
        self.clip = OpenAICLIP(dims)

    def text_embeds(self, input_ids):
        return self.clip.encode_text(input_ids)

    def video_embeds(self, video, video_mask):
        frames = self.clip.encode_image(video.flatten(0, 1)).view(video.shape[0], video.shape[1], -1)
        frames = frames / frames.norm(dim=-1, keepdim=True)
        mask = video_mask.float()[..., None]
        pooled = (frames * mask).sum(1) / mask.sum(1).clamp(min=1.0)
        return pooled / pooled.norm(dim=-1, keepdim=True)
