"""Training the phoneme-CTC conformer (the speech embedder of ParallelKWS) on aligned manifests.

Each training example is a stretch of whole words cut from an utterance at word boundaries
(at most `max_segment_s` long, a little silence kept on both sides); its CTC target is the
stress-free phonemes whose centres lie inside the stretch. Batches are filled up to
`batch_seconds` of audio. Optional augmentation: random gain and additive noise at a random
SNR, so the model hears more than clean TTS.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch

from archive_search.audio import SAMPLE_RATE, load_audio
from archive_search.data import augment as data_augment
from archive_search.data.manifest import NON_WORD_LABELS, Utterance, iter_manifest
from archive_search.embedders.ctc import CTCConformer, CTCDims, fbank_batch, greedy_decode, load_ctc, phoneme_error_rate, save_ctc
from archive_search.embedders.phonemes import SYMBOLS, encode, pad_batch
from archive_search.errors import DataError
from archive_search.training.common import (
    LAST_CHECKPOINT,
    LossLog,
    batch_stream,
    choose_device,
    decode_all,
    load_train_state,
    onecycle,
    save_train_state,
    seed_everything,
)

SKIP_WORDS = NON_WORD_LABELS


@dataclass
class CTCTrainConfig:
    """One CTC training run; stored in the checkpoint's `extra` and in run.json."""

    config: str = "fast"  # fast | paper | tiny
    steps: int = 2000
    batch_seconds: float = 60.0
    max_segment_s: float = 6.0
    lr: float = 1e-3
    weight_decay: float = 1e-4
    grad_clip: float = 5.0
    warmup: float = 0.1
    augment_prob: float = 0.5
    seed: int = 0
    save_every: int = 100
    device: str = "auto"
    max_valid: int = 200
    workers: int = 0  # data-loader processes (a GPU needs several to stay busy)


@dataclass
class CTCTrainResult:
    out_dir: str
    checkpoint: str
    steps: int
    final_loss: float
    wall_s: float
    valid_per: float | None = None
    train_audio_s: float = 0.0
    n_utterances: int = 0


@dataclass
class AlignedAudio:
    """An utterance held in memory with its words and phones (seconds)."""

    id: str
    samples: np.ndarray
    words: list = field(default_factory=list)
    phones: list = field(default_factory=list)
    speaker: str = ""

    @property
    def duration(self) -> float:
        return len(self.samples) / SAMPLE_RATE


def load_manifests(paths: Sequence[str | Path], splits: Sequence[str] | None = ("train",)) -> list[tuple[Utterance, Path]]:
    """Utterances of the given splits (None: all) with their manifest folders."""
    found = []
    for path in paths:
        root = Path(path).parent
        for utterance in iter_manifest(path):
            if splits is None or utterance.split in splits:
                found.append((utterance, root))
    if not found:
        raise DataError(f"no utterances of splits {list(splits or [])} in {[str(p) for p in paths]}")
    return found


def load_aligned(utterances: Sequence[tuple[Utterance, Path]]) -> list[AlignedAudio]:
    """Decode every utterance that has word and phone alignments into memory."""
    usable = []
    for utterance, root in utterances:
        words = [w for w in utterance.words if w.label.lower() not in SKIP_WORDS]
        if words and utterance.phones:
            usable.append((utterance, root, words))
    audio = decode_all([utterance.audio_path(root) for utterance, root, _ in usable], load_audio)
    result = [AlignedAudio(utterance.id, samples, words, list(utterance.phones), utterance.speaker)
              for (utterance, _, words), samples in zip(usable, audio)]  # fmt: skip
    if not result:
        raise DataError("no utterance has word and phone alignments")
    return result


def sample_segment(item: AlignedAudio, rng: np.random.Generator, max_s: float) -> tuple[np.ndarray, list[int]]:
    """A random stretch of whole words (<= max_s when possible) and its phoneme ids."""
    words = item.words
    first = int(rng.integers(len(words)))
    last = first
    while last + 1 < len(words) and words[last + 1].end - words[first].start <= max_s:
        last += 1
    pad_left = float(rng.uniform(0.02, 0.15))
    pad_right = float(rng.uniform(0.02, 0.15))
    start = max(0.0, words[first].start - pad_left)
    end = min(item.duration, words[last].end + pad_right)
    # no neighbouring speech may enter the segment unlabelled
    if first > 0:
        start = max(start, words[first - 1].end)
    if last + 1 < len(words):
        end = min(end, words[last + 1].start)
    labels = [p.label for p in item.phones if start <= (p.start + p.end) / 2 < end]
    return item.samples[int(start * SAMPLE_RATE) : int(end * SAMPLE_RATE)], encode(labels)


def augment(samples: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Random gain (-12..+6 dB), then coloured noise at 5-30 dB SNR (the data package's augmenters)."""
    samples, _ = data_augment.gain(samples, rng, low_db=-12.0, high_db=6.0)
    samples, _ = data_augment.coloured_noise(samples, rng, snr_db=(5.0, 30.0))
    return samples.astype(np.float32, copy=False)


def make_batch(items: Sequence[AlignedAudio], rng: np.random.Generator, config: CTCTrainConfig, weights: np.ndarray):
    clips, targets, seconds = [], [], 0.0
    while seconds < config.batch_seconds or not clips:
        item = items[int(rng.choice(len(items), p=weights))]
        samples, ids = sample_segment(item, rng, config.max_segment_s)
        if not ids or len(samples) < 0.2 * SAMPLE_RATE or len(ids) * 0.04 * SAMPLE_RATE > len(samples):
            continue  # too short for CTC at 40 ms frames
        if rng.random() < config.augment_prob:
            samples = augment(samples, rng)
        clips.append(samples)
        targets.append(ids)
        seconds += len(samples) / SAMPLE_RATE
    feats, lengths = fbank_batch(clips)
    ids, id_lengths = pad_batch(targets)
    return feats, lengths, ids, id_lengths


def validate(model: CTCConformer, items: Sequence[AlignedAudio], max_items: int = 200, max_s: float = 8.0) -> float:
    """Greedy phoneme error rate on (at most `max_items`) fixed stretches of `items`."""
    rng = np.random.default_rng(1234)
    hypotheses, references = [], []
    chosen = [items[i] for i in rng.permutation(len(items))[:max_items]]
    for item in chosen:
        samples, ids = sample_segment(item, rng, max_s)
        if ids:
            hypotheses += greedy_decode(model, [samples])
            references.append([SYMBOLS[i] for i in ids])
    return phoneme_error_rate(hypotheses, references)


def train_ctc(
    config: CTCTrainConfig,
    manifests: Sequence[str | Path],
    out_dir: str | Path,
    resume: bool = False,
    splits: Sequence[str] = ("train",),
    valid_manifests: Sequence[str | Path] = (),
    valid_splits: Sequence[str] | None = None,
    progress: Callable[[int, dict], None] | None = None,
    items: Sequence[AlignedAudio] | None = None,
) -> CTCTrainResult:
    """Train (or resume) a CTC conformer; writes OUT/last.pt, train_state.pt, loss.csv/png, run.json."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    rng = seed_everything(config.seed)
    device = choose_device(config.device)
    items = list(items) if items is not None else load_aligned(load_manifests(manifests, splits))
    valid = load_aligned(load_manifests(valid_manifests, valid_splits)) if valid_manifests else []
    weights = np.array([it.duration for it in items])
    weights /= weights.sum()

    dims = {"tiny": CTCDims.tiny, "fast": CTCDims.fast, "paper": CTCDims.paper}[config.config]()
    model = CTCConformer(dims)
    if resume and (out_dir / LAST_CHECKPOINT).is_file():
        model, _ = load_ctc(out_dir / LAST_CHECKPOINT)
    model.to(device).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    step = 0
    if resume:
        state = load_train_state(out_dir, optimizer, rng)
        step = state["step"] if state else 0
    scheduler = onecycle(optimizer, config.steps, config.lr, config.warmup, start_step=step)
    log = LossLog(out_dir, resume=resume)
    run_info = {"config": asdict(config), "manifests": [str(m) for m in manifests], "splits": list(splits),
                "n_utterances": len(items), "train_audio_s": float(sum(it.duration for it in items)),
                "speakers": sorted({it.speaker for it in items})}  # fmt: skip
    (out_dir / "run.json").write_text(json.dumps(run_info, indent=2))

    batches = batch_stream(lambda generator: make_batch(items, generator, config, weights), rng, config.workers,
                           config.seed, step)  # fmt: skip
    started, loss_value, smoothed = time.time(), float("nan"), None
    while step < config.steps:
        feats, lengths, ids, id_lengths = next(batches)
        loss = model.loss(feats.to(device), lengths.to(device), ids.to(device), id_lengths.to(device))
        optimizer.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
        optimizer.step()
        scheduler.step()
        step += 1
        loss_value = float(loss.item())
        smoothed = loss_value if smoothed is None else 0.95 * smoothed + 0.05 * loss_value
        values = {"loss": loss_value, "smoothed": smoothed, "lr": scheduler.get_last_lr()[0], "elapsed_s": time.time() - started}
        log.append(step, values)
        if progress:
            progress(step, values)
        if step % config.save_every == 0 or step == config.steps:
            extra = {"step": step, "train": run_info}
            save_ctc(out_dir / LAST_CHECKPOINT, model, extra=extra)
            save_train_state(out_dir, step, optimizer, rng)
            log.plot(("loss", "smoothed"), title="phoneme CTC loss")
    model.eval()
    valid_per = validate(model, valid, config.max_valid) if valid else None
    if valid_per is not None:
        log.append(step, {"valid_per": valid_per})
    extra = {"step": step, "valid_per": valid_per, "train": run_info}
    save_ctc(out_dir / LAST_CHECKPOINT, model, extra=extra)
    return CTCTrainResult(
        out_dir=str(out_dir),
        checkpoint=str(out_dir / LAST_CHECKPOINT),
        steps=step,
        final_loss=loss_value,
        wall_s=time.time() - started,
        valid_per=valid_per,
        train_audio_s=run_info["train_audio_s"],
        n_utterances=len(items),
    )
