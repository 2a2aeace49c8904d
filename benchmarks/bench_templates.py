"""How well the official ComfyUI workflow templates become packs, with no YAML written.

    .venv/bin/python -m benchmarks.bench_templates [--verbose]

Loads every template of the `comfyui-workflow-templates` package (a dev dependency) against the
recorded `/object_info` of the ComfyUI it shipped with, the way `workflows/NAME.json` without a
YAML is loaded: converted, params detected, checked. Prints how many load, how many are refused
(and that each refusal names every missing class), how many image templates become a usable pack
with a prompt option, and how often each param is found.
"""

from __future__ import annotations

import argparse
import collections
import json

from tests.templates import (
    TemplateResult,
    image_template_names,
    load_object_info,
    run_template,
    template_files,
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--verbose", action="store_true", help="one line per template")
    args = parser.parse_args()
    object_info = load_object_info()
    files = template_files()
    image_names = image_template_names()
    results: list[TemplateResult] = [run_template(path, object_info) for path in files]
    loaded = [r for r in results if r.loaded]
    refused = [r for r in results if not r.loaded]
    crashed = [r for r in results if r.crash]
    image = [r for r in results if r.name in image_names]
    image_known = [r for r in image if not r.missing_classes]
    usable = [r for r in image_known if r.usable]
    subgraphs = [r for r in results if r.subgraphs]
    subgraphs_known = [r for r in subgraphs if not r.missing_classes]
    subgraphs_ok = [r for r in subgraphs_known if r.converted and not r.graph_problems]
    fields: collections.Counter[str] = collections.Counter()
    for result in loaded:
        fields.update(result.params)
    if args.verbose:
        for r in results:
            state = "usable" if r.usable else ("loaded" if r.loaded else "refused")
            print(f"{r.name:55} {state:8} {','.join(r.params)}  {r.problem[:150]}")
        print()
    print(f"templates:                     {len(results)}")
    print(f"  loaded:                      {len(loaded)}")
    print(f"  refused:                     {len(refused)}")
    print(f"  crashed:                     {len(crashed)}")
    print(f"image templates:               {len(image)}")
    print(f"  with every class known:      {len(image_known)}")
    pct = 100 * len(usable) / len(image_known) if image_known else 0.0
    print(f"  usable with a prompt:        {len(usable)} ({pct:.1f}%)")
    print(f"subgraph templates:            {len(subgraphs)}")
    print(f"  with every class known:      {len(subgraphs_known)}")
    print(f"  converted and valid:         {len(subgraphs_ok)}")
    print("params found in loaded templates:")
    print("  " + json.dumps(dict(sorted(fields.items(), key=lambda kv: -kv[1]))))


if __name__ == "__main__":
    main()
