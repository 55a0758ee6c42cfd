"""The backbone registry: the study's 40 backbones as one table of data, any other timm name derived from timm,
plus lookup, filters and listing.

Metadata (architecture type, size class, pretraining, resolution, mean/std, where the weights come from) is data
in `_TABLE`; nothing here branches on a model name. Parameter counts are not stored: `num_params` derives them
from the model itself (built on the meta device), so they cannot drift from what `create` builds.

A name that is neither registered nor an alias is looked up in timm (`timm_spec`): mean/std, resolution and hub
id come from timm's pretrained config, the architecture type and size class from the network, the pretraining
is "unknown". Its name is timm's canonical `arch.tag`: a bare architecture is spelled with the tag it resolves
to (`resnet18` -> `resnet18.a1_in1k`), so run ids and the results store name the weights actually used, and a
timm id that a study entry already carries (`resnet50` -> `resnet50.a1_in1k`) is that study entry.
"""

from __future__ import annotations

import difflib
import fnmatch
import functools
from dataclasses import dataclass

from rft_fast.models import timm_names
from rft_fast.models.timm_names import build_timm, count_params  # noqa: F401 (build_timm: re-exported)

UNKNOWN = "unknown"  # what a timm name's derived arch / size / pretraining says when it cannot be told
ARCHS = ("convolutional", "attention", "hybrid")
SIZES = ("small", "medium", "large")  # the study's classes: < 20M, 20-50M, >= 50M parameters
PRETRAININGS = (
    "supervised",
    "supervised (multi-step)",
    "supervised (robust)",
    "self-supervised",
    "self-supervised multimodal",
    "fusion",
)
CHECKPOINT_FORMATS = ("timm", "madry", "singh")

IMAGENET = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
INCEPTION = ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5))
CLIP = ((0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711))
UNIT = ((0.0, 0.0, 0.0), (1.0, 1.0, 1.0))  # MobileViT (cvnets) takes [0,1] images as they are


@dataclass(frozen=True, kw_only=True)
class BackboneSpec:
    """Everything the toolkit knows about one backbone; plain data, no behaviour.

    `name` is the study's name (what users type), `timm_name` the architecture given to `timm.create_model`
    and `pretrained_tag` the timm weight tag (None for the robust checkpoints, which come from elsewhere).
    `hub_id` is the Hugging Face repository timm loads the tag's weights from (None: no hub carries them, a
    local file is needed); `study` marks the study's 40 entries. `arch`, `size` and `pretraining` may be
    "unknown" (a timm name whose metadata cannot be derived).
    `input_size` is the pretrained resolution (timm's cfg); `mean`/`std` are applied inside the model by
    `Normalized`, so every image the toolkit handles stays in [0,1]. `weights` says, for a human, which file
    `create(pretrained_path=...)` expects and where it comes from; `checkpoint_format` says how to read it.
    """

    name: str
    timm_name: str
    arch: str
    size: str
    pretraining: str
    pretrained_tag: str | None = None
    input_size: int = 224
    mean: tuple[float, float, float] = IMAGENET[0]
    std: tuple[float, float, float] = IMAGENET[1]
    weights: str = ""
    checkpoint_format: str = "timm"
    aliases: tuple[str, ...] = ()
    notes: str = ""
    hub_id: str | None = None
    study: bool = False

    def __post_init__(self) -> None:
        for field, value, allowed in (
            ("arch", self.arch, (*ARCHS, UNKNOWN)),
            ("size", self.size, (*SIZES, UNKNOWN)),
            ("pretraining", self.pretraining, (*PRETRAININGS, UNKNOWN)),
            ("checkpoint_format", self.checkpoint_format, CHECKPOINT_FORMATS),
        ):
            _check_choice(field, value, allowed)
        if not isinstance(self.input_size, int) or self.input_size < 1:
            raise ValueError(f"input_size must be a positive int, got {self.input_size!r}")
        for field in ("mean", "std"):
            value = getattr(self, field)
            if len(value) != 3:
                raise ValueError(f"{field} must have 3 entries (RGB), got {value!r}")
        if min(self.std) <= 0:
            raise ValueError(f"std must be positive, got {self.std!r}")
        if isinstance(self.aliases, str):
            raise ValueError(f"aliases must be a tuple of names, got the string {self.aliases!r}")

    @property
    def timm_id(self) -> str:
        """`timm_name.tag` as timm lists it (the plain architecture name when there is no tag)."""
        return f"{self.timm_name}.{self.pretrained_tag}" if self.pretrained_tag else self.timm_name


def _check_choice(argument: str, value: object, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise ValueError(f"{argument} must be one of {', '.join(map(repr, allowed))}; got {value!r}")


_HF = "Hugging Face {hub_id} (hub weights; a local file with pretrained_path)"
_SINGH = "Singh et al. 2023 (github: nmndeep/revisiting-at): {file}"
_ROBUST = "Linf 4/255 adversarial training on ImageNet"
_AT_224 = "pretrained at 256 px; the study fine-tunes at 224 ({} takes any input size)"
_CLIP_TOWER = "open_clip ConvNeXt-Base-w image tower, carried by timm as {}; " + _AT_224.format("a conv net")
_OTHER_HUB = "the study took {} from another hub; timm's {} is the equivalent registered here"

# The study's 40 backbones, in the order of docs/study.md, "The 40 backbones". Two lines a row:
#   (name, timm_name, pretrained_tag,
#    arch, size, pretraining, input_size, (mean, std), weights, checkpoint_format, aliases, notes)
# weights=None means the timm Hugging Face file of that tag (hub_id from timm's pretrained config).
# fmt: off
_TABLE: tuple[tuple, ...] = (
    # convolutional (16)
    ("convnext_base.fb_in1k", "convnext_base", "fb_in1k",
     "convolutional", "large", "supervised", 224, IMAGENET, None, "timm", (), ""),
    ("convnext_base.fb_in22k", "convnext_base", "fb_in22k",
     "convolutional", "large", "supervised", 224, IMAGENET, None, "timm", (), ""),
    ("convnext_base.fb_in22k_ft_in1k", "convnext_base", "fb_in22k_ft_in1k",
     "convolutional", "large", "supervised (multi-step)", 224, IMAGENET, None, "timm", (), ""),
    ("convnext_base.clip_laion2b_augreg_ft_in12k_in1k", "convnext_base", "clip_laion2b_augreg_ft_in12k_in1k",
     "convolutional", "large", "fusion", 256, CLIP, None, "timm", (), _AT_224.format("a conv net")),
    ("convnext_tiny.fb_in1k", "convnext_tiny", "fb_in1k",
     "convolutional", "medium", "supervised", 224, IMAGENET, None, "timm", (), ""),
    ("convnext_tiny.fb_in22k", "convnext_tiny", "fb_in22k",
     "convolutional", "medium", "supervised", 224, IMAGENET, None, "timm", (), ""),
    ("convnext_tiny.fb_in22k_ft_in1k", "convnext_tiny", "fb_in22k_ft_in1k",
     "convolutional", "medium", "supervised (multi-step)", 224, IMAGENET, None, "timm", (), ""),
    ("clip_convnext_base_w.laion2b_s13b_b82k", "convnext_base", "clip_laion2b",
     "convolutional", "large", "self-supervised multimodal", 256, CLIP, None, "timm",
     ("CLIP-convnext_base_w-laion2B-s13B-b82K", "convnext_base.clip_laion2b"),
     _CLIP_TOWER.format("convnext_base.clip_laion2b")),
    ("clip_convnext_base_w.laion_aesthetic_s13b_b82k", "convnext_base", "clip_laiona",
     "convolutional", "large", "self-supervised multimodal", 256, CLIP, None, "timm",
     ("CLIP-convnext_base_w-laion_aesthetic-s13B-b82K", "convnext_base.clip_laiona"),
     _CLIP_TOWER.format("convnext_base.clip_laiona")),
    ("resnet50.a1_in1k", "resnet50", "a1_in1k",
     "convolutional", "medium", "supervised", 224, IMAGENET, None, "timm", (), ""),
    ("robust_resnet50", "resnet50", None,
     "convolutional", "medium", "supervised (robust)", 224, IMAGENET,
     "Madry lab robustness (github: MadryLab/robustness): imagenet_linf_4.pt", "madry", (), _ROBUST),
    ("robust_convnext_base", "convnext_base", None,
     "convolutional", "large", "supervised (robust)", 224, IMAGENET,
     _SINGH.format(file="weights_convnext_base.pt"), "singh", (), _ROBUST),
    ("robust_convnext_tiny", "convnext_tiny", None,
     "convolutional", "medium", "supervised (robust)", 224, IMAGENET,
     _SINGH.format(file="weights_convnext_t.pt"), "singh", (), _ROBUST),
    ("regnetx_004.pycls_in1k", "regnetx_004", "pycls_in1k",
     "convolutional", "small", "supervised", 224, IMAGENET, None, "timm", (), ""),
    ("efficientnet_b0.ra_in1k", "efficientnet_b0", "ra_in1k",
     "convolutional", "small", "supervised", 224, IMAGENET, None, "timm", ("efficientnet-b0", "efficientnet_b0"),
     _OTHER_HUB.format("EfficientNet-B0", "efficientnet_b0.ra_in1k")),
    ("mobilenetv3_large_100.ra_in1k", "mobilenetv3_large_100", "ra_in1k",
     "convolutional", "small", "supervised", 224, IMAGENET, None, "timm", (), ""),
    # attention (18)
    ("vit_base_patch16_224.augreg_in1k", "vit_base_patch16_224", "augreg_in1k",
     "attention", "large", "supervised", 224, INCEPTION, None, "timm", (), ""),
    ("vit_base_patch16_224.augreg_in21k", "vit_base_patch16_224", "augreg_in21k",
     "attention", "large", "supervised", 224, INCEPTION, None, "timm", (), ""),
    ("vit_base_patch16_224.augreg_in21k_ft_in1k", "vit_base_patch16_224", "augreg_in21k_ft_in1k",
     "attention", "large", "supervised (multi-step)", 224, INCEPTION, None, "timm", (), ""),
    ("vit_base_patch16_224.mae", "vit_base_patch16_224", "mae",
     "attention", "large", "self-supervised", 224, IMAGENET, None, "timm", (), ""),
    ("vit_base_patch16_clip_224.laion2b", "vit_base_patch16_clip_224", "laion2b",
     "attention", "large", "self-supervised multimodal", 224, CLIP, None, "timm", (), ""),
    ("vit_base_patch16_clip_224.laion2b_ft_in1k", "vit_base_patch16_clip_224", "laion2b_ft_in1k",
     "attention", "large", "fusion", 224, CLIP, None, "timm", (), ""),
    ("vit_small_patch16_224.augreg_in1k", "vit_small_patch16_224", "augreg_in1k",
     "attention", "medium", "supervised", 224, INCEPTION, None, "timm", (), ""),
    ("vit_small_patch16_224.augreg_in21k", "vit_small_patch16_224", "augreg_in21k",
     "attention", "medium", "supervised", 224, INCEPTION, None, "timm", (), ""),
    ("vit_small_patch16_224.augreg_in21k_ft_in1k", "vit_small_patch16_224", "augreg_in21k_ft_in1k",
     "attention", "medium", "supervised (multi-step)", 224, INCEPTION, None, "timm", (), ""),
    ("vit_small_patch16_224.dino", "vit_small_patch16_224", "dino",
     "attention", "medium", "self-supervised", 224, IMAGENET, None, "timm", (), ""),
    ("deit_small_patch16_224.fb_in1k", "deit_small_patch16_224", "fb_in1k",
     "attention", "medium", "supervised", 224, IMAGENET, None, "timm", (), ""),
    ("deit_tiny_patch16_224.fb_in1k", "deit_tiny_patch16_224", "fb_in1k",
     "attention", "small", "supervised", 224, IMAGENET, None, "timm", (), ""),
    ("eva02_base_patch14_224.mim_in22k", "eva02_base_patch14_224", "mim_in22k",
     "attention", "large", "self-supervised", 224, CLIP, None, "timm", (), ""),
    ("eva02_tiny_patch14_224.mim_in22k", "eva02_tiny_patch14_224", "mim_in22k",
     "attention", "medium", "self-supervised", 224, CLIP, None, "timm", (),
     "size class 'medium' as in the study, whose table lists 24M parameters; the timm model has ~5.5M"),
    ("swin_base_patch4_window7_224.ms_in22k_ft_in1k", "swin_base_patch4_window7_224", "ms_in22k_ft_in1k",
     "attention", "large", "supervised (multi-step)", 224, IMAGENET, None, "timm", (), ""),
    ("swin_tiny_patch4_window7_224.ms_in1k", "swin_tiny_patch4_window7_224", "ms_in1k",
     "attention", "medium", "supervised", 224, IMAGENET, None, "timm", (), ""),
    ("robust_vit_base_patch16_224", "vit_base_patch16_224", None,
     "attention", "large", "supervised (robust)", 224, IMAGENET,
     _SINGH.format(file="weights_vit_b_50_ep.pt"), "singh", (), _ROBUST),
    ("robust_deit_small_patch16_224", "deit_small_patch16_224", None,
     "attention", "medium", "supervised (robust)", 224, IMAGENET,
     _SINGH.format(file="weights_vit_s.pt"), "singh", (), _ROBUST),
    # hybrid (6)
    ("coatnet_0_rw_224.sw_in1k", "coatnet_0_rw_224", "sw_in1k",
     "hybrid", "medium", "supervised", 224, INCEPTION, None, "timm", (), ""),
    ("coatnet_2_rw_224.sw_in12k", "coatnet_2_rw_224", "sw_in12k",
     "hybrid", "large", "supervised", 224, INCEPTION, None, "timm", (), ""),
    ("coatnet_2_rw_224.sw_in12k_ft_in1k", "coatnet_2_rw_224", "sw_in12k_ft_in1k",
     "hybrid", "large", "supervised (multi-step)", 224, INCEPTION, None, "timm", (), ""),
    ("coat_tiny.in1k", "coat_tiny", "in1k",
     "hybrid", "small", "supervised", 224, IMAGENET, None, "timm", (), ""),
    ("edgenext_small.usi_in1k", "edgenext_small", "usi_in1k",
     "hybrid", "small", "supervised", 256, IMAGENET, None, "timm", (), _AT_224.format("EdgeNeXt")),
    ("mobilevit_s.cvnets_in1k", "mobilevit_s", "cvnets_in1k",
     "hybrid", "small", "supervised", 256, UNIT, None, "timm", ("mobilevit-small", "mobilevit_s"),
     _OTHER_HUB.format("Apple MobileViT-small", "mobilevit_s.cvnets_in1k")
     + "; " + _AT_224.format("MobileViT")),
)
# fmt: on


def _hub_id(timm_id: str) -> str | None:
    cfg = timm_names.pretrained_cfg(timm_id)
    return None if cfg is None else cfg.get("hf_hub_id")


def _spec(row: tuple) -> BackboneSpec:
    name, timm_name, tag, arch, size, pretraining, input_size, (mean, std), weights, fmt, aliases, notes = row
    hub_id = _hub_id(f"{timm_name}.{tag}") if tag else None
    return BackboneSpec(
        name=name,
        timm_name=timm_name,
        pretrained_tag=tag,
        arch=arch,
        size=size,
        pretraining=pretraining,
        input_size=input_size,
        mean=mean,
        std=std,
        weights=weights or _HF.format(hub_id=hub_id),
        checkpoint_format=fmt,
        aliases=aliases,
        notes=notes,
        hub_id=hub_id,
        study=True,
    )


REGISTRY: dict[str, BackboneSpec] = {}


def register(spec: BackboneSpec) -> BackboneSpec:
    """Add a backbone (a user's own, or a tiny one for tests); its name and aliases must all be new.

    The architecture is not checked here (that needs timm to build it); `create` reports an unknown one.
    """
    if not isinstance(spec, BackboneSpec):
        raise TypeError(f"register() takes a BackboneSpec, got {type(spec).__name__}")
    taken = _names()
    clashes = [n for n in (spec.name, *spec.aliases) if n in taken]
    if clashes:
        owners = sorted({taken[n].name for n in clashes})
        names = ", ".join(map(repr, clashes))
        raise ValueError(f"backbone name(s) {names} already registered (by {', '.join(owners)})")
    REGISTRY[spec.name] = spec
    return spec


def _names() -> dict[str, BackboneSpec]:
    """Every name and alias -> its spec."""
    out: dict[str, BackboneSpec] = {}
    for spec in REGISTRY.values():
        for n in (spec.name, *spec.aliases):
            out[n] = spec
    return out


def get(name: str) -> BackboneSpec:
    """The spec of a backbone: a registered name or alias (exact, then case-insensitive), else any name timm
    knows (`timm_spec`). An unknown name is a ValueError listing close registered and timm names."""
    names = _names()
    if name in names:
        return names[name]
    folded = {n.lower(): spec for n, spec in names.items()}
    if isinstance(name, str) and name.lower() in folded:
        return folded[name.lower()]
    spec = timm_spec(name) if isinstance(name, str) else None
    if spec is not None:
        return spec
    close = difflib.get_close_matches(str(name).lower(), list(folded), n=6, cutoff=0.6)
    suggestions = list(dict.fromkeys(folded[c].name for c in close))[:3]
    prefix = str(name).partition(".")[0].lower()
    in_timm = timm_names.list_pretrained(f"{prefix}*") if prefix else []
    suggestions += [n for n in difflib.get_close_matches(str(name).lower(), in_timm, n=3) if n not in suggestions]
    hint = f"; did you mean: {', '.join(suggestions[:5])}?" if suggestions else ""
    raise ValueError(
        f"unknown backbone {name!r}{hint} (`rft-fast models` lists the registered ones, "
        "`rft-fast models list --timm PATTERN` timm's pretrained names)"
    )


def timm_spec(name: str) -> BackboneSpec | None:
    """The spec of timm name `name` (`arch.tag` or a bare architecture), None when timm does not know it.

    Resolved to timm's canonical `arch.tag` first; a registered entry with that timm id is returned as it is
    (the study's metadata win), anything else is derived from timm (`_derived`, cached).
    """
    timm_id = timm_names.canonical(name) or timm_names.canonical(name.lower())
    if timm_id is None:
        return None
    for spec in REGISTRY.values():
        if spec.pretrained_tag and spec.timm_id == timm_id:
            return spec
    return _derived(timm_id)


@functools.cache
def _derived(timm_id: str) -> BackboneSpec:
    """A backbone from timm alone: pretrained config for mean/std, resolution and hub id; the meta-device
    network for the architecture type and size class; pretraining "unknown"."""
    arch, _, tag = timm_id.partition(".")
    cfg = timm_names.pretrained_cfg(timm_id) or {}
    input_size = int((cfg.get("input_size") or (3, 224, 224))[-1])
    hub_id = cfg.get("hf_hub_id") or None
    return BackboneSpec(
        name=timm_id,
        timm_name=arch,
        pretrained_tag=tag or None,
        arch=timm_names.derived_arch(arch, input_size),
        size=timm_names.size_class(count_params(arch, input_size)),
        pretraining=UNKNOWN,
        input_size=input_size,
        mean=tuple(cfg.get("mean", IMAGENET[0])),
        std=tuple(cfg.get("std", IMAGENET[1])),
        weights=_HF.format(hub_id=hub_id) if hub_id else "no hub weights in timm: pass a local file (pretrained_path)",
        hub_id=hub_id,
        notes="derived from timm: arch from the module types, size from the parameter count",
    )


def list_timm(pattern: str = "*") -> list[str]:
    """timm's pretrained names (`arch.tag`) matching the fnmatch `pattern`; each is a valid backbone name."""
    return timm_names.list_pretrained(pattern)


def list_backbones(
    pattern: str = "*", *, arch: str | None = None, size: str | None = None, pretraining: str | None = None
) -> list[BackboneSpec]:
    """Registered backbones whose name matches the fnmatch `pattern` and every given filter, in registry order."""
    filters = (("arch", arch, ARCHS), ("size", size, SIZES), ("pretraining", pretraining, PRETRAININGS))
    for argument, value, allowed in filters:
        if value is not None:
            _check_choice(argument, value, allowed)
    return [
        s
        for s in REGISTRY.values()
        if fnmatch.fnmatchcase(s.name, pattern)
        and arch in (None, s.arch)
        and size in (None, s.size)
        and pretraining in (None, s.pretraining)
    ]


def num_params(spec_or_name: BackboneSpec | str) -> int:
    """Parameters of the backbone without its classifier (timm num_classes=0) at the spec's resolution.

    Built on the meta device (no memory, no init cost) and cached. Without the head the count does not depend on
    the task's number of classes; it is what the study's size classes refer to.
    """
    spec = spec_or_name if isinstance(spec_or_name, BackboneSpec) else get(spec_or_name)
    return count_params(spec.timm_name, spec.input_size)


def format_table(specs: list[BackboneSpec]) -> str:
    """A plain-text table of `specs` (what `rft-fast models` prints); "study" marks the study's 40 entries."""
    header = ("name", "study", "arch", "size", "params (M)", "pretraining", "resolution", "weights")
    rows = [
        (
            s.name,
            "yes" if s.study else "-",
            s.arch,
            s.size,
            f"{num_params(s) / 1e6:.1f}",
            s.pretraining,
            str(s.input_size),
            s.weights,
        )
        for s in specs
    ]
    widths = [max(len(r[i]) for r in (header, *rows)) for i in range(len(header) - 1)]
    lines = ["  ".join([*(c.ljust(w) for c, w in zip(r[:-1], widths)), r[-1]]).rstrip() for r in (header, *rows)]
    lines.insert(1, "-" * len(lines[0]))
    return "\n".join(lines)


for _row in _TABLE:
    register(_spec(_row))
