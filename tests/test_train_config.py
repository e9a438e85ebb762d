"""Recipes and flags of training/train.py: every YAML recipe is valid, yaml < CLI, unknown keys are errors."""

import dataclasses
import types
import typing
from pathlib import Path
from typing import Literal

import pytest

from training.args import TrainArguments, load_recipe, parse_args

CONFIG_DIR = Path(__file__).resolve().parents[1] / "training" / "configs"
RECIPES = sorted(CONFIG_DIR.glob("*.yaml"))


def test_there_are_recipes_for_every_benchmark_and_both_baselines():
    names = {p.stem for p in RECIPES}
    for expected in ("msrvtt_9k_pig_b32", "msrvtt_9k_pig_b16", "msrvtt_9k_clipvip_b32", "msrvtt_9k_meanp_b32",
                     "didemo_pig_b32", "activitynet_pig_b32", "lsmdc_pig_b32", "vatex_pig_b32", "msvd_pig_b32",
                     "stage1_cc3m_b32"):
        assert expected in names


@pytest.mark.parametrize("recipe", RECIPES, ids=[p.stem for p in RECIPES])
def test_every_recipe_parses_against_the_argument_parser(recipe):
    values = load_recipe(recipe)  # raises on an unknown key or a wrongly typed value
    args = parse_args(["--config", str(recipe)])
    for key, value in values.items():
        assert getattr(args, key) == value, key


def test_msrvtt_b32_recipe_is_the_papers_released_setting():
    args = parse_args(["--config", str(CONFIG_DIR / "msrvtt_9k_pig_b32.yaml")])
    assert args.clip_model == "openai/clip-vit-base-patch32"
    assert (args.num_frames, args.max_length, args.train_batch_size) == (12, 50, 128)
    assert (args.adam_beta1, args.adam_beta2, args.adam_epsilon, args.weight_decay) == (0.9, 0.98, 1e-6, 0.2)
    assert args.learning_rate == 3e-6 and args.num_train_epochs == 100 and args.warmup_ratio == 0.01
    assert args.no_decay_keywords == ["bias", "logit_scale"] and args.max_grad_norm == 1.0
    assert args.use_pseudo_query and args.video_tower == "vip"
    didemo = parse_args(["--config", str(CONFIG_DIR / "didemo_pig_b32.yaml")])
    assert (didemo.num_frames, didemo.max_length, didemo.dataset) == (32, 64, "didemo")
    stage1 = parse_args(["--config", str(CONFIG_DIR / "stage1_cc3m_b32.yaml")])
    assert (stage1.stage, stage1.stage1_learning_rate) == ("1", 9e-5)
    meanp = parse_args(["--config", str(CONFIG_DIR / "msrvtt_9k_meanp_b32.yaml")])
    assert (meanp.video_tower, meanp.use_pseudo_query, meanp.train_batch_size) == ("meanp", False, 128)


def test_command_line_overrides_the_recipe_which_overrides_the_defaults(tmp_path):
    recipe = tmp_path / "r.yaml"
    recipe.write_text("learning_rate: 5.0e-6\nnum_frames: 8\nuse_pseudo_query: false\nstage: '2'\n")
    args = parse_args(["--config", str(recipe), "--num_frames", "6", "--use_pseudo_query"])
    assert args.learning_rate == 5e-6          # recipe beats default
    assert args.num_frames == 6                # CLI beats recipe
    assert args.use_pseudo_query is True       # CLI flag beats recipe false
    assert args.stage == "2"
    assert args.seed == TrainArguments().seed  # untouched default


def test_base_recipes_chain_and_the_child_wins(tmp_path):
    (tmp_path / "base.yaml").write_text("learning_rate: 1.0e-5\nseed: 7\n")
    (tmp_path / "child.yaml").write_text("base: base.yaml\nseed: 9\n")
    values = load_recipe(tmp_path / "child.yaml")
    assert values == {"learning_rate": 1e-5, "seed": 9}


def test_unknown_key_is_an_error_naming_file_and_key(tmp_path):
    recipe = tmp_path / "bad.yaml"
    recipe.write_text("learning_rat: 1.0e-5\n")
    with pytest.raises(ValueError, match=r"bad\.yaml.*'learning_rat'.*learning_rate"):
        parse_args(["--config", str(recipe)])


def test_wrong_type_is_an_error(tmp_path):
    recipe = tmp_path / "bad.yaml"
    recipe.write_text("num_frames: twelve\n")
    with pytest.raises(ValueError, match="num_frames.*integer"):
        load_recipe(recipe)
    recipe.write_text("stage: 3\n")
    with pytest.raises(ValueError, match="stage"):
        load_recipe(recipe)


def test_base_cycle_is_an_error(tmp_path):
    (tmp_path / "a.yaml").write_text("base: b.yaml\n")
    (tmp_path / "b.yaml").write_text("base: a.yaml\n")
    with pytest.raises(ValueError, match="cycle"):
        load_recipe(tmp_path / "a.yaml")


def test_init_from_clip_is_the_clip_model_flag_and_model_config_is_json(tmp_path):
    args = parse_args(["--init_from_clip", "/models/clip", "--model_config", '{"interaction_dropout": 0.0}'])
    assert args.clip_model == "/models/clip"
    assert args.model_config_dict == {"interaction_dropout": 0.0}
    recipe = tmp_path / "r.yaml"
    recipe.write_text("init_from_clip: /x\nmodel_config: {its_top_k: 8}\n")
    args = parse_args(["--config", str(recipe)])
    assert args.clip_model == "/x" and args.model_config_dict == {"its_top_k": 8}


def test_push_to_hub_needs_a_repo_id():
    with pytest.raises(ValueError, match="hub_model_id"):
        parse_args(["--push_to_hub"])


def test_no_argument_is_the_embedded_demo():
    args = parse_args([])
    assert args.config is None and args.clip_model is None      # the tiny random model, no download
    assert (args.dataset, args.stage1_dataset, args.stage) == ("synthetic", "synthetic", "both")
    assert args.data_dir is None and args.output_dir == "outputs"
    assert args.do_final_eval and not args.push_to_hub and args.resume_from_checkpoint is None


def _override(name, annotation, current):
    """Command-line tokens that set field `name` to a value different from `current`, and that value."""
    origin, options = typing.get_origin(annotation), typing.get_args(annotation)
    if origin in (typing.Union, types.UnionType):
        annotation = next(a for a in options if a is not type(None))
        origin, options = typing.get_origin(annotation), typing.get_args(annotation)
    if name == "model_config":
        value = '{"its_top_k": 3}'
    elif origin is Literal:
        value = next(option for option in options if option != current)
    elif origin is list:
        value = ["override_a", "override_b"]
        return [f"--{name}", *value], value
    elif annotation is bool:
        value = not current
    elif annotation is int:
        value = (current or 0) + 7
    elif annotation is float:
        value = (current or 0.0) * 2 + 0.5
    else:
        value = f"override-{name}"
    return [f"--{name}", str(value)], value


def test_every_flag_overrides_the_recipe():
    recipe = CONFIG_DIR / "msrvtt_9k_pig_b32.yaml"
    from_recipe = parse_args(["--config", str(recipe)])
    hints = typing.get_type_hints(TrainArguments)
    argv, expected = ["--config", str(recipe)], {}
    for spec in dataclasses.fields(TrainArguments):
        if spec.name == "config":
            continue
        tokens, value = _override(spec.name, hints[spec.name], getattr(from_recipe, spec.name))
        argv += tokens
        expected[spec.name] = value
    args = parse_args(argv)
    for name, value in expected.items():
        assert getattr(args, name) == value, name
        assert getattr(args, name) != getattr(from_recipe, name), name
    assert len(expected) == len(dataclasses.fields(TrainArguments)) - 1


def test_report_to_takes_any_tracker_accelerate_supports_and_names_what_is_wrong():
    from accelerate.tracking import get_available_trackers

    assert parse_args([]).trackers is None
    assert parse_args(["--report_to", "tensorboard"]).trackers == ["tensorboard"]
    assert parse_args(["--report_to", "all"]).trackers == ["all"]
    with pytest.raises(ValueError, match="'nonsense' is not a tracker accelerate supports"):
        parse_args(["--report_to", "tensorboard,nonsense"]).trackers
    if "wandb" not in {str(t) for t in get_available_trackers()}:
        with pytest.raises(ValueError, match="wandb is not installed here"):
            parse_args(["--report_to", "wandb"]).trackers
