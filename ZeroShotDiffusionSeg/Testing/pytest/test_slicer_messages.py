"""User-actionable messages: what the panel says and offers for each failure."""

from ZeroShotDiffusionSegLib.slicer.messages import (
    OFFER_CHOOSE_FOLDER, OFFER_CPU, OFFER_RESTART, OFFER_ROI, OFFER_SHOW_LOG, describe_estimate,
    estimate_run_seconds, explain, no_gpu_message, volume_type_problem, worker_crash_message)


def test_cpu_estimate_is_a_range_that_grows_with_slices():
    low, high = estimate_run_seconds(100, "cpu")
    assert 0 < low < high
    assert estimate_run_seconds(200, "cpu")[0] > low
    assert estimate_run_seconds(100, "cuda")[1] < low, "GPU must be estimated faster than CPU"
    assert describe_estimate(100, "cpu") == "about 7 min to 26 min for 100 slices on CPU"


def test_no_gpu_offers_cpu_with_the_estimate():
    message = no_gpu_message(40)
    assert message.actions == [OFFER_CPU, OFFER_ROI]
    assert "40 slices on CPU" in message.text and "PyTorch Utils" in message.text


def test_out_of_memory_suggests_roi_or_cpu():
    message = explain("out of memory: CUDA out of memory. Tried to allocate 2.00 GiB")
    assert message.title == "Out of memory" and message.actions == [OFFER_ROI, OFFER_CPU]
    assert "ROI" in message.text and "batch size" in message.text


def test_gpu_problems_offer_cpu():
    message = explain("CUDA is not available: PyTorch sees no GPU (choose device CPU, ...)")
    assert message.title == "GPU not usable" and message.actions == [OFFER_CPU]
    engine_says = "device 'cuda' was asked for, but torch 2.13.0+cpu sees no CUDA GPU; use --device cpu"
    assert explain(engine_says).actions == [OFFER_CPU]
    assert explain("RuntimeError: CUDA error: no kernel image is available for execution").title == "GPU not usable"


def test_missing_weights_say_where_to_put_them():
    message = explain("weights for CompVis/stable-diffusion-v1-4 not found and HF_HUB_OFFLINE=1")
    assert message.title == "Model weights missing" and message.actions == [OFFER_CHOOSE_FOLDER]
    assert "local folder" in message.text and "zsdseg fetch-model <model id> --out-dir FOLDER" in message.text
    assert message.text.startswith("weights for CompVis/stable-diffusion-v1-4 not found"), "the engine's reason first"
    for engine_line in ["model folder '/data/sd' does not exist",
                        "could not download model 'CompVis/x' from the Hugging Face hub (ConnectionError: ...)",
                        "unknown model 'sd15': pass a hub id such as CompVis/stable-diffusion-v1-4, a local diffusers folder"]:
        assert explain(engine_line).title == "Model weights missing", engine_line


def test_unknown_errors_keep_the_message_and_offer_the_log():
    message = explain("ValueError: something odd", ["line 1", "line 2"])
    assert (message.title, message.text, message.actions) == ("Segmentation failed", "ValueError: something odd",
                                                              [OFFER_SHOW_LOG])
    assert message.detail == "line 1\nline 2"


def test_crash_message_shows_exit_code_log_and_restart():
    plain = worker_crash_message(-9, ["loading", "Killed"])
    assert plain.actions == [OFFER_RESTART, OFFER_SHOW_LOG] and "exit code -9" in plain.text
    assert plain.detail == "loading\nKilled"
    oom = worker_crash_message(1, ["torch.OutOfMemoryError: CUDA out of memory"])
    assert "(out of memory)" in oom.text and OFFER_ROI in oom.actions


def test_wrong_volume_types_are_explained():
    assert "labelmap" in volume_type_problem("vtkMRMLLabelMapVolumeNode")
    assert "several components" in volume_type_problem("vtkMRMLVectorVolumeNode", 3)
    assert "Diffusion" in volume_type_problem("vtkMRMLDiffusionWeightedVolumeNode")
    assert "fewer than two" in volume_type_problem("vtkMRMLScalarVolumeNode", 1, (1, 1, 40))
    assert volume_type_problem("vtkMRMLScalarVolumeNode", 1, (512, 512, 1)) is None
