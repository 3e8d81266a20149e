"""One checkout's renderers, one frame a request: the other side of ``benchmarks/render.py --baseline``, the two taking turns.

    PYTHONPATH=../old python tools/frame_turns.py RUN --device cpu

Run with another checkout's ``headfields`` on the path, on a run folder that checkout's ``load_run`` reads
(``run_for_checkout.py`` makes one). It loads the run once, then reads requests from stdin, one a line:
``training SIZE`` or ``inference SIZE``. For each it renders held-out frame 0's head through held-out camera 0
resized to SIZE² (the training renderer, ``model.render``: every sample; or the inference renderer,
``model.render_rays``, where the checkout has one), ``CHUNK`` rays a call, and answers with one line,
``frame_turns: {"seconds": ...}``. EOF ends it. Everything else it prints (its package's messages) is not an answer.

It calls only what every checkout since the inference renderer has (``load_run``, ``resized_cameras``,
``render_pixels``, ``model.render``, ``model.render_rays``), and nothing of this folder's, which the checkout's
package may not match. While render.py renders ours, this process waits on stdin: the two never run at once, and
the machine's drift over minutes falls on both alike.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path

import torch

from headfields.apps.runs import load_run
from headfields.cameras import resized_cameras
from headfields.training.evaluation import render_pixels

ANSWER = "frame_turns: "  # the prefix of an answer line (render.py's TURN_ANSWER)
CHUNK = 8192  # rays a call: TrainingConfig's render_chunk, as render.py's baseline renderers have always used


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run", type=Path)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    device = torch.device(args.device)
    run = load_run(args.run, device)
    model, head = run.model, run.eval_head

    def on_frame_zero(render):  # camera 0 sees held-out frame 0's head
        return lambda rays: render(dataclasses.replace(rays, frame=torch.zeros_like(rays.frame)))

    renderers = {
        "training": on_frame_zero(lambda rays: model.render(rays, head).composite.rgb),
        "inference": on_frame_zero(lambda rays: model.render_rays(rays, head)),
    }
    print(ANSWER + json.dumps({"ready": True}), flush=True)
    for line in sys.stdin:
        name, size = line.split()
        cameras = resized_cameras(run.subject.eval.cameras, int(size), int(size)).to(device)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        render_pixels(renderers[name], cameras, 0, CHUNK)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        print(ANSWER + json.dumps({"seconds": time.perf_counter() - start}), flush=True)


if __name__ == "__main__":
    main()
