"""The torchvision guard: timm imports on this CPU-only torch, and the guard is inert elsewhere."""

from __future__ import annotations

import subprocess
import sys
import textwrap


def run_python(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_timm_and_torchvision_transforms_import_after_emonext() -> None:
    result = run_python(
        """
        import emonext
        import timm, torchvision.transforms.v2, torchvision.ops.misc
        model = timm.create_model("convnext_atto", num_classes=7)
        print("ok", type(model).__name__)
        """
    )
    assert result.returncode == 0, result.stderr
    assert "ok ConvNeXt" in result.stdout


def test_timm_imports_whatever_the_import_order() -> None:
    # Third-party imports come first in sorted imports: `import timm` before any emonext module.
    result = run_python(
        """
        import emonext, sys
        assert "torch" not in sys.modules, "import emonext alone must not import torch"
        import timm
        print("ok", timm.__version__)
        """
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("ok")


def test_guard_does_nothing_when_the_extension_loads() -> None:
    # Stand in for a loadable torchvision extension with a shared library that does load: torch's own.
    result = run_python(
        """
        from pathlib import Path
        import torch
        import emonext._torchvision_guard as guard
        library = next(Path(torch.__file__).parent.joinpath("lib").glob("libc10.so*"))
        guard._extension_path = lambda: library
        import sys; sys.modules.pop("torchvision", None)
        print("declared", guard.install())
        """
    )
    assert result.returncode == 0, result.stderr
    assert "declared False" in result.stdout


def test_guard_does_nothing_after_torchvision_is_imported() -> None:
    result = run_python(
        """
        import emonext, torchvision
        from emonext._torchvision_guard import install
        print("declared", install())
        """
    )
    assert result.returncode == 0, result.stderr
    assert "declared False" in result.stdout
