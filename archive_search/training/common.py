"""What every training command shares: seeding, device choice, the schedule, resumable state,
and the loss log (CSV plus a PNG plot).

A training run writes into its output folder:
  last.pt         the model checkpoint (embedders/checkpoint.py format), rewritten atomically
  train_state.pt  optimizer, scheduler, step and RNG states, for `--resume`
  loss.csv        one row per logged step; loss.png plots it
"""

from __future__ import annotations

import csv
import random
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence, TypeVar

import numpy as np
import torch

from archive_search.embedders.checkpoint import atomic_torch_save

BatchT = TypeVar("BatchT")

STATE_FILE = "train_state.pt"
LAST_CHECKPOINT = "last.pt"
LOSS_CSV = "loss.csv"
LOSS_PNG = "loss.png"


def seed_everything(seed: int) -> np.random.Generator:
    """Seed Python, NumPy and torch; returns the NumPy generator the data pipeline should use."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    return np.random.default_rng(seed)


def choose_device(name: str | None = None) -> torch.device:
    """'cpu', 'cuda', ... as given; None or 'auto' picks CUDA when present, else the CPU."""
    if name in (None, "", "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def onecycle(
    optimizer: torch.optim.Optimizer, total_steps: int, max_lr: float, warmup: float = 0.2, start_step: int = 0
):
    """OneCycle with cosine annealing and `warmup` of the steps rising to `max_lr` (both papers' recipe).

    `start_step` > 0 rebuilds the schedule for a resumed run (the optimizer state must be loaded
    first); the schedule follows `total_steps`, so a resumed run may also be lengthened.
    """
    total_steps = max(2, total_steps, start_step + 1)
    return torch.optim.lr_scheduler.OneCycleLR(
        optimizer, max_lr=max_lr, total_steps=total_steps, pct_start=warmup, anneal_strategy="cos",
        last_epoch=start_step - 1 if start_step > 0 else -1,
    )  # fmt: skip


class _BatchSource(torch.utils.data.IterableDataset):
    """Endless batches from `make(rng)`, one generator per loader worker."""

    def __init__(self, make: Callable[[np.random.Generator], Any], seed: int, start_step: int):
        self.make, self.seed, self.start_step = make, seed, start_step

    def __iter__(self):
        info = torch.utils.data.get_worker_info()
        rng = np.random.default_rng([self.seed, self.start_step, info.id if info is not None else 0])
        while True:
            yield self.make(rng)


def _unchanged(batch):
    return batch


def batch_stream(
    make: Callable[[np.random.Generator], BatchT],
    rng: np.random.Generator,
    workers: int = 0,
    seed: int = 0,
    start_step: int = 0,
) -> Iterator[BatchT]:
    """Endless training batches from `make(rng)`.

    `workers` 0 draws them in this process from `rng` (the CPU default; a resumed run continues
    the saved generator). With `workers` > 0 they come from forked processes, each with its own
    generator seeded by (seed, start_step, worker), in a fixed round-robin order, so a run is
    reproducible for a given worker count; this keeps a GPU fed. `make` must not touch the GPU
    (forked children cannot use CUDA).
    """
    if workers <= 0:
        while True:
            yield make(rng)
    loader = torch.utils.data.DataLoader(
        _BatchSource(make, seed, start_step), batch_size=None, num_workers=workers, collate_fn=_unchanged,
        prefetch_factor=4, multiprocessing_context="fork",
    )  # fmt: skip
    yield from loader


def decode_all(paths: Sequence[Path], load: Callable[[Path], np.ndarray], threads: int = 8) -> list[np.ndarray]:
    """`load(path)` for every path, in order, on `threads` threads: the decoders release the GIL,
    and loading hours of compressed training audio one file at a time would keep a GPU idle."""
    if threads <= 1 or len(paths) < 2:
        return [load(path) for path in paths]
    with ThreadPoolExecutor(threads) as pool:
        return list(pool.map(load, paths))


def save_train_state(
    out_dir: str | Path,
    step: int,
    optimizer: torch.optim.Optimizer,
    rng: np.random.Generator,
    extra: dict | None = None,
) -> Path:
    """Everything besides the model that a resumed run needs to continue exactly (the LR
    schedule is rebuilt from the step, see `onecycle`)."""
    payload = {
        "step": step,
        "optimizer": optimizer.state_dict(),
        "torch_rng": torch.get_rng_state(),
        "numpy_rng": rng.bit_generator.state,
        "extra": extra or {},
    }
    return atomic_torch_save(payload, Path(out_dir) / STATE_FILE)


def load_train_state(out_dir: str | Path, optimizer: torch.optim.Optimizer, rng: np.random.Generator) -> dict | None:
    """Restore optimizer and RNGs from `out_dir`; returns the payload or None if absent."""
    path = Path(out_dir) / STATE_FILE
    if not path.is_file():
        return None
    payload = torch.load(path, map_location="cpu", weights_only=True)
    optimizer.load_state_dict(payload["optimizer"])
    torch.set_rng_state(payload["torch_rng"])
    rng.bit_generator.state = payload["numpy_rng"]
    return payload


class LossLog:
    """Append-only CSV of training metrics per step, survives resumes; `plot` draws loss.png."""

    def __init__(self, out_dir: str | Path, resume: bool = False):
        self.csv_path = Path(out_dir) / LOSS_CSV
        self.png_path = Path(out_dir) / LOSS_PNG
        self.csv_path.parent.mkdir(parents=True, exist_ok=True)
        if not resume and self.csv_path.exists():
            self.csv_path.unlink()
        self._fields: list[str] | None = None
        if self.csv_path.exists():
            with open(self.csv_path, newline="") as handle:
                self._fields = next(csv.reader(handle), None)

    def append(self, step: int, values: dict[str, float]) -> None:
        row = {"step": step, **values}
        if self._fields is None:
            self._fields = list(row)
            with open(self.csv_path, "w", newline="") as handle:
                csv.writer(handle).writerow(self._fields)
        with open(self.csv_path, "a", newline="") as handle:
            csv.writer(handle).writerow([_format(row.get(name, "")) for name in self._fields])

    def rows(self) -> list[dict[str, float]]:
        if not self.csv_path.exists():
            return []
        with open(self.csv_path, newline="") as handle:
            return [{k: float(v) for k, v in row.items() if v not in ("", None)} for row in csv.DictReader(handle)]

    def plot(self, keys: tuple[str, ...] = ("loss",), title: str = "training loss") -> Path | None:
        """Draw the chosen columns against step into loss.png (log-scale y); None without data."""
        rows = self.rows()
        if not rows:
            return None
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        figure, axis = plt.subplots(figsize=(7, 4))
        for key in keys:
            points = [(row["step"], row[key]) for row in rows if key in row]
            if points:
                steps, values = zip(*points)
                axis.plot(steps, values, label=key, linewidth=1)
        axis.set_xlabel("step")
        axis.set_yscale("log")
        axis.set_title(title)
        axis.legend()
        figure.tight_layout()
        figure.savefig(self.png_path, dpi=100)
        plt.close(figure)
        return self.png_path


def _format(value: Any) -> str:
    return f"{value:.6g}" if isinstance(value, float) else str(value)
