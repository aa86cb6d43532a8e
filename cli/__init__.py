"""The caa-bake command line (Typer). Thin: parse, call caa_bake, print."""
