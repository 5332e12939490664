"""The example web apps, served by real uvicorn and aiohttp."""
