"""Whole commands as a user times them from the shell: ``--help``, ``import sbanet``, one small
image and (``--scene-size``) a large GeoTIFF, in this checkout and in others, side by side
(with ``python -c pass``, the interpreter's own start, as the floor).

    python -m benchmarks.startup --against before=/path/to/other/checkout --repeats 5 \\
        --scene-size 4000 --scene-repeats 2 --json benchmarks/results/startup.json

Each command runs in a child process started from the checkout's root (so ``python -m sbanet...``
runs that checkout's code, with this interpreter); the checkouts take turns, command by command
and repeat by repeat, so a change in the machine's load falls on all of them alike. Reported per
command and checkout: the median wall time with its spread (min-max), the median peak resident
memory (the child's ``ru_maxrss``; this process imports no torch, so a forked child starts
small) and whether torch / gradio were imported (``--help`` and
``import sbanet`` must load neither). The image is a real 797 x 644 (0.51 Mpx) dubai-aerial
JPEG; the scene is :func:`benchmarks.large_scene.build_mosaic`'s mirror of the SpaceNet sample.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SPACENET = ROOT.parent / "shared" / "data" / "spacenet-sample"
IMAGE = ROOT.parent / "shared" / "data" / "dubai-aerial" / "tile1" / "image_part_001.jpg"
# prints which heavy packages a bare ``import sbanet`` loaded
IMPORT_PROBE = "import sys, sbanet; print(sorted(m for m in ('torch', 'gradio') if m in sys.modules))"


def run_child(command: list[str], cwd: Path) -> tuple[float, float, str]:
    """Wall seconds and peak RSS (MiB) of ``command`` run in ``cwd``, and its stdout."""
    start = time.perf_counter()
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        child = subprocess.Popen(command, cwd=cwd, stdout=out, stderr=err, text=True)
        _, status, usage = os.wait4(child.pid, 0)
        seconds = time.perf_counter() - start
        out.seek(0)
        err.seek(0)
        if os.waitstatus_to_exitcode(status) != 0:
            raise SystemExit(f"{shlex.join(command)} failed in {cwd}:\n{err.read()[-2000:]}")
        return seconds, usage.ru_maxrss / 1024, out.read().strip()


def commands(tmp: Path, scene: Path | None, model: str, scene_args: Sequence[str] = ()) -> dict[str, list[str]]:
    """Name -> argv (``$OUT`` in an argument is replaced by a per-checkout output folder);
    ``scene_args`` go at the end of the scene command (e.g. ``--no-gsd``)."""
    python = sys.executable
    predict = [python, "-m", "sbanet.predict"]
    found = {
        "python": [python, "-c", "pass"],  # the interpreter's own start: the floor of every command
        "help": [*predict, "--help"],
        "import_sbanet": [python, "-c", IMPORT_PROBE],
        "image_0.5mpx": [*predict, str(IMAGE), "the water", "--model", model, "-q", "--overwrite", "-o", "$OUT/m.png"],
    }
    if scene is not None:
        found["scene"] = [python, "-m", "sbanet.predict", str(scene), "all buildings", "--model", model, "-q"]
        found["scene"] += ["--device", "cpu", "--overwrite", "--out", "$OUT/mask.tif", "--vector", "$OUT/b.gpkg"]
        found["scene"] += list(scene_args)
    return found


def summary(values: list[float], digits: int = 2) -> dict[str, float | list[float]]:
    return {
        "median": round(statistics.median(values), digits),
        "min": round(min(values), digits),
        "max": round(max(values), digits),
        "all": [round(v, digits) for v in values],
    }


def measure(
    checkouts: dict[str, Path], named: dict[str, list[str]], repeats: dict[str, int], tmp: Path
) -> dict[str, dict[str, dict]]:
    """Every command ``repeats[name]`` times in every checkout, the checkouts taking turns."""
    results: dict[str, dict[str, dict]] = {}
    for name, argv in named.items():
        times: dict[str, list[float]] = {label: [] for label in checkouts}
        peaks: dict[str, list[float]] = {label: [] for label in checkouts}
        outputs: dict[str, str] = {}
        loads = [os.getloadavg()[0]]
        for _ in range(repeats[name]):
            for label, root in checkouts.items():
                out = tmp / label
                out.mkdir(exist_ok=True)
                seconds, peak, text = run_child([a.replace("$OUT", str(out)) for a in argv], root)
                times[label].append(seconds)
                peaks[label].append(peak)
                outputs[label] = text if name != "help" else f"{len(text.splitlines())} lines"
                print(f"{name:14s} {label:8s} {seconds:7.2f} s {peak:7.0f} MiB", file=sys.stderr)
        loads.append(os.getloadavg()[0])
        results[name] = {
            "command": shlex.join(argv).replace(str(tmp), "$TMP"),
            "load_average_1min_before_after": [round(v, 1) for v in loads],
            **{
                label: {
                    "seconds": summary(times[label]),
                    "peak_rss_mib": round(statistics.median(peaks[label])),
                    "output": outputs[label].replace(str(tmp / label), "$OUT"),
                }
                for label in checkouts
            },
        }
    return results


def table(results: dict[str, dict[str, dict]], labels: list[str]) -> str:
    head = "| command | " + " | ".join(f"{label}: median s (min-max), peak MiB" for label in labels) + " |"
    lines = [head, "|" + " --- |" * (len(labels) + 1)]
    for name, row in results.items():
        cells = []
        for label in labels:
            s = row[label]["seconds"]
            cells.append(f"{s['median']:.2f} ({s['min']:.2f}-{s['max']:.2f}), {row[label]['peak_rss_mib']}")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--against", action="append", default=[], metavar="LABEL=PATH",
                        help="another checkout to time side by side (e.g. before=../main)")  # fmt: skip
    parser.add_argument("--label", default="after", help="this checkout's label")
    parser.add_argument("--repeats", type=int, default=5, help="runs of each small command per checkout")
    parser.add_argument("--scene-size", type=int, default=0, help="also a scene of this side in pixels (0: none)")
    parser.add_argument("--scene-repeats", type=int, default=2, help="runs of the scene command per checkout")
    parser.add_argument("--scene-args", default="", help="more arguments for the scene command, e.g. '--no-gsd'")
    parser.add_argument("--model", default=str(ROOT / "sbanet" / "assets" / "sbanet-lite-landcover"))
    parser.add_argument("--only", nargs="+", help="run only these (python, help, import_sbanet, image_0.5mpx, scene)")
    parser.add_argument("--json", type=Path, help="write the results here")
    args = parser.parse_args()
    checkouts = {}
    for item in args.against:
        label, sep, path = item.partition("=")
        if not sep or not Path(path).is_dir():
            raise SystemExit(f"--against takes LABEL=PATH to a checkout, got {item!r}")
        checkouts[label] = Path(path).resolve()
    checkouts[args.label] = ROOT
    if not IMAGE.is_file():
        raise SystemExit(f"needs the dubai-aerial data at {IMAGE.parent}")
    if args.scene_size and not SPACENET.is_dir():
        raise SystemExit(f"--scene-size needs the spacenet sample at {SPACENET}")
    with tempfile.TemporaryDirectory() as folder:
        tmp = Path(folder)
        scene = None
        if args.scene_size:  # in a child: this process stays small, and so do the peaks of the children it forks
            scene = tmp / f"scene{args.scene_size}.tif"
            build = f"from benchmarks.large_scene import build_mosaic; build_mosaic({str(scene)!r}, {args.scene_size})"
            run_child([sys.executable, "-c", build], ROOT)
        named = commands(tmp, scene, args.model, shlex.split(args.scene_args))
        if args.only:
            named = {k: v for k, v in named.items() if k in args.only}
        repeats = {name: args.scene_repeats if name == "scene" else args.repeats for name in named}
        results = measure(checkouts, named, repeats, tmp)
    cpu = next((ln.split(":", 1)[1].strip() for ln in Path("/proc/cpuinfo").read_text().splitlines()
                if ln.startswith("model name")), "?")  # fmt: skip
    report = {"cpu": cpu, "cpus": os.cpu_count(), "checkouts": {k: str(v) for k, v in checkouts.items()}, **results}
    print(table(results, list(checkouts)))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
