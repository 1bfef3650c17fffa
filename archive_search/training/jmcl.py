"""Training the JMCL encoders on N words x M spoken instances per batch (jmcl.md, Section III-IV).

Every instance is a word or a 2-4 word phrase of an aligned utterance. It reaches the audio
encoder in one of the ways the engine will show it audio:
- ``window``: a fixed window of one of the indexer's scales (audio.WINDOW_SCALES_S) that holds
  the word at a random offset, sometimes shifted so the window cuts into the word, with frame
  features computed over the surrounding audio and sliced, as `embed_spans` does;
- ``segment``: the aligned word with a little boundary jitter, with surrounding context;
- ``clip``: the aligned word alone, as a trimmed query clip reaches `embed_clips`.
The text side is always the word's dictionary pronunciation, as a typed query's would be.
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from collections import defaultdict
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Sequence

import numpy as np
import torch

from archive_search.audio import SAMPLE_RATE, WINDOW_HOP_FRACTION, WINDOW_SCALES_S, load_audio
from archive_search.data.manifest import NON_WORD_LABELS, Utterance, iter_manifest
from archive_search.embedders.g2p import word_phonemes
from archive_search.embedders.jmcl import (
    JMCL,
    PRETRAINED_FRAME_S,
    JMCLAudioEmbedder,
    JMCLTextEmbedder,
    build_model,
    model_name,
    read_jmcl,
    save_jmcl,
)
from archive_search.errors import CheckpointError, DataError
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
from archive_search.training.losses import ALPHA_AA, ALPHA_AT, jmcl_loss

IGNORED_WORDS = NON_WORD_LABELS
MIN_INSTANCE_S = 0.15
"""Seconds. Shorter words are too short to learn from at 40 ms frames."""
MAX_INSTANCE_S = 2.0
"""Seconds. The longest word or phrase trained on (the JMCL paper keeps words of 0.5-2 s)."""
MAX_PHRASE_GAP_S = 0.25
"""Seconds. Words further apart than this do not form a phrase (a pause separates them)."""
CONTEXT_S = 0.4
"""Seconds of surrounding audio the front-end sees around a window or segment."""
WHOLE_INPUT_FRONTENDS = ("whisper",)
"""Front-ends whose frames depend on the whole input (whisper attends over all of it): a window
or segment is trained on frames of its whole utterance, as the indexer slices a whole chunk's."""


@dataclass
class JMCLTrainConfig:
    """One training run; stored in the checkpoint's `extra` and in run.json."""

    config: str = "fast"
    steps: int = 2000
    batch_words: int = 32
    instances: int = 4
    lr: float = 1e-3
    weight_decay: float = 1e-4
    grad_clip: float = 1.0
    warmup: float = 0.2
    alpha_at: float = ALPHA_AT
    alpha_aa: float = ALPHA_AA
    # the shipped recipe: 0.25 keeps most of the windowed gain of 0.5 and loses less on tight
    # segments (docs/experiments.md, "Window ablation: indexer windows versus segments")
    window_prob: float = 0.25
    clip_prob: float = 0.25
    augment_prob: float = 0.4
    max_phrase_words: int = 4
    seed: int = 0
    save_every: int = 200
    log_every: int = 10
    device: str | None = None
    workers: int = 0  # data-loader processes (a GPU needs several to stay busy)


@dataclass(frozen=True)
class Instance:
    """A word or phrase spoken in utterance `utterance` of a WordBank, [start, end) seconds."""

    utterance: int
    start: float
    end: float
    text: str

    @property
    def duration(self) -> float:
        return self.end - self.start


@dataclass
class WordBank:
    """Audio of aligned utterances held in memory (int16) and their word/phrase instances,
    grouped into classes by pronunciation (homophones share a class)."""

    audio: list[np.ndarray] = field(default_factory=list)
    instances: list[Instance] = field(default_factory=list)
    classes: dict[tuple[str, ...], list[int]] = field(default_factory=dict)
    words: set[str] = field(default_factory=set)
    frames: list[list[np.ndarray]] | None = None
    """Per utterance, its pre-trained front-end frames over the whole utterance, float16: copy 0
    clean, copy 1 augmented (`attach_frontend_frames`); None for log-mel models."""

    @classmethod
    def from_utterances(
        cls,
        utterances: Iterable[tuple[Utterance, Path]],
        max_phrase_words: int = 4,
        min_s: float = MIN_INSTANCE_S,
        max_s: float = MAX_INSTANCE_S,
        min_instances: int = 2,
        load: Callable[[Path], np.ndarray] = load_audio,
    ) -> "WordBank":
        """Build from (utterance, manifest folder) pairs; keeps classes with >= `min_instances`
        distinct spoken tokens. Speed-perturbed copies (`archive-data speed`, their `augment`
        names the `source` utterance) are instances of their source's tokens, not new tokens:
        otherwise every phrase said once would make a class of one voice saying it three times."""
        bank = cls()
        by_key: dict[tuple[str, ...], list[int]] = defaultdict(list)
        tokens: dict[tuple[str, ...], set] = defaultdict(set)
        usable = []
        for utterance, root in utterances:
            words = [w for w in utterance.words if w.label.strip().lower() not in IGNORED_WORDS]
            if words:
                usable.append((utterance.audio_path(root), words, utterance.id, utterance.augment.get("source")))
        # a token is (utterance, first word, word count); a copy's utterance is its source's, if loaded
        originals = {utterance_id: row for row, (_, _, utterance_id, source) in enumerate(usable) if source is None}
        decoded = decode_all([path for path, _, _, _ in usable], load)
        for (_, words, _, source), samples in zip(usable, decoded):
            bank.audio.append(np.clip(samples * 32767.0, -32768, 32767).astype(np.int16))
            index = len(bank.audio) - 1
            token_owner = index if source is None else originals.get(source, source)
            for first in range(len(words)):
                for count in range(1, max_phrase_words + 1):
                    span = words[first : first + count]
                    if len(span) < count:
                        break
                    if count > 1 and span[-1].start - span[-2].end > MAX_PHRASE_GAP_S:
                        break
                    duration = span[-1].end - span[0].start
                    if duration > max_s:
                        break
                    if duration < min_s:
                        continue
                    labels = [w.label.strip().lower() for w in span]
                    key = tuple(p for label in labels for p in _phonemes(label))
                    if not key:
                        continue
                    bank.instances.append(Instance(index, span[0].start, span[-1].end, " ".join(labels)))
                    by_key[key].append(len(bank.instances) - 1)
                    tokens[key].add((token_owner, first, count))
                    bank.words.update(labels)
        bank.classes = {key: rows for key, rows in by_key.items() if len(tokens[key]) >= min_instances}
        return bank

    def samples(self, instance: Instance) -> np.ndarray:
        return self.audio[instance.utterance]


_PHONEME_CACHE: dict[str, tuple[str, ...]] = {}


def _phonemes(word: str) -> tuple[str, ...]:
    if word not in _PHONEME_CACHE:
        _PHONEME_CACHE[word] = tuple(word_phonemes(word))
    return _PHONEME_CACHE[word]


def load_manifests(paths: Sequence[str | Path], splits: Sequence[str] | None = ("train",)) -> list[tuple[Utterance, Path]]:
    """Utterances of every manifest (paths relative to each manifest's folder), filtered by split."""
    pairs = []
    for path in paths:
        path = Path(path)
        for utterance in iter_manifest(path):
            if splits is None or utterance.split in splits:
                pairs.append((utterance, path.parent))
    if not pairs:
        raise DataError(f"{', '.join(map(str, paths))}: no utterances of split {list(splits or [])}")
    return pairs


def _augmenter() -> Callable[[np.ndarray, np.random.Generator], np.ndarray] | None:
    """The data helper's augmentation chain when it exists (archive_search.data.augment)."""
    try:
        from archive_search.data import augment  # type: ignore[attr-defined]
    except ImportError:
        return None
    chain = getattr(augment, "random_augment", None) or getattr(augment, "augment", None)
    return chain if callable(chain) else None


def cut_instance(
    bank: WordBank, instance: Instance, mode: str, rng: np.random.Generator
) -> tuple[np.ndarray, tuple[float, float] | None]:
    """The audio region for one instance and the span inside it that the encoder reads.

    Returns (samples (S,) float32, (start, end) seconds inside samples or None for the whole clip).
    """
    audio = bank.samples(instance)
    first, last, span = cut_region(len(audio) / SAMPLE_RATE, instance, mode, rng)
    samples = audio[first:last].astype(np.float32) / 32767.0
    return samples, span


def cut_region(
    total: float, instance: Instance, mode: str, rng: np.random.Generator
) -> tuple[int, int, tuple[float, float] | None]:
    """Where `cut_instance` cuts an utterance of `total` seconds: samples [first, last) and the
    span in seconds inside them (None for a whole clip)."""
    if mode == "window":
        scales = [s for s in WINDOW_SCALES_S if s >= instance.duration * 0.9] or [max(WINDOW_SCALES_S)]
        length = scales[0]
        slack = max(0.0, length - instance.duration)
        start = instance.start - rng.uniform(0.0, slack)
        if rng.random() < 0.5:
            # The indexer's grid rarely centres a word: shift by up to half a hop, cutting into it.
            hop = length * WINDOW_HOP_FRACTION
            start += rng.uniform(-hop / 2, hop / 2)
        start = min(max(0.0, start), max(0.0, total - length))
        end = min(total, start + length)
    else:
        start = max(0.0, instance.start - rng.uniform(-0.02, 0.05))
        end = min(total, instance.end + rng.uniform(-0.02, 0.05))
    if mode == "clip":
        region = (start, end)
    else:
        region = (max(0.0, start - CONTEXT_S), min(total, end + CONTEXT_S))
    first, last = int(region[0] * SAMPLE_RATE), int(region[1] * SAMPLE_RATE)
    if mode == "clip":
        return first, last, None
    return first, last, (start - first / SAMPLE_RATE, end - first / SAMPLE_RATE)


@dataclass
class Batch:
    clips: list[np.ndarray]
    spans: list[tuple[float, float] | None]
    phonemes: list[tuple[str, ...]]
    n_words: int
    n_instances: int
    features: list[torch.Tensor] | None = None  # model.input_features(clips), when drawn ahead
    sources: list[tuple[int, int, bool] | None] | None = None
    """Per row (utterance, first sample, augmented) of a region cut from a whole utterance (a
    window or a segment; None for a clip): where cached whole-utterance frames can stand in."""


def sample_batch(
    bank: WordBank,
    n_words: int,
    n_instances: int,
    rng: np.random.Generator,
    window_prob: float = JMCLTrainConfig.window_prob,
    clip_prob: float = JMCLTrainConfig.clip_prob,
    augment: Callable | None = None,
    augment_prob: float = 0.0,
) -> Batch:
    """N distinct pronunciations x M instances, ordered word-major (row j*M + i)."""
    keys = list(bank.classes)
    if len(keys) < 2:
        raise DataError(f"need at least 2 words with >= 2 spoken instances to train, found {len(keys)}")
    n_words = min(n_words, len(keys))
    chosen = rng.choice(len(keys), size=n_words, replace=False)
    clips, spans, phonemes, sources = [], [], [], []
    for key_index in chosen:
        key = keys[key_index]
        rows = bank.classes[key]
        picks = rng.choice(len(rows), size=n_instances, replace=len(rows) < n_instances)
        phonemes.append(key)
        for pick in picks:
            draw = rng.random()
            mode = "window" if draw < window_prob else ("clip" if draw < window_prob + clip_prob else "segment")
            instance = bank.instances[rows[pick]]
            audio = bank.samples(instance)
            first, last, span = cut_region(len(audio) / SAMPLE_RATE, instance, mode, rng)
            samples = audio[first:last].astype(np.float32) / 32767.0
            augmented = augment is not None and rng.random() < augment_prob
            if augmented and (bank.frames is None or span is None):
                samples = np.asarray(augment(samples, rng), dtype=np.float32)
            clips.append(samples)
            spans.append(span)
            sources.append(None if span is None else (instance.utterance, first, augmented))
    return Batch(clips, spans, phonemes, n_words, n_instances, sources=sources)


def batch_features(model: JMCL, bank: WordBank, batch: Batch) -> tuple[list[torch.Tensor], list]:
    """The audio encoder's input frames for a batch, and the spans to read in them: regions of
    whole utterances are sliced from the bank's cached utterance frames when it has them (the
    indexer also encodes a whole chunk and slices it), everything else goes through
    `model.input_features` with the batch's own spans."""
    if bank.frames is None or batch.sources is None:
        return model.input_features(batch.clips), list(batch.spans)
    spans = list(batch.spans)
    period = PRETRAINED_FRAME_S[model.dims.audio_frontend]
    features: list[torch.Tensor | None] = [None] * len(batch.clips)
    encode = [row for row, source in enumerate(batch.sources) if source is None]
    for row, clip in zip(encode, model.input_features([batch.clips[row] for row in encode])):
        features[row] = clip
    for row, source in enumerate(batch.sources):
        if source is None:
            continue
        utterance, first, augmented = source
        frames = bank.frames[utterance][int(augmented)]
        start = min(int(round(first / SAMPLE_RATE / period)), len(frames) - 1)
        count = max(1, int(math.ceil(len(batch.clips[row]) / SAMPLE_RATE / period)))
        features[row] = torch.from_numpy(frames[start : start + count].astype(np.float32))
        # the span is measured from the region's first sample; re-anchor it on the first frame
        shift = first / SAMPLE_RATE - start * period
        span_start, span_end = spans[row]
        spans[row] = (span_start + shift, span_end + shift)
    return features, spans


def attach_frontend_frames(
    model: JMCL, bank: WordBank, folder: str | Path, seed: int = 0, augment: Callable | None = None
) -> None:
    """Encode every utterance of the bank once with the model's frozen pre-trained front-end,
    clean and once augmented (clean again without `augment`), into `bank.frames`; each result
    is kept in `folder` (one .npz per utterance, keyed by its samples and the seed) and reused
    by later runs."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    frames = []
    for samples in bank.audio:
        key = hashlib.sha1(samples.tobytes()).hexdigest()[:20]
        path = folder / f"{model.dims.audio_frontend}-{seed}-{key}.npz"
        if path.is_file():
            with np.load(path) as data:
                frames.append([data["clean"], data["augmented"]])
            continue
        clean = samples.astype(np.float32) / 32767.0
        rng = np.random.default_rng([seed, int(key[:8], 16)])
        noisy = np.asarray(augment(clean, rng), dtype=np.float32) if augment is not None else clean
        pair = [f.numpy().astype(np.float16) for f in model.input_features([clean, noisy])]
        partial = path.with_suffix(".tmp.npz")
        np.savez(partial, clean=pair[0], augmented=pair[1])
        partial.replace(path)
        frames.append(pair)
    bank.frames = frames


def batch_loss(model: JMCL, batch: Batch, alpha_at: float = ALPHA_AT, alpha_aa: float = ALPHA_AA):
    """Embed a Batch and compute the eq. 14 loss."""
    full = [(0.0, math.inf) if span is None else span for span in batch.spans]
    clips = [torch.from_numpy(c) for c in batch.clips]
    audio = model.embed_audio_batch(clips, full, batch.features).view(batch.n_words, batch.n_instances, -1)
    text = model.embed_phoneme_batch(batch.phonemes)
    return jmcl_loss(audio, text, model.logit_scale(), alpha_at, alpha_aa)


def feature_statistics(model: JMCL, bank: WordBank, rng: np.random.Generator, count: int = 64) -> None:
    """Set the audio encoder's input normalisation (per log-mel bin or speech-embedding dim)
    from `count` random utterances."""
    picks = rng.choice(len(bank.audio), size=min(count, len(bank.audio)), replace=False)
    mels = torch.cat(model.input_features([bank.audio[i].astype(np.float32) / 32767.0 for i in picks]))
    model.audio.feature_mean.copy_(mels.mean(0))
    model.audio.feature_std.copy_(mels.std(0).clamp(min=1e-3))


@dataclass
class TrainResult:
    out_dir: str
    checkpoint: str
    steps: int
    wall_s: float
    final_loss: float
    n_instances: int
    n_classes: int
    device: str


def train_jmcl(
    config: JMCLTrainConfig,
    manifests: Sequence[str | Path],
    out_dir: str | Path,
    resume: bool = False,
    bank: WordBank | None = None,
    progress: Callable[[int, dict], None] | None = None,
    stop_at: int | None = None,
    init: str | Path | None = None,
) -> TrainResult:
    """Train (or resume) a JMCL model; checkpoints to out_dir/last.pt every `save_every` steps.

    `stop_at` ends this invocation after that step (checkpointed) while keeping the schedule of
    `config.steps`, as if the run had been killed there; `resume=True` continues it. `init`
    starts a new run from a checkpoint's weights (and input normalisation) with a fresh optimizer
    and schedule, to fine-tune a trained model; a resumed run ignores it.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    rng = seed_everything(config.seed)
    device = choose_device(config.device)
    if bank is None:
        bank = WordBank.from_utterances(load_manifests(manifests), max_phrase_words=config.max_phrase_words)
    if len(bank.classes) < 2:
        raise DataError(f"{', '.join(map(str, manifests))}: fewer than 2 words have 2 or more spoken instances")
    checkpoint = out_dir / LAST_CHECKPOINT
    if resume and checkpoint.is_file():
        model, _ = read_jmcl(checkpoint)
    elif init is not None:
        model, _ = read_jmcl(init)
        if model.dims.config != config.config:
            raise CheckpointError(f"{init}: a JMCL `{model.dims.config}` model cannot start a `{config.config}` run")
    else:
        model = build_model(config.config)
        feature_statistics(model, bank, rng)
    augment = _augmenter() if config.augment_prob > 0 else None
    if model.dims.audio_frontend in WHOLE_INPUT_FRONTENDS and bank.frames is None:
        from archive_search.data.augment import cache_root

        attach_frontend_frames(model, bank, cache_root() / "jmcl-frames", config.seed, augment)
    model.to(device).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    step = 0
    if resume and checkpoint.is_file():
        state = load_train_state(out_dir, optimizer, rng)
        step = int(state["step"]) if state else 0
    scheduler = onecycle(optimizer, config.steps, config.lr, config.warmup, start_step=step)
    log = LossLog(out_dir, resume=resume and step > 0)
    # run.json keeps one entry per invocation, so a run resumed on more data records every stage.
    run_path = out_dir / "run.json"
    stages = json.loads(run_path.read_text()).get("stages", []) if resume and run_path.is_file() else []
    stages.append({"from_step": step, "config": asdict(config), "init": None if init is None else str(init),
                   "manifests": [str(m) for m in manifests],
                   "n_instances": len(bank.instances), "n_classes": len(bank.classes), "n_words": len(bank.words),
                   "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())})  # fmt: skip
    run_path.write_text(json.dumps({"stages": stages}, indent=1))
    started = time.perf_counter()
    last = {"loss": float("nan")}
    running: dict[str, float] = defaultdict(float)
    counted = 0

    def save() -> None:
        extra = {"step": step, "train": asdict(config), "words": len(bank.words), "classes": len(bank.classes)}
        save_jmcl(checkpoint, model, extra=extra)
        save_train_state(out_dir, step, optimizer, rng)

    def draw(generator: np.random.Generator) -> Batch:
        batch = sample_batch(
            bank, config.batch_words, config.instances, generator, config.window_prob, config.clip_prob,
            augment, config.augment_prob,
        )  # fmt: skip
        batch.features, batch.spans = batch_features(model, bank, batch)
        return batch

    batches = batch_stream(draw, rng, config.workers, config.seed, step)
    end = min(config.steps, stop_at) if stop_at is not None else config.steps
    while step < end:
        batch = next(batches)
        loss = batch_loss(model, batch, config.alpha_at, config.alpha_aa)
        optimizer.zero_grad(set_to_none=True)
        loss.total.backward()
        grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
        optimizer.step()
        scheduler.step()
        step += 1
        values = loss.as_floats()
        values.update(grad_norm=float(grad_norm), lr=scheduler.get_last_lr()[0], scale=float(model.logit_scale().detach()))
        for key, value in values.items():
            running[key] += value
        counted += 1
        if step % config.log_every == 0 or step == end:
            means = {key: value / counted for key, value in running.items()}
            last = {"loss": means.pop("total"), **means}
            last["elapsed_s"] = time.perf_counter() - started
            log.append(step, last)
            if progress is not None:
                progress(step, last)
            running.clear()
            counted = 0
        if step % config.save_every == 0 or step == end:
            save()
            log.plot(("loss", "audio_text", "audio_audio"), title=f"JMCL {config.config}")
    if not checkpoint.is_file():
        save()
    return TrainResult(str(out_dir), str(checkpoint), step, time.perf_counter() - started, float(last["loss"]),
                       len(bank.instances), len(bank.classes), str(device))  # fmt: skip


def embedders(model: JMCL, device: str | None = "cpu") -> tuple[JMCLAudioEmbedder, JMCLTextEmbedder]:
    """Inference seams over an in-memory model (for evaluation during and after training)."""
    name = model_name(model)
    return JMCLAudioEmbedder(model, name, device), JMCLTextEmbedder(model, name, device)


def word_discrimination_ap(
    audio: JMCLAudioEmbedder,
    text: JMCLTextEmbedder,
    manifests: Sequence[str | Path],
    splits: Sequence[str] | None,
    training_vocabulary: Iterable[str] | None,
    max_per_word: int | None = 20,
    max_segments: int | None = 3000,
    seed: int = 0,
) -> dict:
    """The JMCL word-discrimination protocol (0.5-2 s word segments, all pairs, acoustic and cross
    view, IV/OOV) over manifests, via archive_search.evaluation.word_discrimination."""
    from archive_search.evaluation.word_discrimination import word_discrimination, word_segments

    results = {}
    for path in manifests:
        pairs = load_manifests([path], splits)
        segments = word_segments(
            (u for u, _ in pairs), root=Path(path).parent, max_per_word=max_per_word, max_segments=max_segments,
            seed=seed,
        )  # fmt: skip
        result = word_discrimination(segments, audio, text, training_vocabulary)
        results[str(path)] = result.to_dict()
    return results


def encoder_speed(audio: JMCLAudioEmbedder, seconds: float = 60.0, repeats: int = 3, seed: int = 0) -> dict:
    """Times `embed_spans` over `seconds` of noise-like audio cut into the indexer's windows
    (every scale of WINDOW_SCALES_S, hop = length * WINDOW_HOP_FRACTION). Returns the best of
    `repeats` as real-time factor (archive seconds per wall second) and windows per second."""
    rng = np.random.default_rng(seed)
    samples = (0.1 * rng.standard_normal(int(seconds * SAMPLE_RATE))).astype(np.float32)
    spans = []
    for length in WINDOW_SCALES_S:
        hop = length * WINDOW_HOP_FRACTION
        starts = np.arange(0.0, seconds - length + 1e-9, hop)
        spans += [(s, s + length) for s in starts]
    spans_array = np.array(spans)
    audio.embed_spans(samples[: 5 * SAMPLE_RATE], spans_array[:50])  # warm-up
    best, best_cpu = math.inf, math.inf
    for _ in range(repeats):
        started, started_cpu = time.perf_counter(), time.process_time()
        audio.embed_spans(samples, spans_array)
        best = min(best, time.perf_counter() - started)
        best_cpu = min(best_cpu, time.process_time() - started_cpu)
    # CPU seconds are reported too: on a shared machine wall time mostly measures the neighbours.
    return {"audio_s": seconds, "windows": len(spans), "wall_s": best, "real_time_factor": seconds / best,
            "windows_per_s": len(spans) / best, "cpu_s": best_cpu, "real_time_per_cpu_s": seconds / best_cpu,
            "threads": torch.get_num_threads()}  # fmt: skip
