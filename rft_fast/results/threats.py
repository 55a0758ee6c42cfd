"""The threat registry: each evaluation threat is ONE entry, a ThreatSpec holding

  name      what evaluation settings, the CLI and the grid call it ("corruptions"), and `stored`, the value of the
            store's threat column ("corruption"; default the name);
  run       the function measuring it: run(ctx) with an rft_fast.eval.runs.ThreatContext (the model, the test
            subset, the settings, ctx.record(...) storing a row), or "module:function" naming one (imported when
            the threat first runs: the store needs the entry without importing evaluation);
  key       its KeyRule: which of the key columns eps / mode / corruption / severity its rows use and what
            values they hold (a Domain per column). The store's Python validation and its SQL CHECK constraints
            (rft_fast.results.schema) are both generated from these rules;
  expected  expected(settings) -> the RowKeys an evaluation with these settings stores: what "done" means (the
            grid's check, rft_fast.grid.status.missing_threats);
  default   whether it runs when the settings name no threats (smoothing-L2 is opt-in);
  check_row an extra check of a row's versions (smoothing rows must record CERTIFY's parameters).

Registration order is run order and the order rows are listed in. `register_threat(ThreatSpec(...))` adds one
(docs/extending.md); `unregister_threat(name)` takes it out again.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, NamedTuple

from rft_fast.checks import is_int, is_real
from rft_fast.registry import Registry
from rft_fast.study import NORMS, STUDY_EPS

SMOOTHING = "smoothing-L2"
ATTACKS = NORMS  # the AutoAttack threats, one per norm
MODES = ("standard", "fast")  # AutoAttack standard vs APGD-CE + APGD-T: attack rows only
NO_MODE = "-"  # the mode of clean and corruption rows
SIGMA_PREFIX = "sigma="  # the mode of smoothing rows: "sigma=0.25"
STUDY_CORRUPTION, STUDY_SEVERITY = "study", 3  # the study's aggregate: 11 corruption types at severity 3
# Sentinels of the key columns whose Python value is None (rft_fast.results.schema).
NONE_EPS, NONE_CORRUPTION, NONE_SEVERITY = -1.0, "", 0
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.+-]*")  # threat names go into SQL text: no quotes


class RowKey(NamedTuple):
    """The threat part of a row's key besides the threat itself."""

    eps: float | None = None
    corruption: str | None = None
    severity: int | None = None
    mode: str = NO_MODE


@dataclass(frozen=True)
class Domain:
    """What one key column holds for a threat: `sql`, its CHECK condition on the stored column (None is stored
    as the column's sentinel); `check(threat, value)`, the normalised value or a ValueError naming the column;
    `order`, an SQL expression this threat's rows sort by first (None: none)."""

    sql: str
    check: Callable[[str, Any], Any]
    order: str | None = None


def check_real(name: str, value: Any) -> float:
    if not is_real(value):
        raise ValueError(f"{name}: must be a finite number, got {value!r}")
    return float(value)


def check_integer(name: str, value: Any) -> int:
    if not is_int(value):
        raise ValueError(f"{name}: must be an integer, got {value!r}")
    return int(value)


def check_text(name: str, value: Any) -> str:
    if not isinstance(value, str) or not value:
        raise ValueError(f"{name}: must be a non-empty string, got {value!r}")
    return value


def smoothing_mode(sigma: float) -> str:
    """The mode of smoothing rows at noise level sigma (> 0): "sigma=0.25" (the float's shortest repr)."""
    if not is_real(sigma) or sigma <= 0:
        raise ValueError(f"sigma: must be a finite number > 0, got {sigma!r}")
    return f"{SIGMA_PREFIX}{float(sigma)!r}"


def smoothing_sigma(mode: str) -> float:
    """The sigma of a smoothing row's mode ("sigma=0.25" -> 0.25); ValueError naming `mode` otherwise."""
    text = mode[len(SIGMA_PREFIX) :] if isinstance(mode, str) and mode.startswith(SIGMA_PREFIX) else None
    try:
        sigma = float(text) if text is not None else math.nan
    except ValueError:
        sigma = math.nan
    if not math.isfinite(sigma) or sigma <= 0:
        raise ValueError(
            f"mode: threat {SMOOTHING} needs mode '{SIGMA_PREFIX}<sigma > 0>' (e.g. "
            f"{smoothing_mode(0.25)!r}), got {mode!r}"
        )
    return sigma


def _none(column: str) -> Callable[[str, Any], None]:
    def check(threat: str, value: Any) -> None:
        if value is not None:
            raise ValueError(f"{column}: must be None for threat {threat}, got {value!r}")

    return check


def _no_mode(threat: str, mode: Any) -> str:
    if mode != NO_MODE:
        raise ValueError(f"mode: must be {NO_MODE!r} for threat {threat}, got {mode!r}")
    return mode


def _positive_eps(threat: str, eps: Any) -> float:
    if eps is None or check_real("eps", eps) <= 0:
        raise ValueError(f"eps: threat {threat} needs eps > 0, got {eps!r}")
    return float(eps)


def _radius_or_none(threat: str, eps: Any) -> float | None:
    if eps is not None and check_real("eps", eps) < 0:
        raise ValueError(
            f"eps: threat {threat} needs eps = the certified radius >= 0 (or None for the "
            f"smoothed accuracy), got {eps!r}"
        )
    return None if eps is None else float(eps)


def _attack_mode(threat: str, mode: Any) -> str:
    if mode not in MODES:
        raise ValueError(f"mode: threat {threat} needs mode in {MODES}, got {mode!r}")
    return mode


def _level(threat: str, severity: Any) -> int:
    if severity is None or not 1 <= check_integer("severity", severity) <= 5:
        raise ValueError(f"severity: threat {threat} needs severity in 1..5, got {severity!r}")
    return int(severity)


_SIGMA_VALUE = f"CAST(substr(mode, {len(SIGMA_PREFIX) + 1}) AS REAL)"
# The domains of the built-in threats. A new threat reuses these or brings its own.
NO_EPS = Domain(f"eps = {NONE_EPS}", _none("eps"))
POSITIVE_EPS = Domain("eps > 0", _positive_eps)
RADIUS_OR_NONE = Domain(f"eps >= 0 OR eps = {NONE_EPS}", _radius_or_none)
NO_MODE_DOMAIN = Domain(f"mode = '{NO_MODE}'", _no_mode)
ATTACK_MODES = Domain(f"mode IN {MODES}", _attack_mode)
SIGMA_MODE = Domain(
    f"mode LIKE '{SIGMA_PREFIX}%'\nAND {_SIGMA_VALUE} > 0",
    lambda threat, mode: smoothing_mode(smoothing_sigma(mode)),
    order=_SIGMA_VALUE,
)
NO_CORRUPTION = Domain(f"corruption = '{NONE_CORRUPTION}'", _none("corruption"))
NAMED = Domain(f"corruption != '{NONE_CORRUPTION}'", lambda threat, value: check_text("corruption", value))
NO_SEVERITY = Domain(f"severity = {NONE_SEVERITY}", _none("severity"))
LEVEL = Domain("severity BETWEEN 1 AND 5", _level)
NONE_DOMAINS = {"eps": NO_EPS, "mode": NO_MODE_DOMAIN, "corruption": NO_CORRUPTION, "severity": NO_SEVERITY}


@dataclass(frozen=True)
class KeyRule:
    """The key columns a threat's rows use: a Domain per column, the column's "none" domain when unused."""

    eps: Domain = NO_EPS
    mode: Domain = NO_MODE_DOMAIN
    corruption: Domain = NO_CORRUPTION
    severity: Domain = NO_SEVERITY

    def normalise(self, threat: str, eps: Any, corruption: Any, severity: Any, mode: Any) -> dict[str, Any]:
        """The four columns checked (in the order eps, mode, corruption, severity) and normalised."""
        out = {"eps": self.eps.check(threat, eps), "mode": self.mode.check(threat, mode)}
        out["corruption"] = self.corruption.check(threat, corruption)
        out["severity"] = self.severity.check(threat, severity)
        return out


@dataclass(frozen=True)
class ThreatSpec:
    """One evaluation threat (the module docstring describes each field)."""

    name: str
    run: Callable[[Any], None] | str
    expected: Callable[[Any], Iterable[RowKey]]
    key: KeyRule = KeyRule()
    stored: str | None = None
    default: bool = True
    check_row: Callable[[Mapping[str, Any], str], None] | None = None

    @property
    def threat(self) -> str:
        """The value of the store's threat column for this threat's rows."""
        return self.stored or self.name

    def runner(self) -> Callable[[Any], None]:
        if callable(self.run):
            return self.run
        import importlib

        module, _, function = self.run.partition(":")
        return getattr(importlib.import_module(module), function)


REGISTRY: Registry[ThreatSpec] = Registry("threat")


def register_threat(spec: ThreatSpec, *, replace: bool = False) -> ThreatSpec:
    """Adds an evaluation threat; its stored name must be free (two threats never share rows)."""
    for name in (spec.name, spec.threat):
        if not isinstance(name, str) or not _NAME.fullmatch(name):
            raise ValueError(f"a threat name is letters, digits and _ . + - (no quotes or spaces), got {name!r}")
    clash = [n for n, s in REGISTRY.items() if s.threat == spec.threat and not (replace and n == spec.name)]
    if clash:
        raise ValueError(f"threat {spec.name!r}: stored name {spec.threat!r} is already threat {clash[0]!r}'s")
    return REGISTRY.register(spec.name, spec, replace=replace)


def unregister_threat(name: str) -> ThreatSpec:
    return REGISTRY.unregister(name)


def threat_specs() -> list[ThreatSpec]:
    """The registered threats in run order."""
    return [spec for _, spec in REGISTRY.items()]


def stored_threats() -> tuple[str, ...]:
    """The values the store's threat column may hold, in listing order."""
    return tuple(spec.threat for spec in threat_specs())


def stored_spec(threat: str) -> ThreatSpec:
    """The spec whose rows carry `threat` in the store's threat column; ValueError when none does."""
    for spec in threat_specs():
        if spec.threat == threat:
            return spec
    raise ValueError(f"threat: must be one of {stored_threats()}, got {threat!r}")


def stage_of(threat: str) -> str:
    """The evaluation threat (a name of EvalSettings.threats) a stored row of `threat` belongs to."""
    return stored_spec(threat).name


def expected_rows(name: str, settings: Any) -> set[tuple]:
    """The full keys (threat, eps, corruption, severity, mode) that evaluating threat `name` under `settings`
    stores."""
    spec = REGISTRY.get(name)
    return {(spec.threat, *row) for row in spec.expected(settings)}


def attack_eps(settings: Any, norm: str) -> float:
    """The radius the settings attack `norm` at (the study's when the settings give none)."""
    return settings.eps.get(norm, STUDY_EPS[norm])


def smoothing_params(versions: Mapping[str, Any], mode: str) -> None:
    """A smoothing row's versions must record CERTIFY's parameters, sigma matching the mode."""
    params = versions.get("smoothing")
    if not isinstance(params, Mapping):
        raise ValueError(
            f"versions: threat {SMOOTHING} needs versions['smoothing'] = {{'sigma', 'n0', 'n', "
            f"'alpha', ...}} (the CERTIFY parameters), got {params!r}"
        )
    missing = [k for k in ("sigma", "n0", "n", "alpha") if k not in params]
    if missing:
        raise ValueError(f"versions: versions['smoothing'] lacks {missing}")
    for k in ("n0", "n"):
        if not is_int(params[k]) or params[k] < 1:
            raise ValueError(f"versions: versions['smoothing']['{k}'] must be an int >= 1, got {params[k]!r}")
    alpha = params["alpha"]
    if not is_real(alpha, finite=False) or not 0 < alpha < 1:
        raise ValueError(f"versions: versions['smoothing']['alpha'] must be in (0, 1), got {alpha!r}")
    sigma = params["sigma"]
    if not is_real(sigma, finite=False) or float(sigma) != smoothing_sigma(mode):
        raise ValueError(f"versions: versions['smoothing']['sigma'] ({sigma!r}) must equal the mode's ({mode!r})")


# The built-in threats, in the study's order (the run functions are in rft_fast.eval.runs).
_RUNS = "rft_fast.eval.runs:"
register_threat(ThreatSpec("clean", _RUNS + "clean", lambda settings: [RowKey()]))
for _norm in ATTACKS:
    register_threat(
        ThreatSpec(
            _norm,
            _RUNS + "attack",
            lambda settings, norm=_norm: [RowKey(eps=float(attack_eps(settings, norm)), mode=settings.mode)],
            KeyRule(eps=POSITIVE_EPS, mode=ATTACK_MODES),
        )
    )
register_threat(
    ThreatSpec(
        "corruptions",
        _RUNS + "common_corruptions",
        lambda settings: (
            [RowKey(corruption=STUDY_CORRUPTION, severity=settings.severity)]
            if settings.corruption_setting == "study"
            else [RowKey(corruption="full", severity=s) for s in range(1, 6)]
        ),
        KeyRule(corruption=NAMED, severity=LEVEL),
        stored="corruption",
    )
)
register_threat(
    ThreatSpec(
        SMOOTHING,
        _RUNS + "smoothing",
        lambda settings: [
            RowKey(eps=r, mode=smoothing_mode(s))
            for s in settings.smoothing_sigmas
            for r in (None, *settings.smoothing_radii)
        ],
        KeyRule(eps=RADIUS_OR_NONE, mode=SIGMA_MODE),
        default=False,
        check_row=smoothing_params,
    )
)
del _norm
