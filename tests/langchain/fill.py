"""Creates and fills a langchain-postgres chat-history table through the
package's own API, and prints what it wrote as one JSON document.

    fill.py CONNINFO TABLE

CONNINFO is a libpq connection string (psycopg 3). The table is created with
PostgresChatMessageHistory.create_tables and filled with add_messages, so its
rows are exactly what an application using langchain-postgres stores. The
summary on stdout lists, per session (in the order of its first row), the
messages in order as {"role", "content", "tool_calls"?, "tool_call_id"?,
"name"?}, roles already in ProgressDB terms (human -> user, ai -> assistant,
tool/function -> tool, chat -> its role); tool calls stay in LangChain form
({"id", "name", "args"}), for the test to compare with what the importer
made of them. Session ids are fixed, so a second run fills the same sessions
again (the test runs it once per fresh table).
"""

import json
import sys

import psycopg
from langchain_core.messages import (
    AIMessage,
    ChatMessage,
    FunctionMessage,
    HumanMessage,
    SystemMessage,
    ToolMessage,
)
from langchain_postgres import PostgresChatMessageHistory

# Unique words the test can look for (and search for) after the import.
MARKERS = ["quetzalfjord", "brimblewick", "zorvantine"]

S_WEATHER = "6f1c1e0a-3b5e-4d2a-9c61-0d1f2a3b4c5d"
S_UNICODE = "a0b1c2d3-e4f5-4a6b-8c7d-9e0f1a2b3c4d"
S_LEGACY = "00000000-0000-4000-8000-00000000beef"
S_LONG = "fedcba98-7654-4321-8fed-cba987654321"
# Messages in the long session: more than one read batch of the importer.
LONG_TURNS = 650


def role_of(m):
    return {
        "human": "user",
        "ai": "assistant",
        "system": "system",
        "tool": "tool",
        "function": "tool",
    }.get(m.type) or m.role


def expected(m):
    e = {"role": role_of(m), "content": m.content}
    if isinstance(m, AIMessage) and m.tool_calls:
        e["tool_calls"] = [
            {"id": tc["id"], "name": tc["name"], "args": tc["args"]}
            for tc in m.tool_calls
        ]
    elif isinstance(m, AIMessage) and "function_call" in m.additional_kwargs:
        fc = m.additional_kwargs["function_call"]
        # "*": an id the importer makes up; the answer must carry the same.
        e["tool_calls"] = [{"id": "*", "name": fc["name"], "args": json.loads(fc["arguments"])}]
    if isinstance(m, ToolMessage):
        e["tool_call_id"] = m.tool_call_id
    if isinstance(m, FunctionMessage):
        e["tool_call_id"] = "*"
    if m.name is not None:
        e["name"] = m.name
    return e


def main():
    if len(sys.argv) != 3:
        sys.exit("usage: fill.py CONNINFO TABLE")
    conninfo, table = sys.argv[1], sys.argv[2]

    # Each add_messages call is one batch of rows; the calls alternate
    # between sessions so the table's ids interleave them.
    plan = [
        (S_WEATHER, [
            SystemMessage(content="You are a terse weather assistant."),
            HumanMessage(content=f"What's the weather in Paris? {MARKERS[0]}"),
        ]),
        (S_UNICODE, [
            SystemMessage(content="Réponds en français, s'il te plaît."),
            HumanMessage(content="Grüße aus Köln 👋 — 東京はどう? " + MARKERS[1]),
        ]),
        (S_WEATHER, [
            AIMessage(
                content="",
                tool_calls=[
                    {"name": "get_weather", "args": {"city": "Paris", "units": "metric"}, "id": "call_w1"},
                    {"name": "get_time", "args": {"tz": "Europe/Paris"}, "id": "call_t1"},
                ],
            ),
            ToolMessage(content='{"temp": 18, "sky": "cloudy"}', tool_call_id="call_w1", name="get_weather"),
            ToolMessage(content="14:05", tool_call_id="call_t1"),
            AIMessage(content="18 °C and cloudy in Paris; it is 14:05."),
        ]),
        (S_UNICODE, [
            AIMessage(content="Bonjour ! Tokyo : 晴れ, 22 °C. Ça va ? ✅"),
            HumanMessage(content=[
                {"type": "text", "text": "Und jetzt: naïve café façade ½ — " + MARKERS[2]},
                {"type": "text", "text": "zweiter Teil"},
            ]),
        ]),
        (S_LEGACY, [
            ChatMessage(role="developer", content="Answer in one word."),
            HumanMessage(content="Capital of Norway?"),
            AIMessage(content="", additional_kwargs={}, tool_calls=[
                {"name": "lookup", "args": {"q": "capital of Norway"}, "id": "call_l1"},
            ]),
            ToolMessage(content="Oslo", tool_call_id="call_l1"),
            # The legacy function-calling pair: the call is in
            # additional_kwargs, and the answer carries no call id.
            AIMessage(content="", additional_kwargs={
                "function_call": {"name": "legacy_lookup", "arguments": '{"q": "Oslo"}'},
            }),
            FunctionMessage(name="legacy_lookup", content="Oslo (legacy)"),
            AIMessage(content="Oslo.", name="oracle"),
        ]),
    ]
    long_msgs = [SystemMessage(content="Count with me.")]
    for i in range(LONG_TURNS):
        if i % 2 == 0:
            long_msgs.append(HumanMessage(content=f"number {i}"))
        else:
            long_msgs.append(AIMessage(content=f"number {i} acknowledged"))
    plan.append((S_LONG, long_msgs))

    order, per_session = [], {}
    with psycopg.connect(conninfo, autocommit=True) as conn:
        PostgresChatMessageHistory.create_tables(conn, table)
        for session, msgs in plan:
            history = PostgresChatMessageHistory(table, session, sync_connection=conn)
            history.add_messages(msgs)
            if session not in per_session:
                order.append(session)
                per_session[session] = []
            per_session[session].extend(expected(m) for m in msgs)
        # What the package reads back must be what we wrote.
        for session in order:
            got = PostgresChatMessageHistory(table, session, sync_connection=conn).messages
            assert len(got) == len(per_session[session]), session

    summary = {
        "table": table,
        "sessions": [{"session_id": s, "messages": per_session[s]} for s in order],
        "message_count": sum(len(v) for v in per_session.values()),
        "markers": MARKERS,
    }
    json.dump(summary, sys.stdout, ensure_ascii=False)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
