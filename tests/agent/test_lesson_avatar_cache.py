"""The worker's lesson avatars without a router: assets already in its disk cache are verified
and loaded into the engine once, shared by the lessons showing them, and freed from the engine
(not from disk) once no lesson shows them and more than ``keep_unused`` such are loaded."""

from __future__ import annotations

import dataclasses

from agent.avatars import LessonAvatars
from avatar_pipeline.avatar import AvatarRegistry, save_asset
from avatar_pipeline.engine import AvatarEngine
from config.settings import WorkerSettings


async def test_loaded_once_shared_and_freed_when_unused(tmp_path):
    tutor = AvatarRegistry().default()
    engine = AvatarEngine(tutor)
    cache = tmp_path / "lessons"
    cache.mkdir()
    ids = []
    for name in ("ada", "ben", "cy"):  # three assets (the name is part of the content)
        aid = save_asset(dataclasses.replace(tutor, name=name, id=""), tmp_path / name)
        (tmp_path / name).rename(cache / aid)
        ids.append(aid)
    avatars = LessonAvatars(engine, WorkerSettings(), cache_dir=cache, keep_unused=1)
    a, b, c = ids
    assert await avatars.for_lesson(a, lesson_id="l1") == a
    assert await avatars.for_lesson(a, lesson_id="l2") == a  # the same one, loaded once
    assert await avatars.for_lesson(b, lesson_id="l3") == b
    assert await avatars.for_lesson(c, lesson_id="l4") == c
    assert {a, b, c} <= set(engine.compositor.avatars)
    avatars.release(a)  # l1 ends; l2 still shows it
    avatars.release(b)
    avatars.release(c)
    # b and c are unused, one may stay: b (released first) is freed, a (in use) is not
    assert a in engine.compositor.avatars and b not in engine.compositor.avatars
    assert c in engine.compositor.avatars
    assert (cache / b).is_dir()  # still on disk
    assert await avatars.for_lesson(b, lesson_id="l5") == b  # back from the disk cache
    # an asset no one has: the default tutor (None), not an error
    assert await avatars.for_lesson("0" * 24, lesson_id="l6") is None
