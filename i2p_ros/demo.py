"""``make demo``: the whole product on embedded defaults, on a fresh machine, in a few minutes.

1. simulate a short drive with seeds held apart from the demo model's training drives;
2. write it as a rosbag2 (mcap) with ground-truth labels (``i2p-bag-write``);
3. start ``segment_node`` with the shipped demo checkpoint and replay the bag into it over real ROS
   topics (``i2p-bag-eval --launch-node``), collecting every labeled cloud;
4. print mIoU, per-class IoU and latency per stage; write JSON, plots and a BEV PNG of a labeled scan.

    python -m i2p_ros.demo [--out demo_out] [--scans 20] [--rate 1.0|max]
"""

from __future__ import annotations

import argparse
import shutil
import sys
from collections.abc import Sequence
from pathlib import Path

from .data.sim import main as sim_main
from .pipeline import default_checkpoint_path

# The demo model was trained on sequences simulated with seeds 100.. (see models/weights/MODEL_CARD.md);
# the demo drive uses another seed and sequence number, so its street layout was never seen in training.
DEMO_SEED = 4242
DEMO_SEQUENCE = 90


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="i2p-demo", description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, default=Path("demo_out"))
    p.add_argument("--scans", type=int, default=20)
    p.add_argument("--rate", default="1.0", help="replay speed factor, or 'max'")
    args = p.parse_args(argv)
    ckpt = default_checkpoint_path()
    if not ckpt.is_file():
        print(f"demo: the shipped demo model {ckpt} is missing", file=sys.stderr)
        return 2
    if args.out.exists():
        shutil.rmtree(args.out)
    data, bag, report = args.out / "sim", args.out / "bag", args.out / "report"
    print(f"[1/3] simulating a {args.scans}-scan drive (sequence {DEMO_SEQUENCE}, seed {DEMO_SEED}) -> {data}",
          flush=True)
    if sim_main(["--out", str(data), "--sequences", str(DEMO_SEQUENCE), "--scans", str(args.scans),
                 "--seed", str(DEMO_SEED), "--quiet"]) != 0:
        return 1
    from .ros.bag_write import main as bag_write_main

    print(f"[2/3] writing the rosbag2 (mcap) -> {bag}", flush=True)
    if bag_write_main(["--sequence", str(data / "sequences" / f"{DEMO_SEQUENCE:02d}"), "--out", str(bag),
                       "--quiet"]) != 0:
        return 1
    from .ros.bag_eval import main as bag_eval_main

    print(f"[3/3] replaying it through segment_node (demo model {ckpt.name}) -> {report}", flush=True)
    rc = bag_eval_main(["--bag", str(bag), "--rate", args.rate, "--launch-node", "--checkpoint", str(ckpt),
                        "--out", str(report)])
    if rc == 0:
        print(f"\ndemo done: report, plots and bev.png in {report}/ "
              "(the demo model is trained on simulated scans only: not for real roads)")
    return rc


if __name__ == "__main__":
    sys.exit(main())
