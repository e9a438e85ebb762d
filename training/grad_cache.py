"""Gradient caching (Gao et al., "Scaling Deep Contrastive Learning Batch Size under Memory Limited Setup", 2021):
the step of a large contrastive batch at the activation memory of one chunk.

A contrastive loss needs every embedding of the (global) batch at once, so gradient accumulation is no
substitute for a large batch. Gradient caching splits the step in two passes over chunks of `chunk_size` videos:

1. every chunk is encoded without a graph; the loss of the whole batch (InfoNCE + alpha * generation loss,
   all-gathered across processes exactly as without chunking) is computed from these embeddings, and its
   gradients with respect to the embeddings (and the logit scale) are cached;
2. every chunk is encoded again, with a graph, and back-propagated with its slice of the cached gradients
   (`sum(embedding * cached_gradient)` has exactly the parameter gradient of the full loss through that chunk).

The random state before each chunk's first pass is restored for its second pass, so dropout draws the same masks
in both (frame jitter is drawn by the data loader, before the step, and is the same anyway). Under DDP the chunks
before the last one back-propagate under `no_sync`, and the last one synchronises the accumulated gradients.
With `chunk_size` dividing the per-process batch, the weights after N steps equal those of the unchunked run up
to float rounding (tests/test_grad_cache.py, tests/test_train_distributed.py).

The model is called through its wrapper (DDP, autocast); the logit scale and the loss function are read from the
unwrapped model, which needs its parameters whole: FSDP and DeepSpeed are refused (train.py says so at start-up).
"""

from __future__ import annotations

import contextlib

import torch
from accelerate import Accelerator

from modeling_pig.modeling_pig import PIGOutput

INPUTS = ("input_ids", "attention_mask", "pixel_values")


def _rng_state(device: torch.device) -> tuple:
    """The CPU random state and, on an accelerator, the device's (what dropout draws from)."""
    if device.type == "cuda":
        return torch.get_rng_state(), torch.cuda.get_rng_state(device)
    return torch.get_rng_state(), None


def _set_rng_state(device: torch.device, state: tuple) -> None:
    torch.set_rng_state(state[0])
    if state[1] is not None:
        torch.cuda.set_rng_state(state[1], device)


class GradCache:
    """The two-pass step of one batch: `output = cache.forward(batch)`, `loss = f(output)`, `cache.backward(loss)`.

    `forward` returns a `PIGOutput` whose losses (of the whole batch, across processes with
    `gather_across_processes`) depend on cached embeddings, so that any function of them (the stage's loss) can be
    checked and back-propagated; `backward(loss)` then re-encodes every chunk and leaves the parameter gradients
    in `.grad`, as `accelerator.backward(loss)` would have after an unchunked forward.
    """

    def __init__(self, accelerator: Accelerator, model: torch.nn.Module, chunk_size: int,
                 gather_across_processes: bool):
        if chunk_size <= 0:
            raise ValueError(f"chunk_size={chunk_size}; expected a positive number of videos")
        self.accelerator = accelerator
        self.model = model
        self.unwrapped = accelerator.unwrap_model(model)
        self.chunk_size = chunk_size
        self.gather_across_processes = gather_across_processes
        self._pending = None

    def _chunks(self, batch: dict) -> list[dict]:
        pieces = [torch.split(batch[name], self.chunk_size) for name in INPUTS]
        return [dict(zip(INPUTS, chunk)) for chunk in zip(*pieces)]

    def forward(self, batch: dict) -> PIGOutput:
        """First pass: every chunk's embeddings without a graph, then the losses of the whole batch from them."""
        device = batch["input_ids"].device
        chunks = self._chunks(batch)
        states, text, video, pseudo = [], [], [], []
        with torch.no_grad():
            for chunk in chunks:
                states.append(_rng_state(device))
                output = self.model(**chunk)
                text.append(output.text_embeds)
                video.append(output.video_embeds)
                pseudo.append(output.pseudo_query_embeds)
        # leaves that collect d(loss)/d(embedding); the logit scale's gradient goes back through the model later
        text_embeds = torch.cat(text).requires_grad_()
        video_embeds = torch.cat(video).requires_grad_()
        pseudo_embeds = None if pseudo[0] is None else torch.cat(pseudo).requires_grad_()
        logit_scale = self.unwrapped.get_logit_scale().detach().requires_grad_()
        loss, contrastive, generation = self.unwrapped.loss_from_embeddings(
            text_embeds, video_embeds, pseudo_embeds, logit_scale, self.gather_across_processes)
        self._pending = {"chunks": chunks, "states": states, "end_state": _rng_state(device), "device": device,
                         "leaves": (text_embeds, video_embeds, pseudo_embeds, logit_scale)}
        return PIGOutput(loss=loss, contrastive_loss=contrastive, generation_loss=generation,
                         text_embeds=text_embeds.detach(), video_embeds=video_embeds.detach(),
                         pseudo_query_embeds=None if pseudo_embeds is None else pseudo_embeds.detach())

    def backward(self, loss: torch.Tensor) -> None:
        """Second pass: cache d(loss)/d(embeddings), then back-propagate every chunk re-encoded with its slice.

        `loss` must be computed from the last `forward`'s output. A collective under DDP (every process calls it).
        """
        if self._pending is None:
            raise RuntimeError("GradCache.backward needs a GradCache.forward first")
        pending, self._pending = self._pending, None
        leaves = [leaf for leaf in pending["leaves"] if leaf is not None]
        cached = dict(zip((id(leaf) for leaf in leaves), torch.autograd.grad(loss, leaves, allow_unused=True)))
        text_grad, video_grad, pseudo_grad, scale_grad = (
            None if leaf is None else cached[id(leaf)] for leaf in pending["leaves"])
        chunks, device = pending["chunks"], pending["device"]
        start = 0
        for index, chunk in enumerate(chunks):
            size = chunk["input_ids"].shape[0]
            rows = slice(start, start + size)
            start += size
            last = index == len(chunks) - 1
            _set_rng_state(device, pending["states"][index])
            sync = contextlib.nullcontext() if last else self.accelerator.no_sync(self.model)
            with sync:
                output = self.model(**chunk)
                surrogate = output.text_embeds.new_zeros(())
                for embeds, grad in ((output.text_embeds, text_grad), (output.video_embeds, video_grad),
                                     (output.pseudo_query_embeds, pseudo_grad)):
                    if embeds is not None and grad is not None:
                        surrogate = surrogate + (embeds * grad[rows]).sum()
                if last and scale_grad is not None and self.unwrapped.clip.logit_scale.requires_grad:
                    surrogate = surrogate + self.unwrapped.get_logit_scale() * scale_grad
                self.accelerator.backward(surrogate)
        _set_rng_state(device, pending["end_state"])
