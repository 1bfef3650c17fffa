"""archive-search: find where a word or phrase is spoken, by text or by an example clip;
`archive-search serve` runs the web page and HTTP API over the same index.

`archive-search QUERY` runs the default `search` command (click-default-group, as in simonw/llm),
so `archive-search search serve` searches for the word "serve" itself."""

from __future__ import annotations

import json
from pathlib import Path

import click
from click_default_group import DefaultGroup

from archive_search.api import Archive
from archive_search.cli.common import db_option, domain_errors, index_option, printable, resolve_index
from archive_search.cli.serve import serve
from archive_search.embedders.registry import TEXT_SCORINGS, load_models
from archive_search.errors import QueryError
from archive_search.search.engine import Hit, write_clip


def format_table(hits: list[Hit]) -> str:
    """Hits as a readable table: rank, score, start, end, file, and the words around the hit
    (on its own indented line) when the index keeps transcripts."""
    lines = [f"{'#':>3}  {'score':>5}  {'start':>9}  {'end':>9}  file"]
    for rank, hit in enumerate(hits, 1):
        lines.append(
            f"{rank:>3}  {hit.score:5.3f}  {_clock(hit.start):>9}  {_clock(hit.end):>9}  {printable(hit.file)}"
        )
        if hit.text:
            lines.append(f"{'':>5}  \"{printable(hit.text)}\"")
    return "\n".join(lines)


def _clock(seconds: float) -> str:
    minutes, rest = divmod(seconds, 60.0)
    hours, minutes = divmod(int(minutes), 60)
    return f"{hours}:{minutes:02d}:{rest:05.2f}" if hours else f"{minutes}:{rest:05.2f}"


HELP = {"help_option_names": ["-h", "--help"]}


@click.group(cls=DefaultGroup, default="search", default_if_no_args=True, context_settings=HELP)
def main() -> None:
    """Find where a word or phrase is spoken: `archive-search QUERY` (the search command), or
    `archive-search serve` for the web page. To search for the word "serve": archive-search search serve."""


@main.command(context_settings=HELP)
@click.argument("query", required=False)
@click.option("--audio", "audio", type=click.Path(dir_okay=False, path_type=str), help="Search by example: a clip of the word.")
@index_option
@db_option
@click.option("--top", default=10, show_default=True, type=click.IntRange(min=1), help="Number of hits.")
@click.option("--threshold", type=click.FloatRange(0.0, 1.0), default=None, help="Only hits scoring at least this.")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per hit: query, file, start, end, score, text.")
@click.option("--clips", type=click.Path(file_okay=False, path_type=Path), help="Write each hit's audio here as wav.")
@click.option("--text-scoring", type=click.Choice(TEXT_SCORINGS), default=None,
              help="How text hits are reranked: parallelkws (the default, ~0.1 s per query on CPU); parallelkws-whisper "
                   "(ParallelKWS on whisper tiny.en frames: ~0.5 s, better ranking on every held-out set); tts (the "
                   "words spoken by three TTS voices, espeak-ng and flite, and reranked as a spoken query with the "
                   "whisper-frame ParallelKWS mixed in: ~1-2 s, best).")  # fmt: skip
@click.option("--tts", is_flag=True, help="Short for --text-scoring tts.")
@click.option("--verify", "verify_regions", default=0, show_default=True, type=click.IntRange(min=0),
              help="Have whisper check a text query's best N places by forced decoding (about 0.5 s of CPU each; "
                   "needs an index with transcripts and the default text scoring).")  # fmt: skip
@domain_errors
def search(query: str | None, audio: str | None, index_dir: Path | None, db: str | None, top: int,
           threshold: float | None, as_json: bool, clips: Path | None, text_scoring: str | None, tts: bool,
           verify_regions: int) -> None:
    """Search the index for QUERY (a word or short phrase), or for the word spoken in --audio CLIP."""
    if query is not None and audio is not None:
        raise QueryError("give either a text query or --audio, not both")
    if query is None and audio is None:
        raise QueryError("the query is empty: give a word or phrase, or --audio clip.wav")
    if tts and text_scoring not in (None, "tts"):
        raise QueryError(f"--tts is short for --text-scoring tts; it contradicts --text-scoring {text_scoring}")
    text_scoring = "tts" if tts else text_scoring
    if text_scoring is not None and audio is not None:
        raise QueryError("--text-scoring and --tts choose how text queries are scored; an --audio query is already spoken")
    models = load_models(text_scoring=text_scoring) if text_scoring else None  # None: the shipped defaults
    archive = Archive.open(resolve_index(index_dir), models=models, db=db, verify_regions=verify_regions)
    if audio is not None:
        hits = archive.search_audio(audio, top=top, threshold=threshold)
    else:
        hits = archive.search(query, top=top, threshold=threshold)
    if as_json:
        for hit in hits:
            click.echo(json.dumps(hit.to_dict(), ensure_ascii=True))
    elif hits:
        click.echo(format_table(hits))
    else:
        click.echo("no hits", err=True)
    if clips is not None:
        for rank, hit in enumerate(hits, 1):
            written = write_clip(hit, clips, rank)
            if not as_json:
                click.echo(f"clip: {printable(str(written))}", err=True)


main.add_command(serve)

if __name__ == "__main__":
    main()
