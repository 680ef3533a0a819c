"""The pytest plugin (entry point ``pytest11: dcache``); fixtures are added in a later step."""
