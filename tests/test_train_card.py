"""The model card filled from a training run: results table, model-index, citation (offline)."""

import pytest
from huggingface_hub import ModelCard

from model_cards.card import build_model_card, results_table, save_model_card

METRICS = {"t2v_R@1": 12.5, "t2v_R@5": 40.0, "t2v_R@10": 61.25, "t2v_MdR": 7.0, "t2v_MnR": 9.3,
           "v2t_R@1": 10.0, "v2t_R@5": 35.0, "v2t_R@10": 55.0, "v2t_MdR": 8.0, "v2t_MnR": 11.2,
           "num_texts": 40}
MODEL_INFO = {"variant": "PIG", "num_frames": 4, "image_size": 32, "max_length": 16, "projection_dim": 64,
              "num_parameters": 3_425_025}


def _card(**overrides):
    kwargs = dict(model_name="pig-synthetic", dataset_type="synthetic", dataset_name="synthetic",
                  dataset_split="test", model_info=MODEL_INFO, training={"learning rate": 1e-3, "steps": 120},
                  training_description="Stage 2 trained everything.", summary="A tiny demo.",
                  repo_id="someone/pig-demo", num_queries=40, limitations=["Tiny demo model."])
    kwargs.update(overrides)
    return build_model_card(METRICS, **kwargs)


def test_results_table_has_both_directions_with_one_decimal():
    table = results_table(METRICS)
    assert "| text → video | 12.5 | 40.0 | 61.2 | 7.0 | 9.3 |" in table
    assert "| video → text | 10.0 | 35.0 | 55.0 | 8.0 | 11.2 |" in table


def test_results_table_rejects_incomplete_metrics():
    with pytest.raises(KeyError, match="t2v_MnR"):
        results_table({k: v for k, v in METRICS.items() if k != "t2v_MnR"})
    with pytest.raises(KeyError):
        results_table({"num_texts": 3})


def test_card_round_trips_with_model_index_results(tmp_path):
    path = save_model_card(_card(), tmp_path)
    assert path.name == "README.md"
    card = ModelCard.load(path)
    results = {r.metric_type: r.metric_value for r in card.data.eval_results}
    assert results["t2v_r@1"] == 12.5 and results["v2t_mnr"] == 11.2 and len(results) == 10
    first = card.data.eval_results[0]
    assert (first.task_type, first.dataset_type, first.dataset_split) == ("text-to-video-retrieval", "synthetic",
                                                                         "test")
    assert card.data.model_name == "pig-synthetic"


def test_card_body_has_description_usage_recipe_results_limitations_and_citation():
    text = _card(results_note="Best at step 60.").content
    assert "pseudo-query" in text and "Intended use" in text
    assert 'PIGModel.from_pretrained("someone/pig-demo")' in text
    assert "| learning rate | 0.001 |" in text and "| steps | 120 |" in text
    assert "| text → video | 12.5 |" in text and "40 text queries" in text and "Best at step 60." in text
    assert "- Tiny demo model." in text
    assert "Hybrid-Tower: Fine-grained Pseudo-query Interaction and Generation for Text-to-Video Retrieval" in text
    assert "Lan, Bangxiang" in text and "2509.04773" in text and "ICCV" in text


def test_card_requires_the_model_facts():
    with pytest.raises(KeyError, match="num_frames"):
        _card(model_info={k: v for k, v in MODEL_INFO.items() if k != "num_frames"})


def test_card_metadata_names_the_pipeline_and_the_training_data(tmp_path):
    card = ModelCard.load(save_model_card(_card(datasets=["msrvtt", "cc3m"]), tmp_path))
    assert card.data.pipeline_tag == "feature-extraction"  # the Hub's text-to-video is generation
    assert card.data.datasets == ["msrvtt", "cc3m"]
    assert "text-to-video-retrieval" in card.data.tags


def test_a_trained_model_card_lists_both_stages_data():
    from model_cards.training_card import training_datasets

    args = {"dataset": "msrvtt", "stage1_dataset": "some-user/cc3m-595k"}
    both = {"stages": {"1": {"steps": 2}, "2": {"steps": 3}}}
    assert training_datasets(args, both) == ["msrvtt", "some-user/cc3m-595k"]
    assert training_datasets({**args, "stage1_dataset": "imagefolder"}, both) == ["msrvtt"]
    assert training_datasets(args, {"stages": {"2": {"steps": 3}}}) == ["msrvtt"]
