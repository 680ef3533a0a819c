"""Build the wheel once per source state and install it into a fresh venv that reuses the project's deps.

The fresh venv has no copy of Airflow: a ``.pth`` file points at an *overlay* directory holding
symlinks to every entry of the project venv's site-packages except this project's own (its editable
finder and dist-info). So ``import airflow_dcache`` can only find the installed wheel, the
dependencies are the locked ones, and nothing is downloaded besides the isolated build backend.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import sysconfig
import tempfile
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
CACHE = ROOT / "build" / "wheel-cache"
SOURCES = ("pyproject.toml", "setup.py", "MANIFEST.in", "README.md", "CHANGELOG.md", "airflow_dcache")
_SKIP = {"__pycache__", ".pytest_cache", ".mypy_cache", ".ruff_cache"}
BUILD_TIMEOUT = 300.0


def _files(path: Path) -> list[Path]:
    if path.is_file():
        return [path]
    out: list[Path] = []
    for dirpath, dirnames, filenames in os.walk(path):
        dirnames[:] = sorted(d for d in dirnames if d not in _SKIP and not d.endswith(".egg-info"))
        out.extend(Path(dirpath) / f for f in sorted(filenames) if not f.endswith((".pyc", ".pyo")))
    return out


def source_digest(root: Path = ROOT) -> str:
    """sha256 over the files that go into the build; the cache key of a wheel."""
    h = hashlib.sha256()
    for name in SOURCES:
        for path in _files(root / name) if (root / name).exists() else []:
            h.update(path.relative_to(root).as_posix().encode() + b"\0" + path.read_bytes() + b"\0")
    return h.hexdigest()[:16]


@dataclass(frozen=True)
class Dists:
    wheel: Path
    sdist: Path


def build_dists(root: Path = ROOT, cache: Path = CACHE) -> Dists:
    """``python -m build`` (sdist, then the wheel from the sdist) on a copy of the sources, cached by digest."""
    target = cache / source_digest(root)
    wheels, sdists = sorted(target.glob("*.whl")), sorted(target.glob("*.tar.gz"))
    if wheels and sdists:
        return Dists(wheels[0], sdists[0])
    cache.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="dcache-build-") as tmp:
        src, out = Path(tmp) / "src", Path(tmp) / "dist"
        src.mkdir()
        for name in SOURCES:
            if (root / name).is_dir():
                shutil.copytree(root / name, src / name, ignore=shutil.ignore_patterns(*_SKIP, "*.pyc", "*.egg-info"))
            elif (root / name).is_file():
                shutil.copy2(root / name, src / name)
        done = subprocess.run([sys.executable, "-m", "build", "--outdir", str(out), str(src)],
                              capture_output=True, text=True, timeout=BUILD_TIMEOUT)
        if done.returncode != 0:
            raise RuntimeError(f"python -m build failed:\n{done.stdout[-4000:]}\n{done.stderr[-4000:]}")
        staged = Path(tempfile.mkdtemp(prefix=".tmp-", dir=cache))
        for dist in out.iterdir():
            shutil.move(str(dist), staged / dist.name)
        try:
            staged.rename(target)  # atomic: a parallel build that won the race is kept
        except OSError:
            shutil.rmtree(staged, ignore_errors=True)
    return Dists(next(target.glob("*.whl")), next(target.glob("*.tar.gz")))


def _own(name: str) -> bool:
    low = name.lower()
    return low.startswith(("airflow_dcache", "__editable__", "__editable___airflow_dcache"))


@dataclass(frozen=True)
class FreshVenv:
    path: Path

    @property
    def python(self) -> Path:
        return self.path / "bin" / "python"

    @property
    def bin(self) -> Path:
        return self.path / "bin"

    def run(self, *args: str, timeout: float = 120.0, env: dict[str, str] | None = None,
            cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
        """Run in the venv, outside the checkout, without the checkout's environment leaking in."""
        clean = {k: v for k, v in os.environ.items()
                 if k not in ("PYTHONPATH", "AIRFLOW_DCACHE_FUNCTIONS_DIR", "VIRTUAL_ENV")
                 and not k.startswith("AIRFLOW")}
        clean["PATH"] = f"{self.bin}{os.pathsep}{clean.get('PATH', '')}"
        clean.update(env or {})
        return subprocess.run(list(args), capture_output=True, text=True, timeout=timeout, env=clean,
                              cwd=cwd or self.path)


def fresh_venv(path: Path, wheel: Path) -> FreshVenv:
    """A venv at ``path`` seeing the project's dependencies (not the project) with ``wheel`` installed."""
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(path)], check=True, timeout=60)
    venv = FreshVenv(path)
    site = Path(venv.run(str(venv.python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])")
                .stdout.strip())
    overlay = path / "project-deps"
    overlay.mkdir()
    project_site = Path(sysconfig.get_paths()["purelib"])
    for entry in project_site.iterdir():
        if not _own(entry.name) and not entry.name.endswith(".pth"):
            (overlay / entry.name).symlink_to(entry)
    (site / "project-deps.pth").write_text(f"{overlay}\n")
    done = venv.run(str(venv.python), "-m", "pip", "install", "--no-deps", "--no-index", "--no-compile",
                    "--disable-pip-version-check", str(wheel))
    if done.returncode != 0:
        raise RuntimeError(f"pip install of the wheel failed:\n{done.stdout}\n{done.stderr}")
    return venv


def installed_venv(path: Path, wheel: Path, extras: str, constraints: Path = ROOT / "requirements.lock",
                   timeout: float = 900.0) -> FreshVenv:
    """A venv at ``path`` with ``pip install "<wheel>[extras]" -c constraints``, as docs/index.md tells a user.

    Unlike :func:`fresh_venv` nothing is borrowed from the project's venv: pip resolves every dependency
    from the configured index under the tested pins, so a missing or wrong dependency declaration fails here.
    """
    subprocess.run([sys.executable, "-m", "venv", str(path)], check=True, timeout=120)
    venv = FreshVenv(path)
    done = venv.run(str(venv.python), "-m", "pip", "install", "-q", "--disable-pip-version-check",
                    f"{wheel}[{extras}]", "-c", str(constraints), timeout=timeout)
    if done.returncode != 0:
        raise RuntimeError(f"pip install of {wheel.name}[{extras}] failed:\n"
                           f"{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
    return venv
