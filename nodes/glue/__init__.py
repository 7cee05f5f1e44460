"""ComfyUI glue, apart from the node schemas: model placement, the streaming VAE decode, the statistics event, and
each method's run inside ComfyUI."""
