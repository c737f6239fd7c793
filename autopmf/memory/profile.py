"""The memory profile of one training setting, built by simulating single slots on fake tensors.

A PMF training step is a chain: the no-grad prefix (embeddings and every layer below the first
fused slot), one *unit* per slot from the first fused slot up (fused or plain), the heads and
the loss; then the backward pass through the same units top down, then AdamW. All slots of an
encoder pair have the same shapes, so a unit's memory behaviour depends only on its kind (plain,
fused with given prompt lengths, the first fused slot) — not on where it sits. `build_profile`
runs each kind once under `LiveBytes` (simulate.py) and records, per unit:

* forward / backward `Segment`: the peak rise above the level at the segment's start, and the
  net change at its end (saved activations, parameter gradients, the input gradient it passes
  down, minus what it frees);
* the bytes of its output streams, freed when the next unit ends unless that unit saves them;
* whether it saves its input streams for backward (then they are freed in its backward).

`estimator.py` chains these numbers per architecture. A profile is built once per (encoders,
batch, lengths, precision, device kind, number of classes, prompt choices) and cached as JSON.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import weakref
from dataclasses import dataclass
from importlib.metadata import version
from pathlib import Path
from typing import Callable

import torch

from autopmf.errors import AutopmfError
from autopmf.memory.finetune import FullFineTune
from autopmf.memory.measure import training_step
from autopmf.memory.simulate import (CUDA_GRANULE, LiveBytes, fake_like, fake_mode,
                                     fake_parameters, storage_bytes)
from autopmf.metrics import loss_fn
from autopmf.space import SearchSpace, SlotConfig
from autopmf.train import autocast
from supernet.backbone import FrozenBackbone, TwoHeads
from supernet.fusion import FusionSlot, Streams

PROFILE_VERSION = 1
DEVICE_KINDS = ("cpu", "cuda")
# cuBLAS allocates its workspace through PyTorch's caching allocator, once per (thread,
# stream): the forward runs on the main thread, the backward on autograd's device thread.
# 32 MiB is the default on Hopper (H100/H200; 8.125 MiB on older GPUs), CublasHandlePool.cpp.
CUDA_CUBLAS_WORKSPACES = 2 * 32 * 2**20


@dataclass(frozen=True)
class Segment:
    peak: int  # highest rise above the level at the segment's start
    delta: int  # net change of the level at its end


@dataclass(frozen=True)
class UnitCost:
    forward: Segment
    backward: Segment
    out_text: int  # bytes released when its output text stream is dropped
    out_image: int
    saves_text: bool  # keeps its input text stream until its backward
    saves_image: bool
    params: tuple[int, ...]  # bytes of each trainable parameter it owns


@dataclass(frozen=True)
class PrefixCost:
    forward: Segment
    out_text: int
    out_image: int


@dataclass
class MemoryProfile:
    key: dict  # what the profile was built for (see `profile_key`)
    num_slots: int
    mapping_hidden: int  # default mapping hidden size of these encoders
    static: int  # frozen weights and buffers, and the input batch
    granule: int  # allocation granule of the device kind
    runtime: int  # bytes the device runtime holds through the step (cuBLAS workspaces)
    optimizer: str  # "single" (CPU AdamW) or "foreach" (CUDA AdamW)
    prefix: dict[int, PrefixCost]  # by first fused slot (num_slots: nothing fused)
    plain: UnitCost  # a slot that does not fuse, above the first fused one
    fused: dict[str, UnitCost]  # by slot-config key: a fused slot above the first
    first_fused: dict[str, UnitCost]  # the first fused slot (its input carries no grad)
    heads: UnitCost  # heads and loss over streams that carry grad
    heads_only: UnitCost  # ... over streams that do not (nothing fused)
    full_finetune: int  # peak of a step that trains every weight (no prompts)

    def to_json(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, data: dict) -> "MemoryProfile":
        def unit(d):
            return UnitCost(Segment(**d["forward"]), Segment(**d["backward"]), d["out_text"],
                            d["out_image"], d["saves_text"], d["saves_image"], tuple(d["params"]))

        def prefix(d):
            return PrefixCost(Segment(**d["forward"]), d["out_text"], d["out_image"])

        return cls(
            key=data["key"], num_slots=data["num_slots"],
            mapping_hidden=data["mapping_hidden"], static=data["static"],
            granule=data["granule"], runtime=data["runtime"], optimizer=data["optimizer"],
            prefix={int(s): prefix(p) for s, p in data["prefix"].items()},
            plain=unit(data["plain"]),
            fused={k: unit(u) for k, u in data["fused"].items()},
            first_fused={k: unit(u) for k, u in data["first_fused"].items()},
            heads=unit(data["heads"]), heads_only=unit(data["heads_only"]),
            full_finetune=data["full_finetune"])


def config_key(cfg: SlotConfig) -> str:
    return f"{cfg.query_len},{cfg.query_context_len},{cfg.fusion_context_len},{cfg.mapping_hidden}"


def slot_configs_of_space(space: SearchSpace, mapping_hidden: int) -> list[SlotConfig]:
    """Every distinct fused-slot config an architecture of `space` can have."""
    if space.prompt_mode == "shared":
        lengths = [(m, m, m) for m in space.prompt_lengths if m > 0]
    else:
        lengths = [(q, c, f) for q in space.prompt_lengths if q > 0
                   for c in space.prompt_lengths for f in space.prompt_lengths]
    hiddens = space.mapping_hidden or (mapping_hidden,)
    return [SlotConfig(q, c, f, h) for q, c, f in lengths for h in hiddens]


def profile_key(space: SearchSpace, device: str, num_classes: int) -> dict:
    if device not in DEVICE_KINDS:
        raise AutopmfError(f"memory: device kind {device!r} must be one of {DEVICE_KINDS}")
    return {"version": PROFILE_VERSION, "text_encoder": space.text_encoder,
            "image_encoder": space.image_encoder, "batch_size": space.batch_size,
            "max_text_len": space.max_text_len, "image_size": space.image_size,
            "precision": space.precision, "device": device, "num_classes": num_classes,
            "prompt_lengths": list(space.prompt_lengths), "prompt_mode": space.prompt_mode,
            "mapping_hidden": list(space.mapping_hidden),
            "torch": torch.__version__, "transformers": version("transformers"),
            "timm": version("timm")}


def cache_path(key: dict) -> Path:
    from autopmf.encoders.packaged import cache_root

    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]
    return cache_root() / "memory" / f"{digest}.json"


def load_profile(space: SearchSpace, device: str = "cpu", num_classes: int = 2,
                 backbone: FrozenBackbone | None = None, cache: bool = True) -> MemoryProfile:
    """The profile for `space` on `device` ("cpu" or "cuda"), from the cache or built (a few
    seconds of simulation; `backbone` saves building the encoders when given)."""
    key = profile_key(space, device, num_classes)
    path = cache_path(key)
    if cache and path.exists():
        try:
            data = json.loads(path.read_text())
            if data.get("key") == key:
                return MemoryProfile.from_json(data)
        except (ValueError, KeyError, TypeError):
            pass  # unreadable or from another layout: rebuild below
    if backbone is None:
        from autopmf.build import build_backbone
        backbone = build_backbone(space)
    profile = build_profile(space, backbone, device, num_classes)
    if cache:
        from autopmf.files import atomic_write_json
        atomic_write_json(path, profile.to_json())
    return profile


# ----- building ----------------------------------------------------------------------------
def fake_batch(space: SearchSpace) -> tuple[dict, torch.Tensor]:
    """Input batch and labels as fake tensors (call inside FakeTensorMode)."""
    b, n, s = space.batch_size, space.max_text_len, space.image_size
    batch = {"input_ids": torch.zeros(b, n, dtype=torch.long),
             "attention_mask": torch.ones(b, n, dtype=torch.long),
             "pixels": torch.zeros(b, 3, s, s)}
    return batch, torch.zeros(b, dtype=torch.long)


class _Source(torch.autograd.Function):
    """Gives a unit non-leaf input streams; its backward, the last node to run, reports the
    input gradients (the end of the unit's backward segment)."""

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


def optimizer_state(kind: str, param_bytes: tuple[int, ...]) -> int:
    """AdamW's state: two moments per parameter, and on the CPU path a float32 step counter
    each (the CUDA path keeps those on the host)."""
    return 2 * sum(param_bytes) + (4 * len(param_bytes) if kind == "single" else 0)


def optimizer_transient(kind: str, param_bytes: tuple[int, ...]) -> int:
    """Scratch memory of one AdamW step. CPU runs the per-parameter loop, whose largest
    temporaries are sqrt(v) and its quotient for one parameter; CUDA runs the foreach path,
    which holds sqrt(v) for all parameters at once."""
    if not param_bytes:
        return 0
    return 2 * max(param_bytes) if kind == "single" else sum(param_bytes)


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
        # Every unit above the first fused slot reads streams that a layer wrote.
        with sim.autocast():
            layer_out = backbone.run_plain_slot(top, inputs[top])

        def plain(streams):
            return backbone.run_plain_slot(top, streams)

        def fused_cost(cfg: SlotConfig, first: bool) -> UnitCost:
            slot = FusionSlot(d_text, d_image, cfg)

            def run(streams):
                return slot(streams, backbone.text_layer_fn(top), backbone.image_layer_fn(top))

            return sim.link(run, inputs[top] if first else layer_out, slot.parameters(),
                            inputs_need_grad=not first)

        _check_stream_dtypes(inputs, layer_out)
        configs = slot_configs_of_space(space, mapping_hidden)
        heads = TwoHeads(d_text, d_image, num_classes)
        profile = MemoryProfile(
            key=key, num_slots=backbone.num_slots, mapping_hidden=mapping_hidden,
            static=static, granule=sim.granule,
            runtime=CUDA_CUBLAS_WORKSPACES if device == "cuda" else 0,
            optimizer=sim.optimizer,
            prefix=prefix,
            plain=sim.link(plain, layer_out, [], inputs_need_grad=True),
            fused={config_key(c): fused_cost(c, first=False) for c in configs},
            first_fused={config_key(c): fused_cost(c, first=True) for c in configs},
            heads=sim.heads(heads, layer_out, inputs_need_grad=True),
            heads_only=sim.heads(heads, inputs[backbone.num_slots], inputs_need_grad=False),
            full_finetune=0)
        # Last: it makes every (fake) weight trainable.
        profile.full_finetune = sim.full_finetune(num_classes) + profile.runtime
    return profile


def _check_stream_dtypes(inputs: dict[int, Streams], layer_out: Streams) -> None:
    """Unit costs are simulated once per kind, on streams of one dtype: all slots must agree."""
    want = (layer_out.text.dtype, layer_out.image.dtype)
    for slot, streams in inputs.items():
        if (streams.text.dtype, streams.image.dtype) != want:
            raise AutopmfError(
                f"memory profile: streams entering slot {slot} are {streams.text.dtype}/"
                f"{streams.image.dtype} but layers output {want[0]}/{want[1]}; this encoder "
                "pair is not supported by the memory model")
