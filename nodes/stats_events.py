"""Send a run's statistics to the console and to the frontend extension in `js/`.

The frontend listens for the event `STATS_EVENT`; the payload is
`{"node": <unique id of the node that ran>, "kind": "dts" | "sdvg", "stats": {...}}`.
"""
import json
import logging

STATS_EVENT = "speculative_video.stats"


def report_stats(kind, node_id, stats, summary_line):
    """Log `summary_line` and push `stats` (JSON-serialisable dict) to the frontend, if a server runs."""
    logging.info("[speculative-video] %s", summary_line)
    try:
        from server import PromptServer
    except ImportError:  # ComfyUI used as a library, no server: the console line is enough
        return
    server = getattr(PromptServer, "instance", None)
    if server is None or node_id is None:
        return
    payload = {"node": str(node_id), "kind": kind, "stats": json.loads(json.dumps(stats, default=float))}
    server.send_sync(STATS_EVENT, payload, server.client_id)
