"""The networks the methods run: a reference Wan 2.1 DiT and its KV-cached causal runner, ImageReward and its
tokenizer, preprocessing and files. Plain torch; nothing here knows about DTS or SDVG."""
