"""Train the `paper` configs on a lent GPU machine in one call (docs/experiments.md, "JMCL paper
on a lent GPU"). Runs from the repository root there, with the packed training audio in
.devdata/ (scripts/training/pack_for_device.py, manifests gzipped), and in .whl/ the wheels the
machine lacks, the `distance` package (no wheel) and the augmentation caches (.whl/cache:
rirs-24-0.npz, babble-12.npz); docs/experiments.md lists the commands that make them. There:

    python3 scripts/training/gpu_paper_run.py OUT --budget 550 [--jobs jmcl|kws|jmcl,kws]

Two jobs share the GPU: JMCL `paper`, and the phoneme-CTC conformer `paper` followed by
ParallelKWS `paper` on it. A device lease is short, so the step counts are chosen on the
machine: a calibration pass (the same commands for 40 steps, on one small manifest, both jobs
at once) measures the seconds per step, then each job gets the ordinary fixed-step command
that fits the budget; the chosen commands are printed and saved (OUT/commands.txt), so each run
can be repeated exactly. A job still running at the deadline is stopped and its last
checkpoint exported as it stands. Exported weights, loss logs and plots go to OUT.
"""

from __future__ import annotations

import argparse
import csv
import shutil
import subprocess
import sys
import tarfile
import threading
import time
from pathlib import Path

DATA = Path(".devdata")
WORK = Path("/tmp/gpu-run")
TRAIN = [sys.executable, "-m", "archive_search.cli.train"]
JMCL_DATA = ["libri-5652.jsonl", "pseudo-train-clean-100.jsonl", "stage2.jsonl", "manifest.jsonl"]
CTC_DATA = ["libri-5652.jsonl", "stage2.jsonl", "manifest.jsonl"]  # the ones with phone alignments
CALIBRATION_DATA = ["libri-5652.jsonl"]
CALIBRATION_STEPS = 40
GUESS_S_PER_STEP = 0.15
"""Used when a calibration run fails, so the other job still runs."""
CONFIG = "paper"


def data_args(names: list[str]) -> list[str]:
    return [arg for name in names for arg in ("--data", str(DATA / name))]


def jmcl_command(out: Path, steps: int, names: list[str]) -> list[str]:
    return TRAIN + ["jmcl", "--config", CONFIG, *data_args(names), "--out", str(out), "--steps", str(steps),
                    "--save-every", "200", "--workers", "7", "--threads", "2"]  # fmt: skip


def ctc_command(out: Path, steps: int, names: list[str]) -> list[str]:
    return TRAIN + ["ctc", "--config", CONFIG, *data_args(names), "--out", str(out), "--steps", str(steps),
                    "--batch-seconds", "60", "--max-segment", "6", "--lr", "2e-3", "--save-every", "100",
                    "--workers", "3", "--threads", "2"]  # fmt: skip


def kws_command(out: Path, ctc: Path, steps: int, names: list[str]) -> list[str]:
    return TRAIN + ["kws", "--config", CONFIG, "--ctc", str(ctc), *data_args(names), "--out", str(out),
                    "--steps", str(steps), "--batch-regions", "16", "--save-every", "100", "--workers", "4",
                    "--threads", "2"]  # fmt: skip


def seconds_per_step(loss_csv: Path, skip: int = 10) -> float:
    """Mean seconds per step after the first `skip` steps (loader start-up), from loss.csv."""
    if not loss_csv.is_file():
        print(f"{loss_csv}: missing, guessing {GUESS_S_PER_STEP} s per step", flush=True)
        return GUESS_S_PER_STEP
    with open(loss_csv, newline="") as handle:
        rows = [(int(r["step"]), float(r["elapsed_s"])) for r in csv.DictReader(handle) if r.get("elapsed_s")]
    later = [row for row in rows if row[0] >= skip]
    (s0, t0), (s1, t1) = later[0], later[-1]
    return (t1 - t0) / max(1, s1 - s0)


class Job:
    """A chain of commands run one after another in the background, logged to one file."""

    def __init__(self, name: str, log: Path):
        self.name, self.log = name, log

    def run(self, command: list[str], deadline: float) -> int:
        with open(self.log, "a") as log:
            log.write(" ".join(command) + "\n")
            log.flush()
            process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
            try:
                return process.wait(timeout=max(1.0, deadline - time.time()))
            except subprocess.TimeoutExpired:
                process.terminate()
                process.wait()
                log.write(f"{self.name}: stopped at the deadline\n")
                return -1


def side_by_side(targets: dict, jobs: list[str]) -> None:
    """Run the chosen jobs' functions at once (one thread each) and wait for all of them."""
    threads = [threading.Thread(target=target) for name, target in targets.items() if name in jobs]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("out", type=Path)
    parser.add_argument("--budget", type=float, default=470.0, help="Seconds for everything, exports included.")
    parser.add_argument("--config", default="paper", help="tiny: a quick dry run of this script on a CPU.")
    parser.add_argument("--jobs", default="jmcl,kws", help="Which jobs: jmcl, kws (CTC then ParallelKWS), or both.")
    args = parser.parse_args()
    global CONFIG
    CONFIG = args.config
    started = time.time()
    deadline = started + args.budget - 25  # leave time for the exports
    args.out.mkdir(parents=True, exist_ok=True)
    WORK.mkdir(parents=True, exist_ok=True)

    # -- calibration: both jobs at once, as in the real runs
    calibration = {}

    def calibrate_jmcl():
        Job("jmcl-cal", WORK / "calibration.log").run(jmcl_command(WORK / "cal-jmcl", CALIBRATION_STEPS, CALIBRATION_DATA), deadline)
        calibration["jmcl"] = seconds_per_step(WORK / "cal-jmcl" / "loss.csv")

    def calibrate_kws():
        job = Job("ctc-cal", WORK / "calibration-kws.log")
        job.run(ctc_command(WORK / "cal-ctc", CALIBRATION_STEPS, CALIBRATION_DATA), deadline)
        calibration["ctc"] = seconds_per_step(WORK / "cal-ctc" / "loss.csv")
        job.run(kws_command(WORK / "cal-kws", WORK / "cal-ctc" / "last.pt", CALIBRATION_STEPS, CALIBRATION_DATA), deadline)
        calibration["kws"] = seconds_per_step(WORK / "cal-kws" / "loss.csv")

    jobs = args.jobs.split(",")
    side_by_side({"jmcl": calibrate_jmcl, "kws": calibrate_kws}, jobs)
    left = deadline - time.time()
    print(f"calibration {calibration}, {left:.0f} s left", flush=True)
    # Reserves for loading the full data (8 decoding threads): 30 s for JMCL's bank, 40 s per KWS-side load.
    def steps(seconds: float, job: str) -> int:
        return max(10, int(seconds / calibration.get(job, GUESS_S_PER_STEP)) // 10 * 10)

    kws_side = 0.9 * (left - 80)
    jmcl_steps, ctc_steps, kws_steps = steps(0.9 * (left - 30), "jmcl"), steps(0.4 * kws_side, "ctc"), steps(0.6 * kws_side, "kws")
    commands = {}
    if "jmcl" in jobs:
        commands["jmcl"] = jmcl_command(WORK / "jmcl-paper", jmcl_steps, JMCL_DATA)
    if "kws" in jobs:
        commands["ctc"] = ctc_command(WORK / "ctc-paper", ctc_steps, CTC_DATA)
        commands["kws"] = kws_command(WORK / "kws-paper", WORK / "ctc-paper" / "last.pt", kws_steps, JMCL_DATA)
    (args.out / "commands.txt").write_text("\n".join(" ".join(c) for c in commands.values()) + "\n")
    print("steps: " + ", ".join(f"{job} {command[command.index('--steps') + 1]}" for job, command in commands.items()), flush=True)

    results = {}

    def run_jmcl():
        results["jmcl"] = Job("jmcl", WORK / "jmcl.log").run(commands["jmcl"], deadline)

    def run_kws():
        job = Job("kws", WORK / "kws.log")
        results["ctc"] = job.run(commands["ctc"], deadline)
        results["kws"] = job.run(commands["kws"], deadline)

    side_by_side({"jmcl": run_jmcl, "kws": run_kws}, jobs)
    print(f"exit codes {results} at {time.time() - started:.0f} s", flush=True)

    exports = {
        "jmcl": TRAIN + ["jmcl-export", "--checkpoint", str(WORK / "jmcl-paper" / "last.pt"), "--out",
                         str(WORK / "jmcl-paper.pt")],
        "kws": TRAIN + ["kws-export", "--checkpoint", str(WORK / "kws-paper" / "last.pt"), "--out",
                        str(args.out / "kws-paper.pt")],
    }  # fmt: skip
    for name in jobs:
        subprocess.run(exports[name])
    if (WORK / "jmcl-paper.pt").is_file():
        # OUT takes files of at most 16 MiB; the float16 paper JMCL (8.4 M parameters) is larger
        payload = (WORK / "jmcl-paper.pt").read_bytes()
        half = len(payload) // 2
        (args.out / "jmcl-paper.pt.part0").write_bytes(payload[:half])
        (args.out / "jmcl-paper.pt.part1").write_bytes(payload[half:])
    if (WORK / "ctc-paper" / "last.pt").is_file():
        shutil.copy(WORK / "ctc-paper" / "last.pt", args.out / "ctc-paper.pt")
    with tarfile.open(args.out / "logs.tgz", "w:gz") as tar:
        for path in sorted(WORK.glob("*.log")) + sorted(WORK.glob("*/loss.csv")) + sorted(WORK.glob("*/loss.png")) \
                + sorted(WORK.glob("*/run.json")):  # fmt: skip
            tar.add(path, arcname=str(path.relative_to(WORK)))
    print(f"done at {time.time() - started:.0f} s", flush=True)


if __name__ == "__main__":
    main()
