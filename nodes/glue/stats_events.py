"""Send a run's statistics to the console and to the frontend extension in `js/`.

The frontend listens for the event `STATS_EVENT`; the payload is
`{"node": <unique id of the node that ran>, "kind": "dts" | "sdvg", "prompt_id": <id of the running prompt>,
"stats": {...}}`. It goes only to the client that queued the prompt (the page routes it to that prompt's workflow
by `prompt_id`); a prompt queued without a client id gets no event, as core's own `executed` messages.
"""
import json
import logging
import math

STATS_EVENT = "speculative_video.stats"


def json_ready(value):
    """`value` made strict-JSON safe: tensors become lists, non-finite floats the strings "inf", "-inf", "nan".

    The browser's JSON.parse rejects Infinity and NaN, and one such value would lose the whole message.
    """
    if isinstance(value, dict):
        return {key: json_ready(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_ready(item) for item in value]
    if hasattr(value, "tolist"):  # torch tensors and numpy values
        return json_ready(value.tolist())
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    return value


def running_prompt_id(server):
    """The id of the prompt being executed: the execution context (ComfyUI >= 0.3.4x), else the id core's prompt
    worker stores on the server before it executes a prompt (`last_prompt_id`, in every version tested)."""
    try:
        from comfy_execution.utils import get_executing_context
    except ImportError:
        context = None
    else:
        context = get_executing_context()
    prompt_id = getattr(context, "prompt_id", None)
    return prompt_id if prompt_id is not None else getattr(server, "last_prompt_id", None)


def report_stats(kind, node_id, stats, summarise):
    """Clean `stats` (a dict) with json_ready, log `summarise(cleaned)` and push the cleaned stats to the frontend
    if a server runs; returns the cleaned stats (what the nodes' STRING outputs show)."""
    stats = json_ready(stats)
    logging.info("[speculative-video] %s", summarise(stats))
    try:
        from server import PromptServer
    except ImportError:  # ComfyUI used as a library, no server: the console line is enough
        return stats
    server = getattr(PromptServer, "instance", None)
    # Core sets `client_id` from the executing prompt's extra_data (None when the prompt was queued without one);
    # send_sync to None would broadcast to every open page.
    client_id = getattr(server, "client_id", None)
    if server is None or node_id is None or client_id is None:
        return stats
    payload = {"node": str(node_id), "kind": kind, "prompt_id": running_prompt_id(server), "stats": stats}
    json.dumps(payload, allow_nan=False)  # fail here, loudly, rather than in the browser
    server.send_sync(STATS_EVENT, payload, client_id)
    return stats
