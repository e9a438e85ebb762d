"""training/compare.py: the variants' flags, mean ± std over seeds, the document update, one real run + reuse."""

import json

import pytest

from training.compare import (
    BEGIN_MARKER,
    END_MARKER,
    aggregate,
    main,
    markdown_tables,
    replace_between_markers,
    summarise,
    train_argv,
)
from training.args import parse_args

KEYS = ("t2v_R@1", "t2v_R@5", "t2v_R@10", "t2v_MdR", "v2t_R@1", "v2t_R@5", "v2t_R@10", "v2t_MdR")


def _metrics(base):
    return {key: base + i for i, key in enumerate(KEYS)}


def test_the_variants_differ_only_in_the_model_and_extra_flags_win(tmp_path):
    argv = {v: parse_args(train_argv(v, 1, tmp_path / "run", tmp_path / "data", ["--num_train_epochs", "2"]))
            for v in ("PIG", "CLIP-ViP", "CLIP4Clip meanP")}
    assert (argv["PIG"].use_pseudo_query, argv["PIG"].video_tower, argv["PIG"].stage) == (True, "vip", "both")
    assert (argv["CLIP-ViP"].use_pseudo_query, argv["CLIP-ViP"].video_tower, argv["CLIP-ViP"].stage) == (
        False, "vip", "2")
    assert (argv["CLIP4Clip meanP"].use_pseudo_query, argv["CLIP4Clip meanP"].video_tower) == (False, "meanp")
    for args in argv.values():
        assert (args.seed, args.num_train_epochs, args.learning_rate) == (1, 2.0, argv["PIG"].learning_rate)
    overridden = parse_args(train_argv("PIG", 0, tmp_path, tmp_path, ["--stage", "2"]))
    assert overridden.stage == "2"
    with pytest.raises(ValueError, match="unknown variant 'X-Pool'"):
        train_argv("X-Pool", 0, tmp_path, tmp_path, [])


def test_summarise_gives_the_sample_standard_deviation():
    stats = summarise([10.0, 20.0, 30.0])
    assert stats == {"mean": 20.0, "std": 10.0, "min": 10.0, "max": 30.0, "n": 3}
    assert summarise([5.0])["std"] == 0.0
    with pytest.raises(ValueError):
        summarise([])


def test_tables_show_mean_and_std_with_the_best_mean_in_bold_and_every_seed():
    runs = {"PIG": {0: _metrics(10.0), 1: _metrics(14.0)}, "CLIP-ViP": {0: _metrics(11.0), 1: _metrics(11.0)}}
    assert aggregate(runs)["PIG"]["t2v_R@5"]["mean"] == 13.0
    table = markdown_tables(runs)
    # R@1: PIG 12.0 ± 2.8 is best; MdR (lower is better, key index 3): CLIP-ViP 14.0 beats PIG 15.0
    assert "| PIG (n=2) | **12.0 ± 2.8** |" in table
    assert "| CLIP-ViP (n=2) | 11.0 ± 0.0 | 12.0 ± 0.0 | 13.0 ± 0.0 | **14.0 ± 0.0** |" in table
    assert "| PIG | 1 | 14.0 | 15.0 |" in table and "| CLIP-ViP | 0 | 11.0 |" in table


def test_the_document_table_is_replaced_between_the_markers_only():
    doc = f"# Results\nintro\n{BEGIN_MARKER}\nold table\n{END_MARKER}\ndiscussion\n"
    new = replace_between_markers(doc, "| new |")
    assert new == f"# Results\nintro\n{BEGIN_MARKER}\n| new |\n{END_MARKER}\ndiscussion\n"
    with pytest.raises(ValueError, match="results.md: needs the lines"):
        replace_between_markers("no markers", "x", "results.md")


def test_one_real_run_is_recorded_and_reused(tmp_path):
    out = tmp_path / "compare"
    doc = tmp_path / "results.md"
    doc.write_text(f"head\n{BEGIN_MARKER}\n{END_MARKER}\ntail\n")
    tiny = ["--synthetic_num_train", "8", "--synthetic_num_test", "4", "--synthetic_num_images", "4",
            "--train_batch_size", "4", "--max_train_steps", "1", "--eval_batch_size", "4", "--num_frames", "2"]
    argv = ["--output_dir", str(out), "--seeds", "3", "--variants", "CLIP4Clip meanP", "--update_doc", str(doc),
            "--", *tiny]
    first = main(argv)
    run = first["runs"][0]
    assert (run["variant"], run["seed"], run["reused"]) == ("CLIP4Clip meanP", 3, False)
    saved = json.loads((out / "clip4clip-meanp-seed3" / "metrics.json").read_text())["final"]
    assert run["metrics"] == saved and run["num_eval_videos"] == 4 and run["chance_R@1"] == 25.0
    assert f"| CLIP4Clip meanP | 3 | {saved['t2v_R@1']:.1f} |" in doc.read_text()
    assert doc.read_text().startswith("head\n") and doc.read_text().endswith("tail\n")
    assert json.loads((out / "results.json").read_text())["extra_train_args"] == tiny
    second = main(argv)
    assert second["runs"][0]["reused"] and second["runs"][0]["metrics"] == saved
