"""Synthetic training corpora and long multi-speaker episodes, generated with the TTS engines.

`plan_corpus` turns (hours, seed) into a fixed list of `ClipSpec`s: words from a training
vocabulary (frequent words by wordfreq rank, rare CMUdict words and names, each at least
`min_instances` times, spread over different voices), as 1-4 word phrases and template
sentences of up to 12 words. `generate_corpus` renders the plan in shards, each in a fresh
forked process (espeak-ng keeps pitch-flutter state between texts, so a fresh process per
shard makes the output depend only on the seed), and writes `manifest.jsonl`.

Output folder:
    audio/<shard>/<clip>.flac   16 kHz mono
    shards/<shard>-<hash>.jsonl one per finished shard: the cache; re-runs skip these
    manifest.jsonl              every clip (Utterance with words and phones)
    oov_words.txt               the fixed OOV words (never in split "train")
    vocabulary.tsv              training words with their counts and distinct voices
    corpus.json                 seed, hours, voices, measured totals
"""

from __future__ import annotations

import functools
import hashlib
import json
import multiprocessing
import os
import random
import re
import time
from collections import Counter, defaultdict
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Iterator, Sequence

import numpy as np
import soundfile as sf

from archive_search.audio import SAMPLE_RATE
from archive_search.data.manifest import AlignedUnit, Utterance, iter_manifest, write_manifest
from archive_search.data.tts import Synthesis, Voice, synthesize_batch, synthesize_many, voices
from archive_search.errors import DataError

MAX_WORDS = 12
RATE_RANGE = (0.8, 1.35)
PITCH_RANGE = (0.8, 1.25)
ENGINE_WEIGHTS = {"espeak": 0.55, "flite": 0.3, "festival": 0.15}
"""Share of clips per engine: espeak has the most voices and is fastest; festival is slowest."""

SECONDS_PER_WORD = 0.42
"""Average spoken seconds per word across voices and rates, pauses included (measured)."""

SHARD_CLIPS = 40

_RESOURCES = Path(__file__).with_name("resources")

FUNCTION_WORDS = (
    "the a an and or but of to in on at for with from by about as into over after before under "
    "i you he she we they it this that these those my your his her our their its "
    "is was are were be been has have had do does did will would can could should may might must "
    "not no yes very so then there here when where what who which how why all some any each every "
    "more most many much one two three first last new old good great little other just only also"
).split()

TEMPLATES = (
    "the {} is {}", "i think the {} was {}", "we saw the {} and the {}", "there is a {} in the {}",
    "she said that the {} would {}", "have you seen the {} {}", "this is my {}", "they went to {} with the {}",
    "my {} and your {}", "it was a {} {} of {}", "the {} of the {} is {}", "he has a {} {}",
    "do you know the {}", "we will {} the {} tomorrow", "all the {} were {}", "i like {} and {}",
    "our {} came from {}", "what a {} {}", "the {} {} and the {} {}", "when the {} is {} we {}",
    "you can {} the {} with a {}", "her {} was very {}", "where is the {}", "his {} {} {}",
    "there were many {} in {}", "it is not {} but {}", "the first {} was {} {}", "{} {} said the {}",
)  # fmt: skip
"""Sentence frames: function words with content slots, so clips sound like running speech."""


# ----------------------------------------------------------------------------- vocabulary


@functools.lru_cache(maxsize=1)
def oov_words() -> tuple[str, ...]:
    """The fixed out-of-vocabulary words: never in a training split (see resources/oov_words.txt)."""
    lines = (_RESOURCES / "oov_words.txt").read_text(encoding="utf-8").splitlines()
    return tuple(line.strip() for line in lines if line.strip() and not line.startswith("#"))


_PLAIN = re.compile(r"[a-z]{2,14}")


@functools.lru_cache(maxsize=1)
def _cmu_words() -> tuple[str, ...]:
    from archive_search.embedders.g2p import _cmu_dictionary

    return tuple(sorted(w for w in _cmu_dictionary() if _PLAIN.fullmatch(w)))


@functools.lru_cache(maxsize=1)
def frequent_words() -> tuple[str, ...]:
    """CMUdict words in frequency order (wordfreq), or CMUdict order when wordfreq is missing."""
    cmu = set(_cmu_words())
    try:
        import wordfreq
    except ImportError:  # a plain install without the train extra: no frequencies
        return tuple(w for w in _cmu_words() if len(w) <= 6)[:20000]
    return tuple(w for w in wordfreq.top_n_list("en", 40000) if w in cmu)


@functools.lru_cache(maxsize=1)
def rare_words() -> tuple[str, ...]:
    """CMUdict words (many of them names) outside the frequent list, 3-12 letters."""
    frequent = set(frequent_words())
    return tuple(w for w in _cmu_words() if w not in frequent and 3 <= len(w) <= 12)


@dataclass(frozen=True)
class ClipSpec:
    """One clip to synthesize: its id, words, voice (with prosody) and split."""

    id: str
    words: tuple[str, ...]
    voice: Voice
    split: str


@dataclass
class CorpusPlan:
    seed: int
    hours: float
    clips: list[ClipSpec]
    vocabulary: list[str]  # training words
    oov: list[str]  # OOV words used in the test split

    def fingerprint(self) -> str:
        digest = hashlib.sha1()
        for clip in self.clips:
            digest.update(f"{clip.id}|{' '.join(clip.words)}|{clip.voice.id}|{clip.split}\n".encode())
        return digest.hexdigest()[:12]


def _draw_voice(rng: random.Random, pool: dict[str, list[Voice]]) -> Voice:
    engines = [e for e in ENGINE_WEIGHTS if pool.get(e)]
    if not engines:
        raise DataError("no TTS voice is installed (apt-get install espeak-ng flite festival)")
    engine = rng.choices(engines, weights=[ENGINE_WEIGHTS[e] for e in engines])[0]
    base = rng.choice(pool[engine])
    return base.with_prosody(round(rng.uniform(*RATE_RANGE), 2), round(rng.uniform(*PITCH_RANGE), 2))


def _compose(tokens: list[str], rng: random.Random) -> list[list[str]]:
    """Cut a shuffled token stream into 1-4 word phrases and template sentences (<= 12 words)."""
    clips, k = [], 0
    while k < len(tokens):
        if rng.random() < 0.45:
            n = rng.choice((1, 1, 2, 2, 3, 4))
            clips.append(tokens[k : k + n])
            k += n
            continue
        template = rng.choice(TEMPLATES)
        slots = template.count("{}")
        fill = tokens[k : k + slots]
        k += slots
        if len(fill) < slots:
            clips.append(fill)
            break
        words = template.format(*fill).split()
        clips.append(words[:MAX_WORDS])
    return [c for c in clips if c]


def _spread_voices(
    clips: list[list[str]], rng: random.Random, pool: dict[str, list[Voice]], min_speakers: int, exempt: set[str]
) -> list[Voice]:
    """Draw a voice per clip, then redraw until each word is spoken by >= min_speakers voices."""
    assigned = [_draw_voice(rng, pool) for _ in clips]
    where: dict[str, list[int]] = defaultdict(list)
    for index, words in enumerate(clips):
        for word in set(words):
            if word not in exempt:
                where[word].append(index)
    for _ in range(6):
        changed = False
        for word in sorted(where):
            indices = where[word]
            seen: set[str] = set()
            for index in indices:
                speaker = assigned[index].speaker
                if speaker in seen and len(seen) < min_speakers:
                    assigned[index] = _draw_voice(rng, pool)
                    changed = True
                seen.add(assigned[index].speaker)
        if not changed:
            break
    return assigned


def plan_corpus(
    hours: float,
    seed: int = 0,
    min_instances: int = 5,
    test_fraction: float = 0.05,
    engines: Sequence[str] | None = None,
) -> CorpusPlan:
    """Decide every clip of a corpus of about `hours` of audio, deterministically from `seed`."""
    if hours <= 0:
        raise DataError(f"hours must be positive, not {hours}")
    rng = random.Random(seed)
    oov_all = set(oov_words())
    train_pool = {e: [v for v in voices("train", [e])] for e in (engines or ENGINE_WEIGHTS)}
    test_pool = {e: [v for v in voices("test", [e])] for e in (engines or ENGINE_WEIGHTS)}
    function_words = set(FUNCTION_WORDS)

    train_seconds = hours * 3600 * (1 - test_fraction)
    tokens_wanted = train_seconds / SECONDS_PER_WORD
    slot_tokens = int(tokens_wanted * 0.7)  # the rest are template function words
    n_vocab = max(4, int(0.6 * slot_tokens / min_instances))
    frequent = [w for w in frequent_words() if w not in oov_all and w not in function_words]
    rare = [w for w in rare_words() if w not in oov_all]
    n_frequent = min(len(frequent), n_vocab // 2)
    n_rare = min(len(rare), n_vocab - n_frequent)
    # frequent words: the top of the list first (like real speech), some deeper ones mixed in
    top = frequent[: max(n_frequent, 1) * 2]
    chosen_frequent = top[: n_frequent // 2] + rng.sample(top[n_frequent // 2 :], n_frequent - n_frequent // 2)
    chosen_rare = rng.sample(rare, n_rare)
    vocabulary = chosen_frequent + chosen_rare
    tokens = [w for w in vocabulary for _ in range(min_instances)]
    # the remaining slot tokens follow a Zipf-like law over the frequent words
    extra = max(0, slot_tokens - len(tokens))
    if chosen_frequent and extra:
        weights = [1.0 / (rank + 10) for rank in range(len(chosen_frequent))]
        tokens += rng.choices(chosen_frequent, weights=weights, k=extra)
    rng.shuffle(tokens)
    train_clips = _compose(tokens, rng)
    train_voices = _spread_voices(train_clips, rng, train_pool, min_instances - 1, function_words)

    # test split: held-out voices only; IV words plus OOV words, each OOV word 3 times
    test_tokens_wanted = hours * 3600 * test_fraction / SECONDS_PER_WORD * 0.7
    oov_list = sorted(oov_all)
    rng.shuffle(oov_list)
    n_oov = max(1, min(len(oov_list), int(test_tokens_wanted * 0.5 / 3)))
    oov_used = sorted(oov_list[:n_oov])
    test_tokens = [w for w in oov_used for _ in range(3)]
    test_tokens += rng.sample(vocabulary, min(len(vocabulary), max(1, int(test_tokens_wanted) - len(test_tokens))))
    rng.shuffle(test_tokens)
    test_clips = _compose(test_tokens, rng)
    test_voices = _spread_voices(test_clips, rng, test_pool, 2, function_words) if any(test_pool.values()) else []

    specs = [
        ClipSpec(f"syn{seed}-{k:07d}", tuple(words), voice, "train")
        for k, (words, voice) in enumerate(zip(train_clips, train_voices))
    ]
    specs += [
        ClipSpec(f"syn{seed}-t{k:06d}", tuple(words), voice, "test")
        for k, (words, voice) in enumerate(zip(test_clips, test_voices))
    ]
    return CorpusPlan(seed, hours, specs, sorted(set(vocabulary) | (function_words - oov_all)), oov_used)


# ----------------------------------------------------------------------------- rendering


def write_audio(path: Path, samples: np.ndarray) -> None:
    """Write 16 kHz samples as 16-bit PCM (format from the suffix), atomically."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(path.stem + ".tmp" + path.suffix)
    sf.write(str(temporary), np.clip(samples, -1.0, 1.0), SAMPLE_RATE, subtype="PCM_16")
    os.replace(temporary, path)


def _peak_normalise(samples: np.ndarray, peak: float = 0.9) -> np.ndarray:
    top = float(np.abs(samples).max()) if len(samples) else 0.0
    return samples if top == 0.0 else (samples * (peak / top)).astype(np.float32)


def _utterance(spec: ClipSpec, synthesis: Synthesis, audio: str, source: str = "synthetic") -> Utterance:
    return Utterance(
        id=spec.id,
        audio=audio,
        duration=round(synthesis.duration, 4),
        text=synthesis.text,
        words=list(synthesis.words),
        phones=list(synthesis.phones),
        speaker=spec.voice.speaker,
        source=source,
        split=spec.split,
        augment={"tts": asdict(spec.voice)},
    )


def _render_shard(args: tuple[int, list[ClipSpec], str, str]) -> tuple[int, str, float]:
    """Synthesize one shard in this (fresh) process; returns (shard, shard manifest, seconds)."""
    shard, specs, out_dir, shard_name = args
    out = Path(out_dir)
    rendered: dict[str, Utterance] = {}
    # one call: festival runs once per festival voice for the whole shard (its start-up is slow)
    for spec, synthesis in zip(specs, synthesize_batch([(s.words, s.voice) for s in specs])):
        relative = f"audio/{shard:05d}/{spec.id}.flac"
        write_audio(out / relative, _peak_normalise(synthesis.samples))
        rendered[spec.id] = _utterance(spec, synthesis, relative)
    utterances = [rendered[spec.id] for spec in specs]
    manifest = out / "shards" / shard_name
    write_manifest(manifest, utterances)
    return shard, str(manifest), sum(u.duration for u in utterances)


@dataclass
class CorpusReport:
    """What `generate_corpus` did: clips, audio hours, shards made vs cached, wall time."""

    out: Path
    clips: int
    hours: float
    shards_made: int
    shards_cached: int
    seconds: float
    vocabulary: int
    oov: int
    splits: dict[str, int] = field(default_factory=dict)

    @property
    def hours_per_minute(self) -> float:
        return self.hours / (self.seconds / 60) if self.seconds > 0 else float("inf")


def _pool(jobs: int):
    # fork: children start with the parent's dictionaries loaded, and (the parent never
    # having spoken) with fresh espeak-ng state; one task per child keeps shards independent
    return multiprocessing.get_context("fork").Pool(max(1, jobs), maxtasksperchild=1)


def generate_corpus(
    out: str | Path,
    hours: float,
    seed: int = 0,
    jobs: int = 1,
    min_instances: int = 5,
    test_fraction: float = 0.05,
    engines: Sequence[str] | None = None,
    progress: Callable[[float], None] | None = None,
) -> CorpusReport:
    """Render a corpus plan to `out` (see the module doc); shards already on disk are reused.

    `progress` is called with the audio seconds of each finished shard.
    """
    started = time.perf_counter()
    out = Path(out)
    plan = plan_corpus(hours, seed, min_instances, test_fraction, engines)
    (out / "shards").mkdir(parents=True, exist_ok=True)
    tasks, done_manifests = [], {}
    for shard, first in enumerate(range(0, len(plan.clips), SHARD_CLIPS)):
        specs = plan.clips[first : first + SHARD_CLIPS]
        digest = hashlib.sha1("\n".join(f"{s.id}|{' '.join(s.words)}|{s.voice.id}|{s.split}" for s in specs).encode())
        name = f"{shard:05d}-{digest.hexdigest()[:10]}.jsonl"
        if (out / "shards" / name).is_file():
            done_manifests[shard] = out / "shards" / name
        else:
            tasks.append((shard, specs, str(out), name))
    cached = len(done_manifests)
    if tasks:
        _warm_caches()
        with _pool(jobs) as pool:
            for shard, manifest, seconds in pool.imap_unordered(_render_shard, tasks):
                done_manifests[shard] = Path(manifest)
                if progress is not None:
                    progress(seconds)
    utterances = [u for shard in sorted(done_manifests) for u in iter_manifest(done_manifests[shard])]
    write_manifest(out / "manifest.jsonl", utterances)
    (out / "oov_words.txt").write_text("\n".join(oov_words()) + "\n", encoding="utf-8")
    _write_vocabulary(out / "vocabulary.tsv", utterances)
    splits = Counter(u.split for u in utterances)
    total_hours = sum(u.duration for u in utterances) / 3600
    report = CorpusReport(
        out, len(utterances), total_hours, len(tasks), cached, time.perf_counter() - started,
        len(plan.vocabulary), len(plan.oov), dict(splits),
    )  # fmt: skip
    info = {
        "seed": seed, "hours_requested": hours, "hours": round(total_hours, 4), "clips": len(utterances),
        "splits": dict(splits), "min_instances": min_instances, "test_fraction": test_fraction,
        "plan": plan.fingerprint(), "vocabulary": len(plan.vocabulary), "oov_in_test": len(plan.oov),
        "speakers": sorted({u.speaker for u in utterances}),
    }  # fmt: skip
    (out / "corpus.json").write_text(json.dumps(info, indent=1) + "\n", encoding="utf-8")
    return report


def _warm_caches() -> None:
    """Load the pronunciation dictionary once in the parent, so forked workers share it."""
    from archive_search.embedders.g2p import word_phonemes

    word_phonemes("hello")


def _write_vocabulary(path: Path, utterances: Sequence[Utterance]) -> None:
    counts: Counter[str] = Counter()
    speakers: dict[str, set[str]] = defaultdict(set)
    for utterance in utterances:
        if utterance.split != "train":
            continue
        for word in utterance.words:
            counts[word.label] += 1
            speakers[word.label].add(utterance.speaker)
    with open(path, "w", encoding="utf-8") as handle:
        handle.write("word\tcount\tvoices\n")
        for word, count in sorted(counts.items(), key=lambda item: (-item[1], item[0])):
            handle.write(f"{word}\t{count}\t{len(speakers[word])}\n")


def training_vocabulary(corpus_dir: str | Path) -> set[str]:
    """The words of a generated corpus's train split (from its vocabulary.tsv)."""
    path = Path(corpus_dir) / "vocabulary.tsv"
    if not path.is_file():
        raise DataError(f"{path}: not found (generate the corpus with `archive-data synth`)")
    lines = path.read_text(encoding="utf-8").splitlines()[1:]
    return {line.split("\t", 1)[0] for line in lines if line}


# ----------------------------------------------------------------------------- episodes


@dataclass
class EpisodeReport:
    out: Path
    episodes: int
    hours: float
    seconds: float


def _episode_sentences(rng: random.Random) -> Iterator[list[str]]:
    oov = set(oov_words())
    vocabulary = [w for w in frequent_words()[:8000] if w not in oov]
    while True:
        template = rng.choice(TEMPLATES)
        fill = [rng.choice(vocabulary) for _ in range(template.count("{}"))]
        yield template.format(*fill).split()[:MAX_WORDS]


def _render_episode(args: tuple[int, int, float, str, str]) -> tuple[str, float]:
    """Write one episode to disk incrementally: sentences by 2-4 voices with pauses."""
    index, seed, minutes, out_dir, split = args
    rng = random.Random(seed * 1_000_003 + index)
    pool = {e: voices(split, [e]) for e in ENGINE_WEIGHTS}
    hosts = []
    while len(hosts) < rng.randint(2, 4):
        voice = _draw_voice(rng, pool)
        if voice.speaker not in {h.speaker for h in hosts}:
            hosts.append(voice)
    name = f"episode{seed}-{index:03d}"
    out = Path(out_dir)
    path = out / "audio" / f"{name}.flac"
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(name + ".tmp.flac")
    words: list[AlignedUnit] = []
    phones: list[AlignedUnit] = []
    texts: list[str] = []
    turns: list[dict] = []
    written = 0  # samples
    target = int(minutes * 60 * SAMPLE_RATE)
    sentences = _episode_sentences(rng)
    speaker = 0
    with sf.SoundFile(str(temporary), "w", SAMPLE_RATE, 1, subtype="PCM_16", format="FLAC") as handle:
        while written < target:
            if rng.random() < 0.3:  # change turns now and then
                speaker = rng.randrange(len(hosts))
            voice = hosts[speaker]
            batch = [next(sentences) for _ in range(4)]  # festival amortises its start-up
            for synthesis in synthesize_many(batch, voice):
                pause = np.zeros(int(rng.uniform(0.25, 1.2) * SAMPLE_RATE), dtype=np.float32)
                handle.write(pause)
                written += len(pause)
                offset = written / SAMPLE_RATE
                handle.write(_peak_normalise(synthesis.samples, 0.7))
                words += [AlignedUnit(w.label, round(w.start + offset, 4), round(w.end + offset, 4)) for w in synthesis.words]
                phones += [AlignedUnit(p.label, round(p.start + offset, 4), round(p.end + offset, 4)) for p in synthesis.phones]
                texts.append(synthesis.text)
                turns.append({"speaker": voice.speaker, "start": round(offset, 4), "end": round(offset + synthesis.duration, 4)})
                written += len(synthesis.samples)
    os.replace(temporary, path)
    utterance = Utterance(
        id=name, audio=f"audio/{name}.flac", duration=round(written / SAMPLE_RATE, 4), text=" ".join(texts),
        words=words, phones=phones, speaker="+".join(h.speaker for h in hosts), source="synthetic-episode",
        split=split, augment={"turns": turns},
    )  # fmt: skip
    shard = out / "shards" / f"{name}.jsonl"
    write_manifest(shard, [utterance])
    return str(shard), utterance.duration


def generate_episodes(
    out: str | Path,
    minutes: float,
    count: int = 1,
    seed: int = 0,
    jobs: int = 1,
    split: str = "train",
    progress: Callable[[float], None] | None = None,
) -> EpisodeReport:
    """Long multi-speaker recordings ('podcasts') of about `minutes` each, with word times.

    Audio is streamed to FLAC sentence by sentence, so memory stays bounded. Existing
    episodes are reused. `split="test"` uses the held-out voices.
    """
    started = time.perf_counter()
    out = Path(out)
    (out / "shards").mkdir(parents=True, exist_ok=True)
    names = [f"episode{seed}-{index:03d}" for index in range(count)]
    tasks = [
        (index, seed, minutes, str(out), split)
        for index, name in enumerate(names)
        if not (out / "shards" / f"{name}.jsonl").is_file()
    ]
    if tasks:
        _warm_caches()
        with _pool(jobs) as pool:
            for _, seconds in pool.imap_unordered(_render_episode, tasks):
                if progress is not None:
                    progress(seconds)
    utterances = [u for name in names for u in iter_manifest(out / "shards" / f"{name}.jsonl")]
    write_manifest(out / "manifest.jsonl", utterances)
    return EpisodeReport(out, len(utterances), sum(u.duration for u in utterances) / 3600, time.perf_counter() - started)
