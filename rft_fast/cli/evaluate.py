"""`rft-fast eval`: AutoAttack, common corruptions and (opt-in) randomized smoothing of one fine-tuned model,
each measurement stored when done (rft_fast.eval.entry: evaluate_checkpoint / evaluate_weights, the grid's entry
point too). The evaluation options are generated from EvalSettings (rft_fast.eval.settings)."""

from __future__ import annotations

import argparse
import sys

from rft_fast.cli.options import (
    REFUSED,
    Refused,
    default_cache,
    device_args,
    fraction,
    int_in,
    number_list,
    pick_device,
)


def threat_list(text: str) -> tuple[str, ...]:
    """An argparse type: comma-separated threats of the evaluation."""
    from rft_fast.eval.settings import all_threats

    known = all_threats()
    threats = tuple(t.strip() for t in text.split(",") if t.strip())
    unknown = [t for t in threats if t not in known]
    if unknown or not threats:
        raise argparse.ArgumentTypeError(f"threats must be a comma-separated subset of {','.join(known)}, got {text!r}")
    return threats


def _show_measurement(m) -> None:
    """One line per stored measurement while `rft-fast eval` runs."""
    if m.threat == "smoothing-L2":
        what = f"{m.mode} " + ("smoothed" if m.eps is None else f"r={m.eps:g}")
    else:
        what = m.corruption or m.eps or ""
    print(f"{m.threat:<12} {what:<18} {m.accuracy:.4f}", flush=True)


def _settings(args: argparse.Namespace):
    from rft_fast.eval.settings import EvalSettings
    from rft_fast.study import NORMS

    values = {name: getattr(args, name) for name in args.settings if name != "eps"}
    values["eps"] = {norm: getattr(args, _eps_dest(norm)) for norm in NORMS}
    if args.no_cache:
        values["cache_dir"] = None
    return EvalSettings(**values)


def _eval(args: argparse.Namespace) -> int:
    from rft_fast.eval.entry import evaluate_checkpoint, evaluate_weights, reason
    from rft_fast.results import Store, format_table

    device = pick_device(args)
    settings = _settings(args)
    if args.checkpoint is not None and (args.backbone or args.weights):
        raise Refused("give either a checkpoint or --backbone with --weights, not both")
    if args.checkpoint is None and not (args.backbone and args.weights and args.dataset):
        raise Refused("without a checkpoint, --backbone, --weights and --dataset are required")

    def on_failure(threat: str, error: Exception) -> None:
        print(f"{threat}: failed: {reason(error)}", file=sys.stderr, flush=True)

    shared = dict(device=device, progress=args.progress, on_result=_show_measurement, on_failure=on_failure)
    with Store(args.store) as store:
        if args.checkpoint is not None:
            outcome = evaluate_checkpoint(
                args.checkpoint, settings, store, run_id=args.run_id, data_root=args.data_root, **shared
            )
        else:
            outcome = evaluate_weights(
                args.backbone,
                args.weights,
                args.dataset,
                settings,
                store,
                image_size=args.image_size,
                data_root=args.data_root,
                loss=args.loss,
                protocol=args.protocol,
                run_id=args.run_id,
                **shared,
            )
    rows, failed = outcome.rows, outcome.failures
    if rows:
        print(format_table(rows))
    print(
        f"stored {len(rows)} measurements in {args.store} (run id {outcome.run.run_id})"
        + (f"; {len(failed)} threat(s) failed: " + "; ".join(f"{t}: {r}" for t, r in failed.items()) if failed else "")
    )
    return 1 if failed else 0


def _model_options(ev: argparse.ArgumentParser) -> None:
    ev.add_argument("checkpoint", nargs="?", help="run folder or checkpoint.pt written by `rft-fast train`")
    ev.add_argument("--backbone", help="registry name (with --weights: a fine-tuned state dict, head included)")
    ev.add_argument("--weights", help="fine-tuned weights file (.safetensors / .pth)")
    ev.add_argument("--dataset", help="dataset name (with --backbone)")
    ev.add_argument("--data-root", help="dataset root (default: the checkpoint's)")
    ev.add_argument("--image-size", type=int_in(8, 2048), default=224, help="with --backbone (default 224)")
    ev.add_argument("--loss", default="unknown", help="label stored with --backbone runs")
    ev.add_argument("--protocol", default="unknown", help="label stored with --backbone runs")
    ev.add_argument("--run-id", help="store key of this model (default: the config's hash, or the weights file name)")


def _eps_dest(norm: str) -> str:
    return "eps_" + norm.lower()


# argparse types by the rule's kind, or the field's own (the comma-separated lists); EvalSettings checks the ranges
_KINDS = {int: int, float: fraction, str: str}
_TYPES = {"threats": threat_list, "smoothing_sigmas": number_list, "smoothing_radii": number_list}


def _settings_options(ev: argparse.ArgumentParser) -> list[str]:
    """One option per EvalSettings field (rft_fast.eval.settings: FIELD_RULES type it, FIELD_HELP helps it,
    FIELD_FLAGS names the few spelled otherwise; LIST_FIELDS are comma-separated), the smoothing ones in their
    own group, each with the field's default but cache_dir's (the user's cache, not EvalSettings' None), which
    --no-cache turns off. Returns the field names."""
    import dataclasses

    from rft_fast.eval.settings import FIELD_FLAGS, FIELD_HELP, FIELD_RULES, EvalSettings

    smoothing = ev.add_argument_group("randomized smoothing (threat smoothing-L2)")
    names = []
    for f in dataclasses.fields(EvalSettings):
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
        rule, group = FIELD_RULES[f.name], smoothing if f.name.startswith("smoothing_") else ev
        if f.name == "eps":
            for norm, flag in zip(default, FIELD_FLAGS["eps"]):
                group.add_argument(
                    flag,
                    dest=_eps_dest(norm),
                    type=fraction,
                    default=default[norm],
                    help=f"{FIELD_HELP['eps']}: {norm}",
                )
        else:
            choices = list(rule.choices) if rule.kind is str and rule.choices else None
            group.add_argument(
                FIELD_FLAGS.get(f.name, "--" + f.name.replace("_", "-")),
                dest=f.name,
                type=_TYPES.get(f.name, _KINDS[rule.kind]),
                choices=choices,
                default=default_cache() if f.name == "cache_dir" else default,
                help=FIELD_HELP[f.name],
            )
        if f.name == "cache_dir":
            ev.add_argument("--no-cache", action="store_true", help="do not read or write the corruption cache")
        names.append(f.name)
    return names


def add_commands(sub: argparse._SubParsersAction) -> None:
    ev = sub.add_parser(
        "eval",
        help="AutoAttack (Linf/L2/L1), common corruptions and (opt-in) randomized smoothing of a fine-tuned model, "
        "into the results store",
        description="Evaluates a `rft-fast train` checkpoint (run folder or checkpoint.pt), or any fine-tuned "
        "timm checkpoint with --backbone/--weights/--dataset, on a stratified seeded test subset: clean accuracy, "
        "AutoAttack (pyautoattack) robust accuracy per norm at the study's eps, and corruption accuracy "
        "(imagecorruptions; corrupted sets cached on disk). Opt-in threat smoothing-L2: randomized-smoothing "
        "certification (Cohen et al. 2019 CERTIFY) per --sigma, stored as the smoothed accuracy and the certified "
        "accuracy at each of --radii. Each measurement is stored when done.",
    )
    _model_options(ev)
    settings = _settings_options(ev)
    ev.add_argument("--store", default="results.sqlite", help="SQLite results store (default: ./results.sqlite)")
    device_args(ev, "cpu or cuda (default: cuda if visible)")
    ev.add_argument("--progress", action=argparse.BooleanOptionalAction, default=True)
    ev.set_defaults(func=_eval, refuses=REFUSED, settings=settings)
