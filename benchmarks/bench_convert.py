"""`pig convert` at full ViT-B/32 size: time, memory and agreement with each source layout's own forward.

For each source it builds the re-created source model of tests/convert_reference.py at the real B/32 shapes
(CLIP ViT-B/32: vision 768 x 12 layers x 12 heads, text 512 x 12 x 8, 224 px, patch 32, 49,408 tokens; 12 frames,
3 proxies, ITS top-16), with random weights, saves it in the source's format, converts it, loads the folder with
`PIGModel.from_pretrained` and compares, on 2 random 12-frame videos and 2 captions, the video embedding, the text
embedding and (PIG / F-Pig) the pseudo-query and the ITS indices with the source layout's forward. Prints a
markdown table (max |difference|, conversion and loading wall time, checkpoint size) and the peak resident memory
of the process. The weights are random: this measures the converter, not a trained model.

    python benchmarks/bench_convert.py [--sources pig fpig clip-vip clip4clip] [--workdir /tmp/bench_convert]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from convert_reference import VOCAB, AuthorsPIG, CLIP4Clip, VidCLIP, randomise_  # noqa: E402

from modeling_pig import PIGModel  # noqa: E402
from modeling_pig.convert import convert_checkpoint  # noqa: E402

B32 = dict(text=512, vision=768, text_heads=8, vision_heads=12, layers=12, image=224, patch=32, frames=12,
           proxies=3, proj=512)


def authors_config(fpig: bool) -> dict:
    """The authors' msrvtt config fields the converter reads (values of the released B/32 / B/16 configs)."""
    fusioner = {"fusioner_type": "XPoolCrossAttention", "text_embeds_type": "eot-level",
                "input_video_tokens_type": "cls+added_cls+frame_cls", "select_attention_scores_type": "max",
                "num_selected_tokens": 16, "attn_temp": 1, "embed_dim": 512, "transformer_dropout": 0.1,
                "num_mha_heads": 1}
    generator = {"fr_model_type": "CLIP-text-encoder", "video_mapper_type": "Linear", "use_bos_embeds": 1,
                 "num_query_token": 1, "input_video_tokens_type":
                 "cls+added_cls+frame_cls+cls_attention_scores_no_overlap"}
    return {"test_num_frms": 12, "max_txt_len": 50, "input_res": [224, 224],
            "clip_vision_additional_config": {"type": "ViP", "temporal_size": 12, "if_use_temporal_embed": 1,
                                              "logit_scale_init_value": 4.6, "add_cls_num": 3,
                                              "keep_frame_cls": 1, "use_different_frame_cls": 0},
            "generator_config": generator, "fusioner_config": fusioner}


def inputs():
    generator = torch.Generator().manual_seed(0)
    video = torch.randn(2, 12, 3, 224, 224, generator=generator)
    ids = torch.randint(0, VOCAB - 2, (2, 12), generator=generator)
    ids[:, 0], ids[0, -1], ids[1, 6] = VOCAB - 2, VOCAB - 1, VOCAB - 1
    mask = torch.ones_like(ids)
    mask[1, 7:] = 0
    return video, ids * mask, mask


def run(source: str, workdir: Path) -> dict:
    folder = workdir / source
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    config = None
    if source in ("pig", "fpig"):
        reference = AuthorsPIG(B32, fpig=source == "fpig", top_k=16)
        config = folder / "config.json"
        config.write_text(json.dumps(authors_config(source == "fpig")))
    elif source == "clip-vip":
        reference = VidCLIP(B32, frame_cls=False)
    else:
        reference = CLIP4Clip(B32)
    randomise_(reference, seed=0).eval()
    checkpoint = folder / ("pytorch_model.bin.0" if source == "clip4clip" else "model_best.pt")
    torch.save(reference.state_dict(), checkpoint)

    start = time.perf_counter()
    convert_checkpoint(source, checkpoint, folder / "out", config=config)
    converted = time.perf_counter() - start
    start = time.perf_counter()
    model = PIGModel.from_pretrained(folder / "out").eval()
    loaded = time.perf_counter() - start

    video, ids, mask = inputs()
    row = {"source": source, "checkpoint MB": checkpoint.stat().st_size / 2**20, "convert s": converted,
           "load s": loaded}
    with torch.no_grad():
        ours = model.get_video_features(pixel_values=video)
        ours_video = ours.pooler_output
        ours_text = model.get_text_features(input_ids=ids, attention_mask=mask).pooler_output
        if source in ("pig", "fpig"):
            video_embeds, pseudo_query, top = reference.video_outputs(video)
            row["pseudo-query"] = (ours.pseudo_query_embeds - pseudo_query).abs().max().item()
            row["ITS equal"] = bool(torch.equal(ours.informative_token_indices, top))
            text = reference.text_embeds(ids, mask)
        elif source == "clip-vip":
            video_embeds, text = reference.video_embeds(video), reference.text_embeds(ids, mask)
        else:
            video_embeds, text = reference.video_embeds(video, torch.ones(2, 12)), reference.text_embeds(ids)
            ours_video = ours_video / ours_video.norm(dim=-1, keepdim=True)  # meanP: compared as unit vectors
        row["video"] = (ours_video - video_embeds).abs().max().item()
        row["text"] = (ours_text - text).abs().max().item()
        row["|video| max"] = video_embeds.abs().max().item()
    shutil.rmtree(folder)
    return row


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sources", nargs="+", default=["pig", "fpig", "clip-vip", "clip4clip"])
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/bench_convert"))
    args = parser.parse_args(argv)
    torch.manual_seed(0)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, load average {os.getloadavg()}")
    rows = [run(source, args.workdir) for source in args.sources]
    columns = ["source", "checkpoint MB", "convert s", "load s", "video", "text", "pseudo-query", "ITS equal",
               "|video| max"]
    print("| " + " | ".join(columns) + " |")
    print("|" + " --- |" * len(columns))
    for row in rows:
        cells = [row.get(c, "-") for c in columns]
        print("| " + " | ".join(f"{c:.3g}" if isinstance(c, float) else str(c) for c in cells) + " |")
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    print(f"peak resident memory {peak:.2f} GiB; load average {os.getloadavg()}")


if __name__ == "__main__":
    main()
