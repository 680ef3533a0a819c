"""Build the function images locally, without any registry.

No registry is reachable and Debian's docker.io 20.10 has no buildx, so the base image is a Debian
root file system made by ``debootstrap --variant=minbase`` and turned into an image with
``docker import``; each function image is a classic ``docker build --network host`` on top of it
(the engine has no bridge). Every image is tagged by a content hash (the base by its recipe, a
function by its source digest), so a rebuild is skipped when that tag already exists.

Run as ``airflow-dcache function build [name ...]`` or ``python -m airflow_dcache.functions.images [name ...]``
(``scripts/function-images``).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from airflow_dcache.functions.engine import Engine
from airflow_dcache.functions.registry import (
    IMAGE_REPOSITORY,
    SDK_FILE,
    SOURCE_LABEL,
    FunctionSource,
    default_functions_dir,
    find_function,
)

SUITE = "bookworm"
BASE_PACKAGES = ("python3",)
DEFAULT_SOCKET = "unix:///run/airflow-dcache-docker.sock"
"""The private engine's default socket (``$AIRFLOW_DCACHE_DOCKER_SOCK`` moves it, see ``engine``)."""


def engine_url(base_url: str | None = None) -> str:
    """``base_url``, else ``$DOCKER_HOST``, else the project's private engine socket."""
    return base_url or os.environ.get("DOCKER_HOST") or Engine.from_env().host


def docker_client(base_url: str | None = None, timeout: int = 600) -> Any:
    """A Docker SDK client for ``base_url``, ``$DOCKER_HOST`` or this project's engine socket."""
    from docker.client import DockerClient

    return DockerClient(base_url=engine_url(base_url), version="auto", timeout=timeout)


def debian_mirror() -> str:
    """The Debian mirror apt is configured with (deb822 ``URIs:`` or one-line ``deb`` entries)."""
    files = [Path("/etc/apt/sources.list"), *sorted(Path("/etc/apt/sources.list.d").glob("*"))]
    for f in files:
        if not f.is_file():
            continue
        for line in f.read_text(errors="replace").splitlines():
            words = line.split()
            uri = None
            if words[:1] == ["URIs:"] and len(words) > 1:
                uri = words[1]
            elif words[:1] == ["deb"]:
                uri = next((w for w in words[1:] if "://" in w), None)
            if uri and "security" not in uri:
                return uri
    return "http://deb.debian.org/debian"


def base_tag() -> str:
    recipe = json.dumps({"suite": SUITE, "variant": "minbase", "packages": BASE_PACKAGES, "v": 1})
    return f"{IMAGE_REPOSITORY}/function-base:{hashlib.sha256(recipe.encode()).hexdigest()[:12]}"


def image_exists(client: Any, tag: str) -> bool:
    import docker.errors

    try:
        client.images.get(tag)
        return True
    except docker.errors.ImageNotFound:
        return False


def build_base(client: Any, *, log: Any = print) -> str:
    """debootstrap + docker import, skipped when the recipe's tag exists. Returns the tag."""
    tag = base_tag()
    if image_exists(client, tag):
        log(f"base image {tag} exists")
        return tag
    if shutil.which("debootstrap") is None:
        raise RuntimeError("debootstrap is not installed (apt-get install debootstrap)")
    with tempfile.TemporaryDirectory(prefix="fn-base-") as tmp:
        rootfs = Path(tmp) / "rootfs"
        mirror = debian_mirror()
        log(f"debootstrap --variant=minbase {SUITE} from {mirror}")
        subprocess.run(
            ["debootstrap", "--variant=minbase", f"--include={','.join(BASE_PACKAGES)}", SUITE, str(rootfs), mirror],
            check=True, stdout=subprocess.DEVNULL,
        )
        (rootfs / "etc/apt/apt.conf.d/90-function-images").write_text(
            'APT::Install-Recommends "false";\nAPT::Install-Suggests "false";\n'
        )
        for junk in ("var/cache/apt/archives", "var/lib/apt/lists"):
            for entry in (rootfs / junk).glob("*"):
                if entry.is_file():
                    entry.unlink()
        tarball = Path(tmp) / "rootfs.tar"
        subprocess.run(["tar", "-C", str(rootfs), "--numeric-owner", "-cf", str(tarball), "."], check=True)
        repository, _, version = tag.partition(":")
        client.api.import_image_from_file(
            str(tarball), repository=repository, tag=version,
            changes=["ENV LANG=C.UTF-8", 'CMD ["/bin/bash"]'],
        )
    client.images.get(tag).tag(tag.split(":")[0], "latest")
    log(f"built {tag}")
    return tag


def build_function(client: Any, source: FunctionSource, base: str, *, log: Any = print) -> str:
    """``docker build --network host`` of one function on ``base``; skipped when its tag exists."""
    if not (source.directory / "Dockerfile").is_file():
        raise RuntimeError(f"{source.name}: no Dockerfile in {source.directory} (docs/functions.md shows one)")
    tag = source.image_tag
    if image_exists(client, tag):
        log(f"{tag} exists")
        client.images.get(tag).tag(tag.split(":")[0], "latest")
        return tag
    with tempfile.TemporaryDirectory(prefix=f"fn-{source.name}-") as tmp:
        context = Path(tmp) / "context"
        shutil.copytree(source.directory, context, ignore=shutil.ignore_patterns("__pycache__", "*.pyc", "tests"))
        shutil.copy2(SDK_FILE, context / "dcache_fn.py")
        stream = client.api.build(
            path=str(context), tag=tag, network_mode="host", buildargs={"BASE": base}, rm=True,
            forcerm=True, pull=False, decode=True, labels={SOURCE_LABEL: source.digest},
        )
        for chunk in stream:
            if "error" in chunk:
                raise RuntimeError(f"building {tag}: {chunk['error'].strip()}")
            text = str(chunk.get("stream", "")).rstrip()
            if text:
                log(text)
    client.images.get(tag).tag(tag.split(":")[0], "latest")
    log(f"built {tag}")
    return tag


def build_all(names: list[str] | None = None, functions_dir: Path | None = None, *, client: Any = None,
              log: Any = print) -> dict[str, str]:
    """Build the base and the named functions (all under ``functions_dir`` by default)."""
    base_dir = functions_dir or default_functions_dir()
    if base_dir is None:
        raise RuntimeError("no functions directory found")
    if not names:
        names = sorted(p.name for p in base_dir.iterdir() if (p / "Dockerfile").is_file())
    client = client or docker_client()
    base = build_base(client, log=log)
    return {n: build_function(client, find_function(n, base_dir), base, log=log) for n in names}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("names", nargs="*", help="functions to build (default: all with a Dockerfile)")
    parser.add_argument("--functions-dir", type=Path, default=None)
    args = parser.parse_args(argv)
    try:
        tags = build_all(args.names, args.functions_dir)
    except (RuntimeError, subprocess.CalledProcessError, ValueError) as exc:
        print(f"function-images: {exc}", file=sys.stderr)
        return 1
    for name, tag in tags.items():
        print(f"{name} {tag}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
