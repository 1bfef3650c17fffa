"""Training ParallelKWS on what the engine's reranker sees, and its LibriPhrase-style trials.

A training region is cut from continuous speech around a keyword of 1-4 consecutive words:
1-3 s long, the keyword at a random offset, other words (often cut) around it, as the
engine's merged candidate windows plus context look. Every region is shown with
- its keyword's text (positive),
- a near-miss text: one word replaced by a word whose dictionary pronunciation is one or two
  phoneme edits away (LibriPhrase-hard-like negative),
- an easy text: another phrase with the same number of words from elsewhere in the corpus.
Negative texts that occur in the region's own words are redrawn.

The conformer is frozen (its CTC checkpoint); Adam, lr 1e-3, BCE + 0.3 * PDA (the paper).

With a pre-trained front-end ("gse", Google's speech embedding, or "whisper", whisper tiny.en's
encoder; both frozen) the front-end runs once per
utterance before training (`build_feature_cache`: a clean and an augmented copy of every
utterance, stored under the cache folder and reused by later runs), and a region is the slice
of the utterance's frames whose centres fall inside it. A step then costs only the trained
layers, so batches can be large. Each region also gets a fourth pair: another region of the
batch (keyword absent) with this region's keyword text, the negative the engine's reranker
actually meets (same text, other audio). PDA targets come from the word alignments
(`parallelkws.alignment_positions`).
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import re
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch

from archive_search.audio import SAMPLE_RATE
from archive_search.embedders.ctc import CTCDims, edit_distance, fbank_batch, load_ctc
from archive_search.embedders.g2p import word_phonemes
from archive_search.embedders.parallelkws import (
    KWSDims,
    ParallelKWS,
    alignment_positions,
    load_kws,
    pad_frontend,
    save_kws,
)
from archive_search.embedders.phonemes import ARPABET, normalise_phonemes
from archive_search.errors import DataError
from archive_search.training.common import (
    LAST_CHECKPOINT,
    LossLog,
    batch_stream,
    choose_device,
    load_train_state,
    save_train_state,
    seed_everything,
)
from archive_search.training.ctc import AlignedAudio, augment, load_aligned, load_manifests

MAX_KEYWORD_WORDS = 4
MIN_REGION_S = 1.0
MAX_REGION_S = 3.0
MAX_KEYWORD_S = 2.4
"""Seconds. Longer phrases are not drawn as keywords (the engine's windows are at most 1.6 s)."""
_ALPHA = re.compile(r"^[a-z]+$")


@dataclass
class KWSTrainConfig:
    """One ParallelKWS training run; stored in the checkpoint's `extra` and run.json."""

    config: str = "fast"  # fast | paper | tiny
    frontend: str = "conformer"  # conformer (the paper) | gse | whisper (pre-trained, cached)
    audio_negatives: bool = True  # gse, whisper: also pair each keyword text with another region's audio
    hard_negatives: int = 1  # gse, whisper: near-miss texts per region (more drill one-phoneme differences)
    attention: str = "parallel"  # parallel | self | cross (ablations)
    pda_weight: float = 0.3  # 0: no PDA loss (ablation)
    tight_regions: bool = False  # ablation: LibriPhrase-like tight crops, as the paper trains
    steps: int = 2000
    batch_regions: int = 16  # regions per batch; each is shown with 3 texts (pos, hard, easy)
    lr: float = 1e-3
    grad_clip: float = 5.0
    augment_prob: float = 0.3
    seed: int = 0
    save_every: int = 100
    device: str = "auto"
    workers: int = 0  # data-loader processes (conformer front-end; a GPU needs several)


@dataclass
class KWSTrainResult:
    out_dir: str
    checkpoint: str
    steps: int
    final_loss: float
    wall_s: float
    valid: dict | None = None
    n_utterances: int = 0


# --------------------------------------------------------------------------- near-miss texts


@functools.lru_cache(maxsize=1)
def lexicon() -> dict[tuple[str, ...], list[str]]:
    """CMUdict pronunciations (first entry, stress-free) -> alphabetic words."""
    from archive_search.embedders.g2p import _cmu_dictionary  # the one parsed copy of CMUdict

    table: dict[tuple[str, ...], list[str]] = {}
    for word, entries in _cmu_dictionary().items():
        if _ALPHA.match(word) and len(word) > 1 and entries:
            table.setdefault(tuple(normalise_phonemes(entries[0])), []).append(word)
    return table


def _one_edit(phonemes: tuple[str, ...]):
    for i in range(len(phonemes) + 1):
        for symbol in ARPABET:
            yield phonemes[:i] + (symbol,) + phonemes[i:]  # insertion
            if i < len(phonemes) and symbol != phonemes[i]:
                yield phonemes[:i] + (symbol,) + phonemes[i + 1 :]  # substitution
        if i < len(phonemes) and len(phonemes) > 1:
            yield phonemes[:i] + phonemes[i + 1 :]  # deletion


def _deletions(phonemes: tuple[str, ...]) -> set[tuple[str, ...]]:
    return {phonemes} | {phonemes[:i] + phonemes[i + 1 :] for i in range(len(phonemes))}


@functools.lru_cache(maxsize=1)
def _deletion_index() -> dict[tuple[str, ...], list[tuple[str, ...]]]:
    """Symmetric-delete index of the lexicon: two pronunciations one edit apart share a key
    (the pronunciation or it with one phoneme deleted), so neighbours are found by lookup."""
    index: dict[tuple[str, ...], list[tuple[str, ...]]] = {}
    for pronunciation in lexicon():
        for key in _deletions(pronunciation):
            index.setdefault(key, []).append(pronunciation)
    return index


def _neighbours(phonemes: tuple[str, ...]) -> set[tuple[str, ...]]:
    """Lexicon pronunciations at most one phoneme edit from `phonemes` (itself included)."""
    index = _deletion_index()
    found = {p for key in _deletions(phonemes) for p in index.get(key, ())}
    return {p for p in found if abs(len(p) - len(phonemes)) <= 1 and edit_distance(p, phonemes) <= 1}


@functools.lru_cache(maxsize=50_000)
def near_miss_words(word: str) -> tuple[str, ...]:
    """Dictionary words one phoneme edit from `word`'s pronunciation (different spelling and
    pronunciation). Falls back to two edits for words with no neighbour at one."""
    table = lexicon()
    own = tuple(word_phonemes(word))
    pronunciations = _neighbours(own) - {own}
    if not pronunciations:
        pronunciations = {p for variant in _one_edit(own) for p in _neighbours(variant)} - {own}
    found = {w for p in pronunciations for w in table[p]}
    found.discard(word)
    return tuple(sorted(found))


def near_miss_phrase(words: Sequence[str], rng: np.random.Generator) -> list[str] | None:
    """Replace one word of `words` by a near miss; None when no word has one."""
    for position in rng.permutation(len(words)):
        options = near_miss_words(words[position])
        if options:
            result = list(words)
            result[position] = options[int(rng.integers(len(options)))]
            return result
    return None


def phoneme_distance(a: Sequence[str], b: Sequence[str]) -> int:
    pa = [p for w in a for p in word_phonemes(w)]
    pb = [p for w in b for p in word_phonemes(w)]
    return edit_distance(pa, pb)


# --------------------------------------------------------------------------- regions


def _usable(label: str) -> bool:
    return bool(_ALPHA.match(label.lower()))


def keyword_spans(item: AlignedAudio, n_words: int) -> list[int]:
    """Start indices of n consecutive usable words no longer than MAX_KEYWORD_S."""
    words = item.words
    starts = []
    for i in range(len(words) - n_words + 1):
        chunk = words[i : i + n_words]
        if all(_usable(w.label) for w in chunk) and chunk[-1].end - chunk[0].start <= MAX_KEYWORD_S:
            starts.append(i)
    return starts


@dataclass
class Region:
    samples: np.ndarray
    keyword: list[str]
    words: list[str]  # every word at least half inside the region
    keyword_start: float  # seconds inside the region
    keyword_end: float
    offset: float = 0.0  # where the region starts in its utterance (s)
    keyword_spans: tuple = ()  # (start, end) of each keyword word, seconds in the utterance
    source: int = -1  # index of the utterance in the sampler


def cut_region(item: AlignedAudio, first: int, n_words: int, rng: np.random.Generator, tight: bool = False) -> Region:
    """A region holding words[first : first + n_words], at a random offset among other words
    (tight: LibriPhrase-like crop with 30-80 ms margins)."""
    chunk = item.words[first : first + n_words]
    start, end = chunk[0].start, chunk[-1].end
    span = end - start
    if tight:
        left, right = start - rng.uniform(0.03, 0.08), end + rng.uniform(0.03, 0.08)
    else:
        length = rng.uniform(max(span + 0.1, MIN_REGION_S), max(span + 0.2, MAX_REGION_S))
        left = start - rng.uniform(0.0, length - span)
        right = left + length
    left, right = max(0.0, left), min(item.duration, right)
    samples = item.samples[int(left * SAMPLE_RATE) : int(right * SAMPLE_RATE)]
    inside = [w.label.lower() for w in item.words if (min(w.end, right) - max(w.start, left)) >= 0.5 * (w.end - w.start)]
    spans = tuple((w.start, w.end) for w in chunk)
    return Region(samples, [w.label.lower() for w in chunk], inside, start - left, end - left, left, spans)


def _contains(words: Sequence[str], phrase: Sequence[str]) -> bool:
    n = len(phrase)
    return any(list(words[i : i + n]) == list(phrase) for i in range(len(words) - n + 1))


class RegionSampler:
    """Draws (region, positive, hard negative, easy negative) from aligned utterances."""

    def __init__(self, items: Sequence[AlignedAudio]):
        self.items = list(items)
        self.spans = {n: [(i, s) for i, item in enumerate(self.items) for s in keyword_spans(item, n)]
                      for n in range(1, MAX_KEYWORD_WORDS + 1)}  # fmt: skip
        self.lengths = [n for n in self.spans if self.spans[n]]
        if not self.lengths:
            raise DataError("no utterance holds a usable keyword")

    def draw(self, rng: np.random.Generator, tight: bool = False) -> tuple[Region, list[str] | None, list[str]]:
        n = self.lengths[int(rng.integers(len(self.lengths)))]
        index, first = self.spans[n][int(rng.integers(len(self.spans[n])))]
        region = cut_region(self.items[index], first, n, rng, tight=tight)
        region.source = index
        hard = None
        for _ in range(4):
            candidate = near_miss_phrase(region.keyword, rng)
            if candidate and not _contains(region.words, candidate):
                hard = candidate
                break
        easy = region.keyword
        for _ in range(10):
            other_index, other_first = self.spans[n][int(rng.integers(len(self.spans[n])))]
            other = [w.label.lower() for w in self.items[other_index].words[other_first : other_first + n]]
            if other != region.keyword and not _contains(region.words, other) and phoneme_distance(other, region.keyword) > 2:
                easy = other
                break
        return region, hard, easy


def make_batch(sampler: RegionSampler, rng: np.random.Generator, config: KWSTrainConfig, n_mels: int):
    """Regions with their texts: fbank (B, T, n_mels), lengths (B,), texts, labels (B,). The G2P
    states of the texts are left to the caller (the model's encoder may sit on the GPU)."""
    clips, texts, labels = [], [], []
    for _ in range(config.batch_regions):
        region, hard, easy = sampler.draw(rng, tight=config.tight_regions)
        samples = region.samples
        if rng.random() < config.augment_prob:
            samples = augment(samples, rng)
        for text, label in ((region.keyword, 1.0), (hard, 0.0), (easy, 0.0)):
            if text is not None and (label == 1.0 or text != region.keyword):
                clips.append(samples)
                texts.append(tuple(text))
                labels.append(label)
    feats, lengths = fbank_batch(clips, n_mels)
    return feats, lengths, texts, torch.tensor(labels)


# --------------------------------------------------------------------------- pre-trained front-end features

CACHED_FRONTENDS = ("gse", "whisper")


@dataclass
class CachedFeatures:
    """One utterance through the front-end: per copy (0 clean, 1 augmented) its (T, D) frames
    and (M, n_mels) log-mel, float16."""

    frames: list
    mels: list


def _cache_key(item: AlignedAudio) -> str:
    digest = hashlib.sha1(f"{item.id}|{len(item.samples)}|{item.samples[:: max(1, len(item.samples) // 64)].tobytes().hex()}".encode())
    return digest.hexdigest()[:20]


def build_feature_cache(
    items: Sequence[AlignedAudio], frontend, folder: str | Path, seed: int = 0, progress: Callable[[int, int], None] | None = None
) -> list[CachedFeatures]:
    """Run the frozen front-end over every utterance (clean, and once augmented) and keep the
    results in `folder` (one .npz per utterance, reused by later runs)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    result = []
    for number, item in enumerate(items):
        path = folder / f"{_cache_key(item)}.npz"
        if path.is_file():
            with np.load(path) as data:
                result.append(CachedFeatures([data["frames0"], data["frames1"]], [data["mel0"], data["mel1"]]))
            continue
        rng = np.random.default_rng([seed, int(_cache_key(item)[:8], 16)])
        outputs = frontend([item.samples, augment(item.samples, rng)])
        frames = [o.frames.astype(np.float16) for o in outputs]
        mels = [o.mel.astype(np.float16) for o in outputs]
        partial = path.with_suffix(".tmp.npz")
        np.savez(partial, frames0=frames[0], frames1=frames[1], mel0=mels[0], mel1=mels[1])
        partial.replace(path)
        result.append(CachedFeatures(frames, mels))
        if progress:
            progress(number + 1, len(items))
    return result


def slice_region(features: CachedFeatures, copy: int, left: float, right: float, frontend: str = "gse"):
    """The frames of a cached utterance whose centres lie in [left, right), and the log-mel
    slice that the front-end would give that clip (gse: mel frame `GSE_HOP * k` under frame k;
    whisper: mel frames 2k and 2k + 1). Returns frames (n, D), mel (M, n_mels) and the times of
    the model's E_a frames on the utterance's clock (gse: the n frames; whisper: every other
    state, E_a being at 40 ms)."""
    from archive_search.embedders.frontends import GSE_HOP, gse_frame_times
    from archive_search.embedders.whisper_encoder import MEL_PER_FRAME, WhisperEncoder

    frames, mel = features.frames[copy], features.mels[copy]
    whisper = frontend == "whisper"
    times = WhisperEncoder.frame_times(len(frames)) if whisper else gse_frame_times(len(frames))
    first = int(np.searchsorted(times, left))
    last = max(first + 1, int(np.searchsorted(times, right)))
    first = min(first, len(frames) - 1)
    last = min(last, len(frames))
    n = last - first
    if whisper:
        mel_slice, model_times = mel[MEL_PER_FRAME * first : MEL_PER_FRAME * last], times[first:last:2]
    else:
        mel_slice, model_times = mel[GSE_HOP * first : GSE_HOP * (first + n - 1) + GSE_HOP // 2], times[first:last]
    return frames[first:last].astype(np.float32), mel_slice.astype(np.float32), model_times


def _more_near_misses(region: Region, first: list[str], count: int, rng: np.random.Generator) -> list[list[str]]:
    """Up to `count` further near misses of the region's keyword, each new and not spoken in it
    (no draws at all when count is 0, so runs with one hard negative replay exactly)."""
    found: list[list[str]] = []
    for _ in range(4 * count):
        if len(found) == count:
            break
        candidate = near_miss_phrase(region.keyword, rng)
        if candidate and candidate != first and candidate not in found and not _contains(region.words, candidate):
            found.append(candidate)
    return found


def make_frontend_batch(
    sampler: RegionSampler, cache: Sequence[CachedFeatures], model: ParallelKWS, rng: np.random.Generator, config: KWSTrainConfig
):
    """gse, whisper: a batch from cached features. Returns frames, lengths, mel, mel_lengths (one per
    region), g2p, text_lengths, labels (B,), positions (B, T) for the PDA targets and
    audio_index (B,): the region of each (text, label) row."""
    regions, pieces = [], []
    for _ in range(config.batch_regions):
        region, hard, easy = sampler.draw(rng, tight=config.tight_regions)
        copy = int(rng.random() < config.augment_prob)
        right = region.offset + len(region.samples) / SAMPLE_RATE
        pieces.append(slice_region(cache[region.source], copy, region.offset, right, config.frontend))
        regions.append((region, hard, easy))
    rows = []  # (piece index, text, label)
    for index, (region, hard, easy) in enumerate(regions):
        rows.append((index, region.keyword, 1.0))
        if hard is not None:
            rows.append((index, hard, 0.0))
            for extra in _more_near_misses(region, hard, config.hard_negatives - 1, rng):
                rows.append((index, extra, 0.0))
        if easy != region.keyword:
            rows.append((index, easy, 0.0))
        if config.audio_negatives and len(regions) > 1:
            other = (index + 1) % len(regions)
            if not _contains(regions[other][0].words, region.keyword):
                rows.append((other, region.keyword, 0.0))
    frames, lengths, mel, mel_lengths = pad_frontend([p[0] for p in pieces], [p[1] for p in pieces])
    positions = torch.zeros(len(rows), max(len(p[2]) for p in pieces))
    for row, (index, text, label) in enumerate(rows):
        if label > 0.5:
            region = regions[index][0]
            tokens = [len(word) + 1 for word in region.keyword]  # characters and </s>, as text_graphemes
            c = alignment_positions(pieces[index][2], region.keyword_spans, tokens)
            positions[row, : len(c)] = torch.from_numpy(c)
    g2p, text_lengths = model.text_batch([tuple(text) for _, text, _ in rows])
    labels = torch.tensor([label for _, _, label in rows])
    audio_index = torch.tensor([index for index, _, _ in rows], dtype=torch.long)
    return frames, lengths, mel, mel_lengths, g2p, text_lengths, labels, positions, audio_index


# --------------------------------------------------------------------------- evaluation


def phrase_trials(items: Sequence[AlignedAudio], n: int, seed: int = 0, tight: bool = True) -> list:
    """LibriPhrase-style trials: per anchor, its text (positive), a near-miss text (hard) and
    another phrase (easy). tight=True crops the phrase as LibriPhrase does; False gives
    engine-like regions with context."""
    from archive_search.evaluation.kws import PhraseTrial

    rng = np.random.default_rng(seed)
    sampler = RegionSampler(items)
    trials = []
    for _ in range(n):
        region, hard, easy = sampler.draw(rng, tight=tight)
        trials.append(PhraseTrial(region.samples, " ".join(region.keyword), True, "all"))
        if hard is not None:
            trials.append(PhraseTrial(region.samples, " ".join(hard), False, "hard"))
        if easy != region.keyword:
            trials.append(PhraseTrial(region.samples, " ".join(easy), False, "easy"))
    return trials


def evaluate_phrases(reranker, items: Sequence[AlignedAudio], n: int = 300, seed: int = 0) -> dict:
    """EER/AUC (all, easy, hard) on tight crops and on engine-like regions."""
    from archive_search.evaluation.kws import RerankerScorer, phrase_detection

    scorer = RerankerScorer(reranker)
    result = {}
    for name, tight in (("tight", True), ("region", False)):
        detection = phrase_detection(phrase_trials(items, n, seed, tight=tight), scorer)
        result[name] = {subset: r.to_dict() for subset, r in detection.items()}
    return result


# --------------------------------------------------------------------------- training


def build_kws(config: KWSTrainConfig, speech_dims: CTCDims | None) -> ParallelKWS:
    switches = {"attention": config.attention, "pda_weight": config.pda_weight}
    if config.frontend == "gse":
        dims = KWSDims.tiny(frontend="gse", **switches) if config.config == "tiny" else KWSDims.gse(**switches)
    elif config.frontend == "whisper":
        from archive_search.embedders.whisper_encoder import WHISPER_DIM, WHISPER_MELS

        tiny = KWSDims.tiny(frontend="whisper", frontend_dim=WHISPER_DIM, frontend_mels=WHISPER_MELS, **switches)
        dims = tiny if config.config == "tiny" else KWSDims.whisper(**switches)
    elif config.config == "tiny":
        dims = KWSDims.tiny(speech=speech_dims, attention=config.attention, pda_weight=config.pda_weight)
    else:
        dims = KWSDims.paper(speech_dims) if config.config == "paper" else KWSDims.fast(speech_dims)
        dims.attention, dims.pda_weight = config.attention, config.pda_weight
    return ParallelKWS(dims)


def default_frontend(name: str, threads: int | None = None, packed: bool = False):
    """The frozen pre-trained front-end of a cached-feature run: "gse" the speech embedding;
    "whisper" whisper tiny.en, whole utterances unpadded (packed=False) for the training cache
    or packed regions as the engine runs it."""
    threads = threads or torch.get_num_threads()
    if name == "gse":
        from archive_search.embedders.frontends import SpeechEmbedding

        return SpeechEmbedding(threads=threads)
    from archive_search.embedders.whisper_encoder import WhisperKWSFrontend

    return WhisperKWSFrontend(threads=threads, packed=packed)


def train_kws(
    config: KWSTrainConfig,
    ctc_checkpoint: str | Path | None,
    manifests: Sequence[str | Path],
    out_dir: str | Path,
    resume: bool = False,
    splits: Sequence[str] = ("train",),
    valid_manifests: Sequence[str | Path] = (),
    valid_splits: Sequence[str] | None = None,
    valid_trials: int = 200,
    progress: Callable[[int, dict], None] | None = None,
    items: Sequence[AlignedAudio] | None = None,
    feature_cache: str | Path | None = None,
    frontend=None,
) -> KWSTrainResult:
    """Train (or resume) ParallelKWS with the conformer of `ctc_checkpoint` frozen, or (config
    .frontend "gse" or "whisper") on cached pre-trained front-end features: `feature_cache` is
    their folder (default OUT/features; one folder per front-end), `frontend` the front-end
    (default frontends.SpeechEmbedding or whisper_encoder.WhisperKWSFrontend)."""
    from archive_search.embedders.rerank import KWSReranker

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    rng = seed_everything(config.seed)
    device = choose_device(config.device)
    items = list(items) if items is not None else load_aligned(load_manifests(manifests, splits))
    sampler = RegionSampler(items)
    valid = load_aligned(load_manifests(valid_manifests, valid_splits)) if valid_manifests else []

    cached = config.frontend in CACHED_FRONTENDS
    cache: list[CachedFeatures] = []
    if cached:
        if frontend is None:
            frontend = default_frontend(config.frontend)
        cache = build_feature_cache(items, frontend, feature_cache or out_dir / "features", config.seed)
        speech = None
    elif ctc_checkpoint is None:
        raise DataError("ParallelKWS on the conformer front-end needs a CTC checkpoint (--ctc)")
    else:
        speech, _ = load_ctc(ctc_checkpoint)
    model = build_kws(config, speech.dims if speech is not None else None)
    if cache and cache[0].frames[0].shape[1] != model.dims.frontend_dim:
        raise DataError(f"{feature_cache or out_dir / 'features'}: the cached frames are {cache[0].frames[0].shape[1]}-d, "
                        f"not {config.frontend}'s {model.dims.frontend_dim}; give each front-end its own --cache")  # fmt: skip
    if resume and (out_dir / LAST_CHECKPOINT).is_file():
        model, _ = load_kws(out_dir / LAST_CHECKPOINT, speech=speech)
    elif speech is not None:
        model.speech.load_state_dict(speech.state_dict())
    model.to(device).train()
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.Adam(trainable, lr=config.lr)  # constant lr, as the paper
    step = 0
    if resume:
        state = load_train_state(out_dir, optimizer, rng)
        step = state["step"] if state else 0
    log = LossLog(out_dir, resume=resume)
    run_info = {"config": asdict(config), "ctc_checkpoint": str(ctc_checkpoint), "manifests": [str(m) for m in manifests],
                "splits": list(splits), "n_utterances": len(items),
                "train_audio_s": float(sum(it.duration for it in items))}  # fmt: skip
    (out_dir / "run.json").write_text(json.dumps(run_info, indent=2))
    generator = torch.Generator().manual_seed(config.seed + step)

    if not cached:
        n_mels = model.dims.speech_dims.n_mels
        batches = batch_stream(lambda generator: make_batch(sampler, generator, config, n_mels), rng, config.workers,
                               config.seed, step)  # fmt: skip
    started, loss_value, smoothed = time.time(), float("nan"), None
    while step < config.steps:
        if cached:
            frames, lengths, mel, mel_lengths, g2p, text_lengths, labels, positions, audio_index = make_frontend_batch(
                sampler, cache, model, rng, config
            )
            output = model(frames.to(device), lengths.to(device), g2p.to(device), text_lengths.to(device),
                           mel.to(device), mel_lengths.to(device), audio_index.to(device))  # fmt: skip
            terms = model.loss(output, labels.to(device), generator, positions=positions.to(device))
        else:
            feats, lengths, texts, labels = next(batches)
            g2p, text_lengths = model.text_batch(texts)
            output = model(feats.to(device), lengths.to(device), g2p.to(device), text_lengths.to(device))
            terms = model.loss(output, labels.to(device), generator)
        optimizer.zero_grad()
        terms["loss"].backward()
        torch.nn.utils.clip_grad_norm_(trainable, config.grad_clip)
        optimizer.step()
        step += 1
        loss_value = float(terms["loss"].item())
        smoothed = loss_value if smoothed is None else 0.95 * smoothed + 0.05 * loss_value
        values = {"loss": loss_value, "bce": terms["bce"].item(), "pda": terms["pda"].item(), "smoothed": smoothed,
                  "elapsed_s": time.time() - started}  # fmt: skip
        log.append(step, values)
        if progress:
            progress(step, values)
        if step % config.save_every == 0 or step == config.steps:
            save_kws(out_dir / LAST_CHECKPOINT, model, extra={"step": step, "train": run_info})
            save_train_state(out_dir, step, optimizer, rng)
            log.plot(("loss", "bce", "smoothed"), title="ParallelKWS loss")
    model.eval()
    valid_result = None
    if valid:
        # the engine encodes packed regions, not the cache's whole utterances
        reranker_frontend = default_frontend("whisper", packed=True) if config.frontend == "whisper" else frontend
        valid_result = evaluate_phrases(KWSReranker(model, frontend=reranker_frontend), valid, valid_trials)
    save_kws(out_dir / LAST_CHECKPOINT, model, extra={"step": step, "valid": valid_result, "train": run_info})
    return KWSTrainResult(
        out_dir=str(out_dir),
        checkpoint=str(out_dir / LAST_CHECKPOINT),
        steps=step,
        final_loss=loss_value,
        wall_s=time.time() - started,
        valid=valid_result,
        n_utterances=len(items),
    )


# --------------------------------------------------------------------------- the model card's figures


def evaluate_fsdd(reranker, folder: str | Path, per_digit: int = 30, seed: int = 0) -> dict:
    """Text-enrolled KWS on spoken digits (every other digit is a negative, as the papers treat
    Speech Commands) and query by example with `score_audio` (one clip of each digit per
    speaker as the query, every other clip scored against it)."""
    from archive_search.audio import trim_silence
    from archive_search.evaluation.kws import BinaryResult, RerankerScorer, clip_kws, load_labelled_clips

    names = {str(i): w for i, w in enumerate("zero one two three four five six seven eight nine".split())}
    clips, labels, paths = load_labelled_clips(folder, max_per_label=per_digit, seed=seed)
    clips = [trim_silence(c) for c in clips]
    text = clip_kws(clips, [names.get(label, label) for label in labels], RerankerScorer(reranker))
    # query by example: per digit, two random clips as queries against all other clips
    qbe = {}
    own = "conformer" if reranker.model.dims.uses_conformer else reranker.qbe_features
    # the reranker's own frames, the speech embedding's beside whisper's (a gse model has it),
    # and pooled log-mel
    gse = ["gse"] if own == "whisper" and reranker.model.dims.frontend == "gse" else []
    for features in [own] + gse + (["fbank"] if own != "fbank" else []):
        scorer = dataclasses.replace(reranker, qbe_features=features)
        rng = np.random.default_rng(seed)  # the same queries for every feature kind
        truth, scores = [], []
        for label in sorted(set(labels)):
            indices = [i for i, l in enumerate(labels) if l == label]
            for query_index in rng.choice(indices, size=min(2, len(indices)), replace=False):
                others = [i for i in range(len(clips)) if i != query_index]
                scores.append(scorer.score_audio([clips[i] for i in others], clips[query_index]))
                truth.append(np.array([labels[i] == label for i in others]))
        qbe[f"qbe_dtw_{features}"] = BinaryResult.from_trials(np.concatenate(truth), np.concatenate(scores)).to_dict()
    text_result = text.to_dict()
    text_result.pop("per_keyword")
    return {"text": text_result, **qbe, "clips": len(clips)}


def evaluate_suite(reranker, manifests: Sequence[str | Path] = (), fsdd: str | Path | None = None,
                   n_trials: int = 300, seed: int = 0, splits: Sequence[str] | None = None) -> dict:
    """LibriPhrase-style EER/AUC per manifest (tight and region) and the fsdd figures."""
    result: dict = {"reranker": reranker.name}
    for manifest in manifests:
        items = load_aligned(load_manifests([manifest], splits))
        result[Path(manifest).name] = evaluate_phrases(reranker, items, n_trials, seed)
    if fsdd:
        result["fsdd"] = evaluate_fsdd(reranker, fsdd, seed=seed)
    return result


# --------------------------------------------------------------------------- the engine's ranking on a dev set


_STOP = {"the", "and", "that", "with", "which", "there", "their", "would", "could", "should", "about", "these", "those"}


def engine_dev_queries(utterances: Sequence, n_text: int = 120, n_audio: int = 60, seed: int = 0):
    """Text queries (words of at least 5 letters and two-word phrases spoken in the dev
    utterances) and query-by-example clips (one spoken instance of a word that is spoken at
    least twice; the other instances are its truth). Returns (text, audio) lists of
    (query, {path: [(start, end), ...]}) and (clip samples, word, truth, own (path, start, end))."""
    from archive_search.audio import load_segment

    rng = np.random.default_rng(seed)
    places: dict[tuple[str, ...], list[tuple[str, float, float]]] = {}
    for utterance, root in utterances:
        path = str(utterance.audio_path(root).resolve())
        words = [w for w in utterance.words if _usable(w.label)]
        for n in (1, 2):
            for i in range(len(words) - n + 1):
                chunk = words[i : i + n]
                key = tuple(w.label.lower() for w in chunk)
                if chunk[-1].end - chunk[0].start <= MAX_KEYWORD_S:
                    places.setdefault(key, []).append((path, chunk[0].start, chunk[-1].end))
    singles = [k for k in places if len(k) == 1 and len(k[0]) >= 5 and k[0] not in _STOP]
    pairs = [k for k in places if len(k) == 2 and sum(map(len, k)) >= 8 and not set(k) & _STOP]
    chosen = [singles[i] for i in rng.permutation(len(singles))[: (2 * n_text) // 3]]
    chosen += [pairs[i] for i in rng.permutation(len(pairs))[: n_text - len(chosen)]]
    truth = lambda key: {p: [(s, e) for q, s, e in places[key] if q == p] for p in {q for q, _, _ in places[key]}}  # noqa: E731
    text = [(" ".join(k), truth(k)) for k in chosen]
    repeated = [k for k in singles if len(places[k]) >= 2]
    audio = []
    for i in rng.permutation(len(repeated))[:n_audio]:
        key = repeated[i]
        own = places[key][int(rng.integers(len(places[key])))]
        rest = [p for p in places[key] if p != own]
        others = {p: [(s, e) for q, s, e in rest if q == p] for p in {q for q, _, _ in rest}}
        audio.append((load_segment(own[0], own[1], own[2]), key[0], others, own))
    return text, audio


def _rank_of_truth(order: Sequence[int], spans: Sequence[tuple[str, float, float]], truth: dict) -> int | None:
    """1-based rank of the first span whose midpoint is within 0.5 s of a true place (NIST STD rule)."""
    for rank, index in enumerate(order, start=1):
        path, start, end = spans[index]
        middle = (start + end) / 2
        if any(abs(middle - (s + e) / 2) <= 0.5 for s, e in truth.get(path, ())):
            return rank
    return None


def engine_rerank_eval(
    archive, rerankers: dict, manifest: str | Path, splits: Sequence[str] | None = None, rerank_regions: int = 10,
    n_text: int = 120, n_audio: int = 60, seed: int = 0, mixes: Sequence[float] = (0.1, 0.25, 0.5),
) -> dict:
    """The engine's first and second stage on an indexed dev archive: per query, the regions
    JMCL retrieves (the engine's own candidates, merging and hit spans) and, for each
    reranker, the ranking of the first `rerank_regions` by its score, by the retrieval
    similarity alone, and by mix * score + (1 - mix) * similarity. Reports top-1 accuracy
    and MRR over the reranked regions (a query whose truth is not among them counts 0), and
    the mean rerank time per query."""
    from archive_search.audio import REGION_CONTEXT_S, load_segment
    from archive_search.embedders.g2p import pronounce
    from archive_search.search.regions import Candidate, merge_regions
    from archive_search.audio import trim_silence

    text_queries, audio_queries = engine_dev_queries(load_manifests([manifest], splits), n_text, n_audio, seed)
    searcher = archive._get_searcher()
    store, models = searcher.store, searcher.models

    def candidates(vector, exclude=None):
        result = store.vectors.search(vector.reshape(1, -1).astype(np.float32), searcher.candidates)[0]
        rows = store.windows(result.ids.tolist())
        found = [Candidate(rows[i].file, rows[i].start, rows[i].end, float(s)) for i, s in zip(result.ids.tolist(), result.scores.tolist()) if i in rows]
        regions = merge_regions(found)
        spans, audio, sims = [], [], []
        for region in regions:
            start, end = region.hit_span()
            if exclude and region.file == exclude[0] and abs((start + end) / 2 - (exclude[1] + exclude[2]) / 2) <= 0.5:
                continue  # query by example: the query's own place is not a hit
            spans.append((region.file, start, end))
            sims.append(region.similarity)
            if len(spans) <= rerank_regions:
                lo = max(0.0, start - REGION_CONTEXT_S)
                audio.append(load_segment(region.file, lo, end + REGION_CONTEXT_S))
        return spans, audio, np.array(sims)

    def summarise(ranks):
        ranks = [r if r is not None else 0 for r in ranks]
        return {"top1": float(np.mean([r == 1 for r in ranks])), "mrr": float(np.mean([1 / r if r else 0 for r in ranks])),
                "in_candidates": float(np.mean([r > 0 for r in ranks]))}  # fmt: skip

    report: dict = {"queries": {"text": len(text_queries), "audio": len(audio_queries)}, "rerank_regions": rerank_regions}
    for kind, queries in (("text", text_queries), ("audio", audio_queries)):
        ranks: dict[str, list] = {"jmcl_all": [], "jmcl": []}
        times: dict[str, list] = {}
        for query in queries:
            if kind == "text":
                words, truth = query
                pronunciation = pronounce(words)
                vector = np.asarray(models.text.embed_phonemes([pronunciation.phonemes]))
                spans, audio, sims = candidates(vector)
            else:
                clip, words, truth, own = query
                clip = trim_silence(clip)
                vector = np.asarray(models.audio.embed_clips([clip]))
                spans, audio, sims = candidates(vector, exclude=own)
            ranks["jmcl_all"].append(_rank_of_truth(np.argsort(-sims, kind="stable"), spans, truth))
            head = min(rerank_regions, len(spans))
            ranks["jmcl"].append(_rank_of_truth(np.argsort(-sims[:head], kind="stable"), spans, truth))
            for name, reranker in rerankers.items():
                if kind == "text" and "-qbe-" in name:
                    continue  # a query-by-example variant scores text as its base reranker does
                started = time.process_time()
                if kind == "text":
                    scores = reranker.score_text(audio, pronunciation.phonemes, pronunciation.text)
                else:
                    scores = reranker.score_audio(audio, clip)
                times.setdefault(name, []).append(time.process_time() - started)
                scores = np.asarray(scores, dtype=np.float64)[:head]
                ranks.setdefault(name, []).append(_rank_of_truth(np.argsort(-scores, kind="stable"), spans, truth))
                for mix in mixes:
                    mixed = mix * scores + (1 - mix) * sims[:head]
                    ranks.setdefault(f"{name}+sim{mix}", []).append(_rank_of_truth(np.argsort(-mixed, kind="stable"), spans, truth))
        report[kind] = {name: summarise(r) for name, r in ranks.items()}
        report[kind]["rerank_cpu_ms"] = {name: 1000 * float(np.mean(t)) for name, t in times.items()}
    return report
