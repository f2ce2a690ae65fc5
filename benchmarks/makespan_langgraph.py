"""The makespan benchmark's DAG through LangGraph (run by benchmarks/makespan.py in its own venv).

Reads {"sources": [[...], ...], "latency": [...] or null} on stdin; builds a StateGraph with one
node per DAG node (an async function sleeping its latency), `add_edge([sources], node)` so a node
waits for all its sources, START -> every root, every sink -> END; runs it with
`max_concurrency` = argv[1]. Prints {"seconds": …}.
"""

from __future__ import annotations

import asyncio
import json
import operator
import sys
import time
from typing import Annotated, Any, TypedDict

from langgraph.graph import END, START, StateGraph


class State(TypedDict):
    done: Annotated[list[int], operator.add]


def build(sources: list[list[int]], latency: list[float] | None) -> Any:
    graph = StateGraph(State)
    dependants = [0] * len(sources)
    for before in sources:
        for source in before:
            dependants[source] += 1

    def node(index: int) -> Any:
        async def run(state: State) -> dict[str, list[int]]:
            if latency is not None:
                await asyncio.sleep(latency[index])
            return {"done": [index]}

        return run

    for index in range(len(sources)):
        graph.add_node(f"n{index}", node(index))
    for index, before in enumerate(sources):
        if not before:
            graph.add_edge(START, f"n{index}")
        else:
            graph.add_edge([f"n{s}" for s in before], f"n{index}")
        if dependants[index] == 0:
            graph.add_edge(f"n{index}", END)
    return graph.compile()


async def main() -> None:
    document = json.loads(sys.stdin.read())
    app = build(document["sources"], document["latency"])
    concurrency = int(sys.argv[1])
    started = time.perf_counter()
    result = await app.ainvoke(
        {"done": []}, config={"max_concurrency": concurrency, "recursion_limit": 10**6}
    )
    seconds = time.perf_counter() - started
    if len(set(result["done"])) != len(document["sources"]):
        raise SystemExit(f"LangGraph ran {len(set(result['done']))} of {len(document['sources'])} nodes")
    print(json.dumps({"seconds": seconds}))


if __name__ == "__main__":
    asyncio.run(main())
