"""The in-process half of coalescing: broadcasts that late readers follow from the start."""

from __future__ import annotations

import asyncio

import pytest

from cache.coalesce import Broadcast, Flight


async def collect(reader) -> list[int]:
    return [item async for item in reader]


async def test_every_reader_gets_every_item_from_the_first():
    broadcast: Broadcast[int] = Broadcast()
    early = asyncio.create_task(collect(broadcast.follow()))
    broadcast.push(1)
    await asyncio.sleep(0)
    broadcast.push(2)
    late = asyncio.create_task(collect(broadcast.follow()))
    await asyncio.sleep(0)
    broadcast.push(3)
    broadcast.finish()
    assert await early == [1, 2, 3]
    assert await late == [1, 2, 3]
    assert await collect(broadcast.follow()) == [1, 2, 3]


async def test_a_failed_broadcast_raises_after_its_items():
    broadcast: Broadcast[int] = Broadcast()
    broadcast.push(1)
    broadcast.fail(RuntimeError("upstream broke"))
    got: list[int] = []
    with pytest.raises(RuntimeError, match="upstream broke"):
        async for item in broadcast.follow():
            got.append(item)
    assert got == [1]


async def test_last_reader_leaving_early_calls_on_idle_once():
    idle: list[bool] = []
    broadcast: Broadcast[int] = Broadcast(on_idle=lambda: idle.append(True))
    one, two = broadcast.follow(), broadcast.follow()
    broadcast.push(1)
    assert await one.__anext__() == 1
    assert await two.__anext__() == 1
    await one.aclose()  # type: ignore[attr-defined]
    assert idle == []
    await two.aclose()  # type: ignore[attr-defined]
    assert idle == [True]


async def test_readers_that_finish_do_not_call_on_idle():
    idle: list[bool] = []
    broadcast: Broadcast[int] = Broadcast(on_idle=lambda: idle.append(True))
    reader = broadcast.follow()
    broadcast.finish()
    assert await collect(reader) == []
    assert idle == []


async def test_flight_is_ready_when_streaming_and_done_when_it_ends():
    flight: Flight[int, str] = Flight()
    flight.streaming(Broadcast(), "group-a")
    assert flight.ready.is_set() and not flight.done.is_set()
    assert flight.origin == "group-a"
    flight.succeed("answer")
    assert flight.done.is_set() and flight.result == "answer"
