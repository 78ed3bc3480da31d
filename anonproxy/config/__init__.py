"""Profiles: the TOML format as pydantic models, finding and loading profiles, and the checks
across keys; every error names the file, the key and the value.
"""
