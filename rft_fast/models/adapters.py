"""TORA robust adapters for ViT backbones (Li & Xu, "Trade-off between Robustness and Accuracy of Vision
Transformers", CVPR 2023): a frozen ViT with, after the MLP of every block, an accuracy adapter psi_A, a
robustness adapter psi_R and a gated fusion phi; learnable [ACC] / [ROB] tokens; two heads.

    model = models.create("vit_small_patch16_224.augreg_in1k", 10, pretrained_path=...)
    tora_model = tora(model, bottleneck=64)
    logits = tora_model(x)                   # 0.5 f_ACC([ACC]_L) + 0.5 f_ROB([ROB]_L), learned gate
    rob = tora_model.view("rob")             # an nn.Module: gate forced to psi_R, output f_ROB
    attack(rob, x, y); criterion(rob, x, y)  # attacks and losses work unchanged on a view

Per block l (h: the block's output tokens, which include the backbone's own class/register tokens):
    psi(h) = h + W_up GELU(W_down LN(h))                        (W_up zero-initialized: psi = identity)
    s_k = <W_q h, W_k psi_k(h)> / sqrt(fusion_dim), k in {A, R}; g = softmax_k(s)   (per token)
    next input = g_A psi_A(h) + g_R psi_R(h)                    (forced paths: g = (1, 0) or (0, 1))
[ACC] goes through psi_A only and [ROB] through psi_R only. Both start as a copy of the class token (position
embedding included) and, in attention, take the class token's place: each attends to itself and the non-class
tokens; the backbone's own tokens never attend to them. So with zero adapters and the "acc" path the [ACC]
token equals the backbone's class token at every depth and the "acc" output equals the backbone's (f_ACC
starts as a copy of the backbone's head). Everything the backbone owns is frozen (requires_grad False, eval
mode); only adapters, fusion, tokens and the two heads train.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass

import torch
from timm.models.vision_transformer import Block, VisionTransformer
from torch import Tensor, nn

from rft_fast.checks import is_int
from rft_fast.models.wrapper import Normalized

PATHS = ("acc", "rob", "fused")


class Adapter(nn.Module):
    """Residual bottleneck MLP: h + up(GELU(down(LN(h)))), `up` zero-initialized so it starts as the identity."""

    def __init__(self, dim: int, bottleneck: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.down = nn.Linear(dim, bottleneck)
        self.act = nn.GELU()
        self.up = nn.Linear(bottleneck, dim)
        nn.init.zeros_(self.up.weight)
        nn.init.zeros_(self.up.bias)

    def forward(self, h: Tensor) -> Tensor:
        return h + self.up(self.act(self.down(self.norm(h))))


class GatedFusion(nn.Module):
    """phi: per-token gate g = softmax over {A, R} of <q(h), k(psi_k(h))> / sqrt(d); returns g_A a + g_R r.

    The query projection is zero-initialized, so the gate starts at (0.5, 0.5) when phase 2 begins.
    """

    def __init__(self, dim: int, fusion_dim: int) -> None:
        super().__init__()
        self.query = nn.Linear(dim, fusion_dim)
        self.key = nn.Linear(dim, fusion_dim)
        self.scale = 1.0 / math.sqrt(fusion_dim)
        nn.init.zeros_(self.query.weight)
        nn.init.zeros_(self.query.bias)

    def gate(self, h: Tensor, a: Tensor, r: Tensor) -> Tensor:
        """[..., 2] weights of (a, r), summing to 1 over the last axis."""
        q = self.query(h)
        scores = torch.stack(((q * self.key(a)).sum(-1), (q * self.key(r)).sum(-1)), dim=-1) * self.scale
        return scores.softmax(dim=-1)

    def forward(self, h: Tensor, a: Tensor, r: Tensor) -> Tensor:
        g = self.gate(h, a, r).to(a.dtype)
        return g[..., :1] * a + g[..., 1:] * r


@dataclass(frozen=True)
class ToraParams:
    """Parameter counts of a TORA model: all of them, the frozen backbone's, and each trainable part."""

    total: int
    backbone: int
    acc: int  # psi_A of every block + [ACC] + f_ACC: phase 1 (clean CE)
    rob: int  # psi_R of every block + [ROB] + f_ROB: phase 1 (robust loss)
    fusion: int  # phi of every block: phase 2

    @property
    def phase1(self) -> int:
        return self.acc + self.rob

    @property
    def phase2(self) -> int:
        return self.fusion


class ToraViT(nn.Module):
    """A frozen timm ViT inside `Normalized`, plus TORA's adapters, fusion, [ACC]/[ROB] tokens and heads.

    forward(x, path="fused") takes [0,1] images [N, 3, H, W]. path "acc": gate forced to psi_A, logits f_ACC;
    "rob": gate forced to psi_R, logits f_ROB; "fused": learned gate, 0.5 f_ACC + 0.5 f_ROB. A forced path
    computes only its own adapter and token. `view(path)` wraps a path as a module for attacks and losses.
    Attributes: `base` (the Normalized model, frozen), `spec`, `num_classes`, `bottleneck`, `fusion_dim`,
    `adapters_acc`, `adapters_rob`, `fusion` (ModuleLists, one entry per block), `acc_token`, `rob_token`,
    `head_acc`, `head_rob`.
    """

    def __init__(self, model: Normalized, bottleneck: int, fusion_dim: int) -> None:
        super().__init__()
        vit: VisionTransformer = model.backbone
        dim, depth = vit.embed_dim, len(vit.blocks)
        self.base = model
        self.spec = model.spec
        self.num_classes = model.num_classes
        self.bottleneck, self.fusion_dim = bottleneck, fusion_dim
        for p in model.parameters():
            p.requires_grad_(False)
        like = {"device": vit.cls_token.device, "dtype": vit.cls_token.dtype}
        self.adapters_acc = nn.ModuleList(Adapter(dim, bottleneck) for _ in range(depth)).to(**like)
        self.adapters_rob = nn.ModuleList(Adapter(dim, bottleneck) for _ in range(depth)).to(**like)
        self.fusion = nn.ModuleList(GatedFusion(dim, fusion_dim) for _ in range(depth)).to(**like)
        cls = vit.cls_token.detach().clone()
        if vit.pos_embed is not None and not vit.no_embed_class:
            cls = cls + vit.pos_embed[:, :1].detach()
        self.acc_token = nn.Parameter(cls.clone())
        self.rob_token = nn.Parameter(cls.clone())
        self.head_acc = copy.deepcopy(vit.get_classifier()).requires_grad_(True)
        self.head_rob = copy.deepcopy(vit.get_classifier()).requires_grad_(True)
        self.base.eval()

    # ------------------------------------------------------------------ parts
    def acc_parameters(self) -> list[nn.Parameter]:
        """psi_A, [ACC] and f_ACC: what phase 1 trains with clean cross-entropy."""
        return [*self.adapters_acc.parameters(), self.acc_token, *self.head_acc.parameters()]

    def rob_parameters(self) -> list[nn.Parameter]:
        """psi_R, [ROB] and f_ROB: what phase 1 trains with the robust loss."""
        return [*self.adapters_rob.parameters(), self.rob_token, *self.head_rob.parameters()]

    def fusion_parameters(self) -> list[nn.Parameter]:
        """phi of every block: what phase 2 trains."""
        return list(self.fusion.parameters())

    def param_counts(self) -> ToraParams:
        count = lambda ps: sum(p.numel() for p in ps)  # noqa: E731
        return ToraParams(
            total=count(self.parameters()),
            backbone=count(self.base.parameters()),
            acc=count(self.acc_parameters()),
            rob=count(self.rob_parameters()),
            fusion=count(self.fusion_parameters()),
        )

    def train(self, mode: bool = True) -> ToraViT:
        """The frozen backbone stays in eval mode (its dropout, drop-path and statistics are not trained)."""
        super().train(mode)
        self.base.eval()
        return self

    def view(self, path: str) -> nn.Module:
        """An nn.Module computing `self(x, path=path)`: hand it to attacks, losses and evaluation."""
        _check_path(path)
        return _PathView(self, path)

    # ------------------------------------------------------------------ forward
    def forward(self, x: Tensor, path: str = "fused") -> Tensor:
        _check_path(path)
        vit: VisionTransformer = self.base.backbone
        x = (x - self.base.mean.to(x.dtype)) / self.base.std.to(x.dtype)
        h = vit.norm_pre(vit.patch_drop(vit._pos_embed(vit.patch_embed(x))))
        n, tokens = h.shape[1], []
        if path != "rob":
            tokens.append(self.acc_token)
        if path != "acc":
            tokens.append(self.rob_token)
        h = torch.cat([h, *(t.to(h.dtype).expand(h.shape[0], -1, -1) for t in tokens)], dim=1)
        mask = _task_token_mask(n, len(tokens), h.device)
        for blk, psi_a, psi_r, phi in zip(vit.blocks, self.adapters_acc, self.adapters_rob, self.fusion):
            h = blk(h, attn_mask=mask)
            body, extra = h[:, :n], h[:, n:]
            if path == "acc":
                h = psi_a(h)
            elif path == "rob":
                h = psi_r(h)
            else:
                h = torch.cat((phi(body, psi_a(body), psi_r(body)), psi_a(extra[:, :1]), psi_r(extra[:, 1:])), dim=1)
        h = vit.norm(h)
        outs = []
        if path != "rob":
            outs.append(self.head_acc(vit.head_drop(vit.fc_norm(h[:, n]))))
        if path != "acc":
            outs.append(self.head_rob(vit.head_drop(vit.fc_norm(h[:, -1]))))
        return outs[0] if len(outs) == 1 else 0.5 * outs[0] + 0.5 * outs[1]

    def extra_repr(self) -> str:
        return f"spec={self.spec.name!r}, bottleneck={self.bottleneck}, fusion_dim={self.fusion_dim}"


class _PathView(nn.Module):
    """model(x) = tora(x, path): a ToraViT with one path fixed, as a module (parameters, modes, devices shared)."""

    def __init__(self, tora_model: ToraViT, path: str) -> None:
        super().__init__()
        self.tora = tora_model
        self.path = path

    def forward(self, x: Tensor) -> Tensor:
        return self.tora(x, path=self.path)

    def extra_repr(self) -> str:
        return f"path={self.path!r}"


def _task_token_mask(n: int, extra: int, device: torch.device) -> Tensor:
    """Boolean attention mask [n + extra, n + extra], True = may attend. The backbone's n tokens attend only to
    each other; each task token attends to itself and to tokens 1..n-1 (everything but the class token at 0),
    i.e. it sits exactly where the class token sits in the backbone's own attention."""
    size = n + extra
    mask = torch.zeros(size, size, dtype=torch.bool, device=device)
    mask[:n, :n] = True
    mask[n:, 1:n] = True
    idx = torch.arange(n, size, device=device)
    mask[idx, idx] = True
    return mask


def _check_path(path: str) -> None:
    if path not in PATHS:
        raise ValueError(f"path must be one of {list(PATHS)}, got {path!r}")


def supported(model: nn.Module) -> str:
    """ "" when `tora` can wrap `model`, else the reason it cannot."""
    if not isinstance(model, Normalized):
        return f"tora() takes a Normalized model (from models.create), got {type(model).__name__}"
    vit = model.backbone
    name = f"{model.spec.name!r} (timm {model.spec.timm_name!r})"
    if type(vit).__name__ == "Eva":
        return (
            f"backbone {name} is not supported by TORA adapters yet: EVA-02 rotates the patch tokens (RoPE) "
            "and pools by mean, which the [ACC]/[ROB] class-token scheme does not cover"
        )
    if not isinstance(vit, VisionTransformer):
        return (
            f"backbone {name} is not supported by TORA adapters: it needs a timm VisionTransformer "
            f"(vit_*, deit_*), got {type(vit).__name__}"
        )
    if vit.cls_token is None or vit.global_pool != "token" or vit.attn_pool is not None:
        return f"backbone {name} is not supported by TORA adapters: it needs class-token pooling (global_pool='token')"
    if not all(type(b) is Block for b in vit.blocks):
        return f"backbone {name} is not supported by TORA adapters: its blocks are not timm's standard Block"
    return ""


def tora(model: Normalized, *, bottleneck: int = 64, fusion_dim: int = 64) -> ToraViT:
    """Wraps a ViT-family `Normalized` model (vit_*, deit_*) as a ToraViT; its weights are shared and frozen.

    bottleneck: hidden width of each adapter; fusion_dim: width of the fusion's query/key projections.
    Unsupported backbones (EVA-02, conv nets, ViTs without class-token pooling) raise a ValueError.
    """
    reason = supported(model)
    if reason:
        raise ValueError(reason)
    for name, value in (("bottleneck", bottleneck), ("fusion_dim", fusion_dim)):
        if not is_int(value) or value < 1:
            raise ValueError(f"{name} must be an int >= 1, got {value!r}")
    return ToraViT(model, bottleneck, fusion_dim)
