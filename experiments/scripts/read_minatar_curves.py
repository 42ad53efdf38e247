"""Read Young & Tian 2019's published DQN learning curves off their figure, at given frame counts.

The MinAtar paper and repository publish DQN's per-game returns only as a figure: `img/learning_curves.gif` in
github.com/kenjyoung/MinAtar (moving average of training-episode returns over 100 episodes, against training
frames, 30 runs per curve; examples/dqn.py). examples/plot_return.py draws at frame f the mean of the 100
episodes that end at the first episode end at or after f, and before a run's 100th episode the first such
window, filled back to frame 0. This script reads the DQN (blue) curve's pixels in each of the five panels and
maps them to returns through the panel's own y-tick marks, so every number it writes can be checked against the
figure, and rerun:

    python experiments/scripts/read_minatar_curves.py learning_curves.gif \
        analysis/reference/minatar_dqn_young2019_curves.csv

(`git show <commit>:img/learning_curves.gif` of the repository at the commit in analysis/reference/README.md.)
The plot area of each panel spans 0 to 5M frames exactly (its x ticks sit on the spines); the pixel positions of
the panels and of their y ticks were found from the figure's spines and tick marks and are checked here: a tick
mark missing from its place stops the script. Where other curves hide DQN's at a frame count, the value is left
empty rather than guessed.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

# Panel plot areas in the 3038x1629 figure: (left spine x, right spine x, top spine y, bottom spine y), and
# the y tick marks as (pixel row, return). Found from the figure's axes lines and tick marks (see the docstring).
PANELS = {
    "MinAtar/Seaquest-v0": ((614.5, 1312), [(228, 20), (327, 15), (426, 10), (525, 5), (624, 0)]),
    "MinAtar/Breakout-v0": ((1569, 2266), [(286.5, 15), (403.5, 10), (520, 5), (637, 0)]),
    "MinAtar/Asterix-v0": ((106, 804), [(1000, 20), (1102, 15), (1204, 10), (1305, 5), (1407, 0)]),
    "MinAtar/Freeway-v0": ((1202, 1900), [(987, 50), (1069, 40), (1151.5, 30), (1234, 20), (1316, 10), (1398, 0)]),
    "MinAtar/SpaceInvaders-v0": ((2295, 2992), [(957, 200), (1068, 150), (1179, 100), (1289.5, 50), (1400, 0)]),
}
SIZE = (3038, 1629)
FIGURE_FRAMES = 5_000_000
# The DQN curve's colours in the GIF's palette (the legend patch and the line).
DQN_COLOURS = np.array([[44, 116, 179], [1, 115, 178]])
COLOUR_TOLERANCE = 12  # summed absolute RGB difference
TICK_SEARCH = range(4, 13)  # columns left of the left spine where the y tick marks are drawn
# Where a game's 100th episode cannot have ended yet, the curve shows the first window filled back, not the
# return at that frame count: Freeway's episodes always last 2,500 frames (time_limit in
# minatar/environments/freeway.py), so its first window ends at 250,000 frames. The other games' episodes end
# sooner (a uniformly random policy's 100 episodes take 1,252-7,289 frames: Breakout, Seaquest, Space Invaders,
# Asterix, minatar 1.0.15, sticky 0.1, ramping).
FIRST_WINDOW_END = {"MinAtar/Freeway-v0": 100 * 2_500}


def _dark(image: np.ndarray) -> np.ndarray:
    return image.sum(2) < 200


def check_ticks(image: np.ndarray) -> None:
    dark = _dark(image)
    for env, ((left, _), ticks) in PANELS.items():
        for row, value in ticks:
            cols = [int(left) - d for d in TICK_SEARCH]
            if not dark[int(round(row)), cols].sum() >= len(cols) // 2:
                raise SystemExit(f"read_minatar_curves: no y tick mark for {value} of {env} at row {row}: "
                                 "this is not the figure the pixel positions were read from")


def read(image: np.ndarray, env: str, frames: int) -> dict:
    """DQN's return at ``frames`` in one panel: the median of the curve's pixel rows in a 3-pixel column, and
    the lowest and highest of them (the line's width and any band), or None where no DQN pixel shows."""
    (left, right), ticks = PANELS[env]
    rows, values = zip(*ticks, strict=True)
    slope, intercept = np.polyfit(rows, values, 1)
    x = int(round(left + (right - left) * frames / FIGURE_FRAMES))
    near = (np.abs(image[:, x - 1:x + 2, None, :] - DQN_COLOURS).sum(3) <= COLOUR_TOLERANCE).any((1, 2))
    top, bottom = int(min(rows)) - 30, int(max(rows)) + 20
    hits = np.nonzero(near[top:bottom])[0] + top
    if len(hits) == 0:
        return {"return": None, "low": None, "high": None}
    value = lambda r: round(float(slope * r + intercept), 2)  # noqa: E731
    return {"return": value(np.median(hits)), "low": value(hits.max()), "high": value(hits.min())}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("gif", type=Path)
    parser.add_argument("out", type=Path)
    parser.add_argument("--frames", type=int, nargs="+", default=[100_000, 1_000_000, 5_000_000])
    args = parser.parse_args(argv)
    image = np.asarray(Image.open(args.gif).convert("RGB")).astype(int)
    if image.shape[1::-1] != SIZE:
        print(f"read_minatar_curves: {args.gif} is {image.shape[1]}x{image.shape[0]}, not the {SIZE[0]}x{SIZE[1]} "
              "figure", file=sys.stderr)
        return 2
    check_ticks(image)
    rows = []
    for env in PANELS:
        for frames in args.frames:
            # the last pixel column is the right spine: read just inside it
            at = min(frames, FIGURE_FRAMES - 25_000)
            reading = read(image, env, at)
            note = "" if reading["return"] is not None else "other curves hide DQN's here"
            if at < FIRST_WINDOW_END.get(env, 0):
                reading = dict.fromkeys(reading)
                note = (f"the first 100-episode window ends at {FIRST_WINDOW_END[env]:,} frames: the curve here "
                        "is that window filled back, not the return at this frame count")
            rows.append({"env": env, "algo": "dqn", "frames": frames, "read_at_frames": at, **reading,
                         "note": note})
    table = pd.DataFrame(rows)
    table.to_csv(args.out, index=False)
    print(table.to_string(index=False))
    return 0


if __name__ == "__main__":
    sys.exit(main())
