"""PIG model configuration (method spec: docs/pig-method.md).

`PIGConfig` wraps a `CLIPConfig` (both towers come from CLIP) and adds the fields of the ViP video tower (§2),
the Informativeness Token Selector (§3), the pseudo-query generator (§4), the pseudo interaction (§5) and the
losses (§6.2). The same config also describes the two Two-Tower baselines of the paper's comparison:
`use_pseudo_query=False` is CLIP-ViP and `video_tower="meanp"` (with `use_pseudo_query=False`) is CLIP4Clip meanP.

Every field is checked when the config is built (also when it is read from a `config.json`) by
`huggingface_hub.dataclasses.strict`, as transformers' own configs are: a wrong type or an impossible value raises
a `StrictDataclassError` whose message names the field and whose cause is the `TypeError` / `ValueError`.

This file must import only `transformers`/`torch`/the standard library: it is copied next to saved checkpoints
(`trust_remote_code`).
"""

import copy
import math

from huggingface_hub.dataclasses import strict, validated_field
from transformers import AutoConfig, CLIPConfig, PreTrainedConfig
from transformers.models.auto.configuration_auto import CONFIG_MAPPING

VIDEO_TOWERS = ("vip", "meanp")
HEAD_REDUCTIONS = ("max", "mean")
# Tokens in front of the frames in the ViP sequence: the video CLS (CLIP's class token) + the proxy tokens.
NUM_CLASS_TOKENS = 1


def _requires(description: str, test):
    """A `@strict` field validator: `test(value)` must hold (the type itself is checked by the annotation)."""

    def validator(value):
        if value is not None and not test(value):
            raise ValueError(f"must be {description}, got {value!r}")

    return validator


def _one_of(allowed: tuple[str, ...]):
    """A `@strict` field validator for a string from a fixed set (a wrong type stays a TypeError)."""

    def validator(value):
        if isinstance(value, str) and value not in allowed:
            raise ValueError(f"must be one of {allowed}, got {value!r}")

    return validator


@strict
class PIGConfig(PreTrainedConfig):
    r"""Configuration of [`PIGModel`].

    Args:
        clip_config (`dict` or `CLIPConfig`, *optional*):
            The CLIP model both towers start from (defaults to the `openai/clip-vit-base-patch32` shapes). A
            `CLIPConfig` passed in is copied, never mutated.
        num_frames (`int`, defaults to 12):
            Frames per video; the size of the temporal embedding table (§2.2). Inputs with another frame count
            (e.g. 1-frame images in stage 1) use a linearly interpolated table.
        num_proxy_tokens (`int`, defaults to 3):
            Video proxy tokens of the ViP tower (§2.2, `add_cls_num`); with the video CLS they are the global tokens.
        its_top_k (`int`, defaults to 16):
            Patch tokens picked by the Informativeness Token Selector (§3). At most `num_frames * patches_per_frame`.
        its_head_reduction (`str`, defaults to `"max"`):
            How ITS reduces the last layer's CLS attention over heads: `"max"` (paper) or `"mean"`.
        generation_loss_weight (`float`, defaults to 1.0):
            alpha, the weight of the reconstruction ("generation") loss (§4.3, §10 row 7: applied).
        detach_generation_target (`bool`, defaults to `False`):
            Detach the caption embedding used as the reconstruction target (§10 row 10; the authors do not).
        use_pseudo_query (`bool`, defaults to `True`):
            Build the pseudo-query generator and the pseudo interaction (PIG). `False` is the CLIP-ViP baseline
            (video embedding = projected video CLS) or, with `video_tower="meanp"`, CLIP4Clip meanP.
        video_tower (`str`, defaults to `"vip"`):
            `"vip"`: CLIP-ViP proxy-token tower (§2). `"meanp"`: plain CLIP per frame, mean of the projected
            frame embeddings (CLIP4Clip meanP baseline; requires `use_pseudo_query=False`).
        logit_scale_init_value (`float`, defaults to 4.60):
            Initial log-temperature of the contrastive loss (§2.2; exp = 99.5). Also written into `clip_config`.
        logit_scale_max (`float`, defaults to ln 200):
            Upper clamp of the log-temperature (lower clamp is 0), applied in `forward` and by
            `PIGModel.clamp_logit_scale_()` after each optimiser step.
        use_frame_cls (`bool`, defaults to `True`):
            Put one (shared) frame-CLS token in front of every frame's patches (PIG / F-Pig's ViP tower, §2.3).
            `False` is the original CLIP-ViP layout (microsoft/XPretrain: frames are their patches only), needed
            to reproduce CLIP-ViP checkpoints exactly; the generator reads frame-CLS tokens, so `False` requires
            `use_pseudo_query=False`.
        generator_use_bos (`bool`, defaults to `True`):
            Prepend the [bos] slot to the generator input (`use_bos_embeds=1`, §10 row 5). `False` is F-Pig's
            B/32 release config (`use_bos_embeds=0`): the sequence is `[video tokens, eos]` and there is no [bos].
        learnable_bos_eos (`bool`, defaults to `True`):
            The generator's [bos]/[eos] slots are trainable parameters ([FPIG], §10 row 4); `False` keeps them
            as fixed (saved) buffers ([PIG]).
        generator_output_projection (`bool`, defaults to `True`):
            Apply a trainable copy of CLIP's `text_projection` to the generator output ([FPIG], §10 row 6).
            `False` returns the final-LN state ([PIG]); it then needs text width == projection_dim.
        generator_bos_token_id / generator_eos_token_id (`int`, *optional*):
            Rows of CLIP's token-embedding table that initialise the [bos]/[eos] slots. Default: the text config's
            `bos_token_id`/`eos_token_id`, or the last two vocabulary rows (`<|startoftext|>`, `<|endoftext|>`)
            for CLIP checkpoints that carry the legacy ids (bos 0 / eos 2).
        interaction_dropout (`float`, defaults to 0.1):
            Dropout on the `linear_proj` branch of the pseudo interaction (§5).
        interaction_attn_temp (`float`, defaults to 1.0):
            Extra divisor of the pseudo-interaction attention logits (§5, `attn_temp`).
        initializer_range (`float`, defaults to 0.02):
            Std of the normal init of new linear layers without a special init.
    """

    model_type = "pig"
    sub_configs_defaults = {"clip_config": CLIPConfig}

    clip_config: dict | CLIPConfig | None = None
    num_frames: int = validated_field(_requires(">= 1", lambda v: v >= 1), default=12)
    num_proxy_tokens: int = validated_field(_requires(">= 0", lambda v: v >= 0), default=3)
    its_top_k: int = validated_field(_requires(">= 0", lambda v: v >= 0), default=16)
    its_head_reduction: str = validated_field(_one_of(HEAD_REDUCTIONS), default="max")
    generation_loss_weight: float | int = validated_field(_requires(">= 0 and finite", lambda v: 0 <= v < math.inf),
                                                          default=1.0)
    detach_generation_target: bool = False
    use_pseudo_query: bool = True
    video_tower: str = validated_field(_one_of(VIDEO_TOWERS), default="vip")
    logit_scale_init_value: float | int = validated_field(_requires("finite", math.isfinite), default=4.60)
    logit_scale_max: float | int = validated_field(_requires("> 0 and finite", lambda v: 0 < v < math.inf),
                                                   default=math.log(200.0))
    use_frame_cls: bool = True
    generator_use_bos: bool = True
    learnable_bos_eos: bool = True
    generator_output_projection: bool = True
    generator_bos_token_id: int | None = None
    generator_eos_token_id: int | None = None
    interaction_dropout: float | int = validated_field(_requires("in [0, 1)", lambda v: 0 <= v < 1), default=0.1)
    interaction_attn_temp: float | int = validated_field(_requires("> 0 and finite", lambda v: 0 < v < math.inf),
                                                         default=1.0)
    initializer_range: float | int = validated_field(_requires("> 0 and finite", lambda v: 0 < v < math.inf),
                                                     default=0.02)

    def __post_init__(self, **kwargs):
        # A CLIPConfig passed in is copied: this config writes into it (logit scale) and model construction
        # writes `_attn_implementation` into it; neither may leak into the caller's object.
        if isinstance(self.clip_config, CLIPConfig):
            self.clip_config = copy.deepcopy(self.clip_config)
        super().__post_init__(**kwargs)
        self.clip_config.logit_scale_init_value = float(self.logit_scale_init_value)
        if self.generator_bos_token_id is None or self.generator_eos_token_id is None:
            bos, eos = self._default_bos_eos_token_ids()
            if self.generator_bos_token_id is None:
                self.generator_bos_token_id = bos
            if self.generator_eos_token_id is None:
                self.generator_eos_token_id = eos

    # ----------------------------------------------------------------------------------------------- derived shapes
    @property
    def num_patches_per_frame(self) -> int:
        """P: patch tokens per frame (49 for B/32 at 224 px)."""
        vision = self.clip_config.vision_config
        return (vision.image_size // vision.patch_size) ** 2

    @property
    def num_global_tokens(self) -> int:
        """M: video CLS + proxy tokens (4 with the default 3 proxies)."""
        return NUM_CLASS_TOKENS + self.num_proxy_tokens

    def generator_sequence_length(self, num_frames: int | None = None) -> int:
        """Length of the generator input `[bos, CLS, proxies, frame-CLS x T, ITS top-k, eos]` (34 for B/32, T=12;
        one less without the [bos] slot)."""
        frames = self.num_frames if num_frames is None else num_frames
        return int(self.generator_use_bos) + self.num_global_tokens + frames + self.its_top_k + 1

    # -------------------------------------------------------------------------------------------------- validation
    # Types and single-field ranges are checked by `@strict` on every assignment (the field validators above);
    # these `validate_*` methods check fields against each other after construction and in `check()`.
    def validate_logit_scale(self):
        if not 0 <= self.logit_scale_init_value <= self.logit_scale_max:
            raise ValueError(
                f"PIGConfig.logit_scale_init_value must lie in [0, logit_scale_max={self.logit_scale_max:.4f}], "
                f"got {self.logit_scale_init_value}"
            )

    def validate_video_tower(self):
        if self.video_tower == "meanp" and self.use_pseudo_query:
            raise ValueError(
                "PIGConfig.use_pseudo_query=True needs video_tower='vip' (the generator reads the ViP proxy and "
                "frame-CLS tokens); the meanP baseline is video_tower='meanp' with use_pseudo_query=False"
            )
        if not self.use_frame_cls and self.use_pseudo_query:
            raise ValueError(
                "PIGConfig.use_frame_cls=False needs use_pseudo_query=False (the pseudo-query generator and the "
                "pseudo interaction read the frame-CLS tokens); it is the original CLIP-ViP baseline layout"
            )
        vision = self.clip_config.vision_config
        if vision.image_size % vision.patch_size != 0:
            raise ValueError(
                f"PIGConfig.clip_config.vision_config.image_size ({vision.image_size}) must be a multiple of "
                f"patch_size ({vision.patch_size})"
            )

    def validate_generator(self):
        if self.video_tower != "vip" or not self.use_pseudo_query:
            return  # no generator: the ITS and generator limits do not apply
        max_k = self.num_frames * self.num_patches_per_frame
        if self.its_top_k > max_k:
            raise ValueError(
                f"PIGConfig.its_top_k ({self.its_top_k}) exceeds the number of patch tokens "
                f"num_frames * patches_per_frame = {self.num_frames} * {self.num_patches_per_frame} = {max_k}"
            )
        text = self.clip_config.text_config
        length = self.generator_sequence_length()
        if length > text.max_position_embeddings:
            raise ValueError(
                f"PIGConfig: the generator sequence [{'bos, ' if self.generator_use_bos else ''}"
                f"{self.num_global_tokens} global, {self.num_frames} "
                f"frame-CLS, its_top_k={self.its_top_k}, eos] has {length} tokens, more than the text position "
                f"table (clip_config.text_config.max_position_embeddings={text.max_position_embeddings})"
            )
        if not self.generator_output_projection and text.hidden_size != self.clip_config.projection_dim:
            raise ValueError(
                "PIGConfig.generator_output_projection=False needs clip_config.text_config.hidden_size "
                f"({text.hidden_size}) == clip_config.projection_dim ({self.clip_config.projection_dim})"
            )

    def validate_generator_token_ids(self):
        vocab_size = self.clip_config.text_config.vocab_size
        for name in ("generator_bos_token_id", "generator_eos_token_id"):
            value = getattr(self, name)
            if not 0 <= value < vocab_size:
                raise ValueError(f"PIGConfig.{name} must lie in [0, vocab_size={vocab_size}), got {value}")

    def _default_bos_eos_token_ids(self) -> tuple[int, int]:
        text = self.clip_config.text_config
        bos, eos = text.bos_token_id, text.eos_token_id
        # CLIP checkpoints saved before transformers PR #24773 carry bos 0 / eos 2 (not the real ids); the CLIP
        # vocabulary always ends with <|startoftext|>, <|endoftext|>.
        if isinstance(eos, list):
            eos = eos[0] if eos else None
        if bos is None or eos is None or eos == 2:
            return text.vocab_size - 2, text.vocab_size - 1
        return bos, eos

    def check(self):
        """Re-run every check (the model calls this, so a config edited after construction is caught too)."""
        for name in PIGConfig.__annotations__:  # PIG's own fields: re-assigning runs their `@strict` validators
            setattr(self, name, getattr(self, name))
        self.validate()  # the `validate_*` methods


# Replaces the stand-in that importing the package may have registered (see auto_registration.py there: stand-ins
# carry `_pig_module`; this file must not import the package, being copied next to checkpoints); a PIGConfig already
# registered (e.g. from a checkpoint's copy of this file) is kept.
if "pig" not in CONFIG_MAPPING or hasattr(CONFIG_MAPPING._extra_content.get("pig"), "_pig_module"):
    AutoConfig.register("pig", PIGConfig, exist_ok=True)
PIGConfig.register_for_auto_class()

__all__ = ["PIGConfig"]
