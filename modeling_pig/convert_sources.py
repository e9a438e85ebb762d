"""Per-source key maps and settings for `modeling_pig.convert` (the authors' PIG / F-Pig, CLIP-ViP, CLIP4Clip).

Each `plan_*` function reads the source's checkpoint (already a flat dict of tensors) and, where there is one, its
JSON config, and fills a `KeyMap` (every source tensor mapped to one of ours, or dropped with a reason) plus the
`PIGConfig` fields and processor settings the source fixes. Names and shapes follow the sources' code:

* pig / fpig: `encoder.clipmodel.*` is the authors' CLIP-ViP model with transformers' CLIP names (so CLIP's own
  tensors keep their names under our `clip.`), `generator.*` their `FeatureReconstructor` (a CLIP text transformer
  under `generator.clip_reconstructor.`), `fusioner.*` their `XPoolCrossAttentionPooler`.
* clip-vip: `clipmodel.*` of microsoft/XPretrain's `VidCLIP` (same CLIP names, no frame-CLS token).
* clip4clip: `clip.*` of ArrowLuo/CLIP4Clip, OpenAI's CLIP layout (`visual.transformer.resblocks.N.attn.in_proj_*`,
  `proj` and `text_projection` as [in, out] matrices).

See docs/convert.md for the tables this code implements.
"""

from __future__ import annotations

import math
import re

import torch

# The ITS / generator / fusioner variants PIGModel implements (pig-method.md §3-§5).
GENERATOR_INPUT = "cls+added_cls+frame_cls+cls_attention_scores_no_overlap"
FUSIONER_INPUT = "cls+added_cls+frame_cls"
OPENAI_HEAD_DIM = 64  # every OpenAI CLIP ViT has 64-wide heads; used when no --clip config is given


class ConversionError(ValueError):
    """A checkpoint or config that cannot be converted; the message names the file, the field and the keys."""


class KeyMap:
    """Source tensors -> our state dict, with a record of how (for the card) and a refusal of leftovers."""

    def __init__(self, state_dict: dict[str, torch.Tensor]):
        self.source = state_dict
        self.target: dict[str, torch.Tensor] = {}
        self.mapped: list[tuple[str, str, str]] = []  # (source key, our key, how)
        self.dropped: list[tuple[str, str]] = []  # (source key, why)
        self.filled: list[tuple[str, str]] = []  # (our key, how it was filled without a source tensor)
        self.missing: list[str] = []
        self.done: set[str] = set()

    def has(self, key: str) -> bool:
        return key in self.source

    def get(self, key: str) -> torch.Tensor | None:
        """The source tensor (marked used), or None after recording it as missing."""
        if key not in self.source:
            self.missing.append(key)
            return None
        self.done.add(key)
        return self.source[key]

    def put(self, target: str, tensor: torch.Tensor | None, source: str, how: str = "copy"):
        if tensor is None:
            return
        if tensor.is_floating_point() and tensor.dtype != torch.float32:
            how = f"{how}; {str(tensor.dtype).replace('torch.', '')} -> float32"
            tensor = tensor.float()
        self.target[target] = tensor.contiguous()
        self.mapped.append((source, target, how))

    def copy(self, source: str, target: str):
        self.put(target, self.get(source), source)

    def drop(self, source: str, why: str):
        self.get(source)
        self.dropped.append((source, why))

    def fill(self, target: str, tensor: torch.Tensor, how: str):
        self.target[target] = tensor
        self.filled.append((target, how))

    def drop_position_ids(self, key: str):
        """The old transformers' persistent `position_ids` buffer: checked to be 0..n-1, then dropped."""
        ids = self.source[key]
        if not torch.equal(ids.reshape(-1).long(), torch.arange(ids.numel())):
            raise ConversionError(f"{key} is not 0..{ids.numel() - 1}; positions this model cannot reproduce")
        self.drop(key, "constant 0..n-1 buffer of old transformers versions; transformers rebuilds it")

    def leftovers(self) -> list[str]:
        return sorted(set(self.source) - self.done)


class SourceConfig:
    """The authors' JSON config, read field by field; every complaint names the file and the dotted field."""

    def __init__(self, data: dict, path: str):
        self.data, self.path = data, path
        self.used: list[tuple[str, object]] = []

    def get(self, field: str, default=KeyError):
        node = self.data
        for part in field.split("."):
            if not isinstance(node, dict) or part not in node:
                if default is KeyError:
                    raise ConversionError(f"{self.path}: field {field!r} is missing")
                return default
            node = node[part]
        self.used.append((field, node))
        return node

    def expect(self, field: str, allowed, default=KeyError, why: str = ""):
        value = self.get(field, default)
        if value not in allowed:
            raise ConversionError(
                f"{self.path}: {field} = {value!r}; PIGModel implements only {sorted(map(str, allowed))}{why}"
            )
        return value


# ------------------------------------------------------------------------------------------------ CLIP shapes


# Where each CLIP size is read: (tensor, dim), or a key pattern whose distinct matches count the layers.
SHAPE_KEYS = {
    "hf": {"vocab": ("text_model.embeddings.token_embedding.weight", 0),
           "text_width": ("text_model.embeddings.token_embedding.weight", 1),
           "text_positions": ("text_model.embeddings.position_embedding.weight", 0),
           "text_layers": r"text_model\.encoder\.layers\.(\d+)\.",
           "text_inner": ("text_model.encoder.layers.0.mlp.fc1.weight", 0),
           "vision_width": ("vision_model.embeddings.class_embedding", 0),
           "patch": ("vision_model.embeddings.patch_embedding.weight", -1),
           "positions": ("vision_model.embeddings.position_embedding.weight", 0),
           "vision_layers": r"vision_model\.encoder\.layers\.(\d+)\.",
           "vision_inner": ("vision_model.encoder.layers.0.mlp.fc1.weight", 0),
           "projection": ("visual_projection.weight", 0)},
    "openai": {"vocab": ("token_embedding.weight", 0), "text_width": ("token_embedding.weight", 1),
               "text_positions": ("positional_embedding", 0), "text_layers": r"transformer\.resblocks\.(\d+)\.",
               "text_inner": ("transformer.resblocks.0.mlp.c_fc.weight", 0),
               "vision_width": ("visual.class_embedding", 0), "patch": ("visual.conv1.weight", -1),
               "positions": ("visual.positional_embedding", 0),
               "vision_layers": r"visual\.transformer\.resblocks\.(\d+)\.",
               "vision_inner": ("visual.transformer.resblocks.0.mlp.c_fc.weight", 0), "projection": ("visual.proj", 1)},
}


def infer_clip_config(state_dict: dict, layout: str, prefix: str) -> dict:
    """A `CLIPConfig` dict read off the tensor shapes (heads = width / 64, quick-GELU, LN eps 1e-5: OpenAI CLIP).

    `layout` is "hf" (transformers names under `prefix`) or "openai" (OpenAI CLIP names under `prefix`).
    """
    def read(spec):
        if isinstance(spec, str):
            return len({m.group(1) for k in state_dict if (m := re.match(re.escape(prefix) + spec, k))})
        key, dim = spec
        if prefix + key not in state_dict:
            raise ConversionError(f"the checkpoint has no {prefix + key}: not a {layout} CLIP layout")
        return state_dict[prefix + key].shape[dim]

    sizes = {name: read(spec) for name, spec in SHAPE_KEYS[layout].items()}
    vocab, text_width, vision_width, positions = (sizes[k] for k in ("vocab", "text_width", "vision_width",
                                                                     "positions"))
    grid = math.isqrt(positions - 1)
    if grid * grid != positions - 1:
        raise ConversionError(f"{positions - 1} vision patch positions do not form a square grid")
    for name, width in (("text", text_width), ("vision", vision_width)):
        if width % OPENAI_HEAD_DIM:
            raise ConversionError(
                f"{name} width {width} is not a multiple of {OPENAI_HEAD_DIM}: the head count cannot be read off "
                "the shapes; pass --clip with the CLIP config the checkpoint was trained from"
            )
    common = {"hidden_act": "quick_gelu", "layer_norm_eps": 1e-5}
    text = dict(vocab_size=vocab, hidden_size=text_width, intermediate_size=sizes["text_inner"],
                num_hidden_layers=sizes["text_layers"], num_attention_heads=text_width // OPENAI_HEAD_DIM,
                max_position_embeddings=sizes["text_positions"], bos_token_id=vocab - 2, eos_token_id=vocab - 1,
                pad_token_id=vocab - 1, **common)
    vision = dict(hidden_size=vision_width, intermediate_size=sizes["vision_inner"],
                  num_hidden_layers=sizes["vision_layers"], num_attention_heads=vision_width // OPENAI_HEAD_DIM,
                  image_size=grid * sizes["patch"], patch_size=sizes["patch"], **common)
    return {"text_config": text, "vision_config": vision, "projection_dim": sizes["projection"]}


# --------------------------------------------------------------------------------- CLIP with transformers names


def map_hf_clip(keys: KeyMap, prefix: str, frame_cls: bool):
    """`{prefix}text_model.* / vision_model.* / *_projection / logit_scale` -> `clip.*`, ViP tensors -> `vip.*`.

    Any other tensor of the vision embeddings (e.g. a frame-CLS where the target has none) stays unmapped.
    """
    embeddings = prefix + "vision_model.embeddings."
    vip = {"added_cls": "vip.proxy_tokens", "temporal_embedding": "vip.temporal_embedding"}
    if frame_cls:
        vip["cls_in_frames"] = "vip.frame_cls"
    clip_embeddings = ("class_embedding", "patch_embedding.weight", "position_embedding.weight")
    for key in sorted(keys.source):
        if not key.startswith(prefix):
            continue
        if key.endswith("embeddings.position_ids"):
            keys.drop_position_ids(key)
        elif not key.startswith(embeddings) or key[len(embeddings):] in clip_embeddings:
            keys.copy(key, "clip." + key[len(prefix):])
        elif key[len(embeddings):] in vip:
            keys.copy(key, vip[key[len(embeddings):]])


# ------------------------------------------------------------------------------------- pig / fpig (the authors')


def read_vip_settings(cfg: SourceConfig, keys: KeyMap, prefix: str, frame_cls: bool) -> dict:
    """`clip_vision_additional_config` -> PIGConfig fields, checked against the checkpoint's tensors."""
    cfg.expect("clip_vision_additional_config.type", ["ViP"])
    if frame_cls:
        cfg.expect("clip_vision_additional_config.keep_frame_cls", [1], why=" (PIG's token layout has frame-CLS)")
        cfg.expect("clip_vision_additional_config.use_different_frame_cls", [0], default=0,
                   why=" (one frame-CLS shared by all frames)")
    cfg.expect("clip_vision_additional_config.wo_global_view_in_frame_attn", [0], default=0,
               why=" (frame tokens attend the global tokens, §2.4)")
    embeddings = prefix + "vision_model.embeddings."
    proxies = cfg.get("clip_vision_additional_config.add_cls_num")
    frames = cfg.get("clip_vision_additional_config.temporal_size")
    temporal = cfg.expect("clip_vision_additional_config.if_use_temporal_embed", [0, 1])
    check_shape(keys, embeddings + "added_cls", 0, proxies, "clip_vision_additional_config.add_cls_num")
    if temporal:
        check_shape(keys, embeddings + "temporal_embedding", 1, frames, "clip_vision_additional_config.temporal_size")
    elif keys.has(embeddings + "temporal_embedding"):
        raise ConversionError(f"{cfg.path}: if_use_temporal_embed = 0 but the checkpoint has a temporal embedding")
    else:
        width = keys.source[embeddings + "class_embedding"].shape[0]
        keys.fill("vip.temporal_embedding", torch.zeros(1, frames, width), "zeros: the source adds no temporal "
                  "embedding (if_use_temporal_embed = 0), which zeros reproduce")
    return {"num_frames": frames, "num_proxy_tokens": proxies,
            "logit_scale_init_value": float(cfg.get("clip_vision_additional_config.logit_scale_init_value", 4.60))}


def check_shape(keys: KeyMap, key: str, dim: int, expected: int, field: str):
    if not keys.has(key):
        raise ConversionError(f"the checkpoint has no {key} (needed for {field})")
    actual = keys.source[key].shape[dim]
    if actual != expected:
        raise ConversionError(f"config {field} = {expected} but {key} has {actual} along dim {dim}")


def read_processor_settings(cfg: SourceConfig | None, frames_default: int, length_default: int,
                            resize_mode: str) -> dict:
    if cfg is None:
        return {"num_frames": frames_default, "max_length": length_default, "resize_mode": resize_mode}
    return {"num_frames": cfg.get("test_num_frms", frames_default),
            "max_length": cfg.get("max_txt_len", length_default), "resize_mode": resize_mode}


def plan_pig_family(source: str, keys: KeyMap, cfg: SourceConfig,
                    bos_eos_ids: tuple[int, int]) -> tuple[dict, dict]:
    """pig / fpig: checks the variant and maps `encoder.clipmodel.*`, `generator.*`, `fusioner.*`.

    A config without `generator_config` and `fusioner_config` is the authors' CLIP-ViP baseline run
    (`msrvtt_retrieval_vip_base_32.json`): only `encoder.clipmodel.*`, to our CLIP-ViP baseline with frame-CLS.
    """
    fields = read_vip_settings(cfg, keys, "encoder.clipmodel.", frame_cls=True)
    if cfg.get("generator_config", None) is None and cfg.get("fusioner_config", None) is None:
        fields.update(use_pseudo_query=False, use_frame_cls=True)
        map_hf_clip(keys, "encoder.clipmodel.", frame_cls=True)
        return fields, read_processor_settings(cfg, fields["num_frames"], 50, "squash")
    cfg.expect("generator_config.fr_model_type", ["CLIP-text-encoder"])
    cfg.expect("generator_config.video_mapper_type", ["Linear"])
    cfg.expect("generator_config.num_query_token", [1])
    cfg.expect("generator_config.overall_text_repr_type", ["pick_eot"], default="pick_eot")
    cfg.expect("generator_config.input_video_tokens_type", [GENERATOR_INPUT])
    use_bos = bool(cfg.expect("generator_config.use_bos_embeds", [0, 1], default=0))
    cfg.expect("fusioner_config.fusioner_type", ["XPoolCrossAttention"])
    cfg.expect("fusioner_config.text_embeds_type", ["eot-level"])
    cfg.expect("fusioner_config.input_video_tokens_type", [FUSIONER_INPUT])
    cfg.expect("fusioner_config.num_mha_heads", [1])
    for flag in ("final_residual_add", "final_alpha_add", "fuse_text_first", "gt_text2fuse"):
        cfg.expect(f"fusioner_config.{flag}", [0], default=0, why=" (the video embedding is the fusioner output)")
    for absent in ("pseudo_final_alpha_add", "decoder_config", "pretraining"):
        if cfg.get(absent, None) is not None:
            raise ConversionError(f"{cfg.path}: {absent} is set; PIGModel implements the stage-2 retrieval model "
                                  "without it")
    cfg.expect("generation_loss_config.generation_loss_name", ["l2"], default="l2")
    cfg.expect("generation_loss_config.norm_before_loss", [1], default=1)
    fields.update(
        its_top_k=cfg.get("fusioner_config.num_selected_tokens"),
        its_head_reduction=cfg.expect("fusioner_config.select_attention_scores_type", ["max", "mean"]),
        interaction_attn_temp=float(cfg.get("fusioner_config.attn_temp")),
        interaction_dropout=float(cfg.get("fusioner_config.transformer_dropout", 0.1)),
        generation_loss_weight=float(cfg.get("generation_loss_config.generation_loss_scale", 1.0)),
        generator_use_bos=use_bos, use_pseudo_query=True, use_frame_cls=True,
        generator_bos_token_id=bos_eos_ids[0], generator_eos_token_id=bos_eos_ids[1],
    )
    embed_dim = cfg.get("fusioner_config.embed_dim")
    check_shape(keys, "fusioner.linear_proj.weight", 0, embed_dim, "fusioner_config.embed_dim")
    processor = read_processor_settings(cfg, fields["num_frames"], 50, "squash")
    if processor["num_frames"] != fields["num_frames"]:
        raise ConversionError(f"{cfg.path}: test_num_frms = {processor['num_frames']} differs from temporal_size = "
                              f"{fields['num_frames']}; the authors' token selection assumes they are equal")

    map_hf_clip(keys, "encoder.clipmodel.", frame_cls=True)
    generator = "generator.clip_reconstructor."
    for part in ("video_mapper.", "encoder.", "final_layer_norm."):
        for key in sorted(k for k in keys.source if k.startswith(generator + part)):
            keys.copy(key, "generator." + key[len(generator):])
    keys.copy(generator + "embeddings.position_embedding.weight", "generator.position_embedding.weight")
    if keys.has(generator + "embeddings.position_ids"):
        keys.drop_position_ids(generator + "embeddings.position_ids")
    slots = [("bos", "generator.bos_embedding"), ("eos", "generator.eos_embedding")][0 if use_bos else 1:]
    if source == "pig":
        # [PIG] keeps CLIP's whole token table in the generator and uses two of its rows as fixed [bos]/[eos].
        table_key = generator + "embeddings.token_embedding.weight"
        table = keys.get(table_key)
        if table is not None:
            ids = dict(zip(("bos", "eos"), bos_eos_ids))
            for name, target in slots:
                token = "<|startoftext|>" if name == "bos" else "<|endoftext|>"
                keys.put(target, table[ids[name]], table_key, f"row {ids[name]} ({token})")
            keys.dropped.append((table_key, "the generator never looks tokens up; only the rows of its fixed "
                                            "[bos]/[eos] slots are used (kept as generator.*_embedding)"))
        fields.update(learnable_bos_eos=False, generator_output_projection=False)
    else:
        # [FPIG]: trainable slots `bos_tokens` / `query_tokens` (= eos) and a copy of text_projection.
        frozen = {cfg.expect(f"generator_config.freeze_{n}_embeds", [0, 1], default=0) for n in ("bos", "eos")}
        if len(frozen) > 1:
            raise ConversionError(f"{cfg.path}: freeze_bos_embeds != freeze_eos_embeds; PIGConfig.learnable_bos_eos "
                                  "is one switch for both slots")
        for name, target in slots:
            keys.copy("generator." + ("bos_tokens" if name == "bos" else "query_tokens"), target)
        if not use_bos and keys.has("generator.bos_tokens"):
            keys.drop("generator.bos_tokens", "use_bos_embeds = 0: the [bos] slot is built but never used")
        keys.copy(generator + "text_projection.weight", "generator.text_projection.weight")
        fields.update(learnable_bos_eos=frozen == {0}, generator_output_projection=True)
    for part in ("q_proj", "k_proj", "v_proj", "out_proj"):
        for leaf in ("weight", "bias"):
            keys.copy(f"fusioner.cross_attn.{part}.{leaf}", f"interaction.{part}.{leaf}")
    for part in ("linear_proj", "layer_norm1", "layer_norm2", "layer_norm3"):
        for leaf in ("weight", "bias"):
            keys.copy(f"fusioner.{part}.{leaf}", f"interaction.{part}.{leaf}")
    return fields, processor


# ---------------------------------------------------------------------------------------- CLIP-ViP (microsoft)


def plan_clip_vip(keys: KeyMap, cfg: SourceConfig | None, pig_init: bool) -> tuple[dict, dict]:
    """microsoft/XPretrain CLIP-ViP (`clipmodel.*`, no frame-CLS) -> the CLIP-ViP baseline, or a PIG start."""
    embeddings = "clipmodel.vision_model.embeddings."
    if keys.has(embeddings + "cls_in_frames"):
        raise ConversionError(f"{embeddings}cls_in_frames is present: this is a PIG-family ViP checkpoint (the "
                              "authors' CLIP-ViP baseline too); convert it with --from pig or --from fpig")
    if cfg is not None:
        fields = read_vip_settings(cfg, keys, "clipmodel.", frame_cls=False)
    else:  # every model setting is in the tensors
        temporal = keys.source.get(embeddings + "temporal_embedding")
        if temporal is None:
            raise ConversionError(f"the checkpoint has no {embeddings}temporal_embedding: pass its --config "
                                  "(if_use_temporal_embed = 0 runs need the frame count from there)")
        fields = {"num_frames": temporal.shape[1], "num_proxy_tokens": keys.source[embeddings + "added_cls"].shape[0]}
    fields.update(use_pseudo_query=pig_init, use_frame_cls=pig_init)
    map_hf_clip(keys, "clipmodel.", frame_cls=False)
    return fields, read_processor_settings(cfg, fields["num_frames"], 50, "squash")


# -------------------------------------------------------------------------------------------------- CLIP4Clip


OPENAI_BLOCK = {"ln_1": "layer_norm1", "ln_2": "layer_norm2", "mlp.c_fc": "mlp.fc1", "mlp.c_proj": "mlp.fc2",
                "attn.out_proj": "self_attn.out_proj"}
CLIP4CLIP_HEADS = {"cross.": "tightTransf (cross encoder)", "similarity_dense.": "tightTransf (cross encoder)",
                   "frame_position_embeddings.": "seqLSTM/seqTransf", "transformerClip.": "seqTransf",
                   "lstm_visual.": "seqLSTM", "clip.visual.conv2.": "linear_patch 3d"}


def map_openai_block(keys: KeyMap, source: str, target: str):
    weight, bias = keys.get(source + "attn.in_proj_weight"), keys.get(source + "attn.in_proj_bias")
    if weight is not None and bias is not None:
        for index, name in enumerate(("q_proj", "k_proj", "v_proj")):
            part = f"{name[0]} third of the rows"
            keys.put(f"{target}self_attn.{name}.weight", weight.chunk(3)[index], source + "attn.in_proj_weight", part)
            keys.put(f"{target}self_attn.{name}.bias", bias.chunk(3)[index], source + "attn.in_proj_bias", part)
    for ours_from, ours_to in OPENAI_BLOCK.items():
        for leaf in ("weight", "bias"):
            keys.copy(f"{source}{ours_from}.{leaf}", f"{target}{ours_to}.{leaf}")


def plan_clip4clip(keys: KeyMap, cfg: SourceConfig | None) -> tuple[dict, dict]:
    """CLIP4Clip meanP (`clip.*` in OpenAI's layout) -> the meanP baseline."""
    heads = {why for key in keys.source for prefix, why in CLIP4CLIP_HEADS.items() if key.startswith(prefix)}
    if heads:
        raise ConversionError(f"this CLIP4Clip checkpoint is {', '.join(sorted(heads))}, not meanP (parameter-free "
                              "mean pooling with linear_patch 2d); PIGModel implements meanP only")
    frames, length = 12, 32  # the frame count and max_words of CLIP4Clip's README commands
    if cfg is not None:
        cfg.expect("sim_header", ["meanP"], default="meanP")
        cfg.expect("linear_patch", ["2d"], default="2d")
        cfg.expect("loose_type", [True], default=True, why=" (meanP retrieval uses --loose_type)")
        frames, length = cfg.get("max_frames", frames), cfg.get("max_words", length)
    for key in ("clip.input_resolution", "clip.context_length", "clip.vocab_size"):
        if keys.has(key):
            keys.drop(key, "an integer of OpenAI's JIT archive, not a weight (its value is in the config)")
    visual, text = "clip.visual.", "clip.text_model."
    keys.copy(visual + "conv1.weight", "clip.vision_model.embeddings.patch_embedding.weight")
    keys.copy(visual + "class_embedding", "clip.vision_model.embeddings.class_embedding")
    keys.copy(visual + "positional_embedding", "clip.vision_model.embeddings.position_embedding.weight")
    for ours_from, ours_to in (("ln_pre", "pre_layrnorm"), ("ln_post", "post_layernorm")):
        for leaf in ("weight", "bias"):
            keys.copy(f"{visual}{ours_from}.{leaf}", f"clip.vision_model.{ours_to}.{leaf}")
    for tower, source, target in (("visual", visual + "transformer.resblocks.", "clip.vision_model.encoder.layers."),
                                  ("text", "clip.transformer.resblocks.", text + "encoder.layers.")):
        for index in sorted({int(k[len(source):].split(".")[0]) for k in keys.source if k.startswith(source)}):
            map_openai_block(keys, f"{source}{index}.", f"{target}{index}.")
    proj = keys.get(visual + "proj")
    if proj is not None:
        keys.put("clip.visual_projection.weight", proj.t(), visual + "proj", "transposed ([in, out] -> [out, in])")
    keys.copy("clip.token_embedding.weight", text + "embeddings.token_embedding.weight")
    keys.copy("clip.positional_embedding", text + "embeddings.position_embedding.weight")
    for leaf in ("weight", "bias"):
        keys.copy(f"clip.ln_final.{leaf}", f"{text}final_layer_norm.{leaf}")
    projection = keys.get("clip.text_projection")
    if projection is not None:
        keys.put("clip.text_projection.weight", projection.t(), "clip.text_projection",
                 "transposed ([in, out] -> [out, in])")
    keys.copy("clip.logit_scale", "clip.logit_scale")
    fields = {"video_tower": "meanp", "use_pseudo_query": False, "num_frames": frames}
    return fields, {"num_frames": frames, "max_length": length, "resize_mode": "center_crop"}
