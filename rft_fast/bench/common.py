"""What every benchmark shares: timing, copy bandwidth, the environment record, a table printer."""

from __future__ import annotations

import datetime
import platform
import statistics
import time
from collections.abc import Callable, Sequence

import torch

from rft_fast import ops


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def synced(fn: Callable[[], object], device: torch.device) -> Callable[[], None]:
    """fn followed by a device synchronization, so that a timer sees the kernels' time, not their launch."""

    def run() -> None:
        fn()
        _sync(device)

    return run


def time_fn(fn: Callable[[], object], device: torch.device, *, min_reps: int = 3, min_seconds: float = 0.3) -> float:
    """Median seconds of fn() over at least min_reps runs and min_seconds total, after one warm-up."""
    fn()
    _sync(device)
    times: list[float] = []
    start = time.perf_counter()
    while len(times) < min_reps or time.perf_counter() - start < min_seconds:
        t0 = time.perf_counter()
        fn()
        _sync(device)
        times.append(time.perf_counter() - t0)
        if len(times) >= 200:
            break
    return statistics.median(times)


def copy_bandwidth(numel: int, dtype: torch.dtype, device: torch.device) -> float:
    """GB/s of y.copy_(x) for `numel` elements (bytes read + written)."""
    src = torch.rand(numel, device=device).to(dtype)
    dst = torch.empty_like(src)
    seconds = time_fn(lambda: dst.copy_(src), device)
    return 2 * numel * src.element_size() / seconds / 1e9


def environment(device: torch.device, command: str) -> dict[str, object]:
    """Device, versions, date and command, stored with every benchmark result."""
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else (platform.processor() or platform.machine())
    try:
        import triton

        triton_version = triton.__version__
    except ImportError:
        triton_version = None
    return {
        "device": name,
        "device_type": device.type,
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "triton": triton_version,
        "cuda": torch.version.cuda,
        "python": platform.python_version(),
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "command": command,
        "backends": ops.backends(device),
    }


def format_table(
    meta: dict[str, object], rows: Sequence[dict[str, object]], columns: Sequence[tuple[str, str, str]]
) -> str:
    """A fixed-width table: columns are (key, header, format spec such as '>9.3f' or '<10')."""
    head = f"device: {meta['device']} ({meta['device_type']}, {meta['threads']} threads)  torch {meta['torch']}"
    widths = [max(len(h), int("".join(c for c in spec.split(".")[0] if c.isdigit()) or 0)) for _, h, spec in columns]
    header = " ".join(h.rjust(w) if ">" in spec else h.ljust(w) for (_, h, spec), w in zip(columns, widths))
    lines = [head, header, "-" * len(header)]
    for r in rows:
        cells = []
        for (key, _, spec), w in zip(columns, widths):
            v = r[key]
            text = (
                "-"
                if v is None
                else "x".join(map(str, v))
                if isinstance(v, (tuple, list))
                else format(v, spec.lstrip("<>"))
            )
            cells.append(text.rjust(w) if ">" in spec else text.ljust(w))
        lines.append(" ".join(cells))
    return "\n".join(lines)


def make_model(name: str, image_size: int, num_classes: int, device: torch.device) -> torch.nn.Module:
    """A randomly initialized timm model in train mode (benchmarks need no weights); ViT-like models get img_size."""
    import timm

    kwargs = {"img_size": image_size} if any(k in name for k in ("vit", "deit", "eva", "swin")) else {}
    return timm.create_model(name, pretrained=False, num_classes=num_classes, **kwargs).to(device).train()
