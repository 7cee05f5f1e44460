"""The two methods, DTS and SDVG, in plain torch; each module reads top to bottom like its paper."""
