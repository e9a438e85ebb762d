"""train.py end to end on a tiny synthetic benchmark, in-process: both stages, outputs, best/, tensorboard,
push (mocked Hub), exact resume, NaN stop, undecodable videos."""

import contextlib
import io
import json
import shutil
from pathlib import Path

import pytest
import torch
from helpers import Interrupted, interrupt_after_checkpoint, run_train, tiny_argv
from safetensors.torch import load_file

import model_cards.hub as hub_module
import training.train as train_module
from training.args import parse_args
from training.model import build_model, load_generator_weights
from training.optimization import NonFiniteLossError

class FakeHfApi:
    """Records the Hub calls train.py makes and what the folder held at upload time."""

    calls = []

    def __init__(self, token=None):
        pass

    def create_repo(self, **kwargs):
        FakeHfApi.calls.append(("create_repo", kwargs))

    def upload_folder(self, **kwargs):
        files = sorted(p.relative_to(kwargs["folder_path"]).as_posix()
                       for p in Path(kwargs["folder_path"]).rglob("*") if p.is_file())
        FakeHfApi.calls.append(("upload_folder", {**kwargs, "files": files}))
        return "https://hub.example/commit/1"


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory, synthetic_dir):
    """One full two-stage run: eval every step (best/), tensorboard, push to a mocked Hub."""
    out = tmp_path_factory.mktemp("demo") / "out"
    monkeypatch = pytest.MonkeyPatch()
    monkeypatch.setattr(hub_module, "HfApi", FakeHfApi)
    FakeHfApi.calls = []
    printed = io.StringIO()
    try:
        with contextlib.redirect_stdout(printed):
                summary = run_train(tiny_argv(out, synthetic_dir, "--stage", "both", "--stage1_max_train_steps", "2",
                                          "--max_train_steps", "2", "--eval_steps", "1", "--report_to",
                                          "tensorboard",
                                          "--push_to_hub", "--hub_model_id", "someone/pig-tiny"))
    finally:
        monkeypatch.undo()
    return out, summary, list(FakeHfApi.calls), printed.getvalue()


def test_two_stage_run_writes_a_loadable_model_processor_card_and_metrics(demo_run):
    from modeling_pig import PIGModel, PIGProcessor

    out, summary, _, _ = demo_run
    for name in ("model.safetensors", "config.json", "README.md", "metrics.json", "run_summary.json"):
        assert (out / name).is_file(), name
    model = PIGModel.from_pretrained(out)
    processor = PIGProcessor.from_pretrained(out)
    assert processor.num_frames == model.config.num_frames == 4
    assert processor.tokenizer.vocab_size == model.config.clip_config.text_config.vocab_size == 49408
    saved = load_file(str(out / "model.safetensors"))
    for name, tensor in model.state_dict().items():
        assert torch.equal(tensor, saved[name]), name
    metrics = json.loads((out / "metrics.json").read_text())
    assert set(metrics["final"]) >= {"t2v_R@1", "t2v_R@5", "t2v_R@10", "t2v_MdR", "t2v_MnR", "v2t_R@1", "step"}
    assert metrics["final"]["step"] == 2 and metrics["chance_R@1"] == 25.0
    card = (out / "README.md").read_text()
    assert "model-index" in card and f"{metrics['final']['t2v_R@1']:.1f}" in card and "2509.04773" in card
    assert summary["stages"]["1"]["steps"] == 2 and summary["stages"]["2"]["steps"] == 2
    assert json.loads((out / "run_summary.json").read_text())["failed_videos"] == 0


def test_the_final_results_are_printed_for_both_directions(demo_run):
    from model_cards.card import results_table

    out, _, _, printed = demo_run
    final = json.loads((out / "metrics.json").read_text())["final"]
    assert "===== Results: PIG on synthetic test (4 videos, chance R@1 = 25.0%), step 2 =====" in printed
    assert results_table(final) in printed
    assert f"| text → video | {final['t2v_R@1']:.1f} | {final['t2v_R@5']:.1f} |" in printed
    assert f"| video → text | {final['v2t_R@1']:.1f} |" in printed


def test_stage_one_trains_only_the_generator(demo_run):
    out, _, _, _ = demo_run
    args = parse_args(tiny_argv(out, "unused"))
    initial = build_model(args).state_dict()
    stage1 = load_file(str(out / "stage1" / "model.safetensors"))
    changed = {name for name, tensor in initial.items() if not torch.equal(tensor, stage1[name])}
    assert changed, "stage 1 changed nothing"
    assert all(name.startswith("generator.") for name in changed), sorted(changed)[:5]


def test_stage_two_starts_from_the_stage_one_generator_only(demo_run):
    out, _, _, _ = demo_run
    args = parse_args(tiny_argv(out, "unused"))
    model = build_model(args)
    initial = {k: v.clone() for k, v in model.state_dict().items()}
    assert load_generator_weights(model, out / "stage1") > 0
    stage1 = load_file(str(out / "stage1" / "model.safetensors"))
    for name, tensor in model.state_dict().items():
        expected = stage1[name] if name.startswith("generator.") else initial[name]
        assert torch.equal(tensor, expected), name


def test_stage_one_alone_then_stage_two_from_its_folder_on_an_imagefolder(tmp_path, synthetic_dir):
    # stage 1 on a plain imagefolder (the CC3M route), in its own run
    images = tmp_path / "images"
    images.mkdir()
    with open(images / "metadata.jsonl", "w") as handle:
        for line in (synthetic_dir / "annotations" / "images.jsonl").read_text().splitlines():
            row = json.loads(line)
            name = Path(row["relative_path"]).name
            shutil.copy(synthetic_dir / row["relative_path"], images / name)
            handle.write(json.dumps({"file_name": name, "text": row["captions"][0]}) + "\n")
    stage1 = tmp_path / "stage1"
    summary = run_train(tiny_argv(stage1, synthetic_dir, "--stage", "1", "--stage1_dataset", "imagefolder",
                                  "--stage1_data_dir", str(images), "--stage1_split", "train",
                                  "--stage1_max_train_steps", "2"))
    assert set(summary["stages"]) == {"1"} and summary["stages"]["1"]["steps"] == 2
    assert not (stage1 / "metrics.json").exists()   # stage 1 alone has no retrieval evaluation
    args = parse_args(tiny_argv(stage1, synthetic_dir))
    initial = build_model(args).state_dict()
    trained = load_file(str(stage1 / "model.safetensors"))
    assert any(not torch.equal(trained[k], v) for k, v in initial.items() if k.startswith("generator."))

    # stage 2 with learning rate 0: its weights are exactly what it started from
    stage2 = tmp_path / "stage2"
    run_train(tiny_argv(stage2, synthetic_dir, "--stage", "2", "--generator_from", str(stage1),
                        "--learning_rate", "0", "--max_train_steps", "1", "--no_do_final_eval"))
    started = load_file(str(stage2 / "model.safetensors"))
    assert started.keys() == initial.keys()
    for name, tensor in started.items():
        assert torch.equal(tensor, trained[name] if name.startswith("generator.") else initial[name]), name


def test_generator_from_a_folder_without_a_model_is_a_clear_error(tmp_path, synthetic_dir):
    with pytest.raises(FileNotFoundError, match="generator_from .*no model.safetensors"):
        run_train(tiny_argv(tmp_path / "out", synthetic_dir, "--stage", "2", "--generator_from", str(tmp_path),
                            "--max_train_steps", "1", "--no_do_final_eval"))


def test_periodic_evaluation_keeps_the_best_model_and_logs_the_final_step(demo_run):
    from modeling_pig import PIGModel

    out, summary, _, _ = demo_run
    best = json.loads((out / "best" / "metrics.json").read_text())
    assert best["step"] == 1 and "t2v_R@1" in best
    PIGModel.from_pretrained(out / "best")
    assert (out / "best" / "README.md").is_file()
    history = summary["stages"]["2"]["history"]
    assert [h["step"] for h in history] == [1]
    assert summary["stages"]["2"]["final_metrics"]["t2v_R@1"] == json.loads(
        (out / "metrics.json").read_text())["final"]["t2v_R@1"]


def test_tensorboard_events_are_written(demo_run):
    out, _, _, _ = demo_run
    assert list((out / "logs").rglob("events.out.tfevents.*"))


def test_push_uploads_model_processor_and_card_but_not_checkpoints(demo_run):
    out, summary, calls, _ = demo_run
    assert [name for name, _ in calls] == ["create_repo", "upload_folder"]
    create, upload = calls[0][1], calls[1][1]
    assert create["repo_id"] == "someone/pig-tiny" and create["exist_ok"] is True
    assert upload["repo_id"] == "someone/pig-tiny" and Path(upload["folder_path"]) == out
    assert {"model.safetensors", "config.json", "README.md"} <= set(upload["files"])
    assert any(name.startswith("tokenizer") or name == "processor_config.json" for name in upload["files"])
    assert "stage1/**" in upload["ignore_patterns"] and "checkpoints/**" in upload["ignore_patterns"]
    assert "someone/pig-tiny" in (out / "README.md").read_text()
    assert summary["hub_commit"] == "https://hub.example/commit/1"


def test_resume_from_checkpoint_gives_the_same_weights_as_a_straight_run(tmp_path, synthetic_dir, monkeypatch):
    # 8 videos, batch 2: 4 steps per epoch; steps 3 + 3 cross an epoch boundary. Dropout stays on (interaction
    # dropout 0.1), so the RNG state must resume too.
    common = ["--stage", "2", "--train_batch_size", "2", "--max_train_steps", "6", "--checkpointing_steps", "1",
              "--checkpoints_total_limit", "2", "--no_do_final_eval"]
    straight = tmp_path / "straight"
    run_train(tiny_argv(straight, synthetic_dir, *common))

    resumed = tmp_path / "resumed"
    with monkeypatch.context() as patch, pytest.raises(Interrupted):
        interrupt_after_checkpoint(patch, "2", 3)
        run_train(tiny_argv(resumed, synthetic_dir, *common))
    assert not (resumed / "model.safetensors").exists()
    run_train(tiny_argv(resumed, synthetic_dir, *common, "--resume_from_checkpoint", "latest"))

    a, b = load_file(str(straight / "model.safetensors")), load_file(str(resumed / "model.safetensors"))
    assert a.keys() == b.keys()
    for name in a:
        assert torch.equal(a[name], b[name]), name
    losses = [json.loads(line)["loss"] for line in (straight / "train_log.jsonl").read_text().splitlines()]
    resumed_losses = [json.loads(line)["loss"] for line in (resumed / "train_log.jsonl").read_text().splitlines()]
    assert resumed_losses == losses
    # bounded: only the newest two checkpoints survive
    assert sorted(p.name for p in (straight / "checkpoints").iterdir()) == ["step_5", "step_6"]


def test_a_two_stage_run_interrupted_in_stage_two_resumes_there_without_redoing_stage_one(tmp_path, synthetic_dir,
                                                                                          monkeypatch):
    common = ["--stage", "both", "--stage1_max_train_steps", "2", "--max_train_steps", "3",
              "--checkpointing_steps", "1", "--no_do_final_eval"]
    straight = tmp_path / "straight"
    run_train(tiny_argv(straight, synthetic_dir, *common))

    resumed = tmp_path / "resumed"
    with monkeypatch.context() as patch, pytest.raises(Interrupted):
        interrupt_after_checkpoint(patch, "2", 1)
        run_train(tiny_argv(resumed, synthetic_dir, *common))
    stage1_model = (resumed / "stage1" / "model.safetensors").stat().st_mtime_ns
    summary = run_train(tiny_argv(resumed, synthetic_dir, *common, "--resume_from_checkpoint", "latest"))
    assert (resumed / "stage1" / "model.safetensors").stat().st_mtime_ns == stage1_model
    assert summary["stages"]["1"]["steps"] == 2 and summary["stages"]["2"]["steps"] == 3
    a, b = load_file(str(straight / "model.safetensors")), load_file(str(resumed / "model.safetensors"))
    for name in a:
        assert torch.equal(a[name], b[name]), name


def test_a_fresh_run_refuses_to_mix_with_old_checkpoints(tmp_path, synthetic_dir):
    out = tmp_path / "out"
    (out / "checkpoints" / "step_1").mkdir(parents=True)
    with pytest.raises(FileExistsError, match="resume_from_checkpoint latest"):
        run_train(tiny_argv(out, synthetic_dir, "--stage", "2", "--max_train_steps", "1", "--no_do_final_eval"))


def test_nan_loss_stops_naming_the_step_and_keeps_the_last_good_checkpoint(tmp_path, synthetic_dir, monkeypatch):
    real_loss = train_module.stage_loss
    calls = {"n": 0}

    def loss_that_turns_nan(output, stage, config):
        calls["n"] += 1
        loss = real_loss(output, stage, config)
        return loss * float("nan") if calls["n"] == 3 else loss

    monkeypatch.setattr(train_module, "stage_loss", loss_that_turns_nan)
    out = tmp_path / "out"
    with pytest.raises(NonFiniteLossError, match=r"step 3 .*Last good checkpoint: .*step_2"):
        run_train(tiny_argv(out, synthetic_dir, "--stage", "2", "--train_batch_size", "2", "--max_train_steps", "6",
                            "--checkpointing_steps", "2", "--no_do_final_eval"))
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["step_2"]
    state = json.loads((out / "checkpoints" / "step_2" / "train_state.json").read_text())
    assert state["step"] == 2
    weights = load_file(str(out / "checkpoints" / "step_2" / "model.safetensors"))
    assert all(torch.isfinite(t).all() for t in weights.values())
    assert not (out / "model.safetensors").exists()
    assert "step 3" in json.loads((out / "run_summary.json").read_text())["error"]


def test_a_huge_learning_rate_ends_in_a_clear_non_finite_error(tmp_path, synthetic_dir):
    with pytest.raises(NonFiniteLossError, match=r"stage 2: the (loss|gradient norm) is .* at step \d+"):
        run_train(tiny_argv(tmp_path / "out", synthetic_dir, "--stage", "2", "--learning_rate", "1e30",
                            "--max_grad_norm", "0", "--max_train_steps", "5", "--no_do_final_eval",
                            "--lr_scheduler_type", "constant"))


def test_undecodable_videos_are_skipped_and_counted(tmp_path, synthetic_dir, caplog):
    data = tmp_path / "data"
    shutil.copytree(synthetic_dir, data)
    videos = sorted((data / "videos" / "train").glob("*.mp4"))
    videos[0].write_bytes(b"this is not an mp4 file")
    videos[1].write_bytes(videos[1].read_bytes()[:200])  # truncated
    videos[2].unlink()  # missing: kept in the annotations (--missing_videos keep), met during training
    out = tmp_path / "out"
    # batch 1: every bad video empties its batch; 7 good steps need more than the first epoch of 8 visits
    argv = tiny_argv(out, data, "--stage", "2", "--train_batch_size", "1", "--max_train_steps", "7",
                     "--no_do_final_eval", "--missing_videos", "keep")
    with caplog.at_level("WARNING"):
        summary = run_train(argv)
    assert summary["stages"]["2"]["steps"] == 7
    # the first epoch meets all three bad videos; the second one may meet some of them again
    assert 3 <= summary["failed_videos"] <= 6 and summary["skipped_batches"] == summary["failed_videos"]
    on_disk = json.loads((out / "run_summary.json").read_text())
    assert on_disk["failed_videos"] == summary["failed_videos"]
    assert videos[0].name in caplog.text and videos[1].name in caplog.text
    assert f"{videos[2].stem}: VideoDecodeError: row 2 ({videos[2].stem}) has no video file" in caplog.text
    log = [json.loads(line) for line in (out / "train_log.jsonl").read_text().splitlines()]
    assert log[-1]["step"] == 7 and log[-1]["failed_videos"] == summary["failed_videos"]
