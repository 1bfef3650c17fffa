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
        click.option("--workers", type=click.IntRange(min=0), default=0, show_default=True,
                     help="Data-loader processes drawing batches (0: in the training process); use several on a GPU."),
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
@click.option("--config", "config_name", type=click.Choice(["fast", "gse", "paper", "tiny", "whisper"]), default="fast", show_default=True)
@click.option("--data", "manifests", multiple=True, required=True, type=click.Path(dir_okay=False, exists=True),
              help="Training manifest (JSON lines); repeat for several.")
@click.option("--split", "splits", multiple=True, default=("train",), show_default=True,
              help="Utterance splits of the manifests to train on; repeat for several.")
@click.option("--batch-words", type=int, default=32, show_default=True, help="N distinct words per batch.")
@click.option("--instances", type=int, default=4, show_default=True, help="M spoken instances per word (>= 2).")
@click.option("--lr", type=float, default=1e-3, show_default=True)
@click.option("--window-prob", type=float, default=0.25, show_default=True,
              help="Share of instances cut as indexer windows (the rest: segments and clips).")
@click.option("--augment-prob", type=float, default=0.4, show_default=True,
              help="Share of instances given the data helper's random augmentation chain.")
@click.option("--init", "init_checkpoint", type=click.Path(dir_okay=False, exists=True),
              help="Start from this checkpoint's weights with a fresh optimizer and schedule (fine-tuning); "
                   "same --config. Ignored when --resume finds OUT/last.pt.")
@common_options
def jmcl(config_name, manifests, splits, batch_words, instances, lr, window_prob, augment_prob, init_checkpoint,
         out_dir, steps, seed, device, resume, save_every, threads, workers, as_json):  # fmt: skip
    """JMCL audio and text encoders (CLAP + DWD loss, N words x M instances per batch)."""
    from archive_search.training.jmcl import JMCLTrainConfig, WordBank, load_manifests, train_jmcl

    if instances < 2:
        raise click.BadParameter("the DWD loss needs at least 2 instances per word", param_hint="--instances")
    config = JMCLTrainConfig(
        config=config_name, steps=steps, batch_words=batch_words, instances=instances, lr=lr,
        window_prob=window_prob, augment_prob=augment_prob, seed=seed, save_every=save_every, device=device,
        workers=workers,
    )  # fmt: skip

    def work():
        bank = WordBank.from_utterances(load_manifests(manifests, splits), max_phrase_words=config.max_phrase_words)

        def progress(step, values):
            if not as_json:
                click.echo(f"step {step}/{steps} loss {values['loss']:.4f} at {values['audio_text']:.4f} "
                           f"aa {values['audio_audio']:.4f} lr {values['lr']:.2e} {values['elapsed_s']:.0f}s", err=True)  # fmt: skip

        return train_jmcl(config, manifests, out_dir, resume=resume, bank=bank, progress=progress, init=init_checkpoint)

    _run(as_json, threads, work)


# --------------------------------------------------------------------------- ctc and kws (KWS helper)


@main.command()
@click.option("--config", "config_name", type=click.Choice(["fast", "paper", "tiny"]), default="fast", show_default=True)
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
        out_dir, steps, seed, device, resume, save_every, threads, workers, as_json):  # fmt: skip
    """Phoneme-CTC conformer (the speech embedder of ParallelKWS)."""
    from archive_search.training.ctc import CTCTrainConfig, train_ctc

    config = CTCTrainConfig(config=config_name, steps=steps, batch_seconds=batch_seconds, max_segment_s=max_segment,
                            lr=lr, augment_prob=augment_prob, seed=seed, save_every=save_every, device=device,
                            workers=workers)  # fmt: skip

    def progress(step, values):
        if not as_json and (step % 10 == 0 or step == 1):
            click.echo(f"step {step}/{steps} loss {values['loss']:.4f} (smoothed {values['smoothed']:.4f}) "
                       f"lr {values['lr']:.2e} {values['elapsed_s']:.0f}s", err=True)  # fmt: skip

    _run(as_json, threads, lambda: train_ctc(config, manifests, out_dir, resume=resume, splits=splits,
                                             valid_manifests=valid_manifests, progress=progress))  # fmt: skip


@main.command()
@click.option("--config", "config_name", type=click.Choice(["fast", "paper", "tiny"]), default="fast", show_default=True)
@click.option("--ctc", "ctc_checkpoint", type=click.Path(dir_okay=False, exists=True),
              help="Trained CTC conformer checkpoint; frozen inside ParallelKWS (conformer front-end only).")
@click.option("--frontend", type=click.Choice(["conformer", "gse", "whisper"]), default="conformer", show_default=True,
              help="Path (a): the CTC conformer (paper), Google's pre-trained speech embedding or whisper tiny.en's "
                   "encoder (both cached once).")
@click.option("--cache", "feature_cache", type=click.Path(file_okay=False, path_type=Path),
              help="gse, whisper: folder of cached front-end features (default OUT/features); shared between runs "
                   "of one front-end.")
@click.option("--data", "manifests", multiple=True, required=True, type=click.Path(dir_okay=False, exists=True))
@click.option("--split", "splits", multiple=True, default=("train",), show_default=True)
@click.option("--valid", "valid_manifests", multiple=True, type=click.Path(dir_okay=False, exists=True),
              help="Manifest for LibriPhrase-style EER/AUC at the end (all its splits).")
@click.option("--attention", type=click.Choice(["parallel", "self", "cross"]), default="parallel", show_default=True)
@click.option("--pda-weight", type=float, default=0.3, show_default=True, help="Lambda of the PDA loss; 0 turns it off.")
@click.option("--tight", "tight_regions", is_flag=True,
              help="Ablation: train on tight keyword crops (the paper's LibriPhrase) instead of regions of speech.")
@click.option("--batch-regions", type=int, default=16, show_default=True,
              help="Regions per batch; each is paired with its text, a near miss and an easy negative.")
@click.option("--hard-negatives", type=click.IntRange(min=1), default=1, show_default=True,
              help="gse, whisper: near-miss texts per region.")
@click.option("--lr", type=float, default=1e-3, show_default=True)
@click.option("--augment-prob", type=float, default=0.3, show_default=True)
@common_options
def kws(config_name, ctc_checkpoint, frontend, feature_cache, manifests, splits, valid_manifests, attention, pda_weight,
        tight_regions, batch_regions, hard_negatives, lr, augment_prob, out_dir, steps, seed, device, resume, save_every,
        threads, workers, as_json):  # fmt: skip
    """ParallelKWS reranker on regions of continuous speech (front-end frozen)."""
    from archive_search.training.kws import KWSTrainConfig, train_kws

    if frontend == "conformer" and not ctc_checkpoint:
        raise click.BadParameter("the conformer front-end needs the CTC checkpoint", param_hint="--ctc")
    if frontend == "conformer" and hard_negatives > 1:
        raise click.BadParameter("more near misses per region are drawn for the cached front-ends (gse, whisper) only",
                                 param_hint="--hard-negatives")  # fmt: skip
    config = KWSTrainConfig(config=config_name, frontend=frontend, attention=attention, pda_weight=pda_weight, steps=steps,
                            tight_regions=tight_regions, batch_regions=batch_regions, hard_negatives=hard_negatives, lr=lr,
                            augment_prob=augment_prob, seed=seed, save_every=save_every, device=device, workers=workers)  # fmt: skip

    def progress(step, values):
        if not as_json and (step % 10 == 0 or step == 1):
            click.echo(f"step {step}/{steps} loss {values['loss']:.4f} bce {values['bce']:.4f} pda {values['pda']:.4f} "
                       f"(smoothed {values['smoothed']:.4f}) {values['elapsed_s']:.0f}s", err=True)  # fmt: skip

    _run(as_json, threads, lambda: train_kws(config, ctc_checkpoint, manifests, out_dir, resume=resume, splits=splits,
                                             valid_manifests=valid_manifests, progress=progress,
                                             feature_cache=feature_cache))  # fmt: skip


@main.command("jmcl-eval")
@click.option("--checkpoint", type=click.Path(dir_okay=False, exists=True), required=True)
@click.option("--data", "manifests", multiple=True, type=click.Path(dir_okay=False, exists=True),
              help="Evaluation manifest; repeat for several (each is scored separately).")
@click.option("--split", "splits", multiple=True, default=("test",), show_default=True)
@click.option("--train-data", "train_manifests", multiple=True, type=click.Path(dir_okay=False, exists=True),
              help="Training manifests: their words make the IV set, the rest is OOV.")
@click.option("--train-split", "train_splits", multiple=True, default=("train",), show_default=True)
@click.option("--max-per-word", type=int, default=20, show_default=True)
@click.option("--max-segments", type=int, default=3000, show_default=True)
@click.option("--speed-seconds", type=float, default=0.0, help="Also time embed_spans over this much audio.")
@click.option("--device", default="cpu", show_default=True)
@click.option("--threads", type=int, default=None)
@click.option("--json", "as_json", is_flag=True)
def jmcl_eval(checkpoint, manifests, splits, train_manifests, train_splits, max_per_word, max_segments,
              speed_seconds, device, threads, as_json):  # fmt: skip
    """Word discrimination AP (JMCL protocol: acoustic and cross view, IV/OOV) and encoder speed."""
    import torch

    from archive_search.embedders.jmcl import load_jmcl
    from archive_search.training.jmcl import encoder_speed, load_manifests, word_discrimination_ap

    if threads:
        torch.set_num_threads(threads)
    try:
        audio, text = load_jmcl(checkpoint, device=device)
        vocabulary = None
        if train_manifests:
            vocabulary = {w.label.strip().lower() for u, _ in load_manifests(train_manifests, train_splits) for w in u.words}
        report = {"checkpoint": str(checkpoint), "model": audio.name}
        if manifests:
            report["word_discrimination"] = word_discrimination_ap(
                audio, text, manifests, splits, vocabulary, max_per_word, max_segments
            )
        if speed_seconds > 0:
            report["speed"] = encoder_speed(audio, speed_seconds)
    except ArchiveSearchError as exc:
        click.echo(f"error: {exc}", err=True)
        raise SystemExit(exc.exit_code) from exc
    if as_json:
        click.echo(json.dumps(report))
        return
    click.echo(f"model: {report['model']}")
    for path, result in report.get("word_discrimination", {}).items():
        click.echo(f"{path}: {result['n_segments']} segments, {result['n_words']} words")
        for view in ("acoustic", "cross"):
            for split, values in result[view].items():
                if values:
                    click.echo(f"  {view:8s} {split:4s} AP {100 * values['ap']:.2f}%  "
                               f"(+{values['n_positive']} / -{values['n_negative']} pairs)")  # fmt: skip
    if "speed" in report:
        speed = report["speed"]
        click.echo(f"speed: {speed['real_time_factor']:.0f}x real time, {speed['windows_per_s']:.0f} windows/s "
                   f"({speed['threads']} threads); {speed['real_time_per_cpu_s']:.0f}x per CPU second")  # fmt: skip


@main.command("kws-eval")
@click.option("--ctc", "ctc_checkpoint", type=click.Path(dir_okay=False, exists=True),
              help="The conformer's CTC checkpoint (not needed by a gse-front-end kws.pt).")
@click.option("--kws", "kws_checkpoint", required=True, type=click.Path(dir_okay=False, exists=True))
@click.option("--data", "manifests", multiple=True, type=click.Path(dir_okay=False, exists=True),
              help="Held-out manifest for LibriPhrase-style trials (all splits unless --split); repeat.")
@click.option("--split", "splits", multiple=True, help="Only these splits of the manifests.")
@click.option("--fsdd", type=click.Path(file_okay=False, exists=True), help="Folder of <digit>_<speaker>_<take>.wav clips.")
@click.option("--trials", type=int, default=300, show_default=True, help="Anchors per manifest (each: 1 positive, 2 negatives).")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--threads", type=int, default=None)
@click.option("--text-scoring", type=click.Choice(["parallelkws", "tts"]), default="parallelkws", show_default=True,
              help="Score text by ParallelKWS, or speak it with TTS voices (espeak-ng, flite) and score it as a spoken query.")
def kws_eval(ctc_checkpoint, kws_checkpoint, manifests, splits, fsdd, trials, seed, threads, text_scoring):
    """EER/AUC of a trained reranker: LibriPhrase-style (easy/hard), fsdd digits (text and by example). Prints JSON."""
    import torch

    from archive_search.embedders.rerank import load_reranker
    from archive_search.training.kws import evaluate_suite

    if threads:
        torch.set_num_threads(threads)
    try:
        reranker = load_reranker(ctc_checkpoint, kws_checkpoint, text_scoring=text_scoring)
        result = evaluate_suite(reranker, manifests, fsdd, trials, seed, splits or None)
    except ArchiveSearchError as exc:
        click.echo(f"error: {exc}", err=True)
        raise SystemExit(exc.exit_code) from exc
    click.echo(json.dumps(result, indent=2, default=float))


@main.command("kws-engine-eval")
@click.option("--data", "manifest", required=True, type=click.Path(dir_okay=False, exists=True),
              help="Dev manifest with word times; its audio files are indexed.")
@click.option("--index", "index_dir", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="Folder for the dev audio's indexes (one sub-folder per JMCL model, built on first use).")
@click.option("--jmcl", "jmcl_checkpoint", type=click.Path(dir_okay=False, exists=True),
              help="JMCL checkpoint (default: the shipped one).")
@click.option("--kws", "kws_checkpoints", multiple=True, type=click.Path(dir_okay=False, exists=True),
              help="KWS checkpoint to compare; repeat. A conformer one takes --ctc.")
@click.option("--ctc", "ctc_checkpoint", type=click.Path(dir_okay=False, exists=True))
@click.option("--qbe", "qbe_features", multiple=True, default=(), help="Also compare these QbE DTW features (whisper, gse, fbank, conformer).")
@click.option("--regions", "rerank_regions", type=int, default=10, show_default=True)
@click.option("--queries", type=int, default=120, show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--threads", type=int, default=1, show_default=True)
def kws_engine_eval(manifest, index_dir, jmcl_checkpoint, kws_checkpoints, ctc_checkpoint, qbe_features, rerank_regions,
                    queries, seed, threads):  # fmt: skip
    """The engine's ranking on a dev set: JMCL alone against JMCL + each reranker (and mixes). Prints JSON."""
    import dataclasses

    import torch

    from archive_search import Archive
    from archive_search.data.manifest import iter_manifest
    from archive_search.embedders.jmcl import load_jmcl
    from archive_search.embedders.registry import CHECKPOINT_DIR, JMCL_FILE, ModelBundle
    from archive_search.embedders.rerank import load_reranker
    from archive_search.training.kws import engine_rerank_eval

    torch.set_num_threads(threads)
    try:
        audio, text = load_jmcl(jmcl_checkpoint or CHECKPOINT_DIR / JMCL_FILE, "cpu")
        archive = Archive.open(index_dir / audio.name, ModelBundle(audio.name, audio, text, None))  # one index per JMCL model
        root = Path(manifest).parent
        archive.add(sorted({str(u.audio_path(root).resolve()) for u in iter_manifest(manifest)}))
        rerankers = {}
        for path in kws_checkpoints:
            reranker = load_reranker(ctc_checkpoint, path)
            rerankers[Path(path).parent.name or Path(path).stem] = reranker
            for features in qbe_features:
                if features != reranker.qbe_features:
                    try:
                        rerankers[f"{Path(path).parent.name}-qbe-{features}"] = dataclasses.replace(reranker, qbe_features=features)
                    except ArchiveSearchError:
                        pass
        result = engine_rerank_eval(archive, rerankers, manifest, None, rerank_regions, queries, queries // 2, seed)
    except ArchiveSearchError as exc:
        click.echo(f"error: {exc}", err=True)
        raise SystemExit(exc.exit_code) from exc
    click.echo(json.dumps(result, indent=2, default=float))


@main.command("kws-export")
@click.option("--checkpoint", type=click.Path(dir_okay=False, exists=True), required=True, help="A KWS training last.pt.")
@click.option("--out", "out_path", type=click.Path(dir_okay=False, path_type=Path), required=True,
              help="Where to write the shipped file (e.g. archive_search/checkpoints/kws.pt).")
def kws_export(checkpoint, out_path):
    """Write a ParallelKWS checkpoint for shipping: trained weights only, float16, versioned by a weight hash."""
    import hashlib

    from archive_search.embedders.parallelkws import load_kws, save_kws, trainable_state

    try:
        model, extra = load_kws(checkpoint)
        digest = hashlib.sha256(repr(model.dims).encode())
        for key, tensor in sorted(trainable_state(model).state_dict().items()):
            digest.update(key.encode() + tensor.detach().half().numpy().tobytes())
        version = f"{model.dims.frontend}-{digest.hexdigest()[:10]}"
        keep = {k: extra[k] for k in ("step", "valid", "train") if k in extra}
        path = save_kws(out_path, model, extra={**keep, "version": version, "exported_from": str(checkpoint)}, half=True)
    except ArchiveSearchError as exc:
        click.echo(f"error: {exc}", err=True)
        raise SystemExit(exc.exit_code) from exc
    click.echo(f"{path}: parallelkws {version}, {path.stat().st_size / 1e6:.1f} MB")


@main.command("jmcl-export")
@click.option("--checkpoint", type=click.Path(dir_okay=False, exists=True), required=True, help="A training last.pt.")
@click.option("--out", "out_path", type=click.Path(dir_okay=False, path_type=Path), required=True,
              help="Where to write the shipped file (e.g. archive_search/checkpoints/jmcl.pt).")
@click.option("--full", is_flag=True, help="Keep float32 weights (default: float16, half the size).")
def jmcl_export(checkpoint, out_path, full):
    """Write a JMCL checkpoint for shipping: weights only (no optimizer state), float16 by default."""
    from archive_search.embedders.jmcl import model_name, read_jmcl, save_jmcl

    try:
        model, extra = read_jmcl(checkpoint)
        path = save_jmcl(out_path, model, extra={**extra, "exported_from": str(checkpoint)}, half=not full)
    except ArchiveSearchError as exc:
        click.echo(f"error: {exc}", err=True)
        raise SystemExit(exc.exit_code) from exc
    click.echo(f"{path}: {model_name(model)}, {path.stat().st_size / 1e6:.1f} MB")


if __name__ == "__main__":
    main()
