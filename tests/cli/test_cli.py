"""The `comfycord` command line, run through `main()` as a user would."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from bot.__main__ import main
from tests.conftest import PROMPT_PARAM, WORKFLOWS, shipped_copy, txt2img_pack
from tests.fakes.comfyui import FakeComfyUI
from tests.process import ROOT
from tests.workflows.test_graph import txt2img_ui_export


def write_config(tmp_path: Path, workflows: Path = WORKFLOWS, extra: str = "") -> Path:
    config = tmp_path / "comfycord.yaml"
    config.write_text(
        f"storage:\n  path: {tmp_path / 'db.sqlite3'}\n  outputs: {tmp_path / 'outputs'}\n"
        f"workflows:\n  dir: {workflows}\n"
        "comfyui:\n  submit_retry_seconds: 1\n" + extra
    )
    return config


async def run_cli(*argv: str) -> int:
    """main() owns its event loop, so it runs in a thread beside the test's fakes."""
    return await asyncio.to_thread(main, list(argv))


@pytest.mark.usefixtures("comfy_env")
async def test_generate_writes_the_images_and_shows_progress(
    comfy: FakeComfyUI, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "out"
    config = write_config(tmp_path)
    code = await run_cli(
        "--config", str(config), "generate", "sd15-txt2img",
        "--prompt", "a lighthouse at dusk", "--set", "steps=3", "--set", "seed=11",
        "--out", str(out),
    )  # fmt: skip
    captured = capsys.readouterr()
    assert code == 0, captured.err
    files = sorted(out.iterdir())
    assert len(files) == 1
    [prompt_id] = comfy.history
    [image] = [i for o in comfy.history[prompt_id]["outputs"].values() for i in o["images"]]
    assert files[0].read_bytes() == comfy.read_output(image["filename"])
    assert str(files[0]) in captured.out
    assert "step 3/3" in captured.err and "done" in captured.err
    sent = comfy.prompts_received[-1]["prompt"]
    sampler = next(n for n in sent.values() if n["class_type"] == "KSampler")
    assert (sampler["inputs"]["steps"], sampler["inputs"]["seed"]) == (3, 11)


@pytest.mark.usefixtures("comfy_env")
async def test_generate_with_a_bad_value_names_the_parameter(
    comfy: FakeComfyUI, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = write_config(tmp_path)
    code = await run_cli(
        "--config", str(config), "generate", "sd15-txt2img", "--prompt", "x", "--set", "steps=abc"
    )
    assert code == 1
    err = capsys.readouterr().err
    assert "steps" in err and "Traceback" not in err
    assert comfy.prompts_received == []


@pytest.mark.usefixtures("comfy_env")
async def test_generate_reports_a_comfyui_rejection(
    comfy: FakeComfyUI, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    comfy.checkpoints = ["other.safetensors"]
    config = write_config(tmp_path, extra="  substitute_missing_models: false\n")
    code = await run_cli("--config", str(config), "generate", "sd15-txt2img", "--prompt", "x")
    assert code == 1
    assert "not installed on ComfyUI" in capsys.readouterr().err


@pytest.mark.usefixtures("comfy_env")
async def test_check_passes_on_the_shipped_workflows(
    comfy: FakeComfyUI, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = await run_cli("--config", str(write_config(tmp_path)), "check")
    out = capsys.readouterr().out
    assert code == 0, out
    assert "ok: ComfyUI at" in out and "0 problem(s)" in out


@pytest.mark.usefixtures("comfy_env")
async def test_check_lists_every_problem_with_file_and_key(
    comfy: FakeComfyUI, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    packs = tmp_path / "packs"
    txt2img_pack(
        packs,
        "broken",
        "title: Broken\nparams:\n"
        + PROMPT_PARAM
        + "  steps: {type: int, node: KSampler, input: steps, max: lots}\n",
    )
    txt2img_pack(
        packs,
        "missing",
        "title: Missing\nparams:\n"
        + PROMPT_PARAM
        + "  steps: {type: int, node: NoSuchNode, input: steps}\n",
    )
    comfy.checkpoints = ["only-this.safetensors"]
    code = await run_cli("--config", str(write_config(tmp_path, packs)), "check")
    out = capsys.readouterr().out
    assert code == 1
    assert "broken.yaml: params.steps.max" in out
    assert "missing.yaml: params.steps" in out and "NoSuchNode" in out
    assert "workflows.default" in out  # sd15-txt2img is not in this folder


async def test_check_offline_still_validates_the_yaml(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    packs = tmp_path / "packs"
    packs.mkdir()
    (packs / "bad.yaml").write_text("title: [unclosed\n")
    code = await run_cli("--config", str(write_config(tmp_path, packs)), "check", "--offline")
    out = capsys.readouterr().out
    assert code == 1 and "bad.yaml" in out


def test_workflows_lists_parameters(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--config", str(write_config(tmp_path)), "workflows"]) == 0
    out = capsys.readouterr().out
    assert "sd15-txt2img: SD 1.5 text to image" in out
    assert "steps: int; 1..50; default 20" in out
    assert "(/img2img)" in out


def test_output_cut_short_by_its_reader_is_no_error(tmp_path: Path) -> None:
    """`comfycord workflows | head`: the reader goes away first; no traceback, exit 0."""
    config = write_config(tmp_path)
    with subprocess.Popen(
        [sys.executable, "-m", "bot", "--config", str(config), "workflows"],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    ) as proc:
        assert proc.stdout is not None and proc.stderr is not None
        proc.stdout.close()  # the reader is gone before a line is written
        err = proc.stderr.read().decode()
        code = proc.wait(timeout=60)
    assert code == 0, err
    assert "Traceback" not in err and "BrokenPipeError" not in err, err


def test_run_without_a_token_says_what_to_set(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("DISCORD_TOKEN", raising=False)
    assert main(["--config", str(write_config(tmp_path)), "run"]) == 2
    err = capsys.readouterr().err
    assert "DISCORD_TOKEN is not set" in err and "export DISCORD_TOKEN" in err


def test_a_bad_setting_names_file_and_key(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = write_config(tmp_path, extra="limits:\n  max_count: many\n")
    assert main(["--config", str(config), "workflows"]) == 2
    err = capsys.readouterr().err
    assert f"{config}: limits.max_count:" in err


# import ----------------------------------------------------------------------------------------
@pytest.mark.usefixtures("comfy_env")
async def test_import_writes_a_pack_that_check_accepts(
    comfy: FakeComfyUI, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    packs = shipped_copy(tmp_path / "packs")
    config = write_config(tmp_path, packs)
    upload = tmp_path / "Night Sky (v2).json"
    upload.write_text(json.dumps(txt2img_ui_export()))

    code = await run_cli("--config", str(config), "import", str(upload))
    out = capsys.readouterr().out
    assert code == 0, out
    assert "night-sky-v2: Night Sky (v2)" in out
    assert '  prompt (text, required) sets 6 "Positive" (CLIPTextEncode).text' in out
    spec = yaml.safe_load((packs / "night-sky-v2.yaml").read_text())
    assert list(spec["params"])[:3] == ["prompt", "negative", "seed"]
    assert "nodes" not in json.loads((packs / "night-sky-v2.json").read_text())

    code = await run_cli("--config", str(config), "check")
    out = capsys.readouterr().out
    assert code == 0, out
    assert "ok: workflow night-sky-v2" in out and "0 problem(s)" in out


async def test_import_with_a_name_and_a_yaml_uses_them(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    packs = shipped_copy(tmp_path / "packs")
    spec = tmp_path / "mine.yaml"
    spec.write_text("title: Mine\nparams:\n  prompt: {type: text, node: Positive, input: text}\n")
    code = await run_cli(
        "--config", str(write_config(tmp_path, packs)), "import",
        str(WORKFLOWS / "sd15-txt2img.json"), "--name", "mine", "--yaml", str(spec), "--offline",
    )  # fmt: skip
    out = capsys.readouterr().out
    assert code == 0, out
    assert "not checked against ComfyUI" in out
    written = yaml.safe_load((packs / "mine.yaml").read_text())
    assert written["title"] == "Mine" and list(written["params"]) == ["prompt"]


@pytest.mark.usefixtures("comfy_env")
async def test_import_refuses_what_comfyui_cant_run_and_writes_nothing(
    comfy: FakeComfyUI, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    packs = shipped_copy(tmp_path / "packs")
    graph = json.loads((WORKFLOWS / "sd15-txt2img.json").read_text())
    graph["20"] = {"class_type": "FaceDetailer", "inputs": {"image": ["8", 0]}}
    upload = tmp_path / "faces.json"
    upload.write_text(json.dumps(graph))
    before = sorted(p.name for p in packs.iterdir())

    code = await run_cli("--config", str(write_config(tmp_path, packs)), "import", str(upload))
    out = capsys.readouterr().out
    assert code == 1
    assert "missing node classes: FaceDetailer" in out and "nothing written" in out
    assert sorted(p.name for p in packs.iterdir()) == before


@pytest.mark.parametrize(
    ("content", "name", "expected"),
    [
        ("not json at all", "x.json", "x.json: line 1: is not JSON"),
        ('{"a": 1}', "x.json", "x.json: is not a ComfyUI workflow"),
        (None, "absent.json", "absent.json: no such file"),
        ("{}", "sd15-txt2img.json", "'sd15-txt2img' already exists"),
    ],
)
async def test_import_of_a_bad_file_says_what_is_wrong(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    content: str | None,
    name: str,
    expected: str,
) -> None:
    packs = shipped_copy(tmp_path / "packs")
    upload = tmp_path / name
    if content is not None:
        upload.write_text(content)
    before = sorted(p.name for p in packs.iterdir())
    code = await run_cli(
        "--config", str(write_config(tmp_path, packs)), "import", str(upload), "--offline"
    )
    err = capsys.readouterr().err
    assert code == 1
    assert expected in err and "Traceback" not in err
    assert sorted(p.name for p in packs.iterdir()) == before
