"""Workflow packs that make each kind of result, for the media tests.

The video, animation and still-plus-text graphs are the ones a real ComfyUI 0.3.64 ran in the
recordings (transcript ``p_media_outputs``), cut to one saver each where a test wants one kind;
the audio, 3D and Video Combine graphs follow the same shape with the nodes that make those.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml

from tests.recordings import OBJECT_INFO_CUSTOM, TRANSCRIPTS


#: The recorded graphs, by the note that precedes them in the transcript.
def recorded_graphs() -> dict[str, dict[str, Any]]:
    events = json.loads((TRANSCRIPTS / "p_media_outputs.json").read_text())["events"]
    graphs, note = {}, None
    for event in events:
        if event.get("kind") == "note":
            note = event["text"].removeprefix("graph ")
        elif event.get("kind") == "http" and event.get("method") == "POST" and note:
            graphs[note] = event["request_json"]["prompt"]
    return graphs


def _without(graph: dict[str, Any], *node_ids: str) -> dict[str, Any]:
    return {k: v for k, v in graph.items() if k not in node_ids}


def _base(batch: int = 4) -> dict[str, Any]:
    graph = recorded_graphs()["video_mp4_and_webm"]
    core = {k: graph[k] for k in ("3", "4", "5", "6", "7", "8")}
    core["5"] = {**core["5"], "inputs": {**core["5"]["inputs"], "batch_size": batch}}
    return json.loads(json.dumps(core))


def graphs() -> dict[str, dict[str, Any]]:
    recorded = recorded_graphs()
    video = recorded["video_mp4_and_webm"]
    animated = recorded["animated_webp_and_png"]
    still_text = recorded["image_preview_and_text"]
    audio_latent = {"class_type": "EmptyLatentAudio", "inputs": {"seconds": 1.0, "batch_size": 1}}
    audio = {
        **{k: v for k, v in _base().items() if k in ("3", "4", "6", "7")},
        "5": audio_latent,
        "8": {"class_type": "VAEDecodeAudio", "inputs": {"samples": ["3", 0], "vae": ["4", 2]}},
        "9": {
            "class_type": "SaveAudioMP3",
            "inputs": {"audio": ["8", 0], "filename_prefix": "audio/song", "quality": "V0"},
        },
    }
    mesh = {
        **_base(1),
        "9": {"class_type": "SaveImage", "inputs": {"images": ["8", 0], "filename_prefix": "view"}},
        "20": {
            "class_type": "VAEDecodeHunyuan3D",
            "inputs": {
                "samples": ["3", 0],
                "vae": ["4", 2],
                "num_chunks": 8000,
                "octree_resolution": 256,
            },
        },
        "21": {"class_type": "VoxelToMeshBasic", "inputs": {"voxel": ["20", 0], "threshold": 0.6}},
        "22": {"class_type": "SaveGLB", "inputs": {"mesh": ["21", 0], "filename_prefix": "mesh/m"}},
    }
    combine = {
        **_base(),
        "9": {
            "class_type": "VHS_VideoCombine",
            "inputs": {
                "images": ["8", 0],
                "frame_rate": 8,
                "loop_count": 0,
                "filename_prefix": "AnimateDiff",
                "format": "video/h264-mp4",
                "pingpong": False,
                "save_output": True,
            },
        },
    }
    caption = json.loads(json.dumps(still_text))
    return {
        "txt2video": _without(video, "12"),
        "txt2webm": _without(video, "10", "11"),
        "animated-webp": _without(animated, "13"),
        "animated-png": _without(animated, "9"),
        "still-and-text": caption,
        "txt2audio": audio,
        "txt2mesh": mesh,
        "video-combine": combine,
    }


#: What each pack makes, in output order: (kind, MIME type, extension).
EXPECTED: dict[str, list[tuple[str, str, str]]] = {
    "txt2video": [("video", "video/mp4", "mp4")],
    "txt2webm": [("video", "video/webm", "webm")],
    "animated-webp": [("animation", "image/webp", "webp")],
    "animated-png": [("animation", "image/png", "png")],
    "still-and-text": [("image", "image/png", "png"), ("text", "text/plain", "txt")],
    "txt2audio": [("audio", "audio/mpeg", "mp3")],
    "txt2mesh": [("image", "image/png", "png"), ("model", "model/gltf-binary", "glb")],
    "video-combine": [("video", "video/mp4", "mp4")],
}


#: The node classes the fake needs beyond the recorded core: the audio nodes (absent from the
#: recorded server) and VHS's Video Combine (from the recorded custom packs).
def extra_nodes() -> dict[str, dict[str, Any]]:
    from tests.fakes._comfy_media import AUDIO_NODES

    custom = json.loads(OBJECT_INFO_CUSTOM.read_text())
    return {**AUDIO_NODES, "VHS_VideoCombine": custom["VHS_VideoCombine"]}


def write_packs(folder: Path, names: list[str] | None = None) -> Path:
    """Write the packs (graph + YAML with the prompt param) into `folder`; returns it."""
    folder.mkdir(parents=True, exist_ok=True)
    for name, graph in graphs().items():
        if names is not None and name not in names:
            continue
        (folder / f"{name}.json").write_text(json.dumps(graph, indent=1))
        params: dict[str, Any] = {
            "prompt": {"type": "text", "node": "6", "input": "text", "required": True},
            "seed": {"type": "seed", "node": "3", "input": "seed"},
        }
        if name == "still-and-text":
            params["caption"] = {"type": "text", "node": "15", "input": "value"}
        spec = {"title": name, "params": params}
        (folder / f"{name}.yaml").write_text(yaml.safe_dump(spec, sort_keys=False))
    return folder
