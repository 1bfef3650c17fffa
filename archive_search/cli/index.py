"""archive-index: index folders of audio (incremental), or check and repair an index."""

from __future__ import annotations

import json
from pathlib import Path

import click

from archive_search.api import Archive
from archive_search.cli.common import PARTIAL_FAILURE_EXIT, db_option, domain_errors, index_option, printable, resolve_index
from archive_search.errors import IndexCorruptError
from archive_search.indexer.core import IndexProgress


class _ProgressBar:
    """A tqdm bar over files, showing audio hours and speed (times real time)."""

    def __init__(self, enabled: bool):
        self.enabled = enabled
        self.bar = None

    def __call__(self, progress: IndexProgress) -> None:
        if not self.enabled:
            return
        if self.bar is None:
            from tqdm import tqdm

            self.bar = tqdm(total=progress.files_total, unit="file", dynamic_ncols=True, leave=True)
        self.bar.n = progress.files_done
        self.bar.set_postfix_str(f"{progress.audio_hours:.2f} h audio, {progress.speed:.0f}x real time", refresh=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("folders", nargs=-1, type=click.Path(path_type=str))
@index_option
@db_option
@click.option("--check", is_flag=True, help="Verify that vectors and metadata agree and repair what does not.")
@click.option("--no-transcript", is_flag=True,
              help="Acoustic vectors only, no whisper transcript: about 2x faster on a CPU, but text search loses its transcript channels.")
@click.option("--ray", "ray_address", metavar="auto|ADDRESS",
              help="Decode, embed and transcribe on Ray workers (needs the ray extra): 'auto' joins this machine's "
                   "cluster or starts a local one; ADDRESS names a running cluster. This process stays the one writer.")
@click.option("--json", "as_json", is_flag=True, help="Print the report as one JSON object.")
@click.option("--quiet", "-q", is_flag=True, help="No progress bar.")
@domain_errors
def main(folders: tuple[str, ...], index_dir: Path | None, db: str | None, check: bool, no_transcript: bool,
         ray_address: str | None, as_json: bool, quiet: bool) -> None:  # fmt: skip
    """Index the audio under FOLDERS (wav, flac, mp3, ogg, opus, m4a/aac...) for searching.

    Re-running is incremental: unchanged files are skipped, changed ones re-indexed, and
    files that vanished are removed.
    """
    if not folders and not check:
        raise click.UsageError("give one or more folders to index, or --check")
    archive = Archive.open(resolve_index(index_dir), db=db)
    output: dict = {}
    failed = False
    if folders:
        bar = _ProgressBar(enabled=not quiet and not as_json)
        try:
            report = archive.add(list(folders), progress=bar, transcribe=not no_transcript, ray=ray_address)
        finally:
            bar.close()
        output["index"] = report.to_dict()
        for issue in report.errors:
            click.echo(f"error: {printable(str(issue))}", err=True)
        failed = not report.ok
        if not as_json:
            for issue in report.skipped:
                click.echo(f"skipped: {printable(str(issue))}", err=True)
            click.echo(
                f"{len(report.added)} added, {len(report.updated)} changed, {report.unchanged} unchanged, "
                f"{len(report.removed)} removed, {len(report.errors)} failed; {report.windows_added} windows and "
                f"{report.words_added} transcript words ({report.transcribed} files transcribed) from "
                f"{report.audio_s / 3600:.2f} h of audio in {report.elapsed_s:.1f} s ({report.speed:.0f}x real time)"
            )
    if check:
        result = archive.check(repair=True)
        output["check"] = result.to_dict()
        if not as_json:
            state = "consistent" if result.ok else ("repaired" if result.repaired else "INCONSISTENT")
            click.echo(
                f"check: {result.files} files, {result.windows} windows, {result.vectors} vectors; "
                f"{result.orphan_vectors} orphan vectors, {result.missing_vectors} missing vectors: {state}"
            )
            if result.untranscribed:
                click.echo(f"check: {result.untranscribed} files have no transcript yet; archive-index adds them on its next run")
            for path in result.dropped_files:
                click.echo(f"check: dropped {printable(path)} (re-index to restore it)", err=True)
    if as_json:
        click.echo(json.dumps(output, ensure_ascii=True))
    if failed:
        raise SystemExit(PARTIAL_FAILURE_EXIT)
    if check and not output["check"]["ok"] and not output["check"]["repaired"]:
        raise SystemExit(IndexCorruptError.exit_code)


if __name__ == "__main__":
    main()
