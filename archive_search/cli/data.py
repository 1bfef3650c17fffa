"""`archive-data`: make synthetic corpora and episodes, import real corpora into manifests, check label quality."""

from __future__ import annotations

import json
import signal
import sys
from pathlib import Path

import click

from archive_search.errors import ArchiveSearchError


def _fail(error: ArchiveSearchError) -> None:
    click.echo(f"archive-data: error: {error}", err=True)
    sys.exit(error.exit_code)


def _progress(total_seconds: float, label: str):
    from tqdm import tqdm

    bar = tqdm(total=round(total_seconds / 60, 1), unit="min", desc=label, file=sys.stderr, dynamic_ncols=True)
    return bar, lambda seconds: bar.update(round(seconds / 60, 3))


def _emit(payload: dict, as_json: bool) -> None:
    if as_json:
        click.echo(json.dumps(payload))
    else:
        for key, value in payload.items():
            click.echo(f"{key}: {value}")


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def main() -> None:
    """Training data for archive-search: synthetic speech and real-corpus manifests."""
    # SIGTERM unwinds like Ctrl-C, so worker pools are terminated instead of orphaned
    signal.signal(signal.SIGTERM, lambda number, frame: sys.exit(128 + number))


@main.command()
@click.option("--hours", type=float, required=True, help="Audio hours to generate (about).")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), required=True, help="Output folder.")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--jobs", type=int, default=1, show_default=True, help="Worker processes.")
@click.option("--min-instances", type=int, default=5, show_default=True, help="Spoken instances per training word.")
@click.option("--test-fraction", type=float, default=0.05, show_default=True, help="Share for held-out voices.")
@click.option("--engine", "engines", multiple=True, type=click.Choice(["espeak", "flite", "festival"]))
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
def synth(hours, out, seed, jobs, min_instances, test_fraction, engines, as_json) -> None:
    """Synthesize a multi-voice corpus with word and phone times into OUT (cached, resumable)."""
    from archive_search.data.synth import generate_corpus

    bar, update = _progress(hours * 3600, "synth")
    try:
        report = generate_corpus(out, hours, seed, jobs, min_instances, test_fraction, engines or None, update)
    except ArchiveSearchError as error:
        bar.close()
        _fail(error)
    bar.close()
    _emit(
        {
            "out": str(report.out), "clips": report.clips, "hours": round(report.hours, 4), "splits": report.splits,
            "vocabulary": report.vocabulary, "oov_in_test": report.oov, "shards_made": report.shards_made,
            "shards_cached": report.shards_cached, "seconds": round(report.seconds, 1),
            "audio_hours_per_minute": round(report.hours_per_minute, 4),
        },  # fmt: skip
        as_json,
    )


@main.command()
@click.option("--minutes", type=float, required=True, help="Length of each episode in minutes.")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), required=True)
@click.option("--count", type=int, default=1, show_default=True, help="Number of episodes.")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--jobs", type=int, default=1, show_default=True)
@click.option("--split", type=click.Choice(["train", "test"]), default="train", show_default=True,
              help="'test' speaks with the held-out voices.")  # fmt: skip
@click.option("--json", "as_json", is_flag=True)
def episodes(minutes, out, count, seed, jobs, split, as_json) -> None:
    """Long multi-speaker 'podcast' recordings with word times (for search tests and benchmarks)."""
    from archive_search.data.synth import generate_episodes

    bar, update = _progress(minutes * 60 * count, "episodes")
    try:
        report = generate_episodes(out, minutes, count, seed, jobs, split, update)
    except ArchiveSearchError as error:
        bar.close()
        _fail(error)
    bar.close()
    _emit(
        {"out": str(report.out), "episodes": report.episodes, "hours": round(report.hours, 4),
         "seconds": round(report.seconds, 1), "manifest": str(Path(out) / "manifest.jsonl")},  # fmt: skip
        as_json,
    )


@main.command(name="import")
@click.argument("kind", type=click.Choice(["librispeech", "fsdd", "speechcommands", "libriphrase"]))
@click.argument("src", type=click.Path(path_type=Path))
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), required=True, help="Manifest to write (.jsonl).")
@click.option("--split", default=None, help="Split to record (default: train; libriphrase: test; "
              "speechcommands: from its validation/testing lists).")  # fmt: skip
@click.option("--json", "as_json", is_flag=True)
def import_corpus(kind, src, out, split, as_json) -> None:
    """Turn a real corpus at SRC into a manifest of utterances (LibriSpeech+TextGrids, fsdd,
    Speech Commands folders, a LibriPhrase CSV)."""
    from archive_search.data.loaders import LOADERS
    from archive_search.data.manifest import write_manifest

    try:
        loader = LOADERS[kind]
        utterances = loader(src) if split is None else loader(src, split=split)
        count = write_manifest(out, utterances)
    except ArchiveSearchError as error:
        _fail(error)
    hours = sum(u.duration for u in utterances) / 3600
    aligned = sum(1 for u in utterances if u.words)
    _emit({"manifest": str(out), "utterances": count, "hours": round(hours, 4), "with_word_times": aligned}, as_json)


@main.command(name="pseudo-label")
@click.argument("src", type=click.Path(exists=True, path_type=Path))
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), required=True, help="Manifest to write (.jsonl).")
@click.option("--split", default="train", show_default=True)
@click.option("--threads", type=int, default=2, show_default=True)
@click.option("--min-probability", type=float, default=0.0, show_default=True, help="Drop less certain words.")
@click.option("--json", "as_json", is_flag=True)
def pseudo_label_command(src, out, split, threads, min_probability, as_json) -> None:
    """Noisy word/phone times for untranscribed audio under SRC (faster-whisper tiny.en, offline)."""
    import soundfile as sf

    from archive_search.data.manifest import write_manifest
    from archive_search.data.pseudolabel import audio_files, pseudo_label

    files = audio_files(src)
    total = sum(sf.info(str(f)).duration for f in files)
    bar, update = _progress(total, "pseudo-label")
    try:
        utterances = list(pseudo_label(files, split, threads=threads, min_probability=min_probability, progress=update))
        count = write_manifest(out, utterances)
    except ArchiveSearchError as error:
        bar.close()
        _fail(error)
    bar.close()
    _emit({"manifest": str(out), "utterances": count, "hours": round(total / 3600, 4),
           "words": sum(len(u.words) for u in utterances)}, as_json)  # fmt: skip


@main.command()
@click.argument("manifests", nargs=-1, required=True, type=click.Path(dir_okay=False, path_type=Path))
@click.option("--factor", "factors", type=float, multiple=True, help="Speed factor, repeatable (default: 0.9 and 1.1).")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), required=True,
              help="Folder for the copies' audio/ and manifest.jsonl.")  # fmt: skip
@click.option("--json", "as_json", is_flag=True)
def speed(manifests, factors, out, as_json) -> None:
    """Speed-perturbed copies (Kaldi's 0.9/1.1) of the utterances in MANIFESTS, alignments scaled."""
    from archive_search.data.manifest import iter_manifest, write_manifest
    from archive_search.data.perturb import SPEED_FACTORS, speed_perturb

    try:
        pairs = [(utterance, path.parent) for path in manifests for utterance in iter_manifest(path)]
        result = speed_perturb(pairs, factors or SPEED_FACTORS, out)
        count = write_manifest(out / "manifest.jsonl", result.utterances)
    except ArchiveSearchError as error:
        _fail(error)
    for failure in result.failures:
        click.echo(f"archive-data: skipped {failure.utterance_id}: {failure.reason}", err=True)
    _emit({"manifest": str(out / "manifest.jsonl"), "utterances": count, "skipped": len(result.failures),
           "hours": round(sum(u.duration for u in result.utterances) / 3600, 4)}, as_json)  # fmt: skip


@main.command(name="tts-check")
@click.option("--clips", type=int, default=60, show_default=True, help="Clips per engine.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the corpus plan the clips come from.")
@click.option("--engine", "engines", multiple=True, type=click.Choice(["espeak", "flite", "festival"]))
@click.option("--json", "as_json", is_flag=True)
def tts_check(clips, seed, engines, as_json) -> None:
    """Phone error rate of each TTS engine's own phones against the dictionary pronunciation."""
    from archive_search.data.quality import tts_phone_check

    try:
        report = tts_phone_check(clips, seed=seed, engines=engines or None)
    except ArchiveSearchError as error:
        _fail(error)
    if as_json:
        click.echo(json.dumps(report.to_dict()))
        return
    for engine in report.engines:
        click.echo(f"{engine.engine}: PER {engine.phone_error_rate:.3f} over {engine.clips} clips "
                   f"({engine.edits} edits / {engine.dictionary_phones} dictionary phones, "
                   f"{engine.unmapped_phones} unmapped)")  # fmt: skip
    for engine in report.missing:
        click.echo(f"{engine}: not installed, not checked")


@main.command(name="pseudo-label-wer")
@click.option("--manifest", "manifests", type=click.Path(exists=True, dir_okay=False, path_type=Path), required=True,
              multiple=True, help="Manifest with forced-aligned word times (e.g. an imported LibriSpeech + MFA one); repeatable.")
@click.option("--limit", type=int, default=20, show_default=True, help="Utterances to check.")
@click.option("--every", type=int, default=1, show_default=True, help="Take every N-th utterance with word times.")
@click.option("--threads", type=int, default=1, show_default=True)
@click.option("--json", "as_json", is_flag=True)
def pseudo_label_wer(manifests, limit, every, threads, as_json) -> None:
    """Word error rate and word-time error of Whisper pseudo-labels against aligned words."""
    from archive_search.data.quality import pseudo_label_check

    try:
        report = pseudo_label_check(manifests, limit=limit, every=every, threads=threads)
    except ArchiveSearchError as error:
        _fail(error)
    if as_json:
        click.echo(json.dumps(report.to_dict()))
        return
    click.echo(f"{report.utterances} utterances, {report.audio_s:.0f} s, {report.reference_words} words: "
               f"WER {report.word_error_rate:.3f}")  # fmt: skip
    for name, times in (("raw", report.raw_times), (f"shifted {report.shift_s:+.2f} s", report.shifted_times)):
        click.echo(f"{name}: {times.matched_words} matched words, start error median {times.start_abs_median:.3f} s, "
                   f"p90 {times.start_abs_p90:.3f} s, {100 * times.start_within_100ms:.0f}% within 0.1 s; "
                   f"signed median start {times.start_signed_median:+.3f} s, end {times.end_signed_median:+.3f} s")  # fmt: skip


@main.command()
@click.option("--split", type=click.Choice(["train", "test"]), default="train", show_default=True)
def voices(split) -> None:
    """List the installed base voices of a split."""
    from archive_search.data.tts import voices as list_voices

    for voice in list_voices(split):
        click.echo(voice.speaker)


if __name__ == "__main__":
    main()
