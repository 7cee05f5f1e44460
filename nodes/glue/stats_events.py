"""Send a run's statistics to the console and to the frontend extension in `js/`.

The frontend listens for the event `STATS_EVENT`; the payload is
`{"node": <unique id of the node that ran>, "kind": "dts" | "sdvg", "stats": {...}}`.
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
    if server is None or node_id is None:
        return stats
    payload = {"node": str(node_id), "kind": kind, "stats": stats}
    json.dumps(payload, allow_nan=False)  # fail here, loudly, rather than in the browser
    server.send_sync(STATS_EVENT, payload, server.client_id)
    return stats
