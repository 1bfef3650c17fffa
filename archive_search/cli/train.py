"""`archive-train`: one subcommand per model (jmcl here; ctc and kws join the same group).

Each subcommand is a thin layer over a `train_*` function in archive_search/training/ and
shares the options below (output folder, steps, seed, device, resume, --json).
"""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

import click

from archive_search.errors import ArchiveSearchError


def common_options(function):
    """Options every training subcommand takes; add a new model by decorating its command."""
    options = [
        click.option("--out", "out_dir", type=click.Path(file_okay=False, path_type=Path), required=True,
                     help="Folder for checkpoints (last.pt, train_state.pt), loss.csv and loss.png."),
        click.option("--steps", type=int, default=2000, show_default=True, help="Total optimizer steps."),
        click.option("--seed", type=int, default=0, show_default=True),
        click.option("--device", default="auto", show_default=True, help="cpu, cuda, or auto (CUDA when present)."),
        click.option("--resume", is_flag=True, help="Continue from OUT/last.pt and OUT/train_state.pt."),
        click.option("--save-every", type=int, default=200, show_default=True, help="Checkpoint every N steps."),
        click.option("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)."),
        click.option("--json", "as_json", is_flag=True, help="Print the result as one JSON object."),
    ]  # fmt: skip
    for option in reversed(options):
        function = option(function)
    return function


def _run(as_json: bool, threads: int | None, work):
    import torch

    if threads:
        torch.set_num_threads(threads)
    try:
        result = work()
    except ArchiveSearchError as exc:
        click.echo(f"error: {exc}", err=True)
        raise SystemExit(exc.exit_code) from exc
    if as_json:
        click.echo(json.dumps(asdict(result)))
    else:
        for key, value in asdict(result).items():
            click.echo(f"{key}: {value}")
    return result


@click.group()
def main() -> None:
    """Train the engine's models on manifests made by `archive-data`."""


@main.command()
@click.option("--config", "config_name", type=click.Choice(["fast", "paper", "tiny"]), default="fast", show_default=True)
@click.option("--data", "manifests", multiple=True, required=True, type=click.Path(dir_okay=False, exists=True),
              help="Training manifest (JSON lines); repeat for several.")
@click.option("--split", "splits", multiple=True, default=("train",), show_default=True,
              help="Utterance splits of the manifests to train on; repeat for several.")
@click.option("--batch-words", type=int, default=32, show_default=True, help="N distinct words per batch.")
@click.option("--instances", type=int, default=4, show_default=True, help="M spoken instances per word (>= 2).")
@click.option("--lr", type=float, default=1e-3, show_default=True)
@click.option("--window-prob", type=float, default=0.5, show_default=True,
              help="Share of instances cut as indexer windows (the rest: segments and clips).")
@click.option("--augment-prob", type=float, default=0.5, show_default=True)
@common_options
def jmcl(config_name, manifests, splits, batch_words, instances, lr, window_prob, augment_prob,
         out_dir, steps, seed, device, resume, save_every, threads, as_json):  # fmt: skip
    """JMCL audio and text encoders (CLAP + DWD loss, N words x M instances per batch)."""
    from archive_search.training.jmcl import JMCLTrainConfig, WordBank, load_manifests, train_jmcl

    if instances < 2:
        raise click.BadParameter("the DWD loss needs at least 2 instances per word", param_hint="--instances")
    config = JMCLTrainConfig(
        config=config_name, steps=steps, batch_words=batch_words, instances=instances, lr=lr,
        window_prob=window_prob, augment_prob=augment_prob, seed=seed, save_every=save_every, device=device,
    )  # fmt: skip

    def work():
        bank = WordBank.from_utterances(load_manifests(manifests, splits), max_phrase_words=config.max_phrase_words)

        def progress(step, values):
            if not as_json:
                click.echo(f"step {step}/{steps} loss {values['loss']:.4f} at {values['audio_text']:.4f} "
                           f"aa {values['audio_audio']:.4f} lr {values['lr']:.2e} {values['elapsed_s']:.0f}s", err=True)  # fmt: skip

        return train_jmcl(config, manifests, out_dir, resume=resume, bank=bank, progress=progress)

    _run(as_json, threads, work)


# --------------------------------------------------------------------------- ctc and kws (KWS helper)


@main.command()
@click.option("--config", "config_name", type=click.Choice(["paper", "tiny"]), default="paper", show_default=True)
@click.option("--data", "manifests", multiple=True, required=True, type=click.Path(dir_okay=False, exists=True),
              help="Training manifest with word and phone alignments; repeat for several.")
@click.option("--split", "splits", multiple=True, default=("train",), show_default=True)
@click.option("--valid", "valid_manifests", multiple=True, type=click.Path(dir_okay=False, exists=True),
              help="Manifest for the phoneme error rate at the end (all its splits).")
@click.option("--batch-seconds", type=float, default=60.0, show_default=True, help="Audio seconds per batch.")
@click.option("--max-segment", type=float, default=6.0, show_default=True, help="Longest training stretch, seconds.")
@click.option("--lr", type=float, default=1e-3, show_default=True)
@click.option("--augment-prob", type=float, default=0.5, show_default=True)
@common_options
def ctc(config_name, manifests, splits, valid_manifests, batch_seconds, max_segment, lr, augment_prob,
        out_dir, steps, seed, device, resume, save_every, threads, as_json):  # fmt: skip
    """Phoneme-CTC conformer (the speech embedder of ParallelKWS)."""
    from archive_search.training.ctc import CTCTrainConfig, train_ctc

    config = CTCTrainConfig(config=config_name, steps=steps, batch_seconds=batch_seconds, max_segment_s=max_segment,
                            lr=lr, augment_prob=augment_prob, seed=seed, save_every=save_every, device=device)  # fmt: skip

    def progress(step, values):
        if not as_json and (step % 10 == 0 or step == 1):
            click.echo(f"step {step}/{steps} loss {values['loss']:.4f} (smoothed {values['smoothed']:.4f}) "
                       f"lr {values['lr']:.2e} {values['elapsed_s']:.0f}s", err=True)  # fmt: skip

    _run(as_json, threads, lambda: train_ctc(config, manifests, out_dir, resume=resume, splits=splits,
                                             valid_manifests=valid_manifests, progress=progress))  # fmt: skip


@main.command()
@click.option("--config", "config_name", type=click.Choice(["fast", "paper", "tiny"]), default="fast", show_default=True)
@click.option("--ctc", "ctc_checkpoint", required=True, type=click.Path(dir_okay=False, exists=True),
              help="Trained CTC conformer checkpoint; frozen inside ParallelKWS.")
@click.option("--data", "manifests", multiple=True, required=True, type=click.Path(dir_okay=False, exists=True))
@click.option("--split", "splits", multiple=True, default=("train",), show_default=True)
@click.option("--valid", "valid_manifests", multiple=True, type=click.Path(dir_okay=False, exists=True),
              help="Manifest for LibriPhrase-style EER/AUC at the end (all its splits).")
@click.option("--attention", type=click.Choice(["parallel", "self", "cross"]), default="parallel", show_default=True)
@click.option("--pda-weight", type=float, default=0.3, show_default=True, help="Lambda of the PDA loss; 0 turns it off.")
@click.option("--batch-regions", type=int, default=16, show_default=True,
              help="Regions per batch; each is paired with its text, a near miss and an easy negative.")
@click.option("--lr", type=float, default=1e-3, show_default=True)
@click.option("--augment-prob", type=float, default=0.3, show_default=True)
@common_options
def kws(config_name, ctc_checkpoint, manifests, splits, valid_manifests, attention, pda_weight, batch_regions, lr,
        augment_prob, out_dir, steps, seed, device, resume, save_every, threads, as_json):  # fmt: skip
    """ParallelKWS reranker on regions of continuous speech (conformer frozen)."""
    from archive_search.training.kws import KWSTrainConfig, train_kws

    config = KWSTrainConfig(config=config_name, attention=attention, pda_weight=pda_weight, steps=steps,
                            batch_regions=batch_regions, lr=lr, augment_prob=augment_prob, seed=seed,
                            save_every=save_every, device=device)  # fmt: skip

    def progress(step, values):
        if not as_json and (step % 10 == 0 or step == 1):
            click.echo(f"step {step}/{steps} loss {values['loss']:.4f} bce {values['bce']:.4f} pda {values['pda']:.4f} "
                       f"(smoothed {values['smoothed']:.4f}) {values['elapsed_s']:.0f}s", err=True)  # fmt: skip

    _run(as_json, threads, lambda: train_kws(config, ctc_checkpoint, manifests, out_dir, resume=resume, splits=splits,
                                             valid_manifests=valid_manifests, progress=progress))  # fmt: skip


if __name__ == "__main__":
    main()
