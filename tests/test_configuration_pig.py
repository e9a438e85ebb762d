"""PIGConfig: spec defaults, serialisation, and validation errors that name the field."""

import json
import math

import pytest
from conftest import tiny_clip_config_dict, tiny_pig_config
from huggingface_hub.errors import StrictDataclassError
from transformers import AutoConfig, CLIPConfig

from modeling_pig import PIGConfig


tiny = tiny_pig_config


def test_defaults_follow_the_method_spec():
    config = PIGConfig()
    assert (config.num_frames, config.num_proxy_tokens, config.its_top_k) == (12, 3, 16)
    assert config.its_head_reduction == "max"
    assert config.generation_loss_weight == 1.0 and config.detach_generation_target is False
    assert config.use_pseudo_query is True and config.video_tower == "vip"
    assert config.logit_scale_init_value == pytest.approx(4.60)
    assert config.logit_scale_max == pytest.approx(math.log(200))
    assert config.learnable_bos_eos is True and config.generator_output_projection is True
    assert config.interaction_dropout == pytest.approx(0.1) and config.interaction_attn_temp == 1.0
    # B/32 shapes of §12: 49 patches, 4 global tokens, generator sequence of 34
    assert config.num_patches_per_frame == 49 and config.num_global_tokens == 4
    assert config.generator_sequence_length() == 34
    # CLIP's <|startoftext|>/<|endoftext|> rows
    assert (config.generator_bos_token_id, config.generator_eos_token_id) == (49406, 49407)
    # the PIG log-temperature is written into the CLIP sub-config (CLIP's own default is 2.6592)
    assert config.clip_config.logit_scale_init_value == pytest.approx(4.60)


def test_legacy_clip_token_ids_fall_back_to_the_last_vocabulary_rows():
    # openai/clip-* config.json files carry bos 0 / eos 2 (see transformers PR #24773)
    config = tiny(clip_config=tiny_clip_config_dict(text_config=dict(bos_token_id=0, eos_token_id=2)))
    assert (config.generator_bos_token_id, config.generator_eos_token_id) == (97, 98)
    config = tiny(generator_bos_token_id=5, generator_eos_token_id=6)
    assert (config.generator_bos_token_id, config.generator_eos_token_id) == (5, 6)


def test_a_clip_config_object_passed_in_is_copied_not_mutated():
    clip = CLIPConfig(**tiny_clip_config_dict())
    config = tiny(clip_config=clip)
    assert clip.logit_scale_init_value == pytest.approx(2.6592)
    assert config.clip_config is not clip
    assert config.clip_config.vision_config.hidden_size == clip.vision_config.hidden_size


def test_save_and_load_round_trip_through_auto_config(tmp_path):
    config = tiny(num_proxy_tokens=2, its_top_k=7, generation_loss_weight=0.5, video_tower="vip",
                  learnable_bos_eos=False, interaction_attn_temp=0.5)
    config.save_pretrained(tmp_path)
    loaded = AutoConfig.from_pretrained(tmp_path)
    assert isinstance(loaded, PIGConfig)
    assert isinstance(loaded.clip_config, CLIPConfig)
    original, reloaded = config.to_dict(), loaded.to_dict()
    for key in ("transformers_version", "_name_or_path"):
        original.pop(key, None)
        reloaded.pop(key, None)
    assert reloaded == original


@pytest.mark.parametrize(
    ("overrides", "error", "field"),
    [
        (dict(its_top_k=3 * 16 + 1), ValueError, "its_top_k"),  # T * P = 48 patch tokens
        (dict(its_top_k=-1), ValueError, "its_top_k"),
        (dict(its_top_k=2.0), TypeError, "its_top_k"),
        (dict(num_frames=0), ValueError, "num_frames"),
        (dict(num_frames="3"), TypeError, "num_frames"),
        (dict(num_proxy_tokens=-2), ValueError, "num_proxy_tokens"),
        (dict(num_proxy_tokens=True), TypeError, "num_proxy_tokens"),
        (dict(video_tower="xclip"), ValueError, "video_tower"),
        (dict(video_tower=1), TypeError, "video_tower"),
        (dict(video_tower="meanp"), ValueError, "use_pseudo_query"),  # meanp + pseudo-query
        (dict(use_pseudo_query="yes"), TypeError, "use_pseudo_query"),
        (dict(its_head_reduction="min"), ValueError, "its_head_reduction"),
        (dict(generation_loss_weight=-0.1), ValueError, "generation_loss_weight"),
        (dict(generation_loss_weight="1"), TypeError, "generation_loss_weight"),
        (dict(logit_scale_init_value=6.0), ValueError, "logit_scale_init_value"),  # > ln 200
        (dict(logit_scale_max=0.0), ValueError, "logit_scale_max"),
        (dict(interaction_dropout=1.0), ValueError, "interaction_dropout"),
        (dict(interaction_attn_temp=0.0), ValueError, "interaction_attn_temp"),
        (dict(interaction_attn_temp=float("nan")), ValueError, "interaction_attn_temp"),
        (dict(generator_bos_token_id=99), ValueError, "generator_bos_token_id"),  # vocab is 99
        (dict(generator_eos_token_id="98"), TypeError, "generator_eos_token_id"),
        (dict(clip_config="openai/clip-vit-base-patch32"), TypeError, "clip_config"),
        # the tiny text width (32) differs from projection_dim (24): the [PIG] variant needs them equal
        (dict(generator_output_projection=False), ValueError, "generator_output_projection"),
        (dict(use_frame_cls=False), ValueError, "use_frame_cls"),  # the generator reads frame-CLS tokens
        (dict(use_frame_cls=0), TypeError, "use_frame_cls"),
        (dict(generator_use_bos="no"), TypeError, "generator_use_bos"),
    ],
)
def test_impossible_values_raise_an_error_naming_the_field(overrides, error, field):
    with pytest.raises(StrictDataclassError, match=field) as raised:  # huggingface_hub's `@strict`, as transformers
        tiny(**overrides)
    assert isinstance(raised.value.__cause__, error)


def test_generator_sequence_longer_than_the_text_position_table_is_rejected():
    clip = tiny_clip_config_dict(text_config=dict(max_position_embeddings=12))
    # [bos, 4 globals, 3 frame-CLS, 5 ITS, eos] = 14 > 12
    with pytest.raises(StrictDataclassError, match="max_position_embeddings"):
        tiny(clip_config=clip)
    assert tiny(clip_config=clip, its_top_k=3).generator_sequence_length() == 12


def test_the_generator_sequence_without_bos_is_one_token_shorter():
    assert tiny().generator_sequence_length() == 14 and tiny(generator_use_bos=False).generator_sequence_length() == 13
    assert PIGConfig(generator_use_bos=False).generator_sequence_length() == 33  # F-Pig B/32: 32 tokens + eos


def test_baselines_are_valid_configurations():
    assert not tiny(use_pseudo_query=False, use_frame_cls=False).use_frame_cls  # original CLIP-ViP layout
    assert tiny(use_pseudo_query=False).video_tower == "vip"  # CLIP-ViP
    meanp = tiny(use_pseudo_query=False, video_tower="meanp")  # CLIP4Clip meanP
    assert meanp.video_tower == "meanp"
    # ITS / generator limits do not apply when there is no generator
    assert tiny(use_pseudo_query=False, video_tower="meanp", its_top_k=10_000).its_top_k == 10_000


def test_check_catches_a_config_edited_after_construction():
    config = tiny()
    config.its_top_k = 1000
    with pytest.raises(StrictDataclassError, match="its_top_k"):
        config.check()


def test_a_bad_value_assigned_later_is_rejected_at_once():
    config = tiny()
    with pytest.raises(StrictDataclassError, match="num_frames") as raised:
        config.num_frames = 0
    assert isinstance(raised.value.__cause__, ValueError)
    assert config.num_frames == 3


def test_a_bad_value_in_config_json_is_rejected_on_load(tmp_path):
    tiny().save_pretrained(tmp_path)
    saved = json.loads((tmp_path / "config.json").read_text())
    (tmp_path / "config.json").write_text(json.dumps({**saved, "interaction_dropout": 1.5}))
    with pytest.raises(StrictDataclassError, match="interaction_dropout"):
        AutoConfig.from_pretrained(tmp_path)
