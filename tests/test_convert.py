"""`pig convert`: each source's layout (tests/convert_reference.py), saved in its format, converted, loaded with
`PIGModel.from_pretrained`, and compared with the source layout's own forward at 1e-5."""

import json
import pickle

import pytest
import torch
from convert_reference import VOCAB, AuthorsPIG, AuthorsViPBaseline, CLIP4Clip, VidCLIP, randomise_
from transformers import CLIPConfig, CLIPTokenizer

from modeling_pig import PIGModel, PIGProcessor
from modeling_pig.cli import main as cli_main
from modeling_pig.convert import ConversionError, convert_checkpoint, load_checkpoint
from modeling_pig.convert_sources import infer_clip_config

# A 64-token vocabulary keeps the tests fast; its tokenizer and CLIP config come from `clip_folder` (--clip).
DIMS = dict(text=128, vision=128, heads=2, layers=2, image=32, patch=8, frames=3, proxies=2, proj=128, vocab=64)
TOP_K = 5


@pytest.fixture(scope="module")
def clip_folder(tmp_path_factory):
    """A CLIP folder for DIMS: config.json and a 64-token CLIP tokenizer (<|startoftext|> 62, <|endoftext|> 63)."""
    folder = tmp_path_factory.mktemp("clip")
    common = dict(hidden_act="quick_gelu", layer_norm_eps=1e-5, num_hidden_layers=DIMS["layers"],
                  num_attention_heads=DIMS["heads"])
    text = dict(vocab_size=DIMS["vocab"], hidden_size=DIMS["text"], intermediate_size=4 * DIMS["text"],
                max_position_embeddings=77, bos_token_id=62, eos_token_id=63, pad_token_id=63, **common)
    vision = dict(hidden_size=DIMS["vision"], intermediate_size=4 * DIMS["vision"], image_size=DIMS["image"],
                  patch_size=DIMS["patch"], **common)
    CLIPConfig(text_config=text, vision_config=vision, projection_dim=DIMS["proj"]).save_pretrained(folder)
    letters = [chr(c) for c in range(ord("a"), ord("z") + 1)]
    tokens = letters + [t + "</w>" for t in letters]
    tokens += [f"t{i}</w>" for i in range(DIMS["vocab"] - 2 - len(tokens))] + ["<|startoftext|>", "<|endoftext|>"]
    CLIPTokenizer(vocab={t: i for i, t in enumerate(tokens)}, merges=[]).save_pretrained(folder)
    return folder


def authors_config(fpig=False, use_bos=1, **generator_overrides):
    """The authors' JSON config (msrvtt_retrieval_pig_base_32.json / msrvtt1ka_retrieval_vip-fk_base_*.json)."""
    generator = {"fr_model_type": "CLIP-text-encoder", "video_mapper_type": "Linear", "use_bos_embeds": use_bos,
                 "num_query_token": 1, "overall_text_repr_type": "pick_eot",
                 "input_video_tokens_type": "cls+added_cls+frame_cls+cls_attention_scores_no_overlap"}
    fusioner = {"fusioner_type": "XPoolCrossAttention", "text_embeds_type": "eot-level",
                "input_video_tokens_type": "cls+added_cls+frame_cls", "select_attention_scores_type": "max",
                "num_selected_tokens": TOP_K, "attn_temp": 1, "embed_dim": DIMS["proj"], "head_dim": DIMS["proj"],
                "transformer_dropout": 0.1, "num_mha_heads": 1, "num_layers": 1}
    if fpig:
        generator.update(freeze_bos_embeds=0, freeze_eos_embeds=0)
        fusioner.update(zero_init=0, final_residual_add=0, final_alpha_add=0, gt_text2fuse=0, fuse_text_first=0)
    generator.update(generator_overrides)
    return {"test_num_frms": DIMS["frames"], "max_txt_len": 50, "clip_config": "openai/clip-vit-base-patch32",
            "clip_vision_additional_config": {"type": "ViP", "temporal_size": DIMS["frames"],
                                              "if_use_temporal_embed": 1, "logit_scale_init_value": 4.60,
                                              "add_cls_num": DIMS["proxies"], "keep_frame_cls": 1,
                                              "use_different_frame_cls": 0},
            "generator_config": generator, "fusioner_config": fusioner,
            "generation_loss_config": {"generation_loss_name": "l2", "generation_loss_scale": 1.0,
                                       "norm_before_loss": 1, "num_layers": -1}}


def save(tmp_path, name, obj):
    path = tmp_path / name
    if name.endswith(".json"):
        path.write_text(json.dumps(obj))
    else:
        torch.save(obj, path)
    return path


def inputs(seed=3, vocab=DIMS["vocab"]):
    generator = torch.Generator().manual_seed(seed)
    video = torch.randn(2, DIMS["frames"], 3, DIMS["image"], DIMS["image"], generator=generator)
    ids = torch.randint(1, vocab - 2, (3, 8), generator=generator)
    ids[:, 0] = vocab - 2
    lengths = torch.tensor([8, 5, 3])
    ids[torch.arange(3), lengths - 1] = vocab - 1  # <|endoftext|>, then padding (id 0)
    mask = (torch.arange(8)[None] < lengths[:, None]).long()
    return video, ids * mask, mask


def close(ours, theirs):
    torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-5)


def assert_pig_matches(folder, reference):
    model = PIGModel.from_pretrained(folder).eval()
    video, ids, mask = inputs()
    with torch.no_grad():
        ours = model.get_video_features(pixel_values=video)
        video_embeds, pseudo_query, top = reference.video_outputs(video)
        close(ours.pooler_output, video_embeds)
        close(ours.pseudo_query_embeds, pseudo_query)
        assert torch.equal(ours.informative_token_indices, top)
        close(model.get_text_features(input_ids=ids, attention_mask=mask).pooler_output,
              reference.text_embeds(ids, mask))
    return model


def test_pig_release_converts_to_the_fixed_slot_variant_and_matches_the_authors_forward(tmp_path, clip_folder):
    reference = randomise_(AuthorsPIG(DIMS), seed=1).eval()
    checkpoint = save(tmp_path, "model_best.pt", {k: v.cpu() for k, v in reference.state_dict().items()})
    report = convert_checkpoint("pig", checkpoint, tmp_path / "out", clip=clip_folder,
                                config=save(tmp_path, "pig.json", authors_config()))
    model = assert_pig_matches(tmp_path / "out", reference)
    assert not model.config.learnable_bos_eos and not model.config.generator_output_projection
    assert (model.config.its_top_k, model.config.num_frames, model.config.num_proxy_tokens) == (TOP_K, 3, 2)
    table = reference.generator.clip_reconstructor.embeddings.token_embedding.weight
    torch.testing.assert_close(model.generator.bos_embedding, table[DIMS["vocab"] - 2], rtol=0, atol=0)
    card = (tmp_path / "out" / "README.md").read_text()
    assert report.sha256 in card and "generator.clip_reconstructor.embeddings.token_embedding.weight" in card
    assert {why.split(";")[0] for _, why in report.dropped} >= {
        "the generator never looks tokens up", "constant 0..n-1 buffer of old transformers versions"}
    record = json.loads((tmp_path / "out" / "conversion.json").read_text())
    assert len(record["mapped"]) + len(record["dropped"]) >= len(reference.state_dict())
    assert PIGProcessor.from_pretrained(tmp_path / "out").num_frames == DIMS["frames"]


@pytest.mark.parametrize("use_bos", [1, 0], ids=["b16-with-bos", "b32-without-bos"])
def test_fpig_release_keeps_its_trainable_slots_and_projection_and_matches(tmp_path, clip_folder, use_bos):
    reference = randomise_(AuthorsPIG(DIMS, fpig=True, use_bos=bool(use_bos)), seed=2).eval()
    checkpoint = save(tmp_path, "model_best.pt", reference.state_dict())
    report = convert_checkpoint("fpig", checkpoint, tmp_path / "out", clip=clip_folder,
                                config=save(tmp_path, "fk.json", authors_config(fpig=True, use_bos=use_bos)))
    model = assert_pig_matches(tmp_path / "out", reference)
    assert model.config.learnable_bos_eos and model.config.generator_output_projection
    assert model.config.generator_use_bos == bool(use_bos)
    assert ("generator.bos_tokens" in dict(report.dropped)) == (not use_bos)


def test_the_authors_clip_vip_baseline_run_converts_to_the_baseline_with_frame_cls(tmp_path, clip_folder):
    reference = randomise_(AuthorsViPBaseline(DIMS), seed=9).eval()
    config = authors_config()
    del config["generator_config"], config["fusioner_config"], config["generation_loss_config"]
    convert_checkpoint("pig", save(tmp_path, "model_best.pt", reference.state_dict()), tmp_path / "out",
                       config=save(tmp_path, "vip.json", config), clip=clip_folder)
    model = PIGModel.from_pretrained(tmp_path / "out").eval()
    assert not model.config.use_pseudo_query and model.config.use_frame_cls
    video, ids, mask = inputs()
    with torch.no_grad():
        close(model.get_video_features(pixel_values=video).pooler_output, reference.encoder.video_embeds(video))
        close(model.get_text_features(input_ids=ids, attention_mask=mask).pooler_output,
              reference.encoder.text_embeds(ids, mask))


@pytest.mark.parametrize("with_config", [False, True], ids=["clip-vocab-shapes-only", "config-and-clip-folder"])
def test_clip_vip_converts_to_the_baseline_without_frame_cls_and_matches(tmp_path, clip_folder, with_config):
    # without --config and --clip: everything from the tensor shapes, CLIP's real vocabulary and tokenizer
    dims = DIMS if with_config else {**DIMS, "vocab": VOCAB}
    reference = randomise_(VidCLIP(dims, frame_cls=False), seed=4).eval()
    checkpoint = save(tmp_path, "pretrain_clipvip_base_32.pt", reference.state_dict())
    config = None
    if with_config:  # CLIP-ViP's msrvtt_retrieval_vip_base_32.json has no keep_frame_cls key
        vip = {"type": "ViP", "temporal_size": 3, "if_use_temporal_embed": 1, "logit_scale_init_value": 4.6,
               "add_cls_num": 2}
        config = save(tmp_path, "vip.json", {"clip_vision_additional_config": vip, "test_num_frms": 3,
                                             "max_txt_len": 40})
    convert_checkpoint("clip-vip", checkpoint, tmp_path / "out", config=config,
                       clip=clip_folder if with_config else None)
    model = PIGModel.from_pretrained(tmp_path / "out").eval()
    assert not model.config.use_pseudo_query and not model.config.use_frame_cls and model.vip.frame_cls is None
    video, ids, mask = inputs(vocab=dims["vocab"])
    with torch.no_grad():
        close(model.get_video_features(pixel_values=video).pooler_output, reference.video_embeds(video))
        close(model.get_text_features(input_ids=ids, attention_mask=mask).pooler_output,
              reference.text_embeds(ids, mask))
    assert PIGProcessor.from_pretrained(tmp_path / "out").max_length == (40 if with_config else 50)


def test_clip_vip_pig_init_starts_the_new_modules_from_the_converted_clip(tmp_path, clip_folder):
    reference = randomise_(VidCLIP(DIMS, frame_cls=False), seed=5).eval()
    checkpoint = save(tmp_path, "pretrain_clipvip_base_32.pt", reference.state_dict())
    report = convert_checkpoint("clip-vip", checkpoint, tmp_path / "out", pig_init=True, clip=clip_folder)
    model = PIGModel.from_pretrained(tmp_path / "out").eval()
    clip = reference.clipmodel
    assert model.config.use_pseudo_query and model.config.use_frame_cls
    torch.testing.assert_close(model.vip.frame_cls, clip.vision_model.embeddings.class_embedding, rtol=0, atol=0)
    torch.testing.assert_close(model.generator.text_projection.weight, clip.text_projection.weight, rtol=0, atol=0)
    torch.testing.assert_close(model.generator.encoder.layers[1].mlp.fc2.weight,
                               clip.text_model.encoder.layers[1].mlp.fc2.weight, rtol=0, atol=0)
    torch.testing.assert_close(model.generator.eos_embedding,
                               clip.text_model.embeddings.token_embedding.weight[-1], rtol=0, atol=0)
    torch.testing.assert_close(model.interaction.q_proj.weight, torch.eye(DIMS["proj"]), rtol=0, atol=0)
    assert {dst for dst, _ in report.filled} >= {"vip.frame_cls", "generator.video_mapper.*"}
    video, ids, mask = inputs()
    with torch.no_grad():
        close(model.get_text_features(input_ids=ids, attention_mask=mask).pooler_output,
              reference.text_embeds(ids, mask))
        assert torch.isfinite(model.get_video_features(pixel_values=video).pooler_output).all()


def test_clip4clip_meanp_with_fp16_weights_converts_through_the_cli_and_matches(tmp_path, clip_folder, capsys):
    reference = randomise_(CLIP4Clip(DIMS), seed=6).eval()
    state = {}
    with torch.no_grad():  # CLIP4Clip's convert_weights: linear/conv/attention/projection weights in float16
        for key, value in reference.state_dict().items():
            half = value.dim() >= 2 and "embedding" not in key
            state[key] = value.half() if half else value
            if half:
                reference.get_parameter(key).copy_(value.half().float())
    checkpoint = save(tmp_path, "pytorch_model.bin.4", state)
    assert cli_main(["convert", "--from", "clip4clip", str(checkpoint), "--out", str(tmp_path / "out"),
                     "--clip", str(clip_folder)]) == 0
    assert "wrote" in capsys.readouterr().out
    model = PIGModel.from_pretrained(tmp_path / "out").eval()
    assert model.config.video_tower == "meanp" and not model.config.use_pseudo_query
    video, ids, _ = inputs()
    with torch.no_grad():
        ours = model.get_video_features(pixel_values=video).pooler_output
        close(ours / ours.norm(dim=-1, keepdim=True), reference.video_embeds(video, torch.ones(2, DIMS["frames"])))
        close(model.get_text_features(input_ids=ids, attention_mask=(ids > 0).long()).pooler_output,
              reference.text_embeds(ids))
    processor = PIGProcessor.from_pretrained(tmp_path / "out")
    assert (processor.max_length, processor.resize_mode) == (32, "center_crop")
    assert "float16 -> float32" in (tmp_path / "out" / "README.md").read_text()


def test_infer_clip_config_reads_b32_off_the_shapes():
    shapes = {"text_model.embeddings.token_embedding.weight": (49408, 512),
              "text_model.embeddings.position_embedding.weight": (77, 512),
              "text_model.encoder.layers.0.mlp.fc1.weight": (2048, 512),
              "vision_model.embeddings.class_embedding": (768,),
              "vision_model.embeddings.patch_embedding.weight": (768, 3, 32, 32),
              "vision_model.embeddings.position_embedding.weight": (50, 768),
              "vision_model.encoder.layers.0.mlp.fc1.weight": (3072, 768), "visual_projection.weight": (512, 768)}
    shapes.update({f"{tower}.encoder.layers.{i}.layer_norm1.weight": (1,) for i in range(12)
                   for tower in ("text_model", "vision_model")})
    state = {"encoder.clipmodel." + k: torch.empty(v, device="meta") for k, v in shapes.items()}
    config = CLIPConfig(**infer_clip_config(state, "hf", "encoder.clipmodel."))
    assert (config.vision_config.image_size, config.vision_config.patch_size) == (224, 32)
    assert (config.vision_config.num_attention_heads, config.text_config.num_attention_heads) == (12, 8)
    assert (config.text_config.num_hidden_layers, config.projection_dim) == (12, 512)


# ---------------------------------------------------------------------------------------------------- refusals


@pytest.fixture(scope="module")
def pig_files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("pig")
    state = dict(randomise_(AuthorsPIG(DIMS), seed=7).state_dict())
    return save(folder, "model.pt", state), state, save(folder, "pig.json", authors_config())


def test_an_unmapped_source_tensor_stops_the_conversion_and_is_named(pig_files, clip_folder, tmp_path):
    _, state, config = pig_files
    checkpoint = save(tmp_path, "model.pt", {**state, "alpha": torch.tensor(0.5)})
    with pytest.raises(ConversionError, match=r"source tensors not mapped \(1\): alpha"):
        convert_checkpoint("pig", checkpoint, tmp_path / "out", config=config, clip=clip_folder)
    assert not (tmp_path / "out").exists()


def test_a_wrongly_shaped_tensor_stops_the_conversion_and_is_named(pig_files, clip_folder, tmp_path):
    _, state, config = pig_files
    bad = {**state, "fusioner.cross_attn.q_proj.bias": torch.zeros(7)}
    with pytest.raises(ConversionError, match=r"wrong shapes \(1\): fusioner.cross_attn.q_proj.bias -> "
                                              r"interaction.q_proj.bias: \[7\] vs \[128\]"):
        convert_checkpoint("pig", save(tmp_path, "model.pt", bad), tmp_path / "out", config=config,
                           clip=clip_folder)


def test_a_vocabulary_without_a_matching_tokenizer_is_refused(pig_files, tmp_path):
    checkpoint, _, config = pig_files  # 64 token rows, no --clip: CLIP's own tokenizer has 49,408
    with pytest.raises(ConversionError, match="64 token rows but CLIP's tokenizer has 49408; pass --clip"):
        convert_checkpoint("pig", checkpoint, tmp_path / "out", config=config)


@pytest.mark.parametrize("field, value, match", [
    ("generator_config.video_mapper_type", "MLP", "video_mapper_type = 'MLP'"),
    ("fusioner_config.num_mha_heads", 8, "num_mha_heads = 8"),
    ("clip_vision_additional_config.temporal_size", 12, "temporal_size = 12 but .*temporal_embedding has 3"),
    ("fusioner_config.num_selected_tokens", 999, "its_top_k"),
])
def test_settings_the_model_cannot_match_are_refused(pig_files, clip_folder, tmp_path, field, value, match):
    checkpoint, _, config = pig_files
    data = json.loads(config.read_text())
    section, key = field.split(".")
    data[section][key] = value
    with pytest.raises(ConversionError, match=match):
        convert_checkpoint("pig", checkpoint, tmp_path / "out", config=save(tmp_path, "bad.json", data),
                           clip=clip_folder)


def test_a_checkpoint_that_needs_arbitrary_unpickling_is_refused_in_one_cli_line(tmp_path, capsys):
    path = tmp_path / "model_best.pt"
    path.write_bytes(pickle.dumps({"weights": torch.zeros(2), "args": argparse_namespace()}, protocol=2))
    code = cli_main(["convert", "--from", "clip-vip", str(path), "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and err.startswith("error: ") and "arbitrary unpickling" in err


def argparse_namespace():
    import argparse

    return argparse.Namespace(lr=1e-4)


def test_a_training_state_file_and_bad_cli_input_get_one_error_line(tmp_path, capsys):
    optimizer_file = save(tmp_path, "model_step_10_train_state.pt", {"step": 10, "optimizer": {"state": {}}})
    with pytest.raises(ConversionError, match="not tensors: optimizer, step"):
        load_checkpoint(optimizer_file)
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("x")
    for argv in (["--from", "clip5", str(optimizer_file), "--out", str(tmp_path / "o")],
                 ["--from", "pig", str(optimizer_file), "--out", str(tmp_path / "o")],
                 ["--from", "clip-vip", str(tmp_path / "missing.pt"), "--out", str(tmp_path / "o")],
                 ["--from", "clip-vip", str(optimizer_file), "--out", str(tmp_path / "full")]):
        assert cli_main(["convert", *argv]) == 2
        err = capsys.readouterr().err
        assert err.startswith("error: ") and err.count("\n") == 1, err


def test_clip4clip_heads_other_than_meanp_are_refused(tmp_path):
    state = dict(randomise_(CLIP4Clip(DIMS), seed=8).state_dict())
    state["transformerClip.resblocks.0.ln_1.weight"] = torch.ones(DIMS["text"])
    with pytest.raises(ConversionError, match="seqTransf, not meanP"):
        convert_checkpoint("clip4clip", save(tmp_path, "pytorch_model.bin.1", state), tmp_path / "out")
