"""archive-eval: measure search quality, and the model-card protocols, on data with ground truth.

    archive-eval search --manifest corpus.jsonl --out results/      # NIST STD metrics, engine + peers
    archive-eval calibrate --manifest dev.jsonl --out work/cal     # fit score calibration on DEV data
    archive-eval fusion -m dev1.jsonl -m dev2.jsonl --out work/fus  # channel ablation + fit the fusion on DEV data
    archive-eval clips ../shared/data/fsdd --out results/fsdd       # text-enrolled clip KWS, EER/AUC/DET
    archive-eval words --manifest corpus.jsonl --vocab train.txt    # JMCL word discrimination AP
    archive-eval windowed --manifest corpus.jsonl --vocab train.txt # JMCL Table II windowed EER
    archive-eval frontends --manifest corpus.jsonl -f logmel -f whisper # frame front-ends, DTW word AP
"""

from __future__ import annotations

import importlib
import json
import shlex
import sys
from pathlib import Path

import click

from archive_search.cli.common import domain_errors
from archive_search.embedders.registry import TEXT_SCORINGS
from archive_search.errors import EvaluationError

CONTEXT = {"help_option_names": ["-h", "--help"]}


def _command_line() -> str:
    return "archive-eval " + shlex.join(sys.argv[1:])


def load_bundle(models_dir: Path | None, factory: str | None):
    """The models to evaluate: `--bundle module:function` (returns a ModelBundle), else the
    checkpoints in `--models DIR`, else the shipped defaults; with `--text-scoring`."""
    if factory:
        module_name, _, attribute = factory.partition(":")
        try:
            return getattr(importlib.import_module(module_name), attribute)()
        except (ImportError, AttributeError) as exc:
            raise EvaluationError(f"--bundle {factory}: {exc}") from exc
    from archive_search.embedders.registry import load_models

    context = click.get_current_context(silent=True)
    text_scoring = context.meta.get("text_scoring", "parallelkws") if context else "parallelkws"
    return load_models(models_dir, text_scoring=text_scoring)


def _remember(context: click.Context, parameter: click.Parameter, value):
    context.meta[parameter.name] = value


def models_options(function):
    function = click.option("--text-scoring", type=click.Choice(TEXT_SCORINGS), default="parallelkws", show_default=True,
                            expose_value=False, callback=_remember,
                            help="How the reranker scores text queries: ParallelKWS on speech-embedding frames (kws.pt) "
                                 "or on whisper frames (kws-whisper.pt), or the words spoken by TTS voices and scored "
                                 "as a spoken query.")(function)  # fmt: skip
    function = click.option("--bundle", "factory", default=None, hidden=True, help="module:function returning a ModelBundle.")(function)
    return click.option("--models", "models_dir", type=click.Path(file_okay=False, path_type=Path), default=None,
                        help="Checkpoint folder (default: the shipped models).")(function)  # fmt: skip


def corpus_options(function):
    function = click.option("--oov", type=click.Path(dir_okay=False, path_type=Path), default=None,
                            help="Or: the words kept out of training, one per line (all others are IV).")(function)  # fmt: skip
    function = click.option("--vocab", type=click.Path(dir_okay=False, path_type=Path), default=None,
                            help="Training vocabulary, one word per line: splits results into IV and OOV.")(function)  # fmt: skip
    function = click.option("--root", type=click.Path(file_okay=False, path_type=Path), default=None,
                            help="Folder the manifest's audio paths are relative to (default: the manifest's).")(function)  # fmt: skip
    return click.option("--manifest", required=True, type=click.Path(dir_okay=False, path_type=Path),
                        help="JSON-lines manifest of utterances with word times (archive-data import ...).")(function)  # fmt: skip


def query_draw_options(words: int, phrases: int, absent: int, spoken: int, per: str = ""):
    """--words/--phrases/--absent/--spoken/--top/--seed: how many queries of each kind to draw."""

    def decorate(function):
        for name, default, what in reversed((("words", words, "Single-word queries"), ("phrases", phrases, "2-3 word phrase queries"),
                                             ("absent", absent, "Absent-term queries"), ("spoken", spoken, "Spoken-query probes"))):  # fmt: skip
            function = click.option(f"--{name}", f"n_{name}", default=default, show_default=True, help=f"{what} to draw{per}.")(function)
        function = click.option("--top", default=50, show_default=True, type=click.IntRange(min=1), help="Hits asked for per query.")(function)
        return click.option("--seed", default=0, show_default=True)(function)

    return decorate


def _emit(data: dict, as_json: bool, text: str) -> None:
    from archive_search.evaluation.report import clean_json

    click.echo(json.dumps(clean_json(data)) if as_json else text)


@click.group(context_settings=CONTEXT)
def main() -> None:
    """Evaluate archive-search against ground truth (and peer systems on the same data)."""


@main.command(context_settings=CONTEXT)
@corpus_options
@models_options
@click.option("--out", required=True, type=click.Path(file_okay=False, path_type=Path), help="Report folder.")
@click.option("--queries", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Query file (one per line, or JSON lines); default: drawn from the transcript.")  # fmt: skip
@click.option("--index", "index_dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Index folder for the engine (default: OUT/index).")  # fmt: skip
@click.option("--peers", default="jmcl-only,whisper,pocketsphinx,dtw", show_default=True,
              help="Comma-separated peers run beside the engine; a peer whose package is missing is skipped.")  # fmt: skip
@click.option("--no-engine", is_flag=True, help="Run only the peers (e.g. before trained models exist).")
@click.option("--cache", "cache_dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Where peers keep work between runs, e.g. whisper transcripts (default: OUT/cache).")  # fmt: skip
@click.option("--threshold", type=click.FloatRange(0, 1), default=None, help="The engine's decision threshold for ATWV.")
@click.option("--top", default=50, show_default=True, type=click.IntRange(min=1), help="Hits asked for per query.")
@click.option("--verify", "verify_regions", default=0, show_default=True, type=click.IntRange(min=0),
              help="The engine verifies each text query's best N regions by whisper forced decoding (archive-search --verify).")  # fmt: skip
@click.option("--words", "n_words", default=40, show_default=True, help="Single-word queries to draw.")
@click.option("--phrases", "n_phrases", default=20, show_default=True, help="2-3 word phrase queries to draw.")
@click.option("--absent", "n_absent", default=20, show_default=True, help="Absent-term queries to draw.")
@click.option("--spoken", "n_spoken", default=20, show_default=True, help="Spoken-query probes to draw.")
@click.option("--seed", default=0, show_default=True)
@click.option("--title", default="Search evaluation", show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print the summary rows as JSON.")
@domain_errors
def search(manifest, root, vocab, oov, models_dir, factory, out, queries, index_dir, peers, no_engine, cache_dir, threshold, top,
           verify_regions, n_words, n_phrases, n_absent, n_spoken, seed, title, as_json) -> None:  # fmt: skip
    """Index the manifest's audio, run every query on the engine and the peers, write a report."""
    from archive_search.evaluation import harness, peers as peer_systems
    from archive_search.evaluation.report import write_search_report

    corpus = harness.load_corpus(manifest, root)
    vocabulary = harness.load_vocabulary(vocab, oov)
    if queries:
        query_list = harness.read_queries(queries, corpus, vocabulary)
    else:
        query_list = harness.make_queries(corpus, vocabulary, n_words, n_phrases, n_absent, n_spoken, seed)
    out.mkdir(parents=True, exist_ok=True)
    harness.write_queries(out / "queries.jsonl", query_list)
    engine = None
    if not no_engine:
        engine = harness.EngineSystem(index_dir or out / "index", load_bundle(models_dir, factory), threshold=threshold,
                                      verify_regions=verify_regions)  # fmt: skip
    systems = ([engine] if engine else []) + peer_systems.build_peers(
        [p.strip() for p in peers.split(",") if p.strip()], engine, cache_dir=cache_dir or out / "cache")
    evaluation = harness.evaluate(corpus, query_list, systems, top=top)
    report = write_search_report(evaluation, out, title=title, command=_command_line())
    rows = {"report": str(report), "summaries": [vars(s) for s in evaluation.summaries],
            "systems": evaluation.to_dict()["systems"]}  # fmt: skip
    _emit(rows, as_json, report.read_text(encoding="utf-8"))


@main.command(context_settings=CONTEXT)
@corpus_options
@models_options
@click.option("--out", required=True, type=click.Path(file_okay=False, path_type=Path), help="Folder for the index and queries.")
@click.option("--write", "write_to", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Calibration file to add this scorer's entry to (default: OUT/calibration.json).")  # fmt: skip
@query_draw_options(80, 30, 30, 60)
@click.option("--json", "as_json", is_flag=True)
@domain_errors
def calibrate(manifest, root, vocab, oov, models_dir, factory, out, write_to, n_words, n_phrases, n_absent, n_spoken, top,
              seed, as_json) -> None:  # fmt: skip
    """Fit the score calibration (decision threshold per query kind) on a DEVELOPMENT archive."""
    from archive_search.evaluation import harness
    from archive_search.evaluation.calibrate import calibrate_engine
    from archive_search.search.calibration import save_calibration

    corpus = harness.load_corpus(manifest, root)
    query_list = harness.make_queries(corpus, harness.load_vocabulary(vocab, oov), n_words, n_phrases, n_absent, n_spoken, seed)
    out.mkdir(parents=True, exist_ok=True)
    harness.write_queries(out / "queries.jsonl", query_list)
    calibration = calibrate_engine(corpus, query_list, load_bundle(models_dir, factory), out / "index", top=top,
                                   data=f"{_command_line()} ({corpus.speech_seconds / 3600:.2f} h)")  # fmt: skip
    path = save_calibration(write_to or out / "calibration.json", calibration)
    data = {"scorer": calibration.scorer, "file": str(path), "kinds": {k: vars(v) for k, v in calibration.kinds.items()}}
    text = "\n".join(f"{kind}: raw threshold {c.threshold:.4f}, slope {c.slope:.2f}, dev MTWV {c.dev_mtwv:.3f} "
                     f"({c.n_detections} detections)" for kind, c in calibration.kinds.items())  # fmt: skip
    _emit(data, as_json, f"{calibration.scorer} -> {path}\n{text}")


@main.command(context_settings=CONTEXT)
@click.option("--manifest", "-m", "manifests", multiple=True, required=True, type=click.Path(dir_okay=False, path_type=Path),
              help="A DEVELOPMENT archive: JSON-lines manifest of utterances with word times (repeatable).")  # fmt: skip
@models_options
@click.option("--out", required=True, type=click.Path(file_okay=False, path_type=Path), help="Folder for the indexes and the report.")
@click.option("--write", "write_to", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Fusion file to add this scorer's entry to (default: OUT/fusion.json).")  # fmt: skip
@query_draw_options(60, 20, 20, 30, per=" per archive")
@click.option("--reuse-regions", is_flag=True, help="Refit from OUT/regions.pickle (the labelled regions of an earlier run) instead of searching again.")
@click.option("--verify", "verify_count", default=0, show_default=True, type=click.IntRange(min=0),
              help="Also verify each text query's best N regions by whisper forced decoding (about 0.5 s each), and fit "
                   "the fusion for verified regions (`archive-search --verify`). Kept in OUT/regions.pickle.")  # fmt: skip
@click.option("--json", "as_json", is_flag=True)
@domain_errors
def fusion(manifests, models_dir, factory, out, write_to, n_words, n_phrases, n_absent, n_spoken, top, seed, reuse_regions,
           verify_count, as_json) -> None:  # fmt: skip
    """Channel ablation (cross-validated by query) and the engine's fusion, fitted on DEVELOPMENT archives."""
    import pickle

    from archive_search.api import Archive
    from archive_search.evaluation import harness
    from archive_search.evaluation.fusion import ablation, collect, fit_engine_fusions, query_groups, rare_word, verify_regions
    from archive_search.search.calibration import scorer_name
    from archive_search.search.fusion import save_fusions

    models = load_bundle(models_dir, factory)
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    acoustic = None
    regions_file = out / "regions.pickle"  # a cache this command wrote itself; never read from elsewhere
    if reuse_regions:
        rows = pickle.loads(regions_file.read_bytes())
        # today's calibrated acoustic scores need only the models; any of the indexes serves
        acoustic = Archive.open(out / Path(manifests[0]).stem / "index", models).searcher(channels=("vectors",))
    for manifest in manifests if not reuse_regions else ():
        corpus = harness.load_corpus(manifest)
        name = Path(manifest).stem
        queries = harness.make_queries(corpus, None, n_words, n_phrases, n_absent, n_spoken, seed)
        harness.write_queries(out / f"{name}-queries.jsonl", queries)
        archive = Archive.open(out / name / "index", models)
        report = archive.add(corpus.files)
        if report.errors:
            raise EvaluationError(f"{manifest}: {len(report.errors)} files failed to index, e.g. {report.errors[0]}")
        acoustic = archive.searcher(channels=("vectors",))
        rows += collect(archive.searcher(), acoustic, corpus, queries, name, top=top)
    if not reuse_regions:
        regions_file.write_bytes(pickle.dumps(rows))
    for first in range(0, len(rows) if verify_count else 0, 50):  # slow: saved as it goes, so a re-run resumes
        if verify_regions(rows[first : first + 50], acoustic, verify_count):
            regions_file.write_bytes(pickle.dumps(rows))  # the verifier's columns join the cache
    result = ablation(rows, query_groups(rare_word()), acoustic)
    reranker = models.reranker
    scorer = scorer_name(models.name, reranker.name if reranker else None)
    fusions = fit_engine_fusions(rows, f"{_command_line()} ({len(rows)} development queries)")
    path = save_fusions(write_to or out / "fusion.json", scorer, fusions)
    table = result.table()
    (out / "ablation.md").write_text(f"`{_command_line()}`\n\n{table}\n", encoding="utf-8")
    data = {"scorer": scorer, "file": str(path), "rows": [vars(r) for r in result.rows],
            "fusions": {k: vars(f) for k, f in fusions.items()}}  # fmt: skip
    (out / "ablation.json").write_text(json.dumps(data, default=str, indent=1), encoding="utf-8")
    _emit(data, as_json, f"{table}\n\n{scorer} -> {path}")


@main.command("tune-pocketsphinx", context_settings=CONTEXT)
@corpus_options
@click.option("--words", "n_words", default=40, show_default=True, help="Single-word queries to draw.")
@click.option("--phrases", "n_phrases", default=20, show_default=True, help="2-3 word phrase queries to draw.")
@click.option("--seed", default=0, show_default=True)
@click.option("--json", "as_json", is_flag=True)
@domain_errors
def tune_pocketsphinx(manifest, root, vocab, oov, n_words, n_phrases, seed, as_json) -> None:
    """Pick PocketSphinx's keyphrase threshold by ATWV on a DEVELOPMENT archive (peer tuning)."""
    from archive_search.evaluation import harness
    from archive_search.evaluation.peers import tune_pocketsphinx_threshold

    corpus = harness.load_corpus(manifest, root)
    query_list = harness.make_queries(corpus, harness.load_vocabulary(vocab, oov), n_words, n_phrases, 0, 0, seed)
    best, atwv = tune_pocketsphinx_threshold(corpus, query_list)
    data = {"best": best, "atwv": {f"{t:g}": v for t, v in atwv.items()}}
    _emit(data, as_json, "\n".join(f"{t:g}: ATWV {v:.3f}" for t, v in atwv.items()) + f"\nbest: {best:g}")


@main.command(context_settings=CONTEXT)
@click.argument("folder", type=click.Path(file_okay=False, exists=True, path_type=Path))
@models_options
@click.option("--out", required=True, type=click.Path(file_okay=False, path_type=Path), help="Report folder.")
@click.option("--max-per-label", type=int, default=None, help="Clips per label at most (seeded sample).")
@click.option("--seed", default=0, show_default=True)
@click.option("--json", "as_json", is_flag=True)
@domain_errors
def clips(folder, models_dir, factory, out, max_per_label, seed, as_json) -> None:
    """Text-enrolled KWS on a folder of <label>_*.wav clips: each clip against every label's word."""
    from archive_search.evaluation.kws import EmbeddingScorer, RerankerScorer, clip_kws, load_labelled_clips, mixed_clip_kws
    from archive_search.evaluation.report import markdown_table, plot_binary_det

    bundle = load_bundle(models_dir, factory)
    audio, labels, _ = load_labelled_clips(folder, max_per_label, seed)
    scorers = [EmbeddingScorer(bundle.audio, bundle.text)]
    names = ["jmcl (cosine)"]
    if bundle.reranker is not None:
        scorers.append(RerankerScorer(bundle.reranker))
        names.append(f"{getattr(bundle.reranker, 'text_scoring', 'parallelkws')} (rerank)")
    results = {name: clip_kws(audio, labels, scorer) for name, scorer in zip(names, scorers)}
    if bundle.reranker is not None:
        weight = float(getattr(bundle.reranker, "text_weight", 1.0))
        results[f"engine ({weight:g} x rerank + {1 - weight:g} x cosine)"] = mixed_clip_kws(*results.values(), weight)
    out.mkdir(parents=True, exist_ok=True)
    plot_binary_det({n: r.pooled.curve for n, r in results.items()}, out / "det.png", title=f"Clip KWS on {folder.name}")
    rows = [[n, r.pooled.eer * 100, r.mean_keyword_eer * 100, r.pooled.auc, r.pooled.n_positive, r.pooled.n_negative] for n, r in results.items()]
    text = "\n".join([
        f"# Clip KWS: {folder}", "", "```", _command_line(), "```", "",
        f"{len(audio)} clips, {len(set(labels))} keywords; every clip scored against every keyword's text.", "",
        markdown_table(["scorer", "pooled EER %", "mean keyword EER %", "AUC", "positive", "negative"], rows), "",
        "![DET](det.png)", "",
    ])  # fmt: skip
    (out / "report.md").write_text(text, encoding="utf-8")
    data = {n: r.to_dict() for n, r in results.items()}
    (out / "results.json").write_text(json.dumps(data, indent=1), encoding="utf-8")
    _emit(data, as_json, text)


@main.command(context_settings=CONTEXT)
@corpus_options
@models_options
@click.option("--max-segments", default=3000, show_default=True, help="Word segments at most (seeded sample).")
@click.option("--max-per-word", default=None, type=int, help="Segments per word at most.")
@click.option("--seed", default=0, show_default=True)
@click.option("--json", "as_json", is_flag=True)
@domain_errors
def words(manifest, root, vocab, oov, models_dir, factory, max_segments, max_per_word, seed, as_json) -> None:
    """JMCL word discrimination: AP over all pairs of 0.5-2 s word segments (acoustic and cross view)."""
    from archive_search.data.manifest import read_manifest
    from archive_search.evaluation.harness import load_vocabulary
    from archive_search.evaluation.report import markdown_table
    from archive_search.evaluation.word_discrimination import word_discrimination, word_segments

    bundle = load_bundle(models_dir, factory)
    segments = word_segments(read_manifest(manifest), root or manifest.parent, max_per_word=max_per_word,
                             max_segments=max_segments, seed=seed)  # fmt: skip
    result = word_discrimination(segments, bundle.audio, bundle.text, load_vocabulary(vocab, oov))
    rows = []
    for split, (n_segments, n_words) in result.split_sizes.items():
        acoustic, cross = result.acoustic.get(split), result.cross.get(split)
        rows.append([split, n_segments, n_words, acoustic.ap * 100 if acoustic else None, cross.ap * 100 if cross else None,
                     acoustic.mean_positive if acoustic else None, acoustic.mean_negative if acoustic else None])  # fmt: skip
    text = markdown_table(["split", "segments", "words", "acoustic AP %", "cross AP %", "mean cos +", "mean cos -"], rows)
    _emit(result.to_dict(), as_json, text)


@main.command(context_settings=CONTEXT)
@corpus_options
@models_options
@click.option("--windows", default="0.2,0.3,0.4,0.6", show_default=True, help="Window sizes in seconds.")
@click.option("--max-queries", default=100, show_default=True)
@click.option("--rerank/--no-rerank", default=True, show_default=True, help="Also rescore with the reranker.")
@click.option("--localize", "localize_s", default=0.0, show_default=True, type=click.FloatRange(min=0.0),
              help="Text queries: rerank around the best run of windows spanning this many seconds (0: the best single window).")
@click.option("--seed", default=0, show_default=True)
@click.option("--json", "as_json", is_flag=True)
@domain_errors
def windowed(manifest, root, vocab, oov, models_dir, factory, windows, max_queries, rerank, localize_s, seed, as_json) -> None:
    """JMCL Table II: STD and KWS EER with fixed windows over continuous utterances."""
    from archive_search.audio import load_audio
    from archive_search.data.manifest import read_manifest
    from archive_search.evaluation.harness import load_vocabulary
    from archive_search.evaluation.kws import WindowedUtterance, windowed_detection, windowed_queries
    from archive_search.evaluation.report import markdown_table

    bundle = load_bundle(models_dir, factory)
    base = root or manifest.parent
    utterances = [WindowedUtterance(u.id, load_audio(u.audio_path(base)), u.words) for u in read_manifest(manifest) if u.words]
    queries = windowed_queries(utterances, max_queries=max_queries, seed=seed)
    sizes = [float(w) for w in windows.split(",") if w.strip()]
    results = windowed_detection(utterances, bundle.audio, bundle.text, queries, sizes,
                                 training_vocabulary=load_vocabulary(vocab, oov),
                                 reranker=bundle.reranker if rerank else None, seed=seed, localize_s=localize_s)  # fmt: skip
    rows = [[r.task, r.window_s, r.split, r.scoring, r.eer * 100, r.auc, r.n_queries, r.n_positive, r.n_negative] for r in results]
    text = markdown_table(["task", "window s", "split", "scoring", "EER %", "AUC", "queries", "positive", "negative"], rows)
    reranker = bundle.reranker.name if rerank and bundle.reranker is not None else None
    _emit({"model": bundle.name, "reranker": reranker, "queries": queries, "results": [vars(r) for r in results]},
          as_json, f"model {bundle.name}, reranker {reranker}\n\n{text}")  # fmt: skip


@main.command(context_settings=CONTEXT)
@click.option("--manifest", "manifests", required=True, multiple=True, type=click.Path(dir_okay=False, path_type=Path),
              help="Manifest with word times; repeat to score several test sets (audio relative to each manifest).")  # fmt: skip
@click.option("-f", "--frontend", "frontends", multiple=True, default=("logmel",), show_default=True,
              help="logmel[=N_MELS], ctc=CKPT, ctc-post=CKPT, whisper, whisper-pad, gse, or jmcl[=DIR] (pooled cosine); repeat.")  # fmt: skip
@models_options
@click.option("--context", "contexts", multiple=True, type=click.Choice(["utterance", "clip"]), default=("utterance",),
              show_default=True, help="Encode whole utterances and slice each word, or each word alone; repeat for both.")  # fmt: skip
@click.option("--norm", "norms", multiple=True, type=click.Choice(["none", "standard"]), default=("none",), show_default=True,
              help="standard: zero mean, unit variance per dimension over each encoded input before DTW; repeat for both.")  # fmt: skip
@click.option("--max-per-word", default=20, show_default=True, type=click.IntRange(min=1), help="Segments per word at most.")
@click.option("--max-segments", default=None, type=click.IntRange(min=2), help="Word segments at most (seeded sample).")
@click.option("--seed", default=0, show_default=True)
@click.option("--threads", default=1, show_default=True, type=click.IntRange(min=1), help="CPU threads for the encoders.")
@click.option("--json", "as_json", is_flag=True)
@domain_errors
def frontends(manifests, frontends, models_dir, factory, contexts, norms, max_per_word, max_segments, seed, threads, as_json) -> None:
    """Frame front-ends, training-free: word discrimination AP by DTW over each word's frames."""
    import torch

    from archive_search.data.manifest import read_manifest
    from archive_search.evaluation import frontends as probe
    from archive_search.evaluation.report import markdown_table

    torch.set_num_threads(threads)
    built = []
    for spec in frontends:
        kind, _, argument = spec.partition("=")
        if kind.strip().lower() == "jmcl":
            built.append(("embedding", load_bundle(Path(argument) if argument else models_dir, factory).audio))
        else:
            built.append(("frames", probe.build_frontend(spec, threads)))
    results = []
    for manifest in manifests:
        corpus = probe.load_word_corpus(read_manifest(manifest), manifest.parent, max_per_word, max_segments, seed)
        for kind, frontend in built:
            for context in contexts:
                if kind == "embedding":  # pooled vectors: no frames to normalise
                    results.append({"manifest": str(manifest), **probe.embedding_word_discrimination(corpus, frontend, context).to_dict()})
                    continue
                encoded = probe.encode_words(corpus, frontend, context)  # once for every --norm
                for norm in norms:
                    result = probe.score_encoded(corpus, encoded, normalise=norm == "standard")
                    results.append({"manifest": str(manifest), **result.to_dict()})
    rows = [[Path(r["manifest"]).name, r["frontend"], r["context"], "standard" if r["normalised"] else "none", r["ap"] * 100,
             r["n_segments"], r["n_words"], r["dim"], r["frames_per_word"], r["speed"]] for r in results]  # fmt: skip
    text = markdown_table(["data", "front-end", "context", "norm", "AP %", "segments", "words", "dim", "frames/word", "x real time (CPU)"], rows)
    _emit({"command": _command_line(), "results": results}, as_json, text)


if __name__ == "__main__":
    main()
