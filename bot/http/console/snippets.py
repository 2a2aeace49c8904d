"""Ready-to-paste code that runs one workflow over the API: curl, Python and JavaScript.

The values are the workflow's own: its required options with an example, every other option
with its default, so the snippet runs as pasted and shows what can be changed. The key is read
from the environment (`COMFYCORD_API_KEY`), never written into the code.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from bot.http.openapi import param_choices
from bot.workflows import Workflow

ENV_KEY = "COMFYCORD_API_KEY"
EXAMPLE_PROMPT = "a lighthouse at dusk"
WAIT = 60


@dataclass(frozen=True)
class Snippet:
    """Code in one language."""

    language: str
    label: str
    code: str


def example_values(
    workflow: Workflow, object_info: Mapping[str, Any] | None = None
) -> tuple[dict[str, Any], dict[str, str]]:
    """Values to send, and the files to upload (option -> an example file name)."""
    values: dict[str, Any] = {}
    files: dict[str, str] = {}
    for param in workflow.params:
        if param.is_file:
            if param.required:
                files[param.name] = {"video": "input.mp4", "audio": "input.wav"}.get(
                    param.type, "input.png"
                )
        elif param.default is not None and param.type != "seed":
            values[param.name] = param.default
        elif param.required:
            if param.type == "text":
                values[param.name] = EXAMPLE_PROMPT
            elif param.type in ("choice", "enum"):
                choices = param_choices(workflow, param, object_info)
                values[param.name] = choices[0] if choices else "NAME"
            elif param.type in ("int", "float", "seed"):
                values[param.name] = param.min if param.min is not None else 1
            elif param.type == "bool":
                values[param.name] = True
    return values, files


def _shell(text: str) -> str:
    return "'" + text.replace("'", "'\\''") + "'"


def _form_text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _curl(url: str, values: dict[str, Any], files: dict[str, str]) -> str:
    lines = [
        f"curl -X POST {_shell(url + f'?wait={WAIT}')} \\",
        f'  -H "Authorization: Bearer ${ENV_KEY}" \\',
    ]
    if files:
        fields = [f"{k}={_form_text(v)}" for k, v in values.items()]
        fields += [f"{k}=@{v}" for k, v in files.items()]
        lines += [f"  -F {_shell(f)} \\" for f in fields]
        lines[-1] = lines[-1].removesuffix(" \\")
    else:
        lines.append('  -H "Content-Type: application/json" \\')
        lines.append(f"  -d {_shell(json.dumps(values, ensure_ascii=False))}")
    return "\n".join(lines)


def _python(url: str, values: dict[str, Any], files: dict[str, str]) -> str:
    if files:
        data = {k: _form_text(v) for k, v in values.items()}
        opened = ", ".join(f'"{k}": open({v!r}, "rb")' for k, v in files.items())
        body = f"    data={data!r},\n    files={{{opened}}},\n"
    else:
        body = f"    json={values!r},\n"
    return (
        "import os\n\n"
        "import requests  # pip install requests\n\n"
        f'headers = {{"Authorization": f"Bearer {{os.environ[{ENV_KEY!r}]}}"}}\n'
        "response = requests.post(\n"
        f"    {url!r},\n"
        f'    params={{"wait": {WAIT}}},\n'
        "    headers=headers,\n"
        f"{body}"
        f"    timeout={WAIT + 30},\n"
        ")\n"
        "response.raise_for_status()\n"
        'for job in response.json()["jobs"]:\n'
        '    for output in job["outputs"]:\n'
        '        data = requests.get(output["url"], headers=headers, timeout=60).content\n'
        '        with open(output["filename"], "wb") as file:\n'
        "            file.write(data)\n"
    )


def _javascript(url: str, values: dict[str, Any], files: dict[str, str]) -> str:
    target = json.dumps(f"{url}?wait={WAIT}")
    auth = f"`Bearer ${{process.env.{ENV_KEY}}}`"
    if files:
        lines = ['import { readFile } from "node:fs/promises";', "", "const form = new FormData();"]
        lines += [
            f"form.append({json.dumps(k)}, {json.dumps(_form_text(v))});" for k, v in values.items()
        ]
        lines += [
            f"form.append({json.dumps(k)}, new Blob([await readFile({json.dumps(v)})]), "
            f"{json.dumps(v)});"
            for k, v in files.items()
        ]
        head = "\n".join(lines) + "\n"
        options = f'  method: "POST",\n  headers: {{ Authorization: {auth} }},\n  body: form,\n'
    else:
        head = ""
        options = (
            '  method: "POST",\n'
            f'  headers: {{ Authorization: {auth}, "Content-Type": "application/json" }},\n'
            f"  body: JSON.stringify({json.dumps(values, ensure_ascii=False)}),\n"
        )
    return (
        f"{head}const response = await fetch({target}, {{\n{options}}});\n"
        "if (!response.ok) throw new Error((await response.json()).detail);\n"
        "const { jobs } = await response.json();\n"
        "for (const job of jobs) console.log(job.state, job.outputs.map((o) => o.url));\n"
    )


def snippets(
    workflow: Workflow, base: str, *, object_info: Mapping[str, Any] | None = None
) -> list[Snippet]:
    """curl, Python and JavaScript that run `workflow` on the API at `base`, and the command
    that generates a typed client."""
    url = f"{base}/v1/workflows/{workflow.name}/jobs"
    values, files = example_values(workflow, object_info)
    return [
        Snippet("shell", "curl", _curl(url, values, files)),
        Snippet("python", "Python", _python(url, values, files)),
        Snippet("javascript", "JavaScript", _javascript(url, values, files)),
        Snippet(
            "shell",
            "Typed client",
            "pip install openapi-python-client\n"
            f"openapi-python-client generate --url {_shell(base + '/openapi.json')}",
        ),
    ]
