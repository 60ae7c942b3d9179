"""``zsdseg fetch-model``: the hub call it makes (mocked: no network here) and the folder check, on a saved random:tiny."""

from pathlib import Path

import pytest

from ZeroShotDiffusionSegLib.cli import main
from ZeroShotDiffusionSegLib.engine import ModelLoadError, load_backbone
from ZeroShotDiffusionSegLib.engine.backbone import HUB_ALLOW_PATTERNS

COMPONENTS = ("unet", "vae", "text_encoder", "tokenizer", "scheduler")


def save_folder(backbone, folder: Path) -> Path:
    for name in COMPONENTS:
        component = getattr(backbone, name)
        (getattr(component, "save_pretrained", None) or component.save_config)(folder / name)
    return folder


@pytest.fixture(scope="module")
def tiny_folder(tiny_backbone, tmp_path_factory):
    return save_folder(tiny_backbone, tmp_path_factory.mktemp("tiny") / "model")


class FakeHub:
    """Stands in for huggingface_hub.snapshot_download: records the call, fills local_dir like a download."""

    def __init__(self, source: Path, error: Exception = None):
        self.source, self.error, self.calls = source, error, []

    def __call__(self, **kwargs):
        import shutil

        self.calls.append(kwargs)
        if self.error is not None:
            raise self.error
        shutil.copytree(self.source, kwargs["local_dir"], dirs_exist_ok=True)
        return kwargs["local_dir"]


@pytest.fixture
def hub(monkeypatch, tiny_folder):
    fake = FakeHub(tiny_folder)
    monkeypatch.setattr("huggingface_hub.snapshot_download", fake)
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", False)
    return fake


def test_fetch_downloads_only_the_engine_files_into_a_folder_and_checks_it_loads(hub, tmp_path, capsys, tiny_backbone):
    out = tmp_path / "sd14"
    assert main(["fetch-model", "CompVis/stable-diffusion-v1-4", "--out-dir", str(out), "--revision", "main"]) == 0
    assert hub.calls == [{"repo_id": "CompVis/stable-diffusion-v1-4", "revision": "main", "allow_patterns": HUB_ALLOW_PATTERNS,
                          "local_dir": str(out)}]
    assert all(".safetensors" in p or ".bin" not in p for p in HUB_ALLOW_PATTERNS)  # never a pickle
    text = capsys.readouterr().out
    loaded = load_backbone(str(out), device="cpu")
    for component, digest in loaded.weight_checksums().items():
        assert f"  {component}: {digest}" in text
    assert "512 px model" in text and "--model FOLDER" in text


def test_the_default_folder_is_the_ids_name(hub, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(["fetch-model", "stabilityai/stable-diffusion-2-1-base"]) == 0
    assert hub.calls[0]["local_dir"] == "stable-diffusion-2-1-base" and (tmp_path / "stable-diffusion-2-1-base" / "unet").is_dir()


def test_check_reads_a_copied_folder_and_prints_the_same_checksums(hub, tiny_folder, tmp_path, capsys):
    assert main(["fetch-model", "CompVis/stable-diffusion-v1-4", "--out-dir", str(tmp_path / "a")]) == 0
    fetched = capsys.readouterr().out
    assert main(["fetch-model", "--check", str(tiny_folder)]) == 0
    checked = capsys.readouterr().out
    assert [line for line in fetched.splitlines() if line.startswith("  ")] == [line for line in checked.splitlines() if line.startswith("  ")]
    assert hub.calls and len(hub.calls) == 1  # --check downloads nothing


def test_a_folder_that_would_not_load_is_refused_in_one_line(hub, tmp_path, capsys):
    broken = tmp_path / "broken"
    for name in COMPONENTS:
        (broken / name).mkdir(parents=True)
    (broken / "unet" / "diffusion_pytorch_model.bin").write_bytes(b"a pickle")
    assert main(["fetch-model", "--check", str(broken)]) == 2
    err = capsys.readouterr().err
    assert "only pickle weights for unet" in err and err.count("\n") == 1
    (tmp_path / "half").mkdir()
    (tmp_path / "half" / "unet").mkdir()
    assert main(["fetch-model", "--check", str(tmp_path / "half")]) == 2
    assert "missing vae/, text_encoder/, tokenizer/, scheduler/" in capsys.readouterr().err


@pytest.mark.parametrize("argv, message", [
    (["fetch-model", "notanid"], "downloads a hub id such as CompVis/stable-diffusion-v1-4"),
    (["fetch-model", "--check", "/no/such/folder"], "/no/such/folder is not a folder"),
    (["fetch-model", "--check", ".", "--revision", "v1"], "drop --out-dir and --revision"),
])
def test_wrong_arguments_are_one_line(hub, capsys, argv, message):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1 and not hub.calls


def test_hub_errors_and_an_offline_hub_say_what_to_do(hub, tmp_path, capsys, monkeypatch):
    hub.error = OSError("401 Client Error: Unauthorized for url\nmany more lines")
    assert main(["fetch-model", "CompVis/stable-diffusion-v1-4", "--out-dir", str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err
    assert "could not download model 'CompVis/stable-diffusion-v1-4'" in err and "401 Client Error" in err and err.count("\n") == 1
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", True)
    assert main(["fetch-model", "CompVis/stable-diffusion-v1-4", "--out-dir", str(tmp_path / "x")]) == 2
    assert "HF_HUB_OFFLINE=1" in capsys.readouterr().err


def test_the_offline_error_says_how_to_make_a_folder(monkeypatch):
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", True)
    with pytest.raises(ModelLoadError, match=r"zsdseg fetch-model someone/not-cached-model --out-dir FOLDER, then copy it"):
        load_backbone("someone/not-cached-model", device="cpu")
