"""Run presets: each module's `get_config()` returns a complete, locked ConfigDict."""
