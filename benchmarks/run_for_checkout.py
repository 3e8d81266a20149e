"""Copy a run folder so that another checkout's ``load_run`` reads it: the same weights, the configuration and the
checkpoint's fingerprint as that checkout writes them.

    PYTHONPATH=../old python benchmarks/run_for_checkout.py outputs/render_benchmark/insta /tmp/old_runs/insta

Run it with the other checkout's ``headfields`` on the path (``render.py --baseline`` does, for each model). A
checkpoint's fingerprint records the recipe's text and the frames' digests in the format of the code that wrote it,
and that format changes between versions, so an older checkout refuses a newer run as "made for another run". Here
the older code computes the fingerprint itself, from the run's frames and its own model. Configuration fields the
older code does not know are left out, and named: that checkout then runs its own behaviour in their place. Weights
that no longer fit the older model still fail its ``load_run``, as they should.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import json
import shutil
from pathlib import Path

import torch

CLASS_KEY = "__class__"  # configs.config_to_dict's key of each dataclass's "module.QualName"
CHECKPOINT = "checkpoint.pt"
CONFIG = "config.json"


def known_fields(data, dropped: list[str], where: str = "config"):
    """``data`` (config_to_dict's JSON) with each dataclass's fields that this checkout's class lacks removed (their
    paths appended to ``dropped``)."""
    if isinstance(data, list):
        return [known_fields(item, dropped, f"{where}[{i}]") for i, item in enumerate(data)]
    if not isinstance(data, dict):
        return data
    fields = None
    if CLASS_KEY in data:
        module, _, name = data[CLASS_KEY].rpartition(".")
        cls = getattr(importlib.import_module(module), name)
        fields = {f.name for f in dataclasses.fields(cls)}
    kept = {}
    for key, value in data.items():
        if fields is not None and key != CLASS_KEY and key not in fields:
            dropped.append(f"{where}.{key}={json.dumps(value)}")
        else:
            kept[key] = known_fields(value, dropped, f"{where}.{key}")
    return kept


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run", type=Path, help="the run folder, as this project's code wrote it")
    parser.add_argument("out", type=Path, help="the copy for the checkout on PYTHONPATH (replaced)")
    args = parser.parse_args()
    from headfields.checkpoints import run_fingerprint  # the other checkout's, from PYTHONPATH
    from headfields.runs import build_model, read_run_config

    if args.out.resolve() == args.run.resolve():
        raise SystemExit(f"out: expected a folder other than the run's, got {args.out}")
    shutil.rmtree(args.out, ignore_errors=True)
    args.out.mkdir(parents=True)
    for item in args.run.iterdir():
        if item.is_file() and item.name not in (CHECKPOINT, CONFIG):
            shutil.copy2(item, args.out / item.name)
    dropped: list[str] = []
    config_json = known_fields(json.loads((args.run / CONFIG).read_text()), dropped)
    (args.out / CONFIG).write_text(json.dumps(config_json, indent=2))
    config = read_run_config(args.out)
    subject = config.subject.load(torch.device("cpu"))
    model = build_model(config.model, subject, config.recipe)
    state = torch.load(args.run / CHECKPOINT, map_location="cpu", weights_only=True)
    state["fingerprint"] = run_fingerprint(model, subject.train, config.training)
    state.pop("run", None)  # the configuration as the newer code wrote it: config.json above stands for it
    torch.save(state, args.out / CHECKPOINT)
    left_out = f"; fields it does not know, left out: {', '.join(dropped)}" if dropped else ""
    print(f"{args.out}: the run for this checkout{left_out}")


if __name__ == "__main__":
    main()
