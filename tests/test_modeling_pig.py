"""PIGModel behaviour on tiny random CLIP configs: shapes, attention pattern, ITS, losses, baselines, init.

The model helpers (`build_model`, `random_inputs`, `vip_input_states`) live in tests/helpers.py; the config is
conftest's `tiny_pig_config`. One file for the one model file it tests (modeling_pig.py), in that file's order;
the ViP layer's own tests are in test_modeling_pig_vip_layer.py.
"""

import pytest
import torch
import torch.nn.functional as F
from conftest import IMAGE_SIZE, NUM_FRAMES, TOP_K, tiny_clip_config_dict, tiny_pig_config
from helpers import build_model, random_inputs, vip_input_states
from huggingface_hub.errors import StrictDataclassError
from transformers import CLIPConfig, CLIPModel

from modeling_pig import PIGConfig, PIGModel
from modeling_pig.modeling_pig import (
    contrastive_loss,
    gather_features,
    generation_loss,
    select_informative_tokens,
    PIGViPEncoderLayer,
)

def vip_reference_mask(num_global: int, num_frames: int, tokens_per_frame: int) -> torch.Tensor:
    """The additive [1, 1, S, S] mask of §2.4: globals see all, frame tokens see globals + their own frame."""
    seq_len = num_global + num_frames * tokens_per_frame
    frame_of = torch.full((seq_len,), -1)
    frame_of[num_global:] = torch.arange(num_frames).repeat_interleave(tokens_per_frame)
    is_global = frame_of < 0
    allowed = is_global[:, None] | is_global[None, :] | (frame_of[:, None] == frame_of[None, :])
    mask = torch.zeros(seq_len, seq_len).masked_fill(~allowed, float("-inf"))
    return mask[None, None]




# ------------------------------------------------------------------------------------------------------- shapes


def test_shapes_at_every_stage():
    model = build_model()
    inputs = random_inputs(n_text=3, n_video=2)
    seq_len = 4 + NUM_FRAMES * 17

    with torch.no_grad():
        vip = model.encode_vip(inputs["pixel_values"], return_cls_attention=True)
        hidden, cls_attention = vip.last_hidden_state, vip.cls_attention
        assert hidden.shape == (2, seq_len, 48)
        assert cls_attention.shape == (2, 4, seq_len)  # [B, heads, S]
        torch.testing.assert_close(cls_attention.sum(-1), torch.ones(2, 4))

        captured = {}
        model.generator.encoder.register_forward_pre_hook(
            lambda module, args, kwargs: captured.update(shape=kwargs["inputs_embeds"].shape), with_kwargs=True
        )
        video = model.get_video_features(inputs["pixel_values"])
        assert captured["shape"] == (2, 1 + 4 + NUM_FRAMES + TOP_K + 1, 32)  # [bos, CLS, proxies, frame-CLS, ITS, eos]
        assert video.last_hidden_state.shape == (2, seq_len, 48)
        assert video.pooler_output.shape == (2, 24)
        assert video.pseudo_query_embeds.shape == (2, 24)
        assert video.informative_token_indices.shape == (2, TOP_K)

        text = model.get_text_features(inputs["input_ids"], inputs["attention_mask"])
        assert text.pooler_output.shape == (3, 24)

        out = model(**inputs)  # 3 texts, 2 videos: allowed without a loss
    assert out.loss is None and out.contrastive_loss is None and out.generation_loss is None
    assert out.logits_per_text.shape == (3, 2) and out.logits_per_video.shape == (2, 3)
    for name in ("text_embeds", "video_embeds", "pseudo_query_embeds"):
        embeds = getattr(out, name)
        assert embeds.dtype == torch.float32
        torch.testing.assert_close(embeds.norm(dim=-1), torch.ones(embeds.shape[0]))


def test_video_embedding_does_not_depend_on_the_texts_in_the_batch():
    model = build_model()
    inputs = random_inputs(n_text=2, n_video=2)
    other_texts = random_inputs(n_text=5, n_video=1, seed=7)
    with torch.no_grad():
        first = model(**inputs).video_embeds
        second = model(input_ids=other_texts["input_ids"], pixel_values=inputs["pixel_values"]).video_embeds
        stored = model.get_video_features(inputs["pixel_values"]).pooler_output
    torch.testing.assert_close(first, second, rtol=0, atol=0)
    torch.testing.assert_close(first, F.normalize(stored, dim=-1))


def test_logits_are_the_scaled_cosine_of_the_returned_embeddings():
    model = build_model()
    with torch.no_grad():
        model.clip.logit_scale.fill_(2.0)
        out = model(**random_inputs(n_text=3, n_video=2))
    expected = torch.exp(torch.tensor(2.0)) * out.text_embeds @ out.video_embeds.t()
    torch.testing.assert_close(out.logits_per_text, expected)
    torch.testing.assert_close(out.logits_per_video, expected.t())


def test_logit_scale_is_clamped_to_zero_and_ln200():
    model = build_model()
    with torch.no_grad():
        model.clip.logit_scale.fill_(9.0)
        out = model(**random_inputs())
    torch.testing.assert_close(out.logits_per_text, 200.0 * out.text_embeds @ out.video_embeds.t())
    model.clamp_logit_scale_()
    assert model.clip.logit_scale.item() == pytest.approx(torch.log(torch.tensor(200.0)).item())
    with torch.no_grad():
        model.clip.logit_scale.fill_(-1.0)
    model.clamp_logit_scale_()
    assert model.clip.logit_scale.item() == 0.0


# ------------------------------------------------------------------------------------------- attention pattern


def test_first_layer_frame_tokens_see_only_the_globals_and_their_own_frame():
    model = build_model()
    pixels = random_inputs(n_video=1)["pixel_values"]
    changed = pixels.clone()
    changed[:, 2] = torch.randn_like(changed[:, 2])  # change frame 2 only
    layer = model.clip.vision_model.encoder.layers[0]
    with torch.no_grad():
        before = layer(vip_input_states(model, pixels), num_frames=NUM_FRAMES)[0]
        after = layer(vip_input_states(model, changed), num_frames=NUM_FRAMES)[0]
    frame = lambda states, f: states[:, 4 + 17 * f: 4 + 17 * (f + 1)]  # noqa: E731
    torch.testing.assert_close(frame(after, 0), frame(before, 0), rtol=0, atol=0)
    torch.testing.assert_close(frame(after, 1), frame(before, 1), rtol=0, atol=0)
    assert not torch.allclose(frame(after, 2), frame(before, 2))
    # every global token (video CLS and each proxy) sees the changed frame
    for index in range(4):
        assert not torch.allclose(after[:, index], before[:, index])


def test_any_frame_reaches_the_globals_and_through_them_the_other_frames():
    model = build_model()
    pixels = random_inputs(n_video=1)["pixel_values"]
    with torch.no_grad():
        base = model.encode_vip(pixels).last_hidden_state
        for changed_frame in range(NUM_FRAMES):
            changed = pixels.clone()
            changed[:, changed_frame] += 1.0
            states = model.encode_vip(changed).last_hidden_state
            assert not torch.allclose(states[:, :4], base[:, :4])
            other = (changed_frame + 1) % NUM_FRAMES  # two layers: frame -> globals -> other frame
            assert not torch.allclose(states[:, 4 + 17 * other], base[:, 4 + 17 * other])


@pytest.mark.parametrize("implementation", ["sdpa", "eager"])
@pytest.mark.parametrize("num_frames", [1, NUM_FRAMES])
def test_vip_layer_equals_clip_layer_with_the_vip_mask(num_frames, implementation):
    model = build_model()
    hidden = vip_input_states(model, random_inputs(n_video=2, num_frames=num_frames)["pixel_values"]).detach()
    layer = model.clip.vision_model.encoder.layers[0]
    assert isinstance(layer, PIGViPEncoderLayer)
    mask = vip_reference_mask(4, num_frames, 17)
    config = layer.self_attn.config
    with torch.no_grad():
        config._attn_implementation = implementation  # "sdpa": block-wise; "eager": the explicit S x S mask
        vip_out, _, cls_attention = layer(hidden, num_frames=num_frames, return_cls_attention=True)
        config._attn_implementation = "eager"  # the reference also returns attention weights
        reference = layer(hidden, mask)  # no layout: CLIP's own layer forward, here with the §2.4 mask
        _, reference_weights = layer.self_attn(layer.layer_norm1(hidden), mask)  # [B, H, S, S]
    torch.testing.assert_close(vip_out, reference, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(cls_attention, reference_weights[:, :, 0], rtol=1e-5, atol=1e-6)


# ------------------------------------------------------------------------------------------------------------ ITS


def test_its_excludes_globals_and_frame_cls_and_sorts_by_score():
    # B=1, 2 heads, M=2 globals, T=2 frames of L=3 tokens: S = 8; frame-CLS at 2 and 5 (their scores are highest)
    attention = torch.zeros(1, 2, 8)
    attention[0, 0] = torch.tensor([0.9, 0.8, 0.7, 0.10, 0.3, 0.6, 0.05, 0.35])
    attention[0, 1] = torch.tensor([0.9, 0.9, 0.9, 0.40, 0.0, 0.9, 0.27, 0.00])
    top = select_informative_tokens(attention, num_global_tokens=2, num_frames=2, top_k=3, head_reduction="max")
    assert top.tolist() == [[3, 7, 4]]  # max over heads: 0.40, 0.35, 0.30 (6: 0.27 left out)
    top = select_informative_tokens(attention, num_global_tokens=2, num_frames=2, top_k=3, head_reduction="mean")
    assert top.tolist() == [[3, 7, 6]]  # mean: 0.25, 0.175, 0.16 (4: 0.15 left out)


def test_its_returns_k_distinct_patch_positions_sorted_by_cls_attention():
    model = build_model()
    pixels = random_inputs(n_video=3)["pixel_values"]
    with torch.no_grad():
        indices = model.get_video_features(pixels).informative_token_indices
        cls_attention = model.encode_vip(pixels, return_cls_attention=True).cls_attention
    scores = cls_attention.amax(dim=1)  # [B, S]
    frame_cls = {4 + 17 * f for f in range(NUM_FRAMES)}
    patches = [p for p in range(4, 4 + 17 * NUM_FRAMES) if p not in frame_cls]
    for row, picked in enumerate(indices.tolist()):
        assert len(set(picked)) == TOP_K
        assert all(p in patches for p in picked)
        picked_scores = scores[row, picked]
        assert torch.all(picked_scores[:-1] >= picked_scores[1:])  # descending
        rest = [p for p in patches if p not in picked]
        assert picked_scores.min() >= scores[row, rest].max()


# --------------------------------------------------------------------------------------------------------- losses


def test_losses_equal_their_formulas():
    model = build_model(generation_loss_weight=0.5)
    with torch.no_grad():
        out = model(**random_inputs(n_text=3, n_video=3), return_loss=True)
    text, video, pseudo = out.text_embeds, out.video_embeds, out.pseudo_query_embeds
    expected_generation = (2 - 2 * (pseudo * text).sum(-1)).mean()
    torch.testing.assert_close(out.generation_loss, expected_generation)
    labels = torch.arange(3)
    logits = out.logits_per_text
    expected_contrastive = F.cross_entropy(logits, labels) + F.cross_entropy(logits.t(), labels)  # summed
    torch.testing.assert_close(out.contrastive_loss, expected_contrastive)
    torch.testing.assert_close(out.loss, expected_contrastive + 0.5 * expected_generation)
    assert out.loss.dtype == torch.float32


def test_loss_helpers_on_hand_computed_values():
    text = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    video = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    # logits [[s, 0], [0, s]]: each direction's CE is log(1 + e^-s)
    s = torch.tensor(3.0)
    torch.testing.assert_close(contrastive_loss(text, video, s), 2 * torch.log1p(torch.exp(-s)))
    pseudo = torch.tensor([[2.0, 0.0], [1.0, 1.0]])  # cos 1 and 1/sqrt(2); norms do not matter
    expected = ((2 - 2 * 1.0) + (2 - 2 / 2**0.5)) / 2
    torch.testing.assert_close(generation_loss(pseudo, text), torch.tensor(expected))


def test_mismatched_counts_with_return_loss_and_missing_inputs_are_clear_errors():
    model = build_model()
    with pytest.raises(ValueError, match="one caption per video"):
        model(**random_inputs(n_text=3, n_video=2), return_loss=True)
    with pytest.raises(ValueError, match="pixel_values"):
        model(input_ids=random_inputs()["input_ids"])


@pytest.mark.parametrize(
    ("shape", "match"),
    [((2, 3, 32, 32), "5-D"), ((1, 2, 3, 16, 16), "shape"), ((1, 2, 1, 32, 32), "shape")],
)
def test_pixel_values_of_the_wrong_shape_are_rejected(shape, match):
    model = build_model()
    with pytest.raises(ValueError, match=match):
        model.get_video_features(torch.zeros(shape))


def test_its_top_k_larger_than_the_input_patch_count_is_rejected():
    model = build_model(its_top_k=20)  # fine for 3 frames (48 patches), not for a 1-frame image (16)
    with pytest.raises(ValueError, match="its_top_k"):
        model.get_video_features(torch.zeros(1, 1, 3, IMAGE_SIZE, IMAGE_SIZE))


def test_gather_features_is_the_identity_without_a_process_group():
    tensor = torch.randn(2, 3)
    gathered = gather_features(tensor, None)
    assert gathered[0] is tensor and gathered[1] is None


# ----------------------------------------------------------------------------------------------------- training


def test_training_steps_lower_the_loss_and_reach_every_new_module():
    model = build_model(interaction_dropout=0.0).train()
    inputs = random_inputs(n_text=4, n_video=4)
    out = model(**inputs, return_loss=True)
    out.loss.backward()
    for name in ("vip.proxy_tokens", "vip.frame_cls", "vip.temporal_embedding", "generator.video_mapper.weight",
                 "generator.bos_embedding", "generator.eos_embedding", "generator.position_embedding.weight",
                 "generator.encoder.layers.0.self_attn.q_proj.weight", "generator.text_projection.weight",
                 "interaction.q_proj.weight", "interaction.linear_proj.weight", "clip.logit_scale",
                 "clip.vision_model.encoder.layers.1.mlp.fc2.weight", "clip.text_projection.weight"):
        grad = model.get_parameter(name).grad
        assert grad is not None and grad.abs().sum() > 0, name

    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    losses = [out.loss.item()]
    for _ in range(4):
        optimizer.step()
        optimizer.zero_grad()
        model.clamp_logit_scale_()
        loss = model(**inputs, return_loss=True).loss
        loss.backward()
        losses.append(loss.item())
    assert losses[-1] < losses[0]


@pytest.mark.parametrize("detach", [False, True])
def test_generation_target_reaches_the_text_tower_unless_detached(detach):
    model = build_model(detach_generation_target=detach)
    model(**random_inputs(), return_loss=True).generation_loss.backward()
    text_grad = model.clip.text_projection.weight.grad
    generator_grad = model.generator.text_projection.weight.grad
    assert generator_grad is not None and generator_grad.abs().sum() > 0
    assert (text_grad is None or text_grad.abs().sum() == 0) == detach


def test_activation_checkpointing_gives_the_same_loss_and_gradients():
    inputs = random_inputs(n_text=2, n_video=2)
    results = []
    for checkpointing in (False, True):
        model = build_model(interaction_dropout=0.0).train()
        calls = []
        if checkpointing:
            model.activation_checkpointing_enable()  # transformers' mechanism: every GradientCheckpointingLayer
            for layer in model.clip.vision_model.encoder.layers:
                assert isinstance(layer, PIGViPEncoderLayer) and layer.gradient_checkpointing
                original = layer._gradient_checkpointing_func
                layer._gradient_checkpointing_func = lambda *a, f=original, **k: calls.append(1) or f(*a, **k)
        loss = model(**inputs, return_loss=True).loss
        loss.backward()
        if checkpointing:
            assert len(calls) == len(model.clip.vision_model.encoder.layers)  # one per ViP layer
            assert all(layer.gradient_checkpointing for layer in model.generator.encoder.layers)
        results.append((loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}))
    (loss_plain, grads_plain), (loss_ckpt, grads_ckpt) = results
    torch.testing.assert_close(loss_ckpt, loss_plain)
    assert grads_plain.keys() == grads_ckpt.keys()
    for name in grads_plain:
        torch.testing.assert_close(grads_ckpt[name], grads_plain[name], rtol=1e-4, atol=1e-6, msg=name)


def test_bf16_autocast_runs_and_keeps_the_loss_in_float32(monkeypatch):
    import modeling_pig.modeling_pig as modeling

    model = build_model()
    inputs = random_inputs(n_text=3, n_video=3)
    with torch.no_grad():
        reference = model(**inputs, return_loss=True)
        selected = model.get_video_features(inputs["pixel_values"]).informative_token_indices
    # The tiny random model's CLS attention is nearly flat, so bf16 rounding can swap which patches ITS picks
    # (a discrete change, not an error). Hold the float32 selection fixed to compare precision alone.
    monkeypatch.setattr(modeling, "select_informative_tokens", lambda *args, **kwargs: selected)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        mixed = model(**inputs, return_loss=True)
    for name in ("loss", "contrastive_loss", "generation_loss", "logits_per_text", "video_embeds"):
        assert getattr(mixed, name).dtype == torch.float32, name
    assert torch.isfinite(mixed.loss)
    # bf16 keeps 8 significant bits (0.4 % steps); unit embeddings with entries up to ~0.5 moved by <= 0.006 here
    for name in ("video_embeds", "text_embeds", "pseudo_query_embeds"):
        torch.testing.assert_close(getattr(mixed, name), getattr(reference, name), rtol=0, atol=0.02, msg=name)
        assert F.cosine_similarity(getattr(mixed, name), getattr(reference, name)).min() > 0.999, name
    assert mixed.loss.item() == pytest.approx(reference.loss.item(), rel=0.1)


# -------------------------------------------------------------------------------------------------------- frames


def test_temporal_embedding_is_linearly_interpolated_for_other_frame_counts():
    model = build_model()
    with torch.no_grad():
        ramp = torch.arange(NUM_FRAMES, dtype=torch.float32)  # 0, 1, 2 along time
        model.vip.temporal_embedding.copy_(ramp[None, :, None].expand(1, -1, 48))
    table = model.vip.temporal_table(1)  # stage-1 images: 1 frame -> the centre of the table
    torch.testing.assert_close(table, torch.full((1, 48), 1.0))
    torch.testing.assert_close(model.vip.temporal_table(NUM_FRAMES), model.vip.temporal_embedding[0])
    assert model.vip.temporal_table(6).shape == (6, 48)
    with torch.no_grad():
        images = model(**random_inputs(n_video=2, num_frames=1))  # 1-frame videos
    assert images.video_embeds.shape == (2, 24)


def test_eager_and_sdpa_attention_give_the_same_outputs():
    """Text, generator and ViP towers under both attention implementations: losses, the ViP tower's every hidden
    state and its token selection agree within 1e-5."""
    inputs = random_inputs(n_text=2, n_video=2)
    outputs = {}
    for implementation in ("sdpa", "eager"):
        torch.manual_seed(0)
        model = PIGModel._from_config(tiny_pig_config(), attn_implementation=implementation).eval()
        assert model.clip.text_model.config._attn_implementation == implementation
        assert model.generator.encoder.layers[0].self_attn.config._attn_implementation == implementation
        for layer in model.clip.vision_model.encoder.layers:
            assert layer.self_attn.config._attn_implementation == implementation
        with torch.no_grad():
            outputs[implementation] = model(**inputs, return_loss=True, output_hidden_states=True)
    torch.testing.assert_close(outputs["eager"].loss, outputs["sdpa"].loss, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(outputs["eager"].pseudo_query_embeds, outputs["sdpa"].pseudo_query_embeds,
                               rtol=1e-5, atol=1e-5)
    eager, sdpa = outputs["eager"].video_model_output, outputs["sdpa"].video_model_output
    for name in ("last_hidden_state", "pooler_output", "pseudo_query_embeds"):
        torch.testing.assert_close(getattr(eager, name), getattr(sdpa, name), rtol=1e-5, atol=1e-5, msg=name)
    for eager_states, sdpa_states in zip(eager.hidden_states, sdpa.hidden_states, strict=True):
        torch.testing.assert_close(eager_states, sdpa_states, rtol=1e-5, atol=1e-5)
    assert torch.equal(eager.informative_token_indices, sdpa.informative_token_indices)


# ---------------------------------------------------------------------------------------------------- baselines


def test_clip_vip_baseline_builds_no_generator_and_embeds_the_video_cls():
    model = build_model(use_pseudo_query=False)
    assert model.generator is None and model.interaction is None
    assert not any(n.startswith(("generator.", "interaction.")) for n, _ in model.named_parameters())
    inputs = random_inputs(n_text=2, n_video=2)
    with torch.no_grad():
        video = model.get_video_features(inputs["pixel_values"])
        hidden = model.encode_vip(inputs["pixel_values"]).last_hidden_state
        expected = model.clip.visual_projection(model.clip.vision_model.post_layernorm(hidden[:, 0]))
        out = model(**inputs, return_loss=True)
    torch.testing.assert_close(video.pooler_output, expected)
    assert video.pseudo_query_embeds is None and out.pseudo_query_embeds is None
    assert out.generation_loss is None
    torch.testing.assert_close(out.loss, out.contrastive_loss)


def test_clip_vip_layout_without_frame_cls_has_no_frame_cls_tokens_or_parameter():
    model = build_model(use_pseudo_query=False, use_frame_cls=False)
    assert "vip.frame_cls" not in model.state_dict()
    pixel_values = random_inputs()["pixel_values"]
    hidden = model.encode_vip(pixel_values).last_hidden_state
    assert hidden.shape[1] == 4 + NUM_FRAMES * 16  # M + T * P: frames are their patches only
    with_cls = build_model(use_pseudo_query=False)
    with_cls.load_state_dict(model.state_dict(), strict=False)
    assert not torch.allclose(with_cls.get_video_features(pixel_values).pooler_output,
                              model.get_video_features(pixel_values).pooler_output)


def test_generator_without_bos_has_no_bos_slot_and_a_shorter_sequence():
    model = build_model(generator_use_bos=False)
    assert "generator.bos_embedding" not in model.state_dict() and model.generator.bos_embedding is None
    seen = []
    model.generator.encoder.register_forward_pre_hook(lambda _, args, kwargs: seen.append(kwargs["inputs_embeds"]),
                                                      with_kwargs=True)
    with torch.no_grad():
        model.get_video_features(random_inputs()["pixel_values"])
    assert seen[0].shape[1] == model.config.generator_sequence_length() == 4 + NUM_FRAMES + TOP_K + 1


def test_meanp_baseline_is_plain_clip_per_frame_with_no_new_parameters():
    model = build_model(use_pseudo_query=False, video_tower="meanp")
    assert model.vip is None and model.generator is None and model.interaction is None
    clip = CLIPModel(CLIPConfig(**tiny_clip_config_dict()))
    assert sum(p.numel() for p in model.parameters()) == sum(p.numel() for p in clip.parameters())
    pixels = random_inputs(n_video=2)["pixel_values"]
    with torch.no_grad():
        video = model.get_video_features(pixels).pooler_output
        frames = model.clip.get_image_features(pixel_values=pixels.flatten(0, 1)).pooler_output.view(2, NUM_FRAMES, -1)
    torch.testing.assert_close(video, F.normalize(frames, dim=-1).mean(dim=1))
    with torch.no_grad():
        out = model(**random_inputs(n_text=2, n_video=2), return_loss=True)
    assert out.generation_loss is None and torch.isfinite(out.loss)


# --------------------------------------------------------------------------------------------------------- init


def test_special_initialisations_survive_post_init():
    model = build_model()
    vip, interaction, generator = model.vip, model.interaction, model.generator
    assert 0.7 < vip.proxy_tokens.std().item() < 1.3  # std-1 Gaussian (§10 row 17), 144 samples
    assert torch.count_nonzero(vip.temporal_embedding) == 0
    torch.testing.assert_close(vip.frame_cls, model.clip.vision_model.embeddings.class_embedding, rtol=0, atol=0)
    for name in ("q_proj", "k_proj", "v_proj", "out_proj", "linear_proj"):
        linear = getattr(interaction, name)
        torch.testing.assert_close(linear.weight, torch.eye(24), rtol=0, atol=0)
        assert torch.count_nonzero(linear.bias) == 0
    for name in ("layer_norm1", "layer_norm2", "layer_norm3"):
        norm = getattr(interaction, name)
        assert torch.all(norm.weight == 1) and torch.all(norm.bias == 0)
    text = model.clip.text_model
    for (name, param), source in zip(generator.encoder.named_parameters(), text.encoder.parameters()):
        torch.testing.assert_close(param, source, rtol=0, atol=0, msg=name)
    torch.testing.assert_close(generator.text_projection.weight, model.clip.text_projection.weight, rtol=0, atol=0)
    torch.testing.assert_close(generator.bos_embedding, text.embeddings.token_embedding.weight[97], rtol=0, atol=0)
    torch.testing.assert_close(generator.eos_embedding, text.embeddings.token_embedding.weight[98], rtol=0, atol=0)
    assert model.clip.logit_scale.item() == pytest.approx(4.60)


def test_fixed_bos_eos_are_buffers_not_parameters():
    model = build_model(learnable_bos_eos=False)
    names = dict(model.named_parameters())
    assert "generator.bos_embedding" not in names and "generator.eos_embedding" not in names
    assert "generator.bos_embedding" in model.state_dict()
    torch.testing.assert_close(
        model.generator.bos_embedding, model.clip.text_model.embeddings.token_embedding.weight[97], rtol=0, atol=0
    )


def test_config_edited_after_construction_is_rejected_by_the_model():
    config = tiny_pig_config()
    config.video_tower = "meanp"  # still use_pseudo_query=True
    with pytest.raises(StrictDataclassError, match="use_pseudo_query"):
        PIGModel(config)


# ------------------------------------------------------------------------------------------ parameter counts


def linear_params(fan_in, fan_out, bias=True):
    return fan_in * fan_out + (fan_out if bias else 0)


def test_b32_parameter_counts_match_the_spec_section_12():
    config = PIGConfig()  # openai/clip-vit-base-patch32 shapes, 12 frames
    with torch.device("meta"):
        model = PIGModel(config)
    count = lambda prefix: sum(p.numel() for n, p in model.named_parameters() if n.startswith(prefix))  # noqa: E731

    width, heads_dim, mlp, layers, proj = 512, 512, 2048, 12, 512
    text_layer = 4 * linear_params(width, heads_dim) + linear_params(width, mlp) + linear_params(mlp, width) + 4 * width
    transformer = layers * text_layer + 2 * width + 77 * width  # layers + final LN + positions
    mapper = linear_params(proj, width)
    assert transformer + mapper == 38_131_712  # "generator ~ 38.13 M"
    projection, bos_eos = linear_params(width, proj, bias=False), 2 * width
    assert (projection, bos_eos) == (262_144, 1_024)  # "+0.26 M projection +1 K bos/eos"
    interaction = 5 * linear_params(proj, proj) + 3 * 2 * proj
    assert interaction == 1_316_352  # "fusioner ~ 1.32 M"
    vip = 3 * 768 + 768 + 12 * 768
    assert vip == 12_288

    assert count("vip.") == vip
    assert count("generator.") == transformer + mapper + projection + bos_eos == 38_394_880
    assert count("interaction.") == interaction
    new = count("vip.") + count("generator.") + count("interaction.")
    assert new == 39_723_520
    assert 39.6e6 <= new <= 39.8e6
    assert count("clip.") == 151_277_313  # CLIP B/32 itself (~151 M)
    assert not any(n.startswith("generator.") and "token_embedding" in n for n, _ in model.named_parameters())
