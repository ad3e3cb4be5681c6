"""Command-line interface of talk3d (Typer): flags -> config -> library call, no logic here."""
