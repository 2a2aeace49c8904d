"""A `comfycord run` process that is one shard of two: it serves the servers of its shard only.

The commands are synced globally (no dev server, `sync_on_start`), as a sharded bot in several
servers has them: Discord offers a server's own commands in that server only, so a copy in a dev
server would not reach the others.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from bot.errors import ConfigError
from bot.settings import load_settings
from tests.e2e import wait_result
from tests.fakes.comfyui import FakeComfyUI
from tests.fakes.discord_fixtures import installed_fake
from tests.process import BotProcess

SHARD_ONE_OF_TWO = {"dev_guild": None, "sync_on_start": True, "shard_id": 1, "shard_count": 2}


async def test_a_shard_answers_its_servers_imagine_and_never_sees_the_other_shards(
    comfy: FakeComfyUI, tmp_path: Path
) -> None:
    async with installed_fake() as fake:
        mine = fake.add_guild("On shard one", shard=(1, 2))
        theirs = fake.add_guild("On shard zero", shard=(0, 2))
        bot = BotProcess(tmp_path, fake, comfy, discord=SHARD_ONE_OF_TWO)
        try:
            await bot.start()
            assert fake.command("imagine", guild=False)  # synced globally
            ignored = await fake.slash(
                "imagine", {"prompt": "shard zero", "steps": 2}, guild=theirs
            )
            answered = await fake.slash("imagine", {"prompt": "shard one", "steps": 2}, guild=mine)
            result = await wait_result(fake, answered)
        finally:
            await bot.stop()
    assert result.channel_id == mine.channel_id and result.attachments
    assert answered.delivered_to == [(1, 2)]
    assert ignored.delivered_to == [] and not ignored.acknowledged
    assert fake.messages_in(theirs.channel_id) == []
    [job] = bot.jobs()
    assert (job.guild_id, job.values["prompt"]) == (str(mine.guild_id), "shard one")
    assert len(comfy.prompts_received) == 1


def test_the_shard_comes_from_the_file_or_the_environment(tmp_path: Path) -> None:
    config = tmp_path / "comfycord.yaml"
    config.write_text("discord: {shard_id: 0, shard_count: 4}\n", encoding="utf-8")
    assert load_settings(config, env={}).discord.shard_id == 0
    env = {"COMFYCORD_SHARD_ID": "3"}
    settings = load_settings(config, env=env).discord
    assert (settings.shard_id, settings.shard_count) == (3, 4)
    config.write_text("", encoding="utf-8")
    env = {"COMFYCORD_SHARD_ID": "1", "COMFYCORD_SHARD_COUNT": "2"}
    settings = load_settings(config, env=env).discord
    assert (settings.shard_id, settings.shard_count) == (1, 2)
    unsharded = load_settings(config, env={}).discord
    assert (unsharded.shard_id, unsharded.shard_count) == (None, None)


@pytest.mark.parametrize(
    ("discord", "problem"),
    [
        ("{shard_id: 1}", "discord.shard_id: .*set shard_count too"),
        ("{shard_count: 2}", r"discord.shard_id: .*set it too when shard_count is set \(0 to 1\)"),
        ("{shard_id: 2, shard_count: 2}", r"discord.shard_id: .*less than shard_count \(2\)"),
        ("{shard_id: -1, shard_count: 2}", "discord.shard_id: .*greater than or equal to 0"),
        ("{shard_id: 0, shard_count: 0}", "discord.shard_count: .*greater than or equal to 1"),
    ],
)
def test_a_shard_outside_the_count_is_refused_naming_the_key(
    tmp_path: Path, discord: str, problem: str
) -> None:
    config = tmp_path / "comfycord.yaml"
    config.write_text(f"discord: {discord}\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=f"comfycord.yaml: {problem}"):
        load_settings(config, env={})
