"""Building a `MemoryProfile`: run each kind of unit of the training step once, on fake
tensors, under `LiveBytes` (simulate.py), and record its segments (see profile.py).

Each unit runs between two stand-ins: `_Source` gives it input streams that are part of a graph
(as a lower unit's outputs would be) and marks the end of its backward; `_Sink` stands for the
unit above, allocating the output gradients that unit's backward would pass down and marking the
start of this unit's backward. Only shapes and dtypes are ever read.
"""

from __future__ import annotations

import weakref
from typing import Callable

import torch

from autopmf.errors import AutopmfError
from autopmf.memory.finetune import FullFineTune
from autopmf.memory.measure import training_step
from autopmf.memory.profile import (MemoryProfile, PrefixCost, Segment, UnitCost, config_key,
                                    optimizer_state, optimizer_transient, profile_key,
                                    read_cached, slot_configs_of_space, write_cached)
from autopmf.memory.simulate import (CUDA_GRANULE, LiveBytes, fake_like, fake_mode,
                                     fake_parameters, storage_bytes)
from autopmf.metrics import loss_fn
from autopmf.space import SearchSpace, SlotConfig
from autopmf.train import autocast
from supernet.backbone import FrozenBackbone, TwoHeads
from supernet.fusion import FusionSlot, Streams

# cuBLAS allocates its workspace through PyTorch's caching allocator, once per (thread,
# stream): the forward runs on the main thread, the backward on autograd's device thread.
# 32 MiB is the default on Hopper (H100/H200; 8.125 MiB on older GPUs), CublasHandlePool.cpp.
CUDA_CUBLAS_WORKSPACES = 2 * 32 * 2**20


def load_profile(space: SearchSpace, device: str = "cpu", num_classes: int = 2,
                 backbone: FrozenBackbone | None = None, cache: bool = True) -> MemoryProfile:
    """The profile for `space` on `device` ("cpu" or "cuda"), from the cache or built (a few
    seconds of simulation; `backbone` saves building the encoders when given)."""
    cached = read_cached(profile_key(space, device, num_classes)) if cache else None
    if cached is not None:
        from autopmf.build import check_fusable_slots

        # The key holds no slots (a profile serves every slot list of one encoder pair), so
        # check them here as building the encoders would have.
        check_fusable_slots(space, cached.num_slots)
        return cached
    if backbone is None:
        from autopmf.build import build_backbone
        backbone = build_backbone(space)
    profile = build_profile(space, backbone, device, num_classes)
    if cache:
        write_cached(profile)
    return profile


def build_profile(space: SearchSpace, backbone: FrozenBackbone, device: str = "cpu",
                  num_classes: int = 2) -> MemoryProfile:
    """Simulate every unit kind of `space` once. Only shapes and dtypes are read."""
    from autopmf.build import default_mapping_hidden

    key = profile_key(space, device, num_classes)
    d_text, d_image = backbone.text.hidden_size, backbone.image.hidden_size
    mapping_hidden = default_mapping_hidden(backbone)
    top = backbone.num_slots - 1
    with fake_mode(), fake_parameters(backbone):
        sim = _Simulator(space, backbone, device)
        static = (storage_bytes([*backbone.parameters(), *backbone.buffers()], sim.granule)
                  + storage_bytes([*sim.batch.values(), sim.labels], sim.granule))
        prefix, inputs = {}, {}
        for slot in range(backbone.num_slots + 1):
            prefix[slot], inputs[slot] = sim.prefix(slot)
        # Every unit above the first fused slot reads streams that a layer wrote; the heads
        # read the top slot's, which keeps only the rows they read.
        all_rows, top_rows = (None, None), backbone.rows_kept(top)
        with sim.autocast():
            layer_out = backbone.run_plain_slot(top, inputs[top])
            top_out = backbone.run_plain_slot(top, inputs[top], top_rows)

        def plain_cost(keep) -> UnitCost:
            def run(streams):
                return backbone.run_plain_slot(top, streams, keep)

            return sim.link(run, layer_out, [], inputs_need_grad=True)

        def fused_costs(first: bool, keep) -> dict[str, UnitCost]:
            def cost(cfg: SlotConfig) -> UnitCost:
                slot = FusionSlot(d_text, d_image, cfg)

                def run(streams):
                    return slot(streams, backbone.text_layer_fn(top),
                                backbone.image_layer_fn(top), keep=keep)

                return sim.link(run, inputs[top] if first else layer_out, slot.parameters(),
                                inputs_need_grad=not first)

            return {config_key(c): cost(c) for c in configs}

        _check_stream_dtypes(inputs, layer_out)
        configs = slot_configs_of_space(space, mapping_hidden)
        heads = TwoHeads(d_text, d_image, num_classes)
        profile = MemoryProfile(
            key=key, num_slots=backbone.num_slots, mapping_hidden=mapping_hidden,
            static=static, granule=sim.granule,
            runtime=CUDA_CUBLAS_WORKSPACES if device == "cuda" else 0,
            optimizer=sim.optimizer,
            prefix=prefix,
            plain=plain_cost(all_rows),
            fused=fused_costs(first=False, keep=all_rows),
            first_fused=fused_costs(first=True, keep=all_rows),
            top_plain=plain_cost(top_rows),
            top_fused=fused_costs(first=False, keep=top_rows),
            top_first_fused=fused_costs(first=True, keep=top_rows),
            heads=sim.heads(heads, top_out, inputs_need_grad=True),
            heads_only=sim.heads(heads, inputs[backbone.num_slots], inputs_need_grad=False),
            full_finetune=0)
        # Last: it makes every (fake) weight trainable.
        profile.full_finetune = sim.full_finetune(num_classes) + profile.runtime
    return profile


def fake_batch(space: SearchSpace) -> tuple[dict, torch.Tensor]:
    """Input batch and labels as fake tensors (call inside FakeTensorMode)."""
    b, n, s = space.batch_size, space.max_text_len, space.image_size
    batch = {"input_ids": torch.zeros(b, n, dtype=torch.long),
             "attention_mask": torch.ones(b, n, dtype=torch.long),
             "pixels": torch.zeros(b, 3, s, s)}
    return batch, torch.zeros(b, dtype=torch.long)


class _Source(torch.autograd.Function):
    """Gives a unit input streams that are outputs of a graph node, as a lower unit's are; its
    backward runs last and marks the end of the unit's backward segment."""

    @staticmethod
    def forward(ctx, on_backward, text, image):
        ctx.on_backward = on_backward
        return text.clone(), image.clone()

    @staticmethod
    def backward(ctx, grad_text, grad_image):
        ctx.on_backward()
        return None, None, None


class _Sink(torch.autograd.Function):
    """Stands for the next unit: its backward allocates the output-stream gradients (as the next
    unit's backward would) and then starts the unit's backward segment."""

    @staticmethod
    def forward(ctx, on_backward, text, image):
        ctx.on_backward = on_backward
        ctx.like = (text.shape, text.dtype, image.shape, image.dtype)
        return text.new_zeros(())

    @staticmethod
    def backward(ctx, _):
        t_shape, t_dtype, i_shape, i_dtype = ctx.like
        grads = torch.zeros(t_shape, dtype=t_dtype), torch.zeros(i_shape, dtype=i_dtype)
        ctx.on_backward()
        return None, *grads


class _AdamWStandIn:
    """AdamW's part in a simulated step: zero_grad as AdamW does it; `step` notes the level
    (its scratch is added by `optimizer_transient`: fake tensors cannot run AdamW's update)."""

    def __init__(self, params: list, tracker: LiveBytes):
        self.params, self.tracker, self.level_at_step = params, tracker, 0

    def zero_grad(self, set_to_none: bool = True) -> None:
        for p in self.params:
            p.grad = None

    def step(self) -> None:
        self.level_at_step = self.tracker.live


class _Simulator:
    """Runs pieces of one training step on fake tensors (inside `fake_mode()` and
    `fake_parameters(backbone)`) and measures them with a `LiveBytes` tracker."""

    def __init__(self, space: SearchSpace, backbone: FrozenBackbone, device: str):
        self.space, self.backbone = space, backbone
        self.granule = CUDA_GRANULE if device == "cuda" else 1
        self.optimizer = "foreach" if device == "cuda" else "single"
        self.batch, self.labels = fake_batch(space)
        self.mask = self.batch["attention_mask"].bool()

    def autocast(self):
        # CUDA is emulated with CPU autocast: for these layers (fp32 residual streams, SDPA) the
        # two cast the same ops; see simulate.py.
        return autocast(self.space.precision, "cpu")

    def prefix(self, first_fused: int) -> tuple[PrefixCost, Streams]:
        tracker = LiveBytes(self.granule)
        with tracker, self.autocast():
            start = tracker.begin()
            streams = self.backbone.encode_until(self.batch, first_fused)
            forward = Segment(tracker.peak - start, tracker.live - start)
            outputs = [streams.text, streams.image]
            del streams
            out_text, out_image = self._release(tracker, outputs)
        streams = self.backbone.encode_until(self.batch, first_fused)  # untracked copy
        return PrefixCost(forward, out_text, out_image), streams

    def link(self, run: Callable[[Streams], Streams | tuple], like: Streams, params,
             inputs_need_grad: bool) -> UnitCost:
        """Cost of one link of the chain on streams shaped like `like`: `run` maps them to
        output streams (a slot), or to (loss, logits) (the heads; the step keeps both)."""
        tracker = LiveBytes(self.granule)
        marks: dict[str, int] = {}

        def start_backward():
            marks["start"] = tracker.begin()

        def end_backward():
            marks["peak"], marks["end"] = tracker.peak, tracker.live

        text, image = fake_like(like.text), fake_like(like.image)
        if inputs_need_grad:
            text, image = _Source.apply(end_backward, text.requires_grad_(),
                                        image.requires_grad_())
        kept = weakref.ref(text.untyped_storage()), weakref.ref(image.untyped_storage())
        with tracker:
            with self.autocast():
                start = tracker.begin()
                out = run(Streams(text, self.mask, image))
                forward = Segment(tracker.peak - start, tracker.live - start)
            del text, image
            saves_text, saves_image = (ref() is not None for ref in kept)
            if isinstance(out, Streams):
                loss = _Sink.apply(start_backward, out.text, out.image)
                outputs = [out.text, out.image]
                del out
                out_text, out_image = self._release(tracker, outputs)
            else:
                loss, out_text, out_image = out[0], 0, 0
                start_backward()
            loss.backward()
            if not inputs_need_grad:
                end_backward()
        backward = Segment(marks["peak"] - marks["start"], marks["end"] - marks["start"])
        return UnitCost(forward, backward, out_text, out_image, saves_text, saves_image,
                        self._param_bytes(params))

    def heads(self, heads: TwoHeads, like: Streams, inputs_need_grad: bool) -> UnitCost:
        def run(streams):
            logits = heads(*self.backbone.cls_features(streams))
            return loss_fn("accuracy", logits, self.labels), logits

        return self.link(run, like, heads.parameters(), inputs_need_grad)

    def full_finetune(self, num_classes: int) -> int:
        """Peak of a steady-state step of `FullFineTune`: every weight trained."""
        model = FullFineTune(self.backbone, num_classes)
        params = list(model.parameters())
        for p in params:
            p.requires_grad_(True)
        tracker = LiveBytes(self.granule)
        optimizer = _AdamWStandIn(params, tracker)
        with tracker:
            for t in (*params, *model.buffers(), *self.batch.values(), self.labels):
                tracker.track(t.untyped_storage())
            param_bytes = self._param_bytes(params)
            tracker.live += optimizer_state(self.optimizer, param_bytes)
            for p in params:
                p.grad = torch.zeros_like(p)  # the last step's, freed by zero_grad
            training_step(model, self.batch, self.labels, optimizer, self.space.precision, "cpu")
        scratch = optimizer_transient(self.optimizer, param_bytes)
        return max(tracker.peak, optimizer.level_at_step + scratch)

    @staticmethod
    def _release(tracker: LiveBytes, tensors: list) -> tuple[int, ...]:
        """Bytes freed by dropping each tensor of `tensors` in turn (the list must hold the
        last references to them)."""
        freed = []
        while tensors:
            before = tracker.live
            tensors.pop(0)
            freed.append(before - tracker.live)
        return tuple(freed)

    def _param_bytes(self, params) -> tuple[int, ...]:
        return tuple(storage_bytes([p], self.granule) for p in params if p.requires_grad)


def _check_stream_dtypes(inputs: dict[int, Streams], layer_out: Streams) -> None:
    """Unit costs are simulated once per kind, on streams of one dtype: all slots must agree."""
    want = (layer_out.text.dtype, layer_out.image.dtype)
    for slot, streams in inputs.items():
        if (streams.text.dtype, streams.image.dtype) != want:
            raise AutopmfError(
                f"memory profile: streams entering slot {slot} are {streams.text.dtype}/"
                f"{streams.image.dtype} but layers output {want[0]}/{want[1]}; this encoder "
                "pair is not supported by the memory model")
