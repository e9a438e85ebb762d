"""Gradient caching (training/grad_cache.py): the two-pass step in chunks gives the gradients of the whole batch,
with dropout replayed; train.py with --grad_cache_chunk_size takes the same steps as without."""

import pytest
import torch
from safetensors.torch import load_file
from helpers import build_model, random_inputs, run_train, tiny_argv

from training.grad_cache import GradCache

BATCH = 6


@pytest.fixture
def accelerator():
    from accelerate import Accelerator
    from accelerate.state import AcceleratorState, GradientState

    AcceleratorState._reset_state(reset_partial_state=True)
    GradientState._reset_state()
    yield Accelerator(cpu=True)
    AcceleratorState._reset_state(reset_partial_state=True)
    GradientState._reset_state()


def _gradients(model):
    return {name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None}


def _assert_same_gradients(actual, expected):
    """Equal up to float32 rounding (chunks change the order of sums): relative error of each tensor <= 1e-5."""
    assert actual.keys() == expected.keys()
    for name, grad in expected.items():
        error = (actual[name] - grad).norm()
        assert error <= 1e-5 * grad.norm() + 1e-6, (name, error.item(), grad.norm().item())


@pytest.mark.parametrize("chunk_size", [2, 4])
def test_chunked_step_has_the_gradients_of_the_whole_batch(accelerator, chunk_size):
    model = build_model(seed=0, interaction_dropout=0.0).train()
    batch = random_inputs(n_text=BATCH, n_video=BATCH, seed=3)
    output = model(**batch, return_loss=True)
    output.loss.backward()
    expected = _gradients(model)
    assert "clip.logit_scale" in expected and any(name.startswith("generator.") for name in expected)
    model.zero_grad(set_to_none=True)

    cache = GradCache(accelerator, model, chunk_size, gather_across_processes=False)
    cached = cache.forward(batch)  # 4 does not divide 6: a last chunk of 2
    torch.testing.assert_close(cached.loss, output.loss)
    torch.testing.assert_close(cached.generation_loss, output.generation_loss)
    cache.backward(cached.loss)
    _assert_same_gradients(_gradients(model), expected)


def test_any_loss_of_the_outputs_works_like_the_generator_only_stage_one_loss(accelerator):
    model = build_model(seed=0, interaction_dropout=0.0).train()
    for name, parameter in model.named_parameters():
        parameter.requires_grad = name.startswith("generator.")
    batch = random_inputs(n_text=BATCH, n_video=BATCH, seed=3)
    (2.0 * model(**batch, return_loss=True).generation_loss).backward()
    expected = _gradients(model)
    model.zero_grad(set_to_none=True)

    cache = GradCache(accelerator, model, 3, gather_across_processes=False)
    cache.backward(2.0 * cache.forward(batch).generation_loss)
    _assert_same_gradients(_gradients(model), expected)


def test_dropout_draws_the_same_masks_in_both_passes(accelerator):
    model = build_model(seed=0, interaction_dropout=0.5).train()
    batch = random_inputs(n_text=BATCH, n_video=BATCH, seed=3)
    chunks = [{k: v[i:i + 2] for k, v in batch.items()} for i in range(0, BATCH, 2)]
    # reference: the chunks encoded one after the other, with a graph, from the same random state
    torch.manual_seed(123)
    outputs = [model(**chunk) for chunk in chunks]
    loss, _, _ = model.loss_from_embeddings(torch.cat([o.text_embeds for o in outputs]),
                                            torch.cat([o.video_embeds for o in outputs]),
                                            torch.cat([o.pseudo_query_embeds for o in outputs]),
                                            model.get_logit_scale())
    loss.backward()
    expected = _gradients(model)
    after_reference = torch.get_rng_state()
    model.zero_grad(set_to_none=True)
    # the comparison is not vacuous: other masks give other video embeddings
    with torch.no_grad():
        assert not torch.allclose(model(**chunks[0]).video_embeds, outputs[0].video_embeds.detach())

    torch.manual_seed(123)
    cache = GradCache(accelerator, model, 2, gather_across_processes=False)
    cache.backward(cache.forward(batch).loss)
    _assert_same_gradients(_gradients(model), expected)
    assert torch.equal(torch.get_rng_state(), after_reference)  # the step consumed randomness once, as without


def test_backward_without_forward_is_an_error(accelerator):
    cache = GradCache(accelerator, build_model(), 2, gather_across_processes=False)
    with pytest.raises(RuntimeError, match="needs a GradCache.forward first"):
        cache.backward(torch.zeros((), requires_grad=True))


def test_train_py_with_chunks_takes_the_same_steps_as_without(tmp_path, synthetic_dir):
    common = ["--stage", "2", "--train_batch_size", "4", "--max_train_steps", "3", "--no_do_final_eval",
              "--disable_dropout", "--warmup_ratio", "0"]
    plain, chunked = tmp_path / "plain", tmp_path / "chunked"
    run_train(tiny_argv(plain, synthetic_dir, *common))
    run_train(tiny_argv(chunked, synthetic_dir, *common, "--grad_cache_chunk_size", "2"))
    a, b = load_file(str(plain / "model.safetensors")), load_file(str(chunked / "model.safetensors"))
    assert a.keys() == b.keys()
    for name in a:
        torch.testing.assert_close(b[name], a[name], rtol=0, atol=1e-5, msg=name)
    from training.args import parse_args
    from training.model import build_model as build_run_model

    initial = build_run_model(parse_args(tiny_argv(plain, synthetic_dir, *common))).state_dict()
    assert max((a[name] - initial[name]).abs().max().item() for name in a) > 1e-4  # the steps moved the weights
