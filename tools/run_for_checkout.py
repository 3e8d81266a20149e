"""Copy a run folder so that another checkout's ``load_run`` reads it: the same weights, the configuration and the
checkpoint's fingerprint as that checkout writes them.

    PYTHONPATH=../old python tools/run_for_checkout.py outputs/render_benchmark/insta /tmp/old_runs/insta

Run it with the other checkout's ``headfields`` on the path (``benchmarks/render.py --baseline`` does, for each model). A
checkpoint's fingerprint records the recipe's text and the frames' digests in the format of the code that wrote it,
and that format changes between versions, so an older checkout refuses a newer run as "made for another run". Here
the older code computes the fingerprint's recipe and training entries itself, from its own model and settings. The
frames and the model files it must find as the run recorded them: where its own digests differ (it would load other
frames, or other model files), the copy is refused. Configuration fields the older code does not know are left out,
and named: that checkout then runs its own behaviour in their place. Weights that no longer fit the older model still
fail its ``load_run``, as they should.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import shutil
from pathlib import Path

import torch

CLASS_KEY = "__class__"  # configs.config_to_dict's key of each dataclass's "module.QualName"
CHECKPOINT = "checkpoint.pt"
CONFIG = "config.json"
# The fingerprint's entries whose text the older code writes its own way (the recipe's and the settings' reprs); the
# others (the frames' and the model files' digests) must match the run's, or the older code would render other inputs.
REWRITTEN = ("model", "training")


def known_fields(data, dropped: list[str], where: str = "config"):
    """``data`` (config_to_dict's JSON) with each dataclass's fields that this checkout's class lacks removed (their
    paths appended to ``dropped``)."""
    if isinstance(data, list):
        return [known_fields(item, dropped, f"{where}[{i}]") for i, item in enumerate(data)]
    if not isinstance(data, dict):
        return data
    fields = None
    if CLASS_KEY in data:
        from headfields.configs import config_classes  # the checkout's own list of its configurations

        cls = config_classes().get(data[CLASS_KEY])
        if cls is None:
            raise SystemExit(f"{where}: this checkout has no configuration class {data[CLASS_KEY]!r}")
        fields = {f.name for f in dataclasses.fields(cls) if f.init}
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
    from headfields.apps.runs import build_model, read_run_config
    from headfields.training.checkpoints import run_fingerprint  # the other checkout's, from PYTHONPATH

    run, out = args.run.resolve(), args.out.resolve()
    if run == out or run.is_relative_to(out) or out.is_relative_to(run):
        raise SystemExit(f"out: expected a folder apart from the run's, got {args.out} (the run: {args.run})")
    if out.is_symlink() or (out.exists() and not (out / CONFIG).is_file() and any(out.iterdir())):
        raise SystemExit(f"out: {args.out} exists and is not a run folder: give another")  # replaced only if a run
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    for item in run.iterdir():
        if item.is_file() and item.name not in (CHECKPOINT, CONFIG):
            shutil.copy2(item, out / item.name)
    dropped: list[str] = []
    config_json = known_fields(json.loads((run / CONFIG).read_text()), dropped)
    (out / CONFIG).write_text(json.dumps(config_json, indent=2))
    config = read_run_config(out)
    subject = config.subject.load(torch.device("cpu"))
    model = build_model(config.model, subject, config.recipe)
    state = torch.load(run / CHECKPOINT, map_location="cpu", weights_only=True)
    stored, computed = state.get("fingerprint") or {}, run_fingerprint(model, subject.train, config.training)
    differ = [key for key in computed if key not in REWRITTEN and stored.get(key) != computed[key]]
    if differ:
        shutil.rmtree(out)
        differing = " and ".join(differ)
        raise SystemExit(f"{args.run}: this checkout's {differing} differ from the run's: it would render other inputs")
    state["fingerprint"] = {**stored, **{key: computed[key] for key in REWRITTEN}}
    state.pop("run", None)  # the configuration as the newer code wrote it: config.json above stands for it
    torch.save(state, out / CHECKPOINT)
    left_out = f"; fields it does not know, left out: {', '.join(dropped)}" if dropped else ""
    print(f"{args.out}: the run for this checkout{left_out}")


if __name__ == "__main__":
    main()
