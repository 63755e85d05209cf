"""Model pack resolution (name, folder, CASTKEEP_MODELS) and provider reporting."""

from __future__ import annotations

import os
import shutil

import pytest

from castkeep.errors import ModelNotFoundError
from castkeep.landmarks.model_pack import ModelPack, resolve_pack_dir, select_providers


@pytest.fixture
def insightface_root(tmp_path, pack_dir):
    """A ~/.insightface-style root holding the pack under models/<name>, made of symlinks."""
    target = tmp_path / "models" / "my_pack"
    target.mkdir(parents=True)
    for onnx in pack_dir.glob("*.onnx"):
        os.symlink(onnx, target / onnx.name)
    return tmp_path


def test_folder_name_and_env_resolution(insightface_root, pack_dir, monkeypatch):
    monkeypatch.delenv("CASTKEEP_MODELS", raising=False)
    assert resolve_pack_dir(pack_dir) == pack_dir.resolve()
    assert resolve_pack_dir("my_pack", root=insightface_root).name == "my_pack"
    monkeypatch.setenv("CASTKEEP_MODELS", str(insightface_root / "models"))
    assert resolve_pack_dir().name == "my_pack"       # a root holding packs
    assert resolve_pack_dir("my_pack").name == "my_pack"
    monkeypatch.setenv("CASTKEEP_MODELS", str(pack_dir))
    assert resolve_pack_dir() == pack_dir.resolve()   # the pack itself


def test_missing_pack_says_where_to_put_it_without_downloading(tmp_path, monkeypatch):
    monkeypatch.delenv("CASTKEEP_MODELS", raising=False)
    with pytest.raises(ModelNotFoundError) as info:
        resolve_pack_dir("buffalo_l", root=tmp_path, download=False)
    assert "buffalo_l" in str(info.value) and str(tmp_path) in str(info.value)
    empty = tmp_path / "empty_pack"
    empty.mkdir()
    with pytest.raises(ModelNotFoundError, match="no .onnx"):
        resolve_pack_dir(empty)


def test_failed_download_is_a_clear_error(tmp_path, monkeypatch):
    # No network here: insightface's own download path fails, and we say what to do instead.
    monkeypatch.delenv("CASTKEEP_MODELS", raising=False)
    import socket

    def refuse(*args, **kwargs):
        raise OSError("network disabled in tests")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    with pytest.raises(ModelNotFoundError, match="download failed"):
        resolve_pack_dir("buffalo_l", root=tmp_path)
    assert list(tmp_path.iterdir()) == []  # no empty models/ folder left behind


def test_an_unknown_pack_name_is_one_clear_error_that_creates_nothing(tmp_path, monkeypatch):
    """Issue 13 item 13: only insightface's own pack names are downloaded; any other name is not tried,
    and the error names every place packs are looked for."""
    import socket

    root, home = tmp_path / "my models", tmp_path / "home"
    root.mkdir()
    home.mkdir()
    monkeypatch.setenv("CASTKEEP_MODELS", str(root))
    monkeypatch.setenv("HOME", str(home))
    attempts = []

    def refuse(*args, **kwargs):
        attempts.append(args)
        raise OSError("network disabled in tests")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    with pytest.raises(ModelNotFoundError) as info:
        resolve_pack_dir("no_such_pack")
    message = str(info.value)
    assert "\n" not in message and "download" not in message and not attempts
    assert str(root / "models" / "no_such_pack") in message
    assert str(home / ".insightface" / "models" / "no_such_pack") in message
    assert sorted(tmp_path.rglob("*")) == [home, root]  # nothing created


def test_tasks_routed_and_providers_reported(pack_dir):
    pack = ModelPack.from_pretrained(pack_dir)
    assert {"detection", "recognition", "landmark_2d_106"} <= set(pack._routed)
    pack.model("recognition")
    assert pack.active_providers() == {"recognition": ["CPUExecutionProvider"]}
    assert pack.fingerprint.startswith("buffalo_s_lite:w600k_mbf.onnx:")


def test_fingerprint_changes_with_the_recognition_weights(tmp_path, pack_dir):
    other = tmp_path / "other_pack"
    other.mkdir()
    for onnx in pack_dir.glob("*.onnx"):
        shutil.copy(onnx, other / onnx.name)
    import onnx

    model = onnx.load(other / "w600k_mbf.onnx")
    model.doc_string = "retrained"  # different bytes, same file name
    onnx.save(model, other / "w600k_mbf.onnx")
    assert ModelPack.from_pretrained(other).fingerprint != ModelPack.from_pretrained(pack_dir).fingerprint


def test_cuda_request_on_a_cpu_build_is_refused():
    import onnxruntime

    if "CUDAExecutionProvider" in onnxruntime.get_available_providers():
        pytest.skip("this onnxruntime lists CUDA")
    assert select_providers("auto") == ["CPUExecutionProvider"]
    with pytest.raises(ModelNotFoundError, match="CUDA"):
        select_providers("cuda")


def test_a_pack_in_castkeep_models_finds_its_sibling_packs_and_never_downloads_into_itself(tmp_path, pack_dir,
                                                                                          monkeypatch):
    """The README's main job sets CASTKEEP_MODELS to buffalo_s_lite's folder, then asks for `--models
    buffalo_l`: that name was looked for (and downloaded) *inside* the buffalo_s_lite folder."""
    import socket

    packs, home = tmp_path / "packs", tmp_path / "home"
    for name in ("buffalo_s_lite", "my_pack"):
        (packs / name).mkdir(parents=True)
        for onnx in pack_dir.glob("*.onnx"):
            os.symlink(onnx, packs / name / onnx.name)
    home.mkdir()
    monkeypatch.setenv("CASTKEEP_MODELS", str(packs / "buffalo_s_lite"))
    monkeypatch.setenv("HOME", str(home))
    assert resolve_pack_dir("my_pack") == (packs / "my_pack").resolve()

    def refuse(*args, **kwargs):
        raise OSError("network disabled in tests")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    with pytest.raises(ModelNotFoundError) as info:
        resolve_pack_dir("buffalo_l")
    assert str(home / ".insightface" / "models" / "buffalo_l") in str(info.value).split("put its .onnx files in ")[1]
    assert sorted(p.name for p in (packs / "buffalo_s_lite").iterdir()) == sorted(p.name for p in pack_dir.glob("*.onnx"))


def test_threads_reach_the_onnxruntime_sessions(pack_dir, monkeypatch):
    from castkeep.errors import ConfigError

    monkeypatch.delenv("CASTKEEP_ORT_THREADS", raising=False)
    pack = ModelPack.from_pretrained(pack_dir, threads=1)
    assert pack.model("recognition").session.get_session_options().intra_op_num_threads == 1
    monkeypatch.setenv("CASTKEEP_ORT_THREADS", "2")  # the variable, when no threads are given
    assert ModelPack.from_pretrained(pack_dir).model("recognition").session.get_session_options().intra_op_num_threads == 2
    for bad in ("0", "two"):
        monkeypatch.setenv("CASTKEEP_ORT_THREADS", bad)
        with pytest.raises(ConfigError, match="is not a number of threads"):
            ModelPack.from_pretrained(pack_dir).model("recognition")
