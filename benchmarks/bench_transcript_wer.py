"""Word error rate of the engine's transcriber against faster-whisper's own transcribe(), on a
manifest with reference text (both whisper tiny.en, the same int8 model).

    .venv/bin/python benchmarks/bench_transcript_wer.py --manifest work/data/libri-4088.jsonl \
        --cache work/eval/cache/whisper-transcripts.json

Transcribes every file with `embedders.transcriber.WhisperTranscriber` as the indexer does
(short files packed, long ones cut into pieces; batched, no timestamp tokens) and with the `whisper-exact` peer's faster-whisper transcriber
(read from the evaluation cache when `archive-eval search --peers whisper` made it), and prints
one JSON line: reference words and each transcriber's word error rate.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from archive_search.audio import SAMPLE_RATE, load_audio
from archive_search.data.manifest import read_manifest
from archive_search.embedders.g2p import normalise_text
from archive_search.embedders.transcriber import SHORT_FILE_S, WhisperTranscriber, transcribe_packed
from archive_search.evaluation import peers


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--manifest", type=Path, required=True)
    parser.add_argument("--cache", type=Path, default=None, help="the whisper peer's transcript cache")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    utterances = read_manifest(args.manifest)
    files = [u.audio if Path(u.audio).is_absolute() else str(args.manifest.parent / u.audio) for u in utterances]
    references = [normalise_text(u.text) for u in utterances]
    engine = WhisperTranscriber(threads=args.threads)
    signals = [load_audio(file) for file in files]
    # as the indexer does: files up to SHORT_FILE_S share packed passes, longer ones are cut into pieces
    short = [i for i, signal in enumerate(signals) if len(signal) <= SHORT_FILE_S * SAMPLE_RATE]
    long = sorted(set(range(len(signals))) - set(short))
    engine_words: list = [None] * len(signals)
    for i, words in zip(short, transcribe_packed(engine, [signals[i] for i in short])):
        engine_words[i] = words
    for i, words in zip(long, engine.transcribe_many([signals[i] for i in long])):
        engine_words[i] = words
    peer = peers.WhisperTranscriber(threads=args.threads, cache=args.cache)
    peer.transcribe(files)

    def wer(hypotheses) -> float:
        edits = sum(peers.levenshtein(ref, hyp) for ref, hyp in zip(references, hypotheses))
        return round(edits / max(1, sum(len(ref) for ref in references)), 4)

    print(json.dumps({
        "manifest": str(args.manifest), "files": len(files), "reference_words": sum(len(r) for r in references),
        "engine_wer": wer([[w.token for w in words] for words in engine_words]),
        "faster_whisper_wer": wer([[w[0] for w in peer.words[file]] for file in files]),
    }))  # fmt: skip


if __name__ == "__main__":
    main()
