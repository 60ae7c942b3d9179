"""The Slicer self-test (Testing/Python/ZeroShotDiffusionSegModuleTest.py) run headless against real MRML.

The same test cases a real Slicer runs with ctest, so a call that only fails in real VTK wrapping (such
as ``segment.GetTag(name)`` without its output argument) fails here first. Also the module file's own
Reload-and-Test check, with its real parameter-node wrapper.
"""

import unittest

import pytest
import ZeroShotDiffusionSegModuleTest

CASES = ["test_run_import_threshold_undo", "test_cancel_and_wrong_input", "test_pseudo_healthy_volumes_fade_and_inert_threshold"]


@pytest.mark.parametrize("case", CASES)
def test_self_test_case(case):
    test = ZeroShotDiffusionSegModuleTest.ZeroShotDiffusionSegModuleTest(case)
    test.setUp()
    getattr(test, case)()


def test_self_test_covers_every_case():
    names = unittest.TestLoader().getTestCaseNames(ZeroShotDiffusionSegModuleTest.ZeroShotDiffusionSegModuleTest)
    assert sorted(names) == sorted(CASES)


def test_module_quick_self_test():
    import ZeroShotDiffusionSeg

    ZeroShotDiffusionSeg.ZeroShotDiffusionSegTest().runTest()
