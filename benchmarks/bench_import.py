"""How public workflows import and run, measured on the labelled corpus in `tests/corpus/`.

    .venv/bin/python -m benchmarks.bench_import [--verbose] [--no-run] [--misses]

Each file is imported with `prepare_import` against the recorded `/object_info` of ComfyUI
0.3.64 plus the recorded custom node packs. One whose classes all exist and that saves with
nothing blocking is then saved and run as a member would run it: through the engine, against
the fake ComfyUI given the custom packs' definitions, with a prompt for each required text
option and a file for each required file option; it counts as run when the job finishes done.
One with classes missing counts when it is refused naming every pack its labels list.
Detection is compared with the labelled fields: recall (labelled fields some option sets),
overall and by kind, and precision (option targets that are labelled fields, or fields labelled
`also`: a sampler's name, a second pass, which a person may expose but need not).
`--misses` lists, per imported file, the labelled fields no option sets (`missed:`) and the
option targets that are neither labelled nor `also` (`wrong:`).
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import copy
import io
import math
import re
import struct
import tempfile
import wave
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
from PIL import Image

from bot.engine import Engine, ImageInput, JobRequest
from bot.errors import UserError
from bot.jobs.runner import JobUpdate
from tests.conftest import make_settings
from tests.fakes.comfyui import DEFAULT_CHECKPOINTS, FakeComfyUI
from tests.import_corpus import (
    KINDS,
    CorpusResult,
    corpus_files,
    custom_definitions,
    definitions,
    import_file,
    labelled_also,
    labelled_fields,
    labelled_packs,
    precision_counts,
)
from tests.recordings import MEDIA

MODEL_FILE = re.compile(r"\.(safetensors|sft|ckpt|pt|pth|bin|gguf|onnx|patch)$", re.IGNORECASE)
RUN_SECONDS = 60.0
PROMPT = "a lighthouse at dusk"


@dataclass
class Run:
    """The outcome of running one saved import."""

    ran: bool
    problem: str = ""


def _png() -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (64, 64), (40, 90, 160)).save(out, format="PNG")
    return out.getvalue()


def _wav(seconds: float = 1.0, rate: int = 16000) -> bytes:
    out = io.BytesIO()
    with wave.open(out, "wb") as sound:
        sound.setnchannels(1)
        sound.setsampwidth(2)
        sound.setframerate(rate)
        frames = (int(8000 * math.sin(i / 10)) for i in range(int(seconds * rate)))
        sound.writeframes(b"".join(struct.pack("<h", f) for f in frames))
    return out.getvalue()


SAMPLE_FILES = {
    "image": ("input.png", _png),
    "video": ("input.mp4", lambda: (MEDIA / "savevideo.mp4").read_bytes()),
    "audio": ("input.wav", _wav),
}


def _choices(spec: list[Any]) -> list[Any] | None:
    if spec and isinstance(spec[0], list):
        return spec[0]  # type: ignore[no-any-return]
    if len(spec) > 1 and isinstance(spec[1], dict) and isinstance(spec[1].get("options"), list):
        return spec[1]["options"]  # type: ignore[no-any-return]
    return None


def server_with_models(results: list[CorpusResult]) -> tuple[dict[str, Any], list[str], list[str]]:
    """Node definitions, checkpoints and LoRAs of a server that has every model the saved
    graphs name: the custom packs' classes, and each class whose model list lacks one of
    them with it added. A missing model never blocks an import; the moderator installs it."""
    info = definitions()
    extra: dict[str, Any] = copy.deepcopy(custom_definitions())
    checkpoints = set(DEFAULT_CHECKPOINTS)
    loras: set[str] = set()
    for result in results:
        if result.preview is None:
            continue
        for node in result.preview.workflow.graph.values():
            kind = str(node.get("class_type"))
            if kind not in info:
                continue
            for name, value in (node.get("inputs") or {}).items():
                if not isinstance(value, str) or not MODEL_FILE.search(value):
                    continue
                section = next(
                    (s for s in ("required", "optional") if name in info[kind]["input"].get(s, {})),
                    None,
                )
                if section is None:
                    continue
                if kind not in extra:
                    extra[kind] = copy.deepcopy(info[kind])
                choices = _choices(extra[kind]["input"][section][name])
                if choices is not None and value not in choices:
                    choices.append(value)
                if name == "ckpt_name":
                    checkpoints.add(value)
                elif name == "lora_name":
                    loras.add(value)
    return extra, sorted(checkpoints), sorted(loras)


async def run_saved(results: list[CorpusResult]) -> dict[str, Run]:
    """Save each import that saves, and run it once through the engine against the fake."""
    runs: dict[str, Run] = {}
    todo = [r for r in results if r.known and r.saves]
    if not todo:
        return runs
    nodes, checkpoints, loras = server_with_models(todo)
    fake = FakeComfyUI(step_delay=0.0, extra_nodes=nodes, checkpoints=checkpoints, loras=loras)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "workflows"
        folder.mkdir()
        async with fake, aiohttp.ClientSession() as session:
            settings = make_settings(
                Path(tmp),
                fake.url,
                workflows={"dir": str(folder)},
                limits={"max_queued_per_member": 1000},
            )
            engine = Engine(session, settings)
            finished: dict[str, asyncio.Future[JobUpdate]] = {}

            def on_update(update: JobUpdate) -> None:
                waiter = finished.get(update.job.id)
                if update.kind == "finished" and waiter is not None and not waiter.done():
                    waiter.set_result(update)

            engine.listen(on_update)
            await engine.start()
            try:
                for result in todo:
                    runs[result.name] = await _run_one(engine, result, finished)
            finally:
                await engine.stop()
                engine.close_store()
    return runs


async def _run_one(
    engine: Engine, result: CorpusResult, finished: dict[str, asyncio.Future[JobUpdate]]
) -> Run:
    assert result.preview is not None
    try:
        workflow = engine.save_import(result.preview)
        values: dict[str, str] = {}
        images: dict[str, ImageInput] = {}
        for param in workflow.params:
            if param.is_file and param.required:
                file_name, make = SAMPLE_FILES.get(param.type, SAMPLE_FILES["image"])
                images[param.name] = ImageInput(file_name, make())
            elif param.type == "text" and param.required:
                values[param.name] = PROMPT
        [job] = await engine.submit(
            JobRequest(workflow.name, values, owner_id="bench", images=images)
        )
        waiter: asyncio.Future[JobUpdate] = asyncio.get_running_loop().create_future()
        finished[job.id] = waiter
        update = await asyncio.wait_for(waiter, RUN_SECONDS)
    except (UserError, TimeoutError) as exc:
        return Run(False, f"{type(exc).__name__}: {exc}")
    except Exception as exc:  # a benchmark reports, it doesn't stop
        return Run(False, f"crash: {type(exc).__name__}: {exc}")
    if update.job.state.value == "done":
        return Run(True)
    return Run(False, f"{update.job.state.value}: {update.job.error or ''}")


def _pct(part: int, whole: int) -> str:
    return f"{part} ({100 * part / whole:.1f}%)" if whole else f"{part} (-)"


def detection_scores(
    results: list[CorpusResult],
) -> tuple[dict[str, tuple[int, int]], tuple[int, int]]:
    """Per kind `(found, labelled)`, and overall precision `(labelled, detected targets)`."""
    recall: dict[str, list[int]] = {kind: [0, 0] for kind in KINDS}
    correct = targets = 0
    for result in results:
        if result.preview is None:
            continue
        fields = labelled_fields(result.name)
        for key, kind in fields.items():
            tally = recall.setdefault(kind, [0, 0])
            tally[1] += 1
            tally[0] += key in result.detected
        right, detected = precision_counts(result)
        correct += right
        targets += detected
    return {k: (v[0], v[1]) for k, v in recall.items() if v[1]}, (correct, targets)


def misses(result: CorpusResult) -> tuple[list[str], list[str]]:
    """A file's labelled fields no option sets (`kind node.input`), and its option targets
    neither labelled nor `also` (`option node.input`)."""
    fields = labelled_fields(result.name)
    allowed = set(fields) | labelled_also(result.name)
    missed = [f"{kind} {key}" for key, kind in fields.items() if key not in result.detected]
    wrong = [f"{name} {key}" for key, name in result.detected.items() if key not in allowed]
    return missed, wrong


def _print_misses(results: list[CorpusResult]) -> None:
    for result in results:
        if result.preview is None:
            continue
        missed, wrong = misses(result)
        if missed or wrong:
            print(result.name)
        for line in missed:
            print(f"  missed: {line}")
        for line in wrong:
            print(f"  wrong:  {line}")
    print()


def _state(result: CorpusResult, runs: Mapping[str, Run]) -> str:
    if result.crash:
        return "crash"
    if not result.known:
        if result.saves:
            return "saves?"
        packs = labelled_packs(result.name)
        if not packs:
            return "refused" if result.blocking else "saved"
        return "named" if result.names_packs(packs) else "unnamed"
    if not result.saves:
        return "refused" if result.preview is None else "blocked"
    run = runs.get(result.name)
    if run is None:
        return "saved"
    return "ran" if run.ran else "no-run"


def _first_problem(result: CorpusResult, runs: Mapping[str, Run]) -> str:
    if result.crash:
        return result.crash.strip().splitlines()[-1]
    if result.blocking:
        return result.blocking[0]
    run = runs.get(result.name)
    return run.problem if run is not None else ""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--verbose", action="store_true", help="one line per file")
    parser.add_argument("--no-run", action="store_true", help="import only, don't run")
    parser.add_argument(
        "--misses", action="store_true", help="each file's missed and unexpected fields"
    )
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "workflows"
        folder.mkdir()
        results = [import_file(path, folder) for path in corpus_files()]
    runs = {} if args.no_run else asyncio.run(run_saved(results))
    known = [r for r in results if r.known]
    saved = [r for r in known if r.saves]
    ran = [r for r in saved if r.name in runs and runs[r.name].ran]
    lacking = [r for r in results if not r.known]
    nameable = [r for r in lacking if labelled_packs(r.name)]
    named = [r for r in nameable if r.names_packs(labelled_packs(r.name))]
    lacking_saved = [r for r in lacking if r.saves]
    crashed = [r for r in results if r.crash]
    if args.verbose:
        for r in results:
            state = _state(r, runs)
            print(f"{r.name:52} {state:8} {_first_problem(r, runs)[:160]}")
        print()
    if args.misses:
        _print_misses(results)
    print(f"files:                                  {len(results)}")
    print(f"  crashed:                              {len(crashed)}")
    print(f"with every class known:                 {len(known)}")
    print(f"  saved with no hand edit:              {_pct(len(saved), len(known))}")
    if not args.no_run:
        print(f"  saved and run:                        {_pct(len(ran), len(known))}")
    print(f"with classes missing:                   {len(lacking)}")
    print(f"  with a pack a person can name:        {len(nameable)}")
    print(f"    refused naming every such pack:     {_pct(len(named), len(nameable))}")
    print(f"  saved anyway:                         {len(lacking_saved)}")
    per_kind, (correct, targets) = detection_scores(results)
    found = sum(v[0] for v in per_kind.values())
    total = sum(v[1] for v in per_kind.values())
    print("detection (imported files):")
    print(f"  recall:                               {_ratio(found, total)}")
    print(f"  precision:                            {_ratio(correct, targets)}")
    for kind, (hit, of) in per_kind.items():
        print(f"    {kind:10} recall {_ratio(hit, of)}")
    codes: collections.Counter[str] = collections.Counter()
    messages: collections.Counter[str] = collections.Counter()
    for r in results:
        codes.update(set(r.problem_codes))
        messages.update({_shape(m) for m in r.blocking})
    for r in saved:
        run = runs.get(r.name)
        if run is not None and not run.ran:
            codes["run:" + run.problem.split(":", 1)[0]] += 1
            messages[_shape(run.problem)] += 1
    print("blocking problems (files with each code):")
    for code, count in codes.most_common(12):
        print(f"  {count:4}  {code}")
    print("most common problems (files, message shape):")
    for message, count in messages.most_common(12):
        print(f"  {count:4}  {message[:150]}")


def _ratio(part: int, whole: int) -> str:
    return f"{part}/{whole} ({100 * part / whole:.1f}%)" if whole else "-"


def _shape(message: str) -> str:
    """A problem message with its file, node ids, quoted names and numbers blanked."""
    text = re.sub(r"^[^ :]+\.(json|yaml): ", "", message)
    text = re.sub(r"^node [^(]*\([^)]*\)( and \d+ more nodes?)?: ", "", text)
    text = re.sub(r"'[^']*'|`[^`]*`|\"[^\"]*\"", "…", text)
    return re.sub(r"\d+", "N", text)


if __name__ == "__main__":
    main()
