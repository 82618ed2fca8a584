"""`current_loop_key` remembers the last asyncio loop (to skip a system call per facade call):
it must still name the loop that runs *now*, in this thread, whatever ran before."""

from __future__ import annotations

import asyncio
import os
import threading
from typing import Any

import pytest
import trio

from noex_lab.core._backend import current_loop_key
from noex_lab.core.node import Node, current_node


async def _key_and_loop() -> tuple[object, object]:
    return current_loop_key(), asyncio.get_running_loop()


def test_each_asyncio_run_gets_its_own_loop_key() -> None:
    first_key, first_loop = asyncio.run(_key_and_loop())
    second_key, second_loop = asyncio.run(_key_and_loop())
    assert first_key is first_loop
    assert second_key is second_loop
    assert first_loop is not second_loop


def test_a_loop_in_another_thread_is_not_confused_with_this_one() -> None:
    results: dict[str, tuple[object, object]] = {}
    other_started = threading.Event()
    main_checked = threading.Event()

    async def in_thread() -> None:
        results["thread-before"] = await _key_and_loop()
        other_started.set()
        await asyncio.get_running_loop().run_in_executor(None, main_checked.wait, 10)
        results["thread-after"] = await _key_and_loop()

    async def in_main() -> None:
        thread = threading.Thread(target=asyncio.run, args=(in_thread(),))
        thread.start()
        await asyncio.get_running_loop().run_in_executor(None, other_started.wait, 10)
        results["main"] = await _key_and_loop()  # the thread's loop was the last one seen
        main_checked.set()
        await asyncio.get_running_loop().run_in_executor(None, thread.join, 10)

    asyncio.run(in_main())
    for name in ("thread-before", "main", "thread-after"):
        key, loop = results[name]
        assert key is loop, name
    assert results["main"][1] is not results["thread-before"][1]


def test_outside_any_loop_it_raises_even_after_a_loop_was_seen() -> None:
    asyncio.run(_key_and_loop())
    with pytest.raises(RuntimeError, match="running asyncio or trio event loop"):
        current_loop_key()


def test_trio_after_asyncio_gets_the_trio_token() -> None:
    asyncio.run(_key_and_loop())

    async def main() -> None:
        assert current_loop_key() is trio.lowlevel.current_trio_token()

    trio.run(main)


def test_default_node_follows_the_running_loop() -> None:
    async def main() -> Node:
        node = current_node()
        assert current_node() is node
        await node.stop()
        return node

    first = asyncio.run(main())
    second = asyncio.run(main())
    assert first is not second


def test_a_forked_child_forgets_the_parents_loop() -> None:
    async def main() -> int:
        current_loop_key()  # remembered in the parent
        pid = os.fork()
        if pid == 0:  # the child is not running the parent's loop (asyncio says so too)
            code = 0
            try:
                current_loop_key()
                code = 1
            except RuntimeError:
                code = 0
            os._exit(code)
        _, status = os.waitpid(pid, 0)
        return os.waitstatus_to_exitcode(status)

    assert asyncio.run(main()) == 0


def test_the_default_node_outside_processes_is_the_earliest_running_one_on_this_loop() -> None:
    """`current_node` answers from the last loop's node list (no loop-key call): that list must
    follow nodes that stop and start, and never answer for another thread's loop."""

    async def main() -> None:
        first = await Node().start()
        assert current_node() is first and current_node() is first  # (the second from the cache)
        second = await Node().start()
        assert current_node() is first
        await first.stop()
        assert current_node() is second
        await second.stop()
        implicit = current_node()  # none left: an implicit node, bound to this loop
        assert implicit is not first and implicit is not second
        assert current_node() is implicit
        await implicit.stop()

    asyncio.run(main())


def test_another_threads_loop_never_gets_this_loops_default_node() -> None:
    results: dict[str, Node] = {}

    async def in_thread() -> None:
        results["thread"] = current_node()
        await results["thread"].stop()

    async def in_main() -> None:
        results["main"] = current_node()  # cached for this loop
        thread = threading.Thread(target=asyncio.run, args=(in_thread(),))
        thread.start()
        await asyncio.get_running_loop().run_in_executor(None, thread.join, 10)
        assert current_node() is results["main"]
        await results["main"].stop()

    asyncio.run(in_main())
    assert results["thread"] is not results["main"]


def test_a_forked_child_gets_no_default_node_of_its_parent() -> None:
    async def main() -> int:
        node = current_node()
        assert current_node() is node  # (now cached in the parent)
        pid = os.fork()
        if pid == 0:  # no loop runs in the child: no node either (the parent's is not its own)
            code = 0
            try:
                current_node()
                code = 1
            except Exception:
                code = 0
            os._exit(code)
        _, status = os.waitpid(pid, 0)
        await current_node().stop()
        return os.waitstatus_to_exitcode(status)

    assert asyncio.run(main()) == 0


def _run_on_uvloop(coro: Any) -> Any:
    import uvloop  # (the [fast] extra, which `make` installs)

    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(coro)


def test_on_uvloop_the_default_node_follows_the_running_loop() -> None:
    """uvloop's loop does not tell its thread: `current_node` remembers the thread it found it
    running in and checks `is_running()`; each run still gets its own node."""

    async def main() -> Node:
        node = await Node().start()
        assert current_node() is node and current_node() is node  # (the second from the cache)
        await node.stop()
        return node

    first = _run_on_uvloop(main())
    second = _run_on_uvloop(main())
    assert first is not second


def test_on_uvloop_another_threads_loop_never_gets_this_loops_default_node() -> None:
    results: dict[str, Node] = {}
    errors: list[BaseException] = []
    thread_cached = threading.Event()
    main_checked = threading.Event()

    async def in_thread() -> None:
        results["thread"] = await Node().start()
        assert current_node() is results["thread"] and current_node() is results["thread"]
        thread_cached.set()  # the cache now names the thread's loop, running
        await asyncio.get_running_loop().run_in_executor(None, main_checked.wait, 10)
        assert current_node() is results["thread"]
        await results["thread"].stop()

    def run_thread() -> None:
        try:
            _run_on_uvloop(in_thread())
        except BaseException as exc:  # (re-raised below, in the test's thread)
            errors.append(exc)

    async def in_main() -> None:
        results["main"] = await Node().start()
        assert current_node() is results["main"]
        thread = threading.Thread(target=run_thread)
        thread.start()
        await asyncio.get_running_loop().run_in_executor(None, thread_cached.wait, 10)
        assert current_node() is results["main"]  # not the thread's, though its loop runs
        main_checked.set()
        await asyncio.get_running_loop().run_in_executor(None, thread.join, 10)
        assert current_node() is results["main"]
        await results["main"].stop()

    _run_on_uvloop(in_main())
    if errors:
        raise errors[0]
    assert results["thread"] is not results["main"]
