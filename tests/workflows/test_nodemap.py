"""The map from node class to pack (bot.workflows.nodemap), advice on missing classes, and the
client's read of ComfyUI-Manager's map."""

from __future__ import annotations

import gzip
import json
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from bot.comfy import client as client_module
from bot.comfy.client import ComfyClient
from bot.workflows import nodemap
from bot.workflows.convert import MissingClass
from bot.workflows.nodemap import Hint, NodeMap, PackAdvice, PackHint, PackRef, advise
from tests.fakes.comfyui import FakeComfyUI
from tests.recordings import OBJECT_INFO, OBJECT_INFO_CUSTOM

IMPACT = "https://github.com/ltdrdata/ComfyUI-Impact-Pack"
IPADAPTER = "https://github.com/cubiq/ComfyUI_IPAdapter_plus"
BUNDLED = Path(nodemap.__file__).parent / "data" / nodemap.BUNDLED_FILE


@pytest.fixture(scope="module")
def core_info() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(OBJECT_INFO.read_text())
    return data


@pytest.fixture(scope="module")
def custom_info(core_info: dict[str, Any]) -> dict[str, Any]:
    """A ComfyUI with the recorded popular packs installed."""
    return {**core_info, **json.loads(OBJECT_INFO_CUSTOM.read_text())}


def small_map() -> NodeMap:
    """Four packs, in the bundled document's shape (the map, and ids and stars by URL)."""
    node_map = {
        "https://github.com/a/Pack-A": [["Shared", "OnlyA", "KSampler"], {"title_aux": "Pack A"}],
        "https://github.com/b/pack_b": [
            ["Shared", "OnlyB"],
            {"title_aux": "Pack B", "nodename_pattern": r"\(PackB\)$"},
        ],
        "https://github.com/c/pack-c": [
            ["OnlyC"],
            {"title_aux": "Pack C", "nodename_pattern": "([unclosed"},
        ],
        "https://github.com/comfyanonymous/ComfyUI": [["KSampler", "NewCore"], {}],
    }
    packs = {
        "https://github.com/a/Pack-A": {"stars": 500, "id": "pack-a"},
        "https://github.com/b/pack_b": {"stars": 10},
    }
    return NodeMap.from_json({"format": 1, "source": "test", "map": node_map, "packs": packs})


# --- the bundled map --------------------------------------------------------------------------


def advise_hinted(
    class_type: str,
    node: str,
    info: dict[str, Any],
    node_map: NodeMap,
    hint: PackHint,
    comfyui_version: str | None = None,
) -> list[PackAdvice]:
    """The advice for one missing class in node `node`, given the export's hint about it."""
    return advise(
        {class_type: [f"{node} ({class_type})"]},
        info,
        node_map,
        hints={class_type: hint},
        comfyui_version=comfyui_version,
    )


def test_the_bundled_map_is_comfyui_managers_file_with_its_version() -> None:
    document = json.loads(gzip.decompress(BUNDLED.read_bytes()))
    assert document["source"].startswith("comfyui-manager ")
    assert "comfyui-embedded-docs" in document["source"]
    assert len(document["map"]) > 3000
    node_map = NodeMap.bundled()
    assert len(node_map) == len(document["map"])
    assert node_map.source == document["source"]
    assert NodeMap.bundled() is node_map  # read once


def test_core_classes_newer_than_the_managers_list_are_known_from_comfyuis_docs(
    core_info: dict[str, Any],
) -> None:
    """ComfyUI's documentation package lists core classes the Manager's map does not yet."""
    assert "comfyui-embedded-docs" in NodeMap.bundled().source
    advice = advise(
        {"ComfySwitchNode": ["170 (ComfySwitchNode)"], "LatentCutToBatch": ["76"]},
        core_info,
        NodeMap.bundled(),
        comfyui_version="0.3.64",
    )
    assert [(a.action, a.code) for a in advice] == [("update_comfyui", "needs_newer_comfyui")]
    assert "'ComfySwitchNode', 'LatentCutToBatch'" in advice[0].message


def test_a_class_named_like_a_pack_is_not_lost_to_core_classes_of_that_name() -> None:
    # ComfyUI now has LTXV… classes of its own; an LTXV class it lacks is still the pack's.
    guessed = NodeMap.bundled().named_like("LTXVShiftSigmasNotInAnyList")
    assert (
        guessed is not None
        and guessed.repository == "https://github.com/Lightricks/ComfyUI-LTXVideo"
    )


def test_face_detailer_comes_from_the_impact_pack() -> None:
    packs = NodeMap.bundled().packs_for("FaceDetailer")
    assert packs[0] == PackRef("ComfyUI Impact Pack", IMPACT, "comfyui-impact-pack")
    assert packs[0].stars and packs[0].stars > 100


def test_ipadapter_advanced_comes_from_ipadapter_plus() -> None:
    assert NodeMap.bundled().packs_for("IPAdapterAdvanced")[0].repository == IPADAPTER


def test_a_pack_claiming_a_class_comes_before_others_listing_it() -> None:
    # Efficiency Nodes (more stars) lists NNLatentUpscale too; Ttl's pack claims it (preemptions).
    packs = NodeMap.bundled().packs_for("NNLatentUpscale")
    assert packs[0].repository == "https://github.com/Ttl/ComfyUi_NNLatentUpscale"
    assert (packs[1].stars or 0) > (packs[0].stars or 0)


def test_core_classes_come_from_comfyui_before_packs_reusing_the_name() -> None:
    assert NodeMap.bundled().packs_for("KSampler")[0].is_core
    assert [p.title for p in small_map().packs_for("KSampler")] == ["ComfyUI", "Pack A"]


def test_packs_listing_a_class_are_ranked_by_stars() -> None:
    # ShowText is in several packs' lists; the most starred comes first.
    packs = NodeMap.bundled().packs_for("ShowText")
    stars = [p.stars or 0 for p in packs]
    assert len(packs) > 2
    assert stars == sorted(stars, reverse=True)


def test_a_class_name_patterns_match_is_found() -> None:
    packs = NodeMap.bundled().packs_for("DF_Something_New")
    assert packs[0].repository == "https://github.com/Derfuu/Derfuu_ComfyUI_ModdedNodes"


def test_an_unknown_class_has_no_pack() -> None:
    assert NodeMap.bundled().packs_for("NoSuchNodeAnywhere_12345") == ()


# --- reading maps -----------------------------------------------------------------------------


def test_exact_names_come_before_pattern_matches_and_bad_patterns_are_skipped() -> None:
    node_map = small_map()
    assert [p.title for p in node_map.packs_for("Shared")] == ["Pack A", "Pack B"]
    assert [p.title for p in node_map.packs_for("Thing (PackB)")] == ["Pack B"]
    assert [p.title for p in node_map.packs_for("OnlyC")] == ["Pack C"]  # list still read
    assert node_map.packs_for("[unclosed") == ()


def test_a_pattern_is_searched_anywhere_in_the_name() -> None:
    node_map = NodeMap.from_json({"https://x/y/p": [[], {"nodename_pattern": "Harro"}]})
    assert node_map.packs_for("MyHarroNode")[0].repository == "https://x/y/p"


def test_a_map_that_is_not_an_object_is_refused_by_what_it_is() -> None:
    with pytest.raises(ValueError, match="not an array"):
        NodeMap.from_json([1, 2])


def test_malformed_entries_are_skipped() -> None:
    node_map = NodeMap.from_json(
        {
            "https://github.com/a/ok": [["Good"], {"title_aux": "OK"}],
            "https://github.com/a/bad1": "nonsense",
            "https://github.com/a/bad2": [["X"]],
            "https://github.com/a/bad3": [[1, "Y"], []],
        }
    )
    assert len(node_map) == 1
    assert node_map.packs_for("Good")[0].title == "OK"


def test_the_live_route_keys_by_registry_id_and_the_bundled_map_fills_the_repository() -> None:
    live = {"comfyui-impact-pack": [["FaceDetailer", "BrandNewDetailer"], {"title_aux": "Impact"}]}
    node_map = NodeMap.for_server(live)
    pack = node_map.packs_for("BrandNewDetailer")[0]
    assert (pack.title, pack.id, pack.repository) == ("Impact", "comfyui-impact-pack", IMPACT)
    assert node_map.packs_for("FaceDetailer")[0] == pack  # one pack, not two
    assert "SAMLoader" in node_map.classes_of(pack)  # the bundled classes kept too
    assert node_map.packs_for("IPAdapterAdvanced")[0].repository == IPADAPTER


def test_without_a_live_map_the_bundled_one_is_used() -> None:
    assert NodeMap.for_server(None) is NodeMap.bundled()
    assert NodeMap.for_server("not a map") is NodeMap.bundled()


def test_find_pack_by_id_url_owner_name_or_folder_name() -> None:
    node_map = NodeMap.bundled()
    for name in (
        "comfyui-impact-pack",
        IMPACT,
        IMPACT + ".git",
        "ltdrdata/ComfyUI-Impact-Pack",
        "comfyui_impact_pack",
    ):
        found = node_map.find_pack(name)
        assert found is not None, name
        assert found.repository == IMPACT, name
    assert node_map.find_pack("no-such-pack-anywhere") is None


# --- advice -----------------------------------------------------------------------------------


def test_classes_of_a_pack_that_is_not_installed_are_one_install_advice(
    core_info: dict[str, Any],
) -> None:
    advice = advise(
        {"FaceDetailer": ['12 "Face Detailer" (FaceDetailer)'], "SAMLoader": ["14 (SAMLoader)"]},
        core_info,
        NodeMap.bundled(),
    )
    assert len(advice) == 1
    item = advice[0]
    assert (item.action, item.code) == ("install", "missing_pack")
    assert item.classes == ("FaceDetailer", "SAMLoader")
    assert item.nodes == ('12 "Face Detailer" (FaceDetailer)', "14 (SAMLoader)")
    assert item.message.startswith(
        f"needs the custom node pack 'ComfyUI Impact Pack' ({IMPACT}) for 'FaceDetailer', "
        "'SAMLoader' (nodes 12, 14): install it and restart ComfyUI"
    )


def test_classes_are_grouped_by_pack_in_the_order_given(core_info: dict[str, Any]) -> None:
    advice = advise(
        {
            "IPAdapterAdvanced": ["1 (IPAdapterAdvanced)"],
            "FaceDetailer": ["2 (FaceDetailer)"],
            "IPAdapterModelLoader": ["3 (IPAdapterModelLoader)"],
            "NoSuchNodeAnywhere_12345": ["4 (NoSuchNodeAnywhere_12345)"],
        },
        core_info,
        NodeMap.bundled(),
    )
    assert [(a.pack.repository if a.pack else None, a.classes) for a in advice] == [
        (IPADAPTER, ("IPAdapterAdvanced", "IPAdapterModelLoader")),
        (IMPACT, ("FaceDetailer",)),
        (None, ("NoSuchNodeAnywhere_12345",)),
    ]


def test_a_class_missing_from_an_installed_pack_says_to_update_it(
    custom_info: dict[str, Any],
) -> None:
    info = dict(custom_info)
    del info["FaceDetailer"]
    advice = advise({"FaceDetailer": ["12 (FaceDetailer)"]}, info, NodeMap.bundled())
    assert [(a.action, a.code) for a in advice] == [("update_pack", "update_pack")]
    assert "'ComfyUI Impact Pack'" in advice[0].message
    assert "installed but lacks it: update the pack" in advice[0].message
    assert "removed it" in advice[0].message


def test_a_pack_is_installed_when_object_info_names_its_module(core_info: dict[str, Any]) -> None:
    info = {
        **core_info,
        "Anything": {"python_module": "custom_nodes.comfyui_impact_pack", "input": {}},
    }
    advice = advise({"FaceDetailer": ["12 (FaceDetailer)"]}, info, NodeMap.bundled())
    assert advice[0].action == "update_pack"


def test_a_pack_is_installed_when_a_class_only_it_provides_is_there(
    core_info: dict[str, Any],
) -> None:
    info = {**core_info, "SAMLoader": {"input": {}}}  # no module or pack recorded
    advice = advise({"FaceDetailer": ["12 (FaceDetailer)"]}, info, NodeMap.bundled())
    assert advice[0].action == "update_pack"


def test_a_class_many_packs_share_does_not_make_them_installed(core_info: dict[str, Any]) -> None:
    info = {**core_info, "Shared": {"input": {}}}
    advice = advise({"OnlyA": ["1 (OnlyA)"], "OnlyB": ["2 (OnlyB)"]}, info, small_map())
    assert [a.action for a in advice] == ["install", "install"]


def test_a_removed_class_named_by_the_export_says_to_update_the_installed_pack(
    custom_info: dict[str, Any],
) -> None:
    # IPAdapterApply was removed from ComfyUI_IPAdapter_plus in its v2: no map lists it.
    assert NodeMap.bundled().packs_for("IPAdapterApply") == ()
    hint = MissingClass("IPAdapterApply", ("5",), pack="comfyui_ipadapter_plus", version="1.0.0")
    advice = advise_hinted("IPAdapterApply", "5", custom_info, NodeMap.bundled(), hint)
    assert advice[0].action == "update_pack"
    assert advice[0].pack is not None and advice[0].pack.repository == IPADAPTER
    assert "saved with version 1.0.0" in advice[0].message


def test_a_core_class_says_to_update_comfyui(core_info: dict[str, Any]) -> None:
    advice = advise({"NewCore": ["7 (NewCore)"]}, core_info, small_map(), comfyui_version="0.3.10")
    assert [(a.action, a.code) for a in advice] == [("update_comfyui", "needs_newer_comfyui")]
    assert advice[0].message == (
        "needs the ComfyUI core node 'NewCore' (node 7), which this ComfyUI (0.3.10) lacks: "
        "update ComfyUI"
    )


def test_a_comfy_core_hint_says_which_comfyui_version(core_info: dict[str, Any]) -> None:
    hint = Hint(pack="comfy-core", version="0.3.60")
    advice = advise_hinted("FancyNewCoreNode", "3", core_info, NodeMap.bundled(), hint)
    assert advice[0].action == "update_comfyui"
    assert "update ComfyUI to 0.3.60 or newer" in advice[0].message


def test_a_core_class_missing_from_a_newer_comfyui_says_so(core_info: dict[str, Any]) -> None:
    hint = Hint(pack="comfy-core", version="0.3.9")
    advice = advise_hinted("OldCoreNode", "3", core_info, NodeMap.bundled(), hint, "0.3.10")
    assert advice[0].action == "update_comfyui"
    assert "saved with ComfyUI 0.3.9" in advice[0].message
    assert "update ComfyUI" not in advice[0].message


def test_a_class_in_no_map_is_unknown_and_says_where_to_search(
    core_info: dict[str, Any],
) -> None:
    advice = advise({"Zzz": ["9 (Zzz)"]}, core_info, NodeMap.bundled())
    assert [(a.action, a.code, a.pack) for a in advice] == [("unknown", "unknown_node", None)]
    assert "'Zzz' (node 9)" in advice[0].message
    assert "search ComfyUI-Manager or the registry" in advice[0].message


def test_the_exports_cnr_id_wins_over_the_map(core_info: dict[str, Any]) -> None:
    # The map gives "Shared" to Pack A; the export says Pack B made the node.
    hint = Hint(pack="pack-b", version="2.1")
    advice = advise_hinted("Shared", "1", core_info, small_map(), hint)
    assert advice[0].pack is not None and advice[0].pack.title == "Pack B"
    assert advice[0].version == "2.1"
    assert "install it (version 2.1 or newer)" in advice[0].message


def test_a_hint_for_a_pack_the_map_lacks_names_it_from_the_export(
    core_info: dict[str, Any],
) -> None:
    hint = Hint(pack="mystery-pack", repository="someone/Mystery-Pack")
    advice = advise_hinted("Mystery", "1", core_info, NodeMap.bundled(), hint)
    assert advice[0].action == "install"
    assert advice[0].pack == PackRef(
        "mystery-pack", "https://github.com/someone/Mystery-Pack", "mystery-pack"
    )


def test_other_packs_with_the_class_are_kept_as_alternatives(core_info: dict[str, Any]) -> None:
    advice = advise({"Shared": ["1 (Shared)"]}, core_info, small_map())
    assert [p.title for p in advice[0].alternatives] == ["Pack B"]
    assert "other packs with the same class name: 'Pack B'" in advice[0].message


def test_nodes_given_as_one_string_are_one_node(core_info: dict[str, Any]) -> None:
    advice = advise({"FaceDetailer": "12 (FaceDetailer)"}, core_info, NodeMap.bundled())
    assert advice[0].nodes == ("12 (FaceDetailer)",)


def test_long_lists_are_shortened_to_fit(core_info: dict[str, Any]) -> None:
    classes = {f"DF_VeryLongGeneratedClassName_{i:03}": [f"{i} (x)"] for i in range(40)}
    advice = advise(classes, core_info, NodeMap.bundled())
    assert len(advice) == 1
    assert len(advice[0].classes) == 40
    assert len(advice[0].message) <= nodemap.MAX_MESSAGE
    assert " more" in advice[0].message


def test_an_absurd_hint_still_gives_a_short_message(core_info: dict[str, Any]) -> None:
    advice = advise(
        {"X": ["1 (X)"]}, core_info, NodeMap.bundled(), hints={"X": Hint(pack="p" * 5000)}
    )
    assert len(advice[0].message) <= nodemap.MAX_MESSAGE


# --- the live map from ComfyUI ----------------------------------------------------------------


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


async def test_the_client_reads_the_managers_map(http: aiohttp.ClientSession) -> None:
    served = {"comfyui-impact-pack": [["FaceDetailer"], {"title_aux": "ComfyUI Impact Pack"}]}
    async with FakeComfyUI(node_mappings=served) as fake:
        mappings = await ComfyClient(http, fake.url).node_mappings()
    assert mappings == served
    assert NodeMap.for_server(mappings).packs_for("FaceDetailer")[0].repository == IMPACT


async def test_the_client_gets_none_without_the_manager(http: aiohttp.ClientSession) -> None:
    async with FakeComfyUI() as fake:
        assert await ComfyClient(http, fake.url).node_mappings() is None


async def test_the_client_gets_none_when_comfyui_is_down(http: aiohttp.ClientSession) -> None:
    fake = FakeComfyUI()
    url = await fake.start()
    await fake.stop()
    assert await ComfyClient(http, url).node_mappings() is None


async def test_the_client_falls_back_to_the_older_managers_route(
    http: aiohttp.ClientSession,
) -> None:
    served = {IMPACT: [["FaceDetailer"], {"title_aux": "ComfyUI Impact Pack"}]}
    async with FakeComfyUI(node_mappings=served) as fake:
        fake.fail_next("/v2/customnode/getmappings", status=404)
        assert await ComfyClient(http, fake.url).node_mappings() == served


async def test_the_client_gets_none_when_the_manager_fails(http: aiohttp.ClientSession) -> None:
    async with FakeComfyUI(node_mappings={}) as fake:
        fake.fail_next("/v2/customnode/getmappings", status=500)
        assert await ComfyClient(http, fake.url).node_mappings() is None


async def test_the_client_gives_up_on_a_slow_manager(
    http: aiohttp.ClientSession, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(client_module, "NODE_MAPPINGS_TIMEOUT", 0.1)
    async with FakeComfyUI(node_mappings={}) as fake:
        fake.delay_next("/v2/customnode/getmappings", 3.0)
        started = time.perf_counter()
        assert await ComfyClient(http, fake.url).node_mappings() is None
        assert time.perf_counter() - started < 2.5, "it did not wait for the slow answer"


# --- classes the map does not list ----------------------------------------------------------


def marked_map() -> NodeMap:
    return NodeMap.from_json(
        {
            "https://github.com/x/ComfyUI-Xtra": [
                ["XTRA_Loader", "XTRA_Sampler", "XtraVSigmas", "XtraVGuide"],
                {"title_aux": "Xtra"},
            ],
            "https://github.com/y/ComfyUI-Other": [["XTRA_Bridge"], {"title_aux": "Other"}],
            "https://github.com/p/one": [["SaveImagePlus"], {"title_aux": "One"}],
            "https://github.com/q/two": [["SaveImageExtra"], {"title_aux": "Two"}],
        }
    )


def test_a_class_the_map_lacks_is_given_to_the_pack_it_is_named_like() -> None:
    node_map = marked_map()

    assert node_map.named_like("XTRA_NewSampler") is not None
    assert node_map.named_like("XTRA_NewSampler").title == "Xtra"  # type: ignore[union-attr]
    assert node_map.named_like("XtraVShift").title == "Xtra"  # type: ignore[union-attr]
    assert node_map.named_like("SaveImageWebsocket") is None, "no pack holds two thirds"
    assert node_map.named_like("Mystery") is None
    (advice,) = advise({"XTRA_NewSampler": ["7 (XTRA_NewSampler)"]}, {}, node_map)
    assert advice.action == "install"
    assert advice.message == (
        "probably needs the custom node pack 'Xtra' (https://github.com/x/ComfyUI-Xtra) for "
        "'XTRA_NewSampler' (node 7): ComfyUI-Manager's list does not name it, so check the "
        "pack's page, then install it and restart ComfyUI ('XTRA_NewSampler' (node 7) is named "
        "like its classes)"
    )


def test_a_class_named_like_an_installed_pack_says_to_update_it() -> None:
    info = {"XTRA_Loader": {"input": {}, "python_module": "custom_nodes.ComfyUI-Xtra"}}

    (advice,) = advise({"XTRA_Apply": ["5 (XTRA_Apply)"]}, info, marked_map())

    assert advice.action == "update_pack"
    assert advice.message.startswith(
        "needs 'XTRA_Apply' (node 5) probably from the custom node pack 'Xtra'"
    )
    assert "update the pack" in advice.message and "removed it" in advice.message
