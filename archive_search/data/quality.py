"""How good the training labels are: the TTS engines' own phones against the dictionary
(`tts_phone_check`), and Whisper pseudo-labels against forced alignments (`pseudo_label_check`).
Both back figures in docs/data.md; `archive-data tts-check` and `archive-data pseudo-label-wer`
run them.
"""

from __future__ import annotations

import contextlib
import statistics
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Iterator, Sequence

import numpy as np

from archive_search.data import tts
from archive_search.data.manifest import NON_WORD_LABELS, AlignedUnit, Utterance, read_manifest
from archive_search.embedders.g2p import normalise_text
from archive_search.errors import DataError


def _levenshtein():
    try:
        from rapidfuzz.distance import Levenshtein
    except ImportError as exc:  # pragma: no cover - rapidfuzz ships with the train extra
        from archive_search.errors import MissingToolError

        raise MissingToolError("label checks need rapidfuzz (pip install 'archive-search[train]')") from exc
    return Levenshtein


# ----------------------------------------------------------------------------- TTS phones


@dataclass
class EngineCheck:
    """One engine's phones against the dictionary over `clips` clips."""

    engine: str
    clips: int
    dictionary_phones: int
    engine_phones: int
    edits: int
    unmapped_phones: int
    """Engine phones with no ARPAbet mapping ("?"); each also counts as an edit."""

    @property
    def phone_error_rate(self) -> float:
        return self.edits / self.dictionary_phones if self.dictionary_phones else 0.0


@dataclass
class TTSCheckReport:
    seed: int
    engines: list[EngineCheck] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    """Engines that are not installed (or have no voice) and were not checked."""

    def to_dict(self) -> dict:
        return {
            "seed": self.seed,
            "engines": [{**asdict(e), "phone_error_rate": round(e.phone_error_rate, 4)} for e in self.engines],
            "missing": self.missing,
        }


@contextlib.contextmanager
def _recording_engine_phones(record: list[tuple[list[str], list[str]]]) -> Iterator[None]:
    """While active, every synthesis appends (dictionary phones, mapped engine phones).

    The engine phones exist only inside the engines' synth functions, which hand them to
    `tts.dictionary_units`; wrapping that (a module global they look up at call time) reads
    them without changing what is synthesised."""
    original = tts.dictionary_units

    def spy(words, engine, duration):
        target = [p for word in words for p in tts.word_phonemes(word)]
        record.append((target, [phone.label for phone in engine]))
        return original(words, engine, duration)

    tts.dictionary_units = spy
    try:
        yield
    finally:
        tts.dictionary_units = original


def engine_phone_errors(pairs: Sequence[tuple[Sequence[str], Sequence[str]]]) -> tuple[int, int, int, int]:
    """(dictionary phones, engine phones, edits, unmapped) summed over (dictionary, engine) pairs."""
    levenshtein = _levenshtein()
    reference = hypothesis = edits = unmapped = 0
    for target, engine in pairs:
        reference += len(target)
        hypothesis += len(engine)
        edits += levenshtein.distance(list(target), list(engine))
        unmapped += sum(label == "?" for label in engine)
    return reference, hypothesis, edits, unmapped


def tts_phone_check(clips: int = 60, seed: int = 0, engines: Sequence[str] | None = None, hours: float = 1.0) -> TTSCheckReport:
    """Synthesise the first `clips` train clips of each engine in the corpus plan
    (`synth.plan_corpus(hours, seed)`) and compare the engine's own phones (mapped to ARPAbet)
    with the dictionary pronunciation the labels use: the phone error rate is the edit
    distance over the number of dictionary phones."""
    from archive_search.data.synth import plan_corpus

    wanted = list(engines or tts.ENGINES)
    available = tts.available_engines()
    report = TTSCheckReport(seed)
    checkable = [e for e in wanted if available.get(e)]
    report.missing = [e for e in wanted if not available.get(e)]
    if not checkable:
        return report
    plan = plan_corpus(hours, seed=seed, engines=checkable)
    for engine in checkable:
        specs = [c for c in plan.clips if c.voice.engine == engine and c.split == "train"][:clips]
        if not specs:
            report.missing.append(engine)
            continue
        record: list[tuple[list[str], list[str]]] = []
        with _recording_engine_phones(record):
            tts.synthesize_batch([(list(spec.words), spec.voice) for spec in specs])
        reference, hypothesis, edits, unmapped = engine_phone_errors(record)
        report.engines.append(EngineCheck(engine, len(specs), reference, hypothesis, edits, unmapped))
    return report


# ----------------------------------------------------------------------------- pseudo-labels


@dataclass
class TimeErrors:
    """Word time errors (seconds) of matched words: hypothesis minus reference."""

    matched_words: int
    start_abs_median: float
    start_abs_p90: float
    start_within_100ms: float
    """Share of matched words whose start is within 0.1 s."""
    start_signed_median: float
    end_signed_median: float

    @classmethod
    def of(cls, starts: Sequence[float], ends: Sequence[float]) -> "TimeErrors":
        if not starts:
            return cls(0, float("nan"), float("nan"), float("nan"), float("nan"), float("nan"))
        absolute = np.abs(np.asarray(starts))
        return cls(
            len(starts),
            round(float(np.median(absolute)), 4),
            round(float(np.percentile(absolute, 90)), 4),
            round(float(np.mean(absolute <= 0.1 + 1e-9)), 4),
            round(float(statistics.median(starts)), 4),
            round(float(statistics.median(ends)), 4),
        )


@dataclass
class PseudoLabelReport:
    manifests: list[str]
    utterances: int
    audio_s: float
    reference_words: int
    edits: int
    raw_times: TimeErrors
    """Whisper's own word times."""
    shifted_times: TimeErrors
    """After the `shift_s` correction that `pseudo_label` applies."""
    shift_s: float
    labeller: str

    @property
    def word_error_rate(self) -> float:
        return self.edits / self.reference_words if self.reference_words else 0.0

    def to_dict(self) -> dict:
        return {**asdict(self), "word_error_rate": round(self.word_error_rate, 4)}


def reference_words(utterance: Utterance) -> list[AlignedUnit]:
    """The utterance's aligned words without silence/unknown labels, labels normalised like the labeller's."""
    out = []
    for word in utterance.words:
        if word.label.lower() in NON_WORD_LABELS:
            continue
        tokens = normalise_text(word.label) or [word.label.lower()]
        step = word.duration / len(tokens)
        out += [AlignedUnit(t, word.start + k * step, word.start + (k + 1) * step) for k, t in enumerate(tokens)]
    return out


def word_alignment_errors(
    reference: Sequence[AlignedUnit], hypothesis: Sequence[AlignedUnit], shift_s: float = 0.0
) -> tuple[int, list[float], list[float]]:
    """(edits, start errors, end errors) of `hypothesis` words (moved by `shift_s`) against
    `reference`; times only for words the minimal edit alignment pairs as equal."""
    levenshtein = _levenshtein()
    ref_labels, hyp_labels = [w.label for w in reference], [w.label for w in hypothesis]
    starts, ends = [], []
    for block in levenshtein.opcodes(ref_labels, hyp_labels):
        if block.tag != "equal":
            continue
        for offset in range(block.src_end - block.src_start):
            ref, hyp = reference[block.src_start + offset], hypothesis[block.dest_start + offset]
            starts.append(hyp.start + shift_s - ref.start)
            ends.append(hyp.end + shift_s - ref.end)
    return levenshtein.distance(ref_labels, hyp_labels), starts, ends


def pseudo_label_check(
    manifests: str | Path | Sequence[str | Path],
    limit: int = 20,
    every: int = 1,
    threads: int = 1,
    progress: Callable[[float], None] | None = None,
) -> PseudoLabelReport:
    """Pseudo-label every `every`-th utterance of force-aligned manifests (read in the order
    given, up to `limit` utterances) and score the labels against the manifests' words: word
    error rate, and start/end errors of the words both agree on, with and without the
    labeller's time shift."""
    from archive_search.data.pseudolabel import LABELLER, TIME_SHIFT_S, pseudo_label

    manifests = [manifests] if isinstance(manifests, (str, Path)) else list(manifests)
    utterances = [(u, Path(m).parent) for m in manifests for u in read_manifest(m) if u.words]
    chosen = [u for u, _ in utterances[:: max(every, 1)][:limit]]
    roots = [root for _, root in utterances[:: max(every, 1)][:limit]]
    if not chosen:
        raise DataError(f"{', '.join(map(str, manifests))}: no utterances with word times to check pseudo-labels against")
    labelled = pseudo_label([u.audio_path(root) for u, root in zip(chosen, roots)], split="check", threads=threads, progress=progress, shift_s=0.0)
    reference_total = edits = 0
    raw_starts: list[float] = []
    raw_ends: list[float] = []
    audio_s = 0.0
    for truth, label in zip(chosen, labelled):
        reference = reference_words(truth)
        hypothesis = [AlignedUnit(t, 0.0, 0.0) for t in label.text.split()]  # every word, kept or not
        reference_total += len(reference)
        edits += word_alignment_errors(reference, hypothesis)[0]
        _, starts, ends = word_alignment_errors(reference, label.words)
        raw_starts += starts
        raw_ends += ends
        audio_s += truth.duration
    return PseudoLabelReport(
        [str(m) for m in manifests], len(chosen), round(audio_s, 2), reference_total, edits,
        TimeErrors.of(raw_starts, raw_ends),
        TimeErrors.of([s + TIME_SHIFT_S for s in raw_starts], [e + TIME_SHIFT_S for e in raw_ends]),
        TIME_SHIFT_S, LABELLER,
    )  # fmt: skip
